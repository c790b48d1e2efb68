"""E-step memory budget: the batch size that fits, the class maps' share, and that neither changes the result."""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.engine.memory import (BATCH_SHARE, accumulator_bytes, accumulator_dtype, available_bytes, batch_size_for,
                                   estep_batch_size, estep_bytes_per_image, projector_bytes)
from cryolab.errors import CryolabInputError
from cryolab.fourier import rescale
from cryolab.session import Session, Settings
from cryolab.simulate import simulate_views_2d


def test_batch_size_from_the_coarse_pass_size():
    # 2D, K = 2, psi 10 deg (36 angles), offsets 1/1 px (5 translations), 100 coarse pixels
    per_image = 24 * 2 * 36 * 5 + 8 * 5 * 100
    assert estep_bytes_per_image(2 * 36 * 5, 5, 100) == per_image
    s = Settings(K=2, psi_step_deg=10, offset_range_px=1, offset_step_px=1, batch_size=64,
                 memory_limit_GB=per_image * 10.5 / BATCH_SHARE / 2 ** 30)
    assert estep_batch_size(s, 2, 2, 100) == 10
    assert estep_batch_size(Settings(K=2, batch_size=64, memory_limit_GB=1e-9), 2, 2, 100) == 1
    # 3D: HEALPix order 2 (192 directions x 24 psi, 15 deg) is 4,608 orientations per class
    three = Settings(K=2, healpix_order=2, offset_range_px=3, offset_step_px=1, memory_limit_GB=0.1)
    per_image = estep_bytes_per_image(2 * 4608 * 29, 29, 500)
    assert estep_batch_size(three, 2, 3, 500) == int(BATCH_SHARE * 0.1 * 2 ** 30) // per_image
    fixed = Settings(K=2, healpix_order=2, skip_align=True, memory_limit_GB=0.1)   # one sample per class
    assert estep_batch_size(fixed, 2, 3, 500) == 64
    assert batch_size_for(100, 10 ** 9, 64) == 64 and available_bytes() > 2 ** 28
    with pytest.raises(CryolabInputError):
        Settings(memory_limit_GB=0)


def test_small_memory_budget_gives_the_same_result(tmp_path):
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    sim = simulate_views_2d(vol, 60, d.pixel_size_A * 2, view_eulers=[[0, 0], [0, 90]], snr=0.5, seed=3,
                            out_dir=tmp_path, name="m")
    runs = []
    for limit in (None, 1.5e-4):        # 160 kB: a few images per batch
        s = Session(sim.star_path, K=2, psi_step_deg=30, offset_range_px=2, seed=1, memory_limit_GB=limit)
        size = s._batch_order()[1]
        assert size == 64 if limit is None else 1 < size < 10
        s.run(2, progress=False)
        runs.append(s)
    a, b = runs
    assert np.array_equal(a.classes, b.classes) and np.allclose(a.psi, b.psi)
    assert np.allclose(a.references, b.references, rtol=1e-4, atol=1e-4 * np.abs(a.references).max())


def test_accumulator_and_projector_bytes_match_the_objects():
    """The byte counts of the class maps equal the arrays' sizes (accumulators) or bound them (projectors)."""
    from cryolab.projection import FourierProjector
    from cryolab.reconstruction import BackProjector, BackProjector2D
    for n, dim, cls in ((20, 3, BackProjector), (21, 3, BackProjector), (32, 2, BackProjector2D)):
        for dtype in (np.float64, np.float32):
            bp = cls(n, pad=2, dtype=dtype)
            assert accumulator_bytes(n, 3, dim, 2, dtype) == 3 * (bp.data.nbytes + bp.weight.nbytes)
    for n in (20, 21):
        used = FourierProjector(np.ones((n, n, n), np.float32), pad=2).ft.data.nbytes
        assert used <= projector_bytes(n, 1, 3) < 1.3 * used
    need = accumulator_bytes(64, 4, 3) + projector_bytes(64, 4, 3)          # double precision
    assert accumulator_dtype(64, 4, 3, 4 * need) == np.float64
    assert accumulator_dtype(64, 4, 3, 4 * need - 8) == np.float32


def test_3d_iteration_stays_within_the_budget_and_single_precision_gives_the_same_maps(tmp_path):
    """A 3D iteration (32 px, K = 2, HEALPix order 1) with a budget in which double-precision maps
    do not fit but single-precision ones do: the memory allocated during the iteration (tracemalloc:
    NumPy arrays and Python objects) stays within the budget, and classes and maps equal those of the
    default (double-precision, one batch) run up to float32 rounding."""
    import tracemalloc
    from cryolab.simulate import simulate_particles
    d = load_demo()
    maps = np.stack([rescale(d.volumes[k], 32, ndim=3) for k in ("80S", "60S")])
    sim = simulate_particles({"80S": maps[0], "60S": maps[1]}, 40, d.pixel_size_A * 2, snr=1.0, seed=4,
                             out_dir=tmp_path, name="three")
    singles = accumulator_bytes(32, 2, 3, dtype=np.float32) + projector_bytes(32, 2, 3)
    budget = int(4.2 * singles)
    assert accumulator_dtype(32, 2, 3, budget) == np.float32
    kw = dict(K=2, references=maps, healpix_order=1, offset_range_px=2, offset_step_px=1, ini_high_A=40.0,
              seed=0, ctf=True)
    runs = []
    for limit in (None, budget / 2 ** 30):
        s = Session(sim.star_path, memory_limit_GB=limit, **kw)
        s.step()                                               # the first iteration (cross-correlation)
        tracemalloc.start()
        s.step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        runs.append((s, peak))
    (a, _), (b, peak) = runs
    # measured 0.95 of the budget (1.10 while the lattice's -|C P|^2 terms made three [J, M] temporaries
    # of the fine pass's projections): within the budget, the criterion of the budget itself
    assert peak <= budget, f"{peak / 2 ** 20:.1f} MB allocated, budget {budget / 2 ** 20:.1f} MB"
    assert np.array_equal(a.classes, b.classes)
    ref = np.asarray(a.references)
    np.testing.assert_allclose(b.references, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
