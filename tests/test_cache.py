"""The E-step's projection cache and its merge of M-step sums by orientation key, exact.

References: ``project_uncached`` (each projection computed again, no cache; the cache keeps each
call's new rows as a block and never copies them; a full cache starts again), and a loop adding
the rows of each key one after the other (``sum_by_key``). Both must agree bit for bit.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from cryolab.engine.cache import CachedProjections
from cryolab.engine.driver import EStepWorker
from cryolab.engine.keysum import sum_by_key
from cryolab.session import Session


class Toy(CachedProjections):
    """Projections of one pixel list of 4 pixels: row = orientation * (1, 2, 3, 4) + class."""
    xp = np
    pix = SimpleNamespace(size=4, index=np.arange(4))

    def __init__(self, cache_rows):
        self.cache_bytes = 8 * 4 * cache_rows
        self._init_cache()

    @staticmethod
    def keys(classes, orients):
        return np.asarray(orients, np.int64) * 10 + np.asarray(classes, np.int64)

    def _project_class(self, k, orients):
        o = np.asarray(orients, float)
        return (o[:, None] * np.arange(1, 5) + k).reshape(len(o), 2, 2).astype(np.complex64)


def test_projection_cache_reset_keeps_every_requested_projection():
    """A cache that overflows starts again; projections that were hits in the same call are recomputed."""
    toy = Toy(6)                                      # room for six projections
    toy.project(np.zeros(5, int), np.arange(5))       # five cached
    orients = np.arange(3, 9)                         # two hits and four misses: over the limit
    got = toy.project(np.zeros(orients.size, int), orients)
    assert np.array_equal(got, toy.project_uncached(np.zeros(orients.size, int), orients))
    assert len(toy._cache_blocks) == 1 and toy._cache_keys.size == 6


@pytest.mark.parametrize("cache_rows", [1000, 25])
def test_cached_rows_equal_fresh_projections(cache_rows):
    """Random calls with repeats, hits and misses in one call, several blocks (and, with room for
    25 rows, resets): each answer equals the uncached projections; held blocks are never replaced."""
    rng = np.random.default_rng(0)
    toy = Toy(cache_rows)
    for _ in range(40):
        orients = rng.integers(0, 60, rng.integers(0, 20))
        classes = rng.integers(0, 2, orients.size)
        held = list(toy._cache_blocks)
        got = toy.project(classes, orients)
        assert got.shape == (orients.size, 4) and got.dtype == np.complex64
        np.testing.assert_array_equal(got, toy.project_uncached(classes, orients))
        if len(toy._cache_blocks) >= len(held):                  # no reset: the old blocks, untouched
            assert all(a is b for a, b in zip(held, toy._cache_blocks))
        assert toy._cache_keys.size * 4 * 8 <= toy.cache_bytes
        assert np.all(np.diff(toy._cache_keys) > 0)
    if cache_rows == 1000:
        assert len(toy._cache_blocks) > 10                          # rows really come from many blocks


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    """24 particles of two demo states at 16 px."""
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.simulate import simulate_particles
    demo = load_demo()
    maps = {k: rescale(demo.volumes[k], 16, ndim=3) for k in ("80S", "60S")}
    sim = simulate_particles(maps, 24, 24.0, snr=1.0, seed=2, out_dir=tmp_path_factory.mktemp("cache"),
                             name="states")
    return sim, np.stack(list(maps.values()))


@pytest.mark.parametrize("local", [False, True])
def test_estep_with_the_cache_equals_recomputing(states, local, monkeypatch):
    """A 3D E-step batch (global search with oversampling 1, or local): posteriors, poses and the
    M-step sums identical with the cache (large, and small enough to start again) and without it."""
    sim, maps = states
    s = Session(str(sim.star_path), references=maps, K=2, healpix_order=1, offset_range_px=2,
                offset_step_px=1, ctf=True, seed=0, ini_high_A=60.0)
    s.step()
    if local:
        s.set(sigma_ang_deg=20.0, healpix_order=2)
    inputs, rows = s.estep_inputs(), np.arange(16)

    def run(cache_bytes=None):
        worker = EStepWorker(inputs, s.particles)
        if cache_bytes is not None:
            worker.sampler.cache_bytes = cache_bytes
        out = [worker.run(rows[i:i + 4], s.offsets_px[rows[i:i + 4]], s.eulers[rows[i:i + 4]])
               for i in range(0, rows.size, 4)]
        return out, worker.finish(), worker.sampler

    cached, cached_sums, sampler = run()
    assert len(sampler._cache_blocks) > 1
    small = run(cache_bytes=sampler._cache_keys.size * sampler.pix.size * 8 // 3)
    monkeypatch.setattr(CachedProjections, "project",
                        lambda self, c, o, m=None, width=None: self.project_uncached(c, o, m or width))
    fresh = run()
    for out, sums, _ in (small, fresh):
        for a, b in zip(cached, out):
            for name in ("classes", "eulers", "offsets", "pmax", "n_significant", "loglik", "class_posterior"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        for bp, bp0 in zip(sums.bps, cached_sums.bps):
            np.testing.assert_array_equal(bp.data, bp0.data)
            np.testing.assert_array_equal(bp.weight, bp0.weight)


def _brute_sum_by_key(keys, a):
    ukeys = sorted(set(keys.tolist()))
    first = [int(np.flatnonzero(keys == k)[0]) for k in ukeys]
    sums = []
    for k in ukeys:
        rows = np.flatnonzero(keys == k)
        acc = a[rows[0]].copy()
        for i in rows[1:]:
            acc = acc + a[i]
        sums.append(acc)
    return np.asarray(first), np.stack(sums)


@pytest.mark.parametrize("n_keys", [7, 10_000])
def test_sum_by_key_equals_adding_rows_in_order(n_keys):
    """Repeated keys (7 distinct of 60) and all-distinct keys: first rows and sums (complex and
    real, 2D and 3D rows) equal the row-by-row loop: exactly on integer values (sums exact in
    any order), to float32 rounding on random ones (1e-6 of the largest sum; measured 1.2e-7)."""
    rng = np.random.default_rng(1)
    keys = rng.choice(10_000, 60, replace=False) if n_keys >= 60 else rng.integers(0, n_keys, 60)
    for make in (lambda shape: rng.integers(-1000, 1000, shape), lambda shape: rng.normal(size=shape)):
        d = (make((60, 5, 3)) + 1j * make((60, 5, 3))).astype(np.complex64)
        w = make((60, 15)).astype(np.float32)
        first, D, W = sum_by_key(keys, d, w)
        ref_first, ref_d = _brute_sum_by_key(keys, d)
        np.testing.assert_array_equal(first, ref_first)
        assert D.dtype == np.complex64 and W.dtype == np.float32
        exact = np.issubdtype(make((1,)).dtype, np.integer) or n_keys >= 60
        tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-6, atol=1e-6 * np.abs(ref_d).max())
        np.testing.assert_allclose(D, ref_d, **tol)
        np.testing.assert_allclose(W, _brute_sum_by_key(keys, w)[1], **tol)
