"""One batch of the E-step with adaptive oversampling, and its M-step sums.

A *sample* is (class ``k``, orientation ``o``, translation ``t``). Orientations are
given by a sampler (:class:`.planar.PlanarSampler` for in-plane angles,
:class:`.spherical.SphericalSampler` for HEALPix x psi) that also projects references
and keys orientations, so this module is the same for 2D and 3D.

Adaptive oversampling (RELION): score every coarse sample for the whole batch in one
GEMM (at the coarse pass's lower resolution), keep per image the smallest set holding
``adaptive_fraction`` of the weight, replace each kept sample by its finer orientations
x finer translations, and score those at full resolution. The fine pass is one GEMM
over the union of the batch's kept orientations x translations when the images' kept
sets overlap (early iterations), otherwise one small GEMM per image over its own kept
set; fine samples whose coarse parent was not kept are masked out. A group's translations are
GEMM rows, or, when that takes fewer multiply-adds (early iterations, many kept translations),
a separable DFT over their lattice (:mod:`.translations`), for the scores and the M-step sums. M-step sums of all
images are added per orientation (by the sampler's keys, into one row per orientation) and
handed on once a batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import get_xp, to_numpy
from .estep import (BLOCK, block_maxima, fourier_pixels, image_terms, mean_pose, normalise, score,
                    significant_mask, top_columns)
from .mstep import residual_power, weighted_sums
from .sampling import fine_translations
from . import translations as lattice

__all__ = ["BatchResult", "expectation_batch", "SampleSet"]

NEG = np.float32(-1e30)


@dataclass
class SampleSet:
    """Samples scored together: ``J`` (class, orientation) pairs x ``T`` translations.

    ``classes [J]``, ``orients [J, ...]`` orientation parameters, ``P [J, M]``
    projections, ``trans [T, 2]`` pixels (relative to each image's current offset),
    ``ramps [T, M]``.
    """
    classes: np.ndarray
    orients: np.ndarray
    P: object
    trans: np.ndarray
    ramps: object


@dataclass
class BatchResult:
    """Per-image results of one batch (NumPy arrays, length B)."""
    best_class: np.ndarray
    best_orient: np.ndarray
    best_trans: np.ndarray
    pmax: np.ndarray
    n_significant: np.ndarray
    loglik: np.ndarray
    class_posterior: np.ndarray           # [B, K]
    angle_sd_deg: np.ndarray              # posterior angular spread (with pose_mean; else NaN)
    top_samples: list = field(default_factory=list)  # per image: (class, orient, trans, prob) arrays


def _log_prior(log_pdf_class, classes, lpo, offsets_px, trans, sigma_offset_px):
    """``[b, T, J]`` log prior: class + orientation ``lpo [b or 1, J]`` + Gaussian offset prior."""
    xp = get_xp(log_pdf_class)
    lpt = _offset_log_prior(xp, offsets_px, trans, sigma_offset_px)
    lp = log_pdf_class[xp.asarray(classes)][None, None, :] + lpt[:, :, None]
    return lp if lpo is None else lp + lpo[:, None, :]


def _offset_log_prior(xp, offsets_px, trans, sigma_offset_px):
    """``[b, T]`` float32: the Gaussian prior of each image's total offset ``offsets_px + trans``."""
    tot = offsets_px[:, None, :] + trans[None, :, :]
    return xp.asarray(-(tot ** 2).sum(-1) / (2 * sigma_offset_px ** 2), dtype=xp.float32)


def _add_log_prior(s, log_pdf_class, classes, lpo, offsets_px, trans, sigma_offset_px, dropped=None):
    """``s += _log_prior(...)`` in place, the same sums to the bit; on NumPy a few translations of one image
    at a time (rows in cache; no array of the size of ``s``). ``dropped [b, T / c, 1, J]``: then :data:`NEG`
    per group of ``c`` consecutive translations (a coarse translation's children), in the same pass."""
    xp = get_xp(s)
    b, T, J = s.shape
    c = 1 if dropped is None else T // dropped.shape[1]
    if xp is not np:
        s += _log_prior(log_pdf_class, classes, lpo, offsets_px, trans, sigma_offset_px)
        if dropped is not None:
            xp.copyto(s.reshape(b, T // c, c, J), NEG, where=dropped)
        return s
    lpc = log_pdf_class[classes][None, :]                                   # [1, J]
    lpt = _offset_log_prior(xp, offsets_px, trans, sigma_offset_px)        # [b, T]
    step = max(1, (1 << 18) // max(J * c, 1)) * c
    for i in range(b):
        for lo in range(0, T, step):
            lp = lpc + lpt[i, lo:lo + step, None]
            if lpo is not None:
                lp += lpo[i if lpo.shape[0] > 1 else 0][None, :]
            s[i, lo:lo + step] += lp
            if dropped is not None:      # in place, a parent's translation children masked by its flag
                np.copyto(s[i, lo:lo + step].reshape(-1, c, J), NEG, where=dropped[i, lo // c:(lo + step) // c])
    return s


#: local searches score each image against its own orientations only when, on average, an image
#: may take fewer than this share of the batch's orientations (one GEMM per image instead of a
#: GEMM over the union, most of which the prior then discards)
SPARSE_BELOW = 0.5

#: the fine pass scores the batch's union while it holds at most this many times the samples of the
#: images' own kept rectangles (64 px set, one thread: a union batch 0.6 s, per image 1.2 s at 2x)
UNION_UP_TO = 3.0
#: above this ratio a union's M-step sums leave out, per image, the orientations whose weights are all
#: at most :data:`OWN_MIN_WEIGHT` (``min_weight`` of :meth:`_Accumulator.add`) for that image, as a
#: per-image pass does (the same sums to float32 rounding); below, only those of every image
OWN_COLUMNS_ABOVE, OWN_MIN_WEIGHT = 2.0, 1e-6


def score_subsets(X, ctf, inv_sigma2, P, ramps, allowed, *, mode: str = "map"):
    """:func:`~.estep.score` ``[B, T, J]`` with each image scored only against the references
    ``allowed [B, J]`` (bool) lets it take, :data:`NEG` elsewhere (equal to ``score`` there);
    returns ``(scores, Yc)`` like ``score(..., return_terms=True)``."""
    xp = get_xp(X)
    B, M = X.shape
    T = ramps.shape[0]
    c = xp.ones((B, M), xp.float32) if ctf is None else ctf.astype(xp.float32, copy=False)
    Yc = image_terms(X, c, xp.ones(M, xp.float32) if mode == "maxcc" else inv_sigma2.astype(xp.float32), ramps)
    out = xp.full((B, T, P.shape[0]), NEG, dtype=xp.float32)
    for b in range(B):
        j = xp.asarray(np.flatnonzero(allowed[b]))
        if j.size:
            out[b][:, j] = score(X[b:b + 1], c[b:b + 1], inv_sigma2, P[j], ramps, mode=mode,
                                 Yc=Yc[b * T:(b + 1) * T])[0]
    return out, Yc


def expectation_batch(X, ctf, inv_sigma2, a_const, coarse: SampleSet, sampler, pix, *,
                      log_pdf_class, offsets_px, sigma_offset_px, mode="map",
                      oversampling=1, adaptive_fraction=0.999, translation_step_px=1.0,
                      n_top=10, accumulate=None, orient_log_prior=None, fine_pass="auto",
                      max_fine_samples=None, scratch=None, translations="auto", pose_mean=False):
    """Score one batch of images, normalise, and (optionally) accumulate M-step sums.

    ``X [B, M]`` images pre-shifted by their current offsets ``offsets_px [B, 2]``;
    ``ctf [B, M]``; ``a_const [B]`` = ``sum |X|^2 / (2 sigma2)``. The coarse pass uses the
    first ``m = coarse.P.shape[1]`` pixels (lower resolution, as RELION's coarse image
    size); with ``oversampling=0`` it must be all ``M``. ``accumulate`` is a callback
    ``(k, orients, D, W)`` receiving per-class sums (``D``, ``W`` divided by sigma2).
    ``orient_log_prior(orients) -> [B or 1, J]`` adds an orientation prior (local searches).
    ``fine_pass``: ``"union"`` (one masked GEMM over the batch's kept union), ``"per_image"``
    (one masked GEMM per image over its own kept translations x orientations) or ``"auto"``
    (the union while it is at most :data:`UNION_UP_TO` times the per-image work). All give the same
    result (the M-step sums to float32 rounding where the union is over :data:`OWN_COLUMNS_ABOVE` times it).
    ``max_fine_samples`` (None: no limit) bounds the memory of the fine pass: a union is scored
    for consecutive groups of images of at most this many fine samples each, and the M-step sums
    are formed for at most this many samples' worth of orientations at a time (a single image
    whose own rectangle is larger is scored alone). ``scratch`` (:class:`~.estep.Scratch`, None: a new
    array) holds the scores of the coarse pass and then of each fine group, reused from batch to batch.
    The fine pass's phase ramps are made (once a batch, from per-axis tables:
    :func:`~.translations.separable_ramps`) only when a group is scored as GEMM rows.
    ``translations``: how the fine pass scores a group's translations: ``"rows"`` (each a GEMM row,
    :func:`~.estep.score`), ``"lattice"`` (a separable DFT over the lattice of the group's fine
    translations, :mod:`.translations`) or ``"auto"`` (the lattice when it takes under
    :data:`.translations.LATTICE_BELOW` of the rows' multiply-adds). ``pose_mean``: each image's pose
    is the posterior mean over its best class's samples (:func:`~.estep.mean_pose`; for local
    searches) in place of the best sample (``best_orient``, ``best_trans``). Returns ``(BatchResult, extras)`` where ``extras`` holds residual power ``[M]`` and
    the weighted offset second moment.
    """
    if fine_pass not in ("auto", "union", "per_image"):
        raise ValueError(f"fine_pass must be 'auto', 'union' or 'per_image', got {fine_pass!r}")
    if translations not in ("auto", "rows", "lattice"):
        raise ValueError(f"translations must be 'auto', 'rows' or 'lattice', got {translations!r}")
    B = X.shape[0]
    mc = coarse.P.shape[1]
    if mc < X.shape[1] and (oversampling == 0 or mode == "maxcc"):
        raise ValueError("a coarse pass at lower resolution needs oversampling > 0")
    cut = (lambda a: None if a is None else a[:, :mc])  # noqa: E731
    host_pix = fourier_pixels(pix.n, pix.max_shell)          # the pixels' frequencies, on the host
    lpo = None if orient_log_prior is None else orient_log_prior(coarse.orients)
    allowed = None if lpo is None or lpo.shape[0] != B or B == 1 else to_numpy(lpo > NEG / 2)
    if allowed is not None and allowed.mean() < SPARSE_BELOW:
        s, Yc = score_subsets(X[:, :mc], cut(ctf), inv_sigma2[:mc], coarse.P, coarse.ramps, allowed, mode=mode)
    else:
        s, Yc = _score(X[:, :mc], cut(ctf), inv_sigma2[:mc], coarse, host_pix, mode, translations, scratch)
    if mode != "maxcc":
        _add_log_prior(s, log_pdf_class, coarse.classes, lpo, offsets_px, coarse.trans, sigma_offset_px)
    elif lpo is not None:       # projection matching: the prior only restricts the search
        s = get_xp(s).where((lpo > NEG / 2)[:, None, :], s, NEG)
    acc = _Accumulator(sampler, accumulate, inv_sigma2, mode, max_fine_samples, scratch)
    if mode == "maxcc" or oversampling == 0:
        return _finish([(np.arange(B), coarse, s, Yc)], X, ctf, a_const, offsets_px,
                       log_pdf_class.shape[0], mode, n_top, acc, adaptive_fraction, pose_mean=pose_mean)
    w, _ = normalise(s, overwrite=True)                                # s holds the weights now
    xp, (T, J) = get_xp(X), w.shape[1:]
    (kb, kc), _ = significant_mask(w, adaptive_fraction, mask="sparse", scratch=scratch)  # kept, where w is
    kept = (kb, kc // J, kc % J)                                       # image, translation, orientation
    del s, Yc, w
    nt_child, no_child = 4 ** oversampling, sampler.n_children(oversampling)
    t_used, j_used = xp.zeros((B, T), dtype=bool), xp.zeros((B, J), dtype=bool)
    t_used[kept[0], kept[1]] = True
    j_used[kept[0], kept[2]] = True
    t_used, j_used = to_numpy(t_used), to_numpy(j_used)                # [B, T], [B, J]
    own = float((t_used.sum(1) * j_used.sum(1)).sum())
    union = float(B * t_used.any(0).sum() * j_used.any(0).sum())
    # one GEMM over the batch's union when the kept sets overlap (early iterations), else per image
    per_image = fine_pass == "per_image" or (fine_pass == "auto" and union > UNION_UP_TO * own)
    own_columns = not per_image and union > OWN_COLUMNS_ABOVE * own
    groups = [np.array([b]) for b in range(B)] if per_image else \
        _union_groups(t_used, j_used, nt_child * no_child, max_fine_samples)
    all_ft = fine_translations(coarse.trans, translation_step_px, oversampling)     # [T, c, 2]
    all_ramps = []             # every coarse translation's children's ramps: made once, when a group needs them

    def ramps_of(ti):          # a group's ramps, gathered
        if not all_ramps:
            all_ramps.append(lattice.separable_ramps(pix.n, all_ft.reshape(-1, 2), host_pix.kx, host_pix.ky, xp)
                             .reshape(T, nt_child, -1))
        return all_ramps[0][xp.asarray(ti)].reshape(len(ti) * nt_child, -1)

    def fine_parts():          # made one group at a time, so one group's arrays are held at once
        for g in groups:
            ti = np.flatnonzero(t_used[g].any(axis=0))
            ji = np.flatnonzero(j_used[g].any(axis=0))
            ft = all_ft[ti].reshape(-1, 2)
            fo, fk = sampler.children(coarse.orients[ji], coarse.classes[ji], oversampling)
            fine = SampleSet(fk, fo, sampler.project(fk, fo), ft, None)      # ramps made if the rows need them
            gi = xp.asarray(g)
            # the parents not kept, per orientation child: [g, ti, 1, fine orientations]
            dropped = xp.repeat(~_kept_block(kept, B, T, J, g, ti, ji, xp), no_child, axis=2)[:, :, None, :]
            sg, yc = _score(X[gi], None if ctf is None else ctf[gi], inv_sigma2, fine, host_pix, mode,
                            translations, scratch, lambda ti=ti: ramps_of(ti))    # the last group's weights: spent
            lpo = None if orient_log_prior is None else orient_log_prior(fine.orients)
            if lpo is not None and lpo.shape[0] > 1:
                lpo = lpo[g]
            _add_log_prior(sg, log_pdf_class, fine.classes, lpo, offsets_px[g], fine.trans, sigma_offset_px, dropped)
            yield g, fine, sg, yc
    return _finish(fine_parts(), X, ctf, a_const, offsets_px, log_pdf_class.shape[0], mode, n_top, acc,
                   adaptive_fraction, scratch, own_columns, pose_mean)


def _score(X, ctf, inv_sigma2, ss: SampleSet, host_pix, mode: str, translations: str, scratch, ramps_of=None):
    """``(scores [B, T, J], terms)`` of images ``X [B, M]`` against the sample set ``ss`` (into
    ``scratch``): its translations as GEMM rows (terms: ``Yc`` of :func:`~.estep.image_terms`) or on
    their lattice (terms: the :class:`~.translations.TranslationLattice`), as ``translations`` says
    (``"auto"``: :func:`~.translations.lattice_pays`); ``host_pix``: the pixels, on the host."""
    xp, M = get_xp(X), X.shape[1]
    if translations != "rows" and mode != "maxcc":
        lat = lattice.translation_lattice(host_pix.n, ss.trans, host_pix.kx[:M], host_pix.ky[:M], xp)
        if translations == "lattice" or lattice.lattice_pays(lat, M):
            out = None if scratch is None else scratch.take((X.shape[0], lat.size, ss.P.shape[0]), xp)
            return lattice.score(X, ctf, inv_sigma2, ss.P, lat, out=out, scratch=scratch), lat
    if ss.ramps is None:                 # a fine group's ramps (``ramps_of()``), only on this path
        ss.ramps = ramps_of()
    return score(X, ctf, inv_sigma2, ss.P, ss.ramps, mode=mode, return_terms=True, scratch=scratch)


def _kept_block(kept, B: int, T: int, J: int, g, ti, ji, xp):
    """``[len(g), len(ti), len(ji)]`` bool: which samples of images ``g`` x translations ``ti`` x
    orientations ``ji`` (host index arrays) are among the ``kept`` ones ``(images, translations,
    orientations)`` (device index arrays; those of ``g``'s images lie inside ``ti`` x ``ji``)."""
    def position(index, size):               # made where the samples are: only ``index`` moves
        pos = xp.full(size, -1, dtype=xp.int64)
        pos[xp.asarray(index)] = xp.arange(len(index))
        return pos
    pb = position(g, B)[kept[0]]
    mine = xp.nonzero(pb >= 0)[0]
    out = xp.zeros((len(g), len(ti), len(ji)), dtype=bool)
    out[pb[mine], position(ti, T)[kept[1][mine]], position(ji, J)[kept[2][mine]]] = True
    return out


def _union_groups(t_used, j_used, children: int, max_samples):
    """Consecutive groups of images whose union of kept translations x orientations holds at most
    ``max_samples`` fine samples (``children`` per coarse one) times the group's size; one group
    when there is no limit."""
    B = t_used.shape[0]
    if max_samples is None:
        return [np.arange(B)]
    groups, start = [], 0
    tu, ju = t_used[0].copy(), j_used[0].copy()
    for b in range(1, B + 1):
        if b < B:
            t2, j2 = tu | t_used[b], ju | j_used[b]
            if (b + 1 - start) * int(t2.sum()) * int(j2.sum()) * children <= max_samples:
                tu, ju = t2, j2
                continue
        groups.append(np.arange(start, b))
        if b < B:
            start, tu, ju = b, t_used[b].copy(), j_used[b].copy()
    return groups


class _Accumulator:
    """Adds M-step sums of many small sample sets per orientation key; flushes once a batch.

    Rows are added in place into a table with one row per orientation key seen so far (the
    rows of one sample set have distinct keys), so no sorting is needed to merge them.
    """

    def __init__(self, sampler, callback, inv_sigma2, mode, max_samples=None, scratch=None):
        self.sampler, self.callback, self.mode = sampler, callback, mode
        self.scratch = scratch            # work arrays of the lattice's sums (not the scores' slot)
        self.max_samples = max_samples
        self.inv_sigma2 = inv_sigma2
        self.row_of: dict = {}            # orientation key -> row of the table
        self.classes, self.orients = [], []
        self.D = self.W = None
        self.resid = 0.0

    def _rows(self, classes, orients):
        """Table rows of these (class, orientation) pairs; new keys get new rows."""
        row_of, n0 = self.row_of, len(self.row_of)
        rows = np.fromiter((row_of.setdefault(k, len(row_of)) for k in self.sampler.keys(classes, orients).tolist()),
                           dtype=np.int64, count=len(classes))
        new = rows >= n0
        if new.any():
            self.classes.append(classes[new])
            self.orients.append(orients[new])
        return rows

    def _grow(self, n: int, M: int, xp):
        if self.D is None or self.D.shape[0] < n:
            cap = max(n, 2 * (0 if self.D is None else self.D.shape[0]), 64)
            D, W = xp.zeros((cap, M), xp.complex64), xp.zeros((cap, M), xp.float32)
            if self.D is not None:
                D[:self.D.shape[0]], W[:self.W.shape[0]] = self.D, self.W
            self.D, self.W = D, W

    def add(self, w, X, ctf, ss: SampleSet, yc, wj=None):
        if self.callback is None:
            return
        xp = get_xp(X)
        wpix = xp.ones_like(self.inv_sigma2) if self.mode == "maxcc" else self.inv_sigma2
        J = w.shape[2]
        # orientations a chunk at a time: its sums [J', M] are as large as this many samples' weights
        step = J if self.max_samples is None else int(max(1, min(J, self.max_samples // max(X.shape[1], 1))))
        for lo in range(0, J, step):
            c = slice(lo, min(J, lo + step))
            wc = w if step == J else w[:, :, c]
            if isinstance(yc, lattice.TranslationLattice):
                D, W, _ = lattice.weighted_sums(wc, X, ctf, yc, min_weight=1e-6, scratch=self.scratch,
                                                per_image=None if wj is None else wj[:, c])
            else:
                D, W, _ = weighted_sums(wc, X, ctf, ss.ramps, min_weight=1e-6, Yc=yc, weight=wpix)
            if self.mode != "maxcc":
                # sum |X|^2 counts once a sample set (the images' own term), not once a chunk
                self.resid = self.resid + residual_power(X if lo == 0 else X[:0], D, W, ss.P[c])
            used = np.flatnonzero(to_numpy(W.sum(axis=1) > 0)) + lo       # orientations with weight
            if used.size:
                rows = self._rows(ss.classes[used], ss.orients[used])
                self._grow(len(self.row_of), D.shape[1], xp)
                r, u = xp.asarray(rows), xp.asarray(used - lo)
                self.D[r] += D[u]
                self.W[r] += W[u]
            if self.max_samples is not None and self.D is not None and self.D.size > self.max_samples // 2:
                self.flush()                   # the table (12 bytes an entry) within the fine pass's share

    def flush(self):
        if self.callback is None or not self.row_of:
            return
        n = len(self.row_of)
        classes, orients = np.concatenate(self.classes), np.concatenate(self.orients)
        xp = get_xp(self.D)
        for k in np.unique(classes):
            sel = np.flatnonzero(classes == k)
            self.callback(int(k), orients[sel], self.D[:n][xp.asarray(sel)] * self.inv_sigma2,
                          self.W[:n][xp.asarray(sel)] * self.inv_sigma2)
        self.row_of, self.classes, self.orients, self.D, self.W = {}, [], [], None, None


def _one_hot_sums(best, nb: int, T: int, J: int, xp):
    """For float32 weights ``[nb, T, J]`` that are 1 at each image's flat index ``best [nb]`` and 0
    elsewhere: their :func:`~.estep.block_maxima` ``[nb, T*J // BLOCK]`` and their sums over
    translations ``[nb, J]`` and over orientations ``[nb, T]``, made without reading them."""
    rows = xp.arange(nb)
    bmax = xp.zeros((nb, T * J // BLOCK), xp.float32)
    inside = xp.nonzero(best < bmax.shape[1] * BLOCK)[0]           # the tail is not in a block
    bmax[rows[inside], best[inside] // BLOCK] = 1.0
    wj, wt = xp.zeros((nb, J), xp.float32), xp.zeros((nb, T), xp.float32)
    wj[rows, best % J] = 1.0
    wt[rows, best // J] = 1.0
    return bmax, wj, wt


def _own_columns(w, wj, min_weight: float):
    """Weights ``w [b, T, J]`` (changed in place) and their sums over translations ``wj [b, J]`` with
    each image's orientations whose weights are all ``<= min_weight`` set to 0: the M-step columns a
    per-image pass keeps (it leaves such a column out for its one image)."""
    xp = get_xp(w)
    low = w.max(axis=1) <= min_weight                                      # [b, J]
    xp.copyto(w, xp.float32(0), where=low[:, None, :])
    return w, xp.where(low, xp.float32(0), wj)


def _finish(parts, X, ctf, a_const, offsets_px, K, mode, n_top, acc, adaptive_fraction, scratch=None,
            own_columns: bool = False, pose_mean: bool = False):
    """Normalise each part's log weights; per-image results (``pose_mean``: posterior-mean poses);
    M-step sums into ``acc`` (with ``own_columns``, each image's own columns: :func:`_own_columns`)."""
    xp = get_xp(X)
    B = X.shape[0]
    out = dict(best_class=np.zeros(B, int), best_orient=[None] * B, best_trans=np.zeros((B, 2)),
               pmax=np.zeros(B), n_significant=np.zeros(B, int), loglik=np.zeros(B),
               class_posterior=np.zeros((B, K)), angle_sd_deg=np.full(B, np.nan))
    tops = [None] * B
    off2 = 0.0
    for g, ss, lw, yc in parts:
        nb = len(g)
        T, J = lw.shape[1], lw.shape[2]
        if mode == "maxcc":              # all the weight on the best sample (lw overwritten)
            flat = lw.reshape(nb, -1)
            best_d = flat.argmax(axis=1)
            lse = flat[xp.arange(nb), best_d]
            flat.fill(0)
            flat[xp.arange(nb), best_d] = 1.0
            w = lw
            # the one-hot weights' block maxima and sums, exactly as a pass over them would give
            bmax, wj, wt = _one_hot_sums(best_d, nb, T, J, xp)
            best = to_numpy(best_d)
        else:
            w, lse = normalise(lw, overwrite=True)
            flat = w.reshape(nb, -1)
            bmax = block_maxima(flat) if flat.shape[1] >= 16 * BLOCK else None
            wj, wt = w.sum(axis=1), w.sum(axis=2)                                # [nb, J], [nb, T]
            best = to_numpy(flat.argmax(axis=1))
        # per-image results only come to the host (the weights stay where they are)
        nsig = significant_mask(w, adaptive_fraction, mask=False, block_max=bmax, scratch=scratch)[1]
        bt, bj = np.unravel_index(best, (T, J))
        out["best_class"][g] = ss.classes[bj]
        for i, b in enumerate(g):
            out["best_orient"][b] = ss.orients[bj[i]]
        out["best_trans"][g] = ss.trans[bt]
        if pose_mean:
            angles, out["best_trans"][g], out["angle_sd_deg"][g] = mean_pose(w, wj, wt, ss.classes, ss.orients,
                                                                             ss.trans, ss.classes[bj])
            for i, b in enumerate(g):
                out["best_orient"][b] = np.concatenate([angles[i], np.asarray(ss.orients[bj[i]])[3:]])
        out["pmax"][g] = to_numpy(flat[xp.arange(nb), xp.asarray(best)])
        out["n_significant"][g] = to_numpy(nsig)
        out["loglik"][g] = to_numpy(lse) - to_numpy(a_const[xp.asarray(g)])
        out["class_posterior"][g] = to_numpy(xp.stack([wj[:, xp.asarray(ss.classes == k)].sum(axis=1)
                                                       for k in range(K)], axis=1))
        top = top_columns(flat, n_top, block_max=bmax)
        top_w = to_numpy(xp.take_along_axis(flat, top, 1))
        top = to_numpy(top)
        for i, b in enumerate(g):
            tt, jj = np.unravel_index(top[i], (T, J))
            tops[b] = (ss.classes[jj], ss.orients[jj], ss.trans[tt] + offsets_px[b], top_w[i])
        tot = offsets_px[g][:, None, :] + ss.trans[None, :, :]
        off2 += float((wt * xp.asarray((tot ** 2).sum(-1))).sum())
        gi = xp.asarray(g)
        if own_columns:                      # the weights' last use: changed in place
            w, wj = _own_columns(w, wj, OWN_MIN_WEIGHT)
        acc.add(w, X[gi], None if ctf is None else ctf[gi], ss, yc, wj)
    acc.flush()
    out["best_orient"] = np.asarray(out["best_orient"])
    return BatchResult(**out, top_samples=tops), {"residual": acc.resid, "offset_moment": off2}
