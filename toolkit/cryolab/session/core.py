"""The :class:`Session`: a 2D or 3D classification run that can be stepped (see :mod:`cryolab.session`)."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np

from ..backend import resolve_backend, to_numpy
from ..engine.batches import even_batches, estep_processes, run_batches
from ..engine.driver import EStepInputs
from ..engine.estep import fourier_pixels
from ..engine.initial import initial_references_2d, initial_sigma2
from ..engine.memory import estep_batch_size
from ..engine.subtracted import SubtractedParticles
from ..engine.threads import sharing
from ..engine.update import m_step
from ..errors import CryolabInputError
from ..fourier import shell_index
from ..geometry import healpix_step_deg
from ..masks import check_mask, read_mask
from ..settings import DEFAULT_DIAMETER_FRACTION, IterationResult, Settings
from ..validation import soft_circle_mask
from .checks import check_inputs, check_poses_for_fixed_or_local

__all__ = ["Session"]

#: a class whose prior falls below this share of 1/K is re-seeded from the largest class
RESEED_BELOW = 0.2


class Session:
    """A 2D or 3D classification run that can be stepped.

    2D (reference-free or with references ``[K, N, N]``) samples in-plane angles;
    3D (references ``[K, N, N, N]``, required) samples HEALPix directions x psi.

    >>> # s = Session(stack, K=8, mode="map"); s.step(); s.posterior(0)["classes"].sum() == 1
    """

    def __init__(self, particles, settings: Settings | None = None, references=None, **kw):
        from ..io import ParticleStack
        if not isinstance(particles, ParticleStack):
            particles = ParticleStack.from_star(particles)
        self.particles = particles
        self.settings = replace(settings or Settings(), **kw)
        self.xp = resolve_backend(self.settings.backend)
        self.n = particles.box_size
        self.pixel_size_A = float(particles.pixel_size_A)
        self.iteration = 0
        self.history: list[IterationResult] = []
        self._observers = []
        self._pause = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sums = None          # the E-step's M-step accumulators (EStepSums) until mstep()
        self.sums_pixels = None   # the likelihood pixels (FourierPixels) the sums were made on
        self.last_estep_s = 0.0   # wall time of the last E-step (seconds)
        self.parallel = "auto"    # E-steps in worker processes where they pay (cryolab.engine.batches)
        N = len(particles)
        K = self.settings.K
        origins = particles.origins_A()
        self.offsets_px = (np.zeros((N, 2)) if origins is None else np.asarray(origins, float) / self.pixel_size_A)
        self.classes = np.full(N, -1)
        self.eulers = np.zeros((N, 3))                 # rot, tilt, psi (deg); 2D: psi only
        self.pmax = np.zeros(N)
        self.n_significant = np.zeros(N, int)
        self.angle_sd_deg = np.full(N, np.nan)      # posterior angular spread (deg) where poses are means
        self.loglik = np.zeros(N)
        self.class_posterior = np.full((N, K), 1.0 / K)
        self.top_samples: list = [None] * N
        self.pdf_class = np.full(K, 1.0 / K)
        self.sigma_offset_px = max(self.settings.offset_range_px, 1.0)
        check_inputs(self, len(particles))
        diameter_px = self.particle_diameter_A / self.pixel_size_A
        self.mask = soft_circle_mask(self.n, diameter_px / 2, edge_px=max(2.0, self.n / 32), xp=self.xp)
        self.sigma2 = initial_sigma2(particles, self.mask, seed=self.settings.seed, xp=self.xp)
        self.references = (initial_references_2d(particles, K, self.mask, self.offsets_px,
                                                 seed=self.settings.seed, batch_size=self.settings.batch_size,
                                                 ctf=self.settings.ctf, xp=self.xp)
                           if references is None
                           else np.asarray(references, dtype=np.float32).copy())
        self.dim = self.references.ndim - 1
        if self.references.shape != (K,) + (self.n,) * self.dim:
            raise CryolabInputError(f"references must have shape {(K,) + (self.n,) * 2} (2D) or "
                                    f"{(K,) + (self.n,) * 3} (3D), got {self.references.shape}",
                                    field="references")
        if self.dim == 2 and (self.settings.skip_align or self.settings.sigma_ang_deg
                              or self.settings.reference_mask is not None):
            raise CryolabInputError("skip_align, sigma_ang_deg and reference_mask need 3D references",
                                    field="references")
        self.tau2 = None       # per-class signal power for the M-step (None: from the reference power)
        if self.dim == 3:
            e = particles.eulers()
            if e is not None:
                self.eulers = np.asarray(e, float).copy()
            if self.settings.skip_align or self.settings.sigma_ang_deg:
                check_poses_for_fixed_or_local(self)
        ini = self.settings.ini_high_A
        self.ini_high_A = ini
        self.max_shell = (self._shell_of(ini) if ini else max(4, self.n // 4))
        self.max_shell = min(self.max_shell, self.shell_limit())

    @property
    def psi(self) -> np.ndarray:
        """In-plane angle of each particle's best orientation (degrees)."""
        return self.eulers[:, 2]

    @psi.setter
    def psi(self, value) -> None:
        self.eulers[:, 2] = value

    @property
    def particle_diameter_A(self) -> float:
        """The mask diameter in Angstrom: ``settings.particle_diameter_A`` or, when unset,
        :data:`cryolab.settings.DEFAULT_DIAMETER_FRACTION` of the box."""
        d = self.settings.particle_diameter_A
        return float(d) if d else DEFAULT_DIAMETER_FRACTION * self.n * self.pixel_size_A

    # ------------------------------------------------------------------ set-up
    def _shell_of(self, resolution_A: float) -> int:
        return int(np.floor(self.n * self.pixel_size_A / resolution_A))

    def shell_limit(self) -> int:
        """The highest Fourier shell the likelihood may use (Nyquist - 1, or ``resolution_limit_A``)."""
        lim = self.n // 2 - 1
        if self.settings.resolution_limit_A:
            lim = min(lim, self._shell_of(self.settings.resolution_limit_A))
        return max(lim, 2)

    # ------------------------------------------------------------------ stepping
    def estep(self, progress: bool = False, rows=None) -> None:
        """E-step over all particles (in batches); accumulates the sums the M-step needs.

        ``rows``: only these particles (a mini-batch, e.g. of stochastic EM); the others keep
        their poses and classes, and the sums hold the mini-batch alone.

        The work is :class:`cryolab.engine.driver.EStepWorker`'s: on batches in this process or in worker
        processes (``parallel``: :mod:`cryolab.engine.batches`), or, with ``settings.scheduler``, in chunks
        on a dask cluster (:mod:`cryolab.distributed`); the sums are added up, the M-step is the same.
        Afterwards ``sums`` holds the accumulators and ``last_estep_s`` the wall time.
        """
        from ..distributed import estep_on_cluster
        t0 = time.perf_counter()
        s, N = self.settings, len(self.particles)
        pix = fourier_pixels(self.n, self.max_shell, self.xp)
        inputs = self.estep_inputs(pix)
        # per-particle results are buffered and committed together once the E-step is complete,
        # so a stop in the middle leaves the session as it was after the last iteration
        new = dict(classes=self.classes.copy(), eulers=self.eulers.copy(), offsets=self.offsets_px.copy(),
                   pmax=self.pmax.copy(), n_significant=self.n_significant.copy(), loglik=self.loglik.copy(),
                   class_posterior=self.class_posterior.copy(), top_samples=list(self.top_samples),
                   angle_sd_deg=self.angle_sd_deg.copy())

        def store(idx, r):
            new["classes"][idx], new["eulers"][idx], new["offsets"][idx] = r.classes, r.eulers, r.offsets
            new["pmax"][idx], new["n_significant"][idx], new["loglik"][idx] = r.pmax, r.n_significant, r.loglik
            new["class_posterior"][idx], new["angle_sd_deg"][idx] = r.class_posterior, r.angle_sd_deg
            for i, b in enumerate(idx):
                new["top_samples"][b] = r.top_samples[i]

        order, size = self._batch_order(pix)
        if rows is not None:
            if s.scheduler:
                raise CryolabInputError("an E-step over a subset of particles runs in this process only",
                                        field="scheduler")
            rows = np.asarray(rows)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(int)
            if rows.size == 0 or rows.min() < 0 or rows.max() >= N:
                raise CryolabInputError(f"rows must be particle indices in 0 .. {N - 1} (or a mask of {N})",
                                        field="rows")
            chosen = np.zeros(N, bool)
            chosen[rows] = True
            order, N = order[chosen[order]], int(chosen.sum())
        workers = 1 if s.scheduler else estep_processes(self.parallel, self.xp, -(-N // size),
                                                        (self.n, s.K, self.dim), s.memory_limit_GB)
        if workers > 1:
            with sharing(workers):                 # each worker's batches within its memory share
                size = min(size, self._batch_order(pix)[1])
        batches = even_batches(order, size, workers)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(batches), desc=f"iteration {self.iteration + 1} E-step",
                       unit="chunk" if s.scheduler else "batch")
        if s.scheduler:
            if isinstance(self.particles, SubtractedParticles):
                raise CryolabInputError("particles subtracted as they are read run in this process only: "
                                        "write them with subtract_particles (cryolab subtract) to use a scheduler",
                                        field="scheduler")
            inputs.settings = replace(s, batch_size=size)
            sums = estep_on_cluster(s.scheduler, inputs, self.particles, self.offsets_px, self.eulers, store,
                                    stop=self._stop, progress=bar)
        else:
            sums = run_batches(inputs, self.particles, pix, batches, self.offsets_px, self.eulers, store,
                               workers, stop=self._stop, progress=bar)
        if bar is not None:
            bar.close()
        if sums is None:
            return
        self._changes = self._assignment_changes(new, None if rows is None else order)
        self.classes, self.eulers, self.offsets_px = new["classes"], new["eulers"], new["offsets"]
        self.pmax, self.n_significant, self.loglik = new["pmax"], new["n_significant"], new["loglik"]
        self.class_posterior, self.top_samples = new["class_posterior"], new["top_samples"]
        self.angle_sd_deg = new["angle_sd_deg"]
        self.sums, self.sums_pixels = sums, pix
        self.last_estep_s = time.perf_counter() - t0

    def _batch_order(self, pix=None):
        """Order of the particles in the E-step and the batch size. Local searches visit only
        the union of a batch's neighbourhoods: batches are then small and made of particles with
        nearby orientations (sorted by nearest HEALPix direction at order 2, nested, then psi)."""
        N, s = len(self.particles), self.settings
        pix = fourier_pixels(self.n, self.max_shell, self.xp) if pix is None else pix
        size = estep_batch_size(s, s.K, self.dim, self._coarse_pixels(pix) or pix.size, self.xp)
        if self.dim != 3 or not s.sigma_ang_deg or s.skip_align:
            return np.arange(N), size
        from ..geometry import euler_to_direction, healpix_pix2ang
        theta, phi = healpix_pix2ang(4, np.arange(192), nest=True)
        grid = np.stack([np.cos(phi) * np.sin(theta), np.sin(phi) * np.sin(theta), np.cos(theta)], axis=-1)
        nearest = np.argmax(euler_to_direction(self.eulers[:, 0], self.eulers[:, 1]) @ grid.T, axis=1)
        return np.lexsort((np.mod(self.eulers[:, 2], 360.0), nearest)), min(size, 16)

    #: the attributes an E-step sets (see :meth:`estep_state`)
    ESTEP_STATE = ("classes", "eulers", "offsets_px", "pmax", "n_significant", "loglik", "class_posterior",
                   "top_samples", "angle_sd_deg", "sums", "sums_pixels", "last_estep_s", "_changes")

    def estep_state(self) -> dict:
        """What the last E-step set, for a copy of this session to take over (:meth:`set_estep_state`)."""
        return {k: getattr(self, k) for k in self.ESTEP_STATE}

    def set_estep_state(self, state: dict) -> None:
        for k in self.ESTEP_STATE:
            setattr(self, k, state[k])

    def estep_inputs(self, pix=None):
        """The plain inputs (:class:`cryolab.engine.driver.EStepInputs`) of the coming E-step."""
        pix = fourier_pixels(self.n, self.max_shell, self.xp) if pix is None else pix
        return EStepInputs(self.settings, self._masked_references(), self._sigma2_for_mode(), self.pdf_class,
                           self.sigma_offset_px, self.max_shell, self.mode_now, self._coarse_pixels(pix),
                           to_numpy(self.mask), self.pixel_size_A)

    def reference_mask_array(self):
        """The ``reference_mask`` as an array ``[N, N, N]`` (None without one), checked by
        :func:`cryolab.masks.check_mask` (box, pixel size, values in [0, 1], not empty or full)."""
        m = self.settings.reference_mask
        if m is None:
            return None
        if getattr(self, "_mask_source", None) is not m:
            if isinstance(m, (str, bytes)) or hasattr(m, "__fspath__"):
                arr = read_mask(m, self.n, self.pixel_size_A)
            else:
                arr = check_mask(m, self.n)
            self._mask_source, self._mask_array = m, arr
        return self._mask_array

    def _masked_references(self):
        mask = self.reference_mask_array()
        return self.references if mask is None else self.references * mask

    @property
    def mode_now(self) -> str:
        """The mode of the coming iteration (``maxcc`` for the first one with ``firstiter_cc``)."""
        return "maxcc" if (self.settings.firstiter_cc and self.iteration == 0) else self.settings.mode

    def _coarse_pixels(self, pix) -> int | None:
        """Pixels of the coarse pass (RELION's coarse image size): the resolution at which the
        coarse angular step moves the particle's edge by less than a pixel, with a safety factor."""
        s = self.settings
        if s.oversampling == 0 or self.mode_now == "maxcc" or (self.dim == 3 and s.skip_align):
            return None
        step = s.psi_step_deg if self.dim == 2 else healpix_step_deg(s.healpix_order)
        diameter_A = self.particle_diameter_A
        coarse_res_A = step / 360.0 * np.pi * diameter_A / (1.5 if self.dim == 2 else 1.2)
        shell = max(int(np.ceil(self.n * self.pixel_size_A / coarse_res_A)), 4)
        return None if shell >= pix.max_shell else pix.count_within(shell)

    def _sigma2_for_mode(self) -> np.ndarray:
        if self.mode_now == "maxcc":
            return np.ones_like(self.sigma2)
        if self.mode_now == "ml":   # white noise: one sigma for all frequencies
            npix = np.bincount(shell_index(self.n).ravel(), minlength=self.n)[: self.sigma2.size]
            return np.full_like(self.sigma2, (self.sigma2 * npix).sum() / npix.sum())
        return self.sigma2

    def _assignment_changes(self, new, rows=None) -> dict:
        """Share of changed classes, mean angle and offset changes; for a mini-batch (``rows``)
        among its particles that had been assigned before."""
        idx = slice(None) if rows is None else np.asarray(rows)[self.classes[rows] >= 0]
        if rows is not None and idx.size == 0:
            return dict(changed=1.0, dangle=float("nan"), doff=float("nan"))
        old_classes, old_eulers, old_offsets = self.classes[idx], self.eulers[idx], self.offsets_px[idx]
        new = {k: new[k][idx] for k in ("classes", "eulers", "offsets")}
        had = old_classes >= 0
        changed = float(np.mean(new["classes"][had] != old_classes[had])) if had.any() else 1.0
        if self.dim == 2:
            dpsi = np.abs((new["eulers"][:, 2] - old_eulers[:, 2] + 180) % 360 - 180)
        else:
            from ..geometry import angular_distance
            dpsi = angular_distance(new["eulers"], old_eulers)
        doff = np.linalg.norm(new["offsets"] - old_offsets, axis=1)
        return dict(changed=changed, dangle=float(np.mean(dpsi)), doff=float(doff.mean()))

    def mstep(self) -> IterationResult:
        """M-step (:func:`cryolab.engine.update.m_step`): new references (MAP/ML/average), noise
        spectrum, class priors, offset prior; then empty classes are re-seeded and the next
        iteration's resolution chosen. Returns the iteration's :class:`IterationResult`."""
        if self.sums is None:
            raise RuntimeError("mstep() needs a completed estep() first")
        t0 = time.perf_counter()
        s, mode = self.settings, self.mode_now
        up = m_step(self.sums, self.sums_pixels, self.references, self.sigma2, mode=mode,
                    pixel_size_A=self.pixel_size_A, tau2=self.tau2, tau2_fudge=s.tau2_fudge, sym=s.sym,
                    center_classes=s.center_classes)
        self.references, self.pdf_class = up.references, up.pdf_class
        if s.reseed_empty_classes and s.K > 1:
            for k in np.flatnonzero(self.pdf_class < RESEED_BELOW / s.K):
                self._reseed(k)
        self.sigma2, self.sigma_offset_px = up.sigma2, up.sigma_offset_px
        if mode == "map":
            beyond = max(up.resolution_shells) + max(3, self.n // 10)
            self.max_shell = int(min(self.shell_limit(), max(beyond, 4)))
        elif s.mode != "map":
            self.max_shell = self.shell_limit()     # ml / maxcc: all frequencies up to the limit
        self.iteration += 1
        ch = self._changes
        result = IterationResult(
            iteration=self.iteration, loglik=float(self.loglik.sum()),
            class_distribution=tuple(float(x) for x in self.pdf_class), mean_pmax=float(self.pmax.mean()),
            changed_assignments=ch["changed"], mean_angle_change_deg=ch["dangle"],
            mean_offset_change_px=ch["doff"], resolution_A=up.resolution_A,
            ssnr=tuple(tuple(float(v) for v in d) for d in up.ssnr), sigma2=tuple(float(v) for v in self.sigma2),
            max_shell=int(self.sums_pixels.max_shell), sigma_offset_px=self.sigma_offset_px,
            time_s=time.perf_counter() - t0 + self.last_estep_s)
        self.history.append(result)
        self.sums = self.sums_pixels = None
        self.last_estep_s = 0.0
        for fn in list(self._observers):
            fn(self, result)
        return result

    def step(self, progress: bool = False) -> IterationResult:
        """One iteration: E-step then M-step. Returns its :class:`IterationResult`."""
        with self._lock:
            self.estep(progress=progress)
            if self.sums is None:
                raise InterruptedError("stopped during the E-step")
            return self.mstep()

    def run(self, n_iter: int | None = None, callback=None, progress: bool = True, out_dir=None):
        """Run ``n_iter`` iterations (default: the remaining ``settings.n_iter``); returns the history.

        With ``out_dir`` the RELION-named files are written after every iteration (before
        ``callback(session, result)`` is called).
        """
        if out_dir is not None:
            user_callback = callback

            def callback(s, result):
                s.save(out_dir)
                if user_callback is not None:
                    user_callback(s, result)
        n_iter = max(self.settings.n_iter - self.iteration, 0) if n_iter is None else n_iter
        self._stop.clear()
        for _ in range(n_iter):
            while self._pause.is_set() and not self._stop.is_set():
                time.sleep(0.05)
            if self._stop.is_set():
                break
            try:
                result = self.step(progress=progress)
            except InterruptedError:
                break
            if callback is not None:
                callback(self, result)
        return self.history

    def run_async(self, n_iter: int | None = None, callback=None) -> threading.Thread:
        """Run in a background thread so a notebook stays responsive; returns the thread."""
        th = threading.Thread(target=self.run, kwargs=dict(n_iter=n_iter, callback=callback, progress=False),
                              daemon=True)
        self._thread = th
        th.start()
        return th

    def pause(self) -> None:
        """Pause a running ``run``/``run_async`` after the current iteration."""
        self._pause.set()

    def resume_running(self) -> None:
        """Continue after :meth:`pause`."""
        self._pause.clear()

    def stop(self) -> None:
        """Stop a running ``run``/``run_async`` (the current E-step is abandoned)."""
        self._stop.set()
        self._pause.clear()

    def on_iteration(self, fn) -> None:
        """Call ``fn(session, result)`` after every iteration (widgets use this)."""
        self._observers.append(fn)

    # ------------------------------------------------------------------ steering and inspection
    def set(self, **changes) -> None:
        """Change settings between iterations, e.g. ``set(tau2_fudge=4, resolution_limit_A=12)``."""
        with self._lock:
            self.settings = replace(self.settings, **changes)
            if self.dim == 3 and (self.settings.skip_align or self.settings.sigma_ang_deg):
                check_poses_for_fixed_or_local(self)
            self.max_shell = min(self.max_shell, self.shell_limit())

    def posterior(self, i: int) -> dict:
        """Posterior of particle ``i`` from the last E-step.

        ``classes``: probability per class (sums to 1); ``samples``: the most probable
        (class, psi, offset) samples with their probabilities (3D: also ``rot_deg``, ``tilt_deg``);
        ``pmax``.
        """
        top = self.top_samples[i]
        out = {"classes": self.class_posterior[i].copy(), "pmax": float(self.pmax[i]),
               "n_significant": int(self.n_significant[i])}
        if top is not None:
            k, orient, off, prob = top
            orient = np.asarray(orient)
            out["samples"] = {"class": np.asarray(k) + 1, "psi_deg": orient if orient.ndim == 1 else orient[:, 2],
                              "origin_x_px": off[:, 0], "origin_y_px": off[:, 1], "probability": prob}
            if orient.ndim == 2:   # 3D: orientation rows (rot, tilt, psi, pixel, order)
                out["samples"].update(rot_deg=orient[:, 0], tilt_deg=orient[:, 1])
        return out

    def class_members(self, classes) -> np.ndarray:
        """Indices of particles whose best class (1-based numbers) is in ``classes``."""
        return np.flatnonzero(np.isin(self.classes + 1, np.asarray(classes)))

    def select_classes(self, classes):
        """A new ParticleStack of the particles in the kept classes (1-based class numbers)."""
        from .files import data_table
        return self.particles.with_table(data_table(self)).subset(self.class_members(classes))

    def split_class(self, k: int, into: int | None = None) -> None:
        """Split class ``k`` (1-based) in two: its reference, slightly perturbed, replaces class
        ``into`` (1-based; default the smallest class); the next iteration separates them."""
        target = int(np.argmin(self.pdf_class)) if into is None else into - 1
        if target == k - 1:
            return
        rng = np.random.default_rng([self.settings.seed, self.iteration, k, target])
        ref = self.references[k - 1]
        self.references[target] = ref + rng.normal(scale=0.1 * ref.std(), size=ref.shape).astype(np.float32)
        share = (self.pdf_class[k - 1] + self.pdf_class[target]) / 2
        self.pdf_class[k - 1] = self.pdf_class[target] = share

    def _reseed(self, k: int) -> None:
        """An (almost) empty class takes over half of the largest class (see ``reseed_empty_classes``)."""
        self.split_class(int(np.argmax(self.pdf_class)) + 1, into=k + 1)

    def save(self, directory, prefix: str = "run") -> str:
        """Write RELION-named outputs of the current iteration (an array reference mask as
        ``<prefix>_reference_mask.mrc``); see :mod:`cryolab.session.files`."""
        from .files import save
        return save(self, directory, prefix)

    @classmethod
    def resume(cls, directory, iteration: int | None = None, prefix: str = "run", changes=None) -> "Session":
        """Re-create a Session from files written by :meth:`save` and continue from there.
        ``changes``: settings to change on the way (where it runs: ``backend``,
        ``memory_limit_GB``, ``scheduler``, ``batch_size``)."""
        from .files import resume
        return resume(cls, directory, iteration, prefix, changes)

