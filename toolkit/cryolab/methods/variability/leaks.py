"""The leak detector: does a latent coordinate follow the imaging instead of the structure?

A coordinate meant to describe conformation can instead track a particle's pose, origin,
defocus or grey scale (a consensus pose error, a CTF error, a normalisation error seen as
"variability"). For each coordinate and each nuisance variable this computes Pearson's ``|r|``
over the particles and flags it when it exceeds ``threshold`` (0.2 by default).

Nuisance variables (from the particles' table, and the images for the norm):

* pose: the viewing direction's unit vector ``(x, y, z)`` (third row of the Euler matrix,
  continuous where the angles wrap) and the in-plane angle as ``cos psi`` and ``sin psi``;
  ``rot``, ``tilt`` and ``psi`` themselves are reported as the larger ``|r|`` of their cosine and
  sine (angles are circular);
* ``origin_x_A``, ``origin_y_A`` (``_rlnOriginX/YAngst``);
* ``defocus_A`` (mean of ``_rlnDefocusU/V``) and ``astigmatism_A`` (``|U - V|``);
* ``image_norm`` (the standard deviation of each image, or ``_rlnNormCorrection`` when present
  and no stack is given).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...errors import CryolabInputError
from ...geometry import euler_to_matrix

__all__ = ["nuisance_table", "latent_leaks", "LEAK_THRESHOLD"]

#: ``|r|`` above which a coordinate is flagged as leaking
LEAK_THRESHOLD = 0.2


def _col(table, name):
    name = name if name in table.columns else "_" + name
    return table[name].to_numpy(float) if name in table.columns else None


def image_norms(stack, batch_size: int = 512) -> np.ndarray:
    """The standard deviation of each image ``[N]`` (one pass over the stack)."""
    out = np.empty(len(stack))
    for rows, images in stack.iter_batches(batch_size):
        out[rows] = images.reshape(len(rows), -1).std(axis=1)
    return out


def nuisance_table(stack=None, *, table: pd.DataFrame | None = None, norms=None) -> pd.DataFrame:
    """The nuisance variables (see the module text) of each particle ``[N, variables]``: from
    ``stack`` (table and image norms) or from a RELION particle ``table`` alone."""
    if stack is not None:
        table = stack.table
        if norms is None:
            norms = image_norms(stack)
    if table is None:
        raise CryolabInputError("a particle stack or table is needed", field="particles")
    cols = {}
    rot, tilt, psi = (_col(table, f"rlnAngle{a}") for a in ("Rot", "Tilt", "Psi"))
    if rot is not None and tilt is not None and psi is not None:
        A = euler_to_matrix(rot, tilt, psi)
        for j, axis in enumerate("xyz"):
            cols[f"direction_{axis}"] = A[:, 2, j]
        for name, a in (("rot", rot), ("tilt", tilt), ("psi", psi)):
            cols[f"cos_{name}"] = np.cos(np.radians(a))
            cols[f"sin_{name}"] = np.sin(np.radians(a))
    for name, label in (("origin_x_A", "rlnOriginXAngst"), ("origin_y_A", "rlnOriginYAngst")):
        v = _col(table, label)
        if v is not None:
            cols[name] = v
    du, dv = _col(table, "rlnDefocusU"), _col(table, "rlnDefocusV")
    if du is not None:
        dv = du if dv is None else dv
        cols["defocus_A"] = 0.5 * (du + dv)
        cols["astigmatism_A"] = np.abs(du - dv)
    if norms is None:
        norms = _col(table, "rlnNormCorrection")
    if norms is not None:
        cols["image_norm"] = np.asarray(norms, float)
    return pd.DataFrame(cols)


def _abs_r(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return 0.0
    return float(abs(np.corrcoef(a[ok], b[ok])[0, 1]))


def latent_leaks(z, nuisance: pd.DataFrame, *, threshold: float = LEAK_THRESHOLD, names=None) -> pd.DataFrame:
    """``|r|`` of every coordinate (rows; ``z [N, K]``) with every nuisance variable (columns; a
    :func:`nuisance_table`), the angles folded to ``rot``, ``tilt``, ``psi`` (the larger of cosine
    and sine). ``result.attrs["flagged"]``: the ``(coordinate, variable, |r|)`` above ``threshold``.

    >>> rng = np.random.default_rng(0)
    >>> nuis = pd.DataFrame({"defocus_A": rng.uniform(1e4, 3e4, 500), "origin_x_A": rng.normal(0, 5, 500)})
    >>> z = np.stack([nuis["defocus_A"] / 1e4 + rng.normal(0, 0.5, 500), rng.normal(size=500)], axis=1)
    >>> latent_leaks(z, nuis).attrs["flagged"]
    [('z1', 'defocus_A', 0.76)]
    """
    z = np.asarray(z, float)
    z = z[:, None] if z.ndim == 1 else z
    if len(nuisance) != len(z):
        raise CryolabInputError(f"{len(z)} coordinates but {len(nuisance)} particles in the nuisance table",
                                field="z")
    names = list(names) if names is not None else [f"z{k + 1}" for k in range(z.shape[1])]
    rows = {}
    for k, name in enumerate(names):
        r = {}
        for c in nuisance.columns:
            if c.startswith("sin_"):
                continue
            if c.startswith("cos_"):
                angle = c[4:]
                r[angle] = max(_abs_r(z[:, k], nuisance[c]), _abs_r(z[:, k], nuisance[f"sin_{angle}"]))
            else:
                r[c] = _abs_r(z[:, k], nuisance[c])
        rows[name] = r
    out = pd.DataFrame(rows).T
    out.attrs["threshold"] = float(threshold)
    out.attrs["flagged"] = [(name, c, round(float(out.loc[name, c]), 2)) for name in out.index
                            for c in out.columns if out.loc[name, c] > threshold]
    return out
