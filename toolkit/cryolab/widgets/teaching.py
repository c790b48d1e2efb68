"""Teaching widgets: the projection-slice theorem and the contrast transfer function.

Both widgets are ``ipywidgets.VBox`` subclasses (display them as the last expression of a cell).
Every computation is delegated to :mod:`cryolab.projection`, :mod:`cryolab.ctf` and
:mod:`cryolab.fourier`; the widgets keep the latest results as arrays (``projection``,
``slice_ft``, ``ctf_curve`` ...) so a notebook or a test can check them.
"""
from __future__ import annotations

from dataclasses import replace

import ipywidgets as W
import numpy as np

from ..ctf import CTFParams, ctf_1d, ctf_2d, phase_flip
from ..fourier import rfft2c
from ..projection import FourierProjector, project_real
from ._display import (ImagePanel, full_from_half, image_axes, log_amplitude, new_figure,
                       resolution_axis, slider)

__all__ = ["ProjectionSliceExplorer", "CTFExplorer"]


def _correlation(a, b) -> float:
    """Normalised correlation of two (complex) arrays, as shown in the widget's caption."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    den = np.sqrt(np.vdot(a, a).real * np.vdot(b, b).real)
    return float(np.vdot(a, b).real / den) if den > 0 else 0.0


class ProjectionSliceExplorer(W.VBox):
    """Rotate a map and compare the 2D transform of its projection with a central 3D slice.

    Sliders set the RELION Euler angles (rot, tilt, psi in degrees). Panels: the real-space
    projection (:func:`cryolab.projection.project_real`), ``log|FT|`` of that projection, the
    central slice of the 3D transform at the same orientation
    (:meth:`cryolab.projection.FourierProjector.project_ft`) and ``log|difference|``.

    Arrays after each change: ``projection`` ``[N, N]``, ``projection_ft`` and ``slice_ft``
    (centred half transforms ``[N, N//2+1]``), ``correlation`` between the two transforms.
    """

    def __init__(self, volume, pixel_size_A: float, rot_deg: float = 0.0, tilt_deg: float = 0.0,
                 psi_deg: float = 0.0, dpi: int = 72):
        self.volume = np.asarray(volume, dtype=np.float32)
        self.pixel_size_A = float(pixel_size_A)
        self.n = self.volume.shape[-1]
        self.projector = FourierProjector(self.volume)
        self.rot = slider("rot (°)", rot_deg, -180, 180, 1, fmt=".0f")
        self.tilt = slider("tilt (°)", tilt_deg, 0, 180, 1, fmt=".0f")
        self.psi = slider("psi (°)", psi_deg, -180, 180, 1, fmt=".0f")
        self.caption = W.HTML()
        self.panel = ImagePanel(dpi=dpi)
        super().__init__([W.HBox([self.rot, self.tilt, self.psi]), self.caption, self.panel])
        for s in (self.rot, self.tilt, self.psi):
            s.observe(self._changed, names="value")
        self.update()

    @property
    def eulers_deg(self) -> np.ndarray:
        """Current (rot, tilt, psi) in degrees."""
        return np.array([self.rot.value, self.tilt.value, self.psi.value], dtype=np.float64)

    def _changed(self, _change=None):
        self.update()

    def update(self) -> None:
        """Recompute the projection and the slice for the sliders' angles and redraw."""
        eulers = self.eulers_deg
        self.projection = project_real(self.volume, eulers)
        self.projection_ft = rfft2c(self.projection)
        self.slice_ft = self.projector.project_ft(eulers[None])[0]
        self.correlation = _correlation(self.projection_ft, self.slice_ft)
        self.caption.value = (
            f"Euler angles (rot, tilt, psi) = ({eulers[0]:.0f}°, {eulers[1]:.0f}°, {eulers[2]:.0f}°). "
            f"Correlation between FT(projection) and the central slice: <b>{self.correlation:.4f}</b>")
        self._draw()

    def _draw(self) -> None:
        n = self.n
        fig = new_figure(12.5, 3.4)
        axes = fig.subplots(1, 4)
        ft_proj = log_amplitude(full_from_half(self.projection_ft, n))
        ft_slice = log_amplitude(full_from_half(self.slice_ft, n))
        diff = log_amplitude(full_from_half(self.projection_ft - self.slice_ft, n))
        vmax = max(ft_proj.max(), ft_slice.max())
        image_axes(axes[0], self.projection, "projection (real space)", pixel_size_A=self.pixel_size_A)
        image_axes(axes[1], ft_proj, "log |FT of the projection|", cmap="magma", vmin=0, vmax=vmax)
        image_axes(axes[2], ft_slice, "log |central slice of 3D FT|", cmap="magma", vmin=0, vmax=vmax)
        image_axes(axes[3], diff, "log |difference| (same scale)", cmap="magma", vmin=0, vmax=vmax)
        self.panel.show(fig)


class CTFExplorer(W.VBox):
    """Explore the CTF (RELION's definition, :mod:`cryolab.ctf`) and what it does to an image.

    Sliders: defocus and astigmatism (µm), astigmatism angle (°), voltage (kV), Cs (mm),
    amplitude contrast, B-factor (Å²), phase shift (°), and the number and spacing of defoci
    for the "several defoci" plot. Panels: the 1D CTF along the defocus-U and V directions with
    its B-factor envelope, the 2D CTF, and (with a ``volume``) the projection, the
    CTF-modulated projection and its phase-flipped version; the mean CTF² over several defoci.

    Arrays after each change: ``params`` (:class:`~cryolab.ctf.CTFParams`), ``freq_per_A``,
    ``ctf_curve`` (along defocus U), ``ctf_curve_v``, ``envelope``, ``ctf_image`` ``[N, N]``,
    ``defoci_A``, ``ctf2_each`` ``[D, F]``, ``ctf2_mean``; with a volume also ``projection``,
    ``image`` (CTF-modulated) and ``flipped``.
    """

    def __init__(self, volume=None, pixel_size_A: float = 1.0, euler_deg=(0.0, 0.0, 0.0),
                 box_px: int = 512, defocus_um: float = 1.5, dpi: int = 72):
        self.pixel_size_A = float(pixel_size_A)
        self.volume = None if volume is None else np.asarray(volume, dtype=np.float32)
        self.n = box_px if self.volume is None else self.volume.shape[-1]
        self.euler_deg = np.asarray(euler_deg, dtype=np.float64).reshape(1, 3)
        self.projector = None if self.volume is None else FourierProjector(self.volume)
        self.projection = None if self.projector is None else self.projector.project(self.euler_deg)[0]
        self.freq_per_A = np.linspace(0.0, 0.5 / self.pixel_size_A, 1500)
        self.defocus = slider("defocus (µm)", defocus_um, 0.1, 5.0, 0.05, fmt=".2f")
        self.astigmatism = slider("astigmatism (µm)", 0.0, 0.0, 1.0, 0.01, fmt=".2f")
        self.angle = slider("astig. angle (°)", 0.0, 0.0, 180.0, 1, fmt=".0f")
        self.voltage = W.SelectionSlider(description="voltage (kV)", options=[80, 100, 120, 200, 300],
                                         value=300, continuous_update=False,
                                         style={"description_width": "initial"},
                                         layout=W.Layout(width="320px"))
        self.cs = slider("Cs (mm)", 2.7, 0.0, 5.0, 0.1, fmt=".1f")
        self.amplitude_contrast = slider("amplitude contrast", 0.1, 0.0, 0.5, 0.01, fmt=".2f")
        self.bfactor = slider("B-factor (Å²)", 0.0, 0.0, 400.0, 5, fmt=".0f")
        self.phase_shift = slider("phase shift (°)", 0.0, 0.0, 180.0, 5, fmt=".0f")
        self.n_defoci = slider("number of defoci", 3, 1, 8, 1, integer=True)
        self.defocus_step = slider("defocus step (µm)", 0.3, 0.05, 1.0, 0.05, fmt=".2f")
        controls = [self.defocus, self.astigmatism, self.angle, self.voltage, self.cs,
                    self.amplitude_contrast, self.bfactor, self.phase_shift, self.n_defoci,
                    self.defocus_step]
        self.panel = ImagePanel(dpi=dpi)
        grid = W.GridBox(controls, layout=W.Layout(grid_template_columns="repeat(3, 330px)"))
        super().__init__([grid, self.panel])
        for c in controls:
            c.observe(self._changed, names="value")
        self.update()

    def current_params(self, defocus_um=None) -> CTFParams:
        """:class:`~cryolab.ctf.CTFParams` for the sliders (``defocus_um`` overrides the mean defocus)."""
        df_A = (self.defocus.value if defocus_um is None else np.asarray(defocus_um)) * 1e4
        half_astig_A = 0.5 * self.astigmatism.value * 1e4
        return CTFParams(defocus_u_A=df_A + half_astig_A, defocus_v_A=df_A - half_astig_A,
                         defocus_angle_deg=self.angle.value, voltage_kV=float(self.voltage.value),
                         cs_mm=self.cs.value, amplitude_contrast=self.amplitude_contrast.value,
                         phase_shift_deg=self.phase_shift.value, bfactor_A2=self.bfactor.value)

    def _changed(self, _change=None):
        self.update()

    def update(self) -> None:
        """Recompute every curve and image for the sliders' values and redraw."""
        p = self.params = self.current_params()
        f = self.freq_per_A
        self.ctf_curve = ctf_1d(p, f, azimuth_deg=self.angle.value)[0]
        self.ctf_curve_v = ctf_1d(p, f, azimuth_deg=self.angle.value + 90.0)[0]
        # the damping envelope is the CTF of a perfect lens with pure amplitude contrast
        perfect = replace(p, defocus_u_A=0.0, defocus_v_A=0.0, cs_mm=0.0, amplitude_contrast=1.0,
                          phase_shift_deg=0.0)
        self.envelope = ctf_1d(perfect, f)[0]
        self.ctf_image = ctf_2d(p, self.n, self.pixel_size_A, half=False)[0]
        offsets = (np.arange(self.n_defoci.value) - (self.n_defoci.value - 1) / 2) * self.defocus_step.value
        defoci_um = np.maximum(self.defocus.value + offsets, 0.05)
        self.defoci_A = defoci_um * 1e4
        self.ctf2_each = ctf_1d(self.current_params(defoci_um), f, azimuth_deg=self.angle.value) ** 2
        self.ctf2_mean = self.ctf2_each.mean(axis=0)
        if self.projector is not None:
            self.image = self.projector.project(self.euler_deg, ctf=p, pixel_size_A=self.pixel_size_A)[0]
            self.flipped = phase_flip(self.image[None], p, self.pixel_size_A)[0]
        self._draw()

    def _draw(self) -> None:
        with_images = self.projector is not None
        fig = new_figure(12.5, 6.2 if with_images else 3.3)
        if with_images:
            gs = fig.add_gridspec(2, 4)
            cells = gs[0, :3], gs[0, 3], gs[1, 3]
        else:
            gs = fig.add_gridspec(1, 5)
            cells = gs[0, :3], gs[0, 3], gs[0, 4]
        self._draw_curve(fig.add_subplot(cells[0]))
        image_axes(fig.add_subplot(cells[1]), self.ctf_image, f"2D CTF ({self.n} px)",
                   cmap="RdBu_r", vmin=-1, vmax=1)
        self._draw_ctf2(fig.add_subplot(cells[2]))
        if with_images:
            image_axes(fig.add_subplot(gs[1, 0]), self.projection, "projection (no CTF)", pixel_size_A=self.pixel_size_A)
            image_axes(fig.add_subplot(gs[1, 1]), self.image, "with CTF")
            image_axes(fig.add_subplot(gs[1, 2]), self.flipped, "phase-flipped")
        self.panel.show(fig)

    def _draw_curve(self, ax) -> None:
        f = self.freq_per_A
        ax.axhline(0, color="0.7", lw=0.8)
        ax.plot(f, self.ctf_curve, lw=1.2, label="CTF along defocus U")
        if self.astigmatism.value > 0:
            ax.plot(f, self.ctf_curve_v, lw=1.0, alpha=0.8, label="CTF along defocus V")
        ax.plot(f, self.envelope, "k--", lw=1.0, label="envelope exp(-B u²/4)")
        ax.plot(f, -self.envelope, "k--", lw=1.0)
        ax.set_xlim(0, f[-1])
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("spatial frequency (1/Å)", fontsize=8)
        ax.set_ylabel("CTF", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
        resolution_axis(ax, f[-1])

    def _draw_ctf2(self, ax) -> None:
        f = self.freq_per_A
        for row in self.ctf2_each:
            ax.plot(f, row, lw=0.6, alpha=0.6)
        ax.plot(f, self.ctf2_mean, "k", lw=1.5, label=f"mean of {len(self.ctf2_each)}")
        ax.set_xlim(0, f[-1])
        ax.set_ylim(0, 1.02)
        ax.set_title("CTF² at several defoci", fontsize=9)
        ax.set_xlabel("1/Å", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
