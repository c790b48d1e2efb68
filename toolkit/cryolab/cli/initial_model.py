"""``cryolab initial_model``: initial 3D models from the particles alone (RELION's
``relion_refine --denovo_3dref --sgd``).

``cryolab initial_model --i particles.star --o InitialModel/ --K 1 --sym C1 --particle_diameter 320``
writes the centred maps ``run_class001.mrc`` ... (the hand is undetermined; with ``--sym`` other
than C1 the mini-batches run in C1 and the maps are turned onto the group's axes and
symmetrised, as ``relion_align_symmetry``), every
``--sgd_write_iter`` iterations and at the end the maps, ``run_itNNN_data.star`` and
``run_itNNN_model.star`` with a checkpoint (``--continue`` picks it up), and ``run.json`` (what ran).
"""
from __future__ import annotations

import argparse

from .common import (add_common, check_output, load_particles, make_folder, positive_float, positive_int,
                     provenance_name, record, say)


def _cmd_initial_model(args) -> int:
    from ..geometry import is_c1
    from ..io import write_mrc
    from ..methods.initial_model import InitialModel, SGDSchedule
    out = check_output(args.o, folder=True)
    if args.continue_from:
        im = InitialModel.resume(args.continue_from, prefix=args.prefix)
        stack = im.particles
    else:
        if not args.i:
            from ..errors import CryolabInputError
            raise CryolabInputError("give the particles (--i particles.star) or --continue DIR", field="--i")
        stack = load_particles(args.i)
        schedule = SGDSchedule(ini_iter=args.sgd_ini_iter, inbetween_iter=args.sgd_inbetween_iter,
                               fin_iter=args.sgd_fin_iter, ini_resol_A=args.sgd_ini_resol,
                               fin_resol_A=args.sgd_fin_resol, ini_subset=args.sgd_ini_subset,
                               fin_subset=args.sgd_fin_subset, ini_stepsize=args.sgd_stepsize,
                               fin_stepsize=args.sgd_fin_stepsize, sigma2fudge_ini=args.sgd_sigma2fudge_initial,
                               sigma2fudge_halflife=args.sgd_sigma2fudge_halflife,
                               subset_per_class=args.subset_per_class)
        # every input is checked (subset sizes, resolutions, symmetry) before the folder exists
        im = InitialModel(stack, args.K, schedule=schedule, sym=args.sym, particle_diameter_A=args.particle_diameter,
                          healpix_order=args.healpix_order, offset_range_px=args.offset_range,
                          offset_step_px=args.offset_step, tau2_fudge=args.tau2_fudge, ctf=args.ctf,
                          seed=args.random_seed, flatten_solvent=args.flatten_solvent, nonnegative=args.nonnegative,
                          n_starts=args.n_starts)
    make_folder(out)
    rec = record("initial_model", args, [args.continue_from or args.i])

    def write_every(im_, it):
        if args.sgd_write_iter and it.iteration % args.sgd_write_iter == 0 and not im_.finished:
            im_.save(out, args.prefix)

    with rec.timed("initial model"):
        im.run(progress=not args.quiet, callback=write_every)
    im.save(out, args.prefix)
    names = []
    for k, m in enumerate(im.maps(centred=True)):
        name = f"{args.prefix}_class{k + 1:03d}.mrc"
        write_mrc(out / name, m, stack.pixel_size_A)
        names.append(name)
    last = im.history[-1]
    rec.results = {"particles": len(stack), "K": im.K, "iterations": im.iteration,
                   "class_distribution": list(last.class_distribution), "final_resolution_A": last.resolution_A,
                   "hand": "undetermined (a map and its mirror image fit the images equally)", "sym": im.sym,
                   "starts": [{"seed": sc.seed, "loglik": sc.loglik, "mean_pmax": sc.mean_pmax} for sc in im.start_scores],
                   "start_seed": im.seed}
    if not is_c1(im.sym):
        rec.results["symmetry_alignment"] = [
            {"eulers_deg": list(a.eulers_deg), "cc_symmetry_mates": a.cc, "cc_symmetry_mates_before": a.cc_before}
            for a in im.symmetry()]
    rec.outputs = names
    rec.write(provenance_name(out, args.prefix))
    say(args, f"initial model{'s' if im.K > 1 else ''} from {len(stack)} particles, {im.iteration} mini-batches "
        f"-> {out}", *[f"class {k + 1}: {name} ({d:.0%} of the particles)"
                       for k, (name, d) in enumerate(zip(names, last.class_distribution))],
        "the hand is undetermined: check it against a map of known hand or an atomic model")
    return 0


def register(sub) -> None:
    from ..methods.initial_model.schedule import SGDSchedule
    default = SGDSchedule()
    p = sub.add_parser("initial_model", help="initial 3D models from the particles alone (ab initio)",
                       description="K initial maps from particles only: stochastic EM on mini-batches from "
                       "coarse to fine resolution, each class starting from a featureless blob "
                       "(relion_refine --denovo_3dref --sgd). The maps are centred; their hand is undetermined.")
    p.add_argument("--i", metavar="STAR", help="particles (no angles needed)")
    p.add_argument("--o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--continue", dest="continue_from", metavar="DIR",
                   help="continue the run whose checkpoint is in this folder (the last one written; its particles, "
                   "K, symmetry and schedule are the checkpoint's)")
    p.add_argument("--prefix", default="run", help="file name prefix (default run)")
    p.add_argument("--K", type=positive_int, default=1, help="number of initial models (classes), default 1")
    p.add_argument("--sym", default="C1", help="point group (C1, Cn, Dn, T, O, I), default C1; imposed on the "
                   "final maps once turned onto its axes (the mini-batches run in C1)")
    p.add_argument("--particle_diameter", type=positive_float, help="mask diameter, Angstrom (default 90 %% of the box)")
    p.add_argument("--sgd_ini_iter", type=int, default=default.ini_iter,
                   help=f"iterations at the initial resolution (default {default.ini_iter}, as RELION)")
    p.add_argument("--sgd_inbetween_iter", type=int, default=30,
                   help="iterations moving to the final resolution and subset size (default 30)")
    p.add_argument("--sgd_fin_iter", type=int, default=10, help="iterations at the final values (default 10)")
    p.add_argument("--sgd_ini_resol", type=positive_float, default=35.0, help="initial resolution, A (default 35)")
    p.add_argument("--sgd_fin_resol", type=positive_float, default=15.0, help="final resolution, A (default 15)")
    p.add_argument("--sgd_ini_subset", type=positive_int, default=100, help="initial mini-batch size (default 100)")
    p.add_argument("--sgd_fin_subset", type=positive_int, default=500, help="final mini-batch size (default 500)")
    p.add_argument("--subset_per_class", action=argparse.BooleanOptionalAction, default=True,
                   help="with --K > 1, the mini-batch sizes are per class: K x the subset size (default on; "
                   "--no-subset_per_class: RELION's meaning, the whole mini-batch)")
    p.add_argument("--sgd_stepsize", type=positive_float, default=0.5,
                   help="share of the running sums each mini-batch replaces at first (default 0.5)")
    p.add_argument("--sgd_fin_stepsize", type=positive_float, default=0.5, help="... and at the end (default 0.5)")
    p.add_argument("--sgd_sigma2fudge_initial", "--sgd_sigma2fudge_ini", dest="sgd_sigma2fudge_initial", type=float,
                   default=default.sigma2fudge_ini, help="factor on the noise variance at the start of the "
                   f"annealing (default {default.sigma2fudge_ini:g}; used when the half-life is > 0)")
    p.add_argument("--sgd_sigma2fudge_halflife", type=float, default=default.sigma2fudge_halflife,
                   help="particles after which the noise-variance factor is halfway back to 1 "
                   f"(default {default.sigma2fudge_halflife:g}; <= 0: no annealing)")
    p.add_argument("--sgd_write_iter", type=int, default=10,
                   help="write maps and a checkpoint every this many iterations (default 10; 0: only at the end)")
    p.add_argument("--healpix_order", type=positive_int, default=2, help="angular sampling (default 2: 15 deg, "
                   "7.5 deg in the fine pass once the resolution needs it)")
    p.add_argument("--offset_range", type=positive_float, default=3.0, help="offset search range, pixels (default 3)")
    p.add_argument("--offset_step", type=positive_float, default=1.0, help="offset step, pixels (default 1)")
    p.add_argument("--tau2_fudge", type=positive_float, default=4.0, help="regularisation parameter T (default 4)")
    p.add_argument("--ctf", action="store_true", help="correct for the CTF (as relion_refine --ctf)")
    p.add_argument("--random_seed", type=int, default=0, help="seed of the mini-batches and starting maps")
    p.add_argument("--n_starts", type=positive_int, default=3,
                   help="independent starts of the first phase (--sgd_ini_iter mini-batches each); the most "
                   "likely one continues (default 3; 1: a single run)")
    p.add_argument("--flatten_solvent", action=argparse.BooleanOptionalAction, default=True,
                   help="set the maps to zero outside a sphere of the particle diameter after every mini-batch "
                   "(default on; RELION's --flatten_solvent --zero_mask)")
    p.add_argument("--nonnegative", action=argparse.BooleanOptionalAction, default=True,
                   help="set negative density to zero after every mini-batch (default on: without it the run "
                   "often ends in a wrong map)")
    add_common(p)
    p.set_defaults(func=_cmd_initial_model)
