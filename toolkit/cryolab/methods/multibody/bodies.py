"""Rigid bodies of a multi-body refinement and RELION's bodies STAR file.

A body is a soft mask on the consensus map (values in [0, 1], the box of the particles) with
RELION's settings: ``rotate_relative_to`` (the body, 0-based here and 1-based in the file as
``_rlnBodyRotateRelativeTo``, about whose centre of mass its rotations are described),
``sigma_angles_deg`` (``_rlnBodySigmaAngles``: the width of the Gaussian prior on the body's
rotation away from the consensus pose) and ``sigma_offset_A`` (``_rlnBodySigmaOffsetAngst``;
``_rlnBodySigmaOffset`` in pixels is read too). ``_rlnBodyMaskName`` names the mask file and the
optional ``_rlnBodyReferenceName`` a starting map (``None`` for the consensus).

Body masks must not overlap (RELION blends overlaps; here a voxel belongs to one body), must
contain density, and each body should carry enough of the particle's signal to be aligned on
its own: :func:`check_bodies` refuses the first two and warns for bodies with less than
:data:`MIN_SIGNAL_FRACTION` of the consensus map's density.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import CryolabInputError
from ...io import read_mrc, read_star, write_mrc, write_star
from ...masks import centre_of_mass_A, check_mask, read_mask, soften, write_mask

__all__ = ["Body", "read_bodies", "write_bodies", "check_bodies", "partition_bodies", "ratchet_bodies",
           "MIN_SIGNAL_FRACTION"]

log = logging.getLogger(__name__)

#: a body with less of the consensus map's density than this is warned about (hard to align)
MIN_SIGNAL_FRACTION = 0.1
#: two bodies overlap when more than this share of the smaller one's core (mask >= 0.99) is in both cores
MAX_CORE_OVERLAP = 0.01


@dataclass
class Body:
    """One rigid body: ``mask [N, N, N]``, ``rotate_relative_to`` (0-based body index or None),
    ``sigma_angles_deg``, ``sigma_offset_A``, ``reference [N, N, N]`` or None, and ``name``
    (the mask's file name when read from a bodies file)."""
    mask: np.ndarray
    rotate_relative_to: int | None = None
    sigma_angles_deg: float = 10.0
    sigma_offset_A: float = 12.0
    reference: np.ndarray | None = None
    name: str = ""

    def centre_A(self, pixel_size_A: float, density=None) -> np.ndarray:
        """The body's centre of mass ``(x, y, z)`` in Angstrom from the box centre: of
        ``density * mask`` (where the body's mass is; what the refinement rotates about), or of
        the mask alone without ``density`` (RELION 3.1 uses the mask's, rounded to whole pixels)."""
        return centre_of_mass_A(self.mask if density is None else np.asarray(density) * self.mask, pixel_size_A)


def read_bodies(path, box: int, pixel_size_A: float | None = None) -> list[Body]:
    """Bodies from a RELION bodies STAR file (see the module text). Mask and reference names are
    resolved relative to the working folder, then to the file's folder; masks are checked
    (:func:`cryolab.masks.check_mask`). Errors name the file and the label."""
    path = Path(path)
    blocks = read_star(path)
    table = next((t for t in blocks.values() if isinstance(t, pd.DataFrame)), None)
    if table is None or len(table) == 0:
        raise CryolabInputError("no bodies: the file has no table", path=path, field="_rlnBodyMaskName")
    cols = [c.lstrip("_") for c in table.columns]
    table.columns = cols
    if "rlnBodyMaskName" not in cols:
        raise CryolabInputError("no _rlnBodyMaskName column", path=path, field="_rlnBodyMaskName")
    if "rlnBodySigmaAngles" not in cols:
        raise CryolabInputError("no _rlnBodySigmaAngles column (the prior on each body's rotation)",
                                path=path, field="_rlnBodySigmaAngles")
    if "rlnBodySigmaOffsetAngst" in cols:
        offsets = table["rlnBodySigmaOffsetAngst"].astype(float).to_numpy()
    elif "rlnBodySigmaOffset" in cols:
        if not pixel_size_A:
            raise CryolabInputError("_rlnBodySigmaOffset is in pixels: the pixel size is needed",
                                    path=path, field="_rlnBodySigmaOffset")
        offsets = table["rlnBodySigmaOffset"].astype(float).to_numpy() * pixel_size_A
    else:
        raise CryolabInputError("no _rlnBodySigmaOffsetAngst column (the prior on each body's offset)",
                                path=path, field="_rlnBodySigmaOffsetAngst")
    bodies = []
    for i, row in table.reset_index(drop=True).iterrows():
        mask_path = _locate(row["rlnBodyMaskName"], path)
        rel = int(row["rlnBodyRotateRelativeTo"]) if "rlnBodyRotateRelativeTo" in cols else 0
        if rel > len(table) or rel == i + 1 or rel < 0:
            raise CryolabInputError(f"body {i + 1}: rotate relative to body {rel}, which is not another body",
                                    path=path, field="_rlnBodyRotateRelativeTo")
        ref = None
        name = str(row.get("rlnBodyReferenceName", "None"))
        if name not in ("None", "", "nan"):
            ref = read_mrc(_locate(name, path))[0]
            if ref.shape != (box,) * 3:
                raise CryolabInputError(f"body {i + 1}: reference is {ref.shape}, the particles need ({box},)*3",
                                        path=path, field="_rlnBodyReferenceName")
        bodies.append(Body(read_mask(mask_path, box, pixel_size_A), rel - 1 if rel > 0 else None,
                           float(row["rlnBodySigmaAngles"]), float(offsets[i]), ref, str(row["rlnBodyMaskName"])))
    return bodies


def _locate(name, star_path: Path) -> Path:
    p = Path(str(name))
    for cand in (p, star_path.parent / p):
        if cand.is_file():
            return cand
    raise CryolabInputError(f"file {name!r} not found (looked in the working folder and beside the bodies file)",
                            path=star_path, field="_rlnBodyMaskName")


def write_bodies(path, bodies: list[Body], pixel_size_A: float, *, prefix: str = "body") -> Path:
    """Write ``<prefix>NNN_mask.mrc`` for each body (and ``_reference.mrc`` where given) beside
    ``path`` and the bodies STAR file naming them relative to its folder (RELION reads it when
    run from there). Returns the STAR path."""
    path = Path(path)
    rows = []
    for i, b in enumerate(bodies):
        mask_name = f"{prefix}{i + 1:03d}_mask.mrc"
        write_mask(path.parent / mask_name, b.mask, pixel_size_A)
        ref_name = "None"
        if b.reference is not None:
            ref_name = f"{prefix}{i + 1:03d}_reference.mrc"
            write_mrc(path.parent / ref_name, b.reference, pixel_size_A)
        rows.append({"rlnBodyMaskName": mask_name,
                     "rlnBodyRotateRelativeTo": 0 if b.rotate_relative_to is None else b.rotate_relative_to + 1,
                     "rlnBodySigmaAngles": float(b.sigma_angles_deg), "rlnBodySigmaOffsetAngst": float(b.sigma_offset_A),
                     "rlnBodyReferenceName": ref_name})
    return write_star(path, {"": pd.DataFrame(rows)})


def check_bodies(bodies: list[Body], box: int, pixel_size_A: float, consensus=None) -> np.ndarray:
    """Check ``bodies`` before a refinement; returns each body's share of the consensus map's
    positive density (``[n_bodies]``; NaN without ``consensus``). Errors: fewer than two bodies,
    a mask of another box, empty or full (:func:`cryolab.masks.check_mask`), cores that overlap,
    a body relative to itself or to a missing body. Warns (logger ``cryolab.methods``) for a body
    with less than :data:`MIN_SIGNAL_FRACTION` of the density."""
    if len(bodies) < 2:
        raise CryolabInputError(f"multi-body refinement needs at least two bodies, got {len(bodies)}", field="bodies")
    for i, b in enumerate(bodies):
        try:
            b.mask = check_mask(b.mask, box)
        except CryolabInputError as exc:
            raise CryolabInputError(f"body {i + 1} ({b.name or 'mask'}): {exc.args[0]}", path=exc.path,
                                    field=exc.field) from None
        r = b.rotate_relative_to
        if r is not None and (r == i or not 0 <= r < len(bodies)):
            raise CryolabInputError(f"body {i + 1} rotates relative to body {r + 1}, which is not another body",
                                    field="rotate_relative_to")
        if b.sigma_angles_deg <= 0 or b.sigma_offset_A < 0:
            raise CryolabInputError(f"body {i + 1}: sigma_angles_deg must be > 0 and sigma_offset_A >= 0",
                                    field="sigma_angles_deg")
    cores = [b.mask >= 0.99 for b in bodies]
    for i in range(len(bodies)):
        for j in range(i + 1, len(bodies)):
            both = int((cores[i] & cores[j]).sum())
            smaller = max(1, min(int(cores[i].sum()), int(cores[j].sum())))
            if both > MAX_CORE_OVERLAP * smaller:
                raise CryolabInputError(f"body masks {i + 1} and {j + 1} overlap: {both} voxels are inside both "
                                        f"({100 * both / smaller:.0f} % of the smaller body); make each voxel "
                                        f"belong to one body (e.g. partition_bodies)", field="bodies")
    if consensus is None:
        return np.full(len(bodies), np.nan)
    dens = np.clip(np.asarray(consensus, np.float64), 0, None)
    total = dens.sum()
    share = np.array([(dens * b.mask).sum() / total if total > 0 else 0.0 for b in bodies])
    for i, s in enumerate(share):
        if s < MIN_SIGNAL_FRACTION:
            log.warning("body %d has %.1f %% of the map's density: too little signal to align it on its own "
                        "(RELION's advice: bodies of at least ~150 kDa); expect noisy body poses", i + 1, 100 * s)
    return share


def partition_bodies(densities, pixel_size_A: float, *, level: float = 0.05, soft_edge_A: float = 6.0,
                     sigma_angles_deg: float = 10.0, sigma_offset_A: float = 12.0) -> list[Body]:
    """Bodies from the densities of the parts ``[B, N, N, N]`` (e.g. the demo's subunits): each
    voxel above ``level`` x the total's maximum goes to the part with the most density there,
    each region gets a soft edge of ``soft_edge_A`` (outside it, so edges overlap but cores do not);
    body ``i`` rotates relative to body 0 (body 0 relative to body 1)."""
    d = np.asarray(densities, np.float32)
    tot = d.sum(axis=0)
    inside = tot >= level * tot.max()
    owner = np.argmax(d, axis=0)
    bodies = []
    for i in range(len(d)):
        region = inside & (owner == i)
        mask = soften(region, pixel_size_A, soft_edge_A)
        bodies.append(Body(mask, 1 if i == 0 else 0, sigma_angles_deg, sigma_offset_A, name=f"body{i + 1}"))
    return bodies


def ratchet_bodies(demo: str = "ribosome"):
    """``(volumes, pivot_A, axis)`` for the demo ribosome: ``{"60S": large subunit + Lso2, "40S":
    small subunit + RACK1}`` (they sum to the 80S), the centre of the subunits' contact (A, from
    the box centre) and the unit vector from the 60S's centre of mass to the 40S's."""
    from ...data import load_demo
    from ...masks import component_mask
    d = load_demo(demo)
    large = d.components["60S_core"] + d.components["Lso2"]
    small = d.components["40S_core"] + d.components["RACK1"]
    contact = component_mask(["60S_core", "Lso2"], demo) * component_mask(["40S_core", "RACK1"], demo)
    pivot = centre_of_mass_A(contact, d.pixel_size_A)
    axis = centre_of_mass_A(small, d.pixel_size_A) - centre_of_mass_A(large, d.pixel_size_A)
    return {"60S": large, "40S": small}, pivot, axis / np.linalg.norm(axis)
