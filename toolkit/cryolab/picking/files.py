"""Micrograph lists, coordinate files and particle extraction, as RELION 3.1 names and reads them.

* a **micrograph STAR** (``data_optics`` with ``_rlnMicrographPixelSize``, voltage, Cs, amplitude
  contrast; ``data_micrographs`` with ``_rlnMicrographName`` and, for ``--ctf``, ``_rlnDefocusU/V`` and
  ``_rlnDefocusAngle``); names are resolved against the working folder, as RELION does;
* a **coordinate file** per micrograph: ``<odir>/<micrograph name without extension>_<pickname>.star``
  (as ``relion_autopick`` writes and ``relion_preprocess --coord_dir <odir> --coord_suffix
  _<pickname>.star`` reads), one ``data_`` table with ``_rlnCoordinateX/Y`` (pixels: column and row,
  0-based), ``_rlnClassNumber``, ``_rlnAutopickFigureOfMerit``, ``_rlnAnglePsi``;
* **extraction** (``relion_preprocess --extract``): a box of ``box`` pixels whose pixel ``box // 2`` is
  the rounded coordinate; optionally the contrast inverted, then normalised as RELION does: a plane
  ``a + b x + c y`` fitted to the pixels outside a circle of ``bg_radius_px`` is subtracted and the
  image divided by the standard deviation of those pixels (``--norm``; ``ramp=False``: only their mean
  is subtracted, RELION's ``--no_ramp``). Boxes reaching beyond the micrograph are left out, as RELION
  leaves them out.

Every reader checks before anything is written; errors name the file and the field.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..ctf import CTFParams
from ..errors import CryolabInputError
from ..io import mrc_header_info, read_mrc, read_star, write_particle_stack, write_star
from ..io._files import locate_stack, require_file

__all__ = ["MicrographList", "read_micrographs", "coordinate_path", "write_coordinates", "read_coordinates",
           "normalise_particles", "extract_particles"]

log = logging.getLogger("cryolab.picking")


@dataclass
class MicrographList:
    """The micrographs of a STAR file: ``names`` as written, ``paths`` found, one ``pixel_size_A``,
    ``shape`` (rows, columns), ``ctf`` (one entry per micrograph, or None without defocus columns) and
    the merged ``table``."""

    star_path: Path
    names: list
    paths: list
    pixel_size_A: float
    shape: tuple
    ctf: CTFParams | None
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> np.ndarray:
        return read_mrc(self.paths[i])[0].reshape(self.shape).astype(np.float32)


def _column(table, name, path, default=None):
    if name in table.columns:
        try:
            return pd.to_numeric(table[name]).to_numpy(np.float64)
        except (ValueError, TypeError):
            raise CryolabInputError("values are not numbers", path=path, field=name) from None
    if default is None:
        raise CryolabInputError("missing column", path=path, field=name)
    return np.full(len(table), float(default))


def read_micrographs(star_path, angpix: float | None = None, need_ctf: bool = False) -> MicrographList:
    """Read and check a micrograph STAR file: every micrograph exists, is a single image of one shape and
    one pixel size (the optics table's ``_rlnMicrographPixelSize`` and the MRC headers agree with each
    other; ``angpix`` overrides both); with ``need_ctf`` the defocus columns are required."""
    star_path = require_file(star_path, "micrograph STAR file")
    blocks = read_star(star_path)
    optics = blocks.get("optics")
    table = blocks.get("micrographs", next((b for k, b in blocks.items() if k != "optics"), None))
    if table is None or "rlnMicrographName" not in table.columns:
        raise CryolabInputError("no micrograph table with _rlnMicrographName", path=star_path,
                                field="rlnMicrographName")
    if len(table) == 0:
        raise CryolabInputError("the micrograph list is empty", path=star_path, field="data_micrographs")
    if optics is not None and len(optics) and "rlnOpticsGroup" in table.columns:
        extra = [c for c in optics.columns if c not in table.columns or c == "rlnOpticsGroup"]
        table = table.merge(optics[extra], on="rlnOpticsGroup", how="left")
    sizes = None
    if "rlnMicrographPixelSize" in table.columns:
        sizes = _column(table, "rlnMicrographPixelSize", star_path)
        if np.ptp(sizes) > 1e-6 * sizes.max():
            raise CryolabInputError(f"micrographs of mixed pixel size ({', '.join(f'{v:g}' for v in np.unique(sizes))}"
                                    " A): pick each pixel size separately", path=star_path,
                                    field="rlnMicrographPixelSize")
    names = [str(n) for n in table["rlnMicrographName"]]
    paths, shape, header_px = [], None, None
    for name in names:
        path = locate_stack(name, star_path)
        if path is None:
            raise CryolabInputError(f"micrograph {name} not found (names are relative to the working folder)",
                                    path=star_path, field="rlnMicrographName")
        info = mrc_header_info(path)
        if info["shape"][0] != 1:
            raise CryolabInputError(f"a micrograph must be one image, got {info['shape'][0]} sections",
                                    path=path, field="nz")
        if shape is None:
            shape, header_px = info["shape"][1:], info["pixel_size_A"]
        elif info["shape"][1:] != shape:
            raise CryolabInputError(f"micrograph size {info['shape'][1:]} differs from the first one's {shape}",
                                    path=path, field="nx/ny")
        elif angpix is None and sizes is None and info["pixel_size_A"] and header_px and \
                abs(info["pixel_size_A"] - header_px) > 1e-4 * header_px:
            raise CryolabInputError(f"micrographs of mixed pixel size: {info['pixel_size_A']:g} A here, "
                                    f"{header_px:g} A in {paths[0]}", path=path, field="pixel size (header)")
        paths.append(path)
    px = angpix or (float(sizes[0]) if sizes is not None else header_px)
    if not px:
        raise CryolabInputError("no pixel size: neither _rlnMicrographPixelSize nor the MRC headers give one "
                                "(use --angpix)", path=star_path, field="rlnMicrographPixelSize")
    ctf = None
    if need_ctf or "rlnDefocusU" in table.columns:
        u = _column(table, "rlnDefocusU", star_path)
        ctf = CTFParams(defocus_u_A=u, defocus_v_A=_column(table, "rlnDefocusV", star_path, np.nan)
                        if "rlnDefocusV" in table.columns else u,
                        defocus_angle_deg=_column(table, "rlnDefocusAngle", star_path, 0.0),
                        voltage_kV=_column(table, "rlnVoltage", star_path, 300.0),
                        cs_mm=_column(table, "rlnSphericalAberration", star_path, 2.7),
                        amplitude_contrast=_column(table, "rlnAmplitudeContrast", star_path, 0.1))
    return MicrographList(star_path=star_path, names=names, paths=paths, pixel_size_A=float(px), shape=tuple(shape),
                          ctf=ctf, table=table)


def coordinate_path(odir, micrograph_name: str, pickname: str = "autopick") -> Path:
    """``<odir>/<micrograph name without extension>_<pickname>.star`` (RELION's layout)."""
    stem = Path(micrograph_name).with_suffix("")
    if stem.is_absolute():
        stem = Path(stem.name)
    return Path(odir) / f"{stem}_{pickname}.star"


def write_coordinates(path, table: pd.DataFrame) -> Path:
    """One coordinate file (``data_``, the columns of ``table``), atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_star(path, {"": table})


def read_coordinates(path, shape=None) -> np.ndarray:
    """``[P, 2]`` (x, y) pixels of a coordinate file; with ``shape`` (rows, columns) each must lie on the
    micrograph."""
    path = require_file(path, "coordinate file")
    blocks = read_star(path)
    table = next(iter(blocks.values()))
    if len(table) == 0:
        return np.zeros((0, 2))
    xy = np.stack([_column(table, "rlnCoordinateX", path), _column(table, "rlnCoordinateY", path)], -1)
    if shape is not None:
        for j, (field, size) in enumerate((("rlnCoordinateX", shape[1]), ("rlnCoordinateY", shape[0]))):
            bad = np.flatnonzero((xy[:, j] < 0) | (xy[:, j] > size - 1) | ~np.isfinite(xy[:, j]))
            if bad.size:
                raise CryolabInputError(f"value {xy[bad[0], j]:g} in row {bad[0] + 1} lies outside the micrograph "
                                        f"(0 to {size - 1} pixels)", path=path, field=field)
    return xy


def normalise_particles(images, bg_radius_px: float, ramp: bool = True) -> np.ndarray:
    """RELION's ``--norm`` on ``[B, N, N]`` images (module text): the background is the pixels farther than
    ``bg_radius_px`` from pixel ``N // 2``."""
    imgs = np.asarray(images, np.float64)
    n = imgs.shape[-1]
    y, x = np.mgrid[:n, :n] - n // 2
    bg = np.hypot(x, y) > bg_radius_px
    if bg.sum() < 3:
        raise CryolabInputError(f"no background outside a radius of {bg_radius_px:g} px in a {n}-pixel box",
                                field="--bg_radius")
    design = np.stack([np.ones(bg.sum()), x[bg], y[bg]], -1) if ramp else np.ones((bg.sum(), 1))
    coef, *_ = np.linalg.lstsq(design, imgs[:, bg].T, rcond=None)              # [3 or 1, B]
    full = np.stack([np.ones(n * n), x.ravel(), y.ravel()], -1)[:, :design.shape[1]]
    imgs = imgs - (full @ coef).T.reshape(-1, n, n)
    std = imgs[:, bg].std(axis=1)
    return (imgs / np.where(std > 0, std, 1.0)[:, None, None]).astype(np.float32)


def extract_particles(mics: MicrographList, coord_dir, coord_suffix: str, part_star, *, box: int,
                      bg_radius_px: float | None = None, norm: bool = True, invert_contrast: bool = False,
                      ramp: bool = True):
    """Extract every picked particle of ``mics`` into ``<part_star>.mrcs`` + ``part_star`` (RELION 3.1
    particles with the micrograph's CTF and optics; module text). Coordinates are found as
    ``<coord_dir>/<micrograph name without extension><coord_suffix>``; a micrograph without a coordinate
    file has no particles. All coordinate files are checked before anything is written. Returns the
    :class:`cryolab.io.ParticleStack` written."""
    if box < 2 or box % 2:
        raise CryolabInputError(f"the box must be even and >= 2, got {box}", field="--extract_size")
    bg = box / 2 * 0.75 if bg_radius_px is None else float(bg_radius_px)
    coords = []
    for name in mics.names:
        path = Path(coord_dir) / f"{Path(name).with_suffix('')}{coord_suffix}"
        coords.append(read_coordinates(path, mics.shape) if path.is_file() else np.zeros((0, 2)))
    if not sum(len(c) for c in coords):
        raise CryolabInputError(f"no coordinates found as <micrograph>{coord_suffix}", path=coord_dir,
                                field="--coord_suffix")
    images, rows, skipped = [], [], 0
    for i, xy in enumerate(coords):
        if not len(xy):
            continue
        mic = mics.read(i)
        if invert_contrast:
            mic = -mic
        for x, y in np.rint(xy).astype(int):
            y0, x0 = y - box // 2, x - box // 2
            if y0 < 0 or x0 < 0 or y0 + box > mic.shape[0] or x0 + box > mic.shape[1]:
                skipped += 1
                continue
            images.append(mic[y0:y0 + box, x0:x0 + box])
            row = {"rlnMicrographName": mics.names[i], "rlnCoordinateX": float(x), "rlnCoordinateY": float(y)}
            if mics.ctf is not None:
                row.update(rlnDefocusU=float(np.ravel(mics.ctf.defocus_u_A)[i]),
                           rlnDefocusV=float(np.ravel(mics.ctf.defocus_v_A)[i]),
                           rlnDefocusAngle=float(np.ravel(mics.ctf.defocus_angle_deg)[i]))
            rows.append(row)
    if skipped:
        log.warning("%d particles whose %d-pixel box reaches beyond their micrograph were left out", skipped, box)
    if not images:
        raise CryolabInputError(f"every {box}-pixel box reaches beyond its micrograph", field="--extract_size")
    stack = np.stack(images)
    if norm:
        stack = normalise_particles(stack, bg, ramp)
    optics = _particle_optics(mics)
    table = pd.DataFrame(rows).assign(rlnOpticsGroup=1)
    part_star = Path(part_star)
    part_star.parent.mkdir(parents=True, exist_ok=True)
    return write_particle_stack(part_star, stack, table, optics, stack_name=part_star.with_suffix(".mrcs").name)


def _particle_optics(mics: MicrographList) -> pd.DataFrame:
    first = mics.table.iloc[0]

    def value(name, default):
        return float(first[name]) if name in mics.table.columns else default
    return pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                         "rlnMicrographOriginalPixelSize": [mics.pixel_size_A],
                         "rlnVoltage": [value("rlnVoltage", 300.0)],
                         "rlnSphericalAberration": [value("rlnSphericalAberration", 2.7)],
                         "rlnAmplitudeContrast": [value("rlnAmplitudeContrast", 0.1)],
                         "rlnImagePixelSize": [mics.pixel_size_A]})
