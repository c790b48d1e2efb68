"""Partial signal subtraction (Bai et al. 2015; RELION's ``relion_particle_subtract``).

For particle ``i`` with refined pose (rot, tilt, psi; origin ``o_i``) and CTF ``C_i`` the
signal of the complex outside the region to keep is removed::

    S_i = n_i X_i - scale * C_i * shift_{-o_i}( P_{R_i}( V (1 - M) ) )

``V`` is the consensus map on the data's grey scale (a cryolab or RELION refinement's map),
``M`` the soft *keep* mask (1 on the part to study), ``n_i`` RELION's norm correction
(``rlnNormCorrectionAverage / rlnNormCorrection`` when ``norm_correction`` is on and the
labels exist, else 1). The subtraction is done in Fourier space on the whole box (projection
to Nyquist, or to ``max_resolution_A``), then, optionally, each image is re-centred on the
keep region (``recenter``: the mask's centre of mass or a point, Angstrom from the box centre)
and windowed to ``new_box``. Re-centring moves the image by whole pixels, ``r = o - (R c)_xy``
rounded, and the new origin is the remainder ``r - round(r)`` (RELION's rule).

Two ways to use it:

* :class:`SubtractedParticles`: a particle stack whose images are subtracted as they are
  read, so a fixed-pose classification runs on them without writing a stack;
* :func:`subtract_particles`: a new stack + STAR (``rlnImageOriginalName`` = the image it came
  from, the original origins kept in ``_cryolabOriginalOriginX/YAngst`` when re-centred) and
  :func:`revert_subtraction` back to the original particles exactly.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import mrcfile
import numpy as np

from ..engine.forward import particle_images, projector_of
from ..engine.subtracted import SubtractedParticles, particle_poses
from ..errors import CryolabInputError
from ..geometry import euler_to_matrix
from ..io import ParticleStack, project_path, write_particles
from ..io._files import atomic_path
from ..masks import centre_of_mass_A

__all__ = ["SubtractedParticles", "subtract_particles", "original_particles", "revert_subtraction",
           "recentring_shifts", "check_poses_match",
           "ORIGINAL_ORIGIN_LABELS"]

log = logging.getLogger(__name__)

#: where the origins before re-centring are kept (RELION ignores and keeps unknown labels)
ORIGINAL_ORIGIN_LABELS = ("cryolabOriginalOriginXAngst", "cryolabOriginalOriginYAngst")


def check_poses_match(stack: ParticleStack, reference, n_sample: int = 200, seed: int = 0) -> float:
    """Check that the particles' poses refer to ``reference``: the correlation of each sampled image
    with the map's projection at its own pose must beat the correlation at another particle's pose
    (poses shuffled among the sample) by at least 3 standard errors; else a
    :class:`CryolabInputError` naming the STAR file. Returns the mean gain in correlation."""
    rows = np.sort(np.random.default_rng(seed).permutation(len(stack))[:n_sample])
    if rows.size < 10:
        return float("nan")
    eulers, origins = particle_poses(stack, rows)
    images = stack.read(rows).reshape(rows.size, -1)
    proj = projector_of(np.asarray(reference, np.float32))
    ctf, px = stack.ctf(rows), stack.pixel_size_A
    shuffled = np.roll(np.arange(rows.size), rows.size // 2)

    def corr(order):
        model = particle_images(proj, eulers[order], origins, ctf, px).reshape(rows.size, -1)
        a = images - images.mean(1, keepdims=True)
        b = model - model.mean(1, keepdims=True)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-30)

    gain = corr(np.arange(rows.size)) - corr(shuffled)
    se = gain.std(ddof=1) / np.sqrt(rows.size)
    if gain.mean() < 3 * se:
        raise CryolabInputError(f"the poses do not fit this map: images correlate no better with the map at "
                                f"their own poses than at other particles' poses (gain {gain.mean():.3g} +/- "
                                f"{se:.2g}); were they refined against another map?", path=stack.star_path,
                                field="_rlnAngleRot")
    return float(gain.mean())


def recentring_shifts(eulers_deg, origins_px, centre_px):
    """Whole-pixel image shifts ``[B, 2]`` and new origins ``[B, 2]`` (pixels) that put the 3D
    point ``centre_px`` ``(x, y, z)`` (pixels from the box centre) at each image's centre:
    ``r = o - (R c)_xy``, shift by ``round(r)``, new origin ``r - round(r)`` (RELION's rule).

    >>> s, o = recentring_shifts([[0, 0, 0]], [[0.3, 0.0]], (5, 0, 0))
    >>> s.tolist(), o.round(2).tolist()
    ([[-5, 0]], [[0.3, 0.0]])
    """
    e = np.asarray(eulers_deg, float).reshape(-1, 3)
    R = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    proj = (R @ np.asarray(centre_px, float))[:, :2]
    r = np.asarray(origins_px, float) - proj
    shift = np.rint(r).astype(int)
    return shift, r - shift


def _window(images, new_box: int):
    n = images.shape[-1]
    lo = n // 2 - new_box // 2
    return images[:, lo:lo + new_box, lo:lo + new_box]


def subtract_particles(particles, reference, keep_mask, out_dir, *, name: str = "particles_subtracted",
                       scale: float = 1.0, norm_correction: bool = False, recenter=None,
                       new_box: int | None = None, batch_size: int = 256, progress: bool = False,
                       check_poses: bool = True):
    """Write the subtracted particles: ``<out_dir>/Particles/<name>.mrcs`` (streamed: one batch of
    images in memory at a time) and
    ``<out_dir>/<name>.star`` (RELION 3.1; see the module text). Returns the new
    :class:`~cryolab.io.ParticleStack`.

    ``recenter``: None, ``"mask"`` (the keep mask's centre of mass) or ``(x, y, z)`` in Angstrom
    from the box centre; ``new_box``: a smaller even box in pixels (cut about the centre).
    All inputs are checked before anything is written (with ``check_poses`` also that the poses
    fit the map, :func:`check_poses_match`); files appear atomically.
    """
    stack = particles if isinstance(particles, ParticleStack) else ParticleStack.from_star(particles)
    sub = SubtractedParticles(stack, reference, keep_mask, scale=scale, norm_correction=norm_correction)
    if check_poses:
        check_poses_match(stack, reference)
    n, px = stack.box_size, float(stack.pixel_size_A)
    if new_box is not None:
        new_box = int(new_box)
        if new_box % 2 or not 2 <= new_box <= n:
            raise CryolabInputError(f"new box {new_box} px must be even and at most the box ({n} px)",
                                    field="--new_box")
    centre_A = None
    if isinstance(recenter, str):
        if recenter != "mask":
            raise CryolabInputError(f"recenter must be 'mask' or (x, y, z) in Angstrom, got {recenter!r}",
                                    field="recenter")
        centre_A = centre_of_mass_A(sub.keep_mask, px)
    elif recenter is not None:
        centre_A = np.asarray(recenter, float).reshape(3)
    out_dir = Path(out_dir)
    table = stack.table.copy()
    table["rlnImageOriginalName"] = stack.image_names_for(None)
    box = new_box or n
    eulers, origins = particle_poses(stack, None)
    shifts = new_origins = None
    if centre_A is not None:
        shifts, new_origins = recentring_shifts(eulers, origins, centre_A / px)
        for lab, col in zip(ORIGINAL_ORIGIN_LABELS, (0, 1)):
            table[lab] = origins[:, col] * px
        table["rlnOriginXAngst"], table["rlnOriginYAngst"] = new_origins[:, 0] * px, new_origins[:, 1] * px
        table = table.drop(columns=[c for c in ("rlnOriginXPriorAngst", "rlnOriginYPriorAngst") if c in table])
    optics = None if stack.optics is None else stack.optics.copy()
    if optics is not None and "rlnImageSize" in optics.columns:
        optics["rlnImageSize"] = box
    if optics is not None:
        table = table.drop(columns=[c for c in table.columns if c in optics.columns and c != "rlnOpticsGroup"])
    (out_dir / "Particles").mkdir(parents=True, exist_ok=True)
    stack_path, star_path = out_dir / "Particles" / f"{name}.mrcs", out_dir / f"{name}.star"
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(stack), desc="subtract", unit="particle")
    with atomic_path(stack_path) as tmp:          # streamed: one batch of images in memory at a time
        with mrcfile.new_mmap(tmp, shape=(len(stack), box, box), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = px
            for start in range(0, len(stack), int(batch_size)):
                rows = np.arange(start, min(len(stack), start + int(batch_size)))
                img = sub.read(rows)
                if shifts is not None:
                    img = np.stack([np.roll(im, (sh[1], sh[0]), axis=(0, 1)) for im, sh in zip(img, shifts[rows])])
                mrc.data[rows[0]:rows[-1] + 1] = _window(img, box) if box != n else img
                if bar is not None:
                    bar.update(len(rows))
            mrc.update_header_stats()
        os.chmod(tmp, 0o644)
    if bar is not None:
        bar.close()
    table["rlnImageName"] = [f"{i + 1:06d}@{project_path(stack_path)}" for i in range(len(stack))]
    try:
        write_particles(star_path, table, optics)
    except BaseException:
        stack_path.unlink(missing_ok=True)
        raise
    result = ParticleStack.from_star(star_path)
    log.info("subtracted %d particles -> %s", len(stack), out_dir / f"{name}.star")
    return result


def original_particles(subtracted) -> ParticleStack:
    """The original particles of subtracted ones (a STAR path or stack with ``rlnImageOriginalName``),
    in memory: image names from ``rlnImageOriginalName``, origins from
    ``_cryolabOriginalOriginX/YAngst`` when re-centred, the box of the original stack; every other
    column (angles, classes) as in ``subtracted``."""
    sub = subtracted if isinstance(subtracted, ParticleStack) else ParticleStack.from_star(subtracted)
    table = sub.table.copy()
    if "rlnImageOriginalName" not in table.columns:
        raise CryolabInputError("not a subtracted particle file", path=sub.star_path, field="_rlnImageOriginalName")
    table["rlnImageName"] = table.pop("rlnImageOriginalName")
    if all(lab in table.columns for lab in ORIGINAL_ORIGIN_LABELS):
        table["rlnOriginXAngst"] = table.pop(ORIGINAL_ORIGIN_LABELS[0])
        table["rlnOriginYAngst"] = table.pop(ORIGINAL_ORIGIN_LABELS[1])
    optics = sub.optics
    keep = [c for c in table.columns if optics is None or c not in optics.columns or c == "rlnOpticsGroup"]
    if optics is not None:
        optics = optics.drop(columns=["rlnImageSize"], errors="ignore")     # from the original stack
    return ParticleStack(table[keep], optics, sub.star_path)


def revert_subtraction(star, out_path) -> ParticleStack:
    """Write the original particles of a subtracted STAR file (RELION's ``--revert``, see
    :func:`original_particles`) to ``out_path``; returns them read back."""
    original_particles(star).write_star(out_path)
    return ParticleStack.from_star(out_path)
