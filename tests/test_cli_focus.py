"""``cryolab subtract`` and a focused ``cryolab class3d`` from the command line, run from a
project folder as RELION would be: outputs, full maps from the original images, the way back,
and bad input refused before anything is written."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import rack1_set
from cryolab.cli import main
from cryolab.io import ParticleStack, read_mrc, read_star, write_mrc
from cryolab.simulate import write_simulation
from cryolab.validation import class_accuracy

BOX = 32


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    sim, _, keep, px, consensus = rack1_set(240, 3.0, 4, BOX)
    root = tmp_path_factory.mktemp("project")
    (root / "Refine3D").mkdir()
    write_simulation(sim, root / "Refine3D", "run_data", include_truth_angles=True)
    write_mrc(root / "Refine3D" / "run_class001.mrc", consensus, px)
    write_mrc(root / "keep.mrc", keep, px)
    write_mrc(root / "keep40.mrc", np.zeros((40,) * 3, np.float32) + 0.5, px)
    write_mrc(root / "empty.mrc", np.zeros((BOX,) * 3, np.float32), px)
    return root, sim


def run(*args) -> int:
    return main([str(a) for a in args])


def test_subtract_focused_class3d_full_maps_and_revert(project, monkeypatch):
    root, sim = project
    monkeypatch.chdir(root)
    assert run("subtract", "--i", "Refine3D/run_data.star", "--ref", "Refine3D/run_class001.mrc",
               "--mask", "keep.mrc", "--o", "Subtract/job001", "--quiet") == 0
    sub = ParticleStack.from_star("Subtract/job001/particles_subtracted.star")
    assert len(sub) == 240 and (root / "Subtract/job001/particles_subtracted_run.json").exists()
    assert run("class3d", "--i", "Subtract/job001/particles_subtracted.star", "--ref", "Refine3D/run_class001.mrc",
               "--o", "Class3D/job002/run", "--K", 2, "--iter", 6, "--skip_align", "--solvent_mask", "keep.mrc",
               "--ini_high", 30, "--ctf", "--quiet") == 0
    data = read_star("Class3D/job002/run_it006_data.star")["particles"]
    acc = class_accuracy(data["rlnClassNumber"].to_numpy() - 1, sim.truth["class_index"].to_numpy())
    assert acc >= 0.9, acc                                   # measured 0.954 (6 iterations, 240 particles)
    assert "rlnImageOriginalName" in data.columns            # the route back to the originals
    full = [read_mrc(f"Class3D/job002/run_it006_class{k:03d}_full.mrc")[0] for k in (1, 2)]
    assert all(m.shape == (BOX,) * 3 and np.isfinite(m).all() for m in full)
    assert run("subtract", "--revert", "Subtract/job001/particles_subtracted.star", "--o", "Subtract/orig.star",
               "--quiet") == 0
    back, orig = ParticleStack.from_star("Subtract/orig.star"), ParticleStack.from_star("Refine3D/run_data.star")
    np.testing.assert_array_equal(back.read(), orig.read())


@pytest.mark.parametrize("case,args,needle", [
    ("mask of another box", ["--mask", "keep40.mrc"], "need (32, 32, 32)"),
    ("empty mask", ["--mask", "empty.mrc"], "empty"),
    ("no mask", [], "--mask is required"),
    ("box too big", ["--mask", "keep.mrc", "--new_box", "64"], "--new_box"),
    ("half a centre", ["--mask", "keep.mrc", "--center_x", "10"], "--center_y"),
])
def test_bad_subtraction_input_exits_2_and_writes_nothing(project, monkeypatch, capsys, case, args, needle):
    root, _ = project
    monkeypatch.chdir(root)
    out = f"Bad/{case.replace(' ', '_')}"
    assert run("subtract", "--i", "Refine3D/run_data.star", "--ref", "Refine3D/run_class001.mrc", *args,
               "--o", out) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert not (root / "Bad").exists()


def test_particles_without_poses_are_refused(project, monkeypatch, capsys):
    root, sim = project
    monkeypatch.chdir(root)
    write_simulation(sim, root, "noposes")                 # no angles in the STAR file
    assert run("subtract", "--i", "noposes.star", "--ref", "Refine3D/run_class001.mrc", "--mask", "keep.mrc",
               "--o", "Bad2") == 2
    assert "_rlnAngleRot" in capsys.readouterr().err and not (root / "Bad2").exists()
