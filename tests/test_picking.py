"""Particle picking: the figure of merit against analytic results and brute force, picking against the truth of
simulated micrographs, extraction against ``relion_preprocess`` and ``relion_reconstruct``, bad input.

CI size: 3 micrographs of 512^2 pixels (6 A/px) with 14 ribosomes each plus 2 of pure noise, SNR 0.05 per
2-A pixel (:func:`cryolab.simulate.simulate_micrographs`); ``benchmarks/picking.py`` runs the issue's size.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import requires_relion

from cryolab.cli.main import main as cli
from cryolab.data import load_demo
from cryolab.errors import CryolabInputError
from cryolab.io import read_mrc, write_mrc, write_star
from cryolab.picking import (Picker, PickSettings, enforce_min_distance, expected_false_peaks, make_templates,
                             match_picks, resample_images)
from cryolab.picking.files import read_micrographs
from cryolab.picking.score import band_filter, ncc_map
from cryolab.projection import FourierProjector
from cryolab.simulate import simulate_micrographs, write_micrographs

PX, DIAMETER_A, SIZE = 6.0, 300.0, 512
VIEWS = [[0, 0, 0], [0, 90, 0], [90, 90, 0], [45, 45, 0], [135, 45, 0], [45, 135, 0], [90, 30, 0], [160, 120, 0]]


@pytest.fixture(scope="module")
def demo_map():
    return load_demo().volumes["80S"]


@pytest.fixture(scope="module")
def field(demo_map):
    sim = simulate_micrographs(demo_map, 3, 14, PX, size_px=SIZE, n_noise=2, particle_diameter_A=DIAMETER_A,
                               snr=0.05, snr_pixel_size_A=2.0, contaminants=2, seed=5)
    refs = FourierProjector(demo_map).project(np.array(VIEWS, float))
    return sim, refs


def _templates(refs, scale=1.0):
    return make_templates(refs * scale, PX, particle_diameter_A=DIAMETER_A, psi_step_deg=20, map3d=False,
                          invert=True)


def _score(sim, picker):
    """Precision and recall over the micrographs with particles; false picks on the pure-noise ones."""
    tp = fp = fn = 0
    noise_picks = []
    for m in range(len(sim.micrographs)):
        picks = picker.pick(sim.micrographs[m], sim.ctf[m])
        r = match_picks(picks.xy(), sim.coordinates(m), DIAMETER_A / 4 / PX)
        if sim.noise[m]:
            noise_picks.append(len(picks.table))
        tp, fp, fn = tp + r["tp"], fp + r["fp"], fn + r["fn"]
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), noise_picks


def test_template_picking_precision_recall(field):
    """Measured at this size: precision 1.00, recall 0.81 (42 particles; the misses lie beside the
    contaminants and the carbon, a larger share of a 512-pixel field than of the issue's 1024-pixel one,
    where benchmarks/picking.py measures the done-when numbers; the carbon edges found at z 8.0-9.7, above
    the cut-off of 6 that 2 films in 16 at 512^2 miss: docs/picking.md);
    no pick on either pure-noise micrograph. Asserted 0.05 below."""
    sim, refs = field
    picker = Picker(PickSettings(particle_diameter_A=DIAMETER_A, highpass_A=600), PX, SIZE, _templates(refs))
    precision, recall, noise = _score(sim, picker)
    assert precision >= 0.95 and recall >= 0.76, (precision, recall)
    assert max(noise) <= 1, noise


def test_log_picking_recall(field):
    """Measured at this size: precision 1.00, recall 0.93 (0.71 before the LoG z-scores took the white-noise
    level and the side-lobe rule was left to templates); no pick on the noise micrographs. Asserted 0.05 below."""
    sim, _ = field
    picker = Picker(PickSettings(particle_diameter_A=DIAMETER_A, mode="log", log_diameters_A=(200, 350),
                                 highpass_A=600), PX, SIZE)
    precision, recall, noise = _score(sim, picker)
    assert recall >= 0.88 and precision >= 0.95, (precision, recall)
    assert max(noise) <= 1, noise


def test_template_grey_scale_does_not_change_the_picks(field):
    """The score is a z-score of a unit-norm template: scaling the references by 0.25 or 4 changes nothing
    (RELION's figure of merit does change); measured: identical picks, identical FOM maps (difference 0)."""
    sim, refs = field
    settings = PickSettings(particle_diameter_A=DIAMETER_A, highpass_A=600)
    base = Picker(settings, PX, SIZE, _templates(refs)).pick(sim.micrographs[0], sim.ctf[0])
    for scale in (0.25, 4.0):
        other = Picker(settings, PX, SIZE, _templates(refs, scale)).pick(sim.micrographs[0], sim.ctf[0])
        both = match_picks(base.xy(), other.xy(), 0.5)
        assert both["tp"] >= 0.98 * max(len(base.table), len(other.table)), scale
        assert np.allclose(base.fom, other.fom, rtol=1e-5, atol=1e-5), scale


def test_band_filter_is_strict_and_the_score_ignores_higher_frequencies():
    """Zero at and beyond 1 / lowpass (analytic); adding any content beyond the cut-off to a micrograph
    leaves its figure of merit unchanged (measured: to 1e-6 of its range)."""
    h = band_filter(128, 6.0, 20.0)
    k = np.hypot(np.fft.fftfreq(128)[:, None], np.fft.rfftfreq(128)[None]) / 6.0
    assert np.all(h[k >= 1 / 20.0] == 0) and np.all(h[k < 0.9 / 20.0] == 1)
    rng = np.random.default_rng(0)
    mic = rng.standard_normal((128, 128))
    beyond = np.fft.irfft2(np.fft.rfft2(10 * rng.standard_normal((128, 128))) * (k >= 1 / 20.0), s=(128, 128))
    y, x = np.mgrid[:16, :16] - 8
    template = np.exp(-(x ** 2 + y ** 2) / 10.0)[None].astype(np.float32)
    a = ncc_map(mic.astype(np.float32), template, 6.0, lowpass_A=20.0)[0]
    b = ncc_map((mic + beyond).astype(np.float32), template, 6.0, lowpass_A=20.0)[0]
    assert np.abs(a - b).max() < 1e-4 * np.ptp(a)


def test_null_score_is_a_unit_variance_field_and_the_false_alarm_count_matches():
    """On white noise each template's map has unit variance (measured 1.00 +- 0.01), and the number of
    local maxima above u agrees with the Euler-characteristic formula (measured/predicted 0.9-1.1 at
    u = 3.5 over 20 fields; asserted within 0.7-1.4)."""
    from cryolab.picking import local_maxima
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:24, :24] - 12
    template = np.exp(-(x ** 2 + y ** 2) / 30.0)[None].astype(np.float32)
    counts, predicted, stds = [], [], []
    for _ in range(20):
        mic = rng.standard_normal((256, 256)).astype(np.float32)
        fom, _, lam = ncc_map(mic, template, 6.0, lowpass_A=None)
        inner = fom[12:-12, 12:-12]
        stds.append(inner.std())
        counts.append(len(local_maxima(inner, 3.5)[0]))
        predicted.append(expected_false_peaks(3.5, lam, inner.size))
    assert abs(np.mean(stds) - 1) < 0.03, np.mean(stds)
    ratio = np.sum(counts) / np.sum(predicted)
    assert 0.7 < ratio < 1.4, ratio


def test_film_edge_found_on_a_step_and_not_on_noise_or_a_blob():
    """A step of 0.3 noise sigmas beyond a straight line in white noise: the line found to 0.5 deg and 2 px,
    the film on the right side, the mask covering the film and a radius beside it; pure noise and a single
    dense disc (a contaminant, no edge) give no edge (measured: 0.1 deg, 0 px; z 10.8, pure noise 3.0)."""
    from cryolab.picking.carbon import film_mask, find_film_edge
    n, theta, edge = 256, np.deg2rad(35.0), 60.0
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    s = xx * np.cos(theta) + yy * np.sin(theta)
    image = rng.standard_normal((n, n)) - 0.3 * (s > edge)
    found = find_film_edge(image, 20, 8, 6.0)
    assert found is not None
    th, e, z, sign = found
    if sign < 0:                                   # the same line written the other way round
        th, e, sign = th + np.pi, -e, -sign
    assert abs(np.rad2deg(th) - 35.0) < 0.5 and abs(e - edge) < 2 and sign == 1, found
    mask = film_mask(image, 20, 8, 6.0)
    assert mask[s > edge + 3].all() and not mask[s < edge - 11].any() and mask[(s > edge - 5) & (s < edge)].all()
    assert find_film_edge(rng.standard_normal((n, n)), 20, 8, 6.0) is None
    blob = rng.standard_normal((n, n)) - 2.0 * (np.hypot(xx - 40, yy + 30) < 20)
    assert not film_mask(blob, 20, 8, 6.0).any()


def test_min_distance_against_brute_force():
    rng = np.random.default_rng(2)
    x, y, v = rng.uniform(0, 100, 300), rng.uniform(0, 100, 300), rng.random(300)
    keep = enforce_min_distance(x, y, v, 7.0)
    d = np.hypot(x[keep, None] - x[None, keep], y[keep, None] - y[None, keep])
    assert np.all(d[np.triu_indices(len(keep), 1)] >= 7.0)
    dropped = np.setdiff1d(np.arange(300), keep)     # each dropped peak has a higher kept one nearby
    for i in dropped:
        near = np.hypot(x[keep] - x[i], y[keep] - y[i]) < 7.0
        assert np.any(near & (v[keep] >= v[i]))


def test_match_picks_counts():
    r = match_picks([[0, 0], [10, 0], [50, 50]], [[1, 0], [11, 1], [80, 80], [0, 2]], 3.0)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 2)


def test_resample_images_is_exact_for_band_limited_images():
    """A Gaussian resampled from 6 to 9.5 A/px equals the Gaussian drawn on the new grid (to 1e-5)."""
    def blob(n, px):
        y, x = (np.mgrid[:n, :n] - n // 2) * px
        return np.exp(-(x ** 2 + y ** 2) / (2 * 30.0 ** 2))
    out = resample_images(blob(64, 6.0)[None], 6.0, 9.5, 40)[0]
    assert np.abs(out - blob(40, 9.5)).max() < 1e-5


# ----------------------------------------------------------------------------- files and the command line

@pytest.fixture(scope="module")
def project(tmp_path_factory, field):
    folder = tmp_path_factory.mktemp("picking")
    sim, refs = field
    import os
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        write_micrographs(sim, ".")
        write_mrc("refs.mrcs", refs, PX)
    finally:
        os.chdir(cwd)
    return folder


def test_cli_autopick_and_extract(project, monkeypatch):
    monkeypatch.chdir(project)
    assert cli(["autopick", "--i", "micrographs.star", "--odir", "AutoPick/", "--ref", "refs.mrcs", "--ctf",
                "--invert", "--particle_diameter", "300", "--highpass", "600", "--ang", "20", "--quiet"]) == 0
    assert (project / "AutoPick" / "Micrographs" / "mic001_autopick.star").is_file()
    assert cli(["extract", "--i", "micrographs.star", "--coord_dir", "AutoPick/", "--part_star",
                "Extract/particles.star", "--extract_size", "64", "--norm", "--invert_contrast", "--quiet"]) == 0
    stack, _ = read_mrc(project / "Extract" / "particles.mrcs")
    y, x = np.mgrid[:64, :64] - 32
    bg = np.hypot(x, y) > 24
    assert stack.shape[1:] == (64, 64) and len(stack) >= 30
    assert np.allclose(stack[:, bg].mean(axis=1), 0, atol=1e-4) and np.allclose(stack[:, bg].std(axis=1), 1, atol=1e-4)


@pytest.mark.relion
def test_extraction_equals_relion_preprocess(project, monkeypatch):
    """Measured: the same pixels as relion_preprocess --extract --norm --invert_contrast (max difference 0)."""
    exe = requires_relion("relion_preprocess")
    monkeypatch.chdir(project)
    if not (project / "AutoPick").is_dir():
        cli(["autopick", "--i", "micrographs.star", "--odir", "AutoPick/", "--ref", "refs.mrcs", "--ctf", "--invert",
             "--particle_diameter", "300", "--highpass", "600", "--ang", "20", "--quiet"])
    assert cli(["extract", "--i", "micrographs.star", "--part_star", "Ours/particles.star", "--extract_size", "64",
                "--norm", "--bg_radius", "24", "--invert_contrast", "--quiet"]) == 0
    subprocess.run([exe, "--i", "micrographs.star", "--coord_dir", "AutoPick/", "--coord_suffix", "_autopick.star",
                    "--part_star", "Rel/particles.star", "--part_dir", "Rel/", "--extract", "--extract_size", "64",
                    "--norm", "--bg_radius", "24", "--invert_contrast"], check=True, capture_output=True)
    ours = read_mrc("Ours/particles.mrcs")[0]
    theirs = np.concatenate([read_mrc(p)[0] for p in sorted((project / "Rel" / "Micrographs").glob("*.mrcs"))])
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_name_file_and_field_and_write_nothing(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    blocks = {"optics": pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnMicrographPixelSize": [6.0, 3.0],
                                      "rlnVoltage": [300.0, 300.0]}),
              "micrographs": pd.DataFrame({"rlnMicrographName": ["Micrographs/mic001.mrc", "Micrographs/mic002.mrc"],
                                           "rlnOpticsGroup": [1, 2]})}
    write_star("mixed.star", blocks)
    with pytest.raises(CryolabInputError, match="mixed.star.*rlnMicrographPixelSize.*mixed pixel size"):
        read_micrographs("mixed.star")
    write_star("empty.star", {"micrographs": pd.DataFrame({"rlnMicrographName": pd.Series([], dtype=str)})})
    assert cli(["autopick", "--i", "empty.star", "--odir", "Bad1/", "--LoG", "--LoG_diam_min", "200",
                "--LoG_diam_max", "300", "--particle_diameter", "300"]) == 2
    assert "empty" in capsys.readouterr().err and not (project / "Bad1").exists()
    (project / "Coords" / "Micrographs").mkdir(parents=True)
    write_star(project / "Coords" / "Micrographs" / "mic001_autopick.star",
               {"": pd.DataFrame({"rlnCoordinateX": [100.0, 9000.0], "rlnCoordinateY": [100.0, 50.0]})})
    assert cli(["extract", "--i", "micrographs.star", "--coord_dir", "Coords/", "--part_star", "Bad2/particles.star",
                "--extract_size", "64"]) == 2
    err = capsys.readouterr().err
    assert "mic001_autopick.star" in err and "rlnCoordinateX" in err and "outside" in err
    assert not (project / "Bad2").exists()


@pytest.mark.relion
def test_relion_reconstruct_reads_extracted_particles_and_agrees(tmp_path, monkeypatch, demo_map):
    """Particles extracted at the true centres (true angles added to the STAR file) reconstructed by
    ``relion_reconstruct --ctf`` (run from the project folder) and by cryolab: measured map correlation
    0.991 between the two (at 20 A), 0.974 (cryolab) and 0.977 (RELION) with the true map; asserted 0.02
    and 0.05 below."""
    from cryolab.fourier import lowpass
    from cryolab.io import ParticleStack, read_particles, write_particles
    from cryolab.picking.files import coordinate_path, write_coordinates
    from cryolab.reconstruction import reconstruct_stack
    exe = requires_relion("relion_reconstruct")
    monkeypatch.chdir(tmp_path)
    sim = simulate_micrographs(demo_map, 4, 40, PX, size_px=640, particle_diameter_A=DIAMETER_A, snr=0.05,
                               snr_pixel_size_A=1.0, carbon=False, contaminants=0, seed=9)
    write_micrographs(sim, ".")
    for m, name in enumerate(sim.names):
        xy = sim.coordinates(m)
        write_coordinates(coordinate_path("Truth", f"Micrographs/{name}", "autopick"),
                          pd.DataFrame({"rlnCoordinateX": xy[:, 0], "rlnCoordinateY": xy[:, 1]}))
    assert cli(["extract", "--i", "micrographs.star", "--coord_dir", "Truth/", "--part_star", "Extract/particles.star",
                "--extract_size", "64", "--norm", "--invert_contrast", "--quiet"]) == 0
    table, optics = read_particles("Extract/particles.star")
    truth = sim.truth.assign(rlnMicrographName=[f"Micrographs/{sim.names[m]}" for m in sim.truth["micrograph"]])
    key = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
    truth = truth.rename(columns={"x_px": "rlnCoordinateX", "y_px": "rlnCoordinateY", "rot_deg": "rlnAngleRot",
                                  "tilt_deg": "rlnAngleTilt", "psi_deg": "rlnAnglePsi"}).astype({"rlnCoordinateX": float,
                                                                                                  "rlnCoordinateY": float})
    table = table.merge(truth[key + ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]], on=key, how="left")
    assert table["rlnAngleRot"].notna().all()
    write_particles("posed.star", table, optics)
    subprocess.run([exe, "--i", "posed.star", "--o", "relion.mrc", "--ctf", "--angpix", str(PX)], check=True,
                   capture_output=True)
    theirs = read_mrc("relion.mrc")[0]
    ours = reconstruct_stack(ParticleStack.from_star("posed.star"), ctf=True)
    ref = lowpass(demo_map, 20.0, PX, ndim=3)

    def corr(a, b):
        a, b = lowpass(a, 20.0, PX, ndim=3).ravel(), b.ravel()
        return float(np.corrcoef(a, b)[0, 1])
    assert corr(ours, lowpass(theirs, 20.0, PX, ndim=3)) > 0.97
    assert corr(ours, ref) > 0.92 and corr(theirs, ref) > 0.92


def test_picking_viewer_threshold_slider_repicks(field):
    """The viewer's picks at the picker's threshold are the picker's; a higher threshold gives a subset,
    and its precision/recall are match_picks' numbers."""
    pytest.importorskip("ipywidgets")
    from cryolab.widgets import PickingViewer
    sim, refs = field
    picker = Picker(PickSettings(particle_diameter_A=DIAMETER_A, highpass_A=600), PX, SIZE, _templates(refs))
    picks = picker.pick(sim.micrographs[0], sim.ctf[0])
    viewer = PickingViewer(sim.micrographs[0], picks, PX, DIAMETER_A, truth_xy=sim.coordinates(0), dpi=30)
    assert match_picks(viewer.xy, picks.xy(), 0.5)["tp"] == len(picks.table) == len(viewer.xy)
    viewer.slider.value = picks.threshold * 2
    fewer = viewer.xy
    assert 0 < len(fewer) < len(picks.table)
    s = viewer.scores()
    assert s["tp"] == match_picks(fewer, sim.coordinates(0), DIAMETER_A / 4 / PX)["tp"]
    assert f"{len(fewer)} picks" in viewer.summary.value and viewer.panel.value[:4] == b"\x89PNG"
