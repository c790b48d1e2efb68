"""The HTML report of a folder with heterogeneity results: the variance maps and the MSA
eigenvalues against the noise edge appear as sections with their numbers."""
from __future__ import annotations

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.fourier import rescale
from cryolab.report import collect_directory, directory_report
from cryolab.simulate import simulate_particles, write_simulation


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = load_demo()
    vols = {k: rescale(d.volumes[k], 32, ndim=3) for k in ("80S", "80S_noRACK1")}
    sim = simulate_particles(vols, 120, d.pixel_size_A * 2, snr=1.0, seed=1, include_truth_angles=True)
    folder = tmp_path_factory.mktemp("het")
    return write_simulation(sim, folder, "p", include_truth_angles=True), folder


def test_variance_section(pair, tmp_path):
    from cryolab.methods.variance import bootstrap_variance
    star, _ = pair
    var = bootstrap_variance(star, 4, pad=1)              # the low-pass from the half-set FSC
    var.write(tmp_path)
    data = collect_directory(tmp_path)
    title, figures, stats = data.extra[0]
    sig = var.significance
    z, y, x = np.unravel_index(int(np.argmax(sig)), sig.shape)
    assert title == "Bootstrapped variance" and len(figures) == 1
    assert stats["most significant voxel (x, y, z)"] == f"({x}, {y}, {z})"
    assert stats["low-pass"] == f"{var.lowpass_A:.1f} A (2/3 of the half-set FSC 0.5 shell)"
    html = directory_report(tmp_path).read_text()
    assert "<h2>Bootstrapped variance</h2>" in html and "peak / median" in html


def test_msa_section(pair, tmp_path):
    from cryolab.methods.msa import msa
    star, _ = pair
    result = msa(star, k=4)
    result.save(tmp_path, "run")
    html = directory_report(tmp_path).read_text()
    assert "<h2>MSA (run)</h2>" in html
    assert f"<th>eigenvalues above the noise edge</th><td>{result.n_significant}</td>" in html
    assert f"<th>images</th><td>{len(result.coordinates)}</td>" in html
    assert "<th>images centred on</th><td>their own view of the CTF-corrected mean</td>" in html


def test_msa_and_variance_take_a_session(pair):
    """The analysis tools take a run's result as it is: a Session's particles with the angles of
    its last iteration give the same as a STAR file holding them."""
    from cryolab.methods.msa import msa
    from cryolab.methods.variance import bootstrap_variance
    from cryolab.session import Session
    from cryolab.session.files import as_particles
    star, folder = pair
    s = Session(star, K=1, references=np.zeros((1, 32, 32, 32), np.float32) + 0.0, skip_align=True)
    stack = as_particles(s)
    assert np.allclose(stack.eulers(), s.eulers) and len(stack) == len(s.particles)
    a, b = msa(s, k=3), msa(star, k=3)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-5)
    v1, v2 = bootstrap_variance(s, 3, lowpass_A=30.0, pad=1), bootstrap_variance(star, 3, lowpass_A=30.0, pad=1)
    np.testing.assert_allclose(v1.variance, v2.variance, rtol=1e-5, atol=1e-12)
