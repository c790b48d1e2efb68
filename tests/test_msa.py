"""Multivariate statistical analysis (cryolab.methods.msa): the rotation and alignment against the
Fourier rotator, the projector and np.rot90; the streamed randomized PCA against a dense SVD and
scikit-learn; the Marchenko-Pastur edge against simulated noise; k-means against brute force;
two states of the demo ribosome at one view (the first eigenimage is their difference, one
eigenvalue above the noise edge, k-means on five factors finds the states; none above it for one
state); files, command line and bad input."""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import subspace_angles

from cryolab.backend import cupy_available, to_numpy
from cryolab.ctf import CTFParams, ctf_2d
from cryolab.data import load_demo
from cryolab.errors import CryolabInputError
from cryolab.fourier import irfft2c, rescale, rfft2c
from cryolab.io import read_mrc, read_star, write_particle_stack
from cryolab.methods.msa import MSAResult, msa
from cryolab.methods.msa_align import AlignedImages, rotate_images
from cryolab.methods.msa_cluster import kmeans, ward
from cryolab.methods.msa_svd import marchenko_pastur_edge, streamed_pca
from cryolab.projection import FourierProjector, FourierRotator2D
from cryolab.validation import class_accuracy, soft_circle_mask

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the benchmarks package (the issue's sets and references) is not installed
    sys.path.insert(0, str(REPO))
from benchmarks.msa import STATES, VIEW, bayes_ceiling, simulate, true_difference  # noqa: E402

BOX, N_IMAGES, SNR = 32, 3000, 0.05                  # the issue's 64 px: below with 1000 images, and benchmarks/msa.py
OPTICS = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                       "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [12.0]})


@pytest.fixture(scope="module")
def map80():
    return rescale(load_demo().volumes["80S"], BOX, ndim=3)


def view_of(volume):
    return FourierProjector(volume).project([[*VIEW, 0.0]])[0]


# ------------------------------------------------------------------------- rotation and alignment

def test_rotation_agrees_with_the_fourier_rotator_and_rot90(map80):
    img = view_of(map80)
    angles = np.array([0.0, 10.0, 37.0, 45.0, 60.0, 133.0, 250.0, -100.0])
    ours = rotate_images(np.repeat(img[None], len(angles), 0), angles)
    theirs = FourierRotator2D(img).rotate(angles)[0]
    r = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ours, theirs)]
    assert min(r) > 0.999, r                       # measured 0.99972 (the rotator's own bilinear error)
    assert np.array_equal(ours[0], img) or np.abs(ours[0] - img).max() < 1e-5 * np.abs(img).max()
    odd = np.random.default_rng(0).normal(size=(3, 15, 15)).astype(np.float32)
    for quarter in range(4):                       # quarter turns are np.rot90 (about the centre pixel)
        out = rotate_images(odd, np.full(3, 90.0 * quarter))
        assert np.abs(out - np.rot90(odd, quarter, axes=(1, 2))).max() < 1e-5
    turns = np.random.default_rng(2).uniform(0, 360, 400)
    noise = np.random.default_rng(1).normal(size=(400, 35, 35)).astype(np.float32)
    ratio = np.linalg.norm(rotate_images(noise, turns).reshape(400, -1), axis=1) / \
        np.linalg.norm(noise.reshape(400, -1), axis=1)
    assert np.abs(ratio - 1).max() < 1e-6          # odd box of 3, 5, 7 factors: unitary (measured 1.2e-7)
    noise = noise[:, :BOX, :BOX]
    inside = np.hypot(*(np.mgrid[:BOX, :BOX] - BOX // 2)) < BOX / 2 - 3
    kept = rotate_images(noise, turns, BOX / 2 - 3)[:, inside].var() / noise[:, inside].var()
    assert 0.98 < kept < 1.01                      # even box, zero-padded: measured 0.995 (kernel tails)


BLOBS = np.array([[4.0, 0.5, 1.0], [-3.0, 5.0, 0.7], [0.5, -6.0, 0.5], [-5.0, -2.0, 0.8]])   # x, y px, height


def blob_image(psi_deg, origin_px, width_px=1.5):
    """Gaussian blobs (band-limited to 1.5e-5 at Nyquist) of the view at psi = 0 rotated by ``psi`` as a
    particle image is (``image(x) = view(R(psi) x)``: a blob at ``b`` goes to ``R(-psi) b``) and moved
    to ``-origin``; analytic, sampled at the pixels."""
    y, x = np.mgrid[:BOX, :BOX] - BOX // 2
    c, s = np.cos(np.deg2rad(psi_deg)), np.sin(np.deg2rad(psi_deg))
    out = np.zeros((BOX, BOX))
    for bx, by, height in BLOBS:
        cx, cy = c * bx + s * by - origin_px[0], -s * bx + c * by - origin_px[1]
        out += height * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width_px ** 2))
    return out


@pytest.mark.parametrize("ctf", ["none", "flip"])
def test_alignment_undoes_origin_psi_and_ctf_phases(tmp_path, ctf):
    """Analytic particles at random psi and origins, with astigmatic CTFs: the aligned image is the view
    at psi = 0, filtered by |CTF| when phase-flipped, with the CTF's axis turned by +psi (|CTF| from
    ctf_2d; the opposite turn is 9 times further off); the transfer the analysis uses is that |CTF|."""
    rng = np.random.default_rng(3)
    n, px = 12, 12.0
    psi, origins_px, defocus = rng.uniform(0, 360, n), rng.uniform(-2, 2, (n, 2)), rng.uniform(8000, 25000, n)
    astigmatism, axis = rng.uniform(2000, 4000, n), rng.uniform(0, 180, n)
    params = CTFParams(defocus_u_A=defocus + astigmatism, defocus_v_A=defocus, defocus_angle_deg=axis)
    images = np.stack([blob_image(a, o) for a, o in zip(psi, origins_px)])
    view = blob_image(0.0, (0.0, 0.0))[None]
    if ctf == "flip":
        images = irfft2c(ctf_2d(params, BOX, px) * rfft2c(images), BOX)
        turned = [np.abs(ctf_2d(CTFParams(defocus + astigmatism, defocus, axis + sign * psi), BOX, px))
                  for sign in (1, -1)]
        view, wrong = (irfft2c(t * rfft2c(view), BOX) for t in turned)
    table = pd.DataFrame({"rlnDefocusU": defocus + astigmatism, "rlnDefocusV": defocus, "rlnDefocusAngle": axis,
                          "rlnAnglePsi": psi, "rlnOriginXAngst": origins_px[:, 0] * px,
                          "rlnOriginYAngst": origins_px[:, 1] * px})
    aligned = AlignedImages(write_particle_stack(tmp_path / "p.star", images.astype(np.float32), table, OPTICS),
                            mask_diameter_A=0.8 * BOX * px, ctf=ctf)
    got, inside = aligned.images(np.arange(n)), aligned.mask > 0

    def error(expected):
        expected = expected * aligned.mask
        return np.linalg.norm((got - expected)[:, inside], axis=1) / np.linalg.norm(expected[:, inside], axis=1)
    assert error(view).max() < {"none": 1e-4, "flip": 3e-4}[ctf], error(view)    # measured 2.3e-5 and 1.0e-4
    if ctf == "flip":
        assert error(wrong).min() > 9 * error(view).max(), (error(wrong).min(), error(view).max())
        np.testing.assert_allclose(aligned.transfer(np.arange(n)), turned[0], atol=1e-6)
    else:
        assert aligned.transfer(np.arange(n)) is None


def test_ctf_corrected_mean_reproduces_every_image_of_one_state(tmp_path):
    """Noise-free analytic particles of one state at random psi and origins, astigmatic CTFs and a defocus spread:
    each phase-flipped image is its own |CTF| times the least-squares mean, so nothing is left after
    centring on it; centred on the plain mean, the defocus spread is left (Bhamre et al.'s point)."""
    rng = np.random.default_rng(11)
    n, px = 60, 12.0
    psi, defocus, astigmatism = rng.uniform(0, 360, n), rng.uniform(10000, 30000, n), rng.uniform(0, 500, n)
    params = CTFParams(defocus_u_A=defocus + astigmatism, defocus_v_A=defocus, defocus_angle_deg=rng.uniform(0, 180, n))
    origins_px = rng.uniform(-2, 2, (n, 2))
    clean = np.stack([blob_image(a, o) for a, o in zip(psi, origins_px)])
    images = irfft2c(ctf_2d(params, BOX, px) * rfft2c(clean), BOX).astype(np.float32)
    table = pd.DataFrame({"rlnDefocusU": params.defocus_u_A, "rlnDefocusV": defocus,
                          "rlnDefocusAngle": params.defocus_angle_deg, "rlnAnglePsi": psi,
                          "rlnOriginXAngst": origins_px[:, 0] * px, "rlnOriginYAngst": origins_px[:, 1] * px})
    aligned = AlignedImages(write_particle_stack(tmp_path / "p.star", images, table, OPTICS),
                            mask_diameter_A=0.8 * BOX * px, ctf="flip")
    plain = np.concatenate([v for _, v in aligned.batches(32)]).astype(np.float64)
    mean = aligned.fit_ctf_mean(32)
    np.testing.assert_allclose(mean, plain.mean(axis=0), rtol=0, atol=1e-6 * np.abs(plain).max())
    left = np.concatenate([v for _, v in aligned.batches(32)]).astype(np.float64)
    ratio = np.linalg.norm(left) / np.linalg.norm(plain - plain.mean(axis=0))
    print(f"left after the CTF-corrected mean / after the plain mean: {ratio:.4f}")
    assert ratio < 1e-3                            # measured 3.1e-4 (the shears and the 1e-6 regularisation)


def test_alignment_agrees_with_the_projector(tmp_path, map80):
    """Projections at (rot, tilt, psi) aligned by -psi are the projection at psi = 0 (RELION's psi)."""
    psi = np.random.default_rng(4).uniform(0, 360, 8)
    images = FourierProjector(map80).project(np.column_stack([np.full(8, VIEW[0]), np.full(8, VIEW[1]), psi]))
    stack = write_particle_stack(tmp_path / "p.star", images, pd.DataFrame({"rlnAnglePsi": psi}), OPTICS)
    aligned = AlignedImages(stack, mask_diameter_A=0.8 * BOX * 12.0, ctf="none")
    got, expected = aligned.images(np.arange(8)), view_of(map80) * aligned.mask
    err = np.linalg.norm((got - expected).reshape(8, -1), axis=1) / np.linalg.norm(expected)
    assert err.max() < 0.06, err                   # measured 0.037: the projector's trilinear interpolation


@pytest.mark.parametrize("ctf", ["flip", "wiener"])
def test_noise_variance_from_the_background_is_that_of_the_prepared_images(tmp_path, ctf):
    """Pure noise of variance 2: the estimate (background variance, times the Wiener filter's mean power)
    is the variance of the prepared pixels where the mask is 1."""
    rng = np.random.default_rng(9)
    n = 600
    table = pd.DataFrame({"rlnDefocusU": rng.uniform(8000, 25000, n), "rlnAnglePsi": rng.uniform(0, 360, n)})
    noise = rng.normal(scale=np.sqrt(2.0), size=(n, BOX, BOX)).astype(np.float32)
    aligned = AlignedImages(write_particle_stack(tmp_path / "p.star", noise, table, OPTICS), ctf=ctf, wiener_snr=0.5,
                            mask_diameter_A=0.7 * BOX * 12.0)
    full = to_numpy(aligned.weights) == 1
    measured = np.concatenate([v[:, full] for _, v in aligned.batches(256)]).var()
    print(f"{ctf}: estimated {aligned.noise_variance:.4f}, measured {measured:.4f}")
    assert aligned.noise_variance == pytest.approx(measured, rel=0.03)   # measured +1.5 % (flip), +1.3 % (wiener)


# ------------------------------------------------------------------------- streamed PCA

def low_rank_set(n=200, box=BOX, seed=0):
    """Masked images: a mean, six components of decreasing variance, and unit white noise ``[n, p]``."""
    rng = np.random.default_rng(seed)
    m = soft_circle_mask(box, 12, 3).ravel()
    keep = m > 0
    basis = rng.normal(size=(6, keep.sum())) / np.sqrt(keep.sum())
    x = (rng.normal(size=(n, 6)) * [40, 30, 20, 15, 10, 7.5]) @ basis + rng.normal(size=(n, keep.sum())) + 3
    return x * m[keep]


def batched(x, size):
    return lambda: (x[i:i + size] for i in range(0, len(x), size))


def test_streamed_pca_equals_dense_svd_for_any_batch_size():
    x, k = low_rank_set(), 5
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    runs = [streamed_pca(batched(x, size), k) for size in (7, 64, 200)]
    for pca in runs:
        angle = subspace_angles(pca.components.T, vt[:k].T).max()
        assert angle < 1e-9, angle                 # measured 4.2e-11 rad (power_iterations=10)
        assert np.allclose(pca.eigenvalues, s[:k] ** 2 / (len(x) - 1), rtol=1e-12, atol=0)   # measured 2.2e-15
        assert pca.total_variance == pytest.approx((s ** 2).sum() / (len(x) - 1), rel=1e-12)
        assert np.abs(pca.coordinates - centred @ pca.components.T).max() < 1e-10        # measured 2.8e-14
    for other in runs[1:]:                          # batch size changes only the rounding: measured 8.4e-16
        assert np.abs(other.components - runs[0].components).max() < 1e-12
        assert np.allclose(other.eigenvalues, runs[0].eigenvalues, rtol=1e-12, atol=0)
    few = streamed_pca(batched(x, 64), k, power_iterations=2)
    assert subspace_angles(few.components.T, vt[:k].T).max() < 1e-4    # measured 3.3e-5 rad with 2


def test_streamed_pca_agrees_with_scikit_learn():
    sklearn = pytest.importorskip("sklearn.decomposition", reason="scikit-learn is a benchmark extra, not a dependency")
    x, k = low_rank_set(seed=4), 5
    ref = sklearn.PCA(n_components=k, svd_solver="full").fit(x)
    pca = streamed_pca(batched(x, 50), k)
    assert np.allclose(pca.eigenvalues, ref.explained_variance_, rtol=1e-12, atol=0)   # measured 2.0e-15
    cos = np.abs(np.sum(pca.components * ref.components_, axis=1))
    assert cos.min() > 1 - 1e-12, cos               # same vectors up to sign: measured 1 - 0
    scores = ref.transform(x) * np.sign(np.sum(pca.components * ref.components_, axis=1))
    assert np.abs(pca.coordinates - scores).max() < 1e-10 * np.abs(scores).max()   # measured 5.0e-13


def test_marchenko_pastur_edge_matches_simulated_white_noise():
    rng = np.random.default_rng(5)
    n, p, sigma2 = 2000, 500, 2.0
    noise = rng.normal(scale=np.sqrt(sigma2), size=(n, p))
    top = np.linalg.eigvalsh(np.cov(noise.T))[-1]
    edge = marchenko_pastur_edge(sigma2, p, n)
    assert edge == pytest.approx(sigma2 * 2.25)
    assert abs(top / edge - 1) < 0.03, (top, edge)  # measured -0.005 (Tracy-Widom scale n^(-2/3))


# ------------------------------------------------------------------------- clustering

def test_kmeans_reaches_the_brute_force_optimum():
    rng = np.random.default_rng(6)
    for trial in range(3):
        x = rng.normal(size=(8, 2)) + rng.integers(0, 3, (8, 1)) * 1.5
        best = min(sum(((x[np.array(lab) == c] - x[np.array(lab) == c].mean(0)) ** 2).sum()
                       for c in set(lab)) for lab in itertools.product(range(3), repeat=8) if len(set(lab)) == 3)
        _, _, inertia = kmeans(x, 3, seed=trial)
        assert inertia == pytest.approx(best, rel=1e-12)


def test_kmeans_and_ward_find_separated_blobs():
    rng = np.random.default_rng(7)
    truth = np.repeat([0, 1, 2], [50, 30, 20])
    x = rng.normal(size=(100, 3)) * 0.3 + np.eye(3)[truth] * 4
    assert class_accuracy(kmeans(x, 3)[0], truth) == 1.0
    assert class_accuracy(ward(x, 3), truth) == 1.0
    assert np.bincount(kmeans(x, 3)[0]).tolist() == [50, 30, 20]   # numbered by size


# ------------------------------------------------------------------------- the issue's test case

@pytest.fixture(scope="module")
def two_states(tmp_path_factory):
    """3000 images of the 80S and 60S at one view (random psi, origins, CTF), SNR 0.05, 32 px."""
    sim, stack, maps = simulate(tmp_path_factory.mktemp("two_states"), STATES, N_IMAGES, BOX, SNR, seed=1)
    return sim, stack, maps, msa(stack, k=10)


def dense_count(result, stack):
    """Eigenvalues above the result's noise edge by a dense eigendecomposition of all the vectors."""
    x = np.concatenate([v for _, v in result.aligned(stack).batches(1000)]).astype(np.float64)
    x -= x.mean(axis=0)
    top = np.linalg.eigvalsh(x.T @ x if x.shape[1] < len(x) else x @ x.T)[::-1] / (len(x) - 1)
    return int((top > result.noise_edge).sum()), top[:3]


def test_two_states_first_eigenimage_and_noise_edge(two_states):
    sim, stack, maps, result = two_states
    inside = result.mask > 0
    r = np.corrcoef(result.eigenimages[0][inside], true_difference(sim, maps, result.mask)[inside])[0, 1]
    dense, top = dense_count(result, stack)
    print(f"|r| first eigenimage vs true difference: {abs(r):.3f}; eigenvalues {np.round(result.eigenvalues[:3], 3)} "
          f"(dense {np.round(top, 3)}); noise variance {result.noise_variance:.4f}, edge {result.noise_edge:.3f}")
    assert abs(r) >= 0.9                            # measured 0.970
    assert result.noise_variance == pytest.approx(1.0, abs=0.01)    # the simulator's unit noise: 0.9995
    assert result.n_significant == dense == 1      # measured 4.52 above an edge of 2.195, next 1.95 (dense too)


def test_kmeans_on_five_factors_finds_the_states(two_states):
    """At 32 px the Bayes-optimal accuracy is 0.966 (the issue's 95 % is checked at 64 px below)."""
    sim, _, maps, result = two_states
    truth = sim.truth["view_index"].to_numpy()
    ceiling = bayes_ceiling(sim, maps)
    kmeans_acc = class_accuracy(result.cluster(2, factors=5), truth)
    ward_acc = class_accuracy(result.cluster(2, factors=5, method="ward"), truth)
    print(f"k-means {kmeans_acc:.3f}, Ward {ward_acc:.3f}, Bayes-optimal {ceiling:.3f}")
    assert kmeans_acc >= ceiling - 0.02            # measured 0.955 against 0.966
    assert ward_acc >= ceiling - 0.09              # measured 0.895 (0.927 on the plain mean): 5 factors, 4 noise
    assert kmeans_acc <= ceiling + 0.01


def test_the_issue_box_64_px(tmp_path):
    """The issue's 64 px and SNR 0.05, with 1000 images (benchmarks/msa.py runs its 3000)."""
    sim, stack, _ = simulate(tmp_path, STATES, 1000, 64, SNR, seed=3)
    result = msa(stack, k=10)
    accuracy = class_accuracy(result.cluster(2, factors=5), sim.truth["view_index"].to_numpy())
    print(f"64 px: k-means {accuracy:.3f}, eigenvalues {np.round(result.eigenvalues[:2], 3)}, edge "
          f"{result.noise_edge:.3f}")
    assert accuracy >= 0.95                        # measured 1.000 (Bayes-optimal at 64 px: 0.999)
    assert result.n_significant == 1               # measured 17.7 and 6.71 against 7.46 (7.01 on the plain mean)


def test_one_state_has_nothing_above_the_noise_edge(tmp_path):
    _, stack, _ = simulate(tmp_path, STATES[:1], N_IMAGES, BOX, SNR, seed=2)
    result = msa(stack, k=5)
    dense, top = dense_count(result, stack)
    print(f"one state: eigenvalues {np.round(result.eigenvalues[:3], 3)} (dense {np.round(top, 3)}), "
          f"edge {result.noise_edge:.3f}")
    assert result.n_significant == dense == 0      # measured top 1.961 (dense too) below 2.196 (plain mean: 2.022)


def test_classification_and_result_files(two_states, tmp_path):
    _, stack, _, result = two_states
    labels = result.cluster(2, factors=5)
    star, mrcs = result.write_classification(stack, labels, tmp_path, "run")
    table = read_star(star)["particles"]
    assert table["rlnClassNumber"].tolist() == (labels + 1).tolist()
    assert table["rlnImageName"].tolist() == stack.image_names_for()
    averages, _ = read_mrc(mrcs)
    assert averages.shape == (2, BOX, BOX)
    inside = result.mask > 0
    r = np.corrcoef((averages[0] - averages[1])[inside], result.eigenimages[0][inside])[0, 1]
    assert abs(r) > 0.9                            # the class difference is the first eigenimage
    result.save(tmp_path, "msa")
    back = MSAResult.load(tmp_path, "msa")
    assert np.allclose(back.eigenimages, result.eigenimages, atol=1e-6)
    assert np.array_equal(back.coordinates, result.coordinates) and back.image_names == result.image_names
    assert back.n_significant == result.n_significant and back.settings == result.settings
    assert back.noise_edge == pytest.approx(result.noise_edge)


# ------------------------------------------------------------------------- command line and bad input

def small_stack(folder, n=40, with_psi=True):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(8)
    table = pd.DataFrame({"rlnDefocusU": np.full(n, 15000.0)})
    if with_psi:
        table["rlnAnglePsi"] = rng.uniform(0, 360, n)
    return write_particle_stack(folder / "p.star", rng.normal(size=(n, 16, 16)).astype(np.float32), table, OPTICS)


@pytest.mark.skipif(not cupy_available(), reason="CuPy or a GPU is not available")
def test_cupy_gives_the_numpy_result(tmp_path):
    """Alignment, CTF-corrected centring and the streamed PCA on CuPy: the same code, the same result."""
    rng = np.random.default_rng(12)
    n = 80
    table = pd.DataFrame({"rlnDefocusU": rng.uniform(8000, 25000, n), "rlnAnglePsi": rng.uniform(0, 360, n)})
    states = rng.integers(0, 2, n)[:, None, None] * 0.7 + 0.3            # two states: one direction stands out
    images = (20 * states * blob_image(0.0, (0.0, 0.0))[None] + rng.normal(size=(n, BOX, BOX))).astype(np.float32)
    stack = write_particle_stack(tmp_path / "p.star", images, table, OPTICS)
    on_cpu, on_gpu = (msa(stack, k=3, batch_size=32, backend=b) for b in ("numpy", "cupy"))
    assert on_gpu.eigenvalues[0] == pytest.approx(on_cpu.eigenvalues[0], rel=1e-4)
    np.testing.assert_allclose(on_gpu.ctf_mean, on_cpu.ctf_mean, atol=1e-4 * np.abs(on_cpu.ctf_mean).max())
    assert abs(np.sum(on_gpu.eigenimages[0] * on_cpu.eigenimages[0])) > 1 - 1e-6


def test_scratch_file_changes_nothing_and_is_removed(tmp_path):
    stack = small_stack(tmp_path / "data")
    (tmp_path / "scratch").mkdir()
    kept = msa(stack, k=4, batch_size=16, scratch=tmp_path / "scratch")
    again = msa(stack, k=4, batch_size=16, scratch=None)            # every pass aligns the images again
    assert np.allclose(kept.eigenvalues, again.eigenvalues, rtol=1e-12, atol=0)
    assert np.abs(kept.coordinates - again.coordinates).max() < 1e-12      # measured 5.3e-15 (BLAS rounding)
    assert not any((tmp_path / "scratch").iterdir())


def test_bad_input_is_refused_with_the_field_named(tmp_path):
    stack = small_stack(tmp_path, with_psi=False)
    with pytest.raises(CryolabInputError, match="rlnAnglePsi"):
        msa(stack, k=3)
    assert msa(stack, k=3, align=False).k == 3
    for k in (40, 0):
        with pytest.raises(CryolabInputError, match="field k"):
            msa(stack, k=k, align=False)
    with pytest.raises(CryolabInputError, match="field k"):    # 5 pixels in the mask
        msa(stack, k=6, align=False, mask=(soft_circle_mask(16, 1, 0) > 0).astype(np.float32))
    with pytest.raises(CryolabInputError, match="mask is empty"):
        msa(stack, k=3, align=False, mask=np.zeros((16, 16), np.float32))
    with pytest.raises(CryolabInputError, match="mask_diameter_A"):
        msa(stack, k=3, align=False, mask_diameter_A=1000.0)
    with pytest.raises(CryolabInputError, match="ctf"):
        msa(stack, k=3, align=False, ctf="invert")
    with pytest.raises(CryolabInputError, match="field centre"):
        msa(stack, k=3, align=False, centre="median")
    with pytest.raises(CryolabInputError, match="reaches beyond"):           # rotated corners: outside the box
        msa(small_stack(tmp_path / "psi"), k=3, mask=np.ones((16, 16), np.float32))
    with pytest.raises(CryolabInputError, match="field k"):
        streamed_pca(batched(np.ones((4, 3)), 2), 4)


def test_command_line(tmp_path, monkeypatch):
    from cryolab.cli import msa as msa_cli
    monkeypatch.chdir(tmp_path)
    small_stack(tmp_path)
    parser = argparse.ArgumentParser()
    msa_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["msa", "--i", "p.star", "--o", "MSA/run", "--k", "4", "--classes", "2",
                              "--factors", "3", "--quiet"])
    assert args.func(args) == 0
    written = {p.name for p in (tmp_path / "MSA").iterdir()}
    assert {"run_eigenimages.mrcs", "run_eigenvalues.star", "run_coordinates.npz", "run_data.star",
            "run_classes.mrcs", "run.json"} <= written
    assert read_mrc(tmp_path / "MSA" / "run_eigenimages.mrcs")[0].shape == (4, 16, 16)
    bad = parser.parse_args(["msa", "--i", "p.star", "--o", "Bad/run", "--k", "4", "--classes", "2",
                             "--factors", "5", "--quiet"])
    with pytest.raises(CryolabInputError, match="--factors"):
        bad.func(bad)
    assert not (tmp_path / "Bad").exists()
