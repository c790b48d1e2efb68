"""Independent jobs in forked worker processes, for work that threads of one process share badly.

Auto-refinement's two half-set E-steps, and multi-body refinement's (one per body and half-set),
are independent; so are the batches of one E-step (:mod:`.batches`). In threads of one process
they contend for the interpreter lock and for the process's memory map (the page faults of fresh
large arrays): on two cores multi-body's took ~25 % more wall time in threads than in processes,
and auto-refinement's halves one after the other (each E-step on the engine's own threads) twice
the wall time of two processes. A forked child starts with a copy of the parent's memory, so
nothing is sent to it; what a job sends on the way (:func:`send`) and its result come back
pickled through pipes (results only, never files). POSIX only: :func:`can_fork`.
"""
from __future__ import annotations

import os
import pickle
import selectors
import signal
import sys
import traceback

from . import threads

__all__ = ["can_fork", "forked_map", "send", "WorkerError"]

_MESSAGES_FD = None          # in a worker process: where :func:`send` writes
_HEADER = 8                  # a message's length, bytes (big-endian), before its pickle


class WorkerError(RuntimeError):
    """A job failed in its worker process; the message holds the worker's traceback."""


def can_fork() -> bool:
    """Whether :func:`forked_map` can run here: ``os.fork`` exists and is safe (Linux and the BSDs;
    not macOS, whose system libraries may not survive a fork, nor Windows)."""
    return hasattr(os, "fork") and sys.platform != "darwin"


def send(value) -> None:
    """In a job of :func:`forked_map`: send ``value`` (pickled) to the parent now, where the map's
    ``on_message(job index, value)`` receives it (e.g. a batch's results, so the parent holds one
    batch at a time rather than all of them at the end)."""
    if _MESSAGES_FD is None:
        raise RuntimeError("send() is for jobs running in forked_map's worker processes")
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    data = len(data).to_bytes(_HEADER, "big") + data
    view = memoryview(data)
    while view:
        view = view[os.write(_MESSAGES_FD, view):]


def _child(fn, job, fd: int, messages_fd: int, cores: int, workers: int) -> None:
    """Run ``fn(job)`` in a forked child, write ``(ok, value)`` pickled to ``fd`` and exit."""
    global _MESSAGES_FD
    code = 1
    try:
        _MESSAGES_FD = messages_fd
        threads.mark_worker_process(cores, workers)     # the workers share the cores and the memory
        try:
            result = (True, fn(job))
        except BaseException:                  # noqa: BLE001 - reported to the parent, which raises
            result = (False, traceback.format_exc())
        with os.fdopen(fd, "wb") as out:       # pickled straight into the pipe: no second copy here
            pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
        code = 0
    finally:
        os._exit(code)                         # no exit handlers of the parent's run in the child


class _Running:
    """A started job: its index, process, result pipe (and what came), message pipe (and its bytes)."""

    def __init__(self, index: int, pid: int, result_fd: int, messages_fd: int):
        self.index, self.pid, self.result_fd, self.messages_fd = index, pid, result_fd, messages_fd
        self.result = bytearray()
        self.pending = bytearray()

    def messages(self, data: bytes):
        """The complete messages of what came so far (``data`` added)."""
        self.pending += data
        while len(self.pending) >= _HEADER:
            n = int.from_bytes(self.pending[:_HEADER], "big")
            if len(self.pending) < _HEADER + n:
                break
            value = pickle.loads(self.pending[_HEADER:_HEADER + n])
            del self.pending[:_HEADER + n]
            yield value


def forked_map(fn, jobs, workers: int, threads_each: int = 1, stop=None, on_message=None):
    """``[fn(job) for job in jobs]``, each call in a forked child process, ``workers`` at a time,
    each child's own loops on at most ``threads_each`` threads (:func:`.threads.cpu_workers`) and its
    E-step on its share of the memory budget (:func:`.memory.available_bytes`).

    ``fn`` sees the parent's state as it was at the fork; what it returns is pickled back (its
    other changes stay in the child). A job that raises raises :class:`WorkerError` here with
    the child's traceback; the other children are then stopped. ``on_message(index, value)`` is
    called here for each :func:`send` of job ``index``, in the order that job sent them (all before
    its result). ``stop``: a ``threading.Event``; once it is set the children are stopped and None
    is returned.
    """
    if not can_fork():
        raise RuntimeError("forked_map needs os.fork (Linux or BSD)")
    jobs = list(jobs)
    results: dict = {}
    queue = list(range(len(jobs)))
    running: dict = {}                          # result pipe's read end -> _Running
    sel = selectors.DefaultSelector()

    def deliver(job, data):
        for value in job.messages(data):
            if on_message is not None:
                on_message(job.index, value)

    try:
        while queue or running:
            while queue and len(running) < max(1, workers):
                i = queue.pop(0)
                r, w = os.pipe()
                mr, mw = os.pipe()
                pid = os.fork()
                if pid == 0:                   # pragma: no cover - the child (coverage is not collected there)
                    os.close(r)
                    os.close(mr)
                    _child(fn, jobs[i], w, mw, threads_each, min(workers, len(jobs)))
                os.close(w)
                os.close(mw)
                job = running[r] = _Running(i, pid, r, mr)
                sel.register(r, selectors.EVENT_READ, (job, "result"))
                sel.register(mr, selectors.EVENT_READ, (job, "messages"))
            closed = set()                     # pipes closed in this round: their other events are old
            for key, _ in sel.select(timeout=None if stop is None else 0.05):
                job, kind = key.data
                if key.fd in closed:
                    continue
                chunk = os.read(key.fd, 1 << 20)
                if kind == "messages":
                    if chunk:
                        deliver(job, chunk)
                    else:
                        sel.unregister(key.fd)     # its end: closed with the job
                    continue
                if chunk:
                    job.result += chunk
                    continue
                del running[job.result_fd]
                try:
                    _, status = os.waitpid(job.pid, 0)
                    while rest := os.read(job.messages_fd, 1 << 20):   # the child has ended: up to EOF
                        deliver(job, rest)
                finally:
                    _close(sel, job.result_fd, job.messages_fd)
                    closed.update((job.result_fd, job.messages_fd))
                code = os.waitstatus_to_exitcode(status)
                if code or not job.result:
                    raise WorkerError(f"job {job.index}: the worker process ended without a result (status {code})")
                ok, value = pickle.loads(job.result)
                job.result = None
                if not ok:
                    raise WorkerError(f"job {job.index} failed in its worker process:\n{value}")
                results[job.index] = value
            if stop is not None and stop.is_set():
                return None                    # the children are stopped below
    finally:
        for job in running.values():           # an error, an interrupt or a stop: stop the others
            try:
                os.kill(job.pid, signal.SIGKILL)
                os.waitpid(job.pid, 0)
            except OSError:
                pass
            _close(sel, job.result_fd, job.messages_fd)
        sel.close()
    return [results[i] for i in range(len(jobs))]


def _close(sel, *fds) -> None:
    """Unregister (where still registered) and close a job's pipe ends."""
    for fd in fds:
        try:
            sel.unregister(fd)
        except KeyError:
            pass
        os.close(fd)
