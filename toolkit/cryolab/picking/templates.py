"""Picking templates: 2D references rotated in-plane, or projections of a 3D map, masked and resampled.

A template is a reference image with white particles (projected density, as 2D class averages and
``relion_project`` give them), masked by a soft circle of the particle diameter, rotated by
``psi`` (RELION's 2D convention, :class:`cryolab.projection.FourierRotator2D`) and resampled by
band-limited (trigonometric) interpolation onto the grid the micrographs are searched on. CTF and
low-pass filters are applied per micrograph on the search grid (:mod:`cryolab.picking.score`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CryolabInputError
from ..fourier import rfft2c
from ..geometry import healpix_directions, psi_angles
from ..projection import FourierProjector, FourierRotator2D
from ..validation import soft_circle_mask

__all__ = ["Templates", "make_templates", "resample_images"]


@dataclass(frozen=True)
class Templates:
    """Template images ``[T, n, n]`` (float32, pixel size ``pixel_size_A``) with, per template, the
    reference it came from (``reference``, 0-based) and its angles ``eulers_deg`` ``[T, 3]``
    (rot, tilt, psi; rot = tilt = 0 for 2D references)."""

    images: np.ndarray
    pixel_size_A: float
    reference: np.ndarray
    eulers_deg: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def make_templates(references, pixel_size_A: float, *, particle_diameter_A: float, psi_step_deg: float = 10.0,
                   healpix_order: int = 1, map3d: bool | None = None, invert: bool = False,
                   source=None) -> Templates:
    """Templates from 2D references ``[K, N, N]`` (in-plane angles every ``psi_step_deg``) or a 3D map
    ``[N, N, N]`` (HEALPix directions of ``healpix_order`` x the same in-plane angles), masked by a soft
    circle of ``particle_diameter_A``. ``map3d`` says which (None: a cubic array is a map). ``invert`` flips the contrast (RELION's ``--invert``: the
    micrographs' particles are dark while the references' are white). ``source`` names the file in
    errors.

    >>> ref = np.zeros((16, 16), np.float32); ref[6:10, 5:11] = 1
    >>> t = make_templates(ref, 5.0, particle_diameter_A=60, psi_step_deg=90)
    >>> t.images.shape, t.eulers_deg[:, 2].tolist()
    ((4, 16, 16), [0.0, 90.0, 180.0, 270.0])
    """
    refs = np.asarray(references, dtype=np.float32)
    if refs.ndim == 2:
        refs = refs[None]
    if refs.ndim != 3 or refs.shape[-1] != refs.shape[-2] or not np.isfinite(refs).all():
        raise CryolabInputError(f"references must be finite square images [K, N, N] or a cubic map, got shape "
                                f"{refs.shape}", path=source, field="--ref")
    if not psi_step_deg > 0:
        raise CryolabInputError(f"the in-plane step must be > 0, got {psi_step_deg!r}", field="--ang")
    n = refs.shape[-1]
    psi = psi_angles(psi_step_deg)
    is_map = refs.shape[0] == n and np.ndim(references) == 3 if map3d is None else bool(map3d)
    if is_map and refs.shape[0] != n:
        raise CryolabInputError(f"a 3D reference must be cubic, got shape {refs.shape}", path=source, field="--ref")
    if is_map:
        rot, tilt = healpix_directions(int(healpix_order))
        eulers = np.stack([np.repeat(rot, len(psi)), np.repeat(tilt, len(psi)), np.tile(psi, len(rot))], -1)
        images = FourierProjector(refs).project(eulers)
        reference = np.zeros(len(eulers), int)
    else:
        images = FourierRotator2D(refs).rotate(psi).reshape(-1, n, n)
        eulers = np.stack([np.zeros(len(refs) * len(psi)), np.zeros(len(refs) * len(psi)),
                           np.tile(psi, len(refs))], -1)
        reference = np.repeat(np.arange(len(refs)), len(psi))
    radius_px = 0.5 * particle_diameter_A / pixel_size_A
    mask = soft_circle_mask(n, min(radius_px, n / 2 - 1), edge_px=min(3.0, radius_px / 4))
    images = (images * mask).astype(np.float32)
    if invert:
        images = -images
    if not np.abs(images).max() > 0:
        raise CryolabInputError("the references are blank inside the particle diameter", path=source,
                                field="--ref")
    return Templates(images=images, pixel_size_A=float(pixel_size_A), reference=reference,
                     eulers_deg=eulers.astype(np.float64))



def resample_images(images, pixel_size_A: float, new_pixel_size_A: float, new_box: int) -> np.ndarray:
    """Images ``[T, n, n]`` at ``pixel_size_A`` resampled onto a ``new_box`` grid at ``new_pixel_size_A``
    by trigonometric interpolation (exact for band-limited periodic images): the centre pixel ``n // 2``
    stays the centre ``new_box // 2``; frequencies beyond the new grid's Nyquist are dropped."""
    imgs = np.asarray(images, np.float64)
    n = imgs.shape[-1]
    ft = rfft2c(imgs)                                                 # [T, n, n//2+1], ky centred
    k = np.arange(n) - n // 2
    kx = np.arange(n // 2 + 1)
    pos = (np.arange(new_box) - new_box // 2) * new_pixel_size_A / (n * pixel_size_A)
    nyq = 0.5 * n * pixel_size_A / new_pixel_size_A
    wy = np.where(np.abs(k) < nyq, 1.0, 0.0)
    wx = np.where(kx < nyq, np.where((kx == 0) | (kx == n // 2), 1.0, 2.0), 0.0)
    ey = np.exp(2j * np.pi * np.outer(pos, k)) * wy                   # [new, n]
    ex = np.exp(2j * np.pi * np.outer(pos, kx)) * wx                  # [new, n//2+1]
    out = np.einsum("yk,tkl,xl->tyx", ey, ft, ex).real / (n * n)
    return out.astype(np.float32)
