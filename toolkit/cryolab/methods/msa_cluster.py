"""Clustering of MSA factor coordinates and the classification files it makes.

* :func:`kmeans` - Lloyd's algorithm from k-means++ seeds (Arthur and Vassilvitskii 2007),
  ``n_init`` starts from one seed, the one of least within-class sum of squares kept;
* :func:`ward` - agglomerative clustering with Ward's criterion (``scipy.cluster.hierarchy``),
  cut into ``k`` clusters; it needs ``n^2 / 2`` distances, so it is refused above
  ``WARD_MAX_POINTS`` points (use k-means there);
* :func:`write_classification` - ``<prefix>_data.star`` (the particles with ``rlnClassNumber``,
  1-based) and ``<prefix>_classes.mrcs`` (per class the average of the aligned, CTF-corrected,
  masked images the analysis used), as a 2D classification writes them.

Labels are 0-based and numbered by class size (class 0 the largest; ties by first member).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backend import to_device, to_numpy
from ..errors import CryolabInputError
from ..io import write_mrc

__all__ = ["kmeans", "ward", "cluster", "class_averages", "write_classification", "WARD_MAX_POINTS"]

WARD_MAX_POINTS = 20000


def _check(points, k: int) -> np.ndarray:
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise CryolabInputError(f"points must be a finite [n, m] array, got shape {x.shape}", field="coordinates")
    if not 1 <= int(k) <= len(x):
        raise CryolabInputError(f"{k} classes asked for {len(x)} points", field="n_classes")
    return x


def _by_size(labels: np.ndarray, k: int) -> np.ndarray:
    """New number of each old class ``[k]``: by size, largest first, ties by first member."""
    counts = np.bincount(labels, minlength=k)
    first = np.array([np.argmax(labels == c) if counts[c] else len(labels) for c in range(k)])
    order = np.lexsort((first, -counts))                 # largest first, ties by first member
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank


def _plus_plus(x, k, rng):
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(axis=1))
    return np.array(centres)


def kmeans(points, k: int, *, n_init: int = 10, max_iter: int = 300, seed: int = 0):
    """k-means of ``points [n, m]`` into ``k`` classes: ``(labels [n] 0-based, centres [k, m],
    inertia)``, the inertia being the within-class sum of squared distances (the units of the
    points squared). Deterministic for a given ``seed``. An emptied class is re-seeded with the
    point farthest from its centre.

    >>> import numpy as np
    >>> labels, centres, inertia = kmeans([[0.0], [0.2], [5.0], [5.2]], 2)
    >>> labels.tolist(), round(inertia, 6)
    ([0, 0, 1, 1], 0.04)
    """
    x = _check(points, k)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(1, int(n_init))):
        centres = _plus_plus(x, k, rng)
        labels = np.full(len(x), -1)
        for _ in range(int(max_iter)):
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
            new = np.argmin(d2, axis=1)
            for c in np.setdiff1d(np.arange(k), new):        # empty class: take the worst-fitted point
                far = np.argmax(d2[np.arange(len(x)), new])
                new[far] = c
            if np.array_equal(new, labels):
                break
            labels = new
            centres = np.array([x[labels == c].mean(axis=0) for c in range(k)])
        inertia = float(((x - centres[labels]) ** 2).sum())
        if best is None or inertia < best[2] - 1e-12 * max(1.0, best[2]):
            best = (labels, centres, inertia)
    labels, centres, inertia = best
    rank = _by_size(labels, k)
    out = np.empty_like(centres)
    out[rank] = centres
    return rank[labels], out, inertia


def ward(points, k: int) -> np.ndarray:
    """Ward's agglomerative clustering of ``points [n, m]`` cut into ``k`` classes: labels ``[n]``
    (0-based, by size). At most :data:`WARD_MAX_POINTS` points.

    >>> ward([[0.0], [0.2], [5.0], [5.2], [5.1]], 2).tolist()
    [1, 1, 0, 0, 0]
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    x = _check(points, k)
    if len(x) > WARD_MAX_POINTS:
        raise CryolabInputError(f"Ward clustering of {len(x)} points needs {len(x) ** 2 * 4 / 1e9:.1f} GB of "
                                f"distances; use k-means above {WARD_MAX_POINTS} points", field="cluster")
    if k == 1 or len(x) == 1:
        return np.zeros(len(x), dtype=np.int64)
    labels = (fcluster(linkage(x, method="ward"), t=k, criterion="maxclust") - 1).astype(np.int64)
    return _by_size(labels, k)[labels]


def cluster(coordinates, n_classes: int, *, factors: int = 5, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Labels ``[n]`` (0-based) of the particles from their first ``factors`` coordinates
    ``coordinates [n, >= factors]``: ``method`` ``"kmeans"`` (:func:`kmeans`) or ``"ward"``."""
    c = np.asarray(coordinates, dtype=np.float64)
    if not 1 <= int(factors) <= (c.shape[1] if c.ndim == 2 else 0):
        raise CryolabInputError(f"factors must be between 1 and the {c.shape[-1]} computed", field="factors")
    if method == "kmeans":
        return kmeans(c[:, :factors], n_classes, seed=seed)[0]
    if method == "ward":
        return ward(c[:, :factors], n_classes)
    raise CryolabInputError(f"method must be 'kmeans' or 'ward', got {method!r}", field="cluster")


def class_averages(aligned, labels, n_classes: int | None = None, batch_size: int = 256) -> np.ndarray:
    """Per class the average ``[K, N, N]`` of the aligned images ``aligned.images(rows)`` (an
    :class:`cryolab.methods.msa_align.AlignedImages`); zero for an empty class. Streamed."""
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    xp, n = aligned.xp, aligned.n
    sums = xp.zeros((k, n, n), dtype=xp.float64)
    for lo in range(0, len(labels), int(batch_size)):
        rows = np.arange(lo, min(lo + int(batch_size), len(labels)))
        images = aligned.images(rows)
        for c in np.unique(labels[rows]):
            sums[int(c)] += images[to_device(np.flatnonzero(labels[rows] == c), xp)].sum(axis=0)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return to_numpy(sums) / np.maximum(counts, 1)[:, None, None]


def write_classification(aligned, labels, directory, prefix: str = "run", batch_size: int = 256) -> list[Path]:
    """``<directory>/<prefix>_data.star`` (the particles of ``aligned.stack`` with ``rlnClassNumber``
    = label + 1, image names as :meth:`cryolab.io.ParticleStack.write_star` writes them) and
    ``<prefix>_classes.mrcs`` (:func:`class_averages`). Returns the two paths."""
    labels = np.asarray(labels, dtype=np.int64)
    stack = aligned.stack
    if labels.shape != (len(stack),) or labels.min() < 0:
        raise CryolabInputError(f"need one label >= 0 per particle ({len(stack)}), got shape {labels.shape}",
                                field="labels")
    folder = Path(directory)
    averages = class_averages(aligned, labels, batch_size=batch_size)
    star = stack.with_table(stack.table.assign(rlnClassNumber=labels + 1)).write_star(folder / f"{prefix}_data.star")
    mrcs = write_mrc(folder / f"{prefix}_classes.mrcs", averages, stack.pixel_size_A or 1.0)
    return [Path(star), mrcs]
