"""3D classification: cryolab against relion_refine on the same simulated two-state set.

Simulates ``--n`` particles (default 200) of the demo 80S and 60S maps (64 px, 6 A/px, or
Fourier-rescaled to ``--box`` pixels with the pixel size scaled to match), random orientations,
CTF, SNR ``--snr`` (default 0.05), writes STAR + MRC stack and the references, then runs back to
back (``--references two``, the default: both maps, filtered to ``ini_high`` 40 A, one per class;
``one``: the 80S map alone, filtered to 60 A, K seeds made from it)

* cryolab ``class3d`` (K = 2, HEALPix order 2, offsets 5/1 px, oversampling 1, tau2_fudge 4,
  seed 0; with one reference the seeds come from two random subsets), timing every iteration;
  a seed generation is counted as set-up;
* ``relion_refine --ref ... --K 2 --firstiter_cc`` with the same settings (two references: a
  STAR file listing them), ``--j 2``, run from the data folder; per-iteration times from its
  ``run_itNNN_data.star`` file times.

Reports time per particle per iteration for both, their ratio (goal: cryolab at most a third of
RELION's time) and each one's accuracy against the true state after the best one-to-one
matching of classes to states.

Usage: ``python -m benchmarks.class3d [--n 200] [--iter 5] [--box 64] [--snr 0.05] [--references two|one]
[--no-relion] [--quick]``
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cryolab.engine.forward import simulation_ceiling

from . import finish, load_now, part_parser, ratio, relion_available, saves, work_folder
from .class2d import run_relion, summarize_runs

STATES = ("80S", "60S")


def simulate_states(out_dir, n: int, box: int = 64, snr: float = 0.05, seed: int = 0):
    """``n`` particles of the demo 80S and 60S (random orientations, CTF) at ``box`` pixels written
    to ``out_dir``; the maps at that box as ``ref.mrc`` (80S), ``ref2.mrc`` (60S) and ``refs.star``
    (both, for relion_refine). Returns ``(simulation, [80S, 60S] maps)``."""
    import pandas as pd
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.io import write_mrc, write_star
    from cryolab.simulate import simulate_particles
    demo = load_demo()
    full = demo.volumes[STATES[0]].shape[-1]
    vols = {k: demo.volumes[k] if box == full else rescale(demo.volumes[k], box, ndim=3) for k in STATES}
    pixel_size_A = demo.pixel_size_A * full / box
    sim = simulate_particles(vols, n, pixel_size_A, snr=snr, seed=seed, out_dir=out_dir)
    for name, state in zip(("ref.mrc", "ref2.mrc"), STATES):
        write_mrc(Path(out_dir) / name, vols[state], pixel_size_A)
    write_star(Path(out_dir) / "refs.star", {"": pd.DataFrame({"rlnReferenceImage": ["ref.mrc", "ref2.mrc"]})})
    return sim, [vols[k] for k in STATES]


def relion_command(star_name: str, K: int, iterations: int, diameter_A: float, ini_high_A: float,
                   threads: int = 2, ref: str = "ref.mrc") -> list[str]:
    """``relion_refine`` arguments matching cryolab's 3D classification settings."""
    return ["relion_refine", "--i", star_name, "--ref", ref, "--ini_high", f"{ini_high_A:g}",
            "--o", "relion/run", "--K", str(K), "--iter", str(iterations), "--tau2_fudge", "4",
            "--particle_diameter", f"{diameter_A:.1f}", "--healpix_order", "2", "--offset_range", "5",
            "--offset_step", "1", "--oversampling", "1", "--ctf", "--j", str(threads),
            "--random_seed", "0", "--firstiter_cc", "--sym", "C1", "--dont_combine_weights_via_disc",
            "--pool", "10"]


def run_cryolab(star_path, reference, K: int, iterations: int, diameter_A: float, ini_high_A: float) -> dict:
    """cryolab ``class3d`` with per-iteration times (seed generation and set-up counted apart)."""
    from cryolab.methods import class3d
    steps = []
    load = load_now()
    t0 = time.perf_counter()

    def record(session, result):
        steps.append({"iteration": result.iteration, "step_s": result.time_s, "max_shell": session.max_shell})

    session = class3d(str(star_path), reference, K=K, iterations=iterations, healpix_order=2,
                      offset_range_px=5.0, offset_step_px=1.0, oversampling=1, ini_high_A=ini_high_A,
                      tau2_fudge=4.0, particle_diameter_A=diameter_A, ctf=True, seed=0, progress=False,
                      callback=record)
    wall = time.perf_counter() - t0
    iter_s = sum(s["step_s"] for s in steps)
    return {"wall_s": wall, "setup_s": wall - iter_s, "iterations_s": iter_s, "steps": steps,
            "labels": session.classes.copy(), "load_before": load}


def run(quick: bool = False, n: int | None = None, iterations: int | None = None, box: int | None = None,
        snr: float = 0.05, relion: bool = True, out=None, save: bool = True, keep=None,
        references: str = "two") -> dict:
    n = n or (24 if quick else 200)
    iterations = iterations or (1 if quick else 5)
    box = box or (16 if quick else 64)
    K, ini_high_A = 2, (40.0 if references == "two" else 60.0)
    print(f"== class3d: {n} particles of {' and '.join(STATES)}, {box} px, SNR {snr:g}, K={K}, "
          f"{iterations} iterations, {references} reference(s) (cryolab and relion run back to back on "
          "shared cores: timings are noisy)", flush=True)
    have_relion = relion_available(relion, "relion_refine")
    with work_folder(keep) as folder:
        sim, maps = simulate_states(folder, n, box, snr)
        reference = np.stack(maps) if references == "two" else maps[0]
        truth = sim.truth["class_index"].to_numpy()
        diameter_A = 0.9 * box * sim.pixel_size_A
        res = {"cryolab": run_cryolab(sim.star_path, reference, K, iterations, diameter_A, ini_high_A)}
        if have_relion:
            command = relion_command(sim.star_path.name, K, iterations, diameter_A, ini_high_A,
                                     ref="refs.star" if references == "two" else "ref.mrc")
            res["relion"] = run_relion(folder, command, iterations)
        ceiling = simulation_ceiling(sim, maps=maps)
    rows = summarize_runs(res, n, iterations, truth)
    c = rows["cryolab"]
    print(f"  Bayes-optimal accuracy (true maps, poses, noise): {ceiling:.3f}")
    ratios = [ratio("class3d.cryolab_accuracy", c["accuracy"], "matched class accuracy vs the true states"),
              ratio("class3d.bayes_optimal_accuracy", ceiling, "the ceiling on these images"),
              ratio("class3d.cryolab_over_ceiling", c["accuracy"] / ceiling, "accuracy / Bayes-optimal")]
    if "relion" in rows:
        r = rows["relion"]
        ratios += [
            ratio("class3d.relion_over_cryolab_time", r["per_particle_iteration_s"] / c["per_particle_iteration_s"],
                  "relion_refine --j 2 time / cryolab time, per particle per iteration", ">= 3"),
            ratio("class3d.relion_over_cryolab_wall", r["wall_s"] / c["wall_s"],
                  "whole runs incl. set-up (cryolab's includes its seed generation)"),
            ratio("class3d.relion_accuracy", r["accuracy"], "relion's matched class accuracy"),
            ratio("class3d.cryolab_minus_relion_accuracy", c["accuracy"] - r["accuracy"],
                  "accuracy difference", ">= 0"),
        ]
    result = {"n": n, "box": box, "pixel_size_A": sim.pixel_size_A, "K": K, "iterations": iterations,
              "snr": snr, "healpix_order": 2, "offset_range_px": 5, "offset_step_px": 1,
              "ini_high_A": ini_high_A, "references": references, "particle_diameter_A": diameter_A, "runs": rows, "ratios": ratios,
              "quick": quick}
    return finish("class3d", result, out, save)


def main(argv=None):
    ap = part_parser("class3d", __doc__, "24 particles, 16 px, 1 iteration (smoke run)", "particles (default 200)",
                     "relion_refine", keep=True)
    ap.add_argument("--iter", type=int, default=None, help="iterations (default 5)")
    ap.add_argument("--box", type=int, default=None, help="box in pixels (default 64; the maps are rescaled)")
    ap.add_argument("--snr", type=float, default=0.05, help="signal-to-noise ratio (default 0.05)")
    ap.add_argument("--references", choices=("two", "one"), default="two",
                    help="start from both maps (default) or from the 80S map alone")
    a = ap.parse_args(argv)
    run(a.quick, a.n, a.iter, a.box, a.snr, not a.no_relion, a.out, save=saves(a), keep=a.keep,
        references=a.references)


if __name__ == "__main__":
    main()
