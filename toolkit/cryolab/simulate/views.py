"""Particle sets made of a few fixed 2D views, rotated in-plane by a random psi and shifted.

Views are given images (rotated with :class:`cryolab.projection.FourierRotator2D`) or
directions ``(rot, tilt)`` of a map; ``psi`` is uniform in ``[0, 360)`` degrees. These are
the test sets for 2D classification.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..backend import get_xp, to_numpy
from ..ctf import ctf_2d
from ..fourier import irfft2c
from ..geometry import random_rotations
from ..projection import FourierProjector, FourierRotator2D, phase_shift_2d
from .pipeline import _bad, _draw_ctf, _draw_labels, _draw_origins_A, _finish
from .tables import Simulation, _ctf_truth

__all__ = ["simulate_views_2d"]


def simulate_views_2d(images_or_volume, n: int, pixel_size_A: float, *, n_views: int = 8,
                      view_eulers=None, fractions=None, max_origin_A: float | None = None,
                      defocus_range_A=(10000.0, 30000.0), astigmatism_A: float = 500.0,
                      voltage_kV: float = 300.0, cs_mm: float = 2.7,
                      amplitude_contrast: float = 0.1, bfactor_A2: float = 0.0,
                      snr: float = 0.05, noise: str = "white", noise_corner_A=None,
                      particle_diameter_A=None, seed: int = 0, batch_size: int = 256,
                      keep_clean: bool = False, out_dir=None, name: str = "particles",
                      include_truth_angles: bool = False) -> Simulation:
    """Particles that are a few fixed views, each rotated in-plane by a random psi and shifted.

    ``images_or_volume``: the views ``[K, N, N]`` (rotated with ``FourierRotator2D``; give a
    list of ``[N, N]`` images when ``K == N``), or a cubic map ``[N, N, N]`` whose views are ``view_eulers`` ``[K, 2]`` (rot, tilt; default ``n_views``
    random directions from ``seed``), projected at ``(rot, tilt, psi)``, which is the view
    ``(rot, tilt, 0)`` rotated in-plane by psi (RELION's psi). Psi is uniform in ``[0, 360)``.
    ``truth`` has ``view_index`` (0-based), ``psi_deg``, the origins and defocus (and the
    view's ``rot_deg``/``tilt_deg`` for a map). Other arguments as :func:`simulate_particles`.

    >>> views = np.zeros((2, 16, 16), np.float32); views[:, 6:10, 5:12] = 1
    >>> bool(simulate_views_2d(views, 5, 4.0).truth["view_index"].between(0, 1).all())
    True
    """
    is_volume = not isinstance(images_or_volume, (list, tuple)) and \
        images_or_volume.ndim == 3 and len(set(images_or_volume.shape)) == 1
    if isinstance(images_or_volume, (list, tuple)):
        xp = get_xp(images_or_volume[0])
        data = xp.stack([xp.asarray(v) for v in images_or_volume])
    else:
        data = images_or_volume
        xp = get_xp(data)
    n = int(n)
    if n < 1:
        raise _bad(f"n must be >= 1, got {n}", "n")
    if data.ndim != 3 or data.shape[-1] != data.shape[-2]:
        raise _bad(f"expected views [K, N, N] or a map [N, N, N], got {data.shape}",
                   "images_or_volume")
    box = data.shape[-1]
    rng = np.random.default_rng([int(seed), 0])
    if is_volume:
        if view_eulers is None:
            view_eulers = random_rotations(int(n_views), np.random.default_rng([int(seed), 2]))
        views = np.asarray(to_numpy(view_eulers), dtype=np.float64)
        if views.ndim != 2 or views.shape[1] not in (2, 3):
            raise _bad(f"view_eulers must be [K, 2] (rot, tilt), got {views.shape}", "view_eulers")
        views = views[:, :2]
        k_views = len(views)
    else:
        k_views = data.shape[0]
    labels = _draw_labels(rng, n, k_views, fractions)
    psi = rng.uniform(0.0, 360.0, n)
    max_origin_A = 3.0 * pixel_size_A if max_origin_A is None else float(max_origin_A)
    origins_A = _draw_origins_A(rng, n, max_origin_A)
    ctf = _draw_ctf(rng, n, defocus_range_A, astigmatism_A, voltage_kV, cs_mm,
                    amplitude_contrast, bfactor_A2)
    truth = {"view_index": labels}
    if is_volume:
        projector = FourierProjector(data)
        poses = np.column_stack([views[labels], psi])
        truth.update(rot_deg=poses[:, 0], tilt_deg=poses[:, 1])

        def render(idx, ctf_b, origins_px):
            return projector.project(poses[idx], origins_px, ctf_b, pixel_size_A)
    else:
        rotators = [FourierRotator2D(data[k:k + 1]) for k in range(k_views)]

        def render(idx, ctf_b, origins_px):
            ft = xp.empty((len(idx), box, box // 2 + 1), dtype=xp.complex64)
            for k in np.unique(labels[idx]):
                sel = np.flatnonzero(labels[idx] == k)
                ft[sel] = rotators[k].rotate_ft(psi[idx[sel]])[0]
            ft = phase_shift_2d(ft, -origins_px) * ctf_2d(ctf_b, box, pixel_size_A, xp=xp)
            return irfft2c(ft, box).astype(xp.float32, copy=False)

    truth.update(psi_deg=psi, origin_x_A=origins_A[:, 0], origin_y_A=origins_A[:, 1],
                 **_ctf_truth(ctf))
    return _finish(render, n, box, pixel_size_A, ctf, origins_A, pd.DataFrame(truth),
                   out_dir=out_dir, name=name, include_truth_angles=include_truth_angles, xp=xp,
                   snr=snr, noise=noise, noise_corner_A=noise_corner_A,
                   particle_diameter_A=particle_diameter_A, seed=int(seed),
                   batch_size=batch_size, keep_clean=keep_clean)
