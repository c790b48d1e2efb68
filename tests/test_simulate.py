"""Simulated particles: reproducibility, the SNR definition, noise spectra, files, RELION round trip.

References are independent of the code under test: masks and spectra are computed here with
plain NumPy FFTs, the projection check uses the real-space projector and ``scipy.ndimage``
shifts, and the end-to-end check reconstructs the simulated particles with ``relion_reconstruct``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from conftest import reference_file, requires_relion
from cryolab.ctf import CTFParams, ctf_2d
from cryolab.io import ParticleStack, read_mrc, read_particles
from cryolab.projection import FourierProjector, project_real
from cryolab.simulate import simulate_particles, simulate_views_2d, write_simulation

PX_A = 4.0


def _blobs(n: int = 32, seed: int = 3) -> np.ndarray:
    """An asymmetric map: a few Gaussian blobs of different sizes and weights."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*([np.arange(n) - n // 2] * 3), indexing="ij")
    vol = np.zeros((n, n, n), np.float32)
    for _ in range(6):
        c = rng.uniform(-n / 6, n / 6, 3)
        s = rng.uniform(1.5, 3.0)
        vol += rng.uniform(0.5, 1.5) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2
                                               + (x - c[2]) ** 2) / (2 * s * s))
    return vol


@pytest.fixture(scope="module")
def blobs():
    return _blobs()


def _disc(n: int, radius_px: float) -> np.ndarray:
    y, x = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    return np.hypot(x, y) <= radius_px


def _shell_power(images: np.ndarray) -> np.ndarray:
    """Mean |FFT|^2 / N^2 per integer frequency radius (shells 0..N/2), plain NumPy."""
    n = images.shape[-1]
    p = (np.abs(np.fft.fft2(images)) ** 2).mean(axis=0) / n ** 2
    f = np.fft.fftfreq(n) * n
    r = np.rint(np.hypot(*np.meshgrid(f, f, indexing="ij"))).astype(int).ravel()
    keep = r <= n // 2
    return np.bincount(r[keep], p.ravel()[keep]) / np.bincount(r[keep])


def test_same_seed_same_images_and_batch_size_does_not_matter(blobs):
    a = simulate_particles(blobs, 20, PX_A, seed=5, batch_size=256)
    b = simulate_particles(blobs, 20, PX_A, seed=5, batch_size=3)
    c = simulate_particles(blobs, 20, PX_A, seed=6)
    assert a.images.dtype == np.float32 and a.images.shape == (20, 32, 32)
    np.testing.assert_array_equal(a.images, b.images)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not np.allclose(a.images, c.images)
    assert not np.allclose(a.truth["rot_deg"], c.truth["rot_deg"])


def test_classes_fractions_and_given_eulers(blobs):
    vols = {"open": blobs, "closed": np.roll(blobs, 3, axis=2)}
    sim = simulate_particles(vols, 400, PX_A, fractions=[3, 1], snr=np.inf, seed=1)
    counts = sim.truth["class_name"].value_counts()
    assert abs(counts["open"] / 400 - 0.75) < 0.03  # measured 0.7525 (binomial sd 0.022)
    assert (sim.truth["class_name"] == np.array(["open", "closed"])[sim.truth["class_index"]]).all()
    eulers = np.tile([[10.0, 50.0, 30.0]], (4, 1))
    sim = simulate_particles(blobs, 4, PX_A, eulers=eulers)
    np.testing.assert_array_equal(sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy(), eulers)
    with pytest.raises(ValueError):
        simulate_particles(blobs, 5, PX_A, eulers=eulers)


@pytest.mark.parametrize("noise", ["white", "coloured"])
def test_measured_snr_matches_request(blobs, noise):
    diameter_A = 0.8 * 32 * PX_A
    sim = simulate_particles(blobs, 300, PX_A, snr=0.1, noise=noise, keep_clean=True, seed=2)
    inside = _disc(32, diameter_A / 2 / PX_A)
    signal = np.var(sim.clean[:, inside], axis=1).mean()
    noise_img = sim.images - sim.clean
    noise_var = np.var(noise_img.reshape(300, -1), axis=1).mean()
    # docs/simulation.md promises 1 %: measured 0.43 % (white), 0.91 % (coloured)
    assert abs(signal / noise_var / 0.1 - 1) < 0.01
    # noise std ~1, as after relion_preprocess --norm: measured 0.9978 / 0.9955
    assert abs(np.sqrt(noise_var) - 1) < 0.01
    np.testing.assert_allclose(sim.images[:, ~inside].mean(axis=1), 0, atol=1e-6)  # 1.9e-7
    # the noise-free images at snr=inf are the same images, scaled to signal variance 1
    ref = simulate_particles(blobs, 300, PX_A, snr=np.inf, seed=2)
    np.testing.assert_allclose(np.var(ref.images[:, inside], axis=1).mean(), 1.0, rtol=1e-4)
    scaled = sim.clean * np.sqrt(1 / 0.1)
    np.testing.assert_allclose(ref.images, scaled - scaled[:, ~inside].mean(axis=1)[:, None, None],
                               atol=1e-5)  # measured 1.3e-6


def test_white_noise_is_flat(blobs):
    sim = simulate_particles(blobs, 300, PX_A, snr=0.0, noise="white", seed=3)
    power = _shell_power(sim.images)[1:]  # shell 0 holds the removed background mean
    np.testing.assert_allclose(power, 1.0, rtol=0.035)  # measured 0.028 (the docs say 3 %)
    assert abs(sim.images.std() - 1) < 0.005  # measured 0.0008


def test_coloured_noise_falls_as_designed(blobs):
    corner_A = 20.0
    sim = simulate_particles(blobs, 300, PX_A, snr=0.0, noise="coloured",
                             noise_corner_A=corner_A, seed=4)
    n = 32
    f = np.fft.fftfreq(n, d=PX_A)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    shape = 1 / (1 + (fx ** 2 + fy ** 2) * corner_A ** 2)
    k = np.arange(1, n // 2 + 1) / (n * PX_A)
    expected = 1 / (1 + (k * corner_A) ** 2) / shape.mean()  # unit pixel variance
    measured = _shell_power(sim.images)[1:]
    np.testing.assert_allclose(measured, expected, rtol=0.05)  # measured 0.031
    assert measured[-1] < 0.2 * measured[0]  # measured 0.146
    assert abs(sim.images.std() - 1) < 0.005  # measured 0.0007


def test_images_match_real_space_projection_shift_and_ctf(blobs):
    """Noise-free images against project_real, scipy shifts and a NumPy-FFT CTF product."""
    sim = simulate_particles(blobs, 6, PX_A, snr=np.inf, keep_clean=True, max_origin_A=3 * PX_A,
                             bfactor_A2=50.0, seed=8)
    t = sim.truth
    n = 32
    ctf = CTFParams(t["defocus_u_A"].to_numpy(), t["defocus_v_A"].to_numpy(),
                    t["defocus_angle_deg"].to_numpy(), bfactor_A2=50.0)
    full = ctf_2d(ctf, n, PX_A, half=False)  # centred full grid
    for i in range(6):
        proj = project_real(blobs, t.loc[i, ["rot_deg", "tilt_deg", "psi_deg"]].to_numpy(float))
        ox, oy = t.loc[i, "origin_x_A"] / PX_A, t.loc[i, "origin_y_A"] / PX_A
        moved = ndimage.shift(proj, (-oy, -ox), order=3, mode="constant")  # (-ox, -oy) in (x, y)
        ft = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(moved)))
        ref = np.real(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(ft * full[i]))))
        assert np.corrcoef(ref.ravel(), sim.clean[i].ravel())[0, 1] > 0.998  # measured 0.99943


def test_views_2d_volume_and_view_images_agree(blobs):
    views_eulers = np.array([[0.0, 0.0], [40.0, 70.0], [120.0, 100.0]])
    views = FourierProjector(blobs).project(np.column_stack([views_eulers, np.zeros(3)]))
    kw = dict(snr=np.inf, keep_clean=True, seed=9, max_origin_A=2 * PX_A)
    from_map = simulate_views_2d(blobs, 30, PX_A, view_eulers=views_eulers, **kw)
    from_views = simulate_views_2d(list(views), 30, PX_A, **kw)
    t = from_map.truth
    for col in ("view_index", "psi_deg", "origin_x_A", "defocus_u_A"):
        np.testing.assert_array_equal(t[col], from_views.truth[col])
    np.testing.assert_array_equal(t["rot_deg"], views_eulers[t["view_index"], 0])
    assert "rot_deg" not in from_views.truth.columns
    assert t["psi_deg"].between(0, 360).all() and t["view_index"].nunique() == 3
    for a, b in zip(from_map.clean, from_views.clean):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999  # measured 0.99965 at worst
    # different psi gives a different image: the rotation is really applied
    assert np.corrcoef(from_map.clean[0].ravel(), from_map.clean[1].ravel())[0, 1] < 0.99


def test_written_star_matches_truth_and_reads_back(blobs, tmp_path):
    sim = simulate_particles(blobs, 25, PX_A, snr=0.5, seed=10)
    star = write_simulation(sim, tmp_path, include_truth_angles=True)
    assert star == tmp_path / "particles.star" and (tmp_path / "particles.mrcs").is_file()
    stack = ParticleStack.from_star(star)
    np.testing.assert_array_equal(stack.read(), sim.images)
    t = pd.read_csv(tmp_path / "truth.csv")
    pd.testing.assert_frame_equal(t, sim.truth, check_exact=False, rtol=1e-7)
    np.testing.assert_allclose(stack.eulers(), t[["rot_deg", "tilt_deg", "psi_deg"]], rtol=1e-6)
    np.testing.assert_allclose(stack.origins_A(), t[["origin_x_A", "origin_y_A"]], atol=1e-5)
    ctf = stack.ctf()
    np.testing.assert_allclose(ctf.defocus_u_A, t["defocus_u_A"], rtol=1e-6)
    np.testing.assert_allclose(ctf.defocus_angle_deg, t["defocus_angle_deg"], atol=1e-4)
    assert stack.pixel_size_A == PX_A and stack.box_size == 32
    index, name = stack.table["rlnImageName"].iloc[2].split("@")  # as RELION reads it, from cwd
    assert index == "000003" and Path(name).resolve() == (tmp_path / "particles.mrcs").resolve()
    write_simulation(sim, tmp_path, name="blind")
    particles, optics = read_particles(tmp_path / "blind.star")
    assert "rlnAngleRot" not in particles.columns and "rlnOriginXAngst" not in particles.columns
    assert optics["rlnVoltage"].iloc[0] == 300 and optics["rlnImageSize"].iloc[0] == 32


def test_streamed_writing_equals_in_memory(blobs, tmp_path):
    mem = simulate_views_2d(blobs, 40, PX_A, n_views=4, seed=11, noise="coloured")
    disk = simulate_views_2d(blobs, 40, PX_A, n_views=4, seed=11, noise="coloured",
                             out_dir=tmp_path, batch_size=7, include_truth_angles=True)
    np.testing.assert_array_equal(np.asarray(disk.images), mem.images)
    stack = ParticleStack.from_star(disk.star_path)
    np.testing.assert_array_equal(stack.read(), mem.images)
    np.testing.assert_allclose(stack.eulers()[:, 2], mem.truth["psi_deg"], rtol=1e-6)
    _, px = read_mrc(tmp_path / "particles.mrcs")
    assert px == PX_A
    assert sorted(p.name for p in tmp_path.iterdir()) == ["particles.mrcs", "particles.star",
                                                         "truth.csv"]


def test_bad_arguments(blobs):
    with pytest.raises(ValueError, match="snr"):
        simulate_particles(blobs, 3, PX_A, snr=-1)
    with pytest.raises(ValueError, match="noise"):
        simulate_particles(blobs, 3, PX_A, noise="pink")
    with pytest.raises(ValueError, match="simulate_views_2d"):
        simulate_particles(blobs, 3, PX_A, eulers="views")
    with pytest.raises(ValueError, match="fractions"):
        simulate_particles([blobs, blobs], 3, PX_A, fractions=[1, 1, 1])


@pytest.mark.relion
def test_relion_reconstruct_recovers_the_map(tmp_path):
    """End to end: our angles, origins and CTF read by relion_reconstruct give back the map."""
    exe = requires_relion("relion_reconstruct")
    from cryolab.fourier import lowpass
    from cryolab.validation import fsc

    vol, px = read_mrc(reference_file("ribosome70S_64.mrc"))
    simulate_particles(vol, 1000, px, snr=5.0, max_origin_A=3 * px, seed=12,
                       out_dir=tmp_path, include_truth_angles=True)
    subprocess.run([exe, "--i", "particles.star", "--o", "rec.mrc", "--ctf"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=300)
    rec, _ = read_mrc(tmp_path / "rec.mrc")
    a, b = (lowpass(v, 15.0, px, ndim=3).ravel() for v in (rec, vol))
    assert np.corrcoef(a, b)[0, 1] > 0.99  # measured 0.9976; origin or psi sign flipped: < 0.5
    # the CTF must be right too: FSC at shells 15-25 (21-13 A) measured 0.795; with every
    # defocus off by +5000 A it is 0.40
    assert fsc(rec, vol)[15:26].mean() > 0.75
