"""Post-processing of half maps as ``relion_postprocess`` (RELION 3.1).

Phase randomisation and the masked (solvent-corrected) FSC of Chen et al. 2013, high-resolution
noise substitution, Guinier plots and B-factor fits, sharpening, FSC weighting, the whole
:func:`postprocess` pipeline and writing its outputs as RELION names them. B-factors are in
A^2 with RELION's sign (amplitudes times ``exp(-B s^2 / 4)``, a negative B sharpens). Maps
are NumPy or CuPy; FSC curves are NumPy.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend import get_xp, to_numpy
from ..errors import CryolabInputError
from ..fourier import irfft3c, lowpass, radial_average, rfft3c, shell_resolution_A
from .fsc import _IRFFT, _RFFT, _dims, _radius2, fsc, resolution_shell_at

log = logging.getLogger(__name__)

__all__ = [
    "phase_randomize", "corrected_fsc", "masked_fsc", "noise_substitution_test",
    "guinier", "fit_bfactor", "sharpen", "fsc_weight", "postprocess", "PostprocessResult",
    "write_postprocess",
]


def phase_randomize(x, from_shell: float, seed=0, ndim: int | None = None):
    """Replace the Fourier phases of ``x`` at ``|k| >= from_shell`` by random ones (amplitudes kept).

    Works on a map, an image, or a stack (``ndim=2`` for images ``[..., N, N]``);
    each item gets its own phases. ``seed``: int or ``numpy.random.Generator``.
    The random phases are those of the transform of real white noise, so the
    result stays real (Hermitian symmetry) and amplitudes are exactly kept.
    """
    ndim = _dims(x, ndim)
    xp = get_xp(x)
    n = x.shape[-1]
    noise = np.random.default_rng(seed).standard_normal(x.shape)
    phases = _RFFT[ndim](xp.asarray(noise, dtype=x.dtype))
    phases = phases / xp.maximum(abs(phases), 1e-30)
    ft = _RFFT[ndim](x)
    ft = xp.where(_radius2(n, ndim, xp) >= from_shell ** 2, abs(ft) * phases, ft)
    return _IRFFT[ndim](ft, n).astype(x.dtype, copy=False)


def noise_substitution_test(images, from_shell: float, seed=0, ndim: int = 2):
    """High-resolution noise substitution (Chen et al. 2013): phase-randomise particle
    images beyond ``from_shell`` *before* refinement, each image independently.

    Refine/reconstruct the returned images as the real ones; the FSC of the result
    beyond ``from_shell`` (``FSC_n``) measures overfitting, and
    :func:`corrected_fsc` gives ``(FSC_t - FSC_n) / (1 - FSC_n)``.
    ``images``: ``[..., N, N]`` (or volumes with ``ndim=3``).
    """
    return phase_randomize(images, from_shell, seed=seed, ndim=ndim)


def corrected_fsc(fsc_t, fsc_n, from_shell: int):
    """``FSC_true = (FSC_t - FSC_n) / (1 - FSC_n)`` at shells ``>= from_shell + 2``, ``FSC_t`` below
    (RELION starts the correction 2 shells beyond the randomisation shell)."""
    t = np.asarray(to_numpy(fsc_t), dtype=float)
    r = np.asarray(to_numpy(fsc_n), dtype=float)
    shells = np.arange(t.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        true = (t - r) / (1.0 - r)
    return np.where(shells < from_shell + 2, t, np.nan_to_num(true))


def masked_fsc(half1, half2, mask, seed=0, randomize_at_fsc: float = 0.8,
               randomize_from_shell: int | None = None) -> dict:
    """Solvent-corrected FSC of two half maps, as ``relion_postprocess --mask``.

    Returns numpy curves ``fsc_unmasked``, ``fsc_masked``, ``fsc_random_masked``
    (phases randomised from ``randomize_from_shell`` on, then masked),
    ``fsc_corrected`` (:func:`corrected_fsc`) and the shell used. The shell is the
    first where the unmasked FSC drops below ``randomize_at_fsc`` unless given.
    """
    f_un = to_numpy(fsc(half1, half2))
    f_m = to_numpy(fsc(half1 * mask, half2 * mask))
    if randomize_from_shell is None:
        below = np.flatnonzero(f_un[1:] < randomize_at_fsc)
        if below.size == 0:
            raise CryolabInputError(f"masked_fsc: the unmasked FSC never drops below {randomize_at_fsc}"
                                    " (signal up to Nyquist): use a finer pixel size or pass"
                                    " randomize_from_shell")
        randomize_from_shell = int(below[0]) + 1
    rng = np.random.default_rng(seed)
    r1 = phase_randomize(half1, randomize_from_shell, rng, ndim=3)
    r2 = phase_randomize(half2, randomize_from_shell, rng, ndim=3)
    f_r = to_numpy(fsc(r1 * mask, r2 * mask))
    for curve in (f_m, f_r):  # as RELION: a DC correlation <= 0 is set to 1
        if curve[0] <= 0:
            curve[0] = 1.0
    return dict(fsc_unmasked=f_un, fsc_masked=f_m, fsc_random_masked=f_r,
                fsc_corrected=corrected_fsc(f_m, f_r, randomize_from_shell),
                randomize_from_shell=int(randomize_from_shell))


# --------------------------------------------------------------------------- B-factors

def guinier(volume, pixel_size_A: float):
    """Guinier plot of a volume: ``(s^2 in 1/A^2, ln <|F|>)`` per shell ``0 .. N//2``.

    ``F`` is normalised by the number of voxels (RELION's forward transform), so the
    values match ``_rlnLogAmplitudesOriginal``; empty shells give ``nan``.
    """
    n = volume.shape[-1]
    amp = to_numpy(radial_average(abs(rfft3c(volume)), n, 3)) / n ** 3
    s2 = (np.arange(n // 2 + 1) / (n * pixel_size_A)) ** 2
    with np.errstate(divide="ignore"):
        ln_f = np.where(amp > 0, np.log(np.maximum(amp, 1e-300)), np.nan)
    return s2, ln_f


def fit_bfactor(volume, pixel_size_A: float, lowres_A: float = 10.0,
                highres_A: float | None = None) -> float:
    """B-factor (A^2) from a straight-line fit to the Guinier plot, ``B = 4 * slope``.

    Fits shells with ``highres_A <= resolution <= lowres_A`` (``highres_A`` defaults
    to Nyquist), as ``relion_postprocess --auto_bfac --autob_lowres --autob_highres``.
    A map blurred by ``exp(-B s^2/4)`` gives ``-B``: the B to sharpen it with.
    """
    s2, ln_f = guinier(volume, pixel_size_A)
    n = volume.shape[-1]
    res = shell_resolution_A(np.arange(len(s2)), n, pixel_size_A)
    hi = 2 * pixel_size_A if highres_A is None else highres_A
    use = (res <= lowres_A) & (res >= hi) & np.isfinite(ln_f)
    if use.sum() < 2:
        raise CryolabInputError(f"fit_bfactor: fewer than 2 shells between {lowres_A} and {hi:.3g} A")
    slope = np.polyfit(s2[use], ln_f[use], 1)[0]
    return float(4.0 * slope)


def sharpen(volume, bfactor_A2: float, pixel_size_A: float, lowpass_A: float | None = None):
    """Multiply the amplitudes by ``exp(-B s^2 / 4)`` (negative B sharpens), then optionally
    low-pass at ``lowpass_A`` (raised-cosine edge 2 shells wide, as RELION).

    ``sharpen(sharpen(v, -B, p), B, p)`` returns ``v``.
    """
    xp = get_xp(volume)
    n = volume.shape[-1]
    s2 = _radius2(n, 3, xp) / (n * pixel_size_A) ** 2
    out = irfft3c(rfft3c(volume) * xp.exp(-(bfactor_A2 / 4.0) * s2), n).astype(volume.dtype, copy=False)
    return out if lowpass_A is None else lowpass(out, lowpass_A, pixel_size_A, ndim=3)


def fsc_weight(volume, fsc_curve):
    """Weight each shell by ``sqrt(2 FSC / (1 + FSC))`` (Rosenthal & Henderson 2003) up to the
    first shell where the FSC drops below 1e-4, and zero beyond (as RELION)."""
    xp = get_xp(volume)
    n = volume.shape[-1]
    c = np.asarray(to_numpy(fsc_curve), dtype=float)
    stop = np.flatnonzero(c < 1e-4)
    last = (stop[0] - 1) if stop.size else len(c) - 1
    w = np.zeros(len(c) + 1)  # extra entry: shells beyond N//2 (corners) get 0
    keep = np.arange(len(c)) <= last
    cp = np.clip(c, 0, None)
    w[: len(c)] = np.where(keep, np.sqrt(2 * cp / (1 + cp)), 0.0)
    shells = xp.minimum(xp.rint(xp.sqrt(_radius2(n, 3, xp))).astype(xp.int64), len(c))
    weights = xp.asarray(w)[shells]
    return irfft3c(rfft3c(volume) * weights, n).astype(volume.dtype, copy=False)


# --------------------------------------------------------------------------- post-processing

@dataclass
class PostprocessResult:
    """What :func:`postprocess` returns: numpy FSC curves per shell, the resolution, the B-factor
    and the sharpened map (on the input's device)."""

    fsc_unmasked: np.ndarray
    fsc_masked: np.ndarray | None
    fsc_random_masked: np.ndarray | None
    fsc_corrected: np.ndarray
    randomize_from_shell: int | None
    resolution_A: float
    resolution_shell: float
    bfactor_A2: float
    sharpened: object
    pixel_size_A: float
    box_size: int
    mask: object = field(default=None, repr=False)

    @property
    def sharpened_masked(self):
        """The sharpened map times the mask (RELION's ``postprocess_masked.mrc``)."""
        return self.sharpened if self.mask is None else self.sharpened * self.mask

    def table(self):
        """FSC curves as a pandas DataFrame with RELION's ``data_fsc`` column names."""
        import pandas as pd
        shells = np.arange(len(self.fsc_corrected))
        res = shell_resolution_A(shells, self.box_size, self.pixel_size_A)
        cols = {"rlnSpectralIndex": shells, "rlnResolution": 1.0 / res,
                "rlnAngstromResolution": np.where(shells > 0, res, 999.0),
                "rlnFourierShellCorrelationCorrected": self.fsc_corrected,
                "rlnFourierShellCorrelationUnmaskedMaps": self.fsc_unmasked}
        if self.fsc_masked is not None:
            cols["rlnFourierShellCorrelationMaskedMaps"] = self.fsc_masked
            cols["rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps"] = self.fsc_random_masked
        return pd.DataFrame(cols)


def postprocess(half1, half2, mask, pixel_size_A: float, bfactor: float | None = None, seed=0,
                fit_lowres_A: float = 10.0, threshold: float = 0.143, lowpass_A: float | None = None,
                force_mask: bool = False) -> PostprocessResult:
    """Gold-standard post-processing of two half maps, as ``relion_postprocess``.

    1. FSC of the unmasked and masked halves, corrected by phase randomisation
       (:func:`masked_fsc`; ``mask=None`` skips masking);
    2. resolution where the corrected FSC crosses ``threshold`` (interpolated);
       if the unmasked FSC reaches further, it is used instead unless ``force_mask``;
    3. the average of the halves, FSC-weighted (:func:`fsc_weight`), sharpened by
       ``bfactor`` (``None``: fitted with :func:`fit_bfactor` between ``fit_lowres_A``
       and the resolution; 0 when fewer than 2 shells lie there); ``lowpass_A``: an
       extra low-pass (``None``: none, the FSC weighting filters, as RELION 3.1's
       default ``--low_pass 0``; negative: at the resolution).
    """
    n = half1.shape[-1]
    if mask is not None:
        m = masked_fsc(half1, half2, mask, seed=seed)
        curve = m["fsc_corrected"]
        if (not force_mask and resolution_shell_at(m["fsc_unmasked"], threshold)
                > resolution_shell_at(curve, threshold)):
            log.warning("the unmasked FSC extends beyond the solvent-corrected FSC: using the "
                        "unmasked FSC (pass force_mask=True to keep the mask)")
            curve = m["fsc_unmasked"]
    else:
        curve = to_numpy(fsc(half1, half2))
        m = dict(fsc_unmasked=curve, fsc_masked=None, fsc_random_masked=None, randomize_from_shell=None)
    shell = resolution_shell_at(curve, threshold)
    res_A = float(shell_resolution_A(shell, n, pixel_size_A))
    weighted = fsc_weight(0.5 * (half1 + half2), curve)
    if bfactor is None:
        try:
            bfactor = fit_bfactor(weighted, pixel_size_A, fit_lowres_A, res_A)
        except CryolabInputError:
            bfactor = 0.0
    if lowpass_A is not None and lowpass_A < 0:
        lowpass_A = res_A if np.isfinite(res_A) else None
    sharp = sharpen(weighted, bfactor, pixel_size_A, lowpass_A=lowpass_A)
    return PostprocessResult(
        fsc_unmasked=m["fsc_unmasked"], fsc_masked=m["fsc_masked"],
        fsc_random_masked=m["fsc_random_masked"], fsc_corrected=np.asarray(curve),
        randomize_from_shell=m["randomize_from_shell"], resolution_A=res_A, resolution_shell=shell,
        bfactor_A2=float(bfactor), sharpened=sharp, pixel_size_A=float(pixel_size_A), box_size=n,
        mask=mask)


def write_postprocess(result, prefix) -> list[Path]:
    """Write ``<prefix>.mrc`` (sharpened), ``<prefix>_masked.mrc`` and ``<prefix>.star``
    (``data_general``, ``data_fsc``) as relion_postprocess does.

    ``result`` is a :class:`PostprocessResult`; the masked map is written only when it has
    a mask. ``data_general`` holds ``rlnFinalResolution`` and ``rlnBfactorUsedForSharpening``,
    ``data_fsc`` is :meth:`PostprocessResult.table`. Returns the paths written, maps first.
    """
    from ..io import write_mrc, write_star
    prefix = Path(prefix)
    maps = [write_mrc(prefix.with_name(prefix.name + ".mrc"), to_numpy(result.sharpened),
                      result.pixel_size_A)]
    if result.mask is not None:
        maps.append(write_mrc(prefix.with_name(prefix.name + "_masked.mrc"),
                              to_numpy(result.sharpened_masked), result.pixel_size_A))
    general = {"rlnFinalResolution": result.resolution_A,
               "rlnBfactorUsedForSharpening": result.bfactor_A2}
    star = write_star(prefix.with_name(prefix.name + ".star"),
                      {"general": general, "fsc": result.table()})
    return [*maps, star]
