"""The bodies' FSC inside their masks (RELION's ``--solvent_correct_fsc``), against the analytic FSC.

Two half maps are one signal, confined to a ball, plus independent white noise. Per shell the
FSC of such halves is ``S / (S + N)`` (``S``, ``N``: the signal's and the noise's power in the
shell). Inside a mask that is 1 on the signal, the signal is unchanged and the noise power is
scaled by the mean of the squared mask, so the solvent-corrected FSC must follow
``S / (S + N mean(m^2))``: higher than the unmasked FSC, by the amount the mask removes.
"""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.fourier import radial_average
from cryolab.methods.refine import halves_fsc
from cryolab.validation import fsc, soft_sphere_mask

N = 40
SIGMA = 0.03


def _halves(seed: int = 0):
    rng = np.random.default_rng(seed)
    c = np.arange(N) - N // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    ball = (np.sqrt(x ** 2 + y ** 2 + z ** 2) <= 8).astype(float)
    # a signal whose power falls with frequency (white noise, low-passed), inside the ball
    k = np.sqrt(np.add.outer(np.add.outer(np.fft.fftfreq(N) ** 2, np.fft.fftfreq(N) ** 2), np.fft.fftfreq(N) ** 2))
    signal = np.real(np.fft.ifftn(np.fft.fftn(rng.standard_normal((N,) * 3)) * np.exp(-(k / 0.12) ** 2))) * ball
    halves = [signal + SIGMA * rng.standard_normal((N,) * 3) for _ in range(2)]
    return signal, halves


def _expected(signal, noise_power_per_voxel):
    s = np.asarray(radial_average(np.abs(np.fft.fftshift(np.fft.fftn(signal))) ** 2, N, ndim=3, half=False))
    return s / (s + noise_power_per_voxel * N ** 3)


def test_masked_body_fsc_follows_the_analytic_curve():
    signal, (h1, h2) = _halves()
    mask = np.asarray(soft_sphere_mask(N, 10, edge_px=3), float)
    assert np.allclose(mask[np.abs(signal) > 0], 1.0)
    plain = halves_fsc(h1, h2)
    assert np.array_equal(plain, np.asarray(fsc(h1, h2)))           # no mask: the plain FSC
    masked = halves_fsc(h1, h2, mask)
    shells = np.arange(2, N // 2)
    want_plain = _expected(signal, SIGMA ** 2)[shells]
    want_masked = _expected(signal, SIGMA ** 2 * np.mean(mask ** 2))[shells]
    # measured: mean |error| 0.017 (unmasked), 0.010 (masked); bound 0.04 for both (the scatter of
    # one noise draw in these shells)
    assert np.mean(np.abs(plain[shells] - want_plain)) < 0.04
    assert np.mean(np.abs(masked[shells] - want_masked)) < 0.04
    # and the mask matters: where the signal is weak the masked FSC is far above the unmasked one
    weak = shells[(want_plain < 0.5) & (want_masked > 0.6)]
    assert weak.size >= 3
    assert np.all(masked[weak] > plain[weak] + 0.2)


def test_masked_body_fsc_without_a_drop_below_0p8_is_the_unmasked_one():
    """RELION uses the unmasked FSC when it never drops below 0.8 (nothing to randomise)."""
    signal, _ = _halves()
    mask = np.asarray(soft_sphere_mask(N, 10, edge_px=3), float)
    h1 = signal + 1e-6 * np.random.default_rng(3).standard_normal(signal.shape)
    h2 = signal + 1e-6 * np.random.default_rng(4).standard_normal(signal.shape)
    plain = np.asarray(fsc(h1, h2))
    assert plain[1:].min() >= 0.8
    assert np.array_equal(halves_fsc(h1, h2, mask), plain)


if __name__ == "__main__":       # pragma: no cover
    pytest.main([__file__, "-q"])
