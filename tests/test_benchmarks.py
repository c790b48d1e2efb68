"""Smoke test of the benchmark suite: it runs end to end and prints its ratio lines.

Timings are not checked (they belong to ``python -m benchmarks``, not to tests).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the benchmarks package lives at the repository root, not installed
    sys.path.insert(0, str(REPO))


@pytest.mark.timeout(320)
def test_quick_suite_prints_ratios(tmp_path):
    # ~55 s on two cores; the limits only stop a hung run (a busy machine took over 110 s)
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--no-relion", "--n", "24",
                           "--iter", "1", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.findall(r"^RATIO (\S+) = (\S+)", done.stdout, flags=re.M)
    names = {name for name, _ in lines}
    for expected in ("gemm.score_over_peak", "gemm.weighted_sums_over_peak", "gemm.step_effective_over_peak",
                     "class2d.cryolab_accuracy", "class3d.cryolab_accuracy", "imaging.project_numpy_over_cryolab",
                     "imaging.reconstruct_numpy_over_cryolab", "memory.allocated_over_stack",
                     "focused.cryolab_accuracy", "focused.cryolab_minus_unfocused"):
        assert expected in names, done.stdout
    assert all(np.isfinite(float(value)) for _, value in lines)
    relion = ("class2d.relion", "class3d.relion", "imaging.project_relion", "focused.relion",
              "focused.cryolab_over_relion")
    assert not any(name.startswith(relion) for name in names)
    saved = list(tmp_path.glob("*.json"))
    assert len(saved) == 1
    parts = {"machine", "gemm", "class2d", "class3d", "imaging", "memory", "focused"}
    assert parts <= set(json.loads(saved[0].read_text()))


def test_class_accuracy_uses_the_best_one_to_one_matching():
    from cryolab.validation import class_accuracy     # what the benchmarks score with
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert class_accuracy([2, 2, 0, 0, 1, 1], truth) == 1.0
    assert class_accuracy([0, 0, 0, 0, 1, 1], truth) == pytest.approx(4 / 6)


def test_gemm_flops_count():
    from benchmarks import estep_gemm_flops
    assert estep_gemm_flops(B=2, T=3, M=5, J=7) == 2 * 2 * 3 * 10 * 7 + 2 * 2 * 5 * 7


def test_refine_assessment_against_known_answers():
    from benchmarks.refine import assess
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.geometry import random_rotations
    truth = rescale(load_demo().volumes["80S"], 32, ndim=3)
    eulers = random_rotations(20, np.random.default_rng(0))
    same = assess(truth, truth, eulers, truth, eulers, 12.0)
    assert same["map_correlation"] == pytest.approx(1.0) and same["mean_angular_error_deg"] < 1e-6
    assert same["resolution_A"] == pytest.approx(24.0)          # identical halves: FSC 1 up to Nyquist
    noisy = truth + np.random.default_rng(1).normal(scale=3 * truth.std(), size=truth.shape)
    flipped = eulers.copy()
    flipped[:, 1] = 180.0 - flipped[:, 1]
    worse = assess(truth, noisy, flipped, truth, eulers, 12.0)
    assert worse["resolution_A"] > same["resolution_A"] and worse["map_correlation"] < 0.9
    assert worse["mean_angular_error_deg"] > 10
