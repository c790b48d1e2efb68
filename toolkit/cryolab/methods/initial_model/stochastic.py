"""An initial 3D model from the particles alone, by stochastic expectation-maximisation.

The lecture warns that a wrong initial model biases everything after it. Here the model comes
from the data: each class starts as the reconstruction of a random subset of particles placed
in random orientations (a featureless blob on the data's grey scale), and every iteration

1. draws a mini-batch of particles (its size and the resolution limit from the
   :class:`~.schedule.SGDSchedule`, coarse to fine),
2. runs the E-step on it alone (global search over HEALPix directions x psi and offsets, against
   the K current maps; the Session's engine, :meth:`cryolab.session.Session.estep` with ``rows``),
3. forgets a share ``stepsize`` of the running M-step sums (the back-projected data, weights,
   class weights) and adds the mini-batch's, and
4. reconstructs every class from the running sums (MAP, Wiener filter with tau2 from the map's
   power, as RELION's M-step), and
5. constrains the new maps: zero outside a soft sphere of the particle diameter (RELION's
   ``--flatten_solvent --zero_mask``) and zero wherever the density is negative (a map of the
   scattering potential relative to the solvent is non-negative at these resolutions).
   With them and three starts (:mod:`.starts`) every run on two simulated 80S sets (3,000
   particles, 64 px, SNR 0.05; seven runs) gave the right map, FSC 0.96-0.97 to the truth at
   40 A, where without them two seeds of three failed on one set (docs/initial_model.md).

This is online EM (Cappe & Moulines 2009) with the same role as the step size of RELION's
``--sgd``: a mini-batch moves each map part of the way towards its own reconstruction, so the
noise of small batches breaks the symmetry of the blob, and later, larger batches at higher
resolution settle the map. RELION 3.1's annealing of the noise variance (``sigma2fudge_*`` of the
schedule, :func:`fudged_noise`) is available and off by default: on the 80S benchmark it kept
the posteriors flat and the map a blob within this schedule's iterations. The maps' hand is
not determined by projections (a map and its mirror give mirrored images): compare with
another map allowing both hands
(:func:`cryolab.validation.align_maps`).

Symmetry: the mini-batches run without it (C1), and the point group is imposed on the result:
each map is turned so that its symmetry axes lie along the group's standard axes and averaged
over the group (:func:`cryolab.validation.align.align_symmetry`). Imposing the group from the
blob onwards gave worse maps (32 px, 12 A pixels, C4 particles at SNR 1, two seeds: FSC to
the truth below 0.5 from 77 A in both, against 43 A and 38 A in C1).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ...backend import get_xp
from ...engine.update import centre_of_mass_roll
from ...errors import CryolabInputError
from ...fourier import lowpass, resolution_shell
from ...geometry import is_c1
from ...session import Session, Settings
from ...settings import DEFAULT_DIAMETER_FRACTION
from .schedule import InitialModelIteration, SGDSchedule
from .starts import score_starts, start_seed

#: particles of the E-step that compares the starts
START_PARTICLES = 300

__all__ = ["InitialModel", "InitialModelIteration", "fudged_noise", "initial_model", "starting_maps"]


def starting_maps(particles, K: int, resolution_A: float, subset: int, diameter_A: float, seed: int = 0):
    """``K`` featureless starting maps ``[K, N, N, N]``: per class, ``subset`` random particles
    back-projected (CTF-weighted) in random orientations, low-pass filtered to ``resolution_A``
    and masked by a soft sphere of ``diameter_A`` (RELION's ``--denovo_3dref`` start)."""
    from ...geometry.euler import random_rotations
    from ...reconstruction import BackProjector
    from ...validation import soft_sphere_mask
    n, apix = particles.box_size, float(particles.pixel_size_A)
    mask = soft_sphere_mask(n, diameter_A / apix / 2, edge_px=3)
    maps = []
    for k in range(K):
        rng = np.random.default_rng([seed, 7919, k])
        rows = np.sort(rng.choice(len(particles), min(subset, len(particles)), replace=False))
        bp = BackProjector(n)
        bp.insert_images(particles.read(rows), random_rotations(rows.size, rng), ctf=particles.ctf(rows),
                         pixel_size_A=apix)
        maps.append(lowpass(bp.reconstruct("plain"), resolution_A, apix, ndim=3) * mask)
    return np.stack(maps).astype(np.float32)


def _check(particles, K: int, schedule: SGDSchedule, sym: str):
    from ...geometry import symmetry_operators
    where = getattr(particles, "star_path", None)
    N, n, apix = len(particles), particles.box_size, float(particles.pixel_size_A)
    per_class = K if schedule.subset_per_class else 1
    biggest = max(schedule.ini_subset, schedule.fin_subset) * per_class
    if N < biggest:
        field = "sgd_fin_subset" if schedule.fin_subset >= schedule.ini_subset else "sgd_ini_subset"
        times = (f" x K = {K}: the sizes are per class; subset_per_class=False / --no-subset_per_class makes "
                 f"them the whole mini-batch" if per_class > 1 else "")
        raise CryolabInputError(f"{N} particles are fewer than a mini-batch of {biggest} (sgd_ini_subset "
                                f"{schedule.ini_subset}, sgd_fin_subset {schedule.fin_subset}{times}): lower them "
                                f"or add particles", path=where, field=field)
    if N < K:
        raise CryolabInputError(f"K = {K} classes need at least as many particles, got {N}", path=where, field="K")
    nyquist_A = 2 * apix
    for name in ("ini_resol_A", "fin_resol_A"):
        res = getattr(schedule, name)
        if res < nyquist_A * 1.05:
            raise CryolabInputError(f"sgd_{name[:-2]} = {res} A is beyond what a {n} px box of {apix} A pixels "
                                    f"holds (Nyquist {nyquist_A:.2f} A): choose at least {nyquist_A * 1.05:.1f} A",
                                    path=where, field=f"sgd_{name[:-2]}")
    try:
        symmetry_operators(str(sym))
    except Exception as exc:
        raise CryolabInputError(f"unknown symmetry {sym!r} ({exc})", field="sym") from None


class InitialModel:
    """A stochastic initial model that can be stepped (see the module text).

    ``session``: the K-class 3D :class:`~cryolab.session.Session` whose engine runs each
    mini-batch (its ``references`` are the current maps, its per-particle poses the last E-step's
    of each particle); ``schedule``: the :class:`SGDSchedule` (change it between steps with
    :meth:`set_schedule`); ``history``: one :class:`InitialModelIteration` per step;
    ``flatten_solvent``, ``nonnegative``: the constraints of step 5 of the module text (on by default).

    >>> # im = InitialModel("particles.star", K=1); im.step(); im.run(); im.maps(centred=True)
    """

    def __init__(self, particles, K: int = 1, *, schedule: SGDSchedule | None = None, sym: str = "C1",
                 particle_diameter_A: float | None = None, healpix_order: int = 2, offset_range_px: float = 3.0,
                 offset_step_px: float = 1.0, tau2_fudge: float = 4.0, ctf: bool = True, seed: int = 0,
                 flatten_solvent: bool = True, nonnegative: bool = True, n_starts: int = 3, **settings):
        from ...io import ParticleStack
        if not isinstance(particles, ParticleStack):
            particles = ParticleStack.from_star(particles)
        self.schedule = schedule or SGDSchedule()
        _check(particles, K, self.schedule, sym)
        if int(n_starts) < 1:
            raise CryolabInputError(f"n_starts must be >= 1, got {n_starts}", field="n_starts")
        self.particles, self.seed = particles, int(seed)
        self.sym = str(sym)        # imposed on the result; the mini-batches run in C1 (module text)
        self._symmetry = None      # (iteration, [SymmetryAlignment per class])
        s = Settings(K=K, mode="map", healpix_order=healpix_order, offset_range_px=offset_range_px,
                     offset_step_px=offset_step_px, tau2_fudge=tau2_fudge, sym="C1", ctf=ctf, seed=seed,
                     particle_diameter_A=particle_diameter_A, oversampling=1, center_classes=False, **settings)
        diameter_A = s.particle_diameter_A or DEFAULT_DIAMETER_FRACTION * particles.box_size * float(particles.pixel_size_A)
        refs = starting_maps(particles, K, self.schedule.ini_resol_A, self.schedule.ini_subset, diameter_A, seed)
        self.flatten_solvent, self.nonnegative = bool(flatten_solvent), bool(nonnegative)
        self.session = Session(particles, s, references=refs)
        self._constrain()
        self.iteration = 0
        self.history: list[InitialModelIteration] = []
        self.running = None          # the running M-step sums (EStepSums)
        self._lock = threading.RLock()   # one step, save, schedule change or assignment at a time
        self.n_starts, self.start_scores = int(n_starts), []
        # the other starts run the first phase beside this one (starts.py); the best one continues
        same = dict(schedule=self.schedule, sym=sym, particle_diameter_A=particle_diameter_A,
                    healpix_order=healpix_order, offset_range_px=offset_range_px, offset_step_px=offset_step_px,
                    tau2_fudge=tau2_fudge, ctf=ctf, flatten_solvent=flatten_solvent, nonnegative=nonnegative)
        self._others = [InitialModel(particles, K, seed=start_seed(seed, i), n_starts=1, **same, **settings)
                        for i in range(1, self.n_starts)] if self.schedule.ini_iter > 0 else []

    # ------------------------------------------------------------------ stepping
    @property
    def K(self) -> int:
        return self.session.settings.K

    @property
    def references(self) -> np.ndarray:
        """The current maps ``[K, N, N, N]``."""
        return self.session.references

    @property
    def finished(self) -> bool:
        return self.iteration >= self.schedule.n_iter

    def set_schedule(self, **changes) -> None:
        """Change the schedule between steps (``fin_resol_A=12``, ``fin_iter=20``, ...)."""
        with self._lock:
            new = self.schedule.changed(**changes)
            _check(self.particles, self.K, new, self.sym)      # refused: the old one stays
            self.schedule = new
            for other in self._others:
                other.schedule = new

    def oversampling_at(self, resolution_A: float) -> int:
        """0 while the coarse HEALPix step is fine enough for ``resolution_A`` (RELION's rule: the
        step that moves the particle's edge by one resolution element, ``360 res / (pi D)`` degrees,
        with 25 % slack), else 1 (a finer pass around the significant coarse samples)."""
        from ...geometry import healpix_step_deg
        s = self.session
        needed_deg = 360.0 * resolution_A / (np.pi * s.particle_diameter_A)
        return 0 if healpix_step_deg(s.settings.healpix_order) <= 1.25 * needed_deg else 1

    def _limit_to(self, resolution_A: float) -> None:
        """The E-step's frequency limit: the shell of ``resolution_A`` (at least 4, at most the Session's)."""
        s = self.session
        shell = np.floor(resolution_shell(resolution_A, s.n, s.pixel_size_A))
        s.max_shell = int(min(s.shell_limit(), max(4, shell)))

    def subset_at(self, t: int) -> int:
        """The mini-batch size of iteration ``t``: the schedule's, times K when its sizes are per
        class (``SGDSchedule.subset_per_class``)."""
        return self.schedule.at(t).subset * (self.K if self.schedule.subset_per_class else 1)

    def minibatch(self, t: int, size: int | None = None) -> np.ndarray:
        """The particles of iteration ``t`` (sorted rows; fixed by the seed, ``t`` and the size)."""
        rng = np.random.default_rng([self.seed, 104729, t])
        size = self.subset_at(t) if size is None else int(size)
        return np.sort(rng.choice(len(self.particles), size, replace=False))

    def _constrain(self) -> None:
        """The references after each M-step: outside a soft sphere of the particle diameter set to
        zero (``flatten_solvent``, RELION's ``--flatten_solvent --zero_mask``) and negative density
        set to zero (``nonnegative``; module text)."""
        s = self.session
        refs = s.references
        if self.flatten_solvent:
            from ...validation import soft_sphere_mask
            xp = get_xp(refs)
            mask = soft_sphere_mask(s.n, s.particle_diameter_A / float(s.pixel_size_A) / 2, edge_px=3, xp=xp)
            refs = refs * mask.astype(refs.dtype)[None]
        if self.nonnegative:
            refs = get_xp(refs).maximum(refs, 0)
        s.references = refs

    def _blended(self, batch, stepsize: float, max_shell: int):
        """New running sums: ``(1 - stepsize)`` x the running ones + the mini-batch's (a copy: the
        running sums change only once the M-step has succeeded). Maps are reconstructed up to
        ``max_shell``; noise and offset statistics come from the mini-batch, scaled to the sums' count."""
        import copy
        if self.running is None:
            out = batch
        else:
            keep, r = 1.0 - stepsize, self.running
            bps = []
            for acc, new in zip(r.bps, batch.bps):
                bp = copy.copy(acc)
                bp.data = keep * acc.data + new.data
                bp.weight = keep * acc.weight + new.weight
                bps.append(bp)
            out = copy.copy(r)
            out.bps = bps
            out.w_shell = keep * r.w_shell + batch.w_shell
            out.class_weight = keep * r.class_weight + batch.class_weight
            out.n = keep * r.n + batch.n
            out.residual = batch.residual * (out.n / batch.n)
            out.offset_moment = batch.offset_moment * (out.n / batch.n)
        for bp in out.bps:
            bp.r_max = int(max_shell)
        return out

    def step(self, progress: bool = False) -> InitialModelIteration:
        """One mini-batch: E-step on it, blend its sums into the running sums, new maps. In the
        first phase with several starts every start takes its own mini-batch; after the phase's
        last one the most likely start continues (:meth:`choose_start`)."""
        with self._lock:
            t0 = time.perf_counter()
            for other in self._others:
                other.step()
            it = self._step_one(progress)
            if self._others and self.iteration >= self.schedule.ini_iter:
                self.choose_start()
            if self.n_starts > 1 and self.iteration <= self.schedule.ini_iter:
                it = replace(self.history[-1], time_s=time.perf_counter() - t0)   # all starts' time
                self.history[-1] = it
            return it

    def choose_start(self) -> list:
        """Compare the starts (:func:`.starts.score_starts` at the initial resolution) and go on
        with the most likely one: its maps, sums, mini-batches (its seed) and history become this
        model's. Returns the scores (also in ``start_scores``)."""
        with self._lock:
            if not self._others:
                return self.start_scores
            models = [self, *self._others]
            scores = score_starts(models, START_PARTICLES, self.schedule.ini_resol_A, self.seed)
            best = models[max(scores, key=lambda sc: sc.loglik).start]
            if best is not self:
                self.session, self.running, self.seed, self._symmetry = best.session, best.running, best.seed, None
                self.history = [replace(h, time_s=mine.time_s) for h, mine in zip(best.history, self.history)]
            self.start_scores, self._others = scores, []
            return scores

    def _step_one(self, progress: bool) -> InitialModelIteration:
        with self._lock:
            t0 = time.perf_counter()
            s, st = self.session, self.schedule.at(self.iteration)
            self._limit_to(st.resolution_A)
            s.set(oversampling=self.oversampling_at(st.resolution_A))
            rows = self.minibatch(self.iteration)
            with fudged_noise(s, st.sigma2_fudge):
                s.estep(progress=progress, rows=rows)
            if s.sums is None:
                raise InterruptedError("stopped during the E-step")
            running = self._blended(s.sums, st.stepsize, s.max_shell)
            pmax = float(s.pmax[rows].mean())
            s.sums = running
            r = s.mstep()
            self._constrain()
            self.running = running
            self.iteration += 1
            it = InitialModelIteration(self.iteration, len(rows), float(st.resolution_A), float(st.stepsize),
                                       r.class_distribution, pmax, r.mean_angle_change_deg,
                                       time.perf_counter() - t0, float(st.sigma2_fudge))
            self.history.append(it)
            return it

    def run(self, n_iter: int | None = None, progress: bool = True, callback=None, out_dir=None,
            prefix: str = "run") -> list:
        """Step to the end of the schedule (or ``n_iter`` more steps); ``callback(self, it)`` after
        each; with ``out_dir`` the files of :meth:`save` are written at the end. Returns the history."""
        from ..stepping import run_steps
        end = self.schedule.n_iter if n_iter is None else self.iteration + int(n_iter)
        return run_steps(self, end - self.iteration, lambda: self.iteration < end, desc="initial model",
                         unit="batch", postfix=lambda it: f"{it.resolution_A:.0f} A, {it.subset} particles",
                         progress=progress, callback=callback, out_dir=out_dir, prefix=prefix)

    # ------------------------------------------------------------------ results
    def maps(self, centred: bool = True, symmetrised: bool = True) -> np.ndarray:
        """The maps ``[K, N, N, N]``, each moved (whole pixels) so that the centre of mass of its
        positive density is the box centre when ``centred``; with a point group other than C1 and
        ``symmetrised``, centred, turned onto the group's axes and averaged over it (:meth:`symmetry`)."""
        if symmetrised and not is_c1(self.sym):
            return np.stack([a.symmetrised for a in self.symmetry()])
        refs = np.asarray(self.references, np.float32)
        return np.stack([centre_map(m)[0] for m in refs]) if centred else refs.copy()

    def symmetry(self) -> list:
        """Per class, how the centred map was turned onto the axes of the point group ``sym``
        (:class:`cryolab.validation.align.SymmetryAlignment`: rotation, how symmetric the map is
        before and after, the symmetrised map); computed once per iteration."""
        from ...validation.align import align_symmetry
        with self._lock:
            if self._symmetry is None or self._symmetry[0] != self.iteration:
                px = float(self.session.pixel_size_A)
                refs = np.asarray(self.references, np.float32)
                self._symmetry = (self.iteration, [align_symmetry(centre_map(m)[0], self.sym, px) for m in refs])
            return list(self._symmetry[1])

    @property
    def classes(self) -> np.ndarray:
        """Each particle's most probable class (0-based) in its last mini-batch; -1 if never drawn."""
        return self.session.classes

    def assign(self, progress: bool = False) -> np.ndarray:
        """Classes of all particles against the current maps: one E-step over every particle at
        the resolution of the schedule's last iteration (the maps are not changed; every
        particle's pose and class become this E-step's). Returns the 0-based classes."""
        with self._lock:
            s = self.session
            self._limit_to(self.schedule.at(max(self.iteration - 1, 0)).resolution_A)
            s.estep(progress=progress)
            s.sums = None
            return s.classes.copy()

    # ------------------------------------------------------------------ files
    def save(self, directory, prefix: str = "run") -> str:
        from .files import save_initial_model
        with self._lock:
            return save_initial_model(self, directory, prefix)

    @classmethod
    def resume(cls, directory, iteration: int | None = None, prefix: str = "run") -> "InitialModel":
        from .files import resume_initial_model
        return resume_initial_model(cls, directory, iteration, prefix)

    def state(self) -> dict:
        """The plain state of this object (for the checkpoint JSON)."""
        return {"kind": "initial_model", "iteration": self.iteration, "seed": self.seed, "sym": self.sym,
                "flatten_solvent": self.flatten_solvent, "nonnegative": self.nonnegative,
                "n_starts": self.n_starts, "starts_running": len(self._others),
                "start_scores": [asdict(sc) for sc in self.start_scores],
                "schedule": self.schedule.as_dict(), "history": [asdict(h) for h in self.history]}


@contextmanager
def fudged_noise(session, sigma2_fudge: float):
    """The Session's noise variance multiplied by ``sigma2_fudge`` inside the block, as RELION's
    ``sigma2_fudge``: the E-step's likelihood and the back-projection weights (``1 / sigma2``)
    both see it; the M-step's noise estimate (from the residuals) does not. Restored afterwards."""
    if sigma2_fudge == 1.0:
        yield
        return
    base = session.sigma2
    session.sigma2 = base * float(sigma2_fudge)
    try:
        yield
    finally:
        session.sigma2 = base


def centre_map(volume) -> tuple[np.ndarray, np.ndarray]:
    """``(map, shift_px)``: the map moved by whole pixels (periodic) so that the centre of mass of
    its positive part is pixel ``N // 2``; ``shift_px`` (x, y, z) is how far it moved."""
    moved, shift_zyx = centre_of_mass_roll(np.asarray(volume, np.float32))
    return moved, shift_zyx[::-1].astype(float)


def initial_model(particles, K: int = 1, *, schedule: SGDSchedule | None = None, out_dir=None,
                  prefix: str = "run", progress: bool = True, callback=None, **kw) -> InitialModel:
    """Make ``K`` initial models from ``particles`` alone; returns the finished
    :class:`InitialModel` (``maps()`` gives the centred maps). Keywords as :class:`InitialModel`."""
    im = InitialModel(particles, K, schedule=schedule, **kw)
    im.run(progress=progress, callback=callback, out_dir=out_dir, prefix=prefix)
    return im
