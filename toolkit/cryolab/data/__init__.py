"""Demo data shipped with cryolab: small density maps of real complexes, in several states.

>>> demo = load_demo()
>>> demo.box_size, demo.pixel_size_A, sorted(demo.volumes)
(64, 6.0, ['60S', '80S', '80S_noLso2', '80S_noRACK1'])
>>> demo.volumes["80S"].shape
(64, 64, 64)

Maps are float32 ``[z, y, x]``, centred on the full complex's centre of mass at voxel
``N // 2``, scaled so the full complex has maximum 1. Each state is a sum of stored
components (density is linear in the atoms); how they were computed and their
sources and licences are in ``docs/DATA.md`` and :mod:`cryolab.data.build_demo`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import CryolabInputError

__all__ = ["DemoData", "load_demo", "list_demos"]

_HERE = Path(__file__).resolve().parent


@dataclass
class DemoData:
    """A demo dataset: ``volumes`` maps state name -> float32 volume ``[N, N, N]``."""

    volumes: dict[str, np.ndarray]
    pixel_size_A: float
    box_size: int
    description: str
    source: str
    components: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    states: dict[str, list[str]] = field(default_factory=dict, repr=False)


@lru_cache(maxsize=None)
def _index() -> dict:
    return json.loads((_HERE / "demo.json").read_text())


def list_demos() -> list[str]:
    """Names accepted by :func:`load_demo`."""
    return sorted(_index())


def load_demo(name: str = "ribosome") -> DemoData:
    """Load a demo dataset: ``"ribosome"`` (80S +/- RACK1, Lso2, small subunit; box 64,
    6 A/px; from PDB 6ZU5) or ``"toxin"`` (AB5 toxin and its B5 ring; box 32, 4 A/px;
    from PDB 1TII). Returns fresh arrays (safe to modify)."""
    index = _index()
    if name not in index:
        raise CryolabInputError(f"unknown demo dataset {name!r}; choose one of {list_demos()}")
    meta = index[name]
    with np.load(_HERE / meta["file"]) as npz:
        comps = {c: npz[c].astype(np.float32) for c in meta["components"]}
    volumes = {s: np.sum([comps[c] for c in parts], axis=0, dtype=np.float32)
               for s, parts in meta["states"].items()}
    return DemoData(volumes=volumes, pixel_size_A=float(meta["pixel_size_A"]), box_size=int(meta["box"]),
                    description=meta["description"], source=meta["source"], components=comps,
                    states={s: list(p) for s, p in meta["states"].items()})
