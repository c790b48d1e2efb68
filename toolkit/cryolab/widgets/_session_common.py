"""Helpers shared by the Session widgets: class counts, resolutions and images, colours, observers.

They only read a :class:`cryolab.session.Session`'s public attributes (``references``,
``classes``, ``history``); classes are numbered from 1 in what is shown, from 0 in arrays.
"""
from __future__ import annotations

import numpy as np

from ._display import image_axes, new_figure

MODE_NAMES = {"map": "MAP (regularised likelihood)", "ml": "maximum likelihood",
              "maxcc": "projection matching (maxCC)"}


def _n_classes(session) -> int:
    return int(np.asarray(session.references).shape[0])


def class_counts(session) -> np.ndarray:
    """Number of particles whose best class is k (``[K]``; zeros before the first iteration)."""
    c = np.asarray(session.classes)
    return np.bincount(c[c >= 0], minlength=_n_classes(session))


def class_resolutions_A(session) -> np.ndarray:
    """Resolution per class (Å) of the last iteration; ``inf`` when unknown (no SSNR, or not run)."""
    if not session.history:
        return np.full(_n_classes(session), np.inf)
    return np.asarray(session.history[-1].resolution_A, dtype=float)


def _resolution_text(res_A: float) -> str:
    return f"{res_A:.0f} Å" if np.isfinite(res_A) else "– Å"


def class_image(reference) -> np.ndarray:
    """A class average as an image (a 3D class is shown as its projection along z)."""
    reference = np.asarray(reference)
    return reference if reference.ndim == 2 else reference.sum(axis=0)


def _guarded(widget, fn):
    """``fn`` as a Session observer: an error while drawing is recorded, it never stops the run."""
    def call(*args):
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the refinement goes on
            widget.errors.append(f"{type(exc).__name__}: {exc}")
    return call


def _class_colours(K: int):
    from matplotlib import colormaps
    cmap = colormaps["tab10" if K <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(K)]


def _iteration_axes(history, *axes) -> None:
    """Integer iteration ticks from 1 to the last iteration."""
    from matplotlib.ticker import MaxNLocator
    last = history[-1].iteration if history else 1
    for ax in axes:
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def draw_class_grid(session, columns: int = 5, size_in: float = 1.6):
    """A figure with the class averages titled by class number, particle count and resolution."""
    refs = np.asarray(session.references)
    K = refs.shape[0]
    cols = min(K, columns)
    rows = int(np.ceil(K / cols))
    fig = new_figure(size_in * cols, (size_in + 0.35) * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    counts, res = class_counts(session), class_resolutions_A(session)
    for k, ax in enumerate(axes):
        if k < K:
            image_axes(ax, class_image(refs[k]), f"{k + 1}: {counts[k]} ptcls\n{_resolution_text(res[k])}",
                       pixel_size_A=float(session.pixel_size_A))
        else:
            ax.set_axis_off()
    return fig
