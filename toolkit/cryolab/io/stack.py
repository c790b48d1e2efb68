"""Particle images referenced by a STAR file, read lazily in batches.

``_rlnImageName`` is ``"000012@stacks/mic1.mrcs"``: image 12 (1-based) of that
stack. RELION resolves the stack path against its working folder (the project
folder), and cryolab writes it that way: relative to the folder cryolab runs in
(absolute for a stack outside it), so RELION run from that same folder finds every
image. Reading, cryolab looks for a relative stack path in the STAR file's folder,
then in the working folder, then in the folders above the STAR file's
(``locate_stack``)::

    stack = ParticleStack.from_star("Extract/job007/particles.star")
    for rows, images in stack.iter_batches(256):      # float32 [B, N, N]
        ctf = stack.ctf(rows)                          # CTFParams, one entry per image
    stack.subset(rows[:10]).write_star("subset.star")  # image paths rewritten
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from ..ctf import CTFParams
from ..errors import CryolabInputError
from ._files import locate_stack, project_path
from .mrc import check_finite, mrc_header_info, open_mrc_data, write_mrc
from .star import (GROUP, check_pixel_sizes, label, show, merge_optics, optics_from_particles,
                   particle_blocks, read_particles, write_star as _write_star_blocks)

__all__ = ["ParticleStack", "write_particle_stack", "ctf_from_table"]

IMAGE = "rlnImageName"
MAX_OPEN_STACKS = 64
MAX_NAMED = 5  # blank images named in one warning
log = logging.getLogger("cryolab.io")


class _StackFiles:
    """Header cache and a bounded cache of open memory maps, shared by a stack and its subsets."""

    def __init__(self):
        self.headers: dict[Path, dict] = {}
        self.maps: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.blank_seen: set[tuple[Path, int]] = set()  # (stack, image) already warned about

    def header(self, path: Path) -> dict:
        if path not in self.headers:
            self.headers[path] = mrc_header_info(path)
        return self.headers[path]

    def data(self, path: Path) -> np.ndarray:
        if path in self.maps:
            self.maps.move_to_end(path)
        else:
            self.maps[path] = open_mrc_data(path, self.header(path))
            while len(self.maps) > MAX_OPEN_STACKS:
                self.maps.popitem(last=False)
        return self.maps[path]


def _split_image_names(names: pd.Series, star_path):
    """``"000012@a.mrcs"`` -> (11, "a.mrcs"); a name without ``@`` is image 1 of that file."""
    text = names.astype(str)
    parts = text.str.split("@", n=1, expand=True)
    if parts.shape[1] == 1:
        parts[1] = None
    has_at = parts[1].notna()
    files = parts[1].where(has_at, parts[0])
    index = pd.to_numeric(parts[0].where(has_at, "1"), errors="coerce")
    bad = index.isna() | (index < 1) | (index != index.round()) | (files.str.len() == 0) \
        | names.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise CryolabInputError(f"row {row + 1}: {text.iloc[row]!r} is not of the form "
                                "'000012@stack.mrcs' (1-based image number)",
                                path=star_path, field=label(IMAGE))
    return index.to_numpy(dtype=np.int64) - 1, files.to_numpy(dtype=object)


def table_column(table: pd.DataFrame, name: str, rows, default=None, path=None) -> np.ndarray:
    """Column ``name`` of ``table`` at ``rows`` as float64; ``default`` fills a missing optional
    column, and a missing required one (``default=None``) is an error naming ``path`` and the label."""
    if name not in table.columns:
        if default is None:
            raise CryolabInputError("the particle table needs this label", path=path, field=label(name))
        return np.full(len(rows), default, dtype=np.float64)
    return table[name].to_numpy(dtype=np.float64)[rows]


def ctf_from_table(table: pd.DataFrame, path=None, rows=None) -> CTFParams:
    """CTF parameters of the particle ``table`` rows ``rows`` (default all; optics merged in).

    Defocus V defaults to defocus U; angle, phase shift and B-factor to 0; scale to 1. A missing
    required label is a :class:`CryolabInputError` naming ``path`` and the label.
    """
    rows = np.arange(len(table)) if rows is None else rows

    def column(name, default=None):
        return table_column(table, name, rows, default, path)

    dfu = column("rlnDefocusU")
    return CTFParams(
        defocus_u_A=dfu,
        defocus_v_A=column("rlnDefocusV") if "rlnDefocusV" in table.columns else dfu.copy(),
        defocus_angle_deg=column("rlnDefocusAngle", 0.0),
        voltage_kV=column("rlnVoltage"),
        cs_mm=column("rlnSphericalAberration"),
        amplitude_contrast=column("rlnAmplitudeContrast"),
        phase_shift_deg=column("rlnPhaseShift", 0.0),
        bfactor_A2=column("rlnCtfBfactor", 0.0),
        scale=column("rlnCtfScalefactor", 1.0),
    )


class ParticleStack:
    """Particles of a STAR file with their images, CTFs, angles and origins.

    ``table`` holds one row per particle (optics columns merged in), ``optics``
    the RELION 3.1 optics table (None for pre-3.1 files). Images are memory-mapped
    and read only when asked for: ``read(rows)`` gives float32 ``[B, N, N]``.
    """

    def __init__(self, table: pd.DataFrame, optics: pd.DataFrame | None, star_path,
                 _files: _StackFiles | None = None):
        self.star_path = Path(star_path)
        self._files = _files if _files is not None else _StackFiles()
        table = table.reset_index(drop=True)
        if optics is not None:
            table = merge_optics(table, optics, self.star_path)
        if IMAGE not in table.columns:
            raise CryolabInputError("the particle table has no image names",
                                    path=self.star_path, field=label(IMAGE))
        if len(table) == 0:
            raise CryolabInputError("the particle table has no rows", path=self.star_path,
                                    field="data_particles")
        check_pixel_sizes(table, self.star_path, "particles")
        self.table = table
        self.optics = optics
        self._slices, names = _split_image_names(table[IMAGE], self.star_path)
        unique, first_row, self._file_ids = np.unique(names, return_index=True,
                                                      return_inverse=True)
        self._found = [self._resolve(str(n), int(r)) for n, r in zip(unique, first_row)]
        self._paths = [p.resolve() for p in self._found]
        self.box_size = self._check_stacks()
        self._row_pixel_size_A = self._pixel_sizes()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_star(cls, path) -> "ParticleStack":
        """Read a particle STAR file (RELION 3.1 or older) and locate its image stacks.

        Parameters
        ----------
        path : str or Path
            Particle STAR file (``data_optics`` + ``data_particles``, or one pre-3.1 table)
            whose ``_rlnImageName`` entries name ``.mrcs`` stacks.

        Returns
        -------
        ParticleStack
            Images are read on demand (``read``, ``iter_batches``: float32 ``[B, N, N]``).

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> import pandas as pd
        >>> images = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
        >>> particles = pd.DataFrame({"rlnDefocusU": [12000.0, 15000.0, 20000.0],
        ...                           "rlnDefocusV": [11000.0, 15000.0, 19000.0]})
        >>> optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0],
        ...                        "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
        ...                        "rlnImagePixelSize": [2.5]})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     star = Path(folder) / "particles.star"
        ...     _ = write_particle_stack(star, images, particles, optics)
        ...     stack = ParticleStack.from_star(star)
        ...     first_two = stack.read([0, 1])
        >>> len(stack), stack.box_size, stack.pixel_size_A
        (3, 16, 2.5)
        >>> bool(np.array_equal(first_two, images[:2])), stack.ctf().defocus_u_A.tolist()
        (True, [12000.0, 15000.0, 20000.0])
        """
        particles, optics = read_particles(path)
        return cls(particles, optics, path)

    def _resolve(self, name: str, row: int) -> Path:
        found = locate_stack(name, self.star_path)
        if found is not None:
            return found
        where = ("" if Path(name).is_absolute() else
                 f" (looked in the STAR file's folder {self.star_path.parent.resolve()}, the "
                 f"working folder {Path.cwd()} and the folders above the STAR file's)")
        raise CryolabInputError(f"row {row + 1}: stack file {name!r} not found{where}",
                                path=self.star_path, field=label(IMAGE))

    def _check_stacks(self) -> int:
        shapes = [self._files.header(p)["shape"] for p in self._paths]
        boxes = {}
        for path, (nz, ny, nx) in zip(self._paths, shapes):
            if ny != nx:
                raise CryolabInputError(f"images are {nx}x{ny}, not square", path=path, field="nx/ny")
            boxes[path] = nx
        over = np.flatnonzero(self._slices >= np.array([s[0] for s in shapes])[self._file_ids])
        if len(over):
            r = int(over[0])
            path = self._paths[self._file_ids[r]]
            raise CryolabInputError(
                f"row {r + 1} asks for image {self._slices[r] + 1} of {path.name}, which holds "
                f"{shapes[self._file_ids[r]][0]} image(s)", path=self.star_path, field=label(IMAGE))
        sizes = sorted(set(boxes.values()))
        if len(sizes) > 1:
            examples = ", ".join(f"{p.name}: {n}" for p, n in
                                 {next(p for p in boxes if boxes[p] == s): s for s in sizes}.items())
            raise CryolabInputError(f"stacks have mixed box sizes ({examples})",
                                    path=self.star_path, field=label(IMAGE))
        box = sizes[0]
        if "rlnImageSize" in self.table.columns:
            stated = pd.to_numeric(self.table["rlnImageSize"], errors="coerce")
            if (stated != box).any():
                raise CryolabInputError(f"the table says {show(stated[stated != box].iloc[0])} but the "
                                        f"images are {box} pixels", path=self.star_path,
                                        field=label("rlnImageSize"))
        return box

    def _pixel_sizes(self):
        t = self.table
        if "rlnImagePixelSize" in t.columns:
            return t["rlnImagePixelSize"].to_numpy(dtype=np.float64)
        if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(t.columns):
            return (t["rlnDetectorPixelSize"] * 1e4 / t["rlnMagnification"]).to_numpy(np.float64)
        per_file = [self._files.header(p)["pixel_size_A"] for p in self._paths]
        if any(px is None for px in per_file):
            return None
        return np.asarray(per_file, dtype=np.float64)[self._file_ids]

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        px = self._row_pixel_size_A
        px_text = "unknown" if px is None else f"{px[0]:.4g}"
        return (f"ParticleStack({len(self)} particles, box {self.box_size}, "
                f"{px_text} A/px, from {self.star_path.name})")

    @property
    def pixel_size_A(self) -> float | None:
        """Pixel size in Angstrom: optics ``_rlnImagePixelSize``, else pre-3.1
        ``_rlnDetectorPixelSize * 1e4 / _rlnMagnification``, else the MRC header (None if unset)."""
        px = self._row_pixel_size_A
        if px is None:
            return None
        if not np.allclose(px, px[0], rtol=1e-6):
            raise CryolabInputError(
                f"particles have different pixel sizes ({', '.join(f'{v:g}' for v in np.unique(px))}"
                " A); take a subset per optics group", path=self.star_path,
                field=label("rlnImagePixelSize"))
        return float(px[0])

    @property
    def stack_paths(self) -> list[Path]:
        """The image stack files this table refers to (resolved)."""
        return list(self._paths)

    def _rows(self, indices) -> np.ndarray:
        rows = np.arange(len(self))
        return rows if indices is None else np.atleast_1d(rows[indices])

    # ------------------------------------------------------------------ images
    def read(self, indices=None) -> np.ndarray:
        """Images of the given rows (int, list, slice, bool mask; None = all) as float32 ``[B, N, N]``.

        Raises ``CryolabInputError`` naming the stack file and image if any pixel is NaN/inf.
        Blank images (every pixel the same value, e.g. all zero: nothing was extracted) are
        read, not dropped, and named (``000012@stack.mrcs``) in a warning on the
        ``cryolab.io`` logger, once per image however often it is read.
        """
        rows = self._rows(indices)
        n = self.box_size
        out = np.empty((len(rows), n, n), dtype=np.float32)
        fids = self._file_ids[rows]
        for fid in np.unique(fids):
            where = np.flatnonzero(fids == fid)
            slices = self._slices[rows[where]]
            order = np.argsort(slices, kind="stable")
            path = self._paths[fid]
            block = np.asarray(self._files.data(path)[slices[order]], dtype=np.float32)
            check_finite(block, path, lambda i: (
                f"image {slices[order][i] + 1:06d}@{path.name} "
                f"(particle row {rows[where[order[i]]] + 1})"))
            out[where[order]] = block
            self._warn_blank(block, path, slices[order], rows[where[order]])
        return out

    @property
    def blank_warned(self) -> set:
        """The ``(stack file, image index)`` pairs already named as blank (shared with subsets);
        an E-step's worker processes send theirs back to be added here."""
        return self._files.blank_seen

    def _warn_blank(self, block, path, slices, rows) -> None:
        flat = block.reshape(len(block), -1)
        blank = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
        new = [i for i in blank if (path, int(slices[i])) not in self._files.blank_seen]
        if not new:
            return
        self._files.blank_seen.update((path, int(slices[i])) for i in new)
        names = [f"{slices[i] + 1:06d}@{path.name} (particle row {rows[i] + 1}, every pixel "
                 f"{show(float(flat[i, 0]))})" for i in new[:MAX_NAMED]]
        more = f" and {len(new) - MAX_NAMED} more" if len(new) > MAX_NAMED else ""
        log.warning("%s: %d blank image(s), read as they are: %s%s", self.star_path, len(new),
                    ", ".join(names), more)

    def iter_batches(self, batch_size: int, indices=None):
        """Yield ``(rows, images)`` in order, ``batch_size`` images at a time."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rows = self._rows(indices)
        for start in range(0, len(rows), int(batch_size)):
            chunk = rows[start:start + int(batch_size)]
            yield chunk, self.read(chunk)

    # ------------------------------------------------------------------ metadata
    def _column(self, name: str, rows, default=None) -> np.ndarray:
        return table_column(self.table, name, rows, default, self.star_path)

    def ctf(self, indices=None) -> CTFParams:
        """Per-particle CTF parameters (defocus V defaults to U; angle, phase shift, B 0; scale 1)."""
        return ctf_from_table(self.table, self.star_path, self._rows(indices))

    def eulers(self, indices=None) -> np.ndarray | None:
        """``[B, 3]`` (rot, tilt, psi) in degrees; missing angles are 0; None if none are present."""
        names = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
        if not any(n in self.table.columns for n in names):
            return None
        rows = self._rows(indices)
        return np.stack([self._column(n, rows, 0.0) for n in names], axis=1)

    def origins_A(self, indices=None) -> np.ndarray:
        """``[B, 2]`` origins (x, y) in Angstrom from ``_rlnOriginX/YAngst``, or pre-3.1
        ``_rlnOriginX/Y`` (pixels) times the pixel size; zeros if absent."""
        rows = self._rows(indices)
        cols = self.table.columns
        if "rlnOriginXAngst" in cols or "rlnOriginYAngst" in cols:
            return np.stack([self._column(c, rows, 0.0)
                             for c in ("rlnOriginXAngst", "rlnOriginYAngst")], axis=1)
        if "rlnOriginX" in cols or "rlnOriginY" in cols:
            if self._row_pixel_size_A is None:
                raise CryolabInputError("origins are in pixels but the pixel size is unknown",
                                        path=self.star_path, field=label("rlnImagePixelSize"))
            px = self._row_pixel_size_A[rows, None]
            return np.stack([self._column(c, rows, 0.0)
                             for c in ("rlnOriginX", "rlnOriginY")], axis=1) * px
        return np.zeros((len(rows), 2))

    # ------------------------------------------------------------------ derived stacks
    def subset(self, indices) -> "ParticleStack":
        """A stack of the given rows (same image files, renumbered rows 0..B-1)."""
        return self.with_table(self.table.iloc[self._rows(indices)])

    def with_table(self, table: pd.DataFrame) -> "ParticleStack":
        """The same stack files and optics with a new particle table (e.g. new angles).

        Image names in ``table`` are resolved like those of the original STAR file.
        """
        return ParticleStack(table, self.optics, self.star_path, _files=self._files)

    def image_names_for(self, folder=None) -> list[str]:
        """``_rlnImageName`` values, one per row: with ``folder=None`` as RELION reads them,
        relative to the working folder (absolute for stacks outside it; what :meth:`write_star`
        writes), else with stack paths relative to ``folder``."""
        if folder is None:
            rel = [project_path(p) for p in self._found]
        else:
            folder = Path(folder).resolve()
            rel = []
            for p in self._paths:
                try:
                    rel.append(Path(os.path.relpath(p, folder)).as_posix())
                except ValueError:  # another drive: keep it absolute
                    rel.append(p.as_posix())
        return [f"{s + 1:06d}@{rel[f]}" for s, f in zip(self._slices, self._file_ids)]

    def write_star(self, path) -> Path:
        """Write the table as a RELION 3.1 STAR file, atomically, with image paths relative
        to the working folder (absolute outside it): RELION run from this folder reads them."""
        path = Path(path)
        table = self.table.copy()
        table[IMAGE] = self.image_names_for(None)
        table, optics = _complete_optics(table, self.optics, self.box_size,
                                         self._row_pixel_size_A, path)
        _write_star_blocks(path, particle_blocks(table, optics, path))
        return path


def _complete_optics(table, optics, box_size, row_pixel_size_A, path):
    """Optics for a particle table, with image size, dimensionality and pixel size filled in."""
    if optics is None:
        if row_pixel_size_A is not None and "rlnImagePixelSize" not in table.columns \
                and "rlnMagnification" not in table.columns:
            table = table.assign(rlnImagePixelSize=row_pixel_size_A)
        table, optics = optics_from_particles(table, path)
    optics = optics.rename(columns=lambda c: str(c).lstrip("_")).copy()
    if "rlnImageSize" not in optics.columns:
        optics["rlnImageSize"] = box_size
    if "rlnImageDimensionality" not in optics.columns:
        optics["rlnImageDimensionality"] = 2
    if "rlnImagePixelSize" not in optics.columns and row_pixel_size_A is not None \
            and GROUP in optics.columns and GROUP in table.columns:
        # pixel size from the MRC headers: one value per optics group
        per_group = pd.Series(row_pixel_size_A).groupby(table[GROUP].to_numpy()).first()
        optics["rlnImagePixelSize"] = optics[GROUP].map(per_group)
    return table, optics


def write_particle_stack(star_path, images, particles: pd.DataFrame,
                         optics: pd.DataFrame | None, stack_name: str | None = None
                         ) -> ParticleStack:
    """Write ``images`` [B, N, N] as a ``.mrcs`` and a RELION 3.1 STAR file referencing it.

    The stack is ``stack_name`` (default: the STAR file's name with ``.mrcs``) in the
    STAR file's folder; image names are ``"000001@folder/name.mrcs"``, the stack's path
    relative to the working folder (absolute outside it), as RELION reads them. ``optics`` needs
    voltage, Cs, amplitude contrast and ``_rlnImagePixelSize``; image size and
    dimensionality are filled in. Everything is validated before anything is
    written; both files are written atomically. Returns the new ``ParticleStack``.
    """
    star_path = Path(star_path)
    try:
        arr = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CryolabInputError(f"images are not numeric ({exc})", path=star_path,
                                field="images") from None
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] == 0:
        raise CryolabInputError(f"images must be [B, N, N], got shape {arr.shape}",
                                path=star_path, field="images")
    if particles is None or len(particles) != len(arr):
        raise CryolabInputError(
            f"{len(arr)} images but {0 if particles is None else len(particles)} particle rows",
            path=star_path, field="data_particles")
    stack_name = stack_name or star_path.with_suffix(".mrcs").name
    table = particles.rename(columns=lambda c: str(c).lstrip("_")).reset_index(drop=True)
    stack_path = star_path.parent / stack_name
    name = project_path(stack_path)
    table[IMAGE] = [f"{i + 1:06d}@{name}" for i in range(len(arr))]
    table, optics = _complete_optics(table, optics, arr.shape[-1], None, star_path)
    blocks = particle_blocks(table, optics, star_path)
    write_mrc(stack_path, arr, float(blocks["optics"]["rlnImagePixelSize"].iloc[0]))
    try:
        _write_star_blocks(star_path, blocks)
    except BaseException:
        stack_path.unlink(missing_ok=True)
        raise
    return ParticleStack.from_star(star_path)
