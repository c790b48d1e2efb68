"""GPU readiness without a GPU: the engine on a strict CuPy stand-in that records host transfers.

``strict_device`` (next to this file) fakes CuPy on NumPy with CuPy's strict rules (no implicit
conversion to NumPy, no mixing of host and device arrays) and records every transfer. On it:

* an E-step batch (2D, 3D global with oversampling, 3D local) gives exactly NumPy's results, and
  nothing bigger than per-image or per-orientation results comes back to the host inside the
  batch: every transfer is below one byte per 8 coarse samples (a per-sample array, e.g. the
  boolean mask of significant samples, is at least 8 times bigger);
* whole ``Session.step`` iterations give NumPy's classes and references.

With a real GPU (``CRYOLAB_BACKEND=cupy`` and CuPy seeing one), the last test compares CuPy with
NumPy on the same iterations.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from cryolab.backend import cupy_available, to_numpy
from cryolab.engine.driver import EStepWorker
from cryolab.session import Session

sys.path.insert(0, str(Path(__file__).parent))
import strict_device  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 2D set (3 views, 24 px) and a 3D set (two demo states, 16 px)."""
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.simulate import simulate_particles, simulate_views_2d
    demo = load_demo()
    folder = tmp_path_factory.mktemp("gpu_ready")
    vol = rescale(demo.volumes["80S"], 24, ndim=3)
    two = simulate_views_2d(vol, 32, 16.0, n_views=3, snr=0.5, seed=1, out_dir=folder, name="views")
    maps = {k: rescale(demo.volumes[k], 16, ndim=3) for k in ("80S", "60S")}
    three = simulate_particles(maps, 24, 24.0, snr=1.0, seed=2, out_dir=folder, name="states")
    return {"2d": two, "3d": three, "maps": np.stack(list(maps.values()))}


SETTINGS = {"2d": dict(K=3, psi_step_deg=15, offset_range_px=3, offset_step_px=1, ctf=True, seed=0),
            "3d": dict(K=2, healpix_order=1, offset_range_px=2, offset_step_px=1, ctf=True, seed=0,
                       ini_high_A=60.0)}


def _session(data, kind, **extra):
    sim = data["2d" if kind == "2d" else "3d"]
    refs = None if kind == "2d" else data["maps"]
    kw = dict(SETTINGS[kind], **extra)
    return Session(str(sim.star_path), references=refs, **kw) if refs is not None else \
        Session(str(sim.star_path), **kw)


def test_the_stand_in_is_strict_and_records_transfers(monkeypatch):
    strict_device.install(monkeypatch)
    import cupy
    from cryolab.backend import get_xp
    a = cupy.asarray(np.arange(6, dtype=np.float32))
    assert get_xp(a) is cupy and strict_device.TRANSFERS == [("to_device", 24, "?")]
    with pytest.raises(TypeError):
        np.asarray(a)                                  # implicit conversion
    with pytest.raises(TypeError):
        a + np.ones(6, np.float32)                      # host and device mixed
    with pytest.raises(TypeError):
        cupy.where(np.ones(6, bool), a, 0)
    s = (a * 2).sum()
    assert type(s).__name__ == "DeviceArray"            # reductions stay on the device
    assert float(s) == 30.0 and to_numpy(a[1:3]).tolist() == [1.0, 2.0]
    assert [t[:2] for t in strict_device.TRANSFERS[1:]] == [("to_host", 4), ("to_host", 8)]


@pytest.mark.parametrize("kind", ["2d", "3d", "3d-local"])
def test_estep_batch_brings_back_per_image_results_only(data, kind, monkeypatch):
    s = _session(data, kind.split("-")[0])
    s.step()                                           # references, noise and angles from the data
    if kind == "3d-local":
        s.set(sigma_ang_deg=20.0, healpix_order=2)
    inputs = s.estep_inputs()
    rows = np.arange(16)
    host = EStepWorker(inputs, s.particles).run(rows, s.offsets_px[rows], s.eulers[rows])
    strict_device.install(monkeypatch)
    on_device = dataclasses.replace(inputs, settings=dataclasses.replace(inputs.settings, backend="cupy"))
    worker = EStepWorker(on_device, s.particles)
    coarse = worker.coarse if worker.coarse is not None else worker._local(s.eulers[rows], rows)[0]
    n_samples = len(rows) * coarse.trans.shape[0] * len(coarse.classes)
    strict_device.TRANSFERS.clear()
    dev = worker.run(rows, s.offsets_px[rows], s.eulers[rows])
    to_host = [(b, where) for d, b, where in strict_device.TRANSFERS if d == "to_host"]
    assert to_host, "the per-image results come back"
    biggest = max(to_host)
    assert biggest[0] < n_samples / 8, f"{biggest[0]} bytes to the host at {biggest[1]} ({n_samples} samples)"
    for name in ("classes", "eulers", "offsets", "pmax", "n_significant", "loglik", "class_posterior"):
        np.testing.assert_array_equal(getattr(dev, name), getattr(host, name), err_msg=name)
    sums = worker.finish()
    ref = EStepWorker(inputs, s.particles)
    ref.run(rows, s.offsets_px[rows], s.eulers[rows])
    ref_sums = ref.finish()
    for bp, bp0 in zip(sums.bps, ref_sums.bps):
        np.testing.assert_array_equal(to_numpy(bp.data), bp0.data)


def test_session_steps_on_the_stand_in_equal_numpy(data, monkeypatch):
    host = _session(data, "2d")
    host.run(2, progress=False)
    strict_device.install(monkeypatch)
    dev = _session(data, "2d", backend="cupy")
    dev.run(2, progress=False)
    np.testing.assert_array_equal(dev.classes, host.classes)
    np.testing.assert_array_equal(to_numpy(dev.references), to_numpy(host.references))


@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a GPU (set CRYOLAB_BACKEND=cupy on a GPU machine)")
def test_cupy_iterations_match_numpy(data):
    host = _session(data, "3d", backend="numpy")
    host.run(2, progress=False)
    dev = _session(data, "3d", backend="cupy")
    dev.run(2, progress=False)
    assert np.mean(dev.classes == host.classes) >= 0.95
    ref, got = to_numpy(host.references), to_numpy(dev.references)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.999
