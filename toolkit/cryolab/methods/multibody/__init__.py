"""Multi-body refinement and the analysis of body motions (RELION's ``--multibody_masks`` and
``relion_flex_analyse``): :mod:`.bodies` (bodies and their STAR file), :mod:`.images` (each
body's subtracted, re-centred images), :mod:`.refine` (the refinement), :mod:`.motion` (body
motions relative to each other, their principal components and maps along them)."""
from .bodies import Body, check_bodies, partition_bodies, ratchet_bodies, read_bodies, write_bodies
from .refine import MultiBodyIteration, MultiBodyRefine, multibody_refine

__all__ = ["Body", "read_bodies", "write_bodies", "check_bodies", "partition_bodies", "ratchet_bodies",
           "MultiBodyRefine", "MultiBodyIteration", "multibody_refine"]
