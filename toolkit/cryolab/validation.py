"""Resolution and validation: FSC, masks, phase randomisation, B-factors, post-processing.

Definitions follow ``relion_postprocess`` (RELION 3.1) so that numbers agree:

* **FSC** per shell ``s = round(|k|)``, ``s = 0 .. N//2``, summed over the half
  transform ``Re(F1 F2*) / sqrt(|F1|^2 |F2|^2)``; shell 0 is the correlation of
  the two means (+1 or -1; 1 when both are zero);
* **resolution** where the FSC first drops below a threshold (0.143), here with
  linear interpolation between shells (RELION reports the last shell above it);
* **masked FSC** corrected by phase randomisation (Chen et al. 2013):
  ``FSC_true = (FSC_t - FSC_n) / (1 - FSC_n)`` from 2 shells beyond the shell
  where the unmasked FSC first drops below 0.8;
* **B-factors** in A^2 with RELION's sign: amplitudes are multiplied by
  ``exp(-B s^2 / 4)`` (``s`` in 1/A), so a negative B sharpens; a Guinier fit
  of ``ln|F|`` against ``s^2`` gives ``B = 4 * slope``.

All map functions take NumPy or CuPy arrays; volumes are ``[..., z, y, x]``,
images ``[..., y, x]`` (``ndim`` says which), centre pixel ``N // 2``.

>>> import numpy as np
>>> v = np.random.default_rng(0).normal(size=(16, 16, 16))
>>> bool(np.allclose(fsc(v, v), 1))
True
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .backend import get_xp, to_numpy
from .errors import CryolabInputError
from .fourier import (irfft2c, irfft3c, lowpass, radial_average, rfft2c, rfft3c, rfft_grid,
                      shell_resolution_A)

__all__ = [
    "fsc", "resolution_shell_at", "resolution_at", "random_halves",
    "soft_sphere_mask", "soft_circle_mask", "auto_mask",
    "phase_randomize", "corrected_fsc", "masked_fsc", "noise_substitution_test",
    "guinier", "fit_bfactor", "sharpen", "fsc_weight", "postprocess", "PostprocessResult",
    "match_classes", "class_accuracy",
]

_RFFT = {2: rfft2c, 3: rfft3c}
_IRFFT = {2: irfft2c, 3: irfft3c}


def _dims(x, ndim):
    ndim = x.ndim if ndim is None else ndim
    if ndim not in (2, 3) or x.ndim < ndim:
        raise CryolabInputError(f"expected images (ndim=2) or volumes (ndim=3), got shape {x.shape}")
    return ndim


def _radius2(n, ndim, xp):
    """Squared integer frequency radius ``|k|^2`` on the centred half grid."""
    return sum(g.astype(xp.float64) ** 2 for g in rfft_grid(n, ndim, xp))


# --------------------------------------------------------------------------- FSC

def fsc(map1, map2, ndim: int | None = None):
    """Fourier shell (ring) correlation per shell ``0 .. N//2`` (RELION's ``getFSC``).

    ``map1``, ``map2``: volumes ``[..., N, N, N]`` or, with ``ndim=2``, images
    (Fourier ring correlation). Returns ``[..., N//2 + 1]`` on the input's device.

    >>> import numpy as np
    >>> a = np.random.default_rng(1).normal(size=(2, 32, 32))
    >>> fsc(a[0], -a[0]).round(6)[1:4].tolist()
    [-1.0, -1.0, -1.0]
    """
    if map1.shape != map2.shape:
        raise CryolabInputError(f"fsc: maps differ in shape {map1.shape} vs {map2.shape}")
    ndim = _dims(map1, ndim)
    xp = get_xp(map1, map2)
    n = map1.shape[-1]
    f1, f2 = _RFFT[ndim](map1), _RFFT[ndim](map2)
    num = radial_average((f1 * f2.conj()).real, n, ndim)
    den = xp.sqrt(radial_average(abs(f1) ** 2, n, ndim) * radial_average(abs(f2) ** 2, n, ndim))
    out = num / xp.where(den > 0, den, 1.0)
    out[..., 0] = xp.where(den[..., 0] > 0, out[..., 0], 1.0)
    return out


def resolution_shell_at(fsc_curve, threshold: float = 0.143) -> float:
    """Fractional shell where ``fsc_curve`` first drops below ``threshold`` (from shell 1).

    Linear interpolation between the last shell above and the first below (the DC
    shell counts as 1); the last shell (Nyquist) when it never drops.

    >>> resolution_shell_at([1.0, 0.9, 0.5, 0.1, 0.0], 0.3)
    2.5
    """
    c = np.asarray(to_numpy(fsc_curve), dtype=float)
    below = np.flatnonzero(c[1:] < threshold) + 1
    if below.size == 0:
        return float(len(c) - 1)
    i = int(below[0])
    prev = 1.0 if i == 1 else c[i - 1]
    return float(i - 1 + (prev - threshold) / (prev - c[i]))


def resolution_at(fsc_curve, threshold: float, n: int, pixel_size_A: float) -> float:
    """Resolution in Angstrom where the FSC crosses ``threshold`` (``N * pixel / shell``).

    >>> resolution_at([1.0, 0.9, 0.5, 0.1, 0.0], 0.3, n=8, pixel_size_A=2.0)
    6.4
    """
    return float(shell_resolution_A(resolution_shell_at(fsc_curve, threshold), n, pixel_size_A))


def random_halves(n: int, seed: int = 0) -> np.ndarray:
    """Random split of ``n`` particles into halves: int array of 1/2 (``_rlnRandomSubset``).

    Half 1 gets ``ceil(n/2)`` particles.

    >>> np.bincount(random_halves(5, seed=0)).tolist()
    [0, 3, 2]
    """
    halves = np.full(n, 2, dtype=np.int64)
    halves[np.random.default_rng(seed).permutation(n)[: (n + 1) // 2]] = 1
    return halves


def match_classes(classes, truth) -> np.ndarray:
    """Match classes one-to-one to true labels (both 0-based ints): ``mapping[k]`` is the label
    of class ``k`` (-1: left over when there are more classes than labels), chosen so that the
    matched pairs share as many particles as possible (Hungarian algorithm). Class numbers are
    arbitrary, so simulated sets are scored this way.

    >>> match_classes([1, 1, 0, 2], [0, 0, 1, 1]).tolist()
    [1, 0, -1]
    """
    from scipy.optimize import linear_sum_assignment
    classes, truth = np.asarray(classes, int), np.asarray(truth, int)
    counts = np.zeros((classes.max() + 1, truth.max() + 1))
    np.add.at(counts, (classes, truth), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = np.full(counts.shape[0], -1)
    mapping[rows] = cols
    return mapping


def class_accuracy(classes, truth) -> float:
    """Fraction of particles in the class matched to their true label (:func:`match_classes`).

    >>> class_accuracy([1, 1, 0, 2], [0, 0, 1, 1])
    0.75
    """
    classes = np.asarray(classes, int)
    return float(np.mean(match_classes(classes, truth)[classes] == np.asarray(truth)))


# --------------------------------------------------------------------------- masks

def _raised_cosine(dist, edge_px, xp):
    """1 where ``dist <= 0``, ``0.5 + 0.5 cos(pi dist / edge)`` for ``0 < dist < edge``, else 0."""
    if edge_px <= 0:
        return (dist <= 0).astype(xp.float32)
    t = xp.clip(dist / edge_px, 0.0, 1.0)
    return (0.5 + 0.5 * xp.cos(np.pi * t)).astype(xp.float32)


def _soft_ball(n, ndim, radius_px, edge_px, xp):
    c = xp.arange(n, dtype=xp.float64) - n // 2
    axes = xp.meshgrid(*([c] * ndim), indexing="ij")
    r = xp.sqrt(sum(a ** 2 for a in axes))
    return _raised_cosine(r - radius_px, edge_px, xp)


def soft_sphere_mask(n: int, radius_px: float, edge_px: float = 6.0, xp=np):
    """Spherical mask ``[N, N, N]`` (float32) centred on voxel ``N//2``: 1 inside ``radius_px``,
    raised-cosine fall-off to 0 over ``edge_px`` (RELION's ``raisedCosineMask``).

    >>> m = soft_sphere_mask(16, 4, 2)
    >>> float(m[8, 8, 8]), float(m[8, 8, 13]), float(m[8, 8, 15])
    (1.0, 0.5, 0.0)
    """
    return _soft_ball(n, 3, radius_px, edge_px, xp)


def soft_circle_mask(n: int, radius_px: float, edge_px: float = 6.0, xp=np):
    """Circular mask ``[N, N]``: the 2D version of :func:`soft_sphere_mask`."""
    return _soft_ball(n, 2, radius_px, edge_px, xp)


def _ndimage(xp):
    if xp is np:
        import scipy.ndimage
        return scipy.ndimage
    import cupyx.scipy.ndimage
    return cupyx.scipy.ndimage


def auto_mask(volume, threshold: float, extend_px: float = 3.0, soft_edge_px: float = 6.0):
    """Solvent mask as ``relion_mask_create --ini_threshold --extend_inimask --width_soft_edge``.

    Binarise at ``volume >= threshold``; add voxels closer than ``extend_px`` to the
    binary mask (a negative value shrinks it instead); then voxels at distance
    ``d < soft_edge_px`` outside get ``0.5 + 0.5 cos(pi d / soft_edge_px)``. Returns float32.
    """
    xp = get_xp(volume)
    edt = _ndimage(xp).distance_transform_edt
    binary = volume >= threshold
    if not bool(binary.any()):
        raise CryolabInputError(f"auto_mask: no voxel reaches the threshold {threshold}")
    if extend_px > 0:
        binary = binary | (edt(~binary) < extend_px)
    elif extend_px < 0:
        binary = binary & ~(edt(binary) < -extend_px)
    return _raised_cosine(edt(~binary), soft_edge_px, xp)


# --------------------------------------------------------------------------- phase randomisation

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
            warnings.warn("the unmasked FSC extends beyond the solvent-corrected FSC: using the "
                          "unmasked FSC (pass force_mask=True to keep the mask)", stacklevel=2)
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
