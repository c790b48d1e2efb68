"""Hinge explorer: slide along a principal component of the body motions and watch the map move.

The map shown is :func:`cryolab.methods.multibody.motion.composite_map`: the reference body
where the consensus has it and the other bodies moved by the component's motion, ``score``
standard deviations from the mean. The text beside it reads the component as an axis, an
angle and a pivot (:meth:`~cryolab.methods.multibody.motion.MotionPCA.describe`).
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np

from ..methods.multibody.motion import composite_map, masked_body_maps
from .viewers import MapViewer

__all__ = ["HingeExplorer"]


class HingeExplorer(W.VBox):
    """``result``: a :class:`~cryolab.methods.multibody.MultiBodyRefine` or its
    :class:`~cryolab.methods.multibody.result.MultiBodyResult`; ``pca``: its
    :func:`~cryolab.methods.multibody.motion.motion_pca`. Sliders: the component and its score
    (in standard deviations, -2 .. 2). ``maps`` caches the composite maps shown so far;
    ``viewer`` is the :class:`MapViewer`."""

    def __init__(self, result, pca, component: int = 0, fixed: int = 0, backend: str = "slices",
                 threshold_sigma: float = 2.0):
        self.result = result.result() if hasattr(result, "result") else result
        self.pca, self.fixed = pca, int(fixed)
        self._masked_maps = masked_body_maps(self.result)          # once: every slider position moves them
        self.maps: dict = {}
        k = pca.components.shape[0]
        self.component = W.Dropdown(options=[(f"component {j + 1} ({100 * pca.variance_fraction[j]:.0f} %)", j)
                                             for j in range(min(k, 6))], value=int(component), description="motion")
        self.score = W.FloatSlider(value=0.0, min=-2.0, max=2.0, step=0.5, description="score (σ)",
                                   continuous_update=False, readout_format=".1f")
        self.text = W.HTML()
        self.viewer = MapViewer(self._map(), self.result.pixel_size_A, threshold_sigma, backend=backend)
        super().__init__([W.HBox([self.component, self.score]), self.text, self.viewer])
        self.component.observe(self._changed, names="value")
        self.score.observe(self._changed, names="value")
        self._describe()

    def _map(self) -> np.ndarray:
        key = (int(self.component.value), round(float(self.score.value), 3))
        if key not in self.maps:
            self.maps[key] = composite_map(self.result, self.pca, key[0], key[1], self.fixed, self._masked_maps)
        return self.maps[key]

    def _describe(self) -> None:
        lines = [d["text"] for d in self.pca.describe(int(self.component.value)) if d["body"] - 1 != self.fixed]
        self.text.value = "<br>".join(lines)

    def _changed(self, _change=None) -> None:
        self.viewer.set_volume(self._map())
        self._describe()
