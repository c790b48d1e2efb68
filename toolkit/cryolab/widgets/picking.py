"""Picking views: :class:`PickingViewer` (a micrograph with its picks, the figure-of-merit map and a live
threshold) and :func:`tilt_pair_plot` (the polar plot of tilt-pair validation, as ``relion_tiltpair_plot``).
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np

from ..picking import match_picks
from ..picking.score import band_filter
from ..simulate.micrographs import filter_micrograph
from ._display import ImagePanel, new_figure

__all__ = ["PickingViewer", "tilt_pair_plot"]


class PickingViewer(W.VBox):
    """A micrograph with picks over it (red circles of the particle diameter; true centres as green crosses
    when ``truth_xy`` is given), the figure-of-merit map, and a threshold slider that re-picks live (the
    same local maxima, minimum distance and side-lobe rules as :meth:`cryolab.picking.Picker.pick`), with
    precision and recall against the truth (a pick counts within a quarter diameter).

    ``picks``: the :class:`cryolab.picking.Picks` of ``micrograph`` (``[H, W]``, shown low-pass filtered
    to ``lowpass_A``); ``diameter_A`` the particle diameter; ``pixel_size_A`` the micrograph's.
    """

    def __init__(self, micrograph, picks, pixel_size_A: float, diameter_A: float, truth_xy=None,
                 lowpass_A: float = 20.0, dpi: int = 60):
        self.picks, self.truth = picks, None if truth_xy is None else np.asarray(truth_xy, float)
        self.radius_px = 0.5 * diameter_A / pixel_size_A
        image = np.asarray(micrograph, np.float64)
        self.image = filter_micrograph(image, band_filter(image.shape, pixel_size_A, lowpass_A))
        finite = picks.fom[np.isfinite(picks.fom)]
        top = float(np.percentile(finite, 99.9)) if finite.size else 1.0
        self.slider = W.FloatSlider(value=picks.threshold, min=0.0, max=max(top, picks.threshold * 1.5),
                                    step=0.05, description="threshold", continuous_update=False,
                                    layout=W.Layout(width="420px"))
        self.summary = W.HTML()
        self.panel = ImagePanel(dpi=dpi)
        self.slider.observe(lambda _: self.refresh(), names="value")
        super().__init__([W.HBox([self.slider, self.summary]), self.panel])
        self.refresh()

    @property
    def xy(self) -> np.ndarray:
        """The picks at the slider's threshold, ``[P, 2]`` (x, y) micrograph pixels."""
        return self.picks.above(self.slider.value)

    def scores(self) -> dict | None:
        """Precision and recall at the slider's threshold (None without the truth)."""
        if self.truth is None:
            return None
        return match_picks(self.xy, self.truth, self.radius_px / 2)

    def refresh(self) -> None:
        from matplotlib.patches import Circle
        xy = self.xy
        text = f"<b>{len(xy)} picks</b> at {self.slider.value:.2f}"
        s = self.scores()
        if s is not None:
            text += f" &nbsp; precision {s['precision']:.2f}, recall {s['recall']:.2f}"
        self.summary.value = text
        fig = new_figure(10, 5)
        ax_mic, ax_fom = fig.subplots(1, 2)
        ax_mic.imshow(self.image, cmap="gray")
        for x, y in xy:
            ax_mic.add_patch(Circle((x, y), self.radius_px, fill=False, color="red", lw=1))
        if self.truth is not None:
            ax_mic.plot(self.truth[:, 0], self.truth[:, 1], "+", color="lime", ms=5)
        ax_mic.set_title("micrograph and picks")
        fom = np.where(np.isfinite(self.picks.fom), self.picks.fom, 0)
        im = ax_fom.imshow(np.clip(fom, 0, None), cmap="magma")
        ax_fom.contour(fom >= self.slider.value, [0.5], colors="cyan", linewidths=0.5)
        ax_fom.set_title("figure of merit (search grid)")
        fig.colorbar(im, ax=ax_fom, shrink=0.8)
        for ax in (ax_mic, ax_fom):
            ax.set_xticks([])
            ax.set_yticks([])
        self.panel.show(fig)


def tilt_pair_plot(stats, max_tilt_deg: float = 30.0, ax=None):
    """The polar plot of tilt-pair validation: each pair at radius = tilt and angle = axis (this
    package's convention; ``relion_tiltpair_plot`` draws the angle ``180 - axis``); the median marked.
    ``stats``: :class:`cryolab.validation.tiltpair.TiltPairStats`. Returns the figure."""
    fig = None
    if ax is None:
        fig = new_figure(4.2, 4.2)
        ax = fig.add_subplot(projection="polar")
    ax.scatter(np.radians(stats.axis), stats.tilt, s=6, alpha=0.6)
    ax.scatter([np.radians(stats.median_axis)], [stats.median_tilt], marker="x", s=60, color="red")
    ax.set_rmax(max_tilt_deg)
    ax.set_title(f"tilt {stats.median_tilt:.1f} deg, axis {stats.median_axis:.0f} deg; "
                 f"{stats.fraction_within:.0%} within {stats.within_deg:g} deg", fontsize=8)
    return fig if fig is not None else ax.figure
