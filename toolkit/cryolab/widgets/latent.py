"""Latent-space widgets of a variability analysis: select particles in it, slide along it.

* :class:`LatentExplorer` - the particles as points in two latent coordinates (coloured by any
  per-particle value, e.g. a nuisance variable to see a leak); a region selects particles (a box
  from the range sliders, or a lasso as a polygon of vertices, :meth:`LatentExplorer.select_polygon`),
  **new particle set** writes them as a STAR file, **reconstruct** shows their map;
* :class:`ComponentSlider` - a slider along one component with the map of the model there
  (``mean + t * eigenvolume``) and the component's free-energy profile with the slider's position.
"""
from __future__ import annotations

from pathlib import Path

import ipywidgets as W
import numpy as np

from ..methods.variability import free_energy
from ._display import ImagePanel, new_figure
from .viewers import MapViewer

__all__ = ["LatentExplorer", "ComponentSlider"]


def _range(v):
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


class LatentExplorer(W.VBox):
    """``coordinates [N, K]`` (e.g. :attr:`VariabilityResult.z`) of the particles of ``stack``;
    ``color [N]`` an optional value per particle (``color_name`` its label). ``selected`` (bool
    ``[N]``) is the current selection; ``subset()`` the selected particles as a stack; ``map`` the
    last reconstruction. ``out_dir``: where **new particle set** writes ``selection_NNN.star``."""

    def __init__(self, coordinates, stack=None, *, color=None, color_name: str = "", out_dir=".",
                 backend: str = "slices"):
        self.z = np.asarray(coordinates, float)
        self.z = self.z[:, None] if self.z.ndim == 1 else self.z
        self.stack, self.out_dir, self.backend = stack, Path(out_dir), backend
        self.color = None if color is None else np.asarray(color, float)
        self.color_name = color_name
        k = self.z.shape[1]
        options = [(f"z{j + 1}", j) for j in range(k)]
        self.x_axis = W.Dropdown(options=options, value=0, description="x")
        self.y_axis = W.Dropdown(options=options, value=min(1, k - 1), description="y")
        self.x_range = W.FloatRangeSlider(description="x range", continuous_update=False, readout_format=".3g")
        self.y_range = W.FloatRangeSlider(description="y range", continuous_update=False, readout_format=".3g")
        self.save_button = W.Button(description="new particle set", disabled=stack is None)
        self.reconstruct_button = W.Button(description="reconstruct", disabled=stack is None)
        self.status = W.HTML()
        self.panel = ImagePanel(dpi=72)
        self.viewer = None
        self.map = None
        self.written: list = []
        self.polygon = None
        self._reset_ranges()
        self.selected = np.ones(len(self.z), bool)
        self._update_selection()
        super().__init__([W.HBox([self.x_axis, self.y_axis]), W.HBox([self.x_range, self.y_range]), self.panel,
                          W.HBox([self.save_button, self.reconstruct_button]), self.status])
        for w in (self.x_axis, self.y_axis):
            w.observe(self._axes_changed, names="value")
        for w in (self.x_range, self.y_range):
            w.observe(self._ranges_changed, names="value")
        self.save_button.on_click(lambda _b: self.write_selection())
        self.reconstruct_button.on_click(lambda _b: self.reconstruct())

    def _reset_ranges(self):
        for slider, axis in ((self.x_range, self.x_axis), (self.y_range, self.y_axis)):
            lo, hi = _range(self.z[:, axis.value])
            slider.min, slider.max = -1e300, 1e300            # widen first: min/max are checked against value
            slider.value = (lo, hi)
            slider.min, slider.max = lo, hi
            slider.step = (hi - lo) / 200

    def _axes_changed(self, _change=None):
        self.polygon = None
        self._reset_ranges()
        self._update_selection()

    def _ranges_changed(self, _change=None):
        self.polygon = None
        self._update_selection()

    def _xy(self):
        return self.z[:, self.x_axis.value], self.z[:, self.y_axis.value]

    def _update_selection(self):
        x, y = self._xy()
        (x0, x1), (y0, y1) = self.x_range.value, self.y_range.value
        self.selected = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        self._draw()

    def select_polygon(self, vertices) -> np.ndarray:
        """Select the particles inside the polygon ``vertices [V, 2]`` (in the shown axes; a lasso)."""
        from matplotlib.path import Path as MplPath
        x, y = self._xy()
        self.polygon = np.asarray(vertices, float)
        self.selected = MplPath(self.polygon).contains_points(np.stack([x, y], axis=1))
        self._draw()
        return self.selected

    def _draw(self):
        x, y = self._xy()
        fig = new_figure(4.6, 3.8)
        ax = fig.subplots()
        c = self.color if self.color is not None else None
        sc = ax.scatter(x[~self.selected], y[~self.selected], s=4, c="0.75" if c is None else c[~self.selected],
                        cmap="viridis", alpha=0.5, linewidths=0)
        sc2 = ax.scatter(x[self.selected], y[self.selected], s=5, c="C3" if c is None else c[self.selected],
                         cmap="viridis", linewidths=0)
        if c is not None:
            for s in (sc, sc2):
                s.set_clim(np.nanmin(c), np.nanmax(c))
            fig.colorbar(sc2, ax=ax, label=self.color_name or "value")
        if self.polygon is not None:
            p = np.vstack([self.polygon, self.polygon[:1]])
            ax.plot(p[:, 0], p[:, 1], "k-", lw=1)
        ax.set_xlabel(f"z{self.x_axis.value + 1}")
        ax.set_ylabel(f"z{self.y_axis.value + 1}")
        ax.set_title(f"{int(self.selected.sum())} of {len(x)} particles selected", fontsize=9)
        self.panel.show(fig)

    def subset(self):
        """The selected particles as a :class:`cryolab.io.ParticleStack`."""
        if self.stack is None:
            raise ValueError("LatentExplorer: no particle stack was given")
        return self.stack.subset(np.flatnonzero(self.selected))

    def write_selection(self) -> Path:
        """Write the selection as ``out_dir/selection_NNN.star`` (next free number); returns the path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"selection_{len(self.written) + 1:03d}.star"
        self.subset().write_star(path)
        self.written.append(path)
        self.status.value = f"wrote {int(self.selected.sum())} particles to {path.name}"
        return path

    def reconstruct(self) -> np.ndarray:
        """Reconstruct the selected particles at their poses (Wiener) and show the map."""
        from ..reconstruction import reconstruct_stack
        if self.selected.sum() < 2:
            self.status.value = "select at least two particles"
            return None
        self.map = np.asarray(reconstruct_stack(self.subset(), method="wiener"))
        if self.viewer is None:
            self.viewer = MapViewer(self.map, float(self.stack.pixel_size_A), backend=self.backend)
            self.children = tuple(self.children) + (self.viewer,)
        else:
            self.viewer.set_volume(self.map)
        self.status.value = f"map of {int(self.selected.sum())} particles"
        return self.map


class ComponentSlider(W.VBox):
    """``result``: a :class:`~cryolab.methods.variability.VariabilityResult`. The slider moves along
    ``component`` in standard deviations of its coordinate (-2.5 .. 2.5); the map is
    ``result.map_at`` there (cached per position) and the free-energy profile of the coordinate
    (bootstrap error band) marks the position."""

    def __init__(self, result, component: int = 0, backend: str = "slices", threshold_sigma: float = 2.0):
        self.result = result
        self.component = W.Dropdown(options=[(f"component {k + 1}", k) for k in range(result.n_components)],
                                    value=int(component), description="component")
        self.position = W.FloatSlider(value=0.0, min=-2.5, max=2.5, step=0.25, description="z (σ)",
                                      continuous_update=False, readout_format=".2f")
        self.maps: dict = {}
        self.profiles: dict = {}
        self.energy = ImagePanel(dpi=72)
        self.viewer = MapViewer(self._map(), result.pixel_size_A, threshold_sigma, backend=backend)
        super().__init__([W.HBox([self.component, self.position]), self.energy, self.viewer])
        self.component.observe(self._changed, names="value")
        self.position.observe(self._changed, names="value")
        self._draw()

    def _z(self) -> float:
        k = int(self.component.value)
        return float(self.position.value) * float(np.sqrt(max(self.result.variance[k], 0.0)))

    def _map(self):
        key = (int(self.component.value), round(float(self.position.value), 3))
        if key not in self.maps:
            self.maps[key] = self.result.map_at(np.eye(self.result.n_components)[key[0]] * self._z())
        return self.maps[key]

    def profile(self, k: int):
        """The free-energy profile of coordinate ``k`` (computed once)."""
        if k not in self.profiles:
            self.profiles[k] = free_energy(self.result.z[:, k], n_boot=50)
        return self.profiles[k]

    def _draw(self):
        k = int(self.component.value)
        prof = self.profile(k)
        fig = new_figure(4.6, 2.4)
        ax = fig.subplots()
        ax.fill_between(prof.s, prof.G - prof.G_err, prof.G + prof.G_err, color="C0", alpha=0.3, linewidth=0)
        ax.plot(prof.s, prof.G, "C0-")
        for m in prof.minima:
            ax.plot(prof.s[m], prof.G[m], "kv", ms=5)
        ax.axvline(self._z(), color="C3")
        ax.set_xlabel(f"z{k + 1}")
        ax.set_ylabel("free energy (kT)")
        self.energy.show(fig)

    def _changed(self, _change=None):
        self.viewer.set_volume(self._map())
        self._draw()
