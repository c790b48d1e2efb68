"""Generate course notebook 14 on continuous heterogeneity (run: ``python notebooks/_build_continuous.py``).

Cell helpers and the writer are shared with ``_build.py``; the same rules hold: no outputs in
the files, a ``QUICK = True`` flag near the top, edit the cells here and re-run this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _build import HERE, SETUP, answers, build, code, md, quick_flag

NB14 = [
    md("""
    # 14 · Continuous heterogeneity: particles on a manifold, energy landscapes

    When a complex moves continuously, 3D classification cuts the motion into arbitrary pieces.
    Instead, give every particle a **coordinate** along the motion (Dashti et al. 2014, Frank &
    Ourmazd: "classification of a continuum of states, and mapping of the energy landscape"):

    1. **linear variability** (3D variability analysis, Punjani & Fleet 2021): at the consensus
       poses, each image is a projection of `V0 + sum_k z_k V_k`; EM finds the eigenvolumes
       `V_k` and each particle's `z`;
    2. **diffusion maps** (ManifoldEM's idea): images of one viewing direction lie on a curve;
       a random walk on the particles parametrises it even where it bends;
    3. the **energy landscape**: the occupancy `p(z)` read as a free energy `-kT ln p(z)`;
    4. the **leak detector**: does a coordinate follow pose, origin, defocus or grey scale instead
       of the structure?

    The data: the ribosome's ratchet (notebook 13's simulator), the 40S rotating about a hinge.
    """),
    quick_flag("32-pixel maps, 300 particles at SNR 1, true poses (about a minute)",
               "64-pixel maps, 2000 particles at SNR 0.5 (a few minutes)"),
    code(SETUP + """
    import tempfile
    from pathlib import Path
    from scipy.stats import spearmanr
    from cryolab.fourier import fourier_crop, lowpass
    from cryolab.io import ParticleStack
    from cryolab.methods.multibody import ratchet_bodies
    from cryolab.methods.variability import (diffusion_coordinates, equal_population_bins, bin_maps,
                                             fit_variability, free_energy, latent_leaks, nuisance_table)
    from cryolab.simulate import simulate_hinge
    from cryolab.widgets import ComponentSlider, LatentExplorer, MapViewer

    box, n, snr = (32, 300, 1.0) if QUICK else (64, 2000, 0.5)
    parts, pivot, axis = ratchet_bodies()
    px = 6.0 * 64 / box
    parts = {k: fourier_crop(v, box, ndim=3).astype(np.float32) for k, v in parts.items()}
    WORK = Path(tempfile.mkdtemp(prefix="cryolab_continuous_"))
    rng = np.random.default_rng(1)                      # a 70/30 occupancy of two states, plus the continuum
    angles = np.where(rng.random(n) < 0.7, -7.5, 7.5) + rng.normal(0, 3.0, n)
    sim = simulate_hinge(parts, n, px, pivot_A=pivot, axis=axis, distribution=angles, snr=snr, seed=3,
                         out_dir=WORK, name="particles", include_truth_angles=True)
    theta = sim.truth["hinge_angle_deg"].to_numpy()
    stack = ParticleStack.from_star(sim.star_path)     # the true large-subunit poses: a perfect consensus
    print(f"{n} particles, {box} px at {px:g} A/px, SNR {snr}; hinge angles {theta.min():.1f} .. {theta.max():.1f} deg")
    """),
    md("""
    ## 1. Linear variability

    `fit_variability` works in Fourier space up to the filter resolution. The E-step gives each
    particle the posterior mean and covariance of its `z` (a small least-squares problem per
    particle, batched as matrix products); the M-step solves, per Fourier voxel, for the mean map
    and the components together. A mask (by default from the mean map) keeps the components
    inside the particle. The components are then rotated into orthonormal **eigenvolumes**
    ordered by the variance of their coordinates.
    """),
    code("""
    res = fit_variability(stack, n_components=3, filter_A=30.0)
    print(f"{len(res.history)} EM iterations, {res.wall_s:.1f} s; variances {np.round(res.variance, 2)}")
    for k in range(3):
        print(f"z{k + 1}: Pearson |r| with the true angle {abs(np.corrcoef(res.z[:, k], theta)[0, 1]):.3f}")
    assert abs(np.corrcoef(res.z[:, 0], theta)[0, 1]) > 0.8
    """),
    md("""
    The first eigenvolume should look like the derivative of the map with respect to the hinge
    angle: positive where the 40S moves to, negative where it leaves.
    """),
    code("""
    MapViewer(res.eigenvolumes[0], px, threshold_sigma=3.0, backend="slices")
    """),
    md("""
    ## 2. The particles in latent space

    Colour the particles by the true angle (in real data: by defocus or a pose angle, to look for
    leaks). Select a region with the range sliders (or a lasso, `select_polygon`), write it as a
    new particle set and reconstruct it.
    """),
    code("""
    explorer = LatentExplorer(res.z, stack, color=theta, color_name="true hinge angle (deg)", out_dir=WORK)
    explorer.select_polygon([[res.z[:, 0].min() - 1, -1e9], [np.median(res.z[:, 0]), -1e9],
                             [np.median(res.z[:, 0]), 1e9], [res.z[:, 0].min() - 1, 1e9]])
    explorer
    """),
    md("""
    ## 3. The energy landscape

    The occupancy of the first coordinate as a free energy, with bootstrap error bars. Two
    states with 70 % and 30 % of the particles give two minima whose depths differ by
    `ln(7/3) = 0.85 kT`. The slider moves along the component with the model's map.
    """),
    code("""
    prof = free_energy(res.z[:, 0])
    slope, intercept = np.polyfit(res.z[:, 0], theta, 1)     # in degrees, by the truth (for this check only)
    print("minima at", np.round(prof.minima_s * slope + intercept, 1), "deg (truth: -7.5 and +7.5)")
    ComponentSlider(res)
    """),
    md("""
    Maps at chosen points: bins of equal population along the coordinate, each reconstructed from
    the images with its half-set FSC (so each map has its own resolution).
    """),
    code("""
    labels, _ = equal_population_bins(res.z[:, 0], 3)
    bins = bin_maps(stack, labels, values=res.z[:, 0])
    for b in range(3):
        print(f"bin {b + 1}: {bins.counts[b]} particles, mean true angle {theta[labels == b].mean():.1f} deg, "
              f"resolution {bins.resolution_A[b]:.1f} A")
    MapViewer(bins.maps[2] - bins.maps[0], px, threshold_sigma=3.0, backend="slices")
    """),
    md("""
    ## 4. The leak detector

    Users of latent-space methods report coordinates that track pose or defocus instead of
    conformation. `latent_leaks` correlates every coordinate with the viewing direction, the
    in-plane angle, the origin, the defocus and the image's grey scale, and flags `|r| > 0.2`.
    Fitting without CTF correction makes a deliberate leak.
    """),
    code("""
    nuisance = nuisance_table(stack)
    print(latent_leaks(res.z, nuisance).round(2).to_string())
    leaky = fit_variability(stack, n_components=3, filter_A=30.0, ctf=False)
    flagged = latent_leaks(leaky.z, nuisance).attrs["flagged"]
    print("without CTF correction, flagged:", flagged)
    """),
    md("""
    ## 5. Diffusion maps: one viewing direction, a curved path

    In one view the images of a rotating 40S lie on a curve. With a large rotation the curve bends
    and a linear projection folds it; a diffusion map follows it. The kernel's bandwidths come from
    the data: each particle's own scale is its distance to its 7th nearest neighbour (a self-tuning
    kernel). The curve `log sum exp(-D / eps)` against `log eps` is the diagnostic: `L / N` is the
    mean number of neighbours a particle has at bandwidth `eps`; the red line is the median of the
    particles' own scales.
    """),
    code("""
    m = 300 if QUICK else 1500
    view = simulate_hinge(parts, m, px, pivot_A=pivot, axis=axis, angle_range_deg=(-40, 40),
                          eulers=np.tile([0.0, 90.0, 0.0], (m, 1)), snr=0.5 if QUICK else 0.1, seed=4,
                          out_dir=WORK, name="one_view", include_truth_angles=True)
    dm = diffusion_coordinates(ParticleStack.from_star(view.star_path), filter_A=30.0 if QUICK else 30.0)
    angle = view.truth["hinge_angle_deg"].to_numpy()
    print(f"first diffusion coordinate vs angle: Spearman |rho| {abs(spearmanr(dm.coordinate, angle)[0]):.3f}")
    d = dm.views[0][1]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].semilogx(d.curve_eps, d.curve_log_sum); ax[0].axvline(d.eps, color="C3")
    ax[0].set_xlabel("eps"); ax[0].set_ylabel("log sum exp(-D/eps)"); ax[0].set_title("bandwidth (red: median local scale)")
    ax[1].scatter(angle, dm.coordinate, s=4); ax[1].set_xlabel("true angle (deg)"); ax[1].set_ylabel("psi_1")
    plt.show()
    """),
    md("""
    ## Exercises

    1. Lower the SNR to 0.1 (`QUICK = False` does at 64 px). Which number suffers first: the
       coordinate's correlation with the angle, or the two minima of the landscape? Why?
    2. Give every particle a grey scale that varies by ±30 % (multiply the images). Which
       nuisance variable does the leak detector flag, and which coordinate carries it?
    3. Compare the first diffusion coordinate with PCA's first coordinate of the same images at
       ±90° (`angle_range_deg=(-90, 90)`).
    4. Fit with one component instead of three. Does the first coordinate change?
    """),
    answers("""
    1. The minima: each particle's coordinate has an error, and the occupancy is the true one
       blurred by that error; when the blur is as wide as the gap between the states, the two
       minima merge into one (at SNR 0.1 and 2,000 particles in the benchmark).
    2. `image_norm` (the image's standard deviation): a grey-scale change of the whole particle is
       a multiple of the mean map, which the first component takes up.
    3. At ±90° the path of the images bends back until its two ends (the 40S turned by -90° and
       +90°) look almost alike in this view: the path is nearly a closed loop. PCA's first
       coordinate folds it (Spearman |rho| 0.24-0.42 over four seeds at SNR 0.1, 1,500 images);
       the diffusion coordinate follows it better (0.46-0.55) but not to the end, because noise
       joins the two ends.
    4. Hardly: the components are ordered by variance and the first one is the hinge; extra
       components take up noise and smaller motions.
    """),
]

NOTEBOOKS = {"14_continuous_heterogeneity.ipynb": NB14}

if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, NOTEBOOKS):
        print(p)
