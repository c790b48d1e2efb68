"""One iteration's E-step over particles as plain functions and objects: the engine's driver.

:func:`estep_chunk` takes what an iteration's E-step needs (:class:`EStepInputs`: settings,
references, noise spectrum, class priors, offset prior, current resolution), the particles
(a :class:`~cryolab.io.ParticleStack`, a STAR path, or anything with an ``open()`` that gives
one) and the current offsets/angles of the chunk's particles, and returns plain outputs: a
:class:`ChunkResult` (per-particle assignments) and the M-step accumulators
(:class:`EStepSums`). Sums of several chunks are reduced with :meth:`EStepSums.add`, so the
M-step (:func:`cryolab.engine.update.m_step`) is the same whether the chunks ran one after
the other in one process (:class:`cryolab.session.Session`) or on many workers
(:mod:`cryolab.distributed`).

The sampling is chosen by the settings: a global search (2D in-plane angles or 3D HEALPix
directions x psi, with adaptive oversampling), a local search around each particle's angles
(``sigma_ang_deg``: a Gaussian prior, orientations within 3 sigma), or fixed poses
(``skip_align``: each particle at its own angles and offset, compared with every class).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import get_xp, resolve_backend, to_numpy
from ..reconstruction import BackProjector, BackProjector2D
from ..projection import shift_ramps
from .estep import Scratch, fourier_pixels
from .expectation import NEG, SampleSet, expectation_batch
from .images import prepare_batch
from .keysum import sum_by_key
from .memory import BATCH_SHARE, BYTES_PER_SAMPLE, CACHE_SHARE, accumulator_dtype, available_bytes
from .mstep import shell_sums
from .planar import PlanarSampler
from .spherical import (SphericalSampler, fixed_orientations, grid_directions, local_candidate_rows,
                        local_log_prior)

__all__ = ["EStepInputs", "ChunkResult", "EStepSums", "EStepWorker", "estep_chunk", "read_batch"]


@dataclass
class EStepInputs:
    """Everything an E-step of one iteration needs besides the particles (NumPy arrays, picklable).

    ``sigma2``: the noise power per shell the likelihood uses (already adapted to ``mode``);
    ``mode``: the mode of this iteration (``maxcc`` for a ``firstiter_cc`` first iteration);
    ``coarse_pixels``: pixels of the coarse pass (None: all); ``mask``: the real-space mask.
    """
    settings: object
    references: np.ndarray
    sigma2: np.ndarray
    pdf_class: np.ndarray
    sigma_offset_px: float
    max_shell: int
    mode: str
    coarse_pixels: int | None
    mask: np.ndarray
    pixel_size_A: float


@dataclass
class ChunkResult:
    """Per-particle results of a chunk, in the order of its rows (NumPy arrays of length B).

    ``eulers [B, 3]`` and ``offsets [B, 2]`` are the new best angles and offsets (pixels);
    ``angle_sd_deg`` the posterior's angular spread (deg) where poses are posterior means, else NaN.
    """
    classes: np.ndarray
    eulers: np.ndarray
    offsets: np.ndarray
    pmax: np.ndarray
    n_significant: np.ndarray
    loglik: np.ndarray
    class_posterior: np.ndarray
    angle_sd_deg: np.ndarray
    top_samples: list = field(default_factory=list)

    @classmethod
    def concat(cls, parts) -> "ChunkResult":
        """One result of consecutive parts."""
        names = ("classes", "eulers", "offsets", "pmax", "n_significant", "loglik", "class_posterior", "angle_sd_deg")
        out = {n: np.concatenate([getattr(p, n) for p in parts]) for n in names}
        return cls(**out, top_samples=[t for p in parts for t in p.top_samples])


@dataclass
class EStepSums:
    """M-step accumulators: per-class back-projectors, per-class weight per shell ``[K, shells]``,
    residual power per pixel, offset second moment, class weights ``[K]`` and particle count."""
    bps: list
    w_shell: np.ndarray
    residual: object
    offset_moment: float
    class_weight: np.ndarray
    n: int

    def add(self, other: "EStepSums") -> "EStepSums":
        """Add another chunk's sums to these; returns ``self``."""
        for bp, o in zip(self.bps, other.bps):
            bp.add(o)
        self.w_shell = self.w_shell + other.w_shell
        self.residual = self.residual + other.residual
        self.offset_moment += other.offset_moment
        self.class_weight = self.class_weight + other.class_weight
        self.n += other.n
        return self

    def __getstate__(self):
        # back-projectors hold their array module: send their arrays only (as NumPy)
        state = dict(self.__dict__)
        state["bps"] = [(type(bp), {k: _host(v) for k, v in vars(bp).items() if k != "xp"})
                        for bp in self.bps]
        state["residual"] = _host(self.residual)
        return state

    def __setstate__(self, state):
        bps = []
        for kind, attrs in state["bps"]:
            bp = kind.__new__(kind)
            bp.__dict__.update(attrs, xp=np)
            bps.append(bp)
        self.__dict__.update(state, bps=bps)


def _host(value):
    return to_numpy(value) if type(value).__module__.startswith("cupy") else value


def _open(particles):
    """A ParticleStack from a ParticleStack, a STAR path, or an object with ``open()``."""
    from ..io import ParticleStack
    if isinstance(particles, ParticleStack):
        return particles
    if hasattr(particles, "open"):
        return particles.open()
    return ParticleStack.from_star(particles)


def read_batch(stack, rows, xp, ctf: bool = True):
    """``(images [B, N, N] on xp, CTFParams or None)`` of rows ``rows`` of a ParticleStack."""
    return xp.asarray(stack.read(rows)), (stack.ctf(rows) if ctf else None)


class EStepWorker:
    """The engine of :func:`estep_chunk`: samplers and accumulators of one iteration's E-step.

    ``run(rows, offsets_px, eulers)`` processes one batch (at most ``batch_size`` rows of
    ``particles``); its M-step sums are buffered and added to ``self.sums`` by :meth:`finish`.
    Projections of the references are computed once per worker and cached across its batches.
    """

    def __init__(self, inputs: EStepInputs, particles, pix=None):
        s = self.settings = inputs.settings
        self.inputs = inputs
        self.particles = _open(particles)
        xp = self.xp = resolve_backend(s.backend)
        K, n = inputs.references.shape[0], inputs.references.shape[-1]
        self.dim = inputs.references.ndim - 1
        self.pix = pix = fourier_pixels(n, inputs.max_shell, xp) if pix is None else pix
        refs = xp.asarray(inputs.references)
        budget = available_bytes(xp, s.memory_limit_GB)
        self.accumulator_dtype = dtype = accumulator_dtype(n, K, self.dim, budget)
        # an insertion's temporaries (~40 bytes a corner) within an eighth of the budget
        block = int(min(BackProjector.block_entries, max(1 << 12, budget // 320)))
        if self.dim == 2:
            sampler = PlanarSampler(refs, pix, s.psi_step_deg, s.offset_range_px, s.offset_step_px)
            bps = [BackProjector2D(n, pad=2, xp=xp, dtype=dtype) for _ in range(K)]
        else:
            sampler = SphericalSampler(refs, pix, s.healpix_order, s.offset_range_px, s.offset_step_px)
            bps = [BackProjector(n, pad=2, xp=xp, dtype=dtype) for _ in range(K)]
        for bp in bps:
            bp.block_entries = block
        sampler.cache_bytes = int(min(sampler.cache_bytes, CACHE_SHARE * budget))
        per_orientation = 50 * n * (n // 2 + 1)           # a projected slice and its temporaries
        sampler.project_chunk = int(min(sampler.project_chunk, max(16, CACHE_SHARE * budget // per_orientation)))
        # the fine pass of a batch keeps to the batch's share of the budget, as its coarse pass
        self._max_fine_samples = int(BATCH_SHARE * budget) // BYTES_PER_SAMPLE
        self._scratch = Scratch()             # the scores' buffer, reused by the worker's batches
        self.sampler = sampler
        fixed = self.dim == 3 and s.skip_align
        self.local = self.dim == 3 and not fixed and bool(s.sigma_ang_deg)
        self._directions = None           # the grid's distinct directions, for local searches
        self.coarse = None if (fixed or self.local) else sampler.coarse(inputs.coarse_pixels)
        n_shells = n // 2 + 1
        self.inv_s2 = xp.asarray(1.0 / inputs.sigma2[to_numpy(pix.shell)], dtype=xp.float32)
        # the Gaussian's normalisation, sum of log(2 pi sigma2) over the likelihood pixels (RELION's
        # logsigma2): without it a particle's log-likelihood changes with every new noise estimate
        self.log_norm = float(np.log(2 * np.pi * inputs.sigma2[to_numpy(pix.shell)].astype(np.float64)).sum())
        self.log_pdf = xp.asarray(np.log(np.maximum(inputs.pdf_class, 1e-30)), dtype=xp.float32)
        self.mask = xp.asarray(inputs.mask)
        self.sums = EStepSums(bps, np.zeros((K, n_shells)), 0.0, 0.0, np.zeros(K), 0)
        w_shell = self.sums.w_shell

        def insert(k, orients, D, W):
            sampler.insert(bps[k], orients, D, W)
            w_shell[k] += to_numpy(shell_sums(W.sum(axis=0), pix.shell, n_shells))

        # the M-step buffer (12 bytes an entry, twice that while it is merged) takes at most a
        # quarter of the E-step's memory budget
        self._buffer = _SliceBuffer(sampler, insert, max_entries=int(min(1 << 23, max(1 << 16, budget // 96))))
        self._accumulate = self._buffer.add

    def run(self, rows, offsets_px, eulers) -> ChunkResult:
        """E-step of one batch: rows of ``particles``, their offsets ``[B, 2]`` (px) and angles ``[B, 3]``."""
        s, xp, inp, sums = self.settings, self.xp, self.inputs, self.sums
        images, ctf = read_batch(self.particles, rows, xp, s.ctf)
        X, C = prepare_batch(images, self.pix, self.mask, offsets_px, ctf, inp.pixel_size_A)
        a = 0.5 * (xp.abs(X) ** 2 * self.inv_s2).sum(axis=1)
        coarse, prior, oversampling = self.coarse, None, s.oversampling
        if self.dim == 3 and s.skip_align:
            coarse, prior = self._fixed(eulers, rows)
            oversampling = 0
        elif self.dim == 3 and s.sigma_ang_deg:
            coarse, prior = self._local(eulers, rows)
        res, extra = expectation_batch(
            X, C, self.inv_s2, a, coarse, self.sampler, self.pix, log_pdf_class=self.log_pdf,
            offsets_px=offsets_px, sigma_offset_px=inp.sigma_offset_px, mode=inp.mode,
            oversampling=oversampling, adaptive_fraction=s.adaptive_fraction,
            translation_step_px=s.offset_step_px, accumulate=self._accumulate, orient_log_prior=prior,
            max_fine_samples=self._max_fine_samples, scratch=self._scratch,
            pose_mean=s.pose_estimate == "mean" and prior is not None and not s.skip_align)
        sums.residual = sums.residual + extra["residual"]
        sums.offset_moment += extra["offset_moment"]
        sums.class_weight += res.class_posterior.sum(axis=0)
        sums.n += len(rows)
        new_eulers = np.array(eulers, dtype=float, copy=True)
        if self.dim == 2:
            new_eulers[:, 2] = res.best_orient
        else:
            new_eulers[:] = res.best_orient[:, :3]
        return ChunkResult(res.best_class, new_eulers, offsets_px + res.best_trans, res.pmax,
                           res.n_significant, res.loglik - self.log_norm, res.class_posterior,
                           res.angle_sd_deg, list(res.top_samples))


    def finish(self) -> "EStepSums":
        """The M-step sums of all batches run so far (inserts what is still buffered)."""
        self._scratch = Scratch()                        # the scores' buffer freed before the insertion
        self._buffer.flush()
        return self.sums

    def _local(self, eulers, rows):
        """Local searches: the coarse samples within ``3 sigma_ang`` of any particle of the batch,
        and the per-particle Gaussian log prior (``-inf`` outside each particle's own neighbourhood).
        A particle stack with an ``orientation_log_prior(rows, orients) -> [B, J]`` method adds
        its terms to that prior (multi-body refinement: the body's prior about the consensus)."""
        xp, s, grid = self.xp, self.settings, self.sampler.orientations
        priors = np.asarray(eulers, float)
        extra = getattr(self.particles, "orientation_log_prior", None)

        def prior(orients):
            lp = local_log_prior(priors, orients, s.sigma_ang_deg, s.sym)
            if extra is not None:
                lp = lp + extra(rows, orients)
            return xp.asarray(np.where(np.isfinite(lp), lp, NEG), dtype=xp.float32)

        if self._directions is None:
            self._directions = grid_directions(grid)
        keep = local_candidate_rows(priors, grid, s.sigma_ang_deg, s.sym, directions=self._directions)
        return self.sampler.coarse(self.inputs.coarse_pixels, orientations=grid[keep]), prior

    def _fixed(self, eulers, ids):
        """``skip_align``: each particle is compared, at its own angles and offset, with every class."""
        xp, K = self.xp, self.inputs.references.shape[0]
        rows = fixed_orientations(eulers, ids)
        B = len(rows)
        orients, classes = np.tile(rows, (K, 1)), np.repeat(np.arange(K), B)
        P = self.sampler.project_uncached(classes, orients)          # uncached: each particle once
        trans = np.zeros((1, 2))
        ramps = shift_ramps(self.pix.n, trans, xp, kx=self.pix.kx, ky=self.pix.ky)
        own = np.where(np.arange(B)[:, None] == np.tile(np.arange(B), K)[None, :], 0.0, NEG)
        own = xp.asarray(own, dtype=xp.float32)

        def prior(o):
            return own
        return SampleSet(classes, orients, P, trans, ramps), prior


class _SliceBuffer:
    """Collects per-orientation M-step sums across batches and inserts each orientation once.

    Inserting into the 3D (or 2D) accumulators is the M-step's costly part; batches of a data
    set share most significant orientations, so sums are merged by orientation key first.
    Memory is bounded: the buffer is inserted whenever it holds more than ``max_entries``
    Fourier pixels (D complex64 + W float32: 12 bytes each; at most 2^23, ~100 MB, and a
    quarter of the memory budget, :func:`cryolab.engine.memory.available_bytes`).
    """

    def __init__(self, sampler, insert, max_entries: int = 1 << 23):
        self.sampler, self.insert, self.max_entries = sampler, insert, max_entries
        self.items: dict = {}
        self.entries = 0

    def add(self, k, orients, D, W):
        self.items.setdefault(k, []).append((orients, D, W))
        self.entries += D.shape[0] * D.shape[1]
        if self.entries > self.max_entries:
            self.flush()

    def flush(self):
        for k, parts in self.items.items():
            if len(parts) == 1:
                self.insert(k, *parts[0])
                continue
            orients = np.concatenate([o for o, _, _ in parts])
            keys = self.sampler.keys(np.full(len(orients), k), orients)
            if np.unique(keys).size == keys.size:
                # every orientation once (local searches: each image near its own pose): nothing
                # to merge, so each batch's sums go in as they are, without the concatenation and
                # the permutation by key (~1 GB of rows at order 5); only the order of the
                # additions into the grid differs (float rounding)
                for part in parts:
                    self.insert(k, *part)
                continue
            xp = get_xp(parts[0][1])
            first, D, W = sum_by_key(keys, xp.concatenate([d for _, d, _ in parts]),
                                     xp.concatenate([w for _, _, w in parts]))
            self.insert(k, orients[first], D, W)
        self.items, self.entries = {}, 0


def estep_chunk(inputs: EStepInputs, particles, rows, offsets_px, eulers):
    """E-step of the particles ``rows`` (None: all rows) of ``particles`` (ParticleStack, STAR
    path or :class:`StackRows`), in batches of ``settings.batch_size``.

    ``offsets_px [B, 2]`` and ``eulers [B, 3]``: the particles' current offsets and angles.
    Returns ``(ChunkResult, EStepSums)``.
    """
    worker = EStepWorker(inputs, particles)
    rows = np.arange(len(worker.particles)) if rows is None else np.asarray(rows)
    offsets_px, eulers = np.asarray(offsets_px, float), np.asarray(eulers, float)
    step = inputs.settings.batch_size
    parts = [worker.run(rows[i:i + step], offsets_px[i:i + step], eulers[i:i + step])
             for i in range(0, len(rows), step)]
    return ChunkResult.concat(parts), worker.finish()
