"""Continuous heterogeneity: linear variability, the energy landscape and the leak detector on the simulated ratchet.

Data: :func:`cryolab.simulate.simulate_hinge` on :func:`cryolab.methods.multibody.ratchet_bodies`
(the demo 80S as 60S + 40S, the 40S rotated per particle about the hinge axis; 64 px, 6 A/px,
CTF, white noise). Sizes: the default and ``--full`` are the issue's, 2,000 particles at SNR 0.5
and 0.1; ``--quick`` 300 particles at SNR 0.5 (a smoke run).

1. **Consensus.** ``--consensus refine`` (default): cryolab's gold-standard auto-refinement
   (:func:`cryolab.methods.refine`) with local searches from the start (HEALPix order 3, sigma_ang
   3.75 deg) around the true large-subunit poses, from the unrotated 80S low-passed to 30 A (what
   the multi-body benchmark gives RELION); its poses and origins are the consensus.
   ``--consensus truth``: the true large-subunit poses (a perfect consensus).
2. **Linear variability** (:func:`cryolab.methods.variability.fit_variability`, 3 components,
   filter 30 A): the first coordinate's ``|r|`` with the true hinge angle (target >= 0.8 at SNR
   0.5) and the first eigenvolume's correlation with the true derivative of the map with respect
   to the angle (``(V(+1 deg) - V(-1 deg)) / 2``, both low-passed to the filter; target >= 0.7).
3. **Landscape.** The same with a 70/30 bimodal occupancy (Gaussians of SD 3 deg at -7.5 and
   +7.5 deg): :func:`~cryolab.methods.variability.free_energy` of the first coordinate; its minima
   are put in degrees by the straight line through (coordinate, true angle) and compared with the
   minima of the true occupancy (target: two minima, each within 3 deg).
4. **Diffusion maps.** One viewing direction, 1,500 images at SNR 0.1, hinge angles uniform in
   +/-40 and +/-90 deg, four simulation seeds (``--view_seeds``): Spearman ``|rho|`` of the first
   diffusion coordinate (:func:`~cryolab.methods.variability.diffusion_coordinates`, self-tuning
   kernel; beside it the fixed-bandwidth kernel, ``eps="curve"``) with the angle (target >= 0.9 at
   +/-40, every seed) and of the first principal component of the same images (diffusion should
   beat it by 0.1 at +/-90, every seed); on the ratchet, diffusion maps over 12 viewing directions beside the linear
   coordinate.
5. **cryoDRGN** (when ``cryodrgn`` is installed: ``pip install cryolab[bench-peers]``, or ``--cryodrgn``):
   ``train_vae --zdim 1`` with a small network (encoder and decoder 2 x 256, 20 epochs, CPU) on the
   uniform set at the first SNR, from the same consensus poses; its latent coordinate's ``|r|`` with
   the angle (after the last epoch, and after each epoch from cryoDRGN's ``z.N.pkl`` checkpoints) and
   its wall time beside cryolab's (targets: cryolab at least as accurate, >= 5x faster).
6. **Leaks.** One state (the 80S alone, true poses): every coordinate's ``|r|`` with pose, origin,
   defocus and image norm (target all <= 0.2); and a deliberate leak, the same fit without CTF
   correction on data whose defocus range is wide: the detector must flag it.

Usage: ``python -m benchmarks.variability [--quick] [--n N] [--snr S ...] [--consensus refine|truth]
[--cryodrgn PATH | --no-peers] [--drgn_epochs E] [--view_seeds S ...]``
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import finish, load_now, part_parser, ratio, saves, work_folder

BOX, PIXEL_A, FILTER_A, REFERENCE_A = 64, 6.0, 30.0, 30.0
SIZES = {"quick": dict(n=300, snrs=(0.5,)), "default": dict(n=2000, snrs=(0.5, 0.1))}
VIEW_SEEDS = {"quick": (4,), "default": (4, 5, 6, 7)}
BIMODAL = dict(centres_deg=(-7.5, 7.5), weights=(0.7, 0.3), sd_deg=3.0)


def hinge_map(vols, pivot_A, axis, angle_deg: float, pixel_size_A: float) -> np.ndarray:
    """The ratchet's map with the moving body (``vols`` second entry) rotated by ``angle_deg``
    about ``axis`` through ``pivot_A`` (as :func:`cryolab.simulate.simulate_hinge` moves it)."""
    from cryolab.fourier import phase_shift
    from cryolab.methods.multibody.motion import move_map
    from cryolab.simulate.hinge import rotation_about
    fixed, moving = (np.asarray(v, np.float32) for v in (list(vols.values()) if isinstance(vols, dict) else vols))
    pivot_px = np.asarray(pivot_A, float) / pixel_size_A
    centred = np.asarray(phase_shift(moving, -pivot_px), np.float32)
    moved = move_map(centred, rotation_about(axis, angle_deg)[0], np.zeros(3), pivot_A, pixel_size_A)
    return fixed + moved


def hinge_derivative(vols, pivot_A, axis, pixel_size_A: float, step_deg: float = 1.0) -> np.ndarray:
    """``d map / d angle`` at angle 0 by central differences (per degree)."""
    return (hinge_map(vols, pivot_A, axis, step_deg, pixel_size_A)
            - hinge_map(vols, pivot_A, axis, -step_deg, pixel_size_A)) / (2 * step_deg)


def bimodal_angles(n: int, seed: int, centres_deg=BIMODAL["centres_deg"], weights=BIMODAL["weights"],
                   sd_deg=BIMODAL["sd_deg"]) -> np.ndarray:
    rng = np.random.default_rng([seed, 70])
    which = rng.random(n) < weights[0]
    return np.where(which, centres_deg[0], centres_deg[1]) + rng.normal(0, sd_deg, n)


def true_minima_deg(centres_deg=BIMODAL["centres_deg"], weights=BIMODAL["weights"], sd_deg=BIMODAL["sd_deg"]):
    """The minima of ``-ln p`` of the true mixture (its modes)."""
    from cryolab.methods.variability import find_minima
    s = np.linspace(-20, 20, 4001)
    p = sum(w * np.exp(-0.5 * ((s - c) / sd_deg) ** 2) for c, w in zip(centres_deg, weights))
    return np.sort(s[find_minima(-np.log(p), 0.1)])


def correlation(a, b, mask=None) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if mask is not None:
        a, b = a[mask > 0.5], b[mask > 0.5]
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def simulate(folder: Path, n: int, snr: float, distribution="uniform", seed: int = 3, box: int = BOX):
    """The ratchet in ``folder``: ``(simulation, volumes, pivot, axis, pixel size)``; the STAR file
    holds the true large-subunit poses."""
    from cryolab.fourier import fourier_crop
    from cryolab.methods.multibody import ratchet_bodies
    from cryolab.simulate import simulate_hinge
    vols, pivot, axis = ratchet_bodies()
    px = PIXEL_A * 64 / box
    if box != 64:
        vols = {k: fourier_crop(v, box, ndim=3).astype(np.float32) for k, v in vols.items()}
    folder.mkdir(parents=True, exist_ok=True)
    sim = simulate_hinge(vols, n, px, pivot_A=pivot, axis=axis, seed=seed, snr=snr, out_dir=folder,
                         name="particles", include_truth_angles=True, distribution=distribution)
    return sim, vols, np.asarray(pivot, float), np.asarray(axis, float), px


def consensus(folder: Path, sim, vols, how: str, max_iter: int = 4):
    """``(stack with consensus poses, info)``; see the module text."""
    from cryolab.fourier import lowpass
    from cryolab.geometry import angular_distance
    from cryolab.io import ParticleStack
    stack = ParticleStack.from_star(sim.star_path)
    truth = sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    if how == "truth":
        return stack, {"how": "truth", "wall_s": 0.0, "angular_error_deg": 0.0}
    from cryolab.methods import refine
    px = float(stack.pixel_size_A)
    ref = lowpass(vols["60S"] + vols["40S"], REFERENCE_A, px, ndim=3) * float(sim.info["signal_scale"])
    t0 = time.perf_counter()
    r = refine(stack, ref, ini_high_A=REFERENCE_A, healpix_order=3, local_healpix_order=3, sigma_ang_deg=3.75,
               offset_range_px=3, offset_step_px=1, max_iter=max_iter, progress=False, out_dir=folder / "Refine3D")
    wall = time.perf_counter() - t0
    refined = ParticleStack.from_star(folder / "Refine3D" / "run_data.star")
    err = angular_distance(refined.eulers(), truth)
    return refined, {"how": "refine", "wall_s": wall, "iterations": r.iteration,
                     "angular_error_deg": float(err.mean()), "resolution_A": float(r.history[-1].resolution_A)}


def assess_linear(res, theta, vols, pivot, axis, px) -> dict:
    """First coordinate vs the truth, first eigenvolume vs the true derivative."""
    from cryolab.fourier import lowpass
    der = lowpass(hinge_derivative(vols, pivot, axis, px), res.filter_A, px, ndim=3)
    r = [abs(np.corrcoef(res.z[:, k], theta)[0, 1]) for k in range(res.n_components)]
    return {"z1_r": float(r[0]), "best_r": float(max(r)), "best_k": int(np.argmax(r)),
            "eig1_derivative_corr": abs(correlation(res.eigenvolumes[0], der)),
            "variance": [float(v) for v in res.variance], "iterations": len(res.history), "fit_s": res.wall_s}


def landscape(res, theta) -> dict:
    """Minima of the first coordinate's free energy, in degrees (the straight line through the truth)."""
    from cryolab.methods.variability import free_energy
    z = res.z[:, 0]
    slope, intercept = np.polyfit(z, theta, 1)
    prof = free_energy(z, n_boot=100)
    found = np.sort(prof.minima_s * slope + intercept)
    true = true_minima_deg()
    err = [float(np.min(np.abs(found - t))) if found.size else float("inf") for t in true]
    return {"minima_deg": [float(v) for v in found], "true_minima_deg": [float(v) for v in true],
            "minima_error_deg": err, "n_minima": int(found.size)}


def leaks(folder: Path, n: int, snr: float) -> dict:
    """One-state data: the largest |r| with any nuisance variable; and the deliberate leak (no CTF)."""
    from cryolab.io import ParticleStack
    from cryolab.methods.multibody import ratchet_bodies
    from cryolab.methods.variability import fit_variability, latent_leaks, nuisance_table
    from cryolab.simulate import simulate_particles
    vols, _, _ = ratchet_bodies()
    sim = simulate_particles(vols["60S"] + vols["40S"], n, PIXEL_A, snr=snr, seed=5, out_dir=folder,
                             name="onestate", include_truth_angles=True, defocus_range_A=(5000.0, 40000.0))
    stack = ParticleStack.from_star(sim.star_path)
    nuis = nuisance_table(stack)
    clean = latent_leaks(fit_variability(stack, n_components=3, filter_A=FILTER_A).z, nuis)
    leaky = latent_leaks(fit_variability(stack, n_components=3, filter_A=FILTER_A, ctf=False).z, nuis)
    return {"one_state_max_r": float(clean.to_numpy().max()), "one_state_flagged": clean.attrs["flagged"],
            "one_state_table": clean.round(3).to_dict(), "no_ctf_flagged": leaky.attrs["flagged"],
            "no_ctf_max_r": float(leaky.to_numpy().max())}


def single_view(folder: Path, n: int, snr: float, half_range_deg: float, seed: int = 4) -> dict:
    """One viewing direction (rot, tilt, psi = 0, 90, 0), hinge angles uniform in +/-``half_range_deg``:
    Spearman |rho| of the first diffusion coordinate (self-tuning kernel, and the fixed kernel of
    ``eps="curve"``) and of the first principal component of the same filtered, phase-flipped images
    with the true angle."""
    from scipy.stats import spearmanr

    from cryolab.io import ParticleStack
    from cryolab.methods.msa_svd import streamed_pca
    from cryolab.methods.multibody import ratchet_bodies
    from cryolab.methods.variability import diffusion_coordinates, filter_shell
    from cryolab.methods.variability.diffusion import view_pixels
    from cryolab.simulate import simulate_hinge
    vols, pivot, axis = ratchet_bodies()
    sim = simulate_hinge(vols, n, PIXEL_A, pivot_A=pivot, axis=axis, angle_range_deg=(-half_range_deg, half_range_deg),
                         eulers=np.tile([0.0, 90.0, 0.0], (n, 1)), seed=seed, snr=snr, out_dir=folder,
                         name=f"view{half_range_deg:g}", include_truth_angles=True)
    stack = ParticleStack.from_star(sim.star_path)
    theta = sim.truth["hinge_angle_deg"].to_numpy()
    t0 = time.perf_counter()
    dm = diffusion_coordinates(stack, filter_A=FILTER_A)
    wall = time.perf_counter() - t0
    fixed = diffusion_coordinates(stack, filter_A=FILTER_A, eps="curve")
    x, c = view_pixels(stack, np.arange(n), filter_shell(BOX, PIXEL_A, FILTER_A), in_plane=False)
    y = np.sign(c) * x
    v = np.concatenate([y.real, y.imag], axis=1)
    pca = streamed_pca(lambda: [v], 2)
    return {"diffusion_rho": float(abs(spearmanr(dm.coordinate, theta)[0])),
            "fixed_kernel_rho": float(abs(spearmanr(fixed.coordinate, theta)[0])),
            "pca_rho": float(abs(spearmanr(pca.coordinates[:, 0], theta)[0])), "diffusion_s": wall,
            "eps": float(dm.views[0][1].eps), "seed": int(seed)}


DRGN_EPOCHS, DRGN_LAYERS, DRGN_DIM = 20, 2, 256          # "a small network" (cryoDRGN's defaults: 3 x 1024)


def cryodrgn_program(path=None):
    """The ``cryodrgn`` program: ``path``, the ``CRYODRGN`` environment variable, or on ``PATH``; None if absent."""
    import os
    import shutil
    for cand in (path, os.environ.get("CRYODRGN"), shutil.which("cryodrgn")):
        if cand and Path(cand).is_file():
            return str(cand)
    return None


def run_cryodrgn(program: str, folder: Path, star: Path, n: int, epochs: int = DRGN_EPOCHS) -> dict:
    """cryoDRGN on the same particles and consensus poses: ``parse_pose_star``, ``parse_ctf_star``, then
    ``train_vae --zdim 1`` with a small network (encoder and decoder 2 x 256) for ``epochs`` epochs on the
    CPU; its latent coordinate of the last epoch (converted to ``.npy`` by cryoDRGN's own Python)."""
    import subprocess
    work = folder / "cryodrgn"
    work.mkdir(exist_ok=True)
    px = f"{PIXEL_A:g}"
    t0 = time.perf_counter()
    log = open(work / "log.txt", "w")
    try:
        for cmd in ([program, "parse_pose_star", str(star), "-o", str(work / "poses.pkl"), "-D", str(BOX), "--Apix", px],
                    [program, "parse_ctf_star", str(star), "-o", str(work / "ctf.pkl"), "-D", str(BOX), "--Apix", px,
                     "--ps", "0"],                           # no _rlnPhaseShift: cryoDRGN would read NaN
                    [program, "train_vae", str(star), "--datadir", str(star.parent), "--poses", str(work / "poses.pkl"),
                     "--ctf", str(work / "ctf.pkl"), "--zdim", "1", "-n", str(epochs), "--enc-layers", str(DRGN_LAYERS),
                     "--enc-dim", str(DRGN_DIM), "--dec-layers", str(DRGN_LAYERS), "--dec-dim", str(DRGN_DIM),
                     "--uninvert-data", "--no-analysis", "--seed", "0", "-o", str(work / "train")]):
            subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=True)
    finally:
        log.close()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "epochs": epochs, **cryodrgn_latents(program, work / "train", n)}


def cryodrgn_latents(program: str, train: Path, n: int) -> dict:
    """cryoDRGN's latent coordinates in ``train`` (its output folder): ``z [n, zdim]`` of the last epoch
    (``z.pkl``) and ``z_per_epoch`` ``{epoch: z}`` from the per-epoch checkpoints ``z.N.pkl``. The pickles
    are turned into one ``.npz`` by cryoDRGN's own Python; this side reads no pickle."""
    import subprocess
    found = {int(p.stem.split(".")[-1]): p for p in train.glob("z.*.pkl") if p.stem.split(".")[-1].isdigit()}
    files = {f"e{k}": str(p) for k, p in sorted(found.items())}
    if (train / "z.pkl").is_file():
        files["last"] = str(train / "z.pkl")
    elif found:
        files["last"] = str(found[max(found)])
    else:
        raise FileNotFoundError(f"{train}: no z.pkl or z.N.pkl from cryodrgn train_vae")
    out = train / "latents.npz"
    subprocess.run([str(Path(program).parent / "python"), "-c",
                    "import pickle, sys, numpy; a = sys.argv[2:]; numpy.savez(sys.argv[1], **{a[i]: numpy.asarray("
                    "pickle.load(open(a[i + 1], 'rb'))) for i in range(0, len(a), 2)})", str(out),
                    *[v for kv in files.items() for v in kv]], check=True)
    with np.load(out, allow_pickle=False) as z:
        return {"z": z["last"].reshape(n, -1),
                "z_per_epoch": {int(k[1:]): z[k].reshape(n, -1) for k in z.files if k != "last"}}


def run(quick: bool = False, n: int | None = None, snrs=None, how: str = "refine", out=None, save: bool = True,
        keep=None, consensus_iter: int = 4, cryodrgn: str | None = None, peers: bool = True,
        drgn_epochs: int = DRGN_EPOCHS, view_seeds=None) -> dict:
    from cryolab.methods.variability import fit_variability
    size = dict(SIZES["quick" if quick else "default"])
    n = n or size["n"]
    snrs = tuple(snrs) if snrs else size["snrs"]
    print(f"== variability: {n} particles of the ratchet (40S +/-15 deg about the hinge; 70/30 bimodal for the "
          f"landscape), 64 px, SNR {', '.join(f'{s:g}' for s in snrs)}; consensus: {how}", flush=True)
    runs, ratios = {}, []
    drgn = cryodrgn_program(cryodrgn) if peers else None
    if peers and drgn is None:
        print("  cryodrgn not found (pip install cryolab[bench-peers], or --cryodrgn PATH): skipping it")
    for snr in snrs:
        tag = f"snr{snr:g}"
        res = {}
        for dist in ("uniform", "bimodal"):
            with work_folder(Path(keep) / tag / dist if keep else None) as folder:
                angles = "uniform" if dist == "uniform" else bimodal_angles(n, 3)
                sim, vols, pivot, axis, px = simulate(folder, n, snr, angles)
                stack, cons = consensus(folder, sim, vols, how, consensus_iter)
                theta = sim.truth["hinge_angle_deg"].to_numpy()
                load = load_now()
                fit = fit_variability(stack, n_components=3, filter_A=FILTER_A)
                a = assess_linear(fit, theta, vols, pivot, axis, px)
                a.update(consensus=cons, load_before=load)
                if dist == "bimodal":
                    a.update(landscape(fit, theta))
                else:
                    from scipy.stats import spearmanr

                    from cryolab.methods.variability import diffusion_coordinates
                    t0 = time.perf_counter()
                    dmap = diffusion_coordinates(stack, filter_A=FILTER_A, n_views=12)
                    ok = np.isfinite(dmap.coordinate)
                    a.update(diffusion_all_views_rho=float(abs(spearmanr(dmap.coordinate[ok], theta[ok])[0])),
                             linear_rho=float(abs(spearmanr(fit.z[:, 0], theta)[0])),
                             diffusion_all_views_s=time.perf_counter() - t0)
                    if drgn and snr == snrs[0]:
                        star = folder / "consensus.star"
                        stack.write_star(star)
                        d = run_cryodrgn(drgn, folder, star, n, drgn_epochs)
                        per_epoch = {e: float(abs(np.corrcoef(z[:, 0], theta)[0, 1]))
                                     for e, z in d["z_per_epoch"].items()}
                        a.update(cryodrgn_r=float(abs(np.corrcoef(d["z"][:, 0], theta)[0, 1])),
                                 cryodrgn_s=d["wall_s"], cryodrgn_epochs=d["epochs"], cryodrgn_r_per_epoch=per_epoch)
                        print("  cryoDRGN latent vs hinge angle |r| per epoch: " + ", ".join(
                            f"{e}: {r:.3f}" for e, r in sorted(per_epoch.items())), flush=True)
                        print(f"  [SNR {snr:g}] cryoDRGN train_vae (zdim 1, {d['epochs']} epochs, 2 x 256): latent vs "
                              f"hinge angle |r| {a['cryodrgn_r']:.3f}, {d['wall_s']:.0f} s; cryolab |r| {a['z1_r']:.3f}, "
                              f"{a['fit_s']:.0f} s ({d['wall_s'] / a['fit_s']:.1f}x faster)", flush=True)
                res[dist] = a
                print(f"  [SNR {snr:g}, {dist}] consensus {cons['how']} ({cons['angular_error_deg']:.2f} deg mean "
                      f"error, {cons['wall_s']:.0f} s); first coordinate vs hinge angle |r| {a['z1_r']:.3f}; first "
                      f"eigenvolume vs d map / d angle {a['eig1_derivative_corr']:.3f}; {a['iterations']} EM "
                      f"iterations, {a['fit_s']:.1f} s (load {load:.1f})"
                      + (f"; minima {np.round(a['minima_deg'], 1).tolist()} deg (truth "
                         f"{np.round(a['true_minima_deg'], 1).tolist()})" if dist == "bimodal" else
                         f"; Spearman |rho| with the angle: linear {a['linear_rho']:.3f}, diffusion maps over 12 "
                         f"viewing directions {a['diffusion_all_views_rho']:.3f} ({a['diffusion_all_views_s']:.0f} s)"),
                      flush=True)
        runs[tag] = res
        u, b = res["uniform"], res["bimodal"]
        if "cryodrgn_r" in u:
            ratios += [ratio(f"variability.{tag}.cryolab_minus_cryodrgn_r", u["z1_r"] - u["cryodrgn_r"],
                             "|r| with the true angle, cryolab's first coordinate minus cryoDRGN's latent", ">= 0"),
                       ratio(f"variability.{tag}.cryodrgn_over_cryolab_time", u["cryodrgn_s"] / u["fit_s"],
                             "wall time, cryoDRGN train_vae / fit_variability (CPU)", ">= 5")]
        target = snr >= 0.5
        ratios += [ratio(f"variability.{tag}.z1_r", u["z1_r"], "first coordinate vs true hinge angle, |r|",
                         ">= 0.8" if target else None),
                   ratio(f"variability.{tag}.eig1_derivative_corr", u["eig1_derivative_corr"],
                         "first eigenvolume vs the true d map / d angle", ">= 0.7" if target else None),
                   ratio(f"variability.{tag}.bimodal_minima_error_deg", max(b["minima_error_deg"]),
                         "largest distance of a true minimum to the nearest found, deg", "<= 3" if target else None),
                   ratio(f"variability.{tag}.fit_s", u["fit_s"], "fit_variability wall time, s")]
    with work_folder(Path(keep) / "leaks" if keep else None) as folder:
        lk = leaks(folder, n, snrs[0])
    print(f"  [one state, SNR {snrs[0]:g}] largest |r| of a coordinate with pose/origin/defocus/norm "
          f"{lk['one_state_max_r']:.3f} (flagged {lk['one_state_flagged']}); without CTF correction flagged: "
          f"{lk['no_ctf_flagged']}", flush=True)
    ratios += [ratio("variability.one_state_max_leak_r", lk["one_state_max_r"],
                     "largest |r| of a coordinate with a nuisance variable, one state", "<= 0.2"),
               ratio("variability.no_ctf_leak_flagged", float(len(lk["no_ctf_flagged"]) > 0),
                     "the detector flags the fit without CTF correction (1 = yes)", ">= 1")]
    views = {}
    seeds = tuple(view_seeds) if view_seeds else VIEW_SEEDS["quick" if quick else "default"]
    for half in (40.0, 90.0):
        per_seed = []
        for seed in seeds:
            with work_folder(Path(keep) / f"view{half:g}_seed{seed}" if keep else None) as folder:
                sv = single_view(folder, 300 if quick else 1500, 0.1, half, seed)
            per_seed.append(sv)
            print(f"  [single view, +/-{half:g} deg, SNR 0.1, {300 if quick else 1500} images, seed {seed}] Spearman "
                  f"|rho| with the angle: first diffusion coordinate {sv['diffusion_rho']:.3f} (fixed-bandwidth "
                  f"kernel {sv['fixed_kernel_rho']:.3f}), first principal component {sv['pca_rho']:.3f} "
                  f"({sv['diffusion_s']:.1f} s)", flush=True)
        views[f"pm{half:g}"] = per_seed
    ratios += [ratio("variability.single_view_pm40_diffusion_rho", min(v["diffusion_rho"] for v in views["pm40"]),
                     f"first diffusion coordinate vs angle, one view, +/-40 deg, SNR 0.1 (worst of {len(seeds)} "
                     "seeds)", ">= 0.9"),
               ratio("variability.single_view_pm90_diffusion_minus_pca",
                     min(v["diffusion_rho"] - v["pca_rho"] for v in views["pm90"]),
                     f"|rho| of diffusion minus PCA, one view, +/-90 deg (worst of {len(seeds)} seeds)", ">= 0.1")]
    result = {"single_view": views, "n": n, "box": BOX, "pixel_size_A": PIXEL_A, "snrs": list(snrs), "filter_A": FILTER_A,
              "consensus": how, "runs": runs, "leaks": lk, "ratios": ratios, "quick": quick}
    return finish("variability", result, out, save)


def main(argv=None):
    ap = part_parser("variability", __doc__, "300 particles at SNR 0.5 (smoke run)",
                     "particles (default 2000)", keep=True)
    ap.add_argument("--snr", type=float, nargs="+", default=None, help="signal-to-noise ratios (default 0.5 0.1)")
    ap.add_argument("--consensus", choices=("refine", "truth"), default="refine",
                    help="poses from cryolab's refinement (default) or the true large-subunit poses")
    ap.add_argument("--consensus_iter", type=int, default=4, help="iterations of the consensus refinement at most")
    ap.add_argument("--cryodrgn", default=None, help="the cryodrgn program (default: $CRYODRGN or on PATH)")
    ap.add_argument("--no-peers", action="store_true", help="skip cryoDRGN")
    ap.add_argument("--drgn_epochs", type=int, default=DRGN_EPOCHS, help=f"cryoDRGN epochs (default {DRGN_EPOCHS})")
    ap.add_argument("--view_seeds", type=int, nargs="+", default=None,
                    help="simulation seeds of the single-view diffusion test (default 4 5 6 7; --quick: 4)")
    a = ap.parse_args(argv)
    run(a.quick, a.n, a.snr, a.consensus, a.out, save=saves(a), keep=a.keep, consensus_iter=a.consensus_iter,
        cryodrgn=a.cryodrgn, peers=not a.no_peers, drgn_epochs=a.drgn_epochs, view_seeds=a.view_seeds)


if __name__ == "__main__":
    main()
