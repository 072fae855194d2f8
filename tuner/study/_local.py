"""Running a prepared study's trials in this process: on the trial engine one by one, or in packs."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from tuner.study._engine import RunSummary, TrialOutcome, run_trials, use_threads
from tuner.study._prepare import PreparedStudy

__all__ = ["run_prepared"]

OnTrial = Callable[[TrialOutcome, optuna.Study], None]


def run_prepared(study: optuna.Study, prepared: PreparedStudy, *, n_trials: int | None = None,
                 timeout: float | None = None, workers: int = 1, max_consecutive_failures: int | None = None,
                 on_trial: OnTrial | None = None) -> RunSummary:
    """Runs a prepared study's trials in this process on the trial engine (``tuner.study.run_trials``).
    ``workers``: how many processes share this machine's cores (torch threads default to cores / workers)."""
    plan = prepared.plan()
    if max_consecutive_failures is not None:
        plan.max_consecutive_failures = max_consecutive_failures
    threads = use_threads(prepared.trainer, prepared.spec.threads, workers)
    if prepared.spec.pack > 1:
        from tuner.study._packs import run_packed

        return run_packed(study, plan, prepared.executor(), prepared.trainer, prepared.spec.pack, n_trials=n_trials,
                          timeout=timeout, threads=threads, on_trial=on_trial)
    return run_trials(study, plan, prepared.executor(), n_trials=n_trials, timeout=timeout, threads=threads,
                      on_trial=on_trial)
