"""``cryolab autopick`` and ``cryolab extract``: particle picking and extraction with RELION's flags.

``cryolab autopick --i micrographs.star --odir AutoPick/ --pickname autopick --ref refs.mrcs --ctf
--lowpass 20 --ang 10 --particle_diameter 300 --invert`` writes ``AutoPick/<micrograph path without
extension>_autopick.star`` per micrograph (as ``relion_autopick``); ``--LoG --LoG_diam_min 200
--LoG_diam_max 350`` picks without templates. ``cryolab extract --i micrographs.star --coord_dir
AutoPick/ --coord_suffix _autopick.star --part_star Extract/particles.star --extract_size 64 --norm
--invert_contrast`` cuts the particles out (as ``relion_preprocess --extract``). Everything is checked
before anything is written.
"""
from __future__ import annotations

from ..errors import CryolabInputError
from .common import (add_common, check_output, make_folder, nonneg_float, nonneg_int, positive_float, positive_int,
                     provenance_name, record, require_input, say)


def _templates(args, px):
    from ..io import mrc_header_info, read_mrc
    from ..picking import make_templates
    path = require_input(args.ref, "reference")
    info = mrc_header_info(path)
    refs, ref_px = read_mrc(path)
    ref_px = args.angpix_ref or ref_px or px
    nz, ny, nx = info["shape"]
    map3d = not info["is_stack"] and nz == ny == nx and nz > 1
    return make_templates(refs, ref_px, particle_diameter_A=args.particle_diameter, psi_step_deg=args.ang,
                          healpix_order=args.healpix_order, map3d=map3d, invert=args.invert, source=path)


def _cmd_autopick(args) -> int:
    import numpy as np

    from ..picking import Picker, PickSettings
    from ..picking.files import coordinate_path, read_micrographs, write_coordinates
    from ..picking.picker import FILM_EDGE_Z
    odir = check_output(args.odir, folder=True)
    if not args.LoG and not args.ref:
        raise CryolabInputError("give --ref (template picking) or --LoG", field="--ref")
    mics = read_micrographs(args.i, args.angpix, need_ctf=args.ctf)
    settings = PickSettings(particle_diameter_A=args.particle_diameter, mode="log" if args.LoG else "template",
                            lowpass_A=args.lowpass or None, highpass_A=args.highpass or None,
                            min_distance_A=args.min_distance or None, threshold=args.threshold,
                            false_alarm_rate=args.false_alarm_rate, max_stddev_noise=args.max_stddev_noise or None,
                            film_edge_z=FILM_EDGE_Z if args.film_edge_z is None else args.film_edge_z or None,
                            log_diameters_A=(args.LoG_diam_min, args.LoG_diam_max), invert=args.LoG_invert)
    templates = None if args.LoG else _templates(args, mics.pixel_size_A)
    picker = Picker(settings, mics.pixel_size_A, mics.shape, templates)
    make_folder(odir)
    rec = record("autopick", args, [args.i] + ([args.ref] if args.ref else []))
    counts, paths = [], []
    with rec.timed("autopick"):
        for i, name in enumerate(mics.names):
            ctf = mics.ctf[i] if (args.ctf and mics.ctf is not None) else None
            picks = picker.pick(mics.read(i), ctf)
            paths.append(write_coordinates(coordinate_path(odir, name, args.pickname), picks.table))
            if args.write_fom_maps:
                from ..io import write_mrc
                write_mrc(coordinate_path(odir, name, f"{args.pickname}_fom").with_suffix(".mrc"),
                          np.where(np.isfinite(picks.fom), picks.fom, 0), picker.grid_px)
            counts.append(len(picks.table))
            say(args, f"{name}: {len(picks.table)} picks (threshold {picks.threshold:.3g})")
    rec.outputs = [str(p) for p in paths]
    rec.results = {"picks": counts, "search_pixel_size_A": picker.grid_px}
    rec.write(provenance_name(odir, args.pickname))
    say(args, f"{sum(counts)} particles on {len(mics)} micrographs -> {odir}")
    return 0


def _cmd_extract(args) -> int:
    from ..picking.files import extract_particles, read_micrographs
    out = check_output(args.part_star)
    mics = read_micrographs(args.i, args.angpix)
    make_folder(out.parent)
    rec = record("extract", args, [args.i])
    with rec.timed("extract"):
        stack = extract_particles(mics, args.coord_dir, args.coord_suffix, out, box=args.extract_size,
                                  bg_radius_px=args.bg_radius, norm=args.norm, invert_contrast=args.invert_contrast,
                                  ramp=not args.no_ramp)
    rec.outputs, rec.results = [out.name, out.with_suffix(".mrcs").name], {"particles": len(stack)}
    rec.write(provenance_name(out.parent, out.stem))
    say(args, f"{len(stack)} particles of {args.extract_size} px -> {out}")
    return 0


def _angles(path, what):
    import numpy as np

    from ..io import read_particles
    table, _ = read_particles(require_input(path, what))
    missing = [c for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi") if c not in table.columns]
    if missing:
        raise CryolabInputError("orientations missing", path=path, field=missing[0])
    return table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(np.float64)


def _cmd_tiltpair(args) -> int:
    import pandas as pd

    from ..io._files import atomic_path
    from ..validation.tiltpair import relion_axis_deg, tilt_pair_stats
    out = check_output(args.o)
    untilted, tilted = _angles(args.u, "untilted particles"), _angles(args.t, "tilted particles")
    if len(untilted) != len(tilted):
        raise CryolabInputError(f"{len(untilted)} untilted but {len(tilted)} tilted particles: the lists must pair "
                                "up row by row", path=args.t, field="data_particles")
    st = tilt_pair_stats(untilted, tilted, expected_tilt_deg=args.exp_tilt, expected_axis_deg=args.exp_axis,
                         within_deg=args.within, seed=0)
    make_folder(out.parent)
    table = pd.DataFrame({"tilt_deg": st.tilt, "axis_deg": st.axis, "relion_axis_deg": relion_axis_deg(st.axis)})
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    rec = record("tiltpair", args, [args.u, args.t])
    rec.outputs = [out.name]
    rec.results = {k: getattr(st, k) for k in ("n", "median_tilt", "median_axis", "relion_axis", "tilt_ci", "axis_ci",
                                                "fraction_within", "rayleigh_r", "rayleigh_p", "hand")}
    rec.write(provenance_name(out.parent, out.stem))
    say(args, f"{st.n} pairs: median tilt {st.median_tilt:.2f} deg (95 % {st.tilt_ci[0]:.2f}-{st.tilt_ci[1]:.2f}), "
              f"axis {st.median_axis:.1f} deg (relion_tiltpair_plot: {st.relion_axis:.1f}); "
              f"{st.fraction_within:.0%} within {st.within_deg:g} deg; Rayleigh p = {st.rayleigh_p:.2g}; "
              f"hand {st.hand}", f"per-pair angles -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("autopick", help="pick particles with templates or LoG (as relion_autopick)",
                       description="Template picking (2D references rotated by --ang, or projections of a 3D map at "
                       "--healpix_order) with templates strictly low-pass filtered to --lowpass and, with --ctf, "
                       "multiplied by each micrograph's CTF; the score is the matched filter's z-score (independent of "
                       "the templates' grey scale); the threshold comes from --false_alarm_rate unless --threshold is "
                       "given. --LoG picks blobs of diameter --LoG_diam_min to --LoG_diam_max without templates.")
    p.add_argument("--i", required=True, metavar="STAR", help="micrographs (RELION 3.1 micrograph STAR)")
    p.add_argument("--odir", default="AutoPick/", help="output folder (default AutoPick/)")
    p.add_argument("--pickname", default="autopick", help="coordinate files end in _<pickname>.star")
    p.add_argument("--ref", metavar="MRC", help="2D references (.mrcs) or a 3D map (.mrc)")
    p.add_argument("--angpix", type=positive_float, help="micrograph pixel size in A (default: the STAR file's)")
    p.add_argument("--angpix_ref", type=positive_float, help="reference pixel size in A (default: its header)")
    p.add_argument("--particle_diameter", type=positive_float, required=True, metavar="ANGSTROM",
                   help="particle diameter (template mask, window, default minimum distance)")
    p.add_argument("--ang", type=positive_float, default=10.0, help="in-plane angular step in degrees (default 10)")
    p.add_argument("--healpix_order", type=nonneg_int, default=1,
                   help="directions of a 3D --ref (default 1: 48 directions)")
    p.add_argument("--lowpass", type=nonneg_float, default=20.0, help="low-pass filter in A (default 20; 0: none)")
    p.add_argument("--highpass", type=nonneg_float, default=0.0, help="high-pass filter in A (default 0: none)")
    p.add_argument("--ctf", action="store_true", help="multiply the templates by each micrograph's CTF")
    p.add_argument("--invert", action="store_true",
                   help="the micrographs' particles are dark, the references' white (RELION's --invert)")
    p.add_argument("--threshold", type=float, help="figure-of-merit threshold (default: from --false_alarm_rate)")
    p.add_argument("--false_alarm_rate", type=positive_float, default=0.1,
                   help="expected false picks per micrograph of pure noise (default 0.1)")
    p.add_argument("--min_distance", type=nonneg_float, default=0.0, metavar="ANGSTROM",
                   help="minimum distance between picks (default: the particle diameter)")
    p.add_argument("--max_stddev_noise", type=nonneg_float, default=1.5,
                   help="reject picks where the local standard deviation exceeds this multiple of the median "
                   "(carbon, contaminants; default 1.5; 0: never)")
    p.add_argument("--film_edge_z", type=nonneg_float, metavar="Z",
                   help="reject picks on a film beyond a straight edge (and within a particle radius of it) when "
                   "the edge's step in mean level reaches this robust z-score (default 6; 0: never)")
    p.add_argument("--LoG", action="store_true", help="Laplacian-of-Gaussian picking (no templates)")
    p.add_argument("--LoG_diam_min", type=positive_float, metavar="ANGSTROM", help="smallest LoG diameter")
    p.add_argument("--LoG_diam_max", type=positive_float, metavar="ANGSTROM", help="largest LoG diameter")
    p.add_argument("--LoG_invert", action="store_true", help="LoG: the particles are white")
    p.add_argument("--write_fom_maps", action="store_true", help="write each figure-of-merit map (.mrc)")
    p.add_argument("--j", type=positive_int, help="threads")
    add_common(p)
    p.set_defaults(func=_cmd_autopick)

    p = sub.add_parser("extract", help="extract particles at picked coordinates (as relion_preprocess --extract)",
                       description="Cut a box around every coordinate, optionally invert the contrast, normalise "
                       "(background ramp and standard deviation outside --bg_radius) and write a particle stack and "
                       "a RELION 3.1 particle STAR file with each micrograph's CTF.")
    p.add_argument("--i", required=True, metavar="STAR", help="micrographs (RELION 3.1 micrograph STAR)")
    p.add_argument("--coord_dir", default="AutoPick/", help="folder of the coordinate files (default AutoPick/)")
    p.add_argument("--coord_suffix", default="_autopick.star", help="coordinate file suffix (default _autopick.star)")
    p.add_argument("--part_star", required=True, metavar="STAR", help="particle STAR file to write (stack beside it)")
    p.add_argument("--extract_size", type=positive_int, required=True, help="box size in pixels (even)")
    p.add_argument("--angpix", type=positive_float, help="micrograph pixel size in A (default: the STAR file's)")
    p.add_argument("--norm", action="store_true", help="normalise (RELION's --norm)")
    p.add_argument("--bg_radius", type=positive_float, metavar="PIXELS",
                   help="background radius for --norm (default 0.75 x half the box)")
    p.add_argument("--no_ramp", action="store_true", help="--norm subtracts the background mean only")
    p.add_argument("--invert_contrast", action="store_true", help="invert the contrast (dark particles to white)")
    add_common(p)
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("tiltpair", help="tilt-pair validation: tilt angle and axis per pair (as relion_tiltpair_plot)",
                       description="From the orientations of untilted and tilted particles (same order), each pair's "
                       "tilt angle and axis (degrees from the image x axis; relion_tiltpair_plot reports 180 - axis), "
                       "their medians with bootstrap intervals, the fraction of pairs within --within degrees of the "
                       "expected tilt, Rayleigh's test of the axes and, with --exp_tilt and --exp_axis, the hand.")
    p.add_argument("--u", required=True, metavar="STAR", help="untilted particles with rlnAngleRot/Tilt/Psi")
    p.add_argument("--t", required=True, metavar="STAR", help="tilted particles, in the same order")
    p.add_argument("--o", default="tiltpair.csv", help="per-pair angles (CSV; default tiltpair.csv)")
    p.add_argument("--exp_tilt", type=float, help="the goniometer's tilt in degrees")
    p.add_argument("--exp_axis", type=float, help="the goniometer's tilt axis in degrees (this program's convention)")
    p.add_argument("--within", type=positive_float, default=5.0, help="tolerance in degrees (default 5)")
    add_common(p)
    p.set_defaults(func=_cmd_tiltpair)
