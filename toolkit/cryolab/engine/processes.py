"""Independent jobs in forked worker processes, for work that threads of one process share badly.

Auto-refinement's two half-set E-steps, and multi-body refinement's (one per body and half-set),
are independent. In threads of one process they contend for the interpreter lock and for the
process's memory map (the page faults of fresh large arrays): on two cores multi-body's took
~25 % more wall time in threads than in processes, and auto-refinement's halves one after the
other (each E-step on the engine's own threads) twice the wall time of two processes. A forked
child starts with a copy of the parent's memory, so nothing is sent to it; each job's result
comes back pickled through a pipe (results only, never files). POSIX only: :func:`can_fork`.
"""
from __future__ import annotations

import os
import pickle
import selectors
import signal
import sys
import traceback

from . import threads

__all__ = ["can_fork", "forked_map", "WorkerError"]


class WorkerError(RuntimeError):
    """A job failed in its worker process; the message holds the worker's traceback."""


def can_fork() -> bool:
    """Whether :func:`forked_map` can run here: ``os.fork`` exists and is safe (Linux and the BSDs;
    not macOS, whose system libraries may not survive a fork, nor Windows)."""
    return hasattr(os, "fork") and sys.platform != "darwin"


def _child(fn, job, fd: int, cores: int, workers: int) -> None:
    """Run ``fn(job)`` in a forked child, write ``(ok, value)`` pickled to ``fd`` and exit."""
    code = 1
    try:
        threads.mark_worker_process(cores, workers)     # the workers share the cores and the memory
        try:
            data = pickle.dumps((True, fn(job)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:                  # noqa: BLE001 - reported to the parent, which raises
            data = pickle.dumps((False, traceback.format_exc()))
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        code = 0
    finally:
        os._exit(code)                         # no exit handlers of the parent's run in the child


def forked_map(fn, jobs, workers: int, threads_each: int = 1) -> list:
    """``[fn(job) for job in jobs]``, each call in a forked child process, ``workers`` at a time,
    each child's own loops on at most ``threads_each`` threads (:func:`.threads.cpu_workers`) and its
    E-step on its share of the memory budget (:func:`.memory.available_bytes`).

    ``fn`` sees the parent's state as it was at the fork; what it returns is pickled back (its
    other changes stay in the child). A job that raises raises :class:`WorkerError` here with
    the child's traceback; the other children are then stopped.
    """
    if not can_fork():
        raise RuntimeError("forked_map needs os.fork (Linux or BSD)")
    jobs = list(jobs)
    results: dict = {}
    queue = list(range(len(jobs)))
    running: dict = {}                          # read end -> (job index, pid, chunks)
    sel = selectors.DefaultSelector()
    try:
        while queue or running:
            while queue and len(running) < max(1, workers):
                i = queue.pop(0)
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:                   # pragma: no cover - the child (coverage is not collected there)
                    os.close(r)
                    _child(fn, jobs[i], w, threads_each, min(workers, len(jobs)))
                os.close(w)
                running[r] = (i, pid, [])
                sel.register(r, selectors.EVENT_READ)
            for key, _ in sel.select():
                r = key.fd
                chunk = os.read(r, 1 << 20)
                if chunk:
                    running[r][2].append(chunk)
                    continue
                sel.unregister(r)
                os.close(r)
                i, pid, chunks = running.pop(r)
                _, status = os.waitpid(pid, 0)
                if not chunks:
                    raise WorkerError(f"job {i}: the worker process ended without a result "
                                      f"(status {os.waitstatus_to_exitcode(status)})")
                ok, value = pickle.loads(b"".join(chunks))
                if not ok:
                    raise WorkerError(f"job {i} failed in its worker process:\n{value}")
                results[i] = value
    finally:
        for r, (_, pid, _) in running.items():  # an error or an interrupt: stop the others
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
            sel.unregister(r)
            os.close(r)
        sel.close()
    return [results[i] for i in range(len(jobs))]
