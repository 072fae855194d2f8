"""Tuning inside a user's own training code: ``tuner.tune`` runs the study, ``tuner.suggest`` samples a
``TrainConfig`` inside a user's own Optuna loop."""

from __future__ import annotations

import contextlib
import math
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.config import TrainConfig
from tuner.errors import ConfigError, StudyError

__all__ = ["TrialContext", "TuneResult", "suggest", "tune"]

TUNE_ATTR = "tuner:tune"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _space(space: Any) -> Any:
    from tuner.spaces import SearchSpace, load_space

    return space if isinstance(space, SearchSpace) else load_space(space)


def suggest(trial: optuna.Trial, space: Any = "default", *, epochs: int = 10, seed: int | None = None) -> TrainConfig:
    """Samples a ``TrainConfig`` from ``space`` (a built-in name, a YAML path, a mapping or a ``SearchSpace``)
    with an Optuna trial of the caller's own study.

    Example:
        >>> def objective(trial):
        ...     config = tuner.suggest(trial, "adam-family", epochs=20)
        ...     optimizer, scheduler = config.build(model, steps_per_epoch=len(loader))
    """
    return _space(space).sample(trial, epochs=epochs, seed=trial.number if seed is None else seed)


class _Stop(Exception):
    pass


@dataclass
class TrialContext:
    """What ``train_fn`` gets: the sampled ``config``, and ``report(epoch, value)`` to call after every epoch
    (it raises ``optuna.TrialPruned`` when the pruner stops the trial; let it propagate)."""

    config: TrainConfig
    trial: optuna.Trial | None = None
    history: list[float] = field(default_factory=list)
    test_value: float | None = None

    @property
    def number(self) -> int | None:
        return None if self.trial is None else self.trial.number

    def report(self, epoch: int, value: float) -> None:
        value = float(value)
        self.history.append(value)
        if not math.isfinite(value):
            raise _Diverged(f"diverged: reported value {value} in epoch {epoch + 1}")
        if self.trial is None:
            return
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} (value {value:.4g})")

    def set_test_value(self, value: float) -> None:
        """Records the held-out test metric of this run; reports and exports show it."""
        self.test_value = float(value)


class _Diverged(Exception):
    pass


@dataclass
class TuneResult:
    """The study ``tune`` ran, with the best config and, on request, a confirmed recommendation."""

    study: optuna.Study
    train_fn: Callable[[TrialContext], Any]
    seed: int = 0

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        from tuner.report import complete_trials

        ranked = complete_trials(self.study)
        if not ranked:
            raise StudyError(f"Study {self.study.study_name!r} has no complete trial.")
        return ranked[0]

    @property
    def best_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.best_trial.user_attrs["config"])

    @property
    def best_value(self) -> float:
        return float(self.best_trial.value)

    def fit(self, config: TrainConfig) -> tuple[float, float | None]:
        """Runs ``train_fn`` once on ``config`` outside the study (no pruning)."""
        ctx = TrialContext(config)
        value = _value(self.train_fn(ctx), ctx)
        return value, ctx.test_value

    def recommend(self, top_k: int = 3, seeds: int = 3) -> Any:
        """Re-trains the top ``top_k`` configs with ``seeds`` new seeds each and returns the
        ``Recommendation`` with the best mean (stored in the study; a repeat call reuses it)."""
        from tuner.report import recommendation

        return recommendation(self.study, self.fit, top_k=top_k, seeds=seeds, study_seed=self.seed)


def _value(returned: Any, ctx: TrialContext) -> float:
    if returned is None:
        if not ctx.history:
            raise ConfigError("train_fn returned None and reported nothing: return the validation metric, or call "
                              "ctx.report(epoch, value) every epoch.")
        return ctx.history[-1]
    if isinstance(returned, tuple) and len(returned) == 2:
        ctx.set_test_value(returned[1])
        returned = returned[0]
    return float(returned)


def tune(
    train_fn: Callable[[TrialContext], Any],
    space: Any = "default",
    *,
    n_trials: int = 30,
    timeout: float | None = None,
    epochs: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    direction: str = "maximize",
    metric: str = "value",
    sampler: str | dict[str, Any] = "tpe",
    pruner: str | dict[str, Any] = "median",
    seed: int = 0,
    max_consecutive_failures: int = 5,
) -> TuneResult:
    """Tunes ``train_fn(ctx)``, the user's own training code, over ``space``.

    ``train_fn`` reads ``ctx.config`` (a ``TrainConfig``: ``config.build(model, steps_per_epoch)`` gives the
    optimizer and scheduler), calls ``ctx.report(epoch, value)`` after every epoch (pruning happens there),
    and returns the final validation value (or ``(value, test_value)``).

    ``n_trials`` is the study's budget of finished trials: with a ``storage`` (``sqlite:///x.db``,
    ``journal:x.journal``, PostgreSQL) a second call with the same ``study_name`` resumes and runs only what
    is missing. A trial that raises is recorded as failed with its reason and the study goes on;
    ``max_consecutive_failures`` in a row stop it. A non-finite value is recorded as diverged (pruned).

    Example:
        >>> result = tuner.tune(train, space="adam-family", n_trials=20, epochs=10)
        >>> result.best_config.save("best.yaml")
    """
    from tuner.study._prepare import METRIC_ATTR, SPACE_ATTR
    from tuner.study._samplers import build_pruner, build_sampler
    from tuner.study._storage import check_storage, mask_url, open_storage, storage_lock

    if not callable(train_fn):
        raise ConfigError(f"train_fn must be a function taking the trial context; got {type(train_fn).__name__}.")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be 'maximize' or 'minimize' (got {direction!r}).")
    for key, value in (("n_trials", n_trials), ("epochs", epochs), ("max_consecutive_failures",
                                                                    max_consecutive_failures)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be an int of at least 1 (got {value!r}).")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an int in the range [0, 2**32) (got {seed!r}).")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError(f"timeout must be a finite number of seconds above 0, or None (got {timeout!r}).")
    search = _space(space)  # a bad space fails here, before any study exists
    context = {"seed": seed, "epochs": epochs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        built_sampler = build_sampler(sampler, context)
        built_pruner = build_pruner(pruner, context)
    name = study_name or f"tune-{getattr(train_fn, '__name__', 'fn')}-{search.name}"
    fingerprint = search.fingerprint()
    # Created (or joined) under the storage's lock: two processes tuning one study name over different
    # spaces cannot both go ahead.
    if storage:
        check_storage(storage)
    with storage_lock(storage, "create") if storage else contextlib.nullcontext():
        study = optuna.create_study(
            storage=open_storage(storage) if storage else None, study_name=name, direction=direction,
            sampler=built_sampler, pruner=built_pruner, load_if_exists=True,
        )
        stored = study.user_attrs.get(TUNE_ATTR)
        if stored and stored.get("space_fingerprint") != fingerprint:
            raise StudyError(f"Study {name!r} was tuned over a different search space; use another study_name.")
        if study.direction.name.lower() != direction or (stored and study.user_attrs.get(METRIC_ATTR) != metric):
            raise StudyError(f"Study {name!r} was tuned to {study.direction.name.lower()} "
                             f"{study.user_attrs.get(METRIC_ATTR)!r}, not to {direction} {metric!r}: its values "
                             f"would not compare. Use another study_name.")
        if not stored:
            if study.get_trials(deepcopy=False) or study.user_attrs:
                from tuner.study._prepare import describe_kind

                raise StudyError(f"Study {name!r} in {mask_url(storage or '')} is {describe_kind(study)}; "
                                 f"use another study_name.")
            study.set_user_attr(TUNE_ATTR, {"function": getattr(train_fn, "__qualname__", repr(train_fn)),
                                            "space": search.name, "space_fingerprint": fingerprint,
                                            "epochs": epochs, "seed": seed})
            study.set_user_attr(SPACE_ATTR, search.raw)
            study.set_user_attr(METRIC_ATTR, metric)
    start = time.monotonic()
    consecutive = 0
    while len(study.get_trials(deepcopy=False, states=FINISHED)) < n_trials:
        if timeout is not None and time.monotonic() - start >= timeout:
            break
        state, reason = _run_one(study, search, train_fn, epochs, seed)
        consecutive = consecutive + 1 if state == TrialState.FAIL else 0
        if consecutive >= max_consecutive_failures:
            raise StudyError(f"Study {name!r} stopped after {consecutive} consecutive failed trials; the last "
                             f"failed with: {reason}")
    return TuneResult(study, train_fn, seed)


def _run_one(study: optuna.Study, search: Any, train_fn: Callable[[TrialContext], Any], epochs: int,
             seed: int) -> tuple[TrialState, str | None]:
    from tuner.study._runner import trial_seed

    trial = study.ask()
    started = time.perf_counter()
    state, value, reason, attrs = TrialState.FAIL, None, None, {}
    ctx: TrialContext | None = None
    try:
        ctx = TrialContext(suggest(trial, search, epochs=epochs, seed=trial_seed(seed, trial.number)), trial)
        trial.set_user_attr("config", ctx.config.to_dict())
        value = _value(train_fn(ctx), ctx)
        if not math.isfinite(value):
            raise _Diverged(f"diverged: train_fn returned {value}")
        state = TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        state, reason = TrialState.PRUNED, str(exc) or "pruned"
    except _Diverged as exc:
        state, reason, attrs = TrialState.PRUNED, str(exc), {"diverged": True}
    except (KeyboardInterrupt, SystemExit):
        _finish(study, trial, TrialState.FAIL, None, "interrupted", started, ctx, {})
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        attrs = {"traceback": traceback.format_exc()[-4000:]}
    except BaseException as exc:
        # CancelledError, GeneratorExit: recorded as failed with the reason, then passed on untouched.
        _finish(study, trial, TrialState.FAIL, None, f"interrupted by {type(exc).__name__}"
                + (f": {exc}" if str(exc) else ""), started, ctx, {"traceback": traceback.format_exc()[-4000:]})
        raise
    _finish(study, trial, state, value, reason, started, ctx, attrs)
    return state, reason


def _finish(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None, reason: str | None,
            started: float, ctx: TrialContext | None, attrs: dict[str, Any]) -> None:
    attrs = {**attrs, "seconds": round(time.perf_counter() - started, 3)}
    if ctx is not None:
        attrs["val_history"] = [round(v, 6) if math.isfinite(v) else str(v) for v in ctx.history]
        if ctx.test_value is not None:
            attrs["test_value"] = ctx.test_value
    if reason:
        attrs["reason"] = reason
    from tuner.study._runner import _tell

    try:
        for key, val in attrs.items():
            trial.set_user_attr(key, val)
    finally:
        _tell(study, trial, values=value if state == TrialState.COMPLETE else None, state=state)
