"""Memory stays bounded by the batch size: an E-step over a stack far larger than what it allocates."""
from __future__ import annotations

import shutil
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cryolab.session import Session

COUNT = 12_000                       # 64 px x 12,000 float32 images: ~197 MB on disk
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:        # the benchmarks package lives at the repository root, not installed
    sys.path.insert(0, str(REPO))


def _write_big_stack(folder):
    """A stack written a chunk at a time through a memory map (never held whole), its STAR file
    (RELION 3.1, no CTF), and its size in bytes: the memory benchmark's writer."""
    from benchmarks.memory import write_stack
    star = write_stack(folder, COUNT, chunk=1_000)
    return star, (folder / "big.mrcs").stat().st_size


def test_estep_memory_is_bounded_by_the_batch(tmp_path):
    need = 64 * 64 * 4 * COUNT
    if shutil.disk_usage(tmp_path).free < 3 * need:
        pytest.skip("not enough free disk for a ~200 MB particle stack")
    star, size = _write_big_stack(tmp_path)
    assert size >= need
    s = Session(star, K=1, psi_step_deg=90, offset_range_px=0, oversampling=0, ctf=False,
                batch_size=64, seed=0)
    tracemalloc.start()            # numpy registers its buffers with tracemalloc; memory maps are not allocations
    try:
        start, _ = tracemalloc.get_traced_memory()
        s.estep()
        s.mstep()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert s.iteration == 1 and np.all(s.classes == 0)
    # the images (~197 MB) are read 64 at a time: the E-step allocates a small fraction of the stack
    # (mostly the per-particle results, ~1 KB a particle)
    grown = peak - start
    assert grown < 0.15 * size, f"the E-step allocated {grown / 1e6:.0f} MB for a {size / 1e6:.0f} MB stack"
