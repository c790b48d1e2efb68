"""Streamed randomized PCA of images and the Marchenko-Pastur test of its eigenvalues.

The data are ``n`` vectors of ``p`` pixels, given batch by batch (never all at once), on NumPy or
CuPy (the array module comes from the batches). With ``A`` the centred ``[n, p]`` data and
``G = A^T A``, the randomized range finder of Halko, Martinsson and Tropp (SIAM Review 2011)
with power iterations works on ``G``: ``Q_0`` orthonormalises a Gaussian ``Omega [p, l]``,
``l = k + oversampling``, and ``Q_j = orth(G Q_(j-1))``, ``j = 1 .. q + 1``. One product
``G Y = sum_b A_b^T (A_b Y)`` is one pass over the batches; the first pass also sums the mean and
the total variance (``G Omega = X^T X Omega - n mu mu^T Omega``). The eigenvectors are then
found in the span of all the blocks ``[Q_0 .. Q_(q+1)]`` (block Krylov, Halko et al. section 4.5;
Musco and Musco, NeurIPS 2015), not only in that of the last one: their error falls with the
square root of the relative gap between an eigenvalue and the ``l``-th, so eigenvalues just
above the noise bulk converge too. A pass for the Gram matrix of the data in that space
(Rayleigh-Ritz) and a pass for the factor coordinates ``A V`` follow. Passes: ``q + 3``.
Products and sums are float64.

Eigenvalues are variances in the data's units squared (pixel units: ``sum over images of
(coordinate)^2 / (n - 1)``, as scikit-learn's ``explained_variance_``); eigenvectors have unit
norm, with the sign that makes their largest entry positive.

The noise test: for white noise of variance ``sigma^2`` the eigenvalues of the sample covariance
of ``n`` vectors of ``p`` pixels lie below the Marchenko-Pastur upper edge
``sigma^2 (1 + sqrt(p / n))^2`` (for large ``n`` and ``p``); an eigenvalue above it is signal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_xp, to_device, to_numpy
from ..errors import CryolabInputError

__all__ = ["streamed_pca", "PCA", "marchenko_pastur_edge", "count_significant"]


@dataclass
class PCA:
    """The result of :func:`streamed_pca`: ``mean [p]``, ``components [k, p]`` (unit rows),
    ``eigenvalues [k]`` (variances, descending), ``total_variance`` (trace of the covariance),
    ``coordinates [n, k]`` (the centred data times the components), ``n`` vectors. NumPy arrays."""

    mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    total_variance: float
    coordinates: np.ndarray
    n: int

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """Eigenvalues over the total variance."""
        return self.eigenvalues / self.total_variance if self.total_variance > 0 else np.zeros_like(self.eigenvalues)


def _orth(y, xp):
    return xp.linalg.qr(y)[0]


def streamed_pca(batches, k: int, *, oversampling: int = 10, power_iterations: int = 10,
                 seed: int = 0, what: str = "data") -> PCA:
    """The first ``k`` principal components of data given in batches (module doc).

    ``batches``: a function that returns a fresh iterable of ``[B, p]`` arrays (NumPy or CuPy),
    the same rows in the same order every time it is called; it is called ``power_iterations + 3``
    times. ``oversampling`` extra random vectors (Halko's ``p``), ``power_iterations`` passes of
    ``G`` (``q``); ``seed`` draws ``Omega`` (on the host, so NumPy and CuPy agree). ``what``
    names the data in errors. ``k`` must be below the number of vectors (centring leaves
    ``n - 1`` components) and at most ``p``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 6)) * [5, 3, 1, 1, 1, 1]
    >>> pca = streamed_pca(lambda: (x[i:i + 16] for i in range(0, 50, 16)), 2)
    >>> np.allclose(pca.eigenvalues, np.linalg.eigvalsh(np.cov(x.T))[::-1][:2])
    True
    """
    k, oversampling, power_iterations = int(k), int(oversampling), int(power_iterations)
    if k < 1 or oversampling < 0 or power_iterations < 0:
        raise CryolabInputError(f"need k >= 1, oversampling >= 0 and power_iterations >= 0 (got {k}, "
                                f"{oversampling}, {power_iterations})", field="k")
    it = iter(batches())
    first = next(it, None)
    if first is None:
        raise CryolabInputError(f"the {what} hold no vectors", field="batches")
    xp = get_xp(first)
    p = int(first.shape[1])
    if k > p:
        raise CryolabInputError(f"k = {k} components asked for but the {what} have {p} pixels", field="k")
    ell = min(k + oversampling, p)
    y = to_device(np.random.default_rng(seed).standard_normal((p, ell)), xp)
    total = xp.zeros(p, dtype=xp.float64)
    squares, n, z = xp.zeros((), dtype=xp.float64), 0, xp.zeros((p, ell), dtype=xp.float64)
    for b in _chain(first, it):          # pass 1: sums and X^T X Omega
        x = xp.asarray(b, dtype=xp.float64)
        n += len(x)
        total += x.sum(axis=0)
        squares += (x * x).sum()
        z += x.T @ (x @ y)
    if k >= n:
        raise CryolabInputError(f"k = {k} components asked for but the {what} have {n} vectors (centring "
                                f"leaves {n - 1})", field="k")
    mean = total / n
    z -= n * mean[:, None] * (mean @ y)[None, :]
    blocks = [_orth(y, xp)]
    for _ in range(power_iterations):
        blocks.append(_orth(z, xp))
        z = xp.zeros_like(z)
        for b in batches():
            x = xp.asarray(b, dtype=xp.float64) - mean
            z += x.T @ (x @ blocks[-1])
    blocks.append(_orth(z, xp))
    u, s, _ = xp.linalg.svd(xp.concatenate(blocks, axis=1), full_matrices=False)
    basis = u[:, :int((s > 1e-10 * s[0]).sum())]             # the block Krylov space, orthonormal
    gram = xp.zeros((basis.shape[1],) * 2, dtype=xp.float64)
    for b in batches():                  # Rayleigh-Ritz: the data's Gram matrix in that space
        ak = (xp.asarray(b, dtype=xp.float64) - mean) @ basis
        gram += ak.T @ ak
    if basis.shape[1] < k:
        raise CryolabInputError(f"the {what} span only {basis.shape[1]} dimensions, fewer than k = {k}", field="k")
    w, v = np.linalg.eigh(to_numpy(gram))
    order = np.argsort(w)[::-1][:k]
    w, v = w[order], v[:, order]
    components = to_numpy(basis) @ v                              # [p, k]
    signs = np.sign(components[np.argmax(np.abs(components), axis=0), np.arange(k)])
    signs[signs == 0] = 1
    components = (components * signs).T.copy()
    on_device = to_device(components.T, xp)
    coordinates = [to_numpy((xp.asarray(b, dtype=xp.float64) - mean) @ on_device) for b in batches()]
    mean_h = to_numpy(mean)
    return PCA(mean=mean_h, components=components, eigenvalues=np.maximum(w, 0) / (n - 1),
               total_variance=max(float(squares) - n * float(mean_h @ mean_h), 0.0) / (n - 1),
               coordinates=np.concatenate(coordinates), n=n)


def _chain(first, rest):
    yield first
    yield from rest


def marchenko_pastur_edge(noise_variance: float, n_pixels: int, n_images: int) -> float:
    """Upper edge ``sigma^2 (1 + sqrt(p / n))^2`` of the Marchenko-Pastur law: the largest
    eigenvalue of the sample covariance of ``n`` vectors of ``p`` pixels of white noise of variance
    ``noise_variance`` (pixel units squared), for large ``n`` and ``p``.

    >>> marchenko_pastur_edge(1.0, 100, 400)
    2.25
    """
    if not (np.isfinite(noise_variance) and noise_variance >= 0) or n_pixels < 1 or n_images < 1:
        raise CryolabInputError(f"need a noise variance >= 0 and positive counts (got {noise_variance!r}, "
                                f"{n_pixels}, {n_images})", field="noise_variance")
    return float(noise_variance * (1.0 + np.sqrt(n_pixels / n_images)) ** 2)


def count_significant(eigenvalues, edge: float) -> int:
    """How many eigenvalues lie above ``edge`` (:func:`marchenko_pastur_edge`).

    >>> count_significant([9.0, 2.3, 1.2], 2.25)
    2
    """
    return int(np.sum(np.asarray(eigenvalues, dtype=float) > edge))
