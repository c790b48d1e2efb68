"""Focused 3D classification with partial signal subtraction (the lecture's answer to "a small
factor is present on some particles"; Bai et al. 2015, RELION's subtract + ``--skip_align``).

From a consensus refinement (particles with poses, the consensus map on the data's grey scale)
and a soft *keep* mask on the variable part:

1. the signal of everything outside the mask is subtracted from each image at its refined pose
   (:class:`~cryolab.methods.subtract.SubtractedParticles`, in memory; ``subtract=False`` keeps
   the original images);
2. a K-class 3D classification of those images with the poses kept fixed (``skip_align``) or
   searched locally around them (``sigma_ang_deg``), the references multiplied by the mask
   before projection (RELION's ``--solvent_mask``), seeded from K random subsets;
3. per class, the focused map (the classification's reference) and the *full* map, reconstructed
   from the original, unsubtracted images of that class at their consensus poses.

The classification's ``data.star`` names the original images (``_rlnImageName``), so selecting
a class gives back the original particles.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import ParticleStack, write_mrc
from ..masks import check_mask
from ..reconstruction import reconstruct_stack
from ..session import Session
from ..settings import METHOD_DEFAULTS
from .class3d import class3d
from .subtract import SubtractedParticles, check_poses_match

__all__ = ["FocusedClassification", "focused_class3d", "class_maps"]


def class_maps(particles, classes, K: int, *, ctf: bool = True, method: str = "wiener") -> np.ndarray:
    """``[K, N, N, N]``: the particles of each class (0-based ``classes``) reconstructed at their
    poses (:func:`cryolab.reconstruction.reconstruct_stack`, CTF-corrected); an empty class gives zeros."""
    out = np.zeros((K,) + (particles.box_size,) * 3, np.float32)
    for k in range(K):
        members = np.flatnonzero(np.asarray(classes) == k)
        if members.size:
            out[k] = reconstruct_stack(particles.subset(members), ctf=ctf, method=method)
    return out


@dataclass
class FocusedClassification:
    """A focused classification: ``session`` (the steppable Session on the subtracted images),
    ``particles`` (the originals with their consensus poses), ``keep_mask``, ``reference`` (the
    consensus map). :meth:`full_maps` reconstructs each class from the original images."""
    session: Session
    particles: ParticleStack
    keep_mask: np.ndarray
    reference: np.ndarray

    @property
    def classes(self) -> np.ndarray:
        """0-based class of each particle (input order)."""
        return self.session.classes

    def full_maps(self, method: str = "wiener") -> np.ndarray:
        """``[K, N, N, N]``: each class reconstructed from its original images at the consensus poses
        (:func:`class_maps`)."""
        return class_maps(self.particles, self.classes, self.session.settings.K, ctf=self.session.settings.ctf,
                          method=method)

    def save(self, directory, prefix: str = "run") -> str:
        """The Session's RELION-named files (``<prefix>_itNNN_data.star`` naming the original images,
        ``_classNNN.mrc`` the focused maps), plus ``<prefix>_itNNN_classNNN_full.mrc`` (full maps) and
        ``<prefix>_keep_mask.mrc``. Returns the iteration's file stem."""
        stem = self.session.save(directory, prefix)
        px = self.session.pixel_size_A
        for k, m in enumerate(self.full_maps()):
            write_mrc(f"{stem}_class{k + 1:03d}_full.mrc", m, px)
        write_mrc(Path(directory) / f"{prefix}_keep_mask.mrc", self.keep_mask, px)
        return stem


def focused_class3d(particles, reference, keep_mask, K: int = 2, iterations: int | None = None, *,
                    subtract: bool = True, scale: float = 1.0, sigma_ang_deg: float | None = None,
                    out_dir=None, progress: bool = True, callback=None, **settings) -> FocusedClassification:
    """Focused classification of ``particles`` (a STAR path or stack with consensus poses) around
    ``keep_mask`` (see the module text); returns a :class:`FocusedClassification`.

    ``reference [N, N, N]``: the consensus map on the data's grey scale (``scale`` otherwise);
    ``sigma_ang_deg``: local angular searches around the consensus poses instead of fixed poses.
    Other keywords are :class:`cryolab.settings.Settings` fields of the classification
    (defaults: ``method_settings("focused")``: class3d's, with ``tau2_fudge`` 8 and fixed poses).
    """
    stack = particles if isinstance(particles, ParticleStack) else ParticleStack.from_star(particles)
    n = stack.box_size
    mask = check_mask(keep_mask, n)
    reference = np.asarray(reference, np.float32)
    subtracted = SubtractedParticles(stack, reference, mask, scale=scale)   # checks poses and shapes
    check_poses_match(stack, reference)
    data = subtracted if subtract else stack
    align = {"sigma_ang_deg": sigma_ang_deg, "skip_align": False} if sigma_ang_deg else {}
    defaults = {k: v for k, v in METHOD_DEFAULTS["focused"].items() if k != "K"}
    session = class3d(data, reference, K=K, iterations=iterations, reference_mask=mask, out_dir=None,
                      progress=progress, callback=callback, **{**defaults, **align, **settings})
    result = FocusedClassification(session, stack, mask, reference)
    if out_dir is not None:
        result.save(out_dir)
    return result
