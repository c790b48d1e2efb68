"""``cryolab variability``: continuous heterogeneity of particles with poses (linear variability by EM).

``cryolab variability --i Refine3D/run_data.star --o Variability/ --K 3 --filter 30`` writes
``variability_mean.mrc``, ``variability_component001.mrc`` ... (unit-norm eigenvolumes),
``variability.npz`` (coordinates, their posterior covariances, variances), ``variability.json``,
``variability_particles.star`` (the particles with ``rlnVariabilityComponent1`` ...),
``maps_component001.mrcs`` (``--maps`` maps along each component, -2 .. +2 SD),
``free_energy.star`` (``-kT ln p`` of each coordinate with bootstrap errors) and ``leaks.star``
(each coordinate's ``|r|`` with pose, origin, defocus and image norm; flagged ones are printed).
``--diffusion``: also one diffusion-map coordinate per particle (``rlnDiffusionCoordinate``).
See :mod:`cryolab.methods.variability`.
"""
from __future__ import annotations

from .common import (add_common, check_gpu, check_output, load_particles, make_folder, positive_float, positive_int,
                     provenance_name, record, say)


def _cmd_variability(args) -> int:
    import numpy as np
    import pandas as pd

    from ..io import write_mrc, write_star
    from ..methods.variability import (diffusion_coordinates, fit_variability, free_energy, latent_leaks,
                                       nuisance_table)
    from ..masks import read_mask
    stack = load_particles(args.i)
    check_gpu(args)
    out = check_output(args.o, folder=True)
    mask = "auto"
    if args.solvent_mask:
        mask = read_mask(args.solvent_mask, stack.box_size, stack.pixel_size_A)
    make_folder(out)
    backend = "cupy" if args.gpu else None
    rec = record("variability", args, [args.i], backend=backend)
    with rec.timed("em"):
        res = fit_variability(stack, n_components=args.K, filter_A=args.filter, regularisation=args.regularisation,
                              max_iter=args.iter, mask=mask, seed=args.seed, backend=backend, ctf=not args.no_ctf)
    table = stack.table.copy()
    if args.diffusion:
        with rec.timed("diffusion"):
            dm = diffusion_coordinates(stack, filter_A=args.filter, n_views=args.diffusion_views)
        table["rlnDiffusionCoordinate"] = dm.coordinate
    res.save(out, stack=stack.with_table(table))
    written = [p.name for p in sorted(out.glob("variability*"))]
    for k in range(res.n_components):
        _, maps = res.maps_along(k, args.maps)
        write_mrc(out / f"maps_component{k + 1:03d}.mrcs", maps.reshape(-1, *maps.shape[2:]), res.pixel_size_A)
        written.append(f"maps_component{k + 1:03d}.mrcs")
    blocks = {}
    for k in range(res.n_components):
        prof = free_energy(res.z[:, k], n_boot=args.n_boot, seed=args.seed)
        blocks[f"component{k + 1}"] = pd.DataFrame({"rlnVariabilityCoordinate": prof.s, "rlnFreeEnergyKT": prof.G,
                                                    "rlnFreeEnergyErrorKT": prof.G_err})
    write_star(out / "free_energy.star", blocks)
    leaks = latent_leaks(res.z, nuisance_table(stack), threshold=args.leak_threshold)
    write_star(out / "leaks.star", {"general": {"cryolabLeakThreshold": float(args.leak_threshold)},
                                    "leaks": leaks.reset_index(names="coordinate")})
    written += ["free_energy.star", "leaks.star"]
    rec.results = {"particles": len(stack), "components": res.n_components, "variance": res.variance.tolist(),
                   "iterations": len(res.history), "flagged_leaks": [list(f) for f in leaks.attrs["flagged"]]}
    rec.outputs = written
    rec.write(provenance_name(out, "variability"))
    flagged = leaks.attrs["flagged"]
    say(args, f"{res.n_components} components of {len(stack)} particles ({len(res.history)} EM iterations, filter "
              f"{args.filter:g} A) -> {out}",
        "variances: " + ", ".join(f"{v:.3g}" for v in res.variance),
        "leaks: none above |r| {:g}".format(args.leak_threshold) if not flagged else
        "LEAKS (a coordinate follows the imaging, not the structure): "
        + ", ".join(f"{k} ~ {v} |r| {r:.2f}" for k, v, r in flagged))
    return 0


def register(sub) -> None:
    p = sub.add_parser("variability", help="continuous heterogeneity: eigenvolumes and per-particle coordinates",
                       description="Fit a mean map and K components to particles at their consensus poses by EM "
                       "(3D variability analysis); write the eigenvolumes, coordinates, maps along each component, "
                       "free-energy profiles and the leak detector's table.")
    p.add_argument("--i", required=True, metavar="STAR", help="particles with refined poses (e.g. run_data.star)")
    p.add_argument("--o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--K", type=positive_int, default=3, help="number of components (default 3)")
    p.add_argument("--filter", type=positive_float, default=30.0, metavar="ANGSTROM",
                   help="resolution of the filter: only frequencies up to it are used (default 30)")
    p.add_argument("--regularisation", type=positive_float, default=0.1,
                   help="ridge on the components, relative to the data weight per shell (default 0.1)")
    p.add_argument("--iter", type=positive_int, default=40, help="EM iterations at most (default 40)")
    p.add_argument("--solvent_mask", metavar="MRC", help="where the map may vary (default: from the mean map)")
    p.add_argument("--no_ctf", action="store_true", help="ignore the CTF (a leak: for tests and teaching)")
    p.add_argument("--maps", type=positive_int, default=5, help="maps along each component (default 5)")
    p.add_argument("--n_boot", type=positive_int, default=100, help="bootstrap resamples of the profiles (default 100)")
    p.add_argument("--leak_threshold", type=positive_float, default=0.2, help="flag |r| above this (default 0.2)")
    p.add_argument("--diffusion", action="store_true", help="also a diffusion-map coordinate per particle")
    p.add_argument("--diffusion_views", type=positive_int, default=12,
                   help="viewing directions the diffusion maps are made in and aligned across (default 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--gpu", action="store_true", help="run the EM on the GPU (CuPy)")
    add_common(p)
    p.set_defaults(func=_cmd_variability)
