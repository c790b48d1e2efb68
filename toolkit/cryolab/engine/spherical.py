"""3D orientation sampling for 3D classification and refinement: HEALPix directions x psi.

Orientation parameters are rows ``(rot, tilt, psi, pixel, order)``: RELION Euler
angles in degrees plus the direction's NESTED HEALPix pixel index at ``order`` (so a
coarse sample knows its finer children: pixels ``4**o * pixel + 0 .. 4**o - 1`` at
``order + o``). References are projected with :class:`cryolab.projection.FourierProjector`
and sums go back through :class:`cryolab.reconstruction.BackProjector`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..geometry import (direction_distance, euler_to_direction, euler_to_matrix, healpix_pix2ang, healpix_step_deg,
                        is_c1, psi_angles)
from ..projection import FourierProjector
from ..projection import shift_ramps
from .cache import CachedProjections
from .estep import FourierPixels
from .expectation import SampleSet
from .sampling import fine_psi, translation_grid

__all__ = ["SphericalSampler", "healpix_orientations", "local_log_prior", "local_candidates", "local_candidate_rows",
           "grid_directions", "GridDirections",
           "fixed_orientations"]


def healpix_orientations(order: int, psi_step_deg: float | None = None, pixels=None) -> np.ndarray:
    """Orientation rows ``(rot, tilt, psi, pixel, order)`` for NESTED HEALPix ``pixels`` (default all)."""
    nside = 2 ** order
    pix = np.arange(12 * nside * nside) if pixels is None else np.asarray(pixels, dtype=np.int64)
    theta, phi = healpix_pix2ang(nside, pix, nest=True)
    rot = (np.degrees(phi) + 180.0) % 360.0 - 180.0
    psi = psi_angles(healpix_step_deg(order) if psi_step_deg is None else psi_step_deg)
    n = len(psi)
    return np.stack([np.repeat(rot, n), np.repeat(np.degrees(theta), n), np.tile(psi, len(pix)),
                     np.repeat(pix, n).astype(float), np.full(len(pix) * n, float(order))], axis=-1)


def local_log_prior(priors, orients, sigma_deg: float, sym=None, cutoff_sigmas: float = 3.0):
    """Log orientation prior ``[B, J]`` of local searches (RELION's ``--sigma_ang``).

    For each particle's prior angles ``priors [B, 3]`` and orientation rows ``orients [J, >=3]``:
    ``-d_dir^2 / 2 sigma^2 - d_psi^2 / 2 sigma^2`` (the formula of
    :func:`cryolab.geometry.orientation_prior_weights`, unnormalised, vectorised over the batch)
    where both distances are below ``cutoff_sigmas * sigma``, ``-inf`` elsewhere. A particle
    with no orientation inside keeps its nearest one (log prior 0).
    """
    lp, inside = _local_terms(priors, orients, sigma_deg, sym, cutoff_sigmas)
    out = np.where(inside, lp, -np.inf)
    empty = np.flatnonzero(~inside.any(axis=1))
    if empty.size:
        out[empty, np.argmax(lp[empty], axis=1)] = 0.0
    return out


def _local_terms(priors, orients, sigma_deg, sym, cutoff_sigmas):
    """``(log prior [B, J] without the cut-off, inside [B, J])`` of :func:`local_log_prior`."""
    priors = np.asarray(priors, float).reshape(-1, 3)
    o = np.asarray(orients, float)
    if o.shape[0] == 0:
        return np.zeros((priors.shape[0], 0)), np.zeros((priors.shape[0], 0), bool)
    sym = None if is_c1(sym) else sym
    if sym is None:     # one GEMM of unit vectors: the angle from the chord, 2 asin(|d1 - d2| / 2)
        d1, d2 = euler_to_direction(priors[:, 0], priors[:, 1]), euler_to_direction(o[:, 0], o[:, 1])
        chord = np.sqrt(np.maximum(2.0 - 2.0 * (d1 @ d2.T), 0.0))
        d = np.degrees(2.0 * np.arcsin(np.minimum(chord / 2.0, 1.0)))
    else:
        d = direction_distance(priors[:, None, :2], o[None, :, :2], sym)
    dpsi = np.abs((o[None, :, 2] - priors[:, None, 2] + 180.0) % 360.0 - 180.0)
    lp = -0.5 * (d / sigma_deg) ** 2 - 0.5 * (dpsi / sigma_deg) ** 2
    return lp, (d < cutoff_sigmas * sigma_deg) & (dpsi < cutoff_sigmas * sigma_deg)


class GridDirections(NamedTuple):
    """The distinct directions of a grid of orientation rows (:func:`grid_directions`): unit vectors
    ``units [D, 3]``, the direction of each row ``inverse [J]``, and the rows of direction ``d``:
    ``rows[starts[d]:starts[d + 1]]`` (ascending)."""
    units: np.ndarray
    inverse: np.ndarray
    rows: np.ndarray
    starts: np.ndarray


def grid_directions(orients) -> GridDirections:
    """The distinct directions of orientation rows ``[J, 5]`` (by HEALPix pixel and order), for
    :func:`local_candidates`."""
    o = np.asarray(orients, float)
    key = o[:, 4].astype(np.int64) * (1 << 40) + o[:, 3].astype(np.int64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse, minlength=first.size)
    return GridDirections(euler_to_direction(o[first, 0], o[first, 1]), inverse,
                          np.argsort(inverse, kind="stable"), np.concatenate([[0], np.cumsum(counts)]))


def local_candidates(priors, orients, sigma_deg: float, sym=None, cutoff_sigmas: float = 3.0, directions=None):
    """``[J]`` bool: the rows some particle's :func:`local_log_prior` leaves finite (the same set as
    ``np.isfinite(local_log_prior(...)).any(axis=0)``); :func:`local_candidate_rows` as a mask."""
    keep = np.zeros(len(orients), bool)
    keep[local_candidate_rows(priors, orients, sigma_deg, sym, cutoff_sigmas, directions)] = True
    return keep


def local_candidate_rows(priors, orients, sigma_deg: float, sym=None, cutoff_sigmas: float = 3.0,
                         directions=None):
    """The rows (ascending) that some particle's :func:`local_log_prior` leaves finite. With
    ``directions`` (:func:`grid_directions` of ``orients``) and no symmetry, only the rows of
    directions within the cut-off of a particle's (one small GEMM over the distinct directions)
    are visited, so a fine grid (HEALPix order 5: 2.4 million rows) costs about as much as the
    particles' neighbourhoods."""
    o = np.asarray(orients, float)
    if directions is not None and is_c1(sym) and len(o):
        priors = np.asarray(priors, float).reshape(-1, 3)
        limit = np.radians(min(cutoff_sigmas * sigma_deg, 180.0)) + 1e-6       # a little wider: a superset
        near = np.flatnonzero((directions.units @ euler_to_direction(priors[:, 0], priors[:, 1]).T
                               >= np.cos(limit)).any(axis=1))
        lo, lens = directions.starts[near], np.diff(directions.starts)[near]
        at = np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())   # the near directions' rows
        rows = np.sort(directions.rows[at])
        _, inside = _local_terms(priors, o[rows], sigma_deg, None, cutoff_sigmas)
        if inside.any(axis=1).all():          # else the full grid decides the nearest row of a particle
            return rows[inside.any(axis=0)]
    return np.flatnonzero(np.isfinite(local_log_prior(priors, o, sigma_deg, sym, cutoff_sigmas)).any(axis=0))


def fixed_orientations(eulers, ids=None) -> np.ndarray:
    """Orientation rows for given angles ``[B, 3]`` (``--skip_align``): pixel = the particle's
    number ``ids`` (default the row number) and order 15 (outside any HEALPix grid used), so
    every particle has its own key, also across batches whose sums are merged by key."""
    e = np.asarray(eulers, float).reshape(-1, 3)
    ids = np.arange(len(e)) if ids is None else np.asarray(ids)
    return np.concatenate([e, ids.astype(float)[:, None], np.full((len(e), 1), 15.0)], axis=1)


class SphericalSampler(CachedProjections):
    """Projects 3D references ``[K, N, N, N]`` at orientation rows onto the likelihood pixels."""

    def __init__(self, refs, pix: FourierPixels, healpix_order: int, offset_range_px: float,
                 offset_step_px: float, psi_step_deg: float | None = None, pad: int = 2,
                 orientations=None):
        self.pix = pix
        self.K = refs.shape[0]
        self.order = int(healpix_order)
        self.psi_step_deg = healpix_step_deg(self.order) if psi_step_deg is None else float(psi_step_deg)
        self.offset_step_px = float(offset_step_px)
        self.projectors = [FourierProjector(refs[k], pad=pad, max_shell=pix.max_shell) for k in range(self.K)]
        self.xp = self.projectors[0].xp
        self.trans = translation_grid(offset_range_px, offset_step_px)
        self.orientations = (healpix_orientations(self.order, self.psi_step_deg)
                             if orientations is None else np.asarray(orientations, float))
        self._pixel_lists = {}                      # m -> the first m pixels' (kx, ky), kept for project_pixels
        self._init_cache()

    def coarse(self, m_coarse: int | None = None, orientations=None) -> SampleSet:
        """Coarse samples: every class at every grid orientation, or at the given ``orientations``
        (rows of the grid; their projections are cached, for local searches)."""
        o = self.orientations if orientations is None else orientations
        classes = np.repeat(np.arange(self.K), len(o))
        orients = np.tile(o, (self.K, 1))
        if orientations is None:
            P = self.project(classes, orients, m_coarse)
        else:       # cached at the coarse pass's width: only those pixels projected and gathered
            P = self.project(classes, orients, width=m_coarse)
        ramps = self._coarse_ramps()
        return SampleSet(classes, orients, P, self.trans, ramps[:, :m_coarse] if m_coarse else ramps)

    def _coarse_ramps(self):
        """The coarse translations' phase ramps ``[T, M]``, made once (local searches ask for them
        every batch); read-only on NumPy, as they are shared."""
        if getattr(self, "_ramps", None) is None:
            self._ramps = shift_ramps(self.pix.n, self.trans, self.xp, kx=self.pix.kx, ky=self.pix.ky)
            if isinstance(self._ramps, np.ndarray):
                self._ramps.flags.writeable = False
        return self._ramps

    @staticmethod
    def n_children(oversampling: int) -> int:
        return 8 ** oversampling        # 4**o directions x 2**o psi

    def children(self, orients, classes, oversampling: int):
        """Finer orientations of coarse rows: HEALPix children x psi children (direction-major)."""
        nd, npsi = 4 ** oversampling, 2 ** oversampling
        orients = np.asarray(orients, float).reshape(-1, 5)
        out = np.empty((len(orients), nd, npsi, 5))
        for order in np.unique(orients[:, 4]).astype(int):      # rows of one order at a time
            sel = np.flatnonzero(orients[:, 4] == order)
            pix = orients[sel, 3].astype(np.int64)[:, None] * nd + np.arange(nd)[None, :]   # [r, nd]
            theta, phi = healpix_pix2ang(2 ** (order + oversampling), pix.ravel(), nest=True)
            psis = fine_psi(orients[sel, 2], self.psi_step_deg, oversampling)             # [r, npsi]
            o = out[sel]
            o[..., 0] = ((np.degrees(phi) + 180.0) % 360.0 - 180.0).reshape(-1, nd, 1)
            o[..., 1] = np.degrees(theta).reshape(-1, nd, 1)
            o[..., 2] = psis[:, None, :]
            o[..., 3] = pix[:, :, None]
            o[..., 4] = order + oversampling
            out[sel] = o
        return out.reshape(-1, 5), np.repeat(classes, nd * npsi)

    @staticmethod
    def keys(classes, orients):
        """One int64 per (class, order, pixel, psi in 1/100 degree)."""
        psi = np.rint(np.mod(orients[:, 2], 360.0) * 100).astype(np.int64)
        return (((np.asarray(classes, np.int64) * 16 + orients[:, 4].astype(np.int64)) << 40)
                + (orients[:, 3].astype(np.int64) << 16) + psi)

    def _project_class(self, k: int, orients):
        rots = euler_to_matrix(orients[:, 0], orients[:, 1], orients[:, 2])
        return self.projectors[k].project_ft(self.xp.asarray(rots), max_shell=self.pix.max_shell)

    def _project_class_pixels(self, k: int, orients, m: int):
        """Only the first ``m`` likelihood pixels are interpolated (equal to :meth:`_project_class`
        read at them, to the bit)."""
        rots = euler_to_matrix(orients[:, 0], orients[:, 1], orients[:, 2])
        if m not in self._pixel_lists:
            self._pixel_lists[m] = (self.pix.kx[:m], self.pix.ky[:m])
        kx, ky = self._pixel_lists[m]
        return self.projectors[k].project_pixels(self.xp.asarray(rots), kx, ky, max_shell=self.pix.max_shell)

    def insert(self, backprojector, orients, D, W):
        """Add sums ``D``, ``W`` ``[J, M]`` at orientation rows to a 3D back-projector (as pixel lists)."""
        rots = euler_to_matrix(orients[:, 0], orients[:, 1], orients[:, 2])
        backprojector.insert_pixels(D, W, self.xp.asarray(rots), self.pix.kx, self.pix.ky)
