"""Figure-of-merit maps: normalised cross-correlation with templates, and Laplacian-of-Gaussian blobs.

Everything here works on one micrograph ``[H, W]`` (rows, columns; square or not) on its search grid
(pixel ``px``), with plain real FFTs (origin at pixel 0, circular). Conventions:

* **band filter** ``H``: a strict low-pass: a raised-cosine edge over the last 10 % of the pass band
  ends *at* ``1 / lowpass_A`` and everything beyond is exactly 0; an
  optional high-pass edge below ``1 / highpass_A``. Micrograph and templates are both filtered.
* **normalised cross-correlation** of template ``t`` at pixel ``x``: ``<g, I(x + .)> / (sigma_w ||g||)``
  with ``g = t * CTF * H^2`` (the template times the micrograph's CTF and the band filter applied to
  template and micrograph alike; its mean set to 0) and ``sigma_w`` the micrograph's white-noise
  standard deviation (:func:`white_noise_std`: robust, so sparse particles hardly count). For white
  noise each template's map is exactly a unit-variance Gaussian field (a z-score: the matched filter's
  signal-to-noise ratio); it does not change when the template is multiplied by any positive number or
  shifted by a constant, nor when the micrograph is (RELION's figure of merit depends on the
  template's grey scale). A normalisation by the standard deviation in a window at each pixel was
  tried first: it scores half-overlapping windows beside strong particles almost as high as them;
* **LoG**: ``sigma^2 * (laplacian of Gaussian_sigma) * I`` with ``sigma = d / (2 sqrt 2)`` for blob
  diameters ``d`` (the scale at which a disc of diameter ``d`` responds most), positive on dark
  blobs; each scale is divided by the standard deviation it would have on the micrograph's white noise
  (``sigma_w`` times the filter's norm, as for templates: a z-score, exactly unit variance on noise),
  then the maximum over the scales is taken. (A robust standard deviation of each scale's own response
  was used before: the particles' signal inflates it, more at the larger scales, and lowers their z.)

Both return each field's gradient variance ``lambda`` for :func:`cryolab.picking.peaks.false_alarm_threshold`.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from ..backend import fft_kwargs
from ..ctf import CTFParams
from ..simulate.micrographs import micrograph_ctf, micrograph_shape

__all__ = ["band_filter", "local_std", "ncc_map", "log_map", "log_filters", "robust_std", "gradient_variance",
           "white_noise_std", "subtract_plane"]

_EDGE = 0.1     # raised-cosine edge of the band filter, as a fraction of the cut-off frequency


def _freq2(shape):
    """Squared frequency ``[H, W//2+1]`` in 1/pixel^2 on the uncentred real-FFT grid of ``shape`` (rows,
    columns; one number: square)."""
    h, w = micrograph_shape(shape)
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    return kx ** 2 + ky ** 2


def band_filter(shape, pixel_size_A: float, lowpass_A: float | None, highpass_A: float | None = None):
    """The band filter ``H`` ``[H, W//2+1]`` of a micrograph of ``shape`` (rows, columns; one number:
    square; see the module text); ``lowpass_A=None``: no low-pass."""
    k = np.sqrt(_freq2(shape)) / pixel_size_A                        # 1/A
    h = np.ones_like(k)
    if lowpass_A:
        cut = 1.0 / lowpass_A
        t = np.clip((k - cut * (1 - _EDGE)) / (cut * _EDGE), 0, 1)
        h *= 0.5 + 0.5 * np.cos(np.pi * t)
        h[k >= cut] = 0.0
    if highpass_A:
        cut = 1.0 / highpass_A
        t = np.clip((k - cut) / (cut * _EDGE), 0, 1)
        h *= 0.5 - 0.5 * np.cos(np.pi * t)
    return h


def subtract_plane(image) -> np.ndarray:
    """``image`` ``[H, W]`` minus its least-squares plane ``a + b x + c y`` (float32; closed form: on a full
    grid the centred coordinates are orthogonal to each other and to the constant)."""
    img = np.asarray(image, np.float32)
    y = np.arange(img.shape[0]) - (img.shape[0] - 1) / 2.0
    x = np.arange(img.shape[1]) - (img.shape[1] - 1) / 2.0
    rows, cols = img.sum(axis=1, dtype=np.float64), img.sum(axis=0, dtype=np.float64)
    a = rows.sum() / img.size
    b = (x @ cols) / max(img.shape[0] * (x @ x), 1e-300)
    c = (y @ rows) / max(img.shape[1] * (y @ y), 1e-300)
    plane = np.float32(b) * x[None, :].astype(np.float32) + np.float32(c) * y[:, None].astype(np.float32)
    return img - np.float32(a) - plane


def _rfft2(x):
    return sfft.rfft2(x, **fft_kwargs(np))


def _irfft2(f, shape):
    return sfft.irfft2(f, s=tuple(shape), **fft_kwargs(np))


def _disc(shape, radius_px: float):
    """A disc of ``radius_px`` around pixel 0 (wrapped) on a grid of ``shape``, as a float image, and its
    pixel count."""
    dy, dx = (np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64) for n in shape)
    w = (dy[:, None] ** 2 + dx[None, :] ** 2 <= radius_px ** 2).astype(np.float32)
    return w, float(w.sum())


def local_std(image, radius_px: float, ft=None):
    """Standard deviation of ``image`` ``[H, W]`` in the disc of ``radius_px`` around every pixel (circular);
    ``ft``: its real FFT when already computed."""
    image = np.asarray(image, np.float32)
    w, count = _disc(image.shape, radius_px)
    fw = np.conj(_rfft2(w))
    f = _rfft2(image) if ft is None else ft
    mean = _irfft2(f * fw, image.shape) / count
    mean2 = _irfft2(_rfft2(image * image) * fw, image.shape) / count
    return np.sqrt(np.clip(mean2 - mean * mean, 1e-30, None))


def _ctf_grid(ctf: CTFParams | None, shape, pixel_size_A: float):
    """The CTF ``[H, W//2+1]`` on the uncentred real-FFT grid (1 without one)."""
    if ctf is None:
        return 1.0
    return micrograph_ctf(ctf, shape, pixel_size_A)


def _parseval(width: int):
    """Weights of the real-FFT columns of a ``width``-column image in a sum over the full spectrum (1 for
    column 0 and, for an even width, the last; else 2)."""
    w = np.full(width // 2 + 1, 2.0, np.float32)
    w[0] = 1.0
    if width % 2 == 0:
        w[-1] = 1.0
    return w


def _norm(ft, shape) -> np.ndarray:
    """The real-space norm ``||g||`` of each image ``g`` whose real FFT is ``ft`` (Parseval), per leading index."""
    power = (ft.real ** 2 + ft.imag ** 2) * _parseval(shape[1])
    return np.sqrt(np.sum(power, axis=(-2, -1), dtype=np.float64) / (shape[0] * shape[1]))


def gradient_variance(ft, shape) -> np.ndarray:
    """Variance of the x-derivative (pixel^-2) of a unit-variance field ``irfft2(ft * noise)``, per leading
    index: ``(2 pi)^2 sum(k_x^2 |ft|^2) / sum(|ft|^2)`` averaged over x and y (an isotropic field's
    ``lambda`` in the expected Euler characteristic, :mod:`cryolab.picking.peaks`)."""
    shape = micrograph_shape(shape)
    k2 = (0.5 * _freq2(shape)).astype(np.float32)
    power = (ft.real ** 2 + ft.imag ** 2) * _parseval(shape[1])
    return (2 * np.pi) ** 2 * np.sum(power * k2, axis=(-2, -1), dtype=np.float64) / np.maximum(
        np.sum(power, axis=(-2, -1), dtype=np.float64), 1e-300)


def white_noise_std(micrograph, h, margin: int = 0, ft=None) -> float:
    """The white-noise standard deviation of ``micrograph`` ``[H, W]`` estimated in the band ``h``: the
    robust standard deviation of the filtered micrograph (away from ``margin`` pixels of edge) over the
    filter's root-mean-square gain. ``ft``: the micrograph's real FFT when already computed."""
    shape = micrograph.shape
    filtered = _irfft2((_rfft2(micrograph) if ft is None else ft) * h, shape)
    gain = float(_norm(np.asarray(h, np.float64), shape))
    inner = filtered[margin:shape[0] - margin, margin:shape[1] - margin] if margin else filtered
    return max(robust_std(inner), 1e-30) / max(gain, 1e-30)


def ncc_map(micrograph, templates, pixel_size_A: float, *, ctf: CTFParams | None = None,
            lowpass_A: float | None = 20.0, highpass_A: float | None = None, batch: int = 8, ft=None):
    """Best normalised cross-correlation (z-score, module text) over ``templates`` ``[T, n, n]`` at every
    pixel of ``micrograph`` ``[H, W]`` (both on the grid of ``pixel_size_A``): ``(fom [H, W], best template
    [H, W], lambda [T])`` with each template's ``gradient_variance`` (for the false-alarm threshold). A
    template is centred on its pixel ``n // 2``; ``ctf`` is the micrograph's (one entry); ``ft`` the
    micrograph's real FFT when already computed. Pixels closer than half a template to an edge see the
    opposite edge (circular correlation): mask them."""
    mic = np.asarray(micrograph, np.float32)
    shape = mic.shape
    h = band_filter(shape, pixel_size_A, lowpass_A, highpass_A).astype(np.float32)
    t = np.asarray(templates, np.float32)
    f_mic = _rfft2(mic) if ft is None else ft
    sigma = white_noise_std(mic, h, t.shape[-1] // 2, f_mic)
    weight = (_ctf_grid(ctf, shape, pixel_size_A) * h * h).astype(np.float32)
    weight[0, 0] = 0.0                                               # the template's mean is 0
    n = t.shape[-1]
    iy, ix = ((np.arange(n) - n // 2) % size for size in shape)
    fom = np.full(shape, -np.inf, np.float32)
    best = np.zeros(shape, np.int32)
    lambdas = np.zeros(len(t))
    big = np.zeros((min(batch, len(t)),) + shape, np.float32)
    for start in range(0, len(t), batch):
        part = t[start:start + batch]
        big[:] = 0.0
        big[np.ix_(np.arange(len(part)), iy, ix)] = part
        ft_t = _rfft2(big[:len(part)]) * weight
        norm = _norm(ft_t, shape)
        norm = np.where(norm > 0, norm, np.inf) * sigma
        lambdas[start:start + len(part)] = gradient_variance(ft_t, shape)
        score = _irfft2(f_mic[None] * np.conj(ft_t), shape) / norm.astype(np.float32)[:, None, None]
        k = np.argmax(score, axis=0)
        val = np.take_along_axis(score, k[None], 0)[0]
        better = val > fom
        fom[better] = val[better]
        best[better] = k[better] + start
    return fom, best, lambdas


def robust_std(values) -> float:
    """1.4826 x the median absolute deviation from the median (the std of a Gaussian)."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else 0.0


def log_filters(shape, pixel_size_A: float, diameters_A, h=None):
    """The LoG filters ``[D, H, W//2+1]`` (float32, uncentred real-FFT grid) of blob ``diameters_A``
    (module text: ``-(2 pi k)^2 sigma^2 exp(-2 pi^2 sigma^2 k^2)``, times the band filter ``h``)."""
    k2 = _freq2(shape)
    out = []
    for d in np.atleast_1d(diameters_A):
        sigma = float(d) / pixel_size_A / (2 * np.sqrt(2))
        g = -(2 * np.pi) ** 2 * sigma ** 2 * k2 * np.exp(-2 * np.pi ** 2 * sigma ** 2 * k2)
        out.append((g if h is None else g * h).astype(np.float32))
    return np.stack(out)


def log_map(micrograph, pixel_size_A: float, diameters_A, *, lowpass_A: float | None = None,
            highpass_A: float | None = None, invert: bool = False, ft=None):
    """Laplacian-of-Gaussian figure of merit ``[H, W]`` (z-scores on white noise, module text; the best over
    the diameters), the index of the best diameter and each diameter's ``gradient_variance``. Positive on
    dark blobs; ``invert`` for white ones. ``ft``: the micrograph's real FFT when already computed."""
    mic = np.asarray(micrograph, np.float32)
    shape = mic.shape
    f = _rfft2(mic) if ft is None else ft
    if invert:
        f = -f
    h = band_filter(shape, pixel_size_A, lowpass_A, highpass_A)
    filters = log_filters(shape, pixel_size_A, diameters_A, h)
    sigma = white_noise_std(mic, h.astype(np.float32), 0, f)
    norms = _norm(filters, shape) * sigma
    lambdas = gradient_variance(filters, shape)
    fom = np.full(shape, -np.inf, np.float32)
    best = np.zeros(shape, np.int32)
    for i, g in enumerate(filters):
        z = _irfft2(f * (g / np.float32(max(norms[i], 1e-30))), shape)
        better = z > fom
        np.copyto(fom, z, where=better)
        best[better] = i
    return fom, best, lambdas
