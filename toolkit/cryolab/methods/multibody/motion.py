"""How the bodies moved: relative rotations and translations, their principal components and
maps along them (RELION's ``relion_flex_analyse``).

A body's motion in a particle is the rigid move of its map, in the consensus map's frame, that
its refined pose implies: rotation ``Q_b = A^T A_b`` about the body's centre of mass ``c_b``
(``A`` the consensus pose, ``A_b`` the body's) and translation ``d_b = A^T (r_b - t_b, 0)`` in
Angstrom (``r_b`` the body's unmoved origin, ``t_b`` its refined one; the component along the
viewing direction is not seen and set to 0). Relative to body ``r`` (``rotate_relative_to``):
``Q = Q_r^T Q_b`` and ``d = Q_r^T (c_b + d_b - c_r - d_r) + c_r - c_b``. Rotations are written as
rotation vectors (axis times angle, degrees); the principal component analysis runs over every
body's relative rotation vector and translation (degrees and Angstrom together, as RELION does).

A component is read as a rigid motion: per body, its rotation part gives an axis and the angle
at one standard deviation of the scores, its translation part the pivot, the point on the axis
nearest the body's centre that the motion leaves in place (``p = c - (w x d) / |w|^2``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import CryolabInputError
from ...geometry import euler_to_matrix

__all__ = ["BodyMotions", "MotionPCA", "body_motions", "motion_pca", "component_maps", "move_map",
           "rotation_vectors", "rotation_matrices", "select_by_component", "composite_map",
           "masked_body_maps"]


def rotation_vectors(Q) -> np.ndarray:
    """Rotation vectors ``[..., 3]`` (axis times angle in degrees) of rotation matrices ``[..., 3, 3]``."""
    from scipy.spatial.transform import Rotation
    Q = np.asarray(Q, float)
    return np.degrees(Rotation.from_matrix(Q.reshape(-1, 3, 3)).as_rotvec()).reshape(Q.shape[:-2] + (3,))


def rotation_matrices(rotvec_deg) -> np.ndarray:
    """Inverse of :func:`rotation_vectors`."""
    from scipy.spatial.transform import Rotation
    v = np.asarray(rotvec_deg, float)
    return Rotation.from_rotvec(np.radians(v.reshape(-1, 3))).as_matrix().reshape(v.shape[:-1] + (3, 3))


@dataclass
class BodyMotions:
    """Per particle and body (``[N, B, ...]``): ``Q`` and ``d_A`` relative to the consensus,
    ``rotvec_deg`` and ``translation_A`` relative to the body's ``relative_to`` (its own motion
    when None), and the bodies' ``centres_A [B, 3]``."""
    Q: np.ndarray
    d_A: np.ndarray
    rotvec_deg: np.ndarray
    translation_A: np.ndarray
    relative_to: list
    centres_A: np.ndarray

    def features(self) -> np.ndarray:
        """``[N, 6 B]``: each body's relative rotation vector (deg) then translation (A)."""
        return np.concatenate([np.concatenate([self.rotvec_deg[:, b], self.translation_A[:, b]], axis=1)
                               for b in range(self.rotvec_deg.shape[1])], axis=1)


def body_motions(mb) -> BodyMotions:
    """The motions of every body in every particle of a :class:`~.result.MultiBodyResult` (or a
    live :class:`~.refine.MultiBodyRefine`)."""
    mb = mb.result(with_maps=False) if hasattr(mb, "result") else mb
    px = mb.pixel_size_A
    e = mb.consensus_eulers
    A = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    At = np.swapaxes(A, -1, -2)
    Qs, ds = [], []
    for b in range(mb.n_bodies):
        eb = mb.body_eulers(b)
        Qs.append(At @ euler_to_matrix(eb[:, 0], eb[:, 1], eb[:, 2]))
        unmoved = mb.consensus_origins_px - (A @ (mb.centres_A[b] / px))[:, :2]
        shift = np.concatenate([unmoved - mb.body_origins_px(b), np.zeros((len(e), 1))], axis=1) * px
        ds.append(np.einsum("nij,nj->ni", At, shift))
    Q, d = np.stack(Qs, 1), np.stack(ds, 1)
    c = np.asarray(mb.centres_A, float)
    rel_rot, rel_tr, rel = [], [], []
    for b in range(mb.n_bodies):
        r = mb.relative_to[b]
        rel.append(r)
        if r is None:
            rel_rot.append(Q[:, b])
            rel_tr.append(d[:, b])
            continue
        Qrt = np.swapaxes(Q[:, r], -1, -2)
        rel_rot.append(Qrt @ Q[:, b])
        rel_tr.append(np.einsum("nij,nj->ni", Qrt, c[b] + d[:, b] - c[r] - d[:, r]) + c[r] - c[b])
    return BodyMotions(Q, d, rotation_vectors(np.stack(rel_rot, 1)), np.stack(rel_tr, 1), rel, c)


@dataclass
class MotionPCA:
    """Principal components of the body motions: ``mean [6B]``, ``components [k, 6B]`` (unit
    rows), ``variance [k]`` and ``variance_fraction [k]``, ``scores [N, k]``."""
    mean: np.ndarray
    components: np.ndarray
    variance: np.ndarray
    variance_fraction: np.ndarray
    scores: np.ndarray
    motions: BodyMotions

    def describe(self, k: int) -> list[dict]:
        """Component ``k`` (0-based) as a rigid motion per body at +1 standard deviation of the
        scores: ``axis`` (unit, map frame), ``angle_deg``, ``translation_A``, ``pivot_A`` (see the
        module text), ``angle_to_centres_line_deg`` (between the axis and the line joining the
        body's centre to its reference body's) and a sentence."""
        sd = float(np.sqrt(self.variance[k]))
        out = []
        m = self.motions
        for b in range(m.rotvec_deg.shape[1]):
            w = self.components[k, 6 * b:6 * b + 3] * sd
            dvec = self.components[k, 6 * b + 3:6 * b + 6] * sd
            angle = float(np.linalg.norm(w))
            axis = w / angle if angle > 0 else np.array([0.0, 0.0, 1.0])
            c = m.centres_A[b]
            wr = np.radians(w)
            pivot = c - np.cross(wr, dvec) / max(float(wr @ wr), 1e-12)
            r = m.relative_to[b]
            line = (c - m.centres_A[r]) if r is not None else c
            tilt = float(np.degrees(np.arccos(min(1.0, abs(axis @ line) / max(np.linalg.norm(line), 1e-12)))))
            rel = f"body {r + 1}" if r is not None else "the consensus"
            text = (f"body {b + 1} rotates by +/-{angle:.1f} deg about the axis ({axis[0]:+.2f}, {axis[1]:+.2f}, "
                    f"{axis[2]:+.2f}) relative to {rel}, {tilt:.0f} deg from the line between their centres, "
                    f"about a point {np.linalg.norm(pivot - c):.0f} A from its centre; its centre moves "
                    f"{np.linalg.norm(dvec):.1f} A (1 standard deviation, {100 * self.variance_fraction[k]:.0f} % "
                    f"of the variance)")
            out.append({"body": b + 1, "axis": axis.tolist(), "angle_deg": angle, "translation_A": dvec.tolist(),
                        "pivot_A": pivot.tolist(), "angle_to_centres_line_deg": tilt, "text": text})
        return out


def motion_pca(motions: BodyMotions, n_components: int | None = None) -> MotionPCA:
    """Principal components of :meth:`BodyMotions.features` (centred; SVD)."""
    X = motions.features()
    if len(X) < 3:
        raise CryolabInputError(f"motion analysis needs at least 3 particles, got {len(X)}", field="particles")
    mean = X.mean(axis=0)
    U, S, Vt = np.linalg.svd(X - mean, full_matrices=False)
    var = S ** 2 / (len(X) - 1)
    k = len(S) if n_components is None else min(int(n_components), len(S))
    # a sign convention: each component's largest entry is positive
    signs = np.sign(Vt[np.arange(len(S)), np.argmax(np.abs(Vt), axis=1)])
    Vt, U = Vt * signs[:, None], U * signs[None, :]
    return MotionPCA(mean, Vt[:k], var[:k], var[:k] / max(var.sum(), 1e-30), (U * S)[:, :k], motions)


def move_map(volume_centred, Q, d_A, centre_A, pixel_size_A: float, order: int = 1) -> np.ndarray:
    """A body map centred on its centre of mass, rotated by ``Q`` about it and placed at
    ``centre_A + d_A`` (Angstrom from the box centre): ``W(x) = V(Q^T (x - c - d))``."""
    from scipy import ndimage
    v = np.asarray(volume_centred, np.float32)
    n = v.shape[0]
    P = np.eye(3)[::-1]                                     # (x, y, z) <-> (z, y, x)
    M = P @ np.asarray(Q, float).T @ P
    ctr = np.full(3, n // 2, float)
    t = P @ ((np.asarray(centre_A, float) + np.asarray(d_A, float)) / pixel_size_A)
    return ndimage.affine_transform(v, M, offset=ctr - M @ (ctr + t), order=order, mode="constant").astype(np.float32)


def masked_body_maps(mb) -> list:
    """Every body's map times its mask, both centred on the body's centre of mass: what
    :func:`component_maps` and :func:`composite_map` move (compute once, pass on for many maps)."""
    mb = mb.result() if hasattr(mb, "result") else mb
    return [mb.body_map(b, centred=True) * mb.body_mask(b, centred=True) for b in range(mb.n_bodies)]


def component_maps(mb, pca: MotionPCA, k: int, n_bins: int = 5, masked_maps=None) -> tuple[np.ndarray, np.ndarray]:
    """Composite maps along component ``k``: particles in ``n_bins`` bins of equal population by
    their score; per bin every body's centred, masked map (``masked_maps``, default
    :func:`masked_body_maps`) moved by the bin's mean motion relative to the consensus and summed.
    Returns ``(maps [n_bins, N, N, N], bin centres [n_bins] in score units)``."""
    mb = mb.result() if hasattr(mb, "result") else mb
    scores = pca.scores[:, k]
    edges = np.quantile(scores, np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    maps = masked_body_maps(mb) if masked_maps is None else masked_maps
    m = pca.motions
    out = np.zeros((n_bins,) + (mb.n,) * 3, np.float32)
    centres = np.zeros(n_bins)
    for j in range(n_bins):
        sel = which == j
        centres[j] = float(scores[sel].mean()) if sel.any() else np.nan
        for b in range(mb.n_bodies):
            Q = rotation_matrices(rotation_vectors(m.Q[sel, b]).mean(axis=0))
            out[j] += move_map(maps[b], Q, m.d_A[sel, b].mean(axis=0), m.centres_A[b], mb.pixel_size_A)
    return out, centres


def composite_map(mb, pca: MotionPCA, k: int, score_sd: float, fixed: int = 0, masked_maps=None) -> np.ndarray:
    """The map at ``score_sd`` standard deviations along component ``k``: body ``fixed`` where
    the consensus has it, every other body moved by its motion relative to its reference body
    read off the component (``mean + score * component``). ``masked_maps``: as
    :func:`masked_body_maps` gives them (computed when None)."""
    mb = mb.result() if hasattr(mb, "result") else mb
    maps = masked_body_maps(mb) if masked_maps is None else masked_maps
    feat = pca.mean + float(score_sd) * np.sqrt(pca.variance[k]) * pca.components[k]
    out = np.zeros((mb.n,) * 3, np.float32)
    for b in range(mb.n_bodies):
        Q, d = np.eye(3), np.zeros(3)
        if b != fixed:
            Q, d = rotation_matrices(feat[6 * b:6 * b + 3]), feat[6 * b + 3:6 * b + 6]
        out += move_map(maps[b], Q, d, mb.centres_A[b], mb.pixel_size_A)
    return out


def select_by_component(particles, pca: MotionPCA, k: int, low: float = -np.inf, high: float = np.inf):
    """The particles whose score on component ``k`` lies in ``[low, high]`` (a
    :class:`~cryolab.io.ParticleStack` subset, e.g. for a reconstruction of one end of a motion;
    RELION's ``--select_eigenvalue``)."""
    keep = np.flatnonzero((pca.scores[:, k] >= low) & (pca.scores[:, k] <= high))
    if keep.size == 0:
        raise CryolabInputError(f"no particle has a component-{k + 1} score in [{low:g}, {high:g}]",
                                field="select_eigenvalue")
    return particles.subset(keep)
