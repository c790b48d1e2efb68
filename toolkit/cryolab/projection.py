"""Projections of 3D maps and in-plane rotations of 2D references, in RELION's conventions.

* :class:`FourierProjector` - central slices of a padded, gridding-corrected 3D transform
  (the fast path used by refinement and simulation, vectorised over orientations);
* :class:`FourierRotator2D` - in-plane rotations of 2D references in Fourier space;
* :func:`project_real` - slow real-space projector (teaching view and test oracle);
* :func:`shift_ramps` / :func:`phase_shift_2d` - translations as Fourier phase ramps.

Conventions (see ``docs/conventions.md``): volumes ``[z, y, x]``, images ``[y, x]``, centre
voxel/pixel ``N // 2``; frequencies on cryolab's centred half grid (:mod:`cryolab.fourier`).
The image frequency ``k = (kx, ky)`` samples the volume transform at ``A.T @ (kx, ky, 0)``
with ``A`` = :func:`cryolab.geometry.euler_to_matrix`, so the projection is
``P(x, y) = sum_z V(A.T @ (x, y, z))``. A particle with origin ``(ox, oy)`` (pixels, i.e.
``_rlnOriginX/YAngst / pixel size``) is the centred projection moved by ``(-ox, -oy)``.

Scale: projections are line integrals (sum over z, voxel units), like ``relion_project``.
The Fourier transforms are those of :func:`cryolab.fourier.rfft2c` (unnormalised forward).

Method (as RELION's ``Projector``): divide the map by ``sinc^2(r / M)`` (``r`` the distance
to the centre voxel, ``M`` the padded box: Fourier transform of the linear interpolation
kernel), zero-pad to ``M = pad * N`` (rounded up to even), take the centred half transform,
keep it within radius ``pad * max_shell``, and interpolate (trilinear / bilinear) at
``pad * A.T k``; points with ``kx' < 0`` use ``F(-k) = conj F(k)``.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import fft_kwargs, get_fft, get_xp, to_device
from .ctf import CTFParams, ctf_2d
from .fourier import irfft2c, rfft2c, rfft_grid
from .geometry import euler_to_matrix

__all__ = ["FourierProjector", "FourierRotator2D", "project_real", "shift_ramps", "padded_size",
           "phase_shift_2d", "as_rotation_matrices"]

# points interpolated per vectorised block: bounds the temporaries (~60 bytes a point) so that
# they stay in the CPU caches and their memory is reused from block to block (2^21 was ~1.7x
# slower at 64 px: fresh pages and cache misses)
_BLOCK_POINTS = 1 << 17


def as_rotation_matrices(rotations_or_eulers, xp=np):
    """Rotation matrices ``[R, 3, 3]`` (float64) from matrices ``[R, 3, 3]`` or Euler angles
    ``[R, 3]`` / ``[3]`` (rot, tilt, psi in degrees, RELION ZYZ).

    The number of dimensions decides: 3 = matrices, 2 or 1 = angles (so a single matrix must be
    given as ``[1, 3, 3]``; ``[3, 3]`` is read as three sets of angles).
    """
    a = to_device(rotations_or_eulers, xp).astype(xp.float64)
    if a.ndim == 3 and a.shape[1:] == (3, 3):
        return a
    if a.ndim in (1, 2) and a.shape[-1] == 3:
        a = a.reshape(-1, 3)
        return euler_to_matrix(a[:, 0], a[:, 1], a[:, 2])
    raise ValueError(f"expected rotation matrices [R,3,3] or Euler angles [R,3], got {a.shape}")


def shift_ramps(n: int, shifts_px, xp=np, kx=None, ky=None):
    """Phase ramps that translate images of box ``n`` by ``shifts_px`` ``[S, 2]`` (x, y pixels).

    Multiplying ``rfft2c(f)`` by ramp ``s`` gives the transform of ``g(x, y) = f(x - sx, y - sy)``
    (content moves by ``+s``): ``exp(-2 pi i (kx sx + ky sy) / N)``, phases in double precision.
    To centre a particle with RELION origin ``o``, shift it by ``+o``; to make a particle with
    origin ``o`` from a centred projection, shift by ``-o``. Returns ``[S, N, N//2+1]`` complex64
    over the centred half grid, or ``[S, M]`` at the given integer frequencies ``kx``, ``ky``
    ``[M]`` (the likelihood pixels of :mod:`cryolab.engine`).

    >>> r = shift_ramps(4, [[1, 0]])
    >>> r.shape, round(float(r[0, 2, 1].real), 6)      # kx = 1 moved by one pixel: a quarter turn
    ((1, 4, 3), 0.0)
    """
    s = xp.asarray(shifts_px, dtype=xp.float64).reshape(-1, 2)
    full = kx is None
    if full:
        gy, gx = rfft_grid(n, 2, xp, True)
        kx, ky = gx.ravel(), gy.ravel()
    phase = -2.0 * np.pi / n * (s[:, 0:1] * kx[None, :] + s[:, 1:2] * ky[None, :])
    ramps = xp.exp(1j * phase).astype(xp.complex64)
    return ramps.reshape(-1, n, n // 2 + 1) if full else ramps


def phase_shift_2d(ft_images, shifts_px):
    """Translate images given by their centred half transforms ``[..., S, N, N//2+1]`` by
    ``shifts_px`` ``[S, 2]`` (x, y pixels; see :func:`shift_ramps` for the sign)."""
    xp = get_xp(ft_images)
    n = ft_images.shape[-2]
    return ft_images * shift_ramps(n, shifts_px, xp)


def padded_size(n: int, pad: float) -> int:
    """The padded box of a Fourier projector or back-projector: ``round(pad * n)``, rounded up to even.

    >>> padded_size(65, 2), padded_size(64, 1.5)
    (130, 96)
    """
    m = int(round(pad * n))
    return m + m % 2


def _centred_coords(n: int, ndim: int, xp):
    g = xp.arange(n, dtype=xp.float32) - n // 2
    return xp.meshgrid(*([g] * ndim), indexing="ij")


def _padded_half_transform(x, m: int, ndim: int, a: int, b: int, c: int):
    """The centred half transform (:func:`cryolab.fourier.rfft3c` / ``rfft2c``, complex64) of
    ``x [..., N^ndim]`` zero-padded to ``M^ndim`` around its centre, at frequencies ``-a .. b`` of
    the centred axes and ``0 .. c`` of the half axis only.

    Pruned: the lines of each axis that hold nonzero values are transformed (each placed as
    ``ifftshift`` would place it in a zeroed line of length ``M``) and only the kept frequencies
    go on, axes in the order of ``scipy.fft.rfftn`` (half axis, then the others in order): the
    same 1D transforms of the same lines as the whole padded grid's, the other lines being zero."""
    xp = get_xp(x)
    fft, kw = get_fft(xp), fft_kwargs(xp)
    n = x.shape[-1]
    pos = (xp.arange(n) - n // 2) % m  # where the padded box's samples land after ifftshift
    buf = xp.zeros(x.shape[:-1] + (m,), dtype=xp.float32)
    buf[..., pos] = x
    y = fft.rfft(buf, axis=-1, **kw)[..., :c + 1]
    keep = xp.arange(-a, b + 1) % m   # frequency f sits at index f mod M
    for j in range(ndim - 1):
        ax = y.ndim - ndim + j
        buf = xp.zeros(y.shape[:ax] + (m,) + y.shape[ax + 1:], dtype=y.dtype)
        buf[(slice(None),) * ax + (pos,)] = y
        y = xp.take(fft.fft(buf, axis=ax, overwrite_x=True, **kw), keep, axis=ax)
    return y.astype(xp.complex64, copy=False)


class _PaddedHalfFT:
    """Gridding-corrected, zero-padded centred half transform of ``ndim``-D data ``[..., N^ndim]``,
    cropped to the sphere of radius ``pad * max_shell`` (zero outside, as RELION).

    ``data`` is stored flat ``[..., S^(ndim-1) * (H+1)]`` with ``S = 2H+1``: centred axes hold
    frequency ``f`` at index ``H + f``, the last (half) axis holds ``f >= 0`` at index ``f``.
    """

    def __init__(self, x, ndim: int, pad: float, max_shell):
        xp = get_xp(x)
        self.xp, self.ndim = xp, ndim
        self.n = n = x.shape[-1]
        self.max_shell = float(n // 2 if max_shell is None else min(max_shell, n // 2))
        self.m = m = padded_size(n, pad)
        self.pad = m / n
        x = xp.asarray(x, dtype=xp.float32)
        # gridding pre-correction: linear interpolation on the padded grid convolves with a
        # triangle, whose transform is sinc^2(r / M)
        r = xp.sqrt(sum(c ** 2 for c in _centred_coords(n, ndim, xp)))
        x = x / (xp.sinc(r / m) ** 2).astype(xp.float32)
        # crop to half-width H around frequency 0 (one extra sample for interpolation)
        r_pad = self.pad * self.max_shell
        self.h = h = int(math.ceil(r_pad)) + 1
        s = 2 * h + 1
        store = xp.zeros(x.shape[:-ndim] + (s,) * (ndim - 1) + (h + 1,), dtype=xp.complex64)
        a, b = min(h, m // 2), min(h, m - 1 - m // 2)  # frequencies -a..b exist in both
        c = min(h, m // 2)
        dst = (Ellipsis,) + (slice(h - a, h + b + 1),) * (ndim - 1) + (slice(0, c + 1),)
        store[dst] = _padded_half_transform(x, m, ndim, a, b, c)
        grids = rfft_grid(s, ndim, xp, True)  # centred on index h for the centred axes
        r2 = sum(g.astype(xp.float32) ** 2 for g in grids)
        r_keep = round(r_pad)  # RELION keeps |k_pad| <= ROUND(pad * r_max)
        store *= (r2 <= r_keep ** 2)
        self.shape = store.shape[-ndim:]
        self.data = store.reshape(store.shape[:-ndim] + (-1,))
        strides, acc = [], 1
        for size in reversed(self.shape):
            strides.insert(0, acc)
            acc *= size
        self.strides = strides

    def _gather(self, shift: int, base):
        """``data[..., base + shift]`` (a new array). NumPy: ``take`` with ``mode="clip"`` (the
        indices are inside by construction; ~2.5x faster than fancy indexing for 2^17 complex64
        points, NumPy 2.2), the same values."""
        if self.xp is np:
            return np.take(self.data[..., shift:], base, axis=-1, mode="clip")
        return self.data[..., shift:][..., base]

    def sample(self, coords, out=None):
        """Interpolate at padded-grid frequencies ``coords`` (tuple in axis order, last = x).

        Returns ``[..., P]`` complex64 (leading axes of the data first, then the points' shape
        flattened), written into ``out`` (contiguous) when given. Linear interpolation; ``x < 0``
        points read the Hermitian mate.
        """
        xp = self.xp
        sign = xp.where(coords[-1] < 0, np.float32(-1), np.float32(1)).ravel()
        base, fracs = 0, []
        for axis, (c, stride) in enumerate(zip(coords, self.strides)):
            centred = axis < self.ndim - 1
            c = c.ravel() * sign
            c += np.float32(self.h if centred else 0)  # array index, >= 0
            xp.clip(c, 0, (2 * self.h if centred else self.h) - 1e-3, out=c)
            c0 = xp.floor(c)       # c >= 0: the integer part; c - c0 in float32 (no int32 operand,
            i0 = c0.astype(xp.int32)    # which would take a float64 detour): the same fraction
            c -= c0
            fracs.append(c)
            base = i0 * stride if axis == 0 else base + i0 * stride
        weights, shifts = [None], [0]  # corners: products of (1 - f) or f over the axes
        for f, stride in zip(fracs, self.strides):
            g = 1 - f
            weights = [g if w is None else w * g for w in weights] + \
                      [f if w is None else w * f for w in weights]
            shifts = shifts + [s + stride for s in shifts]
        lead = self.data.shape[:-1]
        if out is None:
            out = xp.empty(lead + (base.size,), dtype=xp.complex64)
        val = out.reshape(lead + (base.size,))
        for c, (w, s) in enumerate(zip(weights, shifts)):
            term = self._gather(s, base)
            if c == 0:
                xp.multiply(term, w, out=val)
            else:
                term *= w
                val += term
        val.imag *= sign  # conj for the Hermitian mates
        return out


class _SliceSampler:
    """Frequencies inside ``max_shell`` of the output half grid (``index``: their flat positions),
    or a given pixel list ``kx``, ``ky`` (all of it; ``outside``: those beyond ``max_shell``), and
    block-wise interpolation at them."""

    def __init__(self, ft: _PaddedHalfFT, max_shell, kx=None, ky=None):
        xp, n = ft.xp, ft.n
        shell = ft.max_shell if max_shell is None else min(float(max_shell), ft.max_shell)
        if kx is None:
            ky, kx = rfft_grid(n, 2, xp, True)
            kx, ky = kx.ravel(), ky.ravel()
            inside = (kx ** 2 + ky ** 2) <= shell ** 2
            self.index = xp.nonzero(inside)[0]
            kx, ky = kx[self.index], ky[self.index]
        else:  # a pixel list: interpolated whole (cheaper than a scatter), ``outside`` zeroed after
            kx, ky = xp.asarray(kx).ravel(), xp.asarray(ky).ravel()
            self.index = xp.arange(kx.size)
            self.outside = xp.nonzero((kx ** 2 + ky ** 2) > shell ** 2)[0]
        self.kx, self.ky = kx.astype(xp.float32), ky.astype(xp.float32)
        self.n, self.xp = n, xp

    def values(self, ft: _PaddedHalfFT, mats, coords_fn):
        """``[..., R, P]`` at the ``P`` frequencies inside; ``coords_fn(mats_block) -> coords
        [Rb, P]`` per axis. One output buffer, filled block by block (no zeroed grid)."""
        xp = self.xp
        r, lead = mats.shape[0], ft.data.shape[:-1]
        p = max(int(self.index.size), 1)
        out = xp.empty(lead + (r, int(self.index.size)), dtype=xp.complex64)
        step = max(1, _BLOCK_POINTS // (p * max(1, int(np.prod(lead)))))
        for start in range(0, r, step):  # blocks of orientations, each fully vectorised
            blk = mats[start:start + step]
            if lead:
                out[..., start:start + blk.shape[0], :] = ft.sample(coords_fn(blk)).reshape(
                    lead + (blk.shape[0], -1))
            else:  # rows of out are contiguous: interpolate straight into them
                ft.sample(coords_fn(blk), out=out[start:start + blk.shape[0]])
        return out

    def run(self, ft: _PaddedHalfFT, mats, coords_fn):
        """Output ``[..., R, N, N//2+1]`` (zero outside ``max_shell``)."""
        xp, n = self.xp, self.n
        r, lead = mats.shape[0], ft.data.shape[:-1]
        out = xp.zeros(lead + (r, n * (n // 2 + 1)), dtype=xp.complex64)
        out[..., self.index] = self.values(ft, mats, coords_fn)
        return out.reshape(lead + (r, n, n // 2 + 1))


class FourierProjector:
    """Central-slice projector of a 3D map (RELION's ``Projector``: padding, trilinear, sinc^2).

    ``volume`` ``[N, N, N]`` (numpy or cupy, any odd or even N); ``pad`` the oversampling of
    the transform (RELION's default 2); ``max_shell`` the largest frequency radius kept
    (default ``N // 2``). The padded transform lives on the volume's device.
    """

    def __init__(self, volume, pad: float = 2, max_shell=None):
        if volume.ndim != 3 or len(set(volume.shape)) != 1:
            raise ValueError(f"FourierProjector needs a cubic volume [N,N,N], got {volume.shape}")
        self.ft = _PaddedHalfFT(volume, 3, pad, max_shell)
        self.xp, self.n, self.pad = self.ft.xp, self.ft.n, self.ft.pad
        self.max_shell = self.ft.max_shell
        self._samplers = {}

    def _sampler(self, max_shell):
        key = None if max_shell is None else float(max_shell)
        if key not in self._samplers:
            self._samplers[key] = _SliceSampler(self.ft, max_shell)
        return self._samplers[key]

    def project_ft(self, rotations, max_shell=None):
        """Centred half transforms ``[R, N, N//2+1]`` (complex64) of the projections.

        ``rotations``: matrices ``[R, 3, 3]`` (or Euler angles ``[R, 3]``). Frequency
        ``(kx, ky)`` takes the map's transform at ``A.T @ (kx, ky, 0)``; zero beyond
        ``max_shell`` (default: the projector's). Equals ``rfft2c`` of the projection image.
        """
        smp = self._sampler(max_shell)
        return smp.run(self.ft, self._padded_mats(rotations), self._coords_fn(smp))

    def project_pixels(self, rotations, kx, ky, max_shell=None):
        """The projections' transforms ``[R, M]`` (complex64) at the half-grid frequencies
        ``kx``, ``ky`` ``[M]`` only (e.g. the likelihood pixels of :mod:`cryolab.engine`).

        Equals ``project_ft(rotations, max_shell)`` read at those pixels, to the bit (the same
        arithmetic per pixel), without making the full slices. Pass the same ``kx``, ``ky``
        arrays call after call: their sampler is kept for the last pair seen.
        """
        key = None if max_shell is None else float(max_shell)
        last = getattr(self, "_pixel_sampler", None)
        if last is None or last[0] is not kx or last[1] is not ky or last[2] != key:
            last = self._pixel_sampler = (kx, ky, key, _SliceSampler(self.ft, max_shell, kx, ky))
        smp = last[3]
        vals = smp.values(self.ft, self._padded_mats(rotations), self._coords_fn(smp))
        vals[:, smp.outside] = 0
        return vals

    def _padded_mats(self, rotations):
        xp = self.xp
        return as_rotation_matrices(rotations, xp).astype(xp.float32) * np.float32(self.pad)

    @staticmethod
    def _coords_fn(smp):
        def coords(m):  # padded-grid frequency A.T (kx, ky, 0) per axis (z, y, x)
            return tuple(m[:, 0, j, None] * smp.kx + m[:, 1, j, None] * smp.ky
                         for j in (2, 1, 0))
        return coords

    def project(self, rotations_or_eulers, origins_px=None, ctf: CTFParams | None = None,
                pixel_size_A: float | None = None, max_shell=None):
        """Projection images, optionally shifted and CTF-modulated.

        Parameters
        ----------
        rotations_or_eulers : array ``[R, 3, 3]`` or ``[R, 3]``
            Rotation matrices, or RELION Euler angles ``(rot, tilt, psi)`` in degrees.
        origins_px : array ``[R, 2]``, optional
            RELION origins ``(ox, oy)`` in pixels (``_rlnOriginX/YAngst`` / pixel size); image
            ``r`` is the centred projection moved by ``(-ox, -oy)``.
        ctf : CTFParams, optional
            One parameter set or one per image, applied as ``CTF * FT``.
        pixel_size_A : float, optional
            Pixel size in Angstrom; needed with ``ctf``.
        max_shell : float, optional
            Frequencies beyond this radius (Fourier pixels) are left out.

        Returns
        -------
        float32 array ``[R, N, N]``, axes ``(y, x)``
            Line integrals of the map (sum over z in voxel units, like ``relion_project``).

        Examples
        --------
        A blob 5 voxels along +x from the centre of a 32^3 map:

        >>> import numpy as np
        >>> z, y, x = np.mgrid[:32, :32, :32] - 16
        >>> vol = np.exp(-((x - 5) ** 2 + y ** 2 + z ** 2) / 8.0).astype(np.float32)
        >>> proj = FourierProjector(vol)
        >>> img = proj.project([[0.0, 0.0, 0.0], [0.0, 0.0, 90.0], [0.0, 90.0, 0.0]])
        >>> img.shape, img.dtype
        ((3, 32, 32), dtype('float32'))
        >>> def peak(i):   # (y, x) pixel of the maximum
        ...     return tuple(int(v) for v in np.unravel_index(np.argmax(i), i.shape))
        >>> [peak(i) for i in img]   # no rotation; psi = 90: to -y; tilt = 90: seen along x
        [(16, 21), (11, 16), (16, 16)]
        >>> peak(proj.project(np.zeros((1, 3)), origins_px=[[2.0, 0.0]])[0])   # moved by -ox
        (16, 19)
        """
        xp = self.xp
        ft = self.project_ft(rotations_or_eulers, max_shell)
        if origins_px is not None:
            ft = phase_shift_2d(ft, -xp.asarray(origins_px, dtype=xp.float32).reshape(-1, 2))
        if ctf is not None:
            if pixel_size_A is None:
                raise ValueError("project: a CTF needs pixel_size_A")
            ft = ft * ctf_2d(ctf, self.n, pixel_size_A, xp=xp)
        return irfft2c(ft, self.n).astype(xp.float32, copy=False)


class FourierRotator2D:
    """In-plane rotations of 2D references ``[K, N, N]`` in Fourier space (bilinear, sinc^2).

    The rotation by ``psi`` is RELION's 2D ``Euler_angles2matrix`` (rot = tilt = 0):
    ``A = [[cos psi, sin psi], [-sin psi, cos psi]]``; frequency ``k`` samples the reference
    transform at ``A.T k``, so the rotated image is ``r(x) = ref(A.T x)`` (x = (x, y)).
    """

    def __init__(self, images, pad: float = 2, max_shell=None):
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"FourierRotator2D needs square images [K,N,N], got {images.shape}")
        self.ft = _PaddedHalfFT(images, 2, pad, max_shell)
        self.xp, self.n, self.pad = self.ft.xp, self.ft.n, self.ft.pad
        self.max_shell = self.ft.max_shell
        self._samplers = {}

    def rotate_ft(self, psi_deg, max_shell=None):
        """Centred half transforms ``[K, R, N, N//2+1]`` of the references rotated by ``psi_deg`` ``[R]``."""
        xp = self.xp
        key = None if max_shell is None else float(max_shell)
        if key not in self._samplers:
            self._samplers[key] = _SliceSampler(self.ft, max_shell)
        smp = self._samplers[key]
        psi = xp.deg2rad(xp.asarray(psi_deg, dtype=xp.float64).reshape(-1))
        c = (xp.cos(psi) * self.pad).astype(xp.float32)
        s = (xp.sin(psi) * self.pad).astype(xp.float32)
        cs = xp.stack([c, s], axis=-1)

        def coords(b):  # A.T k = (c kx - s ky, s kx + c ky), returned as (y, x)
            cb, sb = b[:, 0, None], b[:, 1, None]
            return (sb * smp.kx + cb * smp.ky, cb * smp.kx - sb * smp.ky)

        return smp.run(self.ft, cs, coords)

    def rotate(self, psi_deg, max_shell=None):
        """Rotated references as images ``[K, R, N, N]`` (float32)."""
        return irfft2c(self.rotate_ft(psi_deg, max_shell), self.n).astype(self.xp.float32)


def project_real(volume, euler_or_matrix, order: int = 1):
    """Real-space projection ``P(x, y) = sum_z V(A.T @ (x, y, z))`` (slow; oracle and teaching).

    ``volume`` ``[N, N, N]`` indexed ``[z, y, x]``; coordinates relative to voxel ``N // 2``;
    ``euler_or_matrix`` one pose (``[3]`` angles in degrees or a ``[3, 3]`` matrix) -> ``[N, N]``,
    or ``[R, 3, 3]`` matrices -> ``[R, N, N]``. Interpolation by ``map_coordinates`` of spline ``order``, zero outside.
    """
    xp = get_xp(volume)
    if xp is np:
        from scipy import ndimage
    else:  # pragma: no cover - GPU only
        from cupyx.scipy import ndimage
    pose = to_device(euler_or_matrix, xp)
    single = pose.ndim < 3
    mats = as_rotation_matrices(pose[None] if pose.ndim == 2 else pose, xp)
    n = volume.shape[-1]
    z, y, x = _centred_coords(n, 3, xp)
    v = xp.stack([x.ravel(), y.ravel(), z.ravel()]).astype(xp.float64)  # (x, y, z) per sample
    vol = xp.asarray(volume, dtype=xp.float32)
    out = []
    for a in mats:  # oracle only: one map_coordinates call per pose
        r = a.T @ v + n // 2
        vals = ndimage.map_coordinates(vol, r[::-1], order=order, mode="constant", cval=0.0)
        out.append(vals.reshape(n, n, n).sum(axis=0))
    out = xp.stack(out).astype(xp.float32)
    return out[0] if single else out
