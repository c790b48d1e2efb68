"""Linear variability: a mean map and a few components fitted by EM at fixed poses (3D variability analysis).

Each particle ``i`` (consensus pose ``A_i``, origin, CTF ``C_i``) is modelled as

``x_i = C_i P_i (V_0 + sum_k z_ik V_k) + n_i``,  ``z_i ~ N(0, I_K)``,  ``n_i`` Gaussian, power ``sigma2(shell)``

(Punjani & Fleet 2021, probabilistic PCA of maps). Everything is in Fourier space below the filter
shell (``max_shell``, from ``filter_A``): maps are coefficients on the compact padded grid of
:class:`~.grid.SliceGrid` and ``P_i`` its sparse slice operator. EM alternates

* E-step (per particle, batched): ``A_i = C_i P_i [V_1..V_K]`` ``[P, K]``, residual ``r_i = x_i - C_i
  P_i V_0``; posterior ``Sigma_i = (I + Re(A_i^H W A_i))^-1``, ``mu_i = Sigma_i Re(A_i^H W r_i)`` with
  ``W = 1 / sigma2`` per pixel (``sigma2``: the noise power per real and per imaginary part);
  ``A^H W A`` is a batched GEMM;
* M-step (per voxel): with ``zz_i = E[(1, z_i)(1, z_i)^T]`` and ``s = S.T`` (back-projection),
  ``[sum_i s(C_i^2 W) zz_i + lambda] [V_0 .. V_K]^T = sum_i s(C_i W x_i) E[(1, z_i)]``, a
  ``(K+1) x (K+1)`` system per voxel (the slice operator's normal matrix replaced by its row sums,
  as RELION's back-projector does); ``lambda`` = ``regularisation`` times the shell's mean
  ``sum s(C^2 W)``, on the components (only 1e-3 of the weight on the mean map: a shrunk mean
  leaves a CTF-dependent residual that the first component takes up, a defocus leak); ``sigma2``
  per shell from the expected residuals.

The components are then rotated and scaled into orthonormal eigenvolumes (real space, unit norm)
ordered by the variance of their coordinates, :class:`~.result.VariabilityResult`.
Images stream through once to collect their filtered Fourier pixels (``P`` values per particle,
far fewer than ``N^2``); each iteration then streams over the batches. NumPy or CuPy (``xp``).
"""
from __future__ import annotations

import time

import numpy as np

from ...backend import resolve_backend, to_device, to_numpy
from ...errors import CryolabInputError
from .grid import SliceGrid
from .result import VariabilityResult, orthonormalise

__all__ = ["fit_variability", "filter_shell"]


def filter_shell(box: int, pixel_size_A: float, filter_A: float) -> int:
    """The last image shell (Fourier pixels) at or below ``1 / filter_A``; at least 2, at most ``N // 2``."""
    if not filter_A > 0:
        raise CryolabInputError(f"filter_A must be > 0 A, got {filter_A}", field="filter_A")
    return int(min(box // 2, max(2, np.floor(box * pixel_size_A / filter_A))))


class _Batch:
    """One batch of particles: filtered pixels ``x [B, P]`` (conjugated where read via a mate),
    CTF ``c [B, P]`` and the slice operator ``S``."""

    def __init__(self, rows, x, c, s):
        self.rows, self.x, self.c, self.s = rows, x, c, s


def _collect(stack, grid: SliceGrid, batch_size: int, use_ctf: bool, progress):
    xp = grid.xp
    px = float(stack.pixel_size_A)
    eulers = stack.eulers()
    if eulers is None:
        raise CryolabInputError("the particles have no poses (_rlnAngleRot/Tilt/Psi): run a consensus "
                                "refinement first", path=stack.star_path, field="_rlnAngleRot")
    batches = []
    for rows, images in stack.iter_batches(batch_size):
        x, c = grid.image_pixels(images, stack.ctf(rows) if use_ctf else None,
                                 stack.origins_A(rows) / px, px)
        s, neg = grid.slices(to_device(eulers[rows], xp))
        x = xp.where(neg, x.conj(), x)
        batches.append(_Batch(rows, x, c, s))
        if progress:
            progress(int(rows[-1]) + 1, len(stack))
    return batches


def _shell_mean(values, shells, n_shells, xp):
    total = xp.bincount(shells, weights=values, minlength=n_shells)[:n_shells]
    count = xp.bincount(shells, minlength=n_shells)[:n_shells]
    return total / xp.maximum(count, 1)


class _EM:
    """The state of the EM (maps ``V [V, K+1]`` complex128, ``sigma2 [shells]``) and its two steps."""

    def __init__(self, grid: SliceGrid, batches, n_components: int, regularisation: float, seed: int, mask):
        self.grid, self.batches, self.k = grid, batches, int(n_components)
        self.reg = float(regularisation)
        xp = grid.xp
        self.xp = xp
        self.n_shells = grid.r_max + 1
        self.sigma2 = self._pixel_power()
        self.V = xp.zeros((grid.n_voxels, self.k + 1), xp.complex128)
        for _ in range(2):                               # the mean map alone, then its residual noise
            self._mstep_mean_only()
        rng = np.random.default_rng([int(seed), 18])
        rms = xp.sqrt(_shell_mean(abs(self.V[:, 0]) ** 2, grid.shell_of_voxel, self.n_shells, xp))
        noise = rng.normal(size=(grid.n_voxels, self.k)) + 1j * rng.normal(size=(grid.n_voxels, self.k))
        self.V[:, 1:] = 0.1 * to_device(noise, xp) * rms[grid.shell_of_voxel][:, None]
        self.mask = self._auto_mask() if isinstance(mask, str) and mask == "auto" else mask
        if self.mask is not None:
            self.mask = to_device(self.mask, xp).astype(xp.float32)
            self._apply_mask()

    def _auto_mask(self):
        """The mean map above a tenth of its maximum, grown by 2 pixels, with a 3-pixel soft edge."""
        from ...masks import threshold_mask
        mean = to_numpy(self.grid.to_real(self.V[:, 0]))
        return threshold_mask(mean, 0.1 * float(mean.max()), 1.0, extend_A=2.0, soft_edge_A=3.0)

    def _apply_mask(self):
        """Components outside the mask are noise: keep ``mask * component`` (real space) only."""
        g = self.grid
        real = g.to_real(self.V[:, 1:])
        self.V[:, 1:] = self.xp.stack([g.from_real(self.mask * v) for v in real], axis=1)

    def _pixel_power(self):
        xp, g = self.xp, self.grid
        tot = xp.zeros(self.n_shells)
        cnt = 0
        for b in self.batches:
            tot = tot + xp.bincount(g.shell_of_pixel, weights=(abs(b.x) ** 2).sum(axis=0), minlength=self.n_shells)
            cnt += b.x.shape[0]
        count = xp.bincount(g.shell_of_pixel, minlength=self.n_shells)
        return xp.maximum(tot / (2.0 * cnt * xp.maximum(count, 1)), 1e-30)

    def _weights(self):
        return (1.0 / self.sigma2)[self.grid.shell_of_pixel]           # [P]

    def _mstep_mean_only(self):
        xp, g = self.xp, self.grid
        w = self._weights()
        lhs = xp.zeros(g.n_voxels)
        rhs = xp.zeros(g.n_voxels, xp.complex128)
        res = xp.zeros(self.n_shells)
        for b in self.batches:
            lhs += b.s.T @ (b.c.astype(xp.float64) ** 2 * w).reshape(-1)
            rhs += b.s.T @ (b.c * w * b.x).reshape(-1).astype(xp.complex128)
        lam = 1e-3 * _shell_mean(lhs, g.shell_of_voxel, self.n_shells, xp)[g.shell_of_voxel]
        self.V[:, 0] = rhs / (lhs + lam + 1e-300)
        for b in self.batches:
            pred = b.c * (b.s @ self.V[:, 0]).reshape(b.x.shape)
            res += xp.bincount(g.shell_of_pixel, weights=(abs(b.x - pred) ** 2).sum(axis=0), minlength=self.n_shells)
        count = xp.bincount(g.shell_of_pixel, minlength=self.n_shells) * sum(b.x.shape[0] for b in self.batches)
        self.sigma2 = xp.maximum(res / (2.0 * xp.maximum(count, 1)), 1e-30)

    def estep(self, b: _Batch):
        """``(mu [B, K], Sigma [B, K, K], residual power per shell [shells])`` of one batch."""
        xp = self.xp
        w = self._weights()
        proj = (b.s @ self.V).reshape(b.x.shape + (self.k + 1,)) * b.c[..., None]      # [B, P, K+1]
        r = b.x - proj[..., 0]
        a = proj[..., 1:]
        aw = a.conj() * w[None, :, None]
        m = xp.einsum("bpk,bpl->bkl", aw, a).real                                      # GEMM per particle
        rhs = xp.einsum("bpk,bp->bk", aw, r).real
        eye = xp.eye(self.k)
        sigma = xp.linalg.inv(eye[None] + m)
        mu = xp.einsum("bkl,bl->bk", sigma, rhs)
        fit = r - xp.einsum("bpk,bk->bp", a, mu)
        spread = xp.einsum("bpk,bkl,bpl->bp", a.conj(), sigma, a).real                 # E|A (z - mu)|^2
        power = (abs(fit) ** 2 + spread).sum(axis=0)
        res = xp.bincount(self.grid.shell_of_pixel, weights=power, minlength=self.n_shells)
        return mu, sigma, res

    def iterate(self):
        """One E-step over every batch and the M-step; returns ``(mu [N, K], Sigma [N, K, K])`` of the
        E-step (computed with the maps before the update)."""
        xp, g, k1 = self.xp, self.grid, self.k + 1
        w = self._weights()
        lhs = xp.zeros((g.n_voxels, k1 * k1))
        rhs = xp.zeros((g.n_voxels, k1), xp.complex128)
        res = xp.zeros(self.n_shells)
        mus, sigmas = [], []
        for b in self.batches:
            mu, sigma, r = self.estep(b)
            res += r
            ez = xp.concatenate([xp.ones((mu.shape[0], 1)), mu], axis=1)                 # [B, K+1]
            ezz = ez[:, :, None] * ez[:, None, :]
            ezz[:, 1:, 1:] += sigma
            c2w = (b.c.astype(xp.float64) ** 2 * w)                                      # [B, P]
            lhs += b.s.T @ (c2w[:, :, None] * ezz.reshape(-1, 1, k1 * k1)).reshape(-1, k1 * k1)
            cwx = (b.c * w * b.x).astype(xp.complex128)
            rhs += b.s.T @ (cwx[:, :, None] * ez[:, None, :]).reshape(-1, k1)
            mus.append(mu)
            sigmas.append(sigma)
        lhs = lhs.reshape(-1, k1, k1)
        scale = _shell_mean(lhs[:, 0, 0], g.shell_of_voxel, self.n_shells, xp)[g.shell_of_voxel]
        lam = xp.full(k1, self.reg)
        lam[0] = 1e-3
        lhs = lhs + (scale[:, None] * lam[None, :])[:, :, None] * xp.eye(k1)[None] + 1e-300 * xp.eye(k1)[None]
        sol = xp.linalg.solve(lhs, xp.stack([rhs.real, rhs.imag], axis=-1))              # [V, K+1, 2]
        self.V = sol[..., 0] + 1j * sol[..., 1]
        if self.mask is not None:
            self._apply_mask()
        count = xp.bincount(g.shell_of_pixel, minlength=self.n_shells) * sum(b.x.shape[0] for b in self.batches)
        self.sigma2 = xp.maximum(res / (2.0 * xp.maximum(count, 1)), 1e-30)
        return xp.concatenate(mus), xp.concatenate(sigmas)


def _subspace_change(old, new) -> float:
    """1 - the smallest cosine of the principal angles between the column spaces of ``old`` and ``new``."""
    qa, _ = np.linalg.qr(np.concatenate([old.real, old.imag]))
    qb, _ = np.linalg.qr(np.concatenate([new.real, new.imag]))
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(1.0 - s.min())


def fit_variability(stack, *, n_components: int = 3, filter_A: float = 20.0, regularisation: float = 0.1,
                    max_iter: int = 40, tol: float = 1e-4, pad: float = 2, batch_size: int = 500,
                    mask="auto", ctf: bool = True, seed: int = 0, backend: str | None = None, callback=None,
                    progress=None) -> VariabilityResult:
    """Fit the linear variability model (see the module text) to ``stack`` at its poses.

    Parameters
    ----------
    stack : :class:`cryolab.io.ParticleStack`
        Particles with consensus poses (``_rlnAngleRot/Tilt/Psi``, origins) and CTF parameters.
    n_components : int
        ``K``, the number of components.
    filter_A : float
        Resolution (Angstrom) of the filter: only shells up to ``N * pixel_size_A / filter_A`` are used.
    regularisation : float
        Ridge on the components per voxel, relative to the shell's mean data weight.
    max_iter, tol : int, float
        EM stops after ``max_iter`` iterations or when the components' span moves by less than
        ``tol`` (1 - cosine of the largest principal angle) between iterations.
    mask : "auto", array ``[N, N, N]`` or None
        Where the map may vary: components are multiplied by it (real space) after each M-step.
        ``"auto"``: the mean map above a tenth of its maximum, grown by 2 pixels, soft edge 3 pixels.
    callback : callable, optional
        ``callback(iteration, change, seconds)`` after each iteration.

    Returns
    -------
    :class:`~.result.VariabilityResult`
        Mean map, eigenvolumes ``[K, N, N, N]`` (unit norm), coordinates ``z [N_particles, K]``
        (Angstrom-free: map amplitude along each unit eigenvolume), their variances, the noise
        power per shell and the iteration history.
    """
    n_components = int(n_components)
    if n_components < 1:
        raise CryolabInputError(f"n_components must be >= 1, got {n_components}", field="n_components")
    if len(stack) < 2 * n_components + 2:
        raise CryolabInputError(f"{len(stack)} particles are too few for {n_components} components",
                                path=stack.star_path, field="particles")
    px = stack.pixel_size_A
    if not px:
        raise CryolabInputError("the pixel size is unknown", path=stack.star_path, field="_rlnImagePixelSize")
    xp = resolve_backend(backend)
    shell = filter_shell(stack.box_size, px, filter_A)
    t0 = time.perf_counter()
    grid = SliceGrid(stack.box_size, shell, pad=pad, xp=xp)
    batches = _collect(stack, grid, batch_size, ctf, progress)
    if mask is not None and not isinstance(mask, str):
        mask = np.asarray(mask, np.float32)
        if mask.shape != (stack.box_size,) * 3:
            raise CryolabInputError(f"the mask is {mask.shape}, the particles need {(stack.box_size,) * 3}",
                                    field="mask")
    em = _EM(grid, batches, n_components, regularisation, seed, mask)
    history = []
    old = to_numpy(em.V[:, 1:])
    mu = sigma = None
    for it in range(1, int(max_iter) + 1):
        t1 = time.perf_counter()
        mu, sigma = em.iterate()
        new = to_numpy(em.V[:, 1:])
        change = _subspace_change(old, new)
        old = new
        history.append({"iteration": it, "change": change, "time_s": time.perf_counter() - t1})
        if callback is not None:
            callback(it, change, time.perf_counter() - t1)
        if change < tol:
            break
    # coordinates from a last E-step with the final maps
    mus, sigmas = zip(*[em.estep(b)[:2] for b in batches])
    order = np.concatenate([b.rows for b in batches])
    mu = np.empty((len(stack), n_components))
    sigma = np.empty((len(stack), n_components, n_components))
    mu[order] = to_numpy(xp.concatenate(mus))
    sigma[order] = to_numpy(xp.concatenate(sigmas))
    mean = to_numpy(grid.to_real(em.V[:, 0]))
    comps = to_numpy(grid.to_real(em.V[:, 1:]))
    eig, z, z_sigma, variance = orthonormalise(comps, mu, sigma)
    return VariabilityResult(mean_map=mean, eigenvolumes=eig, z=z, z_sigma=z_sigma, variance=variance,
                             pixel_size_A=float(px), filter_A=float(filter_A), max_shell=shell,
                             sigma2_noise=to_numpy(em.sigma2), history=history, regularisation=float(regularisation),
                             wall_s=time.perf_counter() - t0)
