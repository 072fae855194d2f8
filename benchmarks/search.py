"""Search quality and time-to-target: ``tuner study create`` with its defaults against the plain-Optuna peer.

For each workload and seed: the peer script with TPE, then with random search (60 trials x 30 epochs, median
pruning, as in the reference figures); then ``tuner study create --objective W --seed S`` with its default
space, sampler, pruner and epochs, given the wall-clock budget the peer's TPE run took (``--timeout``). Both
tools' clocks start after data loading, at their first trial.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna

PEER = Path(__file__).with_name("peer_optuna.py")
PEER_MODEL = {"mnist1d-mlp": "mlp", "mnist1d-cnn": "cnn", "digits-mlp": "digits", "cancer-tabular": "cancer",
              "diabetes-tabular": "diabetes"}


def sklearn_csv(name: str) -> Path:
    """One of scikit-learn's bundled sets as a CSV (feature columns, then `target`), for the `tabular`
    objective: workloads none of tuner's defaults were tuned on. ``breast_cancer`` is a classification (569
    rows), ``diabetes`` a regression scored by R^2 (442 rows)."""
    import pandas as pd
    from sklearn import datasets

    path = Path(tempfile.gettempdir()) / "tuner-benchmarks" / f"{name}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
        frame["target"] = y
        frame.to_csv(path, index=False)
    return path


TABULAR = {"cancer-tabular": "breast_cancer", "diabetes-tabular": "diabetes"}


def objective_args(workload: str) -> list[str]:
    """`tuner study create` flags that select a workload."""
    if workload in TABULAR:
        return ["--objective", "tabular", "--data", str(sklearn_csv(TABULAR[workload])), "--target", "target"]
    return ["--objective", workload]


def run_peer(workload: str, sampler: str, seed: int, trials: int, epochs: int) -> dict:
    cmd = [sys.executable, str(PEER), "--model", PEER_MODEL[workload], "--sampler", sampler, "--seed", str(seed),
           "--trials", str(trials), "--epochs", str(epochs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    summary = rows[-1]
    curve = [(r["t"], r["best"]) for r in rows[:-1] if r["best"] is not None]
    states = [r["state"] for r in rows[:-1]]
    return {
        "tool": f"peer-{sampler}", "workload": workload, "seed": seed, "wall_s": summary["wall_s"],
        "best_val": summary["best_val"], "test_of_best": summary["best_test"],
        "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
        "curve": curve, "best_config": summary["best_params"],
    }


def retrain_peer(workload: str, params: dict, epochs: int, seeds: int = 3) -> dict:
    """The peer's best params trained again with ``seeds`` new seeds: the test accuracy a user who takes the
    search's best trial gets, without the luck of the seed that put it on top."""
    cmd = [sys.executable, str(PEER), "--model", PEER_MODEL[workload], "--epochs", str(epochs),
           "--retrain", json.dumps(params), "--retrain-seeds", str(seeds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    row = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    return {"vals": row["vals"], "tests": row["tests"], "test": statistics.fmean(row["tests"])}


def confirm_tuner(storage: str, seeds: int = 3) -> dict:
    """``tuner study export`` as a user runs it after a study: the top 3 trials re-trained with ``seeds`` new
    seeds each, the best mean recommended. Returns the recommended config's mean test accuracy over those
    seeds, and the best trial's (what taking the best trial as it is would have delivered)."""
    from tuner.report._confirm import stored_confirmation

    tuner = Path(sys.executable).with_name("tuner")
    started = time.perf_counter()
    subprocess.run([str(tuner), "study", "export", "bench", "--storage", storage, "--seeds", str(seeds),
                    "-o", os.devnull], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    conf = stored_confirmation(optuna.load_study(study_name="bench", storage=storage))
    first = conf.candidates[0]
    return {"confirmed_test": conf.best.test_mean, "best_trial_retrained_test": first.test_mean,
            "confirmed_trial": conf.recommended, "confirmed_is_best_trial": conf.recommended == first.trial,
            "confirm_s": round(seconds, 1)}


def run_tuner(workload: str, seed: int, budget_s: float, extra: list[str] | None = None,
              label: str = "tuner", confirm: bool = False) -> dict:
    """``tuner study create`` as a user runs it, with only the workload, seed, budget and storage given; with
    ``confirm``, then ``tuner study export`` (untimed), as :func:`confirm_tuner` says."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/bench.db"
        tuner = Path(sys.executable).with_name("tuner")
        env, flags = setting_environment(extra or [])
        cmd = [str(tuner), "study", "create", *objective_args(workload), "--seed", str(seed), "--name", "bench",
               "--timeout", f"{budget_s:.1f}", "--n-trials", "100000", "--storage", storage, "--format", "json",
               *flags]
        subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env})
        study = optuna.load_study(study_name="bench", storage=storage)
        # Trials that ran: a config still queued when the timeout came (a known start, a retry) never started.
        trials = sorted((t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None),
                        key=lambda t: t.number)
        # Work done before the first trial (an LR range test with --calibrate) counts against the budget.
        before = float((study.user_attrs.get("tuner:calibration") or {}).get("seconds", 0.0))
        confirmed = confirm_tuner(storage) if confirm and trials else {}
    if not trials:  # the budget was up before a trial started (preparing the run counts against it)
        return {"tool": label, "workload": workload, "seed": seed, "wall_s": 0.0, "best_val": None,
                "test_of_best": None, "complete": 0, "pruned": 0, "failed": 0, "curve": [], "best_config": None,
                "trials_over_budget": 0, "seconds_before_trials": round(before, 2), **confirmed}
    start = min(t.datetime_start for t in trials) - timedelta(seconds=before)
    curve, best, best_trial = [], None, None
    # Only trials finished within the budget count: --timeout stops new trials, and the last one may run over.
    finished = [t for t in trials if t.datetime_complete and _seconds(t.datetime_complete, start) <= budget_s]
    for t in sorted(finished, key=lambda t: t.datetime_complete):
        if t.state.name == "COMPLETE" and (best is None or t.value > best):
            best, best_trial = t.value, t
        if best is not None:
            curve.append((round(_seconds(t.datetime_complete, start), 2), best))
    states = [t.state.name for t in finished]
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    return {
        "tool": label, "workload": workload, "seed": seed, "wall_s": round(_seconds(end, start), 1),
        "best_val": best, "test_of_best": best_trial.user_attrs.get("test_value") if best_trial else None,
        "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
        "curve": curve, "best_config": best_trial.user_attrs.get("config") if best_trial else None,
        "trials_over_budget": len(trials) - len(finished), "seconds_before_trials": round(before, 2),
        **confirmed,
    }


def setting_environment(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """A setting's leading ``NAME=VALUE`` words, as a shell takes them (environment variables of the command),
    and the flags after them: ``TUNER_WORKER_START=spawn --pruner patient``."""
    env: dict[str, str] = {}
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if not eq or not name.isidentifier():  # a flag (-x, --a=b) is no name
            return env, words[i:]
        env[name] = value
    return env, []


def _seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


def time_to_target(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds until the running best reached ``target`` (None if never)."""
    return next((t for t, best in curve if best >= target), None)
