"""The engine's forward model (what a map looks like at a pose) wired like the simulator.

The projector and CTF underneath are checked against relion_project in test_projection.py; here
the model's wiring (angle order, origin sign, per-image CTF, scale) is checked against the
simulator's bookkeeping: at the true poses, CTFs and scale the model equals the simulator's
noise-free images, the residual of a noisy image is its noise, and a mask splits the model
linearly."""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.engine.forward import particle_images, projector_of, residual_images
from cryolab.fourier import rescale
from cryolab.io import ctf_from_table
from cryolab.simulate import simulate_particles


@pytest.fixture(scope="module")
def sim():
    d = load_demo()
    vol = rescale(d.volumes["80S"], 32, ndim=3)
    px = d.pixel_size_A * 2
    s = simulate_particles(vol, 24, px, snr=0.5, seed=7, keep_clean=True, include_truth_angles=True)
    return s, vol, px


def _poses(s):
    t = s.truth
    eulers = t[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    origins = t[["origin_x_A", "origin_y_A"]].to_numpy() / s.pixel_size_A
    return eulers, origins


def test_model_at_the_true_poses_is_the_simulators_clean_image(sim):
    s, vol, px = sim
    eulers, origins = _poses(s)
    model = particle_images(projector_of(vol), eulers, origins, ctf_from_table(s.particles.merge(s.optics, on="rlnOpticsGroup")), px,
                            scale=s.info["signal_scale"])
    rel = np.linalg.norm(model - s.clean) / np.linalg.norm(s.clean)
    assert rel < 1e-6, rel        # measured 0.0 (the simulator renders with the same projector)


def test_residual_of_a_noisy_image_is_its_noise(sim):
    s, vol, px = sim
    eulers, origins = _poses(s)
    res = residual_images(s.images, projector_of(vol), eulers, origins, ctf_from_table(s.particles.merge(s.optics, on="rlnOpticsGroup")),
                          px, scale=s.info["signal_scale"])
    noise = s.images - s.clean
    # the simulator subtracts each image's background mean after adding noise: compare without means
    res = res - res.mean(axis=(1, 2), keepdims=True)
    noise = noise - noise.mean(axis=(1, 2), keepdims=True)
    rel = np.linalg.norm(res - noise) / np.linalg.norm(noise)
    assert rel < 1e-6, rel        # measured 0.0


def test_a_mask_keeps_only_its_region(sim):
    """Projection is linear: the model of V*M plus that of V*(1-M) is the model of V."""
    s, vol, px = sim
    eulers, origins = _poses(s)
    mask = np.zeros_like(vol)
    mask[:, :, :16] = 1
    whole = particle_images(projector_of(vol), eulers[:4], origins[:4])
    parts = (particle_images(projector_of(vol, mask), eulers[:4], origins[:4])
             + particle_images(projector_of(vol, 1 - mask), eulers[:4], origins[:4]))
    assert np.linalg.norm(parts - whole) / np.linalg.norm(whole) < 1e-5
    with pytest.raises(ValueError, match="mask shape"):
        projector_of(vol, mask[:-1])


def test_bayes_optimal_accuracy_limits(sim):
    """Noise-free images are classified perfectly (their own class has likelihood exactly 1, the
    log 0); two identical maps leave only the tie (the first class), and per-class poses work
    like per-class maps (a 2D set of views)."""
    from cryolab.engine.forward import bayes_optimal_accuracy, class_log_likelihoods
    s, vol, px = sim
    eulers, origins = _poses(s)
    ctf = ctf_from_table(s.particles.merge(s.optics, on="rlnOpticsGroup"))
    other = np.ascontiguousarray(np.rot90(vol, axes=(1, 2)))
    truth = np.arange(len(s.clean)) % 2
    clean = np.where(truth[:, None, None] == 0, s.clean, particle_images(projector_of(other), eulers, origins, ctf,
                                                                         px, scale=s.info["signal_scale"]))
    ll = class_log_likelihoods(clean, [vol, other], eulers, origins, ctf, px, scale=s.info["signal_scale"])
    assert np.abs(ll[np.arange(len(truth)), truth]).max() < 1e-6
    assert bayes_optimal_accuracy(clean, [vol, other], eulers, truth, origins, ctf, px,
                                  scale=s.info["signal_scale"]) == 1.0
    assert bayes_optimal_accuracy(s.images, [vol, vol], eulers, truth, origins, ctf, px) == np.mean(truth == 0)
    views = np.stack([eulers, eulers + [0.0, 90.0, 0.0]], axis=1)        # two views of one map
    ll_views = class_log_likelihoods(s.clean, vol, views, origins, ctf, px, scale=s.info["signal_scale"])
    assert (np.argmax(ll_views, axis=1) == 0).all()
