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
    var = bootstrap_variance(star, 4, lowpass_A=30.0, pad=1)
    var.write(tmp_path)
    data = collect_directory(tmp_path)
    title, figures, stats = data.extra[0]
    sig = var.significance
    z, y, x = np.unravel_index(int(np.argmax(sig)), sig.shape)
    assert title == "Bootstrapped variance" and len(figures) == 1
    assert stats["most significant voxel (x, y, z)"] == f"({x}, {y}, {z})"
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
