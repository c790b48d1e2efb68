"""The steppable Session: state between iterations; the engine (:mod:`cryolab.engine`) does the math.

A :class:`Session` holds the current references, noise spectrum, priors and per-particle
assignments; :meth:`Session.step` runs one iteration (E-step over all particles in batches,
then M-step) and returns an immutable :class:`IterationResult`. A notebook can step, inspect
(``posterior(i)``, ``history``), steer (``set(tau2_fudge=...)``, ``select_classes``) and
save/resume between iterations. Checkpoints are plain files (:mod:`cryolab.session.files`).
"""
from ..settings import IterationResult, Settings
from .core import Session

__all__ = ["Session", "Settings", "IterationResult"]
