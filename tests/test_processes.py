"""cryolab.engine.processes: jobs in forked worker processes give what the same calls give here."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from cryolab.engine import threads
from cryolab.engine.memory import WORKER_BYTES, available_bytes
from cryolab.engine.processes import WorkerError, can_fork, forked_map, send

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need os.fork (Linux, BSD)")

STATE = {"calls": 0}


def _job(seed):
    """Changes this process's state (a child's change stays in the child) and returns arrays."""
    STATE["calls"] += 1
    rng = np.random.default_rng(seed)
    return seed, rng.standard_normal((200, 300)).astype(np.float32), STATE["calls"], os.getpid()


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_results_in_job_order_equal_the_calls_here(workers):
    seeds = [3, 1, 4, 1, 5, 9, 2]
    got = forked_map(_job, seeds, workers)
    assert STATE["calls"] == 0                                   # the children's changes stayed there
    for seed, (s, a, calls, pid) in zip(seeds, got):
        assert s == seed and calls == 1 and pid != os.getpid()
        np.testing.assert_array_equal(a, np.random.default_rng(seed).standard_normal((200, 300)).astype(np.float32))
    assert len({pid for *_, pid in got}) == len(seeds)          # one process a job
    assert forked_map(_job, [], workers) == []


def _fails(x):
    if x == 2:
        raise ValueError(f"no good value: {x}")
    return x


def _dies(x):
    if x == 1:
        os._exit(3)                    # ends without a result, as a process killed for its memory
    return x


def test_a_failing_job_raises_with_the_workers_traceback():
    with pytest.raises(WorkerError, match=r"job 2 failed(.|\n)*ValueError: no good value: 2"):
        forked_map(_fails, [0, 1, 2, 3], 2)
    with pytest.raises(WorkerError, match="job 1: the worker process ended without a result .status 3"):
        forked_map(_dies, [0, 1, 2], 2)


def _shares(_):
    return threads.cpu_workers(), available_bytes(np, 1.0)


def test_workers_share_the_cores_and_the_memory_budget():
    """Each worker's loops run on its share of the threads (in a pool of its own: the parent's,
    copied by the fork without its threads, is not used) and its E-step on its share of the budget."""
    assert available_bytes(np, 1.0) == 2 ** 30
    share = (2 ** 30 - 2 * WORKER_BYTES) // 2                     # each worker's own memory set aside
    assert forked_map(_shares, [0, 1, 2], 2) == [(1, share)] * 3
    assert forked_map(_shares, [0], 2) == [(1, 2 ** 30)]              # one job: one worker
    assert forked_map(_shares, [0, 1], 2, threads_each=2)[0][0] == min(2, threads.pool_size())
    assert available_bytes(np, 1.0) == 2 ** 30 and threads.side_by_side() == 1


def _sends(n):
    """Sends ``n`` messages, some larger than a pipe's buffer (64 KB), then returns ``n``."""
    for k in range(n):
        send((n, k, np.full(k * 9_000, k, np.float64)))      # up to ~0.5 MB a message
    return n


def test_messages_arrive_whole_and_in_each_jobs_order():
    got = []
    assert forked_map(_sends, [7, 3, 5], 2, on_message=lambda i, m: got.append((i, m))) == [7, 3, 5]
    assert sorted((i, n, k) for i, (n, k, _) in got) == [(i, n, k) for i, n in enumerate([7, 3, 5]) for k in range(n)]
    for i, n in enumerate([7, 3, 5]):
        mine = [(k, a) for j, (_, k, a) in got if j == i]
        assert [k for k, _ in mine] == list(range(n))               # as the job sent them
        for k, a in mine:
            np.testing.assert_array_equal(a, np.full(k * 9_000, k, np.float64))
    with pytest.raises(RuntimeError, match="forked_map"):
        send("not in a worker")


def _sleeps(x):
    send(x)
    time.sleep(30)
    return x


def test_a_stop_ends_the_workers_and_returns_none(forked_pids):
    pids = forked_pids
    stop = threading.Event()
    t0 = time.perf_counter()
    assert forked_map(_sleeps, [0, 1, 2], 2, stop=stop, on_message=lambda i, m: stop.set()) is None
    assert time.perf_counter() - t0 < 10
    assert len(pids) == 2                                       # the third job was never started
    for pid in pids:                                            # the workers were ended and waited for
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _message_then_fail(x):
    send(x)
    raise ValueError("after a message")


def test_a_failing_message_handler_stops_the_workers():
    def handler(i, m):
        raise KeyError("the parent's handler failed")
    with pytest.raises(KeyError, match="handler failed"):
        forked_map(_sends, [3, 3], 2, on_message=handler)
    with pytest.raises(WorkerError, match="ValueError: after a message"):
        forked_map(_message_then_fail, [1], 1, on_message=lambda i, m: None)
