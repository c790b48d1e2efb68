"""How close the E-step and M-step come to this machine's GEMM peak.

1. Peak: NumPy float32 (sgemm) and complex64 (cgemm) matrix products, a few square sizes,
   best of N, with the default BLAS threads and (in a child process) with one thread. On
   cores shared with other work a multi-threaded BLAS loses much more than one thread
   does, so the one-thread fractions are the steadier measure of the kernels themselves.
2. Kernels on realistic 2D-classification shapes (64 images, 81 translations, K*36 in-plane
   rotations, the pixels within shell 20 of a 64 box): ``estep.score`` (with and without
   building the image terms), ``mstep.weighted_sums``, and the bare GEMM of the same shape.
3. A whole ``Session.step`` on simulated particles: the GEMM flops it issues divided by its
   wall time ("effective" rate), so everything that is not a GEMM shows as lost speed.

Usage: ``python -m benchmarks.gemm [--quick] [--n 400] [--out DIR]``
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import (GemmCounter, best_of, estep_gemm_flops, finish, load_now, part_parser, ratio, saves,
               simulate_views)


def gemm_peak(sizes=(512, 1024, 2048), repeat: int = 5) -> dict:
    """GFLOP/s of ``a @ b`` for square float32 (2 n^3 flops) and complex64 (8 n^3 flops) matrices."""
    rng = np.random.default_rng(0)
    out = {"sgemm": {}, "cgemm": {}}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        out["sgemm"][n] = 2 * n ** 3 / best_of(lambda: a @ b, repeat) / 1e9
        ca, cb = (a + 1j * b).astype(np.complex64), (b + 1j * a).astype(np.complex64)
        out["cgemm"][n] = 8 * n ** 3 / best_of(lambda: ca @ cb, repeat) / 1e9
    out["peak_gflops"] = max(max(out["sgemm"].values()), max(out["cgemm"].values()))
    return out


def kernel_inputs(K: int = 8, max_shell: int = 20, B: int = 64, box: int = 64, seed: int = 0):
    """Random batch data with the shapes of a 2D classification batch (psi 10, offsets 5/1)."""
    from cryolab.engine.estep import fourier_pixels
    from cryolab.engine.sampling import translation_grid
    from cryolab.projection import shift_ramps
    rng = np.random.default_rng(seed)
    pix = fourier_pixels(box, max_shell)
    M, J = pix.size, K * 36                                    # psi step 10 deg

    def cplx(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    trans = translation_grid(5.0, 1.0)
    logits = rng.standard_normal((B, trans.shape[0], J)).astype(np.float32) * 3
    w = np.exp(logits - logits.max(axis=(1, 2), keepdims=True))
    return dict(X=cplx(B, M), ctf=rng.uniform(-1, 1, (B, M)).astype(np.float32),
                inv_sigma2=rng.uniform(0.5, 2, M).astype(np.float32), P=cplx(J, M),
                ramps=shift_ramps(box, trans, kx=pix.kx, ky=pix.ky),
                weights=(w / w.sum(axis=(1, 2), keepdims=True)).astype(np.float32))


def estep_kernels(K: int = 8, max_shell: int = 20, B: int = 64, repeat: int = 5) -> dict:
    """GFLOP/s of the engine's kernels on one realistic batch (see :func:`kernel_inputs`)."""
    from cryolab.engine.estep import image_terms, score, split_complex
    from cryolab.engine.mstep import weighted_sums
    d = kernel_inputs(K, max_shell, B)
    X, ctf, s2, P, ramps, w = (d[k] for k in ("X", "ctf", "inv_sigma2", "P", "ramps", "weights"))
    T, M, J = ramps.shape[0], X.shape[1], P.shape[0]
    flops = estep_gemm_flops(B, T, M, J)
    Yc = image_terms(X, ctf, s2, ramps)
    Pr = split_complex(P)
    t = {
        "score": best_of(lambda: score(X, ctf, s2, P, ramps), repeat),
        "score_given_terms": best_of(lambda: score(X, ctf, s2, P, ramps, Yc=Yc), repeat),
        "image_terms": best_of(lambda: image_terms(X, ctf, s2, ramps), repeat),
        "weighted_sums": best_of(lambda: weighted_sums(w, X, ctf, ramps, Yc=Yc, weight=s2), repeat),
        "bare_gemm": best_of(lambda: Yc @ Pr.T, repeat),
    }
    gflops = {k: flops / v / 1e9 for k, v in t.items() if k != "image_terms"}
    gflops["bare_gemm"] = 2 * B * T * 2 * M * J / t["bare_gemm"] / 1e9   # the cross GEMM alone
    return {"shape": {"B": B, "T": T, "M": M, "J": J, "K": K, "max_shell": max_shell},
            "flops": flops, "seconds": t, "gflops": gflops}


def whole_iteration(star_path, steps: int = 2, K: int = 8) -> list[dict]:
    """``steps`` iterations of a Session: GEMM flops issued, wall time, time inside the GEMM kernels."""
    from cryolab.session import Session
    session = Session(str(star_path), K=K, psi_step_deg=10, offset_range_px=5, offset_step_px=1,
                      ctf=True, seed=0)
    n = len(session.particles)
    rows = []
    for _ in range(steps):
        load = load_now()
        with GemmCounter() as c:
            t0 = time.perf_counter()
            session.step()
            wall = time.perf_counter() - t0
        rows.append({"iteration": session.iteration, "particles": n, "max_shell": session.max_shell,
                     "gemm_flops": c.flops, "step_s": wall, "kernel_s": c.kernel_s,
                     "effective_gflops": c.flops / wall / 1e9, "kernel_gflops": c.flops / c.kernel_s / 1e9,
                     "load_before": load})
    return rows


SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def measure_kernels(quick: bool) -> dict:
    """GEMM peak and the engine's kernels with the BLAS threads this process has."""
    sizes, repeat = ((256, 512, 1024), 3) if quick else ((512, 1024, 2048, 4096), 5)
    return {"peak": gemm_peak(sizes, repeat), "kernels": estep_kernels(repeat=repeat)}


def measure_kernels_single_thread(quick: bool) -> dict:
    """:func:`measure_kernels` in a child process with one BLAS thread (per-core efficiency)."""
    cmd = [sys.executable, "-m", "benchmarks.gemm", "--kernels-json"] + (["--quick"] if quick else [])
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report_kernels(label: str, m: dict) -> None:
    peak, kern = m["peak"], m["kernels"]
    print(f"  [{label}]")
    for kind in ("sgemm", "cgemm"):
        print(f"    {kind} GFLOP/s: " + ", ".join(f"{s}: {g:.0f}" for s, g in peak[kind].items()))
    for k, v in kern["seconds"].items():
        g = kern["gflops"].get(k)
        print(f"    {k:18s} {v * 1e3:8.1f} ms" + (f"  {g:6.0f} GFLOP/s" if g else "")
              + (f"  = {g / peak['peak_gflops']:.0%} of peak" if g else ""))


def run(quick: bool = False, n: int | None = None, out=None, save: bool = True) -> dict:
    n = n or (48 if quick else 400)
    print(f"== gemm: peak, E-step kernels, whole iteration ({n} particles)", flush=True)
    load = load_now()
    threads = measure_kernels(quick)
    single = measure_kernels_single_thread(quick)
    kern = threads["kernels"]
    print(f"  kernel shapes {kern['shape']}, {kern['flops'] / 1e9:.2f} GFLOP per call "
          f"(load average before: {load:.1f})")
    _report_kernels("default BLAS threads", threads)
    _report_kernels("one BLAS thread", single)
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate_views(tmp, n)
        rows = whole_iteration(sim.star_path, steps=1 if quick else 2)
    for r in rows:
        print(f"  Session.step it {r['iteration']}: {r['step_s']:.2f} s, {r['gemm_flops'] / 1e9:.1f} GFLOP, "
              f"effective {r['effective_gflops']:.0f} GFLOP/s, kernel time (summed over the worker processes) "
              f"{r['kernel_s'] / r['step_s']:.0%} of the step's ({r['kernel_gflops']:.0f} GFLOP/s there)")
    p, p1 = threads["peak"]["peak_gflops"], single["peak"]["peak_gflops"]
    g, g1 = kern["gflops"], single["kernels"]["gflops"]
    ratios = [
        ratio("gemm.score_over_peak", g["score"] / p,
              "E-step score incl. image terms, GFLOP/s / GEMM peak, default threads", ">= 0.5"),
        ratio("gemm.weighted_sums_over_peak", g["weighted_sums"] / p,
              "M-step weighted_sums GFLOP/s / GEMM peak, default threads", ">= 0.5"),
        ratio("gemm.score_over_peak_1thread", g1["score"] / p1,
              "as gemm.score_over_peak with one BLAS thread (per-core efficiency)", ">= 0.5"),
        ratio("gemm.weighted_sums_over_peak_1thread", g1["weighted_sums"] / p1,
              "as gemm.weighted_sums_over_peak with one BLAS thread", ">= 0.5"),
        ratio("gemm.bare_gemm_over_peak", g["bare_gemm"] / p,
              "the cross GEMM alone at the E-step's shape / GEMM peak, default threads"),
        ratio("gemm.step_effective_over_peak", rows[-1]["effective_gflops"] / p,
              "Session.step: GEMM flops / step wall time, over GEMM peak"),
    ]
    result = {"default_threads": threads, "one_thread": single, "iterations": rows,
              "ratios": ratios, "quick": quick}
    return finish("gemm", result, out, save)


def main(argv=None):
    ap = part_parser("gemm", __doc__, "small sizes (smoke run)", "particles for the whole-iteration run")
    ap.add_argument("--kernels-json", action="store_true",
                    help="only measure peak and kernels, print them as one JSON line (used for the "
                         "one-thread numbers)")
    a = ap.parse_args(argv)
    if a.kernels_json:
        print(json.dumps(measure_kernels(a.quick)))
        return
    run(a.quick, a.n, a.out, save=saves(a))


if __name__ == "__main__":
    main()
