"""Picking one micrograph after another: the search grid, the threshold, the picks.

:class:`Picker` searches each micrograph on a coarser grid where the low-pass filter allows it (pixel
``lowpass_A / 2``: the filter's cut-off is that grid's Nyquist frequency), computes the
figure of merit there (:mod:`cryolab.picking.score`), keeps the local maxima above the threshold that
are at least half a window from the edges, not in a region whose local standard deviation exceeds
``max_stddev_noise`` times the micrograph's median (carbon, ice contaminants) and not on a film beyond
a straight edge in the mean level nor within a particle radius of it (:mod:`cryolab.picking.carbon`),
enforces the minimum distance and returns the centres in the micrograph's own pixels (RELION's ``_rlnCoordinateX/Y``:
column and row, 0-based).

Without an explicit ``threshold`` it is set for each micrograph from ``false_alarm_rate`` (expected false
picks per micrograph of pure white noise; :func:`cryolab.picking.peaks.false_alarm_threshold`, from the
smoothness of that micrograph's CTF-multiplied templates or LoG filters).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.fft as sfft

from ..ctf import CTFParams
from ..errors import CryolabInputError
from ..fourier import rescale
from .carbon import film_mask
from .peaks import enforce_min_distance, false_alarm_threshold, local_maxima
from .score import band_filter, local_std, log_map, ncc_map
from .templates import Templates, resample_images

__all__ = ["PickSettings", "Picker", "Picks", "SIDE_LOBE_FRACTION", "FILM_EDGE_Z"]

#: a peak lower than this fraction of a higher one within two particle diameters is its side lobe
SIDE_LOBE_FRACTION = 0.5
#: ... within this many particle diameters
SHADOW_DIAMETERS = 2.0
#: robust z-score of a straight step in mean level that counts as a film edge (measured without a film: up to 4.9)
FILM_EDGE_Z = 6.0
#: the strips compared on either side of a candidate edge, in particle diameters
FILM_WINDOW_DIAMETERS = 2.0


@dataclass(frozen=True)
class PickSettings:
    """How to pick (lengths in Angstrom).

    ``mode``: ``"template"`` or ``"log"``. ``min_distance_A`` (default: the particle diameter) applies in
    both. ``threshold``: figure-of-merit level (NCC for templates, robust z-score for LoG); None sets it
    from ``false_alarm_rate`` (false picks expected per pure-noise micrograph, default 0.1).
    ``max_stddev_noise``: reject picks where the standard deviation of the band-filtered micrograph in a
    disc of twice the particle diameter exceeds this multiple of its median over the micrograph (carbon,
    contaminants; None: never). ``film_edge_z``: reject picks on a film beyond a straight edge and within a
    particle radius of the edge, when the edge's step in mean level reaches this robust z-score
    (:mod:`cryolab.picking.carbon`; None: never). ``log_diameters_A``: the LoG diameter range, searched at
    ``log_scales`` diameters; ``invert`` for LoG: the particles are white.
    """

    particle_diameter_A: float
    mode: str = "template"
    lowpass_A: float | None = 20.0
    highpass_A: float | None = None
    min_distance_A: float | None = None
    threshold: float | None = None
    false_alarm_rate: float = 0.1
    max_stddev_noise: float | None = 1.5
    film_edge_z: float | None = FILM_EDGE_Z
    log_diameters_A: tuple = (None, None)
    log_scales: int = 5
    invert: bool = False

    def __post_init__(self):
        if self.mode not in ("template", "log"):
            raise CryolabInputError(f"mode must be 'template' or 'log', got {self.mode!r}", field="mode")
        if not self.particle_diameter_A > 0:
            raise CryolabInputError(f"the particle diameter must be > 0, got {self.particle_diameter_A!r}",
                                    field="--particle_diameter")
        if not self.false_alarm_rate > 0:
            raise CryolabInputError(f"the false-alarm rate must be > 0, got {self.false_alarm_rate!r}",
                                    field="--false_alarm_rate")
        if self.mode == "log":
            lo, hi = self.log_diameters_A
            if lo is None or hi is None or not 0 < lo <= hi:
                raise CryolabInputError(f"LoG needs 0 < diameter min <= max, got {lo!r}, {hi!r}",
                                        field="--LoG_diam_min/--LoG_diam_max")


@dataclass
class Picks:
    """The picks of one micrograph (``table``: ``rlnCoordinateX/Y`` in pixels, ``rlnAutopickFigureOfMerit``,
    ``rlnClassNumber`` (template's reference or LoG diameter, 1-based), ``rlnAnglePsi``) and the maps on
    the search grid (``fom``, ``local_std``) with its ``scale`` (micrograph pixels per grid pixel)."""

    table: pd.DataFrame
    fom: np.ndarray
    local_std: np.ndarray
    scale: float
    threshold: float
    valid: np.ndarray = field(repr=False, default=None)
    picker: object = field(repr=False, default=None)

    def xy(self) -> np.ndarray:
        return self.table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)

    def above(self, threshold: float) -> np.ndarray:
        """Centres ``[P, 2]`` (micrograph pixels) that ``threshold`` would give (for a live slider)."""
        x, y, v = local_maxima(self.fom, threshold)
        keep = self.picker._suppress(x, y, v, self.valid)
        return np.round(np.stack([x[keep], y[keep]], -1) * self.scale)


class Picker:
    """Picks micrographs of ``size_px`` x ``size_px`` at ``pixel_size_A`` with ``settings`` (and
    ``templates`` in template mode: :func:`cryolab.picking.make_templates` at the micrographs' pixel size)."""

    def __init__(self, settings: PickSettings, pixel_size_A: float, size_px: int, templates: Templates | None = None):
        if settings.mode == "template" and (templates is None or not len(templates)):
            raise CryolabInputError("template picking needs templates", field="--ref")
        self.settings, self.pixel_size_A, self.size = settings, float(pixel_size_A), int(size_px)
        coarse_px = max(self.pixel_size_A, (settings.lowpass_A or 0.0) / 2.0)
        grid = sfft.next_fast_len(int(np.ceil(self.size * self.pixel_size_A / coarse_px)), real=True)
        self.grid = min(self.size, grid + grid % 2)
        self.scale = self.size / self.grid
        self.grid_px = self.pixel_size_A * self.scale
        self.templates = templates
        if templates is not None:
            n = templates.images.shape[-1]
            m = int(np.ceil(n * templates.pixel_size_A / self.grid_px))
            m += m % 2
            self.grid_templates = resample_images(templates.images, templates.pixel_size_A, self.grid_px, m)
        self.window_px = settings.particle_diameter_A / self.grid_px      # radius: twice the particle's
        if settings.mode == "log":
            lo, hi = settings.log_diameters_A
            self.diameters_A = np.geomspace(lo, hi, max(1, int(settings.log_scales))) if hi > lo else np.array([lo])
        half_box = self.grid_templates.shape[-1] / 2 if templates is not None else 0
        self.margin = int(np.ceil(max(0.5 * self.window_px, half_box)))

    def shrink(self, micrograph) -> np.ndarray:
        """The micrograph on the search grid: its best-fitting plane subtracted (an ice gradient, which the
        circular correlation would otherwise see as a step at the edges), then Fourier-cropped."""
        mic = np.asarray(micrograph, np.float64)
        if mic.shape != (self.size, self.size):
            raise CryolabInputError(f"micrograph of shape {mic.shape}, expected ({self.size}, {self.size})",
                                    field="micrograph")
        y, x = (np.mgrid[:self.size, :self.size] - self.size / 2) / self.size
        design = np.stack([np.ones(mic.size), x.ravel(), y.ravel()], -1)
        coef, *_ = np.linalg.lstsq(design, mic.ravel(), rcond=None)
        mic = mic - (design @ coef).reshape(mic.shape)
        return mic if self.grid == self.size else rescale(mic, self.grid)

    def fom(self, grid_micrograph, ctf: CTFParams | None):
        """``(fom, best, lambdas, local std)`` of a micrograph already on the search grid."""
        s = self.settings
        if s.mode == "template":
            fom, best, lambdas = ncc_map(grid_micrograph, self.grid_templates, self.grid_px, ctf=ctf,
                                         lowpass_A=s.lowpass_A, highpass_A=s.highpass_A)
        else:
            fom, best, lambdas = log_map(grid_micrograph, self.grid_px, self.diameters_A, lowpass_A=s.lowpass_A,
                                         highpass_A=s.highpass_A, invert=s.invert)
        h = band_filter(self.grid, self.grid_px, s.lowpass_A, s.highpass_A)
        filtered = sfft.irfft2(sfft.rfft2(grid_micrograph) * h, s=grid_micrograph.shape)
        return fom, best, lambdas, local_std(filtered, self.window_px).astype(np.float32)

    def _valid(self, std, grid_micrograph=None):
        valid = np.zeros(std.shape, bool)
        m = self.margin
        valid[m:self.grid - m, m:self.grid - m] = True
        s = self.settings
        if s.max_stddev_noise:
            valid &= std <= s.max_stddev_noise * np.median(std[valid])
        if s.film_edge_z and grid_micrograph is not None:
            diameter = s.particle_diameter_A / self.grid_px
            valid &= ~film_mask(grid_micrograph, FILM_WINDOW_DIAMETERS * diameter, 0.5 * diameter, s.film_edge_z)
        return valid

    def _suppress(self, x, y, v, valid):
        """Minimum distance, and side lobes: a peak within two particle diameters of one more than
        ``1 / SIDE_LOBE_FRACTION`` times as high (kept, or a rejected contaminant) is dropped."""
        s = self.settings
        min_dist_A = s.min_distance_A or s.particle_diameter_A
        return enforce_min_distance(x, y, v, min_dist_A / self.grid_px, eligible=valid[y, x],
                                    shadow_distance=SHADOW_DIAMETERS * s.particle_diameter_A / self.grid_px,
                                    shadow_fraction=SIDE_LOBE_FRACTION)

    def pick(self, micrograph, ctf: CTFParams | None = None, threshold: float | None = None) -> Picks:
        """Pick one micrograph ``[S, S]`` (its CTF: one entry). ``threshold`` overrides the settings'."""
        grid_micrograph = self.shrink(micrograph)
        fom, best, lambdas, std = self.fom(grid_micrograph, ctf)
        valid = self._valid(std, grid_micrograph)
        level = threshold if threshold is not None else self.settings.threshold
        if level is None:
            level = false_alarm_threshold(self.settings.false_alarm_rate, lambdas, float(np.sum(valid)))
        x, y, v = local_maxima(fom, level)
        keep = self._suppress(x, y, v, valid)
        x, y, v = x[keep], y[keep], v[keep]
        k = best[y, x]
        if self.settings.mode == "template":
            cls, psi = self.templates.reference[k] + 1, self.templates.eulers_deg[k, 2]
        else:
            cls, psi = k + 1, np.zeros(len(k))
        table = pd.DataFrame({"rlnCoordinateX": np.round(x * self.scale), "rlnCoordinateY": np.round(y * self.scale),
                              "rlnClassNumber": cls.astype(int), "rlnAutopickFigureOfMerit": v.astype(np.float64),
                              "rlnAnglePsi": psi.astype(np.float64)})
        return Picks(table=table, fom=fom, local_std=std, scale=self.scale, threshold=float(level), valid=valid, picker=self)
