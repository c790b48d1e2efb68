"""The forward model of a particle image and its residual: what a map looks like at a pose.

RELION's image model (without noise) for particle ``i`` of map ``V`` is ``scale * C_i * S_{-o_i}
P_{R_i}(V M)``: project the map (optionally multiplied by a real-space mask ``M``) along the
particle's rotation ``R_i`` (ZYZ Euler angles rot, tilt, psi in degrees), shift by minus its
RELION origin ``o_i`` (pixels), multiply by its CTF ``C_i`` in Fourier space, and scale to the
data's grey level. The residual ``X_i - model_i`` is what partial signal subtraction keeps (with
``M`` the region to remove) and what the noise spectrum is estimated from.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..ctf import CTFParams
from ..io import ctf_from_table
from ..projection import FourierProjector

__all__ = ["projector_of", "particle_images", "residual_images", "class_log_likelihoods", "bayes_optimal_accuracy",
           "simulation_ceiling"]


def projector_of(volume, mask=None, pad: float = 2) -> FourierProjector:
    """A :class:`cryolab.projection.FourierProjector` of ``volume [N, N, N]`` times ``mask`` (real
    space, same shape; None: no mask). Build it once and pass it on for many batches."""
    if mask is not None:
        if np.shape(mask) != np.shape(volume):
            raise ValueError(f"mask shape {np.shape(mask)} differs from the map's {np.shape(volume)}")
        volume = volume * get_xp(volume).asarray(mask, dtype=volume.dtype)
    return FourierProjector(volume, pad=pad)


def particle_images(projector, eulers_deg, origins_px=None, ctf: CTFParams | None = None,
                    pixel_size_A: float | None = None, scale=1.0, max_shell: float | None = None):
    """Noise-free particle images ``[B, N, N]`` (float32): ``scale * C * shift(P(V))``.

    ``projector``: from :func:`projector_of`; ``eulers_deg [B, 3]`` (rot, tilt, psi);
    ``origins_px [B, 2]`` RELION origins in pixels (the particle's centre sits at ``-origin``
    from the box centre); ``ctf`` one :class:`~cryolab.ctf.CTFParams` per image (needs
    ``pixel_size_A``); ``scale`` a number or one per image ``[B]``; ``max_shell``: leave out
    frequencies beyond this radius (Fourier pixels; None: up to Nyquist).

    >>> import numpy as np
    >>> vol = np.zeros((16, 16, 16), np.float32); vol[8, 8, 8] = 1
    >>> img = particle_images(projector_of(vol), [[0, 0, 0]], origins_px=[[-2, 0]])
    >>> tuple(int(v) for v in np.unravel_index(np.argmax(img[0]), img[0].shape))   # (y, x): moved +2 in x
    (8, 10)
    """
    eulers = np.asarray(eulers_deg, dtype=np.float64).reshape(-1, 3)
    out = projector.project(eulers, origins_px=None if origins_px is None else np.asarray(origins_px, float),
                            ctf=ctf, pixel_size_A=pixel_size_A, max_shell=max_shell)
    xp = get_xp(out)
    s = xp.asarray(scale, dtype=xp.float32)
    return out * (s[:, None, None] if s.ndim == 1 else s)


def residual_images(images, projector, eulers_deg, origins_px=None, ctf: CTFParams | None = None,
                    pixel_size_A: float | None = None, scale=1.0, max_shell: float | None = None):
    """``images - particle_images(...)`` ``[B, N, N]``: the data minus the model at each pose
    (partial signal subtraction when ``projector`` holds the masked region to remove)."""
    model = particle_images(projector, eulers_deg, origins_px, ctf, pixel_size_A, scale, max_shell)
    xp = get_xp(model)
    return xp.asarray(images, dtype=xp.float32) - model


def class_log_likelihoods(images, maps, eulers_deg, origins_px=None, ctf: CTFParams | None = None,
                          pixel_size_A: float | None = None, *, scale=1.0, sigma_noise: float = 1.0,
                          batch_size: int = 256) -> np.ndarray:
    """``log p(X_i | class k)`` ``[B, K]`` up to a per-image constant, for known poses and white noise
    of standard deviation ``sigma_noise`` (pixel units of the images): ``-|X_i - model_ik|^2 / (2 sigma^2)``
    with ``model_ik`` = :func:`particle_images` of map ``k`` (``maps [K, N, N, N]``, or one map for
    classes that differ only in pose). ``eulers_deg``: ``[B, 3]`` (one pose per image) or
    ``[B, K, 3]`` (a pose per image and class, e.g. the K views of a 2D set at each image's psi)."""
    images = np.asarray(images, np.float32)
    eulers = np.asarray(eulers_deg, float)
    per_class = eulers.ndim == 3
    maps = np.asarray(maps, np.float32)
    K = eulers.shape[1] if per_class else len(maps)
    projectors = [projector_of(maps)] * K if maps.ndim == 3 else [projector_of(m) for m in maps]
    out = np.empty((len(images), K))
    for lo in range(0, len(images), batch_size):
        sl = slice(lo, lo + batch_size)
        sub_ctf = None if ctf is None else ctf[np.arange(len(images))[sl]]
        org = None if origins_px is None else np.asarray(origins_px)[sl]
        for k, proj in enumerate(projectors):
            e = eulers[sl, k] if per_class else eulers[sl]
            sc = scale[sl] if np.ndim(scale) else scale
            r = residual_images(images[sl], proj, e, org, sub_ctf, pixel_size_A, sc)
            out[sl, k] = -(np.asarray(r, np.float64) ** 2).sum(axis=(1, 2)) / (2 * sigma_noise ** 2)
    return out


def bayes_optimal_accuracy(images, maps, eulers_deg, truth, origins_px=None, ctf: CTFParams | None = None,
                           pixel_size_A: float | None = None, *, scale=1.0, sigma_noise: float = 1.0,
                           priors=None) -> float:
    """The accuracy of the best possible classifier on these images: true maps, true poses, known
    white noise; each particle goes to the class of highest posterior (``priors [K]``, default
    equal). The ceiling a classification of the same data can reach (up to sampling noise).
    Arguments as :func:`class_log_likelihoods`; ``truth [B]`` the 0-based true class."""
    ll = class_log_likelihoods(images, maps, eulers_deg, origins_px, ctf, pixel_size_A, scale=scale,
                               sigma_noise=sigma_noise)
    if priors is not None:
        ll = ll + np.log(np.asarray(priors, float))[None, :]
    return float(np.mean(np.argmax(ll, axis=1) == np.asarray(truth)))


def simulation_ceiling(sim, maps=None, volume=None, views=None) -> float:
    """:func:`bayes_optimal_accuracy` on a :class:`cryolab.simulate.Simulation` (true maps, poses,
    CTFs, the simulator's unit white noise; not optimal for its coloured noise): ``maps`` in ``class_index`` order for 3D states, or
    ``volume`` and its ``views`` (rot, tilt) for a 2D set of views (each image's own psi)."""
    t = sim.truth
    ctf = ctf_from_table(sim.particles.merge(sim.optics, on="rlnOpticsGroup"))
    origins = t[["origin_x_A", "origin_y_A"]].to_numpy() / sim.pixel_size_A
    if views is not None:
        v = np.asarray(views, float)
        eulers = np.stack([np.broadcast_to(v[:, 0], (len(t), len(v))), np.broadcast_to(v[:, 1], (len(t), len(v))),
                           np.repeat(t["psi_deg"].to_numpy()[:, None], len(v), axis=1)], axis=-1)
        return bayes_optimal_accuracy(sim.images, volume, eulers, t["view_index"].to_numpy(), origins, ctf,
                                      sim.pixel_size_A, scale=sim.info["signal_scale"])
    eulers = t[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    return bayes_optimal_accuracy(sim.images, np.stack(maps), eulers, t["class_index"].to_numpy(), origins, ctf,
                                  sim.pixel_size_A, scale=sim.info["signal_scale"])
