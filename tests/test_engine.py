"""E-step / M-step kernels against brute-force loops over every sample."""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.engine.estep import fourier_pixels, gather, normalise, scatter, score, significant_mask
from cryolab.engine.mstep import residual_power, shell_sums, weighted_sums
from cryolab.engine.sampling import fine_psi, fine_translations, translation_grid
from cryolab.projection import shift_ramps
from cryolab.fourier import irfft2c, rfft2c


def _problem(seed=0, B=3, T=4, J=5, n=16, max_shell=6):
    rng = np.random.default_rng(seed)
    pix = fourier_pixels(n, max_shell)
    M = pix.size
    X = (rng.normal(size=(B, M)) + 1j * rng.normal(size=(B, M))).astype(np.complex64)
    C = rng.uniform(-1, 1, size=(B, M)).astype(np.float32)
    s2 = rng.uniform(0.5, 2.0, size=M).astype(np.float32)
    P = (rng.normal(size=(J, M)) + 1j * rng.normal(size=(J, M))).astype(np.complex64)
    shifts = rng.uniform(-2, 2, size=(T, 2))
    ramps = shift_ramps(n, shifts, kx=pix.kx, ky=pix.ky)
    return pix, X, C, s2, P, ramps


def test_score_equals_brute_force_diff2():
    pix, X, C, s2, P, ramps = _problem()
    got = score(X, C, 1 / s2, P, ramps, mode="map")
    B, T, J = got.shape
    for b in range(B):
        a = np.sum(np.abs(X[b].astype(complex)) ** 2 / (2 * s2))
        for t in range(T):
            for j in range(J):
                diff2 = np.sum(np.abs(X[b] * ramps[t] - C[b] * P[j]) ** 2 / (2 * s2.astype(float)))
                assert got[b, t, j] == pytest.approx(a - diff2, rel=1e-4, abs=1e-2)


def test_maxcc_is_normalised_cross_correlation():
    pix, X, C, s2, P, ramps = _problem(1)
    got = score(X, C, 1 / s2, P, ramps, mode="maxcc")
    b, t, j = 1, 2, 3
    xt, cp = X[b] * ramps[t], C[b] * P[j]
    ref = np.real(np.vdot(xt, cp)) / (np.linalg.norm(xt) * np.linalg.norm(cp))
    assert got[b, t, j] == pytest.approx(ref, rel=1e-4)
    assert np.all(np.abs(got) <= 1 + 1e-5)


def test_normalise_and_significant():
    rng = np.random.default_rng(2)
    logw = rng.normal(scale=5, size=(4, 7, 9)).astype(np.float32)
    w, lse = normalise(logw)
    assert np.allclose(w.sum(axis=(1, 2)), 1, atol=1e-5)
    ref_lse = np.log(np.exp(logw.astype(float)).reshape(4, -1).sum(1))
    assert np.allclose(lse, ref_lse, rtol=1e-6)
    peaked, _ = normalise(logw * 20)                      # one sample holds nearly everything
    for weights, frac in ((w, 0.9), (w, 0.999), (peaked, 0.999)):
        mask, count = significant_mask(weights, frac)
        one_by_one = significant_mask(weights, frac, chunk=1)          # one image per chunk
        assert np.array_equal(mask, one_by_one[0]) and np.array_equal(count, one_by_one[1])
        for b in range(4):
            kept = np.sort(weights[b][mask[b]])[::-1]
            assert kept.sum() >= frac - 1e-6
            assert kept[:-1].sum() < frac            # minimal: without the smallest kept it falls short
            assert count[b] == kept.size
            assert kept.min() >= weights[b][~mask[b]].max(initial=0)
    mask, count = significant_mask(np.zeros((2, 5), np.float32))       # no candidate: the best sample only
    assert mask.sum() == 2 and np.array_equal(count, [1, 1])
    mask, count = significant_mask(np.array([[0.5, 0.25, 0.25, 0.0]], np.float32), 0.6)
    assert count[0] == 2 and mask[0].tolist() == [True, True, True, False]   # ties at the lightest: all kept


def test_weighted_sums_and_residual_brute_force():
    pix, X, C, s2, P, ramps = _problem(3)
    rng = np.random.default_rng(4)
    w = rng.uniform(size=(3, 4, 5)).astype(np.float32)
    w /= w.sum(axis=(1, 2), keepdims=True)
    D, W, wsum = weighted_sums(w, X, C, ramps)
    D_ref = np.einsum("btj,btm->jm", w, (X[:, None] * ramps[None]) * C[:, None])
    W_ref = np.einsum("btj,bm->jm", w, C ** 2)
    assert np.allclose(D, D_ref, atol=1e-4)
    assert np.allclose(W, W_ref, atol=1e-4)
    assert np.allclose(wsum, w.sum(axis=(0, 1)))
    resid = residual_power(X, D, W, P)
    ref = np.einsum("btj,btjm->m", w, np.abs((X[:, None, None] * ramps[None, :, None])
                                             - C[:, None, None] * P[None, None]) ** 2)
    assert np.allclose(resid, ref, rtol=1e-3)
    sums = shell_sums(resid, pix.shell, 8)
    assert np.allclose(sums, [resid[pix.shell == s].sum() for s in range(8)])


def test_shift_ramp_moves_content_by_plus_t():
    n = 16
    rng = np.random.default_rng(5)
    img = rng.normal(size=(n, n))
    pix = fourier_pixels(n, n)  # every pixel of the half grid
    ramp = shift_ramps(n, [[3, -2]], kx=pix.kx, ky=pix.ky)[0]
    moved = irfft2c(scatter(gather(rfft2c(img), pix) * ramp, pix), n)
    assert np.allclose(moved, np.roll(img, (-2, 3), axis=(0, 1)), atol=1e-5)


def test_sampling_grids():
    t = translation_grid(5, 1)
    assert t.shape == (81, 2) and np.all((t ** 2).sum(1) <= 25) and np.all(t[0] == 0)
    assert len({tuple(r) for r in t}) == 81
    f = fine_psi(np.array([0.0, 10.0]), 10.0, 1)
    assert np.allclose(f, [[357.5, 2.5], [7.5, 12.5]])
    ft = fine_translations(np.array([[0.0, 0.0]]), 1.0, 1)
    assert np.allclose(ft.mean(axis=1), 0) and ft.shape == (1, 4, 2)
    assert np.allclose(np.abs(ft), 0.25)


def _brute_significant_count(w, fraction):
    """Per image: the number of heaviest samples needed before their sum reaches ``fraction``."""
    out = []
    for row in w.reshape(w.shape[0], -1).astype(np.float64):
        s = np.sort(row)[::-1]
        out.append(max(int(((np.cumsum(s) - s) < fraction).sum()), 1))
    return np.array(out)


@pytest.mark.parametrize("power", [2, 200])
def test_significant_mask_with_few_candidates_equals_full_sort(power):
    """Peaked weights (few candidates: only they are gathered and sorted) and broad ones (a full
    sort) give the brute-force count and a mask of every sample at least as heavy as the lightest
    one counted."""
    rng = np.random.default_rng(power)
    w = rng.random((5, 40, 60)) ** power
    w[1] = 0.0
    w[1, 3, 7] = 1.0                                  # one sample holds everything
    w /= w.reshape(5, -1).sum(1)[:, None, None]
    mask, count = significant_mask(w.astype(np.float32), 0.999)
    np.testing.assert_array_equal(count, _brute_significant_count(w.astype(np.float32), 0.999))
    flat = w.astype(np.float32).reshape(5, -1)
    for b in range(5):
        lightest = np.sort(flat[b])[::-1][count[b] - 1]
        np.testing.assert_array_equal(mask[b].ravel(), flat[b] >= lightest)


@pytest.mark.parametrize("power", [1, 30])
def test_significant_count_of_long_rows_in_slices_equals_one_pass(power):
    """Rows of 40,000 samples whose significant sets span several of the count's column slices
    (4,096, 8,192, ...; broad weights) or lie in the first (peaked ones): the brute-force count
    (one cumulative sum over the sorted row), with and without a reused sort buffer."""
    from cryolab.engine.estep import Scratch
    rng = np.random.default_rng(power)
    w = (rng.random((6, 200, 200)) ** power).astype(np.float32)
    w /= w.reshape(6, -1).sum(1, dtype=np.float64)[:, None, None].astype(np.float32)
    expected = _brute_significant_count(w, 0.999)
    assert expected.max() > (12_288 if power == 1 else 0)
    for scratch in (None, Scratch()):
        np.testing.assert_array_equal(significant_mask(w, 0.999, mask=False, scratch=scratch)[1], expected)


def test_significant_count_by_buckets_equals_the_sorted_count():
    """The count alone (``mask=False``: candidates summed per bucket of leading bits, only the boundary
    buckets sorted) against the brute-force sorted count: broad, peaked, tied (one bucket) and
    two-level rows, and rows whose boundary entry sits right at ``fraction``."""
    from cryolab.engine.estep import _count_by_buckets
    rng = np.random.default_rng(5)
    rows = [rng.random(30_000) ** p for p in (1, 8, 300)]
    rows += [np.ones(30_000), np.r_[np.full(100, 1.0), np.full(29_900, 1e-3)]]
    rows += [np.r_[np.full(999, 1.0), np.full(1, 1.0), np.zeros(29_000)]]      # 0.999 reached exactly at 999
    w = np.stack(rows)
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    want = _brute_significant_count(w, 0.999)
    np.testing.assert_array_equal(significant_mask(w, 0.999, mask=False)[1], want)
    count, lightest = _count_by_buckets(w, 0.001 / w.shape[1], 0.999)
    np.testing.assert_array_equal(count, want)
    np.testing.assert_array_equal(lightest, [np.sort(r)[::-1][c - 1] for r, c in zip(w, want)])
    np.testing.assert_array_equal(significant_mask(w, 0.9, mask=False)[1], _brute_significant_count(w, 0.9))


def test_top_samples_of_long_rows_equal_a_full_sort():
    """``_top`` on rows long enough for its block pre-selection: the same values as a full sort."""
    from cryolab.engine.estep import top_columns as _top
    rng = np.random.default_rng(3)
    flat = rng.random((4, 300_000)).astype(np.float32) ** 20
    flat[2] = 0.0
    flat[2, [5, 299_999, 123_456]] = [0.3, 0.5, 0.2]  # in the tail after the last whole block, too
    top = _top(flat, 10)
    expect = -np.sort(-flat, axis=1)[:, :10]
    np.testing.assert_array_equal(np.take_along_axis(flat, top, 1), expect)
    assert top[2, 0] == 299_999 and top[2, 1] == 5


def test_normalise_in_place_equals_the_plain_formula_to_the_bit():
    """``normalise(..., overwrite=True)`` (a row at a time, into the log weights) gives the weights
    and log-sums of the plain formula (a new array) exactly, and returns the input's buffer."""
    rng = np.random.default_rng(7)
    logw = rng.normal(scale=30, size=(5, 80, 9_000)).astype(np.float32)    # rows of 720,000 samples
    w, lse = normalise(logw)
    w2, lse2 = normalise(logw, overwrite=True)
    assert w2 is logw
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(lse2, lse)


def test_significant_mask_from_candidate_blocks_equals_brute_force():
    """Peaked weights on long rows (the candidates lie in a few blocks of 128: only those are read):
    the brute-force count, a mask of every sample at least as heavy as the lightest counted, and
    the same count without the mask or with the block maxima given."""
    from cryolab.engine.estep import BLOCK, _candidate_columns, block_maxima
    rng = np.random.default_rng(11)
    w = rng.random((4, 50, 701)) ** 50_000          # ~10 candidates a row, in 35,050 samples
    w[1] = 0.0
    w[1, 49, 700] = 1.0                              # all the weight in the tail after the last block
    w[2] = 0.0                                       # no candidate: the best sample only
    w /= np.maximum(w.reshape(4, -1).sum(1), 1e-300)[:, None, None]
    w = w.astype(np.float32)
    flat = w.reshape(4, -1)
    thr = 0.001 / flat.shape[1]
    assert _candidate_columns(flat, block_maxima(flat), thr) is not None     # the block path is taken
    mask, count = significant_mask(w, 0.999)
    want = _brute_significant_count(w, 0.999)
    want[2] = 1
    np.testing.assert_array_equal(count, want)
    for b in range(4):
        lightest = np.sort(flat[b])[::-1][count[b] - 1] if b != 2 else np.inf
        expect = flat[b] >= lightest
        expect[np.argmax(flat[b])] = True
        np.testing.assert_array_equal(mask[b].ravel(), expect)
    assert significant_mask(w, 0.999, mask=False)[0] is None
    np.testing.assert_array_equal(significant_mask(w, 0.999, mask=False)[1], count)
    np.testing.assert_array_equal(significant_mask(w, 0.999, block_max=block_maxima(flat, BLOCK))[0], mask)


@pytest.mark.parametrize("lpo_rows", [None, 1, 3])
def test_log_prior_added_in_place_equals_the_full_array_to_the_bit(lpo_rows):
    """``_add_log_prior`` (a few translations at a time, in place) equals ``s + _log_prior(...)``."""
    from cryolab.engine.expectation import _add_log_prior, _log_prior
    rng = np.random.default_rng(5)
    B, T, J, K = 3, 81, 9_000, 4
    s = rng.normal(scale=100, size=(B, T, J)).astype(np.float32)
    log_pdf = np.log(rng.dirichlet(np.ones(K))).astype(np.float32)
    classes = rng.integers(0, K, J)
    lpo = None if lpo_rows is None else rng.normal(size=(lpo_rows, J)).astype(np.float32)
    offsets = rng.normal(size=(B, 2))
    trans = translation_grid(5, 1)
    want = s + _log_prior(log_pdf, classes, lpo, offsets, trans, 2.5)
    s0 = s.copy()
    got = _add_log_prior(s, log_pdf, classes, lpo, offsets, trans, 2.5)
    assert got is s
    np.testing.assert_array_equal(got, want)
    # with dropped parents (T = 81 = 27 parents x 3 children here): NEG at their children, in the same pass
    from cryolab.engine.expectation import NEG
    dropped = rng.random((B, 27, 1, J)) < 0.3
    got = _add_log_prior(s0, log_pdf, classes, lpo, offsets, trans, 2.5, dropped)
    np.testing.assert_array_equal(got, np.where(np.repeat(dropped, 3, axis=1)[:, :, 0], NEG, want))


def test_scores_into_a_reused_buffer_equal_a_new_array():
    """``score(..., scratch=Scratch())``: the same scores to the bit, written into one buffer that
    later (smaller) batches reuse and a larger one replaces."""
    from cryolab.engine.estep import Scratch
    pix, X, C, s2, P, ramps = _problem(6, B=3, T=4, J=5)
    scratch = Scratch()
    for mode in ("map", "maxcc"):
        got = score(X, C, 1 / s2, P, ramps, mode=mode, scratch=scratch)
        np.testing.assert_array_equal(got, score(X, C, 1 / s2, P, ramps, mode=mode))
    small = score(X[:2], C[:2], 1 / s2, P, ramps, scratch=scratch)
    assert np.shares_memory(small, got)
    np.testing.assert_array_equal(small, score(X[:2], C[:2], 1 / s2, P, ramps))
    big = score(np.concatenate([X, X]), np.concatenate([C, C]), 1 / s2, P, ramps, scratch=scratch)
    assert big.shape == (6, 4, 5) and not np.shares_memory(big, got)


@pytest.mark.parametrize("power", [2, 50_000])
def test_sparse_significant_samples_and_kept_blocks_equal_the_dense_mask(power):
    """``significant_mask(..., mask="sparse")`` lists exactly the dense mask's true entries (broad
    weights: a full sort; peaked: candidate blocks; an image without candidates: its best sample),
    and ``_kept_block`` cut from them equals the dense mask indexed by images x translations x
    orientations."""
    from cryolab.engine.expectation import _kept_block
    rng = np.random.default_rng(power)
    B, T, J = 4, 50, 701
    w = rng.random((B, T, J)) ** power
    w[2] = 0.0
    w /= np.maximum(w.reshape(B, -1).sum(1), 1e-300)[:, None, None]
    w = w.astype(np.float32)
    dense, count = significant_mask(w, 0.999)
    (rows, cols), count2 = significant_mask(w, 0.999, mask="sparse")
    np.testing.assert_array_equal(count2, count)
    got = np.zeros_like(dense).reshape(B, -1)
    got[rows, cols] = True
    np.testing.assert_array_equal(got, dense.reshape(B, -1))
    assert len(rows) == dense.sum()
    kept = (rows, cols // J, cols % J)
    g = np.array([1, 3])
    ti = np.flatnonzero(dense[g].any(axis=(0, 2)))
    ji = np.flatnonzero(dense[g].any(axis=(0, 1)))
    np.testing.assert_array_equal(_kept_block(kept, B, T, J, g, ti, ji, np), dense[g][:, ti][:, :, ji])


def test_one_hot_sums_equal_the_passes_over_the_weights():
    """``_one_hot_sums`` (maxcc's weights: 1 at each image's best sample) equals ``block_maxima``
    and the sums over translations and orientations of the dense weights, to the bit, with a best
    sample in the tail after the last whole block too."""
    from cryolab.engine.estep import block_maxima
    from cryolab.engine.expectation import _one_hot_sums
    nb, T, J = 3, 7, 300                         # 2,100 samples: 16 blocks and a tail of 52
    best = np.array([5, 2_099, 1_000])
    w = np.zeros((nb, T * J), np.float32)
    w[np.arange(nb), best] = 1.0
    bmax, wj, wt = _one_hot_sums(best, nb, T, J, np)
    np.testing.assert_array_equal(bmax, block_maxima(w))
    np.testing.assert_array_equal(wj, w.reshape(nb, T, J).sum(axis=1))
    np.testing.assert_array_equal(wt, w.reshape(nb, T, J).sum(axis=2))
