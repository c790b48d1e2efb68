"""Settings of a classification run and the record of one iteration (used by :mod:`cryolab.session`)."""
from __future__ import annotations

from dataclasses import dataclass

from .backend import BACKEND_VARIABLE
from .errors import CryolabInputError

__all__ = ["MODES", "Settings", "IterationResult", "check_scheduler", "METHOD_DEFAULTS", "method_settings",
           "DEFAULT_DIAMETER_FRACTION", "BACKEND_VARIABLE", "REFINE_OPTIONS", "COMMAND_FLAGS", "flags_of",
           "command_line"]

MODES = ("map", "ml", "maxcc")

#: the mask diameter, when ``particle_diameter_A`` is not given, as a fraction of the box
DEFAULT_DIAMETER_FRACTION = 0.9



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
    ``backend``: ``"numpy"``, ``"cupy"`` or None (the ``CRYOLAB_BACKEND`` environment variable,
    else numpy; see :func:`cryolab.backend.resolve_backend`).
    ``sigma_ang_deg`` (3D, RELION's ``--sigma_ang``): local searches; each particle's orientation
    prior is a Gaussian of this sigma around its current angles (viewing direction and psi) and
    only orientations within 3 sigma are visited. ``skip_align`` (3D, ``--skip_align``): keep each
    particle's angles and offset, classify only. ``reference_mask``: a soft mask (MRC path or
    array ``[N, N, N]``) multiplying the references before projection (focused classification).
    ``pose_estimate`` (local searches): each particle's new pose is the ``"best"`` sample (highest
    posterior, as RELION) or the posterior ``"mean"`` over its best class's samples (rotation: the
    weighted chordal mean; offset: the weighted mean), which is not tied to the sampling grid
    (C1 only; global searches always take the best sample).
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
    backend: str | None = None
    batch_size: int = 64
    memory_limit_GB: float | None = None
    scheduler: str | None = None
    sigma_ang_deg: float | None = None
    skip_align: bool = False
    reference_mask: object = None
    pose_estimate: str = "best"

    def __post_init__(self):
        try:
            check_scheduler(self.scheduler)
        except ValueError as exc:
            raise CryolabInputError(str(exc), field="scheduler") from None
        if self.mode not in MODES:
            raise CryolabInputError(f"mode must be one of {MODES}, got {self.mode!r}", field="mode")
        if self.pose_estimate not in ("best", "mean"):
            raise CryolabInputError(f"pose_estimate must be 'best' or 'mean', got {self.pose_estimate!r}",
                                    field="pose_estimate")
        if self.pose_estimate == "mean" and not (self.sym is None or str(self.sym).upper() == "C1"):   # no symmetry
            raise CryolabInputError(f"pose_estimate='mean' needs sym C1, got {self.sym!r}", field="pose_estimate")
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


def check_scheduler(scheduler) -> None:
    """Raise ValueError unless ``scheduler`` is None, ``"local:N"`` (N >= 1) or an address ``proto://...``."""
    if scheduler is None:
        return
    text = str(scheduler)
    if text.startswith("local:"):
        n = text[len("local:"):]
        if n.isdigit() and int(n) >= 1:
            return
    elif "://" in text:
        return
    raise ValueError(f"scheduler must be 'local:N' (N workers) or a scheduler address such as "
                     f"'tcp://host:8786', got {scheduler!r}")


#: where a method's defaults differ from :class:`Settings` (relion_refine's own defaults are
#: Settings'); the methods and the command line both read this table
METHOD_DEFAULTS = {
    "class2d": {"K": 10, "tau2_fudge": 2.0},
    "class3d": {"K": 2, "tau2_fudge": 4.0, "ini_high_A": 60.0, "firstiter_cc": True},
    "refine": {"K": 1, "tau2_fudge": 1.0, "ini_high_A": 60.0, "firstiter_cc": True,
               "reseed_empty_classes": False},
    # fixed poses on subtracted particles: more weight on the data (T = 4 drifted from 0.972 to
    # 0.960 over 10 iterations on the focused benchmark; T = 8 stayed at 0.970)
    "focused": {"K": 2, "tau2_fudge": 8.0, "ini_high_A": 60.0, "firstiter_cc": True, "skip_align": True},
}


def method_settings(method: str, **changes) -> Settings:
    """The :class:`Settings` of ``method`` (``class2d``, ``class3d``, ``refine``, ``focused``):
    Settings' defaults, then :data:`METHOD_DEFAULTS`, then ``changes``.

    >>> method_settings("class3d").tau2_fudge, method_settings("class3d", K=3).K
    (4.0, 3)
    """
    return Settings(**{**METHOD_DEFAULTS[method], **changes})


#: auto-refine's own options (not Settings fields): local searches from this HEALPix order on,
#: the largest order, the resolution below which the half-sets are joined (A), iterations at most
REFINE_OPTIONS = {"local_healpix_order": 4, "max_healpix_order": 8, "join_halves_A": 40.0, "max_iter": 25}

#: relion_refine's command-line names of the settings: ``(flag, field, value kind, commands, help)``;
#: ``commands`` lists the commands that have the flag, defaults come from :func:`method_settings`
#: (and :data:`REFINE_OPTIONS`). Value kinds: ``positive_int``, ``nonneg_int``, ``positive_float``,
#: ``nonneg_float``, ``int``, ``str``, ``flag`` (on when given).
_ALL = ("class2d", "class3d", "refine")
COMMAND_FLAGS = [
    ("--K", "K", "positive_int", ("class2d", "class3d"), "number of classes"),
    ("--iter", "n_iter", "nonneg_int", ("class2d", "class3d"), "number of iterations (total, also with --continue)"),
    ("--tau2_fudge", "tau2_fudge", "positive_float", ("class2d", "class3d"),
     "regularisation parameter T (> 1 puts more weight on the data)"),
    ("--particle_diameter", "particle_diameter_A", "positive_float", _ALL,
     "diameter of the circular mask, in Angstrom (default: 90%% of the box)"),
    ("--psi_step", "psi_step_deg", "positive_float", ("class2d",), "in-plane angular step, in degrees"),
    ("--healpix_order", "healpix_order", "nonneg_int", ("class3d", "refine"),
     "angular sampling: HEALPix order N, a step of 60/2^N degrees (2: 15 degrees)"),
    ("--sym", "sym", "str", ("class3d", "refine"), "point-group symmetry of the maps (Cn, Dn, T, O, I)"),
    ("--offset_range", "offset_range_px", "nonneg_float", _ALL, "offset search range, in pixels"),
    ("--offset_step", "offset_step_px", "positive_float", _ALL, "offset search step, in pixels"),
    ("--oversampling", "oversampling", "nonneg_int", _ALL, "adaptive oversampling order (0: off)"),
    ("--ini_high", "ini_high_A", "positive_float", _ALL,
     "low-pass the initial references to this resolution, in Angstrom"),
    ("--strict_highres_exp", "resolution_limit_A", "positive_float", _ALL,
     "never use data beyond this resolution, in Angstrom"),
    ("--auto_local_healpix_order", "local_healpix_order", "nonneg_int", ("refine",),
     "search locally (Gaussian prior around each particle's angles) from this HEALPix order on"),
    ("--max_iter", "max_iter", "positive_int", ("refine",), "stop after this many iterations if not converged"),
    ("--skip_align", "skip_align", "flag", ("class3d",),
     "keep each particle's angles and offset, classify only (focused classification)"),
    ("--sigma_ang", "sigma_ang_deg", "positive_float", ("class3d",),
     "local angular searches: Gaussian prior of this sigma around each particle's angles, in degrees"),
    ("--solvent_mask", "reference_mask", "str", ("class3d", "refine"),
     "soft mask (MRC) multiplying the references before projection: classify or refine inside it"),
    ("--seed", "seed", "int", _ALL, "random seed (same seed, same result; also the random halves)"),
    ("--batch_size", "batch_size", "positive_int", _ALL, "particles per E-step batch, at most (memory)"),
    ("--memory_limit", "memory_limit_GB", "positive_float", _ALL,
     "memory for one E-step batch, in GB; batches shrink to fit (default: half the free GPU "
     "memory or a quarter of the RAM)"),
    ("--scheduler", "scheduler", "str", _ALL, "run E-steps on a dask cluster: local:N (N local workers) "
     "or a scheduler address tcp://host:port"),
]


def flags_of(command: str) -> list:
    """``[(flag, field, value kind, default, help), ...]`` of ``command`` (``class2d``, ``class3d``,
    ``refine``), defaults from :func:`method_settings` and :data:`REFINE_OPTIONS`."""
    settings = method_settings(command)
    return [(flag, name, kind, REFINE_OPTIONS[name] if name in REFINE_OPTIONS else getattr(settings, name), text)
            for flag, name, kind, commands, text in COMMAND_FLAGS if command in commands]


def command_line(command: str, settings: Settings, star, out: str, ref=None) -> str:
    """The ``cryolab class2d|class3d`` command line that runs ``settings`` on ``star`` (``ref``: the
    reference map of ``class3d``); flags at their default are left out.

    >>> command_line("class2d", method_settings("class2d", K=5), "p.star", "Class2D/run")
    'cryolab class2d --i p.star --o Class2D/run --K 5 --ctf'
    """
    import shlex
    from dataclasses import asdict
    s = asdict(settings)
    parts = ["cryolab", command, "--i", str(star)]
    if command == "class3d":
        parts += ["--ref", str(ref or "reference.mrc")]
    parts += ["--o", out]
    for flag, name, kind, default, _ in flags_of(command):
        if not isinstance(s.get(name), (str, int, float, bool, type(None))):
            continue                             # e.g. a mask given as an array: no command-line form
        if s.get(name) is not None and s[name] != default:
            parts += [flag] if kind == "flag" else [flag, str(s[name])]
    if s.get("mode", "map") != "map":
        parts += ["--mode", s["mode"]]
    if s.get("ctf"):
        parts.append("--ctf")
    if s.get("backend") == "cupy":
        parts.append("--gpu")
    return shlex.join(parts)
