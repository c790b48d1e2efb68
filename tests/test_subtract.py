"""Partial signal subtraction: against the simulator's truth, RELION's relion_particle_subtract on
the same refined run, and the exact way back (revert)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import requires_relion
from cryolab.data import load_demo
from cryolab.engine.forward import particle_images, projector_of
from cryolab.errors import CryolabInputError
from cryolab.fourier import rescale
from cryolab.io import ParticleStack, read_mrc, read_star, write_mrc
from cryolab.masks import component_mask, sphere_mask
from cryolab.methods.subtract import SubtractedParticles, revert_subtraction, subtract_particles
from cryolab.simulate import simulate_particles, write_simulation

BOX = 32


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """60 particles of the demo 80S at 32 px (12 A/px), random poses, CTF, SNR 0.5, written with
    their true poses; the keep mask is RACK1's (the part to study), brought to 32 px."""
    d = load_demo()
    px = d.pixel_size_A * d.box_size / BOX
    vol = rescale(d.volumes["80S"], BOX, ndim=3)
    keep = np.clip(rescale(component_mask("RACK1"), BOX, ndim=3), 0, 1)
    sim = simulate_particles(vol, 60, px, snr=0.5, seed=11, keep_clean=True, include_truth_angles=True)
    folder = tmp_path_factory.mktemp("sub")
    star = write_simulation(sim, folder, "parts", include_truth_angles=True)
    return sim, vol, keep, px, folder, star


def _truth(sim):
    t = sim.truth
    return t[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy(), t[["origin_x_A", "origin_y_A"]].to_numpy() / sim.pixel_size_A


def test_subtracted_images_are_noise_plus_the_kept_part(case):
    """With the true map, poses, CTFs and scale: ||S - noise - P(V M)|| / ||P(V (1-M))|| <= 0.01."""
    sim, vol, keep, px, _, star = case
    stack = ParticleStack.from_star(star)
    s = sim.info["signal_scale"]
    S = SubtractedParticles(stack, vol, keep, scale=s).read()
    eulers, origins = _truth(sim)
    kept = particle_images(projector_of(vol, keep), eulers, origins, stack.ctf(), px, scale=s)
    removed = particle_images(projector_of(vol, 1 - keep), eulers, origins, stack.ctf(), px, scale=s)
    noise = sim.images - sim.clean
    rel = np.linalg.norm(S - noise - kept) / np.linalg.norm(removed)
    assert rel <= 1e-5, rel          # measured 2.4e-7 (the issue asks <= 0.01): projection is linear


def test_written_subtraction_recentred_windowed_and_reverted(case, tmp_path, monkeypatch):
    sim, vol, keep, px, folder, star = case
    monkeypatch.chdir(folder)
    stack = ParticleStack.from_star(star)
    sub = subtract_particles(stack, vol, keep, tmp_path / "Sub", scale=sim.info["signal_scale"],
                             recenter="mask", new_box=20)
    assert sub.box_size == 20 and len(sub) == len(stack)
    table = read_star(tmp_path / "Sub" / "particles_subtracted.star")["particles"]
    assert list(table["rlnImageOriginalName"]) == stack.image_names_for(None)
    assert np.abs(sub.origins_A()).max() <= 0.5 * px * np.sqrt(2) + 1e-6     # remainders only
    back = revert_subtraction(tmp_path / "Sub" / "particles_subtracted.star", tmp_path / "orig.star")
    np.testing.assert_array_equal(back.read(), stack.read())
    np.testing.assert_allclose(back.origins_A(), stack.origins_A(), atol=1e-4)
    np.testing.assert_allclose(back.eulers(), stack.eulers(), atol=1e-4)
    assert back.box_size == BOX


def test_recentring_puts_the_kept_region_at_the_image_centre(case, tmp_path, monkeypatch):
    """A small bright ball off-centre in the map, kept; everything else subtracted: after
    re-centring on the mask, the ball's image is centred in every particle (within 1 px)."""
    sim, _, _, px, folder, _ = case
    monkeypatch.chdir(folder)
    ball_at = np.array([48.0, -36.0, 24.0])                     # A from the box centre
    ball = sphere_mask(BOX, px, 14.0, ball_at, soft_edge_A=0.0) * 5.0
    clean = simulate_particles(ball, 30, px, snr=np.inf, seed=5, include_truth_angles=True,
                               defocus_range_A=(1000.0, 1000.1))
    star = write_simulation(clean, tmp_path, "ball", include_truth_angles=True)
    keep = sphere_mask(BOX, px, 30.0, ball_at, soft_edge_A=12.0)
    sub = subtract_particles(star, ball, keep, tmp_path / "Sub", recenter="mask", new_box=16)
    imgs = sub.read()
    peaks = np.array([np.unravel_index(np.argmax(np.abs(im)), im.shape) for im in imgs]) - 8
    assert np.abs(peaks).max() <= 1, peaks       # measured 1: the shift is rounded to whole pixels


def test_bad_inputs_are_refused_before_writing(case, tmp_path):
    sim, vol, keep, px, folder, star = case
    stack = ParticleStack.from_star(star)
    with pytest.raises(CryolabInputError, match="empty"):
        subtract_particles(stack, vol, np.zeros_like(keep), tmp_path / "A")
    with pytest.raises(CryolabInputError, match="whole box"):
        subtract_particles(stack, vol, np.ones_like(keep), tmp_path / "B")
    with pytest.raises(CryolabInputError, match="need \\(32, 32, 32\\)"):
        subtract_particles(stack, vol, keep[:-2, :-2, :-2], tmp_path / "C")
    with pytest.raises(CryolabInputError, match="_rlnAngleRot"):
        no_pose = stack.with_table(stack.table.drop(columns=["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]))
        subtract_particles(no_pose, vol, keep, tmp_path / "D")
    with pytest.raises(CryolabInputError, match="new box"):
        subtract_particles(stack, vol, keep, tmp_path / "E", new_box=40)
    assert not any((tmp_path / x).exists() for x in "ABCDE")


@pytest.mark.relion
def test_matches_relion_particle_subtract(case, tmp_path):
    """The same refined run (relion_refine --skip_align, K=1, one iteration, on the true poses)
    subtracted by RELION and by cryolab with RELION's map: the signal each removed from each image
    (data minus subtracted image) agrees (correlation >= 0.99 per image)."""
    refine = requires_relion("relion_refine")
    subtract = requires_relion("relion_particle_subtract")
    sim, vol, keep, px, folder, star = case
    work = tmp_path
    write_simulation(sim, work, "parts", include_truth_angles=True)
    write_mrc(work / "map.mrc", vol, px)
    write_mrc(work / "keep.mrc", keep, px)
    (work / "Opt").mkdir()
    run = lambda cmd: subprocess.run(cmd, cwd=work, capture_output=True, text=True)   # noqa: E731
    r = run([refine, "--i", "parts.star", "--o", "Opt/run", "--ref", "map.mrc", "--skip_align", "--K", "1",
             "--iter", "1", "--particle_diameter", str(0.9 * BOX * px), "--ctf", "--flatten_solvent",
             "--zero_mask", "--ini_high", "30", "--random_seed", "0", "--j", "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    r = run([subtract, "--i", "Opt/run_it001_optimiser.star", "--mask", "keep.mrc", "--o", "Sub/"])
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = ParticleStack.from_star(work / "Sub" / "particles_subtracted.star")
    ref, _ = read_mrc(work / "Opt" / "run_it001_class001.mrc")
    current = int(read_star(work / "Opt" / "run_it001_model.star")["model_general"]["rlnCurrentImageSize"].iloc[0])
    stack = ParticleStack.from_star(work / "parts.star")
    ours = SubtractedParticles(stack, ref, keep, max_resolution_A=BOX * px / min(current / 2, BOX / 2))
    data = stack.read()
    d_theirs, d_ours = data - theirs.read(), data - ours.read()
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(d_theirs, d_ours)]
    assert min(corr) >= 0.9999, (min(corr), np.median(corr))   # measured min 0.9999989 (asked: 0.99)


def test_poses_of_another_map_are_refused(case, tmp_path):
    """The same particles against the map turned by 90 degrees (poses that refer to another frame)."""
    from cryolab.methods.subtract import check_poses_match
    sim, vol, keep, px, folder, star = case
    stack = ParticleStack.from_star(star)
    assert check_poses_match(stack, vol) > 0.1                  # measured gain 0.29 (0.10 at SNR 0.05)
    turned = np.ascontiguousarray(np.rot90(vol, axes=(0, 2)))
    with pytest.raises(CryolabInputError, match="poses do not fit this map"):
        subtract_particles(stack, turned, keep, tmp_path / "Turned")
    assert not (tmp_path / "Turned").exists()
