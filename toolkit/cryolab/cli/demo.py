"""``cryolab demo``: the lecture's workflow end to end on the embedded ribosome dataset.

1. simulate a heterogeneous particle set (three states of the 80S ribosome, random views,
   CTF, noise) with :func:`cryolab.simulate.simulate_particles`;
2. 2D classification of (part of) it with :func:`cryolab.methods.class2d`;
3. 3D classification (:func:`cryolab.methods.class3d`, K = 2) of a second, small and
   cleaner set of the 80S ribosome and its 60S subunit alone, from the 80S map as the one
   reference; the classes are scored against the true states;
4. gold-standard auto-refinement (:func:`cryolab.methods.refine`) of the particles in the
   3D class of the 80S state, from the 80S map low-pass filtered to 60 A: half-map FSC,
   resolution, post-processing and the mean angular error against the simulated angles;
5. for the other states of step 1, two random half-sets reconstructed with the known angles
   (:func:`cryolab.reconstruction.reconstruct_stack`) and post-processed
   (:func:`cryolab.validation.postprocess`): gold-standard FSC and resolution;
6. ``report.html`` (:mod:`cryolab.report`) and ``run.json``.

Layout of the output folder: ``particles/`` (STAR, stack, truth.csv), ``class2d/``
(``run_itNNN_*``), ``class3d/`` (``particles/`` and ``run_itNNN_*`` with ``_classNNN.mrc``),
``states/80S/`` (the auto-refinement: ``run_itNNN_*``, ``run_*``, ``postprocess.star/.mrc``),
``states/<state>/`` of the other states (half maps, mask, ``postprocess.star/.mrc``),
``run.json``, ``report.html``. ``run_demo`` does the same from Python.
"""
from __future__ import annotations

import time
from pathlib import Path

from .common import add_common, check_output, make_folder, say

#: sizes of the two demo flavours (full: < 5 min on 2 cores; quick: < 60 s, for tests). The 3D
#: classification runs on its own small set at a higher SNR than the 2D one: at SNR 0.05 and
#: this box size it does not separate the states yet.
SIZES = {
    "full": dict(box=64, n=3000, n_class2d=1200, K=6, iterations=6, psi_step_deg=15.0,
                 offset_range_px=3.0, snr=0.05,
                 class3d=dict(box=32, n=600, snr=0.5, iterations=8, healpix_order=1),
                 refine=dict(max_iter=16)),
    "quick": dict(box=32, n=300, n_class2d=200, K=3, iterations=2, psi_step_deg=20.0,
                  offset_range_px=2.0, snr=0.1,
                  class3d=dict(box=32, n=300, snr=1.0, iterations=6, healpix_order=1),
                  refine=dict(max_iter=8)),
}
STATES = {"80S": 0.4, "80S_noRACK1": 0.3, "60S": 0.3}
#: the two states of the 3D classification (equal populations) and the one reference
STATES_3D = ("80S", "60S")
REFERENCE_3D = "80S"
#: the state whose 3D class is auto-refined (the others get half maps from the known angles)
REFINED_STATE = "80S"


def _maps(box, states=tuple(STATES)):
    """The demo states, Fourier-cropped to ``box``: ``({state: volume}, pixel size A)``."""
    from ..data import load_demo
    from ..fourier import fourier_crop
    demo = load_demo("ribosome")
    maps = {s: demo.volumes[s] for s in states}
    if box != demo.box_size:
        maps = {s: fourier_crop(v, box, ndim=3) for s, v in maps.items()}
    return maps, demo.pixel_size_A * demo.box_size / box


def _with_truth(stack, truth):
    """The stack with the true angles and origins as RELION labels."""
    from ..simulate import TRUTH_LABELS
    return stack.with_table(stack.table.assign(**{lab: truth[col].to_numpy()
                                                  for col, lab in TRUTH_LABELS.items()}))


def _classes_vs_states(session, truth, states=tuple(STATES)) -> list:
    import pandas as pd
    cls = pd.Series(session.classes + 1, name="class")
    tab = pd.crosstab(cls, truth["class_name"].to_numpy()[: len(cls)])
    return [{"class": int(k), "particles": int(row.sum()), **{s: int(row.get(s, 0)) for s in states}}
            for k, row in tab.iterrows()]


def _class3d(out: Path, sizes: dict, seed: int, log, rec) -> dict:
    """3D classification (K = 2) of a small simulated set of two states, scored against the truth."""
    import numpy as np
    from ..methods import class3d
    from ..simulate import simulate_particles
    from ..validation import class_accuracy
    maps, px = _maps(sizes["box"], STATES_3D)
    with rec.timed("simulate_3d"):
        sim = simulate_particles(maps, sizes["n"], px, snr=sizes["snr"], seed=seed + 1,
                                 out_dir=make_folder(out / "particles"))
    truth = sim.truth["class_index"].to_numpy()

    def after(s, result):
        log(f"    iteration {result.iteration}: {100 * class_accuracy(s.classes, truth):.0f}% of the particles "
            f"in the class of their state, class sizes {[round(x, 2) for x in result.class_distribution]} "
            f"({result.time_s:.1f} s)")

    with rec.timed("class3d"):
        session = class3d(sim.star_path, maps[REFERENCE_3D], K=len(STATES_3D), iterations=sizes["iterations"],
                          healpix_order=sizes["healpix_order"], offset_range_px=2, oversampling=0,
                          ini_high_A=50, seed=seed, out_dir=out, progress=False, callback=after)
    summary = {"accuracy": round(class_accuracy(session.classes, truth), 3),
            "class_sizes": np.bincount(session.classes, minlength=len(STATES_3D)).tolist(),
            "classes_vs_true_states": _classes_vs_states(session, sim.truth, STATES_3D),
            "reference": f"{REFERENCE_3D}, low-pass filtered to 50 Å", "snr": sizes["snr"],
            "box": sizes["box"], "particles": sizes["n"]}
    return summary, session, sim, maps[REFINED_STATE]


def _refine_state(session, sim, reference, folder: Path, sizes: dict, seed: int, log, rec) -> dict:
    """Gold-standard auto-refinement of the particles in the 3D class holding most particles of
    ``REFINED_STATE``, from ``reference`` low-pass filtered to 60 A; returns a summary row."""
    import numpy as np
    from ..geometry import angular_distance
    from ..io import ParticleStack
    from ..methods import refine
    names = sim.truth["class_name"].to_numpy()
    k = int(np.bincount(session.classes[names == REFINED_STATE], minlength=session.settings.K).argmax())
    idx = np.flatnonzero(session.classes == k)
    stack = ParticleStack.from_star(sim.star_path).subset(idx)
    log(f"    3D class {k + 1}: {len(idx)} particles ({100 * np.mean(names[idx] == REFINED_STATE):.0f}% "
        f"{REFINED_STATE}), max. {sizes['max_iter']} iterations")

    def after(r, it):
        log(f"    iteration {it.iteration}: resolution {it.resolution_A:.1f} Å, HEALPix order {it.healpix_order}, "
            f"mean angular change {it.mean_angle_change_deg:.1f}° ({it.time_s:.1f} s)"
            + (" (final)" if it.final else ""))

    with rec.timed("refine"):
        r = refine(stack, reference, ini_high_A=60, healpix_order=1, offset_range_px=3, offset_step_px=1,
                   max_iter=sizes["max_iter"], local_healpix_order=3, max_healpix_order=3, seed=seed,
                   out_dir=make_folder(folder), progress=False, callback=after)
    truth = sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()[idx]
    err = float(np.mean(angular_distance(r.eulers, truth)))
    return {"state": REFINED_STATE, "particles": int(len(idx)), "resolution_A": round(r.postprocess.resolution_A, 2),
            "bfactor_A2": round(r.postprocess.bfactor_A2, 1), "mask": "soft sphere",
            "angles": f"auto-refine of 3D class {k + 1} from {REFINED_STATE} low-passed to 60 Å",
            "half_map_resolution_A": round(float(r.resolution_A), 2),
            "mean_angular_error_deg": round(err, 2), "fine_angular_step_deg": round(r.fine_step_deg(), 2),
            "iterations": r.iteration, "converged": bool(r.converged)}


def _state_maps(stack, truth, state, folder: Path, px, seed, rec) -> dict:
    """Half maps of one state from random halves, post-processed; returns a summary row."""
    import numpy as np
    from ..io import write_mrc
    from ..reconstruction import reconstruct_stack
    from ..validation import postprocess, random_halves, soft_sphere_mask, write_postprocess
    idx = np.flatnonzero(truth["class_name"].to_numpy() == state)
    halves = random_halves(len(idx), seed=seed)
    with rec.timed("reconstruct"):
        h1, h2 = (reconstruct_stack(stack.subset(idx[halves == h]), ctf=True) for h in (1, 2))
    n = h1.shape[0]
    mask = soft_sphere_mask(n, 0.42 * n, edge_px=max(2.0, n / 16))
    make_folder(folder)
    for name, vol in (("half1", h1), ("half2", h2), ("mask", mask)):
        write_mrc(folder / f"{name}.mrc", vol, px)
    with rec.timed("postprocess"):
        result = postprocess(h1, h2, mask, px)
    write_postprocess(result, folder / "postprocess")
    return {"state": state, "particles": int(len(idx)), "resolution_A": round(result.resolution_A, 2),
            "bfactor_A2": round(result.bfactor_A2, 1), "mask": "soft sphere", "angles": "known"}


def run_demo(out="demo", quick: bool = False, seed: int = 0, progress: bool = True, log=print,
             argv=None) -> dict:
    """Run the demo into folder ``out``; returns the results (also in ``out/run.json``).

    Progress is one line per step and per iteration through ``log`` (no progress bars, so the
    lines do not interleave); ``progress=False`` prints nothing.
    """
    import numpy as np
    from ..io import ParticleStack
    from ..methods import class2d
    from ..provenance import RunRecord
    from ..report import directory_report
    from ..simulate import simulate_particles
    sizes = SIZES["quick" if quick else "full"]
    log = log if progress else (lambda *a: None)
    out = check_output(out, folder=True)
    t0 = time.perf_counter()
    make_folder(out)
    rec = RunRecord("demo", {"quick": quick, "states": STATES, **sizes}, argv=argv, seed=seed)
    maps, px = _maps(sizes["box"])
    log(f"1/6 simulating {sizes['n']} particles of {', '.join(STATES)} ({sizes['box']} px, {px:g} Å/px, "
        f"SNR {sizes['snr']:g})")
    with rec.timed("simulate"):
        sim = simulate_particles(maps, sizes["n"], px, fractions=list(STATES.values()), snr=sizes["snr"],
                                 seed=seed, out_dir=make_folder(out / "particles"))
    stack = ParticleStack.from_star(sim.star_path)
    log(f"2/6 2D classification: {sizes['n_class2d']} particles, K={sizes['K']}, "
        f"{sizes['iterations']} iterations")

    def after(s, result):
        s.save(out / "class2d")
        rec.add_iteration(result.iteration, result.time_s, loglik=result.loglik,
                          class_distribution=list(result.class_distribution))
        log(f"    iteration {result.iteration}: log-likelihood {result.loglik:.6g}, "
            f"mean Pmax {result.mean_pmax:.3f} ({result.time_s:.1f} s)")

    with rec.timed("class2d"):
        session = class2d(stack.subset(np.arange(sizes["n_class2d"])), K=sizes["K"],
                          iterations=sizes["iterations"], psi_step_deg=sizes["psi_step_deg"],
                          offset_range_px=sizes["offset_range_px"], ctf=True, seed=seed,
                          progress=False, callback=after)
    c3 = sizes["class3d"]
    log(f"3/6 3D classification of {' vs '.join(STATES_3D)} from the {REFERENCE_3D} map: {c3['n']} new "
        f"particles ({c3['box']} px, SNR {c3['snr']:g}), K={len(STATES_3D)}, {c3['iterations']} iterations")
    class3d, session3d, sim3d, ref3d = _class3d(out / "class3d", c3, seed, log, rec)
    log(f"4/6 gold-standard auto-refinement of the {REFINED_STATE} class from the {REFINED_STATE} map "
        f"low-pass filtered to 60 Å")
    refined = _refine_state(session3d, sim3d, ref3d, out / "states" / REFINED_STATE, sizes["refine"], seed,
                            log, rec)
    others = [s for s in STATES if s != REFINED_STATE]
    log(f"5/6 half maps of {', '.join(others)} from their particles with the true angles; gold-standard FSC")
    truth_stack = _with_truth(stack, sim.truth)
    known = {s: _state_maps(truth_stack, sim.truth, s, out / "states" / s, px, seed, rec) for s in others}
    states = [refined if s == REFINED_STATE else known[s] for s in STATES]
    rec.results = {
        "class2d": {"class_sizes": np.bincount(session.classes, minlength=sizes["K"]).tolist(),
                    "classes_vs_true_states": _classes_vs_states(session, sim.truth)},
        "states": states,
        "class3d": class3d,
    }
    rec.outputs = ["particles/", "class2d/", "states/", "class3d/", "report.html"]
    rec.write(out / "run.json")
    log("6/6 report")
    with rec.timed("report"):
        report = directory_report(out)
    rec.write(out / "run.json")
    rec.results["report"] = str(report)
    rec.results["time_s"] = round(time.perf_counter() - t0, 1)
    return rec.results


def _cmd_demo(args) -> int:
    quiet = args.quiet
    res = run_demo(args.o, quick=args.quick, seed=args.seed, progress=not quiet,
                   log=(lambda *a: None) if quiet else print, argv=args.argv)
    say(args, f"done in {res['time_s']:.0f} s. Report: {res['report']}",
        f"2D class sizes: {res['class2d']['class_sizes']}",
        *(f"state {s['state']}: {s['particles']} particles, resolution {s['resolution_A']:.1f} Å (FSC 0.143)"
          + (f"; {s['angles']}: mean angular error {s['mean_angular_error_deg']:.1f}° "
             f"(fine step {s['fine_angular_step_deg']:.1f}°), {s['iterations']} iterations"
             if "mean_angular_error_deg" in s else ", known angles")
          for s in res["states"]),
        f"3D classification {' vs '.join(STATES_3D)}: {100 * res['class3d']['accuracy']:.0f}% of the particles "
        f"in the class of their state; class sizes {res['class3d']['class_sizes']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the lecture's workflow on the embedded dataset, with a report",
                       description="Simulate a heterogeneous ribosome data set, classify it in 2D, "
                       "classify a small 80S/60S set in 3D, auto-refine the 80S class (gold-standard "
                       "FSC), reconstruct and validate the other states from the known angles, "
                       "write report.html. "
                       "Full: a few minutes on 2 cores; --quick: under a minute.")
    p.add_argument("--o", default="demo", metavar="DIR", help="output folder (default: demo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (32 px, 300 particles) for tests")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--j", type=int, default=None, help="number of CPU cores (worker processes on Linux)")
    add_common(p)
    p.set_defaults(func=_cmd_demo)
