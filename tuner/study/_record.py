"""A trial's record, and a study's: the attribute keys, the typed stop reason, reading and writing them.

Every key ``tuner`` stores in an Optuna study or trial is defined here and nowhere else; the engine writes a
trial's record, and ``show``, ``report``, ``trials --csv``, ``export`` and the workers read it through
``TrialRecord``. "Best trial" and the study's direction are defined here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["Key", "StudyKey", "StopKind", "StopReason", "TrialRecord", "record_of", "ranked_trials",
           "best_trial", "direction_of", "better", "storage_of", "FINISHED"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Key:
    """Attribute keys of a trial (Optuna user attributes, unless noted)."""

    CONFIG = "config"  # the sampled TrainConfig, as a dict
    TEST_VALUE = "test_value"
    REASON = "reason"  # why the trial stopped, in words
    REASON_KIND = "reason_kind"  # the StopKind of that reason
    ERROR_AT = "error_at"  # file:line of the user's code where an error was raised
    SECONDS = "seconds"
    VAL_HISTORY = "val_history"
    EPOCH_TIMES = "epoch_times"
    TRAIN_LOSS = "train_loss"
    TRACEBACK = "traceback"
    WORKER = "worker"  # pid, host, boot id, pid namespace, device of the process that ran it
    DUPLICATE_OF = "duplicate_of"
    DIVERGED = "diverged"
    OOM = "oom"
    TIMED_OUT = "timed_out"
    RETRY_OF = "retry_of"
    RETRY_DEPTH = "retry_depth"
    PACK = "pack"  # how many trials were trained together with this one (absent: alone)
    HEARTBEAT = "tuner:heartbeat"  # a system attribute


class StudyKey:
    """Attribute keys of a study (Optuna user attributes)."""

    SPEC = "tuner:spec"
    SPACE = "tuner:space"
    SPACE_FINGERPRINT = "tuner:space_fingerprint"
    OBJECTIVE_FINGERPRINT = "tuner:objective_fingerprint"
    OBJECTIVE_FINGERPRINT_HISTORY = "tuner:objective_fingerprint_history"
    VERSION = "tuner:version"
    METRIC = "tuner:metric"
    TUNE = "tuner:tune"
    CONFIRMATION = "tuner:confirmation"
    CALIBRATION = "tuner:calibration"


class StopKind(str, Enum):
    """Why a trial ended without completing (or, for ``ERROR``, with the user's exception)."""

    PRUNED = "pruned"
    DIVERGED = "diverged"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    DUPLICATE = "duplicate"
    OUT_OF_MEMORY = "out of memory"
    STORAGE = "storage"
    WORKER_LOST = "worker lost"
    DISCARDED = "discarded"
    SAMPLER = "sampler"
    ERROR = "error"


class StopReason(str):
    """Why a trial stopped: the message (for people; it is the string itself, so it prints, compares and
    stores as text) and its ``kind`` (for grouping and decisions)."""

    kind: StopKind

    def __new__(cls, kind: StopKind | str, message: str) -> StopReason:
        reason = super().__new__(cls, message)
        reason.kind = StopKind(kind)
        return reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (StopReason, (self.kind, str(self)))

    @property
    def message(self) -> str:
        return str.__str__(self)

    @property
    def group(self) -> str:
        """The reason without its specifics, to count alike trials together ("pruned by the median pruner")."""
        if self.kind is StopKind.PRUNED and self.message.startswith("pruned by"):
            return self.message.split(" after")[0]
        if self.kind is StopKind.WORKER_LOST:
            return "worker lost (re-queued)"
        if self.kind is StopKind.STORAGE:
            return self.message.split(":")[0]
        if self.kind is StopKind.ERROR:
            return self.message[:120]
        return self.kind.value

    def attrs(self) -> dict[str, Any]:
        return {Key.REASON: self.message[:1000], Key.REASON_KIND: self.kind.value}

    @classmethod
    def parse(cls, message: str, kind: str | None = None) -> StopReason:
        """The reason of a stored trial: its stored kind, or (records written before kinds were stored) the
        kind its message starts with."""
        if kind is not None:
            try:
                return cls(StopKind(kind), message)
            except ValueError:
                pass
        for k in StopKind:
            if k is not StopKind.ERROR and message.startswith(k.value):
                return cls(k, message)
        return cls(StopKind.ERROR, message)


@dataclass(frozen=True)
class TrialRecord:
    """What ``tuner`` knows about one trial, read from its Optuna record."""

    number: int
    state: str
    value: float | None
    test_value: float | None
    config: dict[str, Any] | None
    reason: StopReason | None
    seconds: float
    val_history: list[Any]
    error_at: str | None
    trial: FrozenTrial

    @property
    def finished(self) -> bool:
        return self.trial.state in FINISHED


def record_of(trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    message = attrs.get(Key.REASON)
    reason = StopReason.parse(str(message), attrs.get(Key.REASON_KIND)) if message else None
    test = attrs.get(Key.TEST_VALUE)
    return TrialRecord(trial.number, trial.state.name, trial.value if trial.values else None,
                       float(test) if isinstance(test, (int, float)) else None, attrs.get(Key.CONFIG), reason,
                       float(attrs.get(Key.SECONDS) or 0.0), list(attrs.get(Key.VAL_HISTORY) or []),
                       attrs.get(Key.ERROR_AT), trial)


def direction_of(study: optuna.Study) -> str:
    """``"maximize"`` or ``"minimize"``."""
    return "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"


def better(a: float, b: float, direction: str) -> bool:
    """Whether value ``a`` is better than ``b`` in ``direction``."""
    return a > b if direction == "maximize" else a < b


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with a finite value, best first (ties: the earlier trial first)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if direction_of(study) == "maximize" else 1.0
    return sorted(done, key=lambda t: (sign * t.value, t.number))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None."""
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def history_attrs(val_history: list[float], epoch_times: list[float], train_loss: list[float]) -> dict[str, Any]:
    """A trial's per-epoch record as its attributes: validation values, epoch seconds, training losses (a
    non-finite loss as text, which JSON cannot hold as a number)."""
    return {Key.VAL_HISTORY: [round(v, 6) for v in val_history],
            Key.EPOCH_TIMES: [round(t, 4) for t in epoch_times],
            Key.TRAIN_LOSS: [round(v, 6) if math.isfinite(v) else str(v) for v in train_loss]}


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind a study object. Optuna keeps it private; this is the one place that reaches it."""
    return study._storage
