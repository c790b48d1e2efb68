"""Tests of cryolab.io: real RELION STAR files, round trips, ParticleStack, and RELION reading our files.

Known values were read off the reference STAR files by eye. RELION acceptance tests
(marked ``relion``) check that ``relion_image_handler`` and ``relion_reconstruct``
read stacks and STAR files written by ``write_particle_stack``.
"""
from __future__ import annotations

import re
import shutil
import string
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import reference_file, requires_relion
from cryolab.ctf import CTFParams
from cryolab.errors import CryolabInputError
from cryolab.io import (ParticleStack, mrc_header_info, read_mrc, read_particles, read_star,
                        write_mrc, write_particle_stack, write_particles, write_star)

OPTICS = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0],
                       "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                       "rlnImagePixelSize": [2.5]})


def _particles(n, rng):
    return pd.DataFrame({
        "rlnAngleRot": rng.uniform(-180, 180, n), "rlnAngleTilt": rng.uniform(0, 180, n),
        "rlnAnglePsi": rng.uniform(-180, 180, n),
        "rlnOriginXAngst": rng.normal(size=n), "rlnOriginYAngst": rng.normal(size=n),
        "rlnDefocusU": rng.uniform(1e4, 2e4, n), "rlnDefocusV": rng.uniform(1e4, 2e4, n),
        "rlnDefocusAngle": rng.uniform(0, 180, n), "rlnClassNumber": rng.integers(1, 3, n),
    })


@pytest.fixture
def small_stack(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(20, 16, 16)).astype(np.float32)
    particles = _particles(20, rng)
    stack = write_particle_stack(tmp_path / "parts.star", images, particles, OPTICS)
    return stack, images, particles


# ----------------------------------------------------------------------------- real RELION files

def test_relion31_particles():
    path = reference_file("relion_star/sample_particles_relion31.star")
    particles, optics = read_particles(path)
    assert len(particles) == 17 and len(optics) == 2
    first = particles.iloc[0]
    assert first["rlnDefocusU"] == pytest.approx(21186.804688)
    assert first["rlnDefocusV"] == pytest.approx(21363.109375)
    assert first["rlnImageName"] == "000001@sample.mrcs"
    assert first["rlnAnglePsi"] == pytest.approx(71.118492)
    # optics merged by group: rows 1-8 are group 1 (300 kV), rows 9-17 group 2 (200 kV)
    assert list(particles["rlnOpticsGroup"]) == [1] * 8 + [2] * 9
    assert list(particles["rlnVoltage"]) == [300.0] * 8 + [200.0] * 9
    assert (particles["rlnImagePixelSize"] == 1.4).all()
    assert list(optics["rlnOpticsGroupName"]) == ["opticsGroup1", "opticsGroup2"]
    assert optics["rlnMtfFileName"].iloc[0] == "mtf_k2_200kV.star"
    assert particles["rlnOpticsGroup"].dtype == np.int64
    with pytest.raises(CryolabInputError, match="sample.mrcs"):  # the stack is not shipped
        ParticleStack.from_star(path)


@pytest.mark.parametrize("name,extra", [("sample_particles_relion30.star", None),
                                        ("sample_relion_symmetry_group_D4.star", "rlnSymmetryGroup")])
def test_relion30_particles(name, extra):
    particles, optics = read_particles(reference_file(f"relion_star/{name}"))
    assert optics is None and len(particles) == 17
    first = particles.iloc[0]
    assert list(particles["rlnVoltage"]) == [300.0] * 8 + [200.0] * 9
    assert first["rlnMagnification"] == pytest.approx(37369.207031)
    assert first["rlnDetectorPixelSize"] == 5.0
    assert first["rlnDefocusU"] == pytest.approx(21186.804688)
    assert particles["rlnOriginX"].iloc[5] == pytest.approx(0.4496)
    if extra:
        assert (particles[extra] == "D4").all()


def test_model_star():
    blocks = read_star(reference_file("relion_star/sample_data_model.star"))
    assert list(blocks) == ["model_general", "model_classes", "model_class_1", "model_groups",
                            "model_group_1", "model_pdf_orient_class_1"]
    general = blocks["model_general"]  # a "key value" block becomes one row
    assert len(general) == 1 and general["rlnPixelSize"].iloc[0] == 1.25
    assert general["rlnOriginalImageSize"].iloc[0] == 150
    assert len(blocks["model_class_1"]) == 76 and len(blocks["model_pdf_orient_class_1"]) == 192
    assert blocks["model_classes"]["rlnReferenceImage"].iloc[0] == \
        "Class3D/run_001_it025_class001.mrc"


def test_malformed_sample_star_is_a_clean_error():
    # sample.star has a row with an extra value and two loops in one block
    with pytest.raises(CryolabInputError, match="sample.star"):
        read_star(reference_file("relion_star/sample.star"))


def test_relion30_stack_upgraded_to_31(tmp_path):
    """A pre-3.1 file with its stack: pixel size from detector/magnification, origins in A."""
    shutil.copy(reference_file("relion_star/sample_particles_relion30.star"), tmp_path / "old.star")
    images = np.random.default_rng(2).normal(size=(17, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / "sample.mrcs", images, 1.0)
    stack = ParticleStack.from_star(tmp_path / "old.star")
    px = 5.0 * 1e4 / 37369.207031
    assert stack.pixel_size_A == pytest.approx(px)
    assert stack.origins_A()[5] == pytest.approx([0.4496 * px, 0.9496 * px])
    np.testing.assert_array_equal(stack.read([3, 0]), images[[3, 0]])
    stack.write_star(tmp_path / "new.star")
    particles, optics = read_particles(tmp_path / "new.star")
    # one optics group per voltage (rows 1-8: 300 kV, rows 9-17: 200 kV)
    assert list(optics["rlnVoltage"]) == [300.0, 200.0]
    assert list(particles["rlnOpticsGroup"]) == [1] * 8 + [2] * 9
    assert np.allclose(optics["rlnImagePixelSize"], px) and (optics["rlnImageSize"] == 8).all()
    assert "rlnOriginX" not in particles and "rlnMagnification" not in particles
    new = ParticleStack.from_star(tmp_path / "new.star")
    np.testing.assert_allclose(new.origins_A(), stack.origins_A())
    np.testing.assert_allclose(new.eulers(), stack.eulers())


# ----------------------------------------------------------------------------- round trips

def _not_a_number(s):
    try:
        float(s)
    except ValueError:
        return s not in ("NA", "<NA>") and np.isnan(pd.to_numeric(pd.Series([s]), errors="coerce")[0])
    return False


names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_]{0,10}\Z")
words = st.text(string.ascii_letters + string.digits + "._-/@ ", min_size=1, max_size=12).filter(
    lambda s: s[0].isalpha() and _not_a_number(s))


@st.composite
def tables(draw):
    n = draw(st.integers(1, 5))
    cols = draw(st.lists(names, min_size=1, max_size=5, unique_by=str.lower))
    data = {}
    for c in cols:
        kind = draw(st.sampled_from(["float", "int", "str"]))
        if kind == "float":
            data[c] = np.array(draw(st.lists(st.floats(width=64), min_size=n,
                                             max_size=n)), dtype=np.float64)
        elif kind == "int":
            data[c] = np.array(draw(st.lists(st.integers(-2**62, 2**62), min_size=n, max_size=n)),
                               dtype=np.int64)
        else:
            data[c] = draw(st.lists(words, min_size=n, max_size=n))
    return pd.DataFrame(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.dictionaries(names, tables(), min_size=1, max_size=3))
def test_star_round_trip(tmp_path, blocks):
    path = tmp_path / "t.star"
    write_star(path, blocks)
    back = read_star(path)
    assert list(back) == list(blocks)
    for name, df in blocks.items():
        pd.testing.assert_frame_equal(back[name], df)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
                   elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
       pixel_size_A=st.floats(0.1, 20.0), suffix=st.sampled_from([".mrc", ".mrcs"]))
def test_mrc_round_trip(tmp_path, data, pixel_size_A, suffix):
    path = tmp_path / f"m{suffix}"
    write_mrc(path, data, pixel_size_A)
    back, px = read_mrc(path)
    expected = data[0] if (len(data) == 1 and suffix == ".mrc") else data
    np.testing.assert_array_equal(back, expected)
    assert back.dtype == np.float32
    assert px == pytest.approx(pixel_size_A, rel=1e-6)
    assert mrc_header_info(path)["is_stack"] == (suffix == ".mrcs")
    mapped, _ = read_mrc(path, mmap=True)
    np.testing.assert_array_equal(mapped, expected)


@pytest.mark.parametrize("dtype,mode", [(np.int8, 0), (np.int16, 1), (np.float32, 2),
                                        (np.uint16, 6), (np.float16, 12)])
def test_mrc_modes(tmp_path, dtype, mode):
    data = (np.arange(2 * 3 * 4) % 100).reshape(2, 3, 4).astype(dtype)
    with mrcfile.new(tmp_path / "m.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.5
    assert mrc_header_info(tmp_path / "m.mrc")["mode"] == mode
    back, px = read_mrc(tmp_path / "m.mrc")
    assert back.dtype == np.float32 and px == 1.5
    np.testing.assert_array_equal(back, data.astype(np.float32))


def test_write_particles_round_trip(tmp_path):
    particles, optics = read_particles(reference_file("relion_star/sample_particles_relion31.star"))
    optics = optics.assign(rlnImageSize=64)
    write_particles(tmp_path / "p.star", particles, optics)
    text = (tmp_path / "p.star").read_text()
    assert text.index("data_optics") < text.index("data_particles")
    blocks = read_star(tmp_path / "p.star")
    assert "rlnVoltage" not in blocks["particles"]  # optics values only in data_optics
    assert blocks["optics"]["rlnImageDimensionality"].iloc[0] == 2
    back, back_optics = read_particles(tmp_path / "p.star")
    pd.testing.assert_frame_equal(back[particles.columns], particles)


# ----------------------------------------------------------------------------- ParticleStack

def test_stack_read_batches_subset(small_stack, tmp_path):
    stack, images, particles = small_stack
    assert len(stack) == 20 and stack.box_size == 16 and stack.pixel_size_A == 2.5
    index, name = stack.table["rlnImageName"].iloc[2].split("@")  # named as RELION reads it,
    assert index == "000003"                                        # from the working folder
    assert Path(name).resolve() == (tmp_path / "parts.mrcs").resolve()
    rows = [7, 2, 19, 2]
    out = stack.read(rows)
    assert out.dtype == np.float32 and out.shape == (4, 16, 16)
    np.testing.assert_array_equal(out, images[rows])
    np.testing.assert_array_equal(stack.read(slice(3, 6)), images[3:6])
    batches = list(stack.iter_batches(6))
    assert [len(r) for r, _ in batches] == [6, 6, 6, 2]
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), images)
    sub = stack.subset([5, 1])
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.read(), images[[5, 1]])
    np.testing.assert_allclose(sub.eulers()[:, 2], particles["rlnAnglePsi"].to_numpy()[[5, 1]])


def test_stack_ctf_angles_origins(small_stack):
    stack, _, particles = small_stack
    ctf = stack.ctf([0, 4])
    assert isinstance(ctf, CTFParams) and len(ctf) == 2
    np.testing.assert_allclose(ctf.defocus_u_A, particles["rlnDefocusU"].to_numpy()[[0, 4]])
    np.testing.assert_allclose(ctf.defocus_angle_deg, particles["rlnDefocusAngle"].to_numpy()[[0, 4]])
    assert np.all(ctf.voltage_kV == 300.0) and np.all(ctf.cs_mm == 2.7)
    assert np.all(ctf.amplitude_contrast == 0.1) and np.all(ctf.scale == 1.0)
    np.testing.assert_allclose(stack.eulers(), particles[["rlnAngleRot", "rlnAngleTilt",
                                                           "rlnAnglePsi"]].to_numpy())
    np.testing.assert_allclose(stack.origins_A(),
                               particles[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy())


def test_stack_write_star_elsewhere_and_with_table(small_stack, tmp_path):
    stack, images, _ = small_stack
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    moved = stack.subset(np.arange(20) % 3 == 0).with_table(
        stack.subset(np.arange(20) % 3 == 0).table.assign(rlnAnglePsi=12.5))
    out = tmp_path / "sub" / "deeper" / "s.star"
    moved.write_star(out)
    names = {n.split("@")[1] for n in read_particles(out)[0]["rlnImageName"]}
    assert {Path(n).resolve() for n in names} == {(tmp_path / "parts.mrcs").resolve()}  # from cwd
    again = ParticleStack.from_star(out)
    np.testing.assert_array_equal(again.read(), images[::3])
    assert (again.eulers()[:, 2] == 12.5).all()


def test_stack_from_several_files_and_cwd_fallback(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    a, b = (rng.normal(size=(3, 8, 8)).astype(np.float32) for _ in range(2))
    (tmp_path / "stacks").mkdir()
    write_mrc(tmp_path / "stacks" / "a.mrcs", a, 2.5)
    write_mrc(tmp_path / "stacks" / "b.mrcs", b, 2.5)
    (tmp_path / "star").mkdir()
    particles = pd.DataFrame({"rlnImageName": ["000002@stacks/b.mrcs", "000003@stacks/a.mrcs",
                                               "000001@stacks/b.mrcs"],
                              "rlnDefocusU": [1e4, 1.1e4, 1.2e4]})
    write_particles(tmp_path / "star" / "p.star", particles, OPTICS.assign(rlnImageSize=8))
    monkeypatch.chdir(tmp_path)  # paths are relative to the working folder, as RELION reads them
    stack = ParticleStack.from_star(tmp_path / "star" / "p.star")
    np.testing.assert_array_equal(stack.read(), np.stack([b[1], a[2], b[0]]))
    assert len(stack.stack_paths) == 2


# ----------------------------------------------------------------------------- RELION reads our files

@pytest.fixture
def relion_set(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.normal(size=(300, 32, 32)).astype(np.float32)
    stack = write_particle_stack(tmp_path / "ours.star", images, _particles(300, rng),
                                 OPTICS.assign(rlnImagePixelSize=3.0))
    return tmp_path, images, stack


@pytest.mark.relion
def test_relion_image_handler_reads_our_stack(relion_set):
    exe = requires_relion("relion_image_handler")
    folder, images, _ = relion_set
    res = subprocess.run([exe, "--i", "ours.mrcs", "--stats"], cwd=folder, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    stats = re.findall(r"(\d+)@ours\.mrcs.*?avg=\s*(\S+)\s+stddev=\s*(\S+).*?angpix = (\S+)",
                       res.stdout)
    assert len(stats) == len(images)
    idx, avg, std, angpix = (np.array(v, dtype=float) for v in zip(*stats))
    np.testing.assert_array_equal(idx, np.arange(1, 301))
    np.testing.assert_allclose(avg, images.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(std, images.std(axis=(1, 2)), rtol=1e-5)
    assert (angpix == 3.0).all()


@pytest.mark.relion
def test_relion_reconstruct_accepts_our_star(relion_set):
    exe = requires_relion("relion_reconstruct")
    folder, _, stack = relion_set
    res = subprocess.run([exe, "--i", "ours.star", "--o", "x.mrc", "--ctf"], cwd=folder,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    info = mrc_header_info(folder / "x.mrc")
    assert info["shape"] == (32, 32, 32) and info["pixel_size_A"] == pytest.approx(3.0)
    # RELION read the poses, origins and CTFs we wrote as our reconstruction reads them: on
    # these noise images FSC(ours, RELION) measured >= 0.920 to shell 14 and 0.805 at Nyquist
    # (~0 from shell 8 on when the CTF is left out of ours)
    from cryolab.reconstruction import reconstruct_stack
    from cryolab.validation import fsc
    agreement = fsc(reconstruct_stack(stack, ctf=True), read_mrc(folder / "x.mrc")[0])
    assert agreement[:15].min() >= 0.9, agreement
    assert agreement.min() >= 0.75, agreement


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """Files written through a temporary name are readable like any new file (umask applies)."""
    import os
    import numpy as np
    from cryolab.io import write_mrc
    old = os.umask(0o022)
    try:
        p = write_mrc(tmp_path / "m.mrc", np.zeros((4, 4, 4), np.float32), 1.0)
    finally:
        os.umask(old)
    assert os.stat(p).st_mode & 0o777 == 0o644
