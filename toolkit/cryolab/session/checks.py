"""Checks of a Session's settings against its particles (clear errors before anything runs)."""
from __future__ import annotations

import logging

from ..errors import CryolabInputError

__all__ = ["check_inputs", "check_poses_for_fixed_or_local"]

log = logging.getLogger("cryolab.session")


def check_poses_for_fixed_or_local(session) -> None:
    """skip_align and local searches start from each particle's 3D angles: from the STAR file, or
    from the iterations run so far."""
    s, cols = session.settings, session.particles.table.columns
    if s.skip_align and s.sigma_ang_deg:
        raise CryolabInputError("skip_align keeps the poses and sigma_ang_deg searches around them: "
                                "choose one", field="sigma_ang_deg")
    if session.iteration == 0 and not {"rlnAngleRot", "rlnAngleTilt"} <= set(cols):
        raise CryolabInputError("skip_align and local searches need each particle's 3D angles "
                                "(from a refinement, or after a first iteration)",
                                path=session.particles.star_path, field="_rlnAngleRot")


def check_inputs(session, n_particles: int) -> None:
    """Errors for settings that cannot work on these particles (the diameter larger than the
    box, more classes than particles) and a warning for fewer than 10 particles per class."""
    s, box_A = session.settings, session.n * session.pixel_size_A
    if s.particle_diameter_A and s.particle_diameter_A > box_A:
        raise CryolabInputError(f"particle diameter {s.particle_diameter_A:g} A is larger than the box "
                                f"({session.n} px x {session.pixel_size_A:g} A = {box_A:g} A)",
                                field="particle_diameter")
    if s.K > n_particles:
        raise CryolabInputError(f"K = {s.K} classes for {n_particles} particles: at most one class "
                                f"per particle", field="K")
    if s.K > 1 and n_particles < 10 * s.K:
        log.warning("K = %d classes for %d particles: fewer than 10 particles per class; classes "
                    "will be noisy or empty", s.K, n_particles)
