"""Run every benchmark and print their ratios: ``python -m benchmarks [--quick] [--no-relion]``.

The full suite takes about 12 minutes on two cores (most of it relion_refine and the
consensus refinement of ``focused``: ``--no-relion`` or ``--only`` for less); ``--quick``
runs every part on small sizes in under two minutes (a smoke run: its numbers mean little).
The auto-refine comparison with ``relion_refine_mpi`` (``refine``, ~30 min more on two cores)
runs only when asked for: ``--only refine`` or ``--only gemm,class2d,class3d,imaging,refine``; so do
the cost-vs-box-size comparison (``--only scale``, ~15 min at its scaled-down default; ``python -m
benchmarks.scale --full`` for the issue's 64-192 px sizes), the multi-body comparison with RELION (``--only multibody``, a RELION consensus and both programs'
multi-body refinements, ~70 min at 600 particles on two busy cores; ``python -m benchmarks.multibody
--full`` for the issue's 2,000 particles at SNR 0.5 and 0.1), the tilt-pair validation with the engine (``--only
tiltpair``, ~4 min), continuous heterogeneity (``--only variability``, ~25 min: a consensus refinement
per simulated set, linear variability, landscape, leaks, diffusion maps, and cryoDRGN when installed),
initial models (``--only initial_model``: three seeds and K = 2 on 3,000 particles at 64 px, about an hour of
cryolab on two cores, and relion_refine --denovo_3dref --sgd with the same schedule, many hours)
and the full size of the focused-classification comparison (``python -m
benchmarks.focused --full``, ~15 min). ``picking`` (part of the suite) spends ~20 min in relion_autopick.
Full runs write ``benchmarks/results/<date>-<host>.json``; quick runs write only with ``--out``.
"""
from __future__ import annotations

import argparse
import time

from . import (class2d, class3d, focused, gemm, imaging, initial_model, memory, msa, multibody, picking, refine, saves,
               scale, tiltpair, variability, variance)

DEFAULT = ("gemm", "class2d", "class3d", "imaging", "memory", "focused", "variance", "msa", "picking")
PARTS = DEFAULT + ("refine", "multibody", "tiltpair", "scale", "variability", "initial_model")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run, < 2 min)")
    ap.add_argument("--no-relion", action="store_true", help="skip every RELION comparison")
    ap.add_argument("--only", default=",".join(DEFAULT),
                    help=f"comma-separated subset of {', '.join(PARTS)} (default: all but refine and multibody)")
    ap.add_argument("--n", type=int, default=None,
                    help="particles for gemm (default 400), class2d (default 800) and class3d (default 200)")
    ap.add_argument("--iter", type=int, default=None,
                    help="iterations of class2d (default 10) and class3d (default 5)")
    ap.add_argument("--box", type=int, default=None, help="class3d box in pixels (default 64)")
    ap.add_argument("--out", default=None, help="folder for the results JSON")
    ap.add_argument("--gpu", action="store_true", help="cryolab on the GPU (sets CRYOLAB_BACKEND=cupy for the run)")
    a = ap.parse_args(argv)
    if a.gpu:
        import os
        os.environ["CRYOLAB_BACKEND"] = "cupy"
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    save = saves(a)
    relion = not a.no_relion
    t0 = time.perf_counter()
    results = {}
    if "gemm" in parts:
        results["gemm"] = gemm.run(a.quick, a.n, a.out, save)
    if "class2d" in parts:
        results["class2d"] = class2d.run(a.quick, a.n, a.iter, relion=relion, out=a.out, save=save)
    if "class3d" in parts:
        results["class3d"] = class3d.run(a.quick, a.n, a.iter, box=a.box, relion=relion, out=a.out, save=save)
    if "imaging" in parts:
        results["imaging"] = imaging.run(a.quick, relion, a.out, save)
    if "memory" in parts:
        results["memory"] = memory.run(a.quick, out=a.out, save=save)
    if "focused" in parts:
        results["focused"] = focused.run(a.quick, relion=relion, out=a.out, save=save)
    if "msa" in parts:
        results["msa"] = msa.run(a.quick, out=a.out, save=save)
    if "variance" in parts:
        results["variance"] = variance.run(a.quick, relion=relion, out=a.out, save=save)
    if "picking" in parts:
        results["picking"] = picking.run(a.quick, relion=relion, out=a.out, save=save)
    if "tiltpair" in parts:
        results["tiltpair"] = tiltpair.run(a.quick, relion=relion, out=a.out, save=save)
    if "refine" in parts:
        results["refine"] = refine.run(a.quick, relion=relion, out=a.out, save=save)
    if "scale" in parts:
        results["scale"] = scale.run(a.quick, relion=relion, gpu=a.gpu, out=a.out, save=save)
    if "multibody" in parts:
        results["multibody"] = multibody.run(a.quick, relion=relion, out=a.out, save=save)
    if "variability" in parts:
        results["variability"] = variability.run(a.quick, out=a.out, save=save)
    if "initial_model" in parts:
        results["initial_model"] = initial_model.run(a.quick, relion=relion, out=a.out, save=save)
    print(f"== summary ({time.perf_counter() - t0:.0f} s; shared cores, timings are noisy)")
    for part in results.values():
        for r in part["ratios"]:
            goal = f"  target {r['target']}" if r["target"] else ""
            print(f"RATIO {r['name']} = {r['value']:.3g}{goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
