"""Projection and reconstruction speed: cryolab against plain NumPy and RELION on the same inputs.

* Projection: the demo 80S map (64^3, 6 A/px) into 1,000 random orientations.
  cryolab's Fourier projector (padding 2, trilinear) against a real-space reference
  (``scipy.ndimage.map_coordinates`` + sum along z, :func:`cryolab.projection.project_real`)
  timed on a subset and extrapolated, and against ``relion_project --ang`` (both reading
  the map and writing the stack).
* Reconstruction: 10,000 simulated 64^2 images (random orientations, CTF, origins) from a
  STAR file. cryolab's ``reconstruct_stack`` (reads the files, trilinear insertion, CTF)
  against a naive nearest-neighbour back-projection loop in NumPy (one image at a time,
  timed on a subset and extrapolated; CTFs computed before the clock starts) and against
  ``relion_reconstruct --ctf`` (RELION defaults: padding 2, 10 gridding iterations).

Each result also reports the correlation of the output with the map (or with cryolab's
projections), so a fast wrong answer shows.

Usage: ``python -m benchmarks.imaging [--quick] [--no-relion] [--out DIR]``
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from . import best_of, finish, load_now, part_parser, ratio, saves


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _corr(a, b) -> float:
    a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _relion(args: list[str], cwd: Path) -> float:
    """Wall time of one RELION program run (its output goes to ``<cwd>/<program>.log``)."""
    t0 = time.perf_counter()
    with open(cwd / f"{args[0]}.log", "w") as log:
        subprocess.run(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def nn_backproject(images, rotations, ctf_full, shifts_px):
    """Naive reference: one image at a time, full 2D FFT, nearest-neighbour insertion of
    ``C X`` and ``C^2`` into an unpadded ``N^3`` grid, then ``data / weight``.

    ``images`` ``[R, N, N]``, ``rotations`` ``[R, 3, 3]`` (slice plane = first two rows),
    ``ctf_full`` ``[R, N, N]`` on the centred full grid, ``shifts_px`` ``[R, 2]`` (moved by +shift).
    """
    n = images.shape[-1]
    k = np.arange(n) - n // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    inside = (kx ** 2 + ky ** 2) < (n // 2) ** 2
    kx, ky = kx[inside].astype(float), ky[inside].astype(float)
    data = np.zeros((n, n, n), np.complex128)
    weight = np.zeros((n, n, n))
    for img, a, c, s in zip(images, rotations, ctf_full, shifts_px):
        ft = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img)))[inside]
        ft = ft * np.exp(-2j * np.pi * (kx * s[0] + ky * s[1]) / n)
        xyz = np.rint(kx[:, None] * a[0] + ky[:, None] * a[1]).astype(int) + n // 2
        xyz = np.clip(xyz, 0, n - 1)
        np.add.at(data, (xyz[:, 2], xyz[:, 1], xyz[:, 0]), ft * c[inside])
        np.add.at(weight, (xyz[:, 2], xyz[:, 1], xyz[:, 0]), c[inside] ** 2)
    ft = data / np.maximum(weight, 1e-3 * weight.max())
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(ft))).real


def projection(folder: Path, vol, pixel_size_A: float, n_orient: int, n_ref: int, relion: bool) -> dict:
    from cryolab.geometry import random_rotations
    from cryolab.io import read_mrc, write_mrc, write_particles
    from cryolab.projection import FourierProjector, as_rotation_matrices, project_real
    eulers = random_rotations(n_orient, np.random.default_rng(0))
    load = load_now()
    proj = FourierProjector(vol).project(eulers)
    t_cry = best_of(lambda: FourierProjector(vol).project(eulers), repeat=2, min_total_s=0)
    ref, t_ref = _timed(lambda: project_real(vol, as_rotation_matrices(eulers[:n_ref])))
    out = {"orientations": n_orient, "load_before": load, "cryolab_s": t_cry,
           "numpy_subset": n_ref, "numpy_s_extrapolated": t_ref * n_orient / n_ref,
           "corr_numpy_vs_cryolab": _corr(ref, proj[:n_ref])}
    if relion:
        import pandas as pd
        write_mrc(folder / "map.mrc", vol, pixel_size_A)
        angles = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@none.mrcs" for i in range(n_orient)],
                               "rlnAngleRot": eulers[:, 0], "rlnAngleTilt": eulers[:, 1],
                               "rlnAnglePsi": eulers[:, 2], "rlnOpticsGroup": 1})
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                               "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                               "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [pixel_size_A],
                               "rlnImageSize": [vol.shape[-1]], "rlnImageDimensionality": [2]})
        write_particles(folder / "angles.star", angles, optics)

        def cryolab_files():
            v, px = read_mrc(folder / "map.mrc")
            write_mrc(folder / "cryolab_proj.mrcs", FourierProjector(v).project(eulers), px)

        out["cryolab_files_s"] = best_of(cryolab_files, repeat=2, min_total_s=0)
        out["relion_s"] = _relion(["relion_project", "--i", "map.mrc", "--o", "relion_proj",
                                   "--ang", "angles.star", "--angpix", str(pixel_size_A)], folder)
        rel, _ = read_mrc(folder / "relion_proj.mrcs")
        out["corr_relion_vs_cryolab"] = _corr(rel, proj)
    return out


def reconstruction(folder: Path, vol, pixel_size_A: float, n_img: int, n_ref: int, relion: bool) -> dict:
    from cryolab.ctf import ctf_2d
    from cryolab.geometry import euler_to_matrix
    from cryolab.io import ParticleStack, read_mrc
    from cryolab.reconstruction import reconstruct_stack
    from cryolab.simulate import simulate_particles
    sim = simulate_particles(vol, n_img, pixel_size_A, snr=1.0, seed=0, out_dir=folder, name="recon",
                             include_truth_angles=True)
    n = vol.shape[-1]
    load = load_now()
    rec, t_cry = _timed(lambda: reconstruct_stack(ParticleStack.from_star(sim.star_path), ctf=True))
    stack = ParticleStack.from_star(sim.star_path)
    rows = np.arange(n_ref)
    e = stack.eulers(rows)
    inputs = (stack.read(rows), euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]),
              ctf_2d(stack.ctf(rows), n, pixel_size_A, half=False), stack.origins_A(rows) / pixel_size_A)
    ref, t_ref = _timed(lambda: nn_backproject(*inputs))
    out = {"images": n_img, "load_before": load, "cryolab_s": t_cry, "numpy_subset": n_ref,
           "numpy_s_extrapolated": t_ref * n_img / n_ref, "corr_cryolab_vs_map": _corr(rec, vol),
           "corr_numpy_subset_vs_map": _corr(ref, vol)}   # from the subset only: lower
    if relion:
        out["relion_s"] = _relion(["relion_reconstruct", "--i", sim.star_path.name, "--o", "relion_rec.mrc",
                                   "--ctf"], folder)
        out["corr_relion_vs_map"] = _corr(read_mrc(folder / "relion_rec.mrc")[0], vol)
    return out


def run(quick: bool = False, relion: bool = True, out=None, save: bool = True) -> dict:
    from cryolab.data import load_demo
    n_orient, n_img = (100, 1000) if quick else (1000, 10000)
    ref_proj, ref_bp = (5, 100) if quick else (20, 1000)
    print(f"== imaging: project 64^3 into {n_orient} orientations, reconstruct from {n_img} images "
          "(shared cores: timings are noisy)", flush=True)
    have = relion and all(shutil.which(p) for p in ("relion_project", "relion_reconstruct"))
    if relion and not have:
        print("  relion_project / relion_reconstruct not found: skipping the RELION comparison")
    demo = load_demo()
    vol, px = demo.volumes["80S"], demo.pixel_size_A
    with tempfile.TemporaryDirectory() as tmp:
        p = projection(Path(tmp), vol, px, n_orient, ref_proj, have)
        r = reconstruction(Path(tmp), vol, px, n_img, ref_bp, have)
    print(f"  project:     cryolab {p['cryolab_s']:.2f} s, numpy (real space, extrapolated from "
          f"{ref_proj}) {p['numpy_s_extrapolated']:.1f} s, agreement {p['corr_numpy_vs_cryolab']:.3f}"
          + (f"; with files cryolab {p['cryolab_files_s']:.2f} s, relion_project {p['relion_s']:.2f} s, "
             f"agreement {p['corr_relion_vs_cryolab']:.3f}" if have else ""))
    print(f"  reconstruct: cryolab {r['cryolab_s']:.2f} s (corr with map {r['corr_cryolab_vs_map']:.3f}), "
          f"numpy NN loop (extrapolated from {ref_bp}) {r['numpy_s_extrapolated']:.1f} s "
          f"(corr of the subset's map {r['corr_numpy_subset_vs_map']:.3f})"
          + (f", relion_reconstruct {r['relion_s']:.2f} s (corr {r['corr_relion_vs_map']:.3f})" if have else ""))
    ratios = [
        ratio("imaging.project_numpy_over_cryolab", p["numpy_s_extrapolated"] / p["cryolab_s"],
              f"real-space NumPy/SciPy projection time / cryolab, {n_orient} orientations"),
        ratio("imaging.reconstruct_numpy_over_cryolab", r["numpy_s_extrapolated"] / r["cryolab_s"],
              f"naive NN back-projection loop time / cryolab reconstruct_stack, {n_img} images"),
    ]
    if have:
        ratios += [
            ratio("imaging.project_relion_over_cryolab", p["relion_s"] / p["cryolab_files_s"],
                  "relion_project time / cryolab (both read the map and write the stack)"),
            ratio("imaging.reconstruct_relion_over_cryolab", r["relion_s"] / r["cryolab_s"],
                  "relion_reconstruct --ctf time / cryolab reconstruct_stack (both from the STAR file)"),
        ]
    result = {"projection": p, "reconstruction": r, "ratios": ratios, "quick": quick}
    return finish("imaging", result, out, save)


def main(argv=None):
    ap = part_parser("imaging", __doc__, "100 orientations, 1,000 images (smoke run)",
                     relion="relion_project / relion_reconstruct")
    a = ap.parse_args(argv)
    run(a.quick, not a.no_relion, a.out, save=saves(a))


if __name__ == "__main__":
    main()
