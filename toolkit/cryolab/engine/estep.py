"""E-step kernels: score images against every (reference, rotation) x translation as GEMMs.

Notation (RELION's): image ``X`` (Fourier, centred half grid, restricted to the
``M`` pixels of :class:`FourierPixels`), CTF ``C``, noise ``sigma2`` per pixel
(from its resolution shell), reference projections ``P_j`` (``j`` runs over
classes x rotations), translations ``t`` (phase ramps ``S_t``)::

    diff2(b, t, j) = sum_m |X_bm S_tm - C_bm P_jm|^2 / (2 sigma2_m)
                   = A_b - cross(bt, j) + Q(b, j)
    A_b        = sum_m |X_bm|^2 / (2 sigma2_m)
    cross      = Re sum_m conj(X_bm S_tm) C_bm P_jm / sigma2_m     (one real GEMM, inner size 2M)
    Q(b, j)    = sum_m C_bm^2 |P_jm|^2 / (2 sigma2_m)             (one real GEMM, inner size M)

Only the real part of the cross term is needed, so the complex product is
written as a real GEMM of ``[Re Y, -Im Y]`` with ``[Re P, Im P]``: half the flops
of a complex GEMM. Each pixel of the half transform counts once, as in RELION.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_xp
from ..fourier import rfft_grid

__all__ = ["FourierPixels", "fourier_pixels", "gather", "scatter", "split_complex",
           "image_terms", "score", "normalise", "significant_mask"]


@dataclass(frozen=True)
class FourierPixels:
    """The half-grid pixels used in the likelihood: all with shell index ``<= max_shell``.

    ``index`` is the flat index into an ``[N, N//2+1]`` half transform; ``kx``, ``ky``
    are integer frequencies; ``shell`` the resolution shell of each pixel.
    """
    n: int
    max_shell: int
    index: object
    kx: object
    ky: object
    shell: object

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    def count_within(self, shell: int) -> int:
        """Number of leading pixels with shell index ``<= shell``."""
        return int((self.shell <= shell).sum())


def fourier_pixels(n: int, max_shell: int, xp=np) -> FourierPixels:
    """Pixels of the centred half grid of box ``n`` inside shell ``max_shell`` (DC included).

    Pixels are ordered by shell, so the pixels up to a smaller shell are a prefix
    (:meth:`FourierPixels.count_within`): the coarse pass of adaptive oversampling
    scores at lower resolution on ``X[:, :m]``.
    """
    ky, kx = rfft_grid(n, 2, np)
    r = np.rint(np.sqrt(kx.astype(float) ** 2 + ky ** 2)).astype(np.int64)
    keep = np.flatnonzero((r <= max_shell).ravel())
    keep = keep[np.argsort(r.ravel()[keep], kind="stable")]
    return FourierPixels(n, int(max_shell), xp.asarray(keep), xp.asarray(kx.ravel()[keep], dtype=xp.float32),
                         xp.asarray(ky.ravel()[keep], dtype=xp.float32), xp.asarray(r.ravel()[keep]))


def gather(ft, pix: FourierPixels):
    """``[..., N, N//2+1]`` -> ``[..., M]``: the values at the likelihood pixels."""
    return ft.reshape(ft.shape[:-2] + (-1,))[..., pix.index]


def scatter(values, pix: FourierPixels):
    """Inverse of :func:`gather`: ``[..., M]`` -> ``[..., N, N//2+1]`` with zeros elsewhere."""
    xp = get_xp(values)
    n = pix.n
    out = xp.zeros(values.shape[:-1] + (n * (n // 2 + 1),), dtype=values.dtype)
    out[..., pix.index] = values
    return out.reshape(values.shape[:-1] + (n, n // 2 + 1))


def split_complex(z):
    """``[..., M]`` complex -> ``[..., 2M]`` real ``[Re z, Im z]`` (float32)."""
    xp = get_xp(z)
    return xp.concatenate([z.real, z.imag], axis=-1).astype(xp.float32, copy=False)


def image_terms(X, ctf, weight, ramps):
    """``Yc [B*T, 2M]`` float32: ``[Re Z, Im Z] * weight`` with ``Z = C X S_t`` (shifted, CTF-weighted images).

    ``cross = Yc @ [Re P, Im P].T`` is ``Re sum conj(X S) C P w``; the M-step reuses ``Yc``
    (``sum_bt w Z = (w.T @ Yc) / weight``). Built image by image into one buffer to stay
    in cache and avoid complex temporaries.
    """
    xp = get_xp(X)
    B, M = X.shape
    T = ramps.shape[0]
    cw = xp.ones((B, M), xp.float32) if ctf is None else ctf.astype(xp.float32, copy=False)
    cw = cw * weight.astype(xp.float32)[None, :]
    sr, si = ramps.real.astype(xp.float32), ramps.imag.astype(xp.float32)
    xr, xi = (X.real * cw).astype(xp.float32), (X.imag * cw).astype(xp.float32)
    out = xp.empty((B, T, 2 * M), dtype=xp.float32)
    tmp = xp.empty((T, M), dtype=xp.float32)
    for b in range(B):
        re, im = out[b, :, :M], out[b, :, M:]
        xp.multiply(sr, xr[b], out=re)
        xp.multiply(si, xi[b], out=tmp)
        re -= tmp
        xp.multiply(si, xr[b], out=im)
        xp.multiply(sr, xi[b], out=tmp)
        im += tmp
    return out.reshape(B * T, 2 * M)


def score(X, ctf, inv_sigma2, P, ramps, *, mode: str = "map", Yc=None, return_terms: bool = False):
    """Scores ``[B, T, J]`` (larger = better) of images against references x translations.

    ``X``: ``[B, M]`` complex images; ``ctf``: ``[B, M]`` real (or None = 1);
    ``inv_sigma2``: ``[M]`` real ``1/sigma2``; ``P``: ``[J, M]`` complex projections;
    ``ramps``: ``[T, M]`` complex translation ramps.

    ``mode="map"``/``"ml"`` returns ``-(diff2 - A_b)`` = ``cross - Q`` (add log priors,
    then normalise); ``mode="maxcc"`` returns the cross-correlation
    ``Re<X_t, C P> / (|X| |C P|)`` (with ``sigma2`` = 1). With ``return_terms``
    also returns ``Yc`` from :func:`image_terms` (reused by the M-step).
    """
    xp = get_xp(X)
    B, M = X.shape
    T = ramps.shape[0]
    c = xp.ones((B, M), xp.float32) if ctf is None else ctf.astype(xp.float32, copy=False)
    w = xp.ones(M, xp.float32) if mode == "maxcc" else inv_sigma2.astype(xp.float32)
    if Yc is None:
        Yc = image_terms(X, c, w, ramps)
    cross = (Yc @ split_complex(P).T).reshape(B, T, -1)                            # the GEMM
    P2 = (P.real ** 2 + P.imag ** 2).astype(xp.float32)                            # [J, M]
    if mode == "maxcc":
        norm_cp = xp.sqrt(xp.maximum((c * c) @ P2.T, 1e-30))                       # [B, J]
        norm_x = xp.sqrt(xp.sum(xp.abs(X) ** 2, axis=1))                            # [B]
        out = cross / (norm_cp[:, None, :] * xp.maximum(norm_x, 1e-30)[:, None, None])
    else:
        Q = (c * c * (0.5 * w)) @ P2.T                                              # [B, J]
        cross -= Q[:, None, :]
        out = cross
    return (out, Yc) if return_terms else out


def normalise(logw, axis=None):
    """Posterior weights from log weights ``[B, ...]``: each image's weights sum to 1.

    Returns ``(weights, logsumexp)``; ``logsumexp`` is ``[B]``. The exponentials are taken in
    float32 after subtracting each image's maximum (weights that underflow float32 become 0)
    and summed in double.
    """
    xp = get_xp(logw)
    flat = logw.reshape(logw.shape[0], -1)
    mx = flat.max(axis=1, keepdims=True)
    e = xp.exp((flat - mx).astype(xp.float32, copy=False))
    s = e.sum(axis=1, keepdims=True, dtype=xp.float64)
    e /= s.astype(xp.float32)
    return e.reshape(logw.shape), (mx + xp.log(s))[:, 0]


def significant_mask(weights, fraction: float = 0.999, chunk: int = 1 << 22):
    """Per image, the smallest set of samples holding ``fraction`` of its weight (RELION's adaptive fraction).

    ``weights`` ``[B, ...]`` normalised; returns a boolean mask of the same shape and
    the count of significant samples per image (at least 1). Each image's weights are sorted;
    only candidates are summed: samples below ``(1 - fraction) / S`` (``S`` samples per image)
    together hold less than ``1 - fraction``, so the smallest set never needs them. The mask
    keeps every sample at least as heavy as the lightest one counted (ties at that weight all
    kept, so it may hold more than the count). Images are taken ``chunk`` samples at a time
    to bound memory.
    """
    xp = get_xp(weights)
    flat = weights.reshape(weights.shape[0], -1)
    b, n = flat.shape
    thr = (1.0 - fraction) / n
    mask = xp.zeros_like(flat, dtype=bool)
    count = xp.zeros(b, dtype=xp.int64)
    step = max(1, chunk // max(n, 1))
    for lo in range(0, b, step):
        part = flat[lo:lo + step]
        ncand = (part >= thr).sum(axis=1)
        m = max(int(ncand.max()), 1)                                  # candidates of the richest image
        top = _heaviest(part, part >= thr, ncand, m)                 # heaviest first
        d = top.astype(xp.float64)
        before = xp.cumsum(d, axis=1) - d                             # weight of the heavier ones
        c = xp.maximum(((before < fraction) & (top >= thr)).sum(axis=1), 1)
        lightest = xp.take_along_axis(top, (c - 1)[:, None], axis=1)
        lightest = xp.where(ncand[:, None] > 0, lightest, xp.inf)     # no candidate: the best one only
        mask[lo:lo + step] = part >= lightest
        count[lo:lo + step] = c
    mask[xp.arange(b), xp.argmax(flat, axis=1)] = True          # the best sample, always
    return mask.reshape(weights.shape), count


def _heaviest(part, cand, ncand, m: int):
    """Rows ``[b, m]`` of each row's candidates ``cand`` (at most ``m`` per row), heaviest first, then
    zeros. When candidates are few, only they are sorted (gathered into a zero-padded buffer)."""
    xp = get_xp(part)
    b, n = part.shape
    if 8 * m >= n:
        return xp.sort(part, axis=1)[:, ::-1][:, :m]
    rows, cols = xp.nonzero(cand)
    starts = xp.cumsum(ncand) - ncand
    buf = xp.zeros((b, m), dtype=part.dtype)
    buf[rows, xp.arange(rows.shape[0]) - starts[rows]] = part[rows, cols]
    return xp.sort(buf, axis=1)[:, ::-1]
