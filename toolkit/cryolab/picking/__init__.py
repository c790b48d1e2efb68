"""Particle picking on micrographs: templates or Laplacian-of-Gaussian blobs, as ``relion_autopick``.

* :func:`make_templates` - 2D references rotated in-plane, or projections of a 3D map;
* :class:`Picker` with :class:`PickSettings` - the figure-of-merit map of each micrograph
  (normalised cross-correlation with low-pass filtered, CTF-multiplied templates, independent of the
  templates' grey scale; or LoG by diameter range), a threshold from an expected false-alarm rate,
  the minimum distance between picks;
* :func:`match_picks` - precision and recall against known centres.

>>> import numpy as np
>>> from cryolab.picking import PickSettings
>>> PickSettings(particle_diameter_A=200.0).false_alarm_rate
0.1
"""
from __future__ import annotations

from .peaks import enforce_min_distance, expected_false_peaks, false_alarm_threshold, local_maxima, match_picks
from .picker import Picker, Picks, PickSettings
from .templates import Templates, make_templates, resample_images

__all__ = ["Picker", "Picks", "PickSettings", "Templates", "make_templates", "resample_images", "local_maxima",
           "enforce_min_distance", "false_alarm_threshold", "expected_false_peaks", "match_picks"]
