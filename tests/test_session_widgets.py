"""Widgets on a live Session: buttons drive the background run, panels follow each iteration.

Plain pytest, no browser: ``button.click()`` and setting ``.value`` fire the same handlers as a
user. A quick set: 120 particles of two views, 32 px, two classes.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from cryolab.data import load_demo  # noqa: E402
from cryolab.fourier import rescale  # noqa: E402
from cryolab.session import Session  # noqa: E402
from cryolab.simulate import simulate_particles, simulate_views_2d  # noqa: E402
from cryolab.widgets import ClassGallery, PosteriorExplorer, SessionDashboard  # noqa: E402
from cryolab.widgets.session import top_orientations, viewing_directions  # noqa: E402

WAIT_S = 60


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    sim = simulate_views_2d(vol, 120, d.pixel_size_A * 2, view_eulers=[[0, 0], [0, 90]], snr=0.5, seed=3,
                            out_dir=tmp_path_factory.mktemp("views"), name="views")
    return sim.star_path


@pytest.fixture(scope="module")
def stepped(star):
    """A MAP and a maxCC session after one iteration each (shared by the read-only tests)."""
    sessions = {mode: Session(star, K=2, mode=mode, seed=0) for mode in ("map", "maxcc")}
    for s in sessions.values():
        s.step()
    return sessions


def test_step_button_advances_the_session_and_redraws(star):
    s = Session(star, K=2, mode="map", seed=0)
    dash = SessionDashboard(s)
    before = {name: p.value for name, p in dash.panels.items()}
    assert "iteration 0" in dash.status.value
    dash.step_button.click()
    assert dash.wait(WAIT_S)
    assert s.iteration == 1 and len(s.history) == 1
    assert "iteration 1" in dash.status.value and "idle" in dash.status.value
    for name, panel in dash.panels.items():
        assert panel.value != before[name], name
    assert not dash.errors
    assert not dash.step_button.disabled and dash.stop_button.disabled


def test_controls_call_session_set(star):
    s = Session(star, K=2, mode="map", seed=0)
    dash = SessionDashboard(s)
    dash.tau2_fudge.value = 4.0
    dash.resolution_limit_A.value = 20.0
    dash.psi_step_deg.value = 15.0
    assert (s.settings.tau2_fudge, s.settings.resolution_limit_A, s.settings.psi_step_deg) == (4.0, 20.0, 15.0)
    dash.resolution_limit_A.value = 0.0
    assert s.settings.resolution_limit_A is None


def test_run_button_runs_in_the_background_and_stop_ends_it(star):
    s = Session(star, K=2, mode="map", seed=0)
    dash = SessionDashboard(s, iterations=2)
    dash.run_button.click()
    assert dash.running and dash.step_button.disabled  # click returned while the engine works
    assert dash.wait(WAIT_S)
    assert s.iteration == 2 and "iteration 2" in dash.status.value

    dash.iterations.value = 50
    dash.run_button.click()
    dash.toggle_pause()
    assert "paused" in dash.status.value and dash.pause_button.description == "Resume"
    dash.tau2_fudge.value = 3.0                    # applied as soon as the current iteration ends
    dash.stop_button.click()
    assert dash.wait(WAIT_S)
    assert s.iteration <= 3 and "idle" in dash.status.value
    assert s.settings.tau2_fudge == 3.0
    assert not dash.errors


def test_posterior_explorer_follows_the_slider(stepped):
    s, m = stepped["map"], stepped["maxcc"]
    ex = PosteriorExplorer(s, compare=m)
    png = ex.panel.value
    for i in (7, 42):
        ex.index.value = i
        np.testing.assert_allclose(ex.class_probabilities, s.posterior(i)["classes"])
        assert ex.class_probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert ex.panel.value != png
        png = ex.panel.value
        assert f"particle {i}" in ex.caption.value
        assert 1 <= len(ex.top[0]) <= 3
        probs = [p for _, _, p in ex.top[0]]
        assert probs == sorted(probs, reverse=True)
        # maxCC: one orientation takes all the probability
        assert ex.top[1] == top_orientations(m.posterior(i))
        assert len(ex.top[1]) == 1 and ex.top[1][0][2] == pytest.approx(1.0)
        assert ex.posteriors[1]["pmax"] == pytest.approx(1.0)


def test_posterior_explorer_3d_shows_viewing_directions(tmp_path):
    d = load_demo()
    vol = rescale(d.volumes["80S"], 24, ndim=3)
    sim = simulate_particles(vol, 40, d.pixel_size_A * d.box_size / 24, snr=0.5, seed=5, out_dir=tmp_path, name="p3d")
    refs = np.stack([vol, vol[::-1]]).astype(np.float32)
    s = Session(sim.star_path, K=2, references=refs, healpix_order=1, offset_range_px=1, oversampling=0, seed=0)
    s.step()
    ex = PosteriorExplorer(s)
    png = ex.panel.value
    for i in (3, 17):
        ex.index.value = i
        post = s.posterior(i)
        np.testing.assert_allclose(ex.class_probabilities, post["classes"])
        assert ex.class_probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert ex.panel.value != png
        png = ex.panel.value
        samples = post["samples"]
        np.testing.assert_array_equal(samples["rot_deg"], s.top_samples[i][1][:, 0])
        np.testing.assert_array_equal(samples["tilt_deg"], s.top_samples[i][1][:, 1])
        np.testing.assert_array_equal(samples["psi_deg"], s.top_samples[i][1][:, 2])
        np.testing.assert_array_equal(ex.directions[0], viewing_directions(post))
        rot, tilt, p = ex.directions[0].T
        assert len(p) >= 1 and np.all(np.diff(p) <= 1e-12) and p.sum() <= 1 + 1e-5
        assert np.all((tilt >= 0) & (tilt <= 180))
        assert 1 <= len(ex.top[0]) <= 3
        k, (r, t, psi), p0 = ex.top[0][0]
        assert 1 <= k <= 2 and p0 == pytest.approx(max(q for _, _, q in top_orientations(post, 100)))
        assert f"particle {i}" in ex.caption.value
    assert not ex.errors
    # the direction map is labelled (rot, tilt, a probability colour bar) and the particle has a scale bar
    texts = [t for t, _ in ex.panel.text_boxes]
    assert {"rot", "tilt", "probability"} <= set(texts) and any(t.endswith(" nm") or t.endswith(" Å") for t in texts)
    from cryolab.widgets._display import overlapping_text
    assert overlapping_text(ex.panel.text_boxes) == []


def test_top_orientations_sum_over_offsets():
    post = {"samples": {"class": np.array([1, 1, 2, 1]), "psi_deg": np.array([10.0, 10.0, 20.0, 30.0]),
                        "probability": np.array([0.3, 0.2, 0.4, 0.0])}}
    assert top_orientations(post, 2) == [(1, 10.0, pytest.approx(0.5)), (2, 20.0, pytest.approx(0.4))]
    assert top_orientations({"classes": np.ones(2) / 2}) == []


def test_class_gallery_keep_discard_apply(stepped):
    s = stepped["map"]
    gallery = ClassGallery(s)
    counts = np.bincount(s.classes, minlength=2)
    assert gallery.kept_classes == [1, 2]
    gallery.toggles[1].value = False                      # same as clicking "keep" on class 2
    assert gallery.toggles[1].description == "discard" and gallery.kept_classes == [1]
    gallery.apply_button.click()
    assert len(gallery.selected) == counts[0]
    assert f"selected {counts[0]} of 120" in gallery.summary.value
    np.testing.assert_array_equal(gallery.selected.read([0]), s.particles.read(s.class_members([1])[:1]))
    gallery.discard(1)
    assert gallery.apply() is None and gallery.kept_classes == []


def test_dashboard_panels_are_sharp_and_their_labels_do_not_overlap(star):
    from cryolab.widgets._display import overlapping_text
    s = Session(star, K=3, mode="map", seed=0)
    dash = SessionDashboard(s)
    before = [t for p in dash.panels.values() for t, _ in p.text_boxes]
    assert "0.04" not in before and "−0.04" not in before       # no arbitrary axis before the first step
    s.run(2, progress=False)      # observers redraw the panels
    for name, panel in dash.panels.items():
        png_width = int.from_bytes(panel.value[16:20], "big")
        assert png_width == 2 * float(panel.layout.width.rstrip("px")), name      # device pixel ratio 2
        assert overlapping_text(panel.text_boxes) == [], (name, overlapping_text(panel.text_boxes))
    # the SSNR axis starts at 1e-2 whatever an emptied class does; the status names the plotted iteration
    ticks = [t for t, _ in dash.panels["spectra"].text_boxes if "10^{" in t]
    assert ticks and all(int(t.split("10^{")[1].split("}")[0].replace("−", "-")) >= -2 for t in ticks), ticks
    assert f"iteration {s.history[-1].iteration}</b>" in dash.status.value
