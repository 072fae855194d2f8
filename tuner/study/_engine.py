"""Runs trials with ask/tell: every trial ends COMPLETE, PRUNED or FAIL with its reason stored.

``study.optimize`` is not used: when its final write fails it raises ``AssertionError`` and leaves the trial
RUNNING. Here each outcome is recorded by one retried ``tell``, and an interrupt marks the running trial
failed before it propagates.
"""

from __future__ import annotations

import contextlib
import gc
import logging
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
from tuner.study._liveness import Heartbeat, is_this_process, reap_stale, worker_identity
from tuner.study._prepare import PreparedStudy
from tuner.study._storage import explain_storage_error, mask_url, storage_lock
from tuner.train import Diverged

log = logging.getLogger(__name__)

__all__ = ["TrialOutcome", "RunSummary", "run_trials", "trial_seed", "counts", "reason_kind", "FINISHED"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TELL_RETRIES = 4
MAX_DUPLICATE_ASKS = 3


@dataclass
class TrialOutcome:
    number: int
    state: str
    value: float | None
    test_value: float | None
    reason: str | None
    seconds: float
    config: TrainConfig | None

    def reason_kind(self) -> str:
        return reason_kind(self.reason or "")


@dataclass
class RunSummary:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: str = "budget"  # budget | timeout | failures
    threads: int = 1


def trial_seed(study_seed: int, number: int) -> int:
    return (study_seed * 1_000_003 + number) % 2**31


def reason_kind(reason: str) -> str:
    """A trial's stop reason without its specifics, for grouping ("pruned by the median pruner")."""
    if reason.startswith("pruned by"):
        return reason.split(" after")[0]
    if reason.startswith("diverged"):
        return "diverged"
    if reason.startswith("worker lost"):
        return "worker lost (re-queued)"
    if reason.startswith("out of memory"):
        return "out of memory"
    if reason.startswith(("storage", "timeout", "duplicate", "interrupted")):
        return reason.split(":")[0]
    return reason[:120]


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def _retried(fn: Callable[[], Any], retries: int = TELL_RETRIES) -> Any:
    """Calls ``fn``, retrying storage errors with backoff (0.5, 1, 2 s); a finished trial is not retried."""
    for attempt in range(retries):
        try:
            return fn()
        except optuna.exceptions.UpdateFinishedTrialError:
            raise
        except Exception:
            if attempt == retries - 1:
                raise
            time.sleep(0.5 * 2**attempt)


def _tell(study: optuna.Study, trial: optuna.Trial | int, **kwargs: Any) -> None:
    _retried(lambda: study.tell(trial, skip_if_finished=True, **kwargs))


def _storage_reason(exc: BaseException, url: str | None = None) -> str:
    # Optuna wraps the driver's error (e.g. SQLite's "database is locked") in a generic one: name the cause.
    if url is not None and is_disk_full_error(exc, url):
        return f"storage full: {explain_storage_error(exc, url)}; the result could not be recorded"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    root = chain[-1]
    text = mask_url(str(root).splitlines()[0]) if str(root) else type(root).__name__
    busy = any(word in text.lower() for word in ("locked", "busy", "timeout", "timed out"))
    return f"storage {'busy' if busy else 'error'}: could not record the result after {TELL_RETRIES} tries " \
           f"({type(root).__name__}: {text})"[:1000]


def is_disk_full_error(exc: BaseException, url: str) -> bool:
    return explain_storage_error(exc, url).startswith("disk full")


def _is_storage_error(exc: BaseException) -> bool:
    import sqlite3

    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None:
            return False
        if isinstance(cur, (optuna.exceptions.StorageInternalError, sqlite3.Error, OSError)):
            return True
        if type(cur).__module__.startswith(("sqlalchemy", "psycopg")):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _storage_stop(study: optuna.Study, prepared: PreparedStudy, exc: BaseException,
                  trial: int | None = None) -> StudyError:
    """The error that stops a study whose storage cannot be written (disk full, server gone)."""
    url = prepared.storage_url
    what = f"trial {trial} could not be recorded" if trial is not None else "no trial could be started"
    return StudyError(f"Study {study.study_name!r} stopped: {explain_storage_error(exc, url)}; {what}. Free the "
                      f"space (or fix the storage) and run `tuner study run {study.study_name}`: anything left "
                      f"running is then marked failed.")


@contextlib.contextmanager
def _claim_lock(study: optuna.Study, url: str | None):
    """Held while a worker checks the budget and takes its next trial, so that workers never start more
    trials than the budget between them (and SQLite never hands one queued trial to two processes)."""
    engine = getattr(getattr(study._storage, "_backend", study._storage), "engine", None)
    with storage_lock(url or "", study.study_name, engine=engine):
        yield


class _SamplerFailed(Exception):
    pass


class _TimedOut(Exception):
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
        if _is_storage_error(exc):
            raise _storage_stop(study, prepared, exc) from exc
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number > before and "config" not in t.user_attrs:
                _tell(study, t.number, state=TrialState.FAIL)
        raise _sampler_error(prepared, exc) from exc


def _take(study: optuna.Study, prepared: PreparedStudy) -> tuple[optuna.Trial, TrainConfig]:
    """Asks for a trial, marks it as this worker's and samples its config. A config that equals one a running
    trial is training (two workers, one proposal) is set aside, recorded with the reason, and asked again."""
    spec = prepared.spec
    for attempt in range(MAX_DUPLICATE_ASKS + 1):
        trial = _ask(study, prepared)
        try:
            trial.set_user_attr("worker", worker_identity(str(prepared.trainer.device)))
            config = prepared.space.sample(trial, epochs=spec.epochs, seed=trial_seed(spec.seed, trial.number))
        except Exception as exc:
            if _is_storage_error(exc):
                raise _storage_stop(study, prepared, exc, trial.number) from exc
            # Systematic (bad sampler options), not one unlucky trial: stop at once.
            with contextlib.suppress(Exception):
                trial.set_user_attr("reason", f"sampler: {type(exc).__name__}: {exc}"[:1000])
                _tell(study, trial, state=TrialState.FAIL)
            raise _sampler_error(prepared, exc) from exc
        twin = _running_twin(study, trial)
        if twin is None or attempt == MAX_DUPLICATE_ASKS:
            return trial, config
        trial.set_user_attr("reason", f"duplicate: the same parameters as trial {twin}, which is running; "
                                      f"not trained, another config was asked for")
        trial.set_user_attr("duplicate_of", twin)
        _tell(study, trial, state=TrialState.FAIL)
    raise AssertionError("unreachable")


def _running_twin(study: optuna.Study, trial: optuna.Trial) -> int | None:
    params = trial.params
    if not params:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number != trial.number and t.params == params:
            return t.number
    return None


def run_one(study: optuna.Study, prepared: PreparedStudy, trial: optuna.Trial | None = None,
            config: TrainConfig | None = None, deadline: float | None = None) -> TrialOutcome:
    """Trains one trial (asked and sampled here unless given) and tells its outcome; no path leaves it
    RUNNING. Past ``deadline`` (``time.monotonic()``), the trial stops at its next epoch end."""
    if trial is None or config is None:
        trial, config = _take(study, prepared)
    spec = prepared.spec
    start = time.perf_counter()
    pruner = prepared.spec.pruner_name

    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned by the {pruner} pruner after epoch {epoch + 1} "
                                     f"(validation {value:.4g})")
        if deadline is not None and time.monotonic() >= deadline and epoch + 1 < config.epochs:
            raise _TimedOut(f"timeout: the study's timeout ({spec.timeout:g}s) was reached; stopped after "
                            f"epoch {epoch + 1} of {config.epochs}")

    def finish(state: TrialState, reason: str | None, value: float | None = None, test: float | None = None,
               attrs: dict[str, Any] | None = None) -> TrialOutcome:
        seconds = time.perf_counter() - start
        attrs = {**(attrs or {}), "seconds": round(seconds, 3)}
        if reason:
            attrs["reason"] = reason
        try:
            for key, val in attrs.items():
                _retried(lambda key=key, val=val: trial.set_user_attr(key, val))
            _tell(study, trial, values=value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Reaped while it ran (its heartbeat stalled): the trial is FAIL and its parameters queued again.
            reason = "discarded: the trial was failed by another worker after its heartbeat stalled"
            log.warning("trial %d: %s", trial.number, reason)
            return TrialOutcome(trial.number, "FAIL", None, None, reason, seconds, config)
        except Exception as exc:  # the storage kept failing: record what can be recorded, and go on
            if is_disk_full_error(exc, prepared.storage_url):
                raise _storage_stop(study, prepared, exc, trial.number) from exc
            reason = _storage_reason(exc)
            log.warning("trial %d: %s", trial.number, reason)
            with contextlib.suppress(Exception):
                trial.set_user_attr("reason", reason)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return TrialOutcome(trial.number, "FAIL", None, None, reason, seconds, config)
        return TrialOutcome(trial.number, state.name, value, test, reason, seconds, config)

    heartbeat = Heartbeat(study, trial._trial_id, spec.heartbeat_interval)
    try:
        trial.set_user_attr("config", config.to_dict())
        with heartbeat:
            result = prepared.trainer.fit(config, report=report)
    except optuna.TrialPruned as exc:
        return finish(TrialState.PRUNED, str(exc) or f"pruned by the {pruner} pruner", attrs=_history(prepared))
    except Diverged as exc:
        return finish(TrialState.PRUNED, exc.reason, attrs={"diverged": True, **_history(prepared)})
    except _TimedOut as exc:
        return finish(TrialState.FAIL, str(exc), attrs={"timed_out": True, **_history(prepared)})
    except (KeyboardInterrupt, SystemExit):
        finish(TrialState.FAIL, "interrupted")
        raise
    except torch.cuda.OutOfMemoryError as exc:
        reason = f"out of memory: {exc}".splitlines()[0][:1000]
        attrs = {"oom": True, "traceback": traceback.format_exc()[-4000:], **_history(prepared)}
        del exc
        _release_memory(prepared)
        return finish(TrialState.FAIL, reason, attrs=attrs)
    except Exception as exc:
        if _is_storage_error(exc) and is_disk_full_error(exc, prepared.storage_url):
            raise _storage_stop(study, prepared, exc, trial.number) from exc
        return finish(TrialState.FAIL, f"{type(exc).__name__}: {exc}"[:1000],
                      attrs={"traceback": traceback.format_exc()[-4000:]})
    except BaseException as exc:
        # CancelledError, GeneratorExit and the like: not the trial's fault, and not to be swallowed. The
        # trial is recorded as failed with the reason, then the exception goes on with its own traceback.
        finish(TrialState.FAIL, f"interrupted by {type(exc).__name__}" + (f": {exc}" if str(exc) else ""),
               attrs={"traceback": traceback.format_exc()[-4000:]})
        raise
    return finish(TrialState.COMPLETE, None, result.value, result.test_value,
                  attrs={"test_value": result.test_value, **_history(prepared)})


def _release_memory(prepared: PreparedStudy) -> None:
    """After an out-of-memory error: drop what the failed trial held, and hand cached GPU memory back."""
    gc.collect()
    if prepared.trainer.device.type == "cuda":
        torch.cuda.empty_cache()


def _history(prepared: PreparedStudy) -> dict[str, Any]:
    result = prepared.trainer.last_result
    if result is None:
        return {}
    return {"val_history": [round(v, 6) for v in result.val_history],
            "epoch_times": [round(t, 4) for t in result.epoch_times],
            "train_loss": [round(v, 6) if math.isfinite(v) else str(v) for v in result.train_loss]}


def use_threads(prepared: PreparedStudy, workers: int = 1) -> int:
    """Sets torch's thread count for this process: the spec's ``threads``, else the faster of 1 and
    cores / workers, timed on the objective."""
    threads = prepared.spec.threads or prepared.trainer.fastest_threads(
        [1, max(1, (os.cpu_count() or 1) // max(1, workers))])
    torch.set_num_threads(threads)
    return threads


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
    threads = use_threads(prepared, workers)
    summary = RunSummary(threads=threads)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    consecutive = 0
    spec = prepared.spec
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            summary.stopped_by = "timeout"
            break
        try:
            reap_stale(study, spec.grace_period)
        except Exception as exc:
            if _is_storage_error(exc):
                raise _storage_stop(study, prepared, exc) from exc
            raise
        trial = None
        try:
            with _claim_lock(study, prepared.storage_url):
                trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                finished = sum(t.state in FINISHED for t in trials)
                taken = _take(study, prepared) if len(trials) < n_trials else None
            if finished >= n_trials:
                break
            if taken is None:
                # The rest of the budget is in flight on other workers: wait, in case one of them fails.
                time.sleep(min(1.0, spec.heartbeat_interval))
                continue
            trial = taken[0]
            outcome = run_one(study, prepared, *taken, deadline=deadline)
        except BaseException:
            _fail_own_running(study, trial)
            raise
        summary.outcomes.append(outcome)
        consecutive = consecutive + 1 if outcome.state == "FAIL" and not outcome.reason_kind() == "timeout" else 0
        if on_trial is not None:
            on_trial(outcome, study)
        if consecutive >= max_consecutive_failures:
            summary.seconds = time.monotonic() - start
            raise StudyError(f"Study {study.study_name!r} stopped after {consecutive} consecutive failed trials; "
                             f"the last failed with: {outcome.reason}")
    summary.seconds = time.monotonic() - start
    return summary


def _fail_own_running(study: optuna.Study, asked: optuna.Trial | None = None) -> None:
    """Safety net for an interrupt that lands between asking for a trial and training it, or while a result
    is being written: nothing this process took is left RUNNING."""
    with contextlib.suppress(Exception):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            mine = asked is not None and t.number == asked.number
            if mine or is_this_process(t.user_attrs.get("worker") or {}):
                study._storage.set_trial_user_attr(t._trial_id, "reason", "interrupted")
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    if not complete:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: t.value)
