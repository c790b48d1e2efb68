"""``cryolab subtract``: partial signal subtraction (as ``relion_particle_subtract``), and the full
maps of a focused classification.

``cryolab subtract --i Refine3D/run_data.star --ref Refine3D/run_class001.mrc --mask keep.mrc
--o Subtract/`` writes ``Subtract/particles_subtracted.star`` and ``Subtract/Particles/
particles_subtracted.mrcs``; ``--revert Subtract/particles_subtracted.star --o orig.star`` gives
the original particles back. A ``class3d`` run on subtracted particles also writes, per class,
the full map reconstructed from the original images (``_classNNN_full.mrc``).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CryolabInputError
from .common import (add_common, check_output, load_particles, make_folder, positive_float, positive_int,
                     provenance_name, read_map, record, require_input, say)


def _cmd_subtract(args) -> int:
    from ..masks import read_mask
    from ..methods.subtract import revert_subtraction, subtract_particles
    if args.revert:
        out = check_output(args.o)
        if out.suffix != ".star":
            raise CryolabInputError("with --revert, --o is the STAR file to write", path=out, field="--o")
        stack = load_particles(args.revert)
        if "rlnImageOriginalName" not in stack.table.columns:
            raise CryolabInputError("not a subtracted particle file", path=args.revert, field="_rlnImageOriginalName")
        make_folder(out.parent)
        rec = record("subtract", args, [args.revert])
        back = revert_subtraction(args.revert, out)
        rec.outputs, rec.results = [out.name], {"particles": len(back)}
        rec.write(provenance_name(out.parent, out.stem))
        say(args, f"reverted {len(back)} particles -> {out}")
        return 0
    for flag in ("i", "ref", "mask"):
        if getattr(args, flag) is None:
            raise CryolabInputError(f"--{flag} is required (or --revert)")
    stack = load_particles(args.i)
    px, box = float(stack.pixel_size_A), stack.box_size
    ref, ref_px = read_map(args.ref, what="reference map", default_px=px)
    if ref.shape != (box,) * 3 or abs(ref_px - px) > 0.01 * px:
        raise CryolabInputError(f"the map ({ref.shape[0]} px, {ref_px:g} A) must match the particles ({box} px, "
                                f"{px:g} A)", path=args.ref, field="--ref")
    mask = read_mask(require_input(args.mask, "mask"), box, px)
    centre = None
    given = [args.center_x, args.center_y, args.center_z]
    if args.recenter_on_mask:
        centre = "mask"
    elif any(v is not None for v in given):
        if any(v is None for v in given):
            raise CryolabInputError("give all of --center_x, --center_y, --center_z (Angstrom from the box centre)")
        centre = tuple(float(v) for v in given)
    out = check_output(args.o, folder=True)
    rec = record("subtract", args, [args.i, args.ref, args.mask])
    with rec.timed("subtract"):             # checks poses and --new_box before it creates the folder
        sub = subtract_particles(stack, ref, mask, out, scale=args.scale, norm_correction=args.norm,
                                 recenter=centre, new_box=args.new_box, progress=not args.quiet)
    rec.outputs = ["particles_subtracted.star", "Particles/particles_subtracted.mrcs"]
    rec.results = {"particles": len(sub), "box": sub.box_size}
    rec.write(provenance_name(out, "particles_subtracted"))
    say(args, f"subtracted {len(sub)} particles -> {out / 'particles_subtracted.star'}")
    return 0


def write_full_maps(session, stem) -> list[Path]:
    """After a 3D classification of subtracted particles: each class reconstructed from its original
    images (``rlnImageOriginalName``) at the classification's angles, ``<stem>_classNNN_full.mrc``."""
    from ..io import write_mrc
    from ..methods.focused import class_maps
    from ..methods.subtract import original_particles
    from ..session.files import data_table
    original = original_particles(session.particles.with_table(data_table(session)))
    maps = class_maps(original, session.classes, session.settings.K, ctf=session.settings.ctf)
    return [write_mrc(f"{stem}_class{k + 1:03d}_full.mrc", m, session.pixel_size_A)
            for k, m in enumerate(maps) if (session.classes == k).any()]


def register(sub) -> None:
    p = sub.add_parser("subtract", help="partial signal subtraction (as relion_particle_subtract)",
                       description="Subtract from each particle the projection of the map outside the "
                       "keep mask, at its pose, with its CTF (the particles' STAR file must hold refined "
                       "poses). Writes <o>/particles_subtracted.star and <o>/Particles/"
                       "particles_subtracted.mrcs with rlnImageOriginalName; --revert goes back.")
    p.add_argument("--i", metavar="STAR", help="particles with refined poses (e.g. run_data.star)")
    p.add_argument("--ref", metavar="MRC", help="the consensus map of that refinement (the data's grey scale)")
    p.add_argument("--mask", metavar="MRC", help="soft mask of the region to KEEP (values 0..1)")
    p.add_argument("--o", required=True, metavar="DIR", help="output folder (with --revert: output STAR file)")
    p.add_argument("--new_box", type=positive_int, metavar="PIXELS", help="cut the images to this box (even)")
    p.add_argument("--recenter_on_mask", action="store_true",
                   help="centre the images on the keep mask's centre of mass")
    for axis in "xyz":
        p.add_argument(f"--center_{axis}", type=float, metavar="ANGSTROM",
                       help=f"re-centre on this {axis} (Angstrom from the box centre; give x, y and z)")
    p.add_argument("--scale", type=positive_float, default=1.0,
                   help="grey scale of the map relative to the particles (default: 1)")
    p.add_argument("--norm", action="store_true", help="apply rlnNormCorrection as RELION does")
    p.add_argument("--revert", metavar="STAR", help="write the original particles of a subtracted STAR file")
    add_common(p)
    p.set_defaults(func=_cmd_subtract)
