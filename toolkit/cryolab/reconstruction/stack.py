"""Reconstruction of a map from a whole particle stack, streamed in batches.

Angles, origins (``_rlnOriginX/YAngst``, the particle moved by ``+origin``) and CTFs come
from the stack's STAR table; see :func:`reconstruct_stack`.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp, to_device
from ..geometry import euler_to_matrix
from .backprojectors import BackProjector

__all__ = ["reconstruct_stack"]


def _background_sigma2(images):
    """White-noise power per Fourier pixel of ``rfft2c``: ``N^2`` times the variance of the
    pixels outside the inscribed circle."""
    xp = get_xp(images)
    n = images.shape[-1]
    g = xp.arange(n) - n // 2
    outside = (g[:, None] ** 2 + g[None, :] ** 2) > (n / 2) ** 2
    return float(images[:, outside].astype(xp.float64).var()) * n * n


def reconstruct_stack(stack, ctf: bool = True, sym: str = "C1", batch_size: int = 256,
                      method: str = "plain", tau2=None, pad: float = 2, xp=np,
                      sigma2_noise=None, **reconstruct_kwargs):
    """A map ``[N, N, N]`` (float32) from a :class:`cryolab.io.ParticleStack` (as ``relion_reconstruct``).

    Streams the stack ``batch_size`` images at a time (memory: the accumulators and one batch);
    each particle's ``_rlnAngleRot/Tilt/Psi`` and ``_rlnOriginX/YAngst`` (the particle is
    moved by ``+origin`` to the centre) place it; ``ctf=True`` multiplies by the CTF from the
    STAR file (``data = sum C X``, ``weight = sum C^2``). ``method="wiener"`` needs signal
    and noise powers: ``tau2`` as in :meth:`BackProjector.reconstruct` (estimated when None)
    and ``sigma2_noise`` (per Fourier pixel; when None, estimated once from the first batch
    by :func:`_background_sigma2`). Further keywords go to :meth:`BackProjector.reconstruct`.
    """
    eulers = stack.eulers()
    if eulers is None:
        raise ValueError("reconstruct_stack: the particle table has no angles")
    px = stack.pixel_size_A
    if px is None:
        raise ValueError("reconstruct_stack: the pixel size is unknown")
    bp = BackProjector(stack.box_size, pad=pad, xp=xp)
    for rows, images in stack.iter_batches(batch_size):
        images = to_device(images, xp)
        if method != "plain" and sigma2_noise is None:
            sigma2_noise = _background_sigma2(images)
        rot = euler_to_matrix(*(to_device(eulers[rows, i], xp) for i in range(3)))
        bp.insert_images(images, rot, ctf=stack.ctf(rows) if ctf else None,
                         shifts_px=to_device(stack.origins_A(rows) / px, xp), pixel_size_A=px,
                         sigma2_noise=None if method == "plain" else sigma2_noise)
    return bp.reconstruct(method=method, tau2=tau2, sym=sym, **reconstruct_kwargs)
