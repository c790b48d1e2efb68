"""Stack paths in ``_rlnImageName``: written as RELION reads them, read wherever they point.

RELION resolves a relative stack path against its working folder (the project folder), so
cryolab writes paths relative to the folder it runs in, and absolute paths for stacks outside
it. Reading, a relative path is looked for beside the STAR file (files cryolab wrote before),
in the working folder, then in the folders above the STAR file's. The RELION side of this is
tested in ``test_relion_paths.py``.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest

from cryolab.errors import CryolabInputError
from cryolab.io import (ParticleStack, project_path, read_particles, write_mrc,
                        write_particle_stack, write_particles)

OPTICS = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0],
                       "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                       "rlnImagePixelSize": [2.0]})


def images(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8)).astype(np.float32)


def particles(n=3):
    return pd.DataFrame({"rlnDefocusU": 1e4 + 100 * np.arange(n), "rlnOpticsGroup": 1})


def names_in(star):
    return list(read_particles(star)[0]["rlnImageName"])


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder, made the working folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_new_stack_named_from_the_working_folder(project):
    (project / "Extract" / "job001").mkdir(parents=True)
    write_particle_stack("Extract/job001/p.star", images(), particles(), OPTICS)
    assert names_in(project / "Extract/job001/p.star") == [
        f"00000{i}@Extract/job001/p.mrcs" for i in (1, 2, 3)]


def test_stack_outside_the_working_folder_named_absolute(project, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    write_particle_stack(tmp_path / "elsewhere" / "p.star", images(), particles(), OPTICS)
    assert names_in(tmp_path / "elsewhere" / "p.star")[0] == f"000001@{tmp_path}/elsewhere/p.mrcs"
    assert project_path(tmp_path / "elsewhere" / "p.mrcs") == f"{tmp_path}/elsewhere/p.mrcs"
    assert project_path(project / "Class2D" / "run_classes.mrcs") == "Class2D/run_classes.mrcs"
    assert project_path("Class2D/../Class2D/run.mrc") == "Class2D/run.mrc"  # need not exist


def test_write_star_renames_stacks_for_the_new_file(project, tmp_path):
    (project / "A").mkdir()
    (project / "B" / "deeper").mkdir(parents=True)
    data = images(4)
    stack = write_particle_stack(project / "A" / "p.star", data, particles(4), OPTICS)
    stack.subset([3, 1]).write_star(project / "B" / "deeper" / "s.star")
    assert names_in(project / "B/deeper/s.star") == ["000004@A/p.mrcs", "000002@A/p.mrcs"]
    np.testing.assert_array_equal(ParticleStack.from_star("B/deeper/s.star").read(), data[[3, 1]])
    # read from another working folder: the project folder is found above the STAR file,
    # and names are given for the new working folder
    os.chdir(tmp_path)
    again = ParticleStack.from_star(project / "B" / "deeper" / "s.star")
    np.testing.assert_array_equal(again.read(), data[[3, 1]])
    assert again.image_names_for() == ["000004@project/A/p.mrcs", "000002@project/A/p.mrcs"]
    assert again.image_names_for(project / "B") == ["000004@../A/p.mrcs", "000002@../A/p.mrcs"]


def test_write_particles_renames_stacks_beside_the_star(project):
    (project / "Sim").mkdir()
    write_mrc(project / "Sim" / "p.mrcs", images(), 2.0)
    write_mrc(project / "top.mrcs", images(), 2.0)
    table = particles(4).assign(rlnImageName=[
        "000001@p.mrcs",           # beside the STAR file (how older cryolab files name it)
        "000002@top.mrcs",         # in the working folder (as RELION names it)
        "000003@Sim/p.mrcs",       # in the working folder, with its folder
        "000001@missing.mrcs"])    # not there (yet): written as given
    write_particles(project / "Sim" / "p.star", table, OPTICS.assign(rlnImageSize=8))
    assert names_in(project / "Sim" / "p.star") == [
        "000001@Sim/p.mrcs", "000002@top.mrcs", "000003@Sim/p.mrcs", "000001@missing.mrcs"]


def test_older_star_relative_files_still_read(tmp_path):
    """A STAR file naming its stack relative to its own folder reads from any working folder."""
    (tmp_path / "run").mkdir()
    data = images()
    write_mrc(tmp_path / "run" / "old.mrcs", data, 2.0)
    write_particles(tmp_path / "run" / "p.star",
                    particles().assign(rlnImageName=[f"00000{i}@old.mrcs" for i in (3, 1, 2)]),
                    OPTICS.assign(rlnImageSize=8))
    np.testing.assert_array_equal(ParticleStack.from_star(tmp_path / "run" / "p.star").read(),
                                  data[[2, 0, 1]])


def test_symbolic_link_inside_the_project_is_kept(project, tmp_path):
    (tmp_path / "disk").mkdir()
    write_mrc(tmp_path / "disk" / "m.mrcs", images(), 2.0)
    (project / "Movies").symlink_to(tmp_path / "disk")
    write_particles(project / "p.star", particles().assign(
        rlnImageName=[f"00000{i}@Movies/m.mrcs" for i in (1, 2, 3)]), OPTICS.assign(rlnImageSize=8))
    ParticleStack.from_star("p.star").subset([0]).write_star(project / "one.star")
    assert names_in(project / "one.star") == ["000001@Movies/m.mrcs"]


def test_same_name_beside_the_star_and_in_the_working_folder_is_warned(project, caplog):
    (project / "Sub").mkdir()
    write_mrc(project / "s.mrcs", images(seed=1), 2.0)
    beside = images(seed=2)
    write_mrc(project / "Sub" / "s.mrcs", beside, 2.0)
    (project / "Sub" / "p.star").write_text(  # as another program might write it
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n_rlnSphericalAberration\n"
        "_rlnAmplitudeContrast\n_rlnImagePixelSize\n1 300 2.7 0.1 2.0\n\n"
        "data_particles\nloop_\n_rlnImageName\n_rlnDefocusU\n_rlnOpticsGroup\n"
        + "".join(f"00000{i}@s.mrcs 10000 1\n" for i in (1, 2, 3)))
    with caplog.at_level(logging.WARNING, logger="cryolab.io"):
        stack = ParticleStack.from_star("Sub/p.star")
    np.testing.assert_array_equal(stack.read(), beside)
    assert "'s.mrcs'" in caplog.text and "RELION would read" in caplog.text
    assert str(project / "Sub" / "s.mrcs") in caplog.text and str(project / "s.mrcs") in caplog.text


def test_stack_not_found_names_where_it_looked(project):
    table = particles().assign(rlnImageName=[f"00000{i}@gone.mrcs" for i in (1, 2, 3)])
    (project / "Sub").mkdir()
    write_particles(project / "Sub" / "p.star", table, OPTICS.assign(rlnImageSize=8))
    with pytest.raises(CryolabInputError) as info:
        ParticleStack.from_star("Sub/p.star")
    message = str(info.value)
    assert "Sub/p.star" in message and info.value.field == "_rlnImageName"
    assert "'gone.mrcs' not found" in message
    assert str(project / "Sub") in message and f"working folder {project}" in message
