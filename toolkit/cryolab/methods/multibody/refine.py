"""Multi-body refinement (Nakane et al. 2018; RELION's ``relion_refine --multibody_masks``).

From a consensus refinement (particles with poses and half-sets, the consensus map or its half
maps on the data's grey scale) and two or more bodies (:mod:`.bodies`), every iteration:

1. for each body ``b`` and half-set, the images are the particles minus the other bodies'
   projections at their current poses, re-centred on ``b``'s centre of mass
   (:class:`~.images.BodyParticles`);
2. a K=1 :class:`~cryolab.session.Session` per body and half searches locally. The first
   iteration searches around the consensus pose: orientations within 3 sigma of a Gaussian prior
   of ``sigma_angles_deg`` centred on the consensus angles, at HEALPix ``healpix_order`` with
   adaptive ``oversampling``, and offsets with a prior of ``sigma_offset_A`` about the consensus
   origin (the first ``consensus_iterations``, default 1, do so). Each later iteration searches one
   HEALPix order finer (up to ``final_healpix_order``; a body whose posteriors already span the
   fine step stays at its order, see below) around the body's pose of the iteration before,
   within 3 sigma of a Gaussian of the coarse step (RELION's local searches in auto-refinement),
   with offset range and step halved, while the body's Gaussian prior about the consensus stays
   (:meth:`~.images.BodyParticles.orientation_log_prior`), as RELION does; in every iteration
   a body's total rotation from the consensus stays within 3 sigma of that prior. Rotations are about
   the body's centre of mass; the body's mask multiplies its map before projection. A body's new
   pose is, by default (``pose_estimate="mean"``), its posterior mean, not tied to the sampling grid
   (``"best"``: the most probable sample, as RELION);
3. the gold-standard M-step per body (:func:`cryolab.methods.refine.halves_mstep`): half maps,
   FSC and resolution per body, MAP maps with tau2 from the FSC. With ``solvent_correct_fsc``
   (the default, RELION's ``--solvent_correct_fsc``) the FSC is the solvent-corrected one inside
   the body's mask; the next E-step's frequency limit follows the unmasked FSC.

With ``threads > 1`` the E-steps of step 2 (one per body and half-set, independent) run side by
side, each on one BLAS thread: in forked worker processes (``parallel="auto"`` on NumPy where
``os.fork`` exists, or ``"processes"``; :mod:`cryolab.engine.processes`), else in threads. The
poses are the same as with one, the maps equal to float32 rounding (bit for bit when BLAS has
one thread). With ``threads = 1`` each E-step shares out its own batches instead
(:mod:`cryolab.engine.batches`; ``parallel="threads"`` keeps everything in this process).

With posterior-mean poses (``pose_estimate="mean"``, the default) the sampling follows the data:
a body goes one order finer only while the median angular spread of its posteriors
(:attr:`~cryolab.session.Session.angle_sd_deg`, one axis's standard deviation) is below the fine
step it has just searched (order + oversampling). Where the posteriors are wider than the step
(noisy images, a small body) a finer grid would change the mean pose little and cost 8x the
orientations per order, so the body stays at its order for the rest of the run (``orders[b]``:
the order body ``b`` searches next; ``stays[b]``), as RELION's auto-refinement stops refining the
sampling at the angular accuracy of the data.

The other bodies' poses and maps used in step 1 are those of the previous iteration (all
bodies are updated together). Iterations stop once no body goes finer (each searched the final
order or stays at its order), at least one iteration searched around the last poses, every body's
orientations changed by less than its order's step on average and no body's resolution improved
by more than 2 %, or after ``max_iter``. Body maps are kept centred on
their centre of mass (as RELION projects them); :meth:`MultiBodyRefine.body_map` puts them
back in the consensus frame.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...backend import to_numpy
from ...errors import CryolabInputError
from ...engine.forward import projector_of
from ...fourier import phase_shift
from ...geometry import angular_distance, healpix_step_deg
from ...io import ParticleStack
from ...session import Session
from ...settings import method_settings
from ...validation import fsc, random_halves, resolution_at
from ..refine import halves_mstep, joined_map, next_max_shell
from ..stepping import check_parallel, estep_side_by_side
from .bodies import Body, check_bodies
from .images import BodyParticles

__all__ = ["MultiBodyRefine", "MultiBodyIteration", "multibody_refine"]


@dataclass(frozen=True)
class MultiBodyIteration:
    """One iteration: per body the resolution (A, FSC 0.143 of its half maps), the mean change of
    its orientations (deg) and origins (px) since the last iteration, the HEALPix order searched
    and the median angular spread of its posteriors (deg; NaN with best-sample poses); the wall time (s)."""
    iteration: int
    resolution_A: tuple
    mean_angle_change_deg: tuple
    mean_offset_change_px: tuple
    time_s: float
    healpix_order: tuple = ()             # per body, the order searched
    angle_sd_deg: tuple = ()              # per body, the median angular spread of the posteriors


def _centred(volume, centre_px):
    """``volume`` moved so that ``centre_px`` ``(x, y, z)`` is at the box centre."""
    return phase_shift(np.asarray(volume, np.float32), -np.asarray(centre_px, float))


def _halves_of(stack: ParticleStack, seed: int) -> np.ndarray:
    if "rlnRandomSubset" in stack.table.columns:
        subset = stack.table["rlnRandomSubset"].to_numpy(int)
        if set(np.unique(subset)) == {1, 2}:
            return subset
    return random_halves(len(stack), seed)


def _body_diameter_A(mask, pixel_size_A: float, box: int) -> float:
    """Twice the largest distance from the box centre of a centred mask's voxels >= 0.05,
    plus two pixels, at most the box less two pixels (the Session's circular image mask)."""
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)[mask >= 0.05].max()
    return float(min(2 * r + 2, box - 2) * pixel_size_A)


class MultiBodyRefine:
    """A multi-body refinement that can be stepped (see the module text).

    ``sessions[b][h]``: the Session of body ``b`` on half ``h`` (its ``posterior(i)`` shows a
    particle's body posterior); ``images[b][h]``: its :class:`BodyParticles`; ``rows[h]``: the
    particles of each half; ``centres_A [B, 3]``; ``history``; after each iteration ``fsc[b]``,
    ``resolution_A[b]`` and ``half_maps[b]`` (centred, unregularised).
    """

    def __init__(self, particles, reference, bodies: list[Body], *, half_maps=None, healpix_order: int = 3,
                 oversampling: int = 2, offset_range_px: float = 3.0, offset_step_px: float = 1.0,
                 join_halves_A: float = 40.0, seed: int = 0, ctf: bool = True, scale: float = 1.0,
                 final_healpix_order: int | None = None, consensus_iterations: int = 1, threads: int = 1,
                 solvent_correct_fsc: bool = True, pose_estimate: str = "mean", parallel: str = "auto", **kw):
        stack = particles if isinstance(particles, ParticleStack) else ParticleStack.from_star(particles)
        self.particles, self.bodies = stack, list(bodies)
        n, px = stack.box_size, float(stack.pixel_size_A)
        self.n, self.pixel_size_A, self.join_halves_A = n, px, join_halves_A
        self.healpix_order = int(healpix_order)
        self.final_healpix_order = self.healpix_order + 2 if final_healpix_order is None else int(final_healpix_order)
        if self.final_healpix_order < self.healpix_order:
            raise CryolabInputError(f"final_healpix_order ({self.final_healpix_order}) is below healpix_order "
                                    f"({self.healpix_order})", field="final_healpix_order")
        self.offset_range_px, self.offset_step_px = float(offset_range_px), float(offset_step_px)
        for name, value in (("consensus_iterations", consensus_iterations), ("threads", threads)):
            if int(value) < 1:
                raise CryolabInputError(f"{name} must be at least 1, got {value}", field=name)
        self.consensus_iterations = int(consensus_iterations)
        self.threads = int(threads)       # the (body, half-set) E-steps of an iteration run side by side
        self.parallel = check_parallel(parallel)
        self.solvent_correct_fsc = bool(solvent_correct_fsc)
        reference = np.asarray(reference, np.float32)
        self.reference = reference
        self.signal_share = check_bodies(self.bodies, n, px, reference)
        halves = (reference, reference) if half_maps is None else tuple(np.asarray(m, np.float32) for m in half_maps)
        self.subset = _halves_of(stack, seed)
        self.rows = [np.flatnonzero(self.subset == h) for h in (1, 2)]
        self.centres_A = np.array([b.centre_A(px, reference) for b in self.bodies])
        self.sessions, self.images, self.removal_masks = [], [], []
        for b, body in enumerate(self.bodies):
            c_px = self.centres_A[b] / px
            mask_c = np.clip(_centred(body.mask, c_px), 0, 1)
            settings = method_settings("refine", healpix_order=healpix_order, oversampling=oversampling,
                                       sigma_ang_deg=body.sigma_angles_deg, offset_range_px=offset_range_px,
                                       offset_step_px=offset_step_px, firstiter_cc=False, ini_high_A=None,
                                       particle_diameter_A=_body_diameter_A(mask_c, px, n), reference_mask=mask_c,
                                       seed=seed, ctf=ctf, pose_estimate=pose_estimate, **kw)
            start = [body.reference if body.reference is not None else h for h in halves]
            imgs = [BodyParticles(stack.subset(r), c_px, scale=scale) for r in self.rows]
            sess = [Session(im, settings, references=_centred(ref, c_px)[None]) for im, ref in zip(imgs, start)]
            for s in sess:
                s.parallel = self.parallel     # an E-step's own batches: see cryolab.engine.batches
            self.images.append(imgs)
            self.sessions.append(sess)
            # what body b removes of each other body c: c's map under c's mask, less what b keeps
            self.removal_masks.append({c: np.clip(_centred(o.mask * (1 - body.mask), self.centres_A[c] / px), 0, 1)
                                       for c, o in enumerate(self.bodies) if c != b})
        if half_maps is not None:          # the same frequency limit auto-refinement would use next
            curve = to_numpy(fsc(halves[0], halves[1]))
            for sess in self.sessions:
                for s in sess:
                    s.max_shell = next_max_shell(s, curve)
        self.iteration = 0
        self.history: list[MultiBodyIteration] = []
        self.fsc = [None] * len(self.bodies)
        self.resolution_A = [np.inf] * len(self.bodies)
        self.half_maps = [None] * len(self.bodies)
        self._bps = [None] * len(self.bodies)
        self._maps: dict = {}             # joined body maps (centred) of the current iteration
        self.orders = [self.healpix_order] * len(self.bodies)     # what each body searches next
        self.stays = [False] * len(self.bodies)                   # bodies kept at their order
        self.converged = False

    # ------------------------------------------------------------------ poses
    def _joined(self, per_half) -> np.ndarray:
        """``per_half(h)`` (arrays over half ``h``'s particles) put together in input order."""
        parts = [np.asarray(per_half(h), float) for h in range(2)]
        out = np.zeros((len(self.particles),) + parts[0].shape[1:])
        for r, part in zip(self.rows, parts):
            out[r] = part
        return out

    def body_eulers(self, b: int) -> np.ndarray:
        """Body ``b``'s angles ``[N, 3]`` (deg), all particles in input order."""
        return self._joined(lambda h: self.sessions[b][h].eulers)

    def body_origins_px(self, b: int) -> np.ndarray:
        """Body ``b``'s origins ``[N, 2]`` (pixels) in the original images, for its centred map."""
        return self._joined(lambda h: self.images[b][h].original_origins_px(self.sessions[b][h].offsets_px))

    @property
    def consensus_eulers(self) -> np.ndarray:
        return self._joined(lambda h: self.images[0][h].consensus_eulers)

    @property
    def consensus_origins_px(self) -> np.ndarray:
        return self._joined(lambda h: self.images[0][h].consensus_origins_px)

    # ------------------------------------------------------------------ one iteration
    def fine_step_deg(self) -> float:
        """The finest angular step of the last stage (final order with oversampling), degrees."""
        return healpix_step_deg(self.final_healpix_order + self.sessions[0][0].settings.oversampling)

    def order_of(self, iteration: int) -> int:
        """The HEALPix order planned for ``iteration`` (0-based): ``healpix_order`` while the search is
        centred on the consensus, then one finer each iteration, up to the final (a body whose
        posteriors span the fine step stays below it: :attr:`orders`)."""
        return min(self.healpix_order + max(iteration - self.consensus_iterations + 1, 0), self.final_healpix_order)

    def _prepare(self, b: int, h: int) -> None:
        """Centre body ``b``'s search on half ``h`` for the coming iteration (see the module text)."""
        sess, imgs, body = self.sessions[b][h], self.images[b][h], self.bodies[b]
        order = self.orders[b]
        finer = order - self.healpix_order
        if self.iteration < self.consensus_iterations:
            sess.eulers = imgs.consensus_eulers.copy()
            sess.offsets_px = imgs.start_origins_px.copy()
            sigma, imgs.prior_sigma_deg = body.sigma_angles_deg, None
        else:                     # around the last pose, the body's prior about the consensus kept
            sigma, imgs.prior_sigma_deg = healpix_step_deg(order), body.sigma_angles_deg
        sess.set(healpix_order=order, sigma_ang_deg=sigma,
                 offset_range_px=self.offset_range_px / 2 ** finer, offset_step_px=self.offset_step_px / 2 ** finer)
        sess.sigma_offset_px = max(body.sigma_offset_A / self.pixel_size_A, 1e-3)
        imgs.window_deg = 3.0 * body.sigma_angles_deg      # the total rotation about the consensus

    def step(self, progress: bool = False) -> MultiBodyIteration:
        t0 = time.perf_counter()
        B = len(self.bodies)
        before = [(self.body_eulers(b), self.body_origins_px(b)) for b in range(B)]
        searched = list(self.orders)
        others = [[[(projector_of(self.sessions[c][h].references[0], self.removal_masks[b][c]),
                     self.sessions[c][h].eulers.copy(),
                     self.images[c][h].original_origins_px(self.sessions[c][h].offsets_px))
                    for c in range(B) if c != b] for h in range(2)] for b in range(B)]
        jobs = [(b, h) for b in range(B) for h in range(2)]
        for b, h in jobs:
            self.images[b][h].others = others[b][h]
            self._prepare(b, h)

        sessions = [self.sessions[b][h] for b, h in jobs]
        done = estep_side_by_side(sessions, self.threads, self.parallel, progress=progress)
        if not done:
            raise InterruptedError("stopped during the E-step")
        for b in range(B):
            mask = self.sessions[b][0].reference_mask_array() if self.solvent_correct_fsc else None
            curve, res, unfil, bps = halves_mstep(self.sessions[b], "C1", self.join_halves_A, fsc_mask=mask)
            self.fsc[b], self.resolution_A[b], self.half_maps[b], self._bps[b] = curve, res, unfil, bps
        self._maps.clear()
        dang, doff = [], []
        for b in range(B):
            e0, o0 = before[b]
            dang.append(float(np.mean(angular_distance(e0, self.body_eulers(b)))))
            doff.append(float(np.mean(np.linalg.norm(self.body_origins_px(b) - o0, axis=1))))
        spread = [self.angle_spread_deg(b) for b in range(B)]
        self.iteration += 1
        planned = self.order_of(self.iteration)
        oversampling = self.sessions[0][0].settings.oversampling
        # one order finer (as planned) unless the posteriors already span the fine step just searched;
        # a body that stayed once has reached the data's angular accuracy and stays
        self.stays = [st or spread[b] >= healpix_step_deg(o + oversampling)
                      for b, (st, o) in enumerate(zip(self.stays, searched))]
        self.orders = [o if st else min(o + 1, planned) for st, o in zip(self.stays, searched)]
        it = MultiBodyIteration(self.iteration, tuple(float(r) for r in self.resolution_A), tuple(dang), tuple(doff),
                                time.perf_counter() - t0, tuple(searched), tuple(spread))
        self.history.append(it)
        prev = self.history[-2].resolution_A if len(self.history) > 1 else None
        gained = prev is not None and any(r < 0.98 * p for r, p in zip(it.resolution_A, prev))
        # no body goes finer, the poses moved by less than each order's step (what is left is the
        # jitter of noisy particles between neighbouring samples) and no body gained 2 % resolution
        self.converged = (self.iteration >= 2 and self.iteration > self.consensus_iterations
                          and self.orders == searched and not gained
                          and all(d < healpix_step_deg(o) for d, o in zip(dang, searched)))
        return it

    def angle_spread_deg(self, b: int) -> float:
        """Body ``b``'s median angular spread of its posteriors in the last E-step (deg, over both
        halves' particles; NaN where poses were the most probable samples)."""
        v = np.concatenate([s.angle_sd_deg for s in self.sessions[b]])
        return float(np.median(v)) if np.isfinite(v).all() else float("nan")

    def run(self, max_iter: int = 8, progress: bool = True, callback=None, out_dir=None, prefix: str = "run"):
        """Iterate until converged or ``max_iter``; ``callback(self, iteration)`` after each.
        With ``out_dir`` the files of :meth:`save` are written at the end. Returns the history."""
        from ..stepping import run_steps
        return run_steps(self, max_iter - self.iteration, lambda: self.iteration < max_iter and not self.converged,
                         desc="multi-body", unit="it",
                         postfix=lambda it: " ".join(f"body{b + 1} {r:.1f} A" for b, r in enumerate(it.resolution_A)),
                         progress=progress, callback=callback, out_dir=out_dir, prefix=prefix)

    # ------------------------------------------------------------------ maps and files
    def body_map(self, b: int, centred: bool = False) -> np.ndarray:
        """Body ``b``'s map (the halves joined, Wiener-filtered with tau2 from their FSC; before
        the first iteration the mean of its references), centred on its centre of mass or, by
        default, in the consensus frame."""
        if b not in self._maps:           # one reconstruction per body and iteration
            self._maps[b] = (0.5 * (self.sessions[b][0].references[0] + self.sessions[b][1].references[0])
                             if self._bps[b] is None else
                             joined_map(self._bps[b], self.fsc[b], self.n, self.pixel_size_A, self.join_halves_A))
        m = self._maps[b]
        return m.copy() if centred else phase_shift(np.asarray(m, np.float32), self.centres_A[b] / self.pixel_size_A)

    def result(self, with_maps: bool = True):
        """A :class:`~.result.MultiBodyResult` of the current state (poses; maps in the consensus
        frame unless ``with_maps`` is False)."""
        from .result import MultiBodyResult
        B = len(self.bodies)
        return MultiBodyResult(self.particles, self.pixel_size_A, self.centres_A,
                               [b.rotate_relative_to for b in self.bodies], self.consensus_eulers,
                               self.consensus_origins_px, [self.body_eulers(b) for b in range(B)],
                               [self.body_origins_px(b) for b in range(B)],
                               [self.body_map(b) if with_maps else None for b in range(B)],
                               [b.mask for b in self.bodies])

    def body_fsc_against(self, b: int, truth) -> np.ndarray:
        """FSC of body ``b``'s map (consensus frame, times its mask) against ``truth`` times the mask."""
        mask = self.bodies[b].mask
        return to_numpy(fsc(self.body_map(b) * mask, np.asarray(truth, np.float32) * mask))

    def save(self, directory, prefix: str = "run") -> str:
        """Write ``<prefix>_body001.mrc`` ... (consensus frame), ``<prefix>_half{1,2}_body001_unfil.mrc``
        (centred), ``<prefix>_body001_mask.mrc``, ``<prefix>_body001_data.star`` (each particle's
        body pose in the original images: reconstructing it gives the body centred on its centre of
        mass), ``<prefix>_data.star`` (the consensus poses) and ``<prefix>_bodies.json`` (per body:
        centre, resolution, FSC, history). Returns the folder."""
        from ...io import write_mrc, write_particles
        from ...session.files import write_json
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        px = self.pixel_size_A
        names = self.particles.image_names_for()
        base = self.particles.table.copy()
        base["rlnImageName"] = names
        base["rlnRandomSubset"] = self.subset
        write_particles(d / f"{prefix}_data.star", base, self.particles.optics)
        for b in range(len(self.bodies)):
            tag = f"body{b + 1:03d}"
            write_mrc(d / f"{prefix}_{tag}.mrc", self.body_map(b), px)
            write_mrc(d / f"{prefix}_{tag}_mask.mrc", self.bodies[b].mask, px)
            if self.half_maps[b] is not None:
                for h in range(2):
                    write_mrc(d / f"{prefix}_half{h + 1}_{tag}_unfil.mrc", self.half_maps[b][h], px)
            t = base.drop(columns=[c for c in ("rlnOriginX", "rlnOriginY") if c in base])
            e, o = self.body_eulers(b), self.body_origins_px(b) * px
            t["rlnAngleRot"], t["rlnAngleTilt"], t["rlnAnglePsi"] = e[:, 0], e[:, 1], e[:, 2]
            t["rlnOriginXAngst"], t["rlnOriginYAngst"] = o[:, 0], o[:, 1]
            write_particles(d / f"{prefix}_{tag}_data.star", t, self.particles.optics)
        write_json(d / f"{prefix}_bodies.json", {
            "pixel_size_A": px, "centres_A": self.centres_A.tolist(),
            "signal_share": [float(v) for v in self.signal_share],
            "bodies": [{"rotate_relative_to": b.rotate_relative_to, "sigma_angles_deg": b.sigma_angles_deg,
                        "sigma_offset_A": b.sigma_offset_A, "resolution_A": float(self.resolution_A[i]),
                        "fsc": None if self.fsc[i] is None else [float(v) for v in self.fsc[i]]}
                       for i, b in enumerate(self.bodies)],
            "history": [asdict(h) for h in self.history]})
        return str(d)


def multibody_refine(particles, reference, bodies, *, max_iter: int = 8, out_dir=None, prefix: str = "run",
                     progress: bool = True, callback=None, **kw) -> MultiBodyRefine:
    """Run a :class:`MultiBodyRefine` to convergence (or ``max_iter``) and return it; keywords as
    its constructor (``half_maps``, ``healpix_order``, ``offset_range_px`` ...)."""
    mb = MultiBodyRefine(particles, reference, bodies, **kw)
    mb.run(max_iter, progress=progress, callback=callback, out_dir=out_dir, prefix=prefix)
    return mb
