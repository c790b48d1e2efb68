"""``cryolab multibody`` (RELION's ``relion_refine --multibody_masks``) and ``cryolab flex_analyse``
(``relion_flex_analyse``): refine rigid bodies of a consensus refinement, then analyse how they move.

``cryolab multibody --i Refine3D/run_data.star --ref Refine3D/run_class001.mrc --half1
Refine3D/run_half1_class001_unfil.mrc --half2 ... --multibody_masks bodies.star --o MultiBody/``
writes per body ``run_body001.mrc``, half maps, ``run_body001_data.star`` (its poses) and
``run_bodies.json`` (resolution, FSC); ``cryolab flex_analyse --i MultiBody/ --o MultiBody/analyse
--k 3`` writes the principal components of the body motions (``analyse_components.json`` with
each component read as an axis and an angle), per-particle scores
(``analyse_projections_along_eigenvectors_all_particles.txt``), maps along the components
(``analyse_component001_bin001.mrc`` ...) and, with ``--select_eigenvalue``, a particle subset.
"""
from __future__ import annotations

from ..engine.threads import pool_size
from ..errors import CryolabInputError
from .common import (add_common, check_output, load_particles, make_folder, positive_float, positive_int,
                     provenance_name, record, reference_map, require_input, say)


def _cmd_multibody(args) -> int:
    from ..methods.multibody import MultiBodyRefine, read_bodies
    stack = load_particles(args.i)
    if stack.eulers() is None:
        raise CryolabInputError("multi-body refinement starts from a consensus refinement: no angles",
                                path=args.i, field="_rlnAngleRot")
    ref = reference_map(args.ref, stack)
    halves = None
    if bool(args.half1) != bool(args.half2):
        raise CryolabInputError("give both --half1 and --half2 (or neither)", field="--half1")
    if args.half1:
        halves = (reference_map(args.half1, stack, "half map 1"), reference_map(args.half2, stack, "half map 2"))
    bodies = read_bodies(require_input(args.multibody_masks, "bodies STAR file"), stack.box_size,
                         stack.pixel_size_A)
    if args.sigma_ang is not None:
        for b in bodies:
            b.sigma_angles_deg = args.sigma_ang
    out = check_output(args.o, folder=True)
    # everything is checked (masks, overlaps, poses) before the folder exists
    mb = MultiBodyRefine(stack, ref, bodies, half_maps=halves, healpix_order=args.healpix_order,
                         oversampling=args.oversampling, offset_range_px=args.offset_range,
                         offset_step_px=args.offset_step, seed=args.random_seed, scale=args.scale,
                         final_healpix_order=args.final_healpix_order,
                         consensus_iterations=args.consensus_iterations, threads=args.j or pool_size(),
                         pose_estimate=args.pose_estimate)
    make_folder(out)
    rec = record("multibody", args, [args.i, args.ref, args.multibody_masks])
    with rec.timed("refine"):
        mb.run(args.iter, progress=not args.quiet)
    mb.save(out, args.prefix)
    rec.results = {"particles": len(stack), "iterations": mb.iteration, "converged": bool(mb.converged),
                   "resolution_A": [float(r) for r in mb.resolution_A],
                   "signal_share": [float(s) for s in mb.signal_share]}
    rec.outputs = [f"{args.prefix}_body{b + 1:03d}.mrc" for b in range(len(bodies))]
    rec.write(provenance_name(out, args.prefix))
    say(args, f"multi-body refinement of {len(stack)} particles, {len(bodies)} bodies, {mb.iteration} iterations"
        f" -> {out}", *[f"body {b + 1}: {r:.1f} A" for b, r in enumerate(mb.resolution_A)])
    return 0


def _cmd_flex_analyse(args) -> int:
    import numpy as np

    from ..io import write_mrc
    from ..io._files import atomic_path
    from ..methods.multibody.motion import body_motions, component_maps, motion_pca, select_by_component
    from ..methods.multibody.result import MultiBodyResult
    from ..session.files import write_json
    res = MultiBodyResult.load(args.i, args.prefix)
    pca = motion_pca(body_motions(res))
    k = min(args.k, pca.components.shape[0])
    if args.select_eigenvalue is not None and not 1 <= args.select_eigenvalue <= k:
        raise CryolabInputError(f"--select_eigenvalue must be between 1 and --k ({k})", field="--select_eigenvalue")
    out = check_output(args.o, folder=True)
    make_folder(out)
    rec = record("flex_analyse", args, [args.i])
    names = []
    summary = {"variance": pca.variance.tolist(), "variance_fraction": pca.variance_fraction.tolist(),
               "components": [{"vector": pca.components[j].tolist(), "bodies": pca.describe(j)} for j in range(k)]}
    path = out / "analyse_components.json"
    write_json(path, summary)
    names.append(path.name)
    scores = out / "analyse_projections_along_eigenvectors_all_particles.txt"
    with atomic_path(scores) as tmp:
        np.savetxt(tmp, pca.scores[:, :k], fmt="%.6g", header=" ".join(f"component{j + 1}" for j in range(k)))
    names.append(scores.name)
    if args.do_maps:
        for j in range(min(k, args.maps_components)):
            maps, _ = component_maps(res, pca, j, args.bins)
            for i, m in enumerate(maps):
                p = out / f"analyse_component{j + 1:03d}_bin{i + 1:03d}.mrc"
                write_mrc(p, m, res.pixel_size_A)
                names.append(p.name)
    if args.select_eigenvalue is not None:
        j = args.select_eigenvalue - 1
        sub = select_by_component(res.particles, pca, j, args.select_eigenvalue_min, args.select_eigenvalue_max)
        p = out / f"analyse_eval{j + 1:03d}_select.star"
        sub.write_star(p)
        names.append(p.name)
    rec.outputs = names
    rec.results = {"variance_fraction": [float(v) for v in pca.variance_fraction[:k]]}
    rec.write(provenance_name(out, "analyse"))
    say(args, f"motion analysis of {len(res.particles)} particles -> {out}",
        *[f"component {j + 1} ({100 * pca.variance_fraction[j]:.0f} % of the variance): "
          + "; ".join(d["text"].split(" (1 standard")[0] for d in pca.describe(j)) for j in range(min(k, 3))])
    return 0


def register(sub) -> None:
    p = sub.add_parser("multibody", help="multi-body refinement of a consensus refinement",
                       description="Refine rigid bodies (a RELION bodies STAR file) of a consensus refinement: "
                       "per body, images with the other bodies subtracted, local searches with a Gaussian "
                       "prior around the consensus pose, half-set maps and FSC (relion_refine --multibody_masks).")
    p.add_argument("--i", required=True, metavar="STAR", help="consensus particles with poses (run_data.star)")
    p.add_argument("--ref", required=True, metavar="MRC", help="consensus map on the data's grey scale")
    p.add_argument("--half1", metavar="MRC", help="consensus half map 1 (unfiltered; recommended)")
    p.add_argument("--half2", metavar="MRC", help="consensus half map 2")
    p.add_argument("--multibody_masks", required=True, metavar="STAR",
                   help="bodies: _rlnBodyMaskName, _rlnBodyRotateRelativeTo, _rlnBodySigmaAngles, "
                   "_rlnBodySigmaOffsetAngst")
    p.add_argument("--o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--prefix", default="run", help="file name prefix (default run)")
    p.add_argument("--iter", type=positive_int, default=8, help="at most this many iterations (default 8)")
    p.add_argument("--healpix_order", type=positive_int, default=3,
                   help="coarse angular sampling (default 3: 7.5 deg)")
    p.add_argument("--final_healpix_order", type=positive_int,
                   help="after the first iterations, each iteration searches one order finer about the body's last "
                   "pose, up to this order (default healpix_order + 2)")
    p.add_argument("--consensus_iterations", type=positive_int, default=1,
                   help="iterations that search about the consensus pose before the finer ones (default 1)")
    p.add_argument("--j", type=positive_int, default=None,
                   help="CPU cores: the (body, half-set) E-steps of an iteration run side by side, in worker processes "
                   "where the system can fork, else in threads (default: all cores BLAS may use)")
    p.add_argument("--oversampling", type=int, default=2,
                   help="adaptive oversampling orders of the fine pass (default 2: 1.875 deg, the finest step of RELION's "
                   "--healpix_order 4 --oversampling 1)")
    p.add_argument("--offset_range", type=positive_float, default=3.0, help="offset search range, pixels (default 3)")
    p.add_argument("--offset_step", type=positive_float, default=1.0, help="offset step, pixels (default 1)")
    p.add_argument("--sigma_ang", type=positive_float, help="override every body's _rlnBodySigmaAngles (deg)")
    p.add_argument("--pose_estimate", choices=("mean", "best"), default="mean",
                   help="a body's new pose: the posterior mean (default) or the most probable sample (RELION)")
    p.add_argument("--scale", type=positive_float, default=1.0, help="grey scale of the maps relative to the data")
    p.add_argument("--random_seed", type=int, default=0, help="seed of the half-set split when the file has none")
    add_common(p)
    p.set_defaults(func=_cmd_multibody)

    q = sub.add_parser("flex_analyse", help="principal components of body motions (relion_flex_analyse)",
                       description="Body motions of a multi-body run relative to each other, their principal "
                       "components read as axes and angles, per-particle scores, maps along the components and "
                       "particle selection by score.")
    q.add_argument("--i", required=True, metavar="DIR", help="folder of a cryolab multibody run")
    q.add_argument("--prefix", default="run", help="file name prefix of that run (default run)")
    q.add_argument("--o", required=True, metavar="DIR", help="output folder")
    q.add_argument("--k", type=positive_int, default=3, help="components to report (default 3)")
    q.add_argument("--do_maps", action="store_true", help="write composite maps along the components")
    q.add_argument("--maps_components", type=positive_int, default=1, help="how many components get maps (default 1)")
    q.add_argument("--bins", type=positive_int, default=5, help="bins of equal population per component (default 5)")
    q.add_argument("--select_eigenvalue", type=positive_int, help="write the particles selected on this component")
    q.add_argument("--select_eigenvalue_min", type=float, default=-float("inf"), help="lowest score kept")
    q.add_argument("--select_eigenvalue_max", type=float, default=float("inf"), help="highest score kept")
    add_common(q)
    q.set_defaults(func=_cmd_flex_analyse)
