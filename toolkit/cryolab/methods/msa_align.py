"""Aligned, CTF-corrected, masked particle images for multivariate statistical analysis (MSA).

Each particle image is brought into the frame of its view: the transform is multiplied by a CTF
correction and by the phase ramp that moves the particle by its RELION origin ``o`` (pixels,
``_rlnOriginX/YAngst / pixel size``) back to the box centre, and the image is then rotated by
``-psi`` (``_rlnAnglePsi``, degrees), so that images of one view (one ``rot, tilt``, or one 2D
class) line up. The rotation has RELION's 2D convention, as
:class:`cryolab.projection.FourierRotator2D`: :func:`rotate_images` by ``psi`` gives
``out(x) = in(R x)`` with ``R = [[cos psi, -sin psi], [sin psi, cos psi]]`` acting on ``(x, y)``
about pixel ``N // 2``.

CTF correction (``ctf=``): ``"flip"`` multiplies the transform by ``sign(CTF)`` (phase
flipping: the amplitudes stay as the microscope made them, white noise stays white with the same
variance), ``"wiener"`` by ``CTF / (CTF^2 + 1 / wiener_snr)`` (amplitudes restored where the
given SNR says they can be; the noise becomes coloured), ``"none"`` leaves the images alone.

The rotation is exact on the image grid up to interpolation: a rotation by a multiple of 90
degrees is a permutation of the pixels (about pixel ``N // 2``, periodic), the rest (at most 45
degrees) three shears ``x + a y``, ``y + b x``, ``x + a y`` with ``a = -tan(angle / 2)``,
``b = sin(angle)``, each a Fourier phase ramp along one axis (Unser, Thevenaz and Yaroslavsky,
IEEE TIP 1995) on a grid of odd size (an even box gets one row and column of zeros, so there is
no Nyquist line to lose). Every step is unitary, so white noise stays white inside the box; images
are zero-padded further when the mask reaches so far out that a shear could wrap content into it.

The analysis vector of an image ``y`` is ``m * (y - c)`` over the pixels where the soft mask
``m`` is positive, with ``c = sum(m^2 y) / sum(m^2)``: each image loses its component along the
mask (a constant offset, such as the one background normalisation leaves, is no signal).

What the preparation leaves of each image's CTF is its *transfer* ``H_i`` (:meth:`AlignedImages.transfer`:
``|CTF|`` after phase flipping, ``CTF^2 / (CTF^2 + 1 / wiener_snr)`` after the Wiener filter, in
the aligned frame). :meth:`AlignedImages.fit_ctf_mean` estimates the mean image ``mu`` by least
squares with them and :meth:`AlignedImages.batches` then subtracts each image's own ``H_i mu``, so
that a defocus spread is not variance (:mod:`cryolab.methods.msa`, step 2).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..backend import fft_kwargs, get_fft, get_xp, resolve_backend, to_device, to_numpy
from ..ctf import ctf_2d
from ..errors import CryolabInputError
from ..fourier import irfft2c, rfft2c
from ..validation import soft_circle_mask

__all__ = ["rotate_images", "centring_ramps", "AlignedImages", "CTF_MODES"]

CTF_MODES = ("flip", "wiener", "none")
_SHEAR_REACH = 1.0824      # sqrt(1 + tan(22.5 deg)^2): how far out a shear moves a point at radius 1
_MIN_BACKGROUND = 16       # pixels outside the mask needed to estimate the noise from the background


def _quarter_turns(n: int, xp):
    """Flat gather indices ``[4, N*N]``: ``out.flat[i] = in.flat[idx[k, i]]`` rotates by ``k * 90`` degrees
    in the convention of :func:`rotate_images` (about pixel ``N // 2``, periodic)."""
    c = n // 2
    y, x = xp.meshgrid(xp.arange(n) - c, xp.arange(n) - c, indexing="ij")
    maps, sx, sy = [], x, y
    for _ in range(4):
        maps.append((((sy + c) % n) * n + (sx + c) % n).ravel())
        sx, sy = -sy, sx               # R(90) (x, y) = (-y, x)
    return xp.stack(maps)


def _odd_fast(m: int) -> int:
    """The smallest odd size >= ``m`` whose only factors are 3, 5 and 7 (fast FFTs).

    >>> _odd_fast(64), _odd_fast(72), _odd_fast(33)
    (75, 75, 35)
    """
    m += 1 - m % 2
    while True:
        r = m
        for f in (3, 5, 7):
            while r % f == 0:
                r //= f
        if r == 1:
            return m
        m += 2


def centring_ramps(n: int, origins_px, xp=np):
    """Phase ramps ``[B, N, N//2+1]`` (complex64, centred half grid) that move particles with RELION
    origins ``origins_px [B, 2]`` (x, y pixels) to the box centre: :func:`cryolab.projection.shift_ramps`
    by ``+origin``, made as the outer product of one ramp per axis (``B (N + N//2 + 1)`` exponentials)."""
    o = xp.asarray(origins_px, dtype=xp.float64).reshape(-1, 2)
    kx = xp.arange(n // 2 + 1, dtype=xp.float64)
    ky = xp.arange(n, dtype=xp.float64) - n // 2
    ex = xp.exp((-2j * np.pi / n) * o[:, 0:1] * kx).astype(xp.complex64)
    ey = xp.exp((-2j * np.pi / n) * o[:, 1:2] * ky).astype(xp.complex64)
    return ey[:, :, None] * ex[:, None, :]


def _shear(images, factor, axis: int):
    """``axis=-1``: ``out(x, y) = in(x + f y, y)``; ``axis=-2``: ``out(x, y) = in(x, y + f x)``, with
    one factor ``f`` per image ``[B]``; coordinates about pixel ``N // 2``; Fourier phase ramps."""
    xp = get_xp(images)
    if axis == -2:                   # the y shear is the x shear of the transposed images
        return xp.ascontiguousarray(_shear(xp.ascontiguousarray(images.transpose(0, 2, 1)), factor, -1)
                                    .transpose(0, 2, 1))
    fft = get_fft(xp)
    m = images.shape[-1]
    k = xp.arange(m // 2 + 1, dtype=xp.float32)
    rows = (xp.arange(m, dtype=xp.float32) - m // 2) * xp.float32(2 * np.pi / m)
    phase = (xp.asarray(factor, dtype=xp.float32)[:, None] * rows[None, :])[:, :, None] * k
    ramp = xp.cos(phase).astype(xp.complex64)
    ramp.imag = xp.sin(phase)         # float32 phases: |phase| < pi m / 2, error ~ 1e-5 rad
    ft = fft.rfft(images, axis=-1, **fft_kwargs(xp))
    ft *= ramp
    return fft.irfft(ft, n=m, axis=-1, **fft_kwargs(xp)).astype(xp.float32, copy=False)


def rotate_images(images, angle_deg, reach_px: float | None = None):
    """Images ``[B, N, N]`` rotated each by its own angle ``angle_deg [B]`` (degrees, RELION's 2D
    psi convention, as :class:`cryolab.projection.FourierRotator2D`): ``out(x) = in(R x)``,
    ``R = [[cos, -sin], [sin, cos]]`` on ``(x, y)`` about pixel ``N // 2``. Quarter turns are pixel
    permutations, the rest three Fourier shears (module doc). ``reach_px``: the radius (pixels)
    that must be free of wrap-around; beyond ``(N / 2 - 2) / 1.0824`` the images are zero-padded
    for the shears (None: only to an odd size). Returns float32 on the images' device.

    >>> import numpy as np
    >>> img = np.zeros((1, 8, 8), np.float32); img[0, 4, 6] = 1        # 2 px along +x
    >>> out = rotate_images(img, [90.0])
    >>> tuple(int(v) for v in np.unravel_index(np.argmax(out[0]), (8, 8)))   # out(x) = in(R x): to -y
    (2, 4)
    """
    xp = get_xp(images)
    images = xp.asarray(images, dtype=xp.float32)
    b, n = images.shape[0], images.shape[-1]
    angle = np.asarray(to_numpy(angle_deg), dtype=np.float64).reshape(-1)
    if angle.size != b:
        raise ValueError(f"rotate_images: {b} images but {angle.size} angles")
    turns = np.rint(angle / 90.0)
    rest = np.deg2rad(angle - 90.0 * turns)                    # in [-45, 45] degrees
    quarter = to_device(np.mod(turns, 4).astype(np.int64), xp)
    flat = images.reshape(b, n * n)
    out = xp.take_along_axis(flat, _quarter_turns(n, xp)[quarter], axis=1).reshape(b, n, n)
    pad = 0                                  # zeros around the images so no shear wraps into the reach
    if reach_px is not None and _SHEAR_REACH * reach_px + 2 > n / 2:
        pad = int(math.ceil(_SHEAR_REACH * reach_px + 2 - n / 2))
    m = _odd_fast(n + 2 * pad)               # odd: no Nyquist line, each shear is unitary
    lo = m // 2 - n // 2                     # pixel N // 2 stays the centre
    out = xp.pad(out, ((0, 0), (lo, m - n - lo), (lo, m - n - lo)))
    a, s = -np.tan(rest / 2), np.sin(rest)
    out = _shear(_shear(_shear(out, a, -1), s, -2), a, -1)
    return xp.ascontiguousarray(out[:, lo:lo + n, lo:lo + n])


class AlignedImages:
    """The particles of a :class:`cryolab.io.ParticleStack`, aligned, CTF-corrected and masked,
    read in batches (never all at once) on the array backend ``backend`` (module doc).

    ``mask``: a soft mask ``[N, N]`` (values 0..1), else a soft circle of ``mask_diameter_A``
    (default: the largest whose soft edge of ``mask_edge_px`` fits in the box) from
    :func:`cryolab.validation.soft_circle_mask`. ``align=False`` leaves out origins and psi.
    ``n_pixels`` is the number of pixels where the mask is positive (the length of a vector).
    """

    def __init__(self, stack, *, mask=None, mask_diameter_A: float | None = None, mask_edge_px: float = 3.0,
                 ctf: str = "flip", wiener_snr: float = 1.0, align: bool = True, ctf_mean=None,
                 backend: str | None = None):
        self.stack, self.xp = stack, resolve_backend(backend)
        self.n, self.ctf, self.align = stack.box_size, ctf, bool(align)
        if ctf not in CTF_MODES:
            raise CryolabInputError(f"ctf must be one of {', '.join(CTF_MODES)}, got {ctf!r}", field="ctf")
        if ctf == "wiener" and not (np.isfinite(wiener_snr) and wiener_snr > 0):
            raise CryolabInputError(f"wiener_snr must be a positive number, got {wiener_snr!r}", field="wiener_snr")
        self.wiener_snr = float(wiener_snr)
        self.pixel_size_A = stack.pixel_size_A
        if self.align and (stack.eulers() is None or "rlnAnglePsi" not in stack.table.columns):
            raise CryolabInputError("aligning the images needs their in-plane angles (or align=False)",
                                    path=stack.star_path, field="_rlnAnglePsi")
        if (ctf != "none" or mask is None) and self.pixel_size_A is None:
            raise CryolabInputError("the pixel size is unknown", path=stack.star_path, field="_rlnImagePixelSize")
        self.mask = self._make_mask(mask, mask_diameter_A, mask_edge_px)
        m = to_numpy(self.mask)
        self.pixels = to_device(np.flatnonzero(m.ravel() > 0), self.xp)
        self.weights = self.mask.ravel()[self.pixels]
        self.n_pixels, self.n_images = int(self.pixels.size), len(stack)
        r = np.hypot(*(np.mgrid[:self.n, :self.n] - self.n // 2))
        self.reach_px = float(r[m > 0].max()) if self.align else None
        outside = r > self.reach_px + 1 if self.align else m == 0
        self._background = to_device(outside.ravel(), self.xp) if outside.sum() >= _MIN_BACKGROUND else None
        self.noise_variance = None      # from the background, after a full pass of batches()
        self.ctf_mean, self._mean_ft = None, None
        if ctf_mean is not None:
            self.set_ctf_mean(ctf_mean)

    def _make_mask(self, mask, diameter_A, edge_px):
        xp, n = self.xp, self.n
        if mask is not None:
            m = np.asarray(to_numpy(mask), dtype=np.float32)
            if m.shape != (n, n) or not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
                raise CryolabInputError(f"the mask must be [{n}, {n}] with values in 0..1 (shape {m.shape})",
                                        field="mask")
        else:
            if not (np.isfinite(edge_px) and edge_px >= 0):
                raise CryolabInputError(f"mask_edge_px must be >= 0, got {edge_px!r}", field="mask_edge_px")
            radius = n / 2 - edge_px - 1 if diameter_A is None else 0.5 * float(diameter_A) / self.pixel_size_A
            if not (np.isfinite(radius) and radius > 0):
                raise CryolabInputError(f"the mask diameter must be positive (got {diameter_A!r} A)",
                                        field="mask_diameter_A")
            if radius + edge_px > n / 2:
                raise CryolabInputError(f"a mask of {2 * radius * self.pixel_size_A:g} A with a {edge_px:g} px edge "
                                        f"does not fit in the {n} px box", field="mask_diameter_A")
            m = to_numpy(soft_circle_mask(n, radius, edge_px))
        if not (m > 0).any():
            raise CryolabInputError("the mask is empty (no pixel above 0)", field="mask")
        r = np.hypot(*(np.mgrid[:n, :n] - n // 2))
        if self.align and (m[r > n / 2] > 0).any():
            raise CryolabInputError(f"the mask reaches beyond {n / 2:g} px from the centre: rotated, those pixels "
                                    "would come from outside the box (or align=False)", field="mask")
        return to_device(m.astype(np.float32), xp)

    # ------------------------------------------------------------------ one batch
    def _corrected(self, rows):
        """``(images [B, N, N] on the device, background variance sum, noise gain sum)``."""
        xp, n = self.xp, self.n
        raw = to_device(self.stack.read(rows), xp)
        bg = 0.0
        if self._background is not None:
            bg = float(xp.var(raw.reshape(len(rows), -1)[:, self._background], axis=1, ddof=1).sum())
        gain = float(len(rows))
        if self.ctf == "none" and not self.align:
            return raw, bg, gain
        ft = rfft2c(raw)
        if self.align:
            origins = self.stack.origins_A(rows) / self.stack.pixel_size_A
            ft = ft * centring_ramps(n, to_device(origins, xp), xp)     # the particle back to the box centre
        if self.ctf != "none":
            c = ctf_2d(self.stack.ctf(rows), n, self.pixel_size_A, xp=xp)
            if self.ctf == "flip":
                ft = ft * xp.where(c < 0, xp.float32(-1), xp.float32(1))
            else:
                w = c / (c * c + xp.float32(1 / self.wiener_snr))
                ft = ft * w
                weight = xp.full(n // 2 + 1, 2.0, dtype=xp.float64)      # both halves of the full grid
                weight[0] = 1.0
                if n % 2 == 0:
                    weight[-1] = 1.0
                gain = float(((w.astype(xp.float64) ** 2) * weight).sum()) / (n * n)
        images = irfft2c(ft, n).astype(xp.float32, copy=False)
        if self.align:
            images = rotate_images(images, -self.stack.eulers(rows)[:, 2], self.reach_px)
        return images, bg, gain

    def transfer(self, rows):
        """What the preparation leaves of the microscope's CTF, per image, in the aligned frame:
        ``[B, N, N//2+1]`` (centred half grid, float32 on the device): ``|CTF|`` (``"flip"``),
        ``CTF^2 / (CTF^2 + 1 / wiener_snr)`` (``"wiener"``); None for ``"none"``. Aligning rotates
        the image by ``-psi``, which turns an astigmatic CTF's axis by ``+psi``."""
        if self.ctf == "none":
            return None
        params = self.stack.ctf(rows)
        if self.align:
            params = replace(params, defocus_angle_deg=np.asarray(params.defocus_angle_deg, dtype=np.float64)
                             + self.stack.eulers(rows)[:, 2])
        c = ctf_2d(params, self.n, self.pixel_size_A, xp=self.xp)
        if self.ctf == "flip":
            return self.xp.abs(c)
        return c * c / (c * c + self.xp.float32(1 / self.wiener_snr))

    def fit_ctf_mean(self, batch_size: int = 256, keep=None):
        """One pass: the CTF-corrected mean image ``mu`` of the aligned images ``y_i`` (least squares
        with their transfers ``H_i``, :meth:`transfer`: ``mu = sum H_i y_i / (sum H_i^2 + eps)`` per
        Fourier pixel, ``eps`` = 1e-6 of the number of images; Bhamre, Zhang and Singer 2016), set as
        the mean that :meth:`batches` subtracts (``H_i mu`` from each image). Returns the mean of the
        images' vectors ``[n_pixels]`` (float64 on the device), that is, the plain mean image; sets
        :attr:`noise_variance` as a pass of :meth:`batches` does. ``keep``: called with ``(rows,
        vectors)`` of every batch (the images' own vectors, before the mean is known)."""
        xp, n = self.xp, self.n
        numerator = xp.zeros((n, n // 2 + 1), dtype=xp.complex128)
        denominator = xp.zeros((n, n // 2 + 1), dtype=xp.float64)
        plain = xp.zeros(self.n_pixels, dtype=xp.float64)
        for chunk, images in self._pass(batch_size):
            h = self.transfer(chunk)
            numerator += (h * rfft2c(images)).sum(axis=0)
            denominator += (h.astype(xp.float64) ** 2).sum(axis=0)
            v = self.vectors(images)
            plain += v.sum(axis=0, dtype=xp.float64)
            if keep is not None:
                keep(chunk, v)
        mean_ft = numerator / (denominator + 1e-6 * self.n_images)
        self.set_ctf_mean(irfft2c(mean_ft.astype(xp.complex64), n))
        return plain / self.n_images

    def set_ctf_mean(self, image):
        """Use ``image`` ``[N, N]`` (aligned frame) as the CTF-corrected mean that :meth:`batches`
        subtracts, filtered by each image's transfer (None: nothing is subtracted)."""
        if image is None:
            self.ctf_mean, self._mean_ft = None, None
            return
        m = np.asarray(to_numpy(image), dtype=np.float32)
        if m.shape != (self.n, self.n) or self.ctf == "none":
            raise CryolabInputError(f"a CTF-corrected mean must be [{self.n}, {self.n}] and needs ctf 'flip' or "
                                    f"'wiener' (shape {m.shape}, ctf {self.ctf!r})", field="ctf_mean")
        self.ctf_mean = m
        self._mean_ft = rfft2c(to_device(m, self.xp))

    def images(self, rows):
        """Aligned, CTF-corrected images of ``rows`` times the mask, ``[B, N, N]`` float32 on the device."""
        return self._corrected(np.atleast_1d(rows))[0] * self.mask

    def vectors(self, images):
        """Analysis vectors ``[B, n_pixels]`` (float32) of aligned images: ``m * (y - c)`` (module doc)."""
        xp = self.xp
        y = images.reshape(len(images), -1)[:, self.pixels]
        w2 = self.weights * self.weights
        c = (y * w2).sum(axis=1, keepdims=True) / w2.sum()
        return ((y - c) * self.weights).astype(xp.float32, copy=False)

    def batches(self, batch_size: int, rows=None):
        """Yield ``(rows, vectors [B, n_pixels])`` in order; a pass over every image also sets
        :attr:`noise_variance` (the variance of the raw background pixels, outside the mask's reach,
        averaged over the images; with ``ctf="wiener"`` times the filter's mean power; None without
        a background of at least 16 pixels). With a CTF-corrected mean (:meth:`fit_ctf_mean`), each
        image loses its own view of it, ``H_i mu``, before it becomes a vector."""
        for chunk, images in self._pass(batch_size, rows):
            v = self.vectors(images)
            yield chunk, v if self._mean_ft is None else v - self.mean_vectors(chunk)

    def mean_vectors(self, rows):
        """The vectors ``[B, n_pixels]`` of each image's own view of the CTF-corrected mean, ``H_i mu``
        (what :meth:`batches` subtracts; vectors are linear in the image)."""
        return self.vectors(irfft2c(self.transfer(rows) * self._mean_ft, self.n).astype(self.xp.float32))

    def _pass(self, batch_size: int, rows=None):
        """Yield ``(rows, aligned images)``; a pass over every image sets :attr:`noise_variance`."""
        if int(batch_size) < 1:
            raise CryolabInputError(f"batch_size must be >= 1, got {batch_size!r}", field="batch_size")
        every = rows is None
        rows = np.arange(self.n_images) if rows is None else np.asarray(rows)
        bg = gain = 0.0
        for lo in range(0, len(rows), int(batch_size)):
            chunk = rows[lo:lo + int(batch_size)]
            images, b, g = self._corrected(chunk)
            bg, gain = bg + b, gain + g
            yield chunk, images
        if every and self._background is not None:
            self.noise_variance = bg / len(rows) * gain / len(rows)

    def unflatten(self, vectors) -> np.ndarray:
        """Vectors ``[k, n_pixels]`` back to images ``[k, N, N]`` (NumPy; zero outside the mask)."""
        v = np.asarray(to_numpy(vectors))
        out = np.zeros((len(v), self.n * self.n), dtype=np.float64)
        out[:, to_numpy(self.pixels)] = v
        return out.reshape(len(v), self.n, self.n)
