"""Runs trials with ask/tell: every trial ends COMPLETE, PRUNED or FAIL with its reason stored.

``study.optimize`` is not used: when its final write fails it raises ``AssertionError`` and leaves the trial
RUNNING. Here each outcome is recorded by one retried ``tell``, and an interrupt marks the running trial
failed before it propagates.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from tuner.config import TrainConfig
from tuner.errors import StudyError
from tuner.study._prepare import PreparedStudy
from tuner.train import Diverged

__all__ = ["TrialOutcome", "RunSummary", "run_trials", "trial_seed", "counts", "FINISHED"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TELL_RETRIES = 3


@dataclass
class TrialOutcome:
    number: int
    state: str
    value: float | None
    test_value: float | None
    reason: str | None
    seconds: float
    config: TrainConfig | None


@dataclass
class RunSummary:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: str = "budget"  # budget | timeout | failures
    threads: int = 1


def trial_seed(study_seed: int, number: int) -> int:
    return (study_seed * 1_000_003 + number) % 2**31


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def _tell(study: optuna.Study, trial: optuna.Trial | int, **kwargs: Any) -> None:
    for attempt in range(TELL_RETRIES):
        try:
            study.tell(trial, skip_if_finished=True, **kwargs)
            return
        except Exception:
            if attempt == TELL_RETRIES - 1:
                raise
            time.sleep(0.5 * 2**attempt)


class _SamplerFailed(Exception):
    pass


def _sampler_error(prepared: PreparedStudy, exc: BaseException) -> StudyError:
    return StudyError(f"The {prepared.spec.sampler_name!r} sampler could not propose a trial "
                      f"({type(exc).__name__}: {exc}); check its options.")


def _ask(study: optuna.Study, prepared: PreparedStudy) -> optuna.Trial:
    """``study.ask()``; when the sampler fails, the trial it created is failed and a StudyError raised."""
    before = max((t.number for t in study.get_trials(deepcopy=False)), default=-1)
    try:
        return study.ask()
    except Exception as exc:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number > before and "config" not in t.user_attrs:
                _tell(study, t.number, state=TrialState.FAIL)
        raise _sampler_error(prepared, exc) from exc


def run_one(study: optuna.Study, prepared: PreparedStudy) -> TrialOutcome:
    """Asks for one trial, trains it, and tells its outcome; no path leaves the trial RUNNING."""
    trial = _ask(study, prepared)
    spec = prepared.spec
    start = time.perf_counter()
    pruner = prepared.spec.pruner_name
    config: TrainConfig | None = None

    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned by the {pruner} pruner after epoch {epoch + 1} "
                                     f"(validation {value:.4g})")

    def finish(state: TrialState, reason: str | None, value: float | None = None, test: float | None = None,
               attrs: dict[str, Any] | None = None) -> TrialOutcome:
        seconds = time.perf_counter() - start
        attrs = {**(attrs or {}), "seconds": round(seconds, 3)}
        if reason:
            attrs["reason"] = reason
        try:
            for key, val in attrs.items():
                trial.set_user_attr(key, val)
        finally:
            _tell(study, trial, values=value if state == TrialState.COMPLETE else None, state=state)
        return TrialOutcome(trial.number, state.name, value, test, reason, seconds, config)

    try:
        try:
            config = prepared.space.sample(trial, epochs=spec.epochs, seed=trial_seed(spec.seed, trial.number))
        except Exception as exc:
            raise _SamplerFailed from exc
        trial.set_user_attr("config", config.to_dict())
        result = prepared.trainer.fit(config, report=report)
    except _SamplerFailed as exc:
        # Systematic (bad sampler options), not one unlucky trial: stop at once.
        cause = exc.__cause__ or exc
        finish(TrialState.FAIL, f"sampler: {type(cause).__name__}: {cause}"[:1000])
        raise _sampler_error(prepared, cause) from cause
    except optuna.TrialPruned as exc:
        return finish(TrialState.PRUNED, str(exc) or f"pruned by the {pruner} pruner", attrs=_history(prepared))
    except Diverged as exc:
        return finish(TrialState.PRUNED, exc.reason, attrs={"diverged": True, **_history(prepared)})
    except (KeyboardInterrupt, SystemExit):
        finish(TrialState.FAIL, "interrupted")
        raise
    except Exception as exc:
        return finish(TrialState.FAIL, f"{type(exc).__name__}: {exc}"[:1000],
                      attrs={"traceback": traceback.format_exc()[-4000:]})
    return finish(TrialState.COMPLETE, None, result.value, result.test_value,
                  attrs={"test_value": result.test_value, **_history(prepared)})


def _history(prepared: PreparedStudy) -> dict[str, Any]:
    result = prepared.trainer.last_result
    if result is None:
        return {}
    return {"val_history": [round(v, 6) for v in result.val_history],
            "epoch_times": [round(t, 4) for t in result.epoch_times],
            "train_loss": [round(v, 6) if math.isfinite(v) else str(v) for v in result.train_loss]}


def run_trials(
    study: optuna.Study,
    prepared: PreparedStudy,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    max_consecutive_failures: int = 5,
    on_trial: Callable[[TrialOutcome, optuna.Study], None] | None = None,
) -> RunSummary:
    """Runs trials until the study holds ``n_trials`` finished (complete or pruned) trials.

    The budget is the study's, not this call's: a resumed study only runs what is missing.
    """
    n_trials = n_trials or prepared.spec.n_trials
    timeout = timeout if timeout is not None else prepared.spec.timeout
    threads = prepared.spec.threads or prepared.trainer.fastest_threads(
        [1, max(1, (os.cpu_count() or 1) // max(1, workers))])
    torch.set_num_threads(threads)
    summary = RunSummary(threads=threads)
    start = time.monotonic()
    consecutive = 0
    while True:
        if timeout is not None and time.monotonic() - start >= timeout:
            summary.stopped_by = "timeout"
            break
        if len(study.get_trials(deepcopy=False, states=FINISHED)) >= n_trials:
            break
        outcome = run_one(study, prepared)
        summary.outcomes.append(outcome)
        consecutive = consecutive + 1 if outcome.state == "FAIL" else 0
        if on_trial is not None:
            on_trial(outcome, study)
        if consecutive >= max_consecutive_failures:
            summary.seconds = time.monotonic() - start
            raise StudyError(f"Study {study.study_name!r} stopped after {consecutive} consecutive failed trials; "
                             f"the last failed with: {outcome.reason}")
    summary.seconds = time.monotonic() - start
    return summary


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    if not complete:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: t.value)
