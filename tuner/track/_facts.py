"""What trackers log of a trial and of a study: the facts of a finished trial, and the best config."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import TrainConfig
from tuner.study._record import Key, StudyKey, best_trial, direction_of, knee, primary, record_of

__all__ = ["TRACKED", "TrialFacts", "facts_of", "flatten", "metric_name", "best_config_yaml"]

TRACKED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class TrialFacts:
    """A finished trial as trackers log it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    metric: str  # the name of the validation metric, e.g. accuracy
    value: float | None  # the final validation value (complete trials)
    test_value: float | None
    seconds: float
    params: dict[str, Any]  # the flattened config: optimizer.name, optimizer.lr, schedule.name, batch_size, ...
    history: list[tuple[int, float]]  # (epoch, validation value) as reported
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    reason: str | None = None
    reason_kind: str | None = None
    error_at: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def last_epoch(self) -> int:
        return self.history[-1][0] if self.history else 0


def metric_name(study: optuna.Study) -> str:
    """The study's metric as a tracker key (``accuracy``; ``value`` for ``tune()`` without ``metric=``)."""
    name = str(study.user_attrs.get(StudyKey.METRIC) or "value")
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "value"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as flat keys: ``{"optimizer": {"lr": 0.1, "betas": [0.9, 0.99]}}`` ->
    ``{"optimizer.lr": 0.1, "optimizer.betas.0": 0.9, "optimizer.betas.1": 0.99}``."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, (list, tuple)):
        out = {}
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: data}


def facts_of(trial: FrozenTrial, study: optuna.Study) -> TrialFacts:
    rec = record_of(trial)
    params = flatten(rec.config) if isinstance(rec.config, dict) else dict(trial.params)
    history = [(int(step), float(v)) for step, v in sorted(trial.intermediate_values.items())]
    losses = trial.user_attrs.get(Key.TRAIN_LOSS) or []
    train_loss = [(i, float(v)) for i, v in enumerate(losses) if isinstance(v, (int, float)) and math.isfinite(v)]
    value = rec.value if trial.state == TrialState.COMPLETE else None
    return TrialFacts(
        number=trial.number, state=trial.state.name, metric=metric_name(study), value=value,
        test_value=rec.test_value, seconds=rec.seconds, params=params, history=history, train_loss=train_loss,
        reason=rec.reason.message if rec.reason else None, reason_kind=rec.reason.kind.value if rec.reason else None,
        error_at=rec.error_at, start=trial.datetime_start, end=trial.datetime_complete,
    )


def best_config_yaml(study: optuna.Study) -> tuple[FrozenTrial, str] | None:
    """The study's best trial (a study with two objectives: the knee of its Pareto front, as ``study show``
    recommends) and its config as YAML with metadata, which ``tuner.load_config`` reads; None without a
    complete trial."""
    multi = len(study.directions) > 1
    point = knee(study) if multi else best_trial(study)
    if point is None or not isinstance(point.user_attrs.get(Key.CONFIG), dict):
        return None
    config = TrainConfig.from_dict(point.user_attrs[Key.CONFIG])
    metadata: dict[str, Any] = {"study": study.study_name, "trial": point.number, "metric": metric_name(study),
                                "direction": direction_of(study), "value": primary(point)}
    test = point.user_attrs.get(Key.TEST_VALUE)
    if isinstance(test, (int, float)):
        metadata["test_value"] = test
    metadata["source"] = (f"the knee of the Pareto front (trial {point.number})" if multi
                          else f"best trial ({point.number}), not re-run")
    return point, config.to_yaml(**metadata)
