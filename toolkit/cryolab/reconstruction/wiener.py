"""The division step of a reconstruction: plain (regularised) ratio and Wiener signal power.

``tau2`` is the signal power per image shell ``0 .. N//2`` relative to ``sigma2``-normalised
weights, as RELION's refinement uses it; curves are NumPy float64.
"""
from __future__ import annotations

import numpy as np

__all__ = ["tau2_from_fsc"]


def _mean_positive(weight) -> float:
    """The mean of ``weight`` over its voxels with weight > 0 (1 when there are none)."""
    pos = weight > 0
    return float(weight[pos].mean()) if bool(pos.any()) else 1.0


def _plain_ratio(data, weight, eps: float):
    """``data / (weight + eps * <weight>)``, ``<weight>`` the mean over voxels with weight > 0."""
    return data / (weight + eps * _mean_positive(weight))


def tau2_from_fsc(fsc, weight_spectrum, whole_map: bool = False):
    """Signal power per shell from an FSC (RELION's refinement rule).

    ``SSNR = FSC / (1 - FSC)`` with FSC clipped to ``[0.001, 0.999]`` and
    ``tau2 = SSNR / weight_spectrum`` (the per-shell weight of :meth:`BackProjector.weight_spectrum`,
    i.e. the inverse noise power of the reconstruction). ``whole_map``: the FSC is between half
    maps but ``tau2`` is for the map of all particles (``FSC' = sqrt(2 FSC / (1 + FSC))``).
    """
    f = np.clip(np.asarray(fsc, dtype=np.float64), 0.001, None)
    if whole_map:
        f = np.sqrt(2 * f / (f + 1))
    f = np.minimum(f, 0.999)
    w = np.asarray(weight_spectrum, dtype=np.float64)[: f.size]
    return np.where(w > 0, (f / (1 - f)) / np.maximum(w, 1e-300), 0.0)
