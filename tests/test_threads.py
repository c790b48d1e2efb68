"""The E-step's own threads (engine.threads): only the main thread shares its loops out."""
from __future__ import annotations

import threading

import numpy as np


def test_threads_of_ours_only_from_the_main_thread():
    from cryolab.engine.threads import cpu_workers, pool_size, ranges
    assert cpu_workers(np) in (1, pool_size())          # 1 without threadpoolctl or BLAS threads
    seen = []
    t = threading.Thread(target=lambda: seen.append(cpu_workers(np)))
    t.start()
    t.join()
    assert seen == [1]             # side-by-side E-steps (multi-body's threads) keep to one thread each
    assert ranges(10, 3, 2) == [(0, 4), (4, 8), (8, 10)] and ranges(0, 3) == []
