"""Tilt-pair validation against a map: orient the untilted and the tilted particles with the engine, then
compare each pair's relative rotation with the goniometer's (:mod:`cryolab.validation.tiltpair`).

:func:`orient_particles` is projection matching against a fixed map (a Session in ``mode="maxcc"``,
K = 1, its E-step only, the map never updated): a global search over the HEALPix directions of
``healpix_order`` (and in-plane angles at the same step), then a local search at ``local_order`` within
3 ``sigma_ang_deg`` of the first result.
"""
from __future__ import annotations

import numpy as np

from ..io import ParticleStack
from ..session import Session
from ..validation.tiltpair import TiltPairStats, tilt_pair_stats

__all__ = ["orient_particles", "validate_tilt_pairs"]


def orient_particles(particles, volume, *, healpix_order: int = 3, local_order: int = 5, sigma_ang_deg: float = 2.5,
                     offset_range_px: float = 0.0, offset_step_px: float = 1.0, ctf: bool = True,
                     backend: str | None = None) -> np.ndarray:
    """Euler angles ``[P, 3]`` (degrees, RELION's) of ``particles`` (STAR path or ParticleStack) against
    ``volume`` ``[N, N, N]`` (module text). ``local_order=None`` skips the local search."""
    stack = particles if isinstance(particles, ParticleStack) else ParticleStack.from_star(particles)
    common = dict(references=np.asarray(volume, np.float32)[None], K=1, mode="maxcc", ctf=ctf, backend=backend,
                  offset_range_px=offset_range_px, offset_step_px=offset_step_px, oversampling=1)
    session = Session(stack, healpix_order=healpix_order, **common)
    session.estep()
    eulers = session.eulers.copy()
    if local_order is None:
        return eulers
    table = stack.table.assign(rlnAngleRot=eulers[:, 0], rlnAngleTilt=eulers[:, 1], rlnAnglePsi=eulers[:, 2])
    local = Session(stack.with_table(table), healpix_order=local_order, sigma_ang_deg=sigma_ang_deg, **common)
    local.estep()
    return local.eulers.copy()


def validate_tilt_pairs(untilted, tilted, volume, *, expected_tilt_deg: float | None = None,
                        expected_axis_deg: float | None = None, **orient) -> TiltPairStats:
    """Orient both lists (same order, one particle per row) against ``volume`` and compute the tilt-pair
    numbers (:func:`cryolab.validation.tiltpair.tilt_pair_stats`); ``orient`` goes to
    :func:`orient_particles`."""
    u = orient_particles(untilted, volume, **orient)
    t = orient_particles(tilted, volume, **orient)
    return tilt_pair_stats(u, t, expected_tilt_deg=expected_tilt_deg, expected_axis_deg=expected_axis_deg)
