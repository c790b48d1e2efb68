"""Figures of the reports: matplotlib figures (pyplot-free) rendered to base64 PNG."""
from __future__ import annotations

import base64
import io

import numpy as np

__all__ = ["fig_class_averages", "fig_central_slices", "fig_history", "fig_histogram", "fig_rot_tilt",
           "fig_fsc", "png", "figure", "gallery"]


def png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")   # sharp on a slide and a high-density screen
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure(w, h):
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h))


def gallery(images, labels, ncols=8, size=1.4, rows_of=None):
    k = len(images)
    ncols = min(ncols, k) if rows_of is None else rows_of
    nrows = -(-k // ncols)
    fig = figure(size * ncols, size * nrows + 0.3)
    for i, (img, lab) in enumerate(zip(images, labels)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(img, cmap="gray", origin="lower")
        ax.set_title(lab, fontsize=8)
        ax.axis("off")
    return png(fig)


def fig_class_averages(images, distribution=None) -> str:
    labels = [f"{k + 1}" + (f": {100 * distribution[k]:.1f}%" if distribution is not None else "")
              for k in range(len(images))]
    return gallery(images, labels)


def fig_central_slices(maps: dict) -> str:
    images, labels = [], []
    for name, vol in maps.items():
        c = vol.shape[0] // 2
        for plane, img in (("xy", vol[c]), ("xz", vol[:, c]), ("yz", vol[:, :, c])):
            images.append(img)
            labels.append(f"{name} {plane}")
    return gallery(images, labels, size=1.8, rows_of=3)


def fig_history(history) -> str:
    its = [h["iteration"] for h in history]
    dist = np.array([h["class_distribution"] for h in history])
    times = [h.get("time_s") for h in history]
    has_time = all(t is not None for t in times)
    fig = figure(4.2 * (3 if has_time else 2), 3.2)
    ax = fig.add_subplot(1, 3 if has_time else 2, 1)
    for k in range(dist.shape[1]):
        ax.plot(its, dist[:, k], marker=".", label=str(k + 1))
    ax.set(xlabel="iteration", ylabel="class distribution", title="class sizes")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if dist.shape[1] <= 12:
        ax.legend(fontsize=6, ncol=2, title="class", title_fontsize=6)
    ax = fig.add_subplot(1, 3 if has_time else 2, 2)
    ax.plot(its, [h["loglik"] for h in history], marker="o")
    ax.set(xlabel="iteration", ylabel="log-likelihood", title="log-likelihood")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if has_time:
        ax = fig.add_subplot(1, 3, 3)
        ax.bar(its, times)
        ax.set(xlabel="iteration", ylabel="seconds", title="time per iteration")
    fig.tight_layout()
    return png(fig)


def fig_histogram(values, xlabel, title, bins=36, range_=None) -> str:
    fig = figure(4.2, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(values[np.isfinite(values)], bins=bins, range=range_, color="tab:blue")
    ax.set(xlabel=xlabel, ylabel="particles", title=title)
    return png(fig)


def fig_rot_tilt(rot, tilt) -> str:
    fig = figure(5.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(rot, tilt, s=2, alpha=0.4)
    ax.set(xlabel="rot (°)", ylabel="tilt (°)", title="viewing directions",
           xlim=(-180, 180), ylim=(0, 180))
    return png(fig)


def fig_fsc(curves) -> str:
    fig = figure(5.6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for c in curves:
        res = c.get("resolution_A", float("nan"))
        label = f"{c['name']}: {c['resolution_text']}" if "resolution_text" in c else (
            f"{c['name']}: {res:.1f} Å" if np.isfinite(res) else c["name"])
        ax.plot(c["freq_per_A"], c["fsc"], label=label)
    ax.axhline(0.143, color="gray", ls="--", lw=1)
    ax.text(1.01, 0.143, "0.143", color="gray", fontsize=7, va="center", transform=ax.get_yaxis_transform())
    ax.axhline(0.0, color="black", lw=0.5)
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{1 / x:.3g}" if x > 0 else ""))
    ax.set(xlabel="resolution (Å), linear in spatial frequency", ylabel="FSC",
           title="Fourier shell correlation", ylim=(-0.1, 1.05))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.1, 1.0), frameon=False)
    return png(fig)
