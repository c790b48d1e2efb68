"""Place and size a soft mask on a 3D map, with a live preview of the masked map.

For focused classification, focused refinement and signal subtraction: mask the part of a
complex to study (e.g. the ribosome's RACK1), then hand ``editor.mask`` or ``editor.settings``
on. Every mask comes from :mod:`cryolab.masks`; the widget only picks the parameters.
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np
from matplotlib.artist import Artist

from ..errors import CryolabInputError
from ..masks import (SOFT_EDGE_A, centre_of_mass_A, check_mask, ellipsoid_mask, mask_fraction,
                     sphere_mask, threshold_mask, write_mask)
from ._display import ImagePanel, new_figure, slider

__all__ = ["MaskEditor"]

SHAPES = ("sphere", "ellipsoid", "threshold")
_AXES = ("x", "y", "z")
_SETTINGS = ("shape", "centre_A", "radius_A", "radii_A", "soft_edge_A", "threshold", "extend_A")
# each central section: the voxels it takes, its horizontal and vertical axes, the fixed axis
_CUTS = {"xy": (("x", "y"), "z"), "xz": (("x", "z"), "y"), "yz": (("y", "z"), "x")}


def _slider(description: str, value: float, lo: float, hi: float, step: float, fmt: str = ".1f"):
    """A released-value slider whose range is widened to hold ``value``."""
    value = float(value)
    return slider(description, value, min(lo, value), max(hi, value), step, fmt=fmt)


def _show(widgets, visible: bool) -> None:
    for w in widgets:
        w.layout.display = "" if visible else "none"


class MaskEditor(W.VBox):
    """Place a sphere, an ellipsoid or a threshold mask on ``volume`` and preview the masked map.

    Conventions (those of :mod:`cryolab.masks`): ``volume`` is ``[z, y, x]`` with the box centre
    at voxel ``N // 2``; positions are ``(x, y, z)`` in Angstrom from the box centre; radii, the
    ellipsoid's semi-axes (along x, y, z), the soft edge and ``extend_A`` are in Angstrom;
    ``threshold`` is in map units. The threshold shape ignores the centre except to choose the
    sections shown.

    Controls: shape, centre x/y/z, radius (sphere), three semi-axes (ellipsoid), threshold and
    extend (threshold), soft edge; **centre on density** moves the centre to the centre of mass
    of ``volume * mask``; **save** writes the mask (:func:`cryolab.masks.write_mask`) to the
    path in the text box (``save_path=None`` leaves the save row out).
    Panels: the sections xy, xz, yz through the mask centre, of the map with the mask's 0.5
    contour and of the masked map; the caption gives the fraction of the box and of the map's
    positive density inside the mask.

    Results: ``mask`` (float32 ``[N, N, N]``), ``settings`` (a JSON-able dict; rebuild with
    :meth:`from_settings`), ``fractions``, ``sections`` and ``mask_sections`` (the 2D arrays
    shown). The mask is recomputed only when one of its parameters changes.
    """

    def __init__(self, volume, pixel_size_A: float, *, shape: str = "sphere", centre_A=None,
                 radius_A: float | None = None, radii_A=None, soft_edge_A: float = SOFT_EDGE_A,
                 threshold: float | None = None, extend_A: float = 0.0,
                 save_path: str | None = "mask.mrc", dpi: int = 72):
        v = np.asarray(volume, np.float32)
        if v.ndim != 3 or len(set(v.shape)) != 1:
            raise CryolabInputError(f"MaskEditor needs a cubic map [N, N, N], got {v.shape}",
                                    field="volume")
        if shape not in SHAPES:
            raise CryolabInputError(f"shape must be one of {SHAPES}, not {shape!r}", field="shape")
        self.volume, self.pixel_size_A, self.n = v, float(pixel_size_A), v.shape[0]
        px, n = self.pixel_size_A, self.n
        half = (n // 2) * px
        self._positive = np.clip(v, 0.0, None)
        self._positive_total = float(self._positive.sum())
        radius_A = half / 4 if radius_A is None else radius_A
        radii_A = (radius_A,) * 3 if radii_A is None else radii_A
        centre_A = (0.0, 0.0, 0.0) if centre_A is None else centre_A
        lo, hi = float(v.min()), float(v.max())
        threshold = float(v.mean() + 2 * v.std()) if threshold is None else threshold

        self.shape = W.ToggleButtons(options=SHAPES, value=shape, description="shape",
                                     style={"button_width": "80px"})
        self.centre = [_slider(f"centre {a} (Å)", c, -half, (n - 1 - n // 2) * px, px / 2)
                       for a, c in zip(_AXES, centre_A)]
        self.radius = _slider("radius (Å)", radius_A, px, half, px / 2)
        self.radii = [_slider(f"semi-axis {a} (Å)", r, px, half, px / 2) for a, r in zip(_AXES, radii_A)]
        self.soft_edge = _slider("soft edge (Å)", soft_edge_A, 0.0, half / 2, px / 2)
        self.threshold = _slider("threshold (map units)", threshold, lo, hi, (hi - lo) / 500 or 1e-3, ".3g")
        self.extend = _slider("extend (Å)", extend_A, -half / 4, half / 4, px / 2)
        self.centre_button = W.Button(description="centre on density", icon="crosshairs",
                                      tooltip="move the centre to the centre of mass of the masked map")
        self.path = W.Text(value=save_path or "", description="file", layout=W.Layout(width="320px"))
        self.save_button = W.Button(description="save", icon="save")
        self.caption, self.status = W.HTML(), W.HTML()
        self.panel = ImagePanel(dpi=dpi)
        self._params = [*self.centre, self.radius, *self.radii, self.soft_edge, self.threshold, self.extend]
        grid = W.GridBox([*self.centre, self.soft_edge, self.radius, *self.radii, self.threshold, self.extend],
                         layout=W.Layout(grid_template_columns="repeat(3, 330px)"))
        rows = [W.HBox([self.shape, self.centre_button]), grid, self.caption]
        if save_path is not None:
            rows.append(W.HBox([self.path, self.save_button, self.status]))
        super().__init__(rows + [self.panel])
        self._mask = np.zeros((n,) * 3, np.float32)
        self._mask_key = self._view_key = self._fig = None
        self._contours = []
        self._holding = False
        for w in [self.shape, *self._params]:
            w.observe(self._changed, names="value")
        self.centre_button.on_click(lambda _b: self.centre_on_density())
        self.save_button.on_click(lambda _b: self._save_clicked())
        self.update()

    @classmethod
    def from_settings(cls, volume, pixel_size_A: float, settings: dict, **kw) -> "MaskEditor":
        """An editor with the parameters of ``settings`` (a dict from :attr:`settings`)."""
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise CryolabInputError(f"unknown mask settings {sorted(unknown)}", field="settings")
        return cls(volume, pixel_size_A, **settings, **kw)

    @property
    def centre_A(self) -> np.ndarray:
        """The mask centre ``(x, y, z)``, Angstrom from the box centre."""
        return np.array([float(s.value) for s in self.centre])

    @property
    def settings(self) -> dict:
        """Every parameter (of all shapes) as plain floats and lists, ready for ``json.dump``."""
        return {"shape": self.shape.value, "centre_A": self.centre_A.tolist(),
                "radius_A": float(self.radius.value), "radii_A": [float(s.value) for s in self.radii],
                "soft_edge_A": float(self.soft_edge.value), "threshold": float(self.threshold.value),
                "extend_A": float(self.extend.value)}

    @property
    def mask(self) -> np.ndarray:
        """The current mask, float32 ``[N, N, N]`` in [0, 1]."""
        return self._mask

    def _compute(self, s: dict) -> np.ndarray:
        n, px = self.n, self.pixel_size_A
        if s["shape"] == "sphere":
            return sphere_mask(n, px, s["radius_A"], s["centre_A"], s["soft_edge_A"])
        if s["shape"] == "ellipsoid":
            return ellipsoid_mask(n, px, s["radii_A"], s["centre_A"], s["soft_edge_A"])
        return threshold_mask(self.volume, s["threshold"], px, s["extend_A"], s["soft_edge_A"])

    def _changed(self, _change=None) -> None:
        if not self._holding:
            self.update()

    def update(self) -> None:
        """Recompute the mask if one of its parameters changed, and redraw if the view changed."""
        s = self.settings
        shape = s["shape"]
        _show([self.radius], shape == "sphere")
        _show(self.radii, shape == "ellipsoid")
        _show([self.threshold, self.extend], shape == "threshold")
        used = {"sphere": ("centre_A", "radius_A"), "ellipsoid": ("centre_A", "radii_A"),
                "threshold": ("threshold", "extend_A")}[shape]
        key = repr([shape, s["soft_edge_A"]] + [s[k] for k in used])
        if key != self._mask_key:
            try:
                self._mask = self._compute(s)
                self.status.value = ""
            except CryolabInputError as err:
                self.status.value = f"<span style='color:#b00'>{err}</span>"
            self._mask_key = key
            self._fractions()
        view = (key, tuple(self.centre_A))
        if view != self._view_key:
            self._view_key = view
            self._draw()

    @property
    def centre_index(self) -> np.ndarray:
        """The voxel ``(ix, iy, iz)`` nearest the centre (the sections pass through it)."""
        i = np.rint(self.centre_A / self.pixel_size_A).astype(int) + self.n // 2
        return np.clip(i, 0, self.n - 1)

    def _fractions(self) -> None:
        m = self._mask
        dens = float((self._positive * m).sum()) / self._positive_total if self._positive_total > 0 else 0.0
        self.fractions = {"box": mask_fraction(m), "density": dens}
        self.caption.value = (f"inside the mask: <b>{100 * self.fractions['box']:.1f} %</b> of the box, "
                              f"<b>{100 * dens:.1f} %</b> of the map's positive density")

    def centre_on_density(self) -> np.ndarray:
        """Move the centre to the centre of mass of ``volume * mask``; returns it ``(x, y, z)`` in A."""
        try:
            com = centre_of_mass_A(self.volume * self._mask, self.pixel_size_A)
        except CryolabInputError as err:
            self.status.value = f"<span style='color:#b00'>{err}</span>"
            return self.centre_A
        self._holding = True          # one update for the three sliders
        try:
            for s, c in zip(self.centre, com):
                s.value = float(c)
        finally:
            self._holding = False
        self.update()
        return com

    def save(self, path=None):
        """Write the mask as MRC to ``path`` (default: the text box); refuses an empty or full mask."""
        path = path or self.path.value
        if not path:
            raise CryolabInputError("no file name for the mask", field="path")
        return write_mask(path, check_mask(self._mask, self.n), self.pixel_size_A)

    def _save_clicked(self) -> None:
        try:
            self.status.value = f"wrote {self.save()}"
        except (CryolabInputError, OSError) as err:
            self.status.value = f"<span style='color:#b00'>{err}</span>"

    def _figure(self):
        """The 2 x 3 figure, made once: later updates only replace the images, titles and contours."""
        n, px = self.n, self.pixel_size_A
        half = (np.array([-(n // 2), n - 1 - n // 2]) + [-0.5, 0.5]) * px
        fig = new_figure(10.5, 6.8)
        axes = fig.subplots(2, 3)
        images = np.empty((2, 3), object)
        marks = [ax.plot([], [], "+", color="#4a90c2", ms=10)[0] for ax in axes[0]]   # the centre
        for col, ((h, vert), _other) in enumerate(_CUTS.values()):
            for row in range(2):
                ax = axes[row, col]
                images[row, col] = ax.imshow(np.zeros((n, n)), cmap="gray", origin="lower",
                                             interpolation="nearest", extent=[*half, *half],
                                             vmin=float(self.volume.min()), vmax=float(self.volume.max()))
                ax.set_xlabel(f"{h} (Å)", fontsize=8)
                ax.set_ylabel(f"{vert} (Å)", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.locator_params(nbins=4)          # few tick labels: text is most of a redraw
        return fig, axes, images, marks

    def _draw(self) -> None:
        n, px = self.n, self.pixel_size_A
        ix, iy, iz = self.centre_index
        take = {"xy": np.s_[iz], "xz": np.s_[:, iy, :], "yz": np.s_[:, :, ix]}
        fixed = {"z": iz, "y": iy, "x": ix}
        coords = (np.arange(n) - n // 2) * px
        self.sections = {k: self.volume[t] for k, t in take.items()}
        self.mask_sections = {k: self._mask[t] for k, t in take.items()}
        first = self._fig is None
        if first:
            self._fig, self._axes, self._images, self._marks = self._figure()
        for cs in self._contours:
            if isinstance(cs, Artist):
                cs.remove()
            else:                                   # matplotlib < 3.8: a ContourSet is not an artist
                for c in cs.collections:
                    c.remove()
        self._contours = []
        centre = dict(zip(_AXES, self.centre_A))
        for col, (name, ((h, vert), other)) in enumerate(_CUTS.items()):
            img, m = self.sections[name], self.mask_sections[name]
            self._marks[col].set_data([centre[h]], [centre[vert]])
            where = f"{name} at {other} = {coords[fixed[other]]:.0f} Å"
            for row, (data, what) in enumerate(((img, "map"), (img * m, "masked map"))):
                self._images[row, col].set_data(data)
                self._axes[row, col].set_title(f"{what}, {where}", fontsize=9)
            if m.min() < 0.5 < m.max():
                self._contours.append(self._axes[0, col].contour(coords, coords, m, levels=[0.5],
                                                                 colors="#f5a623", linewidths=1.0))
        self.panel.show(self._fig)
        if first:                                   # keep the first layout: no re-layout per update
            self._fig.set_layout_engine("none")
