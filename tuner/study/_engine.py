"""The trial engine: the one loop that runs trials, for every caller.

``study create`` / ``study run``, every ``--workers`` process, ``tuner.tune()`` and the report's confirmation
re-runs all go through here: ask (under the storage's claim lock, with the budget checked there) -> sample a
``TrainConfig`` -> train it with an *executor* -> tell, with a heartbeat while it trains, the reaper before
each ask, retried writes, out-of-memory handling, the failure limit and interrupts. Every path ends the trial
COMPLETE, PRUNED or FAIL with its reason stored; none leaves it RUNNING.

``study.optimize`` is not used: when its final write fails it raises ``AssertionError`` and leaves the trial
RUNNING. Here each outcome is recorded by one retried write: on an RDB storage one transaction holds the
trial's attributes, state and value (``_writes.close_trial``), elsewhere its attributes and then ``tell``.

An executor trains one config: ``TrainerExecutor`` on a built-in or file objective, ``UserExecutor`` on the
user's ``train_fn`` (``tuner.tune``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import gc
import inspect
import logging
import math
import operator
import os
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from tuner._setup import watching
from tuner._terminate import clear_terminate, interrupt, raise_if_terminated, terminate
from tuner.config import TrainConfig
from tuner.errors import ConfigError, StudyError, TunerError
from tuner.spaces import SearchSpace
from tuner.study._limits import _limits, counts, device_key, oom_limits, oom_notes, pack_caps
from tuner.study._liveness import Heartbeat, is_this_process, reap_stale, worker_identity
from tuner.study._record import (
    FINISHED,
    Key,
    StopKind,
    StopReason,
    StudyKey,
    best_trial,
    direction_of,
    history_attrs,
    start_attrs,
    storage_of,
    trial_by_number,
)
from tuner.study._samplers import judges_by_complete_trials, may_prune_at
from tuner.study._storage import (
    deleted_error,
    drop_orphans,
    explain_storage_error,
    storage_error_text,
    storage_lock,
    study_command,
    study_deleted,
)
from tuner.study._writes import RecentView, close_trial, held_params, one_read, write_attrs
from tuner.train import Diverged, seed_everything

log = logging.getLogger(__name__)

__all__ = ["RunPlan", "Executor", "Executed", "TrainerExecutor", "UserExecutor", "TrialContext", "TrialOutcome",
           "RunSummary", "run_trials", "run_one", "run_config", "RunFailed", "trial_seed", "counts", "best_trial",
           "FINISHED", "user_frame", "device_key", "oom_limits", "oom_notes", "pack_caps"]

TELL_RETRIES = 4
MAX_DUPLICATE_ASKS = 3
# A trial's pruning checks compare it with the study as read at most this long before (pruners that judge by
# complete trials alone): other workers' trials that complete meanwhile count within this time.
PRUNE_READ_MAX_AGE = 1.0
MAX_OOM_ASKS = 25  # proposals in a row at batch sizes that ran out of memory before the study stops
ReportFn = Callable[[int, float], None]


# -- what the engine runs ----------------------------------------------------------------------------------

@dataclass
class RunPlan:
    """What the engine needs to know about a study to run its trials, whoever created it."""

    name: str
    storage_url: str | None  # None: an in-memory study (``tune`` without a storage)
    space: SearchSpace
    epochs: int
    seed: int
    n_trials: int
    timeout: float | None = None
    heartbeat_interval: float = 2.0
    grace_period: float = 12.0
    pruner_name: str = "median"
    sampler_name: str = "tpe"
    max_consecutive_failures: int = 5
    resume_hint: str = ""  # how to continue the study after a stop: "run `tuner study run NAME`"
    objectives: list[str] = field(default_factory=lambda: ["value"])  # the metric, then e.g. train_seconds
    on_oom: str = "avoid"  # after an out-of-memory batch size on a device: avoid it there, or accumulate
    #: for a pool's worker, the ``time.time()`` at which the supervisor started the pool: the failures in a row
    #: are counted over the trials of all its workers since (None: one process, its own count)
    started: float | None = None

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def values(self, value: float, seconds: float) -> float | list[float]:
        """What ``tell`` records for a complete trial: its value, or the value of every objective."""
        if not self.multi:
            return value
        return [value] + [round(seconds, 3) for name in self.objectives[1:] if name == "train_seconds"]


@dataclass
class Executed:
    """A config trained to the end: its final validation value, its test value, and what to record."""

    value: float
    test_value: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Trains one config; ``report(epoch, value)`` after every epoch (it raises to stop the run)."""

    device: str

    def execute(self, config: TrainConfig, report: ReportFn | None, micro_batch: int | None = None) -> Executed:
        """``micro_batch``: train each batch as micro-batches of at most this size, gradients accumulated (only
        asked of executors whose ``batches_from_config`` is true)."""
        ...

    def partial(self) -> dict[str, Any]:
        """What a run stopped early (pruned, diverged, timed out, failed) got through, to record."""
        ...

    def release_memory(self) -> None: ...

    def begin(self, trial: optuna.Trial | None) -> None:
        """A new trial starts (or, with None, ends): nothing of the previous one may be recorded on it."""
        ...


def release_device_memory(device: torch.device) -> None:
    """Frees what an out-of-memory error left behind (call it once the error and what it held are gone)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class TrainerExecutor:
    """A built-in or file objective, trained by ``tuner.train.Trainer``."""

    #: it trains with the config's batch size, so an out-of-memory error says that batch size is too large here
    batches_from_config = True

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.device = str(trainer.device)

    def begin(self, trial: optuna.Trial | None) -> None:
        if trial is not None:
            self.trainer.last_result = None

    def execute(self, config: TrainConfig, report: ReportFn | None, micro_batch: int | None = None) -> Executed:
        result = self.trainer.fit(config, report=report, micro_batch=micro_batch)
        return Executed(result.value, result.test_value, {Key.TEST_VALUE: result.test_value, **self.partial()})

    def partial(self) -> dict[str, Any]:
        result = self.trainer.last_result
        if result is None:
            return {}
        return history_attrs(result.val_history, result.epoch_times, result.train_loss)

    def release_memory(self) -> None:
        release_device_memory(self.trainer.device)


@dataclass
class TrialContext:
    """What ``train_fn`` gets: the sampled ``config``, and ``report(epoch, value)`` to call after every epoch
    (it raises ``optuna.TrialPruned`` when the pruner stops the trial; let it propagate). ``trial`` is the
    Optuna trial (None in confirmation re-runs)."""

    config: TrainConfig
    trial: optuna.Trial | None = None
    history: list[float] = field(default_factory=list)
    test_value: float | None = None
    _report: ReportFn | None = None
    #: the ``config.setup(...)`` made while ``train_fn`` runs, and their (steps, skipped steps) at the last report
    _setups: list[Any] = field(default_factory=list)
    _seen: dict[int, tuple[int, int, float, int, int]] = field(default_factory=dict)
    #: the exception a report raised to stop the trial (pruned, diverged, timed out), raised again if the
    #: caller's code caught it and went on
    stopped: BaseException | None = None
    _last_epoch: int | None = None
    _past_end: int | None = None  # the first epoch reported at or past config.epochs (a loop counting from 1)

    @property
    def number(self) -> int | None:
        return None if self.trial is None else self.trial.number

    def report(self, epoch: int, value: float) -> None:
        if self.stopped is not None:
            raise self.stopped
        given = epoch
        try:
            epoch = -1 if isinstance(epoch, bool) else operator.index(epoch)  # NumPy's and torch's ints too
        except TypeError:
            epoch = -1
        if epoch < 0:
            raise TrainFnMisuse(f"ctx.report(epoch, value): epoch must be the epoch's number, an int from 0 (got "
                                f"{given!r}).")
        if self._last_epoch is not None and epoch <= self._last_epoch:
            what = (f"epoch {epoch} was reported already" if epoch == self._last_epoch else
                    f"epoch {epoch} came after epoch {self._last_epoch}: epochs must increase")
            raise TrainFnMisuse(f"ctx.report(epoch, value): {what}: pass each epoch's number once, in order, "
                                f"0, 1, 2, ...")
        if isinstance(value, (str, bytes)) or value is None or _is_bool(value):
            raise TrainFnMisuse(f"ctx.report(epoch, value): value must be the epoch's validation metric as a "
                                f"number (got {value!r}).")
        try:
            value = float(value)
        except (TypeError, ValueError, RuntimeError):  # a tensor of several values, a list, an object
            raise TrainFnMisuse(f"ctx.report(epoch, value): value must be one number, the epoch's validation "
                                f"metric (got {type(value).__name__}"
                                f"{f' of shape {tuple(value.shape)}' if hasattr(value, 'shape') else ''}).") from None
        previous, self._last_epoch = self._last_epoch, epoch
        if epoch >= self.config.epochs and self._past_end is None:
            self._past_end = epoch
        self.history.append(value)
        try:
            if not math.isfinite(value):
                raise Diverged(f"diverged: reported value {value} in epoch {epoch + 1} (ctx.report({epoch}, ...): "
                               f"ctx.report counts epochs from 0)", epoch)
            self._check_setups(epoch, -1 if previous is None else previous)
            if self._report is not None:
                self._report(epoch, value)
        except (optuna.TrialPruned, Diverged, _TimedOut, _ReportFailed) as exc:
            self.stopped = exc
            raise

    def _detach(self) -> None:
        """``stopped`` as a fresh exception: the one raised holds the frames of ``train_fn`` (its model, its data)
        in its traceback, which must not outlive the trial."""
        stop = self.stopped
        if isinstance(stop, Diverged):
            self.stopped = Diverged(stop.reason, stop.epoch)
        elif isinstance(stop, _ReportFailed):
            self.stopped = _ReportFailed(stop.error.with_traceback(None))
        elif stop is not None:
            self.stopped = type(stop)(str(stop))

    def _check_setups(self, epoch: int, previous: int) -> None:
        """A trial trained with ``config.setup`` whose loss turned non-finite this epoch diverged, as a trial
        of the built-in trainer does (``setup.step`` skips such updates, so the value alone may look fine); so
        did one whose mean training loss since the last report is over ``DIVERGENCE_FACTOR`` times the loss of
        its first step, the built-in trainer's rule for a loss that explodes but stays finite (with one setup in
        the trial)."""
        from tuner.train import DIVERGENCE_FACTOR

        for setup in self._setups:
            steps, skipped, total, counted, ended = self._seen.get(id(setup), (0, 0, 0.0, 0, 0))
            self._seen[id(setup)] = (setup.steps, setup.skipped_steps, setup.loss_sum, setup.loss_steps, setup.epoch)
            # A loop that does not call end_epoch (which checks each epoch), reporting every epoch: the steps
            # since the last report are one epoch's. (Reported every few epochs, they are several.)
            if setup.epoch == ended and setup.steps > steps and epoch == previous + 1:
                setup.check_epoch_steps(epoch, setup.steps - steps, stacklevel=5)  # the ctx.report line
            if setup.skipped_steps > skipped:
                raise Diverged(f"diverged: the loss or its gradient was not finite in "
                               f"{setup.skipped_steps - skipped} of {setup.steps - steps} training steps of epoch "
                               f"{epoch + 1} (setup.step skipped those updates)", epoch)
            # With several setups (a GAN's two players) a loss may rise by design: the rule is for one model.
            if len(self._setups) == 1 and setup.loss_steps > counted and setup.initial_loss is not None:
                mean = (setup.loss_sum - total) / (setup.loss_steps - counted)
                if mean > DIVERGENCE_FACTOR * setup.initial_loss:
                    raise Diverged(f"diverged: training loss {mean:.4g} in epoch {epoch + 1} is over "
                                   f"{DIVERGENCE_FACTOR:g}x the initial {setup.initial_loss:.4g} (the mean of the "
                                   f"losses setup.step returned)", epoch)

    def set_test_value(self, value: float) -> None:
        """Records the held-out test metric of this run; reports and exports show it."""
        self.test_value = float(value)


def _is_bool(value: Any) -> bool:
    """True and False, NumPy's and a torch bool tensor too: numbers to ``float()``, never a metric."""
    if isinstance(value, bool):
        return True
    dtype = getattr(value, "dtype", None)  # NumPy's bool scalar (numpy.bool, numpy.bool_) and arrays, torch's
    return dtype is not None and (dtype == torch.bool or str(dtype) == "bool")


#: what a loop reads of its config without training its settings (the loop's length, the seed)
_NOT_THE_SETTINGS = frozenset({"epochs", "seed", "direction", "metadata"})
_WATCHED: dict[type, type] = {}


def _unwatch(config: Any) -> None:
    """``config`` (watched or not) as a plain config, watching nothing."""
    state = object.__getattribute__(config, "__dict__")
    state.pop("_read", None)
    plain = next((base for base, watched in _WATCHED.items() if watched is type(config)), None)
    if plain is not None:
        object.__setattr__(config, "__class__", plain)


def _unwatched(cls: type, state: dict[str, Any]) -> Any:
    """A watched config as it was, unpickled or copied: of its own class, watching nothing."""
    config = object.__new__(cls)
    config.__dict__.update(state)
    return config


def _watched(config: TrainConfig, read: set[str]) -> TrainConfig:
    """A copy of ``config`` that adds the name of every field ``train_fn`` reads (or method it calls) to
    ``read``, so that a trial that never used its sampled settings can be told. Once it reads a setting (not
    the epochs or the seed), there is nothing more to learn: the copy is a plain config from then on, so the
    training loop's reads (``setup.step``'s) cost what they cost before."""
    cls = type(config)
    if cls not in _WATCHED:
        def __getattribute__(self: Any, name: str) -> Any:
            if not name.startswith("_"):
                seen = object.__getattribute__(self, "__dict__").get("_read")
                if seen is not None:
                    seen.add(name)
                    if name not in _NOT_THE_SETTINGS:
                        _unwatch(self)
            return cls.__getattribute__(self, name)

        def __reduce_ex__(self: Any, protocol: Any) -> Any:  # pickled (a worker, the user's own code) as it was
            state = {k: v for k, v in object.__getattribute__(self, "__dict__").items() if k != "_read"}
            return _unwatched, (cls, state)

        _WATCHED[cls] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__,
                                                    "__reduce_ex__": __reduce_ex__,
                                                    "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    watched = object.__new__(_WATCHED[cls])
    watched.__dict__.update(config.__dict__)
    watched.__dict__["_read"] = read
    return watched


class TrainFnMisuse(ConfigError):
    """``train_fn`` returned or reported nothing usable: the trial is recorded as failed with the fix in its
    reason. A mistake in the code (a dict returned, epochs reported out of order: ``code``) stops the study at
    once, since every trial would make it again; returning None having reported nothing may be how a
    function skips a config, so that trial fails alone (and ``max_consecutive_failures`` stops a function that
    does it every time)."""

    def __init__(self, message: str, *, code: bool = True) -> None:
        super().__init__(message)
        self.code = code


class UserExecutor:
    """The user's ``train_fn(ctx)`` (``tuner.tune``). Python, NumPy and torch are seeded from
    ``config.seed`` before every call, so equal seeds give equal runs."""

    #: the user's code may batch as it likes: an out-of-memory error says nothing about the config's batch size
    batches_from_config = False

    def __init__(self, train_fn: Callable[[TrialContext], Any], device: str = "", direction: str | None = None) -> None:
        self.train_fn = train_fn
        self.device = device
        self.direction = direction  # of the study's metric, for runs outside a trial (confirmation runs)
        self.trial: optuna.Trial | None = None
        self._ctx: TrialContext | None = None
        self._steps_by_batch: dict[int, int] = {}  # batch size -> steps_per_epoch its trials gave config.setup
        self._said_batches = False
        self._said: set[str] = set()  # the warnings about the loop given already (once each)
        # PyTorch's first optimizer imports its compiler stack (about a second, once per process): paid here,
        # before any trial's clock starts, not by the first trial's seconds (train_seconds, the ETA).
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)

    def _check_batches(self, config: TrainConfig, setups: list[Any]) -> None:
        """Trials at different batch sizes whose loops all take the same number of steps per epoch do not
        train at the batch size they were given (a DataLoader built once, outside ``train_fn``): the batch size
        searched is then not the one trained. Said once, as a warning."""
        steps = next((s.steps_per_epoch for s in setups if s.config is config), None)
        if not isinstance(steps, int) or steps < 2 or self._said_batches:
            return
        other = next((b for b, n in self._steps_by_batch.items() if n == steps and b != config.batch_size), None)
        self._steps_by_batch[config.batch_size] = steps
        if other is not None:
            self._said_batches = True
            self._warn(f"tuner.tune: trials at batch sizes {other} and {config.batch_size} both gave config.setup "
                       f"steps_per_epoch={steps}: the loop does not seem to use ctx.config.batch_size (build the "
                       f"DataLoader inside train_fn with batch_size=ctx.config.batch_size), so the batch size "
                       f"searched is not the one trained.")

    def _warn(self, message: str) -> None:
        """A warning about the user's loop, attributed to their ``train_fn`` (not to this line of tuner)."""
        fn = self.train_fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        fn = inspect.unwrap(fn)
        code = getattr(getattr(fn, "__func__", fn), "__code__", None)  # a function, a bound method
        if code is None:  # a callable object: its __call__
            code = getattr(vars(type(fn)).get("__call__"), "__code__", None)
        if code is not None:
            warnings.warn_explicit(message, RuntimeWarning, code.co_filename, code.co_firstlineno,
                                   module=getattr(self.train_fn, "__module__", None))
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _check_config_used(self, read: set[str]) -> None:
        """A trial whose ``train_fn`` read nothing of its config but the epochs and seed (no ``config.setup``,
        no optimizer, rate or batch size): the study ranks settings that were never trained. Said once."""
        if read - _NOT_THE_SETTINGS or "config" in self._said:
            return
        self._said.add("config")
        self._warn(f"tuner.tune: train_fn finished a trial without using its sampled config (it read "
                   f"{', '.join(f'ctx.config.{name}' for name in sorted(read)) or 'nothing of ctx.config'}): every "
                   f"trial trained the same settings, so the study ranks optimizers and rates it never trained; "
                   f"build them with ctx.config.setup(model, steps_per_epoch=...), or read ctx.config.optimizer, "
                   f".batch_size and the rest.")

    def _check_epochs(self, ctx: TrialContext) -> None:
        """A trial that completed without reporting, or whose last report came before the config's last epoch
        (a loop over a fixed ``range(2)``, not ``range(ctx.config.epochs)``): the config recorded, and exported,
        says epochs it was not trained for, and its schedule stopped part way. Said once each, as a warning."""
        epochs = ctx.config.epochs
        if ctx._last_epoch is None:
            if "report" not in self._said:
                self._said.add("report")
                self._warn("tuner.tune: train_fn returned without calling ctx.report(epoch, value): its trials "
                           "cannot be pruned, a timeout cannot stop them, and no history is kept; report the "
                           "validation metric after every epoch.")
        elif ctx._last_epoch + 1 < epochs and "epochs" not in self._said:
            self._said.add("epochs")
            self._warn(f"tuner.tune: train_fn's last ctx.report was epoch {ctx._last_epoch} (counted from 0) of the "
                       f"config's {epochs} (ctx.config.epochs): the config records {epochs} epochs and its "
                       f"schedule was planned for them; loop over range(ctx.config.epochs), or pass epochs= to "
                       f"tune() as the loop trains.")
        if ctx._past_end is not None and "past end" not in self._said:
            self._said.add("past end")
            self._warn(f"tuner.tune: train_fn reported epoch {ctx._past_end} of a config of {epochs} epochs "
                       f"(ctx.config.epochs), whose epochs count from 0 to {epochs - 1}: the pruner compares trials "
                       f"epoch by epoch and at equal progress through the schedule, so report "
                       f"ctx.report(epoch, value) for epoch in range(ctx.config.epochs).")

    def _check_value(self, ctx: TrialContext, value: float) -> None:
        """A returned value that none of the trial's reports gave (a loop reporting the validation loss and
        returning the accuracy): the pruner and the timeout judge trials by what they report, the study ranks
        them by what they return. Said once, as a warning."""
        if not ctx.history or "value" in self._said:
            return
        if any(math.isclose(value, v, rel_tol=1e-6, abs_tol=1e-9) for v in ctx.history):
            return
        self._said.add("value")
        self._warn(f"tuner.tune: train_fn returned {value:.6g}, but reported {ctx.history[-1]:.6g} for its last "
                   f"epoch and no epoch reported {value:.6g}: the pruner compares trials by the values of "
                   f"ctx.report(epoch, value), the study ranks them by the value returned, so both must be the same "
                   f"metric (report the validation metric that train_fn returns).")

    def begin(self, trial: optuna.Trial | None) -> None:
        self.trial = trial
        if trial is not None:
            self._ctx = None

    def execute(self, config: TrainConfig, report: ReportFn | None, micro_batch: int | None = None) -> Executed:
        # micro_batch is never asked of it: the user's code batches as it likes (batches_from_config is false).
        if config.direction is None:  # config.setup's plateau schedule watches the metric the study tunes
            config.direction = direction_of(self.trial.study) if self.trial is not None else self.direction
        read: set[str] = set()
        self._ctx = ctx = TrialContext(_watched(config, read), self.trial, _report=report)
        sampled = set(self.trial.params) if self.trial is not None else set()  # the config's parameters
        seed_everything(config.seed)
        try:
            with watching() as ctx._setups:
                returned = self.train_fn(ctx)
        finally:
            _unwatch(ctx.config)  # tuner's own reads from here on
            self._check_batches(ctx.config, ctx._setups)  # the config train_fn was given
            ctx._setups = []  # their models and optimizers are the trial's: free them with it
            ctx._detach()
        if ctx.stopped is not None:
            # train_fn caught what ctx.report raised and went on: the trial stopped there all the same.
            if isinstance(ctx.stopped, optuna.TrialPruned):
                raise optuna.TrialPruned(f"{ctx.stopped} (train_fn went on after ctx.report() stopped it: let "
                                         f"the exception propagate)")
            raise ctx.stopped
        if returned is None:
            if not ctx.history:
                raise TrainFnMisuse("train_fn returned None and reported nothing: return the validation metric, "
                                    "or call ctx.report(epoch, value) every epoch.", code=False)
            returned = ctx.history[-1]
        if isinstance(returned, tuple) and len(returned) == 2:
            returned, test = returned
            if test is not None:  # (value, None): no test metric, as test_value's default
                try:
                    if isinstance(test, (str, bytes)) or _is_bool(test):
                        raise TypeError
                    ctx.set_test_value(test)
                except (TypeError, ValueError, RuntimeError):
                    raise TrainFnMisuse(f"train_fn returned (value, test_value): test_value must be the test "
                                        f"metric as a number, or None (got {type(test).__name__} "
                                        f"{repr(test)[:60]}).") from None
        if isinstance(returned, (str, bytes)):
            raise TrainFnMisuse(f"train_fn must return the validation metric as a number, not text (got "
                                f"{returned!r}).")
        if _is_bool(returned):
            raise TrainFnMisuse(f"train_fn must return the validation metric as a number, not {returned!r} (a "
                                f"bool would be recorded as {float(returned):g}).")
        try:
            value = float(returned)
        except (TypeError, ValueError):
            shape = getattr(returned, "shape", None)
            got = (f"a tuple of {len(returned)}" if isinstance(returned, tuple) else
                   f"{type(returned).__name__} of shape {tuple(shape)} (one number: .item())" if shape is not None
                   else type(returned).__name__)
            raise TrainFnMisuse(f"train_fn must return the validation metric (a number) or (value, test_value); "
                                f"got {got}.") from None
        if not math.isfinite(value):
            raise Diverged(f"diverged: train_fn returned {value}", len(ctx.history))
        own: list[str] = []
        if self.trial is not None:
            self._check_epochs(ctx)
            self._check_value(ctx, value)
            self._check_config_used(read)
            own = sorted(set(self.trial.params) - sampled)
            if own and "own" not in self._said:
                self._said.add("own")
                self._warn(f"tuner.tune: train_fn sampled parameters of its own through ctx.trial "
                           f"({', '.join(own)}): the trials record them, but a config holds only the space's, so "
                           f"best_config, its exports and the confirmation runs of recommend() do not carry them "
                           f"(read them from result.best_trial.params).")
        return Executed(value, ctx.test_value, {Key.TEST_VALUE: ctx.test_value, **self.partial(),
                                                **({Key.OWN_PARAMS: own} if own else {})})

    def partial(self) -> dict[str, Any]:
        if self._ctx is None:
            return {}
        return {Key.VAL_HISTORY: [round(v, 6) if math.isfinite(v) else str(v) for v in self._ctx.history]}

    def release_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class TrialOutcome:
    number: int
    state: str
    value: float | None
    test_value: float | None
    reason: StopReason | None
    seconds: float
    config: TrainConfig | None


@dataclass
class RunSummary:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: str = "budget"  # budget | timeout | failures
    threads: int = 1
    pack: int = 1  # trials trained at once
    pack_why: str = ""  # why that many (pack: auto), in words


def trial_seed(study_seed: int, number: int) -> int:
    return (study_seed * 1_000_003 + number) % 2**31


# -- errors of the user's code ----------------------------------------------------------------------------

def _library_roots() -> tuple[Path, ...]:
    import sysconfig

    roots = {Path(__file__).resolve().parents[1],  # the tuner package
             Path(optuna.__file__).resolve().parent, Path(torch.__file__).resolve().parent}
    for scheme_path in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError, OSError):
            roots.add(Path(sysconfig.get_paths()[scheme_path]).resolve())
    return tuple(roots)


_LIBRARY_ROOTS = _library_roots()


def user_frame(exc: BaseException) -> str | None:
    """``file:line in function`` of the last frame of the traceback that is in the user's code (not in tuner,
    Optuna, torch, the standard library or installed packages): where to look first."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = frame.filename
        if path.startswith("<") and not path.startswith("<ipython"):
            continue
        if not path.startswith("<"):
            resolved = Path(path).resolve()
            if "site-packages" in resolved.parts or any(resolved.is_relative_to(root) for root in _LIBRARY_ROOTS):
                continue
        return f"{path}:{frame.lineno} in {frame.name}"
    return None


def _error_reason(exc: BaseException) -> tuple[StopReason, dict[str, Any]]:
    where = user_frame(exc)
    message = f"{type(exc).__name__}: {exc}".strip()
    if where:
        message = f"{message} (at {where})"
    attrs: dict[str, Any] = {Key.TRACEBACK: traceback.format_exc()[-4000:]}
    if where:
        attrs[Key.ERROR_AT] = where
    return StopReason(StopKind.ERROR, message[:1000]), attrs


# -- storage writes -----------------------------------------------------------------------------------------

def _retried(fn: Callable[[], Any], retries: int = TELL_RETRIES) -> Any:
    """Calls ``fn``, retrying storage errors with backoff (0.5, 1, 2 s). What another try cannot change is
    raised at once: a finished trial, a record that no longer exists (its study was deleted:
    ``stops_if_deleted`` says so) and any error that is not the storage's."""
    for attempt in range(retries):
        try:
            return fn()
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            raise
        except Exception as exc:
            if attempt == retries - 1 or not _is_storage_error(exc):
                raise
            time.sleep(0.5 * 2**attempt)


def _tell(study: optuna.Study, trial: optuna.Trial | int, **kwargs: Any) -> None:
    _retried(lambda: study.tell(trial, skip_if_finished=True, **kwargs))


def _storage_reason(exc: BaseException, url: str | None = None, requeued: bool = False) -> StopReason:
    # Optuna wraps the driver's error (e.g. SQLite's "database is locked") in a generic one: name the cause.
    if url is not None and is_disk_full_error(exc, url):
        return StopReason(StopKind.STORAGE, f"storage full: {explain_storage_error(exc, url)}; the result could "
                                            f"not be recorded")
    cause = storage_error_text(exc)
    busy = any(word in cause.lower() for word in ("locked", "busy", "timeout", "timed out"))
    again = "; its config was queued again" if requeued else ""
    return StopReason(StopKind.STORAGE, (f"storage {'busy' if busy else 'error'}: could not record the result "
                                         f"after {TELL_RETRIES} tries ({cause})")[:900] + again)


def is_disk_full_error(exc: BaseException, url: str | None) -> bool:
    return url is not None and explain_storage_error(exc, url).startswith("disk full")


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


def _storage_stop(study: optuna.Study, plan: RunPlan, exc: BaseException, trial: int | None = None) -> StudyError:
    """The error that stops a study whose storage cannot be written (disk full, server gone)."""
    url = plan.storage_url or ""
    what = f"trial {trial} could not be recorded" if trial is not None else "no trial could be started"
    resume = plan.resume_hint or f"run `{study_command('run', study.study_name, plan.storage_url)}`"
    return StudyError(f"Study {study.study_name!r} stopped: {explain_storage_error(exc, url)}; {what}. Free the "
                      f"space (or fix the storage) and {resume}: anything left running is then marked failed.")


@contextlib.contextmanager
def _claim_lock(study: optuna.Study, url: str | None):
    """Held while a worker checks the budget and takes its next trial, so that workers never start more
    trials than the budget between them (and SQLite never hands one queued trial to two processes). Yields
    whether the claim is serialised across processes (False: no storage URL, or a server without a lock)."""
    if not url:
        yield False
        return
    storage = storage_of(study)
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    with storage_lock(url, study.study_name, engine=engine) as locked:
        yield locked


# -- asking -------------------------------------------------------------------------------------------------

class _TimedOut(Exception):
    pass


def _sampler_error(plan: RunPlan, exc: BaseException) -> StudyError:
    return StudyError(f"The {plan.sampler_name!r} sampler could not propose a trial "
                      f"({type(exc).__name__}: {exc}); check its options.")


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM arriving inside the block take effect at its end, each by its handler as it was, in
    the order they came (in the main thread, for handlers written in Python; elsewhere, or for ignored signals,
    nothing changes). A signal that comes again while held takes effect at once: the block may wait on a
    database lock, and a second Ctrl-C means now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved = {sig: handler for sig, handler in saved.items() if callable(handler)}

    def hold(signum: int, frame: Any) -> None:
        earlier = [c for c in caught if c[0] == signum]
        if earlier:  # the same signal again: now
            caught.remove(earlier[0])
            saved[signum](signum, frame)
        else:
            caught.append((signum, frame))

    for sig in saved:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum, frame in caught:
            saved[signum](signum, frame)


def _ask(study: optuna.Study, plan: RunPlan, trials: Sequence[FrozenTrial] | None = None) -> optuna.Trial:
    """``study.ask()``, its reads of the study answered from ``trials`` (the read made under the claim lock)
    or from one read; when the sampler fails, the trial it created is failed and a StudyError raised."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    before = max((t.number for t in trials), default=-1)
    try:
        with one_read(study, trials):
            return study.ask()
    except Exception as exc:
        if _is_storage_error(exc):
            raise _storage_stop(study, plan, exc) from exc
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number > before and Key.CONFIG not in t.user_attrs:
                _tell(study, t.number, state=TrialState.FAIL)
        raise _sampler_error(plan, exc) from exc


def _take(study: optuna.Study, plan: RunPlan, device: str = "", trials: Sequence[FrozenTrial] | None = None,
          asked: list[optuna.Trial] | None = None, limits: dict[str, dict[str, int]] | None = None,
          set_aside: list[TrialOutcome] | None = None) -> tuple[optuna.Trial, TrainConfig]:
    """Asks for a trial, marks it as this worker's and samples its config. A config that equals one a running
    trial is training (two workers, one proposal) is set aside, recorded with the reason, and asked again.
    ``trials``: every trial of the study as read under a claim lock that serialises the workers; asking,
    sampling and the duplicate check read nothing more (after a set-aside proposal, the study is read again).
    Without it, the study is read for asking and again, after sampling, for the duplicate check (another
    worker may have taken the same proposal meanwhile). ``asked`` collects every trial asked for, the ones set
    aside included. ``limits``: the study's out-of-memory limits (``oom_limits``) as read under the same claim
    lock, for a caller that takes several trials under it (else they are read here). ``set_aside`` collects
    the outcomes of the proposals set aside (failed, not trained), for the caller's trial lines."""
    duplicates = avoided = 0
    claimed = trials
    while True:
        if trials is None:
            trials = study.get_trials(deepcopy=False)
        # An interrupt that lands while the trial is asked for (it exists, but is nobody's yet) takes effect
        # once its worker is written: the interrupted run then finds it as its own and fails it.
        with interrupts_held():
            trial = _ask(study, plan, trials)
            if asked is not None:
                asked.append(trial)
            try:
                # The sampler's reads of the study (once per parameter) answered from one read; its parameters
                # written with the worker and the config in one transaction.
                with one_read(study, trials), held_params(study, trial) as flush:
                    config = plan.space.sample(trial, epochs=plan.epochs, seed=trial_seed(plan.seed, trial.number))
                    flush({Key.WORKER: worker_identity(device), Key.CONFIG: config.to_dict()})
            except BaseException as exc:
                if not isinstance(exc, Exception):  # an interrupt: the worker is not written yet, the number is
                    _fail_own_running(study, trial)
                    raise
                if _is_storage_error(exc):  # left running: the reaper fails it once its grace period is over
                    raise _storage_stop(study, plan, exc, trial.number) from exc
                # Systematic (bad sampler options), not one unlucky trial: stop at once.
                with contextlib.suppress(Exception):
                    _close(study, trial, StopReason(StopKind.SAMPLER, f"sampler: {type(exc).__name__}: {exc}").attrs(),
                           TrialState.FAIL)
                raise _sampler_error(plan, exc) from exc
        avoided_why = _avoid_oom(study, plan, trial, config, device, limits)
        if avoided_why is not None:
            if set_aside is not None:
                set_aside.append(TrialOutcome(trial.number, "FAIL", None, None, avoided_why, 0.0, config))
            # A config queued again (its pack ran out of memory) is not the sampler proposing it.
            avoided += trial.user_attrs.get(Key.RETRY_OF) is None
            trials = claimed = None
            if avoided >= MAX_OOM_ASKS:
                limit = oom_limits(study).get(device_key(device), {})
                raise StudyError(f"Study {study.study_name!r}: the sampler proposed batch sizes of "
                                 f"{limit.get('batch_size')} or more {MAX_OOM_ASKS} times in a row, and those ran out "
                                 f"of memory on {device_key(device)} (trial {limit.get('trial')}); use a space "
                                 f"with smaller batch sizes.")
            continue
        twin = _running_twin(trial, trials if claimed is not None else
                             study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if twin is None or duplicates >= MAX_DUPLICATE_ASKS:
            return trial, config
        duplicates += 1
        trials = claimed = None
        reason = StopReason(StopKind.DUPLICATE, f"duplicate: the same parameters as trial {twin}, which is "
                                                f"running; not trained, another config was asked for")
        _close(study, trial, {**reason.attrs(), Key.DUPLICATE_OF: twin}, TrialState.FAIL)
        if set_aside is not None:
            set_aside.append(TrialOutcome(trial.number, "FAIL", None, None, reason, 0.0, config))


def _lower_limit(study: optuna.Study, attr: str, device: str, field: str, entry: dict[str, int]) -> int:
    """Records ``entry`` as a limit of ``device`` (its ``field``: a batch size, a number of trials) in the study;
    returns the limit that stands there: the smallest recorded, by any worker."""
    key = device_key(device)
    with contextlib.suppress(Exception):
        study.set_user_attr(f"{attr}/{key}/{entry[field]}", {**entry, "device": key})
        return _limits(study, attr, field).get(key, entry)[field]
    return entry[field]


def _record_oom(study: optuna.Study, device: str, batch_size: int, number: int, on_oom: str = "avoid") -> str:
    """Remembers that ``batch_size`` ran out of memory on ``device``; returns what the trial's reason adds."""
    key = device_key(device)
    limit = _lower_limit(study, StudyKey.OOM_BATCH, device, "batch_size", {"batch_size": batch_size, "trial": number})
    if on_oom == "accumulate":
        return (f"; batch sizes of {limit} or more train on {key} as micro-batches of {max(1, limit // 2)} from "
                f"now on (gradient accumulation)")
    return f"; batch sizes of {batch_size} or more are not trained on {key} from now on"


def record_pack_cap(study: optuna.Study, device: str, trials: int, ran_out: int, number: int) -> int:
    """Remembers that at most ``trials`` train at once on ``device``, so that other workers and later runs of
    the study start there instead of running out of memory again; returns the cap that stands (a smaller one
    recorded by any worker stands)."""
    return _lower_limit(study, StudyKey.PACK_CAP, device, "trials",
                        {"trials": trials, "ran_out": ran_out, "trial": number})


def _limit_reached(study: optuna.Study, config: TrainConfig, device: str,
                   limits: dict[str, dict[str, int]] | None = None) -> dict[str, int] | None:
    """The out-of-memory limit of ``device`` (batch size, trial) where ``config``'s batch size reaches it;
    ``limits``: ``oom_limits(study)`` as the caller read it (else it is read here)."""
    limit = (oom_limits(study) if limits is None else limits).get(device_key(device))
    return limit if limit and config.batch_size >= limit["batch_size"] else None


def accumulation_micro_batch(study: optuna.Study, config: TrainConfig, device: str) -> int | None:
    """The micro-batch size a config's batches must be split into on ``device``: half the smallest batch size
    that ran out of memory there, where the config's batch size is that or larger; else None."""
    limit = _limit_reached(study, config, device)
    return None if limit is None else max(1, limit["batch_size"] // 2)


def micro_batch_for(study: optuna.Study, plan: RunPlan, config: TrainConfig, device: str) -> int | None:
    """With ``on_oom: accumulate``, the micro-batch size a config trains with on ``device`` (None: whole
    batches)."""
    return accumulation_micro_batch(study, config, device) if plan.on_oom == "accumulate" else None


def _avoid_oom(study: optuna.Study, plan: RunPlan, trial: optuna.Trial, config: TrainConfig, device: str,
               limits: dict[str, dict[str, int]] | None = None) -> StopReason | None:
    """A config at a batch size that ran out of memory on this device before is not trained (unless the study
    accumulates gradients instead): the trial is failed with the reason (returned), and another asked for."""
    key = device_key(device)
    limit = None if plan.on_oom == "accumulate" else _limit_reached(study, config, device, limits)
    if limit is None:
        return None
    # The proposal at the largest batch size below the limit, queued to train next: a sampler never learns from
    # a config it proposed that was not trained (TPE leans towards batch sizes no trial has finished at), so
    # asking it again can propose a batch size over the limit time after time.
    smaller = plan.space.largest_batch_below(limit["batch_size"]) if "batch_size" in trial.params else None
    reason = StopReason(StopKind.OUT_OF_MEMORY, f"out of memory avoided: batch size {config.batch_size} is not "
                                                f"trained on {key}, where batch size {limit['batch_size']} ran out "
                                                f"of memory (trial {limit['trial']})"
                                                + (f"; queued again at batch size {smaller}" if smaller else ""))
    _close(study, trial, {**reason.attrs(), Key.OOM_AVOIDED: True}, TrialState.FAIL)
    if smaller is not None:
        queue_again(study, trial, {**trial.params, "batch_size": smaller})
    return reason


def _running_twin(trial: optuna.Trial, trials: Sequence[FrozenTrial]) -> int | None:
    """A running trial (of ``trials``, read under the claim lock) with the same parameters as ``trial``."""
    params = trial.params
    if not params:
        return None
    for t in trials:
        if t.state == TrialState.RUNNING and t.number != trial.number and t.params == params:
            return t.number
    return None


# -- one trial ----------------------------------------------------------------------------------------------

def report_epoch(plan: RunPlan, trial: optuna.Trial, config: TrainConfig, epoch: int, value: float,
                 deadline: float | None, recent: RecentView | None = None) -> None:
    """Reports a trial's validation value of one epoch; raises ``TrialPruned`` when the pruner stops it, and
    ``_TimedOut`` past ``deadline`` (unless it was the last epoch). ``recent``: the trial's pruning checks
    against a read of the study at most ``PRUNE_READ_MAX_AGE`` old, where the pruner allows it."""
    judged = may_prune_at(trial.study.pruner, epoch)  # else asking would only cost a read of the study
    if plan.multi:
        # Optuna reports and prunes single-objective trials only: the value goes to the storage directly and
        # the pruner judges it on the first objective, as it would in a study of that objective alone.
        from tuner.study._writes import StudyView

        _report_write(lambda: storage_of(trial.study).set_trial_intermediate_value(trial._trial_id, epoch, value))
        prune = judged and StudyView(trial.study).should_prune(trial._trial_id)
    else:
        _report_write(lambda: trial.report(value, epoch))
        latest = getattr(trial, "_get_latest_trial", None)  # the trial with its reports, as Optuna judges it
        if judged and recent is not None and latest is not None and judges_by_complete_trials(trial.study.pruner):
            prune = recent.judge(latest())
        else:
            prune = judged and trial.should_prune()
    check_epoch(plan, config, epoch, value, deadline, prune)


class _ReportFailed(Exception):
    """The storage kept failing to take an epoch's value (``error``, after the retries): the trial fails with a
    storage reason, as a trial in a pack does, not as an error of the user's code."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _report_write(write: Callable[[], Any]) -> None:
    """An epoch's value written as every other write of a trial is: retried with backoff (a busy SQLite)."""
    try:
        _retried(write)
    except optuna.exceptions.UpdateFinishedTrialError:
        raise
    except Exception as exc:
        if _is_storage_error(exc):
            raise _ReportFailed(exc) from exc
        raise


def check_epoch(plan: RunPlan, config: TrainConfig, epoch: int, value: float, deadline: float | None,
                prune: bool) -> None:
    """After a trial's report of one epoch: raises ``TrialPruned`` when the pruner said so (``prune``), and
    ``_TimedOut`` past ``deadline`` (unless it was the last epoch); ``Terminated`` after a SIGTERM whose
    exception was lost."""
    raise_if_terminated()
    if prune:
        # After the last epoch too: the trial trained every epoch but scored below the pruner's bar, and kept out
        # of the complete trials it does not lower that bar for the trials after it (as the peer's Optuna does).
        last = " (its last)" if epoch + 1 >= config.epochs else ""
        raise optuna.TrialPruned(f"pruned by the {plan.pruner_name} pruner after epoch {epoch + 1}{last} "
                                 f"(validation {value:.4g})")
    if deadline is not None and time.monotonic() >= deadline and epoch + 1 < config.epochs:
        raise _TimedOut(f"timeout: the study's timeout ({plan.timeout:g}s) was reached; stopped after "
                        f"epoch {epoch + 1} of {config.epochs}")


def _after_trial(study: optuna.Study, trial: optuna.Trial, state: TrialState, values: list[float] | None) -> None:
    try:
        study.sampler.after_trial(study, copy.copy(trial._cached_frozen_trial), state, values)
    except Exception as exc:  # recorded already; ``tell`` would have raised after writing
        log.warning("trial %d: the sampler failed after the trial (%s: %s)", trial.number, type(exc).__name__, exc)


def _close(study: optuna.Study, trial: optuna.Trial, attrs: dict[str, Any], state: TrialState,
           values: float | Sequence[float] | None = None) -> None:
    """Writes a finished trial's attributes and outcome: on an RDB storage in one retried transaction
    (``close_trial``; the sampler is told here), elsewhere the attributes, then ``tell``. Every trial ends
    here, trained or set aside. Raises ``UpdateFinishedTrialError`` for a trial another worker finished."""
    tries = 0

    def close() -> tuple[list[float] | None] | None:
        nonlocal tries
        tries += 1
        try:
            return close_trial(study, trial._trial_id, attrs, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            # A try whose error came after its commit landed (a connection lost at COMMIT): it is done.
            stored = trial_by_number(study, trial.number) if tries > 1 else None
            if stored is not None and stored.state == state and \
                    all(stored.user_attrs.get(key) == value for key, value in attrs.items()):
                return (stored.values,)
            raise

    told = _retried(close)
    if told is None:  # not an RDB storage (or a case one transaction does not cover): as Optuna writes
        _retried(lambda: write_attrs(study, trial._trial_id, attrs))
        _tell(study, trial, values=values, state=state)
    else:  # one transaction: the sampler hears of the trial here, as ``tell`` tells it
        _after_trial(study, trial, state, told[0])


def finish_trial(study: optuna.Study, plan: RunPlan, trial: optuna.Trial, config: TrainConfig, seconds: float,
                 state: TrialState, reason: StopReason | None, value: float | None = None,
                 test: float | None = None, attrs: dict[str, Any] | None = None) -> TrialOutcome:
    """Records a trial's outcome (attributes, state and value in one retried write) and returns it. A trial
    reaped while it ran is reported as discarded; a storage that keeps failing fails the trial with the reason
    (disk full stops the study). ``value`` of a pruned trial: its last reported value, which Optuna records as
    its value in a study of one objective; the outcome (and so the trial's line) says it where it is finite."""
    attrs = {**(attrs or {}), Key.SECONDS: round(seconds, 3)}
    if reason is not None:
        attrs.update(reason.attrs())
    try:
        _close(study, trial, attrs, state, plan.values(value, seconds) if state == TrialState.COMPLETE else None)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Reaped while it ran (its heartbeat stalled): the trial is FAIL and its parameters queued again.
        lost = StopReason(StopKind.DISCARDED, "discarded: the trial was failed by another worker after its "
                                              "heartbeat stalled")
        log.warning("trial %d: %s", trial.number, lost)
        return TrialOutcome(trial.number, "FAIL", None, None, lost, seconds, config)
    except Exception as exc:  # the storage kept failing: record what can be recorded, and go on
        if is_disk_full_error(exc, plan.storage_url):
            raise _storage_stop(study, plan, exc, trial.number) from exc
        if plan.storage_url and study_deleted(study):  # nothing to record into, nor to queue again
            raise deleted_error(study.study_name, plan.storage_url) from None
        failed = _storage_reason(exc, requeued=True)
        log.warning("trial %d: %s", trial.number, failed)
        with contextlib.suppress(Exception):
            write_attrs(study, trial._trial_id, failed.attrs())
        told = False
        with contextlib.suppress(Exception):
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            told = True
        # Not the config's fault: it trains again. (Left RUNNING, the trial is reaped once its heartbeat is
        # stale, and its config queued again then.)
        if told:
            queue_again(study, trial)
        return TrialOutcome(trial.number, "FAIL", None, None, failed, seconds, config)
    if state == TrialState.PRUNED and (plan.multi or value is None or not math.isfinite(value)):
        value = None
    return TrialOutcome(trial.number, state.name, value, test, reason, seconds, config)


def run_one(study: optuna.Study, plan: RunPlan, executor: Executor, trial: optuna.Trial | None = None,
            config: TrainConfig | None = None, deadline: float | None = None,
            blame_oom: Callable[[int, bool], bool] | None = None) -> TrialOutcome:
    """Trains one trial (asked and sampled here unless given) and tells its outcome; no path leaves it
    RUNNING. Past ``deadline`` (``time.monotonic()``), the trial stops at its next epoch end. ``blame_oom``:
    whether an out-of-memory batch size is too large for the device, where other trials share it (trial
    packs); one not blamed is queued again instead of setting the batch-size limit."""
    if trial is None or config is None:
        trial, config = _take(study, plan, executor.device)
    start = time.perf_counter()
    pruner = plan.pruner_name

    recent = RecentView(study, PRUNE_READ_MAX_AGE)

    reported: list[float] = []

    def report(epoch: int, value: float) -> None:
        reported[:] = [value]
        report_epoch(plan, trial, config, epoch, value, deadline, recent)

    def finish(state: TrialState, reason: StopReason | None, value: float | None = None, test: float | None = None,
               attrs: dict[str, Any] | None = None) -> TrialOutcome:
        if state == TrialState.PRUNED and reported:
            value = float(reported[0])  # the last reported value: Optuna's value of a pruned trial
        return finish_trial(study, plan, trial, config, time.perf_counter() - start, state, reason, value, test,
                            {**accumulated, **(attrs or {})})

    micro = (micro_batch_for(study, plan, config, executor.device)
             if getattr(executor, "batches_from_config", False) else None)
    accumulated = {Key.ACCUMULATION: {"micro_batch": micro, "steps": math.ceil(config.batch_size / micro),
                                      "device": device_key(executor.device)}} if micro else {}

    executor.begin(trial)
    ran_out: tuple[StopReason, dict[str, Any]] | None = None
    requeue, retry = False, None
    heartbeat = Heartbeat(study, trial._trial_id, plan.heartbeat_interval) if plan.storage_url else None
    try:
        with heartbeat or contextlib.nullcontext():
            done = executor.execute(config, report, micro)
    except optuna.TrialPruned as exc:
        return finish(TrialState.PRUNED, StopReason(StopKind.PRUNED, str(exc) or f"pruned by the {pruner} pruner"),
                      attrs=executor.partial())
    except Diverged as exc:
        return finish(TrialState.PRUNED, StopReason(StopKind.DIVERGED, exc.reason),
                      attrs={Key.DIVERGED: True, **executor.partial()})
    except _TimedOut as exc:
        return finish(TrialState.FAIL, StopReason(StopKind.TIMEOUT, str(exc)),
                      attrs={Key.TIMED_OUT: True, **executor.partial()})
    except (KeyboardInterrupt, SystemExit):
        # Not the config's fault: it trains again when the study resumes (as a lost worker's does).
        finish(TrialState.FAIL, StopReason(StopKind.INTERRUPTED, INTERRUPTED), attrs=executor.partial())
        queue_again(study, trial)
        raise
    except torch.cuda.OutOfMemoryError as exc:
        # With gradient accumulation, what ran out of memory was a micro-batch of that size.
        batch, error = micro or config.batch_size, f"{exc}".splitlines()[0][:800]
        attrs = {Key.OOM: True, Key.TRACEBACK: traceback.format_exc()[-4000:], **executor.partial()}
        if not getattr(executor, "batches_from_config", False):
            ran_out = (StopReason(StopKind.OUT_OF_MEMORY, f"out of memory: {error}"), attrs)
        elif blame_oom is None or blame_oom(batch, True):
            # The config that ran out trains again, as the proposals avoided after it do: at the largest batch
            # size below the limit (a strictly smaller one each time, so the retries end), or (accumulate) in
            # micro-batches, once.
            again = ""
            if micro is None and plan.on_oom == "accumulate":
                if trial.user_attrs.get(Key.RETRY_OF) is None:
                    retry, again = dict(trial.params), "; queued again, to train in micro-batches"
            elif micro is None and "batch_size" in trial.params:
                smaller = plan.space.largest_batch_below(batch)
                if smaller is not None:
                    retry, again = {**trial.params, "batch_size": smaller}, f"; queued again at batch size {smaller}"
            ran_out = (StopReason(StopKind.OUT_OF_MEMORY, f"out of memory: {error}"
                                  + _record_oom(study, executor.device, batch, trial.number, plan.on_oom) + again),
                       attrs)
        else:
            requeue, where = True, device_key(executor.device)
            ran_out = (StopReason(StopKind.DISCARDED, f"discarded: ran out of memory on {where} ({error}) beside "
                                                      f"trials in packs; its config was queued again"), attrs)
    except _ReportFailed as exc:
        if is_disk_full_error(exc.error, plan.storage_url):
            raise _storage_stop(study, plan, exc.error, trial.number) from exc.error
        if plan.storage_url and study_deleted(study):
            raise deleted_error(study.study_name, plan.storage_url) from None
        outcome = finish(TrialState.FAIL, _storage_reason(exc.error, requeued=True), attrs=executor.partial())
        queue_again(study, trial)  # not the config's fault: it trains again (a storage still failing loses it)
        return outcome
    except Exception as exc:
        if _is_storage_error(exc) and is_disk_full_error(exc, plan.storage_url):
            raise _storage_stop(study, plan, exc, trial.number) from exc
        reason, attrs = _error_reason(exc)
        outcome = finish(TrialState.FAIL, reason, attrs={**attrs, **executor.partial()})
        if isinstance(exc, TrainFnMisuse) and exc.code:  # every trial would make the same mistake
            queue_again(study, trial)  # not the config's fault: it trains once the code is fixed
            raise StudyError(f"Study {study.study_name!r} stopped at trial {trial.number}: {reason.rstrip('.')}. "
                             f"Fix train_fn and run again: the study resumes, with this trial's config "
                             f"queued.") from None
        return outcome
    except BaseException as exc:
        # CancelledError, GeneratorExit and the like: not the trial's fault, and not to be swallowed. The
        # trial is recorded as failed with the reason and its config queued again, as after Ctrl-C; then the
        # exception goes on with its own traceback.
        finish(TrialState.FAIL, StopReason(StopKind.INTERRUPTED, f"interrupted by {type(exc).__name__}"
                                           + (f": {exc}" if str(exc) else "") + "; its config was queued again"),
               attrs={Key.TRACEBACK: traceback.format_exc()[-4000:], **executor.partial()})
        queue_again(study, trial)
        raise
    finally:
        executor.begin(None)
    if ran_out is not None:
        # Out of the except block: the error's traceback, which held the run's tensors, is gone.
        executor.release_memory()
        outcome = finish(TrialState.FAIL, ran_out[0], attrs=ran_out[1])
        if requeue or retry is not None:
            queue_again(study, trial, retry)
        return outcome
    return finish(TrialState.COMPLETE, None, done.value, done.test_value, attrs=done.attrs)


class RunFailed(Exception):
    """A run outside a study (a confirmation re-run) failed; the message is the reason a trial would record."""


def run_config(executor: Executor, config: TrainConfig, micro_batch: int | None = None) -> tuple[float, float | None]:
    """Trains one config outside any study (a confirmation re-run): ``(validation, test or None)``. A run that
    diverges, runs out of memory or raises fails with ``RunFailed`` and the reason a trial would record;
    errors of tuner itself (the objective cannot load) are raised as they are. ``micro_batch``: as micro-batches
    of that size, gradients accumulated (a batch size that ran out of memory on this device)."""
    ran_out = ""
    try:
        done = executor.execute(config, None, micro_batch)
    except Diverged as exc:
        raise RunFailed(exc.reason) from None
    except torch.cuda.OutOfMemoryError as exc:
        ran_out = f"out of memory: {exc}".splitlines()[0][:300]
    except TunerError:
        raise
    except Exception as exc:
        reason, _ = _error_reason(exc)
        raise RunFailed(reason.message) from exc
    if ran_out:
        executor.release_memory()  # out of the except block: the error's traceback is gone
        raise RunFailed(ran_out)
    return done.value, done.test_value


def run_study_config(study: optuna.Study, executor: Executor, config: TrainConfig) -> tuple[float, float | None]:
    """``run_config`` for a config of ``study`` (its confirmation runs, ``fit``): a batch size that ran out of
    memory on this device trains as micro-batches, as the study's trials of it did (``on_oom: accumulate``),
    rather than failing. Executors that batch as the user's code likes (``tune``) train it as it is."""
    try:
        return run_config(executor, config)
    except RunFailed as exc:
        micro = (accumulation_micro_batch(study, config, executor.device)
                 if getattr(executor, "batches_from_config", False) else None)
        if not str(exc).startswith("out of memory") or micro is None:
            raise
    return run_config(executor, config, micro)


# -- the loop -----------------------------------------------------------------------------------------------

def stops_if_deleted(run: Callable[..., RunSummary]) -> Callable[..., RunSummary]:
    """A run (``run(study, plan, ...)``) whose study is deleted from its storage while it runs (``tuner study
    delete --force``) stops with one line that says so, instead of the storage's error about a record that no
    longer exists."""
    @functools.wraps(run)
    def checked(study: optuna.Study, plan: RunPlan, *args: Any, **kwargs: Any) -> RunSummary:
        try:
            return run(study, plan, *args, **kwargs)
        except Exception as exc:
            if plan.storage_url and study_deleted(study):
                drop_orphans(study)  # a trial asked for as it was deleted: not the next study's
                if not isinstance(exc, StudyError):
                    raise deleted_error(study.study_name, plan.storage_url) from None
            raise
    return checked


@stops_if_deleted
def run_trials(
    study: optuna.Study,
    plan: RunPlan,
    executor: Executor,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    threads: int = 1,
    on_trial: Callable[[TrialOutcome, optuna.Study], None] | None = None,
) -> RunSummary:
    """Runs trials until the study holds ``n_trials`` finished (complete or pruned) trials.

    The budget is the study's, not this call's: a resumed study only runs what is missing.
    """
    n_trials = n_trials or plan.n_trials
    timeout = timeout if timeout is not None else plan.timeout
    summary = RunSummary(threads=threads)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    consecutive = 0
    while True:
        raise_if_terminated()
        if deadline is not None and time.monotonic() >= deadline:
            summary.stopped_by = "timeout"
            break
        if plan.storage_url:
            try:
                reap_stale(study, plan.grace_period)
            except Exception as exc:
                if _is_storage_error(exc):
                    raise _storage_stop(study, plan, exc) from exc
                raise
        trial = None
        set_aside: list[TrialOutcome] = []
        try:
            with _claim_lock(study, plan.storage_url) as locked:
                trials = study.get_trials(deepcopy=False)
                finished = sum(t.state in FINISHED for t in trials)
                started = finished + sum(t.state == TrialState.RUNNING for t in trials)
                taken = _take(study, plan, executor.device, trials if locked else None,
                              set_aside=set_aside) if started < n_trials else None
            for aside in set_aside:  # a line each, as a pool's supervisor gives them
                consecutive = record_outcome(study, plan, summary, aside, consecutive, on_trial, set_aside=True)
            if finished >= n_trials:
                break
            if taken is None:
                # The rest of the budget is in flight on other workers: wait, in case one of them fails.
                time.sleep(min(1.0, plan.heartbeat_interval))
                continue
            trial = taken[0]
            outcome = run_one(study, plan, executor, *taken, deadline=deadline)
        except BaseException:
            _fail_own_running(study, trial)
            raise
        try:
            consecutive = record_outcome(study, plan, summary, outcome, consecutive, on_trial)
        except StudyError:
            summary.seconds = time.monotonic() - start
            raise
    summary.seconds = time.monotonic() - start
    return summary


def record_outcome(study: optuna.Study, plan: RunPlan, summary: RunSummary, outcome: TrialOutcome,
                   consecutive: int, on_trial: Callable[[TrialOutcome, optuna.Study], None] | None, *,
                   set_aside: bool = False) -> int:
    """Adds a finished trial to the run: the caller's ``on_trial``, and the failure limit (failures in a row
    stop the study). Timeouts, duplicates, discarded trials and proposals set aside untrained (``set_aside``:
    an avoided out-of-memory batch size) are neither failures nor successes: they leave the count as it was.
    Returns the failures in a row."""
    summary.outcomes.append(outcome)
    neutral = set_aside or (outcome.state == "FAIL" and outcome.reason is not None
                            and outcome.reason.kind in _NEUTRAL)
    if not neutral and outcome.state != "FAIL":
        consecutive = 0
    elif not neutral:
        consecutive += 1
        # One of a pool's workers: the failures in a row are the workers' together (each one's own count would
        # let N workers fail N times the limit before stopping).
        if plan.started is not None:
            since = datetime.datetime.fromtimestamp(plan.started)
            consecutive = max(consecutive, _failures_in_a_row(study, since))
    if on_trial is not None:
        on_trial(outcome, study)
    if consecutive >= plan.max_consecutive_failures:
        summary.stopped_by = "failures"
        why = f"{consecutive} consecutive failed trials; the last failed with: {outcome.reason}"
        try:  # said by show and the report too, until a trial runs again (one asked after the stop: a pack's
            # members and other workers' trials asked before it do not count)
            last = max((t.number for t in study.get_trials(deepcopy=False)), default=outcome.number)
            study.set_user_attr(StudyKey.STOPPED, {"trial": last, "why": why})
        except Exception:  # a storage that fails now: the error below says it all the same
            pass
        raise StudyError(f"Study {study.study_name!r} stopped after {why}")
    return consecutive


# Neither failures nor successes: they leave the failures in a row as they were. Among the trials of other
# processes, those whose worker was lost too (reaped, not failed by the trained code).
_NEUTRAL = (StopKind.TIMEOUT, StopKind.DUPLICATE, StopKind.DISCARDED, StopKind.INTERRUPTED)  # not the config's doing
_NEUTRAL_KINDS = frozenset(k.value for k in (*_NEUTRAL, StopKind.WORKER_LOST))


def _failures_in_a_row(study: optuna.Study, since: datetime.datetime) -> int:
    """The failed trials at the end of those started and finished since ``since``, in the order they finished,
    by every process of the study (the neutral kinds above and proposals set aside skipped); 0 where the
    storage cannot say."""
    try:
        finished = sorted((t for t in study.get_trials(deepcopy=False, states=FINISHED + (TrialState.FAIL,))
                           if t.datetime_complete is not None and t.datetime_start is not None
                           and t.datetime_start >= since),
                          key=lambda t: t.datetime_complete)
    except Exception:  # a storage that fails now: the run's own count stands
        return 0
    count = 0
    for t in reversed(finished):
        if t.state != TrialState.FAIL:
            break
        # Set aside untrained (an avoided out-of-memory batch size) is neutral, as in one process.
        count += t.user_attrs.get(Key.REASON_KIND) not in _NEUTRAL_KINDS and not t.user_attrs.get(Key.OOM_AVOIDED)
    return count


#: an interrupted trial's reason: it is queued again (``queue_again``), so the study loses nothing
INTERRUPTED = "interrupted; its config was queued again, to train when the study resumes"
#: what every entry point (the CLI, tune(), run_study()) says of an interrupted run, before how to resume it
INTERRUPTED_RUN = "the trials that were running are recorded as failed (interrupted) and their configs queued again"


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While trials run in a library call: SIGTERM raises ``Terminated`` in the main thread instead of killing
    the process with a trial left RUNNING (found only by the reaper, after the grace period, on a later run).
    Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` as Python's own handler does. Both are noted too, so that the
    run still stops where Python lost the exception. A handler the caller installed is left alone (a SIGINT
    ignored, under nohup, stays ignored), and so is a call from another thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    term = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    intr = signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def on_term(signum: int, frame: Any) -> None:
        # Once: a second SIGTERM while the running trial is being recorded and queued again would cut that short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        terminate(signum, frame)

    if term:
        signal.signal(signal.SIGTERM, on_term)
    if intr:
        signal.signal(signal.SIGINT, interrupt)
    clear_terminate()
    try:
        yield
        raise_if_terminated()  # lost after the run's last check: the call still ends as terminated
    finally:
        clear_terminate()
        if term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if intr:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def queue_again(study: optuna.Study, trial: optuna.Trial | FrozenTrial, params: dict[str, Any] | None = None) -> None:
    """Queues a sampled trial's config again as a retry of it: its parameters (none, for a space of fixed
    values; ``params`` where they are not all sampled yet); a storage that fails here loses the retry, not the
    run."""
    with contextlib.suppress(Exception):
        study.enqueue_trial(trial.params if params is None else params,
                            user_attrs={Key.RETRY_OF: trial.number, **start_attrs(trial)})


def _fail_own_running(study: optuna.Study, asked: optuna.Trial | None = None) -> None:
    """Safety net for an interrupt that lands between asking for a trial and training it, or while a result
    is being written: nothing this process took is left RUNNING."""
    with contextlib.suppress(Exception):
        storage = storage_of(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            mine = asked is not None and t.number == asked.number
            if mine or is_this_process(t.user_attrs.get(Key.WORKER) or {}):
                # A config taken from the queue (enqueued, a known start, a retry) is queued again; one the
                # sampler was proposing, never trained, is not: the sampler proposes again.
                queued = "fixed_params" in t.system_attrs
                for key, value in StopReason(StopKind.INTERRUPTED,
                                             INTERRUPTED if queued else "interrupted").attrs().items():
                    storage.set_trial_user_attr(t._trial_id, key, value)
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                if queued:
                    queue_again(study, t, t.system_attrs["fixed_params"])


def use_threads(trainer: Any, threads: int | None, workers: int = 1) -> int:
    """Sets torch's thread count for this process: ``threads``, else the faster of 1 and cores / workers,
    timed on the objective."""
    chosen = threads or trainer.fastest_threads([1, max(1, (os.cpu_count() or 1) // max(1, workers))])
    torch.set_num_threads(chosen)
    return chosen
