"""Input checks of particle stacks that are not errors in the table: blank images are read but
named in a warning (once per image), and a bad pixel size stops a command before it writes.

The error cases of the readers themselves (pixel sizes included) are in ``test_io_errors.py``.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cryolab.io import write_particle_stack

OPTICS = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0],
                       "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                       "rlnImagePixelSize": [2.0]})


def blank_stack(tmp_path, blank=(2,), value=0.0, n=6):
    data = np.random.default_rng(0).normal(size=(n, 8, 8)).astype(np.float32)
    data[list(blank)] = value
    particles = pd.DataFrame({"rlnDefocusU": np.full(n, 1e4), "rlnOpticsGroup": 1,
                              "rlnAngleRot": 0.0, "rlnAngleTilt": np.linspace(0, 90, n),
                              "rlnAnglePsi": 0.0})
    return write_particle_stack(tmp_path / "s.star", data, particles, OPTICS), data


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "cryolab.io" and r.levelno == logging.WARNING]


def test_blank_images_are_named_once(tmp_path, caplog):
    stack, data = blank_stack(tmp_path, blank=(2, 4))
    with caplog.at_level(logging.WARNING, logger="cryolab.io"):
        stack.read([0, 1])
        assert warnings_of(caplog) == []            # only the images read are looked at
        images = stack.read()
        stack.read([4, 2])                          # already named: no second warning
        stack.subset([2, 3]).read()                 # a subset shares what was named
    np.testing.assert_array_equal(images, data)     # read as they are, not dropped
    (message,) = warnings_of(caplog)
    assert message.startswith(f"{tmp_path / 's.star'}: 2 blank image(s)")
    assert "000003@s.mrcs (particle row 3, every pixel 0.0)" in message
    assert "000005@s.mrcs (particle row 5, every pixel 0.0)" in message


def test_constant_image_is_blank_and_long_lists_are_cut(tmp_path, caplog):
    stack, _ = blank_stack(tmp_path, blank=range(1, 9), value=0.25, n=10)
    with caplog.at_level(logging.WARNING, logger="cryolab.io"):
        stack.read()
    (message,) = warnings_of(caplog)
    assert "8 blank image(s)" in message and "every pixel 0.25" in message
    assert message.count("@s.mrcs") == 5 and message.endswith("and 3 more")


def test_no_warning_for_ordinary_images(tmp_path, caplog):
    stack, _ = blank_stack(tmp_path, blank=())
    with caplog.at_level(logging.WARNING, logger="cryolab.io"):
        stack.read()
    assert warnings_of(caplog) == []


def cryolab(folder, *argv):
    exe = shutil.which("cryolab")
    cmd = [exe] if exe else [sys.executable, "-m", "cryolab"]
    return subprocess.run(cmd + [str(a) for a in argv], cwd=folder, capture_output=True,
                          text=True, timeout=120)


def test_command_line_shows_the_blank_image(tmp_path):
    blank_stack(tmp_path, blank=(3,))
    res = cryolab(tmp_path, "reconstruct", "--i", "s.star", "--o", "map.mrc")
    assert res.returncode == 0, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if "blank" in x]
    assert "WARNING" in line and "000004@s.mrcs (particle row 4, every pixel 0.0)" in line
    quiet = cryolab(tmp_path, "reconstruct", "--i", "s.star", "--o", "map2.mrc", "--quiet")
    assert quiet.returncode == 0 and "blank" not in quiet.stderr  # --quiet: errors only


@pytest.mark.parametrize("value", ["-2.0", "0"])
def test_command_stops_on_a_bad_pixel_size_before_writing(tmp_path, value):
    blank_stack(tmp_path, blank=())
    star = tmp_path / "s.star"
    text = star.read_text()
    assert text.count("\t2.0\t") == 1  # the optics row's pixel size
    star.write_text(text.replace("\t2.0\t", f"\t{value}\t"))
    res = cryolab(tmp_path, "class2d", "--i", "s.star", "--o", "Class2D/run", "--K", 2,
                  "--iter", 1, "--quiet")
    assert res.returncode == 2
    assert "s.star" in res.stderr and "field _rlnImagePixelSize" in res.stderr
    assert f"value {value} in row 1 of data_optics" in res.stderr
    assert not (tmp_path / "Class2D").exists()
