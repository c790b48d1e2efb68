"""Back-projection of the E-step's sums: pixel lists inserted directly against spread into slices.

The engines keep the M-step sums as Fourier pixel lists ``[J, M]`` (the likelihood pixels within
the current resolution limit). Two ways to put them into a 3D back-projector:

* slices (before): :func:`cryolab.engine.estep.scatter` to full ``[J, N, N//2+1]`` slices, then
  ``BackProjector.insert``, which places every slice pixel within Nyquist (zeros included);
* pixel lists (now): ``BackProjector.insert_pixels``, which places only the ``M`` listed pixels.

Parts (each job one after the other, in this process):

1. ``micro``: inserting ``J = 2000`` random lists at 64 px, ``max_shell`` 20 and 32 (Nyquist),
   best of 3 alternating;
2. ``multibody``: the order-5 iteration (third, 0.47 deg with oversampling 2) of a multi-body
   refinement of ``--n`` (default 100) simulated ratchet particles at 64 px (consensus map and
   half maps reconstructed at the true poses; one thread), after iterations at orders 3 and 4;
3. ``class3d``: the first two iterations of the 3D classification benchmark's cryolab run
   (:mod:`benchmarks.class3d`: 200 particles of the demo 80S and 60S, 64 px, SNR 0.05, K = 2,
   HEALPix order 2, offsets 5/1 px, oversampling 1).

In parts 2 and 3 every insertion of the iteration is done both ways: pixel lists into the
session's back-projectors, slices into shadow ones; both are timed and the two sets of sums
compared after each insertion (relative to their largest value). The iteration's wall time includes the
shadow insertions; the line "iteration without the shadow" subtracts them.

Usage: ``python -m benchmarks.insertion [--quick] [--n 100] [--parts micro multibody class3d] [--way both]``
``--way slices`` / ``--way pixels``: the multi-body iteration with one way only (alternate them for a
plain before/after). Run it single-threaded: ``OMP_NUM_THREADS=1``.
"""
from __future__ import annotations

import time

import numpy as np

from . import part_parser, work_folder


def micro(n: int = 64, rows: int = 2000, shells=(20, 32), repeat: int = 3) -> dict:
    """Best time (s) of each way to insert ``rows`` random pixel lists, per ``max_shell``."""
    from cryolab.engine.estep import fourier_pixels, scatter
    from cryolab.geometry import euler_to_matrix
    from cryolab.reconstruction import BackProjector
    rng = np.random.default_rng(0)
    rots = euler_to_matrix(rng.uniform(0, 360, rows), np.rad2deg(np.arccos(rng.uniform(-1, 1, rows))),
                           rng.uniform(0, 360, rows))
    out = {}
    for shell in shells:
        pix = fourier_pixels(n, shell)
        d = (rng.normal(size=(rows, pix.size)) + 1j * rng.normal(size=(rows, pix.size))).astype(np.complex64)
        w = rng.uniform(0.1, 1, size=(rows, pix.size)).astype(np.float32)
        ways = {"slices": lambda bp: bp.insert(scatter(d, pix), scatter(w, pix), rots),
                "pixels": lambda bp: bp.insert_pixels(d, w, rots, pix.kx, pix.ky)}
        best = {k: float("inf") for k in ways}
        for _ in range(repeat):
            for name, fn in ways.items():
                bp = BackProjector(n, pad=2)
                t0 = time.perf_counter()
                fn(bp)
                best[name] = min(best[name], time.perf_counter() - t0)
        out[shell] = dict(best, M=pix.size)
        print(f"  micro: {n} px, J {rows}, max_shell {shell} (M {pix.size}): slices {best['slices']:.3f} s, "
              f"pixel lists {best['pixels']:.3f} s ({best['slices'] / best['pixels']:.2f}x)", flush=True)
    return out


def _difference(bp, shadow) -> float:
    """Largest difference between two back-projectors' sums, relative to the largest sum."""
    worst = 0.0
    for a, b in ((bp.data, shadow.data), (bp.weight, shadow.weight)):
        worst = max(worst, float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-300)))
    return worst


class ShadowInsert:
    """Within ``with``: every ``SphericalSampler.insert`` goes both ways (``way="both"``: pixel lists
    into the session's back-projector, slices into a shadow one), each way timed; ``way="slices"``
    or ``"pixels"``: only that way, into the session's back-projector (a plain before/after run)."""

    def __init__(self, way: str = "both"):
        self.way = way

    def __enter__(self):
        from cryolab.engine import spherical
        from cryolab.engine.estep import scatter
        from cryolab.geometry import euler_to_matrix
        from cryolab.reconstruction import BackProjector
        self.module, self.original = spherical.SphericalSampler, spherical.SphericalSampler.insert
        self.pixels_s = self.slices_s = 0.0
        self.calls = self.rows = 0
        self.worst = 0.0
        self.shells = set()
        self.pairs = {}
        original, pairs = self.original, self.pairs

        def insert(sampler, bp, orients, D, W):
            t0 = time.perf_counter()
            if self.way != "slices":
                original(sampler, bp, orients, D, W)
            t1 = time.perf_counter()
            shadow = bp if self.way == "slices" else pairs.get(id(bp), (None, None))[1]
            if self.way == "pixels":
                shadow = None
            elif shadow is None:
                shadow = BackProjector(bp.n, pad=bp.pad, xp=bp.xp, dtype=bp.weight.dtype)
                shadow.block_entries = bp.block_entries
                pairs[id(bp)] = (bp, shadow)
            t2 = time.perf_counter()
            if shadow is not None:
                rots = euler_to_matrix(orients[:, 0], orients[:, 1], orients[:, 2])
                shadow.insert(scatter(D, sampler.pix), scatter(W, sampler.pix), sampler.xp.asarray(rots))
            t3 = time.perf_counter()
            self.pixels_s += t1 - t0
            self.slices_s += t3 - t2
            if self.way == "both":
                self.worst = max(self.worst, _difference(bp, shadow))   # sums may be combined later
            self.calls += 1
            self.rows += len(orients)
            self.shells.add(int(sampler.pix.max_shell))

        self.module.insert = insert
        return self

    def __exit__(self, *exc):
        self.module.insert = self.original

    def report(self, name: str, step_s: float) -> dict:
        shadow_s = self.slices_s if self.way == "both" else 0.0
        r = {"way": self.way, "step_s": step_s, "without_shadow_s": step_s - shadow_s, "pixels_s": self.pixels_s,
             "slices_s": self.slices_s, "calls": self.calls, "rows": self.rows,
             "max_rel_difference": self.worst, "max_shells": sorted(self.shells)}
        both = (f"pixel lists {self.pixels_s:.1f} s, slices {self.slices_s:.1f} s "
                f"({self.slices_s / max(self.pixels_s, 1e-9):.2f}x); sums differ by {self.worst:.1e}")
        one = f"{self.way} {self.pixels_s + self.slices_s:.1f} s"
        print(f"  {name}: iteration {step_s:.1f} s (without the shadow {r['without_shadow_s']:.1f} s); "
              f"insertion {self.calls} calls, {self.rows} rows, max_shell {sorted(self.shells)}: "
              + (both if self.way == "both" else one), flush=True)
        return r


def multibody(folder, n: int = 100, way: str = "both") -> dict:
    """The order-5 iteration of a multi-body refinement, insertion timed both ways."""
    from cryolab.io import ParticleStack
    from cryolab.methods.multibody import MultiBodyRefine, partition_bodies, ratchet_bodies
    from cryolab.reconstruction import reconstruct_stack
    from cryolab.simulate import simulate_hinge
    from cryolab.validation import random_halves
    folder.mkdir(parents=True, exist_ok=True)
    vols, pivot, axis = ratchet_bodies()
    px = 6.0
    sim = simulate_hinge(vols, n, px, pivot_A=pivot, axis=axis, seed=3, snr=0.5, out_dir=folder, name="ratchet",
                         include_truth_angles=True)
    stack = ParticleStack.from_star(sim.star_path)
    sub = random_halves(n, 0)
    stack = stack.with_table(stack.table.assign(rlnRandomSubset=sub))
    consensus = reconstruct_stack(stack, method="wiener")
    halves = [reconstruct_stack(stack.subset(np.flatnonzero(sub == h)), method="wiener") for h in (1, 2)]
    bodies = partition_bodies([vols["60S"], vols["40S"]], px, sigma_angles_deg=10.0)
    mb = MultiBodyRefine(stack, consensus, bodies, half_maps=halves, healpix_order=3, oversampling=2,
                         offset_range_px=3.0, offset_step_px=1.0, threads=1)
    for _ in range(2):
        t0 = time.perf_counter()
        mb.step()
        print(f"  multibody: iteration {mb.iteration} (order {mb.order_of(mb.iteration - 1)}) "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    with ShadowInsert(way) as shadow:
        t0 = time.perf_counter()
        mb.step()
        step_s = time.perf_counter() - t0
    return dict(shadow.report(f"multibody order {mb.order_of(mb.iteration - 1)}, {n} particles", step_s), n=n)


def class3d(folder, n: int = 200, iterations: int = 2) -> dict:
    """``iterations`` of the 3D classification benchmark's cryolab run, insertion timed both ways."""
    from .class3d import run_cryolab, simulate_states
    folder.mkdir(parents=True, exist_ok=True)
    sim, maps = simulate_states(folder, n, box=64, snr=0.05)
    with ShadowInsert() as shadow:
        run = run_cryolab(sim.star_path, np.stack(maps), 2, iterations, 0.9 * 64 * sim.pixel_size_A, 40.0)
    for st in run["steps"]:
        print(f"  class3d: iteration {st['iteration']} {st['step_s']:.1f} s (max_shell {st['max_shell']})", flush=True)
    return dict(shadow.report(f"class3d, {n} particles, {iterations} iterations", run["iterations_s"]), n=n)


def main(argv=None):
    ap = part_parser("insertion", __doc__, "20 particles in the multi-body part, 24 in class3d (one iteration)",
                     n="multi-body particles (default 100)")
    ap.add_argument("--way", default="both", choices=["both", "slices", "pixels"],
                    help="multi-body part: both ways (the slices into shadow back-projectors) or one way only")
    ap.add_argument("--parts", nargs="+", default=["micro", "multibody", "class3d"],
                    choices=["micro", "multibody", "class3d"])
    args = ap.parse_args(argv)
    n = args.n or (20 if args.quick else 100)
    out = {}
    with work_folder() as folder:
        if "micro" in args.parts:
            out["micro"] = micro(rows=200 if args.quick else 2000)
        if "multibody" in args.parts:
            out["multibody"] = multibody(folder / "multibody", n, args.way)
        if "class3d" in args.parts:
            out["class3d"] = class3d(folder / "class3d", 24 if args.quick else 200, 1 if args.quick else 2)
    return out


if __name__ == "__main__":
    main()
