"""A straight film edge (carbon beside a hole) found from the micrograph's mean level, and the pixels to keep off.

A carbon film changes the micrograph's mean level over a large area, and its edge is straight over the
field (a hole's rim, locally). Single particles change the level too (at low resolution a particle looks
like a small disc of film), so the film is recognised by its extent, not its level. The micrograph ``[H, W]``
is smoothed (Gaussian of half ``radius_px``), binned by ``radius_px / 4`` (half the smoothing's sigma), its
level clipped at 3 robust standard deviations (a dense contaminant then weighs no more than a particle), a
plane fitted to it subtracted (a plain fit is tilted by dense contaminants, and a ramp is a step at every
line) and clipped again; along directions every 2 deg it is averaged over lines (a Radon profile, each bin a whole line across the
field), and at each line the step between the means of the two strips of ``window_px`` on either side
is taken (in units of its standard deviation for white noise). The largest step, refined to 0.1 deg, gives
the edge's line; the **film** is the side whose median level is further from the micrograph's (the film
is taken to cover less than half of the field). The step is an edge when it reaches ``z_min`` times the
spread of the same steps (robust standard deviation, directions every 4 deg) over the rest of the field
(beyond ``radius_px + window_px`` from the edge on the other side: particles, contaminants and noise
make that spread), and when it is the same along the line: of four equal parts of the strips, at least
three must show at least half the step with the same sign (a contaminant or a cluster of particles
raises one part only). Measured on simulated micrographs (6 A/px, 300-A particles, SNR 0.05 per 2-A
pixel, strips of one particle diameter; docs/picking.md): at 1024^2 with a film 13.5-18.7, without one
3.2-5.3 (particles and contaminants, or pure noise); at 512^2 film 4.3-10.0 (2 of 16 below 6), without one
2.5-6.0: the rule is only a hint on micrographs that small (their film strip is narrow).

:func:`film_mask` marks the film and the band within ``radius_px`` of the edge on the other side (a
particle's disc that would straddle the edge): picks there are rejected.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .score import robust_std, subtract_plane

__all__ = ["find_film_edge", "film_mask"]

_PARTS = 4           # equal parts along the edge, checked one by one
_PARTS_AGREE = 3     # parts that must show at least half the step with its sign
_COARSE_DEG = 2.0    # the search's angular step (then refined to 0.1 deg)
_SPREAD_DEG = 4.0    # the angular step of the steps whose spread sets the z-score
_BIN_PER_RADIUS = 4  # the micrograph is binned by radius_px / this (half the smoothing's sigma), at most to 16 px
_CLIP = 3.0          # the smoothed micrograph's level is clipped at this many robust standard deviations


def _steps(image, coords, theta, window: int, min_count: float, keep=None):
    """Signed steps (mean before minus mean after, in units of the pixel noise of a unit-variance image)
    at every line position ``s`` along direction ``theta`` over the pixels ``keep`` (default all):
    ``(z [B], edge positions [B])``. ``coords``: the pixels' ``(x, y)`` from the image centre."""
    off = int(np.ceil(max(image.shape) * 0.75)) + window + 1        # beyond half the diagonal
    b = (coords[0] * np.cos(theta) + coords[1] * np.sin(theta) + off).astype(np.int64)   # floor: all > 0
    values = image.ravel()
    if keep is None:
        counts, sums = np.bincount(b, minlength=2 * off), np.bincount(b, values, minlength=2 * off)
    else:
        w = keep.ravel().astype(np.float64)
        counts, sums = np.bincount(b, w, minlength=2 * off), np.bincount(b, w * values, minlength=2 * off)
    cnt = np.concatenate([[0.0], np.cumsum(counts)])
    tot = np.concatenate([[0.0], np.cumsum(sums)])
    k = np.arange(window, len(cnt) - window)
    nl, nr = cnt[k] - cnt[k - window], cnt[k + window] - cnt[k]
    ok = (nl >= min_count) & (nr >= min_count)
    ml = (tot[k] - tot[k - window]) / np.maximum(nl, 1)
    mr = (tot[k + window] - tot[k]) / np.maximum(nr, 1)
    z = np.where(ok, (ml - mr) / np.sqrt(1 / np.maximum(nl, 1) + 1 / np.maximum(nr, 1)), np.nan)
    return z, (k - off).astype(np.float64)


def _agrees(image, theta, edge, window: int) -> bool:
    """Whether most parts along the edge show at least half of the whole step, with its sign."""
    yy, xx = _centred(image.shape)
    s = xx * np.cos(theta) + yy * np.sin(theta) - edge
    t = -xx * np.sin(theta) + yy * np.cos(theta)
    before, after = (s >= -window) & (s < 0), (s >= 0) & (s < window)
    band = before | after
    cuts = np.quantile(t[band], np.linspace(0, 1, _PARTS + 1))
    whole = image[before].mean() - image[after].mean()
    agree = 0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        part = (t >= lo) & (t <= hi)
        if np.any(part & before) and np.any(part & after):
            d = image[part & before].mean() - image[part & after].mean()
            agree += d * np.sign(whole) >= 0.5 * abs(whole)
    return agree >= _PARTS_AGREE


def _largest(img, coords, angles, window, min_count, best=(0.0, None, None)):
    for th in angles:
        z, edges = _steps(img, coords, th, window, min_count)
        if np.any(np.isfinite(z)):
            i = int(np.nanargmax(np.abs(z)))
            if abs(z[i]) > abs(best[0]):
                best = (float(z[i]), float(th), float(edges[i]))
    return best


def _centred(shape):
    """Pixel coordinates ``(y, x)`` ``[H, W]`` from the centre ``((W - 1) / 2, (H - 1) / 2)``."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    return yy - (shape[0] - 1) / 2.0, xx - (shape[1] - 1) / 2.0


def find_film_edge(image, window_px: float, radius_px: float, z_min: float):
    """The straightest strong step of ``image`` ``[H, W]`` (module text): ``None``, or ``(theta, edge, z,
    film_sign)`` with the edge the line ``x cos(theta) + y sin(theta) = edge`` (pixels from the image
    centre ``((W - 1) / 2, (H - 1) / 2)``) and ``film_sign`` +1 when the film lies where that sum exceeds
    ``edge``."""
    img = np.asarray(image, np.float64)
    shape = img.shape
    sigma = robust_std(img[::2, ::2])               # (every other pixel: the same to a fraction of a percent)
    if not sigma > 0:
        return None
    img = gaussian_filter((img - np.median(img)) / sigma, max(1.0, 0.5 * radius_px), mode="nearest")
    b = max(1, min(int(radius_px / _BIN_PER_RADIUS), min(shape) // 16))   # smooth by now: binned for speed
    ny, nx = shape[0] // b, shape[1] // b
    img = img[:ny * b, :nx * b].reshape(ny, b, nx, b).mean(axis=(1, 3))
    img = np.clip(img / max(robust_std(img), 1e-30), -_CLIP, _CLIP)
    img = subtract_plane(img).astype(np.float64)   # a plane fitted to the clipped level: dense contaminants
    img = np.clip(img / max(robust_std(img), 1e-30), -_CLIP, _CLIP)    # tilt a plain fit
    window, radius_px = max(2, int(round(window_px / b))), radius_px / b
    min_count = 0.25 * min(ny, nx) * window
    yy, xx = _centred((ny, nx))
    coords = (xx.ravel(), yy.ravel())
    step, theta, edge = _largest(img, coords, np.deg2rad(np.arange(0.0, 180.0, _COARSE_DEG)), window, min_count)
    if theta is None:
        return None
    step, theta, edge = _largest(img, coords, theta + np.deg2rad(np.arange(-_COARSE_DEG, _COARSE_DEG + 1e-6, 0.1)),
                                 window, min_count, (step, theta, edge))
    s = (coords[0] * np.cos(theta) + coords[1] * np.sin(theta)).reshape(ny, nx)
    middle = np.median(img)
    sign = 1 if abs(np.median(img[s >= edge]) - middle) > abs(np.median(img[s < edge]) - middle) else -1
    rest = sign * (s - edge) <= -(radius_px + window)          # the field away from the film and its edge
    spread = []
    for th in np.deg2rad(np.arange(0.0, 180.0, _SPREAD_DEG)):
        z = _steps(img, coords, th, window, min_count, rest)[0]
        spread.append(z[np.isfinite(z)])
    spread = robust_std(np.concatenate(spread))
    if not spread > 0 or abs(step) / spread < z_min or not _agrees(img, theta, edge, window):
        return None
    shift_x, shift_y = (nx * b - shape[1]) / 2.0, (ny * b - shape[0]) / 2.0   # the binned centre in the image's
    edge = b * edge + shift_x * np.cos(theta) + shift_y * np.sin(theta)         # frame
    return theta, float(edge), abs(step) / spread, sign


def film_mask(image, window_px: float, radius_px: float, z_min: float) -> np.ndarray:
    """True on the film beyond a straight edge of ``image`` and within ``radius_px`` of the edge on the
    other side (:func:`find_film_edge`); all False when there is no edge."""
    shape = np.shape(image)
    found = find_film_edge(image, window_px, radius_px, z_min)
    if found is None:
        return np.zeros(shape, bool)
    theta, edge, _, sign = found
    yy, xx = _centred(shape)
    toward_film = sign * (xx * np.cos(theta) + yy * np.sin(theta) - edge)
    return toward_film > -radius_px
