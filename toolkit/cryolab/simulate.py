"""Simulated particle images with known truth, in RELION's conventions.

* :func:`simulate_particles` - projections of one or more 3D maps in random (or given)
  orientations, shifted, CTF-modulated, with white or coloured noise at a set SNR;
* :func:`simulate_views_2d` - a few fixed views, each rotated in-plane by a random psi and
  shifted (test sets for 2D classification);
* :func:`write_simulation` - ``particles.mrcs`` + ``particles.star`` (RELION 3.1) + ``truth.csv``.

Image formation: ``image = a * CTF * P_{rot,tilt,psi}(V) moved by -origin + noise``, made with
:class:`cryolab.projection.FourierProjector` (or :class:`~cryolab.projection.FourierRotator2D`
for 2D views) and :func:`cryolab.ctf.ctf_2d`. A particle with ``_rlnOriginX/YAngst = (ox, oy)``
sits at ``(-ox, -oy)`` from the box centre (pixel ``N // 2``), as RELION reads it.

**SNR** (the ``snr`` argument) is ``S / sigma^2``: ``S`` is the variance of the pixel values
inside the particle mask (a circle of diameter ``particle_diameter_A``, default 0.8 of the box,
centred on pixel ``N // 2``) of the noise-free, CTF-modulated images, computed per image and
averaged over the whole set; ``sigma^2`` is the per-pixel variance of the noise in real space.
The noise has ``sigma = 1`` and the noise-free images are scaled by ``a = sqrt(snr / S_raw)``.
``noise="coloured"`` filters white noise by the power spectrum ``1 / (1 + (k * corner)^2)``
(``k`` in 1/A, ``corner = noise_corner_A``) and rescales it to ``sigma = 1``, so the SNR
means the same thing for both kinds of noise. As ``relion_preprocess --norm`` does, each image
then has its background mean (pixels outside the mask) subtracted; the noise std is 1.
``snr=0`` gives pure noise; ``snr=inf`` gives noise-free images scaled to ``S = 1``.

Reproducible: every random draw comes from ``seed``; the noise of particle ``i`` comes from
``numpy.random.default_rng([seed, 1, i])``, so results do not depend on ``batch_size``.

>>> import numpy as np
>>> vol = np.zeros((16, 16, 16), np.float32); vol[6:10, 7:9, 5:11] = 1
>>> sim = simulate_particles(vol, 4, pixel_size_A=4.0, seed=1)
>>> sim.images.shape, list(sim.truth.columns[:3])
((4, 16, 16), ['class_index', 'class_name', 'rot_deg'])
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from .backend import get_xp, to_device, to_numpy
from .ctf import CTFParams, ctf_2d
from .errors import CryolabInputError
from .fourier import irfft2c, rfft2c, rfft_grid
from .geometry import random_rotations
from .io import read_mrc, write_particle_stack, write_particles
from .io._files import atomic_path
from .projection import FourierProjector, FourierRotator2D, phase_shift_2d
from .validation import soft_circle_mask

__all__ = ["Simulation", "simulate_particles", "simulate_views_2d", "write_simulation"]

# truth-table columns written to the STAR file (include_truth_angles=True) and their labels
TRUTH_LABELS = {"rot_deg": "rlnAngleRot", "tilt_deg": "rlnAngleTilt", "psi_deg": "rlnAnglePsi",
                "origin_x_A": "rlnOriginXAngst", "origin_y_A": "rlnOriginYAngst"}


@dataclass
class Simulation:
    """A simulated particle set.

    ``images`` float32 ``[n, N, N]`` (a read-only memory map when written while simulating);
    ``particles`` / ``optics`` RELION 3.1 tables (no image names, no angles: see
    :func:`write_simulation`); ``truth`` one row per particle (class or view, angles in degrees,
    origins in A, defocus); ``info`` the SNR bookkeeping (``snr``, ``signal_variance_raw``,
    ``signal_scale``, ``noise``, ``mask_radius_px``, ``seed``); ``clean`` the scaled noise-free
    images when asked for (``keep_clean=True``); ``star_path`` set when written.
    """

    images: np.ndarray
    particles: pd.DataFrame
    optics: pd.DataFrame
    truth: pd.DataFrame
    pixel_size_A: float
    info: dict = field(default_factory=dict)
    clean: np.ndarray | None = None
    star_path: Path | None = None

    def __len__(self) -> int:
        return len(self.truth)


# ----------------------------------------------------------------------------- parameters

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


def _tables(ctf: CTFParams, pixel_size_A: float, box: int):
    """RELION 3.1 particle and optics tables (one optics group)."""
    p = ctf.arrays()
    n = len(p["defocus_u_A"])
    particles = pd.DataFrame({
        "rlnDefocusU": p["defocus_u_A"], "rlnDefocusV": p["defocus_v_A"],
        "rlnDefocusAngle": p["defocus_angle_deg"], "rlnCtfBfactor": p["bfactor_A2"],
        "rlnOpticsGroup": np.ones(n, dtype=np.int64)})
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnVoltage": [float(p["voltage_kV"][0])],
        "rlnSphericalAberration": [float(p["cs_mm"][0])],
        "rlnAmplitudeContrast": [float(p["amplitude_contrast"][0])],
        "rlnImagePixelSize": [float(pixel_size_A)], "rlnImageSize": [int(box)],
        "rlnImageDimensionality": [2]})
    return particles, optics


def _ctf_truth(ctf: CTFParams) -> dict:
    p = ctf.arrays()
    return {"defocus_u_A": p["defocus_u_A"], "defocus_v_A": p["defocus_v_A"],
            "defocus_angle_deg": p["defocus_angle_deg"]}


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
    diameter_A = 0.8 * box * pixel_size_A if particle_diameter_A is None else particle_diameter_A
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


# ----------------------------------------------------------------------------- public API

def simulate_particles(volumes, n: int, pixel_size_A: float, *, fractions=None, eulers="random",
                       max_origin_A: float | None = None, defocus_range_A=(10000.0, 30000.0),
                       astigmatism_A: float = 500.0, voltage_kV: float = 300.0,
                       cs_mm: float = 2.7, amplitude_contrast: float = 0.1,
                       bfactor_A2: float = 0.0, snr: float = 0.05, noise: str = "white",
                       noise_corner_A: float | None = None, particle_diameter_A=None,
                       seed: int = 0, batch_size: int = 256, keep_clean: bool = False,
                       out_dir=None, name: str = "particles",
                       include_truth_angles: bool = False) -> Simulation:
    """Simulate ``n`` particle images of one or more maps (see the module text for the SNR).

    ``volumes``: ``{name: [N,N,N]}``, a list (names ``class1``...) or one array; each particle's
    class is drawn with probabilities ``fractions`` (default equal). ``eulers``: ``"random"``
    (uniform on SO(3)) or ``[n, 3]`` (rot, tilt, psi) degrees. Origins are uniform in a disc of
    radius ``max_origin_A`` (default 3 pixels). Mean defocus is uniform in ``defocus_range_A``,
    ``U - V`` uniform in ``[0, astigmatism_A]``. With ``out_dir`` the images are written batch by
    batch to ``{name}.mrcs`` (memory bounded by ``batch_size``) with ``{name}.star`` and
    ``truth.csv`` (:func:`write_simulation`). ``keep_clean`` keeps the scaled noise-free images.

    >>> vol = np.ones((8, 8, 8), np.float32)
    >>> a = simulate_particles(vol, 3, 5.0, seed=2).images
    >>> bool(np.array_equal(a, simulate_particles(vol, 3, 5.0, seed=2).images))
    True
    """
    names, arrays = _class_volumes(volumes)
    n = int(n)
    if n < 1:
        raise _bad(f"n must be >= 1, got {n}", "n")
    xp = get_xp(arrays[0])
    box = arrays[0].shape[-1]
    rng = np.random.default_rng([int(seed), 0])
    labels = _draw_labels(rng, n, len(names), fractions)
    if isinstance(eulers, str):
        if eulers == "views":
            raise _bad("fixed views with in-plane rotations: use simulate_views_2d", "eulers")
        if eulers != "random":
            raise _bad(f"eulers must be 'random' or an [n, 3] array, got {eulers!r}", "eulers")
        angles = random_rotations(n, rng)
    else:
        angles = np.asarray(to_numpy(eulers), dtype=np.float64)
        if angles.shape != (n, 3):
            raise _bad(f"eulers must have shape ({n}, 3), got {angles.shape}", "eulers")
    max_origin_A = 3.0 * pixel_size_A if max_origin_A is None else float(max_origin_A)
    origins_A = _draw_origins_A(rng, n, max_origin_A)
    ctf = _draw_ctf(rng, n, defocus_range_A, astigmatism_A, voltage_kV, cs_mm,
                    amplitude_contrast, bfactor_A2)
    projectors = [FourierProjector(to_device(a, xp)) for a in arrays]

    def render(idx, ctf_b, origins_px):
        out = xp.empty((len(idx), box, box), dtype=xp.float32)
        for k in np.unique(labels[idx]):
            sel = np.flatnonzero(labels[idx] == k)
            out[sel] = projectors[k].project(angles[idx[sel]], origins_px[sel], ctf_b[sel],
                                             pixel_size_A)
        return out

    truth = pd.DataFrame({"class_index": labels, "class_name": np.asarray(names)[labels],
                          "rot_deg": angles[:, 0], "tilt_deg": angles[:, 1],
                          "psi_deg": angles[:, 2], "origin_x_A": origins_A[:, 0],
                          "origin_y_A": origins_A[:, 1], **_ctf_truth(ctf)})
    return _finish(render, n, box, pixel_size_A, ctf, origins_A, truth, out_dir=out_dir,
                   name=name, include_truth_angles=include_truth_angles, xp=xp, snr=snr,
                   noise=noise, noise_corner_A=noise_corner_A,
                   particle_diameter_A=particle_diameter_A, seed=int(seed),
                   batch_size=batch_size, keep_clean=keep_clean)


def simulate_views_2d(images_or_volume, n: int, pixel_size_A: float, *, n_views: int = 8,
                      view_eulers=None, fractions=None, max_origin_A: float | None = None,
                      defocus_range_A=(10000.0, 30000.0), astigmatism_A: float = 500.0,
                      voltage_kV: float = 300.0, cs_mm: float = 2.7,
                      amplitude_contrast: float = 0.1, bfactor_A2: float = 0.0,
                      snr: float = 0.05, noise: str = "white", noise_corner_A=None,
                      particle_diameter_A=None, seed: int = 0, batch_size: int = 256,
                      keep_clean: bool = False, out_dir=None, name: str = "particles",
                      include_truth_angles: bool = False) -> Simulation:
    """Particles that are a few fixed views, each rotated in-plane by a random psi and shifted.

    ``images_or_volume``: the views ``[K, N, N]`` (rotated with ``FourierRotator2D``; give a
    list of ``[N, N]`` images when ``K == N``), or a cubic map ``[N, N, N]`` whose views are ``view_eulers`` ``[K, 2]`` (rot, tilt; default ``n_views``
    random directions from ``seed``), projected at ``(rot, tilt, psi)``, which is the view
    ``(rot, tilt, 0)`` rotated in-plane by psi (RELION's psi). Psi is uniform in ``[0, 360)``.
    ``truth`` has ``view_index`` (0-based), ``psi_deg``, the origins and defocus (and the
    view's ``rot_deg``/``tilt_deg`` for a map). Other arguments as :func:`simulate_particles`.

    >>> views = np.zeros((2, 16, 16), np.float32); views[:, 6:10, 5:12] = 1
    >>> bool(simulate_views_2d(views, 5, 4.0).truth["view_index"].between(0, 1).all())
    True
    """
    is_volume = not isinstance(images_or_volume, (list, tuple)) and \
        images_or_volume.ndim == 3 and len(set(images_or_volume.shape)) == 1
    if isinstance(images_or_volume, (list, tuple)):
        xp = get_xp(images_or_volume[0])
        data = xp.stack([xp.asarray(v) for v in images_or_volume])
    else:
        data = images_or_volume
        xp = get_xp(data)
    n = int(n)
    if n < 1:
        raise _bad(f"n must be >= 1, got {n}", "n")
    if data.ndim != 3 or data.shape[-1] != data.shape[-2]:
        raise _bad(f"expected views [K, N, N] or a map [N, N, N], got {data.shape}",
                   "images_or_volume")
    box = data.shape[-1]
    rng = np.random.default_rng([int(seed), 0])
    if is_volume:
        if view_eulers is None:
            view_eulers = random_rotations(int(n_views), np.random.default_rng([int(seed), 2]))
        views = np.asarray(to_numpy(view_eulers), dtype=np.float64)
        if views.ndim != 2 or views.shape[1] not in (2, 3):
            raise _bad(f"view_eulers must be [K, 2] (rot, tilt), got {views.shape}", "view_eulers")
        views = views[:, :2]
        k_views = len(views)
    else:
        k_views = data.shape[0]
    labels = _draw_labels(rng, n, k_views, fractions)
    psi = rng.uniform(0.0, 360.0, n)
    max_origin_A = 3.0 * pixel_size_A if max_origin_A is None else float(max_origin_A)
    origins_A = _draw_origins_A(rng, n, max_origin_A)
    ctf = _draw_ctf(rng, n, defocus_range_A, astigmatism_A, voltage_kV, cs_mm,
                    amplitude_contrast, bfactor_A2)
    truth = {"view_index": labels}
    if is_volume:
        projector = FourierProjector(data)
        poses = np.column_stack([views[labels], psi])
        truth.update(rot_deg=poses[:, 0], tilt_deg=poses[:, 1])

        def render(idx, ctf_b, origins_px):
            return projector.project(poses[idx], origins_px, ctf_b, pixel_size_A)
    else:
        rotators = [FourierRotator2D(data[k:k + 1]) for k in range(k_views)]

        def render(idx, ctf_b, origins_px):
            ft = xp.empty((len(idx), box, box // 2 + 1), dtype=xp.complex64)
            for k in np.unique(labels[idx]):
                sel = np.flatnonzero(labels[idx] == k)
                ft[sel] = rotators[k].rotate_ft(psi[idx[sel]])[0]
            ft = phase_shift_2d(ft, -origins_px) * ctf_2d(ctf_b, box, pixel_size_A, xp=xp)
            return irfft2c(ft, box).astype(xp.float32, copy=False)

    truth.update(psi_deg=psi, origin_x_A=origins_A[:, 0], origin_y_A=origins_A[:, 1],
                 **_ctf_truth(ctf))
    return _finish(render, n, box, pixel_size_A, ctf, origins_A, pd.DataFrame(truth),
                   out_dir=out_dir, name=name, include_truth_angles=include_truth_angles, xp=xp,
                   snr=snr, noise=noise, noise_corner_A=noise_corner_A,
                   particle_diameter_A=particle_diameter_A, seed=int(seed),
                   batch_size=batch_size, keep_clean=keep_clean)


# ----------------------------------------------------------------------------- writing

def _star_table(sim: Simulation, include_truth_angles: bool) -> pd.DataFrame:
    particles = sim.particles.copy()
    if include_truth_angles:
        for col, lab in TRUTH_LABELS.items():
            if col in sim.truth.columns:
                particles[lab] = sim.truth[col].to_numpy()
    return particles


def _write_truth(sim: Simulation, out_dir: Path) -> Path:
    path = out_dir / "truth.csv"
    with atomic_path(path) as tmp:
        sim.truth.to_csv(tmp, index=False, float_format="%.8g")
        os.chmod(tmp, 0o644)
    return path


def _write_tables(sim: Simulation, out_dir: Path, name: str, include_truth_angles: bool) -> Path:
    """STAR (pointing at the already written ``{name}.mrcs``) and ``truth.csv``."""
    particles = _star_table(sim, include_truth_angles)
    particles.insert(0, "rlnImageName",
                     [f"{i + 1:06d}@{name}.mrcs" for i in range(len(particles))])
    star_path = write_particles(out_dir / f"{name}.star", particles, sim.optics)
    _write_truth(sim, out_dir)
    return Path(star_path)


def write_simulation(sim: Simulation, out_dir, name: str = "particles", *,
                     include_truth_angles: bool = False) -> Path:
    """Write ``{name}.mrcs``, ``{name}.star`` (RELION 3.1) and ``truth.csv`` into ``out_dir``.

    The STAR file has ``data_optics`` and ``data_particles`` (``_rlnImageName`` as
    ``000001@{name}.mrcs``, defocus, optics group); with ``include_truth_angles`` also the true
    ``_rlnAngleRot/Tilt/Psi`` and ``_rlnOriginX/YAngst`` (e.g. for ``relion_reconstruct``, run
    from ``out_dir``). All files are written atomically. Returns the STAR path.
    For sets larger than memory pass ``out_dir`` to the simulation itself (streamed writing).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise CryolabInputError("the folder to write into does not exist", path=out_dir)
    star_path = out_dir / f"{name}.star"
    write_particle_stack(star_path, sim.images, _star_table(sim, include_truth_angles),
                         sim.optics, stack_name=f"{name}.mrcs")
    _write_truth(sim, out_dir)
    sim.star_path = star_path
    return star_path
