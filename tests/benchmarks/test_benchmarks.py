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


def test_gpu_samples_are_summarised_and_shown_only_where_sampled():
    from benchmarks.packs import GpuSampler, markdown, parse_gpu_samples

    text = "12, 3000\n88, 5200\n[N/A], [N/A]\n40, 4100\n"
    assert parse_gpu_samples(text) == {"gpu_util_mean": 46.7, "gpu_util_max": 88, "gpu_memory_max_mib": 5200,
                                       "gpu_samples": 3}
    assert parse_gpu_samples("") == {} and GpuSampler("cpu").stop() == {}
    run = {"workload": "w", "pack": "1", "chosen": 1, "trials_per_hour": 100, "epochs_trained": 10,
           "best_val": 0.5, "best_val_at_equal_time": 0.5, "seconds": 1.0, "why": ""}
    meta = {"n_trials": 2, "epochs": 1, "space": "s", "cores": 2, "torch": "x", "command": "c", "device": "cuda"}
    with_gpu = markdown([{**run, **parse_gpu_samples(text)}], meta)
    assert "GPU utilisation % (mean)" in with_gpu and "| 47 | 5200 |" in with_gpu
    assert "GPU" not in markdown([run], {**meta, "device": "cpu"})


def test_a_packs_study_runs_on_the_device_it_is_given():
    from benchmarks.packs import run_study

    run = run_study("digits-mlp", "1", 0, n_trials=2, epochs=1, space="lr-only", device="cpu")
    assert run["device"] == "cpu" and run["states"]["COMPLETE"] + run["states"]["PRUNED"] == 2
    assert "gpu_util_mean" not in run


def test_settings_in_workers_get_their_column_and_the_gpu_summary_compares_against_both(tmp_path):
    from benchmarks.gpu.summary import table
    from benchmarks.packs import markdown

    def run(workload, pack, rate, util=None):
        out = {"workload": workload, "pack": pack, "chosen": pack.partition("x")[0], "trials_per_hour": rate,
               "epochs_trained": 10, "best_val": 0.5, "best_val_at_equal_time": 0.5, "seconds": 1.0, "why": "",
               "n_trials": 48}
        return {**out, **({"gpu_util_mean": util, "gpu_memory_max_mib": 900} if util is not None else {})}

    meta = {"n_trials": 48, "epochs": 10, "space": "s", "cores": 2, "torch": "x", "command": "c", "device": "cpu"}
    text = markdown([run("w", "1", 100), run("w", "1x4", 250), run("w", "16", 500)], meta)
    assert "x pack 1 in 4 workers |" in text
    assert "| w | 16 | 16 | 500 | 5.00 |" in text and text.rstrip().count("| 2.00 |") == 1  # 500 / 250

    (tmp_path / "d-cuda-packs-gpu-baselines.json").write_text(json.dumps(
        {"runs": [run("mnist1d-mlp", "1", 100, 10), run("mnist1d-mlp", "1x4", 400, 30)]}))
    (tmp_path / "d-cuda-packs-gpu-mlp.json").write_text(json.dumps(
        {"runs": [run("mnist1d-mlp", "auto", 30000, 80), run("mnist1d-mlp", "1024", 2000, 95)]}))
    summary = table(tmp_path)
    assert "| mnist1d-mlp | auto | 48 | auto | 30000 | 300.0 | 75.0 | 80 | 900 | 0.5000 |" in summary
    assert "- mnist1d-mlp pack auto: 300.0x one at a time (target 200x: met), 75.0x 4 workers (target 10x: met)" \
        in summary
    assert "- mnist1d-mlp pack 1024: 20.0x one at a time (target 200x: missed), 5.0x 4 workers (target 10x: " \
           "missed)" in summary
    assert table(tmp_path / "nothing") == "no GPU results found\n"
    # Only this run's files: an earlier try's (older than the run's start) are left out.
    import os

    os.utime(tmp_path / "d-cuda-packs-gpu-mlp.json", (1_000, 1_000))
    later = table(tmp_path, after=2_000)
    assert "| mnist1d-mlp | 1 |" in later and "| mnist1d-mlp | auto |" not in later


def test_a_packs_table_without_the_one_at_a_time_setting_still_lists_every_setting():
    from benchmarks.packs import markdown

    run = {"workload": "w", "pack": "64", "chosen": 64, "trials_per_hour": 900, "epochs_trained": 10,
           "best_val": 0.5, "best_val_at_equal_time": 0.5, "seconds": 1.0, "why": ""}
    meta = {"n_trials": 64, "epochs": 1, "space": "s", "cores": 2, "torch": "x", "command": "c", "device": "cpu"}
    assert "| w | 64 | 64 | 900 | - | 10 |" in markdown([run], meta)


def test_the_bookkeeping_harness_times_each_setting_in_a_process_of_its_own():
    """``--bookkeeping`` with two settings: one JSON row each, from processes of their own (one study's thread
    choice is not the next one's); the parts timed lie within the wall time, which starts at the first ask."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "benchmarks.packs", "--bookkeeping", "--workloads", "digits-mlp",
                           "--packs", "1,2", "--n-trials", "4", "--epochs", "2"], cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [(r["workload"], r["pack"], r["trials"]) for r in rows] == [("digits-mlp", 1, 4), ("digits-mlp", 2, 4)]
    assert rows[0]["process"] != rows[1]["process"]
    for row in rows:
        parts = row["ms_per_trial"]
        assert {"ask + sample", "training", "close (attrs + tell)"} <= set(parts)
        assert all(v >= 0 for v in parts.values()) and 0 < sum(parts.values()) <= row["wall_ms_per_trial"] * 1.01


@pytest.mark.slow
def test_settings_with_confirm_retrain_both_tools_delivered_configs(tmp_path):
    """``--confirm``: the study is exported as a user exports it, the peer's best params are trained again, and
    the table shows both beside the single runs that put them on top."""
    from benchmarks.settings import main as settings

    peer = {"tool": "peer-tpe", "workload": "digits-mlp", "seed": 0, "wall_s": 4.0, "best_val": 0.9,
            "test_of_best": 0.95, "time_to_target_s": 1.0,
            "best_config": {"optimizer": "Adam", "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-5, "dropout": 0.1}}
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"peer_epochs": 2, "search": [peer]}))
    path = settings(["--setting=", "--workloads", "digits-mlp", "--seeds", "1", "--reference", str(reference),
                     "--confirm", "--tag", "confirm", "--out", str(tmp_path)])
    (run,) = json.loads(path.read_text())["runs"]
    assert 0.5 < run["confirmed_test"] <= 1 and 0.5 < run["best_trial_retrained_test"] <= 1
    assert 0.2 < run["peer_retrained_test"] <= 1 and run["peer_test_of_best"] == 0.95
    assert isinstance(run["confirmed_trial"], int) and isinstance(run["confirmed_is_best_trial"], bool)
    assert run["confirm_s"] > 0
    table = path.with_suffix(".md").read_text()
    assert "| digits-mlp | peer-tpe (reference) | 0.950 |" in table
    assert "| digits-mlp | tuner defaults |" in table and "delivered config re-trained" in table
    # The table drawn again from the results file, no setting needed; without either, a clear usage error.
    path.with_suffix(".md").unlink()
    assert settings(["--retable", str(path)]).read_text() == table
    with pytest.raises(SystemExit):
        settings(["--workloads", "digits-mlp"])


def test_a_setting_s_leading_assignments_are_its_command_s_environment():
    import subprocess

    from benchmarks.search import run_tuner, setting_environment

    assert setting_environment(["A=1", "B_2=x=y", "--pruner=patient", "C=3"]) == (
        {"A": "1", "B_2": "x=y"}, ["--pruner=patient", "C=3"])
    assert setting_environment(["/tmp/spec.yaml"]) == ({}, ["/tmp/spec.yaml"])
    assert setting_environment([]) == ({}, [])
    # The variable reaches the command: a value it refuses is named in its error.
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_tuner("digits-mlp", 0, budget_s=30, extra=["TUNER_WORKER_START=bogus", "--workers", "2"])
    assert "TUNER_WORKER_START" in failed.value.stderr and "bogus" in failed.value.stderr
