"""Gold-standard auto-refinement: cryolab against relion_refine_mpi --auto_refine on the same data.

Simulates ``--n`` particles (default 600) of the demo 80S at ``--box`` pixels (default 48, the
64 px map Fourier-rescaled; 8 A/px), random orientations, CTF, SNR ``--snr`` (default 0.1), and
writes the 80S map low-pass filtered to 60 A as the starting reference. Then runs back to back

* cryolab ``refine`` (random half-sets, ``ini_high`` 60 A, HEALPix order 2, offsets 3/1 px,
  oversampling 1, local searches from order 4 on, halves joined below 40 A);
* ``mpirun -n 3 relion_refine_mpi --auto_refine --split_random_halves`` with the same settings
  (``--j 1`` per rank, ``--oversubscribe`` so it starts on two cores), run from the data folder.

Both pairs of unfiltered half maps are compared in the same way: the FSC between the halves
(:func:`cryolab.validation.fsc`, no mask) and the resolution where it drops below 0.143; the
correlation of the halves' mean with the true map; the mean angular error of the final angles
against the simulated ones. Wall times are reported too (RELION's ranks and cryolab share the
machine's cores; RELION's speed is not the point of this benchmark, its resolution is).

Usage: ``python -m benchmarks.refine [--n 600] [--box 48] [--snr 0.1] [--no-relion] [--quick]``
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np

from . import finish, load_now, part_parser, ratio, relion_available, saves, work_folder

INI_HIGH_A, JOIN_A, DIAMETER_A = 60.0, 40.0, 320.0   # the 80S is ~280 A across


def simulate(out_dir, n: int, box: int, snr: float, seed: int = 5):
    """``n`` particles of the demo 80S at ``box`` px; ``ref60.mrc`` (60 A low-pass) beside them."""
    from cryolab.data import load_demo
    from cryolab.fourier import lowpass, rescale
    from cryolab.io import write_mrc
    from cryolab.simulate import simulate_particles
    demo = load_demo()
    full = demo.volumes["80S"].shape[-1]
    truth = demo.volumes["80S"] if box == full else rescale(demo.volumes["80S"], box, ndim=3)
    pixel_size_A = demo.pixel_size_A * full / box
    sim = simulate_particles({"80S": truth}, n, pixel_size_A, snr=snr, seed=seed, out_dir=out_dir, name="parts")
    write_mrc(Path(out_dir) / "ref60.mrc", lowpass(truth, INI_HIGH_A, pixel_size_A, ndim=3), pixel_size_A)
    return sim, truth


def relion_command(star_name: str, diameter_A: float) -> list[str]:
    """``relion_refine_mpi --auto_refine`` arguments matching cryolab's refine settings."""
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "3", "relion_refine_mpi",
            "--o", "relion/run", "--auto_refine", "--split_random_halves", "--i", star_name,
            "--ref", "ref60.mrc", "--ini_high", f"{INI_HIGH_A:g}", "--firstiter_cc", "--ctf",
            "--particle_diameter", f"{diameter_A:.1f}", "--flatten_solvent", "--zero_mask",
            "--oversampling", "1", "--healpix_order", "2", "--auto_local_healpix_order", "4",
            "--offset_range", "3", "--offset_step", "1", "--sym", "C1",
            "--low_resol_join_halves", f"{JOIN_A:g}", "--norm", "--scale", "--pad", "2", "--j", "1",
            "--random_seed", "0",
            "--dont_combine_weights_via_disc", "--pool", "30"]


def assess(half1, half2, eulers, truth_map, truth_eulers, pixel_size_A) -> dict:
    """Half-map FSC resolution (0.143, unmasked), correlation with the truth, angular error."""
    from cryolab.geometry import angular_distance
    from cryolab.validation import fsc, resolution_at
    curve = fsc(half1, half2)
    mean = 0.5 * (half1 + half2)
    err = angular_distance(eulers, truth_eulers)
    return {"resolution_A": float(resolution_at(curve, 0.143, half1.shape[-1], pixel_size_A)),
            "map_correlation": float(np.corrcoef(mean.ravel(), truth_map.ravel())[0, 1]),
            "mean_angular_error_deg": float(err.mean()), "median_angular_error_deg": float(np.median(err))}


def run_cryolab(sim, diameter_A: float) -> dict:
    from cryolab.io import read_mrc
    from cryolab.methods import refine
    load = load_now()
    t0 = time.perf_counter()
    r = refine(str(sim.star_path), read_mrc(Path(sim.star_path).parent / "ref60.mrc")[0],
               ini_high_A=INI_HIGH_A, healpix_order=2, offset_range_px=3.0, offset_step_px=1.0,
               oversampling=1, local_healpix_order=4, join_halves_A=JOIN_A, particle_diameter_A=diameter_A,
               seed=0, progress=False)
    return {"wall_s": time.perf_counter() - t0, "iterations": r.iteration, "load_before": load,
            "half_maps": r.half_maps, "eulers": r.eulers, "reported_resolution_A": float(r.resolution_A)}


def run_relion(folder: Path, command: list[str]) -> dict:
    from cryolab.io import read_mrc, read_particles
    from cryolab.io.star import read_star
    (folder / "relion").mkdir(exist_ok=True)
    load = load_now()
    t0 = time.time()
    with open(folder / "relion" / "log.txt", "w") as log:
        subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.time() - t0
    out = folder / "relion"
    halves = [read_mrc(out / f"run_half{h}_class001_unfil.mrc")[0] for h in (1, 2)]
    table, _ = read_particles(out / "run_data.star")
    index = table["rlnImageName"].str.split("@").str[0].astype(int).to_numpy() - 1
    eulers = np.empty((len(index), 3))
    eulers[index] = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float)
    general = read_star(out / "run_model.star")["model_general"]
    # run_it000 is the start; the final iteration writes run_* instead of run_itNNN_*
    iterations = len(list(out.glob("run_it*_half1_model.star")))
    return {"wall_s": wall, "iterations": iterations, "load_before": load, "half_maps": halves,
            "eulers": eulers, "reported_resolution_A": float(general["rlnCurrentResolution"])}


def run(quick: bool = False, n: int | None = None, box: int | None = None, snr: float = 0.1,
        relion: bool = True, out=None, save: bool = True, keep=None) -> dict:
    n = n or (60 if quick else 600)
    box = box or (24 if quick else 48)
    print(f"== refine: {n} particles of the 80S, {box} px, SNR {snr:g}, gold-standard auto-refine "
          "(cryolab and relion run back to back on shared cores)", flush=True)
    have_relion = relion_available(relion, "relion_refine_mpi", "mpirun")
    rows = {}
    with work_folder(keep) as folder:
        sim, truth_map = simulate(folder, n, box, snr)
        truth_eulers = sim.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
        diameter_A = DIAMETER_A
        runs = {"cryolab": lambda: run_cryolab(sim, diameter_A)}
        if have_relion:
            runs["relion"] = lambda: run_relion(folder, relion_command(sim.star_path.name, diameter_A))
        for name, fn in runs.items():
            try:
                r = fn()
            except subprocess.CalledProcessError as exc:     # e.g. an MPI without --oversubscribe
                print(f"  {name} failed ({exc}); see relion/log.txt (keep it with --keep)")
                continue
            r.update(assess(*r.pop("half_maps"), r.pop("eulers"), truth_map, truth_eulers, sim.pixel_size_A))
            rows[name] = r
            print(f"  {name:8s} half-map FSC 0.143: {r['resolution_A']:.1f} A (reported "
                  f"{r['reported_resolution_A']:.1f}), map vs truth {r['map_correlation']:.3f}, angular error "
                  f"mean {r['mean_angular_error_deg']:.1f} / median {r['median_angular_error_deg']:.1f} deg, "
                  f"{r['iterations']} iterations, {r['wall_s']:.0f} s", flush=True)
    c = rows["cryolab"]
    ratios = [ratio("refine.cryolab_resolution_A", c["resolution_A"], "half-map FSC 0.143, Angstrom")]
    if "relion" in rows:
        r = rows["relion"]
        ratios += [
            ratio("refine.cryolab_over_relion_resolution", c["resolution_A"] / r["resolution_A"],
                  "cryolab's resolution / relion's (same FSC code for both)", "<= 1.1"),
            ratio("refine.cryolab_minus_relion_map_correlation", c["map_correlation"] - r["map_correlation"],
                  "correlation with the true map, difference", ">= 0"),
            ratio("refine.relion_over_cryolab_wall", r["wall_s"] / c["wall_s"],
                  "whole auto-refine runs, wall time (relion: 3 MPI ranks, --j 1)"),
        ]
    result = {"n": n, "box": box, "pixel_size_A": sim.pixel_size_A, "snr": snr, "ini_high_A": INI_HIGH_A,
              "healpix_order": 2, "offset_range_px": 3, "offset_step_px": 1, "particle_diameter_A": diameter_A,
              "runs": rows, "ratios": ratios, "quick": quick}
    return finish("refine", result, out, save)


def main(argv=None):
    ap = part_parser("refine", __doc__, "60 particles, 24 px (smoke run)", "particles (default 600)",
                     "relion_refine_mpi", keep=True)
    ap.add_argument("--box", type=int, default=None, help="box in pixels (default 48; the map is rescaled)")
    ap.add_argument("--snr", type=float, default=0.1, help="signal-to-noise ratio (default 0.1)")
    a = ap.parse_args(argv)
    run(a.quick, a.n, a.box, a.snr, not a.no_relion, a.out, save=saves(a), keep=a.keep)


if __name__ == "__main__":
    main()
