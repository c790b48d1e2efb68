"""Display helpers shared by the widgets: figures rendered to PNG inside ``ipywidgets.Image``.

Figures are drawn with a bare :class:`matplotlib.figure.Figure` (no pyplot state, no backend),
so the widgets look the same under ``%matplotlib inline``, ``ipympl`` or a headless browser, and
never leave stray figures behind.
"""
from __future__ import annotations

import io

import ipywidgets as W
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image as PILImage

__all__ = ["new_figure", "figure_png", "ImagePanel", "text_boxes", "overlapping_text", "log_amplitude",
           "full_from_half", "image_axes", "slider", "resolution_axis", "scale_bar"]


def new_figure(width_in: float, height_in: float):
    """A pyplot-free figure with constrained layout (add axes with ``fig.subplots``)."""
    return Figure(figsize=(width_in, height_in), layout="constrained")


def figure_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a figure drawn at ``dpi`` (the figure keeps that dpi and its drawn layout)."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    buf = io.BytesIO()
    PILImage.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png")
    return buf.getvalue()


class ImagePanel(W.Image):
    """An ``ipywidgets.Image`` that shows a matplotlib figure; :meth:`show` replaces it.

    The figure is drawn at ``pixel_ratio`` (2) times ``dpi`` and shown at its size in CSS pixels
    (``width x dpi``), so it is sharp on high-density screens and never stretched; a layout
    with its own ``width`` keeps that width. After :meth:`show`, ``text_boxes`` lists every
    visible text of the figure as ``(text, (x0, y0, x1, y1))`` in CSS pixels from the bottom left
    (for checks that no labels overlap, :func:`overlapping_text`).
    """

    pixel_ratio = 2

    def __init__(self, dpi: int = 80, **kw):
        kw.setdefault("format", "png")
        kw.setdefault("layout", W.Layout(max_width="100%", height="auto"))
        super().__init__(**kw)
        self.dpi = dpi
        self._own_width = self.layout.width is not None
        self.text_boxes: list = []

    def show(self, fig) -> None:
        """Render ``fig`` and display it (the figure is then discarded)."""
        png = figure_png(fig, self.dpi * self.pixel_ratio)
        self.text_boxes = text_boxes(fig, 1.0 / self.pixel_ratio)
        if not self._own_width:
            self.layout.width = f"{int.from_bytes(png[16:20], 'big') / self.pixel_ratio:g}px"   # PNG width / ratio
        self.value = png


def _drawn_texts(fig):
    """The texts a draw of ``fig`` showed: titles, axis labels, tick labels inside the view, texts, legends."""
    texts = list(fig.texts) + ([fig._suptitle] if fig._suptitle is not None else [])
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis) if ax.axison else ():     # set_axis_off: no axes drawn
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(1.0, abs(hi - lo))
            texts += [axis.label, axis.get_offset_text()]
            if axis.get_visible():
                texts += [t for loc, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
                          if lo - tol <= loc <= hi + tol]
        legend = ax.get_legend()
        if legend is not None:
            texts += list(legend.get_texts())
    return texts


def text_boxes(fig, scale: float = 1.0) -> list:
    """Visible, non-empty texts of a drawn figure (:func:`figure_png`) with their boxes ``(x0, y0, x1, y1)``
    in pixels x ``scale``. Axes switched off (``set_axis_off``) contribute their titles and texts only:

    >>> fig = new_figure(2, 2)
    >>> ax = fig.subplots()
    >>> ax.set_axis_off()
    >>> _ = ax.text(0.5, 0.5, "run an iteration")
    >>> _ = figure_png(fig)
    >>> [t for t, _ in text_boxes(fig)]
    ['run an iteration']
    """
    renderer = fig.canvas.get_renderer()
    out = []
    for t in _drawn_texts(fig):
        if t.get_visible() and t.get_text().strip():
            b = t.get_window_extent(renderer)
            out.append((t.get_text(), (b.x0 * scale, b.y0 * scale, b.x1 * scale, b.y1 * scale)))
    return out


def overlapping_text(boxes, tolerance_px: float = 1.0) -> list:
    """Pairs of texts in ``boxes`` (as :attr:`ImagePanel.text_boxes`) whose boxes overlap by more than ``tolerance_px``."""
    pairs = []
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            dx = min(a[2], b[2]) - max(a[0], b[0])
            dy = min(a[3], b[3]) - max(a[1], b[1])
            if dx > tolerance_px and dy > tolerance_px:
                pairs.append((ta, tb))
    return pairs


def image_axes(ax, image, title: str, cmap: str = "gray", pixel_size_A: float | None = None, **kw):
    """Draw a 2D array with its centre pixel at the middle and no ticks; with ``pixel_size_A`` a scale bar."""
    image = np.asarray(image)
    im = ax.imshow(image, cmap=cmap, origin="lower", interpolation="nearest", **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if pixel_size_A is not None:
        scale_bar(ax, pixel_size_A, image.shape[-1])
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


def scale_bar(ax, pixel_size_A: float, n_px: int, colour: str = "w") -> float:
    """A scale bar in the bottom left of an image axis (``n_px`` wide), about a fifth of it, labelled in Å or nm."""
    target = 0.2 * n_px * pixel_size_A
    nice = [v for v in (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000) if v <= target]
    length_A = nice[-1] if nice else target
    x0, y0, bar = 0.06 * n_px - 0.5, 0.07 * n_px - 0.5, length_A / pixel_size_A
    ax.plot([x0, x0 + bar], [y0, y0], color=colour, lw=2.5, solid_capstyle="butt")
    label = f"{length_A / 10:g} nm" if length_A >= 100 else f"{length_A:g} Å"
    ax.text(x0, y0 + 0.03 * n_px, label, color=colour, fontsize=7, va="bottom", ha="left")
    return length_A
