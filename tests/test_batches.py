"""One E-step's batches shared among worker processes (cryolab.engine.batches): the same
per-particle results as in this process, sums equal to float rounding, stop, progress, memory."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.engine import batches, threads
from cryolab.engine.memory import WORKER_BYTES, accumulator_bytes, available_bytes, estep_batch_size, projector_bytes
from cryolab.engine.processes import can_fork
from cryolab.errors import CryolabInputError
from cryolab.fourier import lowpass, rescale
from cryolab.session import Session, Settings
from cryolab.simulate import simulate_particles, simulate_views_2d

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need os.fork (Linux or BSD)")

PER_PARTICLE = ("classes", "eulers", "offsets_px", "pmax", "n_significant", "loglik", "class_posterior")


@pytest.fixture(scope="module")
def views32(tmp_path_factory):
    """120 particles, 32 px, 2 views of the demo 80S, CTF, SNR 0.5."""
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    return simulate_views_2d(vol, 120, d.pixel_size_A * 2, view_eulers=[[0, 0], [0, 90]], snr=0.5, seed=3,
                             out_dir=tmp_path_factory.mktemp("views32"), name="v")


@pytest.fixture(scope="module")
def posed32(tmp_path_factory):
    """100 particles of the demo 80S at 32 px with random poses (truth in the table), SNR 1."""
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    px = d.pixel_size_A * 2
    sim = simulate_particles({"80S": vol}, 100, px, snr=1.0, seed=3, out_dir=tmp_path_factory.mktemp("posed"),
                             name="p", include_truth_angles=True)
    return sim, lowpass(vol, 30, px, ndim=3)[None]


@pytest.fixture
def forks(monkeypatch, forked_pids):
    """The job counts of the E-steps' forked_map calls, and the pids they forked."""
    calls, real_map = [], batches.forked_map

    def spy(fn, jobs, *a, **kw):
        calls.append(len(jobs))
        return real_map(fn, jobs, *a, **kw)
    monkeypatch.setattr(batches, "forked_map", spy)
    return calls, forked_pids


def _reaped(pids):
    """Whether every one of these worker processes has ended and been waited for."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return bool(pids)


def _pair(make, parallel_a="threads", parallel_b="processes"):
    a, b = make(), make()
    a.parallel, b.parallel = parallel_a, parallel_b
    return a, b


def _same_per_particle(a, b):
    for name in PER_PARTICLE:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_2d_estep_in_processes_equals_this_process(views32, forks, monkeypatch):
    # 120 particles in batches of 20: six batches either way, three per worker (two workers), so each
    # particle is scored in the same batch; only the order in which the sums are added differs
    monkeypatch.setattr(batches, "pool_size", lambda: 2)
    a, b = _pair(lambda: Session(views32.star_path, K=2, seed=0, batch_size=20))
    for s in (a, b):
        s.estep()
    assert forks[0] == [2]                                # the second E-step ran in two workers
    _same_per_particle(a, b)
    assert [len(x) for x in (a.top_samples, b.top_samples)] == [120, 120]
    for ta, tb in zip(a.top_samples, b.top_samples):
        for xa, xb in zip(ta, tb):
            np.testing.assert_array_equal(xa, xb)
    np.testing.assert_allclose(b.sums.class_weight, a.sums.class_weight, rtol=1e-12)
    np.testing.assert_allclose(b.sums.w_shell, a.sums.w_shell, rtol=1e-6)
    np.testing.assert_allclose(b.sums.residual, a.sums.residual, rtol=1e-6)
    assert b.sums.n == a.sums.n == 120
    for bp_a, bp_b in zip(a.sums.bps, b.sums.bps):
        data_a, data_b = np.asarray(bp_a.data), np.asarray(bp_b.data)
        scale = np.abs(data_a).max()
        assert np.abs(data_a).sum() > 0
        np.testing.assert_allclose(data_b, data_a, atol=1e-5 * scale)   # float32 sums added in another order
    for s in (a, b):
        s.mstep()
    rel = np.abs(b.references - a.references).max() / np.abs(a.references).max()
    assert rel < 1e-4, rel
    for s in (a, b):
        s.step()
    np.testing.assert_array_equal(a.classes, b.classes)
    assert np.mean(a.eulers[:, 2] == b.eulers[:, 2]) >= 0.99


def test_3d_local_search_in_processes_equals_this_process(posed32, forks, monkeypatch):
    sim, ref = posed32
    truth = sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    start = truth + np.random.default_rng(0).normal(scale=4.0, size=truth.shape)

    def make():
        s = Session(sim.star_path, K=1, references=ref, healpix_order=2, offset_range_px=2, oversampling=1,
                    ini_high_A=30, sigma_ang_deg=10.0, pose_estimate="mean")
        s.eulers[:] = start
        return s

    monkeypatch.setattr(batches, "pool_size", lambda: 2)
    a, b = _pair(make)
    for s in (a, b):
        s.estep()
    assert forks[0] == [2]
    # local searches sort the particles by direction and take batches of at most 16: 100 particles
    # are 7 batches alone and 8 (four each) in two workers, so batches differ; each particle's
    # posterior is its own (its prior's window), so its pose is the same
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(b.eulers, a.eulers, atol=1e-6)
    np.testing.assert_allclose(b.offsets_px, a.offsets_px, atol=1e-6)
    np.testing.assert_allclose(b.angle_sd_deg, a.angle_sd_deg, rtol=1e-4)
    np.testing.assert_allclose(b.loglik, a.loglik, rtol=1e-6)
    for bp_a, bp_b in zip(a.sums.bps, b.sums.bps):
        data_a, data_b = np.asarray(bp_a.data), np.asarray(bp_b.data)
        np.testing.assert_allclose(data_b, data_a, atol=1e-5 * np.abs(data_a).max())


def test_rows_subset_in_processes(views32, forks):
    rows = np.arange(0, 120, 3)
    a, b = _pair(lambda: Session(views32.star_path, K=2, seed=0, batch_size=10))
    for s in (a, b):
        s.estep(rows=rows)
    assert len(forks[0]) == 1 and forks[0][0] >= 2
    _same_per_particle(a, b)
    assert b.sums.n == 40
    untouched = np.setdiff1d(np.arange(120), rows)
    assert (b.classes[untouched] == -1).all() and (b.classes[rows] >= 0).all()


def test_a_stop_leaves_the_session_as_it_was(views32, forks):
    s = Session(views32.star_path, K=2, seed=0, batch_size=10)
    s.parallel = "processes"
    s.step()
    before = {k: np.copy(getattr(s, k)) for k in ("classes", "eulers", "offsets_px", "pmax", "references")}
    s._stop.set()
    s.estep()
    assert s.sums is None and len(forks[0]) == 1 and forks[0][0] >= 2   # only the first E-step forked
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(s, k), v)


def test_a_stop_during_the_estep_stops_the_workers(views32, forks, monkeypatch):
    s = Session(views32.star_path, K=2, seed=0)
    stop = threading.Event()
    real_run = batches.EStepWorker.run

    def slow_run(self, *a):                  # each batch takes at least 1 s: the stop comes first
        out = real_run(self, *a)
        time.sleep(1.0)
        return out
    monkeypatch.setattr(batches.EStepWorker, "run", slow_run)

    class StopAtFirstBatch:
        def update(self, k):
            stop.set()

    from cryolab.engine.estep import fourier_pixels
    pix = fourier_pixels(s.n, s.max_shell, s.xp)
    parts = batches.even_batches(np.arange(120), 10, 2)
    stored = []
    t0 = time.perf_counter()
    sums = batches.run_batches(s.estep_inputs(pix), s.particles, pix, parts, s.offsets_px, s.eulers,
                               lambda idx, r: stored.append(idx), workers=2, stop=stop, progress=StopAtFirstBatch())
    assert sums is None and 1 <= len(stored) <= 2         # the Session commits nothing of a stopped E-step
    assert time.perf_counter() - t0 < 5.0                  # 12 batches would take 6 s per worker
    assert _reaped(forks[1])                               # both workers ended and were waited for


def test_progress_counts_every_batch_of_every_worker(views32):
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    s = Session(views32.star_path, K=2, seed=0)
    inputs = s.estep_inputs()
    from cryolab.engine.estep import fourier_pixels
    pix = fourier_pixels(s.n, s.max_shell, s.xp)
    parts = batches.even_batches(np.arange(120), 16, 2)
    bar, seen = Bar(), []
    sums = batches.run_batches(inputs, s.particles, pix, parts, s.offsets_px, s.eulers,
                               lambda idx, r: seen.append(idx), workers=2, progress=bar)
    assert bar.n == len(parts) == 8 and sums.n == 120
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(120))    # each batch stored once


def test_even_batches():
    order = np.arange(100)[::-1]
    one = batches.even_batches(order, 30, 1)
    assert [len(b) for b in one] == [30, 30, 30, 10]
    two = batches.even_batches(order, 30, 2)
    assert [len(b) for b in two] == [25, 25, 25, 25]
    three = batches.even_batches(order, 64, 3)
    assert [len(b) for b in three] == [34, 33, 33]
    for parts in (one, two, three):
        np.testing.assert_array_equal(np.concatenate(parts), order)
    assert [len(b) for b in batches.even_batches(np.arange(3), 64, 4)] == [1, 1, 1]


def test_how_many_workers(monkeypatch):
    monkeypatch.setattr(batches, "pool_size", lambda: 4)

    def workers(parallel="auto", n=10, xp=np, maps=None, gb=8.0):
        return batches.estep_processes(parallel, xp, n, maps, gb)
    assert workers() == 4 and workers(n=3) == 3 and workers(n=1) == 1
    assert workers("threads") == 1
    assert workers(xp=object()) == 1 and workers("processes", xp=object()) == 1    # not NumPy: e.g. CuPy
    with threads.sharing(2):                                           # already side by side
        assert workers() == 1
    # K = 4 maps of 64 px: single-precision accumulators 48.75 MiB, projectors 34.6 MiB. Two copies
    # per worker (its own, its result) beside the projectors within the maps' quarter of the budget:
    # 2 workers 229.6 MiB, 3 workers 327.1, 4 workers 424.6; quarters of 0.75 / 1 / 1.5 / 2 GiB:
    # 192, 256, 384, 512 MiB
    copy, proj = 4 * 128 * 128 * 65 * 3 * 4, 4 * 131 * 131 * 66 * 8
    assert (copy, proj) == (accumulator_bytes(64, 4, 3, dtype=np.float32), projector_bytes(64, 4, 3))
    assert [workers(maps=(64, 4, 3), gb=gb) for gb in (0.75, 1.0, 1.5, 2.0)] == [1, 2, 3, 4]
    monkeypatch.setattr(batches, "pool_size", lambda: 1)
    assert workers() == 1
    assert workers("processes") == 2
    with pytest.raises(CryolabInputError, match="parallel"):
        batches.estep_processes("fork", np, 10)


def test_each_worker_keeps_to_its_share_of_the_memory_budget(monkeypatch):
    s = Settings(K=4, memory_limit_GB=0.05, batch_size=4096)
    alone = estep_batch_size(s, 4, 2, 800)
    budget = int(0.05 * 2 ** 30)
    with threads.sharing(2):                  # two workers' own memory would take more than 3/4 of it
        assert available_bytes(np, 0.05) == (budget // 4) // 2
        shared = estep_batch_size(s, 4, 2, 800)
    with threads.sharing(2):
        assert available_bytes(np, 1.0) == (2 ** 30 - 2 * WORKER_BYTES) // 2
    assert threads.side_by_side() == 1
    assert alone < 4096 and shared <= alone // 8 + 1, (alone, shared)
    # and no more workers than the budget's quarter holds the own memory of (64 MiB each)
    monkeypatch.setattr(batches, "pool_size", lambda: 4)
    assert [batches.estep_processes("processes", np, 10, None, gb) for gb in (0.25, 0.5, 0.75)] == [1, 2, 3]


def test_blank_images_named_in_a_worker_are_not_named_again(views32, tmp_path, forks):
    from cryolab.io import ParticleStack, write_particle_stack
    stack = ParticleStack.from_star(views32.star_path)
    images = stack.read()
    images[[3, 70]] = 0.0
    blank = write_particle_stack(tmp_path / "b.star", images, stack.table.drop(columns=["rlnImageName"]),
                                 stack.optics)
    s = Session(blank, K=2, seed=0, batch_size=20)
    s.parallel = "processes"
    s.particles.blank_warned.clear()          # the set-up read the images here: start from nothing named
    s.estep()
    assert len(forks[0]) == 1 and forks[0][0] >= 2
    assert {i for _, i in s.particles.blank_warned} == {3, 70}    # named in the workers, known here
