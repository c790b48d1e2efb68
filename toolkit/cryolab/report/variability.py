"""Report section of a variability analysis (``cryolab variability``'s folder).

From ``variability.json``/``.npz``, the eigenvolumes, ``free_energy.star`` and ``leaks.star``:
central sections of the first eigenvolumes, the variances, each coordinate's free-energy profile
with its bootstrap band, and the leak detector's table (every coordinate against pose, origin,
defocus and image norm, ``|r|`` above the threshold shown in red and listed).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .figures import figure, png

__all__ = ["variability_sections"]


def _leak_figure(table, threshold: float):
    names = list(table["coordinate"])
    cols = [c for c in table.columns if c != "coordinate"]
    values = table[cols].to_numpy(float)
    fig = figure(0.45 * len(cols) + 1.2, 0.35 * len(names) + 1.3)
    ax = fig.subplots()
    ax.imshow(values, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    for i in range(len(names)):
        for j in range(len(cols)):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="red" if values[i, j] > threshold else ("white" if values[i, j] > 0.6 else "black"))
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_title(f"|r| of each coordinate with the imaging (red: above {threshold:g})", fontsize=8)
    return png(fig)


def variability_sections(folder):
    """``(title, [png base64, ...], {label: value})`` for a variability result in ``folder``."""
    from ..io import read_mrc, read_star
    folder = Path(folder)
    meta_path = folder / "variability.json"
    if not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text())
    arrays = np.load(folder / "variability.npz", allow_pickle=False)
    variance = arrays["variance"]
    k = int(meta["n_components"])
    eig = [read_mrc(folder / f"variability_component{j + 1:03d}.mrc")[0] for j in range(min(k, 3))]
    fig = figure(2.0 * len(eig), 2.2)
    for ax, j, v in zip(fig.subplots(1, len(eig), squeeze=False)[0], range(len(eig)), eig):
        c = v.shape[0] // 2
        lim = float(np.abs(v).max()) or 1.0
        ax.imshow(v[c], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
        ax.set_title(f"eigenvolume {j + 1}, z = {c}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    figs = [png(fig)]
    stats = {"components": k, "variances": ", ".join(f"{x:.3g}" for x in variance),
             "filter": f"{float(meta['filter_A']):.1f} A", "EM iterations": len(meta.get("history", []))}
    if (folder / "free_energy.star").is_file():
        blocks = read_star(folder / "free_energy.star")
        fig = figure(3.0 * len(blocks), 2.2)
        for ax, (name, t) in zip(fig.subplots(1, len(blocks), squeeze=False)[0], blocks.items()):
            s, g = t["rlnVariabilityCoordinate"].to_numpy(float), t["rlnFreeEnergyKT"].to_numpy(float)
            err = t["rlnFreeEnergyErrorKT"].to_numpy(float)
            ax.fill_between(s, g - err, g + err, alpha=0.3, linewidth=0)
            ax.plot(s, g)
            ax.set_xlabel(name.replace("component", "z"), fontsize=8)
            ax.set_ylabel("free energy (kT)", fontsize=8)
        figs.append(png(fig))
    if (folder / "leaks.star").is_file():
        blocks = read_star(folder / "leaks.star")
        table = blocks["leaks"]
        general = blocks.get("general")
        threshold = 0.2
        if general is not None and "cryolabLeakThreshold" in general:
            threshold = float(general["cryolabLeakThreshold"].iloc[0])
        figs.append(_leak_figure(table, threshold))
        cols = [c for c in table.columns if c != "coordinate"]
        flagged = [f"{table['coordinate'].iloc[i]} ~ {c} ({float(table[c].iloc[i]):.2f})"
                   for i in range(len(table)) for c in cols if float(table[c].iloc[i]) > threshold]
        stats["leaks (|r| > %g)" % threshold] = ", ".join(flagged) if flagged else "none"
    yield "Continuous heterogeneity (variability)", figs, stats
