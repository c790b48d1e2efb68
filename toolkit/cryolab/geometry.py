"""Orientations in RELION's convention.

Euler angles are ZYZ in degrees: ``rot`` (phi, ``_rlnAngleRot``), ``tilt``
(theta, ``_rlnAngleTilt``), ``psi`` (``_rlnAnglePsi``). The matrix ``A`` of
:func:`euler_to_matrix` maps a volume's frame to the image frame: the image's
frequency ``(kx, ky)`` samples the volume's Fourier transform at
``A.T @ (kx, ky, 0)``, and the projection is
``P(x, y) = sum_z V(A.T @ (x, y, z))`` with vectors ordered ``(x, y, z)``.
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp

__all__ = ["euler_to_matrix", "matrix_to_euler"]


def euler_to_matrix(rot, tilt, psi):
    """RELION ``Euler_angles2matrix``: ZYZ angles in degrees -> rotation matrices ``[..., 3, 3]``.

    Arrays broadcast together. ``A = R_z(psi) @ R_y(tilt) @ R_z(rot)`` in RELION's sign convention.

    >>> euler_to_matrix(0.0, 0.0, 0.0).round(6).tolist()
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
