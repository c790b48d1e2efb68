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


def test_top_samples_of_long_rows_equal_a_full_sort():
    """``_top`` on rows long enough for its block pre-selection: the same values as a full sort."""
    from cryolab.engine.expectation import _top
    rng = np.random.default_rng(3)
    flat = rng.random((4, 300_000)).astype(np.float32) ** 20
    flat[2] = 0.0
    flat[2, [5, 299_999, 123_456]] = [0.3, 0.5, 0.2]  # in the tail after the last whole block, too
    top = _top(flat, 10)
    expect = -np.sort(-flat, axis=1)[:, :10]
    np.testing.assert_array_equal(np.take_along_axis(flat, top, 1), expect)
    assert top[2, 0] == 299_999 and top[2, 1] == 5
