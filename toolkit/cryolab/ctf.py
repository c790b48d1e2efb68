"""The contrast transfer function, as RELION defines it (ctf.h ``getCTF``).

::

    lambda  = 12.2643247 / sqrt(V * (1 + 0.978466e-6 * V))      # Angstrom, V in volts
    dF(a)   = defocus_u * cos^2(a - angle) + defocus_v * sin^2(a - angle)
    gamma   = -pi lambda dF u^2 + pi/2 Cs lambda^3 u^4 - phase_shift - asin(Q0)
    CTF(u)  = -sin(gamma) * exp(-B u^2 / 4) * scale

Defocus in Angstrom, positive = underfocus; ``u`` in 1/Angstrom; at ``u = 0``
the CTF is ``+Q0`` (the amplitude contrast). ``a`` is the azimuth of the
frequency vector measured from the image x axis.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .backend import get_xp
from .fourier import irfft2c, rfft2c, rfft_grid

__all__ = ["CTFParams", "electron_wavelength_A", "ctf_2d", "ctf_1d", "phase_flip"]


def electron_wavelength_A(voltage_kV):
    """Relativistic electron wavelength in Angstrom for an acceleration voltage in kV."""
    v = np.asarray(voltage_kV, dtype=np.float64) * 1e3
    return 12.2643247 / np.sqrt(v * (1.0 + 0.978466e-6 * v))


@dataclass(frozen=True)
class CTFParams:
    """Optics and per-particle CTF parameters (scalars or 1D arrays of one length per particle).

    Units are in the names. ``defocus_angle_deg`` is RELION's ``_rlnDefocusAngle``;
    ``phase_shift_deg`` is ``_rlnPhaseShift``; ``bfactor_A2`` is ``_rlnCtfBfactor``
    (positive dampens); ``scale`` is ``_rlnCtfScalefactor``.

    Parameters
    ----------
    defocus_u_A, defocus_v_A : float or array ``[B]``
        Defocus along the astigmatism's major and minor axes in Angstrom (positive =
        underfocus; RELION's ``_rlnDefocusU`` / ``_rlnDefocusV``).
    defocus_angle_deg : float or array ``[B]``
        Angle of the U axis from the image x axis in degrees.
    voltage_kV : float or array ``[B]``
        Acceleration voltage in kV.
    cs_mm : float or array ``[B]``
        Spherical aberration in mm.
    amplitude_contrast : float or array ``[B]``
        Fraction ``Q0`` (0-1).
    phase_shift_deg, bfactor_A2, scale : float or array ``[B]``
        Phase-plate shift in degrees, B-factor in A^2 and scale factor.

    Examples
    --------
    Two particles that share the optics (scalars) and differ in defocus (arrays):

    >>> p = CTFParams(defocus_u_A=[15000.0, 20000.0], defocus_v_A=[14000.0, 20000.0],
    ...               defocus_angle_deg=30.0)
    >>> len(p), float(p[1].defocus_u_A), p[1].voltage_kV
    (2, 20000.0, 300.0)
    """

    defocus_u_A: object
    defocus_v_A: object
    defocus_angle_deg: object = 0.0
    voltage_kV: object = 300.0
    cs_mm: object = 2.7
    amplitude_contrast: object = 0.1
    phase_shift_deg: object = 0.0
    bfactor_A2: object = 0.0
    scale: object = 1.0

    def __len__(self) -> int:
        return max(np.size(getattr(self, f.name)) for f in fields(self))

    def __getitem__(self, idx) -> "CTFParams":
        """Parameters of a subset of particles (scalars stay scalars)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = np.asarray(v)[idx] if np.ndim(v) else v
        return CTFParams(**out)

    def arrays(self, n: int | None = None) -> dict:
        """All fields as float64 arrays of length ``n`` (default ``len(self)``)."""
        n = len(self) if n is None else n
        return {f.name: np.broadcast_to(np.asarray(getattr(self, f.name), dtype=np.float64), (n,))
                for f in fields(self)}


def _ctf_from_freqs(p: dict, u2, angle, xp):
    """CTF for per-particle parameter arrays ``p`` (shape [B]) at |u|^2 (1/A^2) and azimuth (rad)."""
    def col(name):
        return xp.asarray(p[name]).reshape((-1,) + (1,) * u2.ndim)

    lam = col("lambda_A")
    dfu, dfv = col("defocus_u_A"), col("defocus_v_A")
    ang = xp.deg2rad(col("defocus_angle_deg"))
    df = dfu * xp.cos(angle - ang) ** 2 + dfv * xp.sin(angle - ang) ** 2
    cs_A = col("cs_mm") * 1e7
    q0 = col("amplitude_contrast")
    gamma = (-np.pi * lam * df * u2 + 0.5 * np.pi * cs_A * lam ** 3 * u2 ** 2
             - xp.deg2rad(col("phase_shift_deg")) - xp.arcsin(q0))
    ctf = -xp.sin(gamma) * col("scale")
    bf = col("bfactor_A2")
    return ctf * xp.exp(-bf * u2 / 4.0)


def _param_arrays(params: CTFParams):
    p = params.arrays()
    p["lambda_A"] = electron_wavelength_A(p["voltage_kV"])
    return p


def ctf_2d(params: CTFParams, n: int, pixel_size_A: float, half: bool = True, xp=np,
           dtype=np.float32):
    """CTF images on cryolab's centred half-transform grid (RELION's formula, module doc).

    Parameters
    ----------
    params : CTFParams
        One CTF per particle, ``B = len(params)``.
    n : int
        Box size in pixels.
    pixel_size_A : float
        Pixel size in Angstrom: pixel ``k`` of the grid is ``k / (n * pixel_size_A)`` in 1/A.
    half : bool
        Half grid ``[B, N, N//2+1]``, axes ``(ky, kx)`` (default; multiplies :func:`rfft2c`
        output), or the full centred grid ``[B, N, N]``.
    xp : module
        ``numpy`` or ``cupy``.
    dtype : dtype
        Output type (float32 by default).

    Returns
    -------
    array ``[B, N, N//2+1]`` (or ``[B, N, N]``)

    Examples
    --------
    >>> import numpy as np
    >>> p = CTFParams(defocus_u_A=[15000.0, 20000.0], defocus_v_A=[14000.0, 20000.0],
    ...               defocus_angle_deg=30.0)
    >>> c = ctf_2d(p, 64, 2.0)
    >>> c.shape, c.dtype
    ((2, 64, 33), dtype('float32'))
    >>> bool(np.allclose(c[:, 32, 0], 0.1))   # frequency 0 (row N//2, column 0): +Q0
    True

    The first zero of a 2 um underfocus at 300 kV lies near ``1 / sqrt(lambda * dF)`` =
    0.050 1/A, i.e. between pixels 6 and 7 of this 64 x 2 A grid (1/128 1/A per pixel):

    >>> np.sign(c[1, 32, :9]).astype(int)
    array([ 1,  1,  1,  1,  1,  1,  1, -1, -1])
    """
    ky, kx = rfft_grid(n, 2, xp, half)
    fx = kx.astype(xp.float64) / (n * pixel_size_A)
    fy = ky.astype(xp.float64) / (n * pixel_size_A)
    u2 = fx ** 2 + fy ** 2
    angle = xp.arctan2(fy, fx)
    return _ctf_from_freqs(_param_arrays(params), u2, angle, xp).astype(dtype)


def ctf_1d(params: CTFParams, freq_per_A, azimuth_deg: float = 0.0):
    """CTF ``[B, F]`` along one direction (azimuth from the x axis) at frequencies in 1/A."""
    f = np.asarray(freq_per_A, dtype=np.float64)
    return _ctf_from_freqs(_param_arrays(params), f ** 2, np.deg2rad(azimuth_deg) + 0 * f, np)


def phase_flip(images, params: CTFParams, pixel_size_A: float):
    """Multiply each image's transform by the sign of its CTF (phase flipping); images ``[B, N, N]``."""
    xp = get_xp(images)
    n = images.shape[-1]
    c = ctf_2d(params, n, pixel_size_A, xp=xp)
    return irfft2c(rfft2c(images) * xp.sign(c), n).astype(images.dtype, copy=False)
