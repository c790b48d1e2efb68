"""Particles of a complex whose two parts move against each other (a hinge, the ribosome's ratchet).

The *fixed* body sits at each particle's pose; the *moving* body is first rotated by ``Q_i``
(angle ``theta_i`` about ``axis``, a unit vector in the map frame, through the point
``pivot_A``; Angstrom from the box centre, ``(x, y, z)``) and then both are projected together:

``image_i = a * C_i * [P_{A_i}(V_fixed) + P_{A_i}(V_moving rotated by Q_i about the pivot)] + noise``

The moving part is projected without resampling its map: rotating about ``p`` and projecting
at ``A`` equals projecting the map moved so that ``p`` is at the centre, at ``A Q``, and
shifting the image by ``(A p)_xy`` (see :func:`hinge_poses`). Angles ``theta_i`` (degrees) are
drawn uniform in ``angle_range_deg``, or ``"bimodal"`` (two Gaussians at the range's quarter
points, sigma a tenth of the range), or given. The truth table adds ``hinge_angle_deg`` and the
moving body's own pose (``body2_rot_deg`` ...) to the usual columns.

:func:`cryolab.methods.multibody.ratchet_bodies` gives the demo ribosome as two such bodies with
the hinge of its ratchet.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp, to_device
from ..fourier import phase_shift
from ..geometry import euler_to_matrix, matrix_to_euler, random_rotations
from ..projection import FourierProjector
from .pipeline import _bad, _class_volumes, _draw_ctf, _draw_origins_A, _finish
from .tables import Simulation, _ctf_truth

__all__ = ["simulate_hinge", "hinge_poses", "rotation_about"]


def rotation_about(axis, angle_deg) -> np.ndarray:
    """Rotation matrices ``[n, 3, 3]`` by ``angle_deg`` ``[n]`` about the unit vector ``axis``
    (Rodrigues; right-handed, acting on column vectors ``(x, y, z)``)."""
    u = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(np.atleast_1d(np.asarray(angle_deg, float)))
    K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return (np.eye(3)[None] + np.sin(t)[:, None, None] * K[None]
            + (1 - np.cos(t))[:, None, None] * (K @ K)[None])


def hinge_poses(eulers_deg, Q, pivot_px):
    """The moving body's pose at each particle: ``(eulers [n, 3] of A Q, in-plane shift [n, 2] =
    (A p)_xy in pixels)`` for particle poses ``eulers_deg`` (``A``), rotations ``Q [n, 3, 3]`` about
    the pivot ``pivot_px`` (x, y, z pixels from the box centre)."""
    e = np.asarray(eulers_deg, float)
    A = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    body = np.stack(matrix_to_euler(A @ Q), axis=-1)
    return body, (A @ np.asarray(pivot_px, float))[:, :2]


def _hinge_angles(rng, n, distribution, angle_range_deg):
    lo, hi = (float(v) for v in angle_range_deg)
    if not hi > lo:
        raise _bad(f"angle_range_deg must be (low, high) with low < high, got {angle_range_deg!r}", "angle_range_deg")
    if isinstance(distribution, str):
        if distribution == "uniform":
            return rng.uniform(lo, hi, n)
        if distribution == "bimodal":
            centres = np.where(rng.random(n) < 0.5, lo + 0.25 * (hi - lo), lo + 0.75 * (hi - lo))
            return centres + rng.normal(0.0, 0.1 * (hi - lo), n)
        raise _bad(f"distribution must be 'uniform', 'bimodal' or [n] angles, got {distribution!r}", "distribution")
    a = np.asarray(distribution, float).ravel()
    if a.shape != (n,):
        raise _bad(f"{n} hinge angles needed, got {a.shape}", "distribution")
    return a


def simulate_hinge(volumes, n: int, pixel_size_A: float, *, pivot_A, axis, angle_range_deg=(-15.0, 15.0),
                   distribution="uniform", eulers="random", max_origin_A: float | None = None,
                   defocus_range_A=(10000.0, 30000.0), astigmatism_A: float = 500.0, voltage_kV: float = 300.0,
                   cs_mm: float = 2.7, amplitude_contrast: float = 0.1, seed: int = 0, **kw) -> Simulation:
    """Simulate ``n`` particles of two bodies ``volumes`` (fixed first, moving second; dict or
    list) with the moving one rotated about the hinge (see the module text). The CTF, origin and
    angle draws are :func:`~cryolab.simulate.simulate_particles`'s; the remaining keywords
    (``snr``, ``noise``, ``out_dir``, ``name``, ``keep_clean``, ``batch_size``,
    ``include_truth_angles``, ...) are passed on as there.

    >>> fixed = np.zeros((16, 16, 16), np.float32); fixed[6:10, 6:10, 4:8] = 1
    >>> moving = np.zeros_like(fixed); moving[6:10, 6:10, 8:12] = 1
    >>> sim = simulate_hinge([fixed, moving], 3, 5.0, pivot_A=(0, 0, 0), axis=(1, 0, 0), seed=1, snr=float("inf"))
    >>> sim.images.shape, bool(np.all(np.abs(sim.truth["hinge_angle_deg"]) <= 15))
    ((3, 16, 16), True)
    """
    names, arrays = _class_volumes(volumes)
    if len(arrays) != 2:
        raise _bad(f"a hinge needs two bodies (fixed, moving), got {len(arrays)}", "volumes")
    n = int(n)
    if n < 1:
        raise _bad(f"n must be >= 1, got {n}", "n")
    xp, box = get_xp(arrays[0]), arrays[0].shape[-1]
    rng = np.random.default_rng([int(seed), 0])
    angles = random_rotations(n, rng) if isinstance(eulers, str) else np.asarray(eulers, float).reshape(n, 3)
    origins_A = _draw_origins_A(rng, n, 3.0 * pixel_size_A if max_origin_A is None else float(max_origin_A))
    ctf = _draw_ctf(rng, n, defocus_range_A, astigmatism_A, voltage_kV, cs_mm, amplitude_contrast,
                    kw.pop("bfactor_A2", 0.0))
    theta = _hinge_angles(np.random.default_rng([int(seed), 2]), n, distribution, angle_range_deg)
    pivot_px = np.asarray(pivot_A, float).reshape(3) / pixel_size_A
    body_eulers, pivot_shift = hinge_poses(angles, rotation_about(axis, theta), pivot_px)
    fixed = FourierProjector(to_device(arrays[0], xp))
    moving = FourierProjector(phase_shift(to_device(arrays[1], xp), -pivot_px))

    def render(idx, ctf_b, origins_px):
        img = fixed.project(angles[idx], origins_px, ctf_b, pixel_size_A)
        return img + moving.project(body_eulers[idx], origins_px - to_device(pivot_shift[idx], xp), ctf_b,
                                    pixel_size_A)

    truth = {"class_index": np.zeros(n, int), "class_name": np.full(n, "+".join(names)),
             "rot_deg": angles[:, 0], "tilt_deg": angles[:, 1], "psi_deg": angles[:, 2],
             "origin_x_A": origins_A[:, 0], "origin_y_A": origins_A[:, 1], "hinge_angle_deg": theta,
             "body2_rot_deg": body_eulers[:, 0], "body2_tilt_deg": body_eulers[:, 1],
             "body2_psi_deg": body_eulers[:, 2], **_ctf_truth(ctf)}
    import pandas as pd
    sim = _finish(render, n, box, pixel_size_A, ctf, origins_A, pd.DataFrame(truth), xp=xp, seed=int(seed),
                  **{"snr": 0.05, "noise": "white", "noise_corner_A": None, "particle_diameter_A": None,
                     "batch_size": 256, "keep_clean": False, "out_dir": None, "name": "particles",
                     "include_truth_angles": False, **kw})
    sim.info.update(hinge_axis=[float(v) for v in np.asarray(axis, float) / np.linalg.norm(axis)],
                    hinge_pivot_A=[float(v) for v in np.asarray(pivot_A, float).reshape(3)])
    return sim
