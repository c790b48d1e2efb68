"""M-step kernels: weighted sums of images per sample, noise spectra, tau2 and class priors.

With posterior weights ``w(b, t, j)`` of a batch (see :mod:`.estep`)::

    D_j(m)   = sum_{b,t} w C_bm X_bm S_tm        (one GEMM over the b,t axis)
    W_j(m)   = sum_b (sum_t w) C_bm^2             (one GEMM over b)
    resid(m) = sum_{b,t,j} w |X_bm S_tm - C_bm P_jm|^2
             = sum_b |X_bm|^2 - 2 Re sum_j conj(D_j) P_j + sum_j W_j |P_j|^2

``D/sigma2`` and ``W/sigma2`` are what a back-projector accumulates (RELION's
``sum w C X / sigma2`` and ``sum w C^2 / sigma2``); the MAP reference is
``sum D / (sum W + 1 / (T tau2))``. Noise: ``sigma2(shell) = sum resid / (2 n_images n_pixels(shell))``.
"""
from __future__ import annotations

from ..backend import get_xp
from .estep import image_terms

__all__ = ["weighted_sums", "residual_power", "shell_sums", "sigma2_from_residuals",
           "tau2_from_power"]


def weighted_sums(weights, X, ctf, ramps, min_weight: float = 0.0, Yc=None, weight=None):
    """``(D [J, M] complex, W [J, M] real, wsum [J])`` for weights ``[B, T, J]``.

    ``Yc``/``weight``: the image terms of :func:`.estep.image_terms` (built with per-pixel
    ``weight``) when the E-step already has them; else they are built here with weight 1.
    Columns ``j`` whose weights are all ``<= min_weight`` get zeros (skipped in the GEMM).
    """
    xp = get_xp(X)
    B, T, J = weights.shape
    M = X.shape[1]
    c = xp.ones((B, M), xp.float32) if ctf is None else ctf.astype(xp.float32, copy=False)
    if Yc is None:
        weight = xp.ones(M, xp.float32)
        Yc = image_terms(X, c, weight, ramps)
    wsum = weights.sum(axis=(0, 1))
    flat = weights.reshape(B * T, J)
    cols = xp.flatnonzero(flat.max(axis=0) > min_weight)
    D = xp.zeros((J, M), xp.complex64)
    W = xp.zeros((J, M), xp.float32)
    if cols.size == 0:
        return D, W, wsum
    w = flat[:, cols] if cols.size < J else flat
    Dc = w.T @ Yc                                                                  # the GEMM [J', 2M]
    inv = (1.0 / weight.astype(xp.float32))
    D[cols] = Dc[:, :M] * inv + 1j * (Dc[:, M:] * inv)
    W[cols] = weights[:, :, cols].sum(axis=1).T @ (c * c)                          # [J', M]
    return D, W, wsum


def residual_power(X, D, W, P):
    """Per pixel ``sum w |X_t - C P|^2`` over a batch (weights summing to 1 per image); ``[M]``."""
    xp = get_xp(X)
    x2 = (xp.abs(X) ** 2).sum(axis=0)
    cross = (xp.conj(D) * P).real.sum(axis=0)
    p2 = (W * (P.real ** 2 + P.imag ** 2)).sum(axis=0)
    return (x2 - 2 * cross + p2).astype(xp.float64)


def shell_sums(values, shell, n_shells: int):
    """Sum of per-pixel ``values [..., M]`` in each shell -> ``[..., n_shells]``."""
    xp = get_xp(values)
    flat = values.reshape(-1, values.shape[-1])
    out = xp.stack([xp.bincount(shell, weights=row.astype(xp.float64), minlength=n_shells)[:n_shells]
                    for row in flat])
    return out.reshape(values.shape[:-1] + (n_shells,))


def sigma2_from_residuals(resid_shell, n_images: float, pixels_per_shell, previous=None):
    """Noise power per shell ``sum resid / (2 n_images n_pix)``; shells without pixels keep ``previous``."""
    xp = get_xp(resid_shell)
    npix = xp.asarray(pixels_per_shell, dtype=xp.float64)
    s2 = resid_shell / xp.maximum(2.0 * n_images * npix, 1e-30)
    if previous is not None:
        s2 = xp.where(npix > 0, s2, previous)
    return xp.maximum(s2, 1e-30)


def tau2_from_power(ref_power_shell, floor: float = 1e-30):
    """Signal prior power per shell from a reference's radially averaged power ``<|F|^2>``.

    Like ``sigma2`` (``E|N|^2 / 2``), ``tau2`` is a variance per real component:
    ``tau2 = <|F|^2> / 2``, so ``C^2 tau2 / sigma2`` is the spectral SNR.
    """
    xp = get_xp(ref_power_shell)
    return xp.maximum(0.5 * ref_power_shell, floor)
