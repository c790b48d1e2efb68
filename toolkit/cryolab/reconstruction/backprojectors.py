"""The back-projectors: :class:`BackProjector` (3D maps) and :class:`BackProjector2D` (class averages).

3D slices are placed by rotation matrices ``A`` (``A.T @ (kx, ky, 0)``, RELION's convention),
2D slices by in-plane angles ``psi`` (degrees); point-group symmetry is applied in 3D only.
"""
from __future__ import annotations

import numpy as np

from ..backend import to_device
from ..fourier import rfft_grid
from ..geometry import euler_to_matrix, is_c1
from .accumulator import _FourierAccumulator
from .interpolation import _BLOCK_ENTRIES, _interpolate

__all__ = ["BackProjector", "BackProjector2D"]


class BackProjector(_FourierAccumulator):
    """3D Fourier back-projector (RELION's ``BackProjector``, trilinear, padding ``pad``).

    ``n``: box size of the images and map (odd or even); ``pad``: oversampling of the
    accumulators (padded box ``M = round(pad * n)`` rounded up to even); ``xp``: numpy or cupy
    (where the accumulators live); ``dtype``: real dtype of the accumulators (float64 default;
    ``24 M^3 / 2`` bytes, float32 halves it); ``max_shell``: largest image shell inserted
    (default ``N // 2``; the M-step's current size).
    """

    ndim = 3

    def _slice_axes(self, rotations):
        return rotations * self.pad  # A.T (kx, ky, 0) = kx * A[0, :] + ky * A[1, :]

    def insert(self, ft_slices, weight_slices, rotations):
        """Add slices ``[R, N, N//2+1]`` (complex, e.g. ``sum w C X``) and their weights
        (real, e.g. ``sum w C^2``; None = 1) at rotations ``[R, 3, 3]`` (or Euler angles ``[R, 3]``)."""
        from ..projection import as_rotation_matrices
        rot = as_rotation_matrices(rotations, self.xp)
        self._insert(ft_slices, weight_slices, rot)

    def insert_pixels(self, values, weights, rotations, kx, ky):
        """Add pixel lists ``values`` ``[R, M]`` (complex) and ``weights`` ``[R, M]`` (real; None = 1)
        at rotations ``[R, 3, 3]`` (or Euler angles ``[R, 3]``): the same sums as :meth:`insert` of
        the slices that hold these values at integer frequencies ``kx``, ``ky`` ``[M]`` and zeros
        elsewhere (e.g. the E-step's :class:`~cryolab.engine.estep.FourierPixels`), without
        spreading them into slices: only these pixels are placed in the 3D grid."""
        from ..projection import as_rotation_matrices
        rot = as_rotation_matrices(rotations, self.xp)
        self._insert_pixels(values, weights, rot, kx, ky)

    def insert_images(self, images, rotations, ctf=None, shifts_px=None, pixel_size_A=None,
                      sigma2_noise=None):
        """Insert particle images ``[R, N, N]`` (or their ``rfft2c`` transforms) as ``C X`` / ``C^2``.

        ``ctf``: :class:`~cryolab.ctf.CTFParams` (needs ``pixel_size_A``) or CTF slices
        ``[R, N, N//2+1]``; ``shifts_px`` ``[R, 2]``: RELION origins in pixels (the particle is
        moved by ``+origin`` to the centre); ``sigma2_noise``: noise power per Fourier pixel of
        ``rfft2c`` (scalar, per shell ``[N//2+1]`` or per pixel), dividing both sums.
        """
        data, weight = self._slices_from_images(images, ctf, shifts_px, pixel_size_A, sigma2_noise)
        self.insert(data, weight, rotations)

    def _symmetrise(self, data, weight, sym):
        """Sum the accumulators over the point group (interpolated at ``R g``, as RELION)."""
        if is_c1(sym):
            return data, weight
        from ..geometry import symmetry_operators
        xp, m = self.xp, self.m
        ops = to_device(np.asarray(symmetry_operators(sym), dtype=np.float64), xp)
        r, _ = self.shells()
        inside = xp.nonzero((r <= self.pad * self.r_max).ravel())[0]
        kz, ky, kx = (g.ravel()[inside].astype(xp.float64) for g in rfft_grid(m, 3, xp, True))
        g = xp.stack([kx, ky, kz], axis=-1)  # (x, y, z)
        sum_d, sum_w = data.copy(), weight.copy()
        step = max(1, _BLOCK_ENTRIES // 8)
        for op in ops:
            if bool(xp.allclose(op, xp.eye(3))):
                continue
            for s in range(0, g.shape[0], step):
                p = g[s:s + step] @ op.T
                sel = inside[s:s + step]
                sum_d.reshape(-1)[sel] += _interpolate(data, p, m)
                sum_w.reshape(-1)[sel] += _interpolate(weight, p, m)
        return sum_d, sum_w


class BackProjector2D(_FourierAccumulator):
    """2D Fourier back-rotator for class averages (bilinear, padding ``pad``).

    The forward operator samples the reference transform at ``A.T k`` with ``A`` the 2x2 block of
    ``euler_to_matrix(0, 0, psi)`` (as :class:`cryolab.projection.FourierRotator2D`); insertion is
    its adjoint: each slice is rotated back by ``psi``.
    """

    ndim = 2

    def _slice_axes(self, psi_deg):
        return euler_to_matrix(0.0, 0.0, psi_deg)[:, :2, :2] * self.pad

    def insert(self, ft_slices, weight_slices, psi_deg):
        """Add slices ``[R, N, N//2+1]`` and weights (None = 1) rotated back by ``psi_deg`` ``[R]``."""
        self._insert(ft_slices, weight_slices, self._psi(psi_deg))

    def insert_pixels(self, values, weights, psi_deg, kx, ky):
        """Add pixel lists ``[R, M]`` at integer frequencies ``kx``, ``ky`` ``[M]`` rotated back by
        ``psi_deg`` ``[R]``; see :meth:`BackProjector.insert_pixels`."""
        self._insert_pixels(values, weights, self._psi(psi_deg), kx, ky)

    def _psi(self, psi_deg):
        return self.xp.asarray(to_device(psi_deg, self.xp), dtype=self.xp.float64).reshape(-1)

    def insert_images(self, images, psi_deg, ctf=None, shifts_px=None, pixel_size_A=None,
                      sigma2_noise=None):
        """As :meth:`BackProjector.insert_images`, with in-plane angles ``psi_deg`` ``[R]``."""
        data, weight = self._slices_from_images(images, ctf, shifts_px, pixel_size_A, sigma2_noise)
        self.insert(data, weight, psi_deg)

    def reconstruct(self, method: str = "plain", tau2=None, eps: float = 1e-3, max_shell=None,
                    fsc=None, tau2_fudge: float = 1.0, mask_outside: bool = True):
        """The class average ``[N, N]`` (float32); see :meth:`BackProjector.reconstruct`."""
        return super().reconstruct(method, tau2, eps, "C1", max_shell, fsc, tau2_fudge,
                                   mask_outside)
