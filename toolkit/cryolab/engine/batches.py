"""One E-step's batches on this machine: one after the other in this process, or shared among
forked worker processes.

On NumPy where ``os.fork`` is safe (:func:`.processes.can_fork`) and BLAS has more than one
thread (the cores given, e.g. by ``--j`` or ``OMP_NUM_THREADS``), ``parallel="auto"`` cuts the
batches into one consecutive share per core and runs each share in a worker process on one
thread (:func:`.processes.forked_map`). The workers start from the parent's memory (the
particles, the references' coarse projections); each sends every batch's per-particle results
as soon as it is done (so this process holds one batch's at a time) and returns its M-step sums
(:class:`.driver.EStepSums`), which are added here in the order of the shares, so a run is the
same every time on the same number of cores. The threads of one process shared an E-step badly
on NumPy (2D classification gained ~1.2x on two cores; in two processes ~2x).
"""
from __future__ import annotations

import numpy as np

from ..errors import CryolabInputError
from .driver import EStepWorker
from .memory import MAPS_SHARE, WORKER_BYTES, accumulator_bytes, available_bytes
from .processes import can_fork, forked_map, send
from .threads import in_worker_process, limit_blas_threads, pool_size, ranges, sharing, side_by_side

__all__ = ["PARALLEL", "estep_processes", "even_batches", "run_batches"]

#: how independent E-step work runs: worker processes where they pay ("auto"), or forced
PARALLEL = ("auto", "processes", "threads")


def estep_processes(parallel: str, xp, n_batches: int, maps=None, memory_limit_GB=None) -> int:
    """How many worker processes share an E-step of ``n_batches`` batches (1: this process alone).

    ``"auto"``: one per BLAS thread, on NumPy where fork is safe; ``"processes"``: at least two
    (where fork exists); ``"threads"``: 1. Also 1 for a single batch and where E-steps already run
    side by side (in worker processes or threads: :func:`.threads.side_by_side`). ``maps``: ``(box,
    classes, dim)``: each worker fills accumulators of its own (single precision at least) and this
    process adds them up, so there are no more workers than such copies, one more for the sum, fit
    the maps' share of the memory budget (:data:`.memory.MAPS_SHARE`; the projectors are made
    before the fork and shared); and no more than the budget's quarter holds their own memory
    (:data:`.memory.WORKER_BYTES` each)."""
    if parallel not in PARALLEL:
        raise CryolabInputError(f"parallel must be one of {PARALLEL}, got {parallel!r}", field="parallel")
    if parallel == "threads" or n_batches < 2 or in_worker_process() or side_by_side() > 1 or not can_fork():
        return 1
    if parallel == "processes":
        workers = min(n_batches, max(2, pool_size()))
    else:
        workers = min(n_batches, pool_size()) if xp is np else 1
    budget = available_bytes(xp, memory_limit_GB) if workers > 1 else 0
    copy = 0 if maps is None else accumulator_bytes(*maps, dtype=np.float32)
    while workers > 1 and ((workers + 1) * copy > MAPS_SHARE * budget or workers * WORKER_BYTES > budget / 4):
        workers -= 1
    return workers


def even_batches(order, size: int, workers: int) -> list:
    """``order`` (particle indices) cut into batches of at most ``size``: for one worker consecutive
    batches of ``size`` (the last one shorter); for several, their number a multiple of ``workers``
    and their sizes within one of each other, so each worker gets the same work."""
    order = np.asarray(order)
    n, size = len(order), max(int(size), 1)
    if workers <= 1:
        return [order[i:i + size] for i in range(0, n, size)]
    count = -(-n // size)
    count = max(1, -(-count // workers) * workers)
    return [b for b in np.array_split(order, count) if len(b)]


def run_batches(inputs, particles, pix, batches, offsets_px, eulers, store, workers: int = 1,
                stop=None, progress=None):
    """The E-step of ``batches`` (lists of rows of ``particles``); ``store(rows, ChunkResult)`` is
    called once per batch as it is done; returns the M-step sums (:class:`.driver.EStepSums`), or
    None when ``stop`` (a ``threading.Event``) was set first.

    With ``workers > 1`` the batches are shared among that many worker processes, one consecutive
    share each (see the module text), and each batch's results come back as soon as it is done;
    make the batches with :func:`even_batches` and their size within :func:`.threads.sharing`, so
    that each worker keeps to its share of the memory budget. ``progress``: a tqdm-like bar
    advanced per batch."""
    if workers <= 1:
        worker = EStepWorker(inputs, particles, pix)
        for idx in batches:
            if stop is not None and stop.is_set():
                return None
            store(idx, worker.run(idx, offsets_px[idx], eulers[idx]))
            if progress is not None:
                progress.update(1)
        return worker.finish()

    with sharing(workers):
        worker = EStepWorker(inputs, particles, pix)   # its coarse projections are made once, here

    def share(part):
        for b in part:
            idx = batches[b]
            send((b, worker.run(idx, offsets_px[idx], eulers[idx])))
        return worker.finish()

    def done(_, message):
        b, result = message
        store(batches[b], result)
        if progress is not None:
            progress.update(1)

    parts = [range(lo, hi) for lo, hi in ranges(len(batches), workers)]
    with limit_blas_threads(workers, 1):
        results = forked_map(share, parts, workers, 1, stop=stop, on_message=done)
    if results is None:
        return None
    sums = results[0]
    for more in results[1:]:                   # in the order of the shares: the same sums every run
        sums.add(more)
    return sums
