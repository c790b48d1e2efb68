"""Direct Fourier reconstruction (back-projection) in RELION's conventions.

* :class:`BackProjector` - 3D maps from 2D slices (particle images or the M-step's
  pre-summed ``sum w C X`` / ``sum w C^2`` slices);
* :class:`BackProjector2D` - 2D class averages from in-plane rotated slices;
* :func:`reconstruct_stack` - a map from a :class:`cryolab.io.ParticleStack`, streamed in batches.

Conventions (``docs/conventions.md``): volumes ``[z, y, x]``, images ``[y, x]``, centre pixel
``N // 2``; slices are centred half transforms (:func:`cryolab.fourier.rfft2c`, unnormalised).
Image frequency ``k = (kx, ky)`` of a particle with rotation ``A``
(:func:`cryolab.geometry.euler_to_matrix`) lies at ``A.T @ (kx, ky, 0)`` in the map's transform;
in 2D, ``A`` is the 2x2 matrix of ``euler_to_matrix(0, 0, psi)``. Insertion is the adjoint of
linear interpolation at those points: each slice pixel within ``|k| <= N // 2`` (except the
redundant ``kx = 0, ky < 0`` half column) is spread with trilinear (bilinear) weights onto the
padded grid (``M = pad * N`` rounded up to even) at ``(M / N) * A.T k``; a point with
``x < 0`` goes to its Hermitian mate ``-p`` with the conjugate value.

Accumulators ``data = sum C X`` (complex) and ``weight = sum C^2`` (real) are centred half grids
``[M, M, M//2+1]`` (``[M, M//2+1]`` in 2D), float64 by default. :meth:`reconstruct` sums the
Friedel mates on the ``kx = 0`` plane, symmetrises, divides (plain or Wiener/MAP), inverse
transforms the padded grid, crops the central ``N`` box and corrects for the interpolation
kernel (divides by ``sinc^2(d / M)`` per axis, the transform of the linear kernel).
"""
from __future__ import annotations

from .backprojectors import BackProjector, BackProjector2D
from .stack import reconstruct_stack
from .wiener import tau2_from_fsc

__all__ = ["BackProjector", "BackProjector2D", "reconstruct_stack", "tau2_from_fsc"]
