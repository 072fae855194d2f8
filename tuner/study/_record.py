"""A trial's record, and a study's: the attribute keys, the typed stop reason, reading and writing them.

Every key ``tuner`` stores in an Optuna study or trial is defined here and nowhere else; the engine writes a
trial's record, and ``show``, ``report``, ``trials --csv``, ``export`` and the workers read it through
``TrialRecord``. "Best trial" and the study's direction are defined here too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["Key", "StudyKey", "StopKind", "StopReason", "TrialRecord", "record_of", "ranked_trials",
           "best_trial", "direction_of", "better", "storage_of", "trial_by_number", "FINISHED"]

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
    ACCUMULATION = "accumulation"  # trained as micro-batches ({micro_batch, steps, device}) after an OOM batch size
    OOM_AVOIDED = "oom_avoided"  # not trained: its batch size ran out of memory on this device before
    TIMED_OUT = "timed_out"
    RETRY_OF = "retry_of"
    RETRY_DEPTH = "retry_depth"
    PACK = "pack"  # how many trials were trained together with this one (absent: alone)
    OWN_PARAMS = "own_params"  # names train_fn sampled itself through ctx.trial (tune): not in the config
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
    CONFIRMATION_RUNS = "tuner:confirmation_runs"  # each confirmation run as it finished: kept across an interrupt
    CALIBRATION = "tuner:calibration"
    OOM_BATCH = "tuner:oom_batch"  # per device: the smallest batch size that ran out of memory, and the trial
    PACK_CAP = "tuner:pack_cap"  # per device: the most trials that train at once there, after packs ran out of memory
    PACK_FAILED = "tuner:pack_failed"  # per kind of config (batch size, family, epochs): its pack's step failed
    TRACKING_ID = "tuner:tracking_id"  # a random id that tells MLflow and TensorBoard logs of studies apart
    STOPPED = "tuner:stopped"  # why the last run stopped short of its budget ({trial, why}): failures in a row


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
            return "worker lost (not re-queued)" if "not queued again" in self.message else "worker lost (re-queued)"
        if self.kind is StopKind.STORAGE:
            return self.message.split(":")[0]
        if self.kind is StopKind.ERROR:
            return self.message[:120]
        if self.kind is StopKind.OUT_OF_MEMORY and self.message.startswith("out of memory avoided"):
            found = re.search(r" on (.+), where batch size (\d+) ran out of memory", self.message)
            if found:  # not trained: one line for every config at that batch size or more on that device
                return f"out of memory avoided (batch size {found.group(2)} or more, not trained on {found.group(1)})"
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
    return TrialRecord(trial.number, trial.state.name, primary(trial),
                       float(test) if isinstance(test, (int, float)) else None, attrs.get(Key.CONFIG), reason,
                       float(attrs.get(Key.SECONDS) or 0.0), list(attrs.get(Key.VAL_HISTORY) or []),
                       attrs.get(Key.ERROR_AT), trial)


def primary(trial: FrozenTrial) -> float | None:
    """A trial's value; in a study with several objectives (``objectives: [accuracy, train_seconds]``), the
    first, the objective's metric, which pruning, ranking and importances use."""
    return trial.values[0] if trial.values else None


def secondary(trial: FrozenTrial) -> list[float]:
    """The values of a trial's other objectives (empty in a single-objective study)."""
    return list(trial.values[1:]) if trial.values else []


def stopped_early(study: optuna.Study) -> str | None:
    """Why the study's last run stopped short of its budget (failed trials in a row), where no trial was asked
    for since (``trial``: the highest trial number when it stopped); else None."""
    stop = study.user_attrs.get(StudyKey.STOPPED)
    if not isinstance(stop, dict) or not isinstance(stop.get("trial"), int):
        return None
    latest = max((t.number for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING), default=-1)
    return str(stop.get("why")) if stop["trial"] >= latest else None


def direction_of(study: optuna.Study) -> str:
    """``"maximize"`` or ``"minimize"``: the direction of the study's (first) objective."""
    return "maximize" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "minimize"


def objectives_of(study: optuna.Study) -> list[str]:
    """The names of a study's objectives: its metric, then any others it was created with."""
    spec = study.user_attrs.get(StudyKey.SPEC) or study.user_attrs.get(StudyKey.TUNE) or {}
    names = spec.get("objectives") if isinstance(spec, dict) else None
    if isinstance(names, list) and len(names) == len(study.directions):
        return [str(n) for n in names]
    return [str(study.user_attrs.get(StudyKey.METRIC) or "value")] + [f"objective {i + 2}" for i in
                                                                      range(len(study.directions) - 1)]


EDGE = 0.05  # a value within this fraction of a range's end (log scale where the range is) sits at its edge
MIN_TOP = 5  # the fewest complete trials a study needs for a narrowed space (drawn from the better half of them)


def start_attrs(trial: Any) -> dict[str, Any]:
    """Where a queued trial's config came from (``start``: a known start, a file, a warm start), for a retry
    of it to carry: ``set_by_known_start`` reads it on the retry too."""
    return {"start": trial.user_attrs["start"]} if trial.user_attrs.get("start") else {}


def set_by_known_start(trial: FrozenTrial, name: str) -> bool:
    """Whether one of tuner's known-good starting points set parameter ``name`` of ``trial``, not the sampler:
    such a value at a range's end (adamw-warmup-cosine's beta2 of 0.999) was put there by tuner, and says
    nothing of better values beyond. (A config the user queued, or one warm-started from a study's sampled
    trials, is the user's evidence, and counts.)"""
    fixed = trial.system_attrs.get("fixed_params")
    return (isinstance(fixed, dict) and name in fixed
            and str(trial.user_attrs.get("start", "")).startswith("known start"))


def range_position(dist: Any, value: float) -> float | None:
    """Where ``value`` sits in a numeric distribution's range, 0 at ``low`` and 1 at ``high`` (on the log
    scale for a log range); None for a categorical or an empty range."""
    if not isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
        return None
    f = math.log if dist.log else float
    span = f(dist.high) - f(dist.low)
    return (f(value) - f(dist.low)) / span if span > 0 else None


def _signs(study: optuna.Study) -> list[float]:
    """Per objective, what turns it into one to minimise."""
    return [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions]


def pareto_front(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The complete trials no other complete trial beats on every objective, by their first objective, best
    first (a single-objective study: the best trial); of ``trials`` where the caller has read them already."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = [t for t in trials
            if t.state == TrialState.COMPLETE and t.values and all(math.isfinite(v) for v in t.values)]
    signs = _signs(study)
    keyed = [(tuple(s * v for s, v in zip(signs, t.values, strict=True)), t) for t in done]
    front = [t for k, t in keyed
             if not any(all(a <= b for a, b in zip(o, k, strict=True)) and o != k for o, _ in keyed)]
    return sorted(front, key=lambda t: (signs[0] * t.values[0], t.number))


def beaten_by(study: optuna.Study, trial: FrozenTrial) -> FrozenTrial | None:
    """A trial of the Pareto front that does at least as well as ``trial`` on every objective and better on
    one; None for a trial on the front, or one without a value for each objective."""
    if not trial.values or len(trial.values) != len(study.directions):
        return None
    signs = _signs(study)
    mine = tuple(s * v for s, v in zip(signs, trial.values, strict=True))
    for t in pareto_front(study):
        theirs = tuple(s * v for s, v in zip(signs, t.values, strict=True))
        if theirs != mine and all(a <= b for a, b in zip(theirs, mine, strict=True)):
            return t
    return None


def knee(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The Pareto-front trial of a two-objective study that gives up least on one objective for the other:
    with both scaled to [0, 1] over the front, the point farthest beyond the line through the two extremes,
    on the side where both are better. The best first-objective trial when the front has under three points
    or none lies beyond that line (a point short of it trades worse than either extreme)."""
    front = pareto_front(study, trials)
    if len(front) < 3 or len(study.directions) != 2:
        return front[0] if front else None
    signs = _signs(study)
    pts = [[s * v for s, v in zip(signs, t.values, strict=True)] for t in front]
    lows = [min(p[i] for p in pts) for i in range(2)]
    spans = [max(p[i] for p in pts) - lows[i] or 1.0 for i in range(2)]
    norm = [[(p[i] - lows[i]) / spans[i] for i in range(2)] for p in pts]
    (x1, y1), (x2, y2) = norm[0], norm[-1]

    def beyond(x: float, y: float) -> float:  # > 0 on the side of (0, 0): both objectives lower, so better
        return (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)

    side = -1.0 if beyond(0.0, 0.0) < 0 else 1.0
    dist = [side * beyond(x, y) for x, y in norm]
    best = max(range(len(front)), key=lambda i: (dist[i], -i))
    return front[best] if dist[best] > 1e-12 else front[0]


def better(a: float, b: float, direction: str) -> bool:
    """Whether value ``a`` is better than ``b`` in ``direction``."""
    return a > b if direction == "maximize" else a < b


def ranked_trials(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """Complete trials with a finite value, best first (ties: by the other objectives of a study with several,
    then the earlier trial first); of ``trials`` where the caller has read the study's trials already."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values and math.isfinite(t.values[0])]
    signs = _signs(study)
    # Of several objectives, trials that tie on the first rank by the others (the cheaper first).
    return sorted(done, key=lambda t: (*(s * v for s, v in zip(signs, t.values, strict=False)), t.number))


def top_distinct(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The best ``k`` complete trials with distinct configs (the seed aside): the candidates a confirmation
    re-trains."""
    seen, out = set(), []
    for t in ranked_trials(study):
        config = t.user_attrs.get(Key.CONFIG)
        if not isinstance(config, dict):
            continue
        key = repr({name: v for name, v in config.items() if name != "seed"})
        if key in seen:
            continue
        seen.add(key)
        out.append(t)
        if len(out) == k:
            break
    return out


def tie_at_top(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> tuple[int, int, float] | None:
    """``(tied, complete, value)`` where at least half the complete trials (and 3 or more) share the best value,
    as in a study whose trials all score at chance: which of them is "best" then says nothing of its parameters,
    so no edge is read from it. None otherwise."""
    ranked = ranked_trials(study, trials)
    if len(ranked) < 3:
        return None
    best = ranked[0].values[0]
    tied = sum(1 for t in ranked if math.isclose(t.values[0], best, rel_tol=1e-9, abs_tol=1e-12))
    return (tied, len(ranked), best) if tied >= 3 and 2 * tied >= len(ranked) else None


def within_noise(gap: float, std_a: float | None, n_a: int, std_b: float | None, n_b: int) -> float | None:
    """Twice the standard error of the difference of two means (``std`` over ``n`` runs each) where ``gap``,
    their difference, is smaller: the runs do not tell the two apart. None where they do, or where either mean
    has no spread to judge by (fewer than two runs)."""
    if std_a is None or std_b is None or n_a < 2 or n_b < 2 or not math.isfinite(gap):
        return None
    twice = 2 * math.sqrt(std_a ** 2 / n_a + std_b ** 2 / n_b)
    return twice if abs(gap) < twice else None


def tie_text(tied: int, complete: int, value: float) -> str:
    """What a tie at the top (``tie_at_top``) means, as ``study show`` and the report say it."""
    return (f"{tied} of the {complete} complete trials tie at the best value, {value:.4g}: which one is best says "
            f"nothing of its settings, so no edge of the space is read from it (where they all score at chance, "
            f"the learning rates are the first suspect)")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None."""
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def handed_over(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The trial a study hands over (``study export``, ``TuneResult.best_trial``): its best complete trial; of a
    study with several objectives, the knee of its Pareto front. None without a complete trial. ``trials``: the
    study's trials where the caller has read them already."""
    if len(study.directions) > 1:
        return knee(study, trials)
    ranked = ranked_trials(study, trials)
    return ranked[0] if ranked else None


def handed_over_text(study: optuna.Study) -> str:
    """That trial in words, for the line that ends a run: ``best trial 4: accuracy 0.9500``, or ``the knee of
    the Pareto front, trial 1: accuracy 0.9300, train_seconds 0.05``."""
    point = handed_over(study)
    if point is None:
        return "no complete trial"
    names = objectives_of(study)
    values = ", ".join(f"{n} {v:.4f}" if i == 0 else f"{n} {v:.4g}"
                       for i, (n, v) in enumerate(zip(names, point.values, strict=True)))
    where = "the knee of the Pareto front, trial" if len(study.directions) > 1 else "best trial"
    return f"{where} {point.number}: {values}"


def history_attrs(val_history: list[float], epoch_times: list[float], train_loss: list[float]) -> dict[str, Any]:
    """A trial's per-epoch record as its attributes: validation values, epoch seconds, training losses (a
    non-finite loss as text, which JSON cannot hold as a number)."""
    return {Key.VAL_HISTORY: [round(v, 6) for v in val_history],
            Key.EPOCH_TIMES: [round(t, 4) for t in epoch_times],
            Key.TRAIN_LOSS: [round(v, 6) if math.isfinite(v) else str(v) for v in train_loss]}


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind a study object. Optuna keeps it private; this is the one place that reaches it."""
    return study._storage


def trial_with_config(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of the study, which holds a config (what ``export --trial N`` exports); a StudyError
    naming the trials there are otherwise."""
    from tuner.errors import StudyError

    frozen = None
    if number >= 0:  # a journal storage would take -1 as the last trial
        try:
            frozen = trial_by_number(study, number)  # one trial read, not the study's every trial
        except KeyError:
            pass
    if frozen is None or Key.CONFIG not in frozen.user_attrs:
        numbers = [t.number for t in study.get_trials(deepcopy=False) if Key.CONFIG in t.user_attrs]
        held = (f"trials {min(numbers)}..{max(numbers)} hold one" if numbers else
                "no trial holds one yet: queued trials get theirs when they start")
        if frozen is not None and numbers and frozen.state.name == "WAITING":
            held = f"it is queued, and gets its config when it starts; {held}"
        raise StudyError(f"Study {study.study_name!r} has no trial {number} with a config ({held}).")
    return frozen


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """One trial of a study, read from its storage without loading the others."""
    storage = storage_of(study)
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
