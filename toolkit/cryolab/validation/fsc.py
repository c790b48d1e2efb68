"""Fourier shell correlation, resolution at a threshold, half-set splits and class scoring.

FSC per shell ``s = round(|k|)``, ``s = 0 .. N//2``, as RELION's ``getFSC``; the resolution
is interpolated between shells. Maps are NumPy or CuPy ``[..., z, y, x]`` volumes or
``[..., y, x]`` images (``ndim`` says which), centre pixel ``N // 2``; curves, splits and
scores are NumPy. The private Fourier-grid helpers here are shared with the post-processing.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp, to_numpy
from ..errors import CryolabInputError
from ..fourier import irfft2c, irfft3c, radial_average, rfft2c, rfft3c, rfft_grid, shell_resolution_A

__all__ = ["fsc", "resolution_shell_at", "resolution_at", "random_halves", "match_classes", "class_accuracy"]

_RFFT = {2: rfft2c, 3: rfft3c}
_IRFFT = {2: irfft2c, 3: irfft3c}


def _dims(x, ndim):
    ndim = x.ndim if ndim is None else ndim
    if ndim not in (2, 3) or x.ndim < ndim:
        raise CryolabInputError(f"expected images (ndim=2) or volumes (ndim=3), got shape {x.shape}")
    return ndim


def _radius2(n, ndim, xp):
    """Squared integer frequency radius ``|k|^2`` on the centred half grid."""
    return sum(g.astype(xp.float64) ** 2 for g in rfft_grid(n, ndim, xp))


def fsc(map1, map2, ndim: int | None = None):
    """Fourier shell (ring) correlation per shell ``0 .. N//2`` (RELION's ``getFSC``).

    ``map1``, ``map2``: volumes ``[..., N, N, N]`` or, with ``ndim=2``, images
    (Fourier ring correlation). Returns ``[..., N//2 + 1]`` on the input's device.

    >>> import numpy as np
    >>> a = np.random.default_rng(1).normal(size=(2, 32, 32))
    >>> fsc(a[0], -a[0]).round(6)[1:4].tolist()
    [-1.0, -1.0, -1.0]
    """
    if map1.shape != map2.shape:
        raise CryolabInputError(f"fsc: maps differ in shape {map1.shape} vs {map2.shape}")
    ndim = _dims(map1, ndim)
    xp = get_xp(map1, map2)
    n = map1.shape[-1]
    f1, f2 = _RFFT[ndim](map1), _RFFT[ndim](map2)
    num = radial_average((f1 * f2.conj()).real, n, ndim)
    den = xp.sqrt(radial_average(abs(f1) ** 2, n, ndim) * radial_average(abs(f2) ** 2, n, ndim))
    out = num / xp.where(den > 0, den, 1.0)
    out[..., 0] = xp.where(den[..., 0] > 0, out[..., 0], 1.0)
    return out


def resolution_shell_at(fsc_curve, threshold: float = 0.143) -> float:
    """Fractional shell where ``fsc_curve`` first drops below ``threshold`` (from shell 1).

    Linear interpolation between the last shell above and the first below (the DC
    shell counts as 1); the last shell (Nyquist) when it never drops.

    >>> resolution_shell_at([1.0, 0.9, 0.5, 0.1, 0.0], 0.3)
    2.5
    """
    c = np.asarray(to_numpy(fsc_curve), dtype=float)
    below = np.flatnonzero(c[1:] < threshold) + 1
    if below.size == 0:
        return float(len(c) - 1)
    i = int(below[0])
    prev = 1.0 if i == 1 else c[i - 1]
    return float(i - 1 + (prev - threshold) / (prev - c[i]))


def resolution_at(fsc_curve, threshold: float, n: int, pixel_size_A: float) -> float:
    """Resolution in Angstrom where the FSC crosses ``threshold`` (``N * pixel / shell``).

    >>> resolution_at([1.0, 0.9, 0.5, 0.1, 0.0], 0.3, n=8, pixel_size_A=2.0)
    6.4
    """
    return float(shell_resolution_A(resolution_shell_at(fsc_curve, threshold), n, pixel_size_A))


def random_halves(n: int, seed: int = 0) -> np.ndarray:
    """Random split of ``n`` particles into halves: int array of 1/2 (``_rlnRandomSubset``).

    Half 1 gets ``ceil(n/2)`` particles.

    >>> np.bincount(random_halves(5, seed=0)).tolist()
    [0, 3, 2]
    """
    halves = np.full(n, 2, dtype=np.int64)
    halves[np.random.default_rng(seed).permutation(n)[: (n + 1) // 2]] = 1
    return halves


def match_classes(classes, truth, n_classes: int | None = None) -> np.ndarray:
    """Match classes one-to-one to true labels (both 0-based ints): ``mapping[k]`` is the label
    of class ``k`` (-1: left over when there are more classes than labels), chosen so that the
    matched pairs share as many particles as possible (Hungarian algorithm). Class numbers are
    arbitrary, so simulated sets are scored this way. ``n_classes``: the number of classes when
    the last ones may be empty (default: the largest class number + 1).

    >>> match_classes([1, 1, 0, 2], [0, 0, 1, 1]).tolist()
    [1, 0, -1]
    """
    from scipy.optimize import linear_sum_assignment
    classes, truth = np.asarray(classes, int), np.asarray(truth, int)
    counts = np.zeros((max(classes.max() + 1, n_classes or 0), truth.max() + 1))
    np.add.at(counts, (classes, truth), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = np.full(counts.shape[0], -1)
    mapping[rows] = cols
    return mapping


def class_accuracy(classes, truth) -> float:
    """Fraction of particles in the class matched to their true label (:func:`match_classes`).

    >>> class_accuracy([1, 1, 0, 2], [0, 0, 1, 1])
    0.75
    """
    classes = np.asarray(classes, int)
    return float(np.mean(match_classes(classes, truth)[classes] == np.asarray(truth)))
