"""Energy landscapes along latent coordinates, and maps at chosen points of them.

The occupancy ``p(s)`` of a coordinate ``s`` (a kernel density estimate, Gaussian kernel of
bandwidth ``h``, Scott's rule by default, evaluated on a grid) is read as a free energy
``G(s) = -kT ln p(s)`` in units of ``kT``, shifted so that its minimum is 0 (Dashti et al. 2014:
the particles' occupancy of states at equilibrium, Boltzmann). Error bars: the standard deviation
of ``G`` over bootstrap resamples of the particles. Minima are the grid points lower than their
neighbours by at least ``min_depth_kT`` on both sides (the barrier to the next minimum).

Maps at chosen points: particles binned by the coordinate's quantiles (bins of equal
population), each bin reconstructed from its two random halves in one pass over the images
(:func:`cryolab.methods.bootstrap.iter_weighted_sets`), with the halves' FSC and resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import CryolabInputError

__all__ = ["FreeEnergyProfile", "free_energy", "free_energy_2d", "find_minima", "equal_population_bins",
           "BinMaps", "bin_maps"]


@dataclass
class FreeEnergyProfile:
    """``G [n_points]`` (kT, minimum 0) and its bootstrap standard deviation ``G_err`` at
    coordinates ``s [n_points]``; ``density`` the estimate of ``p``; ``minima`` indices into ``s``."""
    s: np.ndarray
    G: np.ndarray
    G_err: np.ndarray
    density: np.ndarray
    bandwidth: float
    minima: np.ndarray

    @property
    def minima_s(self) -> np.ndarray:
        """The coordinates of the minima, lowest ``G`` first."""
        order = np.argsort(self.G[self.minima])
        return self.s[self.minima][order]


def _kde(values, grid, bandwidth, weights=None):
    d = (grid[:, None] - values[None, :]) / bandwidth
    k = np.exp(-0.5 * d * d)
    if weights is not None:
        k = k * weights[None, :]
    total = len(values) if weights is None else weights.sum()
    return k.sum(axis=1) / (total * bandwidth * np.sqrt(2 * np.pi))


def find_minima(G, min_depth_kT: float = 0.5) -> np.ndarray:
    """Indices of the local minima of a profile ``G`` whose barriers to the lower ground on each side
    (the highest point before ``G`` falls below the minimum again, or the profile's end) are at
    least ``min_depth_kT`` above them."""
    G = np.asarray(G, float)
    out = []
    for i in range(1, len(G) - 1):
        if not (G[i] <= G[i - 1] and G[i] < G[i + 1]):
            continue
        ok = True
        for side in (G[i::-1], G[i:]):
            lower = np.flatnonzero(side < G[i])
            barrier = side[: lower[0]].max() if lower.size else side.max()
            if barrier - G[i] < min_depth_kT:
                ok = False
        if ok:
            out.append(i)
    return np.asarray(out, int)


def free_energy(values, *, n_points: int = 100, bandwidth: float | None = None, value_range=None,
                n_boot: int = 200, kT: float = 1.0, min_depth_kT: float = 0.5, seed: int = 0) -> FreeEnergyProfile:
    """The free-energy profile ``-kT ln p`` of one coordinate (see the module text).

    ``values [N]``: one coordinate per particle; ``n_points``: grid points over ``value_range``
    (default: the 0.5th to 99.5th percentile); ``bandwidth``: the kernel's (default Scott's rule,
    ``1.06 sd N^-1/5``); ``n_boot``: bootstrap resamples for the error bars (0: none).

    >>> rng = np.random.default_rng(0)
    >>> s = np.concatenate([rng.normal(-2, 0.5, 700), rng.normal(2, 0.5, 300)])
    >>> prof = free_energy(s, n_boot=0)
    >>> [round(float(v)) for v in prof.minima_s]
    [-2, 2]
    """
    v = np.asarray(values, float).ravel()
    v = v[np.isfinite(v)]
    if v.size < 10:
        raise CryolabInputError(f"{v.size} finite values are too few for an occupancy profile", field="values")
    lo, hi = (np.percentile(v, [0.5, 99.5]) if value_range is None else value_range)
    grid = np.linspace(float(lo), float(hi), int(n_points))
    h = float(bandwidth) if bandwidth else 1.06 * v.std() * v.size ** -0.2
    p = _kde(v, grid, h)
    G = -kT * np.log(np.maximum(p, 1e-300))
    G -= G.min()
    err = np.zeros_like(G)
    if n_boot:
        rng = np.random.default_rng([int(seed), 3])
        boots = []
        for _ in range(int(n_boot)):
            counts = np.bincount(rng.integers(0, v.size, v.size), minlength=v.size).astype(float)
            gb = -kT * np.log(np.maximum(_kde(v, grid, h, counts), 1e-300))
            boots.append(gb - gb.min())
        err = np.std(boots, axis=0)
    return FreeEnergyProfile(grid, G, err, p, h, find_minima(G / kT, min_depth_kT))


def free_energy_2d(x, y, *, bins: int = 40, kT: float = 1.0, smooth_bins: float = 1.0):
    """``(x_edges, y_edges, G [bins, bins])``: the 2D free energy of two coordinates from a
    histogram smoothed by a Gaussian of ``smooth_bins`` bins; empty cells are NaN."""
    from scipy.ndimage import gaussian_filter
    h, xe, ye = np.histogram2d(np.asarray(x, float), np.asarray(y, float), bins=bins)
    p = gaussian_filter(h, smooth_bins) if smooth_bins else h
    with np.errstate(divide="ignore"):
        G = -kT * np.log(p / p.sum())
    G[~np.isfinite(G) | (p < 1e-3 * p.max())] = np.nan
    return xe, ye, G - np.nanmin(G)


def equal_population_bins(values, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [N] in 0 .. n_bins - 1, edges [n_bins + 1])``: bins of (nearly) equal population
    along ``values`` (quantile edges; ties broken by rank so that the counts differ by at most one)."""
    v = np.asarray(values, float).ravel()
    n_bins = int(n_bins)
    if not 1 <= n_bins <= v.size:
        raise CryolabInputError(f"n_bins must be 1 .. {v.size}, got {n_bins}", field="n_bins")
    ranks = np.empty(v.size, int)
    ranks[np.argsort(v, kind="stable")] = np.arange(v.size)
    labels = ranks * n_bins // v.size
    edges = np.concatenate([[v.min()], [v[labels == b].max() for b in range(n_bins)]])
    return labels, edges


@dataclass
class BinMaps:
    """Per bin: ``maps [B, N, N, N]`` (both halves), ``fsc [B, N//2 + 1]`` of the halves,
    ``resolution_A [B]`` (FSC 0.143), ``counts [B]`` and the bins' mean coordinate ``centres [B]``."""
    maps: np.ndarray
    fsc: np.ndarray
    resolution_A: np.ndarray
    counts: np.ndarray
    centres: np.ndarray


def bin_maps(stack, labels, *, values=None, seed: int = 0, ctf: bool = True, batch_size: int = 256,
             xp=np) -> BinMaps:
    """Reconstruct each bin of ``labels [N]`` (0-based bins of ``stack``'s particles, e.g. from
    :func:`equal_population_bins`) and its two random halves, in one pass over the images; the
    halves' FSC gives each bin's resolution. ``values``: the coordinate, for the bins' centres."""
    from ...backend import to_numpy
    from ...validation import fsc, random_halves, resolution_at
    from ..bootstrap import iter_weighted_sets
    labels = np.asarray(labels, int).ravel()
    if labels.size != len(stack):
        raise CryolabInputError(f"{labels.size} labels for {len(stack)} particles", field="labels")
    n_bins = int(labels.max()) + 1
    half = random_halves(len(stack), seed)
    sets = []
    for b in range(n_bins):
        inside = labels == b
        sets += [inside, inside & (half == 1), inside & (half == 2)]
    weights = np.stack(sets).astype(np.float32)
    maps = [to_numpy(bp.reconstruct(method="wiener")) for _, bp in
            iter_weighted_sets(stack, weights, ctf=ctf, batch_size=batch_size, xp=xp)]
    n, px = stack.box_size, float(stack.pixel_size_A)
    curves = np.stack([fsc(maps[3 * b + 1], maps[3 * b + 2]) for b in range(n_bins)])
    res = np.array([resolution_at(c, 0.143, n, px) for c in curves])
    counts = np.bincount(labels, minlength=n_bins)
    centres = (np.array([np.mean(np.asarray(values)[labels == b]) for b in range(n_bins)])
               if values is not None else np.arange(n_bins, dtype=float))
    return BinMaps(np.stack(maps[0::3]), curves, res, counts, centres)
