"""Example maps for the widgets and course notebooks.

:func:`example_map` returns the bundled demo ribosome when :mod:`cryolab.data` provides it and a
small synthetic phantom otherwise, so every notebook runs on a fresh install.
"""
from __future__ import annotations

import numpy as np

__all__ = ["phantom_volume", "example_map"]


def phantom_volume(n: int = 64, n_blobs: int = 12, seed: int = 0) -> np.ndarray:
    """An asymmetric test object ``[N, N, N]`` (float32): Gaussian blobs inside a sphere.

    Blob centres lie within ``N/4`` of the box centre, widths are 1.5-4 voxels and
    amplitudes 0.5-1.5, so the object has detail at several resolutions and no symmetry.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2,) * 3, indexing="ij")
    vol = np.zeros((n, n, n), dtype=np.float64)
    for _ in range(n_blobs):
        direction = rng.normal(size=3)
        centre = direction / np.linalg.norm(direction) * rng.uniform(0, n / 4)
        width_px = rng.uniform(1.5, 4.0) * n / 64
        d2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
        vol += rng.uniform(0.5, 1.5) * np.exp(-d2 / (2 * width_px ** 2))
    return vol.astype(np.float32)


def example_map(state: int = 0, name: str = "ribosome"):
    """``(volume, pixel_size_A)``: state number ``state`` of demo ``name`` (see
    :func:`cryolab.data.load_demo`) or, when the demo data are missing, a phantom."""
    try:
        from ..data import load_demo
        demo = load_demo(name)
    except (ImportError, OSError):
        return phantom_volume(64, seed=state), 4.0
    states = list(demo.volumes)
    return np.asarray(demo.volumes[states[state % len(states)]], dtype=np.float32), float(demo.pixel_size_A)
