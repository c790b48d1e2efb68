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
from .memory import MAPS_SHARE, WORKER_BYTES, accumulator_bytes, accumulator_dtype, available_bytes, projector_bytes
from .processes import can_fork, forked_map, send
from .threads import in_worker_process, limit_blas_threads, pool_size, sharing, side_by_side

__all__ = ["PARALLEL", "estep_processes", "even_batches", "run_batches"]

#: how independent E-step work runs: worker processes where they pay ("auto"), or forced
PARALLEL = ("auto", "processes", "threads")


def estep_processes(parallel: str, xp, n_batches: int, maps=None, memory_limit_GB=None) -> int:
    """How many worker processes share an E-step of ``n_batches`` batches (1: this process alone).

    ``"auto"``: one per BLAS thread; ``"processes"``: at least two; ``"threads"``: 1. Only on NumPy
    (``xp``) where fork is safe, never for a single batch or where E-steps already run side by side
    (in worker processes or threads: :func:`.threads.side_by_side`). Memory: no more workers than a
    quarter of the budget holds their own memory for (:data:`.memory.WORKER_BYTES` each), and with
    ``maps = (box, classes, dim)`` no more than fit the maps' share (:data:`.memory.MAPS_SHARE`)
    with two copies of the accumulators each, in the precision a worker's share gives them (its
    own, then its result on the way back and in this process until all are added), beside the
    projectors (made before the fork and shared)."""
    if parallel not in PARALLEL:
        raise CryolabInputError(f"parallel must be one of {PARALLEL}, got {parallel!r}", field="parallel")
    if (parallel == "threads" or xp is not np or n_batches < 2 or in_worker_process() or side_by_side() > 1
            or not can_fork()):
        return 1
    workers = min(n_batches, max(2, pool_size()) if parallel == "processes" else pool_size())
    budget = available_bytes(xp, memory_limit_GB)

    def fits(w):
        if w * WORKER_BYTES > budget / 4:
            return False
        if maps is None:
            return True
        with sharing(w):
            dtype = accumulator_dtype(*maps, available_bytes(xp, memory_limit_GB))
        copies = 2 * w * accumulator_bytes(*maps, dtype=dtype)
        return copies + (projector_bytes(*maps) if maps[2] == 3 else 0) <= MAPS_SHARE * budget

    while workers > 1 and not fits(workers):
        workers -= 1
    return workers


def even_batches(order, size: int, workers: int) -> list:
    """``order`` (particle indices) cut into batches of at most ``size``: for one worker consecutive
    batches of ``size`` (the last one shorter); for several, their number a multiple of ``workers``
    (fewer where there are fewer particles) and their sizes within one of each other, so each
    worker gets the same work."""
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

    if stop is not None and stop.is_set():
        return None
    with sharing(workers):
        worker = EStepWorker(inputs, particles, pix)   # its coarse projections are made once, here

    def share(part):
        for b in part:
            idx = batches[b]
            send((b, worker.run(idx, offsets_px[idx], eulers[idx])))
        return worker.finish(), set(getattr(worker.particles, "blank_warned", ()))

    def done(_, message):
        b, result = message
        store(batches[b], result)
        if progress is not None:
            progress.update(1)

    parts = [p for p in np.array_split(np.arange(len(batches)), workers) if len(p)]
    with limit_blas_threads(workers, 1):
        results = forked_map(share, parts, workers, 1, stop=stop, on_message=done)
    if results is None:
        return None
    sums = results[0][0]
    for more, _ in results[1:]:                # in the order of the shares: the same sums every run
        sums.add(more)
    warned = getattr(worker.particles, "blank_warned", None)
    if warned is not None:                     # blank images the workers named are not named again
        warned.update(*(w for _, w in results))
    return sums
