"""The :class:`Simulation` result, its RELION 3.1 tables and writing it to disk.

Tables use RELION 3.1 labels (one optics group); ``truth`` columns are in degrees and
Angstrom, and :data:`TRUTH_LABELS` names the STAR labels of the true angles and origins.
Files (``{name}.mrcs``, ``{name}.star``, ``truth.csv``) are written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..ctf import CTFParams
from ..errors import CryolabInputError
from ..io import write_particle_stack, write_particles
from ..io._files import atomic_path

__all__ = ["Simulation", "write_simulation", "TRUTH_LABELS"]

# truth-table columns written to the STAR file (include_truth_angles=True) and their labels
TRUTH_LABELS = {"rot_deg": "rlnAngleRot", "tilt_deg": "rlnAngleTilt", "psi_deg": "rlnAnglePsi",
                "origin_x_A": "rlnOriginXAngst", "origin_y_A": "rlnOriginYAngst"}


@dataclass
class Simulation:
    """A simulated particle set.

    ``images`` float32 ``[n, N, N]`` (a read-only memory map when written while simulating);
    ``particles`` / ``optics`` RELION 3.1 tables (no image names, no angles: see
    :func:`write_simulation`); ``truth`` one row per particle (class or view, angles in degrees,
    origins in A, defocus); ``info`` the SNR bookkeeping (``snr``, ``signal_variance_raw``,
    ``signal_scale``, ``noise``, ``mask_radius_px``, ``seed``); ``clean`` the scaled noise-free
    images when asked for (``keep_clean=True``); ``star_path`` set when written.
    """

    images: np.ndarray
    particles: pd.DataFrame
    optics: pd.DataFrame
    truth: pd.DataFrame
    pixel_size_A: float
    info: dict = field(default_factory=dict)
    clean: np.ndarray | None = None
    star_path: Path | None = None

    def __len__(self) -> int:
        return len(self.truth)


def _tables(ctf: CTFParams, pixel_size_A: float, box: int):
    """RELION 3.1 particle and optics tables (one optics group)."""
    p = ctf.arrays()
    n = len(p["defocus_u_A"])
    particles = pd.DataFrame({
        "rlnDefocusU": p["defocus_u_A"], "rlnDefocusV": p["defocus_v_A"],
        "rlnDefocusAngle": p["defocus_angle_deg"], "rlnCtfBfactor": p["bfactor_A2"],
        "rlnOpticsGroup": np.ones(n, dtype=np.int64)})
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnVoltage": [float(p["voltage_kV"][0])],
        "rlnSphericalAberration": [float(p["cs_mm"][0])],
        "rlnAmplitudeContrast": [float(p["amplitude_contrast"][0])],
        "rlnImagePixelSize": [float(pixel_size_A)], "rlnImageSize": [int(box)],
        "rlnImageDimensionality": [2]})
    return particles, optics


def _ctf_truth(ctf: CTFParams) -> dict:
    p = ctf.arrays()
    return {"defocus_u_A": p["defocus_u_A"], "defocus_v_A": p["defocus_v_A"],
            "defocus_angle_deg": p["defocus_angle_deg"]}


def _star_table(sim: Simulation, include_truth_angles: bool) -> pd.DataFrame:
    particles = sim.particles.copy()
    if include_truth_angles:
        for col, lab in TRUTH_LABELS.items():
            if col in sim.truth.columns:
                particles[lab] = sim.truth[col].to_numpy()
    return particles


def _write_truth(sim: Simulation, out_dir: Path) -> Path:
    path = out_dir / "truth.csv"
    with atomic_path(path) as tmp:
        sim.truth.to_csv(tmp, index=False, float_format="%.8g")
        os.chmod(tmp, 0o644)
    return path


def _write_tables(sim: Simulation, out_dir: Path, name: str, include_truth_angles: bool) -> Path:
    """STAR (pointing at the already written ``{name}.mrcs``) and ``truth.csv``."""
    particles = _star_table(sim, include_truth_angles)
    particles.insert(0, "rlnImageName",
                     [f"{i + 1:06d}@{name}.mrcs" for i in range(len(particles))])
    star_path = write_particles(out_dir / f"{name}.star", particles, sim.optics)
    _write_truth(sim, out_dir)
    return Path(star_path)


def write_simulation(sim: Simulation, out_dir, name: str = "particles", *,
                     include_truth_angles: bool = False) -> Path:
    """Write ``{name}.mrcs``, ``{name}.star`` (RELION 3.1) and ``truth.csv`` into ``out_dir``.

    The STAR file has ``data_optics`` and ``data_particles`` (``_rlnImageName`` as
    ``000001@<out_dir>/{name}.mrcs`` relative to the working folder, as RELION reads it; defocus,
    optics group); with ``include_truth_angles`` also the true ``_rlnAngleRot/Tilt/Psi`` and
    ``_rlnOriginX/YAngst`` (e.g. for ``relion_reconstruct``, run from the same working folder). All files are written atomically. Returns the STAR path.
    For sets larger than memory pass ``out_dir`` to the simulation itself (streamed writing).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise CryolabInputError("the folder to write into does not exist", path=out_dir)
    star_path = out_dir / f"{name}.star"
    write_particle_stack(star_path, sim.images, _star_table(sim, include_truth_angles),
                         sim.optics, stack_name=f"{name}.mrcs")
    _write_truth(sim, out_dir)
    sim.star_path = star_path
    return star_path
