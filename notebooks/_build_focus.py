"""Generate course notebook 10 on focused classification (run: ``python notebooks/_build_focus.py``).

Cell helpers and the writer are shared with ``_build.py``; the same rules hold: no outputs in
the files, a ``QUICK = True`` flag near the top, edit the cells here and re-run this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _build import HERE, SETUP, answers, build, code, md, quick_flag

NB10 = [
    md("""
    # 10 · Focused classification: a small factor on some of the particles

    A ribosome with a small protein bound on half of the particles: the factor is about 1 % of
    the mass. A global 3D classification compares whole particles, and the difference it looks
    for is drowned by the noise of the other 99 %. The lecture's recipe (Bai et al. 2015):

    1. **refine everything together** (the *consensus*): the poses are good, because the factor
       hardly changes them; the factor's density comes out weak (partial occupancy);
    2. **mask** the region of interest;
    3. **subtract** from every particle image the projection of the rest of the complex, at the
       particle's refined pose and with its CTF: what is left is noise plus the masked part;
    4. **classify with the poses kept**, comparing only the masked part;
    5. reconstruct each class from the **original** images: the full maps of each state.

    Our sample: the demo 80S ribosome with and without **RACK1** (a small protein on the head
    of the small subunit, ~1.3 % of the mass), half and half, in random orientations.

    **Learning goals**

    1. See partial occupancy in a consensus map.
    2. Place a mask and subtract the signal outside it; check what a subtraction leaves.
    3. Classify subtracted particles at fixed poses and compare with the best possible
       classifier on the same images (the Bayes-optimal accuracy).
    4. Go back from the classes to the original particles and their full maps.
    """),
    quick_flag("32-pixel maps, 400 particles at SNR 1.5, a short refinement",
               "64-pixel maps, 1500 particles at SNR 1 (about 15 minutes)"),
    code(SETUP + """
    import tempfile
    from pathlib import Path
    import ipywidgets as W
    from cryolab.data import load_demo
    from cryolab.engine.forward import bayes_optimal_accuracy
    from cryolab.fourier import radial_average, rescale, rfft2c
    from cryolab.geometry import angular_distance
    from cryolab.io import ParticleStack
    from cryolab.masks import centre_of_mass_A, component_mask
    from cryolab.methods import refine
    from cryolab.methods.focused import focused_class3d
    from cryolab.methods.subtract import SubtractedParticles
    from cryolab.simulate import simulate_particles
    from cryolab.validation import class_accuracy, match_classes
    from cryolab.widgets import MapViewer, MaskEditor

    box, n, snr = (32, 400, 1.5) if QUICK else (64, 1500, 1.0)
    demo = load_demo()
    px = demo.pixel_size_A * demo.box_size / box
    states = {k: rescale(demo.volumes[k], box, ndim=3) for k in ("80S", "80S_noRACK1")}
    WORK = Path(tempfile.mkdtemp(prefix="cryolab_focus_"))
    sim = simulate_particles(states, n, px, snr=snr, seed=1, out_dir=WORK, name="particles")
    truth = sim.truth["class_index"].to_numpy()        # 0: 80S (with RACK1), 1: without
    print(f"{n} particles, box {box} px at {px:g} A/px, SNR {snr}; with RACK1: {np.mean(truth == 0):.0%}")
    """),
    md("""
    ## 1. The consensus refinement

    All particles together, from the 80S map low-pass filtered to 40 Å (a map from elsewhere
    would do as well). The simulation knows the true angles, so we can measure how good the
    poses are.
    """),
    code("""
    r = refine(sim.star_path, states["80S"], healpix_order=1 if QUICK else 2, max_iter=10 if QUICK else 20,
               local_healpix_order=2 if QUICK else 3, ini_high_A=40.0, progress=False, out_dir=WORK / "Refine3D")
    consensus = r.map
    err = angular_distance(r.eulers, sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy())
    print(f"consensus: {r.iteration} iterations, resolution {r.resolution_A:.1f} A; "
          f"median angular error {np.median(err):.1f} deg")
    """),
    md("""
    ## 2. Where is the map weak?

    RACK1 is on only half of the particles, so its density in the consensus map is weaker than
    that of the rest of the complex. We compare the consensus map with the 80S map inside a mask
    around RACK1 (from the demo's RACK1 component) and elsewhere. (Not a factor of two: the mask's
    soft edge also covers neighbouring density of the small subunit, present on every particle,
    and a low-resolution map smears RACK1 into its surroundings.)
    """),
    code("""
    keep = np.clip(rescale(component_mask("RACK1"), box, ndim=3), 0, 1)
    scale = np.sum(consensus * states["80S"]) / np.sum(states["80S"] ** 2)   # consensus vs 80S grey scale
    inside = np.sum(consensus * keep) / (scale * np.sum(states["80S"] * keep))
    rest = np.sum(consensus * (1 - keep)) / (scale * np.sum(states["80S"] * (1 - keep)))
    print(f"consensus density relative to the 80S map: {inside:.2f} inside the RACK1 mask, {rest:.2f} elsewhere")
    assert inside < 0.9 * rest, "partial occupancy should show as weaker density inside the mask"
    c = centre_of_mass_A(keep, px)
    print("RACK1 centre (x, y, z) in A from the box centre:", np.round(c, 1))
    W.VBox([W.VBox([W.HTML(f"<b>{name}</b>"), MapViewer(v, px, threshold_sigma=1.5, backend="slices")])
            for name, v in {"consensus": consensus, "80S (truth)": states["80S"]}.items()])
    """),
    md("""
    ## 3. The mask

    The mask is 1 on the part to study, 0 elsewhere, with a soft edge (a hard edge would put
    ripples into the subtracted images). Here it comes from the demo's RACK1 density; with your
    own data, place one with the editor (sphere, ellipsoid or a density threshold; *centre on
    density* pulls it onto the map) and use `editor.mask` instead.
    """),
    code("""
    editor = MaskEditor(consensus, px, centre_A=c, radius_A=30.0 if QUICK else 25.0, save_path=None)
    editor
    """),
    md("""
    ## 4. Subtraction

    For each particle we subtract the projection of `consensus * (1 - keep)` at its refined pose,
    shifted by its origin and multiplied by its CTF. `SubtractedParticles` does this as the
    images are read, so nothing is written; `cryolab subtract` writes a new stack instead.
    Below: one particle before and after, and, per resolution shell, how much power the
    subtraction removed.
    """),
    code("""
    stack = ParticleStack.from_star(WORK / "Refine3D" / "run_data.star")
    sub = SubtractedParticles(stack, consensus, keep)
    i = 0
    before, after = stack.read([i])[0], sub.read([i])[0]
    fig, ax = plt.subplots(1, 3, figsize=(8, 2.8))
    for a, img, title in zip(ax, [before, after, before - after], ["particle", "subtracted", "removed"]):
        a.imshow(img, cmap="gray"); a.set_title(title); a.axis("off")
    plt.tight_layout(); plt.show()

    rows = np.arange(min(200, n))
    power = lambda imgs: radial_average(np.abs(rfft2c(imgs)) ** 2, box).mean(axis=0)
    p_before, p_after = power(stack.read(rows)), power(sub.read(rows))
    shells = np.arange(1, box // 2)
    plt.figure(figsize=(5, 3))
    plt.semilogy(shells / (box * px), p_before[shells], label="particles")
    plt.semilogy(shells / (box * px), p_after[shells], label="subtracted")
    plt.xlabel("spatial frequency (1/Å)"); plt.ylabel("power per shell"); plt.legend(); plt.tight_layout(); plt.show()
    print(f"power removed at low resolution (shells 1-4): {1 - p_after[1:5].sum() / p_before[1:5].sum():.0%}")
    """),
    md("""
    ## 5. Focused classification at fixed poses

    Two classes, the poses kept (`skip_align`), the references multiplied by the mask. For
    comparison: the same classification without subtraction (mask only), and the accuracy of
    the best possible classifier on these images, which knows the true maps, poses and noise.
    The gap between the ceiling and the focused classification is mostly the consensus poses'
    error (exercise 4); the gap between focused and mask-only is what the subtraction buys.
    """),
    code("""
    focused = focused_class3d(stack, consensus, keep, K=2, iterations=8, ini_high_A=30.0, progress=False)
    mask_only = focused_class3d(stack, consensus, keep, K=2, iterations=8, ini_high_A=30.0, subtract=False,
                                progress=False)
    ceiling = bayes_optimal_accuracy(sim.images, [states["80S"], states["80S_noRACK1"]],
                                     sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy(), truth,
                                     sim.truth[["origin_x_A", "origin_y_A"]].to_numpy() / px, stack.ctf(), px,
                                     scale=sim.info["signal_scale"])
    acc, acc_mask = class_accuracy(focused.classes, truth), class_accuracy(mask_only.classes, truth)
    print(f"Bayes-optimal accuracy {ceiling:.2f}; focused with subtraction {acc:.2f}; mask only {acc_mask:.2f}")
    assert acc > acc_mask, "subtraction should help"
    """),
    md("""
    ## 6. Full maps and the original particles

    Each class reconstructed from its **original** images at the consensus poses: one map with
    RACK1, one without. The classification's particle table names the original images, so
    selecting a class gives the original particles (for a refinement of that state).
    """),
    code("""
    full = focused.full_maps()
    to_state = match_classes(focused.classes, truth)          # class -> 0 (with RACK1) or 1
    names = {k: ("with RACK1" if to_state[k] == 0 else "without RACK1") for k in range(2)}
    density = [float(np.sum(full[k] * keep) / np.sum(np.abs(full[k]))) for k in range(2)]
    for k in range(2):
        print(f"class {k + 1} ({names[k]}): {np.sum(focused.classes == k)} particles, "
              f"density inside the mask {density[k]:.4f}")
    with_rack1 = int(np.flatnonzero(to_state == 0)[0])
    selected = focused.session.select_classes([with_rack1 + 1])
    print(f"selected {len(selected)} particles; first image: {selected.table['rlnImageName'].iloc[0]}")
    W.VBox([W.VBox([W.HTML(f"<b>class {k + 1}: {names[k]}</b>"), MapViewer(full[k], px, threshold_sigma=1.5,
                                                                          backend="slices")]) for k in range(2)])
    """),
    md("""
    ## Exercises

    1. Set `QUICK = False`. How close does the focused classification come to the Bayes-optimal
       accuracy, and how far is the mask-only classification below it?
    2. Replace `keep` by the editor's mask (`keep = editor.mask`) with a sphere of 20 Å, then of
       50 Å around RACK1. How does the accuracy change, and why does a mask that is too large
       hurt?
    3. Make the subtraction wrong on purpose: subtract with `scale=0.5` (half the signal of the
       rest stays). What happens to the accuracy?
    4. Use the true poses instead of the consensus poses (write the simulation with
       `include_truth_angles=True`). How much of the gap to the ceiling was due to the poses?
    5. Classify with local searches around the consensus poses
       (`focused_class3d(..., sigma_ang_deg=5)`). Does letting the poses move help here? (At
       this size it does not: the masked part is too small to align on.)
    """),
    answers("""
    1. With more particles and a larger box the focused classification comes closer to the
       ceiling (the gap is mostly the consensus poses' error), and the mask-only run stays well
       below it: without subtraction the rest of the ribosome, projected at slightly wrong poses
       and buried in its noise, differs between particles more than RACK1 does.
    2. A mask that is too small cuts off part of RACK1's signal; one that is too large takes in
       density that is the same in both states, whose residues (pose errors, the subtraction's
       imperfections) and noise then compete with the small difference the classification looks
       for: the accuracy falls on both sides of a mask that just holds the variable part.
    3. Half the rest of the ribosome stays in every image; it varies with the pose, not with the
       state, so the classification partly sorts by it, and the accuracy falls towards the
       mask-only result.
    4. The accuracy moves towards the Bayes-optimal ceiling: the difference between the true-pose
       and the consensus-pose results is the part of the gap due to the poses, the rest is the
       classification itself (its references, its prior, the number of iterations).
    5. Here it does not help, and it may hurt: RACK1 is a small part, too little signal to align
       on, so letting the poses move mostly adds noise to them. Local searches pay off when the
       masked part is large enough to carry its own alignment.
    """),
]

NOTEBOOKS = {"10_focused_classification.ipynb": NB10}

if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, NOTEBOOKS):
        print(p)
