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
import socket
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
from tuner.study._liveness import Heartbeat, reap_stale
from tuner.study._prepare import PreparedStudy
from tuner.study._storage import mask_url
from tuner.train import Diverged

log = logging.getLogger(__name__)

__all__ = ["TrialOutcome", "RunSummary", "run_trials", "trial_seed", "counts", "reason_kind", "FINISHED"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TELL_RETRIES = 4


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
    if reason.startswith("storage"):
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


def _storage_reason(exc: BaseException) -> str:
    # Optuna wraps the driver's error (e.g. SQLite's "database is locked") in a generic one: name the cause.
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


@contextlib.contextmanager
def _claim_lock(study: optuna.Study, url: str | None):
    """Held while a worker checks the budget and takes its next trial, so that workers never start more
    trials than the budget between them (and SQLite never hands one queued trial to two processes).

    SQLite and the journal file: a lock file beside the storage (all workers are on one machine or share its
    file system). PostgreSQL: an advisory lock per study, so machines take turns too. Other servers: none.
    """
    from tuner.study._storage import _journal_path, _scheme

    url = url or ""
    journal = _journal_path(url)
    path = str(journal) if journal is not None else ""
    if _scheme(url) == "sqlite":
        path = url.split(":///", 1)[1].split("?", 1)[0]
    if path and path != ":memory:":
        try:
            import fcntl
        except ImportError:  # not on POSIX: one process per local storage file is the safe use
            yield
            return
        with open(f"{path}.ask-lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if _scheme(url).startswith("postgresql"):
        import zlib

        import sqlalchemy

        engine = getattr(getattr(study._storage, "_backend", study._storage), "engine", None)
        if engine is not None:
            key = zlib.crc32(f"tuner:{study.study_name}".encode())
            with engine.connect() as con:
                con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                con.commit()
                try:
                    yield
                finally:
                    con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    con.commit()
            return
    yield


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


def run_one(study: optuna.Study, prepared: PreparedStudy, trial: optuna.Trial | None = None) -> TrialOutcome:
    """Asks for one trial (unless given one), trains it, and tells its outcome; no path leaves it RUNNING."""
    trial = trial or _ask(study, prepared)
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
                _retried(lambda key=key, val=val: trial.set_user_attr(key, val))
            _tell(study, trial, values=value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Reaped while it ran (its heartbeat stalled): the trial is FAIL and its parameters queued again.
            reason = "discarded: the trial was failed by another worker after its heartbeat stalled"
            log.warning("trial %d: %s", trial.number, reason)
            return TrialOutcome(trial.number, "FAIL", None, None, reason, seconds, config)
        except Exception as exc:  # the storage kept failing: record what can be recorded, and go on
            reason = _storage_reason(exc)
            log.warning("trial %d: %s", trial.number, reason)
            with contextlib.suppress(Exception):
                trial.set_user_attr("reason", reason)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return TrialOutcome(trial.number, "FAIL", None, None, reason, seconds, config)
        return TrialOutcome(trial.number, state.name, value, test, reason, seconds, config)

    heartbeat = Heartbeat(study, trial._trial_id, spec.heartbeat_interval)
    try:
        try:
            config = prepared.space.sample(trial, epochs=spec.epochs, seed=trial_seed(spec.seed, trial.number))
        except Exception as exc:
            raise _SamplerFailed from exc
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("worker", {"pid": os.getpid(), "host": socket.gethostname(),
                                       "device": str(prepared.trainer.device)})
        with heartbeat:
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
    except torch.cuda.OutOfMemoryError as exc:
        reason = f"out of memory: {exc}".splitlines()[0][:1000]
        attrs = {"oom": True, "traceback": traceback.format_exc()[-4000:], **_history(prepared)}
        del exc
        _release_memory(prepared)
        return finish(TrialState.FAIL, reason, attrs=attrs)
    except Exception as exc:
        return finish(TrialState.FAIL, f"{type(exc).__name__}: {exc}"[:1000],
                      attrs={"traceback": traceback.format_exc()[-4000:]})
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
    consecutive = 0
    spec = prepared.spec
    while True:
        if timeout is not None and time.monotonic() - start >= timeout:
            summary.stopped_by = "timeout"
            break
        reap_stale(study, spec.grace_period)
        trial = None
        try:
            with _claim_lock(study, prepared.storage_url):
                trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                finished = sum(t.state in FINISHED for t in trials)
                trial = _ask(study, prepared) if len(trials) < n_trials else None
            if finished >= n_trials:
                break
            if trial is None:
                # The rest of the budget is in flight on other workers: wait, in case one of them fails.
                time.sleep(min(1.0, spec.heartbeat_interval))
                continue
            outcome = run_one(study, prepared, trial)
        except (KeyboardInterrupt, SystemExit):
            _fail_own_running(study, trial)
            raise
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


def _fail_own_running(study: optuna.Study, asked: optuna.Trial | None = None) -> None:
    """Safety net for an interrupt that lands between asking for a trial and training it, or while a result
    is being written: nothing this process took is left RUNNING."""
    with contextlib.suppress(Exception):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            mine = asked is not None and t.number == asked.number
            if mine or (t.user_attrs.get("worker") or {}).get("pid") == os.getpid():
                study._storage.set_trial_user_attr(t._trial_id, "reason", "interrupted")
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    if not complete:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: t.value)
