"""The :class:`ClassGallery` widget: class averages with keep/discard toggles.

Classes are numbered from 1; **Apply** calls ``Session.select_classes`` and stores the
resulting :class:`cryolab.io.ParticleStack` in ``selected``.
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np

from ._display import ImagePanel, image_axes, new_figure
from ._session_common import (_guarded, _n_classes, _resolution_text, class_counts, class_image,
                              class_resolutions_A)

__all__ = ["ClassGallery"]

TILE_PX = 140       # width of a tile and its toggle in CSS pixels; the figure is drawn to fill it


class ClassGallery(W.VBox):
    """Class averages with keep/discard toggles: the data-cleaning loop.

    Toggle the classes to discard, press **Apply**: ``selected`` becomes the
    :class:`cryolab.io.ParticleStack` of the particles in the kept classes
    (``Session.select_classes``), ready for a new Session. Tiles redraw after each iteration.
    """

    def __init__(self, session, columns: int = 5, dpi: int = 72):
        self.session = session
        self.errors: list[str] = []
        self.selected = None
        K = _n_classes(session)
        self.tiles = [ImagePanel(dpi=dpi, layout=W.Layout(width=f"{TILE_PX}px")) for _ in range(K)]
        self.toggles = [W.ToggleButton(value=True, layout=W.Layout(width=f"{TILE_PX}px")) for _ in range(K)]
        for t in self.toggles:
            self._style(t)
            t.observe(self._toggled, names="value")
        self.apply_button = W.Button(description="Apply", icon="filter", button_style="primary")
        self.apply_button.on_click(self.apply)
        self.summary = W.HTML()
        grid = W.GridBox([W.VBox([tile, t]) for tile, t in zip(self.tiles, self.toggles)],
                         layout=W.Layout(grid_template_columns=f"repeat({min(K, columns)}, 150px)"))
        super().__init__([grid, W.HBox([self.apply_button, self.summary])])
        session.on_iteration(_guarded(self, lambda *_: self.refresh()))
        self.refresh()

    @property
    def kept_classes(self) -> list[int]:
        """Class numbers (1-based) toggled to keep."""
        return [k + 1 for k, t in enumerate(self.toggles) if t.value]

    def discard(self, *classes: int) -> None:
        """Toggle the given classes (1-based) to discard (same as clicking their buttons)."""
        for k in classes:
            self.toggles[k - 1].value = False

    def apply(self, _button=None):
        """Select the particles of the kept classes; returns (and stores) ``selected``."""
        kept = self.kept_classes
        self.selected = self.session.select_classes(kept) if kept else None
        n_sel = 0 if self.selected is None else len(self.selected)
        self.summary.value = (f"<b>selected {n_sel} of {len(self.session.particles)} particles</b> "
                              f"(classes {kept}) → <code>.selected</code>")
        return self.selected

    def refresh(self) -> None:
        """Redraw the tiles from the current class averages."""
        refs = np.asarray(self.session.references)
        counts, res = class_counts(self.session), class_resolutions_A(self.session)
        for k, tile in enumerate(self.tiles):
            fig = new_figure(TILE_PX / tile.dpi, 2.1)      # shown at its own size: sharp, not stretched
            image_axes(fig.subplots(), class_image(refs[k]), f"class {k + 1}: {counts[k]} ptcls\n{_resolution_text(res[k])}",
                       pixel_size_A=float(self.session.pixel_size_A))
            tile.show(fig)
        self._preview()

    @staticmethod
    def _style(toggle) -> None:
        toggle.description = "keep" if toggle.value else "discard"
        toggle.button_style = "success" if toggle.value else "danger"
        toggle.icon = "check" if toggle.value else "times"

    def _toggled(self, change) -> None:
        self._style(change["owner"])
        self._preview()

    def _preview(self) -> None:
        n = int(class_counts(self.session)[np.asarray(self.kept_classes, int) - 1].sum())
        self.summary.value = (f"keeping classes {self.kept_classes}: {n} of {len(self.session.particles)} "
                              "particles (press Apply)")
