"""CascadeTree: a cascade of classifications as a tree to browse, and a branch to select.

Reads a :class:`cryolab.methods.cascade.Cascade` (live, or reloaded from its ``cascade.json``):
the nodes as an indented list (particles per node), and for the chosen node its class sizes, the
resolution of each class and the class maps (central sections) or class averages, read from the
node's run folder. *Select branch* writes the particles of the chosen node to a STAR file.
"""
from __future__ import annotations

from pathlib import Path

import ipywidgets as W
import numpy as np

from ._display import ImagePanel, image_axes, new_figure

__all__ = ["CascadeTree"]


class CascadeTree(W.VBox):
    """Browse ``cascade``'s nodes; ``selected`` is the chosen node's name, ``select_branch(path)``
    writes its particles (RELION STAR, image paths as RELION reads them)."""

    def __init__(self, cascade, dpi: int = 72):
        self.cascade = cascade
        names = list(cascade.nodes)
        labels = [self._label(n) for n in names]
        self.nodes = W.Select(options=list(zip(labels, names)), value=names[0], rows=min(len(names), 10),
                              layout=W.Layout(width="22em"))
        self.summary = W.HTML()
        self.panel = ImagePanel(dpi=dpi)
        self.path = W.Text(value="branch.star", description="STAR", layout=W.Layout(width="22em"))
        self.button = W.Button(description="Select branch", icon="check")
        self.message = W.HTML()
        self.button.on_click(lambda _b: self.select_branch())
        self.nodes.observe(lambda _c: self.refresh(), names="value")
        super().__init__([W.HBox([self.nodes, W.VBox([self.summary, self.panel])]),
                          W.HBox([self.path, self.button]), self.message])
        self.refresh()

    def _label(self, name: str) -> str:
        node = self.cascade.nodes[name]
        depth = name.count("/")
        tail = f" -> {node.K} classes" if node.children else ""
        return f"{'    ' * depth}{name.rsplit('/', 1)[-1]}  ({len(node.rows)} particles){tail}"

    @property
    def selected(self) -> str:
        return self.nodes.value

    def class_maps(self, name: str) -> list:
        """The class maps (3D) or averages (2D) of a classified node's last iteration, from its folder."""
        from ..io import read_mrc
        node = self.cascade.nodes[name]
        folder = Path(self.cascade.out_dir) / name
        stems = sorted(folder.glob("run_it[0-9][0-9][0-9]_data.star"))
        if not node.children or not stems:
            return []
        stem = str(stems[-1])[: -len("_data.star")]
        if Path(f"{stem}_classes.mrcs").exists():
            return list(read_mrc(f"{stem}_classes.mrcs")[0])
        return [read_mrc(f"{stem}_class{k + 1:03d}.mrc")[0] for k in range(node.K)
                if Path(f"{stem}_class{k + 1:03d}.mrc").exists()]

    def refresh(self) -> None:
        node = self.cascade.nodes[self.selected]
        if not node.children:
            self.summary.value = f"<b>{node.name}</b>: {len(node.rows)} particles, not classified further"
            self.panel.value = b""
            return
        res = ", ".join(f"{r:.1f} &Aring;" if np.isfinite(r) else "&ge; Nyquist" for r in node.resolution_A)
        self.summary.value = (f"<b>{node.name}</b>: {node.method}, K = {node.K}, sizes {node.class_sizes}"
                              f"<br>resolution per class: {res or 'n/a'}")
        maps = self.class_maps(node.name)
        fig = new_figure(1.8 * max(len(maps), 1) + 1.8, 2.0)
        axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
        axes[0].bar(np.arange(1, node.K + 1), node.class_sizes, color="tab:blue")
        axes[0].set_xlabel("class", fontsize=8)
        axes[0].set_ylabel("particles", fontsize=8)
        for k, (ax, m) in enumerate(zip(axes[1:], maps)):
            image_axes(ax, m[m.shape[0] // 2] if m.ndim == 3 else m, f"class {k + 1}")
        self.panel.show(fig)

    def select_branch(self, path=None):
        """Write the chosen node's particles to ``path`` (default: the text box); returns the stack."""
        target = Path(path or self.path.value)
        try:
            stack = self.cascade.select(self.selected, target)
        except Exception as exc:           # shown in the widget, not raised into the event loop
            self.message.value = f"<span style='color:#b00'>{exc}</span>"
            return None
        self.message.value = f"wrote {len(stack)} particles of {self.selected} to {target}"
        return stack
