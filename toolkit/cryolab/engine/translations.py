"""Scores at a lattice of translations as a separable 2D DFT, and its transpose for the M-step.

Notation of :mod:`.estep`. For image ``b`` and projection ``j`` the cross term at translation
``t = (tx, ty)`` px (ramp ``S_tm = exp(-2 pi i (kx tx + ky ty) / N)``) is a 2D DFT of
``G = conj(X_b) C_b w P_j`` evaluated at ``t``::

    cross(b, t, j) = Re sum_m conj(X_bm S_tm) C_bm w_m P_jm
                   = Re sum_{kx, ky} G(kx, ky) exp(+2 pi i kx tx / N) exp(+2 pi i ky ty / N)

For translations on a lattice (``tx`` in ``xs`` [Tx], ``ty`` in ``ys`` [Ty]) it separates: per
``kx`` column, contract ``ky`` with the image folded into a ``[ty, ky]`` phase matrix (one GEMM
per ``kx`` against every projection), then contract ``kx`` (one GEMM); a few images share each
GEMM (rows of the first, columns of the second). Per (image,
projection) pair that is ``4 Ty M + 2 Tx Ty (R + 1)`` real multiply-adds for all ``Tx Ty``
lattice translations (``R``: the largest frequency) instead of ``2 M`` for each translation as
a GEMM row (:func:`.estep.score`): at 64 px with the fine translations of offsets 5/1 px
(22 x 22 lattice, 324 translations) about 5x fewer. :func:`weighted_sums` is the transpose:
``D_j(m) = sum_{b,t} w(b,t,j) C_bm X_bm S_tm`` by the same two contractions, images summed in
the second. Pixels are those of the half grid (``kx >= 0``), each counted once, as in
:mod:`.estep`; the results equal :func:`.estep.score` and :func:`.mstep.weighted_sums` up to
float32 rounding.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..backend import get_xp
from .estep import power_terms
from .threads import cpu_workers, in_threads, limit_blas_threads, pool_size, ranges

__all__ = ["TranslationLattice", "translation_lattice", "lattice_flops", "lattice_pays", "LATTICE_BELOW", "score",
           "weighted_sums", "separable_ramps"]


@dataclass(frozen=True)
class TranslationLattice:
    """Translations ``trans [T, 2]`` (x, y px) on the lattice ``xs [Tx]`` x ``ys [Ty]``, and the
    phase matrices for pixels with integer frequencies ``kx`` in ``[0, Kx)``, ``ky`` in
    ``[-R, R]`` (box ``[Kx, Ky = 2R + 1]``).

    ``ix``, ``iy`` ``[T]``: each translation's place in ``xs`` and ``ys``; ``gap_x``, ``gap_y``: the
    lattice points that are not translations; ``box [M]``: flat box index
    ``kx * Ky + ky + R`` of each pixel; ``spans``: per ``kx`` the ``(lo, hi)`` range of box
    ``ky`` indices holding pixels; ``ey [Ty, Ky]`` = ``exp(+2 pi i ky ty / N)`` (complex64);
    ``e2 [Tx, 2 Kx + 1]`` = ``[cos, -sin](2 pi kx tx / N)`` interleaved per ``kx``, then a column of
    ones (it adds the term of :func:`score` that does not depend on the translation);
    ``f2 [Kx, 2, Tx]`` = ``[cos, -sin](2 pi kx tx / N)``, the transpose's phases.

    Lattice points that are no translations (outside the disk of offsets: a third of a 22 x 22
    lattice) are left out of the ``kx`` contraction of :func:`score` and the ``tx`` contraction of
    :func:`weighted_sums` by cutting the lattice into bands (:func:`_bands`): ``x_bands``, per group
    of ``tx`` rows ``(rows, y0, y1)``, the ``ty`` range ``[y0, y1)`` holding their translations,
    ``e2_bands`` their rows of ``e2``, ``x_sel [T]`` each translation's row in the bands' stacked
    outputs; ``y_bands`` the same per group of ``ty`` columns (``(p0, p1, x0, x1)``: the group's
    places ``[p0, p1)`` in the order ``y_perm`` of ``ty``, its ``tx`` range), ``ey_sums``
    ``[Ty, Ky]`` = ``conj(ey)`` in that order, ``iy_sums`` each translation's place in it and
    ``gap_x``, ``gap_y`` the bands' points that are no translations (``gap_y`` in that order).
    """
    n: int
    trans: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    kx_size: int
    ky_size: int
    spans: tuple
    ix: object
    iy: object
    gap_x: object
    gap_y: object
    box: object
    ey: object
    e2: object
    f2: object
    x_bands: tuple = ()
    e2_bands: tuple = ()
    x_sel: object = None
    y_bands: tuple = ()
    ey_sums: object = None
    iy_sums: object = None

    @property
    def size(self) -> int:
        return int(self.trans.shape[0])


def translation_lattice(n: int, trans_px, kx, ky, xp=np, max_bands: int = 4) -> TranslationLattice:
    """The :class:`TranslationLattice` of translations ``trans_px [T, 2]`` for pixels of integer
    frequencies ``kx``, ``ky`` ``[M]`` (host arrays; ``kx >= 0``) of box ``n``; device arrays on ``xp``.
    ``max_bands``: at most this many bands per axis (1: the whole lattice, points outside the
    translations included). The last few lattices are kept (successive batches share theirs)."""
    trans = np.ascontiguousarray(trans_px, dtype=np.float64).reshape(-1, 2)
    kx, ky = np.rint(np.asarray(kx)).astype(np.int64), np.rint(np.asarray(ky)).astype(np.int64)
    return _lattice(n, trans.tobytes(), kx.tobytes(), ky.tobytes(), xp, max_bands)


@functools.lru_cache(maxsize=8)
def _lattice(n: int, trans_bytes: bytes, kx_bytes: bytes, ky_bytes: bytes, xp, max_bands: int):
    trans = np.frombuffer(trans_bytes, dtype=np.float64).reshape(-1, 2)
    kx, ky = np.frombuffer(kx_bytes, dtype=np.int64), np.frombuffer(ky_bytes, dtype=np.int64)
    if kx.size and kx.min() < 0:
        raise ValueError("translation_lattice: pixels of the half grid (kx >= 0) expected")
    key = np.round(trans * 1e6).astype(np.int64)               # lattice coordinates to 1e-6 px
    xs_key, ix = np.unique(key[:, 0], return_inverse=True)
    ys_key, iy = np.unique(key[:, 1], return_inverse=True)
    xs, ys = xs_key / 1e6, ys_key / 1e6
    used = np.zeros((len(xs), len(ys)), dtype=bool)
    used[ix, iy] = True
    if used.sum() < len(trans):
        raise ValueError("translation_lattice: the translations must be distinct")
    R = int(np.abs(ky).max()) if ky.size else 0
    kx_size, ky_size = (int(kx.max()) + 1 if kx.size else 1), 2 * R + 1
    spans = []
    for u in range(kx_size):
        v = ky[kx == u] + R
        spans.append((int(v.min()), int(v.max()) + 1) if v.size else (0, 0))
    two_pi_n = 2.0 * np.pi / n
    ey = np.exp(1j * two_pi_n * np.outer(ys, np.arange(-R, R + 1)))              # [Ty, Ky]
    ang = two_pi_n * np.outer(xs, np.arange(kx_size))                             # [Tx, Kx]
    e2 = np.concatenate([np.stack([np.cos(ang), -np.sin(ang)], axis=2).reshape(len(xs), 2 * kx_size),
                         np.ones((len(xs), 1))], axis=1)
    f2 = np.stack([np.cos(ang).T, -np.sin(ang).T], axis=1)                        # [Kx, 2, Tx]
    e2 = e2.astype(np.float32)
    x_bands = _bands(used, max_bands)
    place = np.zeros(used.shape, np.int64)                # each point's row in the bands' stacked outputs
    first = 0
    for rows, y0, y1 in x_bands:
        place[rows, y0:y1] = first + np.arange(len(rows) * (y1 - y0)).reshape(len(rows), y1 - y0)
        first += len(rows) * (y1 - y0)
    y_groups = _bands(used.T, max_bands)
    y_perm = np.concatenate([cols for cols, _, _ in y_groups])
    inside = np.zeros(used.shape, bool)                   # [Tx, Ty in y_perm order]: the bands' points
    y_bands, p0 = [], 0
    for cols, x0, x1 in y_groups:
        y_bands.append((p0, p0 + len(cols), int(x0), int(x1)))
        inside[x0:x1, p0:p0 + len(cols)] = True
        p0 += len(cols)
    y_place = np.argsort(y_perm)
    gap_x, gap_y = np.nonzero(inside & ~used[:, y_perm])
    return TranslationLattice(
        n, trans, xs, ys, kx_size, ky_size, tuple(spans),
        xp.asarray(ix), xp.asarray(iy), xp.asarray(gap_x), xp.asarray(gap_y), xp.asarray(kx * ky_size + ky + R),
        xp.asarray(ey.astype(np.complex64)), xp.asarray(e2),
        xp.asarray(np.ascontiguousarray(f2, dtype=np.float32)),
        tuple((rows, int(y0), int(y1)) for rows, y0, y1 in x_bands),
        tuple(xp.asarray(np.ascontiguousarray(e2[rows])) for rows, _, _ in x_bands),
        xp.asarray(place[ix, iy]), tuple(y_bands),
        xp.asarray(np.conj(ey[y_perm]).astype(np.complex64)), xp.asarray(y_place[iy]))


def _bands(used, max_bands: int):
    """Groups ``(rows, lo, hi)`` of the rows of ``used [R, C]`` (bool; a True in every row), with the
    range of columns ``[lo, hi)`` that holds their True entries: rows of equal ranges together, then,
    while there are more than ``max_bands`` groups, the two whose merged rectangle adds the fewest
    cells merged. Sorted by first row."""
    c = used.shape[1]
    lo = used.argmax(axis=1)
    hi = c - used[:, ::-1].argmax(axis=1)
    groups = {}
    for r, key in enumerate(zip(lo.tolist(), hi.tolist())):
        groups.setdefault(key, []).append(r)
    g = [(rows, a, b) for (a, b), rows in groups.items()]
    while len(g) > max(max_bands, 1):
        def added(p, q):
            a, b = min(p[1], q[1]), max(p[2], q[2])
            return (len(p[0]) + len(q[0])) * (b - a) - len(p[0]) * (p[2] - p[1]) - len(q[0]) * (q[2] - q[1])
        _, i, k = min((added(g[i], g[k]), i, k) for i in range(len(g)) for k in range(i + 1, len(g)))
        merged = (sorted(g[i][0] + g[k][0]), min(g[i][1], g[k][1]), max(g[i][2], g[k][2]))
        g = [x for m, x in enumerate(g) if m not in (i, k)] + [merged]
    return tuple((np.asarray(rows, dtype=np.int64), int(a), int(b)) for rows, a, b in sorted(g, key=lambda x: x[0][0]))


def separable_ramps(n: int, trans_px, kx, ky, xp=np):
    """Phase ramps ``[S, M]`` complex64 of translations ``trans_px [S, 2]`` (x, y px) at the pixels of
    integer frequencies ``kx``, ``ky`` ``[M]`` (host arrays), the convention of
    :func:`cryolab.projection.shift_ramps` (``exp(-2 pi i (kx sx + ky sy) / N)``): the product of a
    table per axis, ``exp(-2 pi i kx sx / N) exp(-2 pi i ky sy / N)``, each made in double for the
    distinct shifts and frequencies only (one complex product per entry instead of a sine and a
    cosine); equal to ``shift_ramps`` to complex64 rounding."""
    trans = np.asarray(trans_px, dtype=np.float64).reshape(-1, 2)
    kx, ky = np.rint(np.asarray(kx)).astype(np.int64), np.rint(np.asarray(ky)).astype(np.int64)

    def table(shifts, k):                                  # [S, M]: each shift's factor at each pixel
        us, ui = np.unique(shifts, return_inverse=True)
        uk, ki = np.unique(k, return_inverse=True)
        t = np.exp(-2j * np.pi / n * np.outer(us, uk)).astype(np.complex64)
        return xp.asarray(t), xp.asarray(ui.reshape(-1)), xp.asarray(ki.reshape(-1))

    (tx, sx, mx), (ty, sy, my) = table(trans[:, 0], kx), table(trans[:, 1], ky)
    out = xp.take(tx[:, mx], sx, axis=0)                   # [S, M]
    out *= xp.take(ty[:, my], sy, axis=0)
    return out


#: the lattice is used when it takes fewer than this share of the multiply-adds of one GEMM row per
#: translation (:func:`lattice_pays`; its GEMMs are smaller, so less efficient)
LATTICE_BELOW = 0.6


def lattice_flops(lat: TranslationLattice, m: int) -> float:
    """Real multiply-adds per (image, projection) pair of :func:`score` for ``m`` pixels."""
    return 4.0 * len(lat.ys) * m + 2.0 * len(lat.xs) * len(lat.ys) * lat.kx_size


def lattice_pays(lat: TranslationLattice, m: int) -> bool:
    """Whether scoring ``m`` pixels on the lattice takes under :data:`LATTICE_BELOW` of the multiply-adds
    of its translations as GEMM rows (``2 m`` each)."""
    return lattice_flops(lat, m) < LATTICE_BELOW * 2 * m * lat.size


def _to_box(values, lat: TranslationLattice):
    """``[B, M]`` complex -> ``[B, Kx, Ky]`` complex64 with zeros where there is no pixel."""
    xp = get_xp(values)
    out = xp.zeros((values.shape[0], lat.kx_size * lat.ky_size), dtype=xp.complex64)
    out[:, lat.box] = values
    return out.reshape(values.shape[0], lat.kx_size, lat.ky_size)


def _projections_box(P, lat: TranslationLattice):
    """``P [J, M]`` complex -> ``[Kx, Ky, 2, J]`` float32 (real and imaginary parts). A new array
    each call: a work array kept for the next call would add to the fine pass's memory peak
    (the 32 px 3D iteration of ``tests/test_memory.py``: 1.20 instead of 0.95 of its budget)."""
    xp = get_xp(P)
    out = xp.zeros((lat.kx_size * lat.ky_size, 2, P.shape[0]), dtype=xp.float32)
    parts = xp.ascontiguousarray(P, dtype=xp.complex64).view(xp.float32).reshape(P.shape[0], -1, 2)
    out[lat.box] = parts.transpose(1, 2, 0)                                   # one pass, both parts
    return out.reshape(lat.kx_size, lat.ky_size, 2, P.shape[0])


def _ramp_terms(Y, ey):
    """``Y(kx, ky) ey(ty, ky)`` for boxes ``Y [..., Kx, Ky]`` and a phase table ``ey [Ty, Ky]``:
    ``[..., Kx, Ty, Ky]`` complex."""
    return Y[..., :, None, :] * ey


def _taker(xp, scratch, worker: int = 0):
    """``take(shape, slot)``: a float32 work array, from ``scratch`` (:class:`.estep.Scratch`) when given
    (slots of their own per ``worker`` thread)."""
    if scratch is None:
        return lambda shape, slot: xp.empty(shape, xp.float32)
    return lambda shape, slot: scratch.take(shape, xp, slot=f"{slot}{worker or ''}")


def score(X, ctf, inv_sigma2, P, lat: TranslationLattice, *, out=None, images_per_gemm: int = 2,
          columns: int = 128, scratch=None, workers: int | None = None):
    """Scores ``[B, T, J]`` = ``cross - Q`` of :func:`.estep.score` (``mode="map"``/``"ml"``) at the
    lattice's translations ``lat.trans``: ``X [B, M]`` complex, ``ctf [B, M]`` (None = 1),
    ``inv_sigma2 [M]``, ``P [J, M]`` complex. ``out``: a float32 ``[B, T, J]`` array to write to.
    ``images_per_gemm`` images share the GEMMs (rows of the first, columns of the second).
    ``scratch`` (:class:`.estep.Scratch`): its ``lattice_*`` buffers hold the work arrays (a new
    array's pages are faulted in when first written, which can cost as much as the GEMMs).
    ``workers`` threads (None: :func:`cpu_workers`) take consecutive images each; the scores are the
    same to the bit for any number."""
    xp = get_xp(X)
    workers = cpu_workers(xp) if workers is None else workers
    with limit_blas_threads(workers):
        return _score(X, ctf, inv_sigma2, P, lat, out, images_per_gemm, columns, scratch, workers)


def _score(X, ctf, inv_sigma2, P, lat: TranslationLattice, out, images_per_gemm: int, columns: int, scratch,
           workers: int):
    xp = get_xp(X)
    B, M = X.shape
    J, T = P.shape[0], lat.size
    Tx, Ty, Kx, Ky = len(lat.xs), len(lat.ys), lat.kx_size, lat.ky_size
    c = xp.ones((B, M), xp.float32) if ctf is None else ctf.astype(xp.float32, copy=False)
    w = inv_sigma2.astype(xp.float32)
    Ybox = _to_box(xp.conj(X) * (c * w[None, :]), lat)                      # conj(X) C w
    Pcols = _projections_box(P, lat).reshape(Kx, 2 * Ky, J)                 # per kx rows (ky, re/im)
    Q = power_terms(c * c * (0.5 * w), P)                                   # [B, J]
    out = xp.empty((B, T, J), xp.float32) if out is None else out
    stacked = sum(len(rows) * (y1 - y0) for rows, y0, y1 in lat.x_bands)      # the bands' points

    def images(worker, first, last):             # the images [first, last), into their rows of out
        take = _taker(xp, scratch, worker)
        for lo in range(first, last, images_per_gemm):
            nb = min(last, lo + images_per_gemm) - lo
            z = _ramp_terms(Ybox[lo:lo + nb], lat.ey).transpose(1, 2, 0, 3)    # [Kx, Ty, nb, Ky]
            re, im = z.real, z.imag
            # per kx the real matrix, rows (re/im, ty, image), columns (ky, re/im), of multiplying by z
            E1 = take((Kx, 2, Ty, nb, Ky, 2), "lattice_e")
            E1[:, 0, ..., 0], E1[:, 0, ..., 1], E1[:, 1, ..., 0], E1[:, 1, ..., 1] = re, -im, im, re
            E1 = E1.reshape(Kx, 2 * Ty * nb, 2 * Ky)
            for j0 in range(0, J, columns):          # a slice of projections at a time: H stays in cache
                j1 = min(J, j0 + columns)
                Hq = take((2 * Kx + 1, Ty * nb * (j1 - j0)), "lattice_h")
                H = Hq[:2 * Kx].reshape(Kx, 2 * Ty * nb, j1 - j0)
                Hq[2 * Kx].reshape(Ty, nb, j1 - j0)[...] = -Q[None, lo:lo + nb, j0:j1]     # -Q, by e2's ones
                for u, (v0, v1) in enumerate(lat.spans):                        # contract ky, its range per kx
                    if v1 > v0:
                        xp.matmul(E1[u, :, 2 * v0:2 * v1], Pcols[u, 2 * v0:2 * v1, j0:j1], out=H[u])
                    else:
                        H[u] = 0
                # contract kx (and add -Q) per band of tx rows, over its range of ty only
                cols = nb * (j1 - j0)
                cross = take((stacked, cols), "lattice_x")
                Hy = Hq.reshape(2 * Kx + 1, Ty, cols)
                at = 0
                for e2b, (rows, y0, y1) in zip(lat.e2_bands, lat.x_bands):
                    end = at + len(rows) * (y1 - y0)
                    xp.matmul(e2b, Hy[:, y0:y1].reshape(2 * Kx + 1, -1), out=cross[at:end].reshape(len(rows), -1))
                    at = end
                out[lo:lo + nb, :, j0:j1] = xp.moveaxis(cross.reshape(stacked, nb, j1 - j0)[lat.x_sel], 0, 1)

    in_threads(images, ranges(B, workers, images_per_gemm), workers)
    return out


def weighted_sums(weights, X, ctf, lat: TranslationLattice, min_weight: float = 0.0, images_per_gemm: int = 2,
                  scratch=None, columns: int = 1024, per_image=None, workers: int | None = None):
    """``(D [J, M] complex, W [J, M] real, wsum [J])`` of :func:`.mstep.weighted_sums` for weights
    ``[B, T, J]`` at the lattice's translations: ``D_j = sum_{b,t} w C_b X_b S_t``, ``W_j = sum_b
    (sum_t w) C_b^2``. Columns whose weights are all ``<= min_weight`` get zeros. The second
    contraction sums ``images_per_gemm`` images in one GEMM; ``columns`` of them are taken at a
    time (the work arrays grow with them); ``scratch`` as in :func:`score`; ``per_image``: the weights'
    sums over translations ``[B, J]`` when the caller has them. The columns are cut into as many
    shares as the BLAS pool has threads (whatever ``workers``: the same sums to the bit for any
    number), which ``workers`` threads (None: :func:`cpu_workers`) take."""
    xp = get_xp(X)
    workers = cpu_workers(xp) if workers is None else workers
    with limit_blas_threads(workers):
        return _weighted_sums(weights, X, ctf, lat, min_weight, images_per_gemm, scratch, columns, per_image,
                              workers)


def _weighted_sums(weights, X, ctf, lat: TranslationLattice, min_weight: float, images_per_gemm: int, scratch,
                   columns: int, per_image, workers: int):
    xp = get_xp(X)
    B, T, J = weights.shape
    M = X.shape[1]
    c = xp.ones((B, M), xp.float32) if ctf is None else ctf.astype(xp.float32, copy=False)
    per_image = weights.sum(axis=1) if per_image is None else per_image     # [B, J]
    cols = xp.flatnonzero(weights.reshape(B * T, J).max(axis=0) > min_weight)
    D = xp.zeros((J, M), xp.complex64)
    W = xp.zeros((J, M), xp.float32)
    n = int(cols.size)
    if n == 0:
        return D, W, per_image.sum(axis=0)
    CX = _to_box(X * c, lat)                                                 # [B, Kx, Ky]
    shares = ranges(n, pool_size())   # not by workers: same sums

    def some_columns(worker, first, last):
        for lo in range(first, last, columns):
            hi = min(last, lo + columns)
            some = slice(lo, hi) if n == J else cols[lo:hi]               # all columns: views, not copies
            Dc = _sums_on_lattice(weights, some, hi - lo, CX, lat, images_per_gemm,
                                  _taker(xp, scratch, worker))              # [M, 2, n']
            D[some] = (Dc[:, 0, :] + 1j * Dc[:, 1, :]).T

    in_threads(some_columns, shares, workers)
    W[cols] = per_image[:, cols].T @ (c * c)
    return D, W, per_image.sum(axis=0)


def _sums_on_lattice(w, cols, n: int, CX, lat: TranslationLattice, images_per_gemm: int, take):
    """``[M, 2, n]`` real and imaginary parts of ``sum_{b,t} w(b,t,j) CX_b S_t`` for the ``n`` columns
    ``cols`` (a slice or indices) of weights ``w [B, T, J]`` and ``CX [B, Kx, Ky]`` (:func:`_to_box`
    of ``C X``)."""
    xp = get_xp(w)
    B = w.shape[0]
    Tx, Ty, Kx, Ky = len(lat.xs), len(lat.ys), lat.kx_size, lat.ky_size
    Dbox = take((Kx, Ky * 2, n), "lattice_d")
    Dbox.fill(0)
    f2 = lat.f2.reshape(2 * Kx, Tx)
    for lo in range(0, B, images_per_gemm):
        nb = min(B, lo + images_per_gemm) - lo
        lattice_w = take((Tx, nb, Ty, n), "lattice_w")                         # ty in the bands' order
        lattice_w[lat.gap_x, :, lat.gap_y] = 0
        part = w[lo:lo + nb][:, :, cols]
        lattice_w[lat.ix, :, lat.iy_sums] = xp.moveaxis(part, 1, 0)            # [T, nb, n]
        A = take((2 * Kx, nb * Ty * n), "lattice_a")
        A4 = A.reshape(2 * Kx, nb, Ty, n)
        for p0, p1, x0, x1 in lat.y_bands:                                   # contract tx, its range per band
            for b in range(nb):
                xp.matmul(f2[:, x0:x1], lattice_w[x0:x1, b, p0:p1].reshape(x1 - x0, -1),
                          out=A4[:, b, p0:p1].reshape(2 * Kx, -1))
        A = A.reshape(Kx, 2 * nb * Ty, n)
        # per kx: rows (ky, re/im), columns (re/im, image, ty): C X exp(-2 pi i ky ty / N)
        z = _ramp_terms(CX[lo:lo + nb], lat.ey_sums).transpose(1, 3, 0, 2)  # [Kx, Ky, nb, Ty]
        re, im = z.real, z.imag
        F1 = take((Kx, Ky, 2, 2, nb, Ty), "lattice_e")
        F1[:, :, 0, 0], F1[:, :, 0, 1], F1[:, :, 1, 0], F1[:, :, 1, 1] = re, -im, im, re
        F1 = F1.reshape(Kx, 2 * Ky, 2 * nb * Ty)
        prod = take((2 * Ky, n), "lattice_t")                               # each GEMM's product, then added
        for u, (v0, v1) in enumerate(lat.spans):                            # contract ty, images summed
            if v1 > v0:
                xp.matmul(F1[u, 2 * v0:2 * v1], A[u], out=prod[:2 * (v1 - v0)])
                Dbox[u, 2 * v0:2 * v1] += prod[:2 * (v1 - v0)]
    return Dbox.reshape(Kx * Ky, 2, n)[lat.box]
