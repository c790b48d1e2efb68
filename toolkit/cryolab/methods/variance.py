"""Bootstrapped 3D variance maps: where in the map do the particles differ? (Penczek et al. 2006,
J. Struct. Biol. 154:168; Zhang et al. 2008.)

From particles with poses (a consensus refinement), ``R`` bootstrap resamples (``P`` particles
drawn with replacement, with their poses and CTFs) are reconstructed; the voxel-wise mean and
variance over the ``R`` maps estimate how much the reconstruction would change with other
particles. Noise alone gives a variance spread over the whole box; a part that is present in some
particles and not in others (a factor, a moving domain) adds variance where it sits.

* :func:`bootstrap_variance` - mean, variance and significance maps (:class:`VarianceMaps`),
  with the resample maps kept for :meth:`VarianceMaps.covariance_at`;
* :func:`half_set_variance` - the same on two random halves, and the correlation of their
  variance maps (heterogeneity is reproducible, noise is not);
* :func:`suggest_mask` - a soft mask around the most variable region, for focused classification
  (:func:`cryolab.methods.focused.focused_class3d`);
* :func:`covariance_at` - which voxels vary together with a chosen one over the resamples.

**Reconstruction.** Every resample is reconstructed as ``reconstruct_stack(resample,
method="wiener", tau2=tau2, sigma2_noise=sigma2)`` would, with ``sigma2`` the white-noise power of
the images' background and ``tau2`` the signal power estimated once, from all particles (method
of moments, :meth:`cryolab.reconstruction.BackProjector.reconstruct`): the same filter for every
resample, so the spread between them is the data's, not the filter's. A plain CTF-corrected
reconstruction (``method="plain"``) divides by the CTF weight, and its variance is dominated by
the few Fourier voxels where that weight is small; use it with ``lowpass_A`` only. All resamples
are filled in one pass over the images (:mod:`cryolab.methods.bootstrap`): each batch is read and
transformed once and added to every resample with the particle's multiplicity.

**Significance (the null).** ``significance = variance / null_variance``: the variance the same
resamples would have if the particles were all alike. The null data set is simulated: the map of
all particles projected at every particle's pose, shift and CTF, plus Gaussian noise with the
images' own noise power spectrum (measured per shell from the residuals image - projection of
the first batch); it is resampled with the same multiplicities and reconstructed with the same
``sigma2`` and ``tau2``. It carries the noise and the uneven coverage of orientations and CTF
zeros, but no heterogeneity; it is smoothed (Gaussian, ``null_smooth_px``) to tame the scatter of
a variance estimated from ``R`` maps. About 1 means "as homogeneous data would vary".

**Low-pass.** Noise spreads its variance over every shell the reconstruction keeps, while a
missing or moving part changes mostly low resolutions: on the demo ribosome with and without
RACK1 (1,500 particles at 6 A, SNR 0.5) the variance map ranks RACK1's voxels above the rest of
the particle with a ROC AUC of 0.73 at full resolution, 0.85 at ``lowpass_A=20``, 0.98 at 30 and
40. By default (``lowpass_A="auto"``) the low-pass comes from the data:
:func:`cryolab.methods.bootstrap.choose_lowpass` keeps 2/3 of the shells up to where the FSC of
two random halves falls to 0.5 (one more pass; 27 A there, AUC 0.956; the result records it and
the FSC). With a low-pass, ``pad=1`` gives the same maps' ranking at a quarter of the time and an
eighth of the memory (``docs/variance.md``). Outside the sphere of diameter ``N`` every map is flattened
(as RELION does), so the maps mean nothing there.

**Memory.** The accumulators of ``R + 1`` sets: ``3 V (R + 1)`` numbers (``dtype``, float32: 4
bytes) with ``V ~ 0.52 (pad N)^3 / 2`` Fourier voxels, times ``(lowpass shell / (N / 2))^3`` with
``lowpass_A``; at 64 px, pad 2, float32: 7.3 MB a set, 0.74 GB for 100 resamples (46 MB at 30 A
with 6 A pixels, 7 MB with ``pad=1`` too). Sets beyond ``memory_GB`` go to further passes over the images. The resample
maps (``keep_maps``) take ``4 N^3 R`` bytes (100 MB at 64 px).

Maps are ``[z, y, x]`` float32 with the box centre at voxel ``N // 2``; positions ``(x, y, z)`` are
in Angstrom from the box centre; the variance is in the map's squared grey-level units.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend import resolve_backend, to_device, to_numpy
from ..errors import CryolabInputError
from ..io import ParticleStack, write_mrc, write_star
from ..masks import soften
from ..reconstruction import tau2_from_fsc
from ..validation import random_halves, soft_sphere_mask
from ..session.files import as_particles
from .bootstrap import AUTO_FSC, choose_lowpass, iter_weighted_sets, resample_counts

__all__ = ["VarianceMaps", "HalfSetVariance", "bootstrap_variance", "half_set_variance", "suggest_mask",
           "covariance_at", "check_inputs", "choose_lowpass", "AUTO_FSC"]



@dataclass
class VarianceMaps:
    """Result of :func:`bootstrap_variance` (maps ``[N, N, N]`` float32; see the module text).

    ``mean``, ``variance`` (unbiased, over the resamples), ``full`` (the map of all particles, as
    the null's model), ``null_variance`` and ``significance`` (None without the null), ``maps``
    ``[R, N, N, N]`` (None unless kept), ``counts`` ``[R, P]`` (multiplicity of each particle in
    each resample), ``tau2`` and ``sigma2_noise`` (the filter; None for plain), ``max_shell``,
    ``lowpass_A`` (the resolution kept, ``N * pixel / max_shell``; None: all) and ``fsc`` (the
    half-set FSC it was chosen from with ``lowpass_A="auto"``, shells ``0 .. N//2``; else None).
    """
    mean: np.ndarray
    variance: np.ndarray
    full: np.ndarray
    pixel_size_A: float
    counts: np.ndarray
    method: str
    tau2: np.ndarray | None
    sigma2_noise: float
    max_shell: int | None
    seed: int
    null_variance: np.ndarray | None = None
    significance: np.ndarray | None = None
    maps: np.ndarray | None = field(default=None, repr=False)
    fsc: np.ndarray | None = field(default=None, repr=False)

    @property
    def lowpass_A(self) -> float | None:
        n = self.mean.shape[-1]
        return None if self.max_shell is None else float(n * self.pixel_size_A / self.max_shell)

    @property
    def n_resamples(self) -> int:
        return int(self.counts.shape[0])

    def covariance_at(self, point_A, correlation: bool = False) -> np.ndarray:
        """:func:`covariance_at` of the kept resample maps."""
        if self.maps is None:
            raise CryolabInputError("the resample maps were not kept (keep_maps=False)", field="maps")
        return covariance_at(self.maps, point_A, self.pixel_size_A, correlation)

    def write(self, folder) -> list[Path]:
        """``mean.mrc``, ``variance.mrc``, (with the null) ``significance.mrc`` and ``lowpass.star`` (the
        low-pass kept, and the half-set FSC it was chosen from) in ``folder``."""
        import pandas as pd
        folder = Path(folder)
        general = {"cryolabVarianceLowpass": "None" if self.lowpass_A is None else self.lowpass_A,
                   "cryolabVarianceLowpassFromFsc": int(self.fsc is not None)}
        blocks = {"general": general}
        if self.fsc is not None:
            blocks["fsc"] = pd.DataFrame({"rlnSpectralIndex": np.arange(self.fsc.size),
                                          "rlnFourierShellCorrelation": self.fsc})
        out = [write_mrc(folder / "mean.mrc", self.mean, self.pixel_size_A),
               write_mrc(folder / "variance.mrc", self.variance, self.pixel_size_A),
               write_star(folder / "lowpass.star", blocks)]
        if self.significance is not None:
            out.append(write_mrc(folder / "significance.mrc", self.significance, self.pixel_size_A))
        return out


@dataclass
class HalfSetVariance:
    """Result of :func:`half_set_variance`: a :class:`VarianceMaps` per half (no null, no maps kept)
    and the Pearson correlation of their variance maps inside ``mask`` (weighted by it)."""
    halves: tuple
    correlation: float
    mask: np.ndarray = field(repr=False)


# --------------------------------------------------------------------------- checks


def check_inputs(particles, n_resamples: int = 100, lowpass_A: float | None = None) -> ParticleStack:
    """The particles (STAR path or stack) after the checks :func:`bootstrap_variance` makes before it
    computes anything: poses and pixel size present, ``n_resamples`` an integer >= 2, ``lowpass_A``
    not beyond Nyquist. Bad input raises :class:`~cryolab.errors.CryolabInputError` naming the file
    and field (front ends call this before they write anything)."""
    stack = _stack(particles)
    _check_resamples(n_resamples)
    _max_shell(stack, lowpass_A)
    return stack


def _stack(particles) -> ParticleStack:
    stack = as_particles(particles)
    if stack.eulers() is None:
        raise CryolabInputError("the particles have no poses (_rlnAngleRot/Tilt/Psi): compute variance "
                                "maps after a refinement", path=stack.star_path, field="_rlnAngleRot")
    if stack.pixel_size_A is None:
        raise CryolabInputError("the pixel size is unknown", path=stack.star_path, field="_rlnImagePixelSize")
    return stack


def _max_shell(stack, lowpass_A):
    if lowpass_A is None or (isinstance(lowpass_A, str) and lowpass_A == "auto"):
        return None
    if isinstance(lowpass_A, str) or not np.isfinite(lowpass_A):
        raise CryolabInputError(f"lowpass_A must be a resolution in Angstrom, 'auto' or None, got {lowpass_A!r}",
                                field="lowpass_A")
    px, n = stack.pixel_size_A, stack.box_size
    if not lowpass_A >= 2 * px:
        raise CryolabInputError(f"lowpass_A {lowpass_A} must be at least the Nyquist resolution {2 * px:g} A",
                                field="lowpass_A")
    return int(np.floor(n * px / lowpass_A))


def _check_resamples(n_resamples) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 2:
        raise CryolabInputError(f"n_resamples must be an integer >= 2 (a variance needs two maps), got "
                                f"{n_resamples}", field="n_resamples")
    return int(n_resamples)


# --------------------------------------------------------------------------- the passes


def _options(stack, lowpass_A, *, seed, ctf, pad, batch_size, dtype, memory_GB, backend):
    """The pass options and the half-set FSC (``"auto"``, :func:`choose_lowpass`) or None."""
    curve, max_shell = None, _max_shell(stack, lowpass_A)
    if isinstance(lowpass_A, str):
        max_shell, curve = choose_lowpass(stack, seed=seed, ctf=ctf, pad=pad, batch_size=batch_size,
                                          xp=resolve_backend(backend))
    return dict(ctf=ctf, pad=pad, max_shell=max_shell, batch_size=batch_size, dtype=dtype, memory_GB=memory_GB,
                xp=resolve_backend(backend)), curve


def _resample_stats(stack, full_sets, counts, *, method, tau2s=None, fsc=None, keep_maps=False, images=None,
                    progress=None, **options):
    """Per group ``g``: the map of ``full_sets[g]`` (its ``tau2`` estimated there, from ``fsc`` when
    given, unless ``tau2s``), then mean, variance (and maps) over the resample sets ``counts[g]``."""
    groups, r, xp = len(counts), counts[0].shape[0], options.get("xp", np)
    lead = [] if tau2s is not None else list(full_sets)
    weights = np.concatenate([np.asarray(lead, np.int32).reshape(-1, len(stack))] + list(counts))
    n = stack.box_size
    out = [dict(tau2=None if tau2s is None else tau2s[g], full=None, total=xp.zeros((n,) * 3),
                total_sq=xp.zeros((n,) * 3), maps=np.empty((r,) + (n,) * 3, np.float32) if keep_maps else None)
           for g in range(groups)]
    max_shell = options.get("max_shell")
    for k, bp in iter_weighted_sets(stack, weights, images=images, progress=progress, **options):
        if k < len(lead):
            o = out[k]
            tau2 = None
            if fsc is not None and method != "plain":
                tau2 = tau2_from_fsc(fsc, bp.weight_spectrum(), whole_map=True)
            o["full"] = to_numpy(bp.reconstruct(method=method, tau2=tau2, max_shell=max_shell))
            tau2 = getattr(bp, "tau2", None) if method != "plain" else None
            o["tau2"] = None if tau2 is None else to_numpy(tau2)
            o["sigma2"] = bp.sigma2_noise
            continue
        g, j = divmod(k - len(lead), r)
        o = out[g]
        m = bp.reconstruct(method=method, tau2=o["tau2"], max_shell=max_shell).astype(xp.float64)
        o["total"] += m
        o["total_sq"] += m * m
        if keep_maps:
            o["maps"][j] = to_numpy(m)
        o["sigma2"] = bp.sigma2_noise
    for o in out:
        o["mean"] = to_numpy(o["total"] / r).astype(np.float32)
        spread = xp.maximum(o.pop("total_sq") - o.pop("total") ** 2 / r, 0) / (r - 1)
        o["variance"] = to_numpy(spread).astype(np.float32)
    return out


def _null_images(stack, model, *, ctf, seed, batch_size, xp=np):
    """A callable ``rows -> images`` (on ``xp``): ``model`` projected at each particle's pose, shift and
    CTF plus Gaussian noise with the residual power spectrum of the first batch (module text; the
    noise is drawn on the host, so both backends simulate the same images)."""
    from ..engine.forward import particle_images, projector_of
    from ..fourier import irfft2c, radial_average, rfft2c, shell_index
    n, px = stack.box_size, stack.pixel_size_A
    proj = projector_of(to_device(np.asarray(model, np.float32), xp))
    eulers = stack.eulers()

    def clean(rows):
        return particle_images(proj, eulers[rows], stack.origins_A(rows) / px, stack.ctf(rows) if ctf else None, px)

    first = np.arange(min(len(stack), int(batch_size)))
    residual = to_numpy(abs(rfft2c(to_device(stack.read(first), xp) - clean(first))) ** 2)
    power = radial_average(residual, n).mean(axis=0)
    amplitude = to_device(np.sqrt(np.maximum(power, 0) / (n * n))[np.minimum(shell_index(n), n // 2)]
                          .astype(np.float32), xp)

    def images(rows):
        rng = np.random.default_rng([int(seed), 11, int(rows[0])])
        white = to_device(rng.standard_normal((len(rows), n, n)).astype(np.float32), xp)
        return clean(rows) + irfft2c(rfft2c(white) * amplitude, n)
    return images


class _Progress:
    """A tqdm bar per pass over the images (``progress=True``), fed by :func:`iter_weighted_sets`."""

    def __init__(self, show: bool, name: str):
        self.show, self.name, self.bar = show, name, None

    def __call__(self, done, total):
        if self.bar is None:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=self.name, unit="image")
        self.bar.n = done
        self.bar.refresh()
        if done >= total:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def updater(self, name: str):
        self.close()
        self.name = name
        return self if self.show else None


def bootstrap_variance(particles, n_resamples: int = 100, *, seed: int = 0, ctf: bool = True,
                       lowpass_A: float | str | None = "auto", method: str = "wiener", fsc=None, null: bool = True,
                       null_smooth_px: float = 2.0, keep_maps: bool = True, pad: float = 2,
                       batch_size: int = 256, dtype=np.float32, memory_GB: float = 2.0,
                       progress: bool = False, backend: str | None = None) -> VarianceMaps:
    """Bootstrapped variance of the 3D reconstruction of ``particles`` (a STAR path or
    :class:`~cryolab.io.ParticleStack` with poses); see the module text for the method, the null
    and the memory. Returns :class:`VarianceMaps`.

    ``n_resamples``: ``R >= 2``; ``seed``: the resamples
    (:func:`~cryolab.methods.bootstrap.resample_counts`) and the null's noise; ``ctf``: CTF-weighted
    insertion (``C X`` and ``C^2``); ``lowpass_A``: insert and reconstruct only to this resolution
    (Angstrom; a hard edge at shell ``floor(N * pixel / lowpass_A)``; less memory; heterogeneity is
    usually at low resolution, see ``docs/variance.md``); ``"auto"`` (default): chosen from the
    half-set FSC (:func:`choose_lowpass`, one more pass; the result's ``lowpass_A`` and ``fsc``);
    None: every shell; ``method``: ``"wiener"`` (default) or
    ``"plain"``; ``fsc``: an FSC curve (shells ``0 .. N//2``, e.g. of a refinement's half-maps)
    that sets ``tau2`` as ``relion_reconstruct --fsc`` does, instead of the estimate; ``null``: also
    the null variance and the significance (a second pass, over simulated images);
    ``null_smooth_px``: Gaussian sigma (voxels) of the null's smoothing; ``keep_maps``: keep the
    resample maps (for :meth:`VarianceMaps.covariance_at`); ``pad``, ``dtype``: oversampling and
    real dtype of the accumulators; ``batch_size``: images read at a time; ``memory_GB``: bound on
    the accumulators (more passes over the images beyond it); ``progress``: tqdm bars; ``backend``:
    ``"numpy"``, ``"cupy"`` or None (``CRYOLAB_BACKEND``), where the accumulators and the
    reconstructions live (the results come back as NumPy arrays).

    The result's ``counts`` say which particles made each resample: ``ParticleStack.subset(
    cryolab.methods.bootstrap.resampled_rows(counts[r]))`` is resample ``r`` as a STAR file would
    hold it (a particle drawn ``m`` times appears ``m`` times).
    """
    stack = _stack(particles)
    r = _check_resamples(n_resamples)
    if method not in ("wiener", "plain"):
        raise CryolabInputError(f"method must be 'wiener' or 'plain', got {method!r}", field="method")
    options, curve = _options(stack, lowpass_A, seed=seed, ctf=ctf, pad=pad, batch_size=batch_size, dtype=dtype,
                              memory_GB=memory_GB, backend=backend)
    counts = resample_counts(len(stack), r, seed)
    bar = _Progress(progress, "")
    (o,) = _resample_stats(stack, [np.ones(len(stack), np.int32)], [counts], method=method, fsc=fsc,
                           keep_maps=keep_maps, progress=bar.updater("resamples"), **options)
    result = VarianceMaps(mean=o["mean"], variance=o["variance"], full=o["full"], pixel_size_A=stack.pixel_size_A,
                          counts=counts, method=method, tau2=o["tau2"], sigma2_noise=o["sigma2"],
                          max_shell=options["max_shell"], seed=int(seed), maps=o["maps"], fsc=curve)
    if null:
        images = _null_images(stack, o["full"], ctf=ctf, seed=seed, batch_size=batch_size, xp=options["xp"])
        (z,) = _resample_stats(stack, None, [counts], method=method, tau2s=[o["tau2"]], images=images,
                               sigma2_noise=o["sigma2"], progress=bar.updater("null"), **options)
        result.null_variance = _smooth(z["variance"], null_smooth_px)
        floor = 1e-6 * float(result.null_variance.max())
        result.significance = (result.variance / np.maximum(result.null_variance, floor)).astype(np.float32)
    bar.close()
    return result


def _smooth(volume, sigma_px):
    if not sigma_px:
        return volume
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(volume, float(sigma_px), mode="nearest").astype(np.float32)


def _masked_correlation(a, b, mask) -> float:
    w = np.asarray(mask, np.float64)
    a, b = (np.asarray(x, np.float64) for x in (a, b))
    a = a - (w * a).sum() / w.sum()
    b = b - (w * b).sum() / w.sum()
    return float((w * a * b).sum() / np.sqrt((w * a * a).sum() * (w * b * b).sum()))


def half_set_variance(particles, n_resamples: int = 100, *, seed: int = 0, mask=None, ctf: bool = True,
                      lowpass_A: float | str | None = "auto", method: str = "wiener", pad: float = 2,
                      batch_size: int = 256, dtype=np.float32, memory_GB: float = 2.0,
                      progress: bool = False, backend: str | None = None) -> HalfSetVariance:
    """Bootstrap variance maps of the two random halves (:func:`cryolab.validation.random_halves`
    with ``seed``; each half resampled within itself, its own ``tau2``), in one pass, and the
    correlation of the two variance maps inside ``mask`` (default: a sphere of diameter 0.8 box
    with a 3-pixel soft edge). Options as :func:`bootstrap_variance`."""
    stack = _stack(particles)
    r = _check_resamples(n_resamples)
    halves = random_halves(len(stack), seed)
    full = [(halves == h).astype(np.int32) for h in (1, 2)]
    counts = [resample_counts(len(stack), r, seed + h, subset=np.flatnonzero(halves == h)) for h in (1, 2)]
    options, curve = _options(stack, lowpass_A, seed=seed, ctf=ctf, pad=pad, batch_size=batch_size, dtype=dtype,
                              memory_GB=memory_GB, backend=backend)
    bar = _Progress(progress, "")
    out = _resample_stats(stack, full, counts, method=method, progress=bar.updater("half-sets"), **options)
    bar.close()
    n = stack.box_size
    mask = soft_sphere_mask(n, 0.4 * n, 3.0) if mask is None else np.asarray(mask, np.float32)
    if mask.shape != (n,) * 3:
        raise CryolabInputError(f"the mask is {mask.shape}, the particles need {(n,) * 3}", field="mask")
    maps = tuple(VarianceMaps(mean=o["mean"], variance=o["variance"], full=o["full"], pixel_size_A=stack.pixel_size_A,
                              counts=c, method=method, tau2=o["tau2"], sigma2_noise=o["sigma2"],
                              max_shell=options["max_shell"], seed=int(seed) + h, fsc=curve)
                 for h, (o, c) in enumerate(zip(out, counts), start=1))
    return HalfSetVariance(maps, _masked_correlation(maps[0].variance, maps[1].variance, mask), mask)


# --------------------------------------------------------------------------- using the maps


def suggest_mask(variance_map, pixel_size_A: float, *, quantile: float = 0.99, threshold: float | None = None,
                 within=None, extend_A: float = 12.0, soft_edge_A: float = 12.0) -> np.ndarray:
    """A soft mask (float32 ``[N, N, N]``) around the most variable region of ``variance_map`` (a
    variance or, better, a significance map), for focused classification.

    Voxels at or above ``threshold`` (default: the ``quantile`` of the map's voxels inside
    ``within``, a mask such as the particle's; the whole box when None) form regions (26-connected);
    the largest one is grown by ``extend_A`` and given a raised-cosine edge of ``soft_edge_A``
    (:func:`cryolab.masks.soften`).
    """
    from scipy import ndimage
    v = np.asarray(variance_map, np.float64)
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise CryolabInputError(f"expected a cubic 3D map, got shape {v.shape}", field="variance_map")
    inside = np.ones(v.shape, bool) if within is None else np.asarray(within) >= 0.5
    if inside.shape != v.shape or not inside.any():
        raise CryolabInputError("'within' must be a non-empty mask of the map's shape", field="within")
    if threshold is None:
        if not 0 < quantile < 1:
            raise CryolabInputError(f"quantile must lie in (0, 1), got {quantile}", field="quantile")
        threshold = float(np.quantile(v[inside], quantile))
    labels, count = ndimage.label((v >= threshold) & inside, structure=np.ones((3, 3, 3)))
    if count == 0:
        raise CryolabInputError(f"no voxel reaches the threshold {threshold:g}", field="threshold")
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return soften(labels == largest, pixel_size_A, soft_edge_A, extend_A)


def covariance_at(maps, point_A, pixel_size_A: float, correlation: bool = False) -> np.ndarray:
    """The covariance (unbiased, over the resamples) between the voxel at ``point_A`` ``(x, y, z)``
    (Angstrom from the box centre, rounded to the nearest voxel) and every voxel of ``maps``
    ``[R, N, N, N]``: positive where the density goes up and down together with that point's
    across the resamples. ``correlation=True``: divided by both standard deviations (in [-1, 1])."""
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[0] < 2:
        raise CryolabInputError(f"expected resample maps [R >= 2, N, N, N], got shape {maps.shape}", field="maps")
    n = maps.shape[-1]
    p = np.asarray(point_A, np.float64).reshape(-1)
    if p.size != 3 or not np.isfinite(p).all():
        raise CryolabInputError(f"point_A must be (x, y, z) in Angstrom, got {point_A}", field="point_A")
    idx = np.rint(p / pixel_size_A).astype(int) + n // 2
    if (idx < 0).any() or (idx >= n).any():
        half = n // 2 * pixel_size_A
        raise CryolabInputError(f"point {tuple(p)} A lies outside the box (-{half:g} .. {half - pixel_size_A:g} A "
                                "from the centre on each axis)", field="point_A")
    x, y, z = idx
    dev = maps - maps.mean(axis=0, dtype=np.float64)
    at = dev[:, z, y, x].astype(np.float64)
    cov = np.tensordot(at, dev, axes=(0, 0)) / (maps.shape[0] - 1)
    if correlation:
        sd = np.sqrt((dev.astype(np.float64) ** 2).sum(axis=0) / (maps.shape[0] - 1))
        cov = cov / np.maximum(sd * sd[z, y, x], 1e-300)
    return cov.astype(np.float32)
