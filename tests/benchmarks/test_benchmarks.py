"""The benchmark harness in its --quick mode, so that it never rots (the full benchmark is not run here)."""

from __future__ import annotations

import json

import pytest

from benchmarks.plots import step_curve
from benchmarks.run import main
from benchmarks.search import time_to_target


def test_time_to_target_and_step_curve():
    curve = [(1.0, 0.5), (2.0, 0.7), (4.0, 0.9)]
    assert time_to_target(curve, 0.7) == 2.0
    assert time_to_target(curve, 0.95) is None
    import numpy as np

    values = step_curve(curve, np.array([0.5, 1.0, 3.0, 5.0]))
    assert np.isnan(values[0]) and list(values[1:]) == [0.5, 0.7, 0.9]


@pytest.mark.slow
def test_quick_benchmark_writes_results_table_and_plots(tmp_path):
    path = main(["--quick", "--workloads", "digits-mlp", "--out", str(tmp_path)])
    result = json.loads(path.read_text())
    assert {r["threads"] for r in result["throughput"]} >= {1}
    for row in result["throughput"]:
        assert set(row["epochs_per_s"]) == {"tuner", "dataloader", "peer"}
        assert all(v > 0 for v in row["epochs_per_s"].values())
    tools = {r["tool"] for r in result["search"]}
    assert tools == {"peer-tpe", "peer-random", "tuner"}
    tuner = next(r for r in result["search"] if r["tool"] == "tuner")
    assert tuner["budget_s"] == next(r["wall_s"] for r in result["search"] if r["tool"] == "peer-tpe")
    assert tuner["complete"] + tuner["pruned"] + tuner["failed"] + tuner["trials_over_budget"] >= 1
    table = path.with_suffix(".md").read_text()
    assert "| digits-mlp |" in table and "tuner / peer" in table
    png = tmp_path / f"{path.stem}-digits-mlp.png"
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
