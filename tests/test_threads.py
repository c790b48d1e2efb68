"""The E-step's own threads (engine.threads): only the main thread shares its loops out."""
from __future__ import annotations

import threading

import numpy as np
import pytest


def test_threads_of_ours_only_from_the_main_thread():
    from cryolab.engine.threads import cpu_workers, pool_size, ranges
    assert cpu_workers(np) in (1, pool_size())          # 1 without threadpoolctl or BLAS threads
    seen = []
    t = threading.Thread(target=lambda: seen.append(cpu_workers(np)))
    t.start()
    t.join()
    assert seen == [1]             # side-by-side E-steps (multi-body's threads) keep to one thread each
    assert ranges(10, 3, 2) == [(0, 4), (4, 8), (8, 10)] and ranges(0, 3) == []


def test_the_command_lines_j_bounds_blas_and_the_workers_also_after_numpy_is_loaded():
    """``--j N``: BLAS on N threads, so the engine's threads and an E-step's worker processes
    (:func:`pool_size`) too; put back after the command."""
    import importlib
    from cryolab.engine.threads import _blas_controller, pool_size
    from cryolab.engine import batches
    if _blas_controller() is None:
        pytest.skip("threadpoolctl is not installed: BLAS threads cannot be set after numpy is loaded")
    cli = importlib.import_module("cryolab.cli.main")
    before = pool_size()
    if before < 2:
        pytest.skip("BLAS has one thread here already: --j 1 would change nothing to check")
    restore = cli._set_threads(1)
    try:
        assert pool_size() == 1
        assert batches.estep_processes("auto", np, 10) == 1
    finally:
        restore()
    assert pool_size() == before
