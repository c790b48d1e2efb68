"""Processing sub-commands of the ``cryolab`` CLI: shared helpers, ``class2d``, ``class3d``, ``select``,
``report``.

Every command validates all inputs before it creates any output (bad input: exit 2, nothing
written), then writes RELION-named files and a provenance record (``run.json``, see
:mod:`cryolab.provenance`). Map commands live in :mod:`cryolab.commands_maps`, the demo in
:mod:`cryolab.commands_demo`. Nothing here computes: the library does.
"""
from __future__ import annotations

import argparse
import re
from functools import partial
from pathlib import Path

from .errors import CryolabInputError

# --------------------------------------------------------------------------- argument types


def _number(kind, low=None, strict=True, text=""):
    def parse(value):
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {text or kind.__name__}") from None
        if low is not None and (v <= low if strict else v < low):
            raise argparse.ArgumentTypeError(f"{value!r} must be {'>' if strict else '>='} {low}")
        return v
    return parse


positive_int = _number(int, 0, text="an integer")
nonneg_int = _number(int, 0, strict=False, text="an integer")
positive_float = _number(float, 0.0, text="a number")
nonneg_float = _number(float, 0.0, strict=False, text="a number")


def int_list(value: str) -> list[int]:
    """``"1,3"`` -> ``[1, 3]`` (class numbers, 1-based)."""
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of integers") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: class numbers start at 1")
    return out


# --------------------------------------------------------------------------- shared helpers

def say(args, *lines) -> None:
    """Print unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        for line in lines:
            print(line, flush=True)


def require_input(path, what: str = "input file") -> Path:
    """The path of an existing input file, else a CryolabInputError (exit 2)."""
    from .io._files import require_file
    return require_file(path, what)


def check_output(path, folder: bool = False) -> Path:
    """Check (without creating anything) that ``path`` can be written: its parent is, or can
    become, a folder. ``folder=True``: ``path`` itself is the output folder."""
    p = Path(path)
    target = p if folder else p.parent
    for q in [target, *target.parents]:
        if q.exists():
            if not q.is_dir():
                raise CryolabInputError("cannot create the output folder: a file is in the way", path=q)
            break
    if not folder and p.is_dir():
        raise CryolabInputError("output file is an existing folder", path=p)
    return p


_CREATED: list[Path] = []


def make_folder(path) -> Path:
    """Create an output folder (after validation); remembers the top folder it created."""
    p = Path(path)
    new = [q for q in [p, *p.parents] if not q.exists()]
    p.mkdir(parents=True, exist_ok=True)
    if new:
        _CREATED.append(new[-1])
    return p


def forget_created() -> None:
    """Start of a command: folders made by earlier commands are never removed."""
    _CREATED.clear()


def remove_created() -> None:
    """Remove the folders this command created (after bad input found late: no partial output)."""
    import shutil
    while _CREATED:
        shutil.rmtree(_CREATED.pop(), ignore_errors=True)


def record(command: str, args, inputs=(), backend: str = "numpy"):
    """A :class:`cryolab.provenance.RunRecord` of the parsed arguments."""
    from .provenance import RunRecord
    params = {k: v for k, v in vars(args).items() if k not in ("func", "command", "argv")}
    return RunRecord(command, params, inputs=inputs, argv=getattr(args, "argv", None),
                     seed=params.get("seed"), backend=backend)


def add_common(p) -> None:
    p.add_argument("--quiet", action="store_true", help="print only errors")


def load_particles(path):
    """A ParticleStack from a STAR file (CryolabInputError for a bad file or missing images)."""
    from .io import ParticleStack
    require_input(path, "STAR file")
    return ParticleStack.from_star(path)


# --------------------------------------------------------------------------- class2d, class3d

#: (flag, Settings field, type, default, help) of the classification commands, in relion_refine's
#: names. A default given as ``{command: value}`` differs between the commands; a command missing
#: from that dict has no such flag.
_CLASSIFY_TABLE = [
    ("--K", "K", positive_int, {"class2d": 10, "class3d": 2}, "number of classes"),
    ("--iter", "n_iter", nonneg_int, {"class2d": 25, "class3d": 25},
     "number of iterations (total, also with --continue)"),
    ("--tau2_fudge", "tau2_fudge", positive_float, {"class2d": 2.0, "class3d": 4.0},
     "regularisation parameter T (> 1 puts more weight on the data)"),
    ("--particle_diameter", "particle_diameter_A", positive_float, None,
     "diameter of the circular mask, in Angstrom (default: 90%% of the box)"),
    ("--psi_step", "psi_step_deg", positive_float, {"class2d": 10.0}, "in-plane angular step, in degrees"),
    ("--healpix_order", "healpix_order", nonneg_int, {"class3d": 2, "refine": 2},
     "angular sampling: HEALPix order N, a step of 60/2^N degrees (2: 15 degrees)"),
    ("--sym", "sym", str, {"class3d": "C1", "refine": "C1"},
     "point-group symmetry of the maps (Cn, Dn, T, O, I)"),
    ("--offset_range", "offset_range_px", nonneg_float, 5.0, "offset search range, in pixels"),
    ("--offset_step", "offset_step_px", positive_float, 1.0, "offset search step, in pixels"),
    ("--oversampling", "oversampling", nonneg_int, 1, "adaptive oversampling order (0: off)"),
    ("--ini_high", "ini_high_A", positive_float, {"class2d": None, "class3d": 60.0, "refine": 60.0},
     "low-pass the initial references to this resolution, in Angstrom"),
    ("--strict_highres_exp", "resolution_limit_A", positive_float, None,
     "never use data beyond this resolution, in Angstrom"),
    ("--auto_local_healpix_order", "local_healpix_order", nonneg_int, {"refine": 4},
     "search locally (Gaussian prior around each particle's angles) from this HEALPix order on"),
    ("--max_iter", "max_iter", positive_int, {"refine": 25}, "stop after this many iterations if not converged"),
    ("--seed", "seed", int, 0, "random seed (same seed, same result; also the random halves)"),
    ("--batch_size", "batch_size", positive_int, 64, "particles per E-step batch, at most (memory)"),
    ("--memory_limit", "memory_limit_GB", positive_float, None,
     "memory for one E-step batch, in GB; batches shrink to fit (default: half the free GPU "
     "memory or a quarter of the RAM)"),
    ("--scheduler", "scheduler", str, None, "run E-steps on a dask cluster: local:N (N local workers) "
     "or a scheduler address tcp://host:port"),
]


def _flags_of(kind: str) -> list:
    out = []
    for flag, name, typ, default, text in _CLASSIFY_TABLE:
        if isinstance(default, dict):
            if kind not in default:
                continue
            default = default[kind]
        out.append((flag, name, typ, default, text))
    return out


#: ``{command: [(flag, Settings field, type, default, help), ...]}``
CLASSIFY_FLAGS = {kind: _flags_of(kind) for kind in ("class2d", "class3d", "refine")}
CLASS2D_FLAGS = CLASSIFY_FLAGS["class2d"]
CLASS3D_FLAGS = CLASSIFY_FLAGS["class3d"]

_UNITS = {"_A": "ANGSTROM", "_deg": "DEGREES", "_px": "PIXELS"}


def classify_command(kind: str, settings, star, out: str, ref=None) -> str:
    """The ``cryolab class2d|class3d`` command line that runs ``settings`` on ``star``
    (``ref``: the reference map of ``class3d``)."""
    import shlex
    from dataclasses import asdict
    s = asdict(settings)
    parts = ["cryolab", kind, "--i", str(star)]
    if kind == "class3d":
        parts += ["--ref", str(ref or "reference.mrc")]
    parts += ["--o", out]
    for flag, name, _, default, _ in CLASSIFY_FLAGS[kind]:
        if s.get(name) is not None and s[name] != default:
            parts += [flag, str(s[name])]
    if s.get("mode", "map") != "map":
        parts += ["--mode", s["mode"]]
    if s.get("ctf"):
        parts.append("--ctf")
    if s.get("backend") == "cupy":
        parts.append("--gpu")
    return shlex.join(parts)


def class2d_command(settings, star, out: str = "Class2D/run") -> str:
    """The ``cryolab class2d`` command line that runs ``settings`` on ``star``."""
    return classify_command("class2d", settings, star, out)


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


def _reference_map(path, stack):
    """The ``--ref`` map of class3d, checked against the particles (box size, pixel size)."""
    from .commands_maps import read_map
    vol, px = read_map(path, what="reference map", default_px=stack.pixel_size_A)
    if vol.shape[0] != stack.box_size:
        raise CryolabInputError(f"the reference box ({vol.shape[0]} px) differs from the particles' "
                                f"({stack.box_size} px): resample the map first", path=path, field="--ref")
    if abs(px - stack.pixel_size_A) > 0.01 * stack.pixel_size_A:
        print(f"warning: the reference's pixel size ({px:g} A) differs from the particles' "
              f"({stack.pixel_size_A:g} A); it is used on the particles' grid as it is")
    return vol


def _class_files(kind: str, K: int) -> list[str]:
    return ["classes.mrcs"] if kind == "class2d" else [f"class{k + 1:03d}.mrc" for k in range(K)]


def _cmd_classify(args, kind: str) -> int:
    """``cryolab class2d`` and ``cryolab class3d``: validate, then run and save every iteration."""
    from dataclasses import asdict

    from .session import Settings
    out = check_output(args.o)
    folder, prefix = out.parent, out.name
    kw = {name: getattr(args, flag[2:]) for flag, name, *_ in CLASSIFY_FLAGS[kind]}
    kw.update(mode=args.mode, ctf=args.ctf, backend="cupy" if args.gpu else "numpy")
    if args.gpu:
        from .backend import cupy_available
        if not cupy_available():
            raise CryolabInputError("--gpu: no GPU available (CuPy missing or no device)")
    dim = 2 if kind == "class2d" else 3
    if getattr(args, "continue_from", None):
        from .session import Session
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
            from .geometry import symmetry_operators
            symmetry_operators(args.sym)
            reference = _reference_map(args.ref, stack)
            inputs.insert(1, args.ref)
    if not args.ctf and session is None and not args.quiet:
        print("note: no CTF correction (add --ctf to correct for the CTF, as relion_refine)")
    make_folder(folder)
    rec = record(kind, args, inputs, backend=session.settings.backend if session else kw["backend"])
    run_json = _provenance_name(folder, prefix)

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
        from . import methods
        kw.pop("n_iter")
        start = methods.class2d if dim == 2 else partial(methods.class3d, reference=reference)
        session = start(stack, iterations=args.iter, progress=progress, callback=after, **kw)
    else:
        session.run(max(args.iter - session.iteration, 0), callback=after, progress=progress)
    if not session.history:
        session.save(folder, prefix)
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

    from .session import Settings
    out = check_output(args.o)
    folder, prefix = out.parent, out.name
    kw = {name: getattr(args, flag[2:]) for flag, name, *_ in CLASSIFY_FLAGS["refine"]}
    kw.update(ctf=args.ctf, backend="cupy" if args.gpu else "numpy")
    if args.gpu:
        from .backend import cupy_available
        if not cupy_available():
            raise CryolabInputError("--gpu: no GPU available (CuPy missing or no device)")
    resumed = None
    if getattr(args, "continue_from", None):
        from .methods.refine import AutoRefine
        ck_dir, ck_prefix, ck_it = _continue_point(args.continue_from)
        resumed = AutoRefine.resume(ck_dir, ck_it, ck_prefix, changes=_runtime_changes(args))
        inputs = [args.continue_from]
    else:
        if args.i is None or args.ref is None:
            raise CryolabInputError("--i particles.star and --ref map.mrc are required (or --continue)")
        stack = load_particles(args.i)
        Settings(**{k: v for k, v in kw.items() if k in {f.name for f in fields(Settings)}})  # validates
        from .geometry import symmetry_operators
        symmetry_operators(args.sym)
        reference = _reference_map(args.ref, stack)
        inputs = [args.i, args.ref, *map(str, stack.stack_paths)]
        if not args.ctf and not args.quiet:
            print("note: no CTF correction (add --ctf to correct for the CTF, as relion_refine)")
    make_folder(folder)
    rec = record("refine", args, inputs, backend=resumed.settings.backend if resumed else kw["backend"])
    run_json = _provenance_name(folder, prefix)

    def after(r, it):
        rec.add_iteration(it.iteration, it.time_s, resolution_A=it.resolution_A, healpix_order=it.healpix_order,
                          sigma_ang_deg=it.sigma_ang_deg, mean_angle_change_deg=it.mean_angle_change_deg)
        rec.write(run_json)
        say(args, f"iteration {it.iteration:3d}: resolution {it.resolution_A:.2f} A, HEALPix order "
                  f"{it.healpix_order}{' (local)' if it.sigma_ang_deg else ''}, angular change "
                  f"{it.mean_angle_change_deg:.2f} deg, {it.time_s:.1f} s")

    if resumed is None:
        from . import methods
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


def _provenance_name(folder, prefix):
    from .provenance import provenance_path
    return provenance_path(folder, prefix)


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
    rec.write(_provenance_name(out.parent, out.stem))
    say(args, f"selected {keep.size} of {len(stack)} particles (classes {args.classes}) -> {out}")
    return 0


# --------------------------------------------------------------------------- report

def _cmd_report(args) -> int:
    from .report import directory_report
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
    for flag, name, typ, default, text in CLASSIFY_FLAGS[kind]:
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
    p.add_argument("--j", type=positive_int, default=None, help="number of CPU threads")
    p.add_argument("--gpu", action="store_true", help="run on the GPU (CuPy)")
    add_common(p)
    p.set_defaults(func=partial(_cmd_classify, kind=kind))


def register(sub) -> None:
    """Add every processing command to the ``cryolab`` sub-parsers."""
    from . import commands_demo, commands_maps
    for kind in CLASSIFY_FLAGS:
        _register_classify(sub, kind)
    commands_maps.register(sub)
    p = sub.add_parser("select", help="keep the particles of some classes",
                       description="Write the particles of the given classes to a new STAR file "
                       "(image paths made relative to its folder).")
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
    commands_demo.register(sub)
