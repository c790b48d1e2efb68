"""Many reconstructions in one pass over the images: bootstrap resamples as weighted sets.

A bootstrap resample of ``P`` particles draws ``P`` of them with replacement; particle ``i`` drawn
``m_ri`` times in resample ``r`` contributes ``m_ri`` times its slice. So instead of writing and
reading ``R`` resampled particle files, each image is read, transformed and placed once, and its
slice is added to every accumulator with the weight ``m_ri`` (:class:`MultiSetBackProjector`).
Any integer or real per-particle weights work the same way (half-sets: 0/1 weights).

The placement is that of :class:`cryolab.reconstruction.BackProjector` (whose subclass this is:
same slices ``C X / sigma2`` and ``C^2 / sigma2``, same trilinear corners on the padded grid), so
set ``r`` holds exactly what ``BackProjector.insert_images`` would hold after inserting particle
``i`` ``m_ri`` times. A batch's slices become a sparse matrix ``S`` (one row per padded-grid voxel
and component: real and imaginary part of ``sum C X``, and ``sum C^2``; one column per image) and
the accumulators grow by ``S @ m.T``: ``R`` reconstructions for the price of one sparse product.

Memory: only voxels within ``pad * max_shell + 2`` padded-grid pixels of the origin are stored,
``V ~ (pi / 6) (pad * 2 * max_shell)^3 / 2`` of them (about 0.52 of the half grid with no low-pass),
each with 3 numbers per set: ``3 * V * K * itemsize`` bytes for ``K`` sets (float64: 8 bytes).
At 64 px and pad 2 that is 13 MB per set (float64) with no low-pass, 3 MB with ``max_shell`` 20.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp, to_device, to_numpy
from ..geometry import euler_to_matrix
from ..projection import as_rotation_matrices
from ..reconstruction import BackProjector
from ..reconstruction.interpolation import _BLOCK_ENTRIES, _corners

__all__ = ["resample_counts", "resampled_rows", "MultiSetBackProjector", "iter_weighted_sets",
           "background_sigma2", "choose_lowpass", "AUTO_FSC", "AUTO_FRACTION"]

AUTO_FSC, AUTO_FRACTION = 0.5, 2 / 3     # choose_lowpass: this fraction of the shell where the half-set FSC is 0.5

# rows of the accumulators updated per sparse product (bounds the temporary [rows, K] array)
_ROW_BLOCK = 1 << 15


def _sparse(xp):
    """The sparse-matrix module of the array module ``xp``: SciPy's or CuPy's (cuSPARSE)."""
    if xp is np:
        import scipy.sparse
        return scipy.sparse
    import cupyx.scipy.sparse
    return cupyx.scipy.sparse


def resample_counts(n_particles: int, n_resamples: int, seed: int = 0, subset=None) -> np.ndarray:
    """Bootstrap multiplicities ``[R, P]`` (int32): row ``r`` counts how often each particle is drawn
    in resample ``r`` (``P`` draws with replacement, so each row sums to ``P``). ``subset``: draw
    only from these particle indices (a half-set), as many times as it has members; the other
    particles get 0. Reproducible from ``seed`` (NumPy's ``default_rng([seed, 7])``).

    >>> c = resample_counts(5, 3, seed=1)
    >>> c.shape, c.sum(axis=1).tolist()
    ((3, 5), [5, 5, 5])
    """
    pool = np.arange(n_particles) if subset is None else np.asarray(subset, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 7])
    out = np.zeros((int(n_resamples), int(n_particles)), np.int32)
    for r in range(int(n_resamples)):
        out[r] = np.bincount(pool[rng.integers(0, pool.size, pool.size)], minlength=n_particles)
    return out


def resampled_rows(counts_r) -> np.ndarray:
    """The particle rows of one resample, each repeated as often as it was drawn (for a STAR file)."""
    counts_r = np.asarray(counts_r, dtype=np.int64)
    return np.repeat(np.arange(counts_r.size), counts_r)


class MultiSetBackProjector(BackProjector):
    """``K`` 3D back-projectors (weighted sets of the same images) filled in one pass.

    ``n``, ``pad``, ``max_shell`` as :class:`cryolab.reconstruction.BackProjector`; ``n_sets``:
    ``K``; ``dtype``: real dtype of the accumulators (float64: equal to ``BackProjector`` to
    rounding; float32 halves the memory, relative error ~1e-6); ``xp``: NumPy or CuPy, where the
    accumulators live and the sparse products run (SciPy's or cuSPARSE's CSR matrices; the same
    code). The inherited ``data``/``weight`` grids are the workspace of :meth:`reconstruct_set`.
    """

    def __init__(self, n: int, n_sets: int, pad: float = 2, max_shell=None, dtype=np.float64, xp=np):
        super().__init__(n, pad=pad, xp=xp, dtype=np.float64, max_shell=max_shell)
        radius, _ = self.shells()
        keep = radius.ravel() <= self.pad * self.r_max + 2.0    # every corner of an inserted point
        self._voxels = xp.flatnonzero(keep)
        self._compact = xp.full(radius.size, -1, dtype=xp.int32)     # 3 V < 2^31 for boxes up to ~800 px
        self._compact[self._voxels] = xp.arange(self._voxels.size, dtype=xp.int32)
        self.n_sets = int(n_sets)
        self.sums = xp.zeros((3 * self._voxels.size, self.n_sets), dtype=dtype)

    @staticmethod
    def bytes_needed(n: int, n_sets: int, pad: float = 2, max_shell=None, itemsize: int = 8) -> int:
        """Bytes of the accumulators of ``n_sets`` sets (see the module text), without allocating."""
        m = 2 * int(np.ceil(pad * n / 2))
        r = (m / n) * (n // 2 if max_shell is None else min(max_shell, n // 2)) + 2.0
        v = min(np.pi * 2 / 3 * r ** 3, m * m * (m // 2 + 1))
        return int(3 * v * n_sets * itemsize)

    def insert_images(self, images, rotations, weights, ctf=None, shifts_px=None, pixel_size_A=None,
                      sigma2_noise=None):
        """Add images ``[B, N, N]`` to every set, image ``b`` with weight ``weights[k, b]`` in set ``k``
        (``weights`` ``[K, B]``, e.g. bootstrap multiplicities). Other arguments as
        :meth:`cryolab.reconstruction.BackProjector.insert_images`."""
        data, weight = self._slices_from_images(images, ctf, shifts_px, pixel_size_A, sigma2_noise)
        rot = as_rotation_matrices(rotations, self.xp)
        w_sets = to_device(weights, self.xp).astype(self.sums.dtype, copy=False)
        if w_sets.shape != (self.n_sets, data.shape[0]):
            raise ValueError(f"weights must be [{self.n_sets}, {data.shape[0]}], got {w_sets.shape}")
        p = int(self._pix.size)
        step = max(1, _BLOCK_ENTRIES // (max(p, 1) * 8))
        for s in range(0, data.shape[0], step):
            self._insert_weighted(data[s:s + step], weight[s:s + step], rot[s:s + step],
                                  self.xp.ascontiguousarray(w_sets[:, s:s + step].T))

    def _insert_weighted(self, ft, wt, rot, w_sets):
        """One block of images: the sparse slice matrix ``S [3V, b]``, then ``sums += S @ w_sets``."""
        xp, sparse = get_xp(ft), _sparse(get_xp(ft))
        b, p = ft.shape[0], int(self._pix.size)
        coords = self._slice_coords(rot, self._kx, self._ky).reshape(-1, 3)
        vals = ft.reshape(b, -1)[:, self._pix].reshape(-1)
        wts = wt.reshape(b, -1)[:, self._pix].reshape(-1).astype(xp.float64)
        neg = coords[:, 0] < 0
        coords = xp.where(neg[:, None], -coords, coords)
        re = vals.real.astype(xp.float64)
        im = xp.where(neg, -vals.imag, vals.imag).astype(xp.float64)
        idx, w = _corners(coords, self.m)                      # [8, b * p]
        image = xp.tile(xp.arange(b, dtype=xp.int32).repeat(p), idx.shape[0])
        voxel = self._compact[idx.reshape(-1)]
        w = w.reshape(-1)
        ok = (w != 0) & (voxel >= 0)
        voxel, image, w = voxel[ok], image[ok], w[ok]
        nv = int(self._voxels.size)
        comp = [xp.tile(x, 8)[ok] * w for x in (re, im, wts)]
        rows = xp.concatenate([voxel, voxel + nv, voxel + 2 * nv])
        s = sparse.coo_matrix((xp.concatenate(comp).astype(self.sums.dtype, copy=False),
                               (rows, xp.tile(image, 3))), shape=(3 * nv, b)).tocsr()
        indptr = s.indptr.get() if xp is not np else s.indptr      # block bounds on the host
        for r0 in range(0, 3 * nv, _ROW_BLOCK):
            r1 = min(r0 + _ROW_BLOCK, 3 * nv)
            i0, i1 = int(indptr[r0]), int(indptr[r1])
            if i1 > i0:
                part = sparse.csr_matrix((s.data[i0:i1], s.indices[i0:i1], s.indptr[r0:r1 + 1] - i0),
                                         shape=(r1 - r0, b))
                self.sums[r0:r1] += part @ w_sets

    def shells(self):
        """As :meth:`BackProjector.shells`, computed once (every set's reconstruction asks for it)."""
        if getattr(self, "_shells", None) is None:
            self._shells = super().shells()
        return self._shells

    def load_set(self, k: int) -> "MultiSetBackProjector":
        """Put set ``k``'s sums into the inherited ``data``/``weight`` grids (for ``reconstruct``)."""
        nv = int(self._voxels.size)
        col = self.sums[:, k].astype(self.xp.float64)
        self.data[...] = 0
        self.weight[...] = 0
        self.data.reshape(-1)[self._voxels] = col[:nv] + 1j * col[nv:2 * nv]
        self.weight.reshape(-1)[self._voxels] = col[2 * nv:]
        return self

    def reconstruct_set(self, k: int, **kwargs):
        """Set ``k``'s map ``[N, N, N]`` (float32): :meth:`BackProjector.reconstruct` of its sums."""
        return self.load_set(k).reconstruct(**kwargs)


def background_sigma2(stack, batch_size: int = 256, rows=None) -> float:
    """White-noise power per Fourier pixel of ``rfft2c`` (``N^2`` times the pixel variance) of the
    pixels outside the inscribed circle of the images, pooled over ``rows`` (default all)."""
    n = stack.box_size
    g = (np.arange(n) - n // 2) ** 2
    outside = (g[:, None] + g[None, :]) > (n / 2) ** 2
    total = total_sq = count = 0.0
    for _, images in stack.iter_batches(batch_size, rows):
        x = images[:, outside].astype(np.float64)
        total, total_sq, count = total + x.sum(), total_sq + (x * x).sum(), count + x.size
    mean = total / count
    return float(total_sq / count - mean * mean) * n * n


def iter_weighted_sets(stack, weights, *, ctf: bool = True, pad: float = 2, max_shell=None,
                       batch_size: int = 256, dtype=np.float32, memory_GB: float = 2.0,
                       sigma2_noise: float | None = None, images=None, progress=None, xp=np):
    """Yield ``(k, projector)`` for every set ``k`` of ``weights`` ``[K, P]`` (per-particle weights of
    the particles of ``stack``), ``projector`` a :class:`MultiSetBackProjector` with set ``k``
    loaded (call its ``reconstruct``). Sets go in order, in chunks that fit ``memory_GB`` (one
    pass over the images per chunk).

    Both sums are divided by ``sigma2_noise`` (white-noise power per Fourier pixel; default: the
    background of all images, :func:`background_sigma2`), as ``reconstruct_stack(...,
    sigma2_noise=...)`` does for a Wiener reconstruction (kept as ``projector.sigma2_noise``).
    ``images``: a callable ``rows -> images [B, N, N]`` that replaces reading the stack (null
    sets); ``progress``: a callable ``(images done, images in all passes)`` or None; ``xp``: the
    array module of the accumulators and the arithmetic (NumPy or CuPy; images are read on the host
    and moved there batch by batch).
    """
    weights = np.asarray(weights)
    n, k_all, n_part = stack.box_size, weights.shape[0], len(stack)
    if sigma2_noise is None:
        sigma2_noise = background_sigma2(stack, batch_size)
    per_set = max(1, MultiSetBackProjector.bytes_needed(n, 1, pad, max_shell, np.dtype(dtype).itemsize))
    chunk = int(max(1, min(k_all, memory_GB * 2 ** 30 // per_set)))
    starts = range(0, k_all, chunk)
    eulers, px = stack.eulers(), stack.pixel_size_A
    done = 0
    for k0 in starts:
        sets = weights[k0:k0 + chunk]
        bp = MultiSetBackProjector(n, len(sets), pad=pad, max_shell=max_shell, dtype=dtype, xp=xp)
        for rows in np.array_split(np.arange(n_part), -(-n_part // int(batch_size))):
            used = rows[(sets[:, rows] != 0).any(axis=0)]       # particles in no set of this chunk: skip
            if used.size:
                batch = stack.read(used) if images is None else images(used)
                rot = euler_to_matrix(*(to_device(eulers[used, i], xp) for i in range(3)))
                bp.insert_images(to_device(batch, xp), rot, sets[:, used], ctf=stack.ctf(used) if ctf else None,
                                 shifts_px=stack.origins_A(used) / px, pixel_size_A=px)
            done += rows.size
            if progress is not None:
                progress(done, n_part * len(starts))
        bp.sums /= sigma2_noise
        bp.sigma2_noise = float(sigma2_noise)
        for j in range(len(sets)):
            yield k0 + j, bp.load_set(j)


def choose_lowpass(stack, *, fsc_level: float = AUTO_FSC, fraction: float = AUTO_FRACTION, seed: int = 0,
                   ctf: bool = True, pad: float = 2, batch_size: int = 256, xp=np):
    """The low-pass for a variance map, from the data: ``(max_shell, fsc)``.

    The particles are split into random halves (:func:`cryolab.validation.random_halves` with
    ``seed``), each half is reconstructed (Wiener, one pass over the images for both) and ``fsc``
    is their FSC (shells ``0 .. N//2``). ``s`` is the shell where the FSC first falls to
    ``fsc_level`` (0.5: half-maps as much signal as noise; linear between shells); the variance
    keeps the shells up to ``floor(fraction * s)`` (2/3). A part present in some particles only is
    a small fraction of the signal: its variance stands out of the noise's only well inside the
    resolution, while the shells beyond add noise everywhere (docs/variance.md: on the ribosome
    +/- RACK1 the AUC is highest at 30-40 A at every SNR, and this picks 27-38 A). ``max_shell``:
    None when the FSC never falls to the level (every shell), else at least 2.
    ``stack``: particles with poses.
    """
    from ..validation import fsc as fourier_shell_correlation, random_halves
    halves = random_halves(len(stack), seed)
    maps = [to_numpy(bp.reconstruct(method="wiener")) for _, bp in
            iter_weighted_sets(stack, np.stack([halves == h for h in (1, 2)]).astype(np.int32), ctf=ctf, pad=pad,
                               batch_size=batch_size, xp=xp)]
    curve = np.asarray(fourier_shell_correlation(*maps), np.float64)
    below = np.flatnonzero(curve[1:] < fsc_level)
    if below.size == 0:
        return None, curve
    s = int(below[0]) + 1                                  # first shell below the level; s - 1 is above it
    crossing = s - 1 + (curve[s - 1] - fsc_level) / max(curve[s - 1] - curve[s], 1e-12)
    return max(2, int(np.floor(fraction * crossing))), curve
