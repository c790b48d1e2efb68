"""Soft masks: spheres, circles and thresholded solvent masks with raised-cosine edges.

Masks are float32 on the array module of their input (``xp`` for the geometric ones),
centred on pixel ``N // 2``, 1 inside and falling to 0 as ``0.5 + 0.5 cos(pi d / edge)``
(RELION's ``raisedCosineMask`` and ``relion_mask_create``).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..errors import CryolabInputError

__all__ = ["soft_sphere_mask", "soft_circle_mask", "auto_mask"]


def _raised_cosine(dist, edge_px, xp):
    """1 where ``dist <= 0``, ``0.5 + 0.5 cos(pi dist / edge)`` for ``0 < dist < edge``, else 0."""
    if edge_px <= 0:
        return (dist <= 0).astype(xp.float32)
    t = xp.clip(dist / edge_px, 0.0, 1.0)
    return (0.5 + 0.5 * xp.cos(np.pi * t)).astype(xp.float32)


def _soft_ball(n, ndim, radius_px, edge_px, xp):
    c = xp.arange(n, dtype=xp.float64) - n // 2
    axes = xp.meshgrid(*([c] * ndim), indexing="ij")
    r = xp.sqrt(sum(a ** 2 for a in axes))
    return _raised_cosine(r - radius_px, edge_px, xp)


def soft_sphere_mask(n: int, radius_px: float, edge_px: float = 6.0, xp=np):
    """Spherical mask ``[N, N, N]`` (float32) centred on voxel ``N//2``: 1 inside ``radius_px``,
    raised-cosine fall-off to 0 over ``edge_px`` (RELION's ``raisedCosineMask``).

    >>> m = soft_sphere_mask(16, 4, 2)
    >>> float(m[8, 8, 8]), float(m[8, 8, 13]), float(m[8, 8, 15])
    (1.0, 0.5, 0.0)
    """
    return _soft_ball(n, 3, radius_px, edge_px, xp)


def soft_circle_mask(n: int, radius_px: float, edge_px: float = 6.0, xp=np):
    """Circular mask ``[N, N]``: the 2D version of :func:`soft_sphere_mask`."""
    return _soft_ball(n, 2, radius_px, edge_px, xp)


def _ndimage(xp):
    if xp is np:
        import scipy.ndimage
        return scipy.ndimage
    import cupyx.scipy.ndimage
    return cupyx.scipy.ndimage


def auto_mask(volume, threshold: float, extend_px: float = 3.0, soft_edge_px: float = 6.0):
    """Solvent mask as ``relion_mask_create --ini_threshold --extend_inimask --width_soft_edge``.

    Binarise at ``volume >= threshold``; add voxels closer than ``extend_px`` to the
    binary mask (a negative value shrinks it instead); then voxels at distance
    ``d < soft_edge_px`` outside get ``0.5 + 0.5 cos(pi d / soft_edge_px)``. Returns float32.
    """
    xp = get_xp(volume)
    edt = _ndimage(xp).distance_transform_edt
    binary = volume >= threshold
    if not bool(binary.any()):
        raise CryolabInputError(f"auto_mask: no voxel reaches the threshold {threshold}")
    if extend_px > 0:
        binary = binary | (edt(~binary) < extend_px)
    elif extend_px < 0:
        binary = binary & ~(edt(binary) < -extend_px)
    return _raised_cosine(edt(~binary), soft_edge_px, xp)
