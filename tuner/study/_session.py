"""Running a study, and describing one: what ``study create/run/list/show`` do, without any printing.

``run_study`` runs a prepared study in this process or with ``--workers`` processes (each runs the trial
engine); the caller gets a ``TrialOutcome`` per finished trial and a ``SessionResult``. ``study_summary`` and
``list_studies`` describe studies as data. The command line only parses flags and prints these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.config import TrainConfig
from tuner.study._engine import TrialOutcome, counts, oom_notes
from tuner.study._local import run_prepared
from tuner.study._prepare import PreparedStudy, study_kind
from tuner.study._record import (
    EDGE,
    Key,
    StudyKey,
    best_trial,
    direction_of,
    primary,
    range_position,
    ranked_trials,
    record_of,
)
from tuner.study._storage import open_storage, storage_exists
from tuner.study._workers import MAX_WORKERS_PER_CORE, WorkerReport, check_workers, parse_devices, run_workers

__all__ = ["SessionResult", "run_study", "run_prepared", "check_workers", "study_summary", "list_studies",
           "trial_row", "trial_line", "outcome_of", "MAX_WORKERS_PER_CORE"]

OnTrial = Callable[[TrialOutcome, optuna.Study], None]


@dataclass
class SessionResult:
    trials: int = 0
    seconds: float = 0.0
    stopped_by: str = "budget"  # budget | timeout
    threads: int | None = None  # torch threads of a run in this process
    workers: list[WorkerReport] = field(default_factory=list)  # --workers: what each process did
    requeued: list[int] = field(default_factory=list)  # trials of lost workers whose parameters run again
    interrupted: int | None = None  # the signal that stopped the workers
    pack: int | None = None  # trials trained at once in this process
    pack_why: str = ""

    @property
    def failure(self) -> str | None:
        """Why the run failed as a whole (every worker stopped with an error), or None."""
        lost = self.lost_workers
        if self.interrupted is None and self.workers and lost and len(lost) == len(self.workers):
            return f"every worker stopped with an error; the first: {lost[0].error or lost[0].exitcode}"
        return None

    @property
    def lost_workers(self) -> list[WorkerReport]:
        """Workers that stopped with an error (not by Ctrl-C or SIGTERM)."""
        return [w for w in self.workers if (w.exitcode not in (0, None) or w.error) and w.exitcode not in (130, 143)]


def run_study(study: optuna.Study, prepared: PreparedStudy, *, n_trials: int | None = None,
              timeout: float | None = None, workers: int = 1, devices: str | None = None,
              on_trial: OnTrial | None = None, on_start: Callable[[str], None] | None = None) -> SessionResult:
    """Runs ``study`` until its budget (or ``timeout``) is met, here or in ``workers`` processes; ``on_start``
    gets a line saying how this process trains (its pack size and why) before the first trial. Every finished
    trial is logged to the spec's ``mlflow`` / ``tensorboard`` (or ``$TUNER_MLFLOW_URI``), if any."""
    from tuner.track import tracking

    n_trials = n_trials or prepared.spec.n_trials
    timeout = timeout if timeout is not None else prepared.spec.timeout
    device_list = parse_devices(devices)
    workers = max(workers, len(device_list)) if device_list else workers
    check_workers(workers)
    with tracking(study, on_trial, mlflow=prepared.spec.mlflow, tensorboard=prepared.spec.tensorboard) as on_trial:
        if workers > 1:
            return _run_pool(study, prepared, workers, device_list, on_trial)
        run = run_prepared(study, prepared, n_trials=n_trials, timeout=timeout, on_trial=on_trial,
                           on_start=on_start)
    return SessionResult(len(run.outcomes), run.seconds, run.stopped_by, run.threads, pack=run.pack,
                         pack_why=run.pack_why)


def _run_pool(study: optuna.Study, prepared: PreparedStudy, workers: int, devices: list[str],
              on_trial: OnTrial | None) -> SessionResult:
    spec = prepared.spec
    overrides = {k: v for k, v in (("timeout", spec.timeout), ("threads", spec.threads), ("pack", spec.pack),
                                   ("device", None if devices else spec.device)) if v is not None}

    def finished(t: optuna.trial.FrozenTrial, s: optuna.Study) -> None:
        if on_trial is not None:
            on_trial(outcome_of(t), s)

    pool = run_workers(prepared.name, prepared.storage_url, workers, devices=devices, overrides=overrides,
                       on_trial=finished)
    return SessionResult(sum(w.trials for w in pool.workers), pool.seconds, "budget", None, pool.workers,
                         pool.reaped, pool.interrupted)


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def trial_line(outcome: TrialOutcome, done: int, n_trials: int, best: float | None) -> str:
    """One line per finished trial, for logs and for ``tune(verbose=True)``."""
    config = outcome.config.summary() if outcome.config else "-"
    line = (f"trial {outcome.number:>4} {outcome.state:<8} val {_fmt(outcome.value)} test "
            f"{_fmt(outcome.test_value)} {outcome.seconds:6.1f}s  {config}  | done {done}/{n_trials} best "
            f"{_fmt(best)}")
    if outcome.reason and outcome.state != "COMPLETE":
        line += f"  ({' '.join(str(outcome.reason).split())})"
    return line


def outcome_of(trial: optuna.trial.FrozenTrial) -> TrialOutcome:
    """The outcome of a finished trial, read back from its record (a trial another process ran)."""
    rec = record_of(trial)
    return TrialOutcome(rec.number, rec.state, rec.value, rec.test_value, rec.reason, rec.seconds,
                        TrainConfig.from_dict(rec.config) if rec.config else None)


def trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    rec = record_of(t)
    row = {"number": rec.number, "value": rec.value, "test_value": rec.test_value,
           "seconds": t.user_attrs.get(Key.SECONDS), "config": rec.config}
    if t.values and len(t.values) > 1:
        row["values"] = list(t.values)
    return row


def study_summary(study: optuna.Study, top: int = 5) -> dict[str, Any]:
    """Everything ``study show`` prints, as data."""
    c = counts(study)
    ranked = ranked_trials(study)
    reasons: Counter[str] = Counter()
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.FAIL)):
        rec = record_of(t)
        reasons[f"{t.state.name}: {rec.reason.group if rec.reason else 'no reason recorded'}"] += 1
    spec = study.user_attrs.get(StudyKey.SPEC, {})
    pareto = _pareto(study)
    anchor = pareto.get("knee") or (trial_row(ranked[0]) if ranked else None)
    return {
        "edges": edge_notes(study, anchor["number"]) if anchor else [],
        "name": study.study_name,
        "direction": direction_of(study),
        "objective": spec.get("objective"),
        "space": spec.get("space") if isinstance(spec.get("space"), str) else "custom",
        "calibration": _calibration(study.user_attrs.get(StudyKey.CALIBRATION)),
        "n_trials": spec.get("n_trials"),
        "counts": {"complete": c["COMPLETE"], "pruned": c["PRUNED"], "failed": c["FAIL"], "running": c["RUNNING"]},
        "reasons": dict(reasons.most_common()),
        "memory": oom_notes(study),
        "best": trial_row(ranked[0]) if ranked else None,
        "confirmation": _confirmation(study, ranked),
        "top": [trial_row(t) for t in ranked[:top]],
        **pareto,
    }


def edge_notes(study: optuna.Study, number: int) -> list[str]:
    """For the recommended trial (``number``): each parameter whose value sits at an end of its range, where
    better values may lie beyond it."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        return []
    notes = []
    for name, dist in sorted(trial.distributions.items()):
        value = trial.params[name]
        pos = range_position(dist, value)
        if pos is not None and (pos <= EDGE or pos >= 1 - EDGE):
            end = "low" if pos <= EDGE else "high"
            notes.append(f"{name} = {value:.3g} sits at the {end} end of its range [{dist.low:.3g}, {dist.high:.3g}]: "
                         f"better values may lie {'below' if end == 'low' else 'above'} it")
    return notes


def _pareto(study: optuna.Study) -> dict[str, Any]:
    """A study with several objectives: their names, the Pareto front (best metric first) and its knee."""
    if len(study.directions) < 2:
        return {}
    from tuner.study._record import knee, objectives_of, pareto_front

    point = knee(study)
    return {"objectives": objectives_of(study), "pareto": [trial_row(t) for t in pareto_front(study)],
            "knee": trial_row(point) if point is not None else None}


def _confirmation(study: optuna.Study, ranked: list[Any]) -> dict[str, Any] | None:
    """The confirmed recommendation stored by ``study report``/``export`` (the top trials re-trained with new
    seeds), or None; ``current``: whether it covers the study's present top trials."""
    import math
    import statistics

    data = study.user_attrs.get(StudyKey.CONFIRMATION)
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
        return None
    try:
        chosen = next(c for c in data["candidates"] if c["trial"] == data["recommended"])
        values = [float(v) for v in chosen["values"] if v is not None and math.isfinite(float(v))]
        tests = [float(v) for v in chosen.get("test_values") or [] if v is not None]
        top_k = int(data["top_k"])
        current = [c["trial"] for c in data["candidates"]] == [t.number for t in ranked[:top_k]]
        return {"trial": chosen["trial"], "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "test_mean": statistics.fmean(tests) if tests else None, "seeds": int(data["n_seeds"]),
                "top_k": top_k, "current": current, "config": chosen.get("config")}
    except (KeyError, TypeError, ValueError, StopIteration):
        return None


def _calibration(stored: Any) -> dict[str, Any] | None:
    """The lr ranges an LR range test gave the study's space when it was created (``calibrate: true``)."""
    if not isinstance(stored, dict) or not isinstance(stored.get("ranges"), dict):
        return None
    return {"batch_size": stored.get("batch_size"),
            "ranges": {k: [v.get("low"), v.get("high")] for k, v in stored["ranges"].items() if isinstance(v, dict)}}


def list_studies(url: str) -> list[dict[str, Any]]:
    """Every study in a storage (tuner's and any other Optuna study), read without changing anything."""
    rows: list[dict[str, Any]] = []
    if not storage_exists(url):
        return rows
    opened = open_storage(url, readonly=True)
    for s in optuna.get_all_study_summaries(opened, include_best_trial=False):
        spec = s.user_attrs.get(StudyKey.SPEC, {})
        kind = study_kind(s.user_attrs, len(s.directions))
        best = None
        if kind != "multi-objective":
            trial = best_trial(optuna.load_study(study_name=s.study_name, storage=opened))
            best = None if trial is None else primary(trial)
        rows.append({"name": s.study_name, "kind": kind, "trials": s.n_trials,
                     "objective": spec.get("objective") if isinstance(spec, dict) else None, "best": best,
                     "created": s.datetime_start.isoformat(timespec="seconds") if s.datetime_start else None})
    return rows
