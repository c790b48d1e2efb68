"""Files of an initial model: the Session's (maps, data.star, model.star, its state) plus the
running sums and the schedule, so that a run continues where it stopped (plain files only)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from ...errors import CryolabInputError
from ...io._files import atomic_path
from .schedule import InitialModelIteration, SGDSchedule
from .starts import StartScore

__all__ = ["save_initial_model", "resume_initial_model"]


def _write_sums(sums, path) -> None:
    from ...backend import to_numpy
    arrays = {"w_shell": to_numpy(sums.w_shell), "class_weight": to_numpy(sums.class_weight),
              "n": np.asarray(float(sums.n)), "residual": to_numpy(sums.residual),
              "offset_moment": np.asarray(float(sums.offset_moment))}
    for k, bp in enumerate(sums.bps):
        arrays[f"data{k}"], arrays[f"weight{k}"] = to_numpy(bp.data), to_numpy(bp.weight)
        arrays[f"r_max{k}"] = np.asarray(bp.r_max)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _read_sums(path, n: int, K: int):
    from ...engine.driver import EStepSums
    from ...reconstruction import BackProjector
    with np.load(path, allow_pickle=False) as a:
        bps = []
        for k in range(K):
            bp = BackProjector(n, dtype=a[f"weight{k}"].dtype)
            if bp.data.shape != a[f"data{k}"].shape:
                raise CryolabInputError("running sums do not match the particles' box", path=path)
            bp.data[...], bp.weight[...] = a[f"data{k}"], a[f"weight{k}"]
            bp.r_max = int(a[f"r_max{k}"])
            bps.append(bp)
        return EStepSums(bps, np.array(a["w_shell"]), np.array(a["residual"]), float(a["offset_moment"]),
                         np.array(a["class_weight"]), float(a["n"]))


def save_initial_model(im, directory, prefix: str = "run") -> str:
    """``<prefix>_itNNN_class00k.mrc`` (the maps as refined: the poses in ``_data.star`` refer to
    them), ``_data.star``, ``_model.star``, ``_optimiser.json`` and ``_state.npz`` (the Session's),
    ``_initial_model.json`` (schedule, history) and ``_sums.npz`` (the running sums); returns the stem."""
    from ...session.files import save, write_json
    d = Path(directory)
    stem = save(im.session, d, prefix)
    if im.running is not None:
        _write_sums(im.running, f"{stem}_sums.npz")
    for i, other in enumerate(im._others, start=1):     # starts still in their first phase
        save_initial_model(other, d, f"{prefix}_start{i}")
    write_json(f"{stem}_initial_model.json", im.state())
    return stem


def resume_initial_model(cls, directory, iteration=None, prefix: str = "run"):
    """An :class:`~.stochastic.InitialModel` continued from the files of :func:`save_initial_model`."""
    from ...session import Session
    from ...session.files import last_checkpoint
    stem, _ = last_checkpoint(directory, prefix, iteration)
    path = Path(f"{stem}_initial_model.json")
    if not path.exists():
        raise CryolabInputError("not an initial-model checkpoint (no _initial_model.json beside it)", path=path)
    state = json.loads(path.read_text())
    session = Session.resume(directory, iteration, prefix)
    im = cls.__new__(cls)
    im._lock = threading.RLock()
    im.session, im.particles, im.seed = session, session.particles, int(state["seed"])
    im.sym, im._symmetry = str(state.get("sym", session.settings.sym)), None
    # checkpoints written before these constraints existed ran without them
    im.flatten_solvent = bool(state.get("flatten_solvent", False))
    im.nonnegative = bool(state.get("nonnegative", False))
    # checkpoints written before per-class mini-batches existed ran with the whole mini-batch
    im.schedule = SGDSchedule(**{"subset_per_class": False, **state["schedule"]})
    im.iteration = int(state["iteration"])
    im.history = [InitialModelIteration(**{k: tuple(v) if isinstance(v, list) else v for k, v in h.items()})
                  for h in state["history"]]
    sums = Path(f"{stem}_sums.npz")
    if im.iteration > 0 and not sums.exists():
        raise CryolabInputError("the running sums of this checkpoint are missing", path=sums)
    im.running = _read_sums(sums, session.n, session.settings.K) if sums.exists() else None
    im.n_starts = int(state.get("n_starts", 1))
    im.start_scores = [StartScore(**sc) for sc in state.get("start_scores", [])]
    im._others = [resume_initial_model(cls, directory, im.iteration, f"{prefix}_start{i}")
                  for i in range(1, int(state.get("starts_running", 0)) + 1)]
    return im
