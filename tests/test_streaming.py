"""Memory stays bounded by the batch size: an E-step over a stack far larger than what it allocates."""
from __future__ import annotations

import shutil
import tracemalloc

import mrcfile
import numpy as np
import pytest

from cryolab.session import Session

BOX, COUNT, CHUNK = 64, 12_000, 1_000          # 64 px x 12,000 float32 images: ~197 MB on disk
PIXEL_A = 4.0


def _write_big_stack(folder):
    """A stack written a chunk at a time through a memory map (the test never holds it all), and
    its STAR file (RELION 3.1, no CTF)."""
    stack = folder / "big.mrcs"
    rng = np.random.default_rng(0)
    g = np.arange(BOX) - BOX // 2
    disc = ((g[:, None] ** 2 + g[None, :] ** 2) < (BOX / 4) ** 2).astype(np.float32)
    with mrcfile.new_mmap(stack, shape=(COUNT, BOX, BOX), mrc_mode=2, overwrite=True) as mrc:
        mrc.set_image_stack()
        mrc.voxel_size = PIXEL_A
        for start in range(0, COUNT, CHUNK):
            n = min(CHUNK, COUNT - start)
            mrc.data[start:start + n] = disc + rng.normal(size=(n, BOX, BOX)).astype(np.float32)
            mrc.flush()
    lines = ["", "data_optics", "", "loop_", "_rlnOpticsGroup #1", "_rlnImagePixelSize #2",
             "_rlnImageSize #3", "_rlnImageDimensionality #4", "_rlnVoltage #5",
             "_rlnSphericalAberration #6", "_rlnAmplitudeContrast #7",
             f"1 {PIXEL_A} {BOX} 2 300 2.7 0.1", "", "", "data_particles", "", "loop_",
             "_rlnImageName #1", "_rlnOpticsGroup #2"]
    lines += [f"{i + 1:06d}@big.mrcs 1" for i in range(COUNT)]
    star = folder / "big.star"
    star.write_text("\n".join(lines) + "\n")
    return star, stack.stat().st_size


def test_estep_memory_is_bounded_by_the_batch(tmp_path):
    need = BOX * BOX * 4 * COUNT
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
