"""The schedule of a stochastic initial model: mini-batch size, resolution and step per iteration.

Names follow relion_refine's ``--sgd_*`` options. Three phases: ``ini_iter`` iterations at
``ini_resol_A`` with ``ini_subset`` particles, ``inbetween_iter`` iterations in which the
resolution moves to ``fin_resol_A`` (linearly in spatial frequency) and the mini-batch grows to
``fin_subset`` (linearly), then ``fin_iter`` iterations at the final values. The step (the share
of the running sums that each mini-batch replaces, RELION's ``--sgd_stepsize``) goes from
``ini_stepsize`` to ``fin_stepsize`` over the same phases.

Annealing (RELION 3.1's ``--sgd_sigma2fudge_initial`` and ``--sgd_sigma2fudge_halflife``): the
E-step uses the noise variance multiplied by ``sigma2_fudge = f + (1 - f) ini`` with
``f = NN / (NN + halflife)`` and ``NN = iteration x mini-batch size`` (iterations counted from 1),
so the fudge starts near ``ini`` and is halfway back to 1 after ``halflife`` particles; a
halflife <= 0 switches it off (fudge 1, RELION's default -1).

With K > 1 classes the mini-batch sizes are per class by default (``subset_per_class``): a
mini-batch holds ``K x subset`` particles, so that each class receives about as many particles
per mini-batch as a single model does. On a simulated 80S/60S set (K = 2, 64 px, SNR 0.05) the
split went from 87.8 % right with ``subset`` particles per mini-batch to 96.6 % with ``2 x subset``
(docs/initial_model.md). ``subset_per_class=False`` gives RELION's meaning (the whole mini-batch).
The annealing's ``NN`` counts the schedule's sizes (per class when ``subset_per_class``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ...errors import CryolabInputError

__all__ = ["SGDSchedule", "ScheduleStep", "InitialModelIteration"]


@dataclass(frozen=True)
class ScheduleStep:
    """One iteration's mini-batch size, resolution limit (Angstrom) and step (0 < step <= 1)."""
    iteration: int
    subset: int
    resolution_A: float
    stepsize: float
    sigma2_fudge: float = 1.0


@dataclass(frozen=True)
class InitialModelIteration:
    """What one mini-batch iteration did (resolution in Angstrom, time in seconds)."""
    iteration: int
    subset: int
    resolution_A: float
    stepsize: float
    class_distribution: tuple
    mean_pmax: float
    mean_angle_change_deg: float
    time_s: float
    sigma2_fudge: float = 1.0


@dataclass(frozen=True)
class SGDSchedule:
    """Iterations, resolutions (Angstrom), mini-batch sizes and steps of an initial model.

    ``ini_iter`` is RELION's 50: with 10 iterations at the initial resolution one seed of three
    ended in a wrong map on the benchmark's 80S set (docs/initial_model.md); the first phase's
    mini-batches are small and cheap (about a tenth of a run's time)."""
    ini_iter: int = 50
    inbetween_iter: int = 30
    fin_iter: int = 10
    ini_resol_A: float = 35.0
    fin_resol_A: float = 15.0
    ini_subset: int = 100
    fin_subset: int = 500
    ini_stepsize: float = 0.5
    fin_stepsize: float = 0.5
    sigma2fudge_ini: float = 8.0
    sigma2fudge_halflife: float = -1.0
    subset_per_class: bool = True

    def __post_init__(self):
        for f in ("ini_iter", "inbetween_iter", "fin_iter"):
            if getattr(self, f) < 0:
                raise CryolabInputError(f"sgd_{f} must be >= 0, got {getattr(self, f)}", field=f"sgd_{f}")
        if self.n_iter < 1:
            raise CryolabInputError("the schedule has no iterations (sgd_ini_iter + sgd_inbetween_iter + "
                                    "sgd_fin_iter = 0)", field="sgd_ini_iter")
        for f in ("ini_resol_A", "fin_resol_A"):
            if not getattr(self, f) > 0:
                raise CryolabInputError(f"{f} (--sgd_{f[:-2]}) must be > 0 Angstrom, got {getattr(self, f)}",
                                        field=f"sgd_{f[:-2]}")
        for f in ("ini_subset", "fin_subset"):
            if getattr(self, f) < 1:
                raise CryolabInputError(f"sgd_{f} must be >= 1, got {getattr(self, f)}", field=f"sgd_{f}")
        for f, flag in (("ini_stepsize", "sgd_stepsize"), ("fin_stepsize", "sgd_fin_stepsize")):
            if not 0 < getattr(self, f) <= 1:
                raise CryolabInputError(f"{f} (--{flag}) must be in (0, 1], got {getattr(self, f)}", field=flag)
        if not self.sigma2fudge_ini >= 1:
            raise CryolabInputError(f"sigma2fudge_ini (--sgd_sigma2fudge_initial) must be >= 1, got "
                                    f"{self.sigma2fudge_ini}", field="sgd_sigma2fudge_initial")

    @property
    def n_iter(self) -> int:
        return self.ini_iter + self.inbetween_iter + self.fin_iter

    def _fraction(self, t: int) -> float:
        """0 in the first phase, rising linearly to 1 in the in-between phase, 1 after."""
        if t < self.ini_iter:
            return 0.0
        if t >= self.ini_iter + self.inbetween_iter:
            return 1.0
        return (t - self.ini_iter + 1) / (self.inbetween_iter + 1)

    def at(self, t: int) -> ScheduleStep:
        """Iteration ``t`` (0-based); past the end the final values."""
        f = self._fraction(t)
        inv = (1 - f) / self.ini_resol_A + f / self.fin_resol_A
        subset = int(round(self.ini_subset + f * (self.fin_subset - self.ini_subset)))
        step = self.ini_stepsize + f * (self.fin_stepsize - self.ini_stepsize)
        return ScheduleStep(t, subset, 1.0 / inv, step, self.sigma2_fudge(t, subset))

    def sigma2_fudge(self, t: int, subset: int) -> float:
        """The noise-variance factor of iteration ``t`` (0-based) with ``subset`` particles (module text)."""
        if self.sigma2fudge_halflife <= 0:
            return 1.0
        nn = (t + 1) * subset
        f = nn / (nn + self.sigma2fudge_halflife)
        return f + (1.0 - f) * self.sigma2fudge_ini

    def steps(self) -> list:
        return [self.at(t) for t in range(self.n_iter)]

    def changed(self, **changes) -> "SGDSchedule":
        """A copy with some fields changed (checked)."""
        known = {f.name for f in fields(self)}
        bad = set(changes) - known
        if bad:
            raise CryolabInputError(f"unknown schedule field(s) {sorted(bad)}; known: {sorted(known)}",
                                    field=sorted(bad)[0])
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)
