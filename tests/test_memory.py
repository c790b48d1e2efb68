"""E-step memory budget: the batch size that fits, and that it does not change the result."""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.engine.memory import available_bytes, batch_size_for, estep_batch_size, estep_bytes_per_image
from cryolab.errors import CryolabInputError
from cryolab.fourier import rescale
from cryolab.session import Session, Settings
from cryolab.simulate import simulate_views_2d


def test_batch_size_from_the_coarse_pass_size():
    # 2D, K = 2, psi 10 deg (36 angles), offsets 1/1 px (5 translations), 100 coarse pixels
    per_image = 24 * 2 * 36 * 5 + 8 * 5 * 100
    assert estep_bytes_per_image(2 * 36 * 5, 5, 100) == per_image
    s = Settings(K=2, psi_step_deg=10, offset_range_px=1, offset_step_px=1, batch_size=64,
                 memory_limit_GB=per_image * 10.5 / 2 ** 30)
    assert estep_batch_size(s, 2, 2, 100) == 10
    assert estep_batch_size(Settings(K=2, batch_size=64, memory_limit_GB=1e-9), 2, 2, 100) == 1
    # 3D: HEALPix order 2 (192 directions x 24 psi, 15 deg) is 4,608 orientations per class
    three = Settings(K=2, healpix_order=2, offset_range_px=3, offset_step_px=1, memory_limit_GB=0.1)
    assert estep_batch_size(three, 2, 3, 500) == int(0.1 * 2 ** 30) // estep_bytes_per_image(2 * 4608 * 29, 29, 500)
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
    for limit in (None, 5e-5):          # 50 kB: a few images per batch
        s = Session(sim.star_path, K=2, psi_step_deg=30, offset_range_px=2, seed=1, memory_limit_GB=limit)
        size = s._batch_order()[1]
        assert size == 64 if limit is None else 1 < size < 10
        s.run(2, progress=False)
        runs.append(s)
    a, b = runs
    assert np.array_equal(a.classes, b.classes) and np.allclose(a.psi, b.psi)
    assert np.allclose(a.references, b.references, rtol=1e-4, atol=1e-4 * np.abs(a.references).max())
