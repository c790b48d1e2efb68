"""Processing methods built on :class:`cryolab.session.Session`."""
from .class2d import class2d  # noqa: F401
from .class3d import class3d, generate_seeds  # noqa: F401
from .refine import AutoRefine, refine  # noqa: F401
from .subtract import SubtractedParticles, revert_subtraction, subtract_particles  # noqa: F401
from .msa import MSAResult, msa  # noqa: F401
