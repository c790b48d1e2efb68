"""Display helpers shared by the widgets: figures rendered to PNG inside ``ipywidgets.Image``.

Figures are drawn with a bare :class:`matplotlib.figure.Figure` (no pyplot state, no backend),
so the widgets look the same under ``%matplotlib inline``, ``ipympl`` or a headless browser, and
never leave stray figures behind.
"""
from __future__ import annotations

import io

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

__all__ = ["new_figure", "figure_png", "ImagePanel", "log_amplitude", "full_from_half",
           "image_axes", "slider", "resolution_axis"]


def new_figure(width_in: float, height_in: float):
    """A pyplot-free figure with constrained layout (add axes with ``fig.subplots``)."""
    return Figure(figsize=(width_in, height_in), layout="constrained")


def figure_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


class ImagePanel(W.Image):
    """An ``ipywidgets.Image`` that shows a matplotlib figure; :meth:`show` replaces it."""

    def __init__(self, dpi: int = 80, **kw):
        kw.setdefault("format", "png")
        kw.setdefault("layout", W.Layout(max_width="100%", height="auto"))
        super().__init__(**kw)
        self.dpi = dpi

    def show(self, fig) -> None:
        """Render ``fig`` and display it (the figure is then discarded)."""
        self.value = figure_png(fig, self.dpi)


def image_axes(ax, image, title: str, cmap: str = "gray", **kw):
    """Draw a 2D array with its centre pixel at the middle and no ticks."""
    im = ax.imshow(np.asarray(image), cmap=cmap, origin="lower", interpolation="nearest", **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def log_amplitude(ft):
    """``log(1 + |F|)``, the usual way to look at a Fourier transform."""
    return np.log1p(np.abs(np.asarray(ft)))


def full_from_half(ft_half, n: int):
    """Full centred transform ``[N, N]`` from a centred half transform ``[N, N//2+1]`` (for display).

    Uses Friedel symmetry ``F(-k) = conj F(k)``; with even ``N`` the unpaired ``-N/2`` row and
    column are filled from themselves.
    """
    h = np.asarray(ft_half)
    full = np.zeros(h.shape[:-1] + (n,), dtype=h.dtype)
    c = n // 2
    full[..., c:] = h[..., : n - c]
    # column kx < 0 takes conj of (-ky, -kx): row index of -ky is (n - j) % n for even n
    rows = (2 * c - np.arange(n)) % n
    cols = np.arange(c)                   # kx = cols - c < 0  ->  -kx = c - cols
    full[..., :c] = np.conj(h[..., rows, :][..., c - cols])
    return full


def slider(description: str, value, lo, hi, step, integer: bool = False, fmt: str | None = None):
    """A labelled slider that reports only released values (one redraw per change)."""
    cls = W.IntSlider if integer else W.FloatSlider
    kw = dict(description=description, value=value, min=lo, max=hi, step=step,
              continuous_update=False, style={"description_width": "initial"},
              layout=W.Layout(width="320px"))
    if fmt is not None and not integer:
        kw["readout_format"] = fmt
    return cls(**kw)


_NICE_RESOLUTIONS_A = (100, 50, 30, 20, 15, 10, 8, 6, 5, 4, 3, 2.5, 2, 1.5, 1)


def resolution_axis(ax, max_freq_per_A: float, max_ticks: int = 7):
    """Top axis of ``ax`` (x = spatial frequency in 1/A) labelled in resolution (A)."""
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    res = [r for r in _NICE_RESOLUTIONS_A if 1.0 / r <= max_freq_per_A * 1.0001]
    if len(res) > max_ticks:
        res = res[:: int(np.ceil(len(res) / max_ticks))]
    top.set_xticks([1.0 / r for r in res])
    top.set_xticklabels([f"{r:g}" for r in res], fontsize=8)
    top.set_xlabel("resolution (Å)", fontsize=8)
    return top
