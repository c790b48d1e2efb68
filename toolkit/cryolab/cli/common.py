"""Helpers shared by the ``cryolab`` commands: argument types, output folders, messages, provenance.

Every command validates all inputs before it creates any output (bad input: exit 2, nothing
written); :func:`make_folder` remembers the folders a command created so that
:func:`remove_created` can take them away again when bad input is found late.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import CryolabInputError

log = logging.getLogger("cryolab.cli")


# --------------------------------------------------------------------------- argument types


def _number(kind, low=None, strict=True, text=""):
    def parse(value):
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {text or kind.__name__}") from None
        if low is not None and (v <= low if strict else v < low):
            raise argparse.ArgumentTypeError(f"{value!r} must be {'>' if strict else '>='} {low}")
        return v
    return parse


positive_int = _number(int, 0, text="an integer")
nonneg_int = _number(int, 0, strict=False, text="an integer")
positive_float = _number(float, 0.0, text="a number")
nonneg_float = _number(float, 0.0, strict=False, text="a number")

#: argparse types of the value kinds in :data:`cryolab.settings.COMMAND_FLAGS`
VALUE_KINDS = {"positive_int": positive_int, "nonneg_int": nonneg_int, "positive_float": positive_float,
               "nonneg_float": nonneg_float, "int": int, "str": str, "flag": bool}


def int_list(value: str) -> list[int]:
    """``"1,3"`` -> ``[1, 3]`` (class numbers, 1-based)."""
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of integers") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: class numbers start at 1")
    return out


# --------------------------------------------------------------------------- shared helpers

def say(args, *lines) -> None:
    """Print unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        for line in lines:
            print(line, flush=True)


def require_input(path, what: str = "input file") -> Path:
    """The path of an existing input file, else a CryolabInputError (exit 2)."""
    from ..io._files import require_file
    return require_file(path, what)


def check_output(path, folder: bool = False) -> Path:
    """Check (without creating anything) that ``path`` can be written: its parent is, or can
    become, a folder. ``folder=True``: ``path`` itself is the output folder."""
    p = Path(path)
    target = p if folder else p.parent
    for q in [target, *target.parents]:
        if q.exists():
            if not q.is_dir():
                raise CryolabInputError("cannot create the output folder: a file is in the way", path=q)
            break
    if not folder and p.is_dir():
        raise CryolabInputError("output file is an existing folder", path=p)
    return p


_CREATED: list[Path] = []


def make_folder(path) -> Path:
    """Create an output folder (after validation); remembers the top folder it created."""
    p = Path(path)
    new = [q for q in [p, *p.parents] if not q.exists()]
    p.mkdir(parents=True, exist_ok=True)
    if new:
        _CREATED.append(new[-1])
    return p


def forget_created() -> None:
    """Start of a command: folders made by earlier commands are never removed."""
    _CREATED.clear()


def remove_created() -> None:
    """Remove the folders this command created (after bad input found late: no partial output)."""
    import shutil
    while _CREATED:
        shutil.rmtree(_CREATED.pop(), ignore_errors=True)


def record(command: str, args, inputs=(), backend: str | None = None):
    """A :class:`cryolab.provenance.RunRecord` of the parsed arguments; ``backend``: the one that
    runs (None: the one ``CRYOLAB_BACKEND`` chooses), recorded by its module name."""
    from ..backend import backend_name, resolve_backend
    from ..provenance import RunRecord
    params = {k: v for k, v in vars(args).items() if k not in ("func", "command", "argv")}
    return RunRecord(command, params, inputs=inputs, argv=getattr(args, "argv", None),
                     seed=params.get("seed"), backend=backend_name(resolve_backend(backend)))


def add_common(p) -> None:
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.add_argument("--verbose", action="store_true", help="also print progress messages")


def load_particles(path):
    """A ParticleStack from a STAR file (CryolabInputError for a bad file or missing images)."""
    from ..io import ParticleStack
    require_input(path, "STAR file")
    return ParticleStack.from_star(path)


def provenance_name(folder, prefix):
    """The ``run.json`` path of the run ``<folder>/<prefix>`` (see :mod:`cryolab.provenance`)."""
    from ..provenance import provenance_path
    return provenance_path(folder, prefix)


def classify_flags(command: str) -> list:
    """``[(flag, Settings field, argparse type, default, help), ...]`` of a classification command
    (from :data:`cryolab.settings.COMMAND_FLAGS`)."""
    from ..settings import flags_of
    return [(flag, name, VALUE_KINDS[kind], default, text) for flag, name, kind, default, text in flags_of(command)]


def read_map(path, angpix=None, what: str = "map", default_px=None):
    """``(volume [N,N,N], pixel size A)`` of an MRC file; ``angpix`` overrides the header,
    ``default_px`` stands in for a header without a pixel size."""
    from ..io import read_mrc
    vol, px = read_mrc(require_input(path, what))
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise CryolabInputError(f"expected a cubic 3D map, got shape {vol.shape}", path=path)
    px = angpix or px or default_px
    if not px:
        raise CryolabInputError("the pixel size is not in the header: give --angpix", path=path)
    return vol, float(px)


def reference_map(path, stack, what: str = "reference map"):
    """The ``--ref`` map on the particles' grid: read (:func:`read_map`), resampled in Fourier space
    when its pixel size differs from the particles' (logged), then centre-cropped or zero-padded
    to their box. A map whose resampled pixel size would be off by more than 1 % is refused."""
    import numpy as np

    from ..fourier import rescale
    vol, px = read_map(path, what=what, default_px=stack.pixel_size_A)
    n, target = vol.shape[0], float(stack.pixel_size_A)
    if abs(px - target) > 0.001 * target:
        m = int(round(n * px / target))
        if m < 2 or abs(n * px / m - target) > 0.01 * target:
            raise CryolabInputError(f"cannot resample the map's pixel size ({px:g} A) to the particles' "
                                    f"({target:g} A) within 1 %", path=path, field="--ref")
        log.warning("%s: pixel size %g A differs from the particles' %g A: resampled from %d to %d px",
                    path, px, target, n, m)
        vol = rescale(vol, m, ndim=3)
    box = stack.box_size
    if vol.shape[0] != box:
        if vol.shape[0] == n:        # no resampling: the boxes must agree
            raise CryolabInputError(f"the reference box ({n} px) differs from the particles' ({box} px) at "
                                    f"the same pixel size: crop or pad the map first", path=path, field="--ref")
        out = np.zeros((box,) * 3, np.float32)
        m = vol.shape[0]
        if m > box:                              # keep the centre voxel N//2 where it is
            lo = m // 2 - box // 2
            out[:] = vol[lo:lo + box, lo:lo + box, lo:lo + box]
        else:
            lo = box // 2 - m // 2
            out[lo:lo + m, lo:lo + m, lo:lo + m] = vol
        log.warning("%s: the resampled map (%d px) was %s to the particles' box (%d px)", path, m,
                    "cropped" if m > box else "padded", box)
        vol = out
    return vol.astype(np.float32, copy=False)


def check_gpu(args) -> None:
    """``--gpu`` (or ``CRYOLAB_BACKEND=cupy``) where CuPy cannot run: a clear error with CuPy's or
    CUDA's message, before anything is written."""
    from ..backend import BackendError, resolve_backend
    try:
        resolve_backend("cupy" if getattr(args, "gpu", False) else None)
    except BackendError as exc:
        raise CryolabInputError(str(exc), field="--gpu" if getattr(args, "gpu", False) else None) from None


def solvent_mask(args, stack) -> list:
    """``--solvent_mask``, checked against the particles' box and pixel size before anything is
    written (:func:`cryolab.masks.read_mask`); the inputs to record (``[]`` without one)."""
    if not getattr(args, "solvent_mask", None):
        return []
    from ..masks import read_mask
    read_mask(require_input(args.solvent_mask, "solvent mask"), stack.box_size, stack.pixel_size_A)
    return [args.solvent_mask]
