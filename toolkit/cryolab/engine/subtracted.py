"""Particles whose images come out partially signal-subtracted as they are read.

:class:`SubtractedParticles` is a :class:`~cryolab.io.ParticleStack` whose :meth:`read` returns
``n X - scale * C * shift(P(V (1 - M)))`` for each particle at its pose (see
:mod:`cryolab.methods.subtract` for the method and :mod:`.forward` for the model), so any
Session can classify subtracted particles without a new stack on disk. Checkpoints record the
subtraction (:meth:`SubtractedParticles.subtraction_state`) so a resumed run subtracts again.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import CryolabInputError
from ..io import ParticleStack
from ..masks import check_mask
from .forward import projector_of, residual_images

__all__ = ["SubtractedParticles", "particle_poses"]


def particle_poses(stack: ParticleStack, rows):
    """``(eulers [B, 3] degrees, origins [B, 2] pixels)`` of rows ``rows``; an error without angles."""
    eulers = stack.eulers(rows)
    if eulers is None:
        raise CryolabInputError("signal subtraction needs each particle's pose: no _rlnAngleRot/Tilt/Psi",
                                path=stack.star_path, field="_rlnAngleRot")
    return eulers, stack.origins_A(rows) / float(stack.pixel_size_A)


def _norm_factor(stack: ParticleStack, rows, norm_correction: bool, average=None):
    """RELION's ``rlnNormCorrectionAverage / rlnNormCorrection`` per image ``[B, 1, 1]`` (1 when off or
    absent); ``average``: the mean norm correction of the whole set when the file has no average."""
    cols = stack.table.columns
    if not norm_correction or "rlnNormCorrection" not in cols:
        return 1.0
    norm = stack.table["rlnNormCorrection"].to_numpy(float)
    avg = (stack.table["rlnNormCorrectionAverage"].to_numpy(float)[rows]
           if "rlnNormCorrectionAverage" in cols else (norm.mean() if average is None else average))
    return (avg / norm[rows]).astype(np.float32)[:, None, None]


class SubtractedParticles(ParticleStack):
    """A :class:`~cryolab.io.ParticleStack` whose images come out subtracted (see the module text).

    ``reference [N, N, N]``, ``keep_mask [N, N, N]`` (values in [0, 1]; checked), ``scale``
    the reference's grey scale relative to the data. Everything else (CTFs, poses, subsets,
    ``select_classes``) is the stack's; only :meth:`read` differs.
    """

    def __init__(self, stack: ParticleStack, reference, keep_mask, *, scale: float = 1.0,
                 norm_correction: bool = False, max_resolution_A: float | None = None, _projector=None,
                 _norm_average=None):
        self.__dict__.update(stack.__dict__)
        n = stack.box_size
        ref = np.asarray(reference, np.float32)
        if ref.shape != (n,) * 3:
            raise CryolabInputError(f"the reference is {ref.shape}, the particles need ({n}, {n}, {n})",
                                    field="reference")
        self.keep_mask = check_mask(keep_mask, n, path=None)
        self.reference, self.scale, self.norm_correction = ref, float(scale), bool(norm_correction)
        self.max_resolution_A = max_resolution_A
        self._max_shell = n * float(stack.pixel_size_A) / max_resolution_A if max_resolution_A else None
        self._projector = projector_of(ref, 1.0 - self.keep_mask) if _projector is None else _projector
        cols = stack.table.columns
        self._norm_average = (_norm_average if _norm_average is not None else
                              float(stack.table["rlnNormCorrection"].mean()) if "rlnNormCorrection" in cols else None)
        particle_poses(stack, [0])          # poses present?

    def original(self) -> ParticleStack:
        """The particles as they are on disk (not subtracted)."""
        return ParticleStack(self.table, self.optics, self.star_path, _files=self._files)

    def read(self, indices=None) -> np.ndarray:
        rows = self._rows(indices)
        images = super().read(rows) * _norm_factor(self, rows, self.norm_correction, self._norm_average)
        eulers, origins = particle_poses(self, rows)
        out = residual_images(images, self._projector, eulers, origins, self.ctf(rows), self.pixel_size_A,
                              scale=self.scale, max_shell=self._max_shell)
        return np.asarray(out, np.float32)

    def with_table(self, table: pd.DataFrame) -> "SubtractedParticles":
        base = ParticleStack(table, self.optics, self.star_path, _files=self._files)
        return SubtractedParticles(base, self.reference, self.keep_mask, scale=self.scale,
                                   norm_correction=self.norm_correction, max_resolution_A=self.max_resolution_A,
                                   _projector=self._projector, _norm_average=self._norm_average)

    def subtraction_state(self, stem) -> dict:
        """Write the reference and the keep mask beside a checkpoint (``<stem>_subtraction_reference.mrc``,
        ``_mask.mrc``; once per stem, they do not change) and return the rest (JSON-ready) for
        :meth:`from_state`."""
        from pathlib import Path

        from ..io import write_mrc
        written = self.__dict__.setdefault("_state_written", {})
        if str(stem) in written:
            return written[str(stem)]
        paths = {}
        for name, arr in (("reference", self.reference), ("mask", self.keep_mask)):
            paths[name] = str(Path(write_mrc(f"{stem}_subtraction_{name}.mrc", arr, self.pixel_size_A)).resolve())
        written[str(stem)] = {**paths, "scale": self.scale, "norm_correction": self.norm_correction,
                              "max_resolution_A": self.max_resolution_A, "norm_average": self._norm_average}
        return written[str(stem)]

    @classmethod
    def from_state(cls, stack: ParticleStack, state: dict) -> "SubtractedParticles":
        """The subtraction :meth:`subtraction_state` recorded, over ``stack`` (the original particles)."""
        from ..io import read_mrc
        return cls(stack, read_mrc(state["reference"])[0], read_mrc(state["mask"])[0], scale=state["scale"],
                   norm_correction=state["norm_correction"], max_resolution_A=state["max_resolution_A"],
                   _norm_average=state.get("norm_average"))
