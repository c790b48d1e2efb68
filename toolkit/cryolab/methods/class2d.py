"""Reference-free 2D classification (RELION's ``relion_refine`` without ``--ref``, 2D)."""
from __future__ import annotations

from ..session import Session, Settings

__all__ = ["class2d"]


def class2d(particles, K: int = 10, iterations: int = 25, *, mode: str = "map", tau2_fudge: float = 2.0,
            psi_step_deg: float = 10.0, offset_range_px: float = 5.0, offset_step_px: float = 1.0,
            particle_diameter_A: float | None = None, ctf: bool = True, seed: int = 0,
            backend: str = "numpy", out_dir=None, progress: bool = True, callback=None, **kw) -> Session:
    """Classify particle images into ``K`` 2D classes and return the (steppable) Session.

    ``particles``: a :class:`cryolab.io.ParticleStack` or a STAR path. Initial class
    averages come from random subsets (reference-free, as RELION). ``mode`` is ``map``
    (regularised likelihood, tau2 fudge ``T``), ``ml`` (white-noise maximum likelihood) or
    ``maxcc`` (projection matching). With ``out_dir``, RELION-named files are written
    each iteration (``run_itNNN_data.star``, ``_model.star``, ``_classes.mrcs``).
    ``iterations=0`` returns the initialised Session without running it.
    """
    settings = Settings(K=K, n_iter=iterations, mode=mode, tau2_fudge=tau2_fudge, psi_step_deg=psi_step_deg,
                        offset_range_px=offset_range_px, offset_step_px=offset_step_px,
                        particle_diameter_A=particle_diameter_A, ctf=ctf, seed=seed, backend=backend, **kw)
    session = Session(particles, settings)
    session.run(iterations, callback=callback, progress=progress, out_dir=out_dir)
    return session
