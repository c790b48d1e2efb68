"""Figure-of-merit maps: normalised cross-correlation with templates, and Laplacian-of-Gaussian blobs.

Everything here works on one micrograph ``[S, S]`` on its search grid (pixel ``px``), with plain real
FFTs (origin at pixel 0, circular). Conventions:

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
  blobs; each scale is divided by its robust standard deviation (1.4826 x MAD) before the maximum.

Both return each field's gradient variance ``lambda`` for :func:`cryolab.picking.peaks.false_alarm_threshold`.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from ..backend import fft_kwargs
from ..ctf import CTFParams, ctf_2d

__all__ = ["band_filter", "local_std", "ncc_map", "log_map", "robust_std", "gradient_variance", "white_noise_std"]

_EDGE = 0.1     # raised-cosine edge of the band filter, as a fraction of the cut-off frequency


def _freq2(size: int):
    """Squared frequency ``[S, S//2+1]`` in 1/pixel^2 on the uncentred real-FFT grid."""
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    return kx ** 2 + ky ** 2


def band_filter(size: int, pixel_size_A: float, lowpass_A: float | None, highpass_A: float | None = None):
    """The band filter ``H`` ``[S, S//2+1]`` (see the module text); ``lowpass_A=None``: no low-pass."""
    k = np.sqrt(_freq2(size)) / pixel_size_A                         # 1/A
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


def _rfft2(x):
    return sfft.rfft2(x, **fft_kwargs(np))


def _irfft2(f, size):
    return sfft.irfft2(f, s=(size, size), **fft_kwargs(np))


def _disc(size: int, radius_px: float):
    """A disc of ``radius_px`` around pixel 0 (wrapped), as a float image, and its pixel count."""
    d = np.minimum(np.arange(size), size - np.arange(size)).astype(np.float64)
    w = (d[:, None] ** 2 + d[None, :] ** 2 <= radius_px ** 2).astype(np.float64)
    return w, float(w.sum())


def local_std(image, radius_px: float, ft=None):
    """Standard deviation of ``image`` in the disc of ``radius_px`` around every pixel (circular)."""
    size = image.shape[-1]
    w, count = _disc(size, radius_px)
    fw = np.conj(_rfft2(w))
    f = _rfft2(image) if ft is None else ft
    mean = _irfft2(f * fw, size) / count
    mean2 = _irfft2(_rfft2(image * image) * fw, size) / count
    return np.sqrt(np.clip(mean2 - mean * mean, 1e-30, None))


def _ctf_grid(ctf: CTFParams | None, size: int, pixel_size_A: float):
    """The CTF ``[S, S//2+1]`` on the uncentred real-FFT grid (1 without one)."""
    if ctf is None:
        return 1.0
    return np.fft.ifftshift(ctf_2d(ctf, size, pixel_size_A, dtype=np.float64)[0], axes=0)


def _parseval(size: int):
    """Weights of the real-FFT columns in a sum over the full spectrum (1 for columns 0 and S/2, else 2)."""
    w = np.full(size // 2 + 1, 2.0, np.float32)
    w[0] = 1.0
    if size % 2 == 0:
        w[-1] = 1.0
    return w


def gradient_variance(ft, size: int) -> np.ndarray:
    """Variance of the x-derivative (pixel^-2) of a unit-variance field ``irfft2(ft * noise)``, per leading
    index: ``(2 pi)^2 sum(k_x^2 |ft|^2) / sum(|ft|^2)`` averaged over x and y (an isotropic field's
    ``lambda`` in the expected Euler characteristic, :mod:`cryolab.picking.peaks`)."""
    k2 = (0.5 * _freq2(size)).astype(np.float32)
    power = (ft.real ** 2 + ft.imag ** 2) * _parseval(size)
    return (2 * np.pi) ** 2 * np.sum(power * k2, axis=(-2, -1), dtype=np.float64) / np.maximum(
        np.sum(power, axis=(-2, -1), dtype=np.float64), 1e-300)


def white_noise_std(micrograph, h, margin: int = 0) -> float:
    """The white-noise standard deviation of ``micrograph`` estimated in the band ``h``: the robust
    standard deviation of the filtered micrograph (away from ``margin`` pixels of edge) over the filter's
    root-mean-square gain."""
    size = micrograph.shape[-1]
    filtered = _irfft2(_rfft2(micrograph) * h, size)
    gain = np.sqrt(np.sum(h.astype(np.float64) ** 2 * _parseval(size)) / size ** 2)
    inner = filtered[margin:size - margin, margin:size - margin] if margin else filtered
    return max(robust_std(inner), 1e-30) / max(gain, 1e-30)


def ncc_map(micrograph, templates, pixel_size_A: float, *, ctf: CTFParams | None = None,
            lowpass_A: float | None = 20.0, highpass_A: float | None = None, batch: int = 8):
    """Best normalised cross-correlation (z-score, module text) over ``templates`` ``[T, n, n]`` at every
    pixel of ``micrograph`` ``[S, S]`` (both on the grid of ``pixel_size_A``): ``(fom [S, S], best template
    [S, S], lambda [T])`` with each template's ``gradient_variance`` (for the false-alarm threshold). A
    template is centred on its pixel ``n // 2``; ``ctf`` is the micrograph's (one entry). Pixels closer
    than half a template to an edge see the opposite edge (circular correlation): mask them."""
    mic = np.asarray(micrograph, np.float32)
    size = mic.shape[-1]
    h = band_filter(size, pixel_size_A, lowpass_A, highpass_A).astype(np.float32)
    t = np.asarray(templates, np.float32)
    sigma = white_noise_std(mic, h, t.shape[-1] // 2)
    f_mic = _rfft2(mic)
    weight = (_ctf_grid(ctf, size, pixel_size_A) * h * h).astype(np.float32)
    weight[0, 0] = 0.0                                               # the template's mean is 0
    n = t.shape[-1]
    idx = (np.arange(n) - n // 2) % size
    fom = np.full((size, size), -np.inf, np.float32)
    best = np.zeros((size, size), np.int32)
    lambdas = np.zeros(len(t))
    big = np.zeros((min(batch, len(t)), size, size), np.float32)
    for start in range(0, len(t), batch):
        part = t[start:start + batch]
        big[:] = 0.0
        big[np.ix_(np.arange(len(part)), idx, idx)] = part
        ft = _rfft2(big[:len(part)]) * weight
        norm = np.sqrt(np.sum((ft.real ** 2 + ft.imag ** 2) * _parseval(size), axis=(-2, -1), dtype=np.float64))
        norm = np.where(norm > 0, norm / size, np.inf) * sigma
        lambdas[start:start + len(part)] = gradient_variance(ft, size)
        score = _irfft2(f_mic[None] * np.conj(ft), size) / norm.astype(np.float32)[:, None, None]
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


def log_map(micrograph, pixel_size_A: float, diameters_A, *, lowpass_A: float | None = None,
            highpass_A: float | None = None, invert: bool = False):
    """Laplacian-of-Gaussian figure of merit ``[S, S]`` (robust z-scores, the best over the diameters),
    the index of the best diameter and each diameter's ``gradient_variance``. Positive on dark blobs;
    ``invert`` for white ones."""
    mic = np.asarray(micrograph, np.float32)
    size = mic.shape[-1]
    f = _rfft2(-mic if invert else mic)
    h = band_filter(size, pixel_size_A, lowpass_A, highpass_A)
    k2 = _freq2(size)
    fom = np.full((size, size), -np.inf, np.float32)
    best = np.zeros((size, size), np.int32)
    diameters = np.atleast_1d(diameters_A)
    lambdas = np.zeros(len(diameters))
    for i, d in enumerate(diameters):
        sigma = float(d) / pixel_size_A / (2 * np.sqrt(2))
        g = (-(2 * np.pi) ** 2 * sigma ** 2 * k2 * np.exp(-2 * np.pi ** 2 * sigma ** 2 * k2) * h).astype(np.float32)
        lambdas[i] = gradient_variance(g, size)
        response = _irfft2(f * g, size)
        z = (response - np.median(response)) / max(robust_std(response), 1e-30)
        better = z > fom
        fom[better] = z[better]
        best[better] = i
    return fom, best, lambdas
