"""Cost at the box sizes users process: the same job at several boxes, cryolab against relion_refine.

The demo maps (64 px, 6 A/px) are Fourier-rescaled to each box with the pixel size scaled to
match (``6 * 64 / box`` A/px), so the particle fills every box alike; particles get CTF, white
noise at SNR ``--snr`` and origins within 3 px. Per box size, back to back on the same cores:

* **2D**: ``K`` views of the 80S (random directions), ``K`` classes, psi 10 deg, offsets 5/1 px,
  ``tau2_fudge`` 2 (cryolab ``class2d`` vs ``relion_refine`` without ``--ref``);
* **3D**: the four demo states (80S, 80S without RACK1, 80S without Lso2, 60S), ``K`` = 4
  references (the true maps filtered to 40 A, one per class), HEALPix order 2, offsets 5/1 px,
  ``tau2_fudge`` 4, first iteration by cross-correlation (cryolab ``class3d`` vs ``relion_refine
  --ref refs.star --firstiter_cc``).

Both programs choose their resolution per iteration themselves (from the data, as RELION does).
Each job runs in a process of its own, whose peak resident memory (``VmHWM``) is read while it
runs. Reported per box and job: time per particle per iteration (iterations only, set-up apart),
peak memory, matched class accuracy against the truth, cryolab's GEMM flops per particle per
iteration and its whole-step GEMM rate as a fraction of this machine's GEMM peak (measured at the
start, default BLAS threads). A plot of cost against box size for both programs is written to
``--plot`` (default ``scale_cost.png`` in the results folder). cryolab's memory budget
(``memory_limit_GB``; ``--memory-limit GB``, default a quarter of the RAM) is printed with each
job, and the process's peak resident memory as a share of it (goal <= 1: the budget bounds the
E-step's batches, the M-step buffer, the projection cache and the class maps; the interpreter,
its libraries and the particle stack's pages come on top).

The default is scaled down to finish in ~15 minutes on two cores (boxes 64, 96 and 128; 2D: 200
particles, K = 8, 3 iterations; 3D: 30 particles, 2 iterations). ``--full`` runs the issue's sizes
(boxes 64, 128 and 192; 2D: 2,000 particles, K = 50 at 128 px; 3D: 3,000 particles, K = 4, 5
iterations) and takes many hours with RELION on two cores. ``--gpu`` runs cryolab's jobs with
``CRYOLAB_BACKEND=cupy``. ``--dask N`` also runs the 2D job at 128 px (100 particles, 2 iterations;
400 with ``--full``) in-process and on a dask ``LocalCluster`` of N worker processes, and prints
whether the results agree and the time ratio. ``--refine 128`` adds the gold-standard
auto-refinement comparison of :mod:`benchmarks.refine` at that box (200 particles, 600 with
``--full``; ``mpirun -n 3 relion_refine_mpi``: an hour or more on two cores).

Usage: ``python -m benchmarks.scale [--full] [--boxes 64,96,128] [--jobs 2d,3d] [--no-relion] [--gpu]
[--dask N] [--refine BOX] [--memory-limit GB] [--quick]``
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import RESULTS_DIR, GemmCounter, finish, load_now, part_parser, ratio, relion_available, saves, work_folder
from .class2d import relion_command as relion_2d, run_polled, run_relion
from .class3d import relion_command as relion_3d

STATES = ("80S", "80S_noRACK1", "80S_noLso2", "60S")
ROOT = Path(__file__).resolve().parent.parent

#: (boxes, 2D particles, 2D classes, 2D iterations, 3D particles, 3D iterations) per size preset
PRESETS = {"quick": ((24, 32), 32, 4, 1, 12, 1),
           "default": ((64, 96, 128), 200, 8, 3, 30, 2),
           "full": ((64, 128, 192), 2000, 50, 15, 3000, 5)}


def rescaled(name: str, box: int):
    """The demo map ``name`` at ``box`` px and its pixel size (the particle fills the box alike)."""
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    demo = load_demo()
    vol = demo.volumes[name]
    full = vol.shape[-1]
    return (vol if box == full else rescale(vol, box, ndim=3)), demo.pixel_size_A * full / box


def simulate_job(kind: str, folder: Path, box: int, n: int, K: int, snr: float, seed: int = 0):
    """Particles of the 2D job (``K`` random views of the 80S) or the 3D job (the four states; their
    maps as ``refN.mrc`` and ``refs.star``) at ``box`` px in ``folder``; returns the simulation."""
    from cryolab.simulate import simulate_particles, simulate_views_2d
    if kind == "2d":
        vol, px = rescaled("80S", box)
        return simulate_views_2d(vol, n, px, n_views=K, snr=snr, seed=seed, out_dir=folder, name="particles")
    import pandas as pd
    from cryolab.io import write_mrc, write_star
    vols = {name: rescaled(name, box)[0] for name in STATES}
    px = rescaled(STATES[0], box)[1]
    sim = simulate_particles(vols, n, px, snr=snr, seed=seed, out_dir=folder)
    names = [f"ref{i + 1}.mrc" for i in range(len(STATES))]
    for name, state in zip(names, STATES):
        write_mrc(folder / name, vols[state], px)
    write_star(folder / "refs.star", {"": pd.DataFrame({"rlnReferenceImage": names})})
    return sim


def child(job: dict) -> dict:
    """One cryolab job (run in a process of its own): per-iteration times, GEMM flops, labels."""
    from cryolab.engine.memory import available_bytes
    from cryolab.io import read_mrc
    from cryolab.methods import class2d, class3d
    steps = []
    with GemmCounter() as counter:
        def record(session, result):
            done = sum(s["gemm_flops"] for s in steps)
            rows_done = sum(s["rows_flops"] for s in steps)
            steps.append({"iteration": result.iteration, "step_s": result.time_s,
                          "gemm_flops": counter.flops - done, "rows_flops": counter.rows_flops - rows_done,
                          "max_shell": session.max_shell})

        t0 = time.perf_counter()
        common = dict(iterations=job["iterations"], offset_range_px=5.0, offset_step_px=1.0,
                      particle_diameter_A=job["diameter_A"], ctf=True, seed=0, progress=False, callback=record,
                      memory_limit_GB=job.get("memory_limit_GB"))
        if job["kind"] == "2d":
            s = class2d(job["star"], K=job["K"], psi_step_deg=10.0, **common)
        else:
            folder = Path(job["star"]).parent
            refs = np.stack([read_mrc(folder / f"ref{i + 1}.mrc")[0] for i in range(job["K"])])
            s = class3d(job["star"], refs, K=job["K"], healpix_order=2, oversampling=1, ini_high_A=40.0,
                        tau2_fudge=4.0, **common)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "steps": steps, "labels": s.classes.tolist(), "backend": s.xp.__name__,
            "budget_MB": available_bytes(s.xp, job.get("memory_limit_GB")) / 2 ** 20}


def run_cryolab(job: dict, gpu: bool) -> dict:
    """:func:`child` in a fresh process; adds its peak resident memory."""
    env = dict(os.environ, CRYOLAB_BACKEND="cupy") if gpu else None
    with tempfile.TemporaryFile("w+") as log:
        code = ("import json, sys; from benchmarks.scale import child; "
                "print('RESULT ' + json.dumps(child(json.loads(sys.argv[1]))))")
        load = load_now()
        peak_MB = run_polled([sys.executable, "-c", code, json.dumps(job)], ROOT, log, env=env)
        log.seek(0)
        text = log.read()
    r = json.loads([ln for ln in text.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])
    iters = sum(s["step_s"] for s in r["steps"])
    return dict(r, iterations_s=iters, setup_s=r["wall_s"] - iters, peak_MB=peak_MB, load_before=load,
                labels=np.asarray(r["labels"]))


def one_job(kind: str, box: int, n: int, K: int, iterations: int, snr: float, relion: bool, gpu: bool,
            peak_gflops: float, keep=None, memory_limit_GB=None) -> dict:
    """Simulate, run cryolab and (optionally) RELION on one job at one box; a row of the table."""
    from cryolab.validation import class_accuracy
    with work_folder(None if keep is None else Path(keep) / f"{kind}_{box}") as folder:
        folder = Path(folder)
        sim = simulate_job(kind, folder, box, n, K, snr)
        truth = sim.truth["view_index" if kind == "2d" else "class_index"].to_numpy()
        diameter_A = 0.9 * box * sim.pixel_size_A
        job = {"kind": kind, "star": str(sim.star_path), "K": K, "iterations": iterations, "diameter_A": diameter_A,
               "memory_limit_GB": memory_limit_GB}
        runs = {"cryolab": run_cryolab(job, gpu)}
        if relion:
            cmd = (relion_2d(sim.star_path.name, K, iterations, diameter_A) if kind == "2d" else
                   relion_3d(sim.star_path.name, K, iterations, diameter_A, 40.0, ref="refs.star"))
            runs["relion"] = run_relion(folder, cmd, iterations)
    row = {"kind": kind, "box": box, "pixel_size_A": sim.pixel_size_A, "n": n, "K": K, "iterations": iterations}
    for name, r in runs.items():
        row[name] = {"per_particle_iteration_s": r["iterations_s"] / (n * iterations),
                     "first_two_s": sum(s["step_s"] for s in r["steps"][:2]),
                     "accuracy": class_accuracy(r["labels"], truth), "peak_MB": r["peak_MB"],
                     "iterations_s": r["iterations_s"], "setup_s": r["setup_s"], "load_before": r["load_before"]}
    c = row["cryolab"]
    flops = sum(s["gemm_flops"] for s in runs["cryolab"]["steps"])
    c["gemm_mflop_per_particle_iteration"] = flops / (n * iterations) / 1e6
    c["gemm_fraction_of_peak"] = flops / runs["cryolab"]["iterations_s"] / 1e9 / peak_gflops
    rows = sum(s["rows_flops"] for s in runs["cryolab"]["steps"])
    c["rows_form_fraction_of_peak"] = rows / runs["cryolab"]["iterations_s"] / 1e9 / peak_gflops
    c["max_shell"] = [s["max_shell"] for s in runs["cryolab"]["steps"]]
    c["budget_MB"] = runs["cryolab"]["budget_MB"]
    line = (f"  {kind} {box:4d} px ({sim.pixel_size_A:.2f} A/px, shells {c['max_shell']}): cryolab "
            f"{c['per_particle_iteration_s'] * 1e3:8.2f} ms per particle-iteration, peak {c['peak_MB']:6.0f} MB "
            f"(budget {c['budget_MB']:.0f} MB), "
            f"accuracy {c['accuracy']:.3f}, GEMM {c['gemm_mflop_per_particle_iteration']:.0f} MFLOP/particle-it "
            f"at {c['gemm_fraction_of_peak']:.0%} of peak")
    if "relion" in row:
        r = row["relion"]
        line += (f" | RELION {r['per_particle_iteration_s'] * 1e3:8.2f} ms, peak {r['peak_MB']:6.0f} MB, "
                 f"accuracy {r['accuracy']:.3f} | RELION/cryolab "
                 f"{r['per_particle_iteration_s'] / c['per_particle_iteration_s']:.1f}x")
    print(line, flush=True)
    return row


def dask_job(box: int, n: int, iterations: int, workers: int, K: int = 8, snr: float = 0.05) -> dict:
    """The 2D job at ``box`` px in-process and on a dask ``LocalCluster`` of ``workers`` processes
    (``scheduler="local:N"``), back to back: same classes and class averages, and the time ratio."""
    from cryolab.backend import to_numpy
    from cryolab.distributed import close_clients
    from cryolab.session import Session
    out = {}
    with work_folder() as folder:
        sim = simulate_job("2d", Path(folder), box, n, K, snr)
        kw = dict(K=K, psi_step_deg=10.0, offset_range_px=5.0, offset_step_px=1.0, ctf=True, seed=0,
                  particle_diameter_A=0.9 * box * sim.pixel_size_A, tau2_fudge=2.0)
        for name, scheduler in (("in_process", None), (f"local_{workers}", f"local:{workers}")):
            s = Session(str(sim.star_path), scheduler=scheduler, **kw)
            if scheduler:
                s.step()                                  # starts the cluster; not timed
                s = Session(str(sim.star_path), scheduler=scheduler, **kw)
            t0 = time.perf_counter()
            s.run(iterations, progress=False)
            out[name] = {"s": time.perf_counter() - t0, "classes": s.classes.copy(),
                         "refs": to_numpy(s.references)}
        close_clients()
    a, b = out["in_process"], out[f"local_{workers}"]
    same = float(np.mean(a["classes"] == b["classes"]))
    ref_diff = float(np.abs(a["refs"] - b["refs"]).max() / np.abs(a["refs"]).max())
    print(f"  dask {box} px, {n} particles, {iterations} iterations: in-process {a['s']:.1f} s, LocalCluster of "
          f"{workers} workers {b['s']:.1f} s; same class {same:.3f}, class averages differ by {ref_diff:.1e} "
          "(of their maximum)", flush=True)
    return {"box": box, "n": n, "iterations": iterations, "workers": workers, "in_process_s": a["s"],
            "cluster_s": b["s"], "same_class": same, "max_rel_ref_diff": ref_diff}


def plot(rows: list, path: Path) -> Path | None:
    """Cost per particle-iteration against box size, both programs, log-log; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, marker in (("2d", "o"), ("3d", "s")):
        for prog, style in (("cryolab", "-"), ("relion", "--")):
            pts = [(r["box"], r[prog]["per_particle_iteration_s"] * 1e3) for r in rows
                   if r["kind"] == kind and prog in r]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, marker=marker, label=f"{prog} {kind.upper()}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    boxes = sorted({r["box"] for r in rows})
    ax.set_xticks(boxes)
    ax.set_xticklabels([str(b) for b in boxes])
    ax.minorticks_off()
    ax.set_xlabel("box size (px)")
    ax.set_ylabel("ms per particle per iteration")
    ax.set_title("Cost against box size (same cores, back to back)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(quick: bool = False, full: bool = False, boxes=None, jobs=("2d", "3d"), snr: float = 0.05,
        relion: bool = True, gpu: bool = False, out=None, save: bool = True, keep=None, plot_path=None,
        dask_workers: int = 0, refine_box: int = 0, memory_limit_GB: float | None = None) -> dict:
    from .gemm import gemm_peak
    preset = PRESETS["quick" if quick else "full" if full else "default"]
    boxes = tuple(boxes or preset[0])
    n2, K2, it2, n3, it3 = preset[1:]
    print(f"== scale: boxes {', '.join(map(str, boxes))} px; 2D {n2} particles, K={K2}, {it2} iterations; "
          f"3D {n3} particles, K=4, {it3} iterations; SNR {snr:g}{' (cryolab on the GPU)' if gpu else ''}", flush=True)
    have_relion = relion_available(relion, "relion_refine")
    peak = gemm_peak((512, 1024) if quick else (1024, 2048), 3)["peak_gflops"]
    print(f"  GEMM peak (default BLAS threads): {peak:.0f} GFLOP/s", flush=True)
    rows = []
    for box in boxes:
        if "2d" in jobs:
            rows.append(one_job("2d", box, n2, K2, it2, snr, have_relion, gpu, peak, keep, memory_limit_GB))
        if "3d" in jobs:
            rows.append(one_job("3d", box, n3, len(STATES), it3, 2 * snr, have_relion, gpu, peak, keep,
                                memory_limit_GB))
    ratios = []
    for r in rows:
        tag = f"scale.{r['kind']}_{r['box']}"
        c = r["cryolab"]
        ratios.append(ratio(f"{tag}.gemm_fraction", c["gemm_fraction_of_peak"],
                            "cryolab whole-step GEMM flops / wall time / GEMM peak", ">= 0.5"))
        ratios.append(ratio(f"{tag}.rows_form_fraction", c["rows_form_fraction_of_peak"],
                            "the same with the flops of the GEMM-rows form (every translation a GEMM row): "
                            "> 1 when the step beats that form run at the GEMM peak"))
        ratios.append(ratio(f"{tag}.cryolab_peak_over_budget", c["peak_MB"] / c["budget_MB"],
                            "cryolab process peak resident memory / its memory budget", "<= 1"))
        if "relion" in r:
            goal = ">= 10" if r["kind"] == "2d" else ">= 5"
            ratios += [ratio(f"{tag}.relion_over_cryolab_time",
                             r["relion"]["per_particle_iteration_s"] / c["per_particle_iteration_s"],
                             "relion_refine --j 2 / cryolab, time per particle per iteration", goal),
                       ratio(f"{tag}.relion_over_cryolab_first_two",
                             r["relion"]["first_two_s"] / max(c["first_two_s"], 1e-9),
                             "relion / cryolab, the first two iterations")
                       if r["iterations"] >= 2 else None,
                       ratio(f"{tag}.cryolab_minus_relion_accuracy", c["accuracy"] - r["relion"]["accuracy"],
                             "matched class accuracy, difference", ">= 0"),
                       ratio(f"{tag}.cryolab_over_relion_peak_memory", c["peak_MB"] / r["relion"]["peak_MB"],
                             "peak resident memory of the two processes")]
    ratios = [r for r in ratios if r is not None]
    dask = None
    if dask_workers:
        dask = dask_job(128 if not quick else 32, 400 if full else (16 if quick else 100), 1 if quick else 2,
                        dask_workers)
        ratios += [ratio("scale.dask_in_process_over_cluster_time", dask["in_process_s"] / dask["cluster_s"],
                         f"in-process / LocalCluster of {dask_workers} workers, the same iterations"),
                   ratio("scale.dask_same_class", dask["same_class"], "fraction of particles in the same class", "1")]
    if refine_box:              # gold-standard auto-refinement at one box, both programs (benchmarks.refine)
        from . import refine
        refined = refine.run(quick, n=600 if full else 200, box=refine_box, relion=relion, out=out, save=save)
        ratios += refined["ratios"]
    figure = plot(rows, Path(plot_path) if plot_path else Path(out or RESULTS_DIR) / "scale_cost.png") \
        if not quick or plot_path else None
    if figure:
        print(f"  plot: {figure.name}")
    result = {"boxes": list(boxes), "snr_2d": snr, "snr_3d": 2 * snr, "gemm_peak_gflops": peak, "rows": rows,
              "dask": dask, "ratios": ratios, "quick": quick, "full": full, "gpu": gpu}
    return finish("scale", result, out, save)


def main(argv=None):
    ap = part_parser("scale", __doc__, "boxes 24 and 32, a few particles (smoke run)", None, "relion_refine",
                     keep=True)
    ap.add_argument("--full", action="store_true", help="the issue's sizes (boxes 64, 128, 192; hours with RELION)")
    ap.add_argument("--boxes", default=None, help="comma-separated box sizes in pixels")
    ap.add_argument("--jobs", default="2d,3d", help="comma-separated subset of 2d, 3d")
    ap.add_argument("--snr", type=float, default=0.05, help="SNR of the 2D job (the 3D job: twice it)")
    ap.add_argument("--gpu", action="store_true", help="cryolab on the GPU (CRYOLAB_BACKEND=cupy)")
    ap.add_argument("--plot", default=None, help="where to write the cost-vs-box plot (PNG)")
    ap.add_argument("--refine", type=int, default=0, metavar="BOX",
                    help="also run the auto-refine comparison (benchmarks.refine) at this box (e.g. 128; an hour or more)")
    ap.add_argument("--dask", type=int, default=0, metavar="N",
                    help="also run the 2D job at 128 px in-process and on a LocalCluster of N workers")
    ap.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                    help="cryolab's memory budget (memory_limit_GB; default a quarter of the RAM)")
    a = ap.parse_args(argv)
    boxes = [int(b) for b in a.boxes.split(",")] if a.boxes else None
    run(a.quick, a.full, boxes, tuple(j.strip() for j in a.jobs.split(",")), a.snr, not a.no_relion, a.gpu,
        a.out, save=saves(a), keep=a.keep, plot_path=a.plot, dask_workers=a.dask, refine_box=a.refine,
        memory_limit_GB=a.memory_limit)


if __name__ == "__main__":
    main()
