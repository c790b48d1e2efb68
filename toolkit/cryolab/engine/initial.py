"""Starting values of a run: the noise spectrum and reference-free 2D class averages."""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..fourier import radial_average, rfft2c
from ..reconstruction import BackProjector2D
from .driver import read_batch
from .estep import fourier_pixels, scatter
from .images import prepare_batch

__all__ = ["initial_sigma2", "initial_references_2d", "SIGMA2_IMAGES"]

#: images read to estimate the starting noise spectrum
SIGMA2_IMAGES = 500


def initial_sigma2(particles, mask, *, seed: int = 0, xp=np) -> np.ndarray:
    """Noise power per shell ``0 .. N//2`` (per real component, RELION's sigma2) from up to
    :data:`SIGMA2_IMAGES` random particles: half of (the mean power spectrum of the masked images
    minus the power spectrum of their mean), floored at 1e-12."""
    n = particles.box_size
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(particles), size=min(len(particles), SIGMA2_IMAGES), replace=False))
    images, _ = read_batch(particles, idx, xp, ctf=False)
    ft = rfft2c(images * mask)
    mean_ft = ft.mean(axis=0)
    power = radial_average(abs(ft) ** 2, n).mean(axis=0) - radial_average(abs(mean_ft) ** 2, n)
    return np.maximum(to_numpy(power) / 2.0, 1e-12)


def initial_references_2d(particles, K: int, mask, offsets_px, *, seed: int = 0, batch_size: int = 64,
                          ctf: bool = True, xp=np) -> np.ndarray:
    """Reference-free start (as RELION): class ``k`` is the CTF-weighted average ``[K, N, N]`` of a
    random subset of the particles, each inserted at a random in-plane angle (``seed + 1``) after
    shifting by its current offset ``offsets_px [P, 2]`` (pixels)."""
    rng = np.random.default_rng(seed + 1)
    n, N = particles.box_size, len(particles)
    pixel_size_A = float(particles.pixel_size_A)
    subset = rng.integers(0, K, size=N)
    psi = rng.uniform(0, 360, size=N)
    pix = fourier_pixels(n, n // 2, xp)
    bps = [BackProjector2D(n, pad=2, xp=xp) for _ in range(K)]
    for start in range(0, N, batch_size):
        idx = np.arange(start, min(N, start + batch_size))
        images, params = read_batch(particles, idx, xp, ctf)
        X, C = prepare_batch(images, pix, mask, offsets_px[idx], params, pixel_size_A)
        C = xp.ones(X.shape, xp.float32) if C is None else C
        for k in range(K):
            sel = np.flatnonzero(subset[idx] == k)
            if sel.size:
                s = xp.asarray(sel)
                bps[k].insert(scatter(X[s] * C[s], pix), scatter(C[s] ** 2, pix), psi[idx][sel])
    return np.stack([to_numpy(bp.reconstruct(method="plain")) for bp in bps]).astype(np.float32)
