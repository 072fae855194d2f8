"""Many workers: trials per hour with 1 vs N workers, SQLite (WAL) vs the journal file under N local
workers, and the time from a worker's SIGKILL to its trial running again.

    python -m benchmarks.workers                      # all three, on this machine
    python -m benchmarks.workers --skip-throughput    # storage and SIGKILL only

Writes ``results/<date>-<machine>-workers.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tuner.study import open_storage

TUNER = str(Path(sys.executable).with_name("tuner"))
RESULTS = Path(__file__).resolve().parent / "results"


def _create(storage: str, name: str, *extra: str, timeout: float = 3600) -> tuple[float, dict]:
    start = time.monotonic()
    done = subprocess.run([TUNER, "study", "create", "--name", name, "--storage", storage, "--format", "json",
                           *extra], capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return seconds, json.loads(done.stdout)


def throughput(trials: int, epochs: int, workers_list: list[int]) -> list[dict]:
    """mnist1d-mlp on the default space, no pruning (every trial does the same work): finished trials (complete,
    or stopped as diverged) per hour."""
    rows = []
    for workers in workers_list:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/t.db"
            seconds, out = _create(url, "t", "--objective", "mnist1d-mlp", "--n-trials", str(trials), "--epochs",
                                   str(epochs), "--pruner", "none", "--workers", str(workers), "--seed", "0")
            study = optuna.load_study(study_name="t", storage=open_storage(url))
            complete = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            first = min(t.datetime_start for t in study.trials)
            last = max(t.datetime_complete for t in study.trials if t.datetime_complete)
            span = (last - first).total_seconds()
        rows.append({"workers": workers, "trials": len(complete), "epochs": epochs, "wall_s": round(seconds, 1),
                     "trial_span_s": round(span, 1), "trials_per_hour": round(3600 * len(complete) / span),
                     "best": out.get("best_value")})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def storages(workers: int, trials_each: int) -> list[dict]:
    """Short trials (digits-mlp, 1 epoch) from ``workers`` processes on SQLite with WAL and on the journal."""
    rows = []
    for kind in ("sqlite", "journal"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/s.db" if kind == "sqlite" else f"journal:{tmp}/s.journal"
            total = workers * trials_each
            seconds, out = _create(url, "s", "--objective", "digits-mlp", "--space", "lr-only", "--n-trials",
                                   str(total), "--epochs", "1", "--pruner", "none", "--workers", str(workers),
                                   "--threads", "1")
            study = optuna.load_study(study_name="s", storage=open_storage(url))
            states = [t.state for t in study.trials]
            numbers = sorted(t.number for t in study.trials)
            storage_errors = sum("storage" in (t.user_attrs.get("reason") or "") for t in study.trials)
        worker_errors = sum(1 for w in out["run"]["workers"] if w["exitcode"] != 0 or w["error"])
        rows.append({"storage": kind, "workers": workers, "budget": total, "seconds": round(seconds, 1),
                     "complete": states.count(TrialState.COMPLETE), "failed": states.count(TrialState.FAIL),
                     "storage_errors": storage_errors, "worker_errors": worker_errors,
                     "numbers_unique_contiguous": numbers == list(range(len(numbers)))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


SLOW = '''
import time
from torch import nn
from tuner.objectives import Objective, load_objective

base = load_objective("digits-mlp")


class Slow(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if self.training:
            time.sleep(0.02)
        return self.inner(x)


objective = Objective("slow-digits", load_data=base.load_data, build_model=lambda d: Slow(base.build_model(d)))
'''


def sigkill(interval: float, grace: float, storage_kind: str = "sqlite") -> dict:
    """3 workers; one is killed mid-trial: seconds until its trial is failed, and until its retry starts."""
    with tempfile.TemporaryDirectory() as tmp:
        objective = Path(tmp) / "slow.py"
        objective.write_text(SLOW)
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"name": "k", "objective": f"{objective}:objective", "space": "lr-only",
                                    "pruner": "none", "n_trials": 12, "epochs": 3, "threads": 1,
                                    "heartbeat_interval": interval, "grace_period": grace}))
        url = f"sqlite:///{tmp}/k.db" if storage_kind == "sqlite" else f"journal:{tmp}/k.journal"
        subprocess.run([TUNER, "study", "create", str(spec), "--storage", url, "--no-run"], check=True,
                       capture_output=True)
        proc = subprocess.Popen([TUNER, "study", "run", "k", "--storage", url, "--workers", "3", "--format", "json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        study = optuna.load_study(study_name="k", storage=open_storage(url))
        victim = None
        while victim is None:
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "worker" in t.user_attrs
                       and t.intermediate_values]
            victim = running[0] if running else None
            time.sleep(0.05)
        os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
        killed_at = time.time()
        failed_at = rerun_at = None
        while rerun_at is None and proc.poll() is None:
            trials = study.get_trials(deepcopy=False)
            if failed_at is None and trials[victim.number].state == TrialState.FAIL:
                failed_at = time.time()
            retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
            if retry and retry[0].state != TrialState.WAITING:
                rerun_at = time.time()
            time.sleep(0.05)
        proc.communicate(timeout=600)
        final = optuna.load_study(study_name="k", storage=open_storage(url))
        complete = sum(t.state == TrialState.COMPLETE for t in final.trials)
    row = {"storage": storage_kind, "heartbeat_interval": interval, "grace_period": grace,
           "kill_to_fail_s": round(failed_at - killed_at, 2) if failed_at else None,
           "kill_to_rerun_s": round(rerun_at - killed_at, 2) if rerun_at else None,
           "complete": complete, "budget": 12, "exit_code": proc.returncode}
    print(json.dumps(row), flush=True)
    return row


def _markdown(data: dict) -> str:
    lines = [f"# Workers: {data['machine']}", "", f"`{data['command']}`", ""]
    if data["throughput"]:
        lines += ["## Trials per hour on mnist1d-mlp (default space, no pruning, SQLite)", "",
                  "| workers | trials | epochs | trial span s | trials/hour | ratio to 1 worker |",
                  "|---|---|---|---|---|---|"]
        base = data["throughput"][0]["trials_per_hour"]
        for r in data["throughput"]:
            lines.append(f"| {r['workers']} | {r['trials']} | {r['epochs']} | {r['trial_span_s']} | "
                         f"{r['trials_per_hour']} | {r['trials_per_hour'] / base:.2f} |")
        lines.append("")
    if data["storages"]:
        lines += ["## Storage under local workers (digits-mlp, 1 epoch per trial)", "",
                  "| storage | workers | budget | seconds | complete | failed | storage errors | worker errors | "
                  "numbers contiguous |", "|---|---|---|---|---|---|---|---|---|"]
        for r in data["storages"]:
            lines.append(f"| {r['storage']} | {r['workers']} | {r['budget']} | {r['seconds']} | {r['complete']} | "
                         f"{r['failed']} | {r['storage_errors']} | {r['worker_errors']} | "
                         f"{r['numbers_unique_contiguous']} |")
        lines.append("")
    if data["sigkill"]:
        lines += ["## SIGKILL of one of 3 workers mid-trial", "",
                  "| storage | heartbeat s | grace s | kill -> FAIL s | kill -> re-run s | complete / budget |",
                  "|---|---|---|---|---|---|"]
        for r in data["sigkill"]:
            lines.append(f"| {r['storage']} | {r['heartbeat_interval']} | {r['grace_period']} | {r['kill_to_fail_s']} |"
                         f" {r['kill_to_rerun_s']} | {r['complete']} / {r['budget']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24, help="trials per throughput run")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    machine = f"{platform.machine()}-{os.cpu_count()}core-cpu"
    data = {"command": "python -m benchmarks.workers " + " ".join(sys.argv[1:]), "machine": machine,
            "optuna": optuna.__version__,
            "throughput": [] if args.skip_throughput else throughput(args.trials, args.epochs, args.workers),
            "storages": storages(4, 50) + storages(8, 40),
            "sigkill": [sigkill(2.0, 12.0), sigkill(0.5, 2.0), sigkill(0.5, 2.0, "journal")]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{date.today().isoformat()}-{machine}-workers"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    stem.with_suffix(".md").write_text(_markdown(data))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
