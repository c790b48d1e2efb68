"""Particle images projected from one or more 3D maps in random (or given) orientations.

Projections are made with :class:`cryolab.projection.FourierProjector`; each particle's class
is drawn from ``fractions``; angles in degrees (RELION's ZYZ), origins in Angstrom.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..backend import get_xp, to_device, to_numpy
from ..geometry import random_rotations
from ..projection import FourierProjector
from .pipeline import _bad, _class_volumes, _draw_ctf, _draw_labels, _draw_origins_A, _finish
from .tables import Simulation, _ctf_truth

__all__ = ["simulate_particles"]


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
