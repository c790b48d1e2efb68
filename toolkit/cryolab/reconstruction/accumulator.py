"""The shared core of the 3D and 2D back-projectors: Fourier sums, spectra and reconstruction.

Accumulators ``data = sum C X`` (complex) and ``weight = sum C^2`` (real) live on the padded
centred half grid, on NumPy or CuPy (``xp``); :meth:`_FourierAccumulator.reconstruct` sums
Friedel mates, symmetrises (3D only), divides (plain or Wiener), inverse transforms, crops and
applies the gridding correction (division by ``sinc^2(d / M)`` per axis).
"""
from __future__ import annotations

import numpy as np

from ..backend import to_device, to_numpy
from ..ctf import CTFParams, ctf_2d
from ..fourier import radial_average, rfft2c, rfft3c, rfft_grid, shell_index
from ..geometry import is_c1
from .grids import (_cached_outside_mask, _cached_shells, _device_of, _radius_shells, _top_shell, centred_inverse,
                    cropped_inverse, gridding_corrected, half_axis_inverse)
from .interpolation import _BLOCK_ENTRIES, _mirror_index, _padded_size, _splat
from .wiener import _mean_positive, _plain_ratio, tau2_from_fsc

#: voxels of the padded grid per slab of a C1 3D reconstruction (~32 MB of complex128): the
#: division and the transforms along the two centred axes go a slab of the half axis at a time,
#: so the temporaries are those of a slab, not of the grid (~1.9 GB at 192 px, padding 2)
_SLAB_ENTRIES = 1 << 21


def _host(a):
    return np.asarray(to_numpy(a), dtype=np.float64)


class _FourierAccumulator:
    """Shared core of :class:`BackProjector` (``ndim = 3``) and :class:`BackProjector2D` (``2``).

    ``block_entries``: interpolation corners inserted at a time (their indices and weights take
    ~40 bytes each while a block is inserted); lower it to bound the memory of an insertion.
    """

    ndim = 3
    block_entries = _BLOCK_ENTRIES
    slab_entries = _SLAB_ENTRIES

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
    def _slice_axes(self, poses):
        """``[R, 2, d]``: per pose, the padded-grid vectors (x, y[, z]) of image frequencies
        ``kx = 1`` and ``ky = 1``."""
        raise NotImplementedError

    def _slice_coords(self, poses, kx, ky):
        """Padded-grid coordinates ``[R, P, d]`` (x, y[, z]) of pixels ``(kx, ky)`` ``[P]`` (float64)."""
        a = self._slice_axes(poses)
        return kx[None, :, None] * a[:, None, 0, :] + ky[None, :, None] * a[:, None, 1, :]

    def _insert_block(self, vals, wts, poses, kx, ky):
        # double-precision coordinates and weights (single would be ~1.3x faster here but moves
        # classification results by ~1e-4 relative after a few iterations); each complex value
        # is added in one pass (NumPy), ~3x faster than two passes over its interleaved parts.
        # The coordinates are formed axis by axis (contiguous [R, P] each, the same values as
        # _slice_coords) and placed by _splat (the same sums as _corners + _scatter_add, bit for bit)
        xp = self.xp
        a = self._slice_axes(poses)
        axes = [(kx[None, :] * a[:, 0, j, None] + ky[None, :] * a[:, 1, j, None]).reshape(-1)
                for j in range(self.ndim)]
        _splat(self.data.reshape(-1), self.weight.reshape(-1), axes, vals.reshape(-1),
               wts.reshape(-1).astype(xp.float64), self.m)

    def _insert_rows(self, vals, wts, poses, cols, kx, ky):
        """Insert rows ``vals``/``wts`` ``[R, Q]`` at their columns ``cols`` (pixels ``kx``, ``ky``
        ``[P]``), ``block_entries`` interpolation corners at a time."""
        p = max(int(kx.shape[0]), 1)
        step = max(1, int(self.block_entries) // (p * 2 ** self.ndim))
        for s in range(0, vals.shape[0], step):
            v, w = vals[s:s + step], wts[s:s + step]
            self._insert_block(v[:, cols], w[:, cols], poses[s:s + step], kx, ky)

    def _insert(self, ft_slices, weight_slices, poses):
        xp, n = self.xp, self.n
        ft = to_device(ft_slices, xp).reshape(-1, n, n // 2 + 1)
        r = ft.shape[0]
        if weight_slices is None:
            wt = xp.ones((r, n, n // 2 + 1), dtype=xp.float32)
        else:
            wt = xp.broadcast_to(to_device(weight_slices, xp), (r, n, n // 2 + 1))
        self._insert_rows(ft.reshape(r, -1), wt.reshape(r, -1), poses, self._pix, self._kx, self._ky)

    def _pixel_subset(self, kx, ky):
        """``(columns, kx, ky)``: the pixels of a list ``kx``, ``ky`` ``[M]`` that slice insertion
        takes (``kx^2 + ky^2 <= r_max^2``, half plane ``kx = 0, ky < 0`` left out, as ``_pix``);
        cached for the last list seen (an engine inserts one pixel list all iteration)."""
        last = getattr(self, "_subset_of", None)
        if last is not None and last[0] is kx and last[1] is ky:
            return last[2]
        xp = self.xp
        fx = to_device(kx, xp).astype(xp.float64).reshape(-1)
        fy = to_device(ky, xp).astype(xp.float64).reshape(-1)
        cols = xp.nonzero((fx ** 2 + fy ** 2 <= self.r_max ** 2) & ~((fx == 0) & (fy < 0)))[0]
        # in raster order (ky, then kx), as ``_pix``: neighbouring pixels land in neighbouring
        # voxels, which keeps the scatter near the caches (shell order: up to ~1.1x slower at Nyquist)
        cols = cols[xp.argsort(fy[cols] * (2 * self.n + 1) + fx[cols])]  # unique keys
        subset = (cols, fx[cols], fy[cols])
        self._subset_of = (kx, ky, subset)
        return subset

    def _insert_pixels(self, values, weights, poses, kx, ky):
        xp = self.xp
        vals = to_device(values, xp)
        vals = vals.reshape(-1, vals.shape[-1])
        r, size = vals.shape
        if int(kx.shape[0]) != size or int(ky.shape[0]) != size:
            raise ValueError(f"insert_pixels: values have {size} pixels, kx/ky {kx.shape[0]}/{ky.shape[0]}")
        if weights is None:
            wts = xp.ones((r, size), dtype=xp.float32)
        else:
            wts = xp.broadcast_to(to_device(weights, xp), (r, size))
        cols, fx, fy = self._pixel_subset(kx, ky)
        self._insert_rows(vals, wts, poses, cols, fx, fy)

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
            from ..projection import phase_shift_2d
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
    def shells(self):
        """``(radius, shell)`` of every padded-grid voxel: its radius in padded-grid pixels and its
        image-shell index ``round(|g| / pad)`` (the shell of the unpadded image it belongs to).

        Computed once per grid size and array module (a small cache shared by all accumulators,
        e.g. the K class maps of an M-step, until :meth:`release_grids`); the arrays are shared:
        do not modify them."""
        xp = self.xp
        return _cached_shells(self.m, self.ndim, float(self.pad), xp, _device_of(xp), None)

    @staticmethod
    def release_grids():
        """Drop the cached :meth:`shells` grids (``16 M^ndim / 2`` bytes each: 0.45 GB at 192 px,
        padding 2); the M-step calls it after its K maps, so the E-step does not hold them."""
        _cached_shells.cache_clear()

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
        r, shells = self.shells()
        inside = r <= self.pad * (self.n // 2)
        return self._shell_mean(w, shells, inside) * self.pad ** self.ndim

    # ------------------------------------------------------------------ reconstruction
    def _friedel_sum(self, arr, mir=None):
        """float64/complex128 copy of an accumulator with Friedel mates on the ``kx = 0`` plane
        summed (each holds ``a(g) + conj(a(-g))``; self-mates are left as they are). ``mir``: the
        index of ``-f`` along a centred axis of ``arr`` (default: the whole padded grid's)."""
        xp = self.xp
        out = arr.astype(xp.complex128 if xp.iscomplexobj(arr) else xp.float64)
        mir = _mirror_index(self.m, xp) if mir is None else mir
        a0 = out[..., 0]
        am = a0
        for ax in range(self.ndim - 1):
            am = xp.take(am, mir, axis=ax)
        grids = xp.meshgrid(*([xp.arange(mir.shape[0])] * (self.ndim - 1)), indexing="ij")
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
        b = None   # a box around frequency 0 that holds every nonzero sum (see _support_half_width)
        if is_c1(sym) and not (method in ("wiener", "map") and tau2 is None):
            b = self._support_half_width()
        wiener = method in ("wiener", "map")
        if is_c1(sym) and self.ndim == 3 and self.slab_entries and \
                (method == "plain" or wiener and (tau2 is not None or fsc is not None)):
            if wiener and tau2 is None:
                tau2 = tau2_from_fsc(fsc, _host(self.weight_spectrum()))
            out = self._in_slabs(tau2 if wiener else None, tau2_fudge, eps, max_shell, b)
            return self._mask_outside(out) if mask_outside else out
        grid = (self.m, self.ndim, float(self.pad), xp, _device_of(xp), b)
        if b is None:
            data, weight = self._symmetrise(*self._hermitian_sums(), sym)
        else:  # the same values as the whole grid's box: outside it every sum and result is 0
            box = (slice(self.m // 2 - b, self.m // 2 + b + 1),) * (self.ndim - 1) + (slice(0, b + 1),)
            mir = xp.arange(2 * b, -1, -1)
            data, weight = self._friedel_sum(self.data[box], mir), self._friedel_sum(self.weight[box], mir)
        r, shells = self.shells() if b is None else _cached_shells(*grid)
        shell_max = self.r_max if max_shell is None else min(float(max_shell), self.r_max)
        inside = r <= self.pad * shell_max
        if method == "plain":
            ft = _plain_ratio(data, weight, eps)
        elif method in ("wiener", "map"):
            if tau2 is None:
                tau2 = self._estimate_tau2(data, weight, fsc)
            inv = self._inverse_tau2(tau2, tau2_fudge, _top_shell(*grid) if shells.size else 0)
            ft = self._wiener_divide(data, weight, inv, shells)
            self.tau2 = tau2
        else:
            raise ValueError(f"reconstruct: unknown method {method!r} (use 'plain' or 'wiener')")
        xp.copyto(ft, 0, where=~inside)
        out = self._to_real(ft, b)
        return self._mask_outside(out) if mask_outside else out

    def _inverse_tau2(self, tau2, tau2_fudge: float, top: int):
        """``1 / (tau2_fudge (M/N)^ndim tau2)`` per shell (host float64), the last shell's value
        repeated up to shell ``top`` (the grid's largest): ``1 / t2[min(shell, size - 1)]``."""
        t2 = _host(tau2).reshape(-1)
        t2 = np.concatenate([t2, np.full(max(0, self.n // 2 + 1 - t2.size), t2[-1])])
        inv = 1.0 / np.maximum(t2 * tau2_fudge * self.pad ** self.ndim, 1e-300)
        return np.concatenate([inv, np.full(max(0, top + 1 - inv.size), inv[-1])])

    def _wiener_divide(self, data, weight, inv, shells):
        """``data / (weight + inv[shell])`` (the sums are private copies: divided in place)."""
        xp = self.xp
        den = xp.take(to_device(inv, xp), shells)
        den += weight
        return xp.divide(data, den, out=data if data.dtype == xp.complex128 else None)

    def _in_slabs(self, tau2, tau2_fudge: float, eps: float, max_shell, half_width=None):
        """The map of :meth:`reconstruct` (C1, 3D; Wiener with ``tau2``, plain when it is None; the
        whole grid, or its box of ``half_width`` ``B`` that holds the sums) computed a slab of the
        half axis at a time (:attr:`slab_entries` voxels): Friedel sums, division and the inverse
        transforms along the centred axes per slab, then the half axis over the cropped
        ``[N, N, M//2+1]``. The same operations on the same values as over the whole grid (box)
        at once; the plain ratio's mean weight from the whole (box's) Friedel-summed weight."""
        xp, m, n, b = self.xp, self.m, self.n, half_width
        shell_max = self.r_max if max_shell is None else min(float(max_shell), self.r_max)
        if b is None:                         # centred rows and half-axis columns of the grid or box
            rows, ncols, mir = slice(None), m // 2 + 1, None
        else:
            rows, ncols, mir = slice(m // 2 - b, m // 2 + b + 1), b + 1, xp.arange(2 * b, -1, -1)
        centred = (xp.arange(m) - m // 2)[rows]
        if tau2 is None:      # plain: the mean positive weight of the whole grid (box)
            weights = self._friedel_sum(self.weight[rows, rows, :ncols], mir)
            level = eps * _mean_positive(weights)
        else:
            inv = self._inverse_tau2(tau2, tau2_fudge, _top_shell(m, 3, float(self.pad), xp, None, b))
        width = max(1, int(self.slab_entries) // centred.size ** 2)
        cropped = xp.empty((n, n, ncols), dtype=xp.complex128)
        for x0 in range(0, ncols, width):
            cols = slice(x0, min(ncols, x0 + width))
            part = (rows, rows, cols)
            r, shells = _radius_shells(xp.meshgrid(centred, centred, xp.arange(cols.start, cols.stop),
                                                   indexing="ij"), float(self.pad), xp)
            # the kx = 0 plane (first slab) holds the Friedel mates
            data = self._friedel_sum(self.data[part], mir) if x0 == 0 else self.data[part].astype(xp.complex128)
            if tau2 is None:
                ft = data / (weights[..., cols] + level)
            else:
                weight = self._friedel_sum(self.weight[part], mir) if x0 == 0 else \
                    self.weight[part].astype(xp.float64)
                ft = self._wiener_divide(data, weight, inv, shells)
            xp.copyto(ft, 0, where=~(r <= self.pad * shell_max))
            cropped[..., cols] = centred_inverse(ft, n, m, b)
        if tau2 is not None:
            self.tau2 = tau2
        return gridding_corrected(half_axis_inverse(cropped, n, m, 3, b), m)

    def _mask_outside(self, x):
        mask, out_w, total = _cached_outside_mask(self.n, self.ndim, self.xp, _device_of(self.xp))
        bg = (out_w * x).sum() / total
        return (x * mask + bg * out_w).astype(self.xp.float32)

    def _estimate_tau2(self, data, weight, fsc):
        wspec = _host(self.weight_spectrum(weight))
        if fsc is not None:
            return tau2_from_fsc(fsc, wspec)
        r, _ = self.shells()
        plain = self._to_real(self.xp.where(r <= self.pad * self.r_max,
                                            _plain_ratio(data, weight, 1e-3), 0))
        rfft = rfft3c if self.ndim == 3 else rfft2c
        power = _host(radial_average(abs(rfft(plain)) ** 2, self.n, self.ndim))
        noise = np.where(wspec > 0, 1.0 / np.maximum(wspec, 1e-300), np.inf)
        return np.maximum(power - noise, 1e-3 * power)

    def _support_half_width(self):
        """Half-width ``B`` of the smallest box of frequencies ``-B .. B`` (centred axes) and
        ``0 .. B`` (half axis) outside which both accumulators are zero (an E-step inserts up to
        its current resolution, ``~pad * max_shell + 1``), or None when the box would reach the
        unpaired index 0 of a centred axis (then the whole grid is used)."""
        xp, m, nd = self.xp, self.m, self.ndim
        nz = self.weight != 0
        nz |= self.data != 0
        b = 0
        for ax in range(nd):
            hit = xp.nonzero(nz.any(axis=tuple(a for a in range(nd) if a != ax)))[0]
            if hit.size:
                b = max(b, int(hit.max()) if ax == nd - 1 else int(xp.abs(hit - m // 2).max()))
        return b if b < m // 2 else None

    def _to_real(self, ft, half_width=None):
        """Inverse transform of the padded grid (or of its box of ``half_width``, zero outside),
        central crop, gridding correction -> float32."""
        return gridding_corrected(self._cropped_inverse(ft, half_width), self.m)

    def _cropped_inverse(self, ft, half_width=None):
        """:func:`~cryolab.reconstruction.grids.cropped_inverse` of this grid."""
        return cropped_inverse(ft, self.n, self.m, half_width)
