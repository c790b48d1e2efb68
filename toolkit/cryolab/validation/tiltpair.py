"""Tilt-pair validation (Henderson et al. 2011): the orientations of an untilted and a tilted image of each
particle must differ by the goniometer's tilt about its axis.

Conventions. ``A_u``, ``A_t`` are RELION's matrices of the untilted and tilted orientations
(:func:`cryolab.geometry.euler_to_matrix`: rows are the image axes in the map's frame). The pair's relative
rotation, in the image (microscope) frame, is ``R = A_t A_u^T``: a rotation by ``tilt`` (degrees, >= 0)
about the unit axis ``n``; for a goniometer tilt ``n`` lies in the image plane and its direction ``alpha =
atan2(n_y, n_x)`` (degrees from the image x axis, counter-clockwise towards +y) is the **tilt axis**. A
tilt of ``-tau`` about ``alpha`` is the tilt ``tau`` about ``alpha + 180``. ``relion_tiltpair_plot``
reports the same tilt and the axis as ``180 - alpha`` (measured the other way round, from the other end):
:func:`relion_axis_deg` converts. A map of the wrong hand turns every ``R`` into ``D R D`` (``D`` the
mirror ``z -> -z``): the same tilt about ``alpha + 180``, which is how a wrong hand shows up when the
goniometer's axis and tilt sense are known.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CryolabInputError
from ..geometry import euler_to_matrix

__all__ = ["pair_tilts", "relion_axis_deg", "relion_tiltpair_points", "expected_rotation", "axis_angle_rotation", "TiltPairStats", "tilt_pair_stats",
           "rayleigh_test"]


def pair_tilts(eulers_untilted, eulers_tilted):
    """Per pair ``(tilt_deg [P], axis_deg [P], out_of_plane_deg [P])`` from RELION Euler angles ``[P, 3]``
    (module text); ``out_of_plane_deg`` is the axis's elevation above the image plane (0 for a pure
    goniometer tilt). Lists of different lengths are refused."""
    u = np.asarray(eulers_untilted, np.float64).reshape(-1, 3)
    t = np.asarray(eulers_tilted, np.float64).reshape(-1, 3)
    if len(u) != len(t):
        raise CryolabInputError(f"{len(u)} untilted but {len(t)} tilted particles: the lists must pair up",
                                field="tilted")
    if not len(u):
        raise CryolabInputError("no particle pairs", field="untilted")
    r = euler_to_matrix(t[:, 0], t[:, 1], t[:, 2]) @ np.swapaxes(euler_to_matrix(u[:, 0], u[:, 1], u[:, 2]), -1, -2)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    tilt = np.degrees(np.arccos(cos))
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], -1)
    near_pi = np.sin(np.radians(tilt)) < 1e-6
    if near_pi.any():                                   # 180 deg: the axis from the symmetric part
        s = (r[near_pi] + np.eye(3)) / 2
        axis[near_pi] = np.sqrt(np.clip(np.diagonal(s, axis1=-2, axis2=-1), 0, None)) * np.sign(
            np.where(np.abs(s[:, 0]) > 1e-9, s[:, 0], 1))
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    axis = axis / np.where(norm > 0, norm, 1)
    alpha = np.degrees(np.arctan2(axis[:, 1], axis[:, 0])) % 360
    elevation = np.degrees(np.arcsin(np.clip(axis[:, 2], -1, 1)))
    return tilt, alpha, elevation


def relion_axis_deg(axis_deg):
    """The tilt axis as ``relion_tiltpair_plot`` reports it: ``(180 - alpha) mod 360``."""
    return (180.0 - np.asarray(axis_deg, np.float64)) % 360


def axis_angle_rotation(axis, angle_deg: float) -> np.ndarray:
    """The rotation ``[3, 3]`` by ``angle_deg`` (right-handed) about the unit vector ``axis`` (x, y, z)."""
    n = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    t = np.radians(angle_deg)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def relion_tiltpair_points(eps_text: str, max_tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``(tilt_deg [P], relion_axis_deg [P])`` read back from the EPS polar plot ``relion_tiltpair_plot``
    writes (it writes no numbers): each pair is a dot ``x y 3 0 360 arc`` at radius ``tilt * 250 /
    max_tilt_deg`` and angle ``relion_axis`` around (300, 400) (RELION 3.1's layout)."""
    import re
    pts = np.array([[float(a), float(b)] for a, b in
                    re.findall(r"^([-\d.e+]+) ([-\d.e+]+) 3 0 360 arc", eps_text, re.M)]).reshape(-1, 2)
    dx, dy = pts[:, 0] - 300.0, pts[:, 1] - 400.0
    return np.hypot(dx, dy) * float(max_tilt_deg) / 250.0, np.degrees(np.arctan2(dy, dx)) % 360


def expected_rotation(tilt_deg: float, axis_deg: float) -> np.ndarray:
    """The goniometer's rotation ``[3, 3]``: ``tilt_deg`` about the in-plane axis at ``axis_deg``."""
    a = np.radians(axis_deg)
    return axis_angle_rotation([np.cos(a), np.sin(a), 0.0], tilt_deg)


def _rotation(tilt_deg, axis_deg):
    """Rotations ``[P, 3, 3]`` by ``tilt_deg`` about in-plane axes at ``axis_deg``."""
    return np.stack([expected_rotation(t, a) for t, a in zip(np.ravel(tilt_deg), np.ravel(axis_deg))])


def _angle_between(r1, r2):
    cos = (np.trace(r1 @ np.swapaxes(r2, -1, -2), axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def rayleigh_test(angles_deg) -> tuple[float, float]:
    """Rayleigh's test of uniformity of directions: ``(mean resultant length R, p-value)``, with the
    small-sample correction ``p = exp(sqrt(1 + 4n + 4(n^2 - (nR)^2)) - (1 + 2n))`` (Zar 1999)."""
    a = np.radians(np.asarray(angles_deg, np.float64))
    n = len(a)
    big_r = np.hypot(np.cos(a).sum(), np.sin(a).sum())
    p = np.exp(np.sqrt(1 + 4 * n + 4 * (n * n - big_r * big_r)) - (1 + 2 * n))
    return float(big_r / n), float(min(max(p, 0.0), 1.0))


def _circular_median(angles_deg) -> float:
    """The direction minimising the summed angular distance to ``angles_deg`` (one of the directions
    themselves: the sum is piecewise linear between them)."""
    a = np.asarray(angles_deg, np.float64) % 360
    d = np.abs((a[None, :] - a[:, None] + 180) % 360 - 180).sum(axis=1)
    return float(a[np.argmin(d)])


@dataclass
class TiltPairStats:
    """Numbers of a tilt-pair validation (angles in degrees): ``median_tilt``, ``median_axis`` (module
    convention; ``relion_axis`` as RELION reports it), their 95 % bootstrap intervals, the fraction of
    pairs whose relative rotation lies within ``within_deg`` of the expected one (the goniometer's when
    given, else the median tilt about the median axis), Rayleigh's ``R`` and ``p`` for the axes, and
    ``hand``: ``"correct"``, ``"flipped"`` (the axes cluster near ``expected_axis + 180``) or
    ``"unknown"`` (no expected axis, no cluster, or a median tilt more than max(5 deg, 25 %) from the
    expected one: then the map is wrong in more than its hand)."""

    n: int
    median_tilt: float
    median_axis: float
    relion_axis: float
    tilt_ci: tuple
    axis_ci: tuple
    fraction_within: float
    within_deg: float
    rayleigh_r: float
    rayleigh_p: float
    hand: str
    tilt: np.ndarray
    axis: np.ndarray


def tilt_pair_stats(eulers_untilted, eulers_tilted, *, expected_tilt_deg: float | None = None,
                    expected_axis_deg: float | None = None, within_deg: float = 5.0, n_boot: int = 1000,
                    seed: int = 0) -> TiltPairStats:
    """Validate tilt pairs (module text). With ``expected_tilt_deg`` and ``expected_axis_deg`` (the
    goniometer's, in this module's convention) the fraction within ``within_deg`` is measured against
    them and the hand is checked."""
    tilt, axis, _ = pair_tilts(eulers_untilted, eulers_tilted)
    med_tilt, med_axis = float(np.median(tilt)), _circular_median(axis)
    rng = np.random.default_rng(seed)
    boots = rng.integers(0, len(tilt), (int(n_boot), len(tilt)))
    bt = np.median(tilt[boots], axis=1)
    ba = np.array([_circular_median(axis[b]) for b in boots[: min(int(n_boot), 200)]])
    ba = med_axis + (ba - med_axis + 180) % 360 - 180
    ref_t = med_tilt if expected_tilt_deg is None else float(expected_tilt_deg)
    ref_a = med_axis if expected_axis_deg is None else float(expected_axis_deg)
    r_pairs = _rotation(tilt, axis)
    within = float(np.mean(_angle_between(r_pairs, expected_rotation(ref_t, ref_a)[None]) <= within_deg))
    big_r, p = rayleigh_test(axis)
    hand = "unknown"
    tilt_ok = expected_tilt_deg is None or abs(med_tilt - float(expected_tilt_deg)) <= max(5.0, 0.25 * ref_t)
    if expected_axis_deg is not None and p < 0.01 and tilt_ok:
        off = abs((med_axis - float(expected_axis_deg) + 180) % 360 - 180)
        hand = "correct" if off < 45 else "flipped" if off > 135 else "unknown"
    return TiltPairStats(n=len(tilt), median_tilt=med_tilt, median_axis=med_axis,
                         relion_axis=float(relion_axis_deg(med_axis)),
                         tilt_ci=tuple(np.percentile(bt, [2.5, 97.5])), axis_ci=tuple(np.percentile(ba, [2.5, 97.5]) % 360),
                         fraction_within=within, within_deg=float(within_deg), rayleigh_r=big_r, rayleigh_p=p,
                         hand=hand, tilt=tilt, axis=axis)
