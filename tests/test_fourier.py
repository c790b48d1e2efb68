"""Tests of :mod:`cryolab.fourier` against independent references.

References: centred DFTs summed explicitly from their definition (origin at pixel N//2), NumPy's
FFT, Parseval's identity, shell counts and averages from Python loops, the analytic transform of a
Gaussian, and band-limited cosine sums evaluated analytically on the resampled grid.
"""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.fourier import (
    fft2c, fft3c, fourier_crop, fourier_pad, highpass, ifft2c, irfft2c, irfft3c, lowpass,
    power_spectrum, radial_average, rescale, resolution_shell, rfft2c, rfft3c, rfft_grid,
    shell_index, shell_resolution_A,
)

RNG = np.random.default_rng(5)


def centred_dft_2d(img, half=True):
    """F(ky, kx) = sum_{y,x} img[y, x] exp(-2 pi i (ky y' + kx x') / N), y' = y - N//2, written out."""
    n = img.shape[-1]
    r = np.arange(n) - n // 2
    ky = np.arange(n) - n // 2
    kx = np.arange(n // 2 + 1) if half else ky
    ey = np.exp(-2j * np.pi * np.outer(ky, r) / n)
    ex = np.exp(-2j * np.pi * np.outer(kx, r) / n)
    return ey @ img @ ex.T


def centred_dft_3d(vol):
    n = vol.shape[-1]
    r = np.arange(n) - n // 2
    k = np.arange(n) - n // 2
    e = np.exp(-2j * np.pi * np.outer(k, r) / n)
    eh = np.exp(-2j * np.pi * np.outer(np.arange(n // 2 + 1), r) / n)
    return np.einsum("az,by,cx,zyx->abc", e, e, eh, vol)


# ------------------------------------------------------------- transforms

@pytest.mark.parametrize("n", [8, 9, 16, 17])
def test_rfft2c_matches_definition(n):
    img = RNG.normal(size=(n, n))
    np.testing.assert_allclose(rfft2c(img), centred_dft_2d(img), atol=1e-10)
    np.testing.assert_allclose(fft2c(img), centred_dft_2d(img, half=False), atol=1e-10)
    # the origin is pixel N//2: a delta there has a flat, real transform
    delta = np.zeros((n, n))
    delta[n // 2, n // 2] = 1.0
    np.testing.assert_allclose(rfft2c(delta), 1.0, atol=1e-12)


@pytest.mark.parametrize("n", [6, 7])
def test_rfft3c_matches_definition(n):
    vol = RNG.normal(size=(n, n, n))
    np.testing.assert_allclose(rfft3c(vol), centred_dft_3d(vol), atol=1e-10)
    full = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(vol)))
    np.testing.assert_allclose(fft3c(vol), full, atol=1e-10)


@pytest.mark.parametrize("n", [32, 33])
def test_round_trips_even_odd(n):
    imgs = RNG.normal(size=(3, n, n)).astype(np.float32)
    np.testing.assert_allclose(irfft2c(rfft2c(imgs), n), imgs, atol=1e-5)
    np.testing.assert_allclose(ifft2c(fft2c(imgs)).real, imgs, atol=1e-5)
    m = n // 2
    vols = RNG.normal(size=(2, m, m, m))
    np.testing.assert_allclose(irfft3c(rfft3c(vols), m), vols, atol=1e-10)


@pytest.mark.parametrize("n", [16, 17])
def test_agrees_with_numpy_full_fft(n):
    img = RNG.normal(size=(n, n))
    full = np.fft.fft2(np.fft.ifftshift(img))              # origin moved to index 0
    ky = (np.arange(n) - n // 2) % n
    half = rfft2c(img)
    for kx in range(n // 2 + 1):
        np.testing.assert_allclose(half[:, kx], full[ky, kx], atol=1e-10)


@pytest.mark.parametrize("n", [16, 17])
def test_parseval(n):
    img = RNG.normal(size=(n, n))
    energy = (img ** 2).sum()
    assert (abs(fft2c(img)) ** 2).sum() / n ** 2 == pytest.approx(energy)
    # half transform: columns kx > 0 stand for two (kx and -kx), except kx = N/2 for even N
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    assert (w * abs(rfft2c(img)) ** 2).sum() / n ** 2 == pytest.approx(energy)


# ----------------------------------------------------------------- shells

def test_rfft_grid_values():
    for n in (8, 9):
        ky, kx = rfft_grid(n)
        assert ky.shape == kx.shape == (n, n // 2 + 1)
        np.testing.assert_array_equal(ky[:, 0], np.arange(n) - n // 2)
        np.testing.assert_array_equal(kx[0], np.arange(n // 2 + 1))
        kz, ky3, kx3 = rfft_grid(n, 3, half=False)
        assert kz.shape == (n, n, n)
        np.testing.assert_array_equal(kz[:, 0, 0], np.arange(n) - n // 2)


@pytest.mark.parametrize("n,ndim", [(16, 2), (17, 2), (8, 3), (9, 3)])
def test_shell_index_and_counts_brute_force(n, ndim):
    shells = shell_index(n, ndim)
    ks = list(range(-(n // 2), n - n // 2))
    counts = {}
    if ndim == 2:
        for i, ky in enumerate(ks):
            for kx in range(n // 2 + 1):
                s = round((ky * ky + kx * kx) ** 0.5)
                assert shells[i, kx] == s
                counts[s] = counts.get(s, 0) + 1
    else:
        for i, kz in enumerate(ks):
            for j, ky in enumerate(ks):
                for kx in range(n // 2 + 1):
                    s = round((kz * kz + ky * ky + kx * kx) ** 0.5)
                    assert shells[i, j, kx] == s
                    counts[s] = counts.get(s, 0) + 1
    np.testing.assert_array_equal(np.bincount(shells.ravel()), [counts.get(s, 0) for s in range(shells.max() + 1)])


def test_radial_average_brute_force():
    n = 17
    vals = RNG.normal(size=(2, n, n // 2 + 1))
    out = radial_average(vals, n)
    assert out.shape == (2, n // 2 + 1)
    shells = shell_index(n)
    for b in range(2):
        for s in range(n // 2 + 1):
            assert out[b, s] == pytest.approx(vals[b][shells == s].mean())


def test_power_spectrum_white_noise_and_brute_force():
    n, sigma = 64, 1.7
    imgs = RNG.normal(scale=sigma, size=(40, n, n))
    ps = power_spectrum(imgs).mean(0)
    # white noise: E|F(k)|^2 = N^2 sigma^2 in every shell (unnormalised forward transform)
    np.testing.assert_allclose(ps[1:], n * n * sigma ** 2, rtol=0.15)
    assert abs(ps[4:].mean() / (n * n * sigma ** 2) - 1) < 0.02
    # one image: mean |F|^2 over the half-plane pixels (kx >= 0) of each ring, as RELION averages
    one = power_spectrum(imgs[0])
    p_half = abs(centred_dft_2d(imgs[0])) ** 2
    ky, kx = np.meshgrid(np.arange(n) - n // 2, np.arange(n // 2 + 1), indexing="ij")
    r = np.rint(np.hypot(ky, kx)).astype(int)
    for s in (0, 3, 17, 32):
        assert one[s] == pytest.approx(p_half[r == s].mean())


def test_shell_resolution_conversions():
    assert shell_resolution_A(10, 64, 2.0) == pytest.approx(12.8)
    assert np.isinf(shell_resolution_A(0, 64, 2.0))
    np.testing.assert_allclose(shell_resolution_A([1, 2, 4], 100, 1.5), [150, 75, 37.5])
    assert resolution_shell(12.8, 64, 2.0) == pytest.approx(10.0)
    assert resolution_shell(shell_resolution_A(7, 48, 3.3), 48, 3.3) == pytest.approx(7.0)


# ---------------------------------------------------------------- filters

def gaussian_image(n, s, centre_offset=(0.0, 0.0)):
    y, x = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    return np.exp(-((y - centre_offset[0]) ** 2 + (x - centre_offset[1]) ** 2) / (2 * s * s))


@pytest.mark.parametrize("n", [64, 65])
def test_lowpass_gaussian_analytic(n):
    s, px, res, edge = 1.5, 2.0, 10.0, 3.0
    img = gaussian_image(n, s)
    out = lowpass(img, res, px, edge_shells=edge)
    # analytic: the DFT of a sampled, well-contained Gaussian is 2 pi s^2 exp(-2 pi^2 s^2 |k|^2 / N^2),
    # times the raised-cosine mask: 1 below cut - edge/2, 0 above cut + edge/2
    ky, kx = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    r = np.hypot(ky, kx)
    cut = n * px / res
    t = np.clip((r - cut + edge / 2) / edge, 0, 1)
    mask = np.where(r < cut - edge / 2, 1.0, np.where(r > cut + edge / 2, 0.0, 0.5 + 0.5 * np.cos(np.pi * t)))
    ft = 2 * np.pi * s * s * np.exp(-2 * np.pi ** 2 * s * s * r ** 2 / n ** 2) * mask
    ref = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(ft))).real
    np.testing.assert_allclose(out, ref, atol=1e-6 * img.max())
    # a wider Gaussian (still contained in the box) has no power near the cut-off and passes
    # unchanged; low + high = identity
    wide = gaussian_image(n, 5.0)
    np.testing.assert_allclose(lowpass(wide, res, px), wide, atol=1e-7)
    np.testing.assert_allclose(lowpass(img, res, px) + highpass(img, res, px), img, atol=1e-6)


def test_lowpass_removes_high_frequency_cosine_exactly():
    n, px = 64, 1.0
    x = np.arange(n) - n // 2
    low = np.cos(2 * np.pi * 3 * x / n)[None, :] * np.ones((n, 1))
    high = np.cos(2 * np.pi * 20 * x / n)[None, :] * np.ones((n, 1))
    out = lowpass(low + high, resolution_A=n * px / 10, pixel_size_A=px)   # cut at shell 10
    np.testing.assert_allclose(out, low, atol=1e-10)
    vol = RNG.normal(size=(16, 16, 16)).astype(np.float32)
    assert lowpass(vol, 4.0, 1.0, ndim=3).dtype == np.float32


# ---------------------------------------------------------------- rescale

def band_limited(n, pixel_A, waves, ndim=2):
    """Sum of cosines A cos(2 pi f . r + p) at physical coordinates r = (i - N//2) * pixel_A."""
    axes = np.meshgrid(*[(np.arange(n) - n // 2) * pixel_A] * ndim, indexing="ij")
    out = np.zeros((n,) * ndim)
    for amp, freq, phase in waves:
        out += amp * np.cos(2 * np.pi * sum(f * a for f, a in zip(freq, axes)) + phase)
    return out


@pytest.mark.parametrize("n,n_new", [(48, 32), (48, 33), (47, 32), (32, 48), (33, 50), (40, 40)])
def test_rescale_band_limited_analytic(n, n_new):
    px = 2.0
    box_A = n * px
    # frequencies that fit the box periodically and stay below both Nyquist limits
    kmax = min(n, n_new) // 2 - 1
    waves = [(1.0, (0, 0), 0.0)]
    for _ in range(5):
        k = RNG.integers(-kmax, kmax + 1, size=2)
        if np.hypot(*k) < kmax:
            waves.append((RNG.uniform(0.2, 1), tuple(k / box_A), RNG.uniform(0, 2 * np.pi)))
    img = band_limited(n, px, waves)
    out = rescale(img, n_new)
    ref = band_limited(n_new, px * n / n_new, waves)
    np.testing.assert_allclose(out, ref, atol=1e-9)
    if n_new < n:
        np.testing.assert_allclose(fourier_crop(img, n_new), ref, atol=1e-9)
    elif n_new > n:
        np.testing.assert_allclose(fourier_pad(img, n_new), ref, atol=1e-9)


def test_rescale_3d_and_errors():
    n, n_new, px = 16, 12, 3.0
    waves = [(1.0, (1 / (n * px), -2 / (n * px), 3 / (n * px)), 0.4), (0.5, (0, 2 / (n * px), 0), 1.0)]
    vol = band_limited(n, px, waves, ndim=3)
    np.testing.assert_allclose(rescale(vol, n_new, ndim=3), band_limited(n_new, px * n / n_new, waves, 3),
                               atol=1e-9)
    with pytest.raises(ValueError):
        fourier_crop(vol[0], 20)
    with pytest.raises(ValueError):
        fourier_pad(vol[0], 8)
