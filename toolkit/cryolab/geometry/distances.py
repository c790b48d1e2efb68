"""Distances between orientations and local-search neighbourhoods.

Angles in degrees; Euler angles ``[..., 3]`` broadcast. With ``sym`` (a group name or
operators ``[S, 3, 3]``) distances are minimised over the right action ``A -> A @ S``.
Functions follow the array module of their inputs (NumPy or CuPy).
"""
from __future__ import annotations

from ..backend import get_xp
from ..errors import CryolabInputError
from .euler import _eulers, euler_to_direction, euler_to_matrix, matrix_to_euler
from .symmetry import _ops_on

__all__ = ["angular_distance", "direction_distance", "local_sampling", "mean_orientation",
           "nearest_rotation", "orientation_prior_weights", "pairwise_angles_deg"]


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


def mean_orientation(weights, eulers):
    """Weighted mean orientations: for weights ``[B, J]`` (>= 0, each row's sum > 0) over Euler
    angles ``[J, 3]`` (deg), per row the rotation ``R`` nearest to ``M = sum_j w_j A_j`` (the chordal
    L2 mean, minimising ``sum_j w_j ||R - A_j||_F^2``): ``R = U diag(1, 1, det(U V^T)) V^T`` from
    ``M = U S V^T``. Returns Euler angles ``[B, 3]`` (deg). Meant for orientations within a few
    tens of degrees of each other (a local search's posterior); symmetry is not taken into account.

    >>> mean_orientation([[1.0, 1.0]], [[0.0, 10.0, 0.0], [0.0, 30.0, 0.0]]).round(6).tolist()
    [[0.0, 20.0, 0.0]]
    """
    e = _eulers(eulers)
    xp = get_xp(e)
    w = xp.asarray(weights, dtype=xp.float64)
    A = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    return xp.stack(matrix_to_euler(nearest_rotation(w @ A.reshape(-1, 9))), axis=-1)


def pairwise_angles_deg(A, B):
    """Angles (deg) of the rotations ``A_i^T B_j`` ``[n, m]`` between every rotation matrix of ``A``
    ``[n, 3, 3]`` and every one of ``B`` ``[m, 3, 3]`` (or ``[n, 9]``, ``[m, 9]``), from one
    product: ``trace(A_i^T B_j) = 1 + 2 cos(theta)``. No symmetry; for the small angles of local
    searches (near 0 the arc cosine resolves ~1e-6 deg in double precision)."""
    xp = get_xp(A, B)
    cos = xp.clip((A.reshape(-1, 9) @ B.reshape(-1, 9).T - 1.0) / 2.0, -1.0, 1.0)
    return xp.degrees(xp.arccos(cos))


def nearest_rotation(M):
    """The rotations ``[B, 3, 3]`` nearest (Frobenius) to matrices ``M [B, 3, 3]`` (or ``[B, 9]``):
    ``U diag(1, 1, det(U V^T)) V^T`` from ``M = U S V^T``."""
    xp = get_xp(M)
    u, _, vt = xp.linalg.svd(M.reshape(-1, 3, 3))
    u[:, :, 2] *= xp.sign(xp.linalg.det(u @ vt))[:, None]
    return u @ vt


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
