"""Working memory of the E-step and the batch size that fits it.

The coarse pass holds, per image, a few arrays over every coarse sample (class x orientation
x translation): the scores (float32), the weights (float32), a sorted copy of them (float32),
the running sums of the candidates (float64, at most all samples) and a mask (bool): at most
about 24 bytes per sample, plus the shifted images ``[T, 2m]`` (float32). At
HEALPix order 2 (4,608 orientations) with two classes and 29 translations that is ~6.5 MB per
image, 0.4 GB for a batch of 64; at order 3 eight times more. The batch size is chosen so that one batch stays inside a memory budget:
half of the free GPU memory (CuPy), or a quarter of the machine's RAM (NumPy), or the
``memory_limit_GB`` a user sets.

The budget is shared: the coarse pass of one batch takes at most 3/8 of it
(:data:`BATCH_SHARE`), the M-step buffer of per-orientation sums a quarter (``driver``), the
cache of fine-pass projections an eighth (:data:`CACHE_SHARE`, at most 1 GB) and the class maps a
quarter (:data:`MAPS_SHARE`): the K back-projector accumulators over the padded half
grid (complex data and real weight, ``3 M^2 (M/2+1)`` reals for a 3D class with ``M = pad N``) and
the K padded projectors (complex64). The accumulators are double precision, as RELION's, when they
fit their share, else single precision (:func:`accumulator_dtype`: the maps they give agree to
float32 rounding, checked in ``tests/test_memory.py``). At 192 px, padding 2, K = 4 that is 2.5 GiB
(double) or 1.3 GiB (single) of accumulators and 0.9 GiB of projectors (256 px: 6.0, 3.0 and 2.0 GiB).
Per-class streaming of maps that do not fit even in single precision is not done: they then take
more than their share.

E-steps side by side (worker processes, :func:`cryolab.engine.threads.side_by_side`) each take an
equal part of the budget less :data:`WORKER_BYTES` each: what a worker process holds of its own
beyond its shares (the interpreter's pages it writes to, copied on write after the fork: ~40 MB
each measured in a 2D iteration).
"""
from __future__ import annotations

import os

import numpy as np

from .threads import side_by_side

__all__ = ["BYTES_PER_SAMPLE", "WORKER_BYTES", "BATCH_SHARE", "CACHE_SHARE", "MAPS_SHARE", "estep_bytes_per_image", "available_bytes",
           "batch_size_for", "estep_batch_size", "accumulator_bytes", "projector_bytes", "accumulator_dtype"]

BYTES_PER_SAMPLE = 24

#: the shares of the memory budget: one batch's coarse pass, the projection cache, and the class maps
#: (accumulators and projectors); the M-step buffer of the driver takes the last quarter
BATCH_SHARE = 0.375
CACHE_SHARE = 0.125
MAPS_SHARE = 0.25

#: a worker process's own memory beyond its shares of the budget (see the module text)
WORKER_BYTES = 64 << 20


def estep_bytes_per_image(n_samples: int, translations: int, pixels: int) -> int:
    """Bytes the coarse pass needs per image: ``n_samples`` = classes x orientations x
    translations, ``pixels`` Fourier pixels of the coarse pass (``m``)."""
    return int(BYTES_PER_SAMPLE * n_samples + 8 * translations * pixels)


def available_bytes(xp=np, memory_limit_GB: float | None = None) -> int:
    """The E-step's memory budget in bytes (see the module text); in one of several worker processes
    side by side (:func:`cryolab.engine.threads.side_by_side`) its share: an equal part of the budget
    less :data:`WORKER_BYTES` each (at least an equal part of a quarter of it)."""
    workers = side_by_side()
    budget = _budget(xp, memory_limit_GB)
    if workers == 1:
        return int(budget)
    return int(max(budget - workers * WORKER_BYTES, budget // 4) // workers)


def _budget(xp, memory_limit_GB):
    if memory_limit_GB:
        return int(memory_limit_GB * 2 ** 30)
    if xp.__name__.startswith("cupy"):  # pragma: no cover - GPU only
        free, _ = xp.cuda.Device().mem_info
        return int(0.5 * (free + xp.get_default_memory_pool().free_bytes()))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2 ** 30
    return int(total // 4)


def batch_size_for(bytes_per_image: int, budget_bytes: int, upper: int) -> int:
    """The largest batch (at most ``upper``, at least 1) whose coarse pass fits the budget."""
    return int(max(1, min(int(upper), budget_bytes // max(int(bytes_per_image), 1))))


def estep_batch_size(settings, n_classes: int, dim: int, coarse_pixels: int, xp=np) -> int:
    """Batch size for an E-step with these ``settings`` (a :class:`cryolab.settings.Settings`):
    ``settings.batch_size`` or fewer, so that the coarse pass of a full (global) search fits
    :data:`BATCH_SHARE` of :func:`available_bytes`. ``coarse_pixels``: Fourier pixels of the coarse pass. With
    ``skip_align`` each image has one sample per class; local searches are budgeted as global."""
    from ..geometry import healpix_step_deg, psi_angles
    from .sampling import translation_grid
    budget = int(BATCH_SHARE * available_bytes(xp, settings.memory_limit_GB))
    if dim == 3 and settings.skip_align:
        return batch_size_for(estep_bytes_per_image(n_classes, 1, coarse_pixels), budget, settings.batch_size)
    if dim == 2:
        n_orient = len(psi_angles(settings.psi_step_deg))
    else:
        order = settings.healpix_order
        n_orient = 12 * 4 ** order * len(psi_angles(healpix_step_deg(order)))
    n_trans = len(translation_grid(settings.offset_range_px, settings.offset_step_px))
    per_image = estep_bytes_per_image(n_classes * n_orient * n_trans, n_trans, coarse_pixels)
    return batch_size_for(per_image, budget, settings.batch_size)


def accumulator_bytes(n: int, n_classes: int, dim: int, pad: float = 2, dtype=np.float64) -> int:
    """Bytes of ``n_classes`` back-projector accumulators of box ``n`` (``dim`` 2 or 3): complex
    data and real weight over the padded half grid ``M^(dim-1) x (M/2+1)``, reals of ``dtype``."""
    from ..projection import padded_size
    m = padded_size(int(n), pad)
    return int(n_classes) * m ** (dim - 1) * (m // 2 + 1) * 3 * np.dtype(dtype).itemsize


def projector_bytes(n: int, n_classes: int, dim: int, pad: float = 2) -> int:
    """Bytes of ``n_classes`` padded projectors at full resolution (complex64 half transforms cropped
    to the sphere's cube, :class:`cryolab.projection.FourierProjector`); an upper bound."""
    from ..projection import padded_size
    m = padded_size(int(n), pad)
    h = int(np.ceil(m / 2)) + 1
    return int(n_classes) * (2 * h + 1) ** (dim - 1) * (h + 1) * 8


def accumulator_dtype(n: int, n_classes: int, dim: int, budget_bytes: int, pad: float = 2):
    """``np.float64`` when the accumulators and projectors of ``n_classes`` classes fit
    :data:`MAPS_SHARE` of ``budget_bytes`` with double-precision accumulators (in a worker process
    side by side, two copies of them: its own and its result on the way back), else ``np.float32``
    (which halves the accumulators; above that the maps take more than their share)."""
    share = MAPS_SHARE * budget_bytes
    fixed = projector_bytes(n, n_classes, dim, pad) if dim == 3 else 0
    copies = 1 if side_by_side() == 1 else 2       # a worker's sums also travel back to be added
    return np.float64 if fixed + copies * accumulator_bytes(n, n_classes, dim, pad) <= share else np.float32
