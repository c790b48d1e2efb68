"""Centred Fourier transforms and Fourier-space utilities.

Layout (used everywhere in cryolab):

* real-space images are ``[..., y, x]`` and volumes ``[..., z, y, x]``; the
  origin (centre) is pixel ``N // 2`` on every axis (RELION's convention);
* half (real) transforms keep ``kx = 0 .. N//2`` on the last axis and hold the
  other axes *centred*: index ``N // 2`` is frequency 0, so row ``i`` of a 2D
  half transform is ``ky = i - N // 2``;
* a frequency index ``k`` is ``k / (N * pixel_size_A)`` in 1/Angstrom, and
  resolution shell ``s`` holds the pixels with ``round(|k|) == s``.

All functions work on NumPy and CuPy arrays alike.

>>> import numpy as np
>>> img = np.random.default_rng(0).normal(size=(8, 8))
>>> np.allclose(irfft2c(rfft2c(img), 8), img)
True
"""
from __future__ import annotations

import numpy as np

from .backend import fft_kwargs, get_fft, get_xp

__all__ = [
    "rfft2c", "irfft2c", "rfft3c", "irfft3c", "fft2c", "ifft2c", "fft3c",
    "rfft_grid", "shell_index", "radial_average", "power_spectrum",
    "shell_resolution_A", "resolution_shell", "lowpass", "highpass",
    "fourier_crop", "fourier_pad", "rescale", "phase_shift",
]


def _axes(ndim: int):
    return tuple(range(-ndim, 0))


def _rfftnc(x, ndim):
    xp = get_xp(x)
    fft = get_fft(xp)
    axes = _axes(ndim)
    f = fft.rfftn(fft.ifftshift(x, axes=axes), axes=axes, **fft_kwargs(xp))
    return fft.fftshift(f, axes=axes[:-1])


def _irfftnc(f, n, ndim):
    xp = get_xp(f)
    fft = get_fft(xp)
    axes = _axes(ndim)
    x = fft.irfftn(fft.ifftshift(f, axes=axes[:-1]), s=(n,) * ndim, axes=axes, **fft_kwargs(xp))
    return fft.fftshift(x, axes=axes)


def rfft2c(images):
    """Centred half FFT of images (see the module doc for the layout).

    Parameters
    ----------
    images : array ``[..., N, N]``, axes ``(y, x)``
        Real images with their origin at pixel ``N // 2``; leading batch axes are kept.

    Returns
    -------
    complex array ``[..., N, N//2+1]``, axes ``(ky, kx)``
        Unnormalised transform: row ``i`` is ``ky = i - N // 2``, column ``j`` is ``kx = j``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((8, 8)); img[4, 4] = 1.0      # a delta at the origin
    >>> ft = rfft2c(img)
    >>> ft.shape, np.allclose(ft, 1.0)               # flat spectrum, zero phase
    ((8, 5), True)
    >>> float(rfft2c(np.ones((8, 8)))[4, 0].real)    # frequency 0 (row N//2, column 0): the sum
    64.0
    """
    return _rfftnc(images, 2)


def irfft2c(ft, n: int | None = None):
    """Inverse of :func:`rfft2c`.

    Parameters
    ----------
    ft : complex array ``[..., N, N//2+1]``, axes ``(ky, kx)``
        Centred half transform.
    n : int, optional
        Real box size in pixels; default ``ft.shape[-2]``. Give it for odd boxes, whose half
        transform has the same width as the next smaller even box.

    Returns
    -------
    real array ``[..., n, n]``, axes ``(y, x)``

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).normal(size=(2, 7, 7))
    >>> back = irfft2c(rfft2c(img), 7)
    >>> back.shape, np.allclose(back, img)
    ((2, 7, 7), True)
    """
    return _irfftnc(ft, ft.shape[-2] if n is None else n, 2)


def rfft3c(volume):
    """Centred half FFT of volumes ``[..., N, N, N]`` -> ``[..., N, N, N//2+1]``."""
    return _rfftnc(volume, 3)


def irfft3c(ft, n: int | None = None):
    """Inverse of :func:`rfft3c`; ``n`` is the real box size."""
    return _irfftnc(ft, ft.shape[-3] if n is None else n, 3)


def _fftnc(x, ndim, inverse=False):
    xp = get_xp(x)
    fft = get_fft(xp)
    axes = _axes(ndim)
    op = fft.ifftn if inverse else fft.fftn
    return fft.fftshift(op(fft.ifftshift(x, axes=axes), axes=axes, **fft_kwargs(xp)), axes=axes)


def fft2c(images):
    """Full centred 2D FFT (frequency 0 at index ``N//2`` on both axes); for display and teaching."""
    return _fftnc(images, 2)


def ifft2c(ft):
    """Inverse of :func:`fft2c` (complex result)."""
    return _fftnc(ft, 2, inverse=True)


def fft3c(volume):
    """Full centred 3D FFT (frequency 0 at index ``N//2`` on every axis)."""
    return _fftnc(volume, 3)


def rfft_grid(n: int, ndim: int = 2, xp=np, half: bool = True):
    """Integer frequency coordinates of the centred (half) transform grid.

    Returns ``(ky, kx)`` for ``ndim=2`` or ``(kz, ky, kx)`` for ``ndim=3``, each
    broadcast to the grid shape ``(N, N//2+1)`` / ``(N, N, N//2+1)``
    (``(N,)*ndim`` when ``half=False``).
    """
    full = xp.arange(n) - n // 2
    last = xp.arange(n // 2 + 1) if half else full
    axes = [full] * (ndim - 1) + [last]
    return xp.meshgrid(*axes, indexing="ij")


def phase_shift(x, shift_px):
    """Translate images ``[..., N, N]`` or one volume ``[N, N, N]`` by ``shift_px`` (``(x, y)`` or
    ``(x, y, z)`` pixels, fractional allowed; content moves by ``+shift``, periodically) with a
    Fourier phase ramp ``exp(-2 pi i k.s / N)``.

    >>> v = np.zeros((8, 8, 8)); v[4, 4, 4] = 1
    >>> [int(i) for i in np.unravel_index(np.argmax(phase_shift(v, (2, 0, -1))), v.shape)]   # z, y, x
    [3, 4, 6]
    """
    xp = get_xp(x)
    s = np.asarray(shift_px, float).ravel()
    ndim = s.size
    n = x.shape[-1]
    grids = rfft_grid(n, ndim, xp)[::-1]                      # kx, ky(, kz)
    phase = sum(-2.0 * np.pi / n * float(si) * g for si, g in zip(s, grids))
    ft = _rfftnc(x, ndim) * xp.exp(1j * phase).astype(xp.complex64)
    return _irfftnc(ft, n, ndim).astype(x.dtype, copy=False)


def shell_index(n: int, ndim: int = 2, xp=np, half: bool = True):
    """Resolution-shell index ``round(|k|)`` of every pixel of the centred (half) grid.

    Parameters
    ----------
    n : int
        Box size in pixels.
    ndim : int
        2 for images (grid axes ``(ky, kx)``), 3 for volumes (``(kz, ky, kx)``).
    xp : module
        ``numpy`` or ``cupy``.
    half : bool
        Half grid ``[N, N//2+1]`` (default) or the full centred grid ``[N, N]``.

    Returns
    -------
    int64 array of the grid's shape
        Shell ``s`` is ``s / (N * pixel_size)`` in 1/Angstrom.

    Examples
    --------
    >>> s = shell_index(8)
    >>> s.shape, int(s[4, 0]), int(s[4, 3]), int(s[0, 4])   # row 4 is ky = 0
    ((8, 5), 0, 3, 6)
    """
    grids = rfft_grid(n, ndim, xp, half)
    r2 = sum(g.astype(xp.float64) ** 2 for g in grids)
    return xp.rint(xp.sqrt(r2)).astype(xp.int64)


def radial_average(values, n: int, ndim: int = 2, half: bool = True, n_shells: int | None = None):
    """Mean of ``values`` in each resolution shell (see :func:`shell_index`).

    Parameters
    ----------
    values : array ``[..., N, N//2+1]`` (2D) or ``[..., N, N, N//2+1]`` (3D)
        Values on the centred half grid (full grid with ``half=False``); leading batch axes
        are kept. Complex values contribute their real part.
    n : int
        Box size in pixels.
    ndim : int
        2 or 3: the number of trailing grid axes.
    half : bool
        Whether ``values`` is on the half grid.
    n_shells : int, optional
        Shells ``0 .. n_shells - 1`` are returned (default ``N//2 + 1``; pixels beyond, in
        the corners, are dropped).

    Returns
    -------
    float64 array ``[..., n_shells]``

    Examples
    --------
    >>> import numpy as np
    >>> avg = radial_average(shell_index(16).astype(float), 16)   # each shell's own index
    >>> avg.shape, np.allclose(avg, np.arange(9))
    ((9,), True)
    """
    xp = get_xp(values)
    shells = shell_index(n, ndim, xp, half).ravel()
    n_shells = n // 2 + 1 if n_shells is None else n_shells
    keep = shells < n_shells
    flat = values.reshape(values.shape[: values.ndim - ndim] + (-1,))[..., keep]
    idx = shells[keep]
    counts = xp.bincount(idx, minlength=n_shells).astype(xp.float64)
    batch = flat.reshape(-1, flat.shape[-1])
    out = xp.stack([xp.bincount(idx, weights=row.real.astype(xp.float64), minlength=n_shells)
                    for row in batch]) / xp.maximum(counts, 1)
    return out.reshape(flat.shape[:-1] + (n_shells,))


def power_spectrum(x, ndim: int = 2):
    """Rotationally averaged power ``<|F|^2>`` per shell of images (``ndim=2``) or volumes (3)."""
    ft = _rfftnc(x, ndim)
    return radial_average(abs(ft) ** 2, x.shape[-1], ndim)


def shell_resolution_A(shell, n: int, pixel_size_A: float):
    """Resolution in Angstrom of shell index ``shell`` (``N * pixel_size / shell``; inf at 0)."""
    shell = np.asarray(shell, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(shell > 0, n * pixel_size_A / np.maximum(shell, 1e-30), np.inf)


def resolution_shell(resolution_A: float, n: int, pixel_size_A: float) -> float:
    """Shell index (fractional) at a resolution in Angstrom: ``N * pixel_size / resolution``."""
    return n * pixel_size_A / resolution_A


def _radius_grid(n, ndim, xp):
    grids = rfft_grid(n, ndim, xp, True)
    return xp.sqrt(sum(g.astype(xp.float32) ** 2 for g in grids))


def _filter(x, ndim, mask):
    return _irfftnc(_rfftnc(x, ndim) * mask, x.shape[-1], ndim).astype(x.dtype, copy=False)


def lowpass(x, resolution_A: float, pixel_size_A: float, ndim: int = 2, edge_shells: float = 2.0):
    """Low-pass filter images or volumes at a resolution.

    Frequencies below the cut-off pass, a raised-cosine edge ``edge_shells`` wide
    (centred on the cut-off) goes to zero above it.

    Parameters
    ----------
    x : array ``[..., N, N]`` (axes ``y, x``) or ``[..., N, N, N]`` (``z, y, x``)
        Images (``ndim=2``) or volumes (``ndim=3``); leading batch axes are filtered alike.
    resolution_A : float
        Cut-off in Angstrom; it lies at shell ``N * pixel_size_A / resolution_A``.
    pixel_size_A : float
        Pixel size in Angstrom.
    ndim : int
        2 or 3.
    edge_shells : float
        Width of the soft edge in shells (Fourier pixels).

    Returns
    -------
    array of the shape and dtype of ``x``

    Examples
    --------
    A 64-pixel image at 2 A/px filtered at 16 A (shell 8, the edge covering shells 7-9) keeps
    the shells below the edge and removes those above it:

    >>> import numpy as np
    >>> img = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    >>> out = lowpass(img, 16.0, 2.0)
    >>> out.dtype, out.shape
    (dtype('float32'), (64, 64))
    >>> power = power_spectrum(out) / power_spectrum(img)
    >>> bool(np.allclose(power[:7], 1)), bool(np.all(power[10:] < 1e-6))
    (True, True)
    """
    xp = get_xp(x)
    n = x.shape[-1]
    r = _radius_grid(n, ndim, xp)
    cut = resolution_shell(resolution_A, n, pixel_size_A)
    t = xp.clip((r - (cut - edge_shells / 2)) / max(edge_shells, 1e-6), 0, 1)
    return _filter(x, ndim, 0.5 + 0.5 * xp.cos(np.pi * t))


def highpass(x, resolution_A: float, pixel_size_A: float, ndim: int = 2, edge_shells: float = 2.0):
    """High-pass filter: removes what :func:`lowpass` keeps (same soft edge)."""
    xp = get_xp(x)
    n = x.shape[-1]
    r = _radius_grid(n, ndim, xp)
    cut = resolution_shell(resolution_A, n, pixel_size_A)
    t = xp.clip((r - (cut - edge_shells / 2)) / max(edge_shells, 1e-6), 0, 1)
    return _filter(x, ndim, 0.5 - 0.5 * xp.cos(np.pi * t))


def _resize_ft(ft, n_old, n_new, ndim):
    """Crop or zero-pad a centred half transform from box ``n_old`` to ``n_new``."""
    xp = get_xp(ft)
    shape = ft.shape[: ft.ndim - ndim] + (n_new,) * (ndim - 1) + (n_new // 2 + 1,)
    out = xp.zeros(shape, dtype=ft.dtype)
    m = min(n_old, n_new)
    lo_old, lo_new = n_old // 2 - m // 2, n_new // 2 - m // 2
    sl_old = tuple(slice(lo_old, lo_old + m) for _ in range(ndim - 1)) + (slice(0, m // 2 + 1),)
    sl_new = tuple(slice(lo_new, lo_new + m) for _ in range(ndim - 1)) + (slice(0, m // 2 + 1),)
    out[(Ellipsis,) + sl_new] = ft[(Ellipsis,) + sl_old]
    return out


def rescale(x, n_new: int, ndim: int = 2):
    """Resample images/volumes to box ``n_new`` by Fourier cropping or padding.

    The pixel size changes by ``N / n_new``; mean density per pixel is preserved
    (values are scaled by ``(n_new / N) ** ndim`` on the sum, i.e. kept per pixel).
    """
    n = x.shape[-1]
    ft = _resize_ft(_rfftnc(x, ndim), n, n_new, ndim)
    out = _irfftnc(ft, n_new, ndim) * (n_new / n) ** ndim
    return out.astype(x.dtype, copy=False)


def fourier_crop(x, n_new: int, ndim: int = 2):
    """Down-sample to a smaller box ``n_new < N`` (see :func:`rescale`)."""
    if n_new > x.shape[-1]:
        raise ValueError(f"fourier_crop: new box {n_new} is larger than {x.shape[-1]}")
    return rescale(x, n_new, ndim)


def fourier_pad(x, n_new: int, ndim: int = 2):
    """Up-sample to a larger box ``n_new > N`` (see :func:`rescale`)."""
    if n_new < x.shape[-1]:
        raise ValueError(f"fourier_pad: new box {n_new} is smaller than {x.shape[-1]}")
    return rescale(x, n_new, ndim)
