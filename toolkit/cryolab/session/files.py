"""Session checkpoints in RELION's names: ``run_itNNN_data.star``, ``_model.star``,
``_classes.mrcs`` and ``_optimiser.json`` + ``_state.npz`` (plain files, never pickle).

``Session.resume(dir)`` reads the optimiser/state files of the last (or a given)
iteration and continues exactly where the run stopped: the E-step is deterministic
given the saved state, so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import CryolabInputError
from ..engine.subtracted import SubtractedParticles
from ..io import project_path, write_mrc, write_particles, write_star
from ..io._files import atomic_path

__all__ = ["as_particles", "data_table", "class_names", "model_blocks", "save", "resume", "write_state", "restore", "last_checkpoint"]

_STATE_ARRAYS = ("references", "sigma2", "pdf_class", "offsets_px", "classes", "eulers", "pmax",
                 "n_significant", "loglik", "class_posterior")


def data_table(session) -> pd.DataFrame:
    """The particle table with this iteration's assignments under RELION labels (1-based classes)."""
    df = session.particles.table.copy()
    pix = session.pixel_size_A
    if session.dim == 3:
        df["rlnAngleRot"] = session.eulers[:, 0]
        df["rlnAngleTilt"] = session.eulers[:, 1]
    df["rlnAnglePsi"] = session.psi
    df["rlnOriginXAngst"] = session.offsets_px[:, 0] * pix
    df["rlnOriginYAngst"] = session.offsets_px[:, 1] * pix
    df["rlnClassNumber"] = session.classes + 1
    df["rlnNormCorrection"] = 1.0
    df["rlnLogLikeliContribution"] = session.loglik
    df["rlnMaxValueProbDistribution"] = session.pmax
    df["rlnNrOfSignificantSamples"] = session.n_significant
    return df


def as_particles(source):
    """A :class:`~cryolab.io.ParticleStack` from a STAR path, a stack, a Session (its particles with
    the angles, origins and classes of its last iteration) or an AutoRefine (its refined poses), so
    the analysis tools take the result of a run as it is."""
    from ..io import ParticleStack
    if isinstance(source, ParticleStack):
        return source
    if callable(getattr(source, "data_table", None)) and hasattr(source, "particles"):     # AutoRefine
        return source.particles.with_table(source.data_table())
    if hasattr(source, "particles") and hasattr(source, "history"):                        # Session
        return source.particles.with_table(data_table(source))
    return ParticleStack.from_star(source)


def class_names(session, stem: str) -> list:
    """The ``_rlnReferenceImage`` of each class as :func:`save` writes them: ``000001@<stem>_classes.mrcs``
    (2D) or ``<stem>_class001.mrc`` (3D); ``stem`` as RELION should read it (relative to the project
    folder, :func:`cryolab.io.project_path`) in a model.star, or a bare file name."""
    K = session.settings.K
    if session.dim == 2:
        return [f"{k + 1:06d}@{stem}_classes.mrcs" for k in range(K)]
    return [f"{stem}_class{k + 1:03d}.mrc" for k in range(K)]


def model_blocks(session, references: list) -> dict:
    """``model_general``, ``model_classes``, ``model_class_N``, ``model_optics_group_1`` tables;
    ``references``: each class's ``_rlnReferenceImage`` (see :func:`class_names`)."""
    n, pix = session.n, session.pixel_size_A
    last = session.history[-1] if session.history else None
    K = session.settings.K
    shells = np.arange(n // 2 + 1)
    res = np.where(shells > 0, 1.0 / np.maximum(shells, 1) * n * pix, 999.0)
    general = pd.DataFrame([{
        "rlnReferenceDimensionality": session.dim, "rlnDataDimensionality": 2, "rlnOriginalImageSize": n,
        "rlnCurrentResolution": min(last.resolution_A) if last else 999.0,
        "rlnCurrentImageSize": 2 * session.max_shell, "rlnPixelSize": pix, "rlnNrClasses": K,
        "rlnNrGroups": 1, "rlnTau2FudgeFactor": session.settings.tau2_fudge,
        "rlnLogLikelihood": last.loglik if last else 0.0,
        "rlnSigmaOffsetsAngst": session.sigma_offset_px * pix,
    }])
    classes = pd.DataFrame({
        "rlnReferenceImage": list(references),
        "rlnClassDistribution": session.pdf_class,
        "rlnAccuracyRotations": 999.0, "rlnAccuracyTranslationsAngst": 999.0,
        "rlnEstimatedResolution": list(last.resolution_A) if last else [999.0] * K,
    })
    blocks = {"model_general": general, "model_classes": classes}
    for k in range(K):
        ssnr = np.asarray(last.ssnr[k]) if last else np.zeros(shells.size)
        blocks[f"model_class_{k + 1}"] = pd.DataFrame({
            "rlnSpectralIndex": shells, "rlnResolution": np.where(shells > 0, shells / (n * pix), 0.0),
            "rlnAngstromResolution": res, "rlnSsnrMap": ssnr,
            "rlnReferenceSigma2": session.sigma2, "rlnReferenceTau2": _tau2(session, k)})
    blocks["model_optics_group_1"] = pd.DataFrame({
        "rlnSpectralIndex": shells, "rlnResolution": np.where(shells > 0, shells / (n * pix), 0.0),
        "rlnSigma2Noise": session.sigma2})
    return blocks


def _tau2(session, k):
    from ..fourier import radial_average, rfft2c, rfft3c
    ft = (rfft2c if session.dim == 2 else rfft3c)(session.references[k])
    return session.settings.tau2_fudge * 0.5 * radial_average(abs(ft) ** 2, session.n, ndim=session.dim)


def save(session, directory, prefix: str = "run") -> str:
    """Write ``<prefix>_itNNN_{data.star,model.star,classes.mrcs,optimiser.json,state.npz}``; returns the stem."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{prefix}_it{session.iteration:03d}"
    names = class_names(session, stem)
    if session.dim == 2:
        write_mrc(d / f"{stem}_classes.mrcs", session.references, session.pixel_size_A)
    else:
        for k, name in enumerate(names):
            write_mrc(d / name, session.references[k], session.pixel_size_A)
    table = data_table(session)
    optics = session.particles.optics
    write_particles(d / f"{stem}_data.star", table.assign(rlnImageName=session.particles.image_names_for()),
                    optics)
    write_star(d / f"{stem}_model.star", model_blocks(session, class_names(session, project_path(d / stem))))
    state = write_state(session, d / f"{stem}_state.npz", run_stem=d / prefix)
    state["particles_star"] = (str(Path(session.particles.star_path).resolve())
                               if session.particles.star_path else None)
    write_json(d / f"{stem}_optimiser.json", state)
    return str(d / stem)


def write_state(session, npz_path, run_stem=None) -> dict:
    """Write the session's arrays to ``npz_path``; return its other state (JSON-ready).

    What does not change between iterations goes under ``run_stem`` (one file per run, not per
    iteration; default: the arrays' stem): a reference mask given as an array (``<run_stem>_reference_mask.mrc``) and a
    mask path is stored absolute, so the checkpoint resumes from any folder; particles that are
    subtracted as they are read (:class:`cryolab.engine.subtracted.SubtractedParticles`) record
    their subtraction, so the resumed run subtracts again."""
    arrays = {name: np.asarray(getattr(session, name)) for name in _STATE_ARRAYS}
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    stem = str(npz_path)[: -len(".npz")] if str(npz_path).endswith(".npz") else str(npz_path)
    run_stem = stem if run_stem is None else str(run_stem)
    settings = asdict(session.settings)
    mask = session.settings.reference_mask
    if mask is not None and not isinstance(mask, (str, bytes)) and not hasattr(mask, "__fspath__"):
        path = write_mrc(f"{run_stem}_reference_mask.mrc", np.asarray(mask, np.float32), session.pixel_size_A)
        settings["reference_mask"] = str(Path(path).resolve())
    elif mask is not None:
        settings["reference_mask"] = str(Path(mask).resolve())
    state = {"cryolab_version": __version__, "iteration": session.iteration, "max_shell": session.max_shell,
             "sigma_offset_px": session.sigma_offset_px, "settings": settings,
             "history": [asdict(h) for h in session.history]}
    if isinstance(session.particles, SubtractedParticles):
        state["subtraction"] = session.particles.subtraction_state(run_stem)
    return state


_NON_FINITE = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}


def json_safe(obj):
    """Non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (standard JSON has none)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return "nan" if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _from_json(obj, key=None):
    """Inverse of :func:`json_safe` (settings are left alone: their strings are strings)."""
    if key == "settings":
        return obj
    if isinstance(obj, dict):
        return {k: _from_json(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return _NON_FINITE.get(obj, obj) if isinstance(obj, str) else obj


def write_json(path, state: dict) -> None:
    """Write ``state`` as standard JSON (atomically), non-finite floats as strings."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(json_safe(state), indent=1, allow_nan=False))


def restore(cls, particles, state: dict, npz_path, changes=None):
    """A ``cls`` (Session) over ``particles`` with the state of :func:`write_state` and the
    settings ``changes`` (a dict, e.g. ``backend``) applied."""
    from ..settings import IterationResult, Settings
    if state.get("subtraction"):
        particles = SubtractedParticles.from_state(particles, state["subtraction"])
    settings = Settings(**{**state["settings"], **(changes or {})})
    start = replace(settings, skip_align=False, sigma_ang_deg=None)   # the poses come from the checkpoint
    with np.load(npz_path, allow_pickle=False) as arrays:
        s = cls(particles, start, references=arrays["references"])
        for name in _STATE_ARRAYS:
            setattr(s, name, np.array(arrays[name]))
    s.iteration = state["iteration"]
    s.settings = settings
    s.max_shell = state["max_shell"]
    s.sigma_offset_px = state["sigma_offset_px"]
    s.history = [IterationResult(**{k: tuple(map(_tup, v)) if isinstance(v, list) else v
                                    for k, v in h.items()}) for h in state["history"]]
    return s


def last_checkpoint(directory, prefix: str = "run", iteration=None):
    """``(stem, state)`` of the last (or a given) ``<prefix>_itNNN_optimiser.json`` in ``directory``."""
    d = Path(directory)
    if iteration is None:
        its = sorted(int(m.group(1)) for f in d.glob(f"{prefix}_it*_optimiser.json")
                     if (m := re.search(r"_it(\d+)_optimiser", f.name)))
        if not its:
            raise CryolabInputError("no checkpoint (<prefix>_itNNN_optimiser.json) found", path=d)
        iteration = its[-1]
    stem = d / f"{prefix}_it{iteration:03d}"
    try:
        return stem, _from_json(json.loads(Path(f"{stem}_optimiser.json").read_text()))
    except FileNotFoundError:
        raise CryolabInputError("checkpoint file missing", path=f"{stem}_optimiser.json") from None


def resume(cls, directory, iteration=None, prefix: str = "run", changes=None):
    """Rebuild a Session from its checkpoint files (last iteration unless given), with the
    settings ``changes`` (a dict) applied."""
    from ..io import ParticleStack
    stem, state = last_checkpoint(directory, prefix, iteration)
    if state.get("kind") == "refine":
        raise CryolabInputError("this is an auto-refine checkpoint: resume it with "
                                "cryolab.methods.refine.AutoRefine.resume", path=f"{stem}_optimiser.json")
    return restore(cls, ParticleStack.from_star(state["particles_star"]), state, f"{stem}_state.npz", changes)


def _tup(v):
    return tuple(v) if isinstance(v, list) else v
