"""Superposing two maps: rotation, translation and hand (for maps made without a common frame).

An initial model made from the particles alone sits in an arbitrary frame and has an
undetermined hand (a map and its mirror image give the same projections up to a mirror of
each image). To compare it with another map, :func:`align_maps` searches all rotations of both
hands on a coarse grid at low resolution, the translation by FFT cross-correlation for each,
and refines the best rotation locally. :func:`align_symmetry` turns a map made without symmetry
so that its symmetry axes lie along the point group's standard axes (RELION's setting) and
imposes the group (what ``relion_align_symmetry`` and ``relion_image_handler --sym`` do).

Conventions: maps ``[z, y, x]`` with the rotation centre at pixel ``N // 2``; a rotation ``R``
(``3 x 3``, acting on ``(x, y, z)``) moves the map as ``W(x) = V(R^T (x - t))`` with ``t`` the
shift in pixels ``(x, y, z)``; the mirror is ``z -> -z`` about the centre (applied first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fourier import fourier_crop, lowpass
from ..geometry import healpix_sampling
from ..geometry.euler import euler_to_matrix, matrix_to_euler

__all__ = ["MapAlignment", "SymmetryAlignment", "rotate_map", "mirror_map", "align_maps", "align_symmetry",
           "symmetrise_map"]

_P = np.eye(3)[::-1]        # (x, y, z) <-> (z, y, x)


def rotate_map(volume, R, shift_px=(0.0, 0.0, 0.0), order: int = 1) -> np.ndarray:
    """``W(x) = V(R^T (x - t))``: the map rotated by ``R`` about pixel ``N // 2`` and moved by
    ``t = shift_px`` (x, y, z) pixels; spline interpolation of ``order``, zero outside."""
    from scipy import ndimage
    v = np.asarray(volume, np.float32)
    n = v.shape[0]
    M = _P @ np.asarray(R, float).T @ _P
    ctr = np.full(3, n // 2, float)
    t = _P @ np.asarray(shift_px, float)
    return ndimage.affine_transform(v, M, offset=ctr - M @ (ctr + t), order=order,
                                    mode="constant").astype(np.float32)


def mirror_map(volume) -> np.ndarray:
    """The mirror image ``z -> -z`` about pixel ``N // 2`` (the other hand)."""
    v = np.asarray(volume)
    n = v.shape[0]
    return np.roll(v[::-1], 1 - n % 2, axis=0) if n % 2 == 0 else v[::-1].copy()


@dataclass(frozen=True)
class MapAlignment:
    """How ``moving`` was put onto ``reference``: ``mirrored`` (hand flipped first), rotation
    ``R`` (3 x 3 on (x, y, z)) and its RELION Euler angles (deg), ``shift_px`` (x, y, z) at the
    full box, ``cc`` the normalised correlation at the search resolution, and ``aligned`` the
    moved map at the full box."""
    mirrored: bool
    R: np.ndarray
    eulers_deg: tuple
    shift_px: tuple
    cc: float
    aligned: np.ndarray


def _best_shift(moved, ref_ft_conj, norm_ref):
    """Normalised cross-correlation peak and its shift (x, y, z) pixels (periodic)."""
    cc = np.fft.irfftn(np.fft.rfftn(moved) * ref_ft_conj, s=moved.shape, axes=(0, 1, 2))
    i = np.unravel_index(int(np.argmax(cc)), cc.shape)
    n = moved.shape[0]
    shift_zyx = [(-k) % n for k in i]
    shift_zyx = [s - n if s > n // 2 else s for s in shift_zyx]
    return float(cc[i] / (np.linalg.norm(moved) * norm_ref + 1e-30)), np.asarray(shift_zyx[::-1], float)


def _prepared(volume, box: int, resolution_A: float, pixel_size_A: float):
    """The map low-pass filtered to ``resolution_A``, binned to ``box`` pixels, mean removed."""
    v = lowpass(np.asarray(volume, np.float32), resolution_A, pixel_size_A, ndim=3)
    v = fourier_crop(v, box, ndim=3) if box < v.shape[0] else v
    return (v - v.mean()).astype(np.float32)


class _Scorer:
    """Correlation of a rotated ``moving`` with ``reference`` at one box, best translation."""

    def __init__(self, moving, reference, box, resolution_A, pixel_size_A):
        ref = _prepared(reference, box, resolution_A, pixel_size_A)
        self.moving = _prepared(moving, box, resolution_A, pixel_size_A)
        self.ref_ft, self.norm = np.conj(np.fft.rfftn(ref)), float(np.linalg.norm(ref))

    def __call__(self, eulers_deg):
        return _best_shift(rotate_map(self.moving, euler_to_matrix(*eulers_deg)), self.ref_ft, self.norm)


def align_maps(moving, reference, pixel_size_A: float, *, resolution_A: float = 20.0,
               try_mirror: bool = True, healpix_order: int = 1, psi_step_deg: float = 15.0,
               coarse_box: int = 20) -> MapAlignment:
    """Superpose ``moving`` on ``reference`` (same box and pixel size): rotation, shift and hand.

    Global search: both maps binned to ``coarse_box`` pixels (and low-passed to 2.5 of those
    pixels), every rotation of a HEALPix grid (order ``healpix_order``, psi every
    ``psi_step_deg``) of each hand scored by the peak of the cross-correlation over all
    translations. Local search: a simplex over the Euler angles at ``resolution_A`` (binned to a
    pixel of ``resolution_A / 2.5``); the shift is then found at the full box.
    """
    from scipy.optimize import minimize
    mov = np.asarray(moving, np.float32)
    ref = np.asarray(reference, np.float32)
    if mov.shape != ref.shape or mov.ndim != 3 or len(set(mov.shape)) != 1:
        raise ValueError(f"align_maps: maps must be cubes of one size, got {mov.shape} and {ref.shape}")
    n = mov.shape[0]
    hands = {False: mov, True: mirror_map(mov)} if try_mirror else {False: mov}
    coarse = min(n, coarse_box)
    coarse_res = max(resolution_A, 2.5 * n * pixel_size_A / coarse)
    best = (-np.inf, False, None)
    for mirrored, m in hands.items():
        score = _Scorer(m, ref, coarse, coarse_res, pixel_size_A)
        for e in healpix_sampling(healpix_order, psi_step_deg, nest=False):
            cc = score(e)[0]
            if cc > best[0]:
                best = (cc, mirrored, np.asarray(e, float))
    _, mirrored, e0 = best
    fine = int(min(n, max(coarse, 2 * round(n * pixel_size_A / (resolution_A / 2.5) / 2))))
    score = _Scorer(hands[mirrored], ref, fine, resolution_A, pixel_size_A)
    simplex = e0 + np.vstack([np.zeros(3), np.eye(3) * psi_step_deg / 3])
    res = minimize(lambda e: -score(e)[0], e0, method="Nelder-Mead",
                   options=dict(initial_simplex=simplex, xatol=0.2, fatol=1e-6))
    e = res.x if -res.fun >= score(e0)[0] else e0
    R = euler_to_matrix(*e)
    cc = score(e)[0]
    full = _Scorer(hands[mirrored], ref, n, resolution_A, pixel_size_A)
    _, shift = _best_shift(rotate_map(full.moving, R), full.ref_ft, full.norm)
    aligned = rotate_map(hands[mirrored], R, shift, order=3)
    eul = tuple(float(a) for a in np.ravel(matrix_to_euler(R[None])))
    return MapAlignment(bool(mirrored), R, eul, tuple(float(x) for x in shift), float(cc), aligned)


@dataclass(frozen=True)
class SymmetryAlignment:
    """A map turned onto the standard axes of point group ``sym``: rotation ``R`` (3 x 3 on
    (x, y, z)) and its RELION Euler angles (deg), ``cc`` the mean normalised correlation of the
    turned map with its symmetry mates at the search resolution (1 for an exactly symmetric map,
    the identity ``cc_before``), ``aligned`` the turned map and ``symmetrised`` its average
    over the group (both at the full box)."""
    sym: str
    R: np.ndarray
    eulers_deg: tuple
    cc: float
    cc_before: float
    aligned: np.ndarray
    symmetrised: np.ndarray


def symmetrise_map(volume, sym: str, order: int = 3) -> np.ndarray:
    """The average of ``V(S^T x)`` over the operators ``S`` of ``sym`` (about pixel ``N // 2``)."""
    from ..geometry import symmetry_operators
    ops = symmetry_operators(sym)
    v = np.asarray(volume, np.float32)
    return (np.mean([v if np.allclose(S, np.eye(3)) else rotate_map(v, S, order=order) for S in ops], axis=0)
            .astype(np.float32))


class _SymmetryScorer:
    """Mean correlation of a turned map with its mates ``V(S^T x)`` (``S`` not the identity)."""

    def __init__(self, volume, ops, box, resolution_A, pixel_size_A):
        self.v = _prepared(volume, box, resolution_A, pixel_size_A)
        self.ops = [S for S in ops if not np.allclose(S, np.eye(3))]

    def __call__(self, eulers_deg):
        w = rotate_map(self.v, euler_to_matrix(*eulers_deg))
        w = w - w.mean()
        norm = float(np.linalg.norm(w)) + 1e-30
        ccs = []
        for S in self.ops:
            m = rotate_map(w, S)
            ccs.append(float(np.vdot(w, m)) / (norm * (float(np.linalg.norm(m)) + 1e-30)))
        return float(np.mean(ccs))


def align_symmetry(volume, sym: str, pixel_size_A: float, *, resolution_A: float = 20.0,
                   healpix_order: int | None = None, psi_step_deg: float = 15.0,
                   coarse_box: int = 24) -> SymmetryAlignment:
    """Turn ``volume`` so that its symmetry axes lie along those of ``sym`` and impose it.

    The axes are assumed to pass through pixel ``N // 2`` (centre the map on its centre of mass
    first: the centre of mass of a symmetric map lies on every axis). Global search: every
    rotation ``R`` of a HEALPix grid (order ``healpix_order``, default 2 for ``Cn`` and 1 for the
    other groups; psi every ``psi_step_deg``, or psi = 0 for ``Cn``, whose score does not depend
    on the turn about z) scored by the mean
    correlation of ``V(R^T x)`` with its symmetry mates, on the map binned to ``coarse_box``
    pixels; then a simplex at ``resolution_A``. The score ``cc`` says how symmetric the map is.
    """
    from scipy.optimize import minimize
    from ..geometry import healpix_step_deg, symmetry_operators
    v = np.asarray(volume, np.float32)
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise ValueError(f"align_symmetry: the map must be a cube, got {v.shape}")
    ops = symmetry_operators(sym)
    n = v.shape[0]
    if len(ops) == 1:
        return SymmetryAlignment(str(sym), np.eye(3), (0.0, 0.0, 0.0), 1.0, 1.0, v.copy(), v.copy())
    cyclic = str(sym).strip().upper().startswith("C")
    healpix_order = (2 if cyclic else 1) if healpix_order is None else int(healpix_order)
    coarse = min(n, coarse_box)
    score = _SymmetryScorer(v, ops, coarse, max(resolution_A, 2.5 * n * pixel_size_A / coarse), pixel_size_A)
    grid = healpix_sampling(healpix_order, psi_step_deg, nest=False)
    if cyclic:
        grid = np.unique(np.round(grid[:, :2], 6), axis=0)
        grid = np.hstack([grid, np.zeros((len(grid), 1))])
    e0 = max((np.asarray(e, float) for e in grid), key=score)
    fine = int(min(n, max(coarse, 2 * round(n * pixel_size_A / (resolution_A / 2.5) / 2))))
    score = _SymmetryScorer(v, ops, fine, resolution_A, pixel_size_A)
    free = 2 if cyclic else 3
    step = healpix_step_deg(healpix_order) / 2

    def full(x):
        return np.concatenate([x, np.zeros(3 - free)])

    res = minimize(lambda x: -score(full(x)), e0[:free], method="Nelder-Mead",
                   options=dict(initial_simplex=e0[:free] + np.vstack([np.zeros(free), np.eye(free) * step]),
                                xatol=0.2, fatol=1e-6))
    cc0 = score(e0)
    e, cc = (full(res.x), float(-res.fun)) if -res.fun >= cc0 else (e0, cc0)
    R = euler_to_matrix(*e)
    aligned = rotate_map(v, R, order=3)
    eul = tuple(float(a) for a in np.ravel(matrix_to_euler(R[None])))
    return SymmetryAlignment(str(sym), R, eul, cc, score(np.zeros(3)), aligned, symmetrise_map(aligned, sym))
