"""Widgets: moving a control updates the model, and the arrays shown agree with cryolab's modules.

Plain pytest, no browser: setting ``slider.value`` fires the same observers as a user's drag.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from cryolab.ctf import CTFParams, ctf_1d, phase_flip  # noqa: E402
from cryolab.fourier import fft2c, rfft2c  # noqa: E402
from cryolab.projection import FourierProjector, project_real  # noqa: E402
from cryolab.validation import resolution_at  # noqa: E402
from cryolab.widgets import (CTFExplorer, FSCViewer, MapViewer, ProjectionSliceExplorer,  # noqa: E402
                             example_map, phantom_volume)
from cryolab.widgets._display import full_from_half  # noqa: E402
from cryolab.widgets.viewers import have_nglview  # noqa: E402

PIXEL_A = 4.0


@pytest.fixture(scope="module")
def volume():
    return phantom_volume(32, seed=3)


def _corr(a, b):
    a, b = a.ravel(), b.ravel()
    return float(np.vdot(a, b).real / np.sqrt(np.vdot(a, a).real * np.vdot(b, b).real))


@pytest.mark.parametrize("n", [16, 15])
def test_full_from_half_matches_full_transform(n):
    img = np.random.default_rng(n).normal(size=(n, n))
    np.testing.assert_allclose(full_from_half(rfft2c(img), n), fft2c(img), atol=1e-9)


def test_projection_slice_explorer_follows_sliders(volume):
    w = ProjectionSliceExplorer(volume, PIXEL_A)
    before, png_before = w.projection.copy(), w.panel.value
    w.rot.value, w.tilt.value, w.psi.value = 30.0, 55.0, -20.0
    eulers = np.array([30.0, 55.0, -20.0])
    np.testing.assert_array_equal(w.eulers_deg, eulers)
    assert not np.allclose(w.projection, before)
    assert w.panel.value != png_before
    np.testing.assert_allclose(w.projection, project_real(volume, eulers), rtol=1e-5, atol=1e-5)
    slice_ft = FourierProjector(volume).project_ft(eulers[None])[0]
    np.testing.assert_allclose(w.slice_ft, slice_ft, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("eulers", [(0, 0, 0), (40, 70, 10), (-120, 150, 85)])
def test_projection_slice_theorem_in_the_explorer_arrays(volume, eulers):
    w = ProjectionSliceExplorer(volume, PIXEL_A, *eulers)
    assert _corr(rfft2c(w.projection), w.slice_ft) > 0.99
    assert w.correlation == pytest.approx(_corr(w.projection_ft, w.slice_ft))


def test_ctf_explorer_curve_image_and_flip_follow_defocus(volume):
    w = CTFExplorer(volume, pixel_size_A=PIXEL_A, euler_deg=(10, 40, 0))
    before = w.image.copy()
    w.defocus.value = 2.5
    w.bfactor.value = 100.0
    p = CTFParams(defocus_u_A=25000.0, defocus_v_A=25000.0, bfactor_A2=100.0)
    assert w.params.defocus_u_A == pytest.approx(25000.0)
    np.testing.assert_allclose(w.ctf_curve, ctf_1d(p, w.freq_per_A)[0], atol=1e-12)
    np.testing.assert_allclose(w.envelope, np.exp(-100.0 * w.freq_per_A ** 2 / 4), rtol=1e-10)
    expected = FourierProjector(volume).project(np.array([[10.0, 40.0, 0.0]]), ctf=p,
                                                pixel_size_A=PIXEL_A)[0]
    assert not np.allclose(w.image, before)
    np.testing.assert_allclose(w.image, expected, atol=1e-4)
    np.testing.assert_allclose(w.flipped, phase_flip(expected[None], p, PIXEL_A)[0], atol=1e-4)
    assert w.ctf_image.shape == (32, 32)


def test_ctf_explorer_astigmatism_voltage_and_several_defoci():
    w = CTFExplorer(pixel_size_A=1.0, box_px=64)
    assert not hasattr(w, "image")
    w.astigmatism.value, w.angle.value, w.voltage.value = 0.4, 30.0, 200
    assert w.params.defocus_u_A - w.params.defocus_v_A == pytest.approx(4000.0)
    assert w.params.voltage_kV == 200.0
    np.testing.assert_allclose(w.ctf_curve, ctf_1d(w.params, w.freq_per_A, 30.0)[0])
    np.testing.assert_allclose(w.ctf_curve_v, ctf_1d(w.params, w.freq_per_A, 120.0)[0])
    # one defocus leaves zeros in CTF^2; several defoci fill them beyond the first peak
    band = (w.freq_per_A > 0.05) & (w.freq_per_A < 0.3)
    w.n_defoci.value = 1
    assert w.ctf2_mean[band].min() < 1e-3 and (w.ctf2_mean[band] < 0.05).mean() > 0.1
    w.n_defoci.value = 5
    assert w.ctf2_each.shape == (5, w.freq_per_A.size)
    assert (w.ctf2_mean[band] < 0.05).mean() < 0.02
    assert np.ptp(w.defoci_A) == pytest.approx(4 * w.defocus_step.value * 1e4)


def test_map_viewer_slices_fallback(volume):
    w = MapViewer(volume, PIXEL_A, backend="slices", threshold_sigma=1.0)
    png = w.panel.value
    w.slider.value = 3.0
    assert w.threshold == pytest.approx(volume.mean() + 3.0 * volume.std(), rel=1e-5)
    assert w.panel.value != png
    np.testing.assert_array_equal(w.sections["xy (z = centre)"], volume[16])
    np.testing.assert_array_equal(w.sections["maximum along z"], volume.max(axis=0))
    w.set_volume(volume[::-1])
    np.testing.assert_array_equal(w.sections["xy (z = centre)"], volume[::-1][16])


@pytest.mark.skipif(not have_nglview(), reason="nglview is not installed")
def test_map_viewer_nglview_threshold_reaches_the_representation(volume):
    w = MapViewer(volume, PIXEL_A, backend="nglview")
    assert w.view is not None and w.panel is None
    w.slider.value = 4.5
    calls = [m for m in w.view._ngl_msg_archive if m.get("methodName") == "setParameters"
             and m.get("target") == "Representation"]
    assert calls and calls[-1]["kwargs"]["isolevel"] == 4.5


def test_fsc_viewer_marks_resolutions():
    n, px = 64, 2.0
    shells = np.arange(n // 2 + 1)
    a = 1 / (1 + np.exp((shells - 20) / 2.0))
    b = 1 / (1 + np.exp((shells - 12) / 2.0))
    w = FSCViewer({"half maps": a, "vs truth": b}, n, px)
    assert w.resolutions_A["half maps"][0.143] == pytest.approx(resolution_at(a, 0.143, n, px))
    assert w.resolutions_A["vs truth"][0.5] == pytest.approx(resolution_at(b, 0.5, n, px))
    assert w.resolutions_A["half maps"][0.143] < w.resolutions_A["vs truth"][0.143]
    png = w.panel.value
    w.add(a ** 2, "iteration 2")
    assert list(w.curves) == ["half maps", "vs truth", "iteration 2"] and w.panel.value != png
    w.show_half.value = False
    assert "0.5" not in w.caption.value
    assert list(FSCViewer(a, n, px).curves) == ["FSC"]
    for empty in ({}, []):                    # start empty (e.g. before the first iteration), add later
        e = FSCViewer(empty, n, px)
        assert e.curves == {} and e.panel.value
        e.add(a, "iteration 1")
        assert e.resolutions_A["iteration 1"][0.143] == pytest.approx(resolution_at(a, 0.143, n, px))


def test_example_map_is_cubic():
    vol, px = example_map()
    assert vol.ndim == 3 and len(set(vol.shape)) == 1 and px > 0 and vol.std() > 0


def _png_width(png: bytes) -> int:
    return int.from_bytes(png[16:20], "big")          # IHDR width of a PNG


def test_fsc_viewer_names_the_criterion_per_curve_and_flags_nyquist():
    n, px = 64, 2.0
    shells = np.arange(n // 2 + 1)
    half = 1 / (1 + np.exp((shells - 20) / 2.0))
    truth = 1 / (1 + np.exp((shells - 12) / 2.0))
    w = FSCViewer({"half maps": half, "vs truth": truth, "never crosses": np.ones(n // 2 + 1)}, n, px,
                  criteria={"vs truth": 0.5})
    assert w.criteria == {"half maps": 0.143, "vs truth": 0.5, "never crosses": 0.143}
    assert w.resolution_text("vs truth") == f"{resolution_at(truth, 0.5, n, px):.1f} Å"
    assert w.resolution_text("never crosses") == "≥ Nyquist (4.0 Å)" and not w.crosses["never crosses"][0.143]
    assert "≥ Nyquist" in w.caption.value
    # drawn at twice the CSS width (device pixel ratio 2), shown at the figure's size, no label on another
    assert _png_width(w.panel.value) == 2 * float(w.panel.layout.width.rstrip("px"))
    from cryolab.widgets._display import overlapping_text
    texts = [t for t, _ in w.panel.text_boxes]
    assert "0.143" in texts and "0.5" in texts
    assert overlapping_text(w.panel.text_boxes) == []
