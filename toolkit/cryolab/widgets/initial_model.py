"""Watch an initial model emerge from a featureless blob, one mini-batch at a time.

:class:`InitialModelViewer` steps a :class:`cryolab.methods.initial_model.InitialModel`
(buttons **Step**, **Run**, **Pause**) and redraws after every mini-batch: the central sections
of each class's map, the schedule (resolution and mini-batch size per iteration, the current one
marked) and the class sizes so far. The schedule's final resolution and iteration counts can be
changed between mini-batches; the change is applied before the next one.
"""
from __future__ import annotations

import threading

import ipywidgets as W
import numpy as np

from ._display import ImagePanel, new_figure

__all__ = ["InitialModelViewer"]


class InitialModelViewer(W.VBox):
    """``im``: an :class:`~cryolab.methods.initial_model.InitialModel`. ``panel`` shows the maps
    and curves; ``status`` the iteration; ``errors`` collects drawing errors (never raised);
    :meth:`wait` blocks until a Run has finished (for scripts)."""

    def __init__(self, im, dpi: int = 72):
        self.im = im
        self.errors: list[str] = []
        self.thread: threading.Thread | None = None
        self._pause = threading.Event()
        self._pending: dict = {}
        self._pending_lock = threading.Lock()
        self._note = ""
        button = dict(layout=W.Layout(width="100px"))
        self.step_button = W.Button(description="Step", icon="step-forward", **button)
        self.run_button = W.Button(description="Run", icon="play", button_style="success", **button)
        self.pause_button = W.Button(description="Pause", icon="pause", **button)
        s = im.schedule
        box = dict(style={"description_width": "initial"}, layout=W.Layout(width="210px"))
        self.fin_resol_A = W.BoundedFloatText(value=s.fin_resol_A, min=1.0, max=200.0, step=1.0,
                                              description="final resolution (Å)", **box)
        self.inbetween_iter = W.BoundedIntText(value=s.inbetween_iter, min=0, max=10_000,
                                               description="in-between iterations", **box)
        self.fin_iter = W.BoundedIntText(value=s.fin_iter, min=0, max=10_000, description="final iterations", **box)
        self.status = W.HTML()
        self.panel = ImagePanel(dpi=dpi)
        super().__init__([W.HBox([self.step_button, self.run_button, self.pause_button]),
                          W.HBox([self.fin_resol_A, self.inbetween_iter, self.fin_iter]), self.status, self.panel])
        self.step_button.on_click(lambda _b: self._start(1))
        self.run_button.on_click(lambda _b: self._start(None))
        self.pause_button.on_click(self.toggle_pause)
        for name in ("fin_resol_A", "inbetween_iter", "fin_iter"):
            getattr(self, name).observe(lambda c, n=name: self._request(n, c["new"]), names="value")
        self.refresh()

    # ------------------------------------------------------------------ running
    def _apply_pending(self) -> None:
        with self._pending_lock:
            changes, self._pending = dict(self._pending), {}
        if not changes:
            return
        try:
            self.im.set_schedule(**changes)
            self._note = ""
        except Exception as exc:          # a bad value: say so, show the schedule as it stays
            self.errors.append(str(exc))
            self._note = f"<br><span style='color:#b00'>not applied: {exc}</span>"
            s = self.im.schedule
            for name in changes:                 # the boxes show the schedule that stays
                getattr(self, name).value = getattr(s, name)
            with self._pending_lock:
                self._pending.clear()

    def _loop(self, n) -> None:
        try:
            while not self.im.finished and (n is None or n > 0):
                if self._pause.is_set():
                    break
                self._apply_pending()
                self.im.step()
                self.refresh()
                n = None if n is None else n - 1
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.refresh()

    def _request(self, name, value) -> None:
        with self._pending_lock:
            self._pending[name] = value

    def _start(self, n) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self._pause.clear()
        self.thread = threading.Thread(target=self._loop, args=(n,), daemon=True)
        self.thread.start()

    def toggle_pause(self, _b=None) -> None:
        """Pause after the current mini-batch (Run or Step starts again)."""
        self._pause.set()

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        try:
            self._draw()
        except Exception as exc:                     # a widget never raises into the kernel
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _draw(self) -> None:
        im = self.im
        maps = im.maps(centred=True, symmetrised=im.finished)     # the point group once finished
        K, n = maps.shape[0], maps.shape[-1]
        last = im.history[-1] if im.history else None
        self.status.value = (f"<b>{im.iteration}</b> of {im.schedule.n_iter} mini-batches"
                             + (f" · last: {last.subset} particles at {last.resolution_A:.1f} Å, "
                                f"{last.time_s:.1f} s" if last else " · the starting blob")
                             + " · hand undetermined" + self._note
                             + "".join(f"<br><span style='color:#b00'>{e}</span>" for e in self.errors[-1:]
                                       if not self._note))
        fig = new_figure(7.5, 2.0 * K + 2.2)
        grid = fig.add_gridspec(K + 1, 3, height_ratios=[1.0] * K + [1.1])
        c = n // 2
        for k in range(K):
            for j, (plane, img) in enumerate((("xy", maps[k, c]), ("xz", maps[k, :, c]), ("yz", maps[k, :, :, c]))):
                ax = fig.add_subplot(grid[k, j])
                ax.imshow(img, cmap="gray", origin="lower")
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(f"class {k + 1} · {plane}", fontsize=8)
        steps = im.schedule.steps()
        t = np.arange(1, len(steps) + 1)
        ax = fig.add_subplot(grid[K, :2])
        ax.plot(t, [st.resolution_A for st in steps], color="tab:blue")
        ax.set_xlabel("mini-batch", fontsize=8)
        ax.set_ylabel("resolution (Å)", fontsize=8, color="tab:blue")
        ax.invert_yaxis()
        if im.iteration:
            ax.axvline(im.iteration, color="k", lw=0.8)
        ax2 = ax.twinx()
        ax2.plot(t, [im.subset_at(i) for i in range(len(steps))], color="tab:orange")
        ax2.set_ylabel("particles", fontsize=8, color="tab:orange")
        for a in (ax, ax2):
            a.tick_params(labelsize=7)
        ax3 = fig.add_subplot(grid[K, 2])
        if im.history:
            dist = np.array([h.class_distribution for h in im.history])
            for k in range(K):
                ax3.plot(np.arange(1, len(dist) + 1), dist[:, k], label=f"class {k + 1}")
            ax3.set_ylim(0, 1)
            if K > 1:
                ax3.legend(fontsize=7)
        ax3.set_xlabel("mini-batch", fontsize=8)
        ax3.set_ylabel("class share", fontsize=8)
        ax3.tick_params(labelsize=7)
        self.panel.show(fig)
