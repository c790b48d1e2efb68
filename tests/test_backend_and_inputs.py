"""Backend honesty, settings checks and the reference map on the particles' grid (redesign issue).

* ``backend=None`` means ``CRYOLAB_BACKEND`` (numpy when unset); ``cupy`` where CuPy cannot run is
  an error carrying CuPy's own message, from the library and from the CLI (exit 2, nothing written);
* a particle diameter larger than the box and more classes than particles are refused;
* a ``--ref`` map at another pixel size is resampled onto the particles' grid (not used as is).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from cryolab.backend import BackendError, cupy_status, resolve_backend
from cryolab.cli import main
from cryolab.data import load_demo
from cryolab.errors import CryolabInputError
from cryolab.fourier import rescale
from cryolab.io import ParticleStack, write_mrc
from cryolab.session import Session
from cryolab.simulate import simulate_particles

no_cupy = pytest.mark.skipif(cupy_status() is None, reason="CuPy runs here: the error path cannot be shown")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """40 particles of the demo 80S at 32 px (12 A/px)."""
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    out = tmp_path_factory.mktemp("small")
    sim = simulate_particles(vol, 40, d.pixel_size_A * 2, snr=1.0, seed=3, out_dir=out, name="p")
    return sim, vol, d.pixel_size_A * 2


def test_backend_none_follows_the_environment(monkeypatch):
    monkeypatch.delenv("CRYOLAB_BACKEND", raising=False)
    assert resolve_backend(None) is np
    monkeypatch.setenv("CRYOLAB_BACKEND", "numpy")
    assert resolve_backend(None) is np
    monkeypatch.setenv("CRYOLAB_BACKEND", "tpu")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        resolve_backend(None)


@no_cupy
def test_cupy_from_the_environment_without_cupy_is_a_clear_error(monkeypatch, small, tmp_path, capsys):
    sim, _, _ = small
    monkeypatch.setenv("CRYOLAB_BACKEND", "cupy")
    why = cupy_status()
    with pytest.raises(BackendError) as err:
        Session(sim.star_path, K=2)
    assert "CRYOLAB_BACKEND" in str(err.value) and why in str(err.value)
    out = tmp_path / "C2D" / "run"
    assert main(["class2d", "--i", sim.star_path, "--o", out, "--K", "2", "--iter", "1"]) == 2
    assert "cupy" in capsys.readouterr().err.lower()
    assert not (tmp_path / "C2D").exists()          # nothing written


def test_unset_backend_runs_numpy_and_run_json_says_so(monkeypatch, small, tmp_path):
    import json
    sim, _, _ = small
    monkeypatch.delenv("CRYOLAB_BACKEND", raising=False)
    s = Session(sim.star_path, K=2)
    assert s.xp is np and s.settings.backend is None
    out = tmp_path / "C2D" / "run"
    assert main(["class2d", "--i", sim.star_path, "--o", out, "--K", "2", "--iter", "1", "--quiet"]) == 0
    run = json.loads((tmp_path / "C2D" / "run.json").read_text())
    assert run["backend"] == "numpy"


def test_diameter_larger_than_the_box_and_too_many_classes_are_refused(small, caplog):
    sim, _, px = small
    box_A = 32 * px
    with pytest.raises(CryolabInputError, match="particle diameter .* larger than the box"):
        Session(sim.star_path, K=2, particle_diameter_A=box_A * 1.5)
    with pytest.raises(CryolabInputError, match="K = 41 classes for 40 particles"):
        Session(sim.star_path, K=41)
    with caplog.at_level(logging.WARNING, logger="cryolab"):
        Session(sim.star_path, K=5)
    assert "fewer than 10 particles per class" in caplog.text


def test_cli_refuses_a_diameter_larger_than_the_box(small, tmp_path, capsys):
    sim, _, _ = small
    out = tmp_path / "C2D" / "run"
    assert main(["class2d", "--i", sim.star_path, "--o", out, "--particle_diameter", "5000"]) == 2
    assert "particle_diameter" in capsys.readouterr().err
    assert not (tmp_path / "C2D").exists()


def test_reference_at_another_pixel_size_is_resampled(small, tmp_path, caplog):
    """The same map written at half the pixel size (twice the box) is brought back onto the
    particles' grid: it then equals the original within the Fourier-resampling error."""
    from cryolab.cli.common import reference_map
    sim, vol, px = small
    fine = rescale(vol, 64, ndim=3)
    path = write_mrc(tmp_path / "fine.mrc", fine, px / 2)
    with caplog.at_level(logging.WARNING, logger="cryolab"):
        got = reference_map(path, ParticleStack.from_star(sim.star_path))
    assert "resampled from 64 to 32 px" in caplog.text
    assert got.shape == vol.shape
    rel = np.linalg.norm(got - vol) / np.linalg.norm(vol)
    assert rel < 0.005, rel         # measured 3.4e-3: the Nyquist plane does not survive padding
    far = write_mrc(tmp_path / "far.mrc", vol, px * 32.5 / 32)    # 32.5 px of 12 A: no whole box within 1 %
    with pytest.raises(CryolabInputError, match="cannot resample"):
        reference_map(far, ParticleStack.from_star(sim.star_path))


def test_cpu_threads_cap_the_fft_workers():
    """The CLI's --j caps scipy.fft's workers (set_cpu_threads), not only the BLAS threads."""
    from cryolab.backend import fft_kwargs, set_cpu_threads
    try:
        set_cpu_threads(2)
        assert fft_kwargs(np) == {"workers": 2}
        set_cpu_threads(None)
        assert fft_kwargs(np) == {"workers": -1}
    finally:
        set_cpu_threads(None)
