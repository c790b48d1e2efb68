"""Direct insertion of Fourier pixel lists (``insert_pixels``) against two references.

References: the slice path (``insert`` of the lists spread into full half-transform slices,
itself checked against a brute-force trilinear extractor in test_reconstruction.py) and a
brute-force per-pixel loop (trilinear weights, Hermitian mate for ``x < 0``, ``kx = 0, ky < 0``
left out, nothing beyond the back-projector's ``max_shell``).

Measured when written (numpy, float64 accumulators): the pixel-list sums equal the slice path's
to <= 1.1e-16 relative (the order of additions differs) and the loop's to <= 1.5e-16 (of the largest
value); tolerance 1e-13 (float64 rounding with a wide margin, far below any wrong pixel or weight).
"""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.engine.estep import fourier_pixels, scatter
from cryolab.geometry import euler_to_matrix
from cryolab.reconstruction import BackProjector, BackProjector2D

RTOL = 1e-13


def _rotations(count, seed):
    rng = np.random.default_rng(seed)
    return euler_to_matrix(rng.uniform(0, 360, count), np.rad2deg(np.arccos(rng.uniform(-1, 1, count))),
                           rng.uniform(0, 360, count))


def _lists(rows, size, seed):
    rng = np.random.default_rng(seed)
    d = (rng.normal(size=(rows, size)) + 1j * rng.normal(size=(rows, size))).astype(np.complex64)
    return d, rng.uniform(0.1, 2.0, size=(rows, size)).astype(np.float32)


def _close(got, want):
    scale = max(float(np.abs(want).max()), 1e-300)
    assert float(np.abs(got - want).max()) <= RTOL * scale


def _insert_loop(bp, values, weights, rots, kx, ky):
    """Brute-force trilinear insertion, one pixel and one corner at a time (float64)."""
    m, half = bp.m, bp.m // 2 + 1
    data = np.zeros(bp.data.shape, complex)
    weight = np.zeros(bp.weight.shape)
    for a, vals, wts in zip(rots, values, weights):
        for x, y, v, w in zip(kx.astype(float), ky.astype(float), vals.astype(complex), wts.astype(float)):
            if x * x + y * y > bp.r_max ** 2 or (x == 0 and y < 0):
                continue
            c = bp.pad * (x * a[0] + y * a[1])        # A.T (kx, ky, 0), (x, y, z)
            if c[0] < 0:
                c, v = -c, np.conj(v)
            base = np.floor(c).astype(int)
            f = c - base
            for dz in (0, 1):
                for dy in (0, 1):
                    for dx in (0, 1):
                        ix = base[0] + dx
                        if ix >= half:
                            continue
                        t = ((f[0] if dx else 1 - f[0]) * (f[1] if dy else 1 - f[1])
                             * (f[2] if dz else 1 - f[2]))
                        iy, iz = (base[1] + dy + m // 2) % m, (base[2] + dz + m // 2) % m
                        data[iz, iy, ix] += t * v
                        weight[iz, iy, ix] += t * w
    return data, weight


@pytest.mark.parametrize("n, max_shell, bp_shell", [(16, 5, None), (15, 7, None), (16, 8, None), (16, 8, 6)])
def test_pixel_lists_equal_the_slice_path_and_a_loop(n, max_shell, bp_shell):
    """Below and at Nyquist, odd and even boxes, and a back-projector limited below the list."""
    pix = fourier_pixels(n, max_shell)
    rots = _rotations(6, seed=n + max_shell)
    d, w = _lists(6, pix.size, seed=max_shell)
    ref = BackProjector(n, max_shell=bp_shell)
    ref.insert(scatter(d, pix), scatter(w, pix), rots)
    bp = BackProjector(n, max_shell=bp_shell)
    bp.block_entries = 8 * pix.size * 2                   # several blocks of two rows
    bp.insert_pixels(d, w, rots, pix.kx, pix.ky)
    assert np.abs(bp.data).max() > 0
    _close(bp.data, ref.data)
    _close(bp.weight, ref.weight)
    loop_d, loop_w = _insert_loop(bp, d, w, rots, pix.kx, pix.ky)
    _close(bp.data, loop_d)
    _close(bp.weight, loop_w)


def test_pixel_order_weights_none_and_changing_lists():
    """Any order of the pixels gives the same sums; ``weights=None`` is 1 on the listed pixels; a new
    list is not served the previous list's cached subset."""
    n = 16
    rots = _rotations(4, seed=3)
    small, full = fourier_pixels(n, 4), fourier_pixels(n, 8)
    for pix in (small, full, small):
        d, w = _lists(4, pix.size, seed=pix.size)
        ref = BackProjector(n)
        ref.insert(scatter(d, pix), scatter(np.ones_like(w), pix), rots)
        perm = np.random.default_rng(0).permutation(pix.size)
        bp = BackProjector(n)
        bp.insert_pixels(d[:, perm], None, rots, pix.kx[perm], pix.ky[perm])
        _close(bp.data, ref.data)
        _close(bp.weight, ref.weight)
    with pytest.raises(ValueError, match="pixels"):
        BackProjector(n).insert_pixels(d, w, rots, full.kx, full.ky)


@pytest.mark.parametrize("n, max_shell", [(16, 5), (17, 8)])
def test_2d_pixel_lists_equal_the_slice_path(n, max_shell):
    pix = fourier_pixels(n, max_shell)
    psi = np.random.default_rng(n).uniform(0, 360, 5)
    d, w = _lists(5, pix.size, seed=n)
    ref = BackProjector2D(n)
    ref.insert(scatter(d, pix), scatter(w, pix), psi)
    bp = BackProjector2D(n)
    bp.insert_pixels(d, w, psi, pix.kx, pix.ky)
    assert np.abs(bp.data).max() > 0
    _close(bp.data, ref.data)
    _close(bp.weight, ref.weight)


@pytest.mark.parametrize("ndim", [2, 3])
def test_splat_equals_corners_and_scatter_bit_for_bit(ndim):
    """The insertion kernel (_splat: a base index plus a step per axis) against the generic corners
    (_corners + _scatter_add): the same sums to the bit, with points of both signs of x, points on
    the last x column (its +1 corner has weight 0) and on the last index of the centred axes (wrap)."""
    from cryolab.reconstruction.interpolation import _corners, _scatter_add, _splat
    m, k = 12, 4000
    half = m // 2 + 1
    rng = np.random.default_rng(ndim)
    pts = rng.uniform(-m / 2, m / 2, size=(k, ndim))
    pts[:25, 0], pts[25:50, 0] = m / 2, -m / 2                      # x on the last column
    pts[50:100, 1:] = rng.uniform(m / 2 - 1, m / 2 - 1e-9, (50, ndim - 1))   # y (z) wrap to index 0
    pts[100, :], pts[100, 0] = m / 2 - 0.5, m / 2                    # the grid's last voxel
    vals = (rng.normal(size=k) + 1j * rng.normal(size=k)).astype(np.complex64)
    wts = rng.uniform(0.1, 2, k)
    shape = (m,) * (ndim - 1) + (half,)
    got_d, got_w = np.zeros(shape, complex), np.zeros(shape)
    _splat(got_d.reshape(-1), got_w.reshape(-1), [pts[:, j] for j in range(ndim)], vals, wts, m)
    want_d, want_w = np.zeros(shape, complex), np.zeros(shape)
    neg = pts[:, 0] < 0
    idx, w = _corners(np.where(neg[:, None], -pts, pts), m)
    _scatter_add(want_d.reshape(-1), idx.reshape(-1), (w * np.where(neg, vals.conj(), vals)).reshape(-1))
    _scatter_add(want_w.reshape(-1), idx.reshape(-1), (w * wts).reshape(-1))
    assert np.abs(want_d).max() > 0 and np.array_equal(got_d, want_d) and np.array_equal(got_w, want_w)
