"""``cryolab msa``: multivariate statistical analysis of aligned particle images (eigenimages, factor
coordinates, the Marchenko-Pastur noise edge) and, with ``--classes``, a classification on the first
factors.

``cryolab msa --i Class2D/run_it025_data.star --o MSA/run --k 10 --classes 2`` writes in ``MSA/``:
``run_eigenimages.mrcs``, ``run_mean.mrc``, ``run_mask.mrc``, ``run_eigenvalues.star``,
``run_coordinates.npz``, and with ``--classes`` ``run_data.star`` (``rlnClassNumber``) and
``run_classes.mrcs``; and ``run.json`` (provenance). Nothing is written when an input is bad.
"""
from __future__ import annotations

from ..errors import CryolabInputError
from .common import (add_common, check_gpu, check_output, load_particles, make_folder, nonneg_float, nonneg_int,
                     positive_float, positive_int, provenance_name, record, say)


def _validate(args, stack) -> None:
    n = len(stack)
    if not args.k < n:
        raise CryolabInputError(f"--k {args.k} must be below the number of particles ({n})", path=args.i, field="--k")
    if args.classes is not None:
        if not 1 <= args.classes <= n:
            raise CryolabInputError(f"--classes {args.classes} for {n} particles", field="--classes")
        if args.factors > args.k:
            raise CryolabInputError(f"--factors {args.factors} is more than the --k {args.k} computed",
                                    field="--factors")


def _cmd_msa(args) -> int:
    from ..methods.msa import msa
    out = check_output(args.o)
    folder, prefix = out.parent, out.name
    check_gpu(args)
    stack = load_particles(args.i)
    _validate(args, stack)
    backend = "cupy" if args.gpu else None
    settings = dict(mask_diameter_A=args.mask_diameter, mask_edge_px=args.mask_edge, ctf=args.ctf,
                    wiener_snr=args.wiener_snr, align=not args.no_align, centre=args.centre)
    rec = record("msa", args, [args.i, *map(str, stack.stack_paths)], backend=backend)
    with rec.timed("msa"):         # checks the mask, angles, CTF and k before it reads an image
        result = msa(stack, args.k, batch_size=args.batch_size, power_iterations=args.power_iterations,
                     noise_variance=args.sigma2, seed=args.seed, backend=backend, **settings)
    make_folder(folder)
    paths = result.save(folder, prefix)
    results = {"eigenvalues": result.eigenvalues.tolist(), "noise_variance": result.noise_variance,
               "noise_edge": result.noise_edge, "significant": result.n_significant,
               "explained_variance_ratio": result.explained_variance_ratio.tolist()}
    if args.classes is not None:
        labels = result.cluster(args.classes, factors=args.factors, method=args.cluster, seed=args.seed)
        with rec.timed("classification"):
            paths += result.write_classification(stack, labels, folder, prefix, backend=backend)
        results["class_sizes"] = [int((labels == c).sum()) for c in range(args.classes)]
    rec.outputs, rec.results = [p.name for p in paths], results
    rec.write(provenance_name(folder, prefix))
    edge = "no noise estimate" if result.noise_edge is None else \
        f"{result.n_significant} above the noise edge {result.noise_edge:.4g}"
    say(args, f"{result.k} eigenimages of {len(stack)} particles ({result.n_pixels} pixels in the mask): "
              f"eigenvalues {', '.join(f'{v:.4g}' for v in result.eigenvalues[:5])}{' ...' if result.k > 5 else ''}; "
              f"{edge}", f"wrote {', '.join(p.name for p in paths)} in {folder}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("msa", help="multivariate statistical analysis: eigenimages, factors, noise edge, classes",
                       description="Align each particle by its origin and psi, correct its CTF (phase flipping or a "
                       "Wiener filter), mask it, and compute the first --k eigenimages by a streamed randomized PCA, "
                       "each particle's factor coordinates, and how many eigenvalues lie above the Marchenko-Pastur "
                       "noise edge; with --classes, cluster the first --factors coordinates and write a "
                       "classification (<o>_data.star with rlnClassNumber, <o>_classes.mrcs).")
    p.add_argument("--i", required=True, metavar="STAR", help="particles with rlnAnglePsi (and origins)")
    p.add_argument("--o", required=True, metavar="FOLDER/PREFIX", help="output folder and file prefix, e.g. MSA/run")
    p.add_argument("--k", type=positive_int, default=10, help="eigenimages to compute (default 10)")
    p.add_argument("--mask_diameter", type=positive_float, metavar="ANGSTROM",
                   help="diameter of the soft circular mask (default: the largest that fits the box)")
    p.add_argument("--mask_edge", type=nonneg_float, default=3.0, metavar="PIXELS",
                   help="width of the mask's soft edge (default 3)")
    p.add_argument("--ctf", choices=("flip", "wiener", "none"), default="flip",
                   help="CTF correction: phase flipping (default), Wiener filter, or none")
    p.add_argument("--wiener_snr", type=positive_float, default=1.0,
                   help="SNR of the Wiener filter CTF / (CTF^2 + 1/SNR) (default 1)")
    p.add_argument("--no_align", action="store_true", help="use the images as they are (no origin shift, no psi)")
    p.add_argument("--centre", choices=("ctf", "plain"), default="ctf",
                   help="centre each image on its own CTF's view of the CTF-corrected mean (default), or on the "
                        "plain mean (a defocus spread is then variance of its own)")
    p.add_argument("--classes", type=positive_int, metavar="K", help="cluster the particles into K classes")
    p.add_argument("--cluster", choices=("kmeans", "ward"), default="kmeans",
                   help="clustering of the factor coordinates (default kmeans)")
    p.add_argument("--factors", type=positive_int, default=5, help="factors to cluster on (default 5)")
    p.add_argument("--sigma2", type=nonneg_float, metavar="VARIANCE",
                   help="noise variance of the raw images (default: from their background)")
    p.add_argument("--batch_size", type=positive_int, default=256, help="images per batch (default 256)")
    p.add_argument("--power_iterations", type=nonneg_int, default=10,
                   help="power iterations of the randomized PCA (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--gpu", action="store_true", help="compute on the GPU (CuPy)")
    add_common(p)
    p.set_defaults(func=_cmd_msa)
