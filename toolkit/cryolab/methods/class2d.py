"""Reference-free 2D classification (RELION's ``relion_refine`` without ``--ref``, 2D)."""
from __future__ import annotations

from ..session import Session
from ..settings import method_settings

__all__ = ["class2d"]


def class2d(particles, K: int | None = None, iterations: int | None = None, *, out_dir=None,
            progress: bool = True, callback=None, **settings) -> Session:
    """Classify particle images into ``K`` 2D classes and return the (steppable) Session.

    ``particles``: a :class:`cryolab.io.ParticleStack` or a STAR path. Defaults are
    ``method_settings("class2d")`` (:data:`cryolab.settings.METHOD_DEFAULTS`: K=10, tau2 fudge 2);
    other keywords are :class:`cryolab.settings.Settings` fields (``mode``: ``map`` regularised
    likelihood, ``ml`` white-noise maximum likelihood, ``maxcc`` projection matching;
    ``psi_step_deg``, ``offset_range_px``, ``particle_diameter_A``, ``ctf``, ``seed``, ...).
    Initial class averages come from random subsets (reference-free, as RELION). With
    ``out_dir``, RELION-named files are written each iteration (``run_itNNN_data.star``,
    ``_model.star``, ``_classes.mrcs``). ``iterations=0`` returns the initialised Session.
    """
    if K is not None:
        settings["K"] = K
    if iterations is not None:
        settings["n_iter"] = iterations
    session = Session(particles, method_settings("class2d", **settings))
    session.run(session.settings.n_iter, callback=callback, progress=progress, out_dir=out_dir)
    return session
