"""Initial models from the particles alone (stochastic EM) and map superposition.

Oracles: the schedule against its definition (linear in spatial frequency and subset size);
map superposition against exact 90-degree rotations, whole-pixel shifts and a mirror (no
interpolation in the truth); centring against the centre of mass computed by hand; the initial
model against the simulation's true map after superposition allowing for the hand; a resumed
run against the uninterrupted one. The CI set is small (32 px, 12 A pixels); the issue's sizes
(64 px, 3,000 particles, SNR 0.05, three seeds, K = 2, RELION's --denovo_3dref --sgd) are in
``benchmarks/initial_model.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.cli.main import main
from cryolab.data import load_demo
from cryolab.errors import CryolabInputError
from cryolab.fourier import fourier_crop
from cryolab.io import ParticleStack, read_mrc
from cryolab.methods.initial_model import InitialModel, SGDSchedule, centre_map
from cryolab.simulate import simulate_particles
from cryolab.validation import fsc
from cryolab.validation.align import align_maps, align_symmetry, mirror_map, rotate_map, symmetrise_map

BOX = 32
PX = 6.0 * 64 / BOX
#: the CI schedule: 48 A -> 30 A (Nyquist 24 A), mini-batches of 60 -> 200 particles
SMALL = SGDSchedule(ini_iter=3, inbetween_iter=6, fin_iter=3, ini_resol_A=48, fin_resol_A=30,
                    ini_subset=60, fin_subset=200)


@pytest.fixture(scope="module")
def maps():
    d = load_demo()
    return {k: fourier_crop(d.volumes[k], BOX, ndim=3).astype(np.float32) for k in ("80S", "60S")}


@pytest.fixture(scope="module")
def particles(tmp_path_factory, maps):
    d = tmp_path_factory.mktemp("im")
    sim = simulate_particles({"80S": maps["80S"]}, 500, PX, snr=1.0, seed=4, out_dir=d, name="one")
    return ParticleStack.from_star(sim.star_path)


# ---------------------------------------------------------------------- schedule
def test_schedule_follows_its_definition():
    s = SGDSchedule(ini_iter=2, inbetween_iter=3, fin_iter=2, ini_resol_A=40, fin_resol_A=20,
                    ini_subset=100, fin_subset=500, ini_stepsize=0.5, fin_stepsize=0.1)
    steps = s.steps()
    assert len(steps) == s.n_iter == 7
    assert [st.subset for st in steps] == [100, 100, 200, 300, 400, 500, 500]
    # resolution linear in spatial frequency: 1/40 -> 1/20 in quarters
    inv = [1 / st.resolution_A for st in steps]
    np.testing.assert_allclose(inv, [1 / 40, 1 / 40, 0.03125, 0.0375, 0.04375, 0.05, 0.05], rtol=1e-12)
    np.testing.assert_allclose([st.stepsize for st in steps], [0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1], rtol=1e-12)
    assert s.at(100).resolution_A == pytest.approx(20.0)


def test_sigma2_fudge_follows_relions_hyperbola():
    """RELION 3.1: fudge = f + (1 - f) ini, f = NN / (NN + halflife), NN = iteration (from 1) x
    mini-batch size; a halflife <= 0 (RELION's default -1) leaves the noise as it is."""
    s = SGDSchedule(ini_iter=2, inbetween_iter=3, fin_iter=2, ini_subset=100, fin_subset=500,
                    sigma2fudge_ini=8, sigma2fudge_halflife=1000)
    # NN = 100, 200, 600, 1200, 2000, 3000, 3500 particles
    expected = [1 + 7 * 1000 / (1000 + nn) for nn in (100, 200, 600, 1200, 2000, 3000, 3500)]
    np.testing.assert_allclose([st.sigma2_fudge for st in s.steps()], expected, rtol=1e-12)
    assert s.changed(sigma2fudge_halflife=500).at(4).sigma2_fudge == pytest.approx(1 + 7 / 5)  # 2000 = 4 halflives
    assert SGDSchedule(sigma2fudge_halflife=-1).at(0).sigma2_fudge == 1.0


@pytest.mark.parametrize("change, field", [({"ini_iter": -1}, "sgd_ini_iter"), ({"fin_resol_A": 0}, "sgd_fin_resol"),
                                           ({"ini_subset": 0}, "sgd_ini_subset"),
                                           ({"fin_stepsize": 1.5}, "sgd_fin_stepsize"),
                                           ({"sigma2fudge_ini": 0.5}, "sgd_sigma2fudge_initial"),
                                           ({"ini_iter": 0, "inbetween_iter": 0, "fin_iter": 0}, "sgd_ini_iter")])
def test_schedule_rejects_bad_values(change, field):
    with pytest.raises(CryolabInputError) as e:
        SGDSchedule(**change)
    assert e.value.field == field


# ---------------------------------------------------------------------- superposition and centring
def test_align_maps_recovers_an_exact_rotation_shift_and_mirror(maps):
    v = maps["80S"]
    # an exact quarter turn about z (np.rot90 in the y-x plane, re-centred on pixel N//2: no interpolation)
    turned = np.roll(np.rot90(v, 1, axes=(1, 2)), 1, axis=1)
    moved = np.roll(mirror_map(turned), (2, -1, 1), axis=(0, 1, 2))
    a = align_maps(moved, v, PX, resolution_A=30)
    assert a.mirrored
    # undo by hand: the rotation found, applied to the mirrored map, must equal the quarter turn's inverse
    R_true = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    angle = np.degrees(np.arccos(np.clip((np.trace(a.R @ R_true) - 1) / 2, -1, 1)))
    assert angle < 3.0              # measured 1.2 deg at 64 px; the simplex stops at 0.2 deg steps
    f = fsc(a.aligned, v)
    assert f[1:BOX // 2 - 4].min() > 0.9        # measured > 0.93 up to shell 12
    # and the wrong hand alone scores lower than the right one
    wrong = align_maps(moved, v, PX, resolution_A=30, try_mirror=False)
    assert wrong.cc < a.cc - 0.05


def test_rotate_map_matches_a_quarter_turn(maps):
    v = maps["80S"]
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])      # x -> y: W(x) = V(R^T x)
    w = rotate_map(v, R)
    z, y, x = np.indices(v.shape) - BOX // 2
    # V(R^T x) = V(y, -x, z) in (x, y, z); inside the box only
    src = (z + BOX // 2, -x + BOX // 2, y + BOX // 2)
    ok = (src[1] >= 0) & (src[1] < BOX) & (src[2] >= 0) & (src[2] < BOX)
    expect = np.zeros_like(v)
    expect[ok] = v[src[0][ok], src[1][ok], src[2][ok]]
    np.testing.assert_allclose(w, expect, atol=1e-5)


def test_centre_map_puts_the_centre_of_mass_at_the_box_centre(maps):
    v = np.roll(maps["80S"], (3, -2, 4), axis=(0, 1, 2))
    c, shift = centre_map(v)
    pos = np.clip(c, 0, None)
    com = [float((pos.sum(axis=tuple(j for j in range(3) if j != a)) * np.arange(BOX)).sum() / pos.sum())
           for a in range(3)]
    assert np.all(np.abs(np.array(com) - BOX // 2) <= 0.5)
    np.testing.assert_array_equal(np.roll(v, tuple(shift[::-1].astype(int)), axis=(0, 1, 2)), c)


_INSIDE = np.sum((np.indices((BOX,) * 3) - BOX // 2) ** 2, axis=0) <= (BOX // 2 - 2) ** 2


def _quarter_turns(v):
    """The C4 average of ``v`` about z from exact quarter turns (np.rot90 re-centred on N // 2)."""
    shifts = {1: (1, 0), 2: (1, 1), 3: (0, 1)}
    return np.mean([v] + [np.roll(np.rot90(v, k, axes=(1, 2)), shifts[k], axis=(1, 2)) for k in (1, 2, 3)], axis=0)


def test_symmetrise_map_equals_exact_quarter_turns(maps):
    c4 = symmetrise_map(maps["80S"], "C4")
    exact = _quarter_turns(maps["80S"])
    # cubic-spline quarter turns are exact on the grid; they differ only where np.roll wraps the
    # box edge round (rotate_map fills zeros): compare inside the sphere of radius N/2 - 2
    assert np.abs(c4 - exact)[_INSIDE].max() <= 1e-5 * np.abs(exact).max()


@pytest.mark.parametrize("sym", ["C4", "D2"])
def test_align_symmetry_finds_the_axes_of_a_turned_map(maps, sym):
    """A symmetric map turned by a known rotation: the rotation found brings its axes back onto
    the group's (C4: the 4-fold onto z, measured 0.07 deg; D2: the three 2-folds onto the
    coordinate axes in some order), and the turned map correlates with its mates (measured 0.987
    for both, 0.82 before the turn)."""
    from cryolab.geometry.euler import euler_to_matrix
    m = _quarter_turns(maps["80S"]) if sym == "C4" else symmetrise_map(maps["80S"], "D2")
    R0 = euler_to_matrix(40.0, 65.0, 20.0)
    a = align_symmetry(rotate_map(m, R0, order=3), sym, PX, resolution_A=30)
    back = a.R @ R0
    if sym == "C4":
        assert np.degrees(np.arccos(min(1.0, abs(back[2, 2])))) <= 1.0
    else:                               # a signed permutation: every column along a coordinate axis
        assert np.degrees(np.arccos(np.clip(np.abs(back).max(axis=0), -1, 1))).max() <= 1.0
    assert a.cc >= 0.97 and a.cc_before <= 0.9
    # the symmetrised map is the aligned one averaged over the group
    np.testing.assert_allclose(a.symmetrised, symmetrise_map(a.aligned, sym), rtol=0, atol=1e-6 * np.abs(m).max())


# ---------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_anything_is_written(particles, tmp_path):
    with pytest.raises(CryolabInputError) as e:
        InitialModel(particles, 1, schedule=SMALL.changed(fin_subset=600))
    assert e.value.field == "sgd_fin_subset" and "fewer than a mini-batch" in str(e.value)
    # with K = 2 the sizes are per class: 2 x 300 > 500 particles, refused; the whole-batch meaning is not
    with pytest.raises(CryolabInputError) as e:
        InitialModel(particles, 2, schedule=SMALL.changed(fin_subset=300), n_starts=1)
    assert e.value.field == "sgd_fin_subset" and "mini-batch of 600" in str(e.value) and "per class" in str(e.value)
    whole = InitialModel(particles, 2, schedule=SMALL.changed(fin_subset=300, subset_per_class=False), n_starts=1)
    assert whole.subset_at(SMALL.n_iter - 1) == 300
    with pytest.raises(CryolabInputError) as e:
        InitialModel(particles, 1, schedule=SMALL.changed(fin_resol_A=20))     # Nyquist is 24 A
    assert e.value.field == "sgd_fin_resol" and "Nyquist" in str(e.value)
    with pytest.raises(CryolabInputError) as e:
        InitialModel(particles, 1, schedule=SMALL, sym="Q7")
    assert e.value.field == "sym"
    out = tmp_path / "IM"
    for extra in (["--sgd_fin_subset", "900"], ["--sgd_fin_resol", "10"], ["--sym", "X2"]):
        assert main(["initial_model", "--i", str(particles.star_path), "--o", str(out), "--quiet", *extra]) == 2
        assert not out.exists()


# ---------------------------------------------------------------------- the method
@pytest.fixture(scope="module")
def model(particles):
    im = InitialModel(particles, 1, schedule=SMALL, seed=1, particle_diameter_A=330)
    im.run(progress=False)
    return im


def test_annealed_estep_tempers_the_likelihood(particles):
    """The E-step with the noise variance times F sees the log-likelihood divided by F: for two
    samples of one image with the same offset (whose prior terms are equal) the log-ratio of their
    posteriors is 1/F of the one without the fudge (analytic; checked on the samples both E-steps
    kept). The M-step's noise estimate is left unfudged."""
    fudge = 1 + 7 * 300 / (300 + 60)                                # iteration 1 of 60 particles, halflife 300
    ims = [InitialModel(particles, 1, schedule=SMALL.changed(sigma2fudge_halflife=h), seed=3,
                        particle_diameter_A=330) for h in (-1, 300)]
    for im in ims:
        im.step()
    assert [im.history[0].sigma2_fudge for im in ims] == [1.0, pytest.approx(fudge)]
    rows = ims[0].minibatch(0)
    ratios = []
    for i in rows[:20]:
        plain, hot = ({(int(c), *np.round(o[:3], 3), *np.round(t, 3)): float(p)
                       for c, o, t, p in zip(*im.session.top_samples[i])} for im in ims)
        common = [k for k in plain if k in hot and plain[k] > 1e-30 and hot[k] > 1e-30]
        for a in common:
            for b in common:
                if a[4:] == b[4:] and a < b:
                    ratios.append((np.log(plain[a] / plain[b]), np.log(hot[a] / hot[b])))
    r = np.array(ratios)
    assert len(r) >= 20 and np.abs(r[:, 0]).max() > 1.0              # pairs whose posteriors differ
    np.testing.assert_allclose(r[:, 1], r[:, 0] / fudge, rtol=1e-3, atol=1e-3)
    # the noise spectrum after the M-step is of the same order with and without the fudge (not x F)
    s2 = [np.asarray(im.session.sigma2)[2:8] for im in ims]
    assert np.all(s2[1] / s2[0] < 1.5)


def test_initial_model_matches_the_true_map_up_to_the_hand(model, maps):
    m = model.maps(centred=True)[0]
    a = align_maps(m, maps["80S"], PX, resolution_A=30)
    f = fsc(a.aligned, maps["80S"])
    shell_40A = BOX * PX / 40
    assert np.interp(shell_40A, np.arange(f.size), f) >= 0.5
    # the history follows the schedule
    assert [h.subset for h in model.history] == [st.subset for st in SMALL.steps()]
    assert model.finished


def test_maps_are_zero_outside_the_particle_and_never_negative(model, particles):
    """After every mini-batch the maps are non-negative and zero beyond the particle's radius plus
    the mask's 3-pixel edge (counted on the voxel grid by hand); the same step without the two
    constraints leaves negative density and density outside (so the check can fail)."""
    refs = np.asarray(model.references)
    z, y, x = np.indices(refs.shape[1:]) - BOX // 2
    outside = np.sqrt(x ** 2 + y ** 2 + z ** 2) > 330 / PX / 2 + 3
    assert refs.min() >= 0.0 and np.all(refs[:, outside] == 0.0)
    free = InitialModel(particles, 1, schedule=SMALL, seed=1, particle_diameter_A=330, flatten_solvent=False,
                        nonnegative=False)
    free.step()
    m = np.asarray(free.references)[0]
    assert m.min() < -0.05 * m.max() and np.abs(m[outside]).max() > 0.01 * m.max()


def test_symmetric_particles_give_a_symmetrised_map_on_the_groups_axes(maps, tmp_path):
    """C4 particles: the mini-batches run in C1, the result is turned onto the 4-fold and
    averaged over C4; it is C4-symmetric about z (measured to 1.4e-7 of the peak) and closer to
    the truth than the C1 map it came from (FSC at 40 A measured 0.91 symmetrised vs 0.82 C1 with
    the constraints and three starts; 0.70 vs 0.51 before them; the group imposed from the blob
    onwards gave FSC < 0.5 beyond 77 A); the turned map correlates with its mates at 0.96 (0.88
    before the turn)."""
    truth = _quarter_turns(maps["80S"])
    sim = simulate_particles({"c4": truth}, 400, PX, snr=1.0, seed=4, out_dir=tmp_path, name="c4")
    im = InitialModel(sim.star_path, 1, schedule=SMALL, seed=1, sym="C4", particle_diameter_A=330)
    assert im.session.settings.sym == "C1"
    im.run(progress=False)
    sym_map, c1_map = im.maps()[0], im.maps(symmetrised=False)[0]
    assert np.abs(_quarter_turns(sym_map) - sym_map)[_INSIDE].max() <= 1e-5 * np.abs(sym_map).max()
    shell_40A = BOX * PX / 40
    at40 = [np.interp(shell_40A, np.arange(BOX // 2 + 1), fsc(align_maps(m, truth, PX, resolution_A=30).aligned, truth))
            for m in (sym_map, c1_map)]
    assert at40[0] >= at40[1] + 0.05 and at40[0] >= 0.8, at40
    assert im.symmetry()[0].cc >= 0.93


def test_resumed_run_continues_as_the_uninterrupted_one(particles, tmp_path):
    short = SGDSchedule(ini_iter=1, inbetween_iter=1, fin_iter=1, ini_resol_A=60, fin_resol_A=48,
                        ini_subset=30, fin_subset=40)
    a = InitialModel(particles, 1, schedule=short, seed=2, particle_diameter_A=330)
    a.run(1, progress=False)
    a.save(tmp_path, "run")
    b = InitialModel.resume(tmp_path, prefix="run")
    assert b.iteration == 1 and b.running is not None and b.flatten_solvent and b.nonnegative
    a.run(progress=False)
    b.run(progress=False)
    np.testing.assert_allclose(b.references, a.references, rtol=1e-5, atol=1e-6 * np.abs(a.references).max())


def test_cli_writes_centred_maps_and_a_record(particles, tmp_path):
    out = tmp_path / "IM"
    rc = main(["initial_model", "--i", str(particles.star_path), "--o", str(out), "--quiet",
               "--sgd_ini_iter", "1", "--sgd_inbetween_iter", "1", "--sgd_fin_iter", "1", "--sgd_ini_resol", "48",
               "--sgd_fin_resol", "30", "--sgd_ini_subset", "50", "--sgd_fin_subset", "80", "--particle_diameter", "330",
               "--ctf"])
    assert rc == 0
    m = read_mrc(out / "run_class001.mrc")[0]
    pos = np.clip(m, 0, None)
    com = [float((pos.sum(axis=tuple(j for j in range(3) if j != a)) * np.arange(BOX)).sum() / pos.sum())
           for a in range(3)]
    assert np.all(np.abs(np.array(com) - BOX // 2) <= 0.5)
    assert (out / "run_it003_data.star").exists() and (out / "run_it003_sums.npz").exists()
    import json
    rec = json.loads((out / "run.json").read_text())
    assert rec["results"]["iterations"] == 3 and "undetermined" in rec["results"]["hand"]


def test_two_initial_models_follow_two_states(maps, tmp_path):
    """K = 2 on 80S and 60S particles (50/50): every particle assigned to its own state's model
    (measured 1.000 at this size; the issue's 64 px, SNR 0.05 case is in the benchmark)."""
    from cryolab.validation import class_accuracy
    sim = simulate_particles(maps, 300, PX, snr=1.0, seed=5, out_dir=tmp_path, name="k2")
    im = InitialModel(sim.star_path, 2, schedule=SMALL.changed(ini_subset=40, fin_subset=120), seed=1,
                      particle_diameter_A=330)
    im.run(progress=False)
    classes = im.assign()
    assert class_accuracy(classes, sim.truth["class_index"].to_numpy()) >= 0.95
    # each model is closer to its own state (after superposition, either hand)
    cc = np.array([[align_maps(m, maps[k], PX, resolution_A=30).cc for k in ("80S", "60S")] for m in im.maps()])
    assert np.argmax(cc[0]) != np.argmax(cc[1])


def test_viewer_steps_pauses_and_changes_the_schedule(particles):
    from cryolab.widgets import InitialModelViewer
    from cryolab.widgets._display import overlapping_text
    tiny = SGDSchedule(ini_iter=1, inbetween_iter=2, fin_iter=1, ini_resol_A=60, fin_resol_A=48,
                       ini_subset=20, fin_subset=30)
    im = InitialModel(particles, 2, schedule=tiny, seed=3, particle_diameter_A=330)
    v = InitialModelViewer(im)
    assert "the starting blob" in v.status.value and v.panel.value
    v.fin_iter.value = 3                       # applied before the next mini-batch
    v.step_button.click()
    v.wait(120)
    assert im.iteration == 1 and im.schedule.fin_iter == 3 and im.schedule.n_iter == 6
    assert im.history[0].subset == 2 * 20          # K = 2: the mini-batch holds 20 particles per class
    assert "<b>1</b> of 6" in v.status.value
    v.fin_resol_A.value = 5.0                  # beyond Nyquist: refused, reported, schedule kept
    v.step_button.click()
    v.wait(120)
    assert im.iteration == 2 and im.schedule.fin_resol_A == 48 and any("Nyquist" in e for e in v.errors)
    assert v.fin_resol_A.value == 48 and "not applied" in v.status.value
    assert overlapping_text(v.panel.text_boxes) == []


def test_running_sums_forget_a_share_and_add_the_mini_batch():
    """The blend by hand: running <- (1 - step) running + batch for the maps' sums, class weights
    and counts; noise and offset statistics from the batch scaled to the new count; the old running
    sums are left untouched (they change only once the M-step has succeeded)."""
    from cryolab.engine.driver import EStepSums
    from cryolab.reconstruction import BackProjector
    rng = np.random.default_rng(0)

    def sums(n):
        bp = BackProjector(8)
        bp.data[...] = rng.normal(size=bp.data.shape) + 1j * rng.normal(size=bp.data.shape)
        bp.weight[...] = rng.random(bp.weight.shape)
        return EStepSums([bp], rng.random((1, 5)), rng.random(20), float(rng.random()), np.array([float(n)]), n)

    old, batch = sums(100), sums(40)
    old_data = old.bps[0].data.copy()
    im = InitialModel.__new__(InitialModel)
    im.running = old
    out = im._blended(batch, 0.3, max_shell=3)
    np.testing.assert_allclose(out.bps[0].data, 0.7 * old_data + batch.bps[0].data)
    np.testing.assert_allclose(out.bps[0].weight, 0.7 * old.bps[0].weight + batch.bps[0].weight)
    np.testing.assert_allclose(out.w_shell, 0.7 * old.w_shell + batch.w_shell)
    assert out.n == pytest.approx(0.7 * 100 + 40) and out.class_weight[0] == pytest.approx(0.7 * 100 + 40)
    np.testing.assert_allclose(out.residual, batch.residual * out.n / 40)
    assert out.offset_moment == pytest.approx(batch.offset_moment * out.n / 40)
    assert out.bps[0].r_max == 3
    np.testing.assert_array_equal(old.bps[0].data, old_data)        # the running sums are unchanged


def test_starts_are_ranked_by_how_well_they_explain_the_particles(particles, maps):
    """The likelihood of the common particles ranks the true map above a featureless blob and
    above another complex of the same size (the 60S alone): the truth explains them best."""
    from cryolab.methods.initial_model.starts import score_starts
    ims = [InitialModel(particles, 1, schedule=SMALL, seed=s, particle_diameter_A=330, n_starts=1) for s in range(3)]
    ims[0].session.references = maps["80S"][None]
    ims[2].session.references = maps["60S"][None]
    scores = score_starts(ims, 200, SMALL.ini_resol_A, seed=0)
    assert [sc.start for sc in scores] == [0, 1, 2]
    assert scores[0].loglik > max(scores[1].loglik, scores[2].loglik) + 50


def test_the_chosen_start_continues_as_it_would_alone(particles):
    """With two starts, after the first phase the most likely one goes on: the maps equal those of
    that start run alone (its own seed) for the same number of mini-batches."""
    from cryolab.methods.initial_model.starts import start_seed
    short = SMALL.changed(ini_iter=2, inbetween_iter=1, fin_iter=0)
    both = InitialModel(particles, 1, schedule=short, seed=7, particle_diameter_A=330, n_starts=2)
    both.run(progress=False)
    scores = both.start_scores
    assert len(scores) == 2 and both.n_starts == 2
    best = max(scores, key=lambda sc: sc.loglik)
    assert best.start == 1          # with seed 7 the second start wins (by 342): the switch is tested
    alone = InitialModel(particles, 1, schedule=short, seed=start_seed(7, best.start), particle_diameter_A=330,
                         n_starts=1)
    alone.run(progress=False)
    assert both.seed == alone.seed == best.seed
    np.testing.assert_array_equal(np.asarray(both.references), np.asarray(alone.references))
    assert [h.subset for h in both.history] == [st.subset for st in short.steps()]


def test_a_run_saved_before_the_starts_are_compared_resumes_with_all_of_them(particles, tmp_path):
    short = SMALL.changed(ini_iter=2, inbetween_iter=1, fin_iter=0, ini_subset=40, fin_subset=60)
    a = InitialModel(particles, 1, schedule=short, seed=7, particle_diameter_A=330, n_starts=2)
    a.run(1, progress=False)
    a.save(tmp_path, "run")
    b = InitialModel.resume(tmp_path, prefix="run")
    assert len(b._others) == 1 and b.start_scores == []
    a.run(progress=False)
    b.run(progress=False)
    assert [sc.seed for sc in b.start_scores] == [sc.seed for sc in a.start_scores] and b.seed == a.seed
    np.testing.assert_allclose(b.references, a.references, rtol=1e-5, atol=1e-6 * np.abs(a.references).max())
