"""Rendering for the CLI: Rich on a terminal, plain lines otherwise, JSON on request."""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tuner.study import TrialOutcome, best_trial, counts
from tuner.study._runner import reason_kind

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


class TrialProgress:
    """A progress bar with done/pruned/failed counts, the best value, elapsed time and ETA on a terminal;
    one line per trial otherwise (to stderr when stdout carries JSON)."""

    def __init__(self, study: optuna.Study, n_trials: int, *, quiet: bool = False) -> None:
        self.n_trials = n_trials
        self.quiet = quiet
        c = counts(study)
        self.done = c["COMPLETE"] + c["PRUNED"]
        self.pruned, self.failed = c["PRUNED"], c["FAIL"]
        self.start = time.monotonic()
        self.rich = sys.stdout.isatty() and not quiet
        self.progress: Progress | None = None
        if self.rich:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=out, transient=False,
            )
            self.task = self.progress.add_task(study.study_name, total=n_trials, completed=min(self.done, n_trials),
                                               stats=self._stats(study))

    def _stats(self, study: optuna.Study) -> str:
        best = best_trial(study)
        return f"pruned {self.pruned} failed {self.failed} best {fmt(best.value if best else None)}"

    def __enter__(self) -> TrialProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, outcome: TrialOutcome, study: optuna.Study) -> None:
        if outcome.state in ("COMPLETE", "PRUNED"):
            self.done += 1
        self.pruned += outcome.state == "PRUNED"
        self.failed += outcome.state == "FAIL"
        if self.progress is not None:
            self.progress.update(self.task, completed=min(self.done, self.n_trials), stats=self._stats(study))
            if outcome.state == "FAIL":
                self.progress.console.print(f"[red]trial {outcome.number} failed:[/] {outcome.reason}")
            return
        best = best_trial(study)
        config = outcome.config.summary() if outcome.config else "-"
        line = (f"trial {outcome.number:>4} {outcome.state:<8} val {fmt(outcome.value)} test {fmt(outcome.test_value)}"
                f" {outcome.seconds:6.1f}s  {config}  | done {self.done}/{self.n_trials}"
                f" best {fmt(best.value if best else None)}")
        if outcome.reason and outcome.state != "COMPLETE":
            line += f"  ({outcome.reason})"
        if not self.quiet:
            print(line, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def study_summary(study: optuna.Study, top: int = 5) -> dict[str, Any]:
    """Everything ``study show`` prints, as data."""
    c = counts(study)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: t.value, reverse=reverse)
    reasons: Counter[str] = Counter()
    for t in trials:
        if t.state in (TrialState.PRUNED, TrialState.FAIL):
            reason = str(t.user_attrs.get("reason", "no reason recorded"))
            reasons[f"{t.state.name}: {reason_kind(reason)}"] += 1
    best = complete[0] if complete else None
    spec = study.user_attrs.get("tuner:spec", {})
    return {
        "name": study.study_name,
        "direction": study.direction.name.lower(),
        "objective": spec.get("objective"),
        "space": spec.get("space") if isinstance(spec.get("space"), str) else "custom",
        "n_trials": spec.get("n_trials"),
        "counts": {"complete": c["COMPLETE"], "pruned": c["PRUNED"], "failed": c["FAIL"], "running": c["RUNNING"]},
        "reasons": dict(reasons.most_common()),
        "best": None if best is None else _trial_row(best),
        "top": [_trial_row(t) for t in complete[:top]],
    }


def _trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "value": t.value,
        "test_value": t.user_attrs.get("test_value"),
        "seconds": t.user_attrs.get("seconds"),
        "config": t.user_attrs.get("config"),
    }


def print_summary(summary: dict[str, Any]) -> None:
    c = summary["counts"]
    out.print(f"[bold]{summary['name']}[/]: objective {summary['objective']}, space {summary['space']}, "
              f"{summary['direction']}")
    out.print(f"trials: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
              + (f", {c['running']} running" if c["running"] else "")
              + (f" (budget {summary['n_trials']})" if summary["n_trials"] else ""))
    for reason, n in summary["reasons"].items():
        out.print(f"  {n:>4} x {reason}")
    if not summary["top"]:
        out.print("no complete trial yet")
        return
    table = Table(title="best trials", title_justify="left")
    for col in ("trial", "validation", "test", "seconds", "config"):
        table.add_column(col, justify="right" if col in ("trial", "validation", "test", "seconds") else "left")
    from tuner.config import TrainConfig

    for row in summary["top"]:
        summary_text = TrainConfig.from_dict(row["config"]).summary() if row["config"] else "-"
        table.add_row(str(row["number"]), fmt(row["value"]), fmt(row["test_value"]),
                      fmt(row["seconds"], 1), summary_text)
    out.print(table)


def print_best_config(summary: dict[str, Any]) -> None:
    import yaml

    best = summary["best"]
    if best is None:
        out.print("no complete trial: no best config")
        return
    out.print(f"\n[bold]best config[/] (trial {best['number']}, validation {fmt(best['value'])}, "
              f"test {fmt(best['test_value'])}):")
    out.print(yaml.safe_dump(best["config"], sort_keys=False).rstrip(), markup=False)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
