"""Tests of :mod:`cryolab.ctf` against independent references.

References: a scalar, pixel-by-pixel implementation of RELION's CTF formula written here with the
``math`` module; analytic zero crossings of sin(pi lambda dF u^2 + asin Q0) for Cs = 0; textbook
electron wavelengths; the B-factor envelope; sign changes counted along the grid axes for the
direction of astigmatism. (The comparison with ``relion_project --ctf`` lives with the projector tests.)
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from cryolab.ctf import CTFParams, ctf_1d, ctf_2d, electron_wavelength_A, phase_flip
from cryolab.fourier import irfft2c, rfft2c

PARAMS = CTFParams(defocus_u_A=21000.0, defocus_v_A=18500.0, defocus_angle_deg=33.0, voltage_kV=300.0,
                   cs_mm=2.7, amplitude_contrast=0.07, phase_shift_deg=12.0, bfactor_A2=40.0, scale=0.9)


def ctf_scalar(p: CTFParams, fx: float, fy: float) -> float:
    """RELION's CTF at one frequency (1/A), straight from the formula in the conventions."""
    volts = p.voltage_kV * 1000.0
    lam = 12.2643247 / math.sqrt(volts * (1.0 + 0.978466e-6 * volts))
    u2 = fx * fx + fy * fy
    az = math.atan2(fy, fx) - math.radians(p.defocus_angle_deg)
    defocus = p.defocus_u_A * math.cos(az) ** 2 + p.defocus_v_A * math.sin(az) ** 2
    gamma = (-math.pi * lam * defocus * u2 + math.pi / 2 * p.cs_mm * 1e7 * lam ** 3 * u2 * u2
             - math.radians(p.phase_shift_deg) - math.asin(p.amplitude_contrast))
    return -math.sin(gamma) * math.exp(-p.bfactor_A2 * u2 / 4) * p.scale


@pytest.mark.parametrize("n,half", [(32, True), (33, True), (32, False), (17, False)])
def test_ctf_2d_matches_scalar_formula(n, half):
    px = 1.3
    c = ctf_2d(PARAMS, n, px, half=half, dtype=np.float64)
    assert c.shape == (1, n, n // 2 + 1 if half else n)
    for iy in range(n):
        for ix in range(c.shape[-1]):
            kx = ix if half else ix - n // 2
            ky = iy - n // 2
            assert c[0, iy, ix] == pytest.approx(ctf_scalar(PARAMS, kx / (n * px), ky / (n * px)), abs=1e-12)


def test_wavelength_textbook_values():
    # relativistic electron wavelengths: 1.9687 pm at 300 kV, 2.5079 pm at 200 kV, 3.7014 pm at 100 kV
    np.testing.assert_allclose(electron_wavelength_A([300, 200, 100]), [0.019687, 0.025079, 0.037014], atol=2e-6)


def test_origin_is_plus_q0():
    for q0 in (0.0, 0.07, 0.2):
        p = CTFParams(15000.0, 12000.0, 70.0, amplitude_contrast=q0, bfactor_A2=100.0)
        c = ctf_2d(p, 24, 2.0, dtype=np.float64)
        assert c[0, 12, 0] == pytest.approx(q0, abs=1e-12)
        assert ctf_1d(p, [0.0])[0, 0] == pytest.approx(q0, abs=1e-12)
    # a 90 degree phase plate with no amplitude contrast also starts at +1
    p = CTFParams(15000.0, 15000.0, amplitude_contrast=0.0, phase_shift_deg=90.0)
    assert ctf_1d(p, [0.0])[0, 0] == pytest.approx(1.0)
    assert ctf_2d(CTFParams(1e4, 1e4, scale=0.5), 16, 1.0)[0, 8, 0] == pytest.approx(0.05, abs=1e-7)


@pytest.mark.parametrize("q0", [0.0, 0.1])
def test_zero_crossings_without_cs(q0):
    df, kv = 20000.0, 300.0
    p = CTFParams(df, df, cs_mm=0.0, amplitude_contrast=q0, voltage_kV=kv)
    lam = 12.2643247 / math.sqrt(kv * 1e3 * (1 + 0.978466e-6 * kv * 1e3))
    m = np.arange(1, 12)
    u_zero = np.sqrt((m - math.asin(q0) / math.pi) / (lam * df))   # pi lam df u^2 + asin(q0) = m pi
    np.testing.assert_allclose(ctf_1d(p, u_zero, azimuth_deg=17.0)[0], 0.0, atol=1e-9)
    mid = np.sqrt((m + 0.5 - math.asin(q0) / math.pi) / (lam * df))  # extrema alternate in sign
    vals = ctf_1d(p, mid)[0]
    np.testing.assert_allclose(np.abs(vals), 1.0, atol=1e-9)
    assert (np.sign(vals) == -np.sign(np.roll(vals, 1)))[1:].all()


def test_astigmatism_direction():
    df_max, df_min = 25000.0, 15000.0
    lam = electron_wavelength_A(300.0)
    for angle in (0.0, 35.0, 90.0, 130.0):
        p = CTFParams(df_max, df_min, angle, cs_mm=0.0, amplitude_contrast=0.0)
        az = np.arange(0.0, 180.0, 1.0)
        u = np.linspace(1e-3, 0.08, 8000)
        first_zero = np.array([u[np.argmax(np.diff(np.sign(ctf_1d(p, u, a)[0])) != 0)] for a in az])
        # the fastest oscillation (nearest first zero, largest defocus) is along the defocus angle
        assert abs((az[np.argmin(first_zero)] - angle + 90) % 180 - 90) <= 1.0
        assert first_zero.min() == pytest.approx(1 / math.sqrt(lam * df_max), rel=2e-3)
        assert first_zero.max() == pytest.approx(1 / math.sqrt(lam * df_min), rel=2e-3)
    # on the 2D grid: defocus angle 0 puts the strong defocus along kx (the image x axis, last axis)
    n = 128
    c = ctf_2d(CTFParams(df_max, df_min, 0.0, cs_mm=0.0), n, 1.0, half=False, dtype=np.float64)[0]
    changes = lambda v: int((np.diff(np.sign(v)) != 0).sum())
    along_x, along_y = c[n // 2, n // 2:], c[n // 2:, n // 2]
    assert changes(along_x) > changes(along_y)
    c90 = ctf_2d(CTFParams(df_max, df_min, 90.0, cs_mm=0.0), n, 1.0, half=False, dtype=np.float64)[0]
    assert changes(c90[n // 2:, n // 2]) > changes(c90[n // 2, n // 2:])


def test_bfactor_envelope():
    n, px = 48, 1.7
    base = CTFParams(18000.0, 17000.0, 20.0, bfactor_A2=0.0)
    damped = CTFParams(18000.0, 17000.0, 20.0, bfactor_A2=150.0)
    c0 = ctf_2d(base, n, px, dtype=np.float64)[0]
    c1 = ctf_2d(damped, n, px, dtype=np.float64)[0]
    ky, kx = np.meshgrid(np.arange(n) - n // 2, np.arange(n // 2 + 1), indexing="ij")
    u2 = (kx ** 2 + ky ** 2) / (n * px) ** 2
    np.testing.assert_allclose(c1, c0 * np.exp(-150.0 * u2 / 4), atol=1e-12)


def test_batch_and_indexing():
    p = CTFParams(np.array([12000.0, 15000.0, 30000.0]), np.array([11000.0, 15000.0, 26000.0]),
                  np.array([0.0, 45.0, 100.0]), phase_shift_deg=np.array([0.0, 30.0, 60.0]))
    assert len(p) == 3
    c = ctf_2d(p, 20, 2.0, dtype=np.float64)
    assert c.shape == (3, 20, 11)
    for i in range(3):
        np.testing.assert_allclose(c[i], ctf_2d(p[i], 20, 2.0, dtype=np.float64)[0], atol=1e-14)
    np.testing.assert_allclose(ctf_1d(p, np.arange(11) / 40.0, 0.0), c[:, 10, :], atol=1e-12)


@pytest.mark.parametrize("n", [64, 65])
def test_phase_flip_makes_spectrum_non_negative(n):
    px = 1.5
    p = CTFParams(np.array([14000.0, 22000.0]), np.array([13000.0, 20000.0]), np.array([10.0, 80.0]))
    rng = np.random.default_rng(3)
    imgs = rng.normal(size=(2, n, n))
    ctf = ctf_2d(p, n, px, dtype=np.float64)
    observed = irfft2c(rfft2c(imgs) * ctf, n)
    flipped = phase_flip(observed, p, px)
    ratio = rfft2c(flipped) / rfft2c(imgs)          # what flipping leaves of the CTF: |CTF|
    # an even box's Nyquist column (kx = N/2) holds +-ky as one Hermitian pair, which an astigmatic
    # CTF cannot respect; it is left out
    keep = slice(None, n // 2) if n % 2 == 0 else slice(None)
    ratio, ctf = ratio[..., keep], ctf[..., keep]
    np.testing.assert_allclose(ratio.imag, 0.0, atol=1e-5)
    assert ratio.real.min() > -1e-5
    np.testing.assert_allclose(ratio.real, np.abs(ctf), atol=1e-5)
