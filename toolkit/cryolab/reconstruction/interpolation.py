"""Linear interpolation on centred half Fourier grids and its adjoint (insertion).

Grids are ``[M, M, M//2+1]`` (``[M, M//2+1]`` in 2D) with ``M`` the padded box, even;
coordinates are ``(x, y[, z])`` in padded-grid units with ``x >= 0`` (points with ``x < 0``
are first mapped to their Hermitian mate). Centred axes wrap periodically.
Functions follow the array module of their inputs (NumPy or CuPy).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..projection import padded_size as _padded_size  # noqa: F401  (the projector's padding)

# interpolation-corner entries handled per vectorised block: bounds temporary memory; 2^20 keeps
# the temporaries near the CPU caches (inserting 64 px slices: ~25 % faster than 2^22)
_BLOCK_ENTRIES = 1 << 20


def _scatter_add(target, idx, values):
    """``target[idx] += values`` (1D ``target``) with repeated indices summed (numpy or cupy).

    Complex targets take one pass on NumPy (real and imaginary parts share cache lines: ~3x faster
    than two passes over the interleaved parts); CuPy's atomic add is real only, so there the
    parts are added in two passes.
    """
    xp = get_xp(target)
    if xp is np:          # values in the target's dtype: mixed dtypes take a ~10x slower path
        np.add.at(target, idx, values.astype(target.dtype, copy=False))
        return
    import cupyx  # pragma: no cover - GPU only
    if xp.iscomplexobj(target):  # pragma: no cover - GPU only
        parts = target.view(target.real.dtype)
        cupyx.scatter_add(parts, 2 * idx, values.real.astype(parts.dtype, copy=False))
        cupyx.scatter_add(parts, 2 * idx + 1, values.imag.astype(parts.dtype, copy=False))
    else:  # pragma: no cover - GPU only
        cupyx.scatter_add(target, idx, values)


def _corners(coords, m: int):
    """Linear-interpolation neighbours of padded-grid points ``coords`` ``[K, d]`` (x, y[, z], x >= 0).

    Returns flat indices ``[2^d, K]`` into the centred half grid ``[M, (M,) M//2+1]`` and weights
    ``[2^d, K]``. Centred axes wrap periodically (index ``M//2 + f`` modulo ``M``); a neighbour
    beyond the last ``x`` column ``M // 2`` gets weight 0 (only reachable on the outermost shell).
    """
    xp = get_xp(coords)
    d, k = coords.shape[-1], coords.shape[0]
    half = m // 2 + 1
    itype = xp.int32 if m * m * half < 2 ** 31 else xp.int64
    flat = xp.zeros((1, k), dtype=itype)
    w = xp.ones((1, k), dtype=coords.dtype)
    for axis in range(d - 1, -1, -1):  # array order [z, y, x]: slowest axis first
        c = coords[:, axis]
        c0 = xp.floor(c)
        f = c - c0
        i0 = c0.astype(itype)
        if axis == 0:
            ids = xp.stack([xp.minimum(i0, half - 1), xp.minimum(i0 + 1, half - 1)])
            ws = xp.stack([1 - f, xp.where(i0 + 1 < half, f, 0)])
            size = half
        else:
            i0 = (i0 + m // 2) % m
            ids = xp.stack([i0, (i0 + 1) % m])
            ws = xp.stack([1 - f, f])
            size = m
        flat = (flat[:, None] * size + ids[None]).reshape(-1, k)
        w = (w[:, None] * ws[None]).reshape(-1, k)
    return flat, w


def _interpolate(grid, coords, m: int):
    """Linear interpolation of a half grid (real or complex) at padded-grid points ``coords`` [K, d]."""
    xp = get_xp(grid)
    neg = coords[:, 0] < 0
    coords = xp.where(neg[:, None], -coords, coords)
    idx, w = _corners(coords, m)
    vals = (grid.reshape(-1)[idx] * w).sum(axis=0)
    if xp.iscomplexobj(vals):
        vals = xp.where(neg, vals.conj(), vals)
    return vals


def _mirror_index(m: int, xp):
    """Index of frequency ``-f`` for each index of a centred axis of length ``M``."""
    return (2 * (m // 2) - xp.arange(m)) % m
