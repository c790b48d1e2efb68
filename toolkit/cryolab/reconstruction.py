"""Direct Fourier reconstruction (back-projection) in RELION's conventions.

* :class:`BackProjector` - 3D maps from 2D slices (particle images or the M-step's
  pre-summed ``sum w C X`` / ``sum w C^2`` slices);
* :class:`BackProjector2D` - 2D class averages from in-plane rotated slices;
* :func:`reconstruct_stack` - a map from a :class:`cryolab.io.ParticleStack`, streamed in batches.

Conventions (``docs/conventions.md``): volumes ``[z, y, x]``, images ``[y, x]``, centre pixel
``N // 2``; slices are centred half transforms (:func:`cryolab.fourier.rfft2c`, unnormalised).
Image frequency ``k = (kx, ky)`` of a particle with rotation ``A``
(:func:`cryolab.geometry.euler_to_matrix`) lies at ``A.T @ (kx, ky, 0)`` in the map's transform;
in 2D, ``A`` is the 2x2 matrix of ``euler_to_matrix(0, 0, psi)``. Insertion is the adjoint of
linear interpolation at those points: each slice pixel within ``|k| <= N // 2`` (except the
redundant ``kx = 0, ky < 0`` half column) is spread with trilinear (bilinear) weights onto the
padded grid (``M = pad * N`` rounded up to even) at ``(M / N) * A.T k``; a point with
``x < 0`` goes to its Hermitian mate ``-p`` with the conjugate value.

Accumulators ``data = sum C X`` (complex) and ``weight = sum C^2`` (real) are centred half grids
``[M, M, M//2+1]`` (``[M, M//2+1]`` in 2D), float64 by default. :meth:`reconstruct` sums the
Friedel mates on the ``kx = 0`` plane, symmetrises, divides (plain or Wiener/MAP), inverse
transforms the padded grid, crops the central ``N`` box and corrects for the interpolation
kernel (divides by ``sinc^2(d / M)`` per axis, the transform of the linear kernel).
"""
from __future__ import annotations


import numpy as np

from .backend import get_xp, to_device, to_numpy
from .ctf import CTFParams, ctf_2d
from .fourier import irfft2c, irfft3c, radial_average, rfft2c, rfft3c, rfft_grid, shell_index
from .geometry import euler_to_matrix

__all__ = ["BackProjector", "BackProjector2D", "reconstruct_stack", "tau2_from_fsc"]

# interpolation-corner entries handled per vectorised block (bounds temporary memory)
_BLOCK_ENTRIES = 1 << 22


def _padded_size(n: int, pad: float) -> int:
    """Padded box ``round(pad * n)`` rounded up to even (as the projector)."""
    m = int(round(pad * n))
    return m + m % 2


def _scatter_add(target, idx, values):
    """``target.ravel()[idx] += values`` with repeated indices summed (numpy or cupy, real dtypes)."""
    xp = get_xp(target)
    if xp is np:
        np.add.at(target, idx, values)
    else:  # pragma: no cover - GPU only
        import cupyx
        cupyx.scatter_add(target, idx, values)


def _corners(coords, m: int):
    """Linear-interpolation neighbours of padded-grid points ``coords`` ``[K, d]`` (x, y[, z], x >= 0).

    Returns flat indices ``[2^d, K]`` into the centred half grid ``[M, (M,) M//2+1]`` and weights
    ``[2^d, K]``. Centred axes wrap periodically (index ``M//2 + f`` modulo ``M``); a neighbour
    beyond the last ``x`` column ``M // 2`` gets weight 0 (only reachable on the outermost shell).
    """
    xp = get_xp(coords)
    d, k = coords.shape[-1], coords.shape[0]
    half = m // 2 + 1
    itype = xp.int32 if m * m * half < 2 ** 31 else xp.int64
    flat = xp.zeros((1, k), dtype=itype)
    w = xp.ones((1, k), dtype=coords.dtype)
    for axis in range(d - 1, -1, -1):  # array order [z, y, x]: slowest axis first
        c = coords[:, axis]
        c0 = xp.floor(c)
        f = c - c0
        i0 = c0.astype(itype)
        if axis == 0:
            ids = xp.stack([xp.minimum(i0, half - 1), xp.minimum(i0 + 1, half - 1)])
            ws = xp.stack([1 - f, xp.where(i0 + 1 < half, f, 0)])
            size = half
        else:
            i0 = (i0 + m // 2) % m
            ids = xp.stack([i0, (i0 + 1) % m])
            ws = xp.stack([1 - f, f])
            size = m
        flat = (flat[:, None] * size + ids[None]).reshape(-1, k)
        w = (w[:, None] * ws[None]).reshape(-1, k)
    return flat, w


def _interpolate(grid, coords, m: int):
    """Linear interpolation of a half grid (real or complex) at padded-grid points ``coords`` [K, d]."""
    xp = get_xp(grid)
    neg = coords[:, 0] < 0
    coords = xp.where(neg[:, None], -coords, coords)
    idx, w = _corners(coords, m)
    vals = (grid.reshape(-1)[idx] * w).sum(axis=0)
    if xp.iscomplexobj(vals):
        vals = xp.where(neg, vals.conj(), vals)
    return vals


def _host(a):
    return np.asarray(to_numpy(a), dtype=np.float64)


def _plain_ratio(data, weight, eps: float):
    """``data / (weight + eps * <weight>)``, ``<weight>`` the mean over voxels with weight > 0."""
    pos = weight > 0
    mean_w = float(weight[pos].mean()) if bool(pos.any()) else 1.0
    return data / (weight + eps * mean_w)


def _mirror_index(m: int, xp):
    """Index of frequency ``-f`` for each index of a centred axis of length ``M``."""
    return (2 * (m // 2) - xp.arange(m)) % m


def tau2_from_fsc(fsc, weight_spectrum, whole_map: bool = False):
    """Signal power per shell from an FSC (RELION's refinement rule).

    ``SSNR = FSC / (1 - FSC)`` with FSC clipped to ``[0.001, 0.999]`` and
    ``tau2 = SSNR / weight_spectrum`` (the per-shell weight of :meth:`BackProjector.weight_spectrum`,
    i.e. the inverse noise power of the reconstruction). ``whole_map``: the FSC is between half
    maps but ``tau2`` is for the map of all particles (``FSC' = sqrt(2 FSC / (1 + FSC))``).
    """
    f = np.clip(np.asarray(fsc, dtype=np.float64), 0.001, None)
    if whole_map:
        f = np.sqrt(2 * f / (f + 1))
    f = np.minimum(f, 0.999)
    w = np.asarray(weight_spectrum, dtype=np.float64)[: f.size]
    return np.where(w > 0, (f / (1 - f)) / np.maximum(w, 1e-300), 0.0)


class _FourierAccumulator:
    """Shared core of :class:`BackProjector` (``ndim = 3``) and :class:`BackProjector2D` (``2``)."""

    ndim = 3

    def __init__(self, n: int, pad: float = 2, xp=np, dtype=np.float64, max_shell=None):
        self.n, self.xp = int(n), xp
        self.m = m = _padded_size(self.n, pad)
        self.pad = m / self.n  # effective oversampling (M / N)
        self.r_max = self.n // 2 if max_shell is None else min(int(max_shell), self.n // 2)
        rdt = np.dtype(dtype)
        shape = (m,) * (self.ndim - 1) + (m // 2 + 1,)
        self.data = xp.zeros(shape, dtype=np.result_type(rdt, np.complex64))
        self.weight = xp.zeros(shape, dtype=rdt)
        ky, kx = rfft_grid(self.n, 2, xp, True)
        keep = ((kx ** 2 + ky ** 2 <= self.r_max ** 2) & ~((kx == 0) & (ky < 0))).ravel()
        self._pix = xp.nonzero(keep)[0]  # slice pixels that are inserted
        self._kx = kx.ravel()[self._pix].astype(xp.float64)
        self._ky = ky.ravel()[self._pix].astype(xp.float64)

    # ------------------------------------------------------------------ insertion
    def _slice_coords(self, poses):
        """Padded-grid coordinates ``[R, P, d]`` (x, y[, z]) of the inserted slice pixels."""
        raise NotImplementedError

    def _insert_block(self, ft, wt, poses):
        xp = self.xp
        coords = self._slice_coords(poses).reshape(-1, self.ndim)
        vals = ft.reshape(ft.shape[0], -1)[:, self._pix].reshape(-1)
        wts = wt.reshape(wt.shape[0], -1)[:, self._pix].reshape(-1).astype(xp.float64)
        neg = coords[:, 0] < 0
        coords = xp.where(neg[:, None], -coords, coords)
        re = vals.real.astype(xp.float64)
        im = xp.where(neg, -vals.imag, vals.imag).astype(xp.float64)
        idx, w = _corners(coords, self.m)
        idx = idx.reshape(-1)
        rdt = self.weight.dtype
        dflat = self.data.reshape(-1).view(rdt)  # interleaved (re, im)
        _scatter_add(dflat, 2 * idx, (w * re).reshape(-1).astype(rdt, copy=False))
        _scatter_add(dflat, 2 * idx + 1, (w * im).reshape(-1).astype(rdt, copy=False))
        _scatter_add(self.weight.reshape(-1), idx, (w * wts).reshape(-1).astype(rdt, copy=False))

    def _insert(self, ft_slices, weight_slices, poses):
        xp, n = self.xp, self.n
        ft = to_device(ft_slices, xp).reshape(-1, n, n // 2 + 1)
        r = ft.shape[0]
        if weight_slices is None:
            wt = xp.ones((r, n, n // 2 + 1), dtype=xp.float32)
        else:
            wt = xp.broadcast_to(to_device(weight_slices, xp), (r, n, n // 2 + 1))
        step = max(1, _BLOCK_ENTRIES // (max(int(self._pix.size), 1) * 2 ** self.ndim))
        for s in range(0, r, step):
            self._insert_block(ft[s:s + step], wt[s:s + step], poses[s:s + step])

    def _slices_from_images(self, images, ctf, shifts_px, pixel_size_A, sigma2_noise):
        """``(C X / sigma2, C^2 / sigma2)`` slices from images ``[R, N, N]`` or their transforms."""
        xp, n = self.xp, self.n
        x = to_device(images, xp)
        if x.ndim == 2:
            x = x[None]
        ft = x if xp.iscomplexobj(x) else rfft2c(x.astype(xp.float32, copy=False))
        ft = ft.astype(xp.complex64, copy=False)
        r = ft.shape[0]
        if shifts_px is not None:  # centre the particle: move it by +origin (conventions.md)
            from .projection import phase_shift_2d
            ft = phase_shift_2d(ft, xp.asarray(shifts_px, dtype=xp.float32).reshape(-1, 2))
        if ctf is None:
            c = xp.ones((1, n, n // 2 + 1), dtype=xp.float32)
        elif isinstance(ctf, CTFParams):
            if pixel_size_A is None:
                raise ValueError("insert_images: CTF parameters need pixel_size_A")
            c = ctf_2d(ctf, n, pixel_size_A, xp=xp)
        else:
            c = to_device(ctf, xp).astype(xp.float32, copy=False).reshape(-1, n, n // 2 + 1)
        inv_s2 = xp.float32(1.0)
        if sigma2_noise is not None:
            s2 = xp.asarray(to_device(sigma2_noise, xp), dtype=xp.float64)
            if s2.ndim == 1:  # per resolution shell
                shells = xp.minimum(shell_index(n, 2, xp), s2.size - 1)
                s2 = s2[shells]
            inv_s2 = (1.0 / xp.maximum(s2, 1e-300)).astype(xp.float32)
        data = ft * (c * inv_s2)
        weight = xp.broadcast_to(c * c * inv_s2, (r, n, n // 2 + 1))
        return data, weight

    def add(self, other):
        """Add another accumulator's sums (same ``n``, ``pad``, kind) to this one; returns ``self``."""
        if type(other) is not type(self) or other.data.shape != self.data.shape:
            raise ValueError("add: accumulators differ in kind or size")
        self.data += to_device(other.data, self.xp).astype(self.data.dtype, copy=False)
        self.weight += to_device(other.weight, self.xp).astype(self.weight.dtype, copy=False)
        return self

    def reset(self):
        """Zero both accumulators."""
        self.data[...] = 0
        self.weight[...] = 0

    # ------------------------------------------------------------------ spectra
    def _shells(self):
        """Image-shell index ``round(|g| / (M/N))`` of every padded-grid voxel."""
        xp = self.xp
        grids = rfft_grid(self.m, self.ndim, xp, True)
        r = xp.sqrt(sum(g.astype(xp.float64) ** 2 for g in grids))
        return r, xp.rint(r / self.pad).astype(xp.int64)

    def _shell_mean(self, values, shells, inside):
        xp = self.xp
        nb = self.n // 2 + 1
        idx = shells[inside]
        cnt = xp.bincount(idx, minlength=nb)[:nb].astype(xp.float64)
        tot = xp.bincount(idx, weights=values[inside].astype(xp.float64), minlength=nb)[:nb]
        return tot / xp.maximum(cnt, 1)

    def weight_spectrum(self, weight=None):
        """Mean weight per image shell ``0 .. N//2``, scaled by ``(M/N)^ndim`` to un-padded voxels
        (Friedel mates on the ``kx = 0`` plane summed, as in :meth:`reconstruct`).

        With ``sigma2``-normalised weights (``sum C^2 / sigma2``) this is the inverse noise power
        of the reconstruction per shell (RELION's ``1 / sigma2`` of the map); the engine uses it
        for the SSNR and ``tau2`` (:func:`tau2_from_fsc`).
        """
        w = self._friedel_sum(self.weight) if weight is None else weight
        r, shells = self._shells()
        inside = r <= self.pad * (self.n // 2)
        return self._shell_mean(w, shells, inside) * self.pad ** self.ndim

    # ------------------------------------------------------------------ reconstruction
    def _friedel_sum(self, arr):
        """float64/complex128 copy of an accumulator with Friedel mates on the ``kx = 0`` plane
        summed (each holds ``a(g) + conj(a(-g))``; self-mates are left as they are)."""
        xp, m = self.xp, self.m
        out = arr.astype(xp.complex128 if xp.iscomplexobj(arr) else xp.float64)
        mir = _mirror_index(m, xp)
        a0 = out[..., 0]
        am = a0
        for ax in range(self.ndim - 1):
            am = xp.take(am, mir, axis=ax)
        grids = xp.meshgrid(*([xp.arange(m)] * (self.ndim - 1)), indexing="ij")
        self_mate = xp.ones(a0.shape, dtype=bool)
        for g in grids:
            self_mate &= mir[g] == g
        out[..., 0] = xp.where(self_mate, a0, a0 + am.conj())
        return out

    def _hermitian_sums(self):
        return self._friedel_sum(self.data), self._friedel_sum(self.weight)

    def _symmetrise(self, data, weight, sym):
        return data, weight

    def reconstruct(self, method: str = "plain", tau2=None, eps: float = 1e-3, sym: str = "C1",
                    max_shell=None, fsc=None, tau2_fudge: float = 1.0, mask_outside: bool = True):
        """The map (``[N, N, N]`` or ``[N, N]``, float32) from the accumulated sums.

        ``method="plain"``: ``F = data / (weight + eps * <weight>)`` (``<weight>`` the mean over
        voxels with weight > 0). ``method="wiener"`` (MAP, RELION's M-step):
        ``F = data / (weight + 1 / ((M/N)^ndim * tau2_fudge * tau2[shell]))`` with ``tau2`` the
        signal power per image shell ``0 .. N//2`` in the units of ``|rfft3c(map)|^2`` per voxel
        relative to ``sigma2``-normalised weights. When ``tau2`` is None it is estimated: from
        ``fsc`` with :func:`tau2_from_fsc` when given, else by the method of moments
        ``tau2 = max(P - 1/W, 1e-3 P)``, with ``P`` the shell power of the plain map and ``1/W``
        its noise power (:meth:`weight_spectrum`; needs ``sigma2``-normalised weights).
        Frequencies beyond ``max_shell`` (default ``N // 2``) are zeroed. The last ``tau2`` used
        is kept in ``self.tau2``. ``mask_outside``: as RELION, replace what lies outside the
        sphere (circle) of radius ``N / 2`` by its mean, with a 3-pixel raised-cosine edge
        (removes the noise aliased into the corners of the cropped box).
        """
        xp = self.xp
        data, weight = self._symmetrise(*self._hermitian_sums(), sym)
        r, shells = self._shells()
        shell_max = self.r_max if max_shell is None else min(float(max_shell), self.r_max)
        inside = r <= self.pad * shell_max
        if method == "plain":
            ft = _plain_ratio(data, weight, eps)
        elif method in ("wiener", "map"):
            if tau2 is None:
                tau2 = self._estimate_tau2(data, weight, fsc)
            t2 = _host(tau2).reshape(-1)
            t2 = np.concatenate([t2, np.full(max(0, self.n // 2 + 1 - t2.size), t2[-1])])
            t2 = to_device(np.maximum(t2 * tau2_fudge * self.pad ** self.ndim, 1e-300), xp)
            ft = data / (weight + 1.0 / t2[xp.minimum(shells, t2.size - 1)])
            self.tau2 = tau2
        else:
            raise ValueError(f"reconstruct: unknown method {method!r} (use 'plain' or 'wiener')")
        out = self._to_real(xp.where(inside, ft, 0))
        return self._mask_outside(out) if mask_outside else out

    def _mask_outside(self, x):
        from .validation import soft_circle_mask, soft_sphere_mask
        mask = (soft_sphere_mask if self.ndim == 3 else soft_circle_mask)(self.n, self.n / 2, 3.0,
                                                                         xp=self.xp)
        out_w = 1 - mask
        bg = (out_w * x).sum() / max(float(out_w.sum()), 1e-12)
        return (x * mask + bg * out_w).astype(self.xp.float32)

    def _estimate_tau2(self, data, weight, fsc):
        wspec = _host(self.weight_spectrum(weight))
        if fsc is not None:
            return tau2_from_fsc(fsc, wspec)
        r, _ = self._shells()
        plain = self._to_real(self.xp.where(r <= self.pad * self.r_max,
                                            _plain_ratio(data, weight, 1e-3), 0))
        rfft = rfft3c if self.ndim == 3 else rfft2c
        power = _host(radial_average(abs(rfft(plain)) ** 2, self.n, self.ndim))
        noise = np.where(wspec > 0, 1.0 / np.maximum(wspec, 1e-300), np.inf)
        return np.maximum(power - noise, 1e-3 * power)

    def _to_real(self, ft):
        """Inverse transform of the padded grid, central crop, gridding correction -> float32."""
        xp, n, m = self.xp, self.n, self.m
        padded = (irfft3c if self.ndim == 3 else irfft2c)(ft, m)
        lo = m // 2 - n // 2
        out = padded[(slice(lo, lo + n),) * self.ndim]
        d = xp.arange(n, dtype=xp.float64) - n // 2
        corr = xp.sinc(d / m) ** 2
        for ax in range(self.ndim):
            shape = [1] * self.ndim
            shape[ax] = n
            out = out / corr.reshape(shape)
        return out.astype(xp.float32)


class BackProjector(_FourierAccumulator):
    """3D Fourier back-projector (RELION's ``BackProjector``, trilinear, padding ``pad``).

    ``n``: box size of the images and map (odd or even); ``pad``: oversampling of the
    accumulators (padded box ``M = round(pad * n)`` rounded up to even); ``xp``: numpy or cupy
    (where the accumulators live); ``dtype``: real dtype of the accumulators (float64 default;
    ``24 M^3 / 2`` bytes, float32 halves it); ``max_shell``: largest image shell inserted
    (default ``N // 2``; the M-step's current size).
    """

    ndim = 3

    def _slice_coords(self, rotations):
        a = rotations * self.pad  # A.T (kx, ky, 0) = kx * A[0, :] + ky * A[1, :]
        return (self._kx[None, :, None] * a[:, None, 0, :]
                + self._ky[None, :, None] * a[:, None, 1, :])

    def insert(self, ft_slices, weight_slices, rotations):
        """Add slices ``[R, N, N//2+1]`` (complex, e.g. ``sum w C X``) and their weights
        (real, e.g. ``sum w C^2``; None = 1) at rotations ``[R, 3, 3]`` (or Euler angles ``[R, 3]``)."""
        from .projection import as_rotation_matrices
        rot = as_rotation_matrices(rotations, self.xp)
        self._insert(ft_slices, weight_slices, rot)

    def insert_images(self, images, rotations, ctf=None, shifts_px=None, pixel_size_A=None,
                      sigma2_noise=None):
        """Insert particle images ``[R, N, N]`` (or their ``rfft2c`` transforms) as ``C X`` / ``C^2``.

        ``ctf``: :class:`~cryolab.ctf.CTFParams` (needs ``pixel_size_A``) or CTF slices
        ``[R, N, N//2+1]``; ``shifts_px`` ``[R, 2]``: RELION origins in pixels (the particle is
        moved by ``+origin`` to the centre); ``sigma2_noise``: noise power per Fourier pixel of
        ``rfft2c`` (scalar, per shell ``[N//2+1]`` or per pixel), dividing both sums.
        """
        data, weight = self._slices_from_images(images, ctf, shifts_px, pixel_size_A, sigma2_noise)
        self.insert(data, weight, rotations)

    def _symmetrise(self, data, weight, sym):
        """Sum the accumulators over the point group (interpolated at ``R g``, as RELION)."""
        if sym is None or str(sym).upper() == "C1":
            return data, weight
        from .geometry import symmetry_operators
        xp, m = self.xp, self.m
        ops = to_device(np.asarray(symmetry_operators(sym), dtype=np.float64), xp)
        r, _ = self._shells()
        inside = xp.nonzero((r <= self.pad * self.r_max).ravel())[0]
        kz, ky, kx = (g.ravel()[inside].astype(xp.float64) for g in rfft_grid(m, 3, xp, True))
        g = xp.stack([kx, ky, kz], axis=-1)  # (x, y, z)
        sum_d, sum_w = data.copy(), weight.copy()
        step = max(1, _BLOCK_ENTRIES // 8)
        for op in ops:
            if bool(xp.allclose(op, xp.eye(3))):
                continue
            for s in range(0, g.shape[0], step):
                p = g[s:s + step] @ op.T
                sel = inside[s:s + step]
                sum_d.reshape(-1)[sel] += _interpolate(data, p, m)
                sum_w.reshape(-1)[sel] += _interpolate(weight, p, m)
        return sum_d, sum_w


class BackProjector2D(_FourierAccumulator):
    """2D Fourier back-rotator for class averages (bilinear, padding ``pad``).

    The forward operator samples the reference transform at ``A.T k`` with ``A`` the 2x2 block of
    ``euler_to_matrix(0, 0, psi)`` (as :class:`cryolab.projection.FourierRotator2D`); insertion is
    its adjoint: each slice is rotated back by ``psi``.
    """

    ndim = 2

    def _slice_coords(self, psi_deg):
        a = euler_to_matrix(0.0, 0.0, psi_deg)[:, :2, :2] * self.pad
        return (self._kx[None, :, None] * a[:, None, 0, :]
                + self._ky[None, :, None] * a[:, None, 1, :])

    def insert(self, ft_slices, weight_slices, psi_deg):
        """Add slices ``[R, N, N//2+1]`` and weights (None = 1) rotated back by ``psi_deg`` ``[R]``."""
        psi = self.xp.asarray(to_device(psi_deg, self.xp), dtype=self.xp.float64).reshape(-1)
        self._insert(ft_slices, weight_slices, psi)

    def insert_images(self, images, psi_deg, ctf=None, shifts_px=None, pixel_size_A=None,
                      sigma2_noise=None):
        """As :meth:`BackProjector.insert_images`, with in-plane angles ``psi_deg`` ``[R]``."""
        data, weight = self._slices_from_images(images, ctf, shifts_px, pixel_size_A, sigma2_noise)
        self.insert(data, weight, psi_deg)

    def reconstruct(self, method: str = "plain", tau2=None, eps: float = 1e-3, max_shell=None,
                    fsc=None, tau2_fudge: float = 1.0, mask_outside: bool = True):
        """The class average ``[N, N]`` (float32); see :meth:`BackProjector.reconstruct`."""
        return super().reconstruct(method, tau2, eps, "C1", max_shell, fsc, tau2_fudge,
                                   mask_outside)


def _background_sigma2(images):
    """White-noise power per Fourier pixel of ``rfft2c``: ``N^2`` times the variance of the
    pixels outside the inscribed circle."""
    xp = get_xp(images)
    n = images.shape[-1]
    g = xp.arange(n) - n // 2
    outside = (g[:, None] ** 2 + g[None, :] ** 2) > (n / 2) ** 2
    return float(images[:, outside].astype(xp.float64).var()) * n * n


def reconstruct_stack(stack, ctf: bool = True, sym: str = "C1", batch_size: int = 256,
                      method: str = "plain", tau2=None, pad: float = 2, xp=np,
                      sigma2_noise=None, **reconstruct_kwargs):
    """A map ``[N, N, N]`` (float32) from a :class:`cryolab.io.ParticleStack` (as ``relion_reconstruct``).

    Streams the stack ``batch_size`` images at a time (memory: the accumulators and one batch);
    each particle's ``_rlnAngleRot/Tilt/Psi`` and ``_rlnOriginX/YAngst`` (the particle is
    moved by ``+origin`` to the centre) place it; ``ctf=True`` multiplies by the CTF from the
    STAR file (``data = sum C X``, ``weight = sum C^2``). ``method="wiener"`` needs signal
    and noise powers: ``tau2`` as in :meth:`BackProjector.reconstruct` (estimated when None)
    and ``sigma2_noise`` (per Fourier pixel; when None, estimated once from the first batch
    by :func:`_background_sigma2`). Further keywords go to :meth:`BackProjector.reconstruct`.
    """
    eulers = stack.eulers()
    if eulers is None:
        raise ValueError("reconstruct_stack: the particle table has no angles")
    px = stack.pixel_size_A
    if px is None:
        raise ValueError("reconstruct_stack: the pixel size is unknown")
    bp = BackProjector(stack.box_size, pad=pad, xp=xp)
    for rows, images in stack.iter_batches(batch_size):
        images = to_device(images, xp)
        if method != "plain" and sigma2_noise is None:
            sigma2_noise = _background_sigma2(images)
        rot = euler_to_matrix(*(to_device(eulers[rows, i], xp) for i in range(3)))
        bp.insert_images(images, rot, ctf=stack.ctf(rows) if ctf else None,
                         shifts_px=to_device(stack.origins_A(rows) / px, xp), pixel_size_A=px,
                         sigma2_noise=None if method == "plain" else sigma2_noise)
    return bp.reconstruct(method=method, tau2=tau2, sym=sym, **reconstruct_kwargs)
