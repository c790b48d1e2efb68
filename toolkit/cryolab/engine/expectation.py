"""One batch of the E-step with adaptive oversampling, and its M-step sums.

A *sample* is (class ``k``, orientation ``o``, translation ``t``). Orientations are
given by an :class:`OrientationSampler` (in-plane angles for 2D, Euler triples
for 3D) that also projects references and back-projects sums, so this module
is the same for 2D and 3D.

Adaptive oversampling (RELION): score every coarse sample, keep per image the
smallest set holding ``adaptive_fraction`` of the weight, replace each kept
sample by its ``2**o`` finer orientations x ``4**o`` finer translations, score
those, and normalise over them. Per group of images, the fine pass is one GEMM
over the union of the group's kept orientations and translations, with the
samples an image did not keep masked out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import get_xp
from .estep import normalise, score, significant_mask
from .mstep import residual_power, weighted_sums
from .sampling import fine_translations, shift_ramps

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
    top_samples: list = field(default_factory=list)  # per image: (class, orient, trans, prob) arrays


def _log_priors(log_pdf_class, classes, log_prior_orient, log_prior_trans):
    """``[B or 1, T, J]`` log prior from class, orientation ``[B or 1, J]`` and translation ``[B, T]`` terms."""
    lp = log_pdf_class[classes][None, None, :]
    if log_prior_orient is not None:
        lp = lp + log_prior_orient[:, None, :]
    return lp + log_prior_trans[:, :, None]


def expectation_batch(X, ctf, inv_sigma2, a_const, coarse: SampleSet, sampler, pix, *,
                      log_pdf_class, offsets_px, sigma_offset_px, mode="map",
                      oversampling=1, adaptive_fraction=0.999, translation_step_px=1.0,
                      n_top=10, group_budget=3e7, accumulate=None, orient_log_prior=None):
    """Score one batch of images, normalise, and (optionally) accumulate M-step sums.

    ``X [B, M]`` images pre-shifted by their current offsets ``offsets_px [B, 2]``;
    ``ctf [B, M]``; ``a_const [B]`` = ``sum |X|^2 / (2 sigma2)``. The coarse pass uses the
    first ``m = coarse.P.shape[1]`` pixels (lower resolution, as RELION's coarse image
    size); with ``oversampling=0`` it must be all ``M``. ``accumulate`` is a callback
    ``(k, orients, D, W)`` receiving per-class sums (``D``, ``W`` divided by sigma2).
    ``orient_log_prior(orients) -> [B or 1, J]`` adds an orientation prior (local searches).
    Returns ``(BatchResult, extras)`` where ``extras`` holds residual power ``[M]`` and
    the weighted offset second moment.
    """
    xp = get_xp(X)
    B = X.shape[0]
    K = log_pdf_class.shape[0]
    trans_all = lambda tr: offsets_px[:, None, :] + tr[None, :, :]  # noqa: E731
    lpt = lambda tr: -(trans_all(tr) ** 2).sum(-1) / (2 * sigma_offset_px ** 2)  # noqa: E731

    mc = coarse.P.shape[1]
    if mc < X.shape[1] and (oversampling == 0 or mode == "maxcc"):
        raise ValueError("a coarse pass at lower resolution needs oversampling > 0")
    s, Yc = score(X[:, :mc], None if ctf is None else ctf[:, :mc], inv_sigma2[:mc], coarse.P,
                  coarse.ramps, mode=mode, return_terms=True)
    lpo = None if orient_log_prior is None else orient_log_prior(coarse.orients)
    if mode == "maxcc":
        logw = s
    else:
        logw = s + _log_priors(log_pdf_class, coarse.classes, lpo,
                               xp.asarray(lpt(coarse.trans), dtype=xp.float32))
    if mode == "maxcc" or oversampling == 0:
        return _finish(logw, X, ctf, inv_sigma2, a_const, coarse, [np.arange(B)], [coarse], [Yc],
                       offsets_px, K, mode, n_top, accumulate, adaptive_fraction)

    w, _ = normalise(logw)
    sig, _ = significant_mask(w, adaptive_fraction)                  # [B, T, J]
    sig_np = np.asarray(sig.get() if hasattr(sig, "get") else sig)
    groups, sets, masks = [], [], []
    t_used = sig_np.any(axis=2)                                     # [B, T]
    j_used = sig_np.any(axis=1)                                     # [B, J]
    nt_child, no_child = 4 ** oversampling, sampler.n_children(oversampling)
    start = 0
    while start < B:                      # greedy groups with a bounded union size
        stop = start + 1
        while stop < B:
            nt = t_used[start:stop + 1].any(0).sum() * nt_child
            nj = j_used[start:stop + 1].any(0).sum() * no_child
            if (stop + 1 - start) * nt * nj > group_budget:
                break
            stop += 1
        groups.append(np.arange(start, stop))
        start = stop
    for g in groups:
        ti = np.flatnonzero(t_used[g].any(0))
        ji = np.flatnonzero(j_used[g].any(0))
        ft = fine_translations(coarse.trans[ti], translation_step_px, oversampling).reshape(-1, 2)
        fo, fk = sampler.children(coarse.orients[ji], coarse.classes[ji], oversampling)
        P = sampler.project(fk, fo)
        fine = SampleSet(fk, fo, P, ft, shift_ramps(pix.kx, pix.ky, pix.n, ft, xp))
        allowed = sig_np[g][:, ti][:, :, ji]                           # [b, t, j] coarse parents
        allowed = np.repeat(np.repeat(allowed, nt_child, axis=1), no_child, axis=2)
        sets.append(fine)
        masks.append(xp.asarray(allowed))
    del Yc
    logws, terms = [], []
    for g, fine, allowed in zip(groups, sets, masks):
        sg, yc = score(X[g], None if ctf is None else ctf[g], inv_sigma2, fine.P, fine.ramps, mode=mode,
                       return_terms=True)
        terms.append(yc)
        lpo = None if orient_log_prior is None else orient_log_prior(fine.orients)
        if lpo is not None and lpo.shape[0] > 1:
            lpo = lpo[g]
        tr = xp.asarray(-((offsets_px[g][:, None, :] + fine.trans[None]) ** 2).sum(-1)
                        / (2 * sigma_offset_px ** 2), dtype=xp.float32)
        lw = sg + _log_priors(log_pdf_class, fine.classes, lpo, tr)
        logws.append(xp.where(allowed, lw, NEG))
    return _finish(logws, X, ctf, inv_sigma2, a_const, None, groups, sets, terms,
                   offsets_px, K, mode, n_top, accumulate, adaptive_fraction)


def _finish(logws, X, ctf, inv_sigma2, a_const, coarse, groups, sets, terms, offsets_px, K, mode,
            n_top, accumulate, adaptive_fraction):
    xp = get_xp(X)
    if not isinstance(logws, list):
        logws = [logws]
    B = X.shape[0]
    out = dict(best_class=np.zeros(B, int), best_orient=[None] * B, best_trans=np.zeros((B, 2)),
               pmax=np.zeros(B), n_significant=np.zeros(B, int), loglik=np.zeros(B),
               class_posterior=np.zeros((B, K)))
    tops = [None] * B
    resid = 0.0
    off2 = 0.0
    for g, ss, lw, yc in zip(groups, sets, logws, terms):
        if mode == "maxcc":
            flat = lw.reshape(len(g), -1)
            best = flat.argmax(axis=1)
            w = xp.zeros_like(flat)
            w[xp.arange(len(g)), best] = 1.0
            w = w.reshape(lw.shape)
            lse = flat.max(axis=1)
        else:
            w, lse = normalise(lw)
        _, nsig = significant_mask(w, adaptive_fraction)
        T, J = w.shape[1], w.shape[2]
        flat_np = np.asarray(w.reshape(len(g), -1).get() if hasattr(w, "get") else w.reshape(len(g), -1))
        best = flat_np.argmax(axis=1)
        bt, bj = np.unravel_index(best, (T, J))
        out["best_class"][g] = ss.classes[bj]
        for i, b in enumerate(g):
            out["best_orient"][b] = ss.orients[bj[i]]
        out["best_trans"][g] = ss.trans[bt]
        out["pmax"][g] = flat_np[np.arange(len(g)), best]
        out["n_significant"][g] = np.asarray(nsig.get() if hasattr(nsig, "get") else nsig)
        a = np.asarray(a_const[g].get() if hasattr(a_const, "get") else a_const[g])
        out["loglik"][g] = np.asarray(lse.get() if hasattr(lse, "get") else lse) - a
        wj = flat_np.reshape(len(g), T, J).sum(axis=1)
        for k in range(K):
            out["class_posterior"][g, k] = wj[:, ss.classes == k].sum(axis=1)
        top = np.argsort(-flat_np, axis=1)[:, :n_top]
        for i, b in enumerate(g):
            tt, jj = np.unravel_index(top[i], (T, J))
            tops[b] = (ss.classes[jj], ss.orients[jj], ss.trans[tt] + offsets_px[b], flat_np[i, top[i]])
        wt = w.sum(axis=2)                                   # [b, T]
        tot = offsets_px[g][:, None, :] + ss.trans[None, :, :]
        off2 += float((np.asarray(wt.get() if hasattr(wt, "get") else wt) * (tot ** 2).sum(-1)).sum())
        if accumulate is not None:
            wpix = xp.ones_like(inv_sigma2) if mode == "maxcc" else inv_sigma2
            D, W, _ = weighted_sums(w, X[g], None if ctf is None else ctf[g], ss.ramps, min_weight=1e-6,
                                    Yc=yc, weight=wpix)
            resid = resid + residual_power(X[g], D, W, ss.P) if mode != "maxcc" else resid
            for k in np.unique(ss.classes):
                sel = np.flatnonzero(ss.classes == k)
                accumulate(int(k), ss.orients[sel], D[sel] * inv_sigma2, W[sel] * inv_sigma2)
    out["best_orient"] = np.asarray(out["best_orient"])
    res = BatchResult(**out, top_samples=tops)
    return res, {"residual": resid, "offset_moment": off2}
