"""Generate course notebook 13 on multi-body refinement (run: ``python notebooks/_build_multibody.py``).

Cell helpers and the writer are shared with ``_build.py``; the same rules hold: no outputs in
the files, a ``QUICK = True`` flag near the top, edit the cells here and re-run this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _build import HERE, SETUP, answers, build, code, md, quick_flag

NB13 = [
    md("""
    # 13 · Multi-body refinement: a complex that moves in parts

    The ribosome's small subunit (40S) rotates against the large one (60S) as it translocates
    (the *ratchet*). Refine all particles together and the poses follow the large subunit: the
    small one comes out blurred, because in every particle it sits at a slightly different
    angle. Classification would cut a continuous motion into arbitrary pieces. **Multi-body
    refinement** (Nakane et al. 2018, RELION's `--multibody_masks`) treats each subunit as a
    rigid body:

    1. start from the **consensus** refinement (poses of the whole particle);
    2. for each body, **subtract** from every image the other bodies at their current poses, so
       that what is left shows this body only;
    3. **align each body locally**: a Gaussian prior keeps its pose near the consensus pose,
       rotations turn it about its own centre of mass;
    4. reconstruct each body from its two half-sets: a map and an FSC per body;
    5. **analyse the motions**: how each body moved relative to the other in every particle,
       and the principal components of those motions, read as an axis and an angle.

    Our sample: the demo 80S split into 60S and 40S; in every simulated particle the 40S is
    turned about an axis through the subunits' contact by an angle drawn uniformly in
    ±15°. The simulation knows each particle's angle, so we can check every step.

    **Learning goals**

    1. See why a consensus map blurs a moving part, and where.
    2. Define bodies with masks and run a multi-body refinement step by step.
    3. Measure how well each particle's motion is recovered, and read a principal component
       as a physical motion.
    """),
    quick_flag("32-pixel maps, 300 particles at SNR 1, 2 iterations (about a minute)",
               "64-pixel maps, 800 particles at SNR 0.5 and a real consensus refinement (about 15 minutes)"),
    code(SETUP + """
    import tempfile
    from pathlib import Path
    from cryolab.geometry import healpix_step_deg
    from cryolab.fourier import fourier_crop
    from cryolab.io import ParticleStack
    from cryolab.methods import refine
    from cryolab.methods.multibody import MultiBodyRefine, partition_bodies, ratchet_bodies, write_bodies
    from cryolab.methods.multibody.motion import body_motions, motion_pca, select_by_component
    from cryolab.reconstruction import reconstruct_stack
    from cryolab.simulate import simulate_hinge
    from cryolab.validation import fsc, random_halves, resolution_at
    from cryolab.widgets import FSCViewer, HingeExplorer, MapViewer

    box, n, snr = (32, 300, 1.0) if QUICK else (64, 800, 0.5)
    parts, pivot, axis = ratchet_bodies()                  # {"60S": ..., "40S": ...}, Angstrom, unit vector
    px = 6.0 * 64 / box
    parts = {k: fourier_crop(v, box, ndim=3).astype(np.float32) for k, v in parts.items()}
    WORK = Path(tempfile.mkdtemp(prefix="cryolab_multibody_"))
    sim = simulate_hinge(parts, n, px, pivot_A=pivot, axis=axis, snr=snr, seed=3, out_dir=WORK,
                         name="particles", include_truth_angles=True)
    theta = sim.truth["hinge_angle_deg"].to_numpy()
    print(f"{n} particles, box {box} px at {px:g} A/px, SNR {snr}; hinge angles {theta.min():.1f} .. "
          f"{theta.max():.1f} deg (std {theta.std():.1f})")
    print("hinge axis", np.round(axis, 2), "through", np.round(pivot, 1), "A")
    """),
    md("""
    ## 1. The consensus

    In `QUICK` mode we take the poses of the large subunit from the simulation (what a
    converged consensus refinement gives, to within its error) and reconstruct the half maps
    from them; with `QUICK = False` a gold-standard refinement (notebook 08) finds the poses.
    The consensus map is sharp where the 60S is and blurred where the 40S moves.
    """),
    code("""
    stack = ParticleStack.from_star(sim.star_path)
    if QUICK:
        subset = random_halves(n, 0)
        stack = stack.with_table(stack.table.assign(rlnRandomSubset=subset))
        consensus = reconstruct_stack(stack, method="wiener")
        halves = [reconstruct_stack(stack.subset(np.flatnonzero(subset == h)), method="wiener") for h in (1, 2)]
    else:
        r = refine(stack, parts["60S"] + parts["40S"], ini_high_A=40.0, local_healpix_order=3, progress=False,
                   out_dir=WORK / "Refine3D")          # local searches from HEALPix order 3 (7.5°) on
        stack = ParticleStack.from_star(WORK / "Refine3D" / "run_data.star")
        consensus, halves = r.map, r.half_maps
    bodies = partition_bodies([parts["60S"], parts["40S"]], px, sigma_angles_deg=8.0)
    for name, body in zip(("60S", "40S"), bodies):
        m = body.mask
        c = fsc(consensus * m, parts[name] * m)
        print(f"consensus vs the true {name} inside its mask: FSC 0.5 at "
              f"{resolution_at(c, 0.5, box, px):.1f} A")
    MapViewer(consensus, px, threshold_sigma=2.0, backend="slices")
    """),
    md("""
    ## 2. Bodies

    A body is a soft mask on the consensus map. Here every voxel of the ribosome belongs to the
    subunit with more density there, with a soft edge. The bodies file is RELION's: the mask,
    the body its rotations are described relative to, and the widths of the priors on its
    rotation (degrees) and offset (Å).
    """),
    code("""
    path = write_bodies(WORK / "bodies.star", bodies, px)
    print(path.read_text().split("loop_")[1])
    MapViewer(bodies[1].mask * consensus, px, threshold_sigma=2.0, backend="slices")
    """),
    md("""
    ## 3. Refining the bodies, step by step

    `MultiBodyRefine` holds, per body and half-set, a Session on that body's subtracted and
    re-centred images. Each `step()` is one iteration for all bodies: the first searches around
    the consensus pose, later ones around the body's last pose, the prior on the body's rotation
    still centred on the consensus. A particle's posterior for one body is a Session posterior
    like any other, and its new pose is the posterior mean.

    How fine to search follows the data: each iteration measures, per body, the median angular
    spread of the particles' posteriors. While it is smaller than the step just searched (the
    posteriors fit between grid points, so a finer grid can still tell the poses apart), the
    body goes one HEALPix order finer; once it is not, the body stays at its order (a small
    body in noisy images usually stops earlier than a large one).
    """),
    code("""
    mb = MultiBodyRefine(stack, consensus, bodies, half_maps=halves, healpix_order=3, oversampling=1 if QUICK else 2,
                         offset_range_px=2 if QUICK else 3, offset_step_px=1,
                         final_healpix_order=None if QUICK else 4)     # full size: orders 3 and 4, then stop
    print("share of the map's density per body:", np.round(mb.signal_share, 2))
    for _ in range(2 if QUICK else 6):
        it = mb.step()
        print(f"iteration {it.iteration}: resolution per body {np.round(it.resolution_A, 1)} A, mean change "
              f"{np.round(it.mean_angle_change_deg, 2)} deg, {it.time_s:.0f} s")
        for b, (order, spread) in enumerate(zip(it.healpix_order, it.angle_sd_deg)):
            step = healpix_step_deg(order + mb.sessions[b][0].settings.oversampling)
            print(f"    body {b + 1}: HEALPix order {order} (finest step {step:.2f} deg), "
                  f"median posterior spread {spread:.2f} deg -> next order {mb.orders[b]}")
        if mb.converged:
            break
    post = mb.sessions[1][0].posterior(0)
    print(f"body 2, particle 1: pmax {post['pmax']:.2f}, {post['n_significant']} significant samples; best at "
          f"rot {post['samples']['rot_deg'][0]:.1f}, tilt {post['samples']['tilt_deg'][0]:.1f}, "
          f"psi {post['samples']['psi_deg'][0]:.1f} deg")
    """),
    md("""
    ## 4. Did we find each particle's hinge angle?

    The refined pose of each body, compared with the consensus, is a rigid motion; the 40S's
    motion relative to the 60S is a rotation vector (axis times angle). Its component along the
    true hinge axis should be the simulated angle.
    """),
    code("""
    motions = body_motions(mb)
    estimate = motions.rotvec_deg[:, 1] @ np.asarray(axis)
    r_hinge = np.corrcoef(estimate, theta)[0, 1]
    mae = np.mean(np.abs(estimate - theta))
    print(f"40S angle vs truth: r = {r_hinge:.3f}, mean absolute error {mae:.2f} deg (truth std {theta.std():.1f})")
    assert r_hinge > 0.9 and mae < theta.std() / 3, "the hinge angles should be recovered"
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(theta, estimate, s=6)
    ax.plot([-15, 15], [-15, 15], "k:", lw=1)
    ax.set_xlabel("true hinge angle (deg)")
    ax.set_ylabel("refined 40S rotation about the axis (deg)")
    plt.show()
    """),
    md("""
    ## 5. The 40S map, before and after

    The body map is reconstructed from the particles at the body's own poses: the blur of the
    consensus is gone. Against the true map, the FSC threshold is 0.5.
    """),
    code("""
    m = bodies[1].mask
    curves = {"consensus vs truth (40S)": fsc(consensus * m, parts["40S"] * m),
              "body 2 vs truth (40S)": fsc(mb.body_map(1) * m, parts["40S"] * m)}
    assert curves["body 2 vs truth (40S)"][-2] > curves["consensus vs truth (40S)"][-2], "the body map should be sharper"
    FSCViewer(curves, box, px, criteria=0.5)
    """),
    md("""
    ## 6. The motions: principal components

    Every particle gives 6 numbers per body (rotation vector, translation). Their principal
    components are the motions the particles share; the first should be the hinge. Read it as
    an axis and an angle, and slide along it in the explorer.
    """),
    code("""
    pca = motion_pca(motions)
    r_pc1 = abs(np.corrcoef(pca.scores[:, 0], theta)[0, 1])
    print("variance per component:", np.round(pca.variance_fraction[:4], 2), f"; component 1 vs truth |r| = {r_pc1:.3f}")
    assert r_pc1 > 0.9
    for d in pca.describe(0):
        print(d["text"])
    HingeExplorer(mb, pca)
    """),
    md("""
    ## 7. Particles from one end of the motion

    A component's score selects particles, e.g. to reconstruct the two ends of the motion from
    the original images at their consensus poses.
    """),
    code("""
    s1, cut = pca.scores[:, 0], np.quantile(pca.scores[:, 0], [0.3, 0.7])
    lo = select_by_component(stack, pca, 0, high=cut[0])
    hi = select_by_component(stack, pca, 0, low=cut[1])
    ends = [reconstruct_stack(s, method="wiener") for s in (lo, hi)]
    print(f"{len(lo)} and {len(hi)} particles; their mean true hinge angles {theta[s1 <= cut[0]].mean():.1f} "
          f"and {theta[s1 >= cut[1]].mean():.1f} deg")
    MapViewer(ends[1] - ends[0], px, threshold_sigma=3.0, backend="slices")
    """),
    md("""
    ## Exercises

    1. Lower the SNR to 0.1. How do the correlation and the angle error change? Compare the error
       with the consensus's angular error of the whole particle: why is a body of a third of the
       mass harder to align?
    2. Draw the angles from two states instead (`distribution="bimodal"` in `simulate_hinge`).
       What do the component scores look like, and would 3D classification have worked here?
    3. Narrow the prior (`sigma_angles_deg=2` in `partition_bodies`). What happens to the
       recovered angles at the ends of the ±15° range?
    4. Swap the roles: make the 40S the body the motion is described relative to. Does the
       first component change?
    """),
    answers("""
    1. At SNR 0.1 the per-particle angles are noisier (lower r, larger error): the 40S carries
       about a third of the signal, so its likelihood is flatter than the whole particle's and the
       prior pulls the estimates towards the consensus. The whole particle's angular error stays
       smaller.
    2. The scores split into two groups: with two discrete states classification can work, with a
       continuum it cuts the motion into arbitrary pieces, which is what multi-body refinement avoids.
    3. The prior of 2° is much narrower than the motion: large angles are pulled towards 0 (the
       estimates flatten at the ends) and the correlation drops.
    4. The same motion seen from the other body: the rotation changes sign and the component is
       the same up to its sign.
    """),
]

NOTEBOOKS = {"13_multibody_refinement.ipynb": NB13}

if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, NOTEBOOKS):
        print(p)
