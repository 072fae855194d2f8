"""Heartbeats for running trials, and a reaper that fails and re-queues the trials of dead workers.

Optuna's own heartbeat only exists for RDB storages and only inside ``study.optimize``. Here one mechanism
serves every storage (SQLite, PostgreSQL, the journal file): while a trial trains, a daemon thread writes
the time into the trial's system attribute ``tuner:heartbeat`` every ``interval`` seconds. Any worker (and
the supervisor of ``--workers``) calls ``reap_stale`` before asking for a trial: a RUNNING trial whose
heartbeat is older than ``grace`` seconds is marked FAIL with the reason, and its parameters are enqueued
again, so the budget is still met with the same configs. Only the process whose FAIL write wins re-queues
(Optuna raises ``UpdateFinishedTrialError`` for the others).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from tuner.study._record import Key, StopKind, StopReason, start_attrs, storage_of
from tuner.study._storage import storage_error_text, study_deleted
from tuner.study._writes import Write, write_batch

__all__ = ["Heartbeat", "reap_stale", "worker_identity", "is_this_process", "DEFAULT_INTERVAL",
           "DEFAULT_GRACE", "MAX_RETRIES"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
DEFAULT_GRACE = 12.0
MAX_RETRIES = 2


class Heartbeat:
    """Writes the heartbeat of its trials every ``interval`` seconds until stopped: one trial, or all the
    members of a pack (``add`` / ``discard``), in one write per beat. A failed write (storage busy,
    connection dropped) is logged and retried at the next beat: the thread never dies of it."""

    def __init__(self, study: optuna.Study, trial_id: int | None = None, interval: float = DEFAULT_INTERVAL) -> None:
        self.study = study
        self.trial_ids: set[int] = set() if trial_id is None else {trial_id}
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tuner-heartbeat-{trial_id or 'pack'}", daemon=True)
        self.failures = 0

    def add(self, trial_id: int) -> None:
        """Beats for one more trial, starting now."""
        with self._lock:
            self.trial_ids.add(trial_id)
        self.beat([trial_id])

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def beat(self, trial_ids: list[int] | None = None) -> bool:
        """Writes one heartbeat for the trials; False when none of them needs more (all finished or reaped)."""
        with self._lock:
            ids = sorted(self.trial_ids if trial_ids is None else trial_ids)
        now = time.time()
        errors = write_batch(self.study, [Write(i, "system", Key.HEARTBEAT, now) for i in ids])
        if any(not isinstance(exc, UpdateFinishedTrialError) for exc in errors.values()) and study_deleted(self.study):
            # `tuner study delete --force` under the run: its trials are gone and the run stops saying so, once
            with self._lock:
                self.trial_ids.clear()
            return False
        for trial_id, exc in errors.items():
            if isinstance(exc, UpdateFinishedTrialError):
                self.discard(trial_id)
            else:  # transient storage trouble: try again at the next beat
                self.failures += 1
                log.warning("heartbeat of trial id %s failed (%s); retrying", trial_id, storage_error_text(exc))
        with self._lock:
            return bool(self.trial_ids)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


def _last_sign_of_life(trial: optuna.trial.FrozenTrial) -> float:
    beat = trial.system_attrs.get(Key.HEARTBEAT)
    if isinstance(beat, (int, float)):
        return float(beat)
    start = trial.datetime_start or datetime.now(timezone.utc)
    return start.timestamp()  # naive (RDB: local time) and aware datetimes both convert correctly


def alive(trial: optuna.trial.FrozenTrial, grace: float = DEFAULT_GRACE) -> bool:
    """Whether a RUNNING trial's worker is at work: a sign of life within ``grace`` seconds, and its process
    not known to be gone."""
    worker = trial.user_attrs.get(Key.WORKER)
    return (time.time() - _last_sign_of_life(trial) < grace
            and not (isinstance(worker, dict) and _gone(worker)))


def _retry_depth(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs.get(Key.RETRY_DEPTH, 0))


def worker_identity(device: str = "") -> dict[str, Any]:
    """Where a trial runs: pid and host, plus the boot and the pid namespace, so that a process on this very
    machine can tell for certain that the worker is gone (a pid alone may belong to another container)."""
    identity: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    with contextlib.suppress(OSError):
        identity["boot"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        identity["pidns"] = os.stat("/proc/self/ns/pid").st_ino
    if device:
        identity["device"] = device
    return identity


def on_this_machine(worker: dict[str, Any]) -> bool:
    """Whether a trial's worker ran on this machine, in this pid namespace (so its pid means the same here)."""
    if "boot" not in worker or "pidns" not in worker:
        return False
    here = worker_identity()
    return all(worker.get(k) == here.get(k) for k in ("host", "boot", "pidns"))


def is_this_process(worker: dict[str, Any]) -> bool:
    return worker.get("pid") == os.getpid() and on_this_machine(worker)


def _gone(worker: dict[str, Any]) -> bool:
    """True only when the trial's worker ran in this machine's pid namespace and its process has exited."""
    pid = worker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or not on_this_machine(worker):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def reap_stale(study: optuna.Study, grace: float = DEFAULT_GRACE, max_retries: int = MAX_RETRIES) -> list[int]:
    """Fails the RUNNING trials whose heartbeat is older than ``grace`` seconds, or whose worker process on
    this machine is gone, and re-queues their parameters (at most ``max_retries`` times per original trial);
    returns the numbers of the trials failed."""
    now = time.time()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = now - _last_sign_of_life(trial)
        worker = trial.user_attrs.get(Key.WORKER) or {}
        gone = silent > 0.5 and _gone(worker)
        if silent <= grace and not gone:
            continue
        storage = storage_of(study)
        depth = _retry_depth(trial)
        sampled = bool(trial.params) or Key.CONFIG in trial.user_attrs  # a space of fixed values has no params
        retry = sampled and depth < max_retries
        why = (f"its process (pid {worker.get('pid')} on {worker.get('host', '?')}) is gone" if gone and
               silent <= grace else f"no heartbeat for {silent:.0f}s (worker pid {worker.get('pid', '?')} on "
                                    f"{worker.get('host', '?')})")
        reason = f"worker lost: {why}; " + ("its parameters were queued again" if retry else
                                            "not queued again (it had no config yet)" if not sampled else
                                            f"not queued again (lost {depth + 1} times)")
        try:
            # The reason first: a finished trial's attributes can no longer be written.
            for key, value in StopReason(StopKind.WORKER_LOST, reason).attrs().items():
                storage.set_trial_user_attr(trial._trial_id, key, value)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker got there first, or the trial just finished
        except Exception as exc:  # storage trouble: the next reaper call tries again
            log.warning("could not fail stale trial %d yet (%s); trying again", trial.number, storage_error_text(exc))
            continue
        reaped.append(trial.number)
        if retry:
            study.enqueue_trial(trial.params, user_attrs={Key.RETRY_OF: trial.number, Key.RETRY_DEPTH: depth + 1,
                                                          **start_attrs(trial)})
        log.warning("trial %d: %s", trial.number, reason)
    return reaped
