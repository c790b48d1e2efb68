"""The images one body is refined against: the particle minus the other bodies, re-centred.

For body ``b`` with centre of mass ``c_b`` (pixels, ``(x, y, z)`` from the box centre) and a
particle with consensus pose ``(A_i, o_i)`` (RELION origin, pixels), the image is

``Y_ib = roll(X_i - sum_{c != b} scale * C_i * shift(P_{A_ic}(W_c), -o_ic), s_ib)``

where ``W_c`` is body ``c``'s map times its mask (times ``1 - M_b``, so that voxels the two masks
share are not removed twice), centred on ``c_c``, at its current pose ``(A_ic, o_ic)`` in the
original image, and ``s_ib = round(o_i - (A_i c_b)_xy)`` the whole-pixel move that brings
``c_b`` to the image centre (RELION's re-centring rule, :func:`cryolab.methods.subtract.recentring_shifts`).
The table's angles are the consensus angles and its origins the fractional rest
``o_i - (A_i c_b)_xy - s_ib``, so a Session started on these images starts at the consensus pose.
A body pose found on ``Y`` (angles ``A_ib``, origin ``t_ib``) is, in the original image, the pose
``(A_ib, t_ib + s_ib)`` of the centred body map (:meth:`BodyParticles.original_origins_px`).

When the search is centred on the body's previous pose rather than on the consensus,
:meth:`BodyParticles.orientation_log_prior` keeps the body's Gaussian prior about the consensus:
``-theta^2 / (2 sigma^2)`` with ``theta`` the angle of the rotation ``A_i^T A`` between the
consensus pose and a sampled orientation ``A``. (RELION writes it as a prior on the tilt and psi
of a residual rotation turned to (0, 90, 0) in a frame along the line between the bodies; for
the small rotations it allows, ``d_tilt^2 + d_psi^2`` is ``theta^2`` to second order, and the angle
needs no frame.) Whether centred on the consensus or not, orientations with ``theta`` beyond
``window_deg`` (three sigmas of the body's prior) get the log prior :data:`OUTSIDE_LOG_PRIOR`: the
search window about the consensus bounds the total rotation, where the first iteration's window
bounds the direction and the in-plane angle each (so a body could turn up to ~60 degrees there).
The value is finite so that an image whose every candidate lies outside still has a posterior.
"""
from __future__ import annotations

import numpy as np

from ...engine.forward import residual_images
from ...geometry import euler_to_matrix, pairwise_angles_deg
from ...engine.subtracted import particle_poses
from ...errors import CryolabInputError
from ...io import ParticleStack
from ..subtract import recentring_shifts

__all__ = ["BodyParticles", "OUTSIDE_LOG_PRIOR"]

#: log prior of orientations beyond the body's window about the consensus (module text)
OUTSIDE_LOG_PRIOR = -1.0e4


class BodyParticles(ParticleStack):
    """One body's images (see the module text) over ``stack`` (particles with consensus poses).

    ``centre_px``: the body's centre of mass (pixels from the box centre). ``others``: a list of
    ``(projector, eulers [B, 3], origins_px [B, 2])``, one per other body, in the rows of this
    stack, set before each E-step (empty: nothing subtracted).
    """

    def __init__(self, stack: ParticleStack, centre_px, *, scale: float = 1.0):
        self.__dict__.update(stack.__dict__)
        eulers, origins = particle_poses(stack, np.arange(len(stack)))
        self.consensus_eulers, self.consensus_origins_px = eulers, origins
        self.centre_px = np.asarray(centre_px, float).reshape(3)
        self.roll, frac = recentring_shifts(eulers, origins, self.centre_px)
        table = stack.table.copy()
        table = table.drop(columns=[c for c in ("rlnOriginX", "rlnOriginY") if c in table])
        px = float(stack.pixel_size_A)
        table["rlnOriginXAngst"], table["rlnOriginYAngst"] = frac[:, 0] * px, frac[:, 1] * px
        self.table = table
        self.start_origins_px = frac
        self.scale = float(scale)
        self.others: list = []
        self.prior_sigma_deg: float | None = None
        self.window_deg: float | None = None

    def original_origins_px(self, origins_px, rows=None) -> np.ndarray:
        """Origins ``[B, 2]`` (pixels) found on these images, as origins in the original images."""
        roll = self.roll if rows is None else self.roll[np.asarray(rows)]
        return np.asarray(origins_px, float) + roll

    def orientation_log_prior(self, rows, orients):
        """``[B, J]`` log prior of orientation rows ``orients [J, >=3]`` for particles ``rows``: the
        body's Gaussian of ``prior_sigma_deg`` about the consensus (module text; none while
        ``prior_sigma_deg`` is None: the search itself is then centred on the consensus), and
        :data:`OUTSIDE_LOG_PRIOR` beyond ``window_deg`` (when set); 0 when neither is set."""
        if self.prior_sigma_deg is None and self.window_deg is None:
            return 0.0
        e, o = self.consensus_eulers[np.asarray(rows)], np.asarray(orients, float)
        theta = pairwise_angles_deg(euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]),
                                    euler_to_matrix(o[:, 0], o[:, 1], o[:, 2]))
        lp = np.zeros_like(theta) if self.prior_sigma_deg is None else -0.5 * (theta / self.prior_sigma_deg) ** 2
        return lp if self.window_deg is None else np.where(theta > self.window_deg, OUTSIDE_LOG_PRIOR, lp)

    def ctf(self, indices=None):
        """As :meth:`ParticleStack.ctf`, from the whole table's parameters read once (the E-step
        asks for them every batch, the subtraction again; the table does not change)."""
        if getattr(self, "_ctf_all", None) is None:
            self._ctf_all = super().ctf()
        return self._ctf_all[self._rows(indices)]

    def read(self, indices=None) -> np.ndarray:
        rows = self._rows(indices)
        images = np.asarray(super().read(rows), np.float32)
        ctf = self.ctf(rows) if self.others else None
        for projector, eulers, origins in self.others:
            images = np.asarray(residual_images(images, projector, eulers[rows], origins[rows], ctf,
                                                self.pixel_size_A, scale=self.scale), np.float32)
        out = np.empty_like(images)
        for j, (sx, sy) in enumerate(self.roll[rows]):
            out[j] = np.roll(images[j], (int(sy), int(sx)), axis=(0, 1))
        return out

    def with_table(self, table):
        raise CryolabInputError("a body's images are defined over the particles they were made from; "
                                "make a BodyParticles of the subset instead", field="particles")
