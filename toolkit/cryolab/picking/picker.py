"""Picking one micrograph after another: the search grid, the threshold, the picks.

:class:`Picker` searches each micrograph (``[H, W]``, square or not) on a coarser grid where the low-pass
filter allows it (pixel about ``lowpass_A / 2``: the filter's cut-off is then below that grid's Nyquist
frequency; the grid's longer side an even fast FFT length, :func:`search_grid`), computes the
figure of merit there (:mod:`cryolab.picking.score`), keeps the local maxima above the threshold that
are at least half a window from the edges, not in a region whose local standard deviation exceeds
``max_stddev_noise`` times the micrograph's median (carbon, ice contaminants) and not on a film beyond
a straight edge in the mean level nor within a particle radius of it (:mod:`cryolab.picking.carbon`),
enforces the minimum distance (and, for templates, drops side lobes) and returns the centres in the
micrograph's own pixels (RELION's ``_rlnCoordinateX/Y``: column and row, 0-based). A rectangular micrograph
is zero-padded to a square of its longer side before the Fourier crop (the same scale on both axes), and the
search grid is then cut back to the micrograph's extent.

Without an explicit ``threshold`` it is set for each micrograph from ``false_alarm_rate`` (expected false
picks per micrograph of pure white noise; :func:`cryolab.picking.peaks.false_alarm_threshold`, from the
smoothness of that micrograph's CTF-multiplied templates or LoG filters).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.fft as sfft

from ..backend import fft_kwargs
from ..ctf import CTFParams
from ..errors import CryolabInputError
from ..simulate.micrographs import micrograph_shape
from .carbon import film_mask
from .peaks import enforce_min_distance, false_alarm_threshold, local_maxima
from .score import band_filter, local_std, log_map, ncc_map, subtract_plane
from .templates import Templates, resample_images

__all__ = ["PickSettings", "Picker", "Picks", "SIDE_LOBE_FRACTION", "FILM_EDGE_Z", "search_grid", "subtract_plane"]

#: a template peak lower than this fraction of a higher one within two particle diameters is its side lobe
#: (not applied to LoG: its kernel has no positive side lobe, and the rule dropped true particles beside
#: contaminants, 28 of the 37 misses on the benchmark's micrographs)
SIDE_LOBE_FRACTION = 0.5
#: ... within this many particle diameters
SHADOW_DIAMETERS = 2.0
#: robust z-score of a straight step in mean level that counts as a film edge (measured without a film: up to 4.9)
FILM_EDGE_Z = 6.0
#: the strips compared on either side of a candidate edge, in particle diameters (2 before: at 512^2 the film
#: strip is no wider than that and a third of the films were missed; measured in docs/picking.md)
FILM_WINDOW_DIAMETERS = 1.0


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
    ``log_scales`` diameters; ``invert`` for LoG: the particles are white. ``highpass_A`` filters the
    templates and the micrograph (and the local standard deviation in both modes), not the LoG filters,
    which are band-passes themselves.
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


def search_grid(shape, pixel_size_A: float, lowpass_A: float | None):
    """The search grid of micrographs of ``shape`` (rows, columns): ``(grid shape, scale)`` with ``scale``
    micrograph pixels per grid pixel, the same on both axes. The longer side becomes the smallest even fast
    FFT length (``scipy.fft.next_fast_len``) whose pixel is at most ``lowpass_A / 2`` (never larger than the
    micrograph); the shorter side covers the rest of the micrograph at that scale.

    >>> search_grid((1024, 1024), 6.0, 20.0)
    ((640, 640), 1.6)
    >>> search_grid((3710, 3838), 1.0, 20.0)[0]
    (372, 384)
    """
    shape = micrograph_shape(shape)
    n = max(shape)
    coarse_px = max(float(pixel_size_A), (lowpass_A or 0.0) / 2.0)
    g = sfft.next_fast_len(int(np.ceil(n * pixel_size_A / coarse_px)), real=True)
    while g % 2:
        g = sfft.next_fast_len(g + 1, real=True)
    if g >= n:
        return shape, 1.0
    scale = n / g
    return tuple(g if side == n else int(np.ceil(side / scale - 1e-9)) for side in shape), scale


class Picker:
    """Picks micrographs of ``size_px`` (one number: square; or ``(rows, columns)``) at ``pixel_size_A``
    with ``settings`` (and ``templates`` in template mode: :func:`cryolab.picking.make_templates` at the
    micrographs' pixel size)."""

    def __init__(self, settings: PickSettings, pixel_size_A: float, size_px, templates: Templates | None = None):
        if settings.mode == "template" and (templates is None or not len(templates)):
            raise CryolabInputError("template picking needs templates", field="--ref")
        self.settings, self.pixel_size_A = settings, float(pixel_size_A)
        self.shape = micrograph_shape(size_px)
        self.grid_shape, self.scale = search_grid(self.shape, self.pixel_size_A, settings.lowpass_A)
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
        if 2 * self.margin >= min(self.grid_shape):
            raise CryolabInputError(f"a micrograph of {self.shape[0]} x {self.shape[1]} pixels is too small for "
                                    f"particles of {settings.particle_diameter_A:g} A", field="--particle_diameter")

    def shrink(self, micrograph) -> np.ndarray:
        """The micrograph on the search grid (float32): its best-fitting plane subtracted (an ice gradient,
        which the circular correlation would otherwise see as a step at the edges), zero-padded to a square
        of its longer side when it is not square, Fourier-cropped, and cut back to its extent."""
        mic = np.asarray(micrograph, np.float32)
        if mic.shape != self.shape:
            raise CryolabInputError(f"micrograph of shape {mic.shape}, expected {self.shape}", field="micrograph")
        mic = subtract_plane(mic)
        if self.grid_shape == self.shape:
            return mic
        n, g = max(self.shape), max(self.grid_shape)
        f = sfft.rfft2(mic, s=(n, n), **fft_kwargs(np))
        f = np.concatenate([f[:g // 2, :g // 2 + 1], f[n - g // 2:, :g // 2 + 1]])
        small = sfft.irfft2(f, s=(g, g), **fft_kwargs(np)) * np.float32((g / n) ** 2)
        return np.ascontiguousarray(small[:self.grid_shape[0], :self.grid_shape[1]], dtype=np.float32)

    def fom(self, grid_micrograph, ctf: CTFParams | None):
        """``(fom, best, lambdas, local std)`` of a micrograph already on the search grid."""
        s = self.settings
        ft = sfft.rfft2(grid_micrograph, **fft_kwargs(np))
        if s.mode == "template":
            fom, best, lambdas = ncc_map(grid_micrograph, self.grid_templates, self.grid_px, ctf=ctf,
                                         lowpass_A=s.lowpass_A, highpass_A=s.highpass_A, ft=ft)
        else:
            # the LoG filters are band-passes of their own: no high-pass on them (one near their band rings
            # around contaminants and film edges: precision 0.63 at 600 A with diameters up to 350 A)
            fom, best, lambdas = log_map(grid_micrograph, self.grid_px, self.diameters_A, lowpass_A=s.lowpass_A,
                                         invert=s.invert, ft=ft)
        h = band_filter(self.grid_shape, self.grid_px, s.lowpass_A, s.highpass_A).astype(np.float32)
        ft *= h
        filtered = sfft.irfft2(ft, s=grid_micrograph.shape, **fft_kwargs(np))
        return fom, best, lambdas, local_std(filtered, self.window_px, ft=ft).astype(np.float32)

    def _valid(self, std, grid_micrograph=None):
        valid = np.zeros(std.shape, bool)
        m = self.margin
        valid[m:std.shape[0] - m, m:std.shape[1] - m] = True
        s = self.settings
        if s.max_stddev_noise:
            valid &= std <= s.max_stddev_noise * np.median(std[valid])
        if s.film_edge_z and grid_micrograph is not None:
            diameter = s.particle_diameter_A / self.grid_px
            valid &= ~film_mask(grid_micrograph, FILM_WINDOW_DIAMETERS * diameter, 0.5 * diameter, s.film_edge_z)
        return valid

    def _suppress(self, x, y, v, valid):
        """Minimum distance, and for templates side lobes: a peak within two particle diameters of one more
        than ``1 / SIDE_LOBE_FRACTION`` times as high (kept, or a rejected contaminant) is dropped."""
        s = self.settings
        min_dist_A = s.min_distance_A or s.particle_diameter_A
        lobes = s.mode == "template"
        return enforce_min_distance(x, y, v, min_dist_A / self.grid_px, eligible=valid[y, x],
                                    shadow_distance=SHADOW_DIAMETERS * s.particle_diameter_A / self.grid_px * lobes,
                                    shadow_fraction=SIDE_LOBE_FRACTION * lobes)

    def pick(self, micrograph, ctf: CTFParams | None = None, threshold: float | None = None) -> Picks:
        """Pick one micrograph ``[H, W]`` (its CTF: one entry). ``threshold`` overrides the settings'."""
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
        return Picks(table=table, fom=fom, local_std=std, scale=self.scale, threshold=float(level), valid=valid,
                     picker=self)
