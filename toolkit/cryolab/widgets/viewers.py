"""Viewers for results: a 3D map (isosurface or slices) and FSC curves with resolution estimates."""
from __future__ import annotations

import io
import os
import tempfile

import ipywidgets as W
import numpy as np

from ..io import write_mrc
from ..validation import resolution_at
from ._display import ImagePanel, image_axes, new_figure, resolution_axis, slider

__all__ = ["MapViewer", "FSCViewer", "have_nglview"]


def have_nglview() -> bool:
    """True when nglview can be imported (the 3D isosurface view)."""
    try:
        import nglview  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "use the fallback"
        return False
    return True


def _mrc_bytes(volume, pixel_size_A: float) -> bytes:
    """The map written as an MRC file (through a temporary file), returned as bytes."""
    fd, path = tempfile.mkstemp(suffix=".mrc")
    os.close(fd)
    try:
        write_mrc(path, volume, pixel_size_A)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


class MapViewer(W.VBox):
    """A 3D map with a threshold slider (in standard deviations above the mean).

    ``backend="nglview"`` shows an isosurface (needs nglview); ``"slices"`` shows the three
    central orthogonal sections and the projection along z (maximum) with the threshold drawn as
    a contour; ``"auto"`` (default) picks nglview when it is installed.
    Attributes: ``backend``, ``threshold_sigma``, ``threshold`` (map units), ``view`` (the
    ``NGLWidget``; None for slices), ``sections`` (dict of the 2D arrays shown by ``"slices"``).
    """

    def __init__(self, volume, pixel_size_A: float, threshold_sigma: float = 2.0,
                 backend: str = "auto", dpi: int = 72):
        if backend not in ("auto", "nglview", "slices"):
            raise ValueError(f"MapViewer: backend must be 'auto', 'nglview' or 'slices', not {backend!r}")
        if backend == "auto":
            backend = "nglview" if have_nglview() else "slices"
        self.backend = backend
        self.pixel_size_A = float(pixel_size_A)
        self.slider = slider("threshold (σ)", threshold_sigma, -1.0, 8.0, 0.1, fmt=".1f")
        self.caption = W.HTML()
        self.view = self._component = None
        self.panel = None
        if backend == "nglview":
            import nglview
            self.view = nglview.NGLWidget()
            self.view.layout = W.Layout(width="100%", height="420px")
            display_widget = self.view
        else:
            self.panel = ImagePanel(dpi=dpi)
            display_widget = self.panel
        super().__init__([W.HBox([self.slider, self.caption]), display_widget])
        self.slider.observe(self._changed, names="value")
        self.set_volume(volume)

    @property
    def threshold_sigma(self) -> float:
        return float(self.slider.value)

    @property
    def threshold(self) -> float:
        """The threshold in map units: mean + threshold_sigma * standard deviation."""
        return self._mean + self.threshold_sigma * self._std

    def set_volume(self, volume) -> None:
        """Show a new map (same viewer, same threshold in σ)."""
        self.volume = np.asarray(volume, dtype=np.float32)
        self._mean, self._std = float(self.volume.mean()), float(self.volume.std())
        if self.view is not None:
            if self._component is not None:
                self.view.remove_component(self._component)
            # NGL's default representation of a map is a surface and frames the camera on it;
            # restyle it rather than adding our own (a new one is not framed)
            self._component = self.view.add_component(
                io.BytesIO(_mrc_bytes(self.volume, self.pixel_size_A)), ext="mrc")
            self.view.update_representation(component=0, repr_index=0, isolevelType="sigma",
                                            isolevel=self.threshold_sigma, color="#4a90c2")
        self._show()

    def _changed(self, _change=None):
        if self.view is not None:
            self.view.update_representation(component=0, repr_index=0,
                                            isolevelType="sigma", isolevel=self.threshold_sigma)
        self._show()

    def _show(self) -> None:
        n = self.volume.shape[-1]
        self.caption.value = (f"&nbsp;{n}³ voxels, {self.pixel_size_A:.2f} Å/voxel; "
                              f"threshold {self.threshold:.3g} (map units)")
        if self.panel is None:
            return
        c = n // 2
        v = self.volume
        self.sections = {"xy (z = centre)": v[c], "xz (y = centre)": v[:, c, :],
                         "yz (x = centre)": v[:, :, c], "maximum along z": v.max(axis=0)}
        fig = new_figure(11.0, 3.1)
        for ax, (title, img) in zip(fig.subplots(1, 4), self.sections.items()):
            image_axes(ax, img, title, pixel_size_A=self.pixel_size_A if title.startswith("xy") else None)
            if img.min() < self.threshold < img.max():
                ax.contour(img, levels=[self.threshold], colors="#f5a623", linewidths=0.8)
        self.panel.show(fig)


def _as_curves(fsc_curves, labels):
    if isinstance(fsc_curves, dict):
        return {str(k): np.asarray(v, dtype=float) for k, v in fsc_curves.items()}
    if len(fsc_curves) == 0:          # nothing yet: curves come later through add()
        return {}
    arr = list(fsc_curves) if np.ndim(fsc_curves[0]) else [fsc_curves]
    labels = labels or [f"FSC {i + 1}" if len(arr) > 1 else "FSC" for i in range(len(arr))]
    return {str(lab): np.asarray(c, dtype=float) for lab, c in zip(labels, arr)}


class FSCViewer(W.VBox):
    """FSC curves against spatial frequency, each with its resolution at its own criterion.

    ``fsc_curves``: one curve ``[N//2+1]`` (shells 0 .. N//2), a list of curves or a dict
    ``label -> curve``; ``n`` the box size and ``pixel_size_A`` the voxel size. ``criteria``:
    the threshold of each curve, ``0.143`` for two independent half maps (the default) or
    ``0.5`` for a map against a reference (e.g. the truth); a number for all, or a dict
    ``label -> threshold``. ``resolutions_A`` maps each label to ``{0.143: Å, 0.5: Å}``
    (:func:`cryolab.validation.resolution_at`); ``crosses`` to ``{0.143: bool, 0.5: bool}``
    (False: the curve stays above the threshold up to Nyquist, and its resolution is quoted
    as "≥ Nyquist"). :meth:`add` appends a curve (e.g. one per iteration).
    """

    thresholds = (0.143, 0.5)

    def __init__(self, fsc_curves, n: int, pixel_size_A: float, labels=None, dpi: int = 72,
                 criteria=0.143):
        self.n, self.pixel_size_A = int(n), float(pixel_size_A)
        self.curves, self.resolutions_A, self.crosses, self.criteria = {}, {}, {}, {}
        self._default = criteria if not isinstance(criteria, dict) else 0.143
        given = criteria if isinstance(criteria, dict) else {}
        self.show_half = W.Checkbox(value=True, description="show the 0.5 criterion", indent=False)
        self.caption = W.HTML()
        self.panel = ImagePanel(dpi=dpi)
        super().__init__([self.show_half, self.caption, self.panel])
        self.show_half.observe(lambda _c: self._draw(), names="value")
        for label, curve in _as_curves(fsc_curves, labels).items():
            self._store(label, curve, given.get(label))
        self._draw()

    def _store(self, label: str, curve, criterion=None) -> None:
        curve = np.asarray(curve, dtype=float)
        self.curves[label] = curve
        self.criteria[label] = float(self._default if criterion is None else criterion)
        self.resolutions_A[label] = {t: resolution_at(curve, t, self.n, self.pixel_size_A)
                                     for t in self.thresholds}
        self.crosses[label] = {t: bool(np.any(curve[1:] < t)) for t in self.thresholds}

    def add(self, curve, label: str | None = None, criterion: float | None = None) -> None:
        """Add (or replace) one curve (``criterion``: its threshold, default as the viewer's) and redraw."""
        self._store(label or f"FSC {len(self.curves) + 1}", curve, criterion)
        self._draw()

    def resolution_text(self, label: str, threshold: float | None = None) -> str:
        """The resolution of one curve at ``threshold`` (default: its criterion), "≥ Nyquist (x Å)" when it never crosses."""
        t = self.criteria[label] if threshold is None else threshold
        res = self.resolutions_A[label][t]
        return f"{res:.1f} Å" if self.crosses[label][t] else f"≥ Nyquist ({2 * self.pixel_size_A:.1f} Å)"

    def _draw(self) -> None:
        shown = self.thresholds if self.show_half.value else self.thresholds[:1]
        rows = "".join(f"<tr><td>{lab}</td><td>{self.criteria[lab]:g}</td><td><b>{self.resolution_text(lab)}</b></td>"
                       + "".join(f"<td>{self.resolution_text(lab, t)}</td>" for t in shown) + "</tr>"
                       for lab in self.curves)
        head = "<th>criterion</th><th>resolution</th>" + "".join(f"<th>FSC = {t}</th>" for t in shown)
        self.caption.value = f"<table><tr><th></th>{head}</tr>{rows}</table>"
        fig = new_figure(7.5, 3.6)
        ax = fig.subplots()
        max_freq = 0.5 / self.pixel_size_A
        for label, curve in self.curves.items():
            freq = np.arange(curve.size) / (self.n * self.pixel_size_A)
            line, = ax.plot(freq, curve, lw=1.4,
                            label=f"{label} (FSC {self.criteria[label]:g}): {self.resolution_text(label)}")
            if self.crosses[label][self.criteria[label]]:
                ax.axvline(1.0 / self.resolutions_A[label][self.criteria[label]], color=line.get_color(), ls=":", lw=1.0)
        for t, style in zip(shown, ("--", "-.")):
            ax.axhline(t, color="0.4", ls=style, lw=0.9)
            # the thresholds are labelled outside the axes, right of the plot, where no curve runs
            ax.text(1.01, t, f"{t}", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="0.3")
        ax.axhline(0, color="0.8", lw=0.6)
        ax.set_xlim(0, max_freq)
        ax.set_ylim(min(-0.1, min((float(c.min()) for c in self.curves.values()), default=0.0) - 0.05), 1.05)
        ax.set_xlabel("spatial frequency (1/Å)", fontsize=9)
        ax.set_ylabel("Fourier shell correlation", fontsize=9)
        ax.tick_params(labelsize=8)
        if self.curves:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.10, 1.0), frameon=False)
        resolution_axis(ax, max_freq)
        self.panel.show(fig)
