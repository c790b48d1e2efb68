"""Memory stays bounded by the batch size: an E-step over a stack far larger than what it allocates."""
from __future__ import annotations

import shutil
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cryolab.engine.processes import can_fork
from cryolab.session import Session

COUNT = 12_000                       # 64 px x 12,000 float32 images: ~197 MB on disk
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:        # the benchmarks package lives at the repository root, not installed
    sys.path.insert(0, str(REPO))


def _patterns():
    """The two classes of the stack, [2, 64, 64]: the memory benchmark's disc (radius 16 px) and a
    ring (radii 8-20 px) of nearly the same mass."""
    from benchmarks.memory import BOX
    g = np.arange(BOX) - BOX // 2
    r2 = g[:, None] ** 2 + g[None, :] ** 2
    disc = (r2 < (BOX / 4) ** 2).astype(np.float32)
    ring = ((r2 >= 8 ** 2) & (r2 < 20 ** 2)).astype(np.float32)
    return np.stack([disc, ring])


def _write_big_stack(folder):
    """The memory benchmark's stack (a disc plus unit Gaussian noise, written a chunk at a time
    through a memory map, never held whole; RELION 3.1 STAR file, no CTF) with every odd image's
    disc replaced by the ring, again a chunk at a time; its STAR file and size in bytes."""
    import mrcfile
    from benchmarks.memory import write_stack
    star = write_stack(folder, COUNT, chunk=1_000)
    disc, ring = _patterns()
    with mrcfile.mmap(folder / "big.mrcs", mode="r+") as mrc:
        for start in range(1, COUNT, 2_000):
            mrc.data[start:start + 2_000:2] += ring - disc
    return star, (folder / "big.mrcs").stat().st_size


@pytest.mark.parametrize("parallel", ["threads", "processes"])
def test_estep_memory_is_bounded_by_the_batch(tmp_path, parallel):
    """In this process, and in worker processes (cryolab.engine.batches): there each worker runs the
    same batches as here, and this process holds one batch's results at a time."""
    if parallel == "processes" and not can_fork():
        pytest.skip("worker processes need os.fork (Linux or BSD)")
    need = 64 * 64 * 4 * COUNT
    if shutil.disk_usage(tmp_path).free < 3 * need:
        pytest.skip("not enough free disk for a ~200 MB particle stack")
    star, size = _write_big_stack(tmp_path)
    assert size >= need
    truth = np.arange(COUNT) % 2                      # 0: disc, 1: ring
    s = Session(star, K=2, references=_patterns(), psi_step_deg=90, offset_range_px=0,
                oversampling=0, ctf=False, batch_size=64, seed=0)
    s.parallel = parallel
    tracemalloc.start()            # numpy registers its buffers with tracemalloc; memory maps are not allocations
    try:
        start, _ = tracemalloc.get_traced_memory()
        s.estep()
        s.mstep()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # every particle, in every one of the 188 batches, lands in its own class (a batch whose
    # results were stored at the wrong indices would put about half of its particles in the
    # other class); the two patterns differ by ~600 noise variances, so no particle should err
    assert s.iteration == 1
    assert np.array_equal(s.classes, truth), f"{np.mean(s.classes != truth):.4f} misclassified"
    # the M-step averages each class back: correlation with its own pattern measured 0.986 (disc)
    # and 0.979 (ring); with the other class's pattern 0.56-0.57
    for k, pattern in enumerate(_patterns()):
        assert np.corrcoef(s.references[k].ravel(), pattern.ravel())[0, 1] > 0.95
    # the images (~197 MB) are read 64 at a time: the E-step allocates a small fraction of the stack
    # (mostly the per-particle results, ~1 KB a particle and class): measured 0.134 of the stack
    # with K=2 (0.103 with K=1)
    grown = peak - start
    assert grown < 0.2 * size, f"the E-step allocated {grown / 1e6:.0f} MB for a {size / 1e6:.0f} MB stack"
