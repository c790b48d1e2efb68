"""What steppable methods share: step until done (a progress bar, a callback, files), and the
E-steps of independent Sessions side by side."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..engine.batches import PARALLEL
from ..engine.processes import can_fork, forked_map
from ..engine.threads import limit_blas_threads, sharing
from ..errors import CryolabInputError

__all__ = ["check_parallel", "estep_side_by_side", "run_steps", "uses_processes"]


def check_parallel(parallel: str) -> str:
    """``parallel`` checked: "auto", "threads" or "processes" (where ``os.fork`` exists)."""
    if parallel not in PARALLEL or (parallel == "processes" and not can_fork()):
        raise CryolabInputError(f"parallel must be 'auto', 'threads' or 'processes' (where os.fork exists), "
                                f"got {parallel!r}", field="parallel")
    return parallel


def uses_processes(parallel: str, xp) -> bool:
    """Side-by-side E-steps in worker processes: on NumPy (``xp``; never on a GPU, which does not
    survive a fork), "processes", or "auto" where fork is safe."""
    return xp is np and (parallel == "processes" or (parallel == "auto" and can_fork()))


def estep_side_by_side(sessions, workers: int, parallel: str = "auto", threads_each: int = 1,
                       progress: bool = False) -> bool:
    """The E-steps of independent ``sessions`` (each set up for it), ``workers`` at a time, each on
    ``threads_each`` BLAS threads: in forked worker processes where :func:`uses_processes` (each
    session then takes over its copy's :meth:`~cryolab.session.Session.estep_state`), else in
    threads; with one worker one after the other (with ``progress`` bars). The same results as
    one after the other to float32 rounding (bit for bit when BLAS has one thread). Returns whether
    every E-step completed (False: one was stopped)."""
    sessions = list(sessions)
    workers = min(int(workers), len(sessions))
    if workers <= 1:
        for s in sessions:
            s.estep(progress=progress)
            if s.sums is None:                 # stopped: the others are not started
                return False
        return True

    def estep(i):
        sessions[i].estep()
        return sessions[i].sums is not None

    jobs = range(len(sessions))
    with limit_blas_threads(workers, threads_each):
        if uses_processes(parallel, sessions[0].xp):
            states = forked_map(lambda i: sessions[i].estep_state() if estep(i) else None, jobs, workers,
                                threads_each)
            for s, state in zip(sessions, states):
                if state is not None:
                    s.set_estep_state(state)
            return all(state is not None for state in states)
        # NumPy and BLAS release the GIL in the heavy parts; the E-steps share the memory budget, and
        # none forks worker processes of its own from its thread
        with sharing(workers), ThreadPoolExecutor(workers) as pool:
            return all(pool.map(estep, jobs))


def run_steps(method, total: int, keep_going, *, desc: str, unit: str, postfix=None, progress: bool = True,
              callback=None, out_dir=None, prefix: str = "run") -> list:
    """Call ``method.step()`` while ``keep_going()``; a tqdm bar of ``total`` steps (``postfix(it)``
    its text) when ``progress``; ``callback(method, it)`` after each step; ``method.save(out_dir,
    prefix)`` at the end when ``out_dir`` is given. Returns ``method.history``."""
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max(int(total), 0), desc=desc, unit=unit)
    try:
        while keep_going():
            it = method.step()
            if bar is not None:
                bar.update(1)
                if postfix is not None:
                    bar.set_postfix_str(postfix(it))
            if callback is not None:
                callback(method, it)
    finally:
        if bar is not None:
            bar.close()
    if out_dir is not None:
        method.save(out_dir, prefix)
    return method.history
