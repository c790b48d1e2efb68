"""Several starts of an initial model, and the choice of the best one.

A stochastic initial model can settle on a wrong map (on a simulated 80S set at SNR 0.05 one
seed of three did, with the constraints of :mod:`.stochastic` on). The starts run the first
phase of the schedule (``ini_iter`` mini-batches at the initial resolution) independently, each
from its own blob and its own mini-batches; then one E-step per start on the same particles at
that resolution, with the same noise spectrum, gives each start's log-likelihood, and the most
likely start continues alone. The right maps explain the particles better already at the end of
the first phase (docs/initial_model.md: the ranking of three starts at iterations 40 and 50
matched their outcome at iteration 90).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...fourier import resolution_shell

__all__ = ["StartScore", "score_starts", "start_seed"]


@dataclass(frozen=True)
class StartScore:
    """One start: its seed, the summed log-likelihood of the common particles, their mean pmax."""
    start: int
    seed: int
    loglik: float
    mean_pmax: float


def start_seed(seed: int, start: int) -> int:
    """The seed of start ``start`` (0-based): start 0 keeps ``seed`` (one start is the plain run)."""
    if start == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), 611953, int(start)]).generate_state(1)[0] % (2 ** 31))


def score_starts(models, n_particles: int, resolution_A: float, seed: int) -> list:
    """:class:`StartScore` per model (``InitialModel`` objects on the same particles): one E-step
    of their maps on the same ``n_particles`` particles (drawn with ``seed``) at ``resolution_A``,
    with the noise spectrum the data gave before any mini-batch (so the values compare), the
    coarse angular pass only. The models are not changed."""
    from ...session import Session
    first = models[0]
    particles = first.particles
    rows = np.sort(np.random.default_rng([int(seed), 7, 31]).choice(len(particles), min(n_particles, len(particles)),
                                                                     replace=False))
    scorer = Session(particles, first.session.settings, references=np.asarray(first.references))
    scorer.set(oversampling=0)
    shell = np.floor(resolution_shell(resolution_A, scorer.n, scorer.pixel_size_A))
    out = []
    for i, im in enumerate(models):
        scorer.references = im.references
        scorer.max_shell = int(min(scorer.shell_limit(), max(4, shell)))
        scorer.estep(rows=rows)
        out.append(StartScore(i, int(im.seed), float(np.sum(scorer.loglik[rows])), float(np.mean(scorer.pmax[rows]))))
        scorer.sums = None
    return out
