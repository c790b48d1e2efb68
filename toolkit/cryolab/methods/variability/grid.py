"""The Fourier voxels a variability model lives on, and the slice operator between them and the images.

A map is a vector of complex Fourier coefficients on the padded centred half grid of
:class:`cryolab.reconstruction.BackProjector` (``M = pad * N``), kept only within
``pad * max_shell + 2`` padded pixels of the origin (``V`` voxels, compact index). An image
frequency ``k = (kx, ky)`` of a particle with rotation ``A`` reads the map at ``(M / N) A.T k``
by trilinear interpolation (RELION's projector and back-projector use the same corners); a point
with ``x < 0`` reads its Hermitian mate, so the image *value* there is conjugated instead
(:meth:`SliceGrid.slices` returns that flag). For a batch of ``B`` images the operator is a real
sparse matrix ``S [B * P, V]`` (``P`` image pixels: the half plane within ``max_shell``, without
the redundant ``kx = 0, ky < 0`` column): projecting ``K`` maps is ``S @ maps [V, K]`` and
back-projecting is ``S.T @ values``, two sparse GEMMs (SciPy or cuSPARSE, the same code).
"""
from __future__ import annotations

import numpy as np

from ...backend import to_device
from ...ctf import ctf_2d
from ...fourier import rfft2c
from ...projection import as_rotation_matrices, phase_shift_2d
from ...reconstruction import BackProjector
from ...reconstruction.interpolation import _corners
from ..bootstrap import _sparse

__all__ = ["SliceGrid"]


class SliceGrid(BackProjector):
    """Compact Fourier voxels and the slice operator (see the module text).

    ``n``: box (pixels); ``max_shell``: the largest image shell used (the filter); ``pad``:
    oversampling of the grid; ``xp``: NumPy or CuPy. ``shell_of_pixel [P]``: the image shell
    ``round(|k|)`` of each used pixel; ``shell_of_voxel [V]``: the image shell of each voxel.
    """

    def __init__(self, n: int, max_shell: int, pad: float = 2, xp=np):
        super().__init__(n, pad=pad, xp=xp, dtype=np.float64, max_shell=max_shell)
        radius, shells = self.shells()
        keep = radius.ravel() <= self.pad * self.r_max + 2.0
        self.voxels = xp.flatnonzero(keep)
        self.compact = xp.full(radius.size, -1, dtype=xp.int32)
        self.compact[self.voxels] = xp.arange(self.voxels.size, dtype=xp.int32)
        self.shell_of_voxel = xp.minimum(shells.ravel()[self.voxels], self.r_max)
        self.shell_of_pixel = xp.rint(xp.sqrt(self._kx ** 2 + self._ky ** 2)).astype(xp.int64)
        self.data = self.weight = None           # the inherited full grids are made only when needed

    @property
    def n_voxels(self) -> int:
        return int(self.voxels.size)

    @property
    def n_pixels(self) -> int:
        return int(self._pix.size)

    def slices(self, rotations):
        """``(S, conj)``: the slice operator ``S [B * P, V]`` (CSR, float32) of rotations ``[B, 3, 3]``
        (or Euler angles ``[B, 3]``) and ``conj [B, P]`` (bool), the pixels read through their mate."""
        xp, sparse = self.xp, _sparse(self.xp)
        rot = as_rotation_matrices(rotations, xp)
        b, p = rot.shape[0], self.n_pixels
        coords = self._slice_coords(rot, self._kx, self._ky).reshape(-1, 3)
        neg = coords[:, 0] < 0
        coords = xp.where(neg[:, None], -coords, coords)
        idx, w = _corners(coords, self.m)                   # [8, B * P]
        voxel = self.compact[idx.reshape(-1)]
        row = xp.tile(xp.arange(b * p, dtype=xp.int32), idx.shape[0])
        w = w.reshape(-1).astype(xp.float32)
        ok = (w != 0) & (voxel >= 0)
        s = sparse.coo_matrix((w[ok], (row[ok], voxel[ok])), shape=(b * p, self.n_voxels)).tocsr()
        return s, neg.reshape(b, p)

    def image_pixels(self, images, ctf, origins_px, pixel_size_A):
        """``(x [B, P] complex64, c [B, P] float32)``: the used Fourier pixels of images ``[B, N, N]``
        moved by ``+origin`` to the centre (RELION's origins, pixels), and their CTF (ones without)."""
        xp, n = self.xp, self.n
        ft = rfft2c(to_device(images, xp).astype(xp.float32, copy=False))
        ft = phase_shift_2d(ft, xp.asarray(origins_px, dtype=xp.float32).reshape(-1, 2))
        x = ft.reshape(ft.shape[0], -1)[:, self._pix].astype(xp.complex64)
        if ctf is None:
            return x, xp.ones(x.shape, xp.float32)
        c = ctf_2d(ctf, n, pixel_size_A, xp=xp).reshape(-1, n * (n // 2 + 1))[:, self._pix]
        return x, xp.broadcast_to(c, x.shape).astype(xp.float32)

    def to_real(self, values):
        """Maps ``[N, N, N]`` (float32) of compact coefficients ``values [V]`` or ``[V, K]`` (then
        ``[K, N, N, N]``): inverse transform of the padded grid, central crop, gridding correction."""
        xp = self.xp
        vals = xp.asarray(values)
        single = vals.ndim == 1
        vals = vals.reshape(vals.shape[0], -1)
        shape = (self.m, self.m, self.m // 2 + 1)
        out = []
        for k in range(vals.shape[1]):
            grid = xp.zeros(int(np.prod(shape)), xp.complex128)
            grid[self.voxels] = vals[:, k]
            out.append(self._to_real(grid.reshape(shape)))
        return out[0] if single else xp.stack(out)

    def from_real(self, volume):
        """Compact coefficients ``[V]`` of a map ``[N, N, N]`` (zero-padded transform; the inverse of
        :meth:`to_real` up to the gridding correction, which is applied first)."""
        from ...fourier import rfft3c
        xp, n, m = self.xp, self.n, self.m
        d = xp.arange(n, dtype=xp.float64) - n // 2
        corr = xp.sinc(d / m) ** 2
        v = to_device(volume, xp).astype(xp.float64) * corr[:, None, None] * corr[None, :, None] * corr[None, None, :]
        padded = xp.zeros((m, m, m), xp.float64)
        lo = m // 2 - n // 2
        padded[lo:lo + n, lo:lo + n, lo:lo + n] = v
        return rfft3c(padded).reshape(-1)[self.voxels]
