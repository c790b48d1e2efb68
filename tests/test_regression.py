"""Refactoring guard: fixed small jobs (``regression_case.py``) give the classes and maps the
code gave when ``tests/data/regression_main.npz`` was written (before the engine moved into
``cryolab.engine``): classes and angles identical, maps within 1e-5 relative."""
from __future__ import annotations

import numpy as np
import pytest

from regression_case import DATA, run_cases


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_cases(tmp_path_factory.mktemp("regression"))


@pytest.mark.parametrize("stage", ["c2", "c3", "loc", "fix"])
def test_same_classes_angles_and_maps_as_before_the_redesign(results, stage):
    ref = np.load(DATA)
    np.testing.assert_array_equal(results[f"{stage}_classes"], ref[f"{stage}_classes"])
    for key in (f"{stage}_psi", f"{stage}_eulers"):
        if key in ref:
            np.testing.assert_allclose(results[key], ref[key], atol=1e-6)
    got, want = results[f"{stage}_refs"], ref[f"{stage}_refs"]
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel <= 1e-5, f"{stage}: maps differ by {rel:.2e} (relative)"
