"""Bad input to cryolab.io: every case raises CryolabInputError naming the file and field,
and leaves the folder exactly as it was (no partial or temporary output)."""
from __future__ import annotations

import hashlib
import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryolab.errors import CryolabInputError
from cryolab.io import (ParticleStack, read_mrc, read_particles, read_star, write_mrc,
                        write_particle_stack, write_particles, write_star)

OPTICS_TEXT = """data_optics

loop_
_rlnOpticsGroup
_rlnOpticsGroupName
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnImagePixelSize
_rlnImageSize
_rlnImageDimensionality
1 opticsGroup1 300 2.7 0.1 2.0 8 2

"""
OLD_STAR = "data_old\n\n_rlnKeep 1\n"
OPTICS = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0],
                       "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                       "rlnImagePixelSize": [2.0]})


def star31(tmp_path, rows, labels=("rlnImageName", "rlnDefocusU", "rlnOpticsGroup"),
           name="p.star"):
    """A RELION 3.1 STAR file with the optics block above and the given particle rows."""
    text = OPTICS_TEXT + "data_particles\n\nloop_\n" + "".join(f"_{c}\n" for c in labels)
    text += "".join(" ".join(map(str, r)) + "\n" for r in rows)
    (tmp_path / name).write_text(text)
    return tmp_path / name


def star_px(tmp_path, pixel_size):
    """A RELION 3.1 STAR file (3 particles of s.mrcs) whose optics give this pixel size."""
    stack(tmp_path)
    path = star31(tmp_path, good_rows(3))
    path.write_text(path.read_text().replace(" 2.0 8 2\n", f" {pixel_size} 8 2\n"))
    return path


def star30(tmp_path, detector_um, magnification):
    """A pre-3.1 STAR file (one table) with a detector pixel size and magnification."""
    stack(tmp_path)
    labels = ("rlnImageName", "rlnDefocusU", "rlnVoltage", "rlnSphericalAberration",
              "rlnAmplitudeContrast", "rlnDetectorPixelSize", "rlnMagnification")
    rows = [(f"{i:06d}@s.mrcs", 1e4, 300, 2.7, 0.1, detector_um, magnification) for i in (1, 2)]
    (tmp_path / "old.star").write_text("data_\n\nloop_\n" + "".join(f"_{c}\n" for c in labels)
                                       + "".join(" ".join(map(str, r)) + "\n" for r in rows))
    return tmp_path / "old.star"


def stack(tmp_path, n=4, box=8, name="s.mrcs", value=None):
    data = np.random.default_rng(0).normal(size=(n, box, box)).astype(np.float32)
    if value is not None:
        data[2, 3, 3] = value
    with warnings.catch_warnings():  # written with mrcfile directly: bad data allowed
        warnings.simplefilter("ignore")
        with np.errstate(invalid="ignore"), mrcfile.new(tmp_path / name, overwrite=True) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = 2.0
    return tmp_path / name


def truncated(tmp_path):
    full = stack(tmp_path).read_bytes()
    (tmp_path / "s.mrcs").write_bytes(full[: len(full) - 100])
    return tmp_path / "s.mrcs"


def with_mode(tmp_path, mode):
    path = stack(tmp_path, name="m.mrc")
    raw = bytearray(path.read_bytes())
    raw[12:16] = np.int32(mode).tobytes()  # header word 4: mode
    path.write_bytes(bytes(raw))
    return path


def complex_map(tmp_path):
    with mrcfile.new(tmp_path / "c.mrc") as mrc:
        mrc.set_data(np.ones((2, 4, 4), np.complex64))
    return tmp_path / "c.mrc"


def good_rows(n=3, stack_name="s.mrcs"):
    return [(f"{i + 1:06d}@{stack_name}", 10000 + i, 1) for i in range(n)]


def _read_stack_batch(tmp_path):
    stack(tmp_path, value=np.nan)
    ps = ParticleStack.from_star(star31(tmp_path, good_rows(4)))
    ps.read([0, 1])  # clean images read fine
    ps.read([3, 2])


def _mixed_boxes(tmp_path):
    stack(tmp_path, box=8, name="a.mrcs")
    stack(tmp_path, box=10, name="b.mrcs")
    ParticleStack.from_star(star31(tmp_path, [("000001@a.mrcs", 1e4, 1), ("000001@b.mrcs", 1e4, 1)]))


def _particles_df(defocus=(1e4, 1.1e4), group=(1, 1)):
    return pd.DataFrame({"rlnImageName": ["000001@s.mrcs", "000002@s.mrcs"],
                         "rlnDefocusU": list(defocus), "rlnOpticsGroup": list(group)})


def _overwrite_existing(tmp_path):
    (tmp_path / "out.star").write_text(OLD_STAR)
    write_particles(tmp_path / "out.star", _particles_df(group=(1, 3)), OPTICS.assign(rlnImageSize=8))


# (id, action(tmp_path), file name in message, field in message or None, extra text in message)
CASES = [
    ("star-missing", lambda t: read_star(t / "nope.star"), "nope.star", None, "does not exist"),
    ("particles-missing", lambda t: read_particles(t / "nope.star"), "nope.star", None, "not exist"),
    ("mrc-missing", lambda t: read_mrc(t / "nope.mrc"), "nope.mrc", None, "does not exist"),
    ("stack-file-missing", lambda t: ParticleStack.from_star(star31(t, good_rows(2, "gone.mrcs"))),
     "p.star", "_rlnImageName", "gone.mrcs"),
    ("mrc-truncated", lambda t: read_mrc(truncated(t)), "s.mrcs", "data", "truncated"),
    ("stack-truncated", lambda t: (truncated(t), ParticleStack.from_star(star31(t, good_rows(2)))),
     "s.mrcs", "data", "truncated"),
    ("mrc-not-mrc", lambda t: (t.joinpath("x.mrc").write_text("hello"), read_mrc(t / "x.mrc")),
     "x.mrc", "header", "not an MRC file"),
    ("mrc-mode-4-complex", lambda t: read_mrc(complex_map(t)), "c.mrc", "mode", "unsupported mode 4"),
    ("mrc-mode-7", lambda t: read_mrc(with_mode(t, 7)), "m.mrc", "mode", "unsupported mode 7"),
    ("mrc-nan", lambda t: read_mrc(stack(t, value=np.nan)), "s.mrcs", "data", "image 3"),
    ("mrc-inf", lambda t: read_mrc(stack(t, value=np.inf)), "s.mrcs", "data", "NaN or infinite"),
    ("stack-nan-batch", _read_stack_batch, "s.mrcs", "data", "000003@s.mrcs (particle row 3)"),
    ("star-no-image-name", lambda t: (stack(t), ParticleStack.from_star(
        star31(t, [(1e4, 1)], labels=("rlnDefocusU", "rlnOpticsGroup")))),
     "p.star", "_rlnImageName", "no image names"),
    ("image-name-garbled", lambda t: (stack(t), ParticleStack.from_star(
        star31(t, [("x@s.mrcs", 1e4, 1)]))), "p.star", "_rlnImageName", "'x@s.mrcs'"),
    ("image-index-beyond-stack", lambda t: (stack(t, n=4), ParticleStack.from_star(
        star31(t, good_rows(5)))), "p.star", "_rlnImageName", "row 5 asks for image 5"),
    ("mixed-box-sizes", _mixed_boxes, "p.star", "_rlnImageName", "mixed box sizes"),
    ("optics-group-undefined", lambda t: read_particles(
        star31(t, [("000001@s.mrcs", 1e4, 1), ("000002@s.mrcs", 1e4, 2)])),
     "p.star", "_rlnOpticsGroup", "optics group 2"),
    ("defocus-not-numeric", lambda t: read_particles(
        star31(t, [("000001@s.mrcs", 1e4, 1), ("000002@s.mrcs", "abc", 1)])),
     "p.star", "_rlnDefocusU", "'abc' in row 2"),
    ("star-empty", lambda t: (t.joinpath("e.star").write_text(""), read_star(t / "e.star")),
     "e.star", None, "empty STAR"),
    ("star-comments-only", lambda t: (t.joinpath("e.star").write_text("# nothing\n\n"),
                                      read_particles(t / "e.star")), "e.star", None, "no data_"),
    ("particles-no-rows", lambda t: read_particles(star31(t, [])), "p.star", "data_particles",
     "no rows"),
    ("star-malformed", lambda t: (t.joinpath("b.star").write_text(
        "data_x\n\nloop_\n_a\n_b\n1 2\n3 4 5\n"), read_star(t / "b.star")), "b.star", None,
     "not a readable STAR"),
    ("model-star-as-particles", lambda t: (t.joinpath("m.star").write_text(
        "data_a\n\n_x 1\n\ndata_b\n\n_y 2\n"), read_particles(t / "m.star")), "m.star",
     "data_particles", "not a particle file"),
    ("pixel-size-negative", lambda t: read_particles(star_px(t, -2.0)), "p.star",
     "_rlnImagePixelSize", "value -2.0 in row 1 of data_optics must be a positive number"),
    ("pixel-size-zero-stack", lambda t: ParticleStack.from_star(star_px(t, 0)), "p.star",
     "_rlnImagePixelSize", "value 0 in row 1 of data_optics"),
    ("pixel-size-nan", lambda t: read_particles(star_px(t, "nan")), "p.star",
     "_rlnImagePixelSize", "positive"),
    ("detector-pixel-size-zero", lambda t: ParticleStack.from_star(star30(t, 0.0, 50000)),
     "old.star", "_rlnDetectorPixelSize", "value 0.0 in row 1 of data_particles"),
    ("magnification-negative", lambda t: read_particles(star30(t, 5.0, -50000)), "old.star",
     "_rlnMagnification", "value -50000 in row 1 of data_particles"),
    # writers: nothing may be left behind
    ("write-defocus-not-numeric", lambda t: write_particles(
        t / "out.star", _particles_df(defocus=(1e4, "abc")), OPTICS.assign(rlnImageSize=8)),
     "out.star", "_rlnDefocusU", "row 2"),
    ("write-optics-group-undefined", lambda t: write_particles(
        t / "out.star", _particles_df(group=(1, 3)), OPTICS.assign(rlnImageSize=8)),
     "out.star", "_rlnOpticsGroup", "optics group 3"),
    ("write-over-existing-fails", _overwrite_existing, "out.star", "_rlnOpticsGroup", "group 3"),
    ("write-optics-no-voltage", lambda t: write_particles(
        t / "out.star", _particles_df(), OPTICS.drop(columns="rlnVoltage").assign(rlnImageSize=8)),
     "out.star", "_rlnVoltage", "needs this label"),
    ("write-optics-conflict", lambda t: write_particles(
        t / "out.star", _particles_df().assign(rlnVoltage=[300.0, 200.0]),
        OPTICS.assign(rlnImageSize=8)), "out.star", "_rlnVoltage", "row 2"),
    ("write-star-empty", lambda t: write_star(t / "out.star", {}), "out.star", None,
     "nothing to write"),
    ("write-star-bad-string", lambda t: write_star(t / "out.star", {"x": pd.DataFrame(
        {"rlnMicrographName": ["a#b"]})}), "out.star", "_rlnMicrographName", "'a#b'"),
    ("write-mrc-nan", lambda t: write_mrc(t / "out.mrcs", np.full((2, 4, 4), np.nan), 1.0),
     "out.mrcs", "data", "NaN"),
    ("write-mrc-bad-pixel-size", lambda t: write_mrc(t / "out.mrc", np.zeros((4, 4)), -1),
     "out.mrc", "pixel_size_A", "positive"),
    ("write-stack-inf", lambda t: write_particle_stack(
        t / "out.star", np.where(np.eye(4) > 0, np.inf, 0)[None].repeat(2, 0), _particles_df(),
        OPTICS), "out.mrcs", "data", "infinite"),
    ("write-stack-count-mismatch", lambda t: write_particle_stack(
        t / "out.star", np.zeros((3, 4, 4)), _particles_df(), OPTICS), "out.star",
     "data_particles", "3 images but 2 particle rows"),
    ("write-particles-pixel-size-zero", lambda t: write_particles(
        t / "out.star", _particles_df(), OPTICS.assign(rlnImageSize=8, rlnImagePixelSize=0.0)),
     "out.star", "_rlnImagePixelSize", "positive"),
    ("write-stack-pixel-size-negative", lambda t: write_particle_stack(
        t / "out.star", np.zeros((2, 4, 4)), _particles_df(),
        OPTICS.assign(rlnImagePixelSize=-1.5)), "out.star", "_rlnImagePixelSize", "-1.5"),
    ("write-stack-no-pixel-size", lambda t: write_particle_stack(
        t / "out.star", np.zeros((2, 4, 4)), _particles_df(),
        OPTICS.drop(columns="rlnImagePixelSize")), "out.star", "_rlnImagePixelSize", "needs"),
]


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("action,file_name,field,text", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, action, file_name, field, text):
    with pytest.raises(CryolabInputError) as info:
        action(tmp_path)  # each case writes its own (bad) input files first
    message = str(info.value)
    assert "\n" not in message
    assert file_name in message
    assert text in message
    if field is not None:
        assert f"field {field}" in message and info.value.field == field
    # no partial or temporary output: no new out.* file, no hidden temporary file
    written = [p.name for p in tmp_path.glob("out.*") if p.read_bytes() != OLD_STAR.encode()]
    temporary = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert not written and not temporary, written + temporary


def test_failed_write_keeps_old_file(tmp_path):
    with pytest.raises(CryolabInputError):
        _overwrite_existing(tmp_path)
    assert (tmp_path / "out.star").read_text() == OLD_STAR


@pytest.mark.parametrize("write", [
    lambda t: write_particles(t / "out.star", _particles_df(defocus=(1e4, "abc")),
                              OPTICS.assign(rlnImageSize=8)),
    lambda t: write_mrc(t / "out.mrcs", np.full((2, 4, 4), np.inf), 1.0),
    lambda t: write_particle_stack(t / "out.star", np.full((2, 4, 4), np.nan), _particles_df(),
                                   OPTICS),
    lambda t: write_particle_stack(t / "out.star", np.zeros((2, 4, 4)), _particles_df(group=(1, 2)),
                                   OPTICS),
], ids=["particles", "mrc", "stack-nan", "stack-bad-group"])
def test_failed_write_leaves_folder_unchanged(tmp_path, write):
    (tmp_path / "keep.txt").write_text("x")
    before = _snapshot(tmp_path)
    with pytest.raises(CryolabInputError):
        write(tmp_path)
    assert _snapshot(tmp_path) == before
