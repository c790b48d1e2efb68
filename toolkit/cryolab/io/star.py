"""STAR files as RELION writes them, read into ``pandas`` tables.

Column names are the STAR labels without the leading underscore, as the
``starfile`` package spells them: ``_rlnDefocusU`` is column ``rlnDefocusU``.
Error messages quote labels as they appear in the file (``_rlnDefocusU``).

RELION 3.1 particle files have a ``data_optics`` table (one row per optics
group: voltage, Cs, pixel size, box size) and a ``data_particles`` table whose
rows point at their group through ``_rlnOpticsGroup``. Older files (3.0) have a
single table with the optics values repeated on every row::

    particles, optics = read_particles("run_data.star")
    particles["rlnVoltage"]          # merged in from data_optics (3.1) or per row (3.0)
    write_particles("out.star", particles, optics)   # always RELION 3.1 layout

STAR has no types: a value is read as a number when every value in its column
parses as one, so strings such as ``"123"`` or ``"nan"`` come back as numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..errors import CryolabInputError
from ._files import atomic_path, locate_stack, project_path, require_file

__all__ = [
    "read_star", "write_star", "read_particles", "write_particles",
    "optics_from_particles", "label", "check_pixel_sizes",
]

# RELION labels whose values must be numbers (checked when reading particle files).
NUMERIC_LABELS = frozenset(
    "rln" + s for s in """
    OpticsGroup Voltage SphericalAberration AmplitudeContrast ImagePixelSize ImageSize
    ImageDimensionality MicrographOriginalPixelSize MicrographPixelSize BeamTiltX BeamTiltY
    Magnification DetectorPixelSize CoordinateX CoordinateY CoordinateZ
    DefocusU DefocusV DefocusAngle PhaseShift CtfBfactor CtfScalefactor CtfMaxResolution
    CtfFigureOfMerit AngleRot AngleTilt AnglePsi AngleRotPrior AngleTiltPrior AnglePsiPrior
    OriginX OriginY OriginXAngst OriginYAngst OriginXPrior OriginYPrior
    OriginXPriorAngst OriginYPriorAngst ClassNumber RandomSubset GroupNumber NormCorrection
    MaxValueProbDistribution NrOfSignificantSamples LogLikeliContribution
    AutopickFigureOfMerit HelicalTubeID
    """.split())

# Labels that belong to an optics group, not to a particle (RELION 3.1 data_optics).
OPTICS_LABELS = frozenset(
    "rln" + s for s in """
    OpticsGroup OpticsGroupName Voltage SphericalAberration AmplitudeContrast ImagePixelSize
    ImageSize ImageDimensionality MicrographOriginalPixelSize MicrographPixelSize MtfFileName
    BeamTiltX BeamTiltY OddZernike EvenZernike CtfDataAreCtfPremultiplied
    MagMat00 MagMat01 MagMat10 MagMat11
    """.split())

# Labels every optics row written by ``write_particles`` has.
REQUIRED_OPTICS = ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
                   "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
                   "rlnImageDimensionality")
GROUP = "rlnOpticsGroup"
IMAGE = "rlnImageName"
# Labels that set the pixel size (Angstrom; pre-3.1: detector pixel in um and magnification).
PIXEL_LABELS = ("rlnImagePixelSize", "rlnDetectorPixelSize", "rlnMagnification")


def show(value) -> str:
    """A value as a message shows it: strings quoted, numpy scalars as plain numbers."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)


def label(column: str) -> str:
    """The STAR spelling of a column name: ``label("rlnDefocusU") == "_rlnDefocusU"``."""
    return column if column.startswith("_") else "_" + column


# ----------------------------------------------------------------------------- generic STAR

def read_star(path) -> dict[str, pd.DataFrame]:
    """Read every ``data_`` block of a STAR file.

    ``data_optics`` becomes key ``"optics"``; a block of ``_key value`` lines
    (no ``loop_``) becomes a one-row DataFrame. Raises ``CryolabInputError`` for
    a missing, empty or malformed file.

    Parameters
    ----------
    path : str or Path
        The STAR file.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``{block name without "data_": table}``, in file order; columns are the labels
        without the leading underscore (``rlnDefocusU``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "run_model.star"
    ...     _ = path.write_text("data_model_general\\n_rlnPixelSize 1.25\\n\\n"
    ...                         "data_model_classes\\nloop_\\n_rlnClassDistribution #1\\n0.75\\n0.25\\n")
    ...     blocks = read_star(path)
    >>> list(blocks), float(blocks["model_general"]["rlnPixelSize"].iloc[0])
    (['model_general', 'model_classes'], 1.25)
    >>> blocks["model_classes"]["rlnClassDistribution"].tolist()
    [0.75, 0.25]
    """
    path = require_file(path, "STAR file")
    try:
        blocks = starfile.read(path, always_dict=True)
    except (ValueError, IndexError, TypeError, KeyError) as exc:
        msg = " ".join(str(exc).split())
        raise CryolabInputError(f"not a readable STAR file ({msg})", path=path) from None
    if not blocks:
        raise CryolabInputError("empty STAR file: no data_ blocks found", path=path)
    as_bool = {name: [c for c in b.columns if pd.api.types.is_bool_dtype(b[c])]
               for name, b in blocks.items() if isinstance(b, pd.DataFrame)}
    if any(as_bool.values()):   # text such as TRUE/false was read as booleans: STAR has none, keep the text
        names = sorted({c for v in as_bool.values() for c in v})
        text = starfile.read(path, always_dict=True, parse_as_string=names)
        for name, cols in as_bool.items():
            for c in cols:
                blocks[name][c] = text[name][c]
    out = {}
    for name, block in blocks.items():
        if block is None:
            block = pd.DataFrame()
        elif isinstance(block, dict):
            block = pd.DataFrame({k: [v] for k, v in block.items()})
        out[name] = block.reset_index(drop=True)
    return out


def _format_column(col: pd.Series, path, block: str) -> pd.Series:
    """Values as STAR text; floats use the shortest text that reads back exactly."""
    if pd.api.types.is_bool_dtype(col):
        return col.astype(np.int64).astype(str)
    if pd.api.types.is_float_dtype(col):
        return pd.Series(col.to_numpy(dtype=np.float64).astype(str), index=col.index)
    if pd.api.types.is_numeric_dtype(col):
        return col
    text = col.astype(str)
    bad = text.str.contains(r"[#\"'\n\r\t]", regex=True, na=False)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise CryolabInputError(
            f"value {show(text.iloc[row])} in row {row + 1} of data_{block} contains a character STAR "
            "cannot hold (# quote tab newline)", path=path, field=label(str(col.name)))
    return text.where(col.notna(), np.nan)


def write_star(path, blocks: dict) -> Path:
    """Write ``{block name: DataFrame or dict}`` as a STAR file, atomically.

    DataFrames become ``loop_`` tables, dicts become ``_key value`` blocks. Column
    names may be given with or without the leading underscore. Floats are written
    with full precision, so ``read_star(write_star(p, b))`` gives back ``b``.

    Parameters
    ----------
    path : str or Path
        File to write (replaced if it exists; written through a temporary name).
    blocks : dict of str to pandas.DataFrame or dict
        ``{block name without "data_": table or {label: value}}``, written in this order.

    Returns
    -------
    Path
        The file written, whose first line says it comes from cryolab.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> table = pd.DataFrame({"rlnAnglePsi": [0.1, 1 / 3], "rlnClassNumber": [1, 2]})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_star(Path(folder) / "x.star", {"general": {"rlnFinalResolution": 4.2},
    ...                                                 "particles": table})
    ...     text = path.read_text()
    ...     back = read_star(path)
    >>> "data_particles" in text and "loop_" in text and "_rlnFinalResolution" in text
    True
    >>> back["particles"].equals(table)                     # exact round trip
    True
    """
    path = Path(path)
    if not isinstance(blocks, dict) or not blocks:
        raise CryolabInputError("nothing to write: expected a non-empty {name: table} dict",
                                path=path)
    out = {}
    for name, block in blocks.items():
        if isinstance(block, dict):
            block = pd.DataFrame({k: [v] for k, v in block.items()})
            as_dict = True
        elif isinstance(block, pd.DataFrame):
            as_dict = False
        else:
            raise CryolabInputError(f"block {name!r} is a {type(block).__name__}, not a table",
                                    path=path)
        names = [str(c).lstrip("_") for c in block.columns]
        for c in names:
            if not c or any(ch.isspace() for ch in c):
                raise CryolabInputError(f"bad column name in data_{name}", path=path, field=repr(c))
        if len(set(names)) != len(names):
            raise CryolabInputError(f"duplicate column names in data_{name}", path=path,
                                    field=", ".join(sorted({c for c in names if names.count(c) > 1})))
        text = pd.DataFrame({c: _format_column(block.iloc[:, i].reset_index(drop=True), path, name)
                             for i, c in enumerate(names)})
        out[str(name)] = text.iloc[0].to_dict() if as_dict else text
    body = starfile.to_string(out)
    body = "# Written by cryolab\n" + body.split("\n", 1)[1]
    with atomic_path(path) as tmp:
        tmp.write_text(body)
    return path


# ----------------------------------------------------------------------------- particles

def _check_numeric(df: pd.DataFrame, path, block: str) -> pd.DataFrame:
    """Make sure RELION's numeric labels hold numbers; name the first bad value."""
    df = df.copy()
    for col in df.columns:
        if col not in NUMERIC_LABELS or pd.api.types.is_numeric_dtype(df[col]):
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise CryolabInputError(
                f"value {show(df[col].iloc[row])} in row {row + 1} of data_{block} is not a number",
                path=path, field=label(col))
        df[col] = num
    return df


def check_pixel_sizes(df: pd.DataFrame, path, block: str) -> None:
    """Every ``_rlnImagePixelSize``, ``_rlnDetectorPixelSize`` and ``_rlnMagnification`` in
    ``df`` is a positive number; else a ``CryolabInputError`` naming ``path``, the label and row."""
    for col in PIXEL_LABELS:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise CryolabInputError(
                f"value {show(df[col].iloc[row])} in row {row + 1} of data_{block} must be a "
                "positive number", path=path, field=label(col))


def _check_groups(optics: pd.DataFrame, path) -> pd.DataFrame:
    if GROUP not in optics.columns:
        raise CryolabInputError("data_optics has no optics group numbers", path=path,
                                field=label(GROUP))
    groups = optics[GROUP]
    if groups.isna().any() or (groups != groups.round()).any():
        raise CryolabInputError("optics group numbers must be integers", path=path,
                                field=label(GROUP))
    if groups.duplicated().any():
        raise CryolabInputError(
            f"optics group {int(groups[groups.duplicated()].iloc[0])} is defined twice in data_optics",
            path=path, field=label(GROUP))
    optics = optics.copy()
    optics[GROUP] = groups.astype(np.int64)
    return optics


def _assign_groups(particles: pd.DataFrame, optics: pd.DataFrame, path) -> pd.DataFrame:
    """Check every particle's optics group is defined (filling it when there is one group)."""
    particles = particles.copy()
    if GROUP not in particles.columns:
        if len(optics) != 1:
            raise CryolabInputError("particles have no optics group but data_optics defines "
                                    f"{len(optics)} groups", path=path, field=label(GROUP))
        particles[GROUP] = int(optics[GROUP].iloc[0])
    groups = particles[GROUP]
    undefined = ~groups.isin(optics[GROUP])
    if undefined.any():
        row = int(np.flatnonzero(undefined.to_numpy())[0])
        raise CryolabInputError(
            f"particle row {row + 1} refers to optics group {show(groups.iloc[row])}, which data_optics "
            f"does not define (defined: {', '.join(map(str, optics[GROUP]))})",
            path=path, field=label(GROUP))
    particles[GROUP] = groups.astype(np.int64)
    return particles


def merge_optics(particles: pd.DataFrame, optics: pd.DataFrame, path=None) -> pd.DataFrame:
    """Particles with each optics column copied onto the rows of its group.

    Columns the particles already have are kept as they are.
    """
    optics = _check_groups(optics, path)
    particles = _assign_groups(particles, optics, path)
    by_group = optics.set_index(GROUP)
    merged = {c: particles[GROUP].map(by_group[c]) for c in by_group.columns
              if c not in particles.columns}
    return pd.concat([particles, pd.DataFrame(merged, index=particles.index)], axis=1)


def _particle_block(blocks: dict, path):
    if "optics" in blocks:
        if "particles" not in blocks:
            raise CryolabInputError("file has data_optics but no data_particles block", path=path,
                                    field="data_particles")
        return blocks["particles"], blocks["optics"]
    if "particles" in blocks:
        return blocks["particles"], None
    if len(blocks) == 1:
        return next(iter(blocks.values())), None
    raise CryolabInputError(
        f"not a particle file: expected data_optics + data_particles or a single data_ block, "
        f"found {', '.join('data_' + b for b in blocks)}", path=path, field="data_particles")


def read_particles(path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Read a particle STAR file: ``(particles, optics)``.

    RELION 3.1 files: optics columns are merged into every particle row via
    ``_rlnOpticsGroup`` and ``optics`` is the ``data_optics`` table. Pre-3.1
    files (one table with per-particle ``_rlnVoltage`` etc.): ``optics`` is None.
    Numeric labels are checked (``_rlnDefocusU`` of ``"abc"`` is an error naming
    the row), and pixel sizes (``_rlnImagePixelSize``, pre-3.1 ``_rlnDetectorPixelSize``
    and ``_rlnMagnification``) must be positive.
    """
    path = Path(path)
    particles, optics = _particle_block(read_star(path), path)
    if particles.shape[1] == 0 or len(particles) == 0:
        raise CryolabInputError("the particle table has no rows", path=path, field="data_particles")
    particles = _check_numeric(particles, path, "particles")
    check_pixel_sizes(particles, path, "particles")
    if optics is None:
        return particles, None
    if len(optics) == 0:
        raise CryolabInputError("data_optics has no rows", path=path, field="data_optics")
    optics = _check_groups(_check_numeric(optics, path, "optics"), path)
    check_pixel_sizes(optics, path, "optics")
    return merge_optics(particles, optics, path), optics


def optics_from_particles(particles: pd.DataFrame, path=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build a RELION 3.1 optics table from per-particle optics columns (pre-3.1 tables).

    One group per distinct combination of voltage, Cs, amplitude contrast and
    pixel size (``_rlnDetectorPixelSize`` um * 1e4 / ``_rlnMagnification`` when
    ``_rlnImagePixelSize`` is absent). Pixel origins ``_rlnOriginX/Y`` become
    ``_rlnOriginX/YAngst`` when the pixel size is known. Returns ``(particles with
    _rlnOpticsGroup, optics)``.
    """
    particles = particles.copy()
    if "rlnImagePixelSize" not in particles.columns and {
            "rlnDetectorPixelSize", "rlnMagnification"} <= set(particles.columns):
        particles["rlnImagePixelSize"] = (particles["rlnDetectorPixelSize"] * 1e4
                                          / particles["rlnMagnification"])
    if "rlnImagePixelSize" in particles.columns:
        for old in ("rlnOriginX", "rlnOriginY", "rlnOriginXPrior", "rlnOriginYPrior"):
            new = old + "Angst"
            if old in particles.columns and new not in particles.columns:
                particles[new] = particles.pop(old) * particles["rlnImagePixelSize"]
    particles = particles.drop(columns=["rlnDetectorPixelSize", "rlnMagnification", GROUP],
                               errors="ignore")
    keys = [c for c in particles.columns if c in OPTICS_LABELS]
    if not keys:
        particles[GROUP] = 1
        return particles, pd.DataFrame({GROUP: [1]})
    codes = particles.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    optics = particles[keys].drop_duplicates().reset_index(drop=True)
    optics.insert(0, GROUP, np.arange(1, len(optics) + 1))
    particles = particles.drop(columns=keys)
    particles[GROUP] = codes + 1
    return particles, optics


def _split_optics(particles: pd.DataFrame, optics: pd.DataFrame, path) -> pd.DataFrame:
    """Drop optics columns from merged particle rows, after checking they agree with ``optics``."""
    by_group = optics.set_index(GROUP)
    drop = []
    for col in particles.columns:
        if col == GROUP or col not in by_group.columns:
            continue
        expected = particles[GROUP].map(by_group[col])
        same = (particles[col] == expected) | (particles[col].isna() & expected.isna())
        if pd.api.types.is_float_dtype(particles[col]) and pd.api.types.is_float_dtype(expected):
            same |= np.isclose(particles[col], expected, rtol=1e-12, atol=0)
        if not same.all():
            row = int(np.flatnonzero(~same.to_numpy())[0])
            raise CryolabInputError(
                f"particle row {row + 1} has {show(particles[col].iloc[row])} but its optics group "
                f"{show(particles[GROUP].iloc[row])} has {show(expected.iloc[row])}; change the optics "
                "table instead", path=path, field=label(col))
        drop.append(col)
    return particles.drop(columns=drop)


def particle_blocks(particles: pd.DataFrame, optics: pd.DataFrame | None, path) -> dict:
    """Validated ``{"optics": ..., "particles": ...}`` blocks for a RELION 3.1 file."""
    if particles is None or len(particles) == 0:
        raise CryolabInputError("no particles to write", path=path, field="data_particles")
    particles = particles.rename(columns=lambda c: str(c).lstrip("_")).reset_index(drop=True)
    if optics is None:
        particles, optics = optics_from_particles(particles, path)
    optics = _check_groups(optics.rename(columns=lambda c: str(c).lstrip("_"))
                           .reset_index(drop=True), path)
    if "rlnOpticsGroupName" not in optics.columns:
        optics.insert(1, "rlnOpticsGroupName", [f"opticsGroup{g}" for g in optics[GROUP]])
    if "rlnImageDimensionality" not in optics.columns:
        optics["rlnImageDimensionality"] = 2
    for col in REQUIRED_OPTICS:
        if col not in optics.columns:
            raise CryolabInputError("the optics table needs this label", path=path,
                                    field=label(col))
        if optics[col].isna().any():
            raise CryolabInputError("the optics table has a missing value", path=path,
                                    field=label(col))
    optics = _check_numeric(optics, path, "optics")
    check_pixel_sizes(optics, path, "optics")
    for col in ("rlnImageSize", "rlnImageDimensionality"):
        optics[col] = optics[col].astype(np.int64)
    particles = _check_numeric(_assign_groups(particles, optics, path), path, "particles")
    check_pixel_sizes(particles, path, "particles")
    particles = _split_optics(particles, optics, path)
    return {"optics": optics, "particles": particles}


def write_particles(path, particles: pd.DataFrame, optics: pd.DataFrame | None) -> Path:
    """Write a RELION 3.1 particle file (``data_optics`` then ``data_particles``), atomically.

    ``particles`` may carry merged optics columns (as ``read_particles`` returns
    them); they must agree with ``optics`` and are written only there. With
    ``optics=None`` groups are built by ``optics_from_particles``. The optics
    table must define ``_rlnVoltage``, ``_rlnSphericalAberration``,
    ``_rlnAmplitudeContrast``, ``_rlnImagePixelSize`` and ``_rlnImageSize``.

    ``_rlnImageName`` stack paths are read as for a STAR file at ``path`` (relative to its
    folder or to the working folder, see ``ParticleStack``) and written as RELION reads them:
    relative to the working folder, absolute outside it. Names of stacks that do not
    exist (yet) are written as given.
    """
    path = Path(path)
    particles = particles.rename(columns=lambda c: str(c).lstrip("_"))
    if IMAGE in particles.columns:
        particles = particles.assign(**{IMAGE: _names_for_project(particles[IMAGE], path)})
    return write_star(path, particle_blocks(particles, optics, path))


def _names_for_project(names: pd.Series, star_path: Path) -> pd.Series:
    """Image names, the stacks that exist renamed by ``project_path`` (one look-up per stack)."""
    parts = names.astype(str).str.partition("@")  # "000012@a.mrcs" -> ("000012", "@", "a.mrcs")
    has_at = parts[1] == "@"
    files = parts[2].where(has_at, parts[0])        # a name without "@" is a file name
    renamed = {}
    for name in files.unique():
        found = locate_stack(name, star_path) if name else None
        renamed[name] = name if found is None else project_path(found)
    new = (parts[0] + "@").where(has_at, "") + files.map(renamed)
    return new.where(names.notna(), names)
