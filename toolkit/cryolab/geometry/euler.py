"""Euler angles (RELION's ZYZ convention, degrees) and rotation matrices.

``euler_to_matrix(rot, tilt, psi)`` maps the volume frame to the image frame; the viewing
direction of ``(rot, tilt)`` is the matrix's third row. Functions take NumPy or CuPy arrays
(they follow :func:`cryolab.backend.get_xp`) and broadcast their arguments; Euler-angle
arrays have a last axis ``(rot, tilt, psi)``.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..errors import CryolabInputError

__all__ = ["euler_to_matrix", "matrix_to_euler", "euler_to_direction", "random_rotations"]


def euler_to_matrix(rot, tilt, psi):
    """RELION ``Euler_angles2matrix``: ZYZ angles in degrees -> rotation matrices ``[..., 3, 3]``.

    Arrays broadcast together. ``A = R_z(psi) @ R_y(tilt) @ R_z(rot)`` in RELION's sign convention.

    >>> (euler_to_matrix(0.0, 0.0, 0.0).round(6) + 0.0).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    xp = get_xp(rot, tilt, psi)
    a, b, g = (xp.deg2rad(xp.asarray(v, dtype=xp.float64)) for v in (rot, tilt, psi))
    a, b, g = xp.broadcast_arrays(a, b, g)
    ca, sa, cb, sb, cg, sg = xp.cos(a), xp.sin(a), xp.cos(b), xp.sin(b), xp.cos(g), xp.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler(A):
    """Inverse of :func:`euler_to_matrix` (RELION ``Euler_matrix2angles``): ``(rot, tilt, psi)`` in degrees.

    ``tilt`` is in [0, 180]; when ``tilt`` is 0 or 180 the split between ``rot``
    and ``psi`` is arbitrary and ``rot`` is set to 0.
    """
    xp = get_xp(A)
    A = xp.asarray(A, dtype=xp.float64)
    a22 = xp.clip(A[..., 2, 2], -1.0, 1.0)
    sb = xp.sqrt(A[..., 0, 2] ** 2 + A[..., 1, 2] ** 2)
    tilt = xp.arctan2(sb, a22)
    gimbal = sb < 1e-6
    psi_reg = xp.arctan2(A[..., 1, 2], -A[..., 0, 2])
    rot_reg = xp.arctan2(A[..., 2, 1], A[..., 2, 0])
    # tilt ~ 0: A ~ R_z(rot + psi); tilt ~ 180: A ~ R_z(psi - rot) @ R_y(180)
    psi_gim = xp.where(a22 > 0, xp.arctan2(A[..., 0, 1], A[..., 0, 0]),
                       xp.arctan2(A[..., 0, 1], -A[..., 0, 0]))
    rot = xp.where(gimbal, 0.0, rot_reg)
    psi = xp.where(gimbal, psi_gim, psi_reg)
    return xp.rad2deg(rot), xp.rad2deg(tilt), xp.rad2deg(psi)


def euler_to_direction(rot, tilt):
    """Viewing direction ``(x, y, z)`` (last axis) of ``(rot, tilt)`` in degrees: row 3 of :func:`euler_to_matrix`.

    >>> euler_to_direction(0.0, 90.0).round(6).tolist()
    [1.0, 0.0, 0.0]
    """
    xp = get_xp(rot, tilt)
    a, b = (xp.deg2rad(xp.asarray(v, dtype=xp.float64)) for v in (rot, tilt))
    a, b = xp.broadcast_arrays(a, b)
    return xp.stack([xp.cos(a) * xp.sin(b), xp.sin(a) * xp.sin(b), xp.cos(b)], axis=-1)


def _eulers(e):
    xp = get_xp(e)
    e = xp.asarray(e, dtype=xp.float64)
    if e.shape[-1] != 3:
        raise CryolabInputError(f"Euler angles need a last axis of length 3 (rot, tilt, psi), got shape {e.shape}")
    return e


def random_rotations(n: int, seed_or_rng=None):
    """``n`` orientations drawn uniformly (Haar measure) on SO(3): Euler angles ``[n, 3]`` in degrees.

    Uniform unit quaternions (normalised 4D Gaussian vectors) are turned into
    matrices and read back as RELION angles: tilt in [0, 180], rot and psi in
    (-180, 180]. ``seed_or_rng`` is an int seed, a ``numpy.random.Generator`` or None.

    >>> random_rotations(4, 0).shape
    (4, 3)
    """
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    q = rng.standard_normal((int(n), 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    R = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    return np.stack(matrix_to_euler(R), axis=-1)
