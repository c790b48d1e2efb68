"""Checkpoints and inputs around focused classification: a resumed run subtracts again, array and
relative masks survive a checkpoint, poses are required where they are used, and the helpers
that serve the method behave at their edges (found in review)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import rack1_set
from cryolab.engine.forward import class_log_likelihoods
from cryolab.engine.subtracted import SubtractedParticles
from cryolab.errors import CryolabInputError
from cryolab.io import ParticleStack, write_mrc
from cryolab.methods.focused import focused_class3d
from cryolab.session import Session
from cryolab.simulate import write_simulation

BOX = 32


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    sim, _, keep, px, consensus = rack1_set(80, 3.0, 5, BOX)
    folder = tmp_path_factory.mktemp("fc")
    star = write_simulation(sim, folder, "p", include_truth_angles=True)
    no_angles = write_simulation(sim, folder, "plain")
    return star, no_angles, consensus, keep, px, sim


def test_a_resumed_focused_run_subtracts_again(case, tmp_path):
    star, _, consensus, keep, _, _ = case
    f = focused_class3d(star, consensus, keep, K=2, iterations=2, progress=False, ini_high_A=30.0)
    f.session.save(tmp_path)
    again = Session.resume(tmp_path)
    assert isinstance(again.particles, SubtractedParticles)
    np.testing.assert_array_equal(again.particles.read([0, 1]), f.session.particles.read([0, 1]))
    again.step()                                        # and it goes on
    assert again.iteration == 3
    with pytest.raises(CryolabInputError, match="in this process only"):
        again.set(scheduler="local:2")
        again.step()


def test_array_and_relative_masks_survive_checkpoints(case, tmp_path, monkeypatch):
    from cryolab.methods.refine import AutoRefine
    star, _, consensus, keep, px, _ = case
    r = AutoRefine(ParticleStack.from_star(star).subset(np.arange(40)), consensus, healpix_order=1,
                   offset_range_px=1, reference_mask=keep, ini_high_A=40.0)
    r.step()
    r.save(tmp_path / "R")                              # an array mask: written beside the checkpoint
    back = AutoRefine.resume(tmp_path / "R")
    np.testing.assert_allclose(back.halves[0].reference_mask_array(), keep, atol=1e-6)
    monkeypatch.chdir(tmp_path)
    write_mrc(tmp_path / "keep.mrc", keep, px)
    s = Session(star, K=2, references=np.stack([consensus, consensus]), skip_align=True, reference_mask="keep.mrc")
    s.save(tmp_path / "S")
    monkeypatch.chdir(tmp_path / "S")                   # resume from another folder
    assert Session.resume(tmp_path / "S").reference_mask_array().shape == (BOX,) * 3


def test_fixed_poses_need_angles_and_one_mode(case):
    star, no_angles, consensus, _, _, _ = case
    refs = np.stack([consensus, consensus])
    with pytest.raises(CryolabInputError, match="3D angles"):
        Session(no_angles, K=2, references=refs, skip_align=True)
    with pytest.raises(CryolabInputError, match="choose one"):
        Session(star, K=2, references=refs, skip_align=True, sigma_ang_deg=5.0)


def test_report_of_a_focused_session(case):
    from cryolab.report import session_report
    star, _, consensus, keep, _, _ = case
    f = focused_class3d(star, consensus, keep, K=2, iterations=1, progress=False, ini_high_A=30.0)
    html = session_report(f.session)
    assert "cryolab class3d --i" in html and "--skip_align" in html


def test_per_image_scale_in_batches(case):
    star, _, consensus, _, px, sim = case
    stack = ParticleStack.from_star(star)
    rows = np.arange(5)
    scale = np.linspace(0.5, 1.5, 5)
    a = class_log_likelihoods(stack.read(rows), [consensus], stack.eulers(rows), stack.origins_A(rows) / px,
                              stack.ctf(rows), px, scale=scale, batch_size=2)
    b = [class_log_likelihoods(stack.read([i]), [consensus], stack.eulers([i]), stack.origins_A([i]) / px,
                               stack.ctf([i]), px, scale=float(scale[i]))[0, 0] for i in rows]
    np.testing.assert_allclose(a[:, 0], b, rtol=1e-6)


def test_resampled_reference_keeps_its_centre(tmp_path, caplog):
    """A map at another pixel size whose resampled box is odd, padded into an even box: the
    centre voxel N//2 stays the centre."""
    from cryolab.cli.common import reference_map
    vol = np.zeros((32,) * 3, np.float32)
    vol[16, 16, 16] = 1.0
    path = write_mrc(tmp_path / "ref.mrc", vol, 1.0)

    class Stack:                                         # what reference_map reads of the particles
        pixel_size_A, box_size = 32 / 31, 32
    with caplog.at_level(logging.WARNING, logger="cryolab"):
        out = reference_map(path, Stack())
    assert "padded" in caplog.text
    assert np.unravel_index(np.argmax(out), out.shape) == (16, 16, 16)


def test_a_stop_in_the_middle_of_an_estep_leaves_the_last_iteration(case):
    """Per-particle results of an interrupted E-step are not half committed."""
    star, _, consensus, _, _, _ = case
    s = Session(star, K=2, references=np.stack([consensus, consensus * 0.9]), skip_align=True, batch_size=16)
    s.parallel = "threads"          # reads here call stop(); in worker processes: tests/test_batches.py
    s.step()
    before = {k: np.copy(getattr(s, k)) for k in ("classes", "pmax", "loglik", "class_posterior")}
    calls = {"n": 0}
    original = s.particles.read

    def read_then_stop(rows):
        calls["n"] += 1
        if calls["n"] == 2:
            s.stop()                                    # after the first batch of the next E-step
        return original(rows)
    s.particles.read = read_then_stop
    with pytest.raises(InterruptedError):
        s.step()
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(s, k), v)
    assert s.iteration == 1 and s.sums is None
