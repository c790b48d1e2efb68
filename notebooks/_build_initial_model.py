"""Generate course notebook 15 on initial models (run: ``python notebooks/_build_initial_model.py``).

Cell helpers and the writer are shared with ``_build.py``; the same rules hold: no outputs in
the files, a ``QUICK = True`` flag near the top, edit the cells here and re-run this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _build import HERE, MAP_HELPERS, SETUP, answers, build, code, md, quick_flag

NB15 = [
    md("""
    # 15 · An initial model from the particles alone

    Refinement improves a map it is given; it does not invent one. Start it from a map of
    something else and it will happily find that something else in the noise (the lecture's
    *wrong initial model*, or "Einstein from noise"). With new data there is often no map of the
    same complex, so the first map has to come from the particles themselves: **ab initio**.

    cryolab does it by **stochastic EM on mini-batches** (the idea of RELION's `--sgd` and
    cryoSPARC's ab-initio):

    1. start from a *featureless blob*: particles back-projected in random orientations;
    2. each iteration, align a small random **mini-batch** of particles against the current map
       (all orientations), and move the map part of the way towards that mini-batch's
       reconstruction;
    3. after every mini-batch, set the map to zero outside the particle and wherever it is
       negative (density relative to the solvent is positive: a strong, physical prior);
    4. go from coarse (35 Å, 100 particles) to finer resolution and larger mini-batches.

    Early on every orientation is as likely as any other; the noise of the small mini-batches
    breaks the symmetry of the blob, and features grow from there. A run can still settle on a
    wrong map, so three **starts** run the coarse phase independently and the one whose map
    explains the particles best (highest likelihood) goes on.

    **Learning goals**

    1. Watch a map emerge from a blob, and read the schedule that drives it.
    2. Compare a map whose frame and hand are arbitrary with the truth: superpose, allow for the
       mirror image, compute the FSC.
    3. See the wrong-initial-model effect: refine from a blob, from another molecule and from the
       ab-initio map, and compare the half-map FSC with the FSC against the truth.
    """),
    quick_flag("32-pixel maps, 500 particles at SNR 1, 12 mini-batches, short refinements (about a minute)",
               "64-pixel maps, 3000 particles at SNR 0.05, RELION's resolutions; section 4 refines 600 of them "
               "(30-50 minutes on two cores)"),
    code(SETUP + MAP_HELPERS + """
    import tempfile
    from pathlib import Path
    from cryolab.data import load_demo
    from cryolab.fourier import fourier_crop, lowpass
    from cryolab.io import ParticleStack
    from cryolab.methods import refine
    from cryolab.methods.initial_model import InitialModel, SGDSchedule
    from cryolab.simulate import simulate_particles
    from cryolab.validation import fsc, resolution_at, soft_sphere_mask
    from cryolab.validation.align import align_maps
    from cryolab.widgets import FSCViewer, InitialModelViewer

    box, n, snr = (32, 500, 1.0) if QUICK else (64, 3000, 0.05)
    demo = load_demo()
    px = demo.pixel_size_A * 64 / box
    truth = fourier_crop(demo.volumes["80S"], box, ndim=3).astype(np.float32) if box < 64 else demo.volumes["80S"]
    folder = Path(tempfile.mkdtemp(prefix="initial_model_"))
    sim = simulate_particles({"80S": truth}, n, px, snr=snr, seed=4, out_dir=folder, name="particles")
    particles = ParticleStack.from_star(sim.star_path)
    print(f"{n} particles of {box} px at {px:.0f} Å/px, random orientations, SNR {snr}; no reference")
    """),
    md("""
    ## 1 · The schedule and the starting blob

    The schedule has RELION's names: `ini_iter` iterations at `ini_resol_A` with `ini_subset`
    particles, `inbetween_iter` iterations moving to `fin_resol_A` and `fin_subset`, then
    `fin_iter` at the final values. The **step** is the share of the running sums each
    mini-batch replaces: large at first (the map changes fast), smaller at the end (it settles).
    """),
    code("""
    schedule = (SGDSchedule(ini_iter=3, inbetween_iter=6, fin_iter=3, ini_resol_A=48, fin_resol_A=30,
                            ini_subset=60, fin_subset=200) if QUICK else SGDSchedule())
    for st in schedule.steps()[:: max(1, schedule.n_iter // 8)]:
        print(f"iteration {st.iteration + 1:3d}: {st.subset:4d} particles, {st.resolution_A:5.1f} Å, step {st.stepsize:.2f}")
    im = InitialModel(particles, K=1, schedule=schedule, particle_diameter_A=330, seed=1)
    show_slices({"starting blob": im.maps()[0], "truth": truth}, "before the first mini-batch")
    """),
    md("""
    ## 2 · Watch it emerge

    The viewer steps the model: **Step** runs one mini-batch, **Run** to the end of the schedule,
    **Pause** after the current mini-batch. You may change the final resolution or the number of
    iterations between mini-batches. Below it, the same run as a script.
    """),
    code("""
    viewer = InitialModelViewer(im)
    viewer
    """),
    code("""
    viewer.wait()                # if you pressed Run above, let it finish first
    im.run(progress=True, callback=lambda *_: viewer.refresh())   # the viewer redraws after every mini-batch
    print(f"{im.iteration} mini-batches; last: {im.history[-1].subset} particles at {im.history[-1].resolution_A:.0f} Å")
    for sc in im.start_scores:   # the starts after the coarse phase: the most likely one went on
        print(f"start {sc.start + 1}: log-likelihood {sc.loglik:,.0f}, mean pmax {sc.mean_pmax:.2f}"
              + ("   <- continued" if sc.seed == im.seed else ""))
    """),
    md("""
    ## 3 · Compare with the truth: frame, shift and hand

    The map came out in an arbitrary orientation, somewhere in the box, and with either hand: a
    map and its **mirror image** project to mirrored images, and each single image fits both
    equally well, so projections alone cannot tell the hand. `align_maps` searches all rotations
    of both hands and the shift, then we can compute an FSC against the truth (criterion 0.5 for
    a map against a reference).
    """),
    code("""
    model = im.maps(centred=True)[0]
    a = align_maps(model, truth, px, resolution_A=20 if not QUICK else 30)
    print(f"best superposition: {'mirrored' if a.mirrored else 'same hand'}, correlation {a.cc:.3f}")
    show_slices({"initial model (superposed)": a.aligned, "truth": truth})
    curve = fsc(a.aligned, truth)
    shell_40 = box * px / 40
    print(f"FSC against the truth at 40 Å: {np.interp(shell_40, np.arange(curve.size), curve):.2f}; "
          f"FSC = 0.5 at {resolution_at(curve, 0.5, box, px):.1f} Å")
    assert np.interp(shell_40, np.arange(curve.size), curve) >= 0.5, "the initial model should match the truth to 40 Å"
    """),
    md("""
    ## 4 · The wrong initial model

    Now refine (gold-standard auto-refine, 40 Å start, on a subset of the particles) from three maps: a **featureless
    sphere**, **something else** (a dumb-bell of two spheres, standing in for a map of another
    molecule) and the **ab-initio model**. Two
    FSC curves per run: between the **half maps** (what a user sees) and against the **truth**
    (what we know only in a simulation).
    """),
    code("""
    sphere = soft_sphere_mask(box, 0.35 * box, edge_px=2).astype(np.float32) * float(truth.max()) * 0.3
    dumbbell = (np.roll(sphere, box // 6, axis=0) + np.roll(sphere, -box // 6, axis=0)) * 0.6
    starts = {"sphere": sphere, "dumb-bell": dumbbell, "ab initio": a.aligned}
    curves, rows = {}, []
    # a subset keeps it short (QUICK: a demonstration; full size: 600 particles, local searches from
    # HEALPix order 3 (7.5°) and at most 10 iterations, a few minutes per refinement)
    data = particles.subset(np.arange(150 if QUICK else 600))
    sampling = dict(max_iter=2, healpix_order=1) if QUICK else dict(max_iter=10, healpix_order=2,
                                                                    local_healpix_order=3, max_healpix_order=3)
    for name, start in starts.items():
        r = refine(data, start, ini_high_A=40.0, particle_diameter_A=330, progress=False, **sampling)
        al = align_maps(r.references[0], truth, px, resolution_A=30 if QUICK else 20)
        half = fsc(r.half_maps[0], r.half_maps[1]) if r.half_maps is not None else r.fsc_curve
        vs_truth = fsc(al.aligned, truth)
        curves[f"{name}: half maps"] = half
        curves[f"{name}: vs truth"] = vs_truth
        rows.append((name, resolution_at(half, 0.143, box, px), resolution_at(vs_truth, 0.5, box, px)))
    for name, res_half, res_truth in rows:
        print(f"{name:10s}  half maps {res_half:6.1f} Å (0.143)   against the truth {res_truth:6.1f} Å (0.5)")
    FSCViewer(curves, box, px, criteria={k: (0.5 if "truth" in k else 0.143) for k in curves})
    """),
    md("""
    ## 5 · Symmetry is imposed at the end

    With `sym="C4"` (or `--sym C4`) the mini-batches still run without symmetry; at the end each
    map is turned so that its symmetry axes lie along the group's standard axes (the 4-fold on z)
    and averaged over the group. `align_symmetry` does that turn: it scores rotations by how well
    the turned map correlates with its own symmetry mates. Below, a made-up tetramer (the 80S
    averaged over quarter turns about z) is put in an arbitrary orientation and found again; the
    ribosome itself has no 2-fold, and its score says so.
    """),
    code("""
    from cryolab.geometry.euler import euler_to_matrix
    from cryolab.validation.align import align_symmetry, rotate_map, symmetrise_map
    tetramer = symmetrise_map(truth, "C4")
    R0 = euler_to_matrix(40.0, 65.0, 20.0)                 # an arbitrary orientation
    found = align_symmetry(rotate_map(tetramer, R0, order=3), "C4", px, resolution_A=30)
    axis_error = np.degrees(np.arccos(min(1.0, abs((found.R @ R0)[2, 2]))))
    print(f"tetramer: symmetry score {found.cc_before:.2f} as given, {found.cc:.2f} turned; 4-fold found within {axis_error:.1f}°")
    c2 = align_symmetry(model, "C2", px, resolution_A=30)
    print(f"ab-initio ribosome, best 2-fold: score {c2.cc:.2f} (no symmetry: well below the tetramer's)")
    show_slices({"tetramer as given": rotate_map(tetramer, R0, order=3), "turned onto its 4-fold": found.aligned})
    assert axis_error < 2.0 and found.cc > c2.cc + 0.05
    """),
    md("""
    ### Exercises

    1. Run the notebook with three different `seed`s of `InitialModel`. Is the hand the same
       every time? Why can it not be?
    2. Start the run with a much larger first mini-batch (`ini_subset=400` with `QUICK` off).
       What happens to the first few maps, and why do small mini-batches help at the start?
    3. Which of the three refinements in section 4 can you tell apart *without* the truth? Look
       at the half-map FSCs: can a refinement from a wrong start still report a good resolution?
    4. Make two initial models at once (`K=2`) from a set of 80S and 60S particles
       (`simulate_particles({"80S": ..., "60S": ...}, ...)`). Do the classes follow the states?
       Use `im.assign()` and the simulation's `truth.csv`.
    """),
    answers("""
    1. The hand is drawn by chance: a map and its mirror image explain every projection equally
       well (the mirror of an image is the projection of the mirrored map), so nothing in the
       data prefers one. Check the hand against an atomic model, a map of known hand or tilt pairs.
    2. A large first mini-batch averages many random orientations: the map stays a smooth blob
       longer (a flat posterior gives a smooth average); small, noisy mini-batches break its
       symmetry sooner, and the running sums later average their noise away.
    3. Not reliably: the half maps of a refinement that started from a wrong map can agree with
       each other (both inherit the same wrong features at low resolution) while the FSC against
       the truth is poor. That is why the initial model should come from the data, and why
       independent half-sets are refined from a start filtered to low resolution.
    4. With 50/50 states and enough particles the two models follow the 80S and the 60S, and
       most particles are assigned to the right one; the 60S model is the smaller map.
    """),
]

NOTEBOOKS = {"15_initial_model.ipynb": NB15}

if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, NOTEBOOKS):
        print(p)
