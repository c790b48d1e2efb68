"""3D classification with seed generation (RELION's ``relion_refine --ref --K``, 3D)."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..fourier import lowpass
from ..session import Session, Settings
from ..settings import method_settings

__all__ = ["class3d", "generate_seeds"]


def generate_seeds(particles, reference, K: int, *, ini_high_A: float = 60.0, seed: int = 0,
                   **session_kw) -> np.ndarray:
    """``K`` different starting maps ``[K, N, N, N]`` from one reference, as the lecture describes.

    The reference is low-pass filtered to ``ini_high_A``; the particles are split into ``K``
    random subsets and each subset gets one iteration of refinement against the filtered
    reference (K=1), so each seed carries its own subset's noise and composition.
    """
    from ..io import ParticleStack
    if not isinstance(particles, ParticleStack):
        particles = ParticleStack.from_star(particles)
    ref = lowpass(np.asarray(reference, np.float32), ini_high_A, particles.pixel_size_A, ndim=3)
    rng = np.random.default_rng(seed)
    subset = rng.permutation(len(particles)) % K
    seeds = []
    for k in range(K):
        sub = particles.subset(np.flatnonzero(subset == k))
        s = Session(sub, Settings(**{**session_kw, "K": 1, "seed": seed + k, "firstiter_cc": True}),
                    references=ref[None], ini_high_A=ini_high_A)
        s.step(progress=False)
        seeds.append(s.references[0])
    return np.stack(seeds)


def class3d(particles, reference, K: int | None = None, iterations: int | None = None, *,
            seeds: str = "subsets", out_dir=None, progress: bool = True, callback=None, **settings) -> Session:
    """Classify particles into ``K`` 3D classes; returns the (steppable) Session.

    ``reference``: one map ``[N, N, N]`` (seeds are made from it) or ``K`` maps ``[K, N, N, N]``
    (used as given, low-pass filtered to ``ini_high_A``). ``seeds``: ``"subsets"`` (one
    iteration on K random subsets, :func:`generate_seeds`) or ``"lowpass"`` (the filtered
    reference for every class; the classes then separate through noise only).
    Defaults are ``method_settings("class3d")`` (:data:`cryolab.settings.METHOD_DEFAULTS`: K=2,
    tau2 fudge 4, ``ini_high_A`` 60 A, first iteration as projection matching (``firstiter_cc``)
    so that maps from elsewhere need not be on the data's grey scale); other keywords are
    :class:`cryolab.settings.Settings` fields. ``iterations=0`` returns the initialised Session.
    """
    from ..io import ParticleStack
    if not isinstance(particles, ParticleStack):
        particles = ParticleStack.from_star(particles)
    if K is not None:
        settings["K"] = K
    if iterations is not None:
        settings["n_iter"] = iterations
    settings = method_settings("class3d", **settings)
    K, ini_high_A = settings.K, settings.ini_high_A
    reference = np.asarray(reference, np.float32)
    if reference.ndim == 4:
        refs = np.stack([lowpass(r, ini_high_A, particles.pixel_size_A, ndim=3) for r in reference])
    elif seeds == "subsets" and K > 1:
        base = {k: v for k, v in asdict(settings).items() if k not in ("K", "seed", "n_iter", "ini_high_A")}
        refs = generate_seeds(particles, reference, K, ini_high_A=ini_high_A, seed=settings.seed, **base)
    else:
        ref = lowpass(reference, ini_high_A, particles.pixel_size_A, ndim=3)
        refs = np.repeat(ref[None], K, axis=0)
    session = Session(particles, settings, references=refs)
    session.run(settings.n_iter, callback=callback, progress=progress, out_dir=out_dir)
    return session
