"""Map and particle-set commands: ``reconstruct``, ``postprocess``, ``project``, ``simulate``.

Flag names follow ``relion_reconstruct``, ``relion_postprocess`` and ``relion_project``;
all inputs are checked before any output is created.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (provenance_name, read_map, add_common, check_output, load_particles, make_folder, nonneg_float,
                       positive_float, positive_int, record, require_input, say)
from ..errors import CryolabInputError


def _provenance(out: Path):
    return provenance_name(out.parent, out.stem)


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from None


# --------------------------------------------------------------------------- reconstruct

def _cmd_reconstruct(args) -> int:
    import numpy as np
    from ..geometry import symmetry_operators
    from ..io import write_mrc
    stack = load_particles(args.i)
    out = check_output(args.o)
    symmetry_operators(args.sym)
    table = stack.table
    if stack.eulers() is None:
        raise CryolabInputError("no angles (_rlnAngleRot/Tilt/Psi) to reconstruct from", path=args.i)
    keep = np.ones(len(table), bool)
    for flag, column in (("subset", "rlnRandomSubset"), ("cls", "rlnClassNumber")):
        value = getattr(args, flag)
        if value is not None:
            if column not in table.columns:
                raise CryolabInputError("label needed for this selection", path=args.i, field=f"_{column}")
            keep &= table[column].to_numpy() == value
    if not keep.any():
        raise CryolabInputError("no particle left after --subset/--class", path=args.i)
    if args.angpix:
        stack = stack.with_table(table.assign(rlnImagePixelSize=args.angpix))
    if stack.pixel_size_A is None:
        raise CryolabInputError("the pixel size is unknown: give --angpix", path=args.i)
    if args.ctf:
        stack.ctf([0])  # fails now (exit 2) when CTF labels are missing
    make_folder(out.parent)
    rec = record("reconstruct", args, [args.i, *map(str, stack.stack_paths)])
    from ..reconstruction import reconstruct_stack
    with rec.timed("reconstruct"):
        vol = reconstruct_stack(stack.subset(np.flatnonzero(keep)), ctf=args.ctf, sym=args.sym)
    write_mrc(out, vol, stack.pixel_size_A)
    rec.outputs, rec.results = [out.name], {"particles": int(keep.sum())}
    rec.write(_provenance(out))
    say(args, f"reconstructed {int(keep.sum())} particles -> {out}")
    return 0


# --------------------------------------------------------------------------- postprocess

def _cmd_postprocess(args) -> int:
    from ..validation import postprocess, write_postprocess
    half1, px1 = read_map(args.i, args.angpix, "half map 1")
    half2, _ = read_map(args.i2, args.angpix, "half map 2")
    mask = read_map(args.mask, args.angpix, "mask")[0] if args.mask else None
    shapes = {half1.shape, half2.shape} | ({mask.shape} if mask is not None else set())
    if len(shapes) != 1:
        raise CryolabInputError(f"half maps and mask differ in size: {sorted(shapes)}")
    if mask is not None and (mask.min() < -1e-3 or mask.max() > 1 + 1e-3):
        raise CryolabInputError("mask values must lie in [0, 1]", path=args.mask)
    out = check_output(args.o)
    make_folder(out.parent)
    rec = record("postprocess", args, [p for p in (args.i, args.i2, args.mask) if p])
    with rec.timed("postprocess"):
        result = postprocess(half1, half2, mask, px1, bfactor=args.adhoc_bfac,
                             lowpass_A=args.low_pass)
    rec.outputs = [p.name for p in write_postprocess(result, out)]
    rec.results = {"resolution_A": result.resolution_A, "bfactor_A2": result.bfactor_A2}
    rec.write(_provenance(out))
    say(args, f"resolution (FSC 0.143): {result.resolution_A:.2f} A; B-factor {result.bfactor_A2:.1f} A^2",
        f"outputs: {out}.mrc, {out}.star")
    return 0


# --------------------------------------------------------------------------- project

def _cmd_project(args) -> int:
    import numpy as np
    from ..io import ctf_from_table, read_particles
    from ..projection import FourierProjector
    vol, px = read_map(args.i, args.angpix)
    require_input(args.ang, "angles STAR file")
    table, optics = read_particles(args.ang)
    names = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    if not any(n in table.columns for n in names):
        raise CryolabInputError("no angles (_rlnAngleRot/Tilt/Psi)", path=args.ang)
    eulers = np.stack([table[n].to_numpy(float) if n in table.columns else np.zeros(len(table))
                       for n in names], axis=1)
    origins = np.stack([table[c].to_numpy(float) / px if c in table.columns else np.zeros(len(table))
                        for c in ("rlnOriginXAngst", "rlnOriginYAngst")], axis=1)
    ctf = ctf_from_table(table, args.ang) if args.ctf else None
    out = check_output(args.o)
    if out.suffix != ".mrcs":
        raise CryolabInputError("the output stack must end in .mrcs", path=out)
    make_folder(out.parent)
    rec = record("project", args, [args.i, args.ang])
    projector = FourierProjector(vol)
    images = np.empty((len(table), vol.shape[0], vol.shape[0]), np.float32)
    from tqdm.auto import tqdm
    for start in tqdm(range(0, len(table), 256), desc="projecting", unit="batch", disable=args.quiet):
        sl = slice(start, start + 256)
        images[sl] = projector.project(eulers[sl], origins[sl], ctf[sl] if ctf is not None else None, px)
    _write_projections(out, images, table, optics, px)
    rec.outputs = [out.name, out.with_suffix(".star").name]
    rec.write(_provenance(out))
    say(args, f"{len(table)} projections -> {out} (+ {out.with_suffix('.star').name})")
    return 0


def _write_projections(out, images, table, optics, px):
    """``out`` (.mrcs) and a STAR file beside it listing the images with their angles."""
    import pandas as pd
    from ..io import write_particle_stack
    particles = table.drop(columns=[c for c in table.columns if optics is not None and
                                    c in optics.columns and c != "rlnOpticsGroup"])
    if optics is None:
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]})
        particles = particles.assign(rlnOpticsGroup=1)
        for c in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
            if c in table.columns:
                optics[c] = table[c].iloc[0]
                particles = particles.drop(columns=c)
    optics = optics.assign(rlnImagePixelSize=px)
    write_particle_stack(out.with_suffix(".star"), images, particles, optics, stack_name=out.name)


# --------------------------------------------------------------------------- simulate

def _simulation_maps(args):
    """``{name: volume}`` and pixel size from ``--ref`` files or ``--demo`` states."""
    from ..fourier import fourier_crop
    if bool(args.ref) == bool(args.demo):
        raise CryolabInputError("give either --ref map.mrc[,map2.mrc] or --demo STATE[,STATE]")
    if args.ref:
        maps, pxs = {}, []
        for k, path in enumerate(args.ref.split(",")):
            vol, px = read_map(path, args.angpix)
            name = Path(path).stem
            maps[f"{name}_{k + 1}" if name in maps else name] = vol
            pxs.append(px)
        if len({v.shape for v in maps.values()}) != 1:
            raise CryolabInputError("the maps differ in size", path=args.ref)
        px = pxs[0]
    else:
        from ..data import list_demos, load_demo
        wanted = [s for s in args.demo.split(",") if s]
        for name in list_demos():
            demo = load_demo(name)
            if set(wanted) <= set(demo.volumes):
                break
        else:
            raise CryolabInputError(f"unknown demo states {wanted}; choose from "
                                    + "; ".join(f"{n}: {','.join(load_demo(n).volumes)}" for n in list_demos()))
        maps, px = {s: demo.volumes[s] for s in wanted}, args.angpix or demo.pixel_size_A
    n = next(iter(maps.values())).shape[0]
    if args.box and args.box != n:
        if args.box > n:
            raise CryolabInputError(f"--box {args.box} is larger than the maps ({n})")
        maps = {k: fourier_crop(v, args.box, ndim=3) for k, v in maps.items()}
        px = px * n / args.box
    return maps, px


def _cmd_simulate(args) -> int:
    from ..simulate import simulate_particles, simulate_views_2d
    maps, px = _simulation_maps(args)
    if args.fractions is not None and len(args.fractions) != (args.views or len(maps)):
        raise CryolabInputError(f"--fractions needs {args.views or len(maps)} values, got {len(args.fractions)}")
    if args.defocus_min > args.defocus_max:
        raise CryolabInputError("--defocus_min is larger than --defocus_max")
    out = check_output(args.o, folder=True)
    make_folder(out)
    rec = record("simulate", args, args.ref.split(",") if args.ref else ())
    common = dict(fractions=args.fractions, snr=args.snr, noise=args.noise, seed=args.seed,
                  max_origin_A=args.max_origin, defocus_range_A=(args.defocus_min, args.defocus_max),
                  out_dir=out, include_truth_angles=args.truth_in_star)
    with rec.timed("simulate"):
        if args.views:
            sim = simulate_views_2d(next(iter(maps.values())), args.n, px, n_views=args.views, **common)
        else:
            sim = simulate_particles(maps, args.n, px, **common)
    rec.outputs = ["particles.star", "particles.mrcs", "truth.csv"]
    rec.results = {"pixel_size_A": px, "box": int(sim.images.shape[-1]), "classes": list(maps),
                   "signal_scale": sim.info.get("signal_scale")}
    rec.write(_provenance(out / "run"))
    say(args, f"{args.n} particles ({', '.join(maps)}; {sim.images.shape[-1]} px, {px:g} A/px, "
              f"SNR {args.snr:g}) -> {sim.star_path}")
    return 0


# --------------------------------------------------------------------------- registration

def register(sub) -> None:
    p = sub.add_parser("reconstruct", help="a map from particles with known angles (as relion_reconstruct)")
    p.add_argument("--i", required=True, metavar="STAR", help="particles with _rlnAngleRot/Tilt/Psi and origins")
    p.add_argument("--o", required=True, metavar="MRC", help="output map")
    p.add_argument("--ctf", action="store_true", help="apply CTF correction (Wiener-free: sum CX / sum C^2)")
    p.add_argument("--sym", default="C1", help="point group, e.g. C1, C2, D7, T, O, I (default: C1)")
    p.add_argument("--angpix", type=positive_float, help="pixel size in Angstrom (default: from the STAR file)")
    p.add_argument("--subset", type=int, choices=(1, 2), help="only particles of this _rlnRandomSubset")
    p.add_argument("--class", dest="cls", type=positive_int, help="only particles of this _rlnClassNumber")
    p.add_argument("--j", type=positive_int, help="number of CPU threads")
    add_common(p)
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("postprocess", help="gold-standard FSC, resolution, sharpening (as relion_postprocess)")
    p.add_argument("--i", required=True, metavar="MRC", help="half map 1")
    p.add_argument("--i2", required=True, metavar="MRC", help="half map 2")
    p.add_argument("--mask", metavar="MRC", help="solvent mask, values in [0, 1] (default: none)")
    p.add_argument("--angpix", type=positive_float, help="pixel size in Angstrom (default: map header)")
    p.add_argument("--o", required=True, metavar="PREFIX", help="output prefix, e.g. PostProcess/postprocess")
    p.add_argument("--adhoc_bfac", type=float, help="B-factor in A^2 to sharpen with (negative sharpens; "
                   "default: fitted from the Guinier plot)")
    p.add_argument("--low_pass", type=positive_float, help="extra low-pass filter, in Angstrom")
    add_common(p)
    p.set_defaults(func=_cmd_postprocess)

    p = sub.add_parser("project", help="projections of a map at given angles (as relion_project)")
    p.add_argument("--i", required=True, metavar="MRC", help="map to project")
    p.add_argument("--ang", required=True, metavar="STAR", help="angles (degrees), origins (A) and CTF")
    p.add_argument("--o", required=True, metavar="MRCS", help="output stack (.mrcs; a .star is written beside it)")
    p.add_argument("--ctf", action="store_true", help="multiply by the CTF of each row")
    p.add_argument("--angpix", type=positive_float, help="pixel size in Angstrom (default: map header)")
    add_common(p)
    p.set_defaults(func=_cmd_project)

    p = sub.add_parser("simulate", help="particle images with known truth",
                       description="Simulate particles (projections, shifts, CTF, noise) of one or "
                       "more maps; writes particles.star/.mrcs, truth.csv and run.json in --o.")
    p.add_argument("--ref", metavar="MRC[,MRC]", help="map(s); one class per map")
    p.add_argument("--demo", metavar="STATE[,STATE]", help="states of an embedded demo dataset, e.g. 80S,60S")
    p.add_argument("--n", type=positive_int, default=1000, help="number of particles (default: 1000)")
    p.add_argument("--snr", type=nonneg_float, default=0.05, help="signal-to-noise ratio (default: 0.05)")
    p.add_argument("--o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--fractions", type=_floats, help="relative class (or view) populations, e.g. 0.7,0.3")
    p.add_argument("--views", type=positive_int, help="K fixed views of the first map with random "
                   "in-plane rotations (a 2D classification set)")
    p.add_argument("--box", type=positive_int, help="Fourier-crop the maps to this box, in pixels")
    p.add_argument("--angpix", type=positive_float, help="pixel size in Angstrom (default: map header)")
    p.add_argument("--max_origin", type=nonneg_float, help="largest origin, in Angstrom (default: 3 pixels)")
    p.add_argument("--defocus_min", type=nonneg_float, default=10000.0, help="in Angstrom (default: 10000)")
    p.add_argument("--defocus_max", type=nonneg_float, default=30000.0, help="in Angstrom (default: 30000)")
    p.add_argument("--noise", choices=("white", "coloured"), default="white", help="noise spectrum")
    p.add_argument("--truth_in_star", action="store_true",
                   help="write the true angles and origins into particles.star (always in truth.csv)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_common(p)
    p.set_defaults(func=_cmd_simulate)
