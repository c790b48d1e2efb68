"""Settings of a classification run and the record of one iteration (used by :mod:`cryolab.session`)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODES", "Settings", "IterationResult"]

MODES = ("map", "ml", "maxcc")


@dataclass(frozen=True)
class Settings:
    """Parameters of a classification run; names and defaults follow relion_refine.

    ``offset_range_px``/``offset_step_px`` in pixels, ``particle_diameter_A`` and
    ``resolution_limit_A``/``ini_high_A`` in Angstrom, ``psi_step_deg`` in degrees.
    ``mode``: ``map`` (RELION's regularised likelihood), ``ml`` (white-noise maximum
    likelihood, no regularisation) or ``maxcc`` (projection matching).
    ``firstiter_cc``: run the first iteration as projection matching (RELION's
    ``--firstiter_cc``), which puts an external reference on the data's grey scale.
    ``batch_size``: images per E-step batch, lowered when a batch's coarse pass would not fit
    ``memory_limit_GB`` (None: half the free GPU memory, a quarter of the RAM; see
    :mod:`cryolab.engine.memory`). ``scheduler``: where E-steps run: None (this process),
    ``"local:N"`` (N local worker processes) or a dask scheduler address ``"tcp://host:8786"``
    (see :mod:`cryolab.distributed`).
    ``sigma_ang_deg`` (3D, RELION's ``--sigma_ang``): local searches; each particle's orientation
    prior is a Gaussian of this sigma around its current angles (viewing direction and psi) and
    only orientations within 3 sigma are visited. ``skip_align`` (3D, ``--skip_align``): keep each
    particle's angles and offset, classify only. ``reference_mask``: a soft mask (MRC path or
    array ``[N, N, N]``) multiplying the references before projection (focused classification).
    """
    K: int = 4
    n_iter: int = 25
    mode: str = "map"
    tau2_fudge: float = 2.0
    psi_step_deg: float = 10.0
    offset_range_px: float = 5.0
    offset_step_px: float = 1.0
    oversampling: int = 1
    adaptive_fraction: float = 0.999
    particle_diameter_A: float | None = None
    ctf: bool = True
    resolution_limit_A: float | None = None
    ini_high_A: float | None = None
    center_classes: bool = True
    reseed_empty_classes: bool = True
    healpix_order: int = 2
    sym: str = "C1"
    firstiter_cc: bool = False
    seed: int = 0
    backend: str = "numpy"
    batch_size: int = 64
    memory_limit_GB: float | None = None
    scheduler: str | None = None
    sigma_ang_deg: float | None = None
    skip_align: bool = False
    reference_mask: object = None

    def __post_init__(self):
        from .distributed import check_scheduler
        from .errors import CryolabInputError
        try:
            check_scheduler(self.scheduler)
        except ValueError as exc:
            raise CryolabInputError(str(exc), field="scheduler") from None
        if self.mode not in MODES:
            raise CryolabInputError(f"mode must be one of {MODES}, got {self.mode!r}", field="mode")
        if self.K < 1:
            raise CryolabInputError(f"K must be >= 1, got {self.K}", field="K")
        for name in ("tau2_fudge", "psi_step_deg", "offset_step_px", "batch_size", "sigma_ang_deg",
                     "memory_limit_GB"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise CryolabInputError(f"{name} must be > 0, got {getattr(self, name)}", field=name)


@dataclass(frozen=True)
class IterationResult:
    """What one iteration did. ``class_distribution`` sums to 1; resolutions in Angstrom."""
    iteration: int
    loglik: float
    class_distribution: tuple
    mean_pmax: float
    changed_assignments: float
    mean_angle_change_deg: float
    mean_offset_change_px: float
    resolution_A: tuple
    ssnr: tuple            # per class, spectral SNR per shell (``data_vs_prior``)
    sigma2: tuple          # noise power per shell
    max_shell: int
    sigma_offset_px: float
    time_s: float
