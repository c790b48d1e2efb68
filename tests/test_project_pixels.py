"""``FourierProjector.project_pixels`` (central slices at a pixel list only) against references.

References: a brute-force per-pixel trilinear interpolation of the projector's stored padded
transform (float64, one pixel at a time, Hermitian mate for ``x < 0``), and ``project_ft`` read at
the same pixels, which must agree to the bit (the same float32 arithmetic per pixel). Random maps
and rotations, odd and even boxes, ``max_shell`` below Nyquist and at it.

Measured when written: brute force vs ``project_pixels`` 0.8e-6 to 2.9e-6 of the largest value
(16-33 px; the projector computes ``pad * A.T k`` in float32, the brute force in float64), so the
tolerance is 1e-5; ``project_ft`` vs ``project_pixels`` identical.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from cryolab.engine.estep import fourier_pixels
from cryolab.geometry import euler_to_matrix
from cryolab.projection import FourierProjector


def _rotations(r, seed):
    rng = np.random.default_rng(seed)
    return euler_to_matrix(rng.uniform(-180, 180, r), np.degrees(np.arccos(rng.uniform(-1, 1, r))),
                           rng.uniform(-180, 180, r))


def _brute_force(proj, rots, kx, ky, max_shell):
    """One pixel at a time: trilinear interpolation of the stored half transform at pad * A.T k."""
    ft = proj.ft
    store = ft.data.reshape(ft.shape).astype(np.complex128)   # [z, y, x]: centred z, y at h + f
    h, shell = ft.h, min(float(max_shell), ft.max_shell)
    out = np.zeros((len(rots), len(kx)), np.complex128)
    for r, a in enumerate(rots):
        for p, (fx, fy) in enumerate(zip(kx, ky)):
            if fx * fx + fy * fy > shell * shell:
                continue
            x, y, z = proj.pad * (a.T @ np.array([fx, fy, 0.0]))
            conj = x < 0
            if conj:
                x, y, z = -x, -y, -z
            z, y = min(max(z + h, 0), 2 * h - 1e-3), min(max(y + h, 0), 2 * h - 1e-3)
            x = min(max(x, 0), h - 1e-3)
            z0, y0, x0 = math.floor(z), math.floor(y), math.floor(x)
            v = 0
            for dz in (0, 1):
                for dy in (0, 1):
                    for dx in (0, 1):
                        w = ((z - z0) if dz else (1 - z + z0)) * ((y - y0) if dy else (1 - y + y0)) \
                            * ((x - x0) if dx else (1 - x + x0))
                        v += w * store[z0 + dz, y0 + dy, x0 + dx]
            out[r, p] = np.conj(v) if conj else v
    return out


@pytest.mark.parametrize("n, max_shell", [(16, 8), (17, 6), (20, 10)])
def test_project_pixels_matches_brute_force_and_project_ft(n, max_shell):
    rng = np.random.default_rng(n)
    proj = FourierProjector(rng.normal(size=(n, n, n)).astype(np.float32), max_shell=max_shell)
    pix = fourier_pixels(n, max_shell)      # shell-ordered; a few pixels beyond max_shell (rint)
    rots = _rotations(12, n)
    got = proj.project_pixels(rots, pix.kx, pix.ky, max_shell=max_shell)
    assert got.shape == (12, pix.size) and got.dtype == np.complex64
    ref = _brute_force(proj, rots, np.asarray(pix.kx, float), np.asarray(pix.ky, float), max_shell)
    assert np.abs(ref).max() > 0
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    full = proj.project_ft(rots, max_shell=max_shell).reshape(12, -1)[:, pix.index]
    assert np.array_equal(got, full)
    # a prefix of the list (the coarse pass's pixels) and a second call on the kept sampler
    m = pix.count_within(max_shell // 2)
    kx, ky = pix.kx[:m], pix.ky[:m]
    assert np.array_equal(proj.project_pixels(rots, kx, ky, max_shell), full[:, :m])
    assert np.array_equal(proj.project_pixels(rots[3:], kx, ky, max_shell), full[3:, :m])


def test_blocks_do_not_change_values(monkeypatch):
    """Many orientations cut into several blocks give the values of one orientation at a time."""
    import cryolab.projection as projection
    n = 24
    proj = FourierProjector(np.random.default_rng(0).normal(size=(n, n, n)).astype(np.float32), max_shell=9)
    pix = fourier_pixels(n, 9)
    rots = _rotations(40, 1)
    monkeypatch.setattr(projection, "_BLOCK_POINTS", 3 * pix.size + 5)      # blocks of 3 orientations
    many = proj.project_pixels(rots, pix.kx, pix.ky, 9)
    one = np.concatenate([proj.project_pixels(rots[i:i + 1], pix.kx, pix.ky, 9) for i in range(40)])
    assert np.array_equal(many, one)
