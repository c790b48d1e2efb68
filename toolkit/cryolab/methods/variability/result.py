"""The result of a variability analysis: mean map, eigenvolumes, per-particle coordinates; saved as MRC, STAR and npz.

Coordinates ``z [N, K]`` are map amplitudes along unit-norm eigenvolumes (real space, the map's
grey scale): particle ``i``'s map is ``mean_map + sum_k z_ik eigenvolumes[k]``. They are centred
(mean 0) and uncorrelated over the particles; ``variance[k]`` is the variance of the model
coordinate (the EM's second moment, posterior spread included), in decreasing order. Signs
follow a fixed rule: each eigenvolume's voxel of largest magnitude is positive.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import CryolabInputError

__all__ = ["VariabilityResult", "orthonormalise", "load_variability"]


def orthonormalise(components, mu, sigma):
    """Components ``[K, ...]`` (any scale, not orthogonal) and posterior moments of their
    coordinates (``mu [N, K]``, ``sigma [N, K, K]``) -> ``(eigenvolumes [K, ...] orthonormal,
    z [N, K], z_sigma [N, K, K], variance [K])`` describing the same maps ``sum_k z_k V_k`` about
    the mean, ordered by variance."""
    comps = np.asarray(components, np.float64)
    shape, k = comps.shape[1:], comps.shape[0]
    w = comps.reshape(k, -1).T                                     # [D, K]
    mu = np.asarray(mu, np.float64)
    sigma = np.asarray(sigma, np.float64)
    centred = mu - mu.mean(axis=0)
    cz = centred.T @ centred / len(mu) + sigma.mean(axis=0)
    g = w.T @ w
    lower = np.linalg.cholesky(g + 1e-12 * np.trace(g) * np.eye(k))
    lam, r = np.linalg.eigh(lower.T @ cz @ lower)
    order = np.argsort(lam)[::-1]
    lam, r = lam[order], r[:, order]
    u = w @ np.linalg.solve(lower.T, r)                           # orthonormal columns
    sign = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])
    sign[sign == 0] = 1
    u, r = u * sign, r * sign
    t = r.T @ lower.T                                              # z' = t z
    z = centred @ t.T
    z_sigma = np.einsum("kl,nlm,jm->nkj", t, sigma, t)
    return u.T.reshape((k,) + shape).astype(np.float32), z, z_sigma, lam


@dataclass
class VariabilityResult:
    """Output of :func:`~.linear.fit_variability` (see the module text). ``mean_map [N, N, N]`` also
    holds the mean coordinate's part (so ``z`` is centred)."""
    mean_map: np.ndarray
    eigenvolumes: np.ndarray
    z: np.ndarray
    z_sigma: np.ndarray
    variance: np.ndarray
    pixel_size_A: float
    filter_A: float
    max_shell: int
    sigma2_noise: np.ndarray
    history: list = field(default_factory=list)
    regularisation: float = 0.0
    wall_s: float = float("nan")

    @property
    def n_components(self) -> int:
        return int(self.eigenvolumes.shape[0])

    def map_at(self, z) -> np.ndarray:
        """The map ``[N, N, N]`` at coordinates ``z`` ``[K]`` (missing trailing ones are 0)."""
        z = np.zeros(self.n_components) if z is None else np.asarray(z, np.float64).ravel()
        full = np.zeros(self.n_components)
        full[:z.size] = z
        return (self.mean_map + np.tensordot(full, self.eigenvolumes, axes=1)).astype(np.float32)

    def maps_along(self, component: int = 0, n_maps: int = 5, extent_sd: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
        """``(coordinates [n_maps], maps [n_maps, N, N, N])`` along one component, evenly from
        ``-extent_sd`` to ``+extent_sd`` standard deviations of its coordinate."""
        if not 0 <= component < self.n_components:
            raise CryolabInputError(f"component {component} does not exist (0 .. {self.n_components - 1})",
                                    field="component")
        sd = float(np.sqrt(max(self.variance[component], 0.0)))
        t = np.linspace(-extent_sd, extent_sd, int(n_maps)) * sd
        return t, np.stack([self.map_at(np.eye(self.n_components)[component] * v) for v in t])

    def save(self, folder, prefix: str = "variability", stack=None) -> Path:
        """Write ``<prefix>_mean.mrc``, ``<prefix>_component001.mrc`` ..., ``<prefix>.npz`` (coordinates,
        variances, noise) and ``<prefix>.json`` (settings, history); with ``stack``, also
        ``<prefix>_particles.star``: its table with ``rlnVariabilityComponent1`` ... columns. Every file is
        written to a temporary name first. Returns the folder."""
        from ...io import write_mrc
        from ...io._files import atomic_path
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_mrc(folder / f"{prefix}_mean.mrc", self.mean_map.astype(np.float32), self.pixel_size_A)
        for k in range(self.n_components):
            write_mrc(folder / f"{prefix}_component{k + 1:03d}.mrc", self.eigenvolumes[k], self.pixel_size_A)
        with atomic_path(folder / f"{prefix}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, z=self.z, z_sigma=self.z_sigma, variance=self.variance, sigma2_noise=self.sigma2_noise)
        meta = {"pixel_size_A": self.pixel_size_A, "filter_A": self.filter_A, "max_shell": int(self.max_shell),
                "regularisation": self.regularisation, "wall_s": self.wall_s, "history": self.history,
                "n_components": self.n_components}
        with atomic_path(folder / f"{prefix}.json") as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=1))
        if stack is not None:
            table = stack.table.copy()
            for k in range(self.n_components):
                table[f"rlnVariabilityComponent{k + 1}"] = self.z[:, k]
            stack.with_table(table).write_star(folder / f"{prefix}_particles.star")
        return folder


def load_variability(folder, prefix: str = "variability") -> VariabilityResult:
    """Read back what :meth:`VariabilityResult.save` wrote (errors name the missing file)."""
    from ...io import read_mrc
    folder = Path(folder)
    for name in (f"{prefix}.json", f"{prefix}.npz", f"{prefix}_mean.mrc"):
        if not (folder / name).is_file():
            raise CryolabInputError(f"{name} is missing: not a saved variability result", path=folder / name)
    meta = json.loads((folder / f"{prefix}.json").read_text())
    arrays = np.load(folder / f"{prefix}.npz", allow_pickle=False)
    mean = read_mrc(folder / f"{prefix}_mean.mrc")[0]
    eig = np.stack([read_mrc(folder / f"{prefix}_component{k + 1:03d}.mrc")[0]
                    for k in range(int(meta["n_components"]))])
    return VariabilityResult(mean_map=mean, eigenvolumes=eig, z=arrays["z"], z_sigma=arrays["z_sigma"],
                             variance=arrays["variance"], pixel_size_A=float(meta["pixel_size_A"]),
                             filter_A=float(meta["filter_A"]), max_shell=int(meta["max_shell"]),
                             sigma2_noise=arrays["sigma2_noise"], history=meta["history"],
                             regularisation=float(meta["regularisation"]), wall_s=float(meta["wall_s"]))
