"""E-steps on a dask cluster give the in-process result; the chunk function and its sums."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.distributed import StackRows, chunk_rows
from cryolab.engine.driver import EStepSums, estep_chunk
from cryolab.settings import check_scheduler
from cryolab.errors import CryolabInputError
from cryolab.fourier import rescale
from cryolab.session import Session, Settings
from cryolab.simulate import simulate_views_2d


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """96 particles, 32 px, 2 views, SNR 0.5."""
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    out = tmp_path_factory.mktemp("tiny")
    return simulate_views_2d(vol, 96, d.pixel_size_A * 2, view_eulers=[[0, 0], [0, 90]], snr=0.5, seed=4,
                             out_dir=out, name="tiny")


def test_scheduler_setting_is_checked():
    for ok in (None, "local:2", "tcp://10.0.0.1:8786"):
        check_scheduler(ok)
    for bad in ("local:0", "local:x", "cluster"):
        with pytest.raises(CryolabInputError):
            Settings(scheduler=bad)


def test_chunks_are_whole_batches_in_order():
    chunks = chunk_rows(100, 16, 3)
    assert np.array_equal(np.concatenate(chunks), np.arange(100))
    assert all(len(c) % 16 == 0 for c in chunks[:-1]) and len(chunks) <= 3


def test_chunks_add_up_to_the_whole_estep(tiny_set):
    """Two chunks run by the plain function (from rows shipped without images) and added give
    the in-process E-step's sums and assignments."""
    s = Session(tiny_set.star_path, K=2, seed=1, batch_size=16)
    s.estep()
    whole = s.sums
    s2 = Session(tiny_set.star_path, K=2, seed=1, batch_size=16)
    inputs = s2.estep_inputs()
    parts = []
    for rows in (np.arange(0, 48), np.arange(48, 96)):
        ship = pickle.loads(pickle.dumps(StackRows.of(s2.particles, rows)))
        res, sums = estep_chunk(inputs, ship, None, s2.offsets_px[rows], s2.eulers[rows])
        parts.append((res, pickle.loads(pickle.dumps(sums))))   # as a worker would send them back
    total = parts[0][1].add(parts[1][1])
    assert isinstance(total, EStepSums) and total.n == 96
    assert np.array_equal(np.concatenate([p[0].classes for p in parts]), s.classes)
    assert np.allclose(total.class_weight, whole.class_weight)
    assert np.allclose(total.w_shell, whole.w_shell, rtol=1e-6)
    for a, b in zip(total.bps, whole.bps):
        assert np.allclose(a.data, b.data, rtol=1e-5, atol=1e-8 * abs(b.data).max())
        assert np.allclose(a.weight, b.weight, rtol=1e-5, atol=1e-8 * b.weight.max())


def test_local_cluster_matches_in_process(tiny_set):
    pytest.importorskip("dask.distributed")
    from cryolab.distributed import close_clients
    a = Session(tiny_set.star_path, K=2, seed=2, batch_size=16)
    a.run(2, progress=False)
    try:
        b = Session(tiny_set.star_path, K=2, seed=2, batch_size=16, scheduler="local:2")
        b.run(2, progress=False)
    finally:
        close_clients()
    assert np.array_equal(a.classes, b.classes)
    scale = np.abs(a.references).max()
    assert np.allclose(a.references, b.references, rtol=1e-4, atol=1e-5 * scale)
    assert np.allclose(a.psi, b.psi) and np.allclose(a.offsets_px, b.offsets_px)
    assert np.allclose([h.loglik for h in a.history], [h.loglik for h in b.history], rtol=1e-5)
