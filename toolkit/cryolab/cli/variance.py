"""``cryolab variance``: bootstrapped 3D variance maps of particles with poses (where do they differ?).

``cryolab variance --i Refine3D/run_data.star --o Variance/ --n 100 --mask_out keep.mrc``
writes ``Variance/mean.mrc``, ``variance.mrc``, ``significance.mrc`` (variance over the variance of
a homogeneous null, ~1 where the particles vary no more than noise makes them), ``lowpass.star``
(the low-pass kept, by default chosen from the half-set FSC, and that FSC) and
``variance_run.json``; ``--mask_out`` a soft mask around the most significant region, ready for
``cryolab subtract --mask`` and ``cryolab class3d --solvent_mask``; ``--halves`` also the
correlation of the two half-sets' variance maps. See :mod:`cryolab.methods.variance`.
"""
from __future__ import annotations

from ..errors import CryolabInputError
from .common import (add_common, check_gpu, check_output, load_particles, make_folder, nonneg_float, positive_float,
                     positive_int, provenance_name, record, say)

OUTPUTS = ("mean.mrc", "variance.mrc", "significance.mrc", "lowpass.star")


def _lowpass(text: str):
    """``--lowpass``: ``auto``, ``none`` (every shell) or a resolution in Angstrom."""
    if text.lower() in ("auto", "none"):
        return "auto" if text.lower() == "auto" else None
    return positive_float(text)


def _cmd_variance(args) -> int:
    import numpy as np

    from ..io import write_mrc
    from ..methods.variance import bootstrap_variance, check_inputs, half_set_variance, suggest_mask
    from ..validation import soft_sphere_mask
    stack = check_inputs(load_particles(args.i), args.n, args.lowpass)
    check_gpu(args)
    out = check_output(args.o, folder=True)
    mask_out = check_output(args.mask_out) if args.mask_out else None
    if args.particle_diameter and args.particle_diameter / stack.pixel_size_A < 2:
        raise CryolabInputError(f"--particle_diameter {args.particle_diameter:g} A is under two pixels",
                                field="--particle_diameter")
    if not 0 < args.quantile < 1:
        raise CryolabInputError(f"--quantile {args.quantile} must lie between 0 and 1", field="--quantile")
    make_folder(out)
    if mask_out is not None:
        make_folder(mask_out.parent)
    backend = "cupy" if args.gpu else None
    rec = record("variance", args, [args.i], backend=backend)
    options = dict(seed=args.seed, lowpass_A=args.lowpass, pad=args.pad, memory_GB=args.memory_GB,
                   progress=not args.quiet, backend=backend)
    with rec.timed("bootstrap"):
        res = bootstrap_variance(stack, args.n, keep_maps=False, **options)
    written = [p.name for p in res.write(out)]
    n, px = stack.box_size, res.pixel_size_A
    inside = soft_sphere_mask(n, (args.particle_diameter or 0.8 * n * px) / px / 2, 0.0) > 0.5
    sig, var = res.significance[inside], res.variance[inside]
    rec.results = {"particles": len(stack), "resamples": args.n, "lowpass_A": res.lowpass_A,
                   "lowpass_chosen_from_fsc": res.fsc is not None,
                   "half_set_fsc": None if res.fsc is None else res.fsc.tolist(), "max_significance": float(sig.max()),
                   "median_significance": float(np.median(sig)),
                   "max_over_median_variance": float(var.max() / max(float(np.median(var)), 1e-30))}
    if args.halves:
        with rec.timed("half-sets"):
            rec.results["half_set_correlation"] = half_set_variance(stack, args.n, **options).correlation
    if mask_out is not None:
        keep = suggest_mask(res.significance, px, quantile=args.quantile, extend_A=args.extend,
                            soft_edge_A=args.width_soft_edge, within=inside)
        write_mrc(mask_out, keep, px)
        written.append(str(mask_out))
        rec.results["mask_fraction"] = float(keep.mean())
    rec.outputs = written
    rec.write(provenance_name(out, "variance"))
    chosen = "every shell" if res.lowpass_A is None else f"low-pass {res.lowpass_A:.1f} A"
    chosen += " (from the half-set FSC)" if res.fsc is not None else ""
    say(args, f"variance maps of {len(stack)} particles ({args.n} resamples, {chosen}) -> {out}",
        *([f"half-set correlation of the variance maps: {rec.results['half_set_correlation']:.3f}"]
          if args.halves else []),
        *([f"focus mask -> {mask_out}"] if mask_out is not None else []))
    return 0


def register(sub) -> None:
    p = sub.add_parser("variance", help="bootstrapped 3D variance maps (where the particles differ)",
                       description="Reconstruct N bootstrap resamples of the particles (with their poses) in "
                       "one pass over the images and write the voxel mean, variance and significance maps "
                       "(variance over the variance of a homogeneous null) into the output folder; "
                       "optionally a soft mask around the most significant region.")
    p.add_argument("--i", required=True, metavar="STAR", help="particles with refined poses (e.g. run_data.star)")
    p.add_argument("--o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n", type=positive_int, default=100, help="number of bootstrap resamples (>= 2; default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the resamples and the null (default 0)")
    p.add_argument("--lowpass", type=_lowpass, default="auto", metavar="ANGSTROM|auto|none",
                   help="reconstruct only to this resolution; auto (default): the shells before the half-set FSC "
                   "of the particles falls below 0.9 (heterogeneity is at low resolution); none: every shell")
    p.add_argument("--pad", type=positive_float, default=2.0,
                   help="oversampling of the Fourier accumulators (default 2; 1 is 4-8x cheaper with --lowpass)")
    p.add_argument("--memory_GB", type=positive_float, default=2.0,
                   help="memory for the accumulators; more passes over the images beyond it (default 2)")
    p.add_argument("--halves", action="store_true",
                   help="also the two random half-sets and the correlation of their variance maps")
    p.add_argument("--mask_out", metavar="MRC", help="write a soft mask around the most significant region")
    p.add_argument("--particle_diameter", type=positive_float, metavar="ANGSTROM",
                   help="the sphere the summary numbers and --mask_out look in (default: 0.8 of the box)")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="--mask_out: threshold the significance at this quantile of the voxels in the sphere "
                   "(default 0.99)")
    p.add_argument("--extend", type=nonneg_float, default=12.0, metavar="ANGSTROM",
                   help="--mask_out: grow the region by this much (default 12)")
    p.add_argument("--width_soft_edge", type=nonneg_float, default=12.0, metavar="ANGSTROM",
                   help="--mask_out: raised-cosine edge (default 12)")
    p.add_argument("--gpu", action="store_true", help="accumulate and reconstruct on the GPU (CuPy)")
    add_common(p)
    p.set_defaults(func=_cmd_variance)
