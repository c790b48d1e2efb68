"""Turning a batch of particle images into the engine's Fourier representation."""
from __future__ import annotations

from ..backend import get_xp
from ..ctf import CTFParams, ctf_2d
from ..fourier import rfft2c
from ..projection import shift_ramps
from .estep import FourierPixels, gather

__all__ = ["prepare_batch"]


def prepare_batch(images, pix: FourierPixels, mask=None, offsets_px=None, ctf: CTFParams | None = None,
                  pixel_size_A: float = 1.0):
    """``(X [B, M], C [B, M] or None)``: masked images' transforms at the likelihood pixels.

    Each image is multiplied by ``mask`` (real space), Fourier transformed, and shifted
    by its current offset ``offsets_px [B, 2]`` (RELION origin in pixels: shifting by
    ``+origin`` centres the particle).
    """
    xp = get_xp(images)
    x = images if mask is None else images * mask
    X = gather(rfft2c(x.astype(xp.float32, copy=False)), pix).astype(xp.complex64)
    if offsets_px is not None:
        X *= shift_ramps(pix.n, offsets_px, xp, kx=pix.kx, ky=pix.ky)
    C = None
    if ctf is not None:
        C = gather(ctf_2d(ctf, pix.n, pixel_size_A, xp=xp), pix)
    return X, C
