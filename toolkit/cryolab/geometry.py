"""Orientations in RELION's convention.

Euler angles are ZYZ in degrees: ``rot`` (phi, ``_rlnAngleRot``), ``tilt``
(theta, ``_rlnAngleTilt``), ``psi`` (``_rlnAnglePsi``). The matrix ``A`` of
:func:`euler_to_matrix` maps a volume's frame to the image frame: the image's
frequency ``(kx, ky)`` samples the volume's Fourier transform at
``A.T @ (kx, ky, 0)``, and the projection is
``P(x, y) = sum_z V(A.T @ (x, y, z))`` with vectors ordered ``(x, y, z)``.

The viewing direction of ``(rot, tilt)`` is the third row of ``A``:
``(cos rot sin tilt, sin rot sin tilt, cos tilt)``. A map with point-group
symmetry ``V(S x) = V(x)`` gives the same projections for ``A`` and ``A @ S``;
distances between orientations are minimised over that right action.

Also here: random rotations, HEALPix sampling grids as RELION builds them
(NESTED pixel order, directions restricted to RELION's asymmetric unit),
point-group operators, angular distances and local-search neighbourhoods.
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp, to_device
from .errors import CryolabInputError

__all__ = [
    "euler_to_matrix", "matrix_to_euler", "euler_to_direction", "random_rotations",
    "symmetry_operators", "angular_distance", "direction_distance", "local_sampling",
    "orientation_prior_weights", "healpix_step_deg", "healpix_pix2ang",
    "healpix_directions", "healpix_sampling", "psi_angles",
]


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


# ---------------------------------------------------------------- point groups

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


# ------------------------------------------------------------------ distances

def _rotation_angle_deg(M):
    """Rotation angle (deg) of rotation matrices ``M`` [..., 3, 3], accurate near 0 and 180."""
    xp = get_xp(M)
    tr = M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2]
    two_sin = xp.sqrt((M[..., 2, 1] - M[..., 1, 2]) ** 2 + (M[..., 0, 2] - M[..., 2, 0]) ** 2
                      + (M[..., 1, 0] - M[..., 0, 1]) ** 2)
    return xp.rad2deg(xp.arctan2(two_sin, tr - 1.0))


def angular_distance(e1, e2, sym=None):
    """Geodesic distance in degrees between orientations (Euler angles ``[..., 3]``, broadcast).

    The angle of the rotation ``A1 @ A2.T``, in [0, 180]. With ``sym`` (a group
    name or operators ``[S, 3, 3]``) the minimum over ``A2 @ S`` for all operators.

    >>> round(float(angular_distance([10.0, 0.0, 0.0], [0.0, 0.0, 25.0])), 6)
    15.0
    """
    e1, e2 = _eulers(e1), _eulers(e2)
    xp = get_xp(e1, e2)
    A1 = euler_to_matrix(e1[..., 0], e1[..., 1], e1[..., 2])
    A2 = euler_to_matrix(e2[..., 0], e2[..., 1], e2[..., 2])
    M = xp.matmul(xp.swapaxes(A2, -1, -2), A1)          # angle(A1, A2 S) = angle(S^T M)
    if sym is not None:
        ops = _ops_on(sym, xp)
        best = xp.argmax(xp.einsum("...ij,sij->...s", M, ops), axis=-1)  # largest trace
        M = xp.matmul(xp.swapaxes(ops[best], -1, -2), M)
    return _rotation_angle_deg(M)


def direction_distance(e1, e2, sym=None):
    """Angle in degrees between the viewing directions of ``e1`` and ``e2`` (``[..., >=2]``: rot, tilt; psi ignored).

    With ``sym`` the minimum over the symmetry-related directions (those of ``A2 @ S``).

    >>> float(direction_distance([0.0, 90.0, 0.0], [90.0, 90.0, 30.0]))
    90.0
    """
    xp = get_xp(e1, e2)
    e1, e2 = xp.asarray(e1, dtype=xp.float64), xp.asarray(e2, dtype=xp.float64)
    d1 = euler_to_direction(e1[..., 0], e1[..., 1])
    d2 = euler_to_direction(e2[..., 0], e2[..., 1])
    d1, d2 = xp.broadcast_arrays(d1, d2)
    if sym is not None:
        ops = _ops_on(sym, xp)
        imgs = xp.einsum("sji,...j->...si", ops, d2)     # direction of A2 S is S^T d2
        best = xp.argmax(xp.einsum("...i,...si->...s", d1, imgs), axis=-1)
        d2 = xp.take_along_axis(imgs, best[..., None, None], axis=-2)[..., 0, :]
    cross = xp.linalg.norm(xp.cross(d1, d2), axis=-1)
    return xp.rad2deg(xp.arctan2(cross, xp.sum(d1 * d2, axis=-1)))


def local_sampling(prior_euler, eulers_grid, max_angle_deg: float, sym=None):
    """Indices of the grid orientations ``[M, 3]`` within ``max_angle_deg`` (geodesic, see
    :func:`angular_distance`) of ``prior_euler`` ``(3,)``, in grid order."""
    grid = _eulers(eulers_grid)
    xp = get_xp(grid)
    prior = xp.asarray(prior_euler, dtype=xp.float64).reshape(1, 3)
    return xp.nonzero(angular_distance(prior, grid, sym) <= max_angle_deg)[0]


def orientation_prior_weights(prior_euler, eulers_grid, sigma_deg: float, sigma_psi_deg=None,
                              sym=None, cutoff_sigmas: float = 3.0, mode: str = "relion"):
    """Gaussian prior weights ``[M]`` (sum 1) of grid orientations around ``prior_euler``.

    ``mode="relion"`` (RELION's local searches): ``exp(-d_dir^2 / 2 sigma^2) *
    exp(-d_psi^2 / 2 sigma_psi^2)`` with ``d_dir`` the viewing-direction angle
    (minimised over ``sym``) and ``d_psi`` the wrapped psi difference;
    ``sigma_psi_deg`` defaults to ``sigma_deg``. ``mode="geodesic"``:
    ``exp(-d^2 / 2 sigma^2)`` on :func:`angular_distance`. Weights beyond
    ``cutoff_sigmas`` sigma are 0; if none is left, the nearest orientation gets 1.
    """
    grid = _eulers(eulers_grid)
    xp = get_xp(grid)
    prior = xp.asarray(prior_euler, dtype=xp.float64).reshape(1, 3)
    if mode == "geodesic":
        d = angular_distance(prior, grid, sym)
        logw, inside = -0.5 * (d / sigma_deg) ** 2, d < cutoff_sigmas * sigma_deg
    elif mode == "relion":
        s_psi = sigma_deg if sigma_psi_deg is None else sigma_psi_deg
        d = direction_distance(prior, grid, sym)
        dpsi = xp.abs((grid[:, 2] - prior[:, 2] + 180.0) % 360.0 - 180.0)
        logw = -0.5 * (d / sigma_deg) ** 2 - 0.5 * (dpsi / s_psi) ** 2
        inside = (d < cutoff_sigmas * sigma_deg) & (dpsi < cutoff_sigmas * s_psi)
        d = d / sigma_deg + dpsi / s_psi
    else:
        raise CryolabInputError(f"orientation_prior_weights: unknown mode {mode!r} (use 'relion' or 'geodesic')")
    w = xp.where(inside, xp.exp(logw), 0.0)
    if not bool(inside.any()):
        w = (xp.arange(w.shape[0]) == xp.argmin(d)).astype(xp.float64)
    return w / w.sum()


# -------------------------------------------------------------------- HEALPix
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
