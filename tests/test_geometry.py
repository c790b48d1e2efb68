"""Tests of :mod:`cryolab.geometry` against independent references.

References: Euler matrices composed from elementary rotations written here; rotation angles
from ``arccos((trace - 1) / 2)`` of explicit matrix products; HEALPix ring tables derived from
the equal-area construction (Gorski et al. 2005); Kolmogorov-Smirnov tests against the analytic
Haar distributions; RELION 3.1 (``relion_refine --print_symmetry_ops`` and the sampling
directions ``relion_refine`` writes) for point groups and symmetry-reduced HEALPix grids.
Measured when written: the direction lists equal RELION's, in order, to 1e-4 deg, for
C1-C5, D1-D7, T, O, I, I1-I4 at orders 0-4 (RELION crashes for I at orders 0-1, where the
asymmetric unit holds no HEALPix pixel).
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from scipy import stats

from conftest import requires_relion
from cryolab.errors import CryolabInputError
from cryolab.geometry import (
    angular_distance, direction_distance, euler_to_direction, euler_to_matrix,
    healpix_directions, healpix_pix2ang, healpix_sampling, healpix_step_deg, local_sampling,
    matrix_to_euler, orientation_prior_weights, psi_angles, random_rotations, symmetry_operators,
)

RNG = np.random.default_rng(1234)
GROUP_ORDERS = {"C1": 1, "C2": 2, "C5": 5, "C12": 12, "D1": 2, "D2": 4, "D4": 8, "D7": 14,
                "T": 12, "O": 24, "I": 60, "I1": 60, "I2": 60, "I3": 60, "I4": 60}


# ----------------------------------------------------------------- references

def rz(deg):
    """RELION's elementary rotation about z (the matrix of Euler angles (deg, 0, 0))."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def ry(deg):
    """RELION's elementary rotation about y (the matrix of Euler angles (0, deg, 0))."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def rot_about(axis, deg):
    """Right-handed rotation about ``axis`` via the matrix exponential of the cross-product matrix."""
    from scipy.linalg import expm
    u = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return expm(np.radians(deg) * K)


def slow_angle(A, B):
    """Rotation angle (deg) between two matrices, plain arccos of the trace."""
    return np.degrees(np.arccos(np.clip((np.trace(A @ B.T) - 1) / 2, -1, 1)))


def random_eulers(n):
    return np.stack([RNG.uniform(-180, 180, n), np.degrees(np.arccos(RNG.uniform(-1, 1, n))),
                     RNG.uniform(-180, 180, n)], -1)


def mat(e):
    return euler_to_matrix(e[..., 0], e[..., 1], e[..., 2])


# -------------------------------------------------------------------- Euler

def test_euler_matches_elementary_composition():
    for rot, tilt, psi in random_eulers(20):
        np.testing.assert_allclose(euler_to_matrix(rot, tilt, psi), rz(psi) @ ry(tilt) @ rz(rot), atol=1e-12)
    # the viewing direction is row 3: (rot, tilt) = (0, 90) looks along x, (90, 90) along y
    np.testing.assert_allclose(euler_to_matrix(0, 90, 0)[2], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(euler_to_matrix(90, 90, 0)[2], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(euler_to_direction(37.0, 61.0), euler_to_matrix(37.0, 61.0, 12.0)[2], atol=1e-15)


def test_euler_orthonormal_and_proper():
    A = mat(random_eulers(200))
    np.testing.assert_allclose(A @ np.swapaxes(A, -1, -2), np.broadcast_to(np.eye(3), A.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(A), 1.0, atol=1e-12)


def test_euler_broadcasting():
    A = euler_to_matrix(np.arange(5.0)[:, None], 30.0, np.arange(4.0)[None, :])
    assert A.shape == (5, 4, 3, 3)
    np.testing.assert_allclose(A[3, 2], rz(2.0) @ ry(30.0) @ rz(3.0), atol=1e-12)


def test_matrix_to_euler_round_trip():
    e = random_eulers(500)
    back = np.stack(matrix_to_euler(mat(e)), -1)
    np.testing.assert_allclose(back, e, atol=1e-8)   # angles in the canonical range come back unchanged
    # gimbal and near-gimbal cases: the matrix must be reproduced, rot + psi (or psi - rot) kept
    for tilt in (0.0, 180.0, 1e-7, 180.0 - 1e-7, 1e-3):
        for rot, psi in ((30.0, 40.0), (-170.0, 100.0), (0.0, -90.0)):
            A = euler_to_matrix(rot, tilt, psi)
            r2, t2, p2 = matrix_to_euler(A)
            np.testing.assert_allclose(euler_to_matrix(r2, t2, p2), A, atol=2e-6)
            assert 0.0 <= t2 <= 180.0


# --------------------------------------------------------- random rotations

def test_random_rotations_haar():
    n = 20000
    e = random_rotations(n, 7)
    assert e.shape == (n, 3)
    # uniform on SO(3): cos(tilt) uniform on [-1, 1], rot and psi uniform, rotation angle w with
    # density (1 - cos w) / pi, i.e. CDF (w - sin w) / pi
    assert stats.kstest(np.cos(np.radians(e[:, 1])), "uniform", args=(-1, 2)).pvalue > 1e-3
    assert stats.kstest(e[:, 0], "uniform", args=(-180, 360)).pvalue > 1e-3
    assert stats.kstest(e[:, 2], "uniform", args=(-180, 360)).pvalue > 1e-3
    w = np.radians(angular_distance(e, np.zeros(3)))
    assert stats.kstest(w, lambda x: (x - np.sin(x)) / np.pi).pvalue > 1e-3
    assert np.abs(mat(e).mean(0)).max() < 5 / np.sqrt(n)
    # a wrong sampler (uniform tilt) fails the same test
    bad = RNG.uniform(0, 180, n)
    assert stats.kstest(np.cos(np.radians(bad)), "uniform", args=(-1, 2)).pvalue < 1e-6


def test_random_rotations_seeding():
    np.testing.assert_array_equal(random_rotations(5, 3), random_rotations(5, 3))
    np.testing.assert_array_equal(random_rotations(5, np.random.default_rng(3)), random_rotations(5, 3))
    assert not np.allclose(random_rotations(5, 3), random_rotations(5, 4))


# --------------------------------------------------------------- point groups

@pytest.mark.parametrize("sym", sorted(GROUP_ORDERS))
def test_group_order_closure(sym):
    ops = symmetry_operators(sym)
    assert ops.shape == (GROUP_ORDERS[sym], 3, 3)
    np.testing.assert_allclose(ops[0], np.eye(3))
    np.testing.assert_allclose(ops @ np.swapaxes(ops, -1, -2), np.broadcast_to(np.eye(3), ops.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(ops), 1.0, atol=1e-12)
    flat = ops.reshape(len(ops), 9)
    prods = np.einsum("aij,bjk->abik", ops, ops).reshape(-1, 9)
    d_prod = np.abs(prods[:, None, :] - flat[None, :, :]).max(-1)
    assert (d_prod.min(1) < 1e-9).all()                       # closed under products
    d_self = np.abs(flat[:, None] - flat[None]).max(-1) + 10 * np.eye(len(ops))
    assert d_self.min() > 1e-3                                # no duplicates


def test_group_axes_in_relion_setting():
    z, x, y = np.eye(3)[2], np.eye(3)[0], np.eye(3)[1]
    c5 = symmetry_operators("C5")
    np.testing.assert_allclose(c5 @ z, np.broadcast_to(z, (5, 3)), atol=1e-12)
    def contains(ops, S_ref, atol=1e-8):
        return np.abs(ops - S_ref).max(axis=(1, 2)).min() < atol

    assert contains(c5, rot_about(z, 72))
    assert contains(symmetry_operators("D4"), rot_about(x, 180))
    for S_ref in (rot_about((0, np.sqrt(2 / 3), np.sqrt(1 / 3)), 180), rot_about(z, 120)):
        assert contains(symmetry_operators("T"), S_ref)
    for S_ref in (rot_about((1, 1, 1), 120), rot_about(z, 90)):
        assert contains(symmetry_operators("O"), S_ref)
    phi = (1 + 5 ** 0.5) / 2
    icos = {"I": [(z, 2), ((1, 0, phi), 5), ((0, 1 / phi, phi), 3)],
            "I1": [(x, 2), ((phi, 0, -1), 5), ((phi, 1 / phi, 0), 3)],
            "I3": [((-1, 0, phi), 2), (z, 5), ((-0.4911234778630044, 0.3568220764705179, 0.7946544753759428), 3)],
            "I4": [((1, 0, phi), 2), (z, 5), ((0.4911234778630044, 0.3568220764705179, 0.7946544753759428), 3)]}
    for sym, axes in icos.items():
        ops = symmetry_operators(sym)
        for axis, fold in axes:
            assert contains(ops, rot_about(axis, 360 / fold), 1e-7), (sym, axis)
    assert symmetry_operators("i2").shape == symmetry_operators("I").shape


def test_bad_symmetry_names():
    for bad in ("C0", "X", "C2v", "D", ""):
        with pytest.raises(CryolabInputError):
            symmetry_operators(bad)


def _relion_ops(sym):
    out = subprocess.run([requires_relion("relion_refine"), "--print_symmetry_ops", "--sym", sym],
                         capture_output=True, text=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and "Euler" not in line:
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                pass
    return np.array(rows).reshape(-1, 3, 3)


@pytest.mark.relion
@pytest.mark.parametrize("sym", ["C1", "C5", "D4", "T", "O", "I", "I1", "I3", "I4"])
def test_operators_match_relion(sym):
    ref, ops = _relion_ops(sym), symmetry_operators(sym)
    assert ref.shape == ops.shape
    d = np.abs(ops.reshape(-1, 1, 9) - ref.reshape(1, -1, 9)).max(-1)
    assert d.min(1).max() < 1e-5 and d.min(0).max() < 1e-5     # same set (RELION prints 8 digits)


# -------------------------------------------------------------- distances

def test_angular_distance_analytic():
    # at tilt 0 rot and psi add up; tilt alone is a rotation about y
    assert angular_distance([10, 0, 0], [0, 0, 25]) == pytest.approx(15.0, abs=1e-10)
    assert angular_distance([0, 20, 0], [0, 65, 0]) == pytest.approx(45.0, abs=1e-10)
    assert angular_distance([0, 0, 0], [0, 180, 0]) == pytest.approx(180.0, abs=1e-10)
    # composing with a known rotation about a random axis moves by exactly that angle
    for e, theta in zip(random_eulers(30), np.r_[1e-5, 179.999, RNG.uniform(0, 180, 28)]):
        axis = RNG.normal(size=3)
        e2 = np.stack(matrix_to_euler(mat(e) @ rot_about(axis, theta)), -1)
        assert angular_distance(e, e2) == pytest.approx(theta, abs=1e-7)


def test_angular_distance_properties():
    a, b, c = random_eulers(300), random_eulers(300), random_eulers(300)
    dab = angular_distance(a, b)
    np.testing.assert_allclose(dab, angular_distance(b, a), atol=1e-9)
    ref = [slow_angle(mat(x), mat(y)) for x, y in zip(a, b)]
    np.testing.assert_allclose(dab, ref, atol=1e-6)
    assert (dab <= angular_distance(a, c) + angular_distance(c, b) + 1e-9).all()
    assert angular_distance(a[:5, None], b[None, :4]).shape == (5, 4)


@pytest.mark.parametrize("sym", ["C4", "D3", "O"])
def test_angular_distance_symmetry(sym):
    ops = symmetry_operators(sym)
    e = random_eulers(1)[0]
    mates = np.stack(matrix_to_euler(mat(e) @ ops), -1)          # A S: same projections
    np.testing.assert_allclose(angular_distance(e, mates, sym), 0.0, atol=1e-6)
    np.testing.assert_allclose(angular_distance(e, mates), [slow_angle(np.eye(3), S) for S in ops], atol=1e-6)
    others = random_eulers(50)
    brute = [min(slow_angle(mat(e), mat(o) @ S) for S in ops) for o in others]
    np.testing.assert_allclose(angular_distance(e, others, sym), brute, atol=1e-6)
    np.testing.assert_allclose(angular_distance(e, others, ops), brute, atol=1e-6)


def test_direction_distance():
    assert direction_distance([0, 90, 0], [90, 90, 30]) == pytest.approx(90.0)
    assert direction_distance([40, 10, 0], [40, 35, 99]) == pytest.approx(25.0)
    assert direction_distance([0, 90, 0], [180, 90, 0]) == pytest.approx(180.0)
    assert direction_distance([0, 90, 0], [180, 90, 0], "C2") == pytest.approx(0.0, abs=1e-9)
    a, b = random_eulers(100), random_eulers(100)
    ref = np.degrees(np.arccos(np.clip(np.sum(mat(a)[:, 2] * mat(b)[:, 2], -1), -1, 1)))
    np.testing.assert_allclose(direction_distance(a, b), ref, atol=1e-6)
    ops = symmetry_operators("D2")
    brute = [min(np.degrees(np.arccos(np.clip(mat(x)[2] @ (mat(y) @ S)[2], -1, 1))) for S in ops)
             for x, y in zip(a, b)]
    np.testing.assert_allclose(direction_distance(a, b, "D2"), brute, atol=1e-6)


def test_local_sampling_brute_force():
    grid = healpix_sampling(1)
    prior = np.array([33.0, 71.0, 140.0])
    for max_angle in (10.0, 35.0, 60.0):
        idx = local_sampling(prior, grid, max_angle)
        brute = np.array([i for i, g in enumerate(grid) if slow_angle(mat(prior), mat(g)) <= max_angle])
        np.testing.assert_array_equal(idx, brute)
        assert (angular_distance(prior, grid[idx]) <= max_angle).all()
    # a symmetry mate of the prior has the same neighbourhood under that symmetry
    mate = np.stack(matrix_to_euler(mat(prior) @ symmetry_operators("D2")[3]), -1)
    np.testing.assert_array_equal(local_sampling(prior, grid, 30.0, "D2"), local_sampling(mate, grid, 30.0, "D2"))


def test_orientation_prior_weights():
    grid = healpix_sampling(2)
    prior = np.array([20.0, 60.0, 355.0])
    sigma, sigma_psi = 10.0, 7.0
    w = orientation_prior_weights(prior, grid, sigma, sigma_psi)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    ddir = np.array([np.degrees(np.arccos(np.clip(mat(prior)[2] @ mat(g)[2], -1, 1))) for g in grid])
    dpsi = np.array([min(abs(g[2] - 355.0), 360 - abs(g[2] - 355.0)) for g in grid])  # wraps: 5 is 10 away
    ref = np.exp(-ddir ** 2 / (2 * sigma ** 2) - dpsi ** 2 / (2 * sigma_psi ** 2))
    ref[(ddir >= 3 * sigma) | (dpsi >= 3 * sigma_psi)] = 0
    np.testing.assert_allclose(w, ref / ref.sum(), atol=1e-12)
    # geodesic mode: Gaussian on the rotation angle
    wg = orientation_prior_weights(prior, grid, sigma, mode="geodesic")
    d = angular_distance(prior, grid)
    ref = np.where(d < 3 * sigma, np.exp(-d ** 2 / (2 * sigma ** 2)), 0)
    np.testing.assert_allclose(wg, ref / ref.sum(), atol=1e-12)
    # nothing within the cut-off: all weight on the nearest orientation
    w0 = orientation_prior_weights(prior, grid, 0.01, mode="geodesic")
    assert w0.max() == 1.0 and np.argmax(w0) == np.argmin(d)


# ------------------------------------------------------------------ HEALPix

def test_healpix_step_and_counts():
    assert healpix_step_deg(2) == 15.0 and healpix_step_deg(3) == 7.5
    for order in range(5):
        rot, tilt = healpix_directions(order)
        assert len(rot) == 12 * 4 ** order
        assert (tilt >= 0).all() and (tilt <= 180).all() and (rot > -180).all() and (rot <= 180).all()
        np.testing.assert_allclose(np.linalg.norm(euler_to_direction(rot, tilt), axis=-1), 1.0)


def _ring_table(nside):
    """(z, phi_deg) of every RING pixel, from the published ring layout (independent of the code)."""
    rows = []
    for i in range(1, 4 * nside):
        if i < nside or i > 3 * nside:                  # polar caps: 4k pixels on ring k from the pole
            k = min(i, 4 * nside - i)
            z = (1 - k * k / (3 * nside ** 2)) * (1 if i < nside else -1)
            rows += [(z, (j + 0.5) * 90.0 / k) for j in range(4 * k)]
        else:                                           # equatorial belt, alternate rings shifted
            z = 4 / 3 - 2 * i / (3 * nside)
            off = 0.5 if (i - nside) % 2 == 0 else 0.0
            rows += [(z, (j + off) * 90.0 / nside) for j in range(4 * nside)]
    return np.array(rows)


def test_healpix_ring_known_values():
    # nside 1: three rings of four, z = 2/3, 0, -2/3 at phi 45 + 90k, 90k, 45 + 90k
    theta, phi = healpix_pix2ang(1, np.arange(12))
    np.testing.assert_allclose(np.cos(theta), np.repeat([2 / 3, 0, -2 / 3], 4), atol=1e-15)
    np.testing.assert_allclose(np.degrees(phi), [45, 135, 225, 315, 0, 90, 180, 270, 45, 135, 225, 315])
    # nside 2: z = 11/12 (4), 2/3, 1/3, 0, -1/3, -2/3 (8 each), -11/12 (4)
    theta, phi = healpix_pix2ang(2, np.arange(48))
    z_expect = np.repeat([11 / 12, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3, -11 / 12], [4, 8, 8, 8, 8, 8, 4])
    np.testing.assert_allclose(np.cos(theta), z_expect, atol=1e-14)
    np.testing.assert_allclose(np.degrees(phi[:12]), [45, 135, 225, 315] + [22.5 + 45 * k for k in range(8)])
    for nside in (1, 2, 4, 8):
        theta, phi = healpix_pix2ang(nside, np.arange(12 * nside ** 2))
        np.testing.assert_allclose(np.c_[np.cos(theta), np.degrees(phi)], _ring_table(nside), atol=1e-10)


def test_healpix_nested_is_hierarchical_permutation():
    def dirs(nside, nest):
        theta, phi = healpix_pix2ang(nside, np.arange(12 * nside ** 2), nest=nest)
        return euler_to_direction(np.degrees(phi), np.degrees(theta))

    def rows_sorted(a):
        a = np.round(a, 9) + 0.0
        return a[np.lexsort(a.T[::-1])]

    for order in range(5):
        nside = 2 ** order
        nest = dirs(nside, True)
        np.testing.assert_allclose(rows_sorted(nest), rows_sorted(dirs(nside, False)), atol=1e-8)  # same centres
        # the four children 4p..4p+3 at the next order lie in pixel p: p is their nearest centre
        child = dirs(2 * nside, True)
        np.testing.assert_array_equal(np.argmax(child @ nest.T, axis=1), np.arange(len(child)) // 4)


def test_healpix_equal_area_and_spacing():
    order = 3
    rot, tilt = healpix_directions(order)
    z = np.cos(np.radians(tilt))
    n = len(z)
    for z0 in (-0.8, -0.3, 0.1, 0.5, 0.9):          # equal area: count above z0 ~ n (1 - z0) / 2
        assert abs((z > z0).sum() - n * (1 - z0) / 2) <= 4 * 2 ** order
    d = euler_to_direction(rot, tilt)
    G = d @ d.T
    np.fill_diagonal(G, -2)
    nn = np.degrees(np.arccos(G.max(1)))
    step = healpix_step_deg(order)
    assert nn.min() > 0.75 * step and nn.max() < 1.05 * step


def test_healpix_sampling_layout():
    e = healpix_sampling(2)
    rot, tilt = healpix_directions(2)
    assert e.shape == (192 * 24, 3)
    np.testing.assert_array_equal(e[:24, 0], rot[0])
    np.testing.assert_allclose(e[:24, 2], np.arange(24) * 15.0)
    np.testing.assert_array_equal(e[24::24, 1], tilt[1:])
    np.testing.assert_allclose(psi_angles(7.0), np.arange(52) * 360 / 52)
    assert healpix_sampling(1, psi_step_deg=90.0).shape == (48 * 4, 3)
    assert healpix_sampling(1, sym="D2").shape == (len(healpix_directions(1, "D2")[0]) * 12, 3)


@pytest.mark.parametrize("sym", ["C3", "D4", "T", "O", "I"])
def test_asymmetric_unit_covers_sphere_once(sym):
    order = 3
    ops = symmetry_operators(sym)
    full = euler_to_direction(*healpix_directions(order))
    au = euler_to_direction(*healpix_directions(order, sym))
    assert abs(len(au) - len(full) / len(ops)) <= 0.25 * len(full) / len(ops) + 2
    # every direction of the sphere has a symmetry mate near some kept direction ...
    mates = np.einsum("sij,nj->nsi", ops, full)
    nearest = np.degrees(np.arccos(np.clip((mates @ au.T).max(axis=(1, 2)), -1, 1)))
    assert nearest.max() < healpix_step_deg(order)
    # ... and no two kept directions are symmetry mates of each other
    cross = np.einsum("sij,nj,mi->nms", ops, au, au).max(-1)
    np.fill_diagonal(cross, -1)
    assert np.degrees(np.arccos(np.clip(cross.max(), -1, 1))) > 0.25 * healpix_step_deg(order)


@pytest.fixture(scope="module")
def relion_refine_run(tmp_path_factory):
    """Runs one relion_refine iteration on two projections of a small random map; returns a function
    (sym, order) -> RELION's sampling directions [n, 2]."""
    import mrcfile
    from scipy import ndimage
    exe = requires_relion("relion_refine")
    project = requires_relion("relion_project")
    work = tmp_path_factory.mktemp("relion_sampling")
    vol = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(24, 24, 24)), 2).astype(np.float32)
    with mrcfile.new(work / "ref.mrc") as m:
        m.set_data(vol)
        m.voxel_size = 10.0
    subprocess.run([project, "--i", "ref.mrc", "--o", "proj", "--nr_uniform", "2", "--angpix", "10"],
                   cwd=work, capture_output=True, check=True, timeout=60)

    def run(sym, order):
        out = work / f"{sym}_{order}"
        out.mkdir()
        subprocess.run([exe, "--i", "proj.star", "--o", f"{out.name}/r", "--ref", "ref.mrc", "--ini_high", "60",
                        "--K", "1", "--iter", "1", "--healpix_order", str(order), "--sym", sym,
                        "--offset_range", "1", "--offset_step", "1", "--particle_diameter", "200", "--j", "1",
                        "--random_seed", "1", "--dont_combine_weights_via_disc", "--pool", "1", "--firstiter_cc"],
                       cwd=work, capture_output=True, check=True, timeout=120)
        text = (out / "r_it001_sampling.star").read_text().split("data_sampling_directions")[1]
        rows = [line.split() for line in text.splitlines()]
        return np.array([[float(a), float(b)] for r in rows if len(r) == 2 for a, b in [r]
                         if not a.startswith("_")])
    return run


@pytest.mark.relion
@pytest.mark.parametrize("sym,order", [("C1", 2), ("C4", 3), ("D1", 2), ("D4", 2), ("D7", 3),
                                       ("T", 3), ("O", 3), ("I", 3), ("I4", 3)])
def test_healpix_directions_match_relion(relion_refine_run, sym, order):
    ref = relion_refine_run(sym, order)
    rot, tilt = healpix_directions(order, sym)
    np.testing.assert_allclose(np.c_[rot, tilt], ref, atol=1e-4)   # same directions, same (NESTED) order
