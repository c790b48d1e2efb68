"""Simulated micrographs with particles at known positions and orientations (picking test sets).

Image formation of one micrograph ``[H, W]`` (rows, columns: square or not; axes y, x; pixel (x, y) is
column x, row y):

* **object**: the projection of each particle (:class:`cryolab.projection.FourierProjector`, RELION's
  ZYZ angles) pasted with its box centre (pixel ``N // 2``) on its integer coordinate; a carbon
  film (projected thickness ``carbon_density`` x the particles' peak, with texture) beyond a
  straight edge; ``contaminants`` dense spheres (``contaminant_density`` x the particles' peak);
* **image** = ``sign * a * CTF(object) + ice gradient + noise``: the micrograph's CTF (its own
  defocus and astigmatism) applied to the whole field, ``sign = -1`` (dark particles, as recorded;
  ``dark=False`` gives white ones), unit white noise and a linear ramp of ``ice_gradient`` noise
  sigmas from one corner to the other;
* **SNR** as in :mod:`cryolab.simulate`: ``a`` makes the variance of the CTF-modulated particles inside
  a disc of ``particle_diameter_A`` (default 0.8 of the box) around each centre, averaged over the
  particles, ``snr`` times the noise variance (1). ``snr_pixel_size_A`` (default: ``pixel_size_A``)
  states the detector pixel the SNR refers to: a micrograph recorded at that pixel and binned to
  ``pixel_size_A`` averages ``(pixel_size_A / snr_pixel_size_A)^2`` noise pixels per pixel, so the
  simulated per-pixel SNR is ``snr * (pixel_size_A / snr_pixel_size_A)^2`` (the signal, smooth at the
  coarse pixel, is the same in both).

Particles keep a margin of half a box from the edges and from the carbon and the contaminants, and
at least ``min_distance_A`` (default one diameter) between centres. Pure-noise micrographs
(``n_noise``) have the same CTF, gradient and noise, and no particles, carbon or contaminants.
Every draw comes from ``seed`` (micrograph ``m`` from ``default_rng([seed, 7, m])``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import scipy.fft as sfft

from ..backend import fft_kwargs
from ..ctf import CTFParams, _ctf_from_freqs, _param_arrays
from ..errors import CryolabInputError
from ..geometry import random_rotations
from ..io import project_path, write_mrc, write_star
from ..io._files import atomic_path
from ..projection import FourierProjector
from .pipeline import SIGNAL_DISC_FRACTION, _class_volumes

__all__ = ["MicrographSet", "simulate_micrographs", "simulate_tilt_pair", "micrograph_tables", "write_micrographs",
           "micrograph_shape", "micrograph_ctf", "filter_micrograph"]


@dataclass
class MicrographSet:
    """Micrographs ``[M, H, W]`` (float32), their CTF (one entry per micrograph) and the truth.

    ``truth``: one row per particle: ``micrograph`` (0-based index), ``x_px``, ``y_px`` (pixel
    column and row, RELION's ``_rlnCoordinateX/Y``), ``class_name``, ``rot_deg``, ``tilt_deg``,
    ``psi_deg``. ``names``: the micrograph file names (``mic001.mrc``, ...); ``noise``: True for
    the pure-noise ones. ``star_path`` is set once written (:func:`write_micrographs`).
    """

    micrographs: np.ndarray
    pixel_size_A: float
    ctf: CTFParams
    truth: pd.DataFrame
    names: list
    noise: np.ndarray
    particle_diameter_A: float
    info: dict = field(default_factory=dict)
    star_path: Path | None = None

    def coordinates(self, m: int) -> np.ndarray:
        """True centres ``[P, 2]`` (x, y) in pixels of micrograph ``m``."""
        rows = self.truth[self.truth["micrograph"] == m]
        return rows[["x_px", "y_px"]].to_numpy(dtype=np.float64)


def _bad(message: str, name: str):
    return CryolabInputError(message, field=name)


def micrograph_shape(size_px) -> tuple:
    """``(rows, columns)`` of a micrograph size given as one number (square) or as ``(rows, columns)``."""
    v = np.atleast_1d(np.asarray(size_px)).ravel()
    if np.ndim(size_px) > 1 or v.size not in (1, 2):
        raise _bad(f"a micrograph size is one number or (rows, columns), got {size_px!r}", "size_px")
    v = np.repeat(v, 2) if v.size == 1 else v
    return int(v[0]), int(v[1])


def _freqs(shape, pixel_size_A: float = 1.0):
    """Frequencies ``(fy [H, 1], fx [1, W//2+1])`` of the uncentred real-FFT grid of ``shape``, in 1/A."""
    h, w = shape
    return np.fft.fftfreq(h)[:, None] / pixel_size_A, np.fft.rfftfreq(w)[None, :] / pixel_size_A


def micrograph_ctf(ctf: CTFParams, shape, pixel_size_A: float) -> np.ndarray:
    """The CTF ``[H, W//2+1]`` (float64) of one micrograph of ``shape`` (rows, columns; any two sizes) on the
    uncentred real-FFT grid (``scipy.fft.rfft2``'s layout), with RELION's formula (:mod:`cryolab.ctf`;
    frequency ``(fx, fy)`` = (column, row) index over the size times the pixel size, the defocus angle from
    the x axis)."""
    fy, fx = _freqs(micrograph_shape(shape), pixel_size_A)
    fy, fx = np.broadcast_arrays(fy, fx)
    return _ctf_from_freqs(_param_arrays(ctf), fx ** 2 + fy ** 2, np.arctan2(fy, fx), np)[0]


def filter_micrograph(image, transfer) -> np.ndarray:
    """``image`` ``[H, W]`` filtered by a real ``transfer`` function ``[H, W//2+1]`` on the uncentred
    real-FFT grid (:func:`micrograph_ctf`), float64."""
    f = sfft.rfft2(np.asarray(image, np.float64), **fft_kwargs(np))
    return sfft.irfft2(f * transfer, s=np.shape(image), **fft_kwargs(np))


def _place(rng, n: int, shape, margin: float, min_dist: float, free, tries: int = 20000):
    """``n`` integer centres ``[n, 2]`` (x, y) at least ``margin`` from the edges, where ``free``
    (a boolean ``[H, W]`` map) is True, and at least ``min_dist`` apart (rejection sampling)."""
    out = []
    lo = int(np.ceil(margin))
    hi = [int(shape[1] - np.ceil(margin)), int(shape[0] - np.ceil(margin))]
    for _ in range(tries):
        if len(out) == n:
            break
        p = rng.integers(lo, hi)
        if not free[p[1], p[0]]:
            continue
        if out and np.min(np.hypot(*(np.array(out) - p).T)) < min_dist:
            continue
        out.append(p)
    if len(out) < n:
        raise _bad(f"only {len(out)} of {n} particles fit on a {shape[0]} x {shape[1]}-pixel micrograph at "
                   f"{min_dist:.0f} px apart", "n_particles")
    return np.array(out, dtype=np.int64).reshape(n, 2)


def _carbon(rng, shape, edge_px: float, texture_seed):
    """Carbon thickness ``[H, W]`` (0 to about 1) beyond a straight edge crossing one side, and the
    signed distance (px) of each pixel to the edge (positive on the carbon)."""
    y, x = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    normal = np.array([np.cos(angle), np.sin(angle)])
    offset = rng.uniform(0.3, 0.38) * min(shape)    # the carbon covers 12-20 % of a square field
    dist = (x - shape[1] / 2) * normal[0] + (y - shape[0] / 2) * normal[1] - offset
    film = 1.0 / (1.0 + np.exp(np.clip(-dist / max(edge_px, 0.5), -50, 50)))
    texture = np.random.default_rng(texture_seed).standard_normal(shape)
    fy, fx = _freqs(shape)
    texture = filter_micrograph(texture, np.exp(-2 * np.pi ** 2 * 3.0 ** 2 * (fx ** 2 + fy ** 2)))
    return film * (1.0 + 0.1 * texture / texture.std()), dist


def simulate_micrographs(volumes, n_micrographs: int, n_particles: int, pixel_size_A: float, *,
                         size_px=1024, n_noise: int = 0, snr: float = 0.05, fractions=None,
                         particle_diameter_A: float | None = None, min_distance_A: float | None = None,
                         defocus_range_A=(10000.0, 30000.0), astigmatism_A: float = 500.0,
                         voltage_kV: float = 300.0, cs_mm: float = 2.7, amplitude_contrast: float = 0.1,
                         snr_pixel_size_A: float | None = None, ice_gradient: float = 1.0, carbon: bool = True, carbon_density: float = 0.5,
                         contaminants: int = 3, contaminant_density: float = 4.0, dark: bool = True,
                         positions=None, eulers=None, seed: int = 0) -> MicrographSet:
    """Simulate ``n_micrographs`` micrographs of ``n_particles`` each plus ``n_noise`` pure-noise ones.

    ``volumes``: one map ``[N, N, N]``, a list or ``{name: map}`` (classes drawn with ``fractions``);
    ``pixel_size_A`` is the maps' and the micrographs' pixel size; ``size_px`` one number (square) or
    ``(rows, columns)``. Mean defocus uniform in
    ``defocus_range_A`` (A, positive underfocus), ``U - V`` uniform in ``[0, astigmatism_A]``, angle
    uniform. ``positions`` (a list of ``[P, 2]`` integer (x, y) per micrograph) and ``eulers`` (the
    same with ``[P, 3]`` degrees) replace the random draws (tilt pairs); with given positions the
    carbon and contaminants are left out. See the module text for the model.

    >>> vol = np.zeros((16, 16, 16), np.float32); vol[5:11, 6:10, 4:12] = 1
    >>> s = simulate_micrographs(vol, 1, 3, 5.0, size_px=96, contaminants=0, carbon=False, seed=1)
    >>> s.micrographs.shape, len(s.truth)
    ((1, 96, 96), 3)
    >>> simulate_micrographs(vol, 1, 3, 5.0, size_px=(64, 96), contaminants=0, carbon=False).micrographs.shape
    (1, 64, 96)
    """
    names, arrays = _class_volumes(volumes)
    box = arrays[0].shape[-1]
    n_mic, n_noise, shape = int(n_micrographs), int(n_noise), micrograph_shape(size_px)
    if n_mic < 0 or n_noise < 0 or n_mic + n_noise == 0:
        raise _bad(f"need at least one micrograph, got {n_mic} + {n_noise} noise", "n_micrographs")
    if min(shape) < 2 * box or shape[0] % 2 or shape[1] % 2:
        raise _bad(f"size_px must be even and at least two boxes ({2 * box}), got {shape}", "size_px")
    if not snr > 0:
        raise _bad(f"snr must be > 0, got {snr!r}", "snr")
    binning = 1.0 if snr_pixel_size_A is None else float(pixel_size_A) / float(snr_pixel_size_A)
    if not binning >= 1:
        raise _bad(f"snr_pixel_size_A must be <= pixel_size_A, got {snr_pixel_size_A!r}", "snr_pixel_size_A")
    pixel_snr = float(snr) * binning ** 2
    diameter_A = SIGNAL_DISC_FRACTION * box * pixel_size_A if particle_diameter_A is None else float(
        particle_diameter_A)
    radius_px = 0.5 * diameter_A / pixel_size_A
    min_dist_px = (diameter_A if min_distance_A is None else float(min_distance_A)) / pixel_size_A
    projectors = [FourierProjector(np.asarray(a, np.float32)) for a in arrays]
    peak = float(np.mean([np.percentile(p.project(np.zeros((1, 3)))[0], 99.5) for p in projectors]))
    total = n_mic + n_noise
    y, x = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    disc = (np.hypot(*(np.mgrid[:box, :box] - box // 2)) <= radius_px)
    mics = np.zeros((total,) + shape, np.float32)
    ctfs, rows, var_sum, n_var = [], [], 0.0, 0
    clean_layers = []
    for m in range(total):
        rng = np.random.default_rng([int(seed), 7, m])
        mean = rng.uniform(*defocus_range_A)
        astig = rng.uniform(0.0, astigmatism_A)
        ctf = CTFParams(defocus_u_A=mean + astig / 2, defocus_v_A=mean - astig / 2,
                        defocus_angle_deg=rng.uniform(0, 180), voltage_kV=voltage_kV, cs_mm=cs_mm,
                        amplitude_contrast=amplitude_contrast)
        ctfs.append(ctf)
        particles = np.zeros(shape)
        other = np.zeros(shape)
        if m < n_mic:
            free = np.ones(shape, bool)
            given = positions is not None
            if carbon and not given:
                film, dist = _carbon(rng, shape, 2.0, [int(seed), 8, m])
                other += carbon_density * peak * film
                free &= dist < -box / 2
            for _ in range(0 if given else int(contaminants)):
                r = rng.uniform(0.25, 0.6) * box
                c = rng.uniform(r, [shape[1] - r, shape[0] - r])
                rho2 = (x - c[0]) ** 2 + (y - c[1]) ** 2
                other += contaminant_density * peak * np.sqrt(np.clip(1 - rho2 / r ** 2, 0, None))
                free &= rho2 > (r + box / 2) ** 2
            if given:
                pos = np.asarray(positions[m], dtype=np.int64).reshape(-1, 2)
                ang = np.asarray(eulers[m], dtype=np.float64).reshape(-1, 3)
            else:
                pos = _place(rng, int(n_particles), shape, box / 2 + 1, min_dist_px, free)
                ang = random_rotations(len(pos), rng)
            labels = rng.choice(len(names), size=len(pos), p=None if fractions is None else
                                np.asarray(fractions, float) / np.sum(fractions))
            for k in np.unique(labels):
                sel = np.flatnonzero(labels == k)
                imgs = projectors[k].project(ang[sel])
                for (px_, py_), img in zip(pos[sel], imgs):
                    y0, x0 = py_ - box // 2, px_ - box // 2
                    ys, xs = slice(max(y0, 0), min(y0 + box, shape[0])), slice(max(x0, 0), min(x0 + box, shape[1]))
                    particles[ys, xs] += img[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            for i, (p, a, k) in enumerate(zip(pos, ang, labels)):
                rows.append({"micrograph": m, "x_px": int(p[0]), "y_px": int(p[1]), "class_name": names[k],
                             "rot_deg": a[0], "tilt_deg": a[1], "psi_deg": a[2]})
            ctf2 = micrograph_ctf(ctf, shape, pixel_size_A)
            clean = filter_micrograph(particles, ctf2)
            for p in pos:
                y0, x0 = p[1] - box // 2, p[0] - box // 2
                if y0 >= 0 and x0 >= 0 and y0 + box <= shape[0] and x0 + box <= shape[1]:
                    var_sum += float(np.var(clean[y0:y0 + box, x0:x0 + box][disc]))
                    n_var += 1
            other = filter_micrograph(other, ctf2) if other.any() else other
            clean_layers.append((clean, other))
        else:
            clean_layers.append((None, None))
    scale = np.sqrt(pixel_snr / (var_sum / n_var)) if n_var else 1.0 / max(peak, 1e-12)
    sign = -1.0 if dark else 1.0
    for m, (clean, other) in enumerate(clean_layers):
        rng = np.random.default_rng([int(seed), 9, m])
        img = rng.standard_normal(shape)
        direction = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(direction) * (x - shape[1] / 2) + np.sin(direction) * (y - shape[0] / 2)) / max(shape)
        img += ice_gradient * ramp
        if clean is not None:
            img += sign * scale * (clean + other)
        mics[m] = img
    truth = pd.DataFrame(rows, columns=["micrograph", "x_px", "y_px", "class_name", "rot_deg", "tilt_deg",
                                        "psi_deg"])
    ctf_all = CTFParams(*(np.array([getattr(c, f) for c in ctfs], dtype=np.float64)
                          for f in ("defocus_u_A", "defocus_v_A", "defocus_angle_deg")),
                        voltage_kV=voltage_kV, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast)
    return MicrographSet(micrographs=mics, pixel_size_A=float(pixel_size_A), ctf=ctf_all, truth=truth,
                         names=[f"mic{m + 1:03d}.mrc" for m in range(total)],
                         noise=np.arange(total) >= n_mic, particle_diameter_A=diameter_A,
                         info={"snr": float(snr), "pixel_snr": pixel_snr, "signal_scale": float(scale), "seed": int(seed),
                               "dark": bool(dark), "box": int(box),
                               "size_px": shape[0] if shape[0] == shape[1] else shape})


def simulate_tilt_pair(volume, n_particles: int, pixel_size_A: float, *, tilt_deg: float, axis_deg: float,
                       size_px=1024, seed: int = 0, **kw) -> tuple[MicrographSet, MicrographSet]:
    """The same field imaged untilted and tilted by ``tilt_deg`` about the in-plane axis at ``axis_deg``
    (degrees from the x axis towards +y, through the micrograph's centre ``(W/2, H/2)``): ``(untilted, tilted)``, truth
    rows in the same order (pair ``i`` is row ``i`` of both). A particle at ``p`` moves to ``c + a (a . d)
    + b (b . d) cos(tilt)`` (``d = p - c``, ``a`` the axis, ``b`` perpendicular in the plane; heights in
    the ice neglected); its orientation ``A`` becomes ``R A`` with ``R`` the tilt about the axis
    (:func:`cryolab.validation.tiltpair.expected_rotation`). Each image has its own defocus, uniform over
    the field (no defocus gradient across the tilted one). Further keywords go to :func:`simulate_micrographs`.
    """
    from ..geometry import euler_to_matrix, matrix_to_euler
    from ..validation.tiltpair import expected_rotation
    box = np.asarray(volume).shape[-1]
    untilted = simulate_micrographs(volume, 1, n_particles, pixel_size_A, size_px=size_px, seed=seed, carbon=False,
                                    contaminants=0, **kw)
    pos = untilted.coordinates(0)
    eul = untilted.truth[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    shape = micrograph_shape(size_px)
    c = np.array([shape[1], shape[0]]) / 2
    a = np.array([np.cos(np.radians(axis_deg)), np.sin(np.radians(axis_deg))])
    b = np.array([-a[1], a[0]])
    d = pos - c
    moved = np.rint(c + np.outer(d @ a, a) + np.outer((d @ b) * np.cos(np.radians(tilt_deg)), b)).astype(np.int64)
    rot = expected_rotation(tilt_deg, axis_deg)
    tilted_eul = np.array([matrix_to_euler(rot @ m) for m in euler_to_matrix(*eul.T)])
    if np.any(moved < box // 2) or np.any(moved >= np.array([shape[1], shape[0]]) - box // 2):
        raise _bad("a tilted particle's box leaves the micrograph", "tilt_deg")
    tilted = simulate_micrographs(volume, 1, n_particles, pixel_size_A, size_px=size_px, seed=seed + 1,
                                  positions=[moved], eulers=[tilted_eul], **kw)
    return untilted, tilted


def micrograph_tables(names, pixel_size_A: float, ctf: CTFParams) -> dict:
    """RELION 3.1 micrograph STAR blocks ``{"optics": ..., "micrographs": ...}``: one optics
    group, ``_rlnMicrographName`` as given, the CTF per micrograph (defocus in A, angle in deg)."""
    n = len(names)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographPixelSize": [float(pixel_size_A)],
                           "rlnVoltage": [float(np.ravel(ctf.voltage_kV)[0])],
                           "rlnSphericalAberration": [float(np.ravel(ctf.cs_mm)[0])],
                           "rlnAmplitudeContrast": [float(np.ravel(ctf.amplitude_contrast)[0])]})
    mics = pd.DataFrame({"rlnMicrographName": list(names), "rlnOpticsGroup": np.ones(n, int),
                         "rlnDefocusU": np.broadcast_to(ctf.defocus_u_A, n).astype(float),
                         "rlnDefocusV": np.broadcast_to(ctf.defocus_v_A, n).astype(float),
                         "rlnDefocusAngle": np.broadcast_to(ctf.defocus_angle_deg, n).astype(float),
                         "rlnCtfMaxResolution": np.full(n, 2.0 * pixel_size_A)})
    return {"optics": optics, "micrographs": mics}


def write_micrographs(sim: MicrographSet, out_dir, star_name: str = "micrographs.star",
                      folder: str = "Micrographs") -> Path:
    """Write ``out_dir/folder/micNNN.mrc``, ``out_dir/star_name`` (RELION 3.1 micrographs with CTF,
    names relative to the working folder as RELION reads them) and ``out_dir/truth_coordinates.csv``.
    Every file is written atomically. Returns the STAR path (also set as ``sim.star_path``)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise CryolabInputError("the folder to write into does not exist", path=out_dir)
    (out_dir / folder).mkdir(exist_ok=True)
    names = []
    for name, img in zip(sim.names, sim.micrographs):
        path = write_mrc(out_dir / folder / name, img, sim.pixel_size_A)
        names.append(project_path(path))
    star = write_star(out_dir / star_name, micrograph_tables(names, sim.pixel_size_A, sim.ctf))
    truth = sim.truth.assign(rlnMicrographName=[names[m] for m in sim.truth["micrograph"]])
    with atomic_path(out_dir / "truth_coordinates.csv") as tmp:
        truth.to_csv(tmp, index=False, float_format="%.8g")
        os.chmod(tmp, 0o644)
    sim.star_path = star
    return star
