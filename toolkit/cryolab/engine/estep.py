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

import math
from dataclasses import dataclass

import numpy as np

from ..backend import get_xp, to_numpy
from ..fourier import rfft_grid
from ..geometry import euler_to_matrix, matrix_to_euler, nearest_rotation, pairwise_angles_deg

__all__ = ["FourierPixels", "fourier_pixels", "gather", "scatter", "split_complex",
           "image_terms", "Scratch", "score", "normalise", "row_slices", "significant_mask", "block_maxima",
           "block_columns", "top_columns", "mean_pose"]


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


class Scratch:
    """A float32 buffer for the scores of successive batches (coarse pass, then each fine group),
    grown when one needs more. A fresh array of a batch's scores (hundreds of MB) has its pages
    faulted in by the first pass that writes it, which can cost as much as the GEMM that fills it;
    a reused one does not."""

    def __init__(self):
        self._bufs = {}

    def take(self, shape, xp, slot: str = "scores"):
        """A C-contiguous float32 array of ``shape`` on the buffer ``slot`` (its previous contents are
        lost; ``"scores"``: the scores, ``"sort"``: :func:`significant_mask`'s sorted weights)."""
        n = math.prod(shape)                                  # (np.prod: ~20x slower on a tuple)
        buf = self._bufs.get(slot)
        if buf is None or buf.size < n or get_xp(buf) is not xp:
            self._bufs[slot] = buf = None                     # the old one freed before the new one is made
            self._bufs[slot] = buf = xp.empty(n, xp.float32)
        return buf[:n].reshape(shape)


def score(X, ctf, inv_sigma2, P, ramps, *, mode: str = "map", Yc=None, return_terms: bool = False,
          scratch: Scratch | None = None):
    """Scores ``[B, T, J]`` (larger = better) of images against references x translations.

    ``X``: ``[B, M]`` complex images; ``ctf``: ``[B, M]`` real (or None = 1);
    ``inv_sigma2``: ``[M]`` real ``1/sigma2``; ``P``: ``[J, M]`` complex projections;
    ``ramps``: ``[T, M]`` complex translation ramps.

    ``mode="map"``/``"ml"`` returns ``-(diff2 - A_b)`` = ``cross - Q`` (add log priors,
    then normalise); ``mode="maxcc"`` returns the cross-correlation
    ``Re<X_t, C P> / (|X| |C P|)`` (with ``sigma2`` = 1). With ``return_terms``
    also returns ``Yc`` from :func:`image_terms` (reused by the M-step). With ``scratch``
    (:class:`Scratch`) the scores are written into its buffer (valid until its next use).
    """
    xp = get_xp(X)
    B, M = X.shape
    T = ramps.shape[0]
    c = xp.ones((B, M), xp.float32) if ctf is None else ctf.astype(xp.float32, copy=False)
    w = xp.ones(M, xp.float32) if mode == "maxcc" else inv_sigma2.astype(xp.float32)
    if Yc is None:
        Yc = image_terms(X, c, w, ramps)
    Pt = split_complex(P).T
    if scratch is None:
        cross = (Yc @ Pt).reshape(B, T, -1)                                        # the GEMM
    else:
        cross = scratch.take((B * T, Pt.shape[1]), xp)
        xp.matmul(Yc, Pt, out=cross)                                                # the GEMM, in place
        cross = cross.reshape(B, T, -1)
    if mode == "maxcc":
        norm_cp = xp.sqrt(xp.maximum(power_terms(c * c, P), 1e-30))                 # [B, J]
        norm_x = xp.sqrt(xp.sum(xp.abs(X) ** 2, axis=1))                            # [B]
        cross /= norm_cp[:, None, :] * xp.maximum(norm_x, 1e-30)[:, None, None]      # in place
        out = cross
    else:
        Q = power_terms(c * c * (0.5 * w), P)                                       # [B, J]
        cross -= Q[:, None, :]
        out = cross
    return (out, Yc) if return_terms else out


def power_terms(cw, P, rows: int = 512):
    """``cw @ |P|^2.T`` (``[B, J]``, float32) for weights ``cw [B, M]`` and projections ``P [J, M]``,
    a slice of ``rows`` projections at a time, so that no ``[J, M]`` temporaries are made (a fine
    pass's projections are the largest array it holds)."""
    xp = get_xp(P)
    out = xp.empty((cw.shape[0], P.shape[0]), xp.float32)
    for j0 in range(0, P.shape[0], rows):
        part = P[j0:j0 + rows]
        out[:, j0:j0 + rows] = cw @ (part.real ** 2 + part.imag ** 2).T        # [B, rows]: no strided out=
    return out


def normalise(logw, axis=None, *, overwrite: bool = False):
    """Posterior weights from log weights ``[B, ...]``: each image's weights sum to 1.

    Returns ``(weights, logsumexp)``; ``logsumexp`` is ``[B]``. The exponentials are taken in
    float32 after subtracting each image's maximum (weights that underflow float32 become 0)
    and summed in double. ``overwrite=True`` (a C-contiguous float32 ``logw``) writes the weights
    into ``logw`` itself, an image at a time (NumPy: its row stays in cache between the passes),
    with the same values to the bit.
    """
    xp = get_xp(logw)
    flat = logw.reshape(logw.shape[0], -1)
    if not (overwrite and flat.dtype == xp.float32 and flat.flags.c_contiguous):
        mx = flat.max(axis=1, keepdims=True)
        e = xp.exp((flat - mx).astype(xp.float32, copy=False))
        s = e.sum(axis=1, keepdims=True, dtype=xp.float64)
        e /= s.astype(xp.float32)
        return e.reshape(logw.shape), (mx + xp.log(s))[:, 0]
    b = flat.shape[0]
    mx = xp.empty((b, 1), xp.float32)
    s = xp.empty((b, 1), xp.float64)
    for rows in row_slices(flat):
        part = flat[rows]
        xp.max(part, axis=1, keepdims=True, out=mx[rows])
        xp.subtract(part, mx[rows], out=part)
        xp.exp(part, out=part)
        xp.sum(part, axis=1, keepdims=True, dtype=xp.float64, out=s[rows])
        part /= s[rows].astype(xp.float32)
    return logw, (mx + xp.log(s))[:, 0]


def row_slices(flat, max_entries: int = 1 << 18):
    """Slices of consecutive rows of ``flat [b, n]`` to take one at a time: on NumPy as many rows
    as hold about ``max_entries`` (at least one; 1 MB of float32, within a core's L2 cache: a
    fine pass's normalisation 23 instead of 30 ms with 2^21), so that several passes over a slice
    find it in cache; on a GPU all rows at once (one kernel per pass)."""
    b, n = flat.shape
    step = max(1, max_entries // max(n, 1)) if get_xp(flat) is np else max(b, 1)
    return [slice(lo, min(b, lo + step)) for lo in range(0, b, step)]


def significant_mask(weights, fraction: float = 0.999, chunk: int = 1 << 22, *, mask: bool | str = True,
                     block_max=None, scratch: Scratch | None = None):
    """Per image, the smallest set of samples holding ``fraction`` of its weight (RELION's adaptive fraction).

    ``weights`` ``[B, ...]`` normalised; returns a boolean mask of the same shape (None with
    ``mask=False``; with ``mask="sparse"`` its true entries ``(rows, cols)``, the image and the
    flat sample index, arrays on the weights' device) and the count of significant samples per
    image (at least 1). Each image's weights are sorted; only candidates are summed: samples
    below ``(1 - fraction) / S`` (``S`` samples per image) together hold less than
    ``1 - fraction``, so the smallest set never needs them. The mask keeps every sample at least
    as heavy as the lightest one counted (ties at that weight all kept, so it may hold more than
    the count). Images are taken ``chunk`` samples at a time to bound memory. When the
    candidates lie in few blocks of :data:`BLOCK` samples, only those blocks are read after one
    pass of block maxima (``block_max``, :func:`block_maxima` of the flat weights, when the
    caller has it). ``scratch``: a :class:`Scratch` whose ``"sort"`` buffer holds the sorted weights.
    """
    xp = get_xp(weights)
    flat = weights.reshape(weights.shape[0], -1)
    b, n = flat.shape
    thr = (1.0 - fraction) / n
    dense = mask is True
    out = xp.zeros(flat.shape, dtype=bool) if dense else None    # NumPy: pages zeroed when touched
    count = xp.zeros(b, dtype=xp.int64)
    rows, cols = [], []
    step = max(1, chunk // max(n, 1))
    for lo in range(0, b, step):
        part = flat[lo:lo + step]
        idx = None
        if thr > 0 and n >= 16 * BLOCK:
            bm = block_maxima(part) if block_max is None else block_max[lo:lo + step]
            idx = _candidate_columns(part, bm, thr)
        vals = part if idx is None else xp.take_along_axis(part, idx, 1)      # every candidate of each row
        if xp is np and vals.dtype == np.float32:                    # NumPy: no sort of every candidate
            ncand, lightest = _count_by_buckets(vals, thr, fraction)   # counted; 0: no candidate
            lightest = lightest[:, None]
            count[lo:lo + step] = c = np.maximum(ncand, 1)
        else:
            cand = vals >= thr
            ncand = cand.sum(axis=1)
            m = max(int(ncand.max()), 1)                              # candidates of the richest image
            top = _heaviest(vals, cand, ncand, m, scratch)            # heaviest first
            count[lo:lo + step] = c = xp.maximum(_count_heaviest(top, thr, fraction), 1)
            lightest = xp.take_along_axis(top, (c - 1)[:, None], axis=1)
            lightest = xp.where(ncand[:, None] > 0, lightest, xp.inf)     # no candidate: the best one only
        if not mask:
            continue
        if dense and idx is None:
            out[lo:lo + step] = part >= lightest
            continue
        if idx is None:
            r, col = xp.nonzero(part >= lightest)
        else:               # the samples at least as heavy as the lightest counted are all candidates
            r, k = xp.nonzero(vals >= lightest)
            col = idx[r, k]
        if dense:
            out[r + lo, col] = True                 # only these pages of the mask are touched
            continue
        # the best sample is counted wherever there is a candidate (the heaviest is one); else add it
        none = xp.nonzero(ncand == 0)[0]
        rows += [r + lo, none + lo]
        cols += [col, xp.argmax(part[none], axis=1)]
    if dense:
        out[xp.arange(b), xp.argmax(flat, axis=1)] = True           # the best sample, always
        return out.reshape(weights.shape), count
    return ((xp.concatenate(rows), xp.concatenate(cols)) if mask else None), count


#: samples per block of :func:`block_maxima`
BLOCK = 128


def block_maxima(flat, block: int = BLOCK):
    """``[b, n // block]``: the maximum of each whole block of ``block`` consecutive entries of each
    row of ``flat [b, n]`` (the tail of fewer than ``block`` entries left out)."""
    b, n = flat.shape
    return flat[:, :n // block * block].reshape(b, -1, block).max(axis=2)


def _candidate_columns(part, bm, thr, block: int = BLOCK):
    """Columns ``[b, L]`` of each row of ``part [b, n]`` that hold every entry ``>= thr`` (the
    blocks whose maximum ``bm`` reaches it, as many for every row, and the tail); None when that is
    more than an eighth of the row (a plain pass is then as fast)."""
    n = part.shape[1]
    k = max(int((bm >= thr).sum(axis=1).max()), 1)
    if 8 * (k * block + n - bm.shape[1] * block) >= n:
        return None
    # the k blocks with the largest maxima hold every block that reaches thr (at most k per row)
    return block_columns(bm, k, n, block)


def block_columns(bm, k: int, n: int, block: int = BLOCK):
    """``[b, k * block + tail]``: per row of ``n`` entries, the columns of the ``k`` blocks whose
    maxima ``bm [b, n // block]`` (:func:`block_maxima`) are largest, then the tail of fewer than
    ``block`` entries that no block covers."""
    xp = get_xp(bm)
    b, head = bm.shape[0], bm.shape[1] * block
    blocks = xp.argpartition(-bm, k - 1, axis=1)[:, :k]
    idx = (blocks[:, :, None] * block + xp.arange(block)).reshape(b, -1)
    return xp.concatenate([idx, xp.broadcast_to(xp.arange(head, n), (b, n - head))], axis=1)


def _count_heaviest(top, thr, fraction: float, first: int = 4096):
    """Per row of ``top [b, m]`` (heaviest first): how many entries ``>= thr`` have less than
    ``fraction`` of the weight ahead of them, ``before = cumsum - top`` in double. The running sums
    are taken a slice of columns at a time (the last sum carried in front of the next slice, so
    they are the sums of one pass, to the bit) until no row can count more."""
    xp = get_xp(top)
    b, m = top.shape
    count = xp.zeros(b, dtype=xp.int64)
    if xp is not np:                                      # a GPU: one pass
        d = top.astype(xp.float64)
        return ((xp.cumsum(d, axis=1) - d < fraction) & (top >= thr)).sum(axis=1)
    rows, carry = np.arange(b), np.zeros((b, 1))          # the rows that may count more, their sums
    lo, step = 0, first
    while lo < m and rows.size:
        part = top[rows, lo:lo + step]
        d = part.astype(np.float64)
        run = np.cumsum(np.concatenate([carry, d], axis=1), axis=1)[:, 1:]
        count[rows] += ((run - d < fraction) & (part >= thr)).sum(axis=1)
        carry = run[:, -1:]
        # later entries have at least this much weight ahead (less ~1e-16 of rounding) or are < thr
        more = (carry[:, 0] < fraction + 1e-9) & (part[:, -1] >= thr)
        rows, carry = rows[more], carry[more]
        lo, step = lo + step, 2 * step
    return count


def _count_by_buckets(vals, thr, fraction: float, bits: int = 20, margin: float = 1e-9):
    """NumPy, float32 ``vals [b, n]``: per row the count of :func:`_count_heaviest` on its entries
    ``>= thr`` sorted heaviest first (0: no such entry) and the lightest entry counted (inf when
    none), without sorting them all. A row's candidates are summed (in double) per bucket of equal
    leading bits (``bits`` bits dropped from the float32 pattern: ordered like the values, 8 buckets
    per octave), buckets heaviest first; a bucket whose running sum stays below ``fraction -
    margin`` counts whole, one whose weight ahead reaches ``fraction + margin`` counts nothing, and
    only the few buckets in between are sorted and counted entry by entry. The same counts as the
    sorted pass unless a running sum lies within rounding (~1e-12) of ``fraction``."""
    b = vals.shape[0]
    count = np.zeros(b, dtype=np.int64)
    lightest = np.full(b, np.inf, dtype=vals.dtype)
    for i in range(b):
        v = vals[i][vals[i] >= thr]
        if v.size == 0:
            continue
        key = v.view(np.int32) >> bits
        key = key.max() - key                                     # 0: the heaviest bucket
        sums = np.bincount(key, weights=v)
        through = np.cumsum(sums)                                 # weight of the buckets up to each one
        q = int(np.count_nonzero(through < fraction - margin))    # buckets counted whole: a prefix
        qe = q + int(np.count_nonzero(through[q:] - sums[q:] < fraction + margin))   # then the boundary ones
        n = int(np.count_nonzero(key < q))
        k = 0
        if qe > q:
            e = np.sort(v[(key >= q) & (key < qe)])[::-1]          # the boundary buckets, heaviest first
            d = e.astype(np.float64)
            run = np.cumsum(d) + (through[q] - sums[q])
            k = int(np.count_nonzero(run - d < fraction))
        if k:
            lightest[i] = e[k - 1]
        elif n:
            lightest[i] = v[key == q - 1].min()
        count[i] = n + k
    return count, lightest


def _heaviest(part, cand, ncand, m: int, scratch: Scratch | None = None):
    """Rows ``[b, m]`` of each row's candidates ``cand`` (at most ``m`` per row), heaviest first, then
    zeros. When candidates are few, only they are sorted (gathered into a zero-padded buffer); on
    NumPy each row's own candidates otherwise. ``scratch``: its ``"sort"`` buffer holds the rows."""
    xp = get_xp(part)
    b, n = part.shape
    if 8 * m >= n and xp is np and part.dtype == np.float32:
        # NumPy: each row's own candidates, sorted one row at a time (rows keep very different numbers)
        buf = np.zeros((b, m), np.float32) if scratch is None else scratch.take((b, m), np, slot="sort")
        for i in range(b):
            v = np.sort(part[i][cand[i]])
            buf[i, :v.size] = v[::-1]
            buf[i, v.size:] = 0
        return buf
    if 8 * m >= n:
        return xp.sort(part, axis=1)[:, ::-1][:, :m]
    rows, cols = xp.nonzero(cand)
    starts = xp.cumsum(ncand) - ncand
    buf = xp.zeros((b, m), dtype=part.dtype)
    buf[rows, xp.arange(rows.shape[0]) - starts[rows]] = part[rows, cols]
    return xp.sort(buf, axis=1)[:, ::-1]


def top_columns(flat, n: int, block: int = BLOCK, block_max=None):
    """Column indices of the ``n`` largest entries of each row, largest first.

    Long rows are cut into blocks of ``block`` entries: the ``n`` largest entries lie in the
    ``n`` blocks with the largest maxima (``block_max``: :func:`~.estep.block_maxima` of ``flat``
    when the caller has them), so only those blocks (and the tail) are searched.
    """
    xp = get_xp(flat)
    S = flat.shape[1]
    if S > 16 * n * block:
        bmax = block_maxima(flat, block) if block_max is None or block != BLOCK else block_max
        idx = block_columns(bmax, n, S, block)
        return xp.take_along_axis(idx, top_columns(xp.take_along_axis(flat, idx, 1), n), 1)
    if S > n:
        part = xp.argpartition(-flat, n - 1, axis=1)[:, :n]
        return xp.take_along_axis(part, xp.argsort(-xp.take_along_axis(flat, part, 1), axis=1), 1)
    return xp.argsort(-flat, axis=1)


def mean_pose(w, wj, wt, classes, orients, trans, best_class):
    """Posterior-mean poses of images with normalised weights ``w [b, T, J]`` (their sums over
    translations ``wj [b, J]`` and over orientations ``wt [b, T]``) over translations ``trans
    [T, 2]`` (px) and orientation rows ``orients [J, >=3]`` (Euler angles first, deg) of ``classes
    [J]``, over each image's samples of its ``best_class [b]``: the weighted mean translation
    ``sum_t w_t t / sum_t w_t``, the mean orientation of :func:`cryolab.geometry.mean_orientation`
    (the rotation nearest to ``sum_j w_j A_j``) and the posterior's angular spread, the root mean
    square angle of the samples from the mean orientation over the square root of 3 (deg: one
    axis's standard deviation for an isotropic spread). Returns host arrays ``([b, 3], [b, 2], [b])``."""
    xp = get_xp(w)
    classes = np.asarray(classes)
    if np.unique(classes).size > 1:       # the best class's samples only (no copy of the weights)
        mine = xp.asarray(classes[None, :] == np.asarray(best_class)[:, None]).astype(w.dtype)    # [b, J]
        wj, wt = wj * mine, xp.matmul(w, mine[:, :, None])[:, :, 0]
    wt = wt.astype(xp.float64)
    offset = (wt @ xp.asarray(trans, dtype=xp.float64)) / wt.sum(axis=1)[:, None]
    e = xp.asarray(np.asarray(orients)[:, :3], dtype=xp.float64)
    A = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]).reshape(-1, 9)                      # [J, 9]
    wj = wj.astype(xp.float64)
    R = nearest_rotation(wj @ A)                                                       # the chordal mean
    spread = xp.sqrt((wj * pairwise_angles_deg(R, A) ** 2).sum(axis=1) / wj.sum(axis=1) / 3.0)
    return to_numpy(xp.stack(matrix_to_euler(R), axis=-1)), to_numpy(offset), to_numpy(spread)
