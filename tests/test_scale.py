"""Smoke test of ``benchmarks.scale``: one small job per kind, without RELION; its rows, ratios and plot.

Timings are not checked (they belong to ``python -m benchmarks.scale``); the values that do
not depend on the machine are: the rescaled data (box and pixel size), the GEMM flops counted,
the accuracies in [0, 1] and the peak memory read from the child process.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the benchmarks package lives at the repository root, not installed
    sys.path.insert(0, str(REPO))


@pytest.mark.timeout(120)
def test_scale_quick_rows_ratios_and_plot(tmp_path):
    from benchmarks import scale
    res = scale.run(quick=True, boxes=[24], relion=False, out=tmp_path, save=False,
                    plot_path=tmp_path / "cost.png", memory_limit_GB=1.5)
    rows = {r["kind"]: r for r in res["rows"]}
    assert set(rows) == {"2d", "3d"}
    for kind, r in rows.items():
        assert r["box"] == 24 and r["pixel_size_A"] == pytest.approx(6.0 * 64 / 24)
        c = r["cryolab"]
        assert 0 <= c["accuracy"] <= 1 and c["per_particle_iteration_s"] > 0
        assert c["gemm_mflop_per_particle_iteration"] > 0 and np.isfinite(c["gemm_fraction_of_peak"])
        # the lattice of translations is used only where it takes fewer flops than the GEMM rows
        assert c["rows_form_fraction_of_peak"] >= c["gemm_fraction_of_peak"]
        assert 50 < c["peak_MB"] < 4000                  # the child process's VmHWM: Python + NumPy + the job
        assert c["budget_MB"] == 1.5 * 1024             # the budget the child ran with (--memory-limit)
        assert "relion" not in r
    assert [x["name"] for x in res["ratios"]] == [f"scale.{k}_24.{what}" for k in ("2d", "3d")
                                                  for what in ("gemm_fraction", "rows_form_fraction",
                                                               "cryolab_peak_over_budget")]
    over = {x["name"]: x["value"] for x in res["ratios"]}
    assert over["scale.3d_24.cryolab_peak_over_budget"] == pytest.approx(rows["3d"]["cryolab"]["peak_MB"] / 1536)
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
