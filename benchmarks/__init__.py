"""cryolab's performance goals, measured as ratios within one run.

Every benchmark prints its results as lines::

    RATIO <name> = <value>  (<what it is>; target <goal>)

Ratios compare two things timed back to back in the same process (cryolab against a
plain-NumPy reference, against RELION, against this machine's GEMM peak), so they
stay meaningful on a busy machine where absolute times do not. Absolute times are
recorded too, in ``benchmarks/results/<date>-<host>.json``.

Run everything with ``python -m benchmarks`` (``--quick`` for a smoke run), or one part
with ``python -m benchmarks.gemm`` / ``.class2d`` / ``.class3d`` / ``.imaging`` / ``.memory``
/ ``.focused`` / ``.refine``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["RESULTS_DIR", "VIEWS", "best_of", "ratio", "estep_gemm_flops", "GemmCounter",
           "simulate_views", "machine", "save_results", "load_now", "child_pids", "part_parser", "saves", "finish", "relion_available", "work_folder"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# (rot, tilt) of the simulated 2D views: eight distinct directions of the demo 80S
VIEWS = [[0, 0], [0, 90], [90, 90], [45, 45], [135, 45], [45, 135], [90, 30], [160, 120]]

NOISE_NOTE = ("timings share the CPU cores with other work and are noisy; every ratio "
              "compares two measurements taken back to back")


def best_of(fn, repeat: int = 3, min_total_s: float = 0.3) -> float:
    """Shortest wall time (s) of ``fn()``: one untimed warm-up call, then at least ``repeat``
    timed calls and at least ``min_total_s`` seconds of them (short calls repeat more)."""
    fn()
    best, total, count = float("inf"), 0.0, 0
    while count < max(1, repeat) or total < min_total_s:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, count = min(best, dt), total + dt, count + 1
    return best


def part_parser(name: str, doc: str, quick: str, n: str | None = None, relion: str | None = None,
                keep: bool = False):
    """Command-line parser of ``python -m benchmarks.<name>`` with the flags the parts share:
    ``--quick`` (help ``quick``), ``--n`` (help ``n``), ``--no-relion`` (skips ``relion``),
    ``--out`` and ``--keep``; a part adds its own."""
    import argparse
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    if n:
        ap.add_argument("--n", type=int, default=None, help=n)
    if relion:
        ap.add_argument("--no-relion", action="store_true", help=f"skip {relion}")
    ap.add_argument("--out", default=None, help="folder for the results JSON")
    if keep:
        ap.add_argument("--keep", default=None, help="folder to keep the particles and RELION outputs in")
    return ap


def finish(section: str, result: dict, out=None, save: bool = True) -> dict:
    """Save ``result`` under ``section`` (see :func:`save_results`) when ``save``, say where; return it."""
    if save:
        print(f"  results: {save_results(section, result, out).name}")
    return result


def relion_available(wanted: bool, *programs: str) -> bool:
    """True when the RELION comparison is ``wanted`` and every program is on ``PATH`` (else says so)."""
    import shutil
    missing = [p for p in programs if shutil.which(p) is None]
    if wanted and missing:
        print(f"  {' / '.join(missing)} not found: skipping the RELION comparison")
    return wanted and not missing


@contextmanager
def work_folder(keep=None):
    """The folder a benchmark writes its data and RELION runs to: ``keep`` (kept) or a temporary one."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(keep) if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder


def saves(args) -> bool:
    """Whether a run writes its results JSON: full runs always, quick runs only with ``--out``."""
    return not args.quick or args.out is not None


def ratio(name: str, value: float, meaning: str, target: str | None = None) -> dict:
    """Print one ``RATIO`` line and return it as a record."""
    goal = f"; target {target}" if target else ""
    print(f"RATIO {name} = {value:.3g}  ({meaning}{goal})", flush=True)
    return {"name": name, "value": float(value), "meaning": meaning, "target": target}


def child_pids(pid="self") -> list[int]:
    """The process ids of ``pid``'s children (Linux ``/proc``; ``"self"``: this process's), e.g. an
    E-step's worker processes; empty elsewhere."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def load_now() -> float:
    """The 1-minute load average (how busy the shared cores were)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return float("nan")


def estep_gemm_flops(B: int, T: int, M: int, J: int) -> int:
    """Flops of the two GEMMs of one E-step scoring call (or one M-step ``weighted_sums``).

    Cross term ``[B*T, 2M] x [2M, J]`` (``2 B T 2M J``) plus the ``|C P|^2`` term
    ``[B, M] x [M, J]`` (``2 B M J``).
    """
    return 2 * B * T * 2 * M * J + 2 * B * M * J


class GemmCounter:
    """Counts the GEMM flops the engine issues while active, and the time spent in its kernels.

    Wraps ``score`` and ``weighted_sums`` as :mod:`cryolab.engine.expectation` calls them
    (the engine itself is untouched); restores them on exit. ``flops`` counts the cross and
    ``|CP|^2`` GEMMs of every scoring call and the two M-step GEMMs on the columns
    ``weighted_sums`` actually multiplies (weights above ``min_weight``), and the GEMMs of the
    translations scored on their lattice. ``rows_flops`` counts the same calls as if every
    translation were a GEMM row (:func:`estep_gemm_flops`): the work of the plain GEMM form that the
    lattice replaces, so ``rows_flops / time / peak`` says how the step compares with that form run
    at the GEMM peak.
    """

    def __init__(self):
        import multiprocessing
        # flops, rows_flops, kernel_s, calls: in shared memory, so that the E-step's worker
        # processes (forked while the counter is active) add to the same totals
        self._totals = multiprocessing.Array("d", 4)

    flops = property(lambda self: int(self._totals[0]))
    rows_flops = property(lambda self: int(self._totals[1]))
    kernel_s = property(lambda self: float(self._totals[2]), doc="seconds in the kernels, summed over processes")
    calls = property(lambda self: int(self._totals[3]))

    def _add(self, flops: int, rows_flops: int, kernel_s: float) -> None:
        with self._totals.get_lock():
            for i, v in enumerate((flops, rows_flops, kernel_s, 1)):
                self._totals[i] += v

    def __enter__(self):
        from cryolab.engine import expectation as ex
        self._module = ex
        self._originals = (ex.score, ex.weighted_sums)
        score, weighted_sums = self._originals

        def counted_score(X, ctf, inv_sigma2, P, ramps, **kw):
            t0 = time.perf_counter()
            out = score(X, ctf, inv_sigma2, P, ramps, **kw)
            flops = estep_gemm_flops(X.shape[0], ramps.shape[0], X.shape[1], P.shape[0])
            self._add(flops, flops, time.perf_counter() - t0)
            return out

        def counted_weighted_sums(weights, X, ctf, ramps, min_weight=0.0, **kw):
            B, T, J = weights.shape
            t0 = time.perf_counter()
            out = weighted_sums(weights, X, ctf, ramps, min_weight, **kw)
            kernel_s = time.perf_counter() - t0
            used = int((weights.reshape(B * T, J).max(axis=0) > min_weight).sum())
            flops = estep_gemm_flops(B, T, X.shape[1], used)
            self._add(flops, flops, kernel_s)
            return out

        ex.score, ex.weighted_sums = counted_score, counted_weighted_sums
        self._wrap_lattice(ex.lattice)
        return self

    def _wrap_lattice(self, lat_mod):
        """The same for the translations scored on their lattice (:mod:`cryolab.engine.translations`):
        ``2 lattice_flops`` per (image, projection) pair, plus the ``|C P|^2`` (or ``W``) GEMM."""
        self._lattice = lat_mod, (lat_mod.score, lat_mod.weighted_sums)
        score, weighted_sums = self._lattice[1]

        def counted(fn, weights_of):
            def run(*args, **kw):
                t0 = time.perf_counter()
                out = fn(*args, **kw)
                kernel_s = time.perf_counter() - t0
                X, lat = args[0 if weights_of is None else 1], args[4 if weights_of is None else 3]
                B, M = X.shape
                J = args[3].shape[0] if weights_of is None else weights_of(args[0], kw.get("min_weight", 0.0))
                self._add(int(2 * B * J * lat_mod.lattice_flops(lat, M)) + 2 * B * M * J,
                          estep_gemm_flops(B, lat.size, M, J), kernel_s)
                return out
            return run

        def used(weights, min_weight):
            return int((weights.reshape(-1, weights.shape[2]).max(axis=0) > min_weight).sum())
        lat_mod.score, lat_mod.weighted_sums = counted(score, None), counted(weighted_sums, used)

    def __exit__(self, *exc):
        self._module.score, self._module.weighted_sums = self._originals
        lat_mod, (score, weighted_sums) = self._lattice
        lat_mod.score, lat_mod.weighted_sums = score, weighted_sums
        return False


def simulate_views(out_dir, n: int, n_views: int = 8, snr: float = 0.05, seed: int = 0,
                   name: str = "particles"):
    """``n`` particles of ``n_views`` views of the demo 80S (64 px, 6 A/px, CTF) written to ``out_dir``."""
    from cryolab.data import load_demo
    from cryolab.simulate import simulate_views_2d
    demo = load_demo()
    return simulate_views_2d(demo.volumes["80S"], n, demo.pixel_size_A, view_eulers=VIEWS[:n_views],
                             snr=snr, seed=seed, out_dir=out_dir, name=name)


def machine() -> dict:
    """What the numbers were measured on (no paths)."""
    blas = "unknown"
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        pass
    return {"host": socket.gethostname(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas,
            "note": NOISE_NOTE}


@contextmanager
def _atomic(path: Path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    yield tmp
    os.replace(tmp, path)


def save_results(section: str, data: dict, out_dir=None) -> Path:
    """Merge ``{section: data}`` into ``<out_dir>/<date>-<host>.json`` (default ``benchmarks/results``)."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = out_dir / f"{stamp}-{socket.gethostname()}.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc["machine"] = machine()
    doc[section] = dict(data, measured_at=datetime.datetime.now().isoformat(timespec="seconds"))
    with _atomic(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return path
