"""The ``cryolab`` command line end to end on tiny data (32 px, 150 particles, 1-2 iterations).

Each command writes RELION-named files whose STAR tables parse; ``run.json`` holds the
parameters, checksums and a command that reproduces the run; bad input exits 2 with one line
naming the problem and writes nothing; ``relion_reconstruct`` accepts our ``data.star``.
"""
from __future__ import annotations

import json
import shlex
import subprocess

import numpy as np
import pytest

from conftest import requires_relion
from cryolab.cli import main
from cryolab.io import ParticleStack, read_mrc, read_particles, read_star, write_mrc, write_particles
from cryolab.validation import fsc, soft_sphere_mask

N_PARTICLES = 150


def run(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def sim(work):
    """Simulated AB5/B5 toxin particles (32 px, 4 A/px) with the true angles in the STAR file."""
    assert run("simulate", "--demo", "AB5,B5", "--n", N_PARTICLES, "--snr", 0.2, "--o", work / "sim",
               "--truth_in_star", "--seed", 3, "--quiet") == 0
    return work / "sim"


@pytest.fixture(scope="module")
def c2d(sim, work, monkeypatch_module):
    """A 2-iteration 2D classification, run from the work folder with relative paths."""
    monkeypatch_module.chdir(work)
    assert run("class2d", "--i", "sim/particles.star", "--o", "c2d/run", "--K", 2, "--iter", 2,
               "--ctf", "--psi_step", 30, "--offset_range", 2, "--seed", 1, "--quiet") == 0
    return work / "c2d"


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_help_of_every_command_names_units(capsys):
    for cmd, unit in [("class2d", "Angstrom"), ("class2d", "pixels"), ("class3d", "HEALPix"),
                      ("class3d", "Angstrom"), ("reconstruct", "Angstrom"),
                      ("postprocess", "Angstrom"), ("simulate", "Angstrom"), ("project", "degrees"),
                      ("select", "1-based"), ("report", "DIR"), ("demo", "DIR"), ("info", "")]:
        assert run(cmd, "--help") == 0
        assert unit in capsys.readouterr().out
    assert run("--version") == 0


def test_simulate_writes_relion_files_and_provenance(sim):
    particles, optics = read_particles(sim / "particles.star")
    assert len(particles) == N_PARTICLES and {"rlnAngleRot", "rlnDefocusU"} <= set(particles.columns)
    assert (sim / "truth.csv").is_file() and (sim / "particles.mrcs").is_file()
    rec = json.loads((sim / "run.json").read_text())
    assert rec["parameters"]["n"] == N_PARTICLES and rec["seed"] == 3
    assert rec["command_line"].startswith("cryolab simulate --demo AB5,B5")


def test_class2d_writes_relion_outputs_and_run_json(c2d, sim):
    for it in (1, 2):
        for suffix in ("data.star", "model.star", "classes.mrcs", "optimiser.json"):
            assert (c2d / f"run_it{it:03d}_{suffix}").is_file()
    table, _ = read_particles(c2d / "run_it002_data.star")
    assert set(table["rlnClassNumber"]) <= {1, 2} and "rlnMaxValueProbDistribution" in table
    model = read_star(c2d / "run_it002_model.star")
    assert {"model_general", "model_classes", "model_class_1"} <= set(model)
    assert read_mrc(c2d / "run_it002_classes.mrcs")[0].shape == (2, 32, 32)
    rec = json.loads((c2d / "run.json").read_text())
    assert rec["parameters"]["K"] == 2 and rec["parameters"]["ctf"] is True
    assert [r["iteration"] for r in rec["iterations"]] == [1, 2]
    assert all(r["time_s"] > 0 for r in rec["iterations"])
    stack = ParticleStack.from_star(sim / "particles.star")
    import hashlib
    assert rec["inputs_sha256"]["sim/particles.star"] == \
        hashlib.sha256((sim / "particles.star").read_bytes()).hexdigest()
    assert len(rec["inputs_sha256"]) == 1 + len(stack.stack_paths)
    for key in ("cryolab_version", "host", "python", "numpy", "backend", "cwd"):
        assert rec[key]


def test_run_json_command_reproduces_the_run(c2d, work):
    rec = json.loads((c2d / "run.json").read_text())
    argv = shlex.split(rec["command_line"])[1:]
    argv[argv.index("--o") + 1] = "again/run"
    assert run(*argv) == 0
    a, _ = read_particles(c2d / "run_it002_data.star")
    b, _ = read_particles(work / "again" / "run_it002_data.star")
    np.testing.assert_array_equal(a["rlnClassNumber"], b["rlnClassNumber"])
    np.testing.assert_allclose(a["rlnAnglePsi"], b["rlnAnglePsi"])


def test_continue_equals_uninterrupted_run(c2d, work):
    assert run("class2d", "--continue", c2d / "run_it001_optimiser.json", "--iter", 2,
               "--o", work / "cont" / "run", "--quiet") == 0
    a, _ = read_particles(c2d / "run_it002_data.star")
    b, _ = read_particles(work / "cont" / "run_it002_data.star")
    np.testing.assert_array_equal(a["rlnClassNumber"], b["rlnClassNumber"])


@pytest.mark.relion
def test_relion_reconstruct_accepts_our_data_star(c2d):
    """relion_reconstruct and ``cryolab reconstruct`` read the same poses, origins and CTFs
    from our data.star: their maps agree (150 particles, 32 px: FSC(ours, RELION) measured
    >= 0.942 to shell 7 and >= 0.796 to Nyquist)."""
    exe = requires_relion("relion_reconstruct")
    res = subprocess.run([exe, "--i", "c2d/run_it002_data.star", "--o", "c2d/relion_rec.mrc",
                          "--ctf"], cwd=c2d.parent, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs, _ = read_mrc(c2d / "relion_rec.mrc")
    assert theirs.shape == (32, 32, 32)
    assert run("reconstruct", "--i", c2d / "run_it002_data.star", "--o", c2d / "ours_rec.mrc",
               "--ctf", "--quiet") == 0
    agreement = fsc(read_mrc(c2d / "ours_rec.mrc")[0], theirs)
    assert agreement[:8].min() >= 0.9, agreement
    assert agreement.min() >= 0.7, agreement


def test_select_keeps_the_classes(c2d, work):
    out = work / "sel" / "selected.star"
    assert run("select", "--i", c2d / "run_it002_data.star", "--classes", "1", "--o", out, "--quiet") == 0
    table, _ = read_particles(c2d / "run_it002_data.star")
    stack = ParticleStack.from_star(out)
    assert len(stack) == int((table["rlnClassNumber"] == 1).sum())
    assert set(stack.table["rlnClassNumber"]) == {1}
    assert stack.read([0]).shape == (1, 32, 32)
    assert (work / "sel" / "selected_run.json").is_file()


def test_reconstruct_postprocess_project(sim, work):
    table, optics = read_particles(sim / "particles.star")
    table["rlnRandomSubset"] = np.arange(len(table)) % 2 + 1
    write_particles(sim / "halves.star", table.drop(columns=[c for c in optics.columns
                                                             if c != "rlnOpticsGroup"]), optics)
    maps = work / "maps"
    for h in (1, 2):
        assert run("reconstruct", "--i", sim / "halves.star", "--o", maps / f"half{h}.mrc", "--ctf",
                   "--subset", h, "--quiet") == 0
    half1, px = read_mrc(maps / "half1.mrc")
    assert half1.shape == (32, 32, 32) and px == pytest.approx(4.0)
    assert json.loads((maps / "half1_run.json").read_text())["results"]["particles"] == N_PARTICLES // 2
    write_mrc(maps / "mask.mrc", soft_sphere_mask(32, 12, 3), 4.0)
    assert run("postprocess", "--i", maps / "half1.mrc", "--i2", maps / "half2.mrc", "--mask",
               maps / "mask.mrc", "--angpix", 4, "--o", work / "pp" / "postprocess", "--quiet") == 0
    star = read_star(work / "pp" / "postprocess.star")
    # the resolution lies where the masked FSC of the half maps (computed here) crosses 0.143:
    # between the last shell above it and the first below (measured 21.47 A; shells 5 and 6,
    # 25.6-21.3 A, FSC 0.669 and 0.122); the phase-randomisation correction starts above them
    masked = fsc(half1 * read_mrc(maps / "mask.mrc")[0], read_mrc(maps / "half2.mrc")[0]
                 * read_mrc(maps / "mask.mrc")[0])
    below = int(np.flatnonzero(masked < 0.143)[0])
    assert 32 * px / below <= float(star["general"]["rlnFinalResolution"].iloc[0]) <= 32 * px / (below - 1)
    assert "rlnFourierShellCorrelationCorrected" in star["fsc"]
    assert (work / "pp" / "postprocess_masked.mrc").is_file()
    out = work / "proj" / "proj.mrcs"
    assert run("project", "--i", maps / "half1.mrc", "--ang", sim / "particles.star", "--o", out,
               "--ctf", "--quiet") == 0
    proj = ParticleStack.from_star(out.with_suffix(".star"))
    assert len(proj) == N_PARTICLES and proj.read([0, 1]).shape == (2, 32, 32)
    assert np.isfinite(proj.read([0])).all() and proj.read([0]).std() > 0
    assert run("simulate", "--ref", f"{maps / 'half1.mrc'},{maps / 'half2.mrc'}", "--n", 20,
               "--o", work / "simref", "--quiet") == 0
    rec = json.loads((work / "simref" / "run.json").read_text())
    assert rec["results"]["classes"] == ["half1", "half2"] and len(rec["inputs_sha256"]) == 2


def test_report_of_class2d_folder(c2d):
    from test_report import count_embedded_images
    assert run("report", c2d, "--quiet") == 0
    assert count_embedded_images((c2d / "report.html").read_text()) >= 4


def test_demo_quick(work, capsys):
    from test_report import count_embedded_images
    out = work / "demo"
    assert run("demo", "--o", out, "--quick") == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed and "resolution" in printed
    rec = json.loads((out / "run.json").read_text())
    assert [s["state"] for s in rec["results"]["states"]] == ["80S", "80S_noRACK1", "60S"]
    assert all(np.isfinite(s["resolution_A"]) for s in rec["results"]["states"])
    for state in ("80S", "60S"):
        assert (out / "states" / state / "postprocess.star").is_file()
    c3 = rec["results"]["class3d"]
    assert "3D classification 80S vs 60S" in printed and sum(c3["class_sizes"]) == c3["particles"]
    assert c3["accuracy"] >= 0.7, c3                  # 32 px, SNR 1: the two states separate
    assert (out / "class3d" / "run_it006_class002.mrc").is_file()
    text = (out / "report.html").read_text()
    assert count_embedded_images(text) >= 6 and "class3d/run_it006_class001.mrc" in text
    # what a scientist keeps: optics and Nyquist, per-step figures of 2D, 3D and the refinement (its viewing
    # directions and FSC), settings with units and RELION names, versions of the dependencies and the commit
    for must in ("pixel size (Å)", "Nyquist resolution (Å)", "voltage (kV)", "defocus U (µm)",
                 "class2d/run: convergence", "class3d/run: convergence", "states/80S/run: convergence",
                 "class3d/run: angular distribution (viewing directions)",
                 "states/80S/run: angular distribution (viewing directions)",
                 "states/80S/run: FSC per refined map", "Post-processed maps: FSC", "psi step (°) [--psi_step]",
                 "[--healpix_order]", "resolution (Å)", "git_commit", "scipy", "matplotlib", "as RELION's does"):
        assert must in text, must
    assert sum(line.startswith(("1/6", "2/6", "3/6", "4/6", "5/6", "6/6")) for line in printed.splitlines()) == 6
    assert "batch/s" not in printed and "E-step:" not in printed          # no progress bars between the lines


# --------------------------------------------------------------------------- bad input

def _no_images_star(path):
    path.write_text("data_particles\nloop_\n_rlnDefocusU #1\n_rlnDefocusV #2\n10000 10000\n")
    return path


BAD = {
    "missing file": (["class2d", "--i", "{w}/nope.star", "--o", "{out}/run"], "nope.star"),
    "bad K": (["class2d", "--i", "{sim}/particles.star", "--o", "{out}/run", "--K", "0"], "--K"),
    "bad mode": (["class2d", "--i", "{sim}/particles.star", "--o", "{out}/run", "--mode", "fast"], "--mode"),
    "not a number": (["class2d", "--i", "{sim}/particles.star", "--o", "{out}/run", "--psi_step", "ten"],
                     "--psi_step"),
    "no images": (["class2d", "--i", "{w}/noimg.star", "--o", "{out}/run"], "_rlnImageName"),
    "empty class": (["reconstruct", "--i", "{w}/c2d/run_it002_data.star", "--o", "{out}/m.mrc",
                   "--class", "9"], "--class"),
    "bad sym": (["reconstruct", "--i", "{sim}/particles.star", "--o", "{out}/m.mrc", "--sym", "Q5"], "Q5"),
    "fractions": (["simulate", "--demo", "AB5,B5", "--fractions", "1,2,3", "--o", "{out}"], "--fractions"),
    "unknown state": (["simulate", "--demo", "70S", "--o", "{out}"], "70S"),
    "select": (["select", "--i", "{w}/c2d/run_it002_data.star", "--classes", "7", "--o", "{out}/s.star"],
               "classes [7]"),
    "missing half": (["postprocess", "--i", "{w}/none.mrc", "--i2", "{w}/none.mrc", "--o", "{out}/pp"],
                     "none.mrc"),
    "empty report": (["report", "{w}/empty", "--o", "{out}/r.html"], "nothing to report"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, c2d, sim, work, capsys):
    _no_images_star(work / "noimg.star")
    (work / "empty").mkdir(exist_ok=True)
    argv, needle = BAD[case]
    out = work / f"bad_{case.replace(' ', '_')}"
    rc = run(*[a.format(w=work, sim=sim, out=out) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "error" in err and needle in err, err
    assert not out.exists()


def test_runtime_failure_exits_1_with_one_line(sim, work, capsys, monkeypatch):
    import cryolab.reconstruction

    def broken(*a, **k):
        raise RuntimeError("out of memory\nsecond line")
    monkeypatch.setattr(cryolab.reconstruction, "reconstruct_stack", broken)
    assert run("reconstruct", "--i", sim / "particles.star", "--o", work / "rt" / "m.mrc") == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["cryolab reconstruct: failed: RuntimeError: out of memory"]


# --------------------------------------------------------------------------- class3d

@pytest.fixture(scope="module")
def sim3d(work):
    """150 particles of 80S and 60S (demo maps cropped to 24 px), SNR 1, and the 80S map as reference."""
    from cryolab.data import load_demo
    from cryolab.fourier import fourier_crop
    out = work / "sim3d"
    assert run("simulate", "--demo", "80S,60S", "--box", 24, "--n", N_PARTICLES, "--snr", 1, "--o", out,
               "--seed", 2, "--quiet") == 0
    demo = load_demo("ribosome")
    px = demo.pixel_size_A * demo.box_size / 24
    write_mrc(out / "ref.mrc", fourier_crop(demo.volumes["80S"], 24, ndim=3), px)
    write_mrc(out / "ref32.mrc", fourier_crop(demo.volumes["80S"], 32, ndim=3), px)   # same pixel size, other box
    write_mrc(out / "image.mrc", np.ones((24, 24), np.float32), px)
    return out


def test_class3d_writes_relion_outputs_and_report(sim3d, work):
    from test_report import count_embedded_images
    out = work / "c3d"
    assert run("class3d", "--i", sim3d / "particles.star", "--ref", sim3d / "ref.mrc", "--o", out / "run",
               "--K", 2, "--iter", 2, "--healpix_order", 1, "--offset_range", 2, "--ini_high", 50,
               "--ctf", "--seed", 0, "--quiet") == 0
    for it in (1, 2):
        for suffix in ("data.star", "model.star", "optimiser.json", "class001.mrc", "class002.mrc"):
            assert (out / f"run_it{it:03d}_{suffix}").is_file()
    table, _ = read_particles(out / "run_it002_data.star")
    assert len(table) == N_PARTICLES and set(table["rlnClassNumber"]) <= {1, 2}
    for label in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"):
        assert np.isfinite(table[label]).all()
    assert table["rlnAngleTilt"].std() > 10                     # views from all over the sphere
    model = read_star(out / "run_it002_model.star")
    assert int(model["model_general"]["rlnReferenceDimensionality"].iloc[0]) == 3
    assert read_mrc(out / "run_it002_class001.mrc")[0].shape == (24, 24, 24)
    rec = json.loads((out / "run.json").read_text())
    assert rec["command"] == "class3d" and rec["parameters"]["healpix_order"] == 1
    assert rec["command_line"].startswith("cryolab class3d --i")
    assert any(k.endswith("ref.mrc") for k in rec["inputs_sha256"])
    assert "run_it002_class002.mrc" in rec["outputs"]
    assert run("report", out, "--quiet") == 0
    text = (out / "report.html").read_text()
    assert count_embedded_images(text) >= 4 and "rot/tilt scatter" in text and "central slices" in text
    assert run("class2d", "--continue", out / "run_it001_optimiser.json", "--o", work / "c3d_as_2d" / "run",
               "--quiet") == 2


BAD_3D = {
    "missing ref": ("{sim}/nope.mrc", [], "nope.mrc"),
    "wrong box": ("{sim}/ref32.mrc", [], "--ref"),
    "not a map": ("{sim}/image.mrc", [], "cubic 3D map"),
    "bad sym": ("{sim}/ref.mrc", ["--sym", "Q5"], "Q5"),
    "bad order": ("{sim}/ref.mrc", ["--healpix_order", "-1"], "--healpix_order"),
}


@pytest.mark.parametrize("case", sorted(BAD_3D))
def test_class3d_bad_reference_exits_2_and_writes_nothing(case, sim3d, work, capsys):
    ref, extra, needle = BAD_3D[case]
    out = work / f"bad3d_{case.replace(' ', '_')}"
    rc = run("class3d", "--i", sim3d / "particles.star", "--ref", ref.format(sim=sim3d), "--o", out / "run",
             "--iter", 1, *extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "error" in err and needle in err, err
    assert not out.exists()


# --------------------------------------------------------------------------- refine

def test_refine_writes_gold_standard_outputs(sim3d, work, capsys):
    out = work / "r3d"
    assert run("refine", "--i", sim3d / "particles.star", "--ref", sim3d / "ref.mrc", "--o", out / "run",
               "--healpix_order", 1, "--offset_range", 2, "--ini_high", 50, "--max_iter", 3, "--ctf",
               "--seed", 1, "--quiet") == 0
    for name in ("run_half1_class001_unfil.mrc", "run_half2_class001_unfil.mrc", "run_class001.mrc",
                 "run_data.star", "run_model.star", "run_it003_half2_class001.mrc", "postprocess.star"):
        assert (out / name).is_file(), name
    table, _ = read_particles(out / "run_data.star")
    assert len(table) == N_PARTICLES and sorted(set(table["rlnRandomSubset"])) == [1, 2]
    assert "rlnGoldStandardFsc" in read_star(out / "run_model.star")["model_class_1"].columns
    rec = json.loads((out / "run.json").read_text())
    assert rec["command"] == "refine" and rec["parameters"]["healpix_order"] == 1
    assert rec["results"]["iterations_run"] == 3
    # 24 px of 16 A: Nyquist 32 A; gold-standard resolution measured 40.0 A after 3 iterations,
    # and run.json's post-processed resolution is the one in postprocess.star (measured 36.8 A)
    assert 32 <= rec["results"]["resolution_A"] < 45
    assert rec["results"]["postprocess_resolution_A"] == pytest.approx(
        float(read_star(out / "postprocess.star")["general"]["rlnFinalResolution"].iloc[0]))
    assert run("refine", "--i", sim3d / "particles.star", "--o", work / "r3d_bad" / "run", "--quiet") == 2
    assert "--ref" in capsys.readouterr().err
    assert not (work / "r3d_bad").exists()
    # stopped after iteration 2: --continue runs the last iteration and gives the same result
    again = work / "r3d_cont"
    assert run("refine", "--continue", out / "run_it002_optimiser.json", "--max_iter", 3, "--o", again / "run",
               "--quiet") == 0
    cont = json.loads((again / "run.json").read_text())
    assert cont["results"]["iterations_run"] == 3
    assert cont["results"]["resolution_A"] == pytest.approx(rec["results"]["resolution_A"])
    assert np.allclose(read_mrc(again / "run_class001.mrc")[0], read_mrc(out / "run_class001.mrc")[0], atol=1e-5)
