"""Tilt-pair validation with the engine: the issue's numbers, and the per-pair angles against relion_tiltpair_plot.

Simulates 300 particle pairs of the demo 80S (32 px, 12 A/px, CTF, SNR 3, centred): random untilted
orientations and the same particles tilted 15 deg about the in-plane axis at 30 deg. Both lists are
oriented with :func:`cryolab.methods.tiltpair.orient_particles` (the engine's projection matching at a
fixed map: HEALPix order 3, then a local search at order 4 within 3 x 3 deg) against the correct map,
its mirror image (the wrong hand), a wrong map (the 80S with random Fourier phases beyond shell 2: the
right size and spectrum, the wrong structure) and the 60S subunit alone (two thirds right), and validated
(:func:`cryolab.validation.tiltpair.tilt_pair_stats`). Targets: correct map: median tilt within 1.5 deg,
axis within 5 deg, >= 70 % of pairs within 5 deg; mirrored: hand flagged; wrong map: <= 15 % within 5 deg.
Measured (300 pairs, two shared cores, ~4 min): correct 15.32 deg (95 % 14.98-15.55), axis 30.0, 94 % within
5 deg, hand correct; mirrored: axis 210.3, hand flipped; wrong map: 0.3 % within 5 deg; the 60S alone:
21 % within 5 deg;
relion_tiltpair_plot: the same per-pair tilt and axis to 0.001 deg.
With ``relion_tiltpair_plot`` on PATH the orientations found against the correct map go through it too
and its per-pair tilt and axis (read back from its EPS plot) are compared with cryolab's.

Usage: ``python -m benchmarks.tiltpair [--quick] [--n 300] [--no-relion]``
"""
from __future__ import annotations

import subprocess
import time

import numpy as np

from . import finish, part_parser, ratio, relion_available, saves, work_folder

TILT, AXIS, BOX, SNR = 15.0, 30.0, 32, 3.0


def run(quick: bool = False, n: int | None = None, relion: bool = True, out=None, save: bool = True) -> dict:
    import pandas as pd

    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.geometry import euler_to_matrix, matrix_to_euler, random_rotations
    from cryolab.io import write_star
    from cryolab.methods.tiltpair import orient_particles
    from cryolab.simulate import simulate_particles
    from cryolab.validation import phase_randomize
    from cryolab.validation.tiltpair import (expected_rotation, pair_tilts, relion_axis_deg, relion_tiltpair_points,
                                             tilt_pair_stats)
    n = n or (30 if quick else 300)
    demo = load_demo()
    px = demo.pixel_size_A * demo.box_size / BOX
    maps = {"correct": rescale(demo.volumes["80S"], BOX, ndim=3)}
    maps["mirrored"] = maps["correct"][::-1].copy()
    maps["wrong (phases)"] = phase_randomize(maps["correct"], 2.0, seed=3)
    maps["60S only"] = rescale(demo.volumes["60S"], BOX, ndim=3)
    print(f"== tiltpair: {n} pairs tilted {TILT:g} deg about {AXIS:g} deg, {BOX} px at {px:g} A/px, SNR {SNR:g}",
          flush=True)
    rng = np.random.default_rng(0)
    u = random_rotations(n, rng)
    t = np.array([matrix_to_euler(expected_rotation(TILT, AXIS) @ a) for a in euler_to_matrix(*u.T)])
    rows, ratios = {}, []
    with work_folder() as folder:
        sims = {k: simulate_particles(maps["correct"], n, px, eulers=e, snr=SNR, max_origin_A=0.0, seed=s,
                                      out_dir=folder, name=k) for k, e, s in (("untilted", u, 1), ("tilted", t, 2))}
        found = {}
        for name, ref in maps.items():
            t0 = time.perf_counter()
            e = {k: orient_particles(s.star_path, ref, healpix_order=3, local_order=4, sigma_ang_deg=3.0)
                 for k, s in sims.items()}
            st = tilt_pair_stats(e["untilted"], e["tilted"], expected_tilt_deg=TILT, expected_axis_deg=AXIS)
            found[name] = e
            rows[name] = {"median_tilt": st.median_tilt, "median_axis": st.median_axis, "tilt_ci": st.tilt_ci,
                          "axis_ci": st.axis_ci, "fraction_within_5": st.fraction_within, "rayleigh_p": st.rayleigh_p,
                          "hand": st.hand, "wall_s": time.perf_counter() - t0}
            print(f"  {name:14s} median tilt {st.median_tilt:.2f} (95 % {st.tilt_ci[0]:.2f}-{st.tilt_ci[1]:.2f}), axis "
                  f"{st.median_axis:.1f} (relion: {st.relion_axis:.1f}), {st.fraction_within:.0%} within 5 deg, "
                  f"Rayleigh p {st.rayleigh_p:.2g}, hand {st.hand} ({rows[name]['wall_s']:.0f} s)", flush=True)
        c = rows["correct"]
        ratios += [ratio("tiltpair.tilt_error_deg", abs(c["median_tilt"] - TILT), "correct map, median tilt", "<= 1.5"),
                   ratio("tiltpair.axis_error_deg", abs((c["median_axis"] - AXIS + 180) % 360 - 180),
                         "correct map, median axis", "<= 5"),
                   ratio("tiltpair.fraction_within_5", c["fraction_within_5"], "correct map", ">= 0.7"),
                   ratio("tiltpair.mirrored_flagged", float(rows["mirrored"]["hand"] == "flipped"), "hand flagged",
                         "1"),
                   ratio("tiltpair.wrong_fraction_within_5", rows["wrong (phases)"]["fraction_within_5"],
                         "wrong map (the 80S with random phases beyond shell 2)", "<= 0.15"),
                   ratio("tiltpair.60S_fraction_within_5", rows["60S only"]["fraction_within_5"],
                         "the 60S subunit alone (two thirds of the particle)")]
        if relion_available(relion, "relion_tiltpair_plot"):
            e = found["correct"]
            for k in e:
                write_star(folder / f"{k}.star", {"particles": pd.DataFrame(e[k], columns=["rlnAngleRot", "rlnAngleTilt",
                                                                                          "rlnAnglePsi"])})
            subprocess.run(["relion_tiltpair_plot", "--u", "untilted.star", "--t", "tilted.star", "--o", "tp.eps",
                            "--max_tilt", "90"], cwd=folder, check=True, capture_output=True)
            r_tilt, r_axis = relion_tiltpair_points((folder / "tp.eps").read_text(), 90.0)
            tilt, axis, _ = pair_tilts(e["untilted"], e["tilted"])
            if len(r_tilt) == len(tilt):
                d_tilt = float(np.abs(r_tilt - tilt).max())
                d_axis = float(np.abs((r_axis - relion_axis_deg(axis) + 180) % 360 - 180)[tilt > 1].max())
                print(f"  relion_tiltpair_plot: per-pair tilt within {d_tilt:.3f} deg, axis within {d_axis:.3f} deg")
                ratios.append(ratio("tiltpair.relion_max_tilt_difference_deg", d_tilt, "per pair", "< 0.05"))
                rows["relion_difference"] = {"tilt_deg": d_tilt, "axis_deg": d_axis}
            else:
                print(f"  relion_tiltpair_plot drew {len(r_tilt)} of {len(tilt)} pairs (beyond --max_tilt?)")
    result = {"n": n, "box": BOX, "pixel_size_A": px, "snr": SNR, "runs": rows, "ratios": ratios, "quick": quick}
    return finish("tiltpair", result, out, save)


def main(argv=None):
    ap = part_parser("tiltpair", __doc__, "30 pairs (smoke run)", "pairs (default 300)", "relion_tiltpair_plot")
    a = ap.parse_args(argv)
    run(a.quick, a.n, not a.no_relion, a.out, save=saves(a))


if __name__ == "__main__":
    main()
