"""Tests of cryolab.validation against analytic results, brute force and relion_postprocess."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import reference_file, requires_relion

from cryolab.backend import cupy_available
from cryolab.errors import CryolabInputError
from cryolab.fourier import irfft3c, lowpass, rfft3c, shell_index
from cryolab.io import read_mrc, write_mrc
from cryolab.validation import (auto_mask, corrected_fsc, fit_bfactor, fsc, fsc_weight, guinier,
                                masked_fsc, noise_substitution_test, phase_randomize, postprocess,
                                random_halves, resolution_at, resolution_shell_at, sharpen,
                                soft_circle_mask, soft_sphere_mask, write_postprocess)

PIXEL_A = 5.0


def _shell_counts(n, ndim=3):
    return np.bincount(shell_index(n, ndim).ravel(), minlength=n // 2 + 1)[: n // 2 + 1]


@pytest.fixture(scope="module")
def ribosome():
    volume, pixel_size_A = read_mrc(reference_file("ribosome70S_64.mrc"))
    assert pixel_size_A == pytest.approx(PIXEL_A)
    return np.asarray(volume, dtype=np.float32)


@pytest.fixture(scope="module")
def noisy_halves(ribosome):
    """Two half maps: the ribosome low-passed at shell 20 (16 A) plus independent white noise,
    so that the FSC falls steeply near shell 20."""
    signal = lowpass(ribosome, 64 * PIXEL_A / 20, PIXEL_A, ndim=3)
    rng = np.random.default_rng(1)
    sd = 0.5 * signal.std()
    return tuple(signal + rng.normal(0, sd, signal.shape).astype(np.float32) for _ in range(2))


# ----------------------------------------------------------------------------- FSC

@pytest.mark.parametrize("n", [32, 33])
def test_fsc_of_map_with_itself_is_one(n):
    v = np.random.default_rng(0).normal(size=(n, n, n))
    assert fsc(v, v).shape == (n // 2 + 1,)
    np.testing.assert_allclose(fsc(v, v), 1.0, atol=1e-12)
    np.testing.assert_allclose(fsc(v[0], v[0], ndim=2), 1.0, atol=1e-12)  # Fourier ring correlation
    np.testing.assert_allclose(fsc(v, 3 * v + 0.0), 1.0, atol=1e-12)      # scale invariant


def test_fsc_matches_brute_force_sum_over_shells():
    """Direct per-pixel loop over the centred half transform, rounded radius as shell index."""
    n = 12
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, n, n, n))
    fa, fb = rfft3c(a), rfft3c(b)
    num, da, db = np.zeros(n // 2 + 1), np.zeros(n // 2 + 1), np.zeros(n // 2 + 1)
    for iz in range(n):
        for iy in range(n):
            for ix in range(n // 2 + 1):
                s = int(round(np.sqrt((iz - n // 2) ** 2 + (iy - n // 2) ** 2 + ix ** 2)))
                if s <= n // 2:
                    num[s] += (fa[iz, iy, ix] * np.conj(fb[iz, iy, ix])).real
                    da[s] += abs(fa[iz, iy, ix]) ** 2
                    db[s] += abs(fb[iz, iy, ix]) ** 2
    np.testing.assert_allclose(fsc(a, b), num / np.sqrt(da * db), atol=1e-12)


def test_fsc_of_independent_noise_is_small():
    n = 64
    rng = np.random.default_rng(2)
    f = fsc(rng.normal(size=(n, n, n)), rng.normal(size=(n, n, n)))
    bound = 3 / np.sqrt(_shell_counts(n))
    assert np.all(np.abs(f[1:]) < bound[1:])
    assert 0.6 < np.std(f[4:] * np.sqrt(_shell_counts(n)[4:])) < 1.6  # ~N(0, 1) per shell


def test_fsc_analytic_spectral_snr():
    """Signal + independent noise with a known SNR per shell: FSC = SNR / (1 + SNR)."""
    n = 64
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(n, n, n))
    shells = shell_index(n, 3)
    snr_per_shell = 10.0 ** np.linspace(1.5, -1.5, n // 2 + 1)       # 30 down to 0.03
    shaped = np.sqrt(1 / snr_per_shell)[np.minimum(shells, n // 2)]    # noise amplitude filter
    halves = [signal + irfft3c(rfft3c(rng.normal(size=(n, n, n))) * shaped, n) for _ in range(2)]
    f = fsc(*halves)
    expected = snr_per_shell / (1 + snr_per_shell)
    tol = 3 / np.sqrt(_shell_counts(n)) + 0.01
    assert np.all(np.abs(f - expected)[2:] < tol[2:])


def test_resolution_interpolation_and_halves():
    curve = np.array([1.0, 0.95, 0.6, 0.2, 0.1, -0.05])
    shell = resolution_shell_at(curve, 0.143)
    assert shell == pytest.approx(3 + (0.2 - 0.143) / (0.2 - 0.1))
    assert resolution_at(curve, 0.143, 10, 2.0) == pytest.approx(20.0 / shell)
    assert resolution_shell_at(np.ones(5)) == 4.0                     # never drops: Nyquist
    assert resolution_shell_at([-1.0, 0.5, 0.0], 0.5) == 1.0          # DC shell ignored
    h = random_halves(1001, seed=4)
    assert set(np.unique(h)) == {1, 2} and np.sum(h == 1) == 501
    np.testing.assert_array_equal(h, random_halves(1001, seed=4))
    assert not np.array_equal(h, random_halves(1001, seed=5))


# ----------------------------------------------------------------------------- masks

def test_soft_masks_match_raised_cosine_formula():
    n, radius, edge = 24, 6.0, 4.0
    m = soft_sphere_mask(n, radius, edge)
    z, y, x = np.indices((n, n, n)) - n // 2
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    expected = np.where(r <= radius, 1.0,
                        np.where(r >= radius + edge, 0.0, 0.5 + 0.5 * np.cos(np.pi * (r - radius) / edge)))
    np.testing.assert_allclose(m, expected, atol=1e-6)
    np.testing.assert_allclose(soft_circle_mask(n, radius, edge), expected[n // 2], atol=1e-6)
    assert m.dtype == np.float32


def test_auto_mask_matches_brute_force():
    rng = np.random.default_rng(6)
    vol = lowpass(rng.normal(size=(20, 20, 20)), 4.0, 1.0, ndim=3)
    thr = np.quantile(vol, 0.97)
    m = auto_mask(vol, thr, extend_px=2, soft_edge_px=3)
    ones = np.argwhere(vol >= thr)
    grid = np.indices(vol.shape).reshape(3, -1).T
    d_seed = np.sqrt(((grid[:, None, :] - ones[None]) ** 2).sum(-1)).min(1).reshape(vol.shape)
    binary = d_seed < 2
    ext = np.argwhere(binary)
    d = np.sqrt(((grid[:, None, :] - ext[None]) ** 2).sum(-1)).min(1).reshape(vol.shape)
    expected = np.where(binary, 1.0, np.where(d < 3, 0.5 + 0.5 * np.cos(np.pi * d / 3), 0.0))
    np.testing.assert_allclose(m, expected, atol=1e-6)
    with pytest.raises(CryolabInputError):
        auto_mask(vol, vol.max() + 1)


# ----------------------------------------------------------------------------- phase randomisation

def test_phase_randomize_keeps_amplitudes_and_low_shells():
    n, shell = 32, 8
    v = np.random.default_rng(7).normal(size=(n, n, n)).astype(np.float32)
    r = phase_randomize(v, shell, seed=1)
    assert r.dtype == np.float32
    np.testing.assert_allclose(abs(rfft3c(r)), abs(rfft3c(v)), rtol=1e-3, atol=1e-3)
    f = fsc(v, r)
    np.testing.assert_allclose(f[:shell], 1.0, atol=1e-5)
    assert np.all(np.abs(f[shell + 1:]) < 3 / np.sqrt(_shell_counts(n)[shell + 1:]))
    np.testing.assert_array_equal(r, phase_randomize(v, shell, seed=1))


def test_noise_substitution_lowers_fsc_beyond_the_shell(ribosome):
    """Images phase-randomised beyond a shell before averaging: the half averages keep their
    FRC below the shell and lose it beyond (signal averages away)."""
    proj = ribosome.sum(axis=0)
    rng = np.random.default_rng(8)
    images = proj + rng.normal(0, 0.5 * proj.std(), size=(200,) + proj.shape).astype(np.float32)
    halves = random_halves(len(images), seed=0)
    shell = 10
    subst = noise_substitution_test(images, shell, seed=3)
    frc = fsc(images[halves == 1].mean(0), images[halves == 2].mean(0), ndim=2)
    frc_n = fsc(subst[halves == 1].mean(0), subst[halves == 2].mean(0), ndim=2)
    counts = np.bincount(shell_index(64, 2).ravel())[:33]
    np.testing.assert_allclose(frc_n[:shell], frc[:shell], atol=1e-3)
    assert np.all(frc[shell + 1:20] > 0.5)
    assert np.all(np.abs(frc_n[shell + 1:]) < 4 / np.sqrt(counts[shell + 1:]))
    true = corrected_fsc(frc, frc_n, shell)
    np.testing.assert_allclose(true[shell + 2:25], frc[shell + 2:25], atol=0.05)


# ----------------------------------------------------------------------------- B-factors

def test_sharpen_then_blur_is_identity():
    v = np.random.default_rng(9).normal(size=(32, 32, 32))
    np.testing.assert_allclose(sharpen(sharpen(v, -300.0, 2.0), 300.0, 2.0), v, atol=1e-9)
    np.testing.assert_allclose(sharpen(v, 0.0, 2.0), v, atol=1e-12)


def test_guinier_fit_recovers_gaussian_blur():
    """A sampled 3D Gaussian of sigma (A) has amplitudes exp(-2 pi^2 sigma^2 s^2): B = 8 pi^2 sigma^2."""
    n, pixel, sigma_px = 64, 2.0, 1.2
    z, y, x = np.indices((n, n, n)) - n // 2
    blob = np.exp(-(x ** 2 + y ** 2 + z ** 2) / (2 * sigma_px ** 2))
    b_blur = 8 * np.pi ** 2 * (sigma_px * pixel) ** 2
    s2, ln_f = guinier(blob, pixel)
    assert s2[1] == pytest.approx(1 / (n * pixel) ** 2)
    assert fit_bfactor(blob, pixel, lowres_A=20.0, highres_A=3 * pixel) == pytest.approx(-b_blur, rel=0.01)
    sharpened = sharpen(blob, -b_blur, pixel)
    assert abs(fit_bfactor(sharpened, pixel, 20.0, 3 * pixel)) < 0.01 * b_blur
    with pytest.raises(CryolabInputError):
        fit_bfactor(blob, pixel, lowres_A=4.3, highres_A=4.2)


def test_fsc_weight_formula():
    n = 16
    v = np.random.default_rng(10).normal(size=(n, n, n))
    curve = np.linspace(1, -0.2, n // 2 + 1)
    w = abs(rfft3c(fsc_weight(v, curve))) / np.maximum(abs(rfft3c(v)), 1e-12)
    shells = np.minimum(shell_index(n, 3), n // 2 + 1)
    expected = np.append(np.where(curve >= 1e-4, np.sqrt(2 * np.clip(curve, 0, None) / (1 + curve)), 0), 0)
    np.testing.assert_allclose(w, expected[shells], atol=1e-9)


# ----------------------------------------------------------------------------- post-processing

def test_postprocess_without_mask_and_masked_fsc(noisy_halves):
    h1, h2 = noisy_halves
    r = postprocess(h1, h2, None, PIXEL_A, bfactor=0.0)
    assert r.fsc_masked is None and r.randomize_from_shell is None
    assert 14 < r.resolution_A < 17
    np.testing.assert_allclose(r.sharpened, fsc_weight(0.5 * (h1 + h2), r.fsc_unmasked), atol=1e-9)
    m = masked_fsc(h1, h2, soft_sphere_mask(64, 25, 5), seed=0)
    assert m["randomize_from_shell"] == int(np.flatnonzero(m["fsc_unmasked"][1:] < 0.8)[0]) + 1
    with pytest.raises(CryolabInputError):
        masked_fsc(h1, h1, soft_sphere_mask(64, 25, 5))
    assert len(r.table()) == 33


def test_write_postprocess_files(tmp_path):
    from cryolab.io import read_star
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(24, 24, 24)).astype(np.float32)
    h1, h2 = (signal + 0.5 * rng.normal(size=signal.shape).astype(np.float32) for _ in range(2))
    mask = soft_sphere_mask(24, 10, 3)
    r = postprocess(h1, h2, mask, 3.0)
    paths = write_postprocess(r, tmp_path / "pp")
    assert [p.name for p in paths] == ["pp.mrc", "pp_masked.mrc", "pp.star"]
    vol, px = read_mrc(tmp_path / "pp.mrc")
    assert px == pytest.approx(3.0)
    np.testing.assert_allclose(vol, r.sharpened, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(read_mrc(tmp_path / "pp_masked.mrc")[0], r.sharpened * mask, rtol=1e-6, atol=1e-6)
    blocks = read_star(tmp_path / "pp.star")
    assert float(blocks["general"]["rlnFinalResolution"].iloc[0]) == pytest.approx(r.resolution_A)
    assert float(blocks["general"]["rlnBfactorUsedForSharpening"].iloc[0]) == pytest.approx(r.bfactor_A2)
    np.testing.assert_allclose(blocks["fsc"]["rlnFourierShellCorrelationCorrected"], r.fsc_corrected)
    assert list(blocks["fsc"].columns) == list(r.table().columns)
    unmasked = postprocess(h1, h2, None, 3.0)
    assert [p.name for p in write_postprocess(unmasked, tmp_path / "u")] == ["u.mrc", "u.star"]


@pytest.mark.relion
def test_against_relion_postprocess(tmp_path, ribosome, noisy_halves):
    postprocess_exe = requires_relion("relion_postprocess")
    mask_create_exe = requires_relion("relion_mask_create")
    starfile = pytest.importorskip("starfile")
    h1, h2 = noisy_halves
    lp = lowpass(ribosome, 15.0, PIXEL_A, ndim=3)
    thr = 0.1 * float(ribosome.max())
    mask = auto_mask(lp, thr, extend_px=3, soft_edge_px=3)
    for name, data in [("run_half1_class001_unfil.mrc", h1), ("run_half2_class001_unfil.mrc", h2),
                       ("lp.mrc", lp)]:
        write_mrc(tmp_path / name, np.asarray(data, dtype=np.float32), PIXEL_A)
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=120)
    subprocess.run([mask_create_exe, "--i", "lp.mrc", "--o", "mask.mrc", "--ini_threshold", str(thr),
                    "--extend_inimask", "3", "--width_soft_edge", "3"], check=True, **run)
    relion_mask = read_mrc(tmp_path / "mask.mrc")[0]
    np.testing.assert_allclose(mask, relion_mask, atol=1e-6)

    (tmp_path / "pp").mkdir()
    subprocess.run([postprocess_exe, "--i", "run_half1_class001_unfil.mrc", "--mask", "mask.mrc",
                    "--angpix", str(PIXEL_A), "--o", "pp/postprocess", "--adhoc_bfac", "-500"], **run)
    star = starfile.read(tmp_path / "pp" / "postprocess.star")  # written even when the PDF step fails
    table, general = star["fsc"], star["general"]
    r = postprocess(h1, h2, relion_mask, PIXEL_A, bfactor=-500.0, seed=0)

    np.testing.assert_allclose(r.fsc_unmasked, table["rlnFourierShellCorrelationUnmaskedMaps"], atol=1e-4)
    np.testing.assert_allclose(r.fsc_masked, table["rlnFourierShellCorrelationMaskedMaps"], atol=1e-4)
    assert 64 * PIXEL_A / r.randomize_from_shell == pytest.approx(general["rlnRandomiseFrom"], rel=1e-4)
    # phase randomisation differs by the random numbers only: corrected FSC agrees statistically
    assert np.max(np.abs(r.fsc_corrected - table["rlnFourierShellCorrelationCorrected"])) < 0.12
    relion_shell = 64 * PIXEL_A / general["rlnFinalResolution"]        # RELION: last shell above 0.143
    print(f"resolution: cryolab {r.resolution_A:.2f} A (shell {r.resolution_shell:.2f}), RELION "
          f"{general['rlnFinalResolution']:.2f} A (shell {relion_shell:.0f}); max |dFSC_corrected| "
          f"{np.max(np.abs(r.fsc_corrected - table['rlnFourierShellCorrelationCorrected'])):.3f}")
    assert abs(r.resolution_shell - relion_shell) <= 1.0
    # Guinier plot of the averaged halves, and the sharpened map (same B, RELION 3.1: no low-pass)
    _, ln_f = guinier(0.5 * (h1 + h2), PIXEL_A)
    np.testing.assert_allclose(ln_f, star["guinier"]["rlnLogAmplitudesOriginal"], atol=1e-4)
    relion_map = read_mrc(tmp_path / "pp" / "postprocess.mrc")[0]
    assert np.corrcoef(relion_map.ravel(), np.ravel(r.sharpened))[0, 1] > 0.99


@pytest.mark.skipif(not cupy_available(), reason="CuPy / GPU not available")
def test_cupy_matches_numpy(noisy_halves):
    import cupy as cp
    h1, h2 = noisy_halves
    mask = soft_sphere_mask(64, 25, 5)
    ref = postprocess(h1, h2, mask, PIXEL_A, bfactor=-200.0)
    gpu = postprocess(cp.asarray(h1), cp.asarray(h2), cp.asarray(mask), PIXEL_A, bfactor=-200.0)
    np.testing.assert_allclose(gpu.fsc_corrected, ref.fsc_corrected, atol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(gpu.sharpened), ref.sharpened, atol=1e-4 * float(abs(ref.sharpened).max()))
    thr = float(np.quantile(h1, 0.9))
    np.testing.assert_allclose(cp.asnumpy(auto_mask(cp.asarray(h1), thr, 2, 3)), auto_mask(h1, thr, 2, 3),
                               atol=1e-6)
