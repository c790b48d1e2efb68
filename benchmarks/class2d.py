"""2D classification: cryolab against relion_refine on the same simulated particles.

Simulates ``--views`` views (default 8) of the demo 80S (64 px, 6 A/px, CTF, SNR 0.05),
``--n`` particles (default 800: with 400, 50 per view, neither program classifies reliably),
writes STAR + MRC stack, then runs back to back

* cryolab ``class2d`` (K = views, MAP, T = 2, psi 10 deg, offsets 5/1 px, seed 0), timing
  every iteration, and counting the GEMM flops each iteration issues;
* ``relion_refine`` with the same settings (no ``--ref``: reference-free 2D), ``--j 2``,
  run from the data folder (RELION resolves image paths against the working directory);
  per-iteration times from its ``run_itNNN_data.star`` file times.

Reports time per particle per iteration for both, their ratio (goal: cryolab at most a
tenth of RELION's time) and each one's class accuracy against the true views after the
best one-to-one matching of classes to views.

Usage: ``python -m benchmarks.class2d [--n 800] [--iter 10] [--views 8] [--no-relion] [--quick]``
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np

from cryolab.data import load_demo
from cryolab.engine.forward import simulation_ceiling
from cryolab.validation import class_accuracy

from . import (VIEWS, GemmCounter, child_pids, finish, load_now, part_parser, ratio, relion_available, saves, simulate_views,
               work_folder)


def relion_command(star_name: str, K: int, iterations: int, diameter_A: float, threads: int = 2) -> list[str]:
    """``relion_refine`` arguments matching cryolab's 2D classification settings.

    ``--zero_mask``/``--flatten_solvent``: cryolab masks images and class averages with a
    soft circle of the particle diameter (RELION's 2D-classification defaults do the same).
    """
    return ["relion_refine", "--i", star_name, "--o", "relion/run", "--K", str(K),
            "--iter", str(iterations), "--tau2_fudge", "2", "--particle_diameter", f"{diameter_A:.1f}",
            "--psi_step", "10", "--offset_range", "5", "--offset_step", "1", "--ctf",
            "--zero_mask", "--flatten_solvent", "--oversampling", "1", "--j", str(threads),
            "--random_seed", "0", "--dont_combine_weights_via_disc", "--pool", "10"]


def run_cryolab(star_path, K: int, iterations: int, diameter_A: float) -> dict:
    """cryolab ``class2d`` with per-iteration times and the GEMM flops each iteration issued."""
    from cryolab.methods import class2d
    steps = []
    load = load_now()
    t0 = time.perf_counter()
    with GemmCounter() as counter:
        def record(session, result):
            done = sum(s["gemm_flops"] for s in steps)
            steps.append({"iteration": result.iteration, "step_s": result.time_s,
                          "gemm_flops": counter.flops - done, "max_shell": session.max_shell})

        session = class2d(str(star_path), K=K, iterations=iterations, psi_step_deg=10.0,
                          offset_range_px=5.0, offset_step_px=1.0, particle_diameter_A=diameter_A,
                          ctf=True, seed=0, progress=False, callback=record)
    wall = time.perf_counter() - t0
    iter_s = sum(s["step_s"] for s in steps)
    return {"wall_s": wall, "setup_s": wall - iter_s, "iterations_s": iter_s, "steps": steps,
            "labels": session.classes.copy(), "load_before": load}


def _status_kB(pid: int, field: str, name: str = "status") -> float:
    """A ``field:`` line's value (kB) of ``/proc/<pid>/<name>`` (Linux; nan elsewhere or once it ended)."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return float("nan")


def _peak_MB(pid: int) -> float:
    """The memory a job holds now or has held (MB): the largest of the process's peak resident memory
    (``VmHWM``) and the proportional set size (``Pss``: shared pages split among their sharers) of
    it and its worker processes together, so forked workers count once each."""
    tree = [pid] + child_pids(pid)
    pss = sum(v for v in (_status_kB(p, "Pss", "smaps_rollup") for p in tree) if v == v)
    known = [v for v in (_status_kB(pid, "VmHWM"), pss) if v == v and v > 0]
    return max(known) / 1024 if known else float("nan")


def run_polled(command: list[str], cwd, log, env=None, every_s: float = 0.05) -> float:
    """Run ``command`` (output to the file ``log``), raising on failure; returns the largest memory it
    held (MB; :func:`_peak_MB`, its worker processes included) read while it ran (the last read
    comes just before it exits)."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    peak = float("nan")
    while proc.poll() is None:
        now = _peak_MB(proc.pid)
        peak = now if peak != peak else max(peak, now)
        time.sleep(every_s)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command)
    return peak


def run_relion(folder: Path, command: list[str], iterations: int, threads: int = 2) -> dict:
    """Run ``command`` (a ``relion_refine`` call writing ``relion/run``) from ``folder``; per-iteration
    times from the file times of its ``run_itNNN_data.star``, labels from the last one."""
    from cryolab.io import read_particles
    (folder / "relion").mkdir(exist_ok=True)
    load = load_now()
    t0 = time.time()
    with open(folder / "relion" / "log.txt", "w") as log:
        peak_MB = run_polled(command, folder, log)
    wall = time.time() - t0
    stamps = [(folder / "relion" / f"run_it{i:03d}_data.star").stat().st_mtime for i in range(iterations + 1)]
    particles, _ = read_particles(folder / "relion" / f"run_it{iterations:03d}_data.star")
    index = particles["rlnImageName"].str.split("@").str[0].astype(int).to_numpy() - 1
    labels = np.empty(len(index), int)
    labels[index] = particles["rlnClassNumber"].to_numpy(int) - 1
    return {"wall_s": wall, "setup_s": stamps[0] - t0, "iterations_s": stamps[-1] - stamps[0],
            "steps": [{"iteration": i + 1, "step_s": b - a} for i, (a, b) in enumerate(zip(stamps, stamps[1:]))],
            "labels": labels, "load_before": load, "threads": threads, "peak_MB": peak_MB}


def summarize_runs(res: dict, n: int, iterations: int, truth) -> dict:
    """Time per particle per iteration and matched accuracy of each run (``labels`` replaced by
    ``accuracy``), printed one line per run."""
    rows = {}
    for name, r in res.items():
        r["per_particle_iteration_s"] = r["iterations_s"] / (n * iterations)
        r["accuracy"] = class_accuracy(r.pop("labels"), truth)
        rows[name] = r
        print(f"  {name:8s} {r['per_particle_iteration_s'] * 1e3:7.2f} ms per particle per iteration "
              f"(iterations {r['iterations_s']:.1f} s, set-up {r['setup_s']:.1f} s, load before "
              f"{r['load_before']:.1f}), accuracy {r['accuracy']:.3f}")
    return rows


def run(quick: bool = False, n: int | None = None, iterations: int | None = None, views: int = 8,
        relion: bool = True, out=None, save: bool = True, keep=None) -> dict:
    n = n or (48 if quick else 800)
    iterations = iterations or (2 if quick else 10)
    K = views
    print(f"== class2d: {n} particles, {views} views, K={K}, {iterations} iterations "
          "(cryolab and relion run back to back on shared cores: timings are noisy)", flush=True)
    have_relion = relion_available(relion, "relion_refine")
    with work_folder(keep) as folder:
        sim = simulate_views(folder, n, views)
        truth = sim.truth["view_index"].to_numpy()
        diameter_A = 0.9 * 64 * sim.pixel_size_A
        res = {"cryolab": run_cryolab(sim.star_path, K, iterations, diameter_A)}
        if have_relion:
            res["relion"] = run_relion(folder, relion_command(sim.star_path.name, K, iterations, diameter_A),
                                       iterations)
        ceiling = simulation_ceiling(sim, volume=load_demo().volumes["80S"], views=VIEWS[:views])
    rows = summarize_runs(res, n, iterations, truth)
    c = rows["cryolab"]
    print(f"  Bayes-optimal accuracy (true views, poses, noise): {ceiling:.3f}")
    flops = sum(s["gemm_flops"] for s in c["steps"])
    print(f"  cryolab GEMM work: {flops / (n * iterations) / 1e6:.0f} MFLOP per particle per iteration, "
          f"effective {flops / c['iterations_s'] / 1e9:.0f} GFLOP/s")
    ratios = [ratio("class2d.cryolab_accuracy", c["accuracy"], "matched class accuracy vs the true views"),
              ratio("class2d.bayes_optimal_accuracy", ceiling, "the ceiling on these images"),
              ratio("class2d.cryolab_over_ceiling", c["accuracy"] / ceiling, "accuracy / Bayes-optimal")]
    if "relion" in rows:
        r = rows["relion"]
        ratios += [
            ratio("class2d.relion_over_cryolab_time", r["per_particle_iteration_s"] / c["per_particle_iteration_s"],
                  "relion_refine --j 2 time / cryolab time, per particle per iteration", ">= 10"),
            ratio("class2d.relion_accuracy", r["accuracy"], "relion's matched class accuracy"),
            ratio("class2d.cryolab_minus_relion_accuracy", c["accuracy"] - r["accuracy"],
                  "accuracy difference", ">= 0"),
        ]
    result = {"n": n, "views": views, "K": K, "iterations": iterations, "snr": 0.05,
              "particle_diameter_A": diameter_A, "runs": rows, "ratios": ratios, "quick": quick}
    return finish("class2d", result, out, save)


def main(argv=None):
    ap = part_parser("class2d", __doc__, "48 particles, 2 iterations (smoke run)", "particles (default 800)",
                     "relion_refine", keep=True)
    ap.add_argument("--iter", type=int, default=None, help="iterations (default 10)")
    ap.add_argument("--views", type=int, default=8, help="simulated views = classes (at most 8)")
    a = ap.parse_args(argv)
    run(a.quick, a.n, a.iter, a.views, not a.no_relion, a.out, save=saves(a), keep=a.keep)


if __name__ == "__main__":
    main()
