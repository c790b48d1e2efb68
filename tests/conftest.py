"""Shared test fixtures: the reference data and the RELION oracle.

Reference files are named by their path inside the data folder (``relion_star/sample.star``,
``ribosome70S_64.mrc``). ``reference_file(name)`` finds them in ``tests/data`` (small files kept
with the repository, see its README) and otherwise in ``shared/data`` next to the repository
(larger files; the environment variable ``CRYOLAB_SHARED_DATA`` names another folder), and
skips the calling test when neither has the file. Tests that run RELION are marked
``@pytest.mark.relion`` and call ``requires_relion(name)``, which skips when the program is
not on PATH::

    @pytest.mark.relion
    def test_against_relion(tmp_path):
        exe = requires_relion("relion_reconstruct")
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED_DATA = Path(os.environ.get("CRYOLAB_SHARED_DATA")
                   or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture
def forked_pids(monkeypatch):
    """The process ids of the children forked (``os.fork``) during the test, as the parent got them."""
    pids, real_fork = [], os.fork

    def fork():
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", fork)
    return pids


def requires_relion(program: str = "relion_reconstruct") -> str:
    """Full path of a RELION program; skips the calling test when it is not installed."""
    exe = shutil.which(program)
    if exe is None:
        pytest.skip(f"{program} is not on PATH (install RELION to run this comparison)")
    return exe


def reference_file(name: str) -> Path:
    """A reference data file, ``name`` relative to the data folder: ``tests/data/name`` if it is
    there, else ``shared/data/name``; skips the calling test when neither has it."""
    for folder in (TEST_DATA, SHARED_DATA):
        path = folder / name
        if path.exists():
            return path
    pytest.skip(f"reference data {name} is in neither tests/data nor {SHARED_DATA}")


def read_reference_map(name: str):
    """A reference map (float32, axes z, y, x) found by :func:`reference_file`."""
    import mrcfile
    import numpy as np
    return mrcfile.read(reference_file(name)).astype(np.float32)



def bayes_ceiling(sim, maps=None, volume=None, views=None) -> float:
    """:func:`cryolab.engine.forward.simulation_ceiling`: the Bayes-optimal accuracy on a simulated
    set, printed beside what a classification reaches."""
    from cryolab.engine.forward import simulation_ceiling
    return simulation_ceiling(sim, maps=maps, volume=volume, views=views)


def rack1_set(n: int, snr: float, seed: int, box: int = 32):
    """The demo 80S with and without RACK1 (50/50) at ``box`` pixels, random poses, CTF, in memory
    with the true poses in its tables: ``(simulation, maps {name: [N,N,N]}, RACK1 keep mask,
    pixel size A, consensus)``, the consensus being the two maps' average on the data's grey scale."""
    import numpy as np

    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.masks import component_mask
    from cryolab.simulate import simulate_particles
    d = load_demo()
    px = d.pixel_size_A * d.box_size / box
    vols = {k: rescale(d.volumes[k], box, ndim=3) for k in ("80S", "80S_noRACK1")}
    keep = np.clip(rescale(component_mask("RACK1"), box, ndim=3), 0, 1)
    sim = simulate_particles(vols, n, px, snr=snr, seed=seed, include_truth_angles=True)
    consensus = (0.5 * (vols["80S"] + vols["80S_noRACK1"]) * sim.info["signal_scale"]).astype(np.float32)
    return sim, vols, keep, px, consensus
