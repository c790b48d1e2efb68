"""The M-step's finish: new references, noise spectrum, class priors and offset prior.

Takes the E-step's accumulated sums (:class:`cryolab.engine.driver.EStepSums`) and the current
model, and returns the new model as plain arrays (:class:`ModelUpdate`); nothing is changed in
place. Per class ``k`` (RELION's definitions, see :mod:`.mstep`):

* ``map`` mode: the MAP reference ``sum D / (sum W + 1 / (T tau2))`` (Wiener-like) with
  ``tau2`` per shell from the given prior power, or from the current reference's power
  spectrum; the spectral SNR per shell is ``data_vs_prior = W_shell / n_pixels(shell) * T tau2``;
* ``ml``/``maxcc``: the plain CTF-weighted average ``sum D / sum W``;
* a class that received no weight keeps its reference;
* class priors are the classes' posterior shares (floored at 1e-8), the noise power per shell
  ``sum resid / (2 n_images n_pixels)`` (unchanged in ``maxcc``), and the offset prior's sigma
  ``sqrt(sum w |offset|^2 / (2 n_images))`` in pixels (at least 0.5 px).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy
from ..fourier import radial_average, rfft2c, rfft3c
from .mstep import shell_sums, sigma2_from_residuals, tau2_from_power

__all__ = ["ModelUpdate", "m_step", "pixels_per_shell", "last_shell_above", "centre_of_mass_shift",
           "centre_of_mass_roll"]

#: the smallest offset prior sigma (pixels): RELION's floor of the estimated offset variance
MIN_SIGMA_OFFSET_PX = 0.5
#: class priors are floored so that an empty class can be re-seeded (and log priors stay finite)
MIN_CLASS_PRIOR = 1e-8


@dataclass(frozen=True)
class ModelUpdate:
    """What one M-step gives: ``references [K, N, N(, N)]`` float32, ``ssnr`` per class per shell,
    ``pdf_class [K]`` (sums to 1), ``sigma2`` noise power per shell, ``sigma_offset_px``, and per
    class the last shell with SSNR >= 1 (``resolution_shells``) and its resolution in Angstrom
    (inf where no shell reaches it)."""
    references: np.ndarray
    ssnr: list
    pdf_class: np.ndarray
    sigma2: np.ndarray
    sigma_offset_px: float
    resolution_shells: list
    resolution_A: tuple


def pixels_per_shell(pix, n: int) -> np.ndarray:
    """Number of likelihood pixels (:class:`.estep.FourierPixels`) in each shell ``0 .. n//2``."""
    n_shells = n // 2 + 1
    return np.bincount(to_numpy(pix.shell), minlength=n_shells)[:n_shells]


def m_step(sums, pix, references, sigma2, *, mode: str, pixel_size_A: float, tau2=None,
           tau2_fudge: float = 1.0, sym: str = "C1", center_classes: bool = False) -> ModelUpdate:
    """New model from the E-step's ``sums`` (see the module text).

    ``pix``: the E-step's likelihood pixels; ``references [K, N, N(, N)]`` and ``sigma2`` (per
    shell) the current model; ``mode`` of the iteration that made the sums; ``tau2``: per class
    prior power per shell (None: from each reference's power spectrum); ``center_classes`` (2D):
    centre each new class average on its centre of mass (whole pixels).
    """
    references = np.asarray(references)
    dim, n = references.ndim - 1, references.shape[-1]
    npix = pixels_per_shell(pix, n)
    new_refs, ssnr = [], []
    for k, bp in enumerate(sums.bps):
        kw = {} if dim == 2 else {"sym": sym}
        if mode == "map":
            if tau2 is not None:
                t2 = tau2_fudge * np.asarray(tau2[k], float)
            else:
                ft = (rfft2c if dim == 2 else rfft3c)(references[k])
                t2 = tau2_fudge * tau2_from_power(radial_average(abs(ft) ** 2, n, ndim=dim))
            ref = bp.reconstruct(method="wiener", tau2=t2, **kw)
            dvp = sums.w_shell[k] / np.maximum(npix, 1) * t2
        else:
            ref = bp.reconstruct(method="plain", **kw)
            dvp = np.zeros(n // 2 + 1)
        ref = to_numpy(ref).astype(np.float32)
        if dim == 2 and center_classes and sums.class_weight[k] > 0:
            ref = centre_of_mass_shift(ref)
        new_refs.append(ref if sums.class_weight[k] > 0 else references[k])
        ssnr.append(dvp)
    if sums.bps:
        sums.bps[0].release_grids()  # the shell grids the K maps shared
    pdf_class = np.maximum(sums.class_weight / max(sums.n, 1), MIN_CLASS_PRIOR)
    pdf_class = pdf_class / pdf_class.sum()
    new_sigma2 = sigma2
    if mode != "maxcc" and np.ndim(sums.residual):
        resid_shell = to_numpy(shell_sums(sums.residual, pix.shell, n // 2 + 1))
        new = sigma2_from_residuals(resid_shell, sums.n, npix, previous=sigma2)
        new_sigma2 = np.where(npix > 0, new, sigma2)
    sigma_offset = float(np.sqrt(max(sums.offset_moment / (2 * max(sums.n, 1)), MIN_SIGMA_OFFSET_PX ** 2)))
    shells = [last_shell_above(d, 1.0) for d in ssnr]
    resolution = tuple(float(n * pixel_size_A / r) if r > 0 else float("inf") for r in shells)
    return ModelUpdate(np.stack(new_refs), ssnr, pdf_class, new_sigma2, sigma_offset, shells, resolution)


def last_shell_above(values, threshold: float) -> int:
    """Highest shell index before ``values`` first drops below ``threshold`` (0 when shell 1 is below).

    >>> last_shell_above([5.0, 3.0, 2.0, 0.5, 4.0], 1.0)
    2
    """
    v = np.asarray(values)
    below = np.flatnonzero(v[1:] < threshold)
    return int(below[0]) if below.size else int(v.size - 1)


def centre_of_mass_roll(x):
    """``(moved, shift)``: ``x`` (an image or a map) moved by whole pixels (periodic) so that the
    centre of mass of its positive part is the box centre (pixel ``N // 2`` on every axis), and the
    shift per axis in array order (``[z,] y, x``); a copy unchanged when nothing is positive."""
    pos = np.clip(x, 0, None)
    tot = pos.sum()
    if tot <= 0:
        return x.copy(), np.zeros(x.ndim, int)
    shift = []
    for a in range(x.ndim):
        profile = pos.sum(axis=tuple(j for j in range(x.ndim) if j != a))
        shift.append(int(np.rint(x.shape[a] // 2 - (profile * np.arange(x.shape[a])).sum() / tot)))
    return np.roll(x, tuple(shift), axis=tuple(range(x.ndim))), np.array(shift)


def centre_of_mass_shift(image):
    """Shift an image (integer pixels, periodic) so the centre of mass of its positive part is the
    box centre (pixel ``N // 2``): :func:`centre_of_mass_roll` without the shift."""
    return centre_of_mass_roll(image)[0]
