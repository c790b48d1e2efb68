"""Resolution and validation: FSC, masks, phase randomisation, B-factors, post-processing.

Definitions follow ``relion_postprocess`` (RELION 3.1) so that numbers agree:

* **FSC** per shell ``s = round(|k|)``, ``s = 0 .. N//2``, summed over the half
  transform ``Re(F1 F2*) / sqrt(|F1|^2 |F2|^2)``; shell 0 is the correlation of
  the two means (+1 or -1; 1 when both are zero);
* **resolution** where the FSC first drops below a threshold (0.143), here with
  linear interpolation between shells (RELION reports the last shell above it);
* **masked FSC** corrected by phase randomisation (Chen et al. 2013):
  ``FSC_true = (FSC_t - FSC_n) / (1 - FSC_n)`` from 2 shells beyond the shell
  where the unmasked FSC first drops below 0.8;
* **B-factors** in A^2 with RELION's sign: amplitudes are multiplied by
  ``exp(-B s^2 / 4)`` (``s`` in 1/A), so a negative B sharpens; a Guinier fit
  of ``ln|F|`` against ``s^2`` gives ``B = 4 * slope``.

All map functions take NumPy or CuPy arrays; volumes are ``[..., z, y, x]``,
images ``[..., y, x]`` (``ndim`` says which), centre pixel ``N // 2``.

>>> import numpy as np
>>> v = np.random.default_rng(0).normal(size=(16, 16, 16))
>>> bool(np.allclose(fsc(v, v), 1))
True
"""
from __future__ import annotations

from .fsc import class_accuracy, fsc, match_classes, random_halves, resolution_at, resolution_shell_at
from .masks import auto_mask, soft_circle_mask, soft_sphere_mask
from .postprocess import (PostprocessResult, corrected_fsc, fit_bfactor, fsc_weight, guinier, masked_fsc,
                          noise_substitution_test, phase_randomize, postprocess, sharpen, write_postprocess)

__all__ = [
    "fsc", "resolution_shell_at", "resolution_at", "random_halves",
    "soft_sphere_mask", "soft_circle_mask", "auto_mask",
    "phase_randomize", "corrected_fsc", "masked_fsc", "noise_substitution_test",
    "guinier", "fit_bfactor", "sharpen", "fsc_weight", "postprocess", "PostprocessResult",
    "match_classes", "class_accuracy", "write_postprocess",
]
