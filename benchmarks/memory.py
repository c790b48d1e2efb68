"""Peak memory: an E-step over a particle stack larger than the memory budget, and a 3D iteration
at a large box near Nyquist.

Writes a stack of ``--n`` noisy 64^2 images (default 32,000: ~500 MB of float32) through a
memory map, then runs one 2D iteration (E-step + M-step, K=2, psi 10 deg, offsets 3/1 px)
in a fresh Python process with ``memory_limit_GB`` set to a quarter of the stack, after a
warm-up iteration over the first 500 images (one-time allocations: BLAS and FFT buffers).
A thread of that process samples its memory and its E-step worker processes' every 10 ms
(``/proc/<pid>/smaps_rollup``, their proportional shares summed, so pages the workers share with
it count once):

* ``RssAnon``: memory the processes allocated themselves (arrays, Python objects), reported as
  the peak and as the growth during the iteration over the level before it;
* ``RssFile``: pages of the memory-mapped stack that were read, shared with the page cache
  and dropped by the kernel under memory pressure (not memory the program holds).

The goal: the allocated memory stays a small fraction of the stack (the stack is streamed
``batch_size`` images at a time), and inside the budget.

Second part, the maps: one 3D iteration at ``--map-box`` px (default 192; padding 2) of the four
demo states (K = 4, HEALPix order 1, 8 particles, first iteration limited to 2.2 pixels per
cycle, i.e. ~0.9 of Nyquist: the E-step, the insertion and the reconstruction reach nearly the
whole padded grid), in a fresh process with ``memory_limit_GB`` = ``--map-budget`` (default the
default budget, a quarter of the RAM). Printed: the process's peak ``RssAnon`` (Python and the
libraries included) against the budget, and what the class maps alone need
(:mod:`cryolab.engine.memory`: back-projector accumulators in the precision that fits, projectors).

Usage: ``python -m benchmarks.memory [--quick] [--n 32000] [--map-box 192] [--map-budget GB] [--out DIR]``
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import child_pids, finish, part_parser, ratio, saves, work_folder

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
    """``RssAnon`` and ``RssFile`` in kB of this process and its worker processes together (Linux
    ``/proc``): the sums of their proportional shares ``Pss_Anon`` and ``Pss_File`` (a page that n
    processes share counts 1/n in each), which equal ``RssAnon`` and ``RssFile`` for a process alone."""
    out = {"RssAnon": 0, "RssFile": 0}
    for pid in ["self"] + child_pids():
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:                        # a worker that has just ended
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("Pss_Anon", "Pss_File"):
                out["Rss" + key[4:]] += int(value.split()[0])
    return out


def _sampled(fn) -> dict:
    """``fn()`` while a thread samples ``RssAnon`` / ``RssFile`` every 10 ms: the levels before,
    the peaks and the seconds ``fn`` took."""
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
    fn()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    for k, v in _status_kB().items():
        peak[k] = max(peak[k], v)
    return {"before_kB": before, "peak_kB": peak, "step_s": seconds}


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
    return dict(_sampled(s.step), batch_size=batch)


def map_child(folder: str, box: int, budget_GB: float | None) -> dict:
    """One 3D iteration of the simulated job in ``folder`` (``benchmarks.scale``'s 3D job at
    ``box`` px) near Nyquist, with a memory budget; the process's peak memory sampled meanwhile."""
    from cryolab.engine.memory import accumulator_bytes, accumulator_dtype, available_bytes, projector_bytes, MAPS_SHARE
    from cryolab.io import read_mrc
    from cryolab.methods import class3d
    maps = [read_mrc(Path(folder) / f"ref{i + 1}.mrc") for i in range(4)]      # (map, pixel size) each
    refs, pixel_A = np.stack([v for v, _ in maps]), maps[0][1]
    s = class3d(str(Path(folder) / "particles.star"), refs, K=4, iterations=0, healpix_order=1, oversampling=1,
                ini_high_A=2.2 * pixel_A, offset_range_px=2.0, offset_step_px=1.0, ctf=True, seed=0,
                particle_diameter_A=0.9 * box * pixel_A, progress=False, memory_limit_GB=budget_GB)
    budget = available_bytes(s.xp, budget_GB)
    dtype = accumulator_dtype(box, 4, 3, int(MAPS_SHARE * budget))
    r = _sampled(s.step)
    return dict(r, budget_MB=budget / 2 ** 20, max_shell=int(s.max_shell), accumulators=np.dtype(dtype).name,
                maps_MB=(accumulator_bytes(box, 4, 3, dtype=dtype) + projector_bytes(box, 4, 3)) / 2 ** 20)


def _in_process(code: str, *args) -> dict:
    """Runs ``code`` (printing ``RESULT <json>``) in a fresh Python process; its result."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def map_part(box: int, budget_GB: float | None) -> tuple[dict, list]:
    """The second part (module docstring): the result and its ratio lines."""
    from .scale import simulate_job
    print(f"== memory: one 3D iteration at {box} px near Nyquist (K = 4, padding 2), budget "
          f"{'default' if budget_GB is None else f'{budget_GB:g} GB'}", flush=True)
    with work_folder() as folder:
        simulate_job("3d", Path(folder), box, 8, 4, 0.1)
        code = ("import json, sys; from benchmarks.memory import map_child; "
                "print('RESULT ' + json.dumps(map_child(sys.argv[1], int(sys.argv[2]), "
                "float(sys.argv[3]) or None)))")
        r = _in_process(code, folder, box, budget_GB or 0)
    peak_MB = r["peak_kB"]["RssAnon"] / 1024
    print(f"  shell {r['max_shell']} of {box // 2}, iteration {r['step_s']:.1f} s: peak of the process {peak_MB:.0f} MB "
          f"(RssAnon) against a budget of {r['budget_MB']:.0f} MB; the class maps alone "
          f"{r['maps_MB']:.0f} MB ({r['accumulators']} accumulators and complex64 projectors)", flush=True)
    return dict(r, box=box, peak_MB=peak_MB), [
        ratio(f"memory.map_{box}_peak_over_budget", peak_MB / r["budget_MB"],
              f"peak memory of the process in a {box} px 3D iteration / memory_limit_GB", "<= 1")]


def run(quick: bool = False, n: int | None = None, out=None, save: bool = True, map_box: int | None = None,
        map_budget_GB: float | None = None) -> dict:
    n = n or (3000 if quick else 32000)
    map_box = map_box or (32 if quick else 192)
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
        r = _in_process(code, star, budget_GB)
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
    maps, more = map_part(map_box, map_budget_GB)
    result = {"n": n, "box": BOX, "stack_MB": stack_MB, "budget_MB": budget_GB * 1024, **r,
              "allocated_MB": anon_MB, "file_pages_MB": file_MB, "maps": maps, "ratios": ratios + more,
              "quick": quick}
    return finish("memory", result, out, save)


def main(argv=None):
    ap = part_parser("memory", __doc__, "3,000 images (smoke run)", "images (default 32,000)")
    ap.add_argument("--map-box", type=int, default=None, help="box of the 3D iteration (default 192; 32 with --quick)")
    ap.add_argument("--map-budget", type=float, default=None, metavar="GB",
                    help="memory_limit_GB of the 3D iteration (default: the default budget)")
    a = ap.parse_args(argv)
    run(a.quick, a.n, a.out, save=saves(a), map_box=a.map_box, map_budget_GB=a.map_budget)


if __name__ == "__main__":
    main()
