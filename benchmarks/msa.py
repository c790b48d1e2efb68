"""Image PCA (multivariate statistical analysis): cryolab's streamed randomized PCA against
scikit-learn's PCA on the same aligned images, and what the analysis finds in two states.

Simulates ``--n`` particles (default 3000) of the demo 80S and 60S at one view (rot 0, tilt 90),
64 px at 6 A/px, psi uniform, origins up to 3 px, CTF (defocus 1-3 um), SNR ``--snr`` (0.05),
written as STAR + MRC stack, and a set of the same size of the 80S alone. Then, back to back:

* cryolab ``msa(particles, k=10)`` from the STAR file: alignment, phase flipping, soft mask,
  centring on each image's view of the CTF-corrected mean, streamed randomized PCA (10 power
  iterations), the Marchenko-Pastur noise edge (whole run); and both sets again centred on the
  plain mean (``centre="plain"``: the defocus spread is then variance above the edge);
* the PCA step alone on the aligned vectors held in memory: cryolab's ``streamed_pca`` (batches
  of 256) against scikit-learn's ``PCA(n_components=10)``, ``svd_solver="full"`` (LAPACK SVD,
  the reference) and ``"randomized"``.

Reports the time ratios, the agreement of the eigenimages (|correlation| of the first ones, the
largest principal angle between the subspaces of the eigenvalues above the noise edge, and of all
ten: beyond the edge the eigenvectors are noise and not determined), the first eigenimage's
|correlation| with the true difference image (80S - 60S at the view, phase-flipped and averaged
over the CTFs), eigenvalues above the noise edge for both sets, k-means on five factors against
the Bayes-optimal accuracy.

ASPIRE (``pip install aspire``, 0.14.3) is not compared: its image PCA is steerable PCA (a
rotation-invariant covariance in a Fourier-Bessel basis, for images at all in-plane angles), whose
eigenimages are not those of aligned images.

Usage: ``python -m benchmarks.msa [--n 3000] [--box 64] [--snr 0.05] [--quick]``
"""
from __future__ import annotations

import time

import numpy as np

from . import best_of, finish, load_now, part_parser, ratio, saves, work_folder

STATES = ("80S", "60S")
VIEW = (0.0, 90.0)        # rot, tilt of the one view (degrees)


def simulate(folder, states, n: int, box: int, snr: float, seed: int):
    """``n`` particles of the demo ``states`` at :data:`VIEW` (the simulator's 2D views are the
    states' projections), written to ``folder`` with their true psi and origins. Returns
    ``(simulation, ParticleStack, {state: map at box})``."""
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.io import ParticleStack
    from cryolab.projection import FourierProjector
    from cryolab.simulate import simulate_views_2d, write_simulation
    demo = load_demo()
    maps = {s: demo.volumes[s] if box == demo.box_size else rescale(demo.volumes[s], box, ndim=3) for s in states}
    views = np.stack([FourierProjector(maps[s]).project([[*VIEW, 0.0]])[0] for s in states])
    px = demo.pixel_size_A * demo.box_size / box
    sim = simulate_views_2d(views, n, px, snr=snr, seed=seed)
    return sim, ParticleStack.from_star(write_simulation(sim, folder, include_truth_angles=True)), maps


def true_difference(sim, maps, mask):
    """The clean 80S - 60S projection at :data:`VIEW` at the simulation's scale, phase-flipped and
    averaged over the particles' CTFs (astigmatism left out), in the analysis frame ``m (y - c)``."""
    from cryolab.ctf import CTFParams, ctf_2d
    from cryolab.fourier import irfft2c, rfft2c
    from cryolab.projection import FourierProjector
    box = mask.shape[-1]
    clean = [FourierProjector(maps[s]).project([[*VIEW, 0.0]])[0] for s in STATES]
    defocus = 0.5 * (sim.particles["rlnDefocusU"].to_numpy() + sim.particles["rlnDefocusV"].to_numpy())
    mean_abs_ctf = np.abs(ctf_2d(CTFParams(defocus_u_A=defocus, defocus_v_A=defocus), box, sim.pixel_size_A)).mean(0)
    y = irfft2c(mean_abs_ctf * rfft2c(sim.info["signal_scale"] * (clean[0] - clean[1])), box)
    return mask * (y - (mask ** 2 * y).sum() / (mask ** 2).sum())


def bayes_ceiling(sim, maps) -> float:
    """The Bayes-optimal accuracy on a two-state set (true maps, view, psi, origins, CTFs, noise)."""
    from cryolab.engine.forward import bayes_optimal_accuracy
    from cryolab.io import ctf_from_table
    t = sim.truth
    eulers = np.column_stack([np.full(len(t), VIEW[0]), np.full(len(t), VIEW[1]), t["psi_deg"]])
    ctf = ctf_from_table(sim.particles.merge(sim.optics, on="rlnOpticsGroup"))
    return bayes_optimal_accuracy(sim.images, np.stack([maps[s] for s in STATES]), eulers, t["view_index"].to_numpy(),
                                  t[["origin_x_A", "origin_y_A"]].to_numpy() / sim.pixel_size_A, ctf,
                                  sim.pixel_size_A, scale=sim.info["signal_scale"])


def _angle(a, b) -> float:
    from scipy.linalg import subspace_angles
    return float(subspace_angles(np.asarray(a).T, np.asarray(b).T).max())


def compare_pca(vectors, k: int, sklearn_pca) -> dict:
    """cryolab's streamed PCA of ``vectors [n, p]`` (float64, in memory, batches of 256) against scikit-learn
    (which computes in the data's precision)."""
    from cryolab.methods.msa_svd import streamed_pca

    def ours():
        return streamed_pca(lambda: (vectors[i:i + 256] for i in range(0, len(vectors), 256)), k)
    out = {"cryolab_s": best_of(ours, repeat=2, min_total_s=0)}
    pca = ours()
    for solver in ("full", "randomized"):
        out[f"sklearn_{solver}_s"] = best_of(lambda: sklearn_pca(k, svd_solver=solver, random_state=0).fit(vectors),
                                             repeat=2, min_total_s=0)
    ref = sklearn_pca(k, svd_solver="full").fit(vectors)
    out["randomized_components"] = sklearn_pca(k, svd_solver="randomized", random_state=0).fit(vectors).components_
    out.update(pca=pca, reference_components=ref.components_,
               first_abs_correlation=float(abs(pca.components[0] @ ref.components_[0])
                                           / np.linalg.norm(pca.components[0]) / np.linalg.norm(ref.components_[0])),
               first_eigenvalue_rel_diff=float(pca.eigenvalues[0] / ref.explained_variance_[0] - 1),
               eigenvalues_sklearn=ref.explained_variance_.tolist())
    return out


def run(quick: bool = False, n: int | None = None, box: int | None = None, snr: float = 0.05, out=None,
        save: bool = True) -> dict:
    from cryolab.methods.msa import msa
    from cryolab.validation import class_accuracy
    n, box = n or (300 if quick else 3000), box or (32 if quick else 64)
    print(f"== msa: {n} particles of {' and '.join(STATES)} at one view, {box} px, SNR {snr:g}, CTF; and {n} of "
          f"{STATES[0]} alone (shared cores: timings are noisy)", flush=True)
    try:
        from sklearn.decomposition import PCA as sklearn_pca
    except ImportError:
        sklearn_pca = None
        print("  scikit-learn not installed (pip install scikit-learn): skipping the comparison")
    with work_folder() as folder:
        (folder / "two").mkdir()
        (folder / "one").mkdir()
        sim, stack, maps = simulate(folder / "two", STATES, n, box, snr, seed=1)
        load = load_now()
        t0 = time.perf_counter()
        result = msa(stack, k=10)
        msa_s = time.perf_counter() - t0
        one_stack = simulate(folder / "one", STATES[:1], n, box, snr, seed=2)[1]
        one = msa(one_stack, k=10)
        plain = {"two": msa(stack, k=10, centre="plain"), "one": msa(one_stack, k=10, centre="plain")}
        vectors = np.concatenate([v for _, v in result.aligned(stack).batches(1000)]).astype(np.float64)
        cmp = compare_pca(vectors, 10, sklearn_pca) if sklearn_pca else None
        ceiling = bayes_ceiling(sim, maps)
    truth = sim.truth["view_index"].to_numpy()
    inside = result.mask > 0
    difference = true_difference(sim, maps, result.mask)
    r_true = float(abs(np.corrcoef(result.eigenimages[0][inside], difference[inside])[0, 1]))
    accuracy = class_accuracy(result.cluster(2, factors=5), truth)
    print(f"  cryolab msa: {msa_s:.2f} s for {n} images (load {load:.1f}); eigenvalues "
          f"{np.round(result.eigenvalues[:4], 3).tolist()}, noise variance {result.noise_variance:.4f}, edge "
          f"{result.noise_edge:.3f}: {result.n_significant} above; one state: "
          f"{np.round(one.eigenvalues[:2], 3).tolist()}, edge {one.noise_edge:.3f}: {one.n_significant} above; "
          f"centred on the plain mean instead: {plain['two'].n_significant} and {plain['one'].n_significant} above "
          f"({np.round(plain['two'].eigenvalues[:2], 3).tolist()}, "
          f"{np.round(plain['one'].eigenvalues[:1], 3).tolist()})")
    ratios = [ratio("msa.first_eigenimage_vs_true_difference", r_true, "|correlation| with 80S - 60S, phase-flipped",
                    ">= 0.9"),
              ratio("msa.significant_two_states", result.n_significant, "eigenvalues above the noise edge, 80S + 60S"),
              ratio("msa.significant_one_state", one.n_significant, "eigenvalues above the noise edge, 80S alone"),
              ratio("msa.significant_two_states_plain_mean", plain["two"].n_significant,
                    "the same, images centred on the plain mean (a defocus spread is variance then)"),
              ratio("msa.significant_one_state_plain_mean", plain["one"].n_significant, "the same, 80S alone"),
              ratio("msa.kmeans_accuracy", accuracy, "k-means on 5 factors, matched to the states", ">= 0.95"),
              ratio("msa.bayes_optimal_accuracy", ceiling, "the ceiling on these images")]
    record = {"n": n, "box": box, "snr": snr, "k": 10, "msa_s": msa_s, "load_before": load,
              "eigenvalues": result.eigenvalues.tolist(), "noise_variance": result.noise_variance,
              "noise_edge": result.noise_edge, "one_state_eigenvalues": one.eigenvalues.tolist(),
              "one_state_noise_edge": one.noise_edge, "n_pixels": result.n_pixels,
              "plain_mean_eigenvalues": {k: v.eigenvalues.tolist() for k, v in plain.items()}}
    if cmp is not None:
        m = max(1, result.n_significant or 0)
        pca, ref, fast = cmp.pop("pca"), cmp.pop("reference_components"), cmp.pop("randomized_components")
        cmp.update(significant_subspace_angle=_angle(pca.components[:m], ref[:m]),
                   all_ten_subspace_angle=_angle(pca.components, ref),
                   sklearn_randomized_significant_angle=_angle(fast[:m], ref[:m]))
        print(f"  PCA step on {vectors.shape[0]} x {vectors.shape[1]} vectors: cryolab {cmp['cryolab_s']:.3f} s, "
              f"scikit-learn full {cmp['sklearn_full_s']:.3f} s, randomized {cmp['sklearn_randomized_s']:.3f} s; "
              f"against the full SVD: first eigenimages 1 - |r| = {1 - cmp['first_abs_correlation']:.1e}, angle of "
              f"the first {m}: cryolab {cmp['significant_subspace_angle']:.2e} rad, scikit-learn randomized "
              f"{cmp['sklearn_randomized_significant_angle']:.2e} rad; of all ten {cmp['all_ten_subspace_angle']:.2e} "
              "rad (beyond the edge the eigenvectors are noise)")
        ratios += [ratio("msa.sklearn_full_over_cryolab_time", cmp["sklearn_full_s"] / cmp["cryolab_s"],
                         "scikit-learn PCA (full SVD) / cryolab streamed PCA, same vectors in memory"),
                   ratio("msa.sklearn_randomized_over_cryolab_time", cmp["sklearn_randomized_s"] / cmp["cryolab_s"],
                         "scikit-learn PCA (randomized) / cryolab streamed PCA"),
                   ratio("msa.first_eigenimage_vs_sklearn", cmp["first_abs_correlation"],
                         "|correlation| of the first eigenimages", ">= 0.9999"),
                   ratio("msa.significant_subspace_angle_rad", cmp["significant_subspace_angle"],
                         "largest angle between the subspaces above the noise edge", "< 1e-3")]
        record["sklearn"] = cmp
    return finish("msa", dict(record, ratios=ratios, quick=quick), out, save)


def main(argv=None):
    ap = part_parser("msa", __doc__, "300 particles, 32 px (smoke run)", "particles per set (default 3000)")
    ap.add_argument("--box", type=int, default=None, help="box in pixels (default 64; the maps are rescaled)")
    ap.add_argument("--snr", type=float, default=0.05, help="signal-to-noise ratio (default 0.05)")
    a = ap.parse_args(argv)
    run(a.quick, a.n, a.box, a.snr, a.out, save=saves(a))


if __name__ == "__main__":
    main()
