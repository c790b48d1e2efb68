"""Grids of a reconstruction: shell indices of the padded half grid, the outside mask, and the
pruned inverse transform with its central crop and gridding correction.

The padded grid is ``[M, M, M//2+1]`` (``[M, M//2+1]`` in 2D), centred on its centred axes;
the cropped box is ``[N]*ndim``. Functions follow the array module of their inputs.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..backend import fft_kwargs, get_fft, get_xp
from ..fourier import rfft_grid


def _device_of(xp):
    """The current device of ``xp`` (None for NumPy): part of the cache keys below."""
    return None if xp is np else getattr(xp.cuda.Device(), "id", None)


@lru_cache(maxsize=2)
def _cached_shells(m: int, ndim: int, pad: float, xp, device, half_width=None):
    """``(radius, shell)`` of the padded half grid (see :meth:`_FourierAccumulator.shells`), or of
    its box of frequencies ``-B .. B`` (centred axes) and ``0 .. B`` (half axis) with ``half_width``
    ``B``: the same values as that part of the whole grid. Two grids kept (``16 M^ndim / 2`` bytes
    each when whole), shared by every accumulator of that size: read only."""
    if half_width is None:
        grids = rfft_grid(m, ndim, xp, True)
    else:
        f = xp.arange(m)[m // 2 - half_width:m // 2 + half_width + 1] - m // 2
        grids = xp.meshgrid(*([f] * (ndim - 1) + [xp.arange(half_width + 1)]), indexing="ij")
    r, shells = _radius_shells(grids, pad, xp)
    if xp is np:
        r.flags.writeable = shells.flags.writeable = False
    return r, shells


def _radius_shells(grids, pad: float, xp):
    """``(radius, shell)`` of the points of integer frequency ``grids`` (padded-grid units)."""
    r = xp.sqrt(sum(g.astype(xp.float64) ** 2 for g in grids))
    return r, xp.rint(r / pad).astype(xp.int64)


def _top_shell(m: int, ndim: int, pad: float, xp, device, half_width=None) -> int:
    """The largest shell index of :func:`_cached_shells` (same arguments) without the grid: that of
    its corner (``|f| = M // 2``, or ``half_width``, on every axis), computed as the grid computes it."""
    f = np.float64(m // 2 if half_width is None else half_width)
    return int(np.rint(np.sqrt(sum(f ** 2 for _ in range(ndim))) / pad))


@lru_cache(maxsize=4)
def _cached_outside_mask(n: int, ndim: int, xp, device):
    """``(mask, 1 - mask, max(sum(1 - mask), 1e-12))`` of :meth:`_FourierAccumulator._mask_outside`."""
    from ..validation import soft_circle_mask, soft_sphere_mask
    mask = (soft_sphere_mask if ndim == 3 else soft_circle_mask)(n, n / 2, 3.0, xp=xp)
    out_w = 1 - mask
    if xp is np:
        mask.flags.writeable = out_w.flags.writeable = False
    return mask, out_w, max(float(out_w.sum()), 1e-12)


def cropped_inverse(ft, n: int, m: int, half_width=None):
    """The central ``N`` box (float64) of ``irfft3c(ft, M)`` / ``irfft2c(ft, M)``; ``ft`` is left alone.

    Computed axis by axis and pruned: after the inverse transform along an axis only the ``N``
    kept rows of the ``M`` (index ``(i - N//2) mod M``: the output's ``fftshift`` and the crop
    as one gather) go on to the next axis, so the second axis's ``ifftshift`` and transform
    run on half the grid and the last axis's on a quarter (3D). The same 1D transforms of the
    same values, unscaled, then one multiplication by the library's ``1 / M^ndim``: with
    NumPy (scipy.fft) equal to the whole-grid ``irfft3c`` bit for bit on the tested sizes.

    ``half_width`` ``B``: ``ft`` is the box of frequencies ``-B .. B`` (centred axes), ``0 .. B``
    (half axis) of a grid that is zero elsewhere; only the lines through the box are
    transformed (each placed, shifted, in a zeroed line of length ``M``): the same lines as
    the whole grid's, the others being zero."""
    return half_axis_inverse(centred_inverse(ft, n, m, half_width), n, m, ft.ndim, half_width)


def centred_inverse(ft, n: int, m: int, half_width=None):
    """The first part of :func:`cropped_inverse`: the centred axes, each cropped to ``N``."""
    xp = get_xp(ft)
    fft, kw = get_fft(xp), fft_kwargs(xp)
    keep = (xp.arange(n) - n // 2) % m
    x = ft
    for ax in range(ft.ndim - 1):
        if half_width is None:
            x = fft.ifftshift(x, axes=ax)  # a copy: ``ft`` is not overwritten
        else:  # frequency f to index f mod M: the box placed as ifftshift would place it
            full = xp.zeros(x.shape[:ax] + (m,) + x.shape[ax + 1:], dtype=x.dtype)
            full[(slice(None),) * ax + ((xp.arange(-half_width, half_width + 1) % m),)] = x
            x = full
        x = fft.ifft(x, axis=ax, norm="forward", overwrite_x=True, **kw)
        x = xp.take(x, keep, axis=ax)
    return x


def half_axis_inverse(x, n: int, m: int, ndim: int, half_width=None):
    """The last part of :func:`cropped_inverse`: the half axis, cropped, scaled by ``1 / M^ndim``."""
    xp = get_xp(x)
    fft, kw = get_fft(xp), fft_kwargs(xp)
    keep = (xp.arange(n) - n // 2) % m
    if half_width is not None:
        full = xp.zeros(x.shape[:-1] + (m // 2 + 1,), dtype=x.dtype)
        full[..., :half_width + 1] = x
        x = full
    x = fft.irfft(x, n=m, axis=-1, norm="forward", overwrite_x=True, **kw)
    out = xp.take(x, keep, axis=-1)
    out *= float(np.longdouble(1) / np.longdouble(m) ** ndim)
    return out


def gridding_corrected(out, m: int):
    """``out`` (the cropped box ``[N]*ndim``, float64) divided by ``sinc^2(d / M)`` per axis -> float32."""
    xp, n, nd = get_xp(out), out.shape[-1], out.ndim
    d = xp.arange(n, dtype=xp.float64) - n // 2
    corr = xp.sinc(d / m) ** 2
    for ax in range(nd):
        shape = [1] * nd
        shape[ax] = n
        out = out / corr.reshape(shape)
    return out.astype(xp.float32)
