"""Gold-standard 3D auto-refinement (RELION's ``relion_refine --auto_refine --split_random_halves``).

The particles are split into random halves (``_rlnRandomSubset``), each refined against its
own map by a K=1 :class:`~cryolab.session.Session`. After every E-step:

1. the unregularised half maps give the gold-standard FSC and the resolution (FSC 0.143);
2. the halves' Fourier sums are joined below ``join_halves_A`` (40 A), so both halves keep
   the same low-resolution frame;
3. each half's MAP reconstruction uses ``tau2`` from the FSC (``SSNR = FSC / (1 - FSC)``,
   ``tau2_fudge`` 1), and the next iteration looks at frequencies a few shells beyond the
   resolution.

Automatic sampling (RELION's rules): an iteration *without resolution gain* is one whose
resolution is not better than the best so far; one *without large changes* is one whose mean
angular change is not below 3/4 of the smallest so far (or below a tenth of the angular step). When both have happened, the angular
sampling is refined (HEALPix order + 1, offset step and range halved) unless it is already
fine enough for the resolution (the step moves the particle's edge by less than half the
resolution); from ``local_healpix_order`` on, searches are local (``sigma_ang`` = 2 x the
fine angular step). Converged = fine enough sampling and both counters reached: one last
iteration uses all frequencies, the halves give the final FSC and resolution, and the
average is post-processed (:func:`cryolab.validation.postprocess`).

The two halves' E-steps run side by side in forked worker processes, half the cores each
(``parallel="auto"`` on NumPy where ``os.fork`` exists and BLAS has more than one thread; see
:func:`cryolab.methods.stepping.estep_side_by_side`), else one after the other; the same poses.
``parallel="threads"`` keeps every E-step in this process.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..backend import to_numpy
from ..engine.threads import pool_size
from ..fourier import lowpass
from ..geometry import healpix_step_deg
from ..reconstruction import tau2_from_fsc
from ..session import Session, Settings
from ..settings import method_settings
from ..validation import (fsc, masked_fsc, postprocess, random_halves, resolution_at, resolution_shell_at,
                          soft_sphere_mask)
from .stepping import check_parallel, estep_side_by_side, uses_processes

__all__ = ["refine", "AutoRefine", "RefineIteration", "halves_fsc", "halves_mstep", "joined_map",
           "next_max_shell"]


def halves_fsc(half1, half2, fsc_mask=None, seed: int = 0) -> np.ndarray:
    """The half maps' FSC; with ``fsc_mask`` (``[N, N, N]`` in [0, 1]) RELION's solvent-corrected
    FSC inside it (``--solvent_correct_fsc``: the masked FSC corrected by that of the maps with
    phases randomised from where the unmasked FSC drops below 0.8; the unmasked FSC when it never
    does)."""
    return _solvent_corrected(half1, half2, to_numpy(fsc(half1, half2)), fsc_mask, seed)


def _solvent_corrected(half1, half2, unmasked, fsc_mask, seed: int = 0) -> np.ndarray:
    """:func:`halves_fsc` given the half maps' unmasked FSC ``unmasked`` (returned as it is
    without a mask or when it never drops below 0.8)."""
    below = np.flatnonzero(unmasked[1:] < 0.8)
    if fsc_mask is None or below.size == 0:
        return unmasked
    return masked_fsc(half1, half2, fsc_mask, seed=seed, randomize_from_shell=int(below[0]) + 1)["fsc_corrected"]


def halves_mstep(halves, sym: str = "C1", join_halves_A: float = 40.0, fsc_mask=None):
    """The gold-standard M-step of two K=1 Sessions after their E-steps: unregularised half maps,
    their FSC (:func:`halves_fsc`, inside ``fsc_mask`` when given; zero beyond the frequencies
    used) and resolution (FSC 0.143, A); the halves' sums joined below ``join_halves_A`` (RELION's
    joining of the half-sets at low resolution); each half's MAP map with ``tau2`` from the FSC;
    and the next E-step's frequency limit a few shells beyond where the unmasked FSC drops below
    0.143. Returns ``(fsc, resolution_A, half_maps, back_projectors)``."""
    n, px = halves[0].n, halves[0].pixel_size_A
    bps = [h.sums.bps[0] for h in halves]
    unfil = [to_numpy(bp.reconstruct(method="plain", sym=sym, mask_outside=False)) for bp in bps]
    used = halves[0].sums_pixels.max_shell + 1
    unmasked = np.array(to_numpy(fsc(unfil[0], unfil[1])))                  # computed once for both
    curve = np.array(_solvent_corrected(unfil[0], unfil[1], unmasked, fsc_mask))
    unmasked[used:] = curve[used:] = 0.0                   # beyond the frequencies used
    res = resolution_at(curve, 0.143, n, px)
    _, shells = bps[0].shells()
    low = shells <= n * px / join_halves_A
    for name in ("data", "weight"):
        a, b = getattr(bps[0], name), getattr(bps[1], name)
        tot = a[low] + b[low]
        a[low] = tot
        b[low] = tot
    for h, bp in zip(halves, bps):
        h.tau2 = [tau2_from_fsc(curve, to_numpy(bp.weight_spectrum()))]
        h.mstep()
    for h in halves:
        h.max_shell = next_max_shell(h, unmasked)
    return curve, res, unfil, bps


def next_max_shell(session, curve) -> int:
    """The next E-step's frequency limit after a half-set FSC ``curve``: a few shells (3, or a
    tenth of the box) beyond where it falls below 0.143, at least 4, at most ``session``'s limit."""
    shell = int(resolution_shell_at(curve, 0.143))
    return int(min(session.shell_limit(), max(shell + max(3, session.n // 10), 4)))


def joined_map(bps, curve, n: int, pixel_size_A: float, join_halves_A: float = 40.0, sym: str = "C1") -> np.ndarray:
    """The map of both halves' sums (after :func:`halves_mstep` joined them below
    ``join_halves_A``, so those frequencies count once), Wiener-filtered with tau2 from the
    half-set FSC ``curve`` (``[N, N, N]`` float32)."""
    joined = bps[0].__class__(n, pad=2, xp=bps[0].xp)
    joined.add(bps[0]).add(bps[1])
    _, shells = joined.shells()
    low = shells <= n * pixel_size_A / join_halves_A
    joined.data[low] *= 0.5
    joined.weight[low] *= 0.5
    tau2 = tau2_from_fsc(curve, to_numpy(joined.weight_spectrum()), whole_map=True)
    return to_numpy(joined.reconstruct(method="wiener", tau2=tau2, sym=sym)).astype(np.float32)


@dataclass(frozen=True)
class RefineIteration:
    """One auto-refine iteration: resolution (A, FSC 0.143 of the half maps), the FSC curve,
    the sampling used (HEALPix order, offset step/range in pixels, sigma_ang or None), the mean
    angular (deg) and offset (px) changes, and whether it was the final iteration."""
    iteration: int
    resolution_A: float
    fsc: tuple
    healpix_order: int
    offset_step_px: float
    offset_range_px: float
    sigma_ang_deg: float | None
    mean_angle_change_deg: float
    mean_offset_change_px: float
    max_shell: int
    final: bool
    time_s: float


class AutoRefine:
    """A gold-standard auto-refinement that can be stepped (see the module text).

    ``halves``: the two K=1 Sessions; ``subset``: 1/2 per particle; ``eulers``, ``offsets_px``
    of all particles (input order); ``history``: :class:`RefineIteration` per iteration;
    after convergence ``half_maps`` (unregularised), ``map`` (the joined MAP map),
    ``fsc_curve``, ``resolution_A`` and ``postprocess`` (a PostprocessResult).
    """

    def __init__(self, particles, reference, *, ini_high_A: float = 60.0, healpix_order: int = 2,
                 offset_range_px: float = 5.0, offset_step_px: float = 1.0, sym: str = "C1",
                 particle_diameter_A: float | None = None, ctf: bool = True, seed: int = 0,
                 oversampling: int = 1, local_healpix_order: int = 4, join_halves_A: float = 40.0,
                 firstiter_cc: bool = True, max_healpix_order: int = 8, parallel: str = "auto", **kw):
        from ..io import ParticleStack
        if not isinstance(particles, ParticleStack):
            particles = ParticleStack.from_star(particles)
        self.particles = particles
        self.n, self.pixel_size_A = particles.box_size, float(particles.pixel_size_A)
        self.seed = seed
        self.subset = random_halves(len(particles), seed)
        self.rows = [np.flatnonzero(self.subset == h) for h in (1, 2)]
        ref = lowpass(np.asarray(reference, np.float32), ini_high_A, self.pixel_size_A, ndim=3)
        settings = method_settings("refine", mode="map", healpix_order=healpix_order,
                                   offset_range_px=offset_range_px, offset_step_px=offset_step_px, sym=sym,
                                   particle_diameter_A=particle_diameter_A, ctf=ctf, seed=seed,
                                   oversampling=oversampling, ini_high_A=ini_high_A, firstiter_cc=firstiter_cc,
                                   **kw)
        self.halves = [Session(particles.subset(r), settings, references=ref[None]) for r in self.rows]
        self.sym, self.join_halves_A = sym, join_halves_A
        self.parallel = check_parallel(parallel)
        for h in self.halves:
            h.parallel = self.parallel         # each half's E-step: see cryolab.engine.batches
        self.local_healpix_order, self.max_healpix_order = local_healpix_order, max_healpix_order
        self.diameter_A = self.halves[0].particle_diameter_A
        self.history: list[RefineIteration] = []
        self.iteration = 0
        self.best_resolution_A = np.inf
        self.smallest_angle_change = np.inf
        self.iter_wo_resol_gain = self.iter_wo_large_changes = 0
        self.converged = False
        self._final_next = False
        self.half_maps = self.map = self.fsc_curve = self.postprocess = None
        self.resolution_A = np.inf

    # ------------------------------------------------------------------ merged per-particle state
    def _merged(self, name):
        first = getattr(self.halves[0], name)
        out = np.zeros((len(self.particles),) + first.shape[1:], first.dtype)
        for h, r in zip(self.halves, self.rows):
            out[r] = getattr(h, name)
        return out

    @property
    def eulers(self) -> np.ndarray:
        return self._merged("eulers")

    @property
    def offsets_px(self) -> np.ndarray:
        return self._merged("offsets_px")

    @property
    def settings(self) -> Settings:
        return self.halves[0].settings

    @property
    def references(self) -> np.ndarray:
        """The current map ``[1, N, N, N]`` (the final MAP map once converged, else the halves' mean)."""
        if self.map is not None:
            return self.map[None]
        return 0.5 * (self.halves[0].references + self.halves[1].references)

    # ------------------------------------------------------------------ one iteration
    def fine_step_deg(self) -> float:
        """The finest angular step searched (HEALPix step at order + oversampling)."""
        return healpix_step_deg(self.settings.healpix_order + self.settings.oversampling)

    def step(self, progress: bool = False) -> RefineIteration:
        t0 = time.perf_counter()
        final = self._final_next
        if final:
            for h in self.halves:
                h.max_shell = h.shell_limit()          # the last iteration uses all frequencies
        # the halves side by side in worker processes, half the cores each; in this process one after the other
        side = uses_processes(self.parallel, self.halves[0].xp) and (self.parallel == "processes" or pool_size() > 1)
        if not estep_side_by_side(self.halves, 2 if side else 1, self.parallel, max(1, pool_size() // 2), progress):
            raise InterruptedError("stopped during the E-step")
        curve, res, unfil, bps = halves_mstep(self.halves, self.sym, self.join_halves_A)
        s = self.settings
        changes = [h.history[-1] for h in self.halves]
        w = [len(r) for r in self.rows]
        dang = float(np.average([c.mean_angle_change_deg for c in changes], weights=w))
        doff = float(np.average([c.mean_offset_change_px for c in changes], weights=w))
        self.iteration += 1
        result = RefineIteration(self.iteration, res, tuple(float(v) for v in curve), s.healpix_order,
                                 s.offset_step_px, s.offset_range_px, s.sigma_ang_deg, dang, doff,
                                 int(changes[0].max_shell), final, time.perf_counter() - t0)
        self.history.append(result)
        self.fsc_curve, self.resolution_A, self.half_maps = curve, res, unfil
        if final:
            self._finish(bps, curve)
        else:
            self._update_sampling(res, dang)
        return result

    def _update_sampling(self, res: float, dang: float) -> None:
        if res < self.best_resolution_A - 1e-6:
            self.best_resolution_A, self.iter_wo_resol_gain = res, 0
        else:
            self.iter_wo_resol_gain += 1
        small = dang < 0.1 * self.fine_step_deg()          # negligible next to the sampling
        if self.iteration > 1 and dang < 0.75 * self.smallest_angle_change and not small:
            self.iter_wo_large_changes = 0
        elif self.iteration > 1:
            self.iter_wo_large_changes += 1
        self.smallest_angle_change = min(self.smallest_angle_change, dang) if self.iteration > 1 else np.inf
        if self.iter_wo_resol_gain < 1 or self.iter_wo_large_changes < 1:
            return
        if self.fine_enough(res):
            self.converged = self._final_next = True
            return
        s = self.settings
        order = s.healpix_order + 1
        step = s.offset_step_px / 2
        changes = dict(healpix_order=order, offset_step_px=step, offset_range_px=max(s.offset_range_px / 2, 2 * step))
        if order >= self.local_healpix_order:
            changes["sigma_ang_deg"] = 2.0 * healpix_step_deg(order + s.oversampling)
        for h in self.halves:
            h.set(**changes)
        self.iter_wo_resol_gain = self.iter_wo_large_changes = 0
        self.smallest_angle_change = np.inf

    def fine_enough(self, res_A: float) -> bool:
        """True when the fine angular step moves the particle's edge by less than half the
        resolution, or the HEALPix order is at its maximum."""
        needed = np.degrees(res_A / self.diameter_A)
        return self.fine_step_deg() <= needed or self.settings.healpix_order >= self.max_healpix_order

    def _finish(self, bps, curve) -> None:
        self.map = joined_map(bps, curve, self.n, self.pixel_size_A, self.join_halves_A, self.sym)
        mask = soft_sphere_mask(self.n, self.diameter_A / self.pixel_size_A / 2, edge_px=3.0)
        self.postprocess = postprocess(self.half_maps[0], self.half_maps[1], to_numpy(mask), self.pixel_size_A)
        self._final_next = False

    def run(self, max_iter: int = 25, progress: bool = True, callback=None, out_dir=None, prefix: str = "run"):
        """Iterate until converged (plus the final iteration) or ``max_iter``; returns the history.
        With ``out_dir`` the RELION-named files are written after every iteration."""
        while self.iteration < max_iter and self.map is None and not (self.converged and not self._final_next):
            if self.iteration == max_iter - 1 and not self._final_next:
                self._final_next = True                 # out of iterations: make this one final
            result = self.step(progress=progress)
            if out_dir is not None:
                self.save(out_dir, prefix)
            if callback is not None:
                callback(self, result)
        return self.history

    # ------------------------------------------------------------------ files
    def data_table(self) -> pd.DataFrame:
        """The particle table (input order) with angles, origins and ``_rlnRandomSubset``."""
        from ..session.files import data_table
        parts = [data_table(h) for h in self.halves]
        table = self.particles.table.copy()
        for col in parts[0].columns:
            if col not in table.columns or col.startswith(("rlnAngle", "rlnOrigin", "rlnClass", "rlnLog",
                                                            "rlnMax", "rlnNr", "rlnNorm")):
                vals = np.empty(len(table), dtype=parts[0][col].dtype)
                for p, r in zip(parts, self.rows):
                    vals[r] = p[col].to_numpy()
                table[col] = vals
        table["rlnRandomSubset"] = self.subset
        return table

    def model_blocks(self, reference_name: str) -> dict:
        from ..session.files import model_blocks
        blocks = model_blocks(self.halves[0], [reference_name])
        blocks["model_general"]["rlnCurrentResolution"] = self.resolution_A
        blocks["model_classes"]["rlnEstimatedResolution"] = self.resolution_A
        blocks["model_class_1"]["rlnGoldStandardFsc"] = np.asarray(self.fsc_curve)
        c = np.clip(np.asarray(self.fsc_curve), 0.001, 0.999)
        blocks["model_class_1"]["rlnSsnrMap"] = c / (1 - c)
        return blocks

    def save(self, directory, prefix: str = "run") -> str:
        """``<prefix>_itNNN_half{1,2}_class001.mrc``, ``_itNNN_data.star``, ``_itNNN_model.star``;
        once converged also ``<prefix>_half{1,2}_class001_unfil.mrc``, ``<prefix>_class001.mrc``,
        ``<prefix>_data.star``, ``<prefix>_model.star`` and ``postprocess{.mrc,_masked.mrc,.star}``."""
        from ..io import project_path, write_mrc, write_particles, write_star
        from ..validation import write_postprocess
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        stem = f"{prefix}_it{self.iteration:03d}"
        for i, h in enumerate(self.halves):
            write_mrc(d / f"{stem}_half{i + 1}_class001.mrc", h.references[0], self.pixel_size_A)
        table = self.data_table().assign(rlnImageName=self.particles.image_names_for())
        write_particles(d / f"{stem}_data.star", table, self.particles.optics)
        write_star(d / f"{stem}_model.star", self.model_blocks(project_path(d / f"{stem}_half1_class001.mrc")))
        if self.map is not None:
            for i, m in enumerate(self.half_maps):
                write_mrc(d / f"{prefix}_half{i + 1}_class001_unfil.mrc", m, self.pixel_size_A)
            write_mrc(d / f"{prefix}_class001.mrc", self.map, self.pixel_size_A)
            write_particles(d / f"{prefix}_data.star", table, self.particles.optics)
            write_star(d / f"{prefix}_model.star", self.model_blocks(project_path(d / f"{prefix}_class001.mrc")))
            write_postprocess(self.postprocess, d / "postprocess")
        self._checkpoint(d / stem)
        return str(d / stem)

    # ------------------------------------------------------------------ checkpoints
    _SCALARS = ("iteration", "best_resolution_A", "smallest_angle_change", "iter_wo_resol_gain",
                "iter_wo_large_changes", "converged", "_final_next", "local_healpix_order",
                "max_healpix_order", "join_halves_A", "sym", "diameter_A", "resolution_A", "seed")

    def _checkpoint(self, stem: Path) -> None:
        """``<stem>_optimiser.json`` (this object's state, both halves' settings and history)
        and ``<stem>_half{1,2}_state.npz`` (the halves' arrays): plain files, for :meth:`resume`."""
        from ..session.files import write_json, write_state
        state = {"kind": "refine", "particles_star": str(Path(self.particles.star_path).resolve()),
                 **{k: getattr(self, k) for k in self._SCALARS},
                 "fsc_curve": None if self.fsc_curve is None else [float(v) for v in self.fsc_curve],
                 "history": [asdict(h) for h in self.history],
                 "halves": [write_state(h, f"{stem}_half{i + 1}_state.npz") for i, h in enumerate(self.halves)]}
        write_json(f"{stem}_optimiser.json", state)

    @classmethod
    def resume(cls, directory, iteration: int | None = None, prefix: str = "run", changes=None) -> "AutoRefine":
        """Continue a run from the checkpoint :meth:`save` wrote (the last iteration unless
        given); stepping it gives what the uninterrupted run would have. ``changes``: settings
        to change on the way (where it runs: ``backend``, ``memory_limit_GB``, ...)."""
        from ..errors import CryolabInputError
        from ..io import ParticleStack
        from ..session.files import last_checkpoint, restore
        stem, state = last_checkpoint(directory, prefix, iteration)
        if state.get("kind") != "refine":
            raise CryolabInputError("not an auto-refine checkpoint (a Session's: use Session.resume)",
                                    path=f"{stem}_optimiser.json")
        r = cls.__new__(cls)
        r.parallel = "auto"                    # how this machine runs the halves: not part of the checkpoint
        r.particles = ParticleStack.from_star(state["particles_star"])
        r.n, r.pixel_size_A = r.particles.box_size, float(r.particles.pixel_size_A)
        r.subset = random_halves(len(r.particles), state["seed"])
        r.rows = [np.flatnonzero(r.subset == h) for h in (1, 2)]
        r.halves = [restore(Session, r.particles.subset(rows), hs, f"{stem}_half{i + 1}_state.npz", changes)
                    for i, (rows, hs) in enumerate(zip(r.rows, state["halves"]))]
        for k in cls._SCALARS:
            setattr(r, k, state[k])
        r.history = [RefineIteration(**{**h, "fsc": tuple(h["fsc"])}) for h in state["history"]]
        r.fsc_curve = None if state["fsc_curve"] is None else np.asarray(state["fsc_curve"])
        r.half_maps = r.map = r.postprocess = None
        d = Path(directory)
        if r.converged and not r._final_next and (d / f"{prefix}_class001.mrc").exists():   # a finished run
            from ..io import read_mrc
            r.half_maps = [read_mrc(d / f"{prefix}_half{h}_class001_unfil.mrc")[0] for h in (1, 2)]
            r.map = read_mrc(d / f"{prefix}_class001.mrc")[0]
        return r


def refine(particles, reference, *, ini_high_A: float = 60.0, healpix_order: int = 2,
           offset_range_px: float = 5.0, offset_step_px: float = 1.0, sym: str = "C1",
           particle_diameter_A: float | None = None, max_iter: int = 25, seed: int = 0, ctf: bool = True,
           out_dir=None, prefix: str = "run", progress: bool = True, callback=None, **kw) -> AutoRefine:
    """Gold-standard auto-refinement of ``particles`` from ``reference`` ``[N, N, N]`` (low-pass
    filtered to ``ini_high_A``); returns the :class:`AutoRefine` after convergence (or
    ``max_iter`` iterations). Other keywords (``oversampling``, ``local_healpix_order``,
    ``join_halves_A``, ``firstiter_cc``, Settings fields) are passed on."""
    r = AutoRefine(particles, reference, ini_high_A=ini_high_A, healpix_order=healpix_order,
                   offset_range_px=offset_range_px, offset_step_px=offset_step_px, sym=sym,
                   particle_diameter_A=particle_diameter_A, ctf=ctf, seed=seed, **kw)
    r.run(max_iter, progress=progress, callback=callback, out_dir=out_dir, prefix=prefix)
    return r
