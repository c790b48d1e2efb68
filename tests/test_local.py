"""Local angular searches (``sigma_ang_deg``) and fixed-angle focused classification
(``skip_align`` with a ``reference_mask``) on small simulated sets with known angles."""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.engine.spherical import local_log_prior
from cryolab.fourier import lowpass, rescale
from cryolab.geometry import angular_distance
from cryolab.methods import class3d
from cryolab.session import Session, Settings
from cryolab.simulate import simulate_particles
from cryolab.validation import auto_mask, class_accuracy


@pytest.fixture(scope="module")
def demo32():
    d = load_demo()
    return {k: rescale(d.volumes[k], 32, ndim=3) for k in ("80S", "60S")}, d.pixel_size_A * 2


def test_local_searches_stay_within_three_sigma_and_refine(demo32, tmp_path):
    vols, pix = demo32
    sim = simulate_particles({"80S": vols["80S"]}, 200, pix, snr=1.0, seed=3, out_dir=tmp_path, name="p",
                             include_truth_angles=True)
    truth = sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    start = truth + np.random.default_rng(0).normal(scale=4.0, size=truth.shape)
    s = Session(sim.star_path, K=1, references=lowpass(vols["80S"], 30, pix, ndim=3)[None], healpix_order=2,
                offset_range_px=2, oversampling=1, ini_high_A=30, firstiter_cc=True, sigma_ang_deg=10.0)
    s.eulers[:] = start
    for _ in range(3):
        prior = s.eulers.copy()
        s.step()
        for i in range(len(prior)):          # every sample with weight lies within 3 sigma of the prior
            _, orients, _, prob = s.top_samples[i]
            assert np.isfinite(local_log_prior(prior[i:i + 1], orients[prob > 0], 10.0)).all(), i
    err = angular_distance(s.eulers, truth)
    assert np.median(err) < 6.0, np.median(err)      # fine step 7.5 deg; start was ~6 deg off


def test_local_log_prior_keeps_the_nearest_when_none_is_inside():
    lp = local_log_prior([[0.0, 90.0, 0.0]], [[90.0, 90.0, 0.0], [45.0, 90.0, 0.0]], 1.0)
    assert lp[0, 1] == 0.0 and np.isneginf(lp[0, 0])
    with pytest.raises(Exception):
        Settings(sigma_ang_deg=-1)


def test_fixed_angle_classification_with_mask_separates_states(demo32, tmp_path):
    vols, pix = demo32
    sim = simulate_particles(vols, 300, pix, snr=1.0, seed=4, out_dir=tmp_path, name="two",
                             include_truth_angles=True)
    diff = lowpass(np.abs(vols["80S"] - vols["60S"]), 30, pix, ndim=3)
    mask = auto_mask(diff, 0.2 * diff.max(), extend_px=1, soft_edge_px=3)
    consensus = 0.5 * (vols["80S"] + vols["60S"])
    s = class3d(sim.star_path, consensus, K=2, iterations=5, ini_high_A=30, skip_align=True, reference_mask=mask,
                healpix_order=1, oversampling=0, progress=False, out_dir=tmp_path / "run")
    assert class_accuracy(s.classes, sim.truth["class_index"].to_numpy()) >= 0.85
    truth = sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    assert angular_distance(s.eulers, truth).max() < 1e-3            # angles kept
    assert np.allclose(s.offsets_px * pix, s.particles.origins_A())    # offsets kept
    assert (tmp_path / "run" / "run_reference_mask.mrc").exists()
    assert Session.resume(tmp_path / "run").reference_mask_array().shape == (32,) * 3


def test_fixed_angle_sums_do_not_mix_particles_across_batches(demo32, tmp_path):
    """skip_align: particles of different batches with the same psi keep their own orientation
    when the M-step sums are merged by key (small batches give the same map as one batch)."""
    vols, pix = demo32
    rng = np.random.default_rng(7)
    eulers = np.column_stack([rng.uniform(-180, 180, 40), rng.uniform(0, 180, 40), np.full(40, 30.0)])
    sim = simulate_particles({"80S": vols["80S"]}, 40, pix, eulers=eulers, snr=2.0, seed=5, out_dir=tmp_path,
                             name="p", include_truth_angles=True)
    maps = []
    for batch in (64, 4):
        s = Session(sim.star_path, K=1, references=lowpass(vols["80S"], 30, pix, ndim=3)[None], skip_align=True,
                    ini_high_A=30, healpix_order=1, oversampling=0, batch_size=batch)
        s.step()
        maps.append(s.references[0])
    assert np.allclose(maps[0], maps[1], atol=1e-4 * np.abs(maps[0]).max())


def test_local_scores_per_image_equal_the_union_gemm(demo32, tmp_path, monkeypatch):
    """Local searches score each image against its own orientations (engine.expectation.score_subsets)
    when the prior leaves most of the batch's union out; the result equals the union GEMM's."""
    from cryolab.engine import expectation
    vols, pix = demo32
    sim = simulate_particles({"80S": vols["80S"]}, 48, pix, snr=1.0, seed=5, out_dir=tmp_path, name="p",
                             include_truth_angles=True)
    runs = []
    for share in (0.0, 1.01):          # never / always per image
        monkeypatch.setattr(expectation, "SPARSE_BELOW", share)
        s = Session(sim.star_path, K=1, references=lowpass(vols["80S"], 30, pix, ndim=3)[None], healpix_order=2,
                    offset_range_px=2, oversampling=1, ini_high_A=30, sigma_ang_deg=6.0, batch_size=16)
        s.estep()
        runs.append((s.eulers.copy(), s.offsets_px.copy(), s.loglik.copy()))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert np.allclose(runs[0][2], runs[1][2], rtol=1e-5, atol=1e-2)
