"""Initial models from the particles alone: cryolab ``initial_model`` against ``relion_refine --denovo_3dref --sgd``.

Simulates the demo 80S (64 px, 6 A/px, random orientations, CTF, SNR 0.05; ``--n`` particles,
default 3,000) and a two-state set (80S and 60S, 50/50), then, back to back on the same files:

* cryolab ``InitialModel`` (K = 1) with seeds 0, 1, 2: wall time; the map superposed on the
  true map allowing for the hand (:func:`cryolab.validation.align.align_maps`); its FSC against
  the truth at 40 A and the resolution where that FSC drops below 0.5;
* cryolab with K = 2 on the two-state set: each model's correlation with each true state after
  superposition, and the share of particles assigned to the right state (best matching);
* ``relion_refine --denovo_3dref --sgd --K 1 --sym C1 --particle_diameter 320 --ctf --j 2`` on the
  one-state set: by default with cryolab's schedule (the same mini-batch sizes, resolutions and
  number of iterations, ``--sgd_*`` flags), with ``--relion-defaults`` with RELION's own (300
  iterations); its final map scored like cryolab's;
* with ``--refine``: cryolab's auto-refine started from the ab-initio map (seed 0) and from the true
  map low-passed to 40 A; both resolutions (half-set FSC 0.143) and their difference in shells.

The issue asks for FSC >= 0.5 at 40 A in every seed, a refine within one shell of the one from the
truth, >= 90 % of the particles split right with K = 2, and cryolab at least as good as RELION and
at least 3x faster.

Usage: ``python -m benchmarks.initial_model [--n 3000] [--snr 0.05] [--seeds 0,1,2] [--no-relion]
[--relion-defaults] [--refine] [--keep DIR [--reuse]] [--quick]``
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np

from . import finish, load_now, part_parser, ratio, relion_available, saves, work_folder

DIAMETER_A, RESOLUTION_CHECK_A = 320.0, 40.0


def simulate(folder: Path, n: int, snr: float, two_states: bool = False, seed: int = 1):
    """``n`` particles (random orientations, CTF) in ``folder`` and the true maps ``{name: map}``."""
    from cryolab.data import load_demo
    from cryolab.io import write_mrc
    from cryolab.simulate import simulate_particles
    demo = load_demo()
    names = ("80S", "60S") if two_states else ("80S",)
    vols = {k: demo.volumes[k] for k in names}
    folder.mkdir(parents=True, exist_ok=True)
    sim = simulate_particles(vols, n, demo.pixel_size_A, snr=snr, seed=seed, out_dir=folder)
    for k, v in vols.items():
        write_mrc(folder / f"truth_{k}.mrc", v, demo.pixel_size_A)
    return sim, vols, demo.pixel_size_A


def score_map(volume, truth, pixel_size_A: float) -> dict:
    """FSC of ``volume`` against ``truth`` after superposition (either hand): at 40 A, the
    resolution where it drops below 0.5, the hand used and the correlation after superposition."""
    from cryolab.validation import fsc, resolution_at
    from cryolab.validation.align import align_maps
    a = align_maps(volume, truth, pixel_size_A, resolution_A=20.0)
    f = fsc(a.aligned, truth)
    n = truth.shape[0]
    at = float(np.interp(n * pixel_size_A / RESOLUTION_CHECK_A, np.arange(f.size), f))
    return {"fsc_at_40A": at, "resolution_fsc05_A": float(resolution_at(f, 0.5, n, pixel_size_A)),
            "mirrored": a.mirrored, "cc": float(np.corrcoef(a.aligned.ravel(), truth.ravel())[0, 1]),
            "aligned": a.aligned}


def run_cryolab(star, K: int, seed: int, schedule):
    from cryolab.methods.initial_model import InitialModel
    t0 = time.perf_counter()
    im = InitialModel(star, K, schedule=schedule, seed=seed, particle_diameter_A=DIAMETER_A)
    im.run(progress=False)
    return im, time.perf_counter() - t0


def relion_flags(schedule) -> list[str]:
    return ["--sgd_ini_iter", str(schedule.ini_iter), "--sgd_inbetween_iter", str(schedule.inbetween_iter),
            "--sgd_fin_iter", str(schedule.fin_iter), "--sgd_ini_resol", str(schedule.ini_resol_A),
            "--sgd_fin_resol", str(schedule.fin_resol_A), "--sgd_ini_subset", str(schedule.ini_subset),
            "--sgd_fin_subset", str(schedule.fin_subset), "--sgd_stepsize", str(schedule.ini_stepsize),
            "--healpix_order", "2", "--offset_range", "3", "--offset_step", "1", "--tau2_fudge", "4",
            "--sgd_write_iter", str(schedule.n_iter)] + (
        ["--sgd_sigma2fudge_initial", str(schedule.sigma2fudge_ini), "--sgd_sigma2fudge_halflife",
         str(int(schedule.sigma2fudge_halflife))] if schedule.sigma2fudge_halflife > 0 else [])


def run_relion(folder: Path, schedule, defaults: bool, reuse: bool):
    """relion_refine --denovo_3dref --sgd in ``folder`` (the data's folder); (final map, wall s)."""
    from cryolab.io import read_mrc
    out = folder / ("relion_defaults" if defaults else "relion")
    done = sorted(out.glob("run_it*_class001.mrc"))
    timing = out / "wall_s.txt"
    if not (reuse and done and timing.exists()):
        out.mkdir(exist_ok=True)
        cmd = ["relion_refine", "--denovo_3dref", "--sgd", "--i", "particles.star", "--o", f"{out.name}/run",
               "--K", "1", "--sym", "C1", "--particle_diameter", str(DIAMETER_A), "--ctf", "--j", "2"]
        if not defaults:
            cmd += relion_flags(schedule)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
        done = sorted(out.glob("run_it*_class001.mrc"))
    return read_mrc(done[-1])[0], float(timing.read_text())


def split_accuracy(classes, truth_labels) -> float:
    from cryolab.validation import class_accuracy
    return float(class_accuracy(np.asarray(classes), np.asarray(truth_labels)))


def run(quick: bool = False, n: int | None = None, snr: float = 0.05, seeds=(0, 1, 2), relion: bool = True,
        relion_defaults: bool = False, refine: bool = False, keep=None, reuse: bool = False, out=None,
        save: bool = True) -> dict:
    from cryolab.methods.initial_model import SGDSchedule
    n = n or (400 if quick else 3000)
    schedule = (SGDSchedule(ini_iter=2, inbetween_iter=4, fin_iter=2, ini_subset=50, fin_subset=150) if quick
                else SGDSchedule())
    seeds = seeds[:1] if quick else seeds
    with work_folder(keep) as folder:
        result = _run_in(Path(folder), n, snr, seeds, schedule, relion, relion_defaults, refine, reuse)
    return finish("initial_model", result, out, save)


def _particles(folder: Path, n: int, snr: float, two_states: bool, seed: int, reuse: bool):
    """The set in ``folder`` (simulated unless reused), its true class per particle and the true maps."""
    import pandas as pd
    from cryolab.data import load_demo
    if not (reuse and (folder / "particles.star").exists()):
        simulate(folder, n, snr, two_states=two_states, seed=seed)
    demo = load_demo()
    labels = pd.read_csv(folder / "truth.csv")["class_index"].to_numpy()
    return labels, [demo.volumes[k] for k in (("80S", "60S") if two_states else ("80S",))], demo.pixel_size_A


def _run_in(folder: Path, n, snr, seeds, schedule, relion, relion_defaults, refine, reuse) -> dict:
    one, two = folder / "one", folder / "two"
    result = {"n": n, "snr": snr, "schedule": schedule.as_dict(), "load_before": load_now(), "seeds": {}}
    _, (truth,), px = _particles(one, n, snr, False, 1, reuse)
    print(f"initial model: {n} particles, SNR {snr}, schedule {schedule.n_iter} mini-batches "
          f"({schedule.ini_subset}->{schedule.fin_subset} particles, {schedule.ini_resol_A:.0f}->"
          f"{schedule.fin_resol_A:.0f} A)")
    models = {}
    for seed in seeds:
        im, wall = run_cryolab(one / "particles.star", 1, seed, schedule)
        sc = score_map(im.maps()[0], truth, px)
        models[seed] = sc.pop("aligned")
        result["seeds"][seed] = {**sc, "wall_s": wall}
        print(f"  cryolab seed {seed}: FSC at 40 A {sc['fsc_at_40A']:.3f}, FSC 0.5 at {sc['resolution_fsc05_A']:.1f} A,"
              f" mirrored {sc['mirrored']}, {wall:.0f} s")
    worst = min(r["fsc_at_40A"] for r in result["seeds"].values())
    result["ratios"] = [ratio("initial_model_fsc40_worst_seed", worst, "cryolab's worst seed, FSC to truth at 40 A",
                              ">= 0.5")]
    labels, states, _ = _particles(two, n, snr, True, 2, reuse)
    im2, wall2 = run_cryolab(two / "particles.star", 2, seeds[0], schedule)
    cc = np.array([[score_map(m, s, px)["cc"] for s in states] for m in im2.maps()])
    acc = split_accuracy(im2.assign(), labels)
    result["K2"] = {"cc_models_vs_states": cc.tolist(), "split_accuracy": acc, "wall_s": wall2}
    print(f"  cryolab K=2: model/state correlations {np.round(cc, 3).tolist()}, split {acc:.3f}, {wall2:.0f} s")
    result["ratios"].append(ratio("initial_model_K2_split", acc, "share of particles in the right state", ">= 0.90"))
    if relion and relion_available(True, "relion_refine"):
        rmap, rwall = run_relion(one, schedule, relion_defaults, reuse)
        rs = score_map(rmap, truth, px)
        rs.pop("aligned")
        result["relion"] = {**rs, "wall_s": rwall, "defaults": relion_defaults}
        mean_wall = float(np.mean([r["wall_s"] for r in result["seeds"].values()]))
        print(f"  RELION sgd{' (its defaults)' if relion_defaults else ' (same schedule)'}: FSC at 40 A "
              f"{rs['fsc_at_40A']:.3f}, FSC 0.5 at {rs['resolution_fsc05_A']:.1f} A, {rwall:.0f} s")
        result["ratios"] += [
            ratio("initial_model_time_relion_over_cryolab", rwall / mean_wall, "RELION / cryolab wall time", ">= 3"),
            ratio("initial_model_fsc40_cryolab_minus_relion", worst - rs["fsc_at_40A"],
                  "cryolab's worst seed minus RELION, FSC at 40 A", ">= 0")]
    if refine:
        result["refine"] = refine_comparison(one / "particles.star", models[seeds[0]], truth, px)
        result["ratios"].append(result["refine"].pop("ratio"))
    result["load_after"] = load_now()
    return result


def refine_comparison(star, ab_initio, truth, px) -> dict:
    """Auto-refine from the ab-initio map and from the truth low-passed to 40 A: resolutions."""
    from cryolab.fourier import lowpass
    from cryolab.methods import refine
    out = {}
    for name, start in (("ab_initio", ab_initio), ("truth_40A", lowpass(truth, 40.0, px, ndim=3))):
        t0 = time.perf_counter()
        r = refine(star, start, ini_high_A=40.0, particle_diameter_A=DIAMETER_A, progress=False)
        out[name] = {"resolution_A": float(r.resolution_A), "iterations": r.iteration,
                     "wall_s": time.perf_counter() - t0}
        print(f"  refine from {name}: {r.resolution_A:.2f} A in {r.iteration} iterations")
    n = truth.shape[0]
    shells = [n * px / out[k]["resolution_A"] for k in ("ab_initio", "truth_40A")]
    out["shell_difference"] = float(shells[1] - shells[0])
    out["ratio"] = ratio("initial_model_refine_shells_behind", out["shell_difference"],
                         "shells the refine from the ab-initio map ends behind the one from the truth", "<= 1")
    return out


def main(argv=None) -> int:
    p = part_parser("initial_model", __doc__, quick="400 particles, one seed, 8 mini-batches",
                    n="particles per set (default 3000)", relion="relion_refine --denovo_3dref --sgd", keep=True)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--relion-defaults", action="store_true", help="RELION with its own schedule (300 iterations)")
    p.add_argument("--refine", action="store_true", help="also the auto-refine comparison")
    p.add_argument("--reuse", action="store_true", help="reuse the data and RELION's run found in --keep")
    a = p.parse_args(argv)
    run(a.quick, a.n, a.snr, tuple(int(s) for s in a.seeds.split(",")), relion=not a.no_relion,
        relion_defaults=a.relion_defaults, refine=a.refine, keep=a.keep, reuse=a.reuse, out=a.out, save=saves(a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
