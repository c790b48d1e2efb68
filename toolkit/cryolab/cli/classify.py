"""Processing sub-commands of the ``cryolab`` CLI: ``class2d``, ``class3d``, ``refine``, ``select``,
``report``.

Every command validates all inputs before it creates any output (bad input: exit 2, nothing
written), then writes RELION-named files and a provenance record (``run.json``, see
:mod:`cryolab.provenance`). Nothing here computes: the library does.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from ..errors import CryolabInputError
from .common import (add_common, check_gpu, check_output, classify_flags, int_list, load_particles, log,
                     make_folder, positive_int, provenance_name, record, reference_map, require_input, say,
                     solvent_mask)

CLASSIFY_COMMANDS = ("class2d", "class3d", "refine")

# --------------------------------------------------------------------------- class2d, class3d

_UNITS = {"_A": "ANGSTROM", "_deg": "DEGREES", "_px": "PIXELS"}


def _runtime_changes(args) -> dict:
    """Settings a ``--continue`` run takes from its command line rather than the checkpoint:
    where it runs (``--gpu``, ``--memory_limit``, ``--scheduler``), when given."""
    out = {"backend": "cupy"} if getattr(args, "gpu", False) else {}
    if getattr(args, "memory_limit", None) is not None:
        out["memory_limit_GB"] = args.memory_limit
    if getattr(args, "scheduler", None) is not None:
        out["scheduler"] = args.scheduler
    return out


def _continue_point(path):
    """``(folder, prefix, iteration)`` of ``prefix_itNNN_optimiser.json``."""
    p = require_input(path, "checkpoint file")
    m = re.fullmatch(r"(.+)_it(\d+)_optimiser\.json", p.name)
    if not m:
        raise CryolabInputError("expected a file named <prefix>_itNNN_optimiser.json", path=p)
    return p.parent, m.group(1), int(m.group(2))


def _class_files(kind: str, K: int) -> list[str]:
    return ["classes.mrcs"] if kind == "class2d" else [f"class{k + 1:03d}.mrc" for k in range(K)]


def _cmd_classify(args, kind: str) -> int:
    """``cryolab class2d`` and ``cryolab class3d``: validate, then run and save every iteration."""
    from dataclasses import asdict

    from ..session import Settings
    out = check_output(args.o)
    folder, prefix = out.parent, out.name
    kw = {name: getattr(args, flag[2:]) for flag, name, *_ in classify_flags(kind)}
    kw.update(mode=args.mode, ctf=args.ctf, backend="cupy" if args.gpu else None)
    check_gpu(args)
    dim = 2 if kind == "class2d" else 3
    if getattr(args, "continue_from", None):
        from ..session import Session
        ck_dir, ck_prefix, ck_it = _continue_point(args.continue_from)
        session = Session.resume(ck_dir, ck_it, ck_prefix, changes=_runtime_changes(args))
        if session.dim != dim:
            raise CryolabInputError(f"this checkpoint is a {session.dim}D run: continue it with "
                                    f"cryolab class{session.dim}d", path=args.continue_from)
        session.set(n_iter=args.iter)
        stack, inputs = session.particles, [args.continue_from]
    else:
        if args.i is None:
            raise CryolabInputError("--i particles.star is required (or --continue)")
        stack = load_particles(args.i)
        Settings(**kw)  # validates every value before anything is written
        session, inputs = None, [args.i, *map(str, stack.stack_paths)]
        if dim == 3:
            if args.ref is None:
                raise CryolabInputError("--ref map.mrc is required (or --continue)")
            from ..geometry import symmetry_operators
            symmetry_operators(args.sym)
            reference = reference_map(args.ref, stack)
            inputs.insert(1, args.ref)
            inputs += solvent_mask(args, stack)
    if not args.ctf and session is None and not args.quiet:
        log.warning("no CTF correction (add --ctf to correct for the CTF, as relion_refine)")
    make_folder(folder)
    rec = record(kind, args, inputs, backend=session.settings.backend if session else kw["backend"])
    run_json = provenance_name(folder, prefix)

    def after(s, result):
        rec.params["settings"] = asdict(s.settings)
        stem = s.save(folder, prefix)
        rec.add_iteration(result.iteration, result.time_s, loglik=result.loglik,
                          class_distribution=list(result.class_distribution),
                          mean_pmax=result.mean_pmax, changed_assignments=result.changed_assignments)
        rec.outputs = [f"{Path(stem).name}_{x}" for x in ("data.star", "model.star", "optimiser.json",
                                                           *_class_files(kind, s.settings.K))]
        rec.write(run_json)
        say(args, f"iteration {result.iteration:3d}: log-likelihood {result.loglik:.6g}, "
                  f"mean Pmax {result.mean_pmax:.3f}, changed {100 * result.changed_assignments:.1f}%, "
                  f"{result.time_s:.1f} s")

    progress = not args.quiet
    if session is None:
        from .. import methods
        kw.pop("n_iter")
        start = methods.class2d if dim == 2 else partial(methods.class3d, reference=reference)
        session = start(stack, iterations=args.iter, progress=progress, callback=after, **kw)
    else:
        session.run(max(args.iter - session.iteration, 0), callback=after, progress=progress)
    if not session.history:
        session.save(folder, prefix)
    if dim == 3 and "rlnImageOriginalName" in session.particles.table.columns:
        from .focus import write_full_maps        # focused classification of subtracted particles
        try:
            full = write_full_maps(session, folder / f"{prefix}_it{session.iteration:03d}")
            rec.outputs = list(rec.outputs) + [p.name for p in full]
        except CryolabInputError as exc:          # the run is saved: say why the full maps are missing
            log.warning("no full maps from the original images: %s", exc)
    import numpy as np
    counts = np.bincount(session.classes[session.classes >= 0], minlength=session.settings.K)
    rec.results = {"class_sizes": counts.tolist(), "iterations_run": session.iteration}
    rec.write(run_json)
    say(args, f"done: {session.iteration} iterations; class sizes {counts.tolist()}",
        f"outputs: {folder / prefix}_it{session.iteration:03d}_*  (report: cryolab report {folder})")
    return 0


def _cmd_refine(args) -> int:
    """``cryolab refine``: gold-standard auto-refinement (as relion_refine --auto_refine)."""
    from dataclasses import fields

    from ..session import Settings
    out = check_output(args.o)
    folder, prefix = out.parent, out.name
    kw = {name: getattr(args, flag[2:]) for flag, name, *_ in classify_flags("refine")}
    kw.update(ctf=args.ctf, backend="cupy" if args.gpu else None)
    check_gpu(args)
    resumed = None
    if getattr(args, "continue_from", None):
        from ..methods.refine import AutoRefine
        ck_dir, ck_prefix, ck_it = _continue_point(args.continue_from)
        resumed = AutoRefine.resume(ck_dir, ck_it, ck_prefix, changes=_runtime_changes(args))
        inputs = [args.continue_from]
    else:
        if args.i is None or args.ref is None:
            raise CryolabInputError("--i particles.star and --ref map.mrc are required (or --continue)")
        stack = load_particles(args.i)
        Settings(**{k: v for k, v in kw.items() if k in {f.name for f in fields(Settings)}})  # validates
        from ..geometry import symmetry_operators
        symmetry_operators(args.sym)
        reference = reference_map(args.ref, stack)
        inputs = [args.i, args.ref, *map(str, stack.stack_paths)]
        inputs += solvent_mask(args, stack)
        if not args.ctf and not args.quiet:
            log.warning("no CTF correction (add --ctf to correct for the CTF, as relion_refine)")
    make_folder(folder)
    rec = record("refine", args, inputs, backend=resumed.settings.backend if resumed else kw["backend"])
    run_json = provenance_name(folder, prefix)

    def after(r, it):
        rec.add_iteration(it.iteration, it.time_s, resolution_A=it.resolution_A, healpix_order=it.healpix_order,
                          sigma_ang_deg=it.sigma_ang_deg, mean_angle_change_deg=it.mean_angle_change_deg)
        rec.write(run_json)
        say(args, f"iteration {it.iteration:3d}: resolution {it.resolution_A:.2f} A, HEALPix order "
                  f"{it.healpix_order}{' (local)' if it.sigma_ang_deg else ''}, angular change "
                  f"{it.mean_angle_change_deg:.2f} deg, {it.time_s:.1f} s")

    if resumed is None:
        from .. import methods
        r = methods.refine(stack, reference, progress=not args.quiet, callback=after, out_dir=folder,
                           prefix=prefix, **kw)
    else:
        r = resumed
        r.run(kw["max_iter"], progress=not args.quiet, callback=after, out_dir=folder, prefix=prefix)
    names = [f"{prefix}_{x}" for x in ("half1_class001_unfil.mrc", "half2_class001_unfil.mrc", "class001.mrc",
                                        "data.star", "model.star")]
    rec.outputs = [n for n in names if (folder / n).exists()]
    rec.results = {"resolution_A": r.resolution_A, "converged": r.converged, "iterations_run": r.iteration,
                   "postprocess_resolution_A": r.postprocess.resolution_A if r.postprocess else None}
    rec.write(run_json)
    say(args, f"done: {r.iteration} iterations, resolution {r.resolution_A:.2f} A "
              f"({'converged' if r.converged else 'not converged'})", f"outputs: {folder / prefix}_*")
    return 0


# --------------------------------------------------------------------------- select

def _cmd_select(args) -> int:
    import numpy as np
    stack = load_particles(args.i)
    out = check_output(args.o)
    if "rlnClassNumber" not in stack.table.columns:
        raise CryolabInputError("no class assignments in this file", path=args.i, field="_rlnClassNumber")
    classes = stack.table["rlnClassNumber"].to_numpy()
    keep = np.flatnonzero(np.isin(classes, args.classes))
    if keep.size == 0:
        raise CryolabInputError(f"no particle is in classes {args.classes}", path=args.i,
                                field="_rlnClassNumber")
    make_folder(out.parent)
    rec = record("select", args, [args.i])
    stack.subset(keep).write_star(out)
    rec.outputs = [out.name]
    rec.results = {"selected": int(keep.size), "of": len(stack)}
    rec.write(provenance_name(out.parent, out.stem))
    say(args, f"selected {keep.size} of {len(stack)} particles (classes {args.classes}) -> {out}")
    return 0


# --------------------------------------------------------------------------- report

def _cmd_report(args) -> int:
    from ..report import directory_report
    folder = Path(args.dir)
    if not folder.is_dir():
        raise CryolabInputError("not a folder", path=folder)
    out = check_output(args.o or folder / "report.html")
    path = directory_report(folder, out)
    say(args, f"report: {path}")
    return 0


# --------------------------------------------------------------------------- registration

_CLASSIFY_HELP = {
    "class2d": ("reference-free 2D classification (as relion_refine, 2D)",
                "Reference-free 2D classification. Writes <o>_itNNN_data.star, _model.star, "
                "_classes.mrcs, _optimiser.json every iteration, and run.json."),
    "class3d": ("3D classification against a reference map (as relion_refine --ref, 3D)",
                "3D classification: K class maps seeded from one reference (low-pass filtered to "
                "--ini_high, each refined once on a random subset). Writes <o>_itNNN_data.star (with "
                "rlnAngleRot/Tilt/Psi), _model.star, _classNNN.mrc, _optimiser.json every iteration, "
                "and run.json."),
    "refine": ("gold-standard 3D auto-refinement (as relion_refine --auto_refine --split_random_halves)",
               "Refines random half-sets independently from one reference (low-pass filtered to --ini_high), "
               "increasing the angular sampling and switching to local searches until convergence. Writes "
               "<o>_itNNN_half1/2_class001.mrc, _data.star, _model.star every iteration, and at the end "
               "<o>_half1/2_class001_unfil.mrc, <o>_class001.mrc, <o>_data.star (with rlnRandomSubset), "
               "<o>_model.star, postprocess.mrc/.star and run.json."),
}


def _register_classify(sub, kind: str) -> None:
    text, description = _CLASSIFY_HELP[kind]
    p = sub.add_parser(kind, help=text, description=description)
    p.add_argument("--i", metavar="STAR", help="particles (RELION STAR file with images)")
    if kind != "class2d":
        p.add_argument("--ref", metavar="MRC", help="initial reference map (same box as the particles)")
    p.add_argument("--o", required=True, metavar="PREFIX", help=f"output prefix, e.g. {kind.title()}/job001/run")
    for flag, name, typ, default, text in classify_flags(kind):
        if typ is bool:
            p.add_argument(flag, action="store_true", dest=flag[2:], help=text)
            continue
        extra = ["--random_seed"] if flag == "--seed" else []
        unit = next((u for sfx, u in _UNITS.items() if name.endswith(sfx)), None)
        shown = f"{default:g}" if isinstance(default, (int, float)) else default
        p.add_argument(flag, *extra, type=typ, default=default, dest=flag[2:], metavar=unit,
                       help=text if default is None else f"{text} (default: {shown})")
    p.add_argument("--continue", dest="continue_from", metavar="OPTIMISER_JSON",
                   help="continue from <prefix>_itNNN_optimiser.json (settings from the checkpoint)")
    if kind == "refine":
        p.add_argument("--ctf", action="store_true", help="correct for the CTF (as relion_refine --ctf)")
        p.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy)")
        add_common(p)
        p.set_defaults(func=_cmd_refine)
        return
    p.add_argument("--mode", choices=("map", "ml", "maxcc"), default="map",
                   help="map: regularised likelihood (RELION); ml: white-noise maximum likelihood; "
                        "maxcc: projection matching (default: map)")
    p.add_argument("--ctf", action="store_true", help="correct for the CTF (as relion_refine --ctf)")
    p.add_argument("--j", type=positive_int, default=None,
                   help="number of CPU cores (on Linux, worker processes sharing each E-step's batches)")
    p.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy)")
    add_common(p)
    p.set_defaults(func=partial(_cmd_classify, kind=kind))


def register(sub) -> None:
    """Add ``class2d``, ``class3d``, ``refine``, ``select`` and ``report`` to the ``cryolab`` sub-parsers."""
    for kind in CLASSIFY_COMMANDS:
        _register_classify(sub, kind)
    p = sub.add_parser("select", help="keep the particles of some classes",
                       description="Write the particles of the given classes to a new STAR file "
                       "(image paths relative to the working folder, as RELION reads them).")
    p.add_argument("--i", required=True, metavar="STAR", help="a run_itNNN_data.star")
    p.add_argument("--classes", required=True, type=int_list, help="class numbers (1-based), e.g. 1,3")
    p.add_argument("--o", required=True, metavar="STAR", help="output STAR file")
    add_common(p)
    p.set_defaults(func=_cmd_select)
    p = sub.add_parser("report", help="an HTML report of a run folder",
                       description="Rebuild one self-contained HTML report from the files in DIR "
                       "(run.json, the last run_itNNN_* files, post-processing results).")
    p.add_argument("dir", metavar="DIR", help="a run folder")
    p.add_argument("--o", metavar="HTML", help="output file (default: DIR/report.html)")
    add_common(p)
    p.set_defaults(func=_cmd_report)
