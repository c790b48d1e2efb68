"""Peak memory of an E-step over a particle stack larger than the memory budget.

Writes a stack of ``--n`` noisy 64^2 images (default 32,000: ~500 MB of float32) through a
memory map, then runs one 2D iteration (E-step + M-step, K=2, psi 10 deg, offsets 3/1 px)
in a fresh Python process with ``memory_limit_GB`` set to a quarter of the stack, after a
warm-up iteration over the first 500 images (one-time allocations: BLAS and FFT buffers).
A thread of that process samples ``/proc/self/status`` every 10 ms:

* ``RssAnon``: memory the process allocated itself (arrays, Python objects), reported as
  its peak and as the growth during the iteration over the level before it;
* ``RssFile``: pages of the memory-mapped stack that were read, shared with the page cache
  and dropped by the kernel under memory pressure (not memory the program holds).

The goal: the allocated memory stays a small fraction of the stack (the stack is streamed
``batch_size`` images at a time), and inside the budget.

Usage: ``python -m benchmarks.memory [--quick] [--n 32000] [--out DIR]``
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import finish, part_parser, ratio, saves, work_folder

BOX, PIXEL_A = 64, 4.0


def write_stack(folder: Path, n: int, chunk: int = 2000) -> Path:
    """``n`` images (a disc plus Gaussian noise) written a chunk at a time, and a STAR file."""
    import mrcfile
    rng = np.random.default_rng(0)
    g = np.arange(BOX) - BOX // 2
    disc = ((g[:, None] ** 2 + g[None, :] ** 2) < (BOX / 4) ** 2).astype(np.float32)
    with mrcfile.new_mmap(folder / "big.mrcs", shape=(n, BOX, BOX), mrc_mode=2, overwrite=True) as mrc:
        mrc.set_image_stack()
        mrc.voxel_size = PIXEL_A
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            mrc.data[start:start + k] = disc + rng.normal(size=(k, BOX, BOX)).astype(np.float32)
    lines = ["", "data_optics", "", "loop_", "_rlnOpticsGroup #1", "_rlnImagePixelSize #2",
             "_rlnImageSize #3", "_rlnImageDimensionality #4", "_rlnVoltage #5",
             "_rlnSphericalAberration #6", "_rlnAmplitudeContrast #7",
             f"1 {PIXEL_A} {BOX} 2 300 2.7 0.1", "", "", "data_particles", "", "loop_",
             "_rlnImageName #1", "_rlnOpticsGroup #2"]
    lines += [f"{i + 1:06d}@big.mrcs 1" for i in range(n)]
    star = folder / "big.star"
    star.write_text("\n".join(lines) + "\n")
    return star


def _status_kB() -> dict:
    """``RssAnon`` and ``RssFile`` of this process in kB (Linux ``/proc``)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def child(star: str, budget_GB: float) -> dict:
    """One 2D iteration over ``star`` with a memory budget (after a warm-up iteration over its
    first 500 images); peak memory sampled meanwhile."""
    from cryolab.io import ParticleStack
    from cryolab.session import Session
    settings = dict(K=2, psi_step_deg=10.0, offset_range_px=3.0, offset_step_px=1.0, ctf=False,
                    memory_limit_GB=budget_GB, seed=0)
    stack = ParticleStack.from_star(star)
    Session(stack.subset(np.arange(min(500, len(stack)))), **settings).step()
    s = Session(star, **settings)
    batch = int(s._batch_order()[1])          # the batch size the E-step uses within the budget
    before = _status_kB()
    peak = dict(before)
    done = threading.Event()

    def sample():
        while not done.is_set():
            for k, v in _status_kB().items():
                peak[k] = max(peak[k], v)
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    s.step()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    for k, v in _status_kB().items():
        peak[k] = max(peak[k], v)
    return {"before_kB": before, "peak_kB": peak, "step_s": seconds, "batch_size": batch}


def run(quick: bool = False, n: int | None = None, out=None, save: bool = True) -> dict:
    n = n or (3000 if quick else 32000)
    if not Path("/proc/self/status").exists():
        print("== memory: skipped (needs Linux /proc to read the process's memory)")
        return {"skipped": "no /proc", "ratios": []}
    print(f"== memory: one 2D iteration over {n} images of {BOX}^2 px, budget a quarter of the stack", flush=True)
    with work_folder() as folder:
        star = write_stack(folder, n)
        stack_MB = (folder / "big.mrcs").stat().st_size / 2 ** 20
        budget_GB = stack_MB / 4 / 1024
        code = ("import json, sys; from benchmarks.memory import child; "
                "print('RESULT ' + json.dumps(child(sys.argv[1], float(sys.argv[2]))))")
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.run([sys.executable, "-c", code, str(star), str(budget_GB)], cwd=root,
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT "):])
    anon_MB = (r["peak_kB"]["RssAnon"] - r["before_kB"]["RssAnon"]) / 1024
    peak_MB, file_MB = r["peak_kB"]["RssAnon"] / 1024, r["peak_kB"]["RssFile"] / 1024
    print(f"  stack {stack_MB:.0f} MB, budget {budget_GB * 1024:.0f} MB, batch size {r['batch_size']}, "
          f"iteration {r['step_s']:.1f} s: allocated during the iteration {anon_MB:.0f} MB, peak of the "
          f"process {peak_MB:.0f} MB (RssAnon, with Python and the libraries), mapped file pages {file_MB:.0f} MB")
    ratios = [
        ratio("memory.allocated_over_stack", anon_MB / stack_MB,
              "memory allocated during one iteration / size of the particle stack", "< 0.25"),
        ratio("memory.allocated_over_budget", anon_MB / (budget_GB * 1024),
              "memory allocated during one iteration / memory_limit_GB", "<= 1"),
        ratio("memory.process_peak_over_stack", peak_MB / stack_MB,
              "peak allocated memory of the whole process / size of the particle stack", "< 1"),
    ]
    result = {"n": n, "box": BOX, "stack_MB": stack_MB, "budget_MB": budget_GB * 1024, **r,
              "allocated_MB": anon_MB, "file_pages_MB": file_MB, "ratios": ratios, "quick": quick}
    return finish("memory", result, out, save)


def main(argv=None):
    ap = part_parser("memory", __doc__, "3,000 images (smoke run)", "images (default 32,000)")
    a = ap.parse_args(argv)
    run(a.quick, a.n, a.out, save=saves(a))


if __name__ == "__main__":
    main()
