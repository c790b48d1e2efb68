"""The shared simulation pipeline: parameter draws, noise and the two-pass image formation.

``_run`` renders noise-free images batch by batch, scales them to the requested SNR, adds
noise and subtracts the background mean (see :mod:`cryolab.simulate` for the definitions);
``_finish`` keeps the result in memory or streams it to ``{name}.mrcs``. Every random draw
comes from the caller's seed; the noise of particle ``i`` from ``default_rng([seed, 1, i])``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import mrcfile
import numpy as np

from ..backend import to_device, to_numpy
from ..ctf import CTFParams
from ..errors import CryolabInputError
from ..fourier import irfft2c, rfft2c, rfft_grid
from ..io import read_mrc
from ..io._files import atomic_path
from ..validation import soft_circle_mask
from .tables import Simulation, _tables, _write_tables

# ----------------------------------------------------------------------------- parameters

#: the disc where the simulated SNR is measured, as a fraction of the box, when no particle
#: diameter is given (the SNR's definition, not the classification mask of
#: :data:`cryolab.settings.DEFAULT_DIAMETER_FRACTION`)
SIGNAL_DISC_FRACTION = 0.8

def _bad(message: str, name: str):
    return CryolabInputError(message, field=name)


def _class_volumes(volumes):
    """``(names, arrays)`` from a dict, a list or one array."""
    if isinstance(volumes, dict):
        names, arrays = [str(k) for k in volumes], list(volumes.values())
    elif isinstance(volumes, (list, tuple)):
        names, arrays = [f"class{k + 1}" for k in range(len(volumes))], list(volumes)
    else:
        names, arrays = ["class1"], [volumes]
    if not arrays:
        raise _bad("no volumes given", "volumes")
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or len(set(next(iter(shapes)))) != 1:
        raise _bad(f"volumes must be cubic [N, N, N] of one size, got {sorted(shapes)}", "volumes")
    return names, arrays


def _draw_labels(rng, n: int, k: int, fractions):
    if fractions is None:
        p = np.full(k, 1.0 / k)
    else:
        p = np.asarray(fractions, dtype=np.float64).ravel()
        if p.size != k or (p < 0).any() or p.sum() <= 0:
            raise _bad(f"need {k} non-negative fractions with a positive sum, got {fractions!r}",
                       "fractions")
        p = p / p.sum()
    return rng.choice(k, size=n, p=p)


def _draw_origins_A(rng, n: int, max_origin_A: float):
    """Origins uniform in the disc of radius ``max_origin_A``: ``[n, 2]`` (x, y) in A."""
    r = max_origin_A * np.sqrt(rng.random(n))
    a = rng.random(n) * 2 * np.pi
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _draw_ctf(rng, n, defocus_range_A, astigmatism_A, voltage_kV, cs_mm, amplitude_contrast,
              bfactor_A2) -> CTFParams:
    """Mean defocus uniform in the range, astigmatism ``U - V`` uniform in ``[0, astigmatism_A]``,
    angle uniform in ``[0, 180)`` degrees."""
    lo, hi = (float(v) for v in defocus_range_A)
    if not 0 <= lo <= hi:
        raise _bad(f"defocus range must be 0 <= low <= high, got {defocus_range_A!r}",
                   "defocus_range_A")
    mean = rng.uniform(lo, hi, n)
    astig = rng.uniform(0.0, float(astigmatism_A), n)
    angle = rng.uniform(0.0, 180.0, n)
    return CTFParams(defocus_u_A=mean + astig / 2, defocus_v_A=mean - astig / 2,
                     defocus_angle_deg=angle, voltage_kV=float(voltage_kV), cs_mm=float(cs_mm),
                     amplitude_contrast=float(amplitude_contrast), bfactor_A2=float(bfactor_A2))


# ----------------------------------------------------------------------------- noise

def _noise_filter(n: int, pixel_size_A: float, corner_A: float, xp):
    """Amplitude filter ``[N, N//2+1]`` for coloured noise, scaled to keep the pixel variance."""
    ky, kx = rfft_grid(n, 2, xp, True)
    k2 = (kx.astype(xp.float64) ** 2 + ky.astype(xp.float64) ** 2) / (n * pixel_size_A) ** 2
    fy, fx = rfft_grid(n, 2, xp, False)  # full grid for the mean power (Parseval)
    f2 = (fx.astype(xp.float64) ** 2 + fy.astype(xp.float64) ** 2) / (n * pixel_size_A) ** 2
    mean_power = float(xp.mean(1.0 / (1.0 + f2 * corner_A ** 2)))
    return xp.sqrt(1.0 / (1.0 + k2 * corner_A ** 2) / mean_power).astype(xp.float32)


def _noise(seed: int, idx, n: int, filt, xp):
    """Unit-variance noise ``[B, N, N]`` for particles ``idx`` (white, or filtered by ``filt``)."""
    out = np.stack([np.random.default_rng([seed, 1, int(i)]).standard_normal((n, n),
                                                                             dtype=np.float32)
                    for i in idx])
    out = to_device(out, xp)
    if filt is not None:
        out = irfft2c(rfft2c(out) * filt, n).astype(xp.float32, copy=False)
    return out


# ----------------------------------------------------------------------------- the pipeline

def _run(render, n: int, box: int, pixel_size_A: float, ctf: CTFParams, origins_A, *, snr,
         noise, noise_corner_A, particle_diameter_A, seed, batch_size, xp, out_stack=None,
         keep_clean=False):
    """Fill an image array (memory, or the open memory map ``out_stack``) in two passes:
    noise-free images and their masked variance, then scaling, noise and background mean."""
    snr = float(snr)
    if not snr >= 0:
        raise _bad(f"snr must be >= 0 (or inf), got {snr!r}", "snr")
    if noise not in ("white", "coloured", "colored"):
        raise _bad(f"noise must be 'white' or 'coloured', got {noise!r}", "noise")
    if int(batch_size) < 1:
        raise _bad(f"batch_size must be >= 1, got {batch_size!r}", "batch_size")
    diameter_A = (SIGNAL_DISC_FRACTION * box * pixel_size_A if particle_diameter_A is None
                  else particle_diameter_A)
    radius_px = 0.5 * float(diameter_A) / pixel_size_A
    inside = soft_circle_mask(box, radius_px, edge_px=0, xp=xp) > 0.5
    if not inside.any() or inside.all():
        raise _bad(f"the particle mask (radius {radius_px:.1f} px) must leave pixels inside and "
                   f"outside a {box}-pixel box", "particle_diameter_A")
    outside = ~inside
    corner_A = 8.0 * pixel_size_A if noise_corner_A is None else float(noise_corner_A)
    filt = None if noise == "white" else _noise_filter(box, pixel_size_A, corner_A, xp)
    images = out_stack if out_stack is not None else np.empty((n, box, box), np.float32)
    origins_px = np.asarray(origins_A, dtype=np.float64) / pixel_size_A
    batches = [np.arange(s, min(s + int(batch_size), n)) for s in range(0, n, int(batch_size))]

    var_sum = 0.0
    for idx in batches:  # pass 1: noise-free images, masked variance per image
        clean = render(idx, ctf[idx], to_device(origins_px[idx], xp))
        var_sum += float(xp.sum(xp.var(clean[:, inside], axis=1, dtype=xp.float64)))
        images[idx[0]:idx[-1] + 1] = to_numpy(clean)
    s_raw = var_sum / n
    if s_raw <= 0:
        raise _bad("the noise-free images are blank inside the particle mask", "volumes")
    with_noise = math.isfinite(snr)
    scale = math.sqrt((snr if with_noise else 1.0) / s_raw)
    clean_out = np.empty((n, box, box), np.float32) if keep_clean else None

    for idx in batches:  # pass 2: scale, add noise, zero the background mean
        sl = slice(idx[0], idx[-1] + 1)
        img = to_device(np.asarray(images[sl]), xp) * np.float32(scale)
        if keep_clean:
            clean_out[sl] = to_numpy(img)
        if with_noise:
            img += _noise(seed, idx, box, filt, xp)
        img -= xp.mean(img[:, outside], axis=1)[:, None, None]
        images[sl] = to_numpy(img)

    info = {"snr": snr, "noise": "coloured" if noise != "white" else "white",
            "noise_corner_A": corner_A if noise != "white" else None,
            "signal_variance_raw": s_raw, "signal_scale": scale,
            "mask_radius_px": radius_px, "seed": seed}
    return images, clean_out, info


def _finish(render, n, box, pixel_size_A, ctf, origins_A, truth, *, out_dir, name,
            include_truth_angles, xp, **kw) -> Simulation:
    """Run the pipeline in memory or streamed to ``out_dir`` and wrap the result."""
    particles, optics = _tables(ctf, pixel_size_A, box)
    if out_dir is None:
        images, clean, info = _run(render, n, box, pixel_size_A, ctf, origins_A, xp=xp, **kw)
        return Simulation(images, particles, optics, truth, float(pixel_size_A), info, clean)
    if kw.get("keep_clean"):
        raise _bad("keep_clean needs the images in memory (out_dir=None)", "keep_clean")
    out_dir = Path(out_dir)
    stack_path = out_dir / f"{name}.mrcs"
    with atomic_path(stack_path) as tmp:
        with mrcfile.new_mmap(tmp, shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size_A)
            _, _, info = _run(render, n, box, pixel_size_A, ctf, origins_A, xp=xp,
                              out_stack=mrc.data, **kw)
            mrc.update_header_stats()
        os.chmod(tmp, 0o644)
    images, _ = read_mrc(stack_path, mmap=True)
    sim = Simulation(images, particles, optics, truth, float(pixel_size_A), info)
    sim.star_path = _write_tables(sim, out_dir, name, include_truth_angles)
    return sim
