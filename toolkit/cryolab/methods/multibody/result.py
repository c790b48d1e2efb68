"""What a multi-body refinement leaves: poses of every body in every particle, body maps and masks.

:class:`MultiBodyResult` is built from a live :class:`~.refine.MultiBodyRefine`
(:meth:`~.refine.MultiBodyRefine.result`) or read back from the files its ``save`` wrote
(:meth:`MultiBodyResult.load`), so the motion analysis (:mod:`.motion`, ``cryolab flex_analyse``)
runs on either. Angles in degrees (RELION's ZYZ), origins in pixels (RELION's sign), centres
in Angstrom from the box centre ``(x, y, z)``; maps in the consensus frame.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import CryolabInputError
from ...fourier import phase_shift
from ...io import ParticleStack, read_mrc

__all__ = ["MultiBodyResult"]


@dataclass
class MultiBodyResult:
    """Per body ``b``: ``eulers[b] [N, 3]``, ``origins_px[b] [N, 2]`` (the pose of its centred map
    in the original images), ``maps[b]`` and ``masks[b]`` ``[N, N, N]`` (consensus frame),
    ``centres_A[b]``, ``relative_to[b]`` (0-based or None); the consensus poses; the particles."""
    particles: ParticleStack
    pixel_size_A: float
    centres_A: np.ndarray
    relative_to: list
    consensus_eulers: np.ndarray
    consensus_origins_px: np.ndarray
    eulers: list
    origins_px: list
    maps: list
    masks: list

    @property
    def n(self) -> int:
        return self.particles.box_size

    @property
    def n_bodies(self) -> int:
        return len(self.eulers)

    def body_eulers(self, b: int) -> np.ndarray:
        return self.eulers[b]

    def body_origins_px(self, b: int) -> np.ndarray:
        return self.origins_px[b]

    def _frame(self, volume, b: int, centred: bool):
        return phase_shift(np.asarray(volume, np.float32), -self.centres_A[b] / self.pixel_size_A) if centred else volume

    def body_map(self, b: int, centred: bool = False) -> np.ndarray:
        """Body ``b``'s map, in the consensus frame or centred on its centre of mass."""
        return self._frame(self.maps[b], b, centred)

    def body_mask(self, b: int, centred: bool = False) -> np.ndarray:
        """Body ``b``'s mask, in the consensus frame or centred on its centre of mass (clipped to [0, 1])."""
        return np.clip(self._frame(self.masks[b], b, centred), 0, 1)

    @classmethod
    def load(cls, folder, prefix: str = "run") -> "MultiBodyResult":
        """Read what :meth:`~.refine.MultiBodyRefine.save` wrote into ``folder``."""
        d = Path(folder)
        info_path = d / f"{prefix}_bodies.json"
        if not info_path.is_file():
            raise CryolabInputError("not a multi-body run: no bodies file", path=info_path, field="bodies")
        info = json.loads(info_path.read_text())
        cons = ParticleStack.from_star(d / f"{prefix}_data.star")
        px = float(cons.pixel_size_A)
        eulers, origins, maps, masks = [], [], [], []
        for b in range(len(info["bodies"])):
            tag = f"{prefix}_body{b + 1:03d}"
            st = ParticleStack.from_star(d / f"{tag}_data.star")
            if len(st) != len(cons):
                raise CryolabInputError(f"{len(st)} particles, the consensus has {len(cons)}",
                                        path=d / f"{tag}_data.star", field="data_particles")
            eulers.append(st.eulers())
            origins.append(st.origins_A() / px)
            maps.append(read_mrc(d / f"{tag}.mrc")[0])
            masks.append(read_mrc(d / f"{tag}_mask.mrc")[0])
        return cls(cons, px, np.asarray(info["centres_A"], float), [b["rotate_relative_to"] for b in info["bodies"]],
                   cons.eulers(), cons.origins_A() / px, eulers, origins, maps, masks)
