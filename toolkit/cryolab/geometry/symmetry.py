"""Point-group symmetry operators in RELION's settings (Cn, Dn, T, O, I, I1-I4).

Operators are rotation matrices ``[S, 3, 3]``, identity first; a symmetric map satisfies
``V(S x) = V(x)`` and the orientations ``A`` and ``A @ S`` give identical projections.
Functions that take ``sym`` accept a group name or an operator array.
"""
from __future__ import annotations

import numpy as np

from ..backend import to_device
from ..errors import CryolabInputError
from .euler import euler_to_matrix

__all__ = ["is_c1", "symmetry_operators"]


_PHI = (1.0 + 5.0 ** 0.5) / 2.0
#: Tilt (deg) that brings an icosahedral 5-fold axis of the I2 setting onto z: atan(1/phi).
_ICOS_5FOLD_TILT = float(np.degrees(np.arctan(1.0 / _PHI)))
#: RELION's icosahedral settings as tilts of the I2 setting (I2 = I: 2-folds on x, y, z, 5-folds in xz).
_ICOS_SETTING_TILT = {"I": 0.0, "I1": 90.0, "I2": 0.0, "I3": _ICOS_5FOLD_TILT, "I4": -_ICOS_5FOLD_TILT}


def _axis_rotation(axis, angle_deg):
    """Right-handed rotation by ``angle_deg`` about ``axis`` (Rodrigues' formula)."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    K = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    t = np.deg2rad(angle_deg)
    return np.eye(3) + np.sin(t) * K + (1.0 - np.cos(t)) * (K @ K)


def _group_closure(generators):
    """All products of the generator matrices, identity first (breadth-first)."""
    ops, frontier = [np.eye(3)], [np.eye(3)]
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                m = g @ a
                if not any(np.abs(m - o).max() < 1e-6 for o in ops):
                    ops.append(m)
                    new.append(m)
        if len(ops) > 120:
            raise RuntimeError("symmetry generators do not close into a finite point group")
        frontier = new
    out = np.stack(ops)
    out[np.abs(out) < 1e-12] = 0.0
    return out


def _parse_sym(sym: str):
    s = str(sym).strip().upper()
    if len(s) >= 2 and s[0] in "CD" and s[1:].isdigit() and int(s[1:]) >= 1:
        return s[0], int(s[1:])
    if s in ("T", "O") or s in _ICOS_SETTING_TILT:
        return s, 0
    raise CryolabInputError(f"symmetry group {sym!r} is not supported: use Cn, Dn, T, O, I or I1-I4")


def _icos_setting(name):
    return euler_to_matrix(0.0, _ICOS_SETTING_TILT[name], 0.0)


def is_c1(sym) -> bool:
    """True when ``sym`` imposes no symmetry: None or the name C1 (any case)."""
    return sym is None or str(sym).upper() == "C1"


def symmetry_operators(sym: str):
    """Rotation matrices ``[S, 3, 3]`` of a point group in RELION's setting, identity first.

    ``Cn``: n-fold about z. ``Dn``: n-fold about z and a 2-fold about x.
    ``T``: 3-fold about z and a 2-fold about ``(0, sqrt(2/3), sqrt(1/3))``.
    ``O``: 4-fold about z and a 3-fold about ``(1, 1, 1)``. ``I`` (= ``I2``): 2-folds
    on x, y, z and 5-folds in the xz plane at ``(±1, 0, phi)``; ``I1``, ``I3``, ``I4`` are
    I2 tilted about y (by the matrix ``euler_to_matrix(0, t, 0)``, t = 90, 31.72, -31.72 deg).
    Orders: n, 2n, 12, 24, 60. A symmetric map satisfies ``V(S x) = V(x)``; the
    orientations ``A`` and ``A @ S`` then give identical projections.

    >>> symmetry_operators("D2").shape
    (4, 3, 3)
    """
    group, n = _parse_sym(sym)
    z, x = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)
    if group == "C":
        gens = [_axis_rotation(z, 360.0 / n)]
    elif group == "D":
        gens = [_axis_rotation(z, 360.0 / n), _axis_rotation(x, 180.0)]
    elif group == "T":
        gens = [_axis_rotation(z, 120.0), _axis_rotation((0.0, np.sqrt(2 / 3), np.sqrt(1 / 3)), 180.0)]
    elif group == "O":
        gens = [_axis_rotation(z, 90.0), _axis_rotation((1.0, 1.0, 1.0), 120.0)]
    else:
        E = _icos_setting(group)
        gens = [E @ _axis_rotation(ax, ang) @ E.T for ax, ang in (((0.0, 0.0, 1.0), 180.0),
                                                                  ((1.0, 0.0, _PHI), 72.0))]
    return _group_closure(gens)


def _ops_on(sym, xp):
    ops = symmetry_operators(sym) if isinstance(sym, str) else np.asarray(sym, dtype=np.float64)
    return to_device(ops, xp)
