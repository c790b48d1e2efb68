"""Shared test fixtures: the reference data folder and the RELION oracle.

Reference data lives in ``shared/data`` next to the repository; tests that need it
take the ``shared_data`` fixture and are skipped when it is missing. Tests that
run RELION are marked ``@pytest.mark.relion`` and call ``requires_relion(name)``,
which skips when the program is not on PATH::

    @pytest.mark.relion
    def test_against_relion(tmp_path):
        exe = requires_relion("relion_reconstruct")
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def requires_relion(program: str = "relion_reconstruct") -> str:
    """Full path of a RELION program; skips the calling test when it is not installed."""
    exe = shutil.which(program)
    if exe is None:
        pytest.skip(f"{program} is not on PATH (install RELION to run this comparison)")
    return exe


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder (maps, RELION STAR files); skips when it is not present."""
    if not SHARED_DATA.is_dir():
        pytest.skip("reference data folder shared/data is not present")
    return SHARED_DATA


def read_shared_map(folder: Path, name: str):
    """A map (float32) from the shared reference data folder; skips when the file is missing."""
    import mrcfile
    import numpy as np
    path = folder / name
    if not path.exists():
        pytest.skip(f"shared test data {name} not found")
    return mrcfile.read(path).astype(np.float32)
