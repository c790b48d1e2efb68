"""What a report says about the data and each step: optics, settings with units and RELION names,
resolutions against Nyquist, and the explanations printed beside the figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["optics_summary", "setting_label", "settings_rows", "readable", "resolution_text", "read_step_settings",
           "CONVERGENCE_TEXT", "REFINE_TEXT"]

_UNITS = (("_A2", "Å²"), ("_A", "Å"), ("_deg", "°"), ("_px", "px"), ("_GB", "GB"), ("_s", "s"))

CONVERGENCE_TEXT = (
    "Log-likelihood: RELION's <code>_rlnLogLikelihood</code>, the sum over particles of log p(image | model) "
    "with the Gaussian noise model's normalisation (the sum of log 2πσ² over the Fourier pixels used). It "
    "is a sum over those pixels, so it rises between iterations at the same resolution and steps when the "
    "E-step takes in more (or fewer) Fourier shells. Class sizes: the fraction of the particles' posterior "
    "probability in each class; a run has settled when they and the log-likelihood stop changing.")

REFINE_TEXT = (
    "Auto-refine stops as RELION's does: when an iteration brings neither a better resolution nor large "
    "angular changes, the angular sampling is made finer; once it is fine enough for the resolution "
    "reached, one final iteration joins the half sets (<i>converged</i>). <i>converged False</i> means it "
    "stopped at the largest number of iterations allowed before that, and its last iteration was the "
    "final one. The mean angular error is measured against the simulated angles over all particles of "
    "the refined class, including those of other states in it and views whose angles the data hardly "
    "determine, so it can exceed the finest angular step.")


def setting_label(name: str, flag: bool = True) -> str:
    """A setting's name for people: words, its unit from the name's suffix and its RELION flag,
    e.g. ``particle_diameter_A`` -> ``particle diameter (Å) [--particle_diameter]``."""
    from ..settings import COMMAND_FLAGS
    flags = {field: flag for flag, field, *_ in COMMAND_FLAGS}
    base, unit = name, ""
    for suffix, u in _UNITS:
        if name.endswith(suffix):
            base, unit = name[: -len(suffix)], u
            break
    label = base.replace("_", " ") + (f" ({unit})" if unit else "")
    return label + (f" [{flags[name]}]" if flag and name in flags else "")


def readable(value):
    """``value`` with every dict key (also in lists of dicts) as :func:`setting_label` writes it, without flags."""
    if isinstance(value, dict):
        return {setting_label(str(k), flag=False): readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [readable(v) for v in value]
    return value


def settings_rows(params: dict) -> list:
    """``(label, value)`` rows of a settings dict (nested dicts keep their own rows)."""
    return [(setting_label(k), dict(settings_rows(v)) if isinstance(v, dict) else v) for k, v in params.items()]


def resolution_text(resolution_A: float, nyquist_A: float | None) -> str:
    """``"25.00 Å"``, or ``"≥ Nyquist (24.0 Å)"`` when the resolution is the Nyquist limit (the curve never crossed)."""
    if not np.isfinite(resolution_A):
        return "–"
    if nyquist_A and resolution_A <= nyquist_A * 1.001:
        return f"≥ Nyquist ({nyquist_A:.1f} Å)"
    return f"{resolution_A:.2f} Å"


def optics_summary(star_path) -> dict:
    """Particles, box, pixel size, Nyquist and CTF parameters of a particle STAR file, with units."""
    from ..io import read_particles
    table, _ = read_particles(star_path)
    px = float(table["rlnImagePixelSize"].iloc[0]) if "rlnImagePixelSize" in table else float("nan")
    box = int(table["rlnImageSize"].iloc[0]) if "rlnImageSize" in table else None
    out = {"particles": len(table), "pixel size (Å)": px}
    if box:
        out.update({"box (px)": box, "box (Å)": round(box * px, 1)})
    out["Nyquist resolution (Å)"] = round(2 * px, 2)
    for col, label, scale in (("rlnVoltage", "voltage (kV)", 1.0), ("rlnSphericalAberration", "spherical aberration Cs (mm)", 1.0),
                              ("rlnAmplitudeContrast", "amplitude contrast", 1.0)):
        if col in table:
            vals = np.unique(table[col].to_numpy(float))
            out[label] = ", ".join(f"{v * scale:g}" for v in vals)
    if "rlnDefocusU" in table:
        d = table["rlnDefocusU"].to_numpy(float) / 1e4
        out["defocus U (µm)"] = f"{d.min():.2f} – {d.max():.2f} (median {np.median(d):.2f})"
    if "rlnOpticsGroup" in table:
        out["optics groups"] = int(table["rlnOpticsGroup"].nunique())
    return out


def read_step_settings(folder: Path, prefix: str, it: int) -> dict:
    """The settings of a run from its ``<prefix>_itNNN_optimiser.json`` ({} when there is none)."""
    path = folder / f"{prefix}_it{it:03d}_optimiser.json"
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    settings = dict(state.get("settings") or (state.get("halves") or [{}])[0].get("settings", {}))
    if state.get("kind") == "refine":           # auto-refine's own options and where it stopped
        settings.update({k: state[k] for k in ("local_healpix_order", "max_healpix_order", "join_halves_A",
                                                "converged") if k in state})
    return {k: v for k, v in settings.items() if v is not None}
