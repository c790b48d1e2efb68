"""In-plane orientation sampling for 2D classification: references rotated in Fourier space.

Orientation parameters are psi angles in degrees (RELION's 2D convention: a reference
rotated by psi is compared with the image; see :class:`cryolab.projection.FourierRotator2D`).
"""
from __future__ import annotations

import numpy as np

from ..projection import FourierRotator2D
from .cache import CachedProjections
from .estep import FourierPixels
from .expectation import SampleSet
from ..geometry import psi_angles
from ..projection import shift_ramps
from .sampling import fine_psi, translation_grid

__all__ = ["PlanarSampler"]


class PlanarSampler(CachedProjections):
    """Projects 2D references ``[K, N, N]`` at psi angles onto the likelihood pixels ``pix``.

    ``coarse()`` is the full coarse sample set (all classes x psi grid x translations);
    ``children`` / ``project`` serve the oversampled pass.
    """

    def __init__(self, refs, pix: FourierPixels, psi_step_deg: float, offset_range_px: float,
                 offset_step_px: float, pad: int = 2):
        self.pix = pix
        self.K = refs.shape[0]
        self.psi_step_deg = float(psi_step_deg)
        self.offset_step_px = float(offset_step_px)
        self.rotators = [FourierRotator2D(refs[k], pad=pad, max_shell=pix.max_shell) for k in range(self.K)]
        self.trans = translation_grid(offset_range_px, offset_step_px)
        self.xp = self.rotators[0].xp
        self._init_cache()

    def coarse(self, m_coarse: int | None = None) -> SampleSet:
        psi = psi_angles(self.psi_step_deg)
        classes = np.repeat(np.arange(self.K), psi.size)
        orients = np.tile(psi, self.K)
        P = self.project(classes, orients, m_coarse)
        ramps = shift_ramps(self.pix.n, self.trans, self.xp, kx=self.pix.kx, ky=self.pix.ky)
        return SampleSet(classes, orients, P, self.trans, ramps[:, :m_coarse] if m_coarse else ramps)

    @staticmethod
    def keys(classes, orients):
        """One int64 per (class, psi in 1/100 degree): identifies a sample's orientation."""
        psi = np.rint(np.mod(np.asarray(orients, float), 360.0) * 100).astype(np.int64)
        return (np.asarray(classes, np.int64) << 32) + psi

    @staticmethod
    def n_children(oversampling: int) -> int:
        return 2 ** oversampling

    def children(self, orients, classes, oversampling: int):
        fo = fine_psi(orients, self.psi_step_deg, oversampling)
        return fo.ravel(), np.repeat(classes, fo.shape[1])

    def _project_class(self, k: int, psi_deg):
        return self.rotators[k].rotate_ft(psi_deg, max_shell=self.pix.max_shell)[0]

    def insert(self, backprojector, orients, D, W):
        """Add sums ``D``, ``W`` ``[J, M]`` at psi angles ``orients`` to a 2D back-projector."""
        backprojector.insert_pixels(D, W, orients, self.pix.kx, self.pix.ky)
