"""Threads of cryolab's own for the E-step's small GEMMs on NumPy (images or columns shared out).

BLAS's own threads suit large GEMMs; the lattice's GEMMs are small (inner sizes 20-70), so their
loops are split among as many threads of ours as the BLAS pool has, each GEMM then on one BLAS
thread. (The passes over the weights, memory-bound, gained nothing from threads: left on one.)
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["cpu_workers", "in_threads", "in_worker_process", "limit_blas_threads", "mark_worker_process",
           "pool_size", "ranges", "sharing", "side_by_side", "use_cores"]

_WORKER_THREADS = 0           # in a worker process of :mod:`.processes`: its share of the cores
_SIDE_BY_SIDE = 1             # ... and how many such processes run at once


def mark_worker_process(threads: int = 1, workers: int = 1) -> None:
    """Declare this process one of ``workers`` side by side (:func:`cryolab.engine.processes.forked_map`)
    with ``threads`` cores of its own: :func:`cpu_workers` is then at most that, in a thread pool
    made here (the parent's, copied by the fork without its threads, is dropped), and the E-step's
    memory budget is shared (:func:`side_by_side`)."""
    global _WORKER_THREADS, _SIDE_BY_SIDE
    _WORKER_THREADS, _SIDE_BY_SIDE = max(1, int(threads)), max(1, int(workers))
    _executor.cache_clear()


def side_by_side() -> int:
    """How many worker processes run beside this one's E-step, itself included (1 outside them)."""
    return _SIDE_BY_SIDE


def in_worker_process() -> bool:
    """Whether this is a worker process of :func:`cryolab.engine.processes.forked_map`."""
    return _WORKER_THREADS > 0


@contextlib.contextmanager
def sharing(workers: int):
    """Within: :func:`side_by_side` is ``workers`` (an E-step set up here, before the fork, for
    that many worker processes: its batches and buffers sized to one worker's memory share)."""
    global _SIDE_BY_SIDE
    before, _SIDE_BY_SIDE = _SIDE_BY_SIDE, max(1, int(workers))
    try:
        yield
    finally:
        _SIDE_BY_SIDE = before


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's controller of the loaded BLAS (found once), None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def cpu_workers(xp=np) -> int:
    """Threads for the E-step's loops: on NumPy (``xp``) the size of the BLAS thread pool (1 under
    ``OMP_NUM_THREADS=1``), each thread then running its GEMMs on one BLAS thread; 1 on a GPU,
    without threadpoolctl, at most a worker process's share (:func:`mark_worker_process`), or when called from a thread
    other than the main one (e.g. multi-body's side-by-side E-steps: the one-BLAS-thread limit is
    process-wide, and contexts entered and left from several threads at once would leave other
    threads' GEMMs on a changing number of BLAS threads, whose float rounding differs). Small GEMMs
    (inner sizes 20-70) scale better split by images or columns than inside BLAS, whose threads
    also spin-wait when the cores are shared."""
    if xp is not np or _blas_controller() is None or threading.current_thread() is not threading.main_thread():
        return 1
    return min(pool_size(), _WORKER_THREADS) if _WORKER_THREADS else pool_size()


@functools.lru_cache(maxsize=1)
def pool_size() -> int:
    """The BLAS thread pool's size when first asked (1 without threadpoolctl)."""
    if _blas_controller() is None:
        return 1
    blas = [lib.num_threads for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    return max(1, min(max(blas, default=1), os.cpu_count() or 1))


def use_cores(n: int):
    """From now on BLAS runs on at most ``n`` threads, and so the engine's threads and an E-step's
    worker processes (:func:`pool_size`; the command line's ``--j``), also where NumPy is already
    loaded and ``OMP_NUM_THREADS`` is read no more. Returns the function that puts it back."""
    ctl = _blas_controller()
    limiter = None if ctl is None else ctl.limit(limits=max(1, int(n)), user_api="blas")
    _new_pool()

    def restore():
        if limiter is not None:
            limiter.restore_original_limits()
        _new_pool()
    return restore


def _new_pool() -> None:
    """Forget the pool size and the thread pool (its idle threads end): both are made again on use."""
    if _executor.cache_info().currsize:
        _executor().shutdown(wait=False)
    _executor.cache_clear()
    pool_size.cache_clear()


@functools.lru_cache(maxsize=1)
def _executor():
    return ThreadPoolExecutor(max(1, pool_size() - 1), thread_name_prefix="cryolab-estep")


def limit_blas_threads(workers: int, threads: int = 1):
    """A context with BLAS on ``threads`` threads when ``workers > 1`` threads or processes of ours share
    the cores (BLAS's own threads would spin-wait beside them), else nothing."""
    ctl = _blas_controller() if workers > 1 else None
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=max(1, int(threads)), user_api="blas")


def in_threads(fn, parts, workers: int):
    """``fn(k, *part)`` for each ``part`` (``k``: its worker index): with ``workers > 1`` the first in
    this thread and the others in the pool (BLAS on one thread: see :func:`limit_blas_threads`), else all
    in order in this thread (``k = 0``)."""
    if workers <= 1:
        for part in parts:
            fn(0, *part)
        return
    futures = [_executor().submit(fn, k, *part) for k, part in enumerate(parts) if k]
    if parts:
        fn(0, *parts[0])
    for f in futures:
        f.result()


def ranges(n: int, parts: int, align: int = 1):
    """``parts`` consecutive ``(lo, hi)`` ranges covering ``range(n)``, boundaries multiples of ``align``."""
    step = -(-n // max(parts, 1))
    step = -(-step // align) * align
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)] if n else []
