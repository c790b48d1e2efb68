"""Picking on non-square micrographs (rows != columns, as 3710 x 3838 or 5760 x 4092 detectors give them): the
simulator, template and LoG picking, the figure-of-merit maps, ``cryolab autopick`` / ``cryolab extract`` and the
picking widget, with values checked against the simulation's truth and against the same micrograph transposed.

One micrograph of 384 x 640 pixels (6 A/px, 14 ribosomes, SNR 0.05 per 2-A pixel, one contaminant, carbon edge)
and one of 640 x 384 (picked as it is and transposed), ~25 s.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryolab.cli.main import main as cli
from cryolab.data import load_demo
from cryolab.io import read_mrc, read_star, write_mrc
from cryolab.picking import Picker, PickSettings, make_templates, match_picks
from cryolab.picking.files import coordinate_path, write_coordinates
from cryolab.picking.picker import search_grid
from cryolab.projection import FourierProjector
from cryolab.simulate import simulate_micrographs, write_micrographs

PX, DIAMETER_A, SHAPE = 6.0, 300.0, (384, 640)
VIEWS = [[0, 0, 0], [0, 90, 0], [90, 90, 0], [45, 45, 0], [135, 45, 0], [45, 135, 0], [90, 30, 0], [160, 120, 0]]
RADIUS_PX = DIAMETER_A / 4 / PX


@pytest.fixture(scope="module")
def demo_map():
    return load_demo().volumes["80S"]


@pytest.fixture(scope="module")
def wide(demo_map):
    return simulate_micrographs(demo_map, 1, 14, PX, size_px=SHAPE, particle_diameter_A=DIAMETER_A, snr=0.05,
                                snr_pixel_size_A=2.0, contaminants=1, seed=22)


def test_simulated_micrograph_is_rectangular_and_its_truth_lies_on_it(wide):
    """Shape (rows, columns) as asked; every true centre a box's half from the edges, x along the columns (up to
    639, here 601) and y along the rows (up to 383); the particles are where the truth says (the micrograph
    low-passed to 60 A, dark particles: below its median at 14 of 14 centres, measured; asserted 13)."""
    from cryolab.picking.score import band_filter
    from cryolab.simulate.micrographs import filter_micrograph
    mic, xy = wide.micrographs[0], wide.coordinates(0)
    assert mic.shape == SHAPE and len(xy) == 14
    half = wide.info["box"] / 2
    assert np.all(xy[:, 0] >= half) and np.all(xy[:, 0] <= SHAPE[1] - half) and xy[:, 0].max() > SHAPE[0]
    assert np.all(xy[:, 1] >= half) and np.all(xy[:, 1] <= SHAPE[0] - half)
    smooth = filter_micrograph(mic, band_filter(mic.shape, PX, 60.0))
    at = smooth[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    assert np.sum(at < np.median(smooth)) >= 13


def test_search_grid_keeps_one_scale_on_both_axes():
    """The longer side an even 5-smooth length, the shorter covering the micrograph at the same scale."""
    for shape in [(3710, 3838), (5760, 4092), (384, 640), (4096, 4096)]:
        grid, scale = search_grid(shape, 1.0, 20.0)
        n, g = max(shape), max(grid)
        rest = g
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        assert g % 2 == 0 and rest == 1 and n / g == pytest.approx(scale)
        assert all(0 <= side * scale - real < scale + 1e-9 for side, real in zip(grid, shape))
        assert grid.index(g) == shape.index(n)


def test_template_and_log_picking_on_a_rectangle(wide, demo_map):
    """Template (CTF, 20 A low-pass, in-plane step 20 deg) and LoG (200-350 A) picks against the truth: measured
    template precision 0.92, recall 0.86 (12 of 14; the film edge found at z 13.5, the film masked exactly); LoG
    1.00 / 1.00; asserted 0.85 / 0.8. The figure-of-merit map has the search grid's shape (rows, columns)."""
    refs = FourierProjector(demo_map).project(np.array(VIEWS, float))
    templates = make_templates(refs, PX, particle_diameter_A=DIAMETER_A, psi_step_deg=20, map3d=False, invert=True)
    truth = wide.coordinates(0)
    for settings, t in [(PickSettings(particle_diameter_A=DIAMETER_A, highpass_A=600), templates),
                        (PickSettings(particle_diameter_A=DIAMETER_A, mode="log", log_diameters_A=(200, 350)), None)]:
        picker = Picker(settings, PX, SHAPE, t)
        picks = picker.pick(wide.micrographs[0], wide.ctf[0])
        assert picks.fom.shape == picker.grid_shape and picker.grid_shape[1] > picker.grid_shape[0]
        xy = picks.xy()
        assert np.all((xy >= 0) & (xy < [SHAPE[1], SHAPE[0]]))
        r = match_picks(xy, truth, RADIUS_PX)
        assert r["precision"] >= 0.85 and r["recall"] >= 0.8, (settings.mode, r["precision"], r["recall"])


def test_log_picks_of_the_transposed_micrograph_are_the_transposed_picks(demo_map):
    """LoG filters are isotropic: picking a 640 x 384 micrograph and its 384 x 640 transpose gives the same
    centres with x and y swapped (measured: identical sets)."""
    sim = simulate_micrographs(demo_map, 1, 12, PX, size_px=(640, 384), particle_diameter_A=DIAMETER_A, snr=0.1,
                               snr_pixel_size_A=2.0, carbon=False, contaminants=0, seed=4)
    settings = PickSettings(particle_diameter_A=DIAMETER_A, mode="log", log_diameters_A=(200, 350))
    tall = Picker(settings, PX, (640, 384)).pick(sim.micrographs[0]).xy()
    flat = Picker(settings, PX, (384, 640)).pick(sim.micrographs[0].T.copy()).xy()
    assert len(tall) >= 10 and match_picks(tall, flat[:, ::-1], 1.0)["tp"] == len(tall) == len(flat)
    assert match_picks(tall, sim.coordinates(0), RADIUS_PX)["recall"] >= 0.9


def test_cli_autopick_extract_and_widget_on_a_rectangle(wide, tmp_path, monkeypatch):
    """``cryolab autopick --LoG`` on a 384 x 640 micrograph writes the picker's coordinates; ``cryolab extract``
    at the true centres cuts the micrograph's own pixels (normalisation off: equal to the slices, difference 0);
    the widget shows the rectangle with its picks."""
    pytest.importorskip("ipywidgets")
    from cryolab.widgets import PickingViewer
    monkeypatch.chdir(tmp_path)
    write_micrographs(wide, ".")
    assert cli(["autopick", "--i", "micrographs.star", "--odir", "AutoPick/", "--LoG", "--LoG_diam_min", "200",
                "--LoG_diam_max", "350", "--particle_diameter", "300", "--write_fom_maps", "--quiet"]) == 0
    table = next(iter(read_star(coordinate_path("AutoPick", "Micrographs/mic001.mrc")).values()))
    picker = Picker(PickSettings(particle_diameter_A=DIAMETER_A, mode="log", log_diameters_A=(200, 350)), PX, SHAPE)
    picks = picker.pick(read_mrc("Micrographs/mic001.mrc")[0].reshape(SHAPE))
    assert np.array_equal(table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float), picks.xy())
    fom = read_mrc(coordinate_path("AutoPick", "Micrographs/mic001.mrc", "autopick_fom").with_suffix(".mrc"))[0]
    assert fom.reshape(-1, picker.grid_shape[1]).shape == picker.grid_shape
    xy = wide.coordinates(0)
    write_coordinates(coordinate_path("Truth", "Micrographs/mic001.mrc", "autopick"),
                      pd.DataFrame({"rlnCoordinateX": xy[:, 0], "rlnCoordinateY": xy[:, 1]}))
    assert cli(["extract", "--i", "micrographs.star", "--coord_dir", "Truth/", "--part_star", "Extract/particles.star",
                "--extract_size", "64", "--quiet"]) == 0
    stack = read_mrc("Extract/particles.mrcs")[0]
    mic = wide.micrographs[0]
    inside = [(x, y) for x, y in xy.astype(int) if 32 <= x <= SHAPE[1] - 32 and 32 <= y <= SHAPE[0] - 32]
    assert len(stack) == len(inside) >= 12
    expected = np.stack([mic[y - 32:y + 32, x - 32:x + 32] for x, y in inside])
    assert np.abs(stack - expected).max() == 0
    viewer = PickingViewer(mic, picks, PX, DIAMETER_A, truth_xy=xy, dpi=30)
    assert viewer.image.shape == SHAPE and match_picks(viewer.xy, picks.xy(), 0.5)["tp"] == len(picks.table)
    assert viewer.scores()["recall"] == match_picks(picks.xy(), xy, RADIUS_PX)["recall"]
    assert viewer.panel.value[:4] == b"\x89PNG"


def test_rectangular_ctf_plane_and_scores_against_independent_references():
    """The micrograph CTF on a 48 x 80 grid equals ``ctf_1d`` at each pixel's frequency and azimuth, and on a
    square grid ``ctf_2d`` (to 1e-6); the closed-form plane equals ``numpy.linalg.lstsq``'s (to 1e-5); the
    template z-score on a 96 x 160 micrograph equals a brute-force correlation of the filtered template with
    the micrograph at 12 pixels (to 1e-4); each LoG scale is a unit-variance field on white noise (standard
    deviation over 24 fields of 192 x 320: measured 0.98-1.00 for 120-300 A; asserted within 0.05)."""
    from cryolab.ctf import CTFParams, ctf_1d, ctf_2d
    from cryolab.picking.score import _ctf_grid, band_filter, log_map, ncc_map, subtract_plane, white_noise_std
    from cryolab.simulate.micrographs import micrograph_ctf
    ctf = CTFParams(defocus_u_A=18000.0, defocus_v_A=16500.0, defocus_angle_deg=35.0)
    c = micrograph_ctf(ctf, (48, 80), 6.0)
    for iy, ix in [(0, 0), (5, 7), (47, 40), (30, 13), (24, 3)]:
        fy, fx = np.fft.fftfreq(48)[iy] / 6.0, ix / 80 / 6.0
        ref = ctf_1d(ctf, [np.hypot(fx, fy)], np.degrees(np.arctan2(fy, fx)))[0, 0]
        assert abs(c[iy, ix] - ref) < 1e-6
    square = np.fft.ifftshift(ctf_2d(ctf, 64, 6.0, dtype=np.float64)[0], axes=0)
    assert np.abs(micrograph_ctf(ctf, 64, 6.0) - square).max() < 1e-6
    rng = np.random.default_rng(7)
    img = rng.standard_normal((40, 70)) + np.arange(70)[None] * 0.3 - np.arange(40)[:, None] * 0.2
    yy, xx = np.mgrid[:40, :70]
    design = np.stack([np.ones(img.size), xx.ravel(), yy.ravel()], -1)
    lsq = img - (design @ np.linalg.lstsq(design, img.ravel(), rcond=None)[0]).reshape(img.shape)
    assert np.abs(subtract_plane(img) - lsq).max() < 1e-5
    mic = rng.standard_normal((96, 160)).astype(np.float32)
    y, x = np.mgrid[:16, :16] - 8
    template = (np.exp(-(x ** 2 + y ** 2) / 12.0) * (1 + 0.3 * x / 8))[None].astype(np.float32)
    fom = ncc_map(mic, template, 6.0, ctf=ctf, lowpass_A=20.0)[0]
    h = band_filter((96, 160), 6.0, 20.0)
    big = np.zeros((96, 160))
    big[np.ix_((np.arange(16) - 8) % 96, (np.arange(16) - 8) % 160)] = template[0]
    weight = _ctf_grid(ctf, (96, 160), 6.0) * h * h
    weight[0, 0] = 0.0
    g = np.fft.irfft2(np.fft.rfft2(big) * weight, s=(96, 160))      # the filtered template, origin at pixel 0
    sigma = white_noise_std(mic, h.astype(np.float32), 8)
    for py, px in zip(rng.integers(0, 96, 12), rng.integers(0, 160, 12)):
        direct = np.sum(g * np.roll(mic, (-py, -px), axis=(0, 1))) / (sigma * np.linalg.norm(g))
        assert abs(fom[py, px] - direct) < 1e-4, (py, px)
    for d in (120.0, 200.0, 300.0):
        var = [log_map(rng.standard_normal((192, 320)).astype(np.float32), 6.0, [d], lowpass_A=20.0)[0].var()
               for _ in range(24)]
        assert abs(np.sqrt(np.mean(var)) - 1) < 0.05, (d, np.sqrt(np.mean(var)))
