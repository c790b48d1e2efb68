"""Peaks of a figure-of-merit map: local maxima, minimum distance, the false-alarm threshold, scoring.

**Threshold from a false-alarm rate.** A figure-of-merit map of pure noise is the maximum of unit-variance
Gaussian fields (one per template or LoG diameter). The local maxima of one such field above a high level
``u`` number about ``A * lambda / (2 pi)^(3/2) * u * exp(-u^2 / 2)`` over an area of ``A`` pixels (the
expected Euler characteristic of the excursion set; Adler 1981; ``lambda`` the variance of the field's
derivative along x, pixel^-2); for the maximum of several fields the sum over them bounds the count from
above (exact for independent fields, conservative for similar templates). :func:`false_alarm_threshold`
solves ``expected count = rate`` for ``u``.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter
from scipy.optimize import linear_sum_assignment

__all__ = ["local_maxima", "enforce_min_distance", "expected_false_peaks", "false_alarm_threshold", "match_picks"]


def local_maxima(fom, minimum: float = -np.inf, valid=None):
    """Pixels that are the largest of their 3 x 3 neighbourhood and ``>= minimum`` (and ``valid``):
    ``(x [P], y [P], value [P])``, sorted by decreasing value."""
    f = np.asarray(fom)
    peak = (f == maximum_filter(f, size=3, mode="nearest")) & np.isfinite(f) & (f >= minimum)
    if valid is not None:
        peak &= valid
    y, x = np.nonzero(peak)
    v = f[y, x]
    order = np.argsort(-v, kind="stable")
    return x[order], y[order], v[order]


def enforce_min_distance(x, y, values, min_distance, *, eligible=None, shadow_distance: float = 0.0,
                         shadow_fraction: float = 0.0) -> np.ndarray:
    """Indices of the peaks kept by greedy suppression, in decreasing value: a peak is dropped when a kept
    peak lies closer than ``min_distance`` (same units as ``x``, ``y``), or when any higher peak (kept or
    not ``eligible``) within ``shadow_distance`` is more than ``1 / shadow_fraction`` times as high (the
    side lobes of a strong particle or a contaminant). Only ``eligible`` peaks (default all) are kept."""
    v = np.asarray(values, float)
    order = np.argsort(-v, kind="stable")
    pts = np.stack([np.asarray(x, float), np.asarray(y, float)], -1)
    ok = np.ones(len(v), bool) if eligible is None else np.asarray(eligible, bool)
    reach = max(float(min_distance), float(shadow_distance))
    cell = max(reach, 1e-9)
    kept_grid: dict = {}
    seen_grid: dict = {}
    keep = []

    def near(grid, i, radius):
        gx, gy = int(pts[i, 0] // cell), int(pts[i, 1] // cell)
        idx = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in grid.get((gx + dx, gy + dy), ())]
        if not idx:
            return np.array([], int)
        idx = np.array(idx)
        return idx[np.hypot(*(pts[idx] - pts[i]).T) < radius]

    for i in order:
        cell_key = (int(pts[i, 0] // cell), int(pts[i, 1] // cell))
        shadow = near(seen_grid, i, shadow_distance) if shadow_fraction > 0 else []
        drop = len(near(kept_grid, i, min_distance)) > 0 or (
            len(shadow) > 0 and shadow_fraction * np.max(v[shadow]) > v[i])
        seen_grid.setdefault(cell_key, []).append(i)
        if not drop and ok[i]:
            keep.append(i)
            kept_grid.setdefault(cell_key, []).append(i)
    return np.array(keep, dtype=np.int64)


def expected_false_peaks(u, lambdas, area_px: float) -> float:
    """Expected local maxima above ``u`` in ``area_px`` pixels of noise (module text)."""
    u = float(u)
    return float(area_px * np.sum(lambdas) / (2 * np.pi) ** 1.5 * u * np.exp(-0.5 * u * u))


def false_alarm_threshold(rate: float, lambdas, area_px: float) -> float:
    """The level ``u >= 1`` above which ``rate`` noise peaks are expected in ``area_px`` pixels of fields
    with derivative variances ``lambdas`` (module text); by bisection (the count falls beyond u = 1)."""
    lo, hi = 1.0, 50.0
    if expected_false_peaks(lo, lambdas, area_px) <= rate:
        return lo
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected_false_peaks(mid, lambdas, area_px) > rate else (lo, mid)
    return hi


def match_picks(picks_xy, truth_xy, radius) -> dict:
    """One-to-one matching of picks to true centres within ``radius`` (same units), maximising the
    number of matches (then minimising the distances): ``{"tp", "fp", "fn", "precision", "recall",
    "matched": [(pick, truth), ...]}``. Precision is 1 without picks; recall 1 without true centres."""
    p = np.asarray(picks_xy, float).reshape(-1, 2)
    t = np.asarray(truth_xy, float).reshape(-1, 2)
    pairs = []
    if len(p) and len(t):
        d = np.hypot(p[:, None, 0] - t[None, :, 0], p[:, None, 1] - t[None, :, 1])
        cost = np.where(d <= radius, d / (radius + 1e-12), 1e6)
        rows, cols = linear_sum_assignment(cost)
        pairs = [(int(i), int(j)) for i, j in zip(rows, cols) if d[i, j] <= radius]
    tp = len(pairs)
    return {"tp": tp, "fp": len(p) - tp, "fn": len(t) - tp, "precision": tp / len(p) if len(p) else 1.0,
            "recall": tp / len(t) if len(t) else 1.0, "matched": pairs}
