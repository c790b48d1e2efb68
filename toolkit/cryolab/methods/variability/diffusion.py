"""Diffusion maps of particle images: a nonlinear coordinate along a continuous motion (ManifoldEM's idea).

Images of one viewing direction that differ only by the motion lie on a curve (a manifold) in
image space; a diffusion map (Coifman & Lafon 2006) parametrises it by the leading non-trivial
eigenvectors of a random walk on the particles, which follow the curve even where it bends
(where a linear projection folds it).

* **Images.** Centred (moved by ``+origin``), turned to in-plane angle 0 (by ``-psi``,
  :func:`cryolab.methods.msa_align.rotate_images`), transformed, and kept to the half-plane pixels
  within the filter shell (a low-pass).
* **Denoising** (``n_pca`` > 0, the default): the images are phase-flipped (multiplied by the sign
  of their CTF) and replaced by their projection on the first ``n_pca`` principal components
  (:func:`cryolab.methods.msa_svd.streamed_pca`); at SNR 0.1 the distances between raw images are
  mostly noise. The CTF amplitude ``|c|`` then takes the CTF's place below, with no noise term.
* **CTF-aware distance** between images ``i`` and ``j`` with CTFs ``c_i``, ``c_j``: each image is
  multiplied by the other's CTF, ``D_ij = sum_k |c_j x_i - c_i x_j|^2``, so that equal signals give
  only noise; minus its expected noise part ``sigma2 sum_k (c_i^2 + c_j^2)`` (``sigma2``: the white
  noise power per Fourier pixel, from the image background), over ``sum_k c_i^2 c_j^2`` (pairs
  that both sit near CTF zeros are not made close). Three GEMMs over the pixels.
* **Kernel**, self-tuning (Zelnik-Manor & Perona 2004): ``exp(-D_ij / (s_i s_j))`` with each
  particle's own scale ``s_i^2`` its squared distance to its ``k``-th nearest neighbour
  (:func:`local_scales`, ``k = 7`` as in that paper): the bandwidth follows the local density and
  noise of the data, so isolated noisy particles still reach their neighbours and dense parts of
  the curve are not short-circuited. The diagnostic curve stays the global one:
  ``L(eps) = sum_ij exp(-D_ij / eps)`` is sigmoidal in ``log eps`` (from ``N`` to ``N^2``)
  (:func:`bandwidth_curve`); the median ``s_i^2`` is marked on it. A fixed Gaussian kernel
  ``exp(-D / eps)`` is kept as an option (``eps`` a number, or ``"curve"``: each particle gets
  ``N^0.65`` neighbours on average, the previous rule).
* **Map.** Density-normalised kernel (``alpha = 1``: the sampling density along the curve does not
  shape the coordinates), then the Markov matrix's leading eigenvectors ``psi_1 .. psi_k`` (the
  trivial constant ``psi_0`` dropped), scaled by their eigenvalues.
* **Across viewing directions** (:func:`diffusion_coordinates` with ``n_views > 1``): particles
  go to their two nearest of ``n_views`` directions (Fibonacci points on the sphere); per
  direction, ``psi_1`` is turned into ranks in ``[0, 1]``; directions sharing particles are
  given signs that make their ranks agree (along a maximum spanning tree of the shared
  particles' ``|r|``), and each particle's coordinate is the mean of its signed ranks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...backend import to_device, to_numpy
from ...errors import CryolabInputError
from ...geometry import euler_to_matrix

__all__ = ["NEIGHBOUR_EXPONENT", "LOCAL_NEIGHBOUR", "local_scales", "diffusion_kernel", "view_pixels",
           "denoise_pixels", "ctf_distances", "bandwidth_curve", "diffusion_map", "DiffusionMap",
           "diffusion_coordinates", "DiffusionResult", "viewing_bins"]


def view_pixels(stack, rows, max_shell: int, *, ctf: bool = True, in_plane: bool = True, xp=np):
    """``(x [B, P] complex, c [B, P] float)``: the filtered Fourier pixels (half plane within
    ``max_shell``, no ``kx = 0, ky < 0``) of particles ``rows``, centred and (``in_plane``) turned to
    psi 0, and their CTFs (ones without ``ctf``)."""
    from ...ctf import ctf_2d
    from ...fourier import rfft2c, rfft_grid
    from ..msa_align import rotate_images
    n, px = stack.box_size, float(stack.pixel_size_A)
    rows = np.asarray(rows)
    images = stack.read(rows)
    o = stack.origins_A(rows) / px
    from ...projection import phase_shift_2d
    ft = phase_shift_2d(rfft2c(to_device(images, xp)), xp.asarray(o, dtype=xp.float32))
    if in_plane and stack.eulers() is not None:
        from ...fourier import irfft2c
        psi = stack.eulers(rows)[:, 2]
        ft = rfft2c(rotate_images(irfft2c(ft, n), -psi))
    ky, kx = rfft_grid(n, 2, xp, True)
    keep = ((kx ** 2 + ky ** 2 <= max_shell ** 2) & ~((kx == 0) & (ky < 0))).ravel()
    x = ft.reshape(len(rows), -1)[:, keep]
    if not ctf:
        return x, xp.ones(x.shape, xp.float32)
    c = ctf_2d(stack.ctf(rows), n, px, xp=xp).reshape(-1, n * (n // 2 + 1))[:, keep]
    return x, xp.broadcast_to(c, x.shape).astype(xp.float32)


def denoise_pixels(x, c, n_components: int, seed: int = 0):
    """``(y [B, P] complex, |c| [B, P])``: phase-flipped pixels ``sign(c) x`` projected on their first
    ``n_components`` principal components (real and imaginary parts as separate variables)."""
    from ..msa_svd import streamed_pca
    x, c = np.asarray(to_numpy(x)), np.asarray(to_numpy(c), np.float64)
    y = np.sign(c) * x
    p = y.shape[1]
    v = np.concatenate([y.real, y.imag], axis=1)
    pca = streamed_pca(lambda: [v], int(n_components), seed=seed, what="filtered images")
    v = pca.mean + pca.coordinates @ pca.components
    return v[:, :p] + 1j * v[:, p:], np.abs(c)


def ctf_distances(x, c, noise_power: float = 0.0):
    """The CTF-aware squared distances ``[B, B]`` between images (see the module text); ``noise_power``
    the white-noise power per Fourier pixel (0: no noise correction). Symmetric, zero diagonal."""
    from ...backend import get_xp
    xp = get_xp(x)
    x = xp.asarray(x, xp.complex128)
    c2 = xp.asarray(c, xp.float64) ** 2
    p2 = abs(x) ** 2
    cx = x * xp.asarray(c, xp.float64)
    d = p2 @ c2.T
    d = d + d.T - 2 * (cx @ cx.conj().T).real
    if noise_power:
        s = c2.sum(axis=1) * float(noise_power)
        d = d - (s[:, None] + s[None, :])
    d = d / xp.maximum(c2 @ c2.T, 1e-30) * c2.shape[1]
    d = xp.maximum(d, 0.0)
    xp.fill_diagonal(d, 0.0)
    return d


#: the kernel's bandwidth gives each particle on average ``N ** NEIGHBOUR_EXPONENT`` neighbours
NEIGHBOUR_EXPONENT = 0.65


def bandwidth_curve(d2, n_points: int = 81, exponent: float = NEIGHBOUR_EXPONENT):
    """``(eps [n], log_sum [n], chosen eps)``: ``log L(eps) = log sum_ij exp(-D_ij / eps)`` over ``eps``
    from a tenth of the 1st to ten times the 99th percentile of the distances. ``L / N`` is the mean
    number of neighbours of a particle; it climbs from 1 (``log L = log N``) to ``N`` (``2 log N``).
    The chosen ``eps`` is where ``log L = (1 + exponent) log N``: each particle has ``N ** exponent``
    neighbours on average, on the rising part of the curve (at its steepest point, the classic
    choice, noisy particles are still isolated from the rest at SNR 0.1: eigenvalues near 1 for
    eigenvectors that sit on a few outliers)."""
    d = np.asarray(to_numpy(d2), float)
    n = len(d)
    off = d[~np.eye(n, dtype=bool)]
    lo, hi = np.percentile(off, [1, 99])
    eps = np.logspace(np.log10(max(lo, 1e-12) / 10), np.log10(max(hi, 1e-12) * 10), int(n_points))
    log_sum = np.array([np.log(np.exp(-d / e).sum()) for e in eps])
    target = (1 + float(exponent)) * np.log(n)
    above = np.flatnonzero(log_sum >= target)
    j = int(above[0]) if above.size else len(eps) - 1
    if 0 < j and log_sum[j] > log_sum[j - 1]:               # interpolate in log eps
        t = (target - log_sum[j - 1]) / (log_sum[j] - log_sum[j - 1])
        return eps, log_sum, float(np.exp(np.log(eps[j - 1]) + t * (np.log(eps[j]) - np.log(eps[j - 1]))))
    return eps, log_sum, float(eps[j])


#: self-tuning kernel: a particle's scale is its distance to its ``LOCAL_NEIGHBOUR``-th nearest neighbour
#: (Zelnik-Manor & Perona 2004 use 7)
LOCAL_NEIGHBOUR = 7


def local_scales(d2, k: int = LOCAL_NEIGHBOUR) -> np.ndarray:
    """``s^2 [B]``: each particle's squared distance (``d2 [B, B]``, zero diagonal) to its ``k``-th
    nearest other particle (``k`` capped at ``B - 1``); a zero (duplicates) is raised to the smallest
    positive distance."""
    d = np.asarray(to_numpy(d2), float)
    k = int(min(max(int(k), 1), len(d) - 1))
    s2 = np.partition(d, k, axis=1)[:, k]                  # column 0 is the particle itself (distance 0)
    pos = d[d > 0]
    return np.maximum(s2, pos.min() if pos.size else 1.0)


def diffusion_kernel(d2, eps: float | str | None = None, k: int = LOCAL_NEIGHBOUR):
    """``(K [B, B], eps)``: the kernel of squared distances ``d2``. ``eps`` None: self-tuning,
    ``K_ij = exp(-d2_ij / (s_i s_j))`` with ``s_i^2`` from :func:`local_scales` (``eps`` returned: the
    median ``s_i^2``); a number: ``exp(-d2 / eps)``; ``"curve"``: that with the ``eps`` of
    :func:`bandwidth_curve`."""
    d = np.asarray(to_numpy(d2), float)
    if eps is None:
        s2 = local_scales(d, k)
        s = np.sqrt(s2)
        return np.exp(-d / np.outer(s, s)), float(np.median(s2))
    if isinstance(eps, str):
        if eps != "curve":
            raise CryolabInputError(f"eps must be a number, 'curve' or None, got {eps!r}", field="eps")
        eps = bandwidth_curve(d)[2]
    return np.exp(-d / float(eps)), float(eps)


@dataclass
class DiffusionMap:
    """``coordinates [B, k]`` (``lambda_j psi_j``, ``j = 1..k``), ``eigenvalues [k]``, the kernel
    bandwidth ``eps`` (self-tuning kernel: the median of the particles' ``s_i^2``) and the diagnostic
    curve ``(curve_eps, curve_log_sum)``."""
    coordinates: np.ndarray
    eigenvalues: np.ndarray
    eps: float
    curve_eps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_log_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))


def diffusion_map(d2, n_coords: int = 3, eps: float | str | None = None, k: int = LOCAL_NEIGHBOUR) -> DiffusionMap:
    """The diffusion map of squared distances ``d2 [B, B]`` (see the module text); the kernel from
    :func:`diffusion_kernel` (``eps`` None: self-tuning with the ``k``-th neighbour).

    >>> t = np.linspace(0, np.pi, 200)                        # a half circle: PCA folds it, diffusion does not
    >>> pts = np.stack([np.cos(t), np.sin(t)], 1)
    >>> dm = diffusion_map(((pts[:, None] - pts[None]) ** 2).sum(-1), 1)
    >>> from scipy.stats import spearmanr
    >>> round(float(abs(spearmanr(dm.coordinates[:, 0], t)[0])), 3)
    1.0
    """
    from scipy.linalg import eigh
    d = np.asarray(to_numpy(d2), float)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] < n_coords + 2:
        raise CryolabInputError(f"a square distance matrix of more than {n_coords + 1} particles is needed, got "
                                f"{d.shape}", field="distances")
    curve_eps, curve_sum, _ = bandwidth_curve(d)
    kern, eps = diffusion_kernel(d, eps, k)
    q = kern.sum(axis=1)
    kern = kern / np.outer(q, q)                           # alpha = 1
    deg = kern.sum(axis=1)
    a = kern / np.sqrt(np.outer(deg, deg))
    n = len(a)
    vals, vecs = eigh(a, subset_by_index=[n - n_coords - 1, n - 1])
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    psi = vecs / vecs[:, :1]                               # right eigenvectors of the Markov matrix
    coords = psi[:, 1:] * vals[1:]
    coords = coords * np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(coords.shape[1])])
    return DiffusionMap(coords, vals[1:], eps, curve_eps, curve_sum)


def viewing_bins(eulers_deg, n_views: int, per_particle: int = 2):
    """``(centres [n_views, 3], members [N, per_particle])``: ``n_views`` directions spread on the sphere
    (Fibonacci points) and each particle's nearest ones (viewing direction: third row of ``A``)."""
    e = np.asarray(eulers_deg, float)
    d = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])[:, 2, :]
    i = np.arange(n_views) + 0.5
    phi = np.arccos(1 - 2 * i / n_views)
    theta = np.pi * (1 + 5 ** 0.5) * i
    centres = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    near = np.argsort(-(d @ centres.T), axis=1)[:, :per_particle]
    return centres, near


@dataclass
class DiffusionResult:
    """``coordinate [N]`` (one per particle; NaN where a particle was in no view with enough
    particles), the per-view maps ``views`` (``{view: (rows, DiffusionMap)}``) and their ``signs``."""
    coordinate: np.ndarray
    views: dict
    signs: dict


def _ranks(v):
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r / max(len(v) - 1, 1)


def _align_signs(views, n_particles: int) -> dict:
    """Signs per view that make the ranks of shared particles agree (maximum spanning tree)."""
    keys = list(views)
    ranks = {v: dict(zip(views[v][0], _ranks(views[v][1].coordinates[:, 0]))) for v in keys}
    edges = []
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            shared = sorted(set(ranks[keys[a]]) & set(ranks[keys[b]]))
            if len(shared) >= 5:
                ra = [ranks[keys[a]][i] for i in shared]
                rb = [ranks[keys[b]][i] for i in shared]
                r = np.corrcoef(ra, rb)[0, 1] if np.std(ra) > 0 and np.std(rb) > 0 else 0.0
                edges.append((abs(r) * len(shared), keys[a], keys[b], np.sign(r) or 1.0))
    signs = {}
    for root in keys:                                     # one tree per connected group
        if root in signs:
            continue
        signs[root] = 1.0
        grown = True
        while grown:
            grown = False
            for w, a, b, s in sorted(edges, reverse=True):
                if (a in signs) != (b in signs):
                    if a in signs:
                        signs[b] = signs[a] * s
                    else:
                        signs[a] = signs[b] * s
                    grown = True
                    break
    return signs


def diffusion_coordinates(stack, *, filter_A: float = 30.0, n_views: int = 1, n_coords: int = 3, ctf: bool = True,
                          n_pca: int = 8, min_particles: int = 50, noise_power: float | None = None,
                          eps: float | str | None = None, xp=np) -> DiffusionResult:
    """One diffusion coordinate per particle of ``stack`` (poses needed when ``n_views > 1``; see the
    module text). ``n_views=1``: all particles are taken as one viewing direction (a single-view data
    set, or one direction picked beforehand). ``noise_power``: white-noise power per Fourier pixel
    (default: the images' background, :func:`cryolab.methods.bootstrap.background_sigma2`; used only
    without denoising, ``n_pca=0``). ``eps``: the kernel (:func:`diffusion_kernel`; None, self-tuning)."""
    from ..bootstrap import background_sigma2
    from .linear import filter_shell
    shell = filter_shell(stack.box_size, float(stack.pixel_size_A), filter_A)
    if noise_power is None and not n_pca:
        noise_power = background_sigma2(stack)
    n = len(stack)
    if n_views <= 1:
        groups = {0: np.arange(n)}
    else:
        if stack.eulers() is None:
            raise CryolabInputError("aligning across viewing directions needs poses", path=stack.star_path,
                                    field="_rlnAngleRot")
        _, near = viewing_bins(stack.eulers(), n_views)
        groups = {v: np.flatnonzero((near == v).any(axis=1)) for v in range(n_views)}
        groups = {v: r for v, r in groups.items() if r.size >= min_particles}
    views = {}
    for v, rows in groups.items():
        x, c = view_pixels(stack, rows, shell, ctf=ctf, in_plane=n_views > 1, xp=xp)
        if n_pca:
            x, c = denoise_pixels(x, c, min(int(n_pca), len(rows) - 2))
        views[v] = (rows, diffusion_map(ctf_distances(x, c, 0.0 if n_pca else noise_power), n_coords, eps))
    if len(views) == 1:
        (rows, dm), = views.values()
        out = np.full(n, np.nan)
        out[rows] = dm.coordinates[:, 0]
        return DiffusionResult(out, views, {next(iter(views)): 1.0})
    signs = _align_signs(views, n)
    total, count = np.zeros(n), np.zeros(n)
    for v, (rows, dm) in views.items():
        r = _ranks(dm.coordinates[:, 0])
        total[rows] += r if signs[v] > 0 else 1 - r
        count[rows] += 1
    with np.errstate(invalid="ignore"):
        return DiffusionResult(total / count, views, signs)
