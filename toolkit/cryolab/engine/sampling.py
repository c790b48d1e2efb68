"""Sampling grids of the hidden variables: in-plane rotations, translations, their refinements.

Translations are in pixels ``(x, y)``; a translation ``t`` applied to an image
moves its content by ``+t`` (a phase ramp ``exp(-2 pi i k.t / N)``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["translation_grid", "fine_psi", "fine_translations"]


def translation_grid(range_px: float, step_px: float) -> np.ndarray:
    """Translations ``[T, 2]`` (x, y) in pixels on a square grid of ``step_px`` inside a circle of ``range_px``.

    The zero translation is always included (it is the first row).

    >>> translation_grid(1, 1).tolist()
    [[0.0, 0.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 1.0], [1.0, 0.0]]
    """
    if range_px <= 0 or step_px <= 0:
        return np.zeros((1, 2))
    m = int(np.floor(range_px / step_px + 1e-9))
    ax = np.arange(-m, m + 1) * step_px
    x, y = np.meshgrid(ax, ax, indexing="ij")
    t = np.stack([x.ravel(), y.ravel()], axis=1)
    t = t[(t ** 2).sum(1) <= range_px ** 2 + 1e-9]
    order = np.argsort((t ** 2).sum(1) > 0, kind="stable")  # zero first, others keep grid order
    return t[order].astype(np.float64)


def fine_psi(psi_deg: np.ndarray, step_deg: float, oversampling: int) -> np.ndarray:
    """Children of coarse psi samples: ``2**oversampling`` angles evenly splitting each coarse step.

    Returns ``[R, 2**o]``; for ``o = 0`` the coarse angles themselves.
    """
    n = 2 ** oversampling
    offs = (np.arange(n) + 0.5) / n - 0.5
    return (np.asarray(psi_deg)[:, None] + offs[None, :] * step_deg) % 360.0


def fine_translations(t_px: np.ndarray, step_px: float, oversampling: int) -> np.ndarray:
    """Children of coarse translations: a ``2**o x 2**o`` sub-grid inside each coarse cell; ``[T, 4**o, 2]``."""
    n = 2 ** oversampling
    offs = ((np.arange(n) + 0.5) / n - 0.5) * step_px
    ox, oy = np.meshgrid(offs, offs, indexing="ij")
    sub = np.stack([ox.ravel(), oy.ravel()], axis=1)
    return np.asarray(t_px)[:, None, :] + sub[None, :, :]
