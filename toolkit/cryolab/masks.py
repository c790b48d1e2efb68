"""Masks for focused refinement, focused classification and partial signal subtraction.

A mask is a float32 map ``[N, N, N]`` with values in [0, 1], on the same grid as the map it
masks (box ``N``, voxel ``[z, y, x]``, box centre at voxel ``N // 2``). Binary regions get a
raised-cosine edge (RELION's ``relion_mask_create --width_soft_edge``): 1 inside, then
``0.5 + 0.5 cos(pi d / w)`` at distance ``d < w`` outside. Distances, radii and edges are in
Angstrom; positions ``(x, y, z)`` in Angstrom from the box centre.

Ways to make one: :func:`threshold_mask` (density above a level), :func:`sphere_mask` and
:func:`ellipsoid_mask` (a shape at a point), :func:`atoms_mask` (atoms of chosen chains of a
model, needs ``gemmi``), :func:`component_mask` (a component of an embedded demo map, e.g.
the ribosome's RACK1). :func:`check_mask` and :func:`read_mask` refuse masks that cannot work
(another box or pixel size, empty, covering everything).

>>> m = sphere_mask(32, 5.0, radius_A=40.0, soft_edge_A=10.0)
>>> float(m[16, 16, 16]), float(m[16, 16, 16 + 8]), round(float(m[16, 16, 16 + 9]), 3)
(1.0, 1.0, 0.5)
"""
from __future__ import annotations

import numpy as np

from .errors import CryolabInputError
from .validation.masks import _ndimage, _raised_cosine, auto_mask

__all__ = ["threshold_mask", "sphere_mask", "ellipsoid_mask", "atoms_mask", "component_mask",
           "soften", "centre_of_mass_A", "check_mask", "read_mask", "write_mask", "mask_fraction"]

#: default width of the soft edge, in Angstrom
SOFT_EDGE_A = 12.0


def _grid_A(box: int, pixel_size_A: float):
    """``(x, y, z)`` coordinates in Angstrom from the box centre, each ``[N, N, N]`` (``[z, y, x]`` order)."""
    c = (np.arange(box) - box // 2) * float(pixel_size_A)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return x, y, z


def soften(binary, pixel_size_A: float, soft_edge_A: float = SOFT_EDGE_A, extend_A: float = 0.0):
    """A soft mask (float32) from a boolean region: grown by ``extend_A`` (shrunk if negative),
    then a raised-cosine edge of width ``soft_edge_A`` outside it."""
    binary = np.asarray(binary, bool)
    if not binary.any():
        raise CryolabInputError("the mask region is empty", field="mask")
    edt = _ndimage(np).distance_transform_edt
    if extend_A > 0:
        binary = binary | (edt(~binary) * pixel_size_A < extend_A)
    elif extend_A < 0:
        binary = binary & ~(edt(binary) * pixel_size_A < -extend_A)
    return _raised_cosine(edt(~binary) * pixel_size_A, soft_edge_A, np)


def threshold_mask(volume, threshold: float, pixel_size_A: float, extend_A: float = 0.0,
                   soft_edge_A: float = SOFT_EDGE_A):
    """Voxels of ``volume`` at or above ``threshold``, grown by ``extend_A``, with a soft edge of
    ``soft_edge_A`` (as ``relion_mask_create --ini_threshold --extend_inimask --width_soft_edge``)."""
    return auto_mask(np.asarray(volume, np.float32), threshold, extend_px=extend_A / pixel_size_A,
                     soft_edge_px=soft_edge_A / pixel_size_A)


def sphere_mask(box: int, pixel_size_A: float, radius_A: float, centre_A=(0.0, 0.0, 0.0),
                soft_edge_A: float = SOFT_EDGE_A):
    """A ball of ``radius_A`` at ``centre_A`` ``(x, y, z)`` (Angstrom from the box centre)."""
    return ellipsoid_mask(box, pixel_size_A, (radius_A,) * 3, centre_A, soft_edge_A)


def ellipsoid_mask(box: int, pixel_size_A: float, radii_A, centre_A=(0.0, 0.0, 0.0),
                   soft_edge_A: float = SOFT_EDGE_A, rotation=None):
    """An ellipsoid with semi-axes ``radii_A`` ``(a, b, c)`` along x, y, z (Angstrom) at ``centre_A``,
    optionally turned by ``rotation`` (a 3x3 matrix acting on ``(x, y, z)``); soft edge outside.

    The edge is measured along the ray from the centre (exact for a sphere, close for mild
    ellipsoids): ``d = (rho - 1) * r_surface`` with ``rho`` the ellipsoidal radius.
    """
    a = np.asarray(radii_A, float)
    if a.shape != (3,) or (a <= 0).any():
        raise CryolabInputError(f"radii must be three positive lengths in Angstrom, got {radii_A}", field="radii_A")
    x, y, z = _grid_A(box, pixel_size_A)
    p = np.stack([x - centre_A[0], y - centre_A[1], z - centre_A[2]], axis=-1)
    if rotation is not None:
        p = p @ np.asarray(rotation, float)          # coordinates in the ellipsoid's own frame
    rho = np.sqrt(((p / a) ** 2).sum(-1))
    r = np.linalg.norm(p, axis=-1)
    dist = np.where(rho > 0, (1.0 - 1.0 / np.maximum(rho, 1e-12)) * r, -a.min())   # >0 outside
    return _raised_cosine(dist, soft_edge_A, np)


def atoms_mask(model_path, chains, box: int, pixel_size_A: float, *, atom_radius_A: float = 3.0,
               extend_A: float = 3.0, soft_edge_A: float = SOFT_EDGE_A):
    """The atoms of ``chains`` (names, or a rule such as ``"S* but SGG"``) of an atomic model, in
    the frame of the embedded demo maps (the centre of mass of the whole model at the box centre;
    see :mod:`cryolab.data.build_demo`): voxels within ``atom_radius_A`` of an atom, grown by
    ``extend_A``, soft edge ``soft_edge_A``. Needs ``gemmi`` (``pip install 'cryolab[models]'``)."""
    from scipy.spatial import cKDTree

    from .data.build_demo import chain_selector, read_centred
    st = read_centred(model_path, box, pixel_size_A)
    keep = chain_selector(chains if isinstance(chains, str) else " ".join(chains))
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for ch in st[0] if keep(ch.name) for res in ch for a in res])
    if xyz.size == 0:
        raise CryolabInputError(f"no atoms in chains {chains!r}", path=model_path, field="chains")
    c = np.arange(box) * float(pixel_size_A)        # voxel centres in the model's frame (A)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    d, _ = cKDTree(xyz).query(np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1),
                              distance_upper_bound=atom_radius_A + pixel_size_A)
    near = (d <= max(atom_radius_A, 0.5 * np.sqrt(3) * pixel_size_A)).reshape(box, box, box)
    return soften(near, pixel_size_A, soft_edge_A, extend_A)


def component_mask(component, demo: str = "ribosome", *, level: float = 0.05, extend_A: float = 6.0,
                   soft_edge_A: float = SOFT_EDGE_A):
    """A mask around a component of an embedded demo dataset (e.g. ``"RACK1"`` or ``"Lso2"`` of the
    ribosome, see :func:`cryolab.data.load_demo`): its density above ``level`` times its maximum,
    grown by ``extend_A``, soft edge ``soft_edge_A``. No ``gemmi`` needed."""
    from .data import load_demo
    d = load_demo(demo)
    names = [component] if isinstance(component, str) else list(component)
    missing = [c for c in names if c not in d.components]
    if missing:
        raise CryolabInputError(f"unknown component(s) {missing}; {demo} has {sorted(d.components)}",
                                field="component")
    vol = np.sum([d.components[c] for c in names], axis=0)
    return soften(vol >= level * vol.max(), d.pixel_size_A, soft_edge_A, extend_A)


def centre_of_mass_A(volume, pixel_size_A: float) -> np.ndarray:
    """``(x, y, z)`` of the centre of mass of the positive part of ``volume``, Angstrom from the box centre."""
    v = np.clip(np.asarray(volume, np.float64), 0, None)
    tot = v.sum()
    if tot <= 0:
        raise CryolabInputError("the map has no positive density", field="volume")
    x, y, z = _grid_A(v.shape[0], pixel_size_A)
    return np.array([(v * x).sum(), (v * y).sum(), (v * z).sum()]) / tot


def mask_fraction(mask) -> float:
    """The fraction of the box the mask covers (its mean)."""
    return float(np.mean(mask))


def check_mask(mask, box: int, pixel_size_A: float | None = None, mask_pixel_size_A: float | None = None,
               path=None):
    """``mask`` as float32 after checks, else a :class:`CryolabInputError` naming ``path``: the
    shape must be ``[box, box, box]``, the pixel sizes agree within 1 %, values lie in [0, 1]
    (within 1e-3), and the mask must neither be empty nor cover the whole box."""
    m = np.asarray(mask, np.float32)
    if m.shape != (box,) * 3:
        raise CryolabInputError(f"the mask is {m.shape}, the map/particles need ({box}, {box}, {box})",
                                path=path, field="box")
    if pixel_size_A and mask_pixel_size_A and abs(mask_pixel_size_A - pixel_size_A) > 0.01 * pixel_size_A:
        raise CryolabInputError(f"the mask's pixel size {mask_pixel_size_A:g} A differs from {pixel_size_A:g} A",
                                path=path, field="pixel size")
    if m.min() < -1e-3 or m.max() > 1 + 1e-3:
        raise CryolabInputError(f"mask values must lie in [0, 1], found [{m.min():.3g}, {m.max():.3g}]",
                                path=path, field="values")
    if m.max() < 0.5:
        raise CryolabInputError("the mask is empty (no voxel reaches 0.5)", path=path, field="values")
    if m.min() > 0.5:
        raise CryolabInputError("the mask covers the whole box (no voxel below 0.5)", path=path, field="values")
    return np.clip(m, 0.0, 1.0)


def read_mask(path, box: int, pixel_size_A: float | None = None):
    """A mask from an MRC file, checked by :func:`check_mask` against ``box`` and ``pixel_size_A``."""
    from .io import read_mrc
    m, px = read_mrc(path)
    return check_mask(m, box, pixel_size_A, px or None, path=path)


def write_mask(path, mask, pixel_size_A: float):
    """Write a mask as an MRC map (atomically); returns the path."""
    from .io import write_mrc
    return write_mrc(path, np.asarray(mask, np.float32), pixel_size_A)
