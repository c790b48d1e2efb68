"""The :class:`PosteriorExplorer` widget and the posterior summaries it draws.

Reads ``Session.posterior(i)``: class probabilities, the most probable (class, angles)
samples summed over offsets (:func:`top_orientations`) and, in 3D, the posterior over
viewing directions (:func:`viewing_directions`). Angles in degrees, classes 1-based.
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np

from ..projection import FourierProjector, FourierRotator2D
from ._display import ImagePanel, image_axes, new_figure
from ._session_common import MODE_NAMES, _class_colours, _guarded, _n_classes

__all__ = ["PosteriorExplorer", "top_orientations", "viewing_directions"]


EXPLANATION = (
    "<b>Reading the posterior.</b> Maximum likelihood (and MAP) gives every class and in-plane "
    "angle a probability and updates each reference with the particle weighted by it. When the "
    "noise makes several orientations look alike, the probability is spread: Pmax is well below 1 "
    "and many samples are significant. Projection matching (maxCC) takes a hard decision: the "
    "single best-correlating orientation gets everything (Pmax = 1, one significant sample), even "
    "when the runner-up was almost as good.")


def top_orientations(post: dict, n_top: int = 3):
    """The ``n_top`` most probable (class, psi) pairs of ``Session.posterior(i)``, summed over
    offsets: list of ``(class 1-based, psi_deg, probability)``; for a 3D posterior (samples
    with ``rot_deg``/``tilt_deg``) ``(class, (rot, tilt, psi) degrees, probability)``."""
    samples = post.get("samples")
    if samples is None:
        return []
    if "rot_deg" in samples:
        angles = [(float(r), float(t), float(p))
                  for r, t, p in zip(samples["rot_deg"], samples["tilt_deg"], samples["psi_deg"])]
    else:
        angles = [float(psi) for psi in samples["psi_deg"]]
    totals: dict = {}
    for k, ang, p in zip(samples["class"], angles, samples["probability"]):
        if p > 0:
            key = (int(k), ang)
            totals[key] = totals.get(key, 0.0) + float(p)
    best = sorted(totals.items(), key=lambda kv: -kv[1])[:n_top]
    return [(k, psi, p) for (k, psi), p in best]


def viewing_directions(post: dict) -> np.ndarray:
    """Posterior over viewing directions of a 3D ``Session.posterior(i)``: ``[m, 3]`` rows
    ``(rot_deg, tilt_deg, probability)``, summed over class, psi and offset (most probable first)."""
    samples = post.get("samples")
    if samples is None or "rot_deg" not in samples:
        return np.zeros((0, 3))
    totals: dict = {}
    for r, t, p in zip(samples["rot_deg"], samples["tilt_deg"], samples["probability"]):
        if p > 0:
            key = (float(r), float(t))
            totals[key] = totals.get(key, 0.0) + float(p)
    rows = [(r, t, p) for (r, t), p in sorted(totals.items(), key=lambda kv: -kv[1])]
    return np.asarray(rows, dtype=float).reshape(-1, 3)


class PosteriorExplorer(W.VBox):
    """One particle's posterior: image, references at its most probable angles, P(class), P(psi).

    ``compare``: a second Session on the same particles (e.g. ``mode="maxcc"``) shown in a
    second row. After each change ``posteriors`` holds ``Session.posterior(i)`` per session,
    ``class_probabilities`` the bar-chart data of the first session and ``top`` the
    ``(class, psi_deg, probability)`` of the references drawn. For 3D sessions the references
    are projected at the top ``(rot, tilt, psi)`` (``top`` holds ``(class, (rot, tilt, psi),
    probability)``) and P(psi) is replaced by the posterior over viewing directions on a
    Mollweide map; ``directions`` holds its ``[m, 3]`` (rot, tilt, probability) per session.
    """

    def __init__(self, session, compare=None, index: int = 0, n_top: int = 3, dpi: int = 72):
        self.sessions = [session] + ([compare] if compare is not None else [])
        dims = {np.asarray(s.references).ndim - 1 for s in self.sessions}
        if len(dims) != 1 or not dims <= {2, 3}:
            raise ValueError("PosteriorExplorer needs sessions of one dimension: 2D (references "
                             "[K, N, N]) or 3D ([K, N, N, N])")
        self.dim = dims.pop()
        if compare is not None and len(compare.particles) != len(session.particles):
            raise ValueError(f"compare has {len(compare.particles)} particles, session has "
                             f"{len(session.particles)}: they must classify the same particles")
        self.n_top = int(n_top)
        self.errors: list[str] = []
        self.index = W.IntSlider(value=index, min=0, max=len(session.particles) - 1, description="particle",
                                 continuous_update=False, layout=W.Layout(width="420px"))
        self.caption = W.HTML()
        self.panel = ImagePanel(dpi=dpi)
        super().__init__([self.index, self.caption, self.panel, W.HTML(EXPLANATION)])
        self.index.observe(lambda _c: self.update(), names="value")
        for s in self.sessions:
            s.on_iteration(_guarded(self, lambda *_: self.update()))
        self.update()

    def update(self) -> None:
        """Read the posteriors of the slider's particle and redraw."""
        i = int(self.index.value)
        self.posteriors = [s.posterior(i) for s in self.sessions]
        self.class_probabilities = np.asarray(self.posteriors[0]["classes"])
        self.top = [top_orientations(p, self.n_top) for p in self.posteriors]
        self.directions = [viewing_directions(p) for p in self.posteriors]
        self.image = np.asarray(self.sessions[0].particles.read([i])[0])
        rows = []
        for s, post in zip(self.sessions, self.posteriors):
            best = int(np.argmax(post["classes"])) + 1
            rows.append(f"<b>{MODE_NAMES[s.settings.mode]}</b> (iteration {s.iteration}): "
                        f"most probable class {best}, Pmax = {post['pmax']:.3f}, "
                        f"{post['n_significant']} significant samples")
        self.caption.value = f"particle {i}<br>" + "<br>".join(rows)
        self.panel.show(self._draw(i))

    def _draw(self, i: int):
        n_rows, cols = len(self.sessions), 3 + self.n_top
        fig = new_figure(2.0 * cols, 2.3 * n_rows)
        grid = fig.add_gridspec(n_rows, cols)
        for r, (s, post, top) in enumerate(zip(self.sessions, self.posteriors, self.top)):
            mode = s.settings.mode
            image_axes(fig.add_subplot(grid[r, 0]), self.image, f"{mode}: particle {i}", pixel_size_A=float(s.pixel_size_A))
            for j in range(self.n_top):
                ax = fig.add_subplot(grid[r, 1 + j])
                if j < len(top):
                    k, ang, p = top[j]
                    image_axes(ax, self._reference_view(s, k, ang), f"{self._angle_text(ang)}\nclass {k}, P = {p:.2f}")
                else:
                    ax.set_axis_off()
                    ax.text(0.5, 0.5, "run an iteration" if not top else "", ha="center", fontsize=8)
            self._draw_class_bars(fig.add_subplot(grid[r, 1 + self.n_top]), post["classes"])
            if self.dim == 3:
                self._draw_directions(fig.add_subplot(grid[r, 2 + self.n_top], projection="mollweide"),
                                      self.directions[r])
            else:
                self._draw_psi(fig.add_subplot(grid[r, 2 + self.n_top], projection="polar"), post, s)
        return fig

    def _reference_view(self, session, k: int, angles) -> np.ndarray:
        """Reference ``k`` (1-based) rotated by psi (2D) or projected at (rot, tilt, psi) (3D)."""
        ref = np.asarray(session.references[k - 1])
        if self.dim == 2:
            return FourierRotator2D(ref).rotate([angles])[0, 0]
        return np.asarray(FourierProjector(ref).project(np.asarray([angles], dtype=float))[0])

    @staticmethod
    def _angle_text(angles) -> str:
        if np.ndim(angles) == 0:
            return f"ψ {angles:.0f}°"
        return "rot {:.0f}° tilt {:.0f}° ψ {:.0f}°".format(*angles)

    @staticmethod
    def _draw_class_bars(ax, probs):
        probs = np.asarray(probs)
        ax.bar(np.arange(1, probs.size + 1), probs, color=_class_colours(probs.size))
        ax.set(ylim=(0, 1), xlabel="class", ylabel="probability", xticks=np.arange(1, probs.size + 1))
        ax.set_title("P(class)", fontsize=9)
        ax.tick_params(labelsize=7)

    @staticmethod
    def _draw_psi(ax, post, session):
        samples = post.get("samples")
        ax.set_title("P(ψ), top samples", fontsize=9)
        ax.set_yticklabels([])
        ax.tick_params(labelsize=6)
        if samples is None:
            return
        colours = _class_colours(_n_classes(session))
        width = np.deg2rad(session.settings.psi_step_deg)
        for k, psi, p in top_orientations(post, n_top=len(samples["probability"])):
            ax.bar(np.deg2rad(psi), p, width=width, color=colours[k - 1], alpha=0.8)

    @staticmethod
    def _draw_directions(ax, directions):
        """Viewing directions on a Mollweide map: longitude rot, latitude 90° - tilt;
        marker area and colour by probability."""
        ax.set_title("P(direction), top samples", fontsize=9)
        ax.grid(True, alpha=0.4)
        ax.set_xticks(np.deg2rad([-120, 0, 120]), ["−120°", "0°", "120°"], fontsize=6)
        ax.set_yticks(np.deg2rad([-60, 0, 60]), ["150°", "90°", "30°"], fontsize=6)   # tilt = 90° - latitude
        ax.set_xlabel("rot", fontsize=7)
        ax.set_ylabel("tilt", fontsize=7)
        if len(directions) == 0:
            return
        rot, tilt, p = directions.T
        lon = np.deg2rad((rot + 180.0) % 360.0 - 180.0)
        lat = np.deg2rad(90.0 - tilt)
        points = ax.scatter(lon, lat, s=10 + 150 * p / p.max(), c=p, cmap="viridis", vmin=0, alpha=0.85)
        bar = ax.figure.colorbar(points, ax=ax, shrink=0.6, pad=0.02)
        bar.set_label("probability", fontsize=7)
        bar.ax.tick_params(labelsize=6)
