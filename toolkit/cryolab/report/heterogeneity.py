"""Report sections of the heterogeneity tools, built from their files in a run folder.

* bootstrapped variance (``mean.mrc``, ``variance.mrc``, ``significance.mrc``, written by
  ``cryolab variance``): central sections through the most significant voxel, and the peak over
  the median inside the particle;
* MSA (``<prefix>_eigenimages.mrcs`` and ``<prefix>_eigenvalues.star``, written by ``cryolab msa``):
  the eigenvalues against the Marchenko-Pastur noise edge and the first eigenimages.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import figure, gallery, png

__all__ = ["heterogeneity_sections"]


def _variance_section(folder: Path):
    from ..io import read_mrc
    if not (folder / "variance.mrc").is_file():
        return None
    maps = {name: read_mrc(folder / f"{name}.mrc")[0] for name in ("mean", "variance", "significance")
            if (folder / f"{name}.mrc").is_file()}
    score = maps.get("significance", maps["variance"])
    z, y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    fig = figure(2.0 * len(maps), 2.2)
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for ax, (name, m) in zip(axes, maps.items()):
        ax.imshow(m[z], cmap="gray" if name == "mean" else "magma", origin="lower")
        ax.set_title(f"{name}, z = {z}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    inside = maps["mean"] > 0.05 * maps["mean"].max() if "mean" in maps else np.ones(score.shape, bool)
    stats = {"most significant voxel (x, y, z)": f"({x}, {y}, {z})",
             "peak / median inside the particle": f"{score[inside].max() / np.median(score[inside]):.2f}"}
    if (folder / "lowpass.star").is_file():
        from ..io import read_star
        general = read_star(folder / "lowpass.star")["general"].iloc[0]
        value = general.get("cryolabVarianceLowpass")
        stats["low-pass"] = ("none" if value is None or str(value) == "None" else f"{float(value):.1f} A") + (
            " (2/3 of the half-set FSC 0.5 shell)" if int(general.get("cryolabVarianceLowpassFromFsc", 0)) else "")
    return png(fig), stats


def _msa_sections(folder: Path):
    from ..io import read_mrc, read_star
    for star in sorted(folder.glob("*_eigenvalues.star")):
        prefix = star.name[: -len("_eigenvalues.star")]
        blocks = read_star(star)
        table, general = blocks["eigenvalues"], blocks["general"].iloc[0]
        values = table["cryolabMsaEigenvalue"].to_numpy(float)
        edge = general.get("cryolabMsaNoiseEdge")
        fig = figure(3.2, 2.2)
        ax = fig.subplots()
        ax.semilogy(np.arange(1, values.size + 1), values, "o-", label="eigenvalues")
        if edge is not None and np.isfinite(float(edge)):
            ax.axhline(float(edge), color="red", ls="--", label="noise edge (Marchenko-Pastur)")
        ax.set_xlabel("component")
        ax.legend(fontsize=7)
        images = folder / f"{prefix}_eigenimages.mrcs"
        eig = read_mrc(images)[0][:8] if images.is_file() else None
        figs = [png(fig)] + ([gallery(list(eig), [f"eigenimage {i + 1}" for i in range(len(eig))])]
                             if eig is not None else [])
        stats = {"images": int(general.get("cryolabMsaImages", 0)),
                 "eigenvalues above the noise edge": int(general.get("cryolabMsaSignificant", 0))}
        if general.get("cryolabMsaCentre") is not None:
            stats["images centred on"] = {"ctf": "their own view of the CTF-corrected mean",
                                          "plain": "the plain mean"}.get(str(general["cryolabMsaCentre"]), "?")
        yield f"MSA ({prefix})", figs, stats


def heterogeneity_sections(folder):
    """``(title, [png base64, ...], {label: value})`` per heterogeneity result in ``folder``."""
    folder = Path(folder)
    variance = _variance_section(folder)
    if variance is not None:
        yield "Bootstrapped variance", [variance[0]], variance[1]
    yield from _msa_sections(folder)
