"""Bootstrapped variance maps: does the variance find what differs, how fast, and does it agree with RELION?

Simulates the demo ribosome with and without RACK1 (``80S`` / ``80S_noRACK1``, 50/50; RACK1 is
about 1.3 % of the mass) and the 80S alone, at 64 px (6 A/px), 1,500 particles, true poses, CTF
and white noise, then runs :func:`cryolab.methods.variance.bootstrap_variance` with 100 resamples:

1. detection: the ROC AUC of the variance map for the voxels where the two states differ
   (``|80S - 80S_noRACK1| > 0.02``) among the particle's voxels, at SNR 0.5, 0.1 and 0.05, Wiener
   with the low-pass chosen from the half-set FSC (``lowpass_A="auto"``, printed) and ``pad`` 1; at
   SNR 0.5 also at full resolution and pad 2;
2. no false peak: max/median of the variance and significance maps inside the particle for the
   one-state set (and the two-state set beside it);
3. time: the one-pass bootstrap of 100 resamples (Wiener, pad 2, full resolution, no null: the same
   work as RELION's) against ``relion_reconstruct --ctf --fsc`` of resampled STAR files, timed on
   the first ``--relion-resamples`` resamples (default 10) and scaled to 100;
4. agreement: the correlation inside the particle of the variance maps of those resamples, ours
   against RELION's, at full resolution and with both sets of maps low-passed at the low-pass
   chosen at SNR 0.5.

Measured (two shared cores; docs/variance.md): low-pass chosen 27.4 / 38.4 / 38.4 A, AUC 0.956 /
0.786 / 0.678 at SNR 0.5 / 0.1 / 0.05 (0.715 at full resolution; with 30 A given 0.974 / 0.760 /
0.653), one-state max/median 1.78 (3.13 with RACK1 varying); at full resolution, pad 2, 0.20 s per
resample against 3.6 s for relion_reconstruct (quiet cores); variance correlation with RELION's
0.976 (0.982 both low-passed at 27.4 A).
The whole part takes ~2 min (~40 s of it RELION); ``--quick`` a few seconds.

Usage: ``python -m benchmarks.variance [--quick] [--n N] [--no-relion] [--relion-resamples 10] [--keep DIR]``
"""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pandas as pd

from . import finish, load_now, part_parser, ratio, relion_available, saves, work_folder

STATES = ("80S", "80S_noRACK1")
SIZES = {"quick": dict(box=32, n=300, resamples=10, relion=3, lowpass_A="auto"),
         "default": dict(box=64, n=1500, resamples=100, relion=10, lowpass_A="auto")}


def simulate(folder, box: int, n: int, snr: float, states=STATES, seed: int = 2):
    """Particles with their true poses (``particles.star``) in ``folder``; returns the stack."""
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.io import ParticleStack
    from cryolab.simulate import simulate_particles, write_simulation
    d = load_demo()
    vols = {k: d.volumes[k] if box == d.box_size else rescale(d.volumes[k], box, ndim=3) for k in states}
    sim = simulate_particles(vols, n, d.pixel_size_A * d.box_size / box, snr=snr, seed=seed, include_truth_angles=True)
    folder.mkdir(parents=True, exist_ok=True)
    return ParticleStack.from_star(write_simulation(sim, folder, include_truth_angles=True))


def truth(box: int):
    """(particle voxels, voxels where the states differ) on a ``box`` grid."""
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.masks import threshold_mask
    d = load_demo()
    a, rack1 = d.volumes["80S"], d.components["RACK1"]
    if box != d.box_size:
        a, rack1 = rescale(a, box, ndim=3), rescale(rack1, box, ndim=3)
    particle = threshold_mask(a, 0.05, d.pixel_size_A * d.box_size / box, extend_A=6.0, soft_edge_A=0.0) > 0.5
    return particle, np.abs(rack1) > 0.02


def auc(score, positive, universe) -> float:
    """ROC AUC from ranks (Mann-Whitney U over the voxels of ``universe``)."""
    from scipy.stats import rankdata
    s, y = score[universe], positive[universe]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def peak(volume, inside) -> float:
    return float(volume[inside].max() / np.median(volume[inside]))


def timed(fn):
    load = load_now()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, load


def run_relion(folder, stack, counts, curve) -> tuple[np.ndarray, float]:
    """relion_reconstruct --ctf --fsc of each resample's STAR file (run from ``folder``); maps and seconds."""
    import mrcfile

    from cryolab.io import write_star
    from cryolab.methods.bootstrap import resampled_rows
    write_star(folder / "fsc.star", {"fsc": pd.DataFrame({"rlnSpectralIndex": np.arange(curve.size),
                                                          "rlnGoldStandardFsc": curve})})
    maps, t0 = [], time.perf_counter()
    for r, c in enumerate(counts):
        star = folder / f"resample{r:03d}.star"
        stack.subset(resampled_rows(c)).write_star(star)
        subprocess.run(["relion_reconstruct", "--i", star.name, "--o", f"resample{r:03d}.mrc", "--ctf", "--fsc",
                        "fsc.star"], cwd=folder, check=True, capture_output=True)
        maps.append(mrcfile.read(folder / f"resample{r:03d}.mrc").astype(np.float64))
    return np.asarray(maps), time.perf_counter() - t0


def run(quick: bool = False, n: int | None = None, relion: bool = True, relion_resamples: int | None = None,
        out=None, save: bool = True, keep=None) -> dict:
    from cryolab.fourier import lowpass
    from cryolab.methods.variance import bootstrap_variance
    from cryolab.reconstruction import reconstruct_stack
    from cryolab.validation import fsc, random_halves
    size = dict(SIZES["quick" if quick else "default"])
    if n:
        size["n"] = n
    if relion_resamples:
        size["relion"] = relion_resamples
    box, n, r, lp = size["box"], size["n"], size["resamples"], size["lowpass_A"]
    print(f"== variance: {n} particles of {' and '.join(STATES)} (50/50) and of 80S alone, {box} px, true poses, "
          f"{r} resamples (shared cores: timings are noisy)", flush=True)
    particle, differ = truth(box)
    universe = particle | differ
    rows, ratios = {}, []
    with work_folder(keep) as folder:
        sets = {snr: simulate(folder / f"two_snr{snr:g}", box, n, snr) for snr in (0.5, 0.1, 0.05)}
        one = simulate(folder / "one_snr0.5", box, n, 0.5, states=("80S",))
        for snr, stack in sets.items():
            res, wall, load = timed(lambda: bootstrap_variance(stack, r, lowpass_A=lp, pad=1, keep_maps=False))
            rows[f"two_snr{snr:g}"] = {"auc": auc(res.variance, differ, universe), "wall_s": wall, "load_before": load,
                                       "auc_significance": auc(res.significance, differ, universe),
                                       "peak": peak(res.variance, particle), "lowpass_A": res.lowpass_A,
                                       "half_set_fsc": None if res.fsc is None else res.fsc.tolist()}
            row = rows[f"two_snr{snr:g}"]
            print(f"  two states, SNR {snr:g}: low-pass {res.lowpass_A or 0:.1f} A ({lp}), AUC {row['auc']:.3f} "
                  f"(significance {row['auc_significance']:.3f}), {wall:.1f} s with the null", flush=True)
        res, wall, load = timed(lambda: bootstrap_variance(one, r, lowpass_A=lp, pad=1, keep_maps=False))
        rows["one_snr0.5"] = {"peak": peak(res.variance, particle), "peak_significance": peak(res.significance, particle),
                              "median_significance": float(np.median(res.significance[particle])), "wall_s": wall,
                              "lowpass_A": res.lowpass_A}
        row = rows["one_snr0.5"]
        print(f"  one state: low-pass {res.lowpass_A or 0:.1f} A, max/median {row['peak']:.2f} (significance "
              f"{row['peak_significance']:.2f}; two states {rows['two_snr0.5']['peak']:.2f})", flush=True)
        stack = sets[0.5]
        full, wall, load = timed(lambda: bootstrap_variance(stack, r, null=False, keep_maps=False, lowpass_A=None))
        rows["two_snr0.5_full_resolution"] = {"auc": auc(full.variance, differ, universe), "wall_s": wall,
                                              "load_before": load, "per_resample_s": wall / r}
        print(f"  full resolution, pad 2, no null: AUC {rows['two_snr0.5_full_resolution']['auc']:.3f}, "
              f"{wall:.1f} s ({wall / r:.2f} s per resample)", flush=True)
        lp = rows["two_snr0.5"]["lowpass_A"] or 30.0      # the low-pass chosen at SNR 0.5, for RELION's maps too
        ratios += [ratio("variance.auc_snr0.5", rows["two_snr0.5"]["auc"], f"RACK1 voxels, {lp:.1f} A, {r} resamples",
                         ">= 0.9"),
                   ratio("variance.auc_snr0.1", rows["two_snr0.1"]["auc"], "RACK1 voxels"),
                   ratio("variance.auc_snr0.05", rows["two_snr0.05"]["auc"], "RACK1 voxels"),
                   ratio("variance.one_state_peak", rows["one_snr0.5"]["peak"], "max/median inside the particle",
                         "<= 2")]
        if relion_available(relion, "relion_reconstruct"):
            k = size["relion"]
            halves = random_halves(n, 0)
            curve = fsc(*(reconstruct_stack(stack.subset(np.flatnonzero(halves == h))) for h in (1, 2)))
            ours, wall, _ = timed(lambda: bootstrap_variance(stack, k, fsc=curve, null=False, lowpass_A=None))
            theirs, relion_s = run_relion(folder, stack, ours.counts, curve)

            def low(maps):
                return np.array([lowpass(m, lp, stack.pixel_size_A, ndim=3) for m in maps]).var(axis=0, ddof=1)
            agree = float(np.corrcoef(ours.variance[particle], theirs.var(axis=0, ddof=1)[particle])[0, 1])
            agree_low = float(np.corrcoef(low(ours.maps)[particle], low(theirs)[particle])[0, 1])
            rows["relion"] = {"resamples": k, "wall_s": relion_s, "per_resample_s": relion_s / k,
                              "correlation": agree, "correlation_lowpass": agree_low, "ours_s": wall}
            print(f"  relion_reconstruct: {relion_s / k:.2f} s per resample; variance correlation {agree:.3f} "
                  f"(both low-passed at {lp:.1f} A: {agree_low:.3f})", flush=True)
            ratios += [ratio("variance.relion_agreement", agree_low, f"variance maps, both low-passed at {lp:.1f} A",
                             ">= 0.95"),
                       ratio("variance.cryolab_over_relion_time",
                             rows["two_snr0.5_full_resolution"]["per_resample_s"] / (relion_s / k),
                             f"per resample: one pass of {r} vs relion_reconstruct of STAR files", "< 1")]
    result = {"n": n, "box": box, "resamples": r, "lowpass_A": size["lowpass_A"], "runs": rows, "ratios": ratios,
              "quick": quick}
    return finish("variance", result, out, save)


def main(argv=None):
    ap = part_parser("variance", __doc__, "300 particles, 32 px, 10 resamples (smoke run)",
                     "particles (default 1500)", "relion_reconstruct", keep=True)
    ap.add_argument("--relion-resamples", type=int, default=None,
                    help="resamples reconstructed by relion_reconstruct (default 10)")
    a = ap.parse_args(argv)
    run(a.quick, a.n, not a.no_relion, a.relion_resamples, a.out, save=saves(a), keep=a.keep)


if __name__ == "__main__":
    main()
