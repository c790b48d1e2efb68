"""The :class:`SessionDashboard` widget: steer a running Session and watch it converge.

Runs go through ``Session.run_async`` in a background thread; setting changes are applied
between iterations with ``Session.set``, and the panels are redrawn from
``Session.on_iteration`` (drawing errors are collected in ``errors``, never raised).
"""
from __future__ import annotations

import threading

import ipywidgets as W
import numpy as np

from ._display import ImagePanel, new_figure, resolution_axis, slider
from ._session_common import MODE_NAMES, _class_colours, _guarded, _iteration_axes, _n_classes, draw_class_grid

__all__ = ["SessionDashboard"]

_PSI_STEPS_DEG = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)


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
    def _show_state(self, hist=None) -> None:
        s = self.session
        hist = list(s.history) if hist is None else hist
        state = ("paused" if self._paused else "running") if self.running else "idle"
        for b in (self.step_button, self.run_button, self.iterations):
            b.disabled = self.running
        self.pause_button.disabled = self.stop_button.disabled = not self.running
        self.pause_button.description = "Resume" if self._paused else "Pause"
        self.pause_button.icon = "play" if self._paused else "pause"
        shown = hist[-1].iteration if hist else s.iteration      # the iteration the panels show
        text = f"<b>iteration {shown}</b> · {state} · {MODE_NAMES[s.settings.mode]}, K = {_n_classes(s)}"
        if hist:
            h = hist[-1]
            text += (f" · last iteration {h.time_s:.1f} s · log L {h.loglik:.5g} · mean Pmax {h.mean_pmax:.2f}"
                     f" · changed classes {h.changed_assignments:.0%}")
        pending = dict(self._pending)
        if pending:
            text += f" · next iteration: {', '.join(f'{k} = {v}' for k, v in pending.items())}"
        if self.errors:
            text += f"<br><span style='color:#b00'>drawing error: {self.errors[-1]}</span>"
        self.status.value = text

    def refresh(self) -> None:
        """Redraw all panels and the status line from the Session (called after each iteration).

        All of them are drawn from one copy of the history, so they show the same iteration.
        """
        hist = list(self.session.history)
        self.panels["curves"].show(self._draw_curves(hist))
        self.panels["classes"].show(draw_class_grid(self.session))
        self.panels["spectra"].show(self._draw_spectra(hist))
        self._show_state(hist)

    def _draw_curves(self, hist):
        s = self.session
        K = _n_classes(s)
        colours = _class_colours(K)
        fig = new_figure(11, 2.6)
        ax_ll, ax_cd, ax_pm = fig.subplots(1, 3)
        its = [h.iteration for h in hist]
        _loglik(ax_ll, hist)
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

    def _draw_spectra(self, hist):
        s = self.session
        K = _n_classes(s)
        colours = _class_colours(K)
        fig = new_figure(6.4, 2.8)
        ax_res, ax_ssnr = fig.subplots(1, 2)
        its = [h.iteration for h in hist]
        res = np.array([h.resolution_A for h in hist], dtype=float).reshape(len(hist), K)
        for k in range(K):
            ax_res.plot(its, np.where(np.isfinite(res[:, k]), res[:, k], np.nan), "o-", color=colours[k])
        ax_res.set(xlabel="iteration", ylabel="resolution (Å)", title="resolution per class")
        if not hist:
            _waiting(ax_res)
        if hist and np.any(np.asarray(hist[-1].ssnr)):
            ssnr = np.asarray(hist[-1].ssnr)
            freq = np.arange(ssnr.shape[1]) / (s.n * s.pixel_size_A)
            for k in range(K):
                ax_ssnr.semilogy(freq[1:], np.where(ssnr[k, 1:] > SSNR_FLOOR, ssnr[k, 1:], np.nan), color=colours[k])
            ax_ssnr.axhline(1.0, color="0.5", ls=":")
            # an emptied class has an SSNR of ~1e-30: the axis shows 1e-2 .. the largest value
            ax_ssnr.set_ylim(SSNR_FLOOR, max(10.0, 2.0 * float(np.nanmax(ssnr[:, 1:]))))
            ax_ssnr.set_xlim(0, freq[-1])
            resolution_axis(ax_ssnr, freq[-1], max_ticks=5)
        elif not hist:
            _waiting(ax_ssnr)
        else:
            ax_ssnr.text(0.5, 0.5, "SSNR comes from the MAP prior\n(mode='map')", ha="center",
                         va="center", transform=ax_ssnr.transAxes, fontsize=8)
        ax_ssnr.set(xlabel="spatial frequency (1/Å)", title="spectral SNR")
        for ax in (ax_res, ax_ssnr):
            ax.title.set_fontsize(9)
        _iteration_axes(hist, ax_res)
        return fig


SSNR_FLOOR = 1e-2


def _waiting(ax) -> None:
    """An axis with nothing to show yet: no ticks (no arbitrary ±0.04 range), a short note."""
    ax.set_yticks([])
    ax.text(0.5, 0.5, "after the first iteration", ha="center", va="center", transform=ax.transAxes,
            fontsize=8, color="0.4")


def _loglik(ax, hist) -> None:
    """The log-likelihood per iteration; the line joins only iterations with the same Fourier pixels.

    It is a sum over the pixels the E-step used, so it steps when their number (``max_shell``)
    changes; open markers show such iterations.
    """
    ax.set(xlabel="iteration", title="log-likelihood (RELION's)")
    if not hist:
        _waiting(ax)
        return
    its = np.array([h.iteration for h in hist], float)
    ll = np.array([h.loglik for h in hist], float)
    shells = np.array([h.max_shell for h in hist])
    new = np.r_[False, shells[1:] != shells[:-1]]
    for seg in np.split(np.arange(len(hist)), np.flatnonzero(new)):
        ax.plot(its[seg], ll[seg], "-", color="k")
    ax.plot(its[~new], ll[~new], "o", color="k")
    if new.any():
        ax.plot(its[new], ll[new], "o", mfc="w", color="k", label="more/fewer Fourier shells")
        ax.legend(fontsize=7, loc="lower right")
