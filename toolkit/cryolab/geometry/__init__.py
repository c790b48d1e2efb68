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

from .distances import (angular_distance, direction_distance, local_sampling, mean_orientation,
                        nearest_rotation, orientation_prior_weights, pairwise_angles_deg)
from .euler import euler_to_direction, euler_to_matrix, matrix_to_euler, random_rotations
from .healpix import healpix_directions, healpix_pix2ang, healpix_sampling, healpix_step_deg, psi_angles
from .symmetry import is_c1, symmetry_operators

__all__ = [
    "euler_to_matrix", "matrix_to_euler", "euler_to_direction", "random_rotations",
    "symmetry_operators", "is_c1", "angular_distance", "direction_distance", "local_sampling",
    "mean_orientation", "nearest_rotation", "pairwise_angles_deg", "orientation_prior_weights",
    "healpix_step_deg", "healpix_pix2ang", "healpix_directions", "healpix_sampling", "psi_angles",
]
