"""Simulated particle images with known truth, in RELION's conventions.

* :func:`simulate_particles` - projections of one or more 3D maps in random (or given)
  orientations, shifted, CTF-modulated, with white or coloured noise at a set SNR;
* :func:`simulate_views_2d` - a few fixed views, each rotated in-plane by a random psi and
  shifted (test sets for 2D classification);
* :func:`simulate_hinge` - two bodies, the second rotated per particle about a hinge (continuous
  motion; the ribosome's ratchet with :func:`cryolab.methods.multibody.ratchet_bodies`);
* :func:`write_simulation` - ``particles.mrcs`` + ``particles.star`` (RELION 3.1) + ``truth.csv``;
* :func:`simulate_micrographs` / :func:`write_micrographs` - whole micrographs with particles at known
  positions, carbon, contaminants and pure-noise ones; :func:`simulate_tilt_pair` - one field untilted
  and tilted (:mod:`cryolab.simulate.micrographs`).

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

from .hinge import simulate_hinge
from .micrographs import MicrographSet, simulate_micrographs, simulate_tilt_pair, write_micrographs
from .particles import simulate_particles
from .tables import TRUTH_LABELS, Simulation, write_simulation
from .views import simulate_views_2d

__all__ = ["Simulation", "simulate_particles", "simulate_views_2d", "write_simulation", "simulate_hinge"]
__all__ += ["MicrographSet", "simulate_micrographs", "simulate_tilt_pair", "write_micrographs"]
