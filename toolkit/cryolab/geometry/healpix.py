"""HEALPix sampling grids as RELION builds them.

Pixel centres in the RING or NESTED scheme (NESTED is RELION's order), viewing directions
``(rot, tilt)`` in degrees restricted to RELION's asymmetric unit of a point group,
in-plane ``psi`` angles and the angular step of an order (``360 / (6 * 2**order)`` degrees).
Everything here is NumPy (host) arrays.
"""
from __future__ import annotations

import numpy as np

from ..errors import CryolabInputError
from .euler import euler_to_direction
from .symmetry import _PHI, _icos_setting, _parse_sym, symmetry_operators

__all__ = ["healpix_step_deg", "healpix_pix2ang", "healpix_directions", "healpix_sampling", "psi_angles"]


# Pixel centres of the HEALPix grid (Gorski et al. 2005, ApJ 622:759): 12 nside^2
# equal-area pixels on 4 nside - 1 rings of constant z = cos(theta). Rings
# i = 1 .. nside-1 (north cap) hold 4i pixels at z = 1 - i^2 / (3 nside^2); rings
# nside .. 3 nside (equatorial belt) hold 4 nside pixels at z = 4/3 - 2i / (3 nside),
# every other ring shifted by half a pixel in phi; the south cap mirrors the north.

# The 12 base faces: ring index (in units of nside) of a face's southern corner, and the
# longitude of the face centre in units of pi/4 (north faces 0-3, equator 4-7, south 8-11).
_FACE_RING = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4])
_FACE_PHI = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7])


def healpix_step_deg(order: int) -> float:
    """RELION's angular sampling of HEALPix order ``order``: ``360 / (6 * 2**order)`` degrees."""
    return 360.0 / (6 * 2 ** int(order))


def _ring_z_phi(nside, p):
    """(z, phi) of RING-scheme pixels ``p``."""
    npix, ncap = 12 * nside * nside, 2 * nside * (nside - 1)
    z, phi = np.empty(p.shape), np.empty(p.shape)
    for south in (False, True):
        sel = (p >= npix - ncap) if south else (p < ncap)
        q = npix - 1 - p[sel] if south else p[sel]         # index counted from the nearer pole
        i = np.floor((1 + np.sqrt(1 + 2 * q)) / 2).astype(np.int64)  # ring i starts at 2 i (i - 1)
        j = q - 2 * i * (i - 1)
        if south:
            j = 4 * i - 1 - j                              # rings run in increasing phi
        z[sel] = (1 - i ** 2 / (3.0 * nside ** 2)) * (-1 if south else 1)
        phi[sel] = (j + 0.5) * np.pi / (2 * i)
    sel = (p >= ncap) & (p < npix - ncap)
    q = p[sel] - ncap
    i, j = q // (4 * nside) + nside, q % (4 * nside)
    shift = ((i - nside) % 2 == 0) * 0.5                   # ring nside starts half a pixel in
    z[sel] = 4.0 / 3.0 - 2.0 * i / (3.0 * nside)
    phi[sel] = (j + shift) * np.pi / (2 * nside)
    return z, phi


def _nest_z_phi(nside, p):
    """(z, phi) of NESTED-scheme pixels ``p``: face number, then bit-interleaved (x, y) inside the face."""
    face, f = p // (nside * nside), p % (nside * nside)
    ix, iy = np.zeros_like(f), np.zeros_like(f)
    for b in range(int(nside).bit_length()):
        ix |= ((f >> (2 * b)) & 1) << b
        iy |= ((f >> (2 * b + 1)) & 1) << b
    jr = _FACE_RING[face] * nside - ix - iy - 1             # ring number, 1 .. 4 nside - 1
    nr = np.minimum(np.minimum(jr, 4 * nside - jr), nside)  # pixels per ring / 4
    z = np.where(jr < nside, 1 - jr ** 2 / (3.0 * nside ** 2),
                 np.where(jr > 3 * nside, -1 + (4 * nside - jr) ** 2 / (3.0 * nside ** 2),
                          (2 * nside - jr) * 2.0 / (3.0 * nside)))
    shift = np.where(nr == nside, (jr - nside) & 1, 0)
    jp = (_FACE_PHI[face] * nr + ix - iy + 1 + shift) // 2
    jp = (jp - 1) % (4 * nr) + 1
    return z, (jp - (shift + 1) * 0.5) * np.pi / (2 * nr)


def healpix_pix2ang(nside: int, ipix, nest: bool = False):
    """HEALPix pixel centres: ``(theta, phi)`` in radians (colatitude, longitude in [0, 2 pi)).

    ``nest=False`` is the RING scheme, ``nest=True`` the NESTED scheme (RELION's).

    >>> theta, phi = healpix_pix2ang(1, [0, 4])
    >>> np.degrees(phi).round(3).tolist()
    [45.0, 0.0]
    """
    p = np.asarray(ipix, dtype=np.int64)
    if nside < 1 or (nest and nside & (nside - 1)):
        raise CryolabInputError(f"healpix_pix2ang: bad nside {nside} (a power of 2 for NESTED)")
    if p.size and (p.min() < 0 or p.max() >= 12 * nside * nside):
        raise CryolabInputError(f"healpix_pix2ang: pixel index out of range for nside {nside}")
    z, phi = (_nest_z_phi if nest else _ring_z_phi)(nside, p)
    return np.arccos(np.clip(z, -1.0, 1.0)), phi


def _max_pixrad(nside: int) -> float:
    """HEALPix's upper bound (radians) on the centre-to-corner radius of a pixel, as in Healpix_Base.

    The angle between (z = 2/3, phi = pi / (4 nside)) and (z = 1 - (1 - 1/nside)^2 / 3, phi = 0).
    """
    za, zb = 2.0 / 3.0, 1.0 - (1.0 - 1.0 / nside) ** 2 / 3.0
    cosang = za * zb + np.sqrt((1 - za * za) * (1 - zb * zb)) * np.cos(np.pi / (4 * nside))
    return float(np.arccos(np.clip(cosang, -1.0, 1.0)))


def _asu_triangle(group):
    """Vertices (axes) of RELION's asymmetric-unit triangle for T, O and I settings."""
    if group == "T":   # 3-fold z, a tetrahedron vertex at rot 90 and a face centre at rot 150
        return np.array([[0.0, 0.0, 1.0], [0.0, 2 * np.sqrt(2) / 3, -1 / 3],
                         [-np.sqrt(6) / 3, np.sqrt(2) / 3, 1 / 3]])
    if group == "O":   # 4-fold z and the 3-folds (1, 1, 1), (-1, 1, 1)
        return np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]) / [[1.0], [3 ** 0.5], [3 ** 0.5]]
    # two 5-folds and a 3-fold of the I2 setting; RELION picks another such triangle for I4
    if group == "I4":
        v = np.array([[-_PHI, -1.0, 0.0], [-_PHI, 1.0, 0.0], [-_PHI, 0.0, -1.0 / _PHI]])
    else:
        v = np.array([[1.0, 0.0, _PHI], [-1.0, 0.0, _PHI], [0.0, 1.0 / _PHI, _PHI]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v @ _icos_setting(group).T


def _in_asymmetric_unit(rot, tilt, dirs, sym):
    """RELION's geometric asymmetric unit (boundaries included; seams resolved later)."""
    group, n = _parse_sym(sym)
    eps = 1e-9
    if group == "C":
        return (rot >= -180.0 / n - eps) & (rot <= 180.0 / n + eps)
    if group == "D":
        upper = tilt <= 90.0 + eps
        if n == 1:
            return upper
        return upper & (rot >= 90.0 - 180.0 / n - eps) & (rot <= 90.0 + 180.0 / n + eps)
    a, b, c = _asu_triangle(group)
    keep = np.ones(len(dirs), dtype=bool)
    for p, q, r in ((a, b, c), (b, c, a), (c, a, b)):
        normal = np.cross(p, q)
        normal *= np.sign(normal @ r)                      # points into the triangle
        keep &= dirs @ normal >= 0.0                       # exact sign test, as RELION's
    return keep


def _drop_symmetry_mates(dirs, ops, max_ang_rad):
    """Keep a direction unless a symmetry image of it lies within ``max_ang_rad`` of one kept before."""
    images = np.einsum("sij,nj->nsi", ops, dirs)           # [N, S, 3]
    cos_max = np.cos(max_ang_rad)
    kept = np.empty((len(dirs), 3))
    keep, nk = np.zeros(len(dirs), dtype=bool), 0
    for i in range(len(dirs)):
        if nk == 0 or (kept[:nk] @ images[i].T).max() <= cos_max:
            kept[nk], keep[i] = dirs[i], True
            nk += 1
    return keep


def healpix_directions(order: int, sym=None, nest: bool = True):
    """Viewing directions of HEALPix order ``order`` (nside ``2**order``): ``(rot_deg, tilt_deg)``.

    As RELION's sampling: ``rot = phi`` wrapped into (-180, 180], ``tilt = theta``,
    pixels in NESTED order (``nest=False``: RING order). With ``sym`` only
    directions in RELION's asymmetric unit are kept (its geometric unit, then
    directions whose symmetry mate lies within half the HEALPix pixel radius of
    an already kept one are dropped, when fewer than 4000 remain). The result
    equals RELION 3.1's list, in order; for I at orders 0-1 it is empty.

    >>> rot, tilt = healpix_directions(0)
    >>> len(rot)
    12
    """
    nside = 2 ** int(order)
    theta, phi = healpix_pix2ang(nside, np.arange(12 * nside * nside), nest=nest)
    rot, tilt = np.degrees(phi), np.degrees(theta)
    rot = np.where(rot > 180.0, rot - 360.0, rot)
    if sym is None:
        return rot, tilt
    dirs = euler_to_direction(rot, tilt)
    keep = np.nonzero(_in_asymmetric_unit(rot, tilt, dirs, sym))[0]
    if len(keep) < 4000:
        keep = keep[_drop_symmetry_mates(dirs[keep], symmetry_operators(sym), 0.5 * _max_pixrad(nside))]
    return rot[keep], tilt[keep]


def psi_angles(psi_step_deg: float):
    """In-plane angles ``0, step, ...`` (deg) with ``ceil(360 / step)`` equal steps over [0, 360)."""
    n_psi = int(np.ceil(360.0 / psi_step_deg - 1e-9))
    return np.arange(n_psi) * (360.0 / n_psi)


def healpix_sampling(order: int, psi_step_deg=None, sym=None, nest: bool = True):
    """All orientations of a RELION 3D sampling grid: Euler angles ``[n_dir * n_psi, 3]`` in degrees.

    Directions from :func:`healpix_directions`, in-plane angles from
    :func:`psi_angles` (default step: :func:`healpix_step_deg`); row
    ``idir * n_psi + ipsi`` (direction-major, as RELION orders them).

    >>> healpix_sampling(0).shape
    (72, 3)
    """
    rot, tilt = healpix_directions(order, sym, nest)
    psi = psi_angles(healpix_step_deg(order) if psi_step_deg is None else psi_step_deg)
    return np.stack([np.repeat(rot, len(psi)), np.repeat(tilt, len(psi)), np.tile(psi, len(rot))], -1)
