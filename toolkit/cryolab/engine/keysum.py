"""Rows summed per key: the M-step sums of one orientation from the batches and groups that saw it."""
from __future__ import annotations

import numpy as np

from ..backend import get_xp

__all__ = ["sum_by_key"]


def sum_by_key(keys, *arrays):
    """Rows of ``arrays`` (each ``[J, ...]``) summed per distinct key ``keys [J]`` (int).

    Returns ``(first, *sums)``: the index of each distinct key's first row and the sums in
    increasing key order. Rows of one key are added in their order in ``arrays``; when every key
    is distinct the sums are the rows themselves, sorted by key.
    """
    xp = get_xp(arrays[0])
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], sk[1:] != sk[:-1]]))
    oi = xp.asarray(order)
    if starts.size >= keys.size:                    # every key distinct (or no rows)
        return (order,) + tuple(a[oi] for a in arrays)
    return (order[starts],) + tuple(_segment_sum(a[oi], starts, xp) for a in arrays)


def _segment_sum(a, starts, xp):
    """Sums of consecutive row segments of ``a`` beginning at ``starts``."""
    if xp is np:
        if a.dtype.kind == "c":            # real and imaginary parts side by side, summed as reals
            flat = np.ascontiguousarray(a).reshape(a.shape[0], -1)
            real = flat.view(flat.real.dtype)
            return np.add.reduceat(real, starts, axis=0).view(a.dtype).reshape((starts.size,) + a.shape[1:])
        return np.add.reduceat(a, starts, axis=0)
    wide = xp.complex128 if a.dtype.kind == "c" else xp.float64     # differences of sums: in double
    c = xp.cumsum(a.astype(wide), axis=0)
    ends = xp.asarray(np.append(starts[1:], a.shape[0]) - 1)
    out = c[ends]
    out[1:] -= c[xp.asarray(starts[1:] - 1)]
    return out.astype(a.dtype)
