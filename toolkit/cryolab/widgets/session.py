"""Widgets on a live :class:`cryolab.session.Session`: steer a run, look at posteriors, pick classes.

* :class:`SessionDashboard` - Step / Run / Pause / Stop, the tau2 fudge, resolution limit and psi
  step, and panels redrawn after every iteration (curves, class averages, resolution and SSNR);
* :class:`PosteriorExplorer` - one particle's posterior over classes and in-plane angles (3D:
  viewing directions), and the references at its most probable angles (optionally next to a
  second, e.g. maxCC, session);
* :class:`ClassGallery` - class averages with keep/discard toggles; Apply gives ``selected``.

The widgets only read the Session's public attributes and call its public methods. Runs go
through ``Session.run_async`` and the panels are redrawn from ``Session.on_iteration``, so the
kernel stays free while the engine works in a background thread.
"""
from __future__ import annotations

import threading

import ipywidgets as W
import numpy as np

from ..projection import FourierProjector, FourierRotator2D
from ._display import ImagePanel, image_axes, new_figure, resolution_axis, slider

__all__ = ["SessionDashboard", "PosteriorExplorer", "ClassGallery"]

MODE_NAMES = {"map": "MAP (regularised likelihood)", "ml": "maximum likelihood",
              "maxcc": "projection matching (maxCC)"}
_PSI_STEPS_DEG = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)


# ----------------------------------------------------------------------------- shared helpers

def _n_classes(session) -> int:
    return int(np.asarray(session.references).shape[0])


def class_counts(session) -> np.ndarray:
    """Number of particles whose best class is k (``[K]``; zeros before the first iteration)."""
    c = np.asarray(session.classes)
    return np.bincount(c[c >= 0], minlength=_n_classes(session))


def class_resolutions_A(session) -> np.ndarray:
    """Resolution per class (Å) of the last iteration; ``inf`` when unknown (no SSNR, or not run)."""
    if not session.history:
        return np.full(_n_classes(session), np.inf)
    return np.asarray(session.history[-1].resolution_A, dtype=float)


def _resolution_text(res_A: float) -> str:
    return f"{res_A:.0f} Å" if np.isfinite(res_A) else "– Å"


def class_image(reference) -> np.ndarray:
    """A class average as an image (a 3D class is shown as its projection along z)."""
    reference = np.asarray(reference)
    return reference if reference.ndim == 2 else reference.sum(axis=0)


def _guarded(widget, fn):
    """``fn`` as a Session observer: an error while drawing is recorded, it never stops the run."""
    def call(*args):
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the refinement goes on
            widget.errors.append(f"{type(exc).__name__}: {exc}")
    return call


def _class_colours(K: int):
    from matplotlib import colormaps
    cmap = colormaps["tab10" if K <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(K)]


def _iteration_axes(history, *axes) -> None:
    """Integer iteration ticks from 1 to the last iteration."""
    from matplotlib.ticker import MaxNLocator
    last = history[-1].iteration if history else 1
    for ax in axes:
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def draw_class_grid(session, columns: int = 5, size_in: float = 1.6):
    """A figure with the class averages titled by class number, particle count and resolution."""
    refs = np.asarray(session.references)
    K = refs.shape[0]
    cols = min(K, columns)
    rows = int(np.ceil(K / cols))
    fig = new_figure(size_in * cols, (size_in + 0.35) * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    counts, res = class_counts(session), class_resolutions_A(session)
    for k, ax in enumerate(axes):
        if k < K:
            image_axes(ax, class_image(refs[k]), f"{k + 1}: {counts[k]} ptcls\n{_resolution_text(res[k])}")
        else:
            ax.set_axis_off()
    return fig


# ----------------------------------------------------------------------------- dashboard

class SessionDashboard(W.VBox):
    """Control a Session running in the background and watch it converge.

    Buttons: **Step** (one iteration), **Run** (``iterations`` more), **Pause**/**Resume** (after
    the current iteration), **Stop** (abandons the current E-step). Controls call
    ``Session.set`` between iterations: ``tau2_fudge`` (MAP only), ``resolution_limit_A``
    (0 = none) and ``psi_step_deg``. Panels (``panels``: ``curves``, ``classes``, ``spectra``)
    are redrawn after every iteration; ``status`` shows iteration, time and convergence.
    Use :meth:`wait` in scripts to block until a run has finished.
    """

    def __init__(self, session, iterations: int = 5, dpi: int = 72):
        self.session = session
        self.errors: list[str] = []
        self.thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._paused = False
        self._pending: dict = {}
        self._pending_lock = threading.Lock()
        button = dict(layout=W.Layout(width="100px"))
        self.step_button = W.Button(description="Step", icon="step-forward", **button)
        self.run_button = W.Button(description="Run", icon="play", button_style="success", **button)
        self.pause_button = W.Button(description="Pause", icon="pause", **button)
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger", **button)
        self.iterations = W.BoundedIntText(value=iterations, min=1, max=10_000, description="iterations",
                                           layout=W.Layout(width="170px"))
        s = session.settings
        self.tau2_fudge = slider("tau2 fudge T", s.tau2_fudge, 0.5, 10.0, 0.5, fmt=".1f")
        self.tau2_fudge.disabled = s.mode != "map"
        self.resolution_limit_A = W.BoundedFloatText(
            value=s.resolution_limit_A or 0.0, min=0.0, max=1000.0, step=1.0,
            description="resolution limit (Å, 0 = none)", style={"description_width": "initial"},
            layout=W.Layout(width="260px"))
        self.psi_step_deg = W.Dropdown(options=sorted({*_PSI_STEPS_DEG, float(s.psi_step_deg)}),
                                       value=float(s.psi_step_deg), description="psi step (°)",
                                       layout=W.Layout(width="180px"))
        self.status = W.HTML()
        self.panels = {name: ImagePanel(dpi=dpi) for name in ("curves", "classes", "spectra")}
        super().__init__([
            W.HBox([self.step_button, self.run_button, self.iterations, self.pause_button, self.stop_button]),
            W.HBox([self.tau2_fudge, self.resolution_limit_A, self.psi_step_deg]),
            self.status, self.panels["curves"],
            W.HBox([self.panels["classes"], self.panels["spectra"]], layout=W.Layout(align_items="flex-start"))])
        self.step_button.on_click(self.step)
        self.run_button.on_click(self.run)
        self.pause_button.on_click(self.toggle_pause)
        self.stop_button.on_click(self.stop)
        self.tau2_fudge.observe(lambda c: self._request(tau2_fudge=float(c["new"])), names="value")
        self.resolution_limit_A.observe(
            lambda c: self._request(resolution_limit_A=float(c["new"]) or None), names="value")
        self.psi_step_deg.observe(lambda c: self._request(psi_step_deg=float(c["new"])), names="value")
        session.on_iteration(_guarded(self, lambda *_: self.refresh()))
        self.refresh()

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """True while a Step or Run is in progress (also when paused)."""
        return self.thread is not None and self.thread.is_alive()

    def step(self, _button=None) -> None:
        """One iteration in the background."""
        self._start(1)

    def run(self, _button=None) -> None:
        """``iterations.value`` iterations in the background."""
        self._start(int(self.iterations.value))

    def _start(self, n_iter: int) -> None:
        if self.running:
            return
        self._paused = False
        self.session.resume_running()       # a pause left over from an earlier run
        self.thread = self.session.run_async(n_iter, callback=lambda *_: self._flush())
        self._watcher = threading.Thread(target=self._finished, args=(self.thread,), daemon=True)
        self._watcher.start()
        self._show_state()

    def _finished(self, thread) -> None:
        thread.join()
        self._flush()
        self._paused = False
        self._show_state()

    def toggle_pause(self, _button=None) -> None:
        """Pause after the current iteration, or resume."""
        if not self.running:
            return
        if self._paused:
            self.session.resume_running()
        else:
            self.session.pause()
        self._paused = not self._paused
        self._show_state()

    def stop(self, _button=None) -> None:
        """Stop the run; an unfinished iteration is abandoned."""
        self.session.stop()
        self._paused = False
        self._show_state()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the current run has finished and the panels show it; True if it has."""
        for th in (self.thread, self._watcher, self._flusher):
            if th is not None:
                th.join(timeout_s)
        return not self.running and not (self._watcher is not None and self._watcher.is_alive())

    # ------------------------------------------------------------------ settings
    def _request(self, **changes) -> None:
        """Apply setting changes now when idle, else between iterations."""
        with self._pending_lock:
            self._pending.update(changes)
        if not self.running:
            self._flush()
        elif self._paused:      # the run loop is waiting: apply as soon as the iteration is done
            self._flusher = threading.Thread(target=self._flush, daemon=True)
            self._flusher.start()
        self._show_state()

    def _flush(self) -> None:
        with self._pending_lock:
            changes, self._pending = self._pending, {}
        if changes:
            self.session.set(**changes)

    # ------------------------------------------------------------------ drawing
    def _show_state(self) -> None:
        s = self.session
        state = ("paused" if self._paused else "running") if self.running else "idle"
        for b in (self.step_button, self.run_button, self.iterations):
            b.disabled = self.running
        self.pause_button.disabled = self.stop_button.disabled = not self.running
        self.pause_button.description = "Resume" if self._paused else "Pause"
        self.pause_button.icon = "play" if self._paused else "pause"
        text = f"<b>iteration {s.iteration}</b> · {state} · {MODE_NAMES[s.settings.mode]}, K = {_n_classes(s)}"
        if s.history:
            h = s.history[-1]
            text += (f" · last iteration {h.time_s:.1f} s · log L {h.loglik:.5g} · mean Pmax {h.mean_pmax:.2f}"
                     f" · changed classes {h.changed_assignments:.0%}")
        pending = dict(self._pending)
        if pending:
            text += f" · next iteration: {', '.join(f'{k} = {v}' for k, v in pending.items())}"
        if self.errors:
            text += f"<br><span style='color:#b00'>drawing error: {self.errors[-1]}</span>"
        self.status.value = text

    def refresh(self) -> None:
        """Redraw all panels and the status line from the Session (called after each iteration)."""
        self.panels["curves"].show(self._draw_curves())
        self.panels["classes"].show(draw_class_grid(self.session))
        self.panels["spectra"].show(self._draw_spectra())
        self._show_state()

    def _draw_curves(self):
        s, hist = self.session, self.session.history
        K = _n_classes(s)
        colours = _class_colours(K)
        fig = new_figure(11, 2.6)
        ax_ll, ax_cd, ax_pm = fig.subplots(1, 3)
        its = [h.iteration for h in hist]
        ax_ll.plot(its, [h.loglik for h in hist], "o-", color="k")
        ax_ll.set(xlabel="iteration", title="log-likelihood")
        dist = np.array([h.class_distribution for h in hist]).reshape(len(hist), K)
        for k in range(K):
            ax_cd.plot(its, dist[:, k], "o-", color=colours[k], label=f"{k + 1}")
        ax_cd.set(xlabel="iteration", ylim=(0, 1), title="class distribution")
        if K <= 10:
            ax_cd.legend(fontsize=7, ncol=2, title="class", title_fontsize=7)
        if hist:
            ax_pm.hist(np.asarray(s.pmax), bins=np.linspace(0, 1, 21), color="tab:blue")
        ax_pm.set(xlabel="Pmax", ylabel="particles", xlim=(0, 1), title="Pmax (last iteration)")
        for ax in (ax_ll, ax_cd, ax_pm):
            ax.title.set_fontsize(9)
        _iteration_axes(hist, ax_ll, ax_cd)
        return fig

    def _draw_spectra(self):
        s, hist = self.session, self.session.history
        K = _n_classes(s)
        colours = _class_colours(K)
        fig = new_figure(6.4, 2.8)
        ax_res, ax_ssnr = fig.subplots(1, 2)
        its = [h.iteration for h in hist]
        res = np.array([h.resolution_A for h in hist], dtype=float).reshape(len(hist), K)
        for k in range(K):
            ax_res.plot(its, np.where(np.isfinite(res[:, k]), res[:, k], np.nan), "o-", color=colours[k])
        ax_res.set(xlabel="iteration", ylabel="Å", title="resolution per class")
        if hist and np.any(np.asarray(hist[-1].ssnr)):
            ssnr = np.asarray(hist[-1].ssnr)
            freq = np.arange(ssnr.shape[1]) / (s.n * s.pixel_size_A)
            for k in range(K):
                ax_ssnr.semilogy(freq[1:], np.where(ssnr[k, 1:] > 0, ssnr[k, 1:], np.nan), color=colours[k])
            ax_ssnr.axhline(1.0, color="0.5", ls=":")
            ax_ssnr.set_xlim(0, freq[-1])
            resolution_axis(ax_ssnr, freq[-1], max_ticks=5)
        else:
            ax_ssnr.text(0.5, 0.5, "SSNR comes from the MAP prior\n(mode='map')", ha="center",
                         va="center", transform=ax_ssnr.transAxes, fontsize=8)
        ax_ssnr.set(xlabel="spatial frequency (1/Å)", title="spectral SNR")
        for ax in (ax_res, ax_ssnr):
            ax.title.set_fontsize(9)
        _iteration_axes(hist, ax_res)
        return fig


# ----------------------------------------------------------------------------- posterior

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
            image_axes(fig.add_subplot(grid[r, 0]), self.image, f"{mode}: particle {i}")
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
        ax.set(ylim=(0, 1), xlabel="class", xticks=np.arange(1, probs.size + 1))
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
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        if len(directions) == 0:
            return
        rot, tilt, p = directions.T
        lon = np.deg2rad((rot + 180.0) % 360.0 - 180.0)
        lat = np.deg2rad(90.0 - tilt)
        ax.scatter(lon, lat, s=10 + 150 * p / p.max(), c=p, cmap="viridis", vmin=0, alpha=0.85)


# ----------------------------------------------------------------------------- gallery

class ClassGallery(W.VBox):
    """Class averages with keep/discard toggles: the data-cleaning loop.

    Toggle the classes to discard, press **Apply**: ``selected`` becomes the
    :class:`cryolab.io.ParticleStack` of the particles in the kept classes
    (``Session.select_classes``), ready for a new Session. Tiles redraw after each iteration.
    """

    def __init__(self, session, columns: int = 5, dpi: int = 72):
        self.session = session
        self.errors: list[str] = []
        self.selected = None
        K = _n_classes(session)
        self.tiles = [ImagePanel(dpi=dpi, layout=W.Layout(width="140px")) for _ in range(K)]
        self.toggles = [W.ToggleButton(value=True, layout=W.Layout(width="140px")) for _ in range(K)]
        for t in self.toggles:
            self._style(t)
            t.observe(self._toggled, names="value")
        self.apply_button = W.Button(description="Apply", icon="filter", button_style="primary")
        self.apply_button.on_click(self.apply)
        self.summary = W.HTML()
        grid = W.GridBox([W.VBox([tile, t]) for tile, t in zip(self.tiles, self.toggles)],
                         layout=W.Layout(grid_template_columns=f"repeat({min(K, columns)}, 150px)"))
        super().__init__([grid, W.HBox([self.apply_button, self.summary])])
        session.on_iteration(_guarded(self, lambda *_: self.refresh()))
        self.refresh()

    @property
    def kept_classes(self) -> list[int]:
        """Class numbers (1-based) toggled to keep."""
        return [k + 1 for k, t in enumerate(self.toggles) if t.value]

    def discard(self, *classes: int) -> None:
        """Toggle the given classes (1-based) to discard (same as clicking their buttons)."""
        for k in classes:
            self.toggles[k - 1].value = False

    def apply(self, _button=None):
        """Select the particles of the kept classes; returns (and stores) ``selected``."""
        kept = self.kept_classes
        self.selected = self.session.select_classes(kept) if kept else None
        n_sel = 0 if self.selected is None else len(self.selected)
        self.summary.value = (f"<b>selected {n_sel} of {len(self.session.particles)} particles</b> "
                              f"(classes {kept}) → <code>.selected</code>")
        return self.selected

    def refresh(self) -> None:
        """Redraw the tiles from the current class averages."""
        refs = np.asarray(self.session.references)
        counts, res = class_counts(self.session), class_resolutions_A(self.session)
        for k, tile in enumerate(self.tiles):
            fig = new_figure(1.9, 2.1)
            image_axes(fig.subplots(), class_image(refs[k]), f"class {k + 1}: {counts[k]} ptcls\n{_resolution_text(res[k])}")
            tile.show(fig)
        self._preview()

    @staticmethod
    def _style(toggle) -> None:
        toggle.description = "keep" if toggle.value else "discard"
        toggle.button_style = "success" if toggle.value else "danger"
        toggle.icon = "check" if toggle.value else "times"

    def _toggled(self, change) -> None:
        self._style(change["owner"])
        self._preview()

    def _preview(self) -> None:
        n = int(class_counts(self.session)[np.asarray(self.kept_classes, int) - 1].sum())
        self.summary.value = (f"keeping classes {self.kept_classes}: {n} of {len(self.session.particles)} "
                              "particles (press Apply)")
