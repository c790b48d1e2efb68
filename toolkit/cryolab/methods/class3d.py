"""3D classification with seed generation (RELION's ``relion_refine --ref --K``, 3D)."""
from __future__ import annotations

import numpy as np

from ..fourier import lowpass
from ..session import Session, Settings

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


def class3d(particles, reference, K: int = 2, iterations: int = 25, *, tau2_fudge: float = 4.0,
            healpix_order: int = 2, offset_range_px: float = 5.0, offset_step_px: float = 1.0,
            ini_high_A: float = 60.0, seeds: str = "subsets", sym: str = "C1", mode: str = "map",
            particle_diameter_A: float | None = None, ctf: bool = True, seed: int = 0,
            backend: str = "numpy", out_dir=None, progress: bool = True, callback=None, **kw) -> Session:
    """Classify particles into ``K`` 3D classes; returns the (steppable) Session.

    ``reference``: one map ``[N, N, N]`` (seeds are made from it) or ``K`` maps ``[K, N, N, N]``
    (used as given, low-pass filtered to ``ini_high_A``). ``seeds``: ``"subsets"`` (one
    iteration on K random subsets, :func:`generate_seeds`) or ``"lowpass"`` (the filtered
    reference for every class; the classes then separate through noise only).
    The first iteration is projection matching (``firstiter_cc``) so that maps from elsewhere
    need not be on the data's grey scale. ``iterations=0`` returns the initialised Session.
    """
    from ..io import ParticleStack
    if not isinstance(particles, ParticleStack):
        particles = ParticleStack.from_star(particles)
    settings = Settings(K=K, n_iter=iterations, mode=mode, tau2_fudge=tau2_fudge, healpix_order=healpix_order,
                        offset_range_px=offset_range_px, offset_step_px=offset_step_px, sym=sym,
                        particle_diameter_A=particle_diameter_A, ctf=ctf, seed=seed, backend=backend,
                        ini_high_A=ini_high_A, **{"firstiter_cc": True, **kw})
    reference = np.asarray(reference, np.float32)
    if reference.ndim == 4:
        refs = np.stack([lowpass(r, ini_high_A, particles.pixel_size_A, ndim=3) for r in reference])
    elif seeds == "subsets" and K > 1:
        base = {k: v for k, v in settings.__dict__.items() if k not in ("K", "seed", "n_iter", "ini_high_A")}
        refs = generate_seeds(particles, reference, K, ini_high_A=ini_high_A, seed=seed, **base)
    else:
        ref = lowpass(reference, ini_high_A, particles.pixel_size_A, ndim=3)
        refs = np.repeat(ref[None], K, axis=0)
    session = Session(particles, settings, references=refs)
    session.run(iterations, callback=callback, progress=progress, out_dir=out_dir)
    return session
