"""Scores at a lattice of translations as a separable DFT (engine.translations) against the
GEMM rows of engine.estep / engine.mstep and a brute-force loop, and the E-step batch with its
fine pass scored either way."""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.engine import translations as tr
from cryolab.engine.estep import Scratch, fourier_pixels, power_terms, score
from cryolab.engine.expectation import expectation_batch
from cryolab.engine.keysum import sum_by_key
from cryolab.engine.images import prepare_batch
from cryolab.engine.mstep import weighted_sums
from cryolab.engine.planar import PlanarSampler
from cryolab.engine.sampling import fine_translations, translation_grid
from cryolab.projection import shift_ramps


def _random_terms(rng, n, max_shell, B, J):
    pix = fourier_pixels(n, max_shell)
    M = pix.size
    X = (rng.normal(size=(B, M)) + 1j * rng.normal(size=(B, M))).astype(np.complex64)
    C = rng.uniform(-1, 1, size=(B, M)).astype(np.float32)
    P = (rng.normal(size=(J, M)) + 1j * rng.normal(size=(J, M))).astype(np.complex64)
    inv_s2 = rng.uniform(0.5, 2, M).astype(np.float32)
    return pix, X, C, P, inv_s2


def test_lattice_scores_and_sums_equal_the_gemm_rows_and_a_brute_force_loop():
    rng = np.random.default_rng(0)
    n = 32
    pix, X, C, P, inv_s2 = _random_terms(rng, n, 12, 3, 10)
    ft = fine_translations(translation_grid(3, 1), 1.0, 1).reshape(-1, 2)     # 116 on a 14 x 14 lattice
    ramps = shift_ramps(n, ft, kx=pix.kx, ky=pix.ky)
    lat = tr.translation_lattice(n, ft, pix.kx, pix.ky)
    assert lat.size == len(ft) and len(lat.xs) == len(lat.ys) == 14
    got = tr.score(X, C, inv_s2, P, lat)
    rows = score(X, C, inv_s2, P, ramps)
    # brute force in double: Re sum conj(X S_t) C P / sigma2 - sum C^2 |P|^2 / (2 sigma2)
    x, c, p, s = (a.astype(np.complex128) for a in (X, C, P, ramps))
    brute = (np.einsum("bm,tm,bm,jm,m->btj", np.conj(x), np.conj(s), c, p, inv_s2).real
             - np.einsum("bm,jm,m->bj", c.real ** 2, np.abs(p) ** 2, 0.5 * inv_s2)[:, None, :])
    scale = np.abs(brute).max()
    # measured: 1.4e-7 (GEMM rows: 2.0e-7) of the largest score; margin > 10x
    assert np.abs(got - brute).max() < 2e-6 * scale
    assert np.abs(got - rows).max() < 2e-6 * scale
    w = rng.random(got.shape).astype(np.float32)
    w[:, :, 3] = 0                                       # a column without weight gets zeros
    D, W, wsum = tr.weighted_sums(w, X, C, lat, min_weight=0.0)
    D0, W0, wsum0 = weighted_sums(w, X, C, ramps, min_weight=0.0)
    Db = np.einsum("btj,bm,bm,tm->jm", w, c.real, x, s)
    # measured: 4.4e-7 (GEMM rows: 6.5e-7) of the largest sum; W is the rows' GEMM; margin ~10x
    assert np.abs(D - Db).max() < 5e-6 * np.abs(Db).max() and np.abs(D - D0).max() < 5e-6 * np.abs(Db).max()
    assert np.allclose(W, W0, rtol=1e-5) and np.allclose(wsum, wsum0)
    assert not D[3].any() and not W[3].any()
    scratch = Scratch()                     # work arrays reused across calls of other sizes: the same values
    for _ in range(2):
        assert np.array_equal(tr.score(X[:2], C[:2], inv_s2, P, lat, scratch=scratch), got[:2])
        assert np.array_equal(tr.score(X, C, inv_s2, P, lat, scratch=scratch), got)
        assert np.array_equal(tr.weighted_sums(w, X, C, lat, scratch=scratch)[0], D)
    # one worker, an odd number of images: the last GEMM for one image only
    for ipg in (2, 3):
        assert np.array_equal(tr.score(X, C, inv_s2, P, lat, workers=1, images_per_gemm=ipg), got)
    # in threads (images, or shares of the columns, shared out; work arrays of their own): the same to the bit
    for workers in (2, 3):
        assert np.array_equal(tr.score(X, C, inv_s2, P, lat, scratch=scratch, workers=workers, images_per_gemm=1), got)
        assert np.array_equal(tr.weighted_sums(w, X, C, lat, scratch=scratch, workers=workers)[0],
                              tr.weighted_sums(w, X, C, lat, scratch=scratch, workers=1)[0])
        some = tr.weighted_sums(w, X, C, lat, min_weight=0.5, workers=workers)[0]         # some columns only
        assert np.array_equal(some, tr.weighted_sums(w, X, C, lat, min_weight=0.5, workers=1)[0])
    # a few columns at a time: other GEMM shapes, float32 rounding apart
    assert np.abs(tr.weighted_sums(w, X, C, lat, columns=3)[0] - D).max() < 1e-6 * np.abs(D).max()


def test_lattice_of_integer_translations_and_bad_pixels():
    t = translation_grid(2, 1)
    lat = tr.translation_lattice(16, t, [0, 1, 1], [0, -1, 2])
    assert lat.xs.tolist() == lat.ys.tolist() == [-2, -1, 0, 1, 2]
    assert np.array_equal(np.stack([lat.xs[lat.ix], lat.ys[lat.iy]], 1), t)
    assert lat.spans == ((2, 3), (1, 5))                                   # ky + R per kx column
    with pytest.raises(ValueError, match="distinct"):
        tr.translation_lattice(16, np.concatenate([t, t[:1]]), [0], [0])
    with pytest.raises(ValueError, match="kx >= 0"):
        tr.translation_lattice(16, t, [-1], [0])


def test_bands_leave_out_the_points_outside_the_translations():
    """The lattice cut into bands (points that are no translations left out of the second
    contractions) against the whole lattice: a disk of translations and an irregular subset."""
    rng = np.random.default_rng(4)
    n = 32
    pix, X, C, P, inv_s2 = _random_terms(rng, n, 11, 5, 37)
    disk = fine_translations(translation_grid(3, 1), 1.0, 1).reshape(-1, 2)
    for trans in (disk, disk[rng.random(len(disk)) < 0.4]):
        whole = tr.translation_lattice(n, trans, pix.kx, pix.ky, max_bands=1)
        lat = tr.translation_lattice(n, trans, pix.kx, pix.ky)
        used = np.zeros((len(lat.xs), len(lat.ys)), bool)
        used[lat.ix, lat.iy] = True
        for bands, grid in ((tr._bands(used, 4), used), (tr._bands(used.T, 4), used.T)):
            assert len(bands) <= 4 and sorted(np.concatenate([r for r, _, _ in bands])) == list(range(len(grid)))
            for rows, a, b in bands:                        # each band's range holds its rows' points
                assert not grid[rows][:, :a].any() and not grid[rows][:, b:].any()
        if trans is disk:                                   # four exact bands, a third of the lattice left out
            assert sum(len(r) * (b - a) for r, a, b in lat.x_bands) == lat.size == 116 < used.size == 196
        got, ref = tr.score(X, C, inv_s2, P, lat), tr.score(X, C, inv_s2, P, whole)
        # measured: 0 (the same dot products); float32 rounding allowed
        assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
        w = rng.random(got.shape).astype(np.float32)
        D, W, _ = tr.weighted_sums(w, X, C, lat)
        D0, W0, _ = tr.weighted_sums(w, X, C, whole)
        # measured: 2.1e-7 of the largest sum (the ty contraction's order differs); margin ~5x
        assert np.abs(D - D0).max() < 1e-6 * np.abs(D0).max() and np.array_equal(W, W0)


def test_separable_ramps_equal_the_phase_in_double():
    """The ramps from per-axis tables against exp of the phase in double (and shift_ramps)."""
    pix = fourier_pixels(40, 18)
    ft = fine_translations(translation_grid(4, 1), 1.0, 1).reshape(-1, 2) + np.array([0.3, -1.7])
    got = tr.separable_ramps(40, ft, pix.kx, pix.ky)
    exact = np.exp(-2j * np.pi / 40 * (ft[:, :1] * pix.kx.astype(float) + ft[:, 1:] * pix.ky.astype(float)))
    assert got.dtype == np.complex64 and got.shape == exact.shape
    # measured: 1.1e-7 (shift_ramps: 4.2e-8), complex64 rounding of a product; margin ~4x
    assert np.abs(got - exact).max() < 5e-7
    assert np.abs(got - shift_ramps(40, ft, kx=pix.kx, ky=pix.ky)).max() < 5e-7


@pytest.fixture(scope="module")
def batch():
    """Six simulated images of two views (32 px) and a sampler of two references."""
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.simulate import simulate_views_2d
    import tempfile
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    with tempfile.TemporaryDirectory() as out:
        sim = simulate_views_2d(vol, 6, d.pixel_size_A * 2, view_eulers=[[0, 0], [0, 90]], snr=0.5, seed=3,
                                out_dir=out, name="small")
        from cryolab.io import ParticleStack
        ps = ParticleStack.from_star(sim.star_path)
        images, ctf = ps.read(np.arange(6)), ps.ctf(np.arange(6))
        pixel_size_A = ps.pixel_size_A
    pix = fourier_pixels(32, 10)
    X, C = prepare_batch(images, pix, None, np.zeros((6, 2)), ctf, pixel_size_A)
    return pix, X / 50, C


@pytest.mark.parametrize("fine_pass", ["union", "per_image"])
def test_fine_pass_on_the_lattice_equals_the_gemm_rows(batch, fine_pass):
    """The E-step batch with the fine pass's translations scored on their lattice: the same best
    samples, posteriors and M-step sums as with one GEMM row per translation."""
    pix, X, C = batch
    rng = np.random.default_rng(1)
    refs = np.stack([np.fft.irfft2(np.fft.rfft2(rng.normal(size=(32, 32))) * (np.hypot(*np.meshgrid(
        np.fft.fftfreq(32), np.fft.rfftfreq(32), indexing="ij")) < 0.15)) for _ in range(2)]).astype(np.float32)
    sampler = PlanarSampler(refs, pix, psi_step_deg=30, offset_range_px=2, offset_step_px=1)
    coarse = sampler.coarse(pix.count_within(6))
    inv_s2 = rng.uniform(0.5, 2, pix.size).astype(np.float32)
    offsets = rng.normal(size=(6, 2))
    runs = []
    for translations in ("rows", "lattice"):
        parts = []
        res, extra = expectation_batch(X, C, inv_s2, 0.5 * (np.abs(X) ** 2 * inv_s2).sum(1), coarse, sampler, pix,
                                       log_pdf_class=np.log(np.array([0.4, 0.6], np.float32)), offsets_px=offsets,
                                       sigma_offset_px=1.5, mode="map", oversampling=1, adaptive_fraction=0.99,
                                       fine_pass=fine_pass, translations=translations,
                                       accumulate=lambda k, o, D, W, parts=parts: parts.append(
                                           (sampler.keys(np.full(len(o), k), o), D, W)))
        keys = np.concatenate([p[0] for p in parts])
        sums = sum_by_key(keys, *(np.concatenate([p[i] for p in parts]) for i in (1, 2)))
        runs.append((res, extra, np.unique(keys), sums[1], sums[2]))
    (a, ea, ka, Da, Wa), (b, eb, kb, Db, Wb) = runs
    assert np.array_equal(a.best_class, b.best_class) and np.allclose(a.best_orient, b.best_orient)
    assert np.allclose(a.best_trans, b.best_trans) and np.array_equal(a.n_significant, b.n_significant)
    # measured: pmax 4.4e-6, loglik 1.2e-4 of ~1,000 (1.3e-7), class posteriors 1.2e-7; margin ~10x
    assert np.allclose(a.pmax, b.pmax, atol=5e-5) and np.allclose(a.class_posterior, b.class_posterior, atol=2e-6)
    assert np.allclose(a.loglik, b.loglik, rtol=2e-6)
    assert np.abs(ea["residual"] - eb["residual"]).max() < 1e-6 * np.abs(ea["residual"]).max()
    assert np.isclose(ea["offset_moment"], eb["offset_moment"])
    assert np.array_equal(ka, kb)          # measured: D 1.4e-6, W 3e-8, residual 6e-8 of the largest; margin ~10x
    assert np.abs(Da - Db).max() < 1e-5 * np.abs(Da).max() and np.allclose(Wa, Wb, rtol=1e-6)
    with pytest.raises(ValueError, match="translations"):
        expectation_batch(X, C, inv_s2, inv_s2[:6], coarse, sampler, pix, log_pdf_class=np.zeros(2, np.float32),
                          offsets_px=offsets, sigma_offset_px=1.5, translations="dft")


def test_union_with_each_images_own_columns_equals_the_per_image_pass(batch, monkeypatch):
    """The fine pass over the union, its M-step sums leaving out per image the orientations without
    weight for that image (as where the union is over OWN_COLUMNS_ABOVE times the images' own
    work), gives the per-image pass's sums to float32 rounding."""
    from cryolab.engine import expectation
    pix, X, C = batch
    rng = np.random.default_rng(2)
    refs = rng.normal(size=(2, 32, 32)).astype(np.float32)
    sampler = PlanarSampler(refs, pix, psi_step_deg=30, offset_range_px=2, offset_step_px=1)
    coarse = sampler.coarse(pix.count_within(6))
    inv_s2 = rng.uniform(0.5, 2, pix.size).astype(np.float32)
    offsets = rng.normal(size=(6, 2))
    monkeypatch.setattr(expectation, "OWN_COLUMNS_ABOVE", 0.0)
    runs = {}
    for how in ("union", "per_image"):
        parts = []
        res, extra = expectation_batch(X, C, inv_s2, 0.5 * (np.abs(X) ** 2 * inv_s2).sum(1), coarse, sampler, pix,
                                       log_pdf_class=np.log(np.array([0.4, 0.6], np.float32)), offsets_px=offsets,
                                       sigma_offset_px=1.5, mode="map", oversampling=1, adaptive_fraction=0.99,
                                       fine_pass=how, accumulate=lambda k, o, D, W, parts=parts: parts.append(
                                           (sampler.keys(np.full(len(o), k), o), D, W)))
        keys = np.concatenate([p[0] for p in parts])
        first, D, W = sum_by_key(keys, *(np.concatenate([p[i] for p in parts]) for i in (1, 2)))
        order = np.argsort(keys[first])
        runs[how] = res, extra, D[order], W[order]
    (a, ea, Da, Wa), (b, eb, Db, Wb) = runs["union"], runs["per_image"]
    assert np.array_equal(a.best_class, b.best_class) and np.array_equal(a.n_significant, b.n_significant)
    assert np.allclose(a.class_posterior, b.class_posterior, atol=1e-6)
    # measured: D 8.3e-8, W 0, residual 4.4e-8 of the largest; margin > 10x
    assert np.abs(Da - Db).max() < 1e-6 * np.abs(Db).max() and np.abs(Wa - Wb).max() < 1e-6 * np.abs(Wb).max()
    assert np.abs(ea["residual"] - eb["residual"]).max() < 1e-6 * np.abs(eb["residual"]).max()
    # the rule itself: an image's orientation whose weights are all <= min_weight is zeroed for that image only
    w = np.zeros((2, 3, 4), np.float32)
    w[0, :, 1], w[1, 2, 1], w[0, 1, 2], w[1, :, 3] = 1e-7, 0.5, 1e-6, 0.2
    got, wj = expectation._own_columns(w.copy(), w.sum(axis=1), 1e-6)
    keep = np.array([[0, 0, 0, 0], [0, 1, 0, 1]], bool)
    assert np.array_equal(got, w * keep[:, None, :]) and np.array_equal(wj, w.sum(axis=1) * keep)


def test_power_terms_by_slices_of_projections_equal_the_whole_product():
    """``-|C P|^2`` terms made a slice of projections at a time (no [J, M] temporaries) equal the
    one-GEMM product (bit for bit with OpenBLAS here; float32 rounding allowed)."""
    rng = np.random.default_rng(5)
    pix, X, C, P, inv_s2 = _random_terms(rng, 32, 9, 2, 1100)        # three slices of 512
    cw = C * C * (0.5 * inv_s2)
    whole = cw @ (P.real ** 2 + P.imag ** 2).T
    got = power_terms(cw, P)
    assert got.shape == (2, 1100) and got.dtype == np.float32
    np.testing.assert_allclose(got, whole, rtol=1e-6, atol=0)
