"""The learning-rate schedule registry.

Every schedule but ``plateau`` is a pure function ``factor(step)`` of the batch counter, wrapped in a
``LambdaLR`` that is stepped once per batch: per-epoch schedules (step, exponential, cosine restarts) are
written in epochs and turn into a staircase over batches. ``plateau`` watches the validation metric and is
stepped once per epoch. The same factor functions draw the schedule curve in reports.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner._registry import Registry
from tuner._source import INDENT, WIDTH, call, literal
from tuner._validate import (
    FRACTION_POSITIVE,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    UNIT,
    UNIT_OPEN,
    Bound,
    check_param,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ScheduleInfo", "KerasScheduleSource", "get_schedule", "list_schedules", "build_scheduler", "lr_factors"]

FactorFn = Callable[..., float]


@dataclass(frozen=True)
class Horizon:
    """How long training runs, in the units schedules are written in."""

    epochs: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return max(1, self.epochs * self.steps_per_epoch)


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule: its parameters, their bounds, and when it is stepped (``batch`` or ``epoch``)."""

    name: str
    defaults: dict[str, Any]
    bounds: dict[str, Bound]
    factor: FactorFn | None = None
    interval: str = "batch"
    description: str = ""
    source: Callable[[dict[str, Any]], ScheduleSource] | None = None  # what the Python export writes
    # what the Keras export writes: keras(info, params), params with the defaults filled in
    keras: Callable[[ScheduleInfo, dict[str, Any]], KerasScheduleSource] | None = None

    def python_source(self, params: dict[str, Any]) -> ScheduleSource:
        """What the Python export writes for this schedule with ``params`` (checked), defaults filled in."""
        if self.source is None:
            raise NotImplementedError(f"The {self.name!r} schedule has no source for the Python export.")
        return self.source({**self.defaults, **params})

    def keras_source(self, params: dict[str, Any]) -> KerasScheduleSource:
        """What the Keras export writes for this schedule with ``params`` (checked), defaults filled in."""
        if self.keras is None:
            return KerasScheduleSource("none", differences=(
                f"the {self.name} schedule has no Keras translation: make_optimizer() raises NotImplementedError.",))
        return self.keras(self, {**self.defaults, **params})

    def check(self, params: dict[str, Any], where: str = "") -> dict[str, Any]:
        owner = f"the {self.name!r} schedule"
        checked = {key: check_param(self.bounds, key, value, owner, where) for key, value in params.items()}
        if self.name == "multistep":
            milestones = checked.get("milestones", self.defaults["milestones"])
            if list(milestones) != sorted(milestones):
                from tuner.errors import ConfigError

                prefix = f"{where}: " if where else ""
                raise ConfigError(f"{prefix}The 'milestones' of the 'multistep' schedule must increase. "
                                  f"Got {list(milestones)!r} instead.")
        return checked


@dataclass(frozen=True)
class ScheduleSource:
    """What the Python export writes for one schedule, its parameters' values written in.

    The lines go into the function ``build(model, steps_per_epoch, mode)`` of the exported script, where
    ``optimizer``, ``mode`` and the horizon are defined: ``steps_per_epoch`` (batches per epoch, at least 1)
    and ``total_steps`` (``max(1, EPOCHS * steps_per_epoch)``), known only when the script runs. Lines are
    written without the function's indentation.

    Attributes:
        interval: ``batch`` (``scheduler.step()`` after every batch), ``epoch`` (``scheduler.step()`` after
            every epoch) or ``plateau`` (``scheduler.step(metric)`` after every epoch).
        setup: lines run once, before the factor function (constants in batches: ``warmup_steps = ...``).
        factor: the body of ``lr_factor(step)``, the multiplier of the base lr after ``step`` steps: the same
            expressions as ``ScheduleInfo.factor``, so the same floats. The export wraps it in a ``LambdaLR``
            and holds ``step`` at the end of training, as ``build_scheduler`` does.
        scheduler: instead of ``factor``: lines that assign ``scheduler`` themselves (a torch scheduler).
    """

    interval: str
    setup: tuple[str, ...] = ()
    factor: tuple[str, ...] = ()
    scheduler: tuple[str, ...] = ()


@dataclass(frozen=True)
class KerasScheduleSource:
    """What the Keras export writes for one schedule, its parameters' values written in.

    Attributes:
        kind: ``factor``: the learning rate is ``lr * factor(step)`` of the optimizer's step counter, and the
            export writes ``python`` (the Python export's factor function: the same floats) into a
            ``keras.optimizers.schedules.LearningRateSchedule``; ``callback``: the learning rate is a float
            that ``callback`` changes between epochs; ``none``: Keras cannot do it (``differences`` says why).
        python: for ``factor``, the Python export's source of the factor.
        callback: for ``callback``, the lines of a ``keras.callbacks.Callback`` subclass named ``PlateauCallback``
            whose ``__init__(self, monitor, mode)`` takes the metric it watches and whether it is minimised
            (``"min"``) or maximised (``"max"``); it may read ``LEARNING_RATE``, the base rate.
        differences: what Keras does differently from torch, one sentence each (comments and CLI warnings).
    """

    kind: str
    python: ScheduleSource | None = None
    callback: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        wanted = {"factor": bool(self.python), "callback": bool(self.callback), "none": bool(self.differences)}
        if not wanted.get(self.kind, False):
            raise ValueError(f"KerasScheduleSource of kind {self.kind!r}: 'factor' gives python, 'callback' the "
                             f"callback lines, 'none' the differences. Got {self!r}.")


def _warmup(step: int, h: Horizon, warmup_fraction: float) -> tuple[float, float]:
    """Returns (warmup factor, progress in [0, 1] through the part after warmup)."""
    warmup_steps = int(round(warmup_fraction * h.total_steps))
    if step < warmup_steps:
        return (step + 1) / warmup_steps, 0.0
    rest = max(1, h.total_steps - warmup_steps)
    return 1.0, min(1.0, (step - warmup_steps) / rest)


def _constant(step: int, h: Horizon, warmup_fraction: float = 0.0) -> float:
    return _warmup(step, h, warmup_fraction)[0]


def _step(step: int, h: Horizon, step_size: int = 10, gamma: float = 0.1, warmup_fraction: float = 0.0) -> float:
    warm, _ = _warmup(step, h, warmup_fraction)
    return warm * gamma ** ((step // h.steps_per_epoch) // step_size)


def _multistep(step: int, h: Horizon, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1,
               warmup_fraction: float = 0.0) -> float:
    warm, _ = _warmup(step, h, warmup_fraction)
    passed = sum(step >= int(m * h.total_steps) for m in milestones)
    return warm * gamma**passed


def _exponential(step: int, h: Horizon, gamma: float = 0.95, warmup_fraction: float = 0.0) -> float:
    warm, _ = _warmup(step, h, warmup_fraction)
    return warm * gamma ** (step // h.steps_per_epoch)


def _cosine(step: int, h: Horizon, warmup_fraction: float = 0.0, min_lr_ratio: float = 0.0) -> float:
    warm, progress = _warmup(step, h, warmup_fraction)
    return warm * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _cosine_restarts(step: int, h: Horizon, t0_epochs: int = 10, t_mult: int = 1, min_lr_ratio: float = 0.0) -> float:
    position, length = step, t0_epochs * h.steps_per_epoch
    while position >= length:
        position -= length
        length *= t_mult
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * position / length))


def _linear(step: int, h: Horizon, warmup_fraction: float = 0.05, end_factor: float = 0.0) -> float:
    warm, progress = _warmup(step, h, warmup_fraction)
    return warm * (1 - (1 - end_factor) * progress)


def _onecycle(step: int, h: Horizon, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4) -> float:
    start, end = 1 / div_factor, 1 / (div_factor * final_div_factor)
    peak = max(1, int(pct_start * h.total_steps))
    if step < peak:
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * step / peak))
    progress = min(1.0, (step - peak) / max(1, h.total_steps - peak))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


def _polynomial(step: int, h: Horizon, power: float = 1.0, end_factor: float = 0.0,
                warmup_fraction: float = 0.0) -> float:
    warm, progress = _warmup(step, h, warmup_fraction)
    return warm * (end_factor + (1 - end_factor) * (1 - progress) ** power)


# -- what the Python export writes for each schedule: the factor functions above, constants written in ---
# Each expression is evaluated as above and in the same order, so the exported factors are the same floats;
# terms like ``0.0 + x`` and ``1.0 * x`` are left out, which changes no value.
def _warmup_setup(p: dict[str, Any]) -> tuple[str, ...]:
    if p.get("warmup_fraction", 0.0) > 0.0:
        return (f"warmup_steps = round({literal(p['warmup_fraction'])} * total_steps)  # linear warmup, in batches",)
    return ()


def _warm_times(p: dict[str, Any], expr: str, setup: tuple[str, ...] = ()) -> ScheduleSource:
    """``warm * expr`` as ``_warmup`` gives ``warm``, for an ``expr`` that does not use the progress."""
    if p.get("warmup_fraction", 0.0) > 0.0:
        body = ("warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0", f"return warm * {expr}")
    else:
        body = (f"return {expr}",)
    return ScheduleSource("batch", setup=_warmup_setup(p) + setup, factor=body)


def _warm_progress(p: dict[str, Any], expr: str) -> ScheduleSource:
    """``warm * (expr)`` for an ``expr`` of ``progress``, which runs from 0 to 1 through the part after warmup."""
    if p.get("warmup_fraction", 0.0) > 0.0:
        body = (
            "if step < warmup_steps:",
            "    warm, progress = (step + 1) / warmup_steps, 0.0",
            "else:",
            "    warm = 1.0",
            "    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))",
            f"return warm * ({expr})",
        )
    else:
        body = ("progress = min(1.0, step / total_steps)  # 0 -> 1 over training", f"return {expr}")
    return ScheduleSource("batch", setup=_warmup_setup(p), factor=body)


def _cosine_expr(min_lr_ratio: float, angle: str) -> str:
    """``min + (1 - min) * 0.5 * (1 + cos(angle))``; with min = 0 the same value written shorter."""
    half = f"0.5 * (1 + math.cos({angle}))"
    if min_lr_ratio == 0.0:
        return half
    m = literal(min_lr_ratio)
    return f"{m} + (1 - {m}) * {half}"


def _constant_source(p: dict[str, Any]) -> ScheduleSource:
    if p["warmup_fraction"] > 0.0:
        return ScheduleSource("batch", setup=_warmup_setup(p),
                              factor=("return (step + 1) / warmup_steps if step < warmup_steps else 1.0",))
    return ScheduleSource("batch", factor=("return 1.0",))


def _step_source(p: dict[str, Any]) -> ScheduleSource:
    size = p["step_size"]
    epochs = "step // steps_per_epoch" if size == 1 else f"(step // steps_per_epoch) // {literal(size)}"
    return _warm_times(p, f"{literal(p['gamma'])} ** ({epochs})")


def _multistep_source(p: dict[str, Any]) -> ScheduleSource:
    milestones = ", ".join(f"int({literal(m)} * total_steps)" for m in p["milestones"])
    return _warm_times(p, f"{literal(p['gamma'])} ** sum(step >= m for m in milestones)",
                       setup=(f"milestones = [{milestones}]  # in batches",))


def _exponential_source(p: dict[str, Any]) -> ScheduleSource:
    return _warm_times(p, f"{literal(p['gamma'])} ** (step // steps_per_epoch)")


def _cosine_source(p: dict[str, Any]) -> ScheduleSource:
    return _warm_progress(p, _cosine_expr(p["min_lr_ratio"], "math.pi * progress"))


def _cosine_restarts_source(p: dict[str, Any]) -> ScheduleSource:
    setup = (f"cycle = {literal(p['t0_epochs'])} * steps_per_epoch  # the first cycle, in batches",)
    if p["t_mult"] == 1:
        return ScheduleSource("batch", setup=setup, factor=(
            f"return {_cosine_expr(p['min_lr_ratio'], 'math.pi * (step % cycle) / cycle')}",))
    return ScheduleSource("batch", setup=setup, factor=(
        "position, length = step, cycle",
        f"while position >= length:  # every cycle is {literal(p['t_mult'])} times longer than the last",
        "    position -= length",
        f"    length *= {literal(p['t_mult'])}",
        f"return {_cosine_expr(p['min_lr_ratio'], 'math.pi * position / length')}",
    ))


def _linear_source(p: dict[str, Any]) -> ScheduleSource:
    end = p["end_factor"]
    return _warm_progress(p, "1 - progress" if end == 0.0 else f"1 - (1 - {literal(end)}) * progress")


def _onecycle_source(p: dict[str, Any]) -> ScheduleSource:
    div, final = literal(p["div_factor"]), literal(p["final_div_factor"])
    return ScheduleSource("batch", setup=(
        f"peak = max(1, int({literal(p['pct_start'])} * total_steps))  # the batch at which the lr peaks",
        f"start, end = 1 / {div}, 1 / ({div} * {final})  # the first and the last factor",
    ), factor=(
        "if step < peak:  # rise from start to 1",
        "    return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * step / peak))",
        "progress = min(1.0, (step - peak) / max(1, total_steps - peak))  # then anneal from 1 to end",
        "return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))",
    ))


def _polynomial_source(p: dict[str, Any]) -> ScheduleSource:
    end, decay = p["end_factor"], f"(1 - progress) ** {literal(p['power'])}"
    return _warm_progress(p, decay if end == 0.0 else f"{literal(end)} + (1 - {literal(end)}) * {decay}")


def _plateau_source(p: dict[str, Any]) -> ScheduleSource:
    args = ["optimizer", "mode=mode", *(f"{key}={literal(value)}" for key, value in p.items())]
    return ScheduleSource("plateau", scheduler=tuple(
        call("", "scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau", args, width=WIDTH - len(INDENT))))


# -- what the Keras export writes for each schedule ---------------------------------------------------------------
def _keras_factor(info: ScheduleInfo, p: dict[str, Any]) -> KerasScheduleSource:
    """A function of the step: the Keras export computes the same factor, from the Python export's source, once
    per batch into a table that the optimizer's step counter indexes."""
    return KerasScheduleSource("factor", python=info.python_source(p))


def _keras_plateau(info: ScheduleInfo, p: dict[str, Any]) -> KerasScheduleSource:
    """torch's ReduceLROnPlateau (tuner's ``plateau``) as a Keras callback that does what it does, step for step.

    Not ``keras.callbacks.ReduceLROnPlateau``: that lowers the rate after ``patience`` epochs without improvement
    where torch waits one more, its ``min_delta`` is absolute where torch's ``threshold`` is relative, and it
    keeps lowering a rate that torch stops lowering once a change would be under 1e-8. With ``patience + 1``,
    ``min_delta=0`` and a threshold of 0 it would match torch but for that last rule.
    """
    factor, patience, threshold = literal(p["factor"]), literal(p["patience"]), literal(p["threshold"])
    summary = textwrap.wrap(
        f'"""Multiplies the learning rate by {factor} once the monitored metric has gone more than {patience} '
        f"epochs without improving, as torch's ReduceLROnPlateau(factor={factor}, patience={patience}, "
        f"threshold={threshold}) does in tuner's plateau schedule.", WIDTH - len(INDENT), break_on_hyphens=False)
    return KerasScheduleSource("callback", callback=(
        "class PlateauCallback(keras.callbacks.Callback):",
        *(INDENT + line for line in summary),
        "",
        "    Not keras.callbacks.ReduceLROnPlateau, which lowers the rate after `patience` epochs without",
        "    improvement where torch waits one more, takes an absolute min_delta where torch's threshold is",
        "    relative (a new best must beat the old one by threshold times itself), and keeps lowering a rate",
        "    that torch stops lowering once a change would be under 1e-8. monitor: a metric fit() reports every",
        '    epoch (val_loss needs validation data); mode: "min" when lower is better, "max" when higher is.',
        '    """',
        "",
        '    def __init__(self, monitor="val_loss", mode="min"):',
        "        super().__init__()",
        '        if mode not in ("min", "max"):',
        "            raise ValueError(f'mode is \"min\" or \"max\". Got {mode!r}.')",
        "        self.monitor, self.mode = monitor, mode",
        '        self.best = math.inf if mode == "min" else -math.inf',
        "        self.bad_epochs = 0",
        "        self.lr = LEARNING_RATE  # kept in double precision, as torch keeps it",
        "",
        "    def on_epoch_end(self, epoch, logs=None):",
        "        logs = logs or {}",
        "        if self.monitor not in logs:",
        '            raise ValueError(f"PlateauCallback watches {self.monitor!r}, which fit() did not report "',
        '                             f"(it reported {sorted(logs)}): pass validation data to fit(), or another "',
        "                             \"monitor.\")",
        "        current = float(logs[self.monitor])",
        '        if self.mode == "min":',
        f"            better = current < self.best * (1 - {threshold})",
        "        else:",
        f"            better = current > self.best * (1 + {threshold})",
        "        if better:",
        "            self.best, self.bad_epochs = current, 0",
        "        else:",
        "            self.bad_epochs += 1",
        f"        if self.bad_epochs > {patience}:",
        f"            lr = self.lr * {factor}",
        "            if self.lr - lr > 1e-8:  # as torch: a change of 1e-8 or less is not made",
        "                self.lr = lr",
        "                self.model.optimizer.learning_rate = lr",
        "            self.bad_epochs = 0",
    ))


_WARMUP = Bound("float", 0.0, 0.5)
_REGISTRY: Registry[ScheduleInfo] = Registry("schedule")


def _register(name: str, factor: FactorFn | None, bounds: dict[str, Bound], description: str,
              defaults: dict[str, Any] | None = None, interval: str = "batch", *,
              source: Callable[[dict[str, Any]], ScheduleSource],
              keras: Callable[[ScheduleInfo, dict[str, Any]], KerasScheduleSource] | None = None) -> None:
    """Registers a schedule with what the Python export writes for it (``source``) and what the Keras export
    writes (``keras``; None: it has no Keras translation), both checked here."""
    if defaults is None:
        defaults = {k: v.default for k, v in _signature_defaults(factor).items()}
    info = ScheduleInfo(name, defaults, bounds, factor, interval, description, source, keras)
    written = info.python_source({})
    expected = "plateau" if factor is None else interval
    if written.interval != expected or bool(written.factor) == bool(written.scheduler):
        raise ValueError(f"schedule {name!r}: its source must step at interval {expected!r} and give either "
                         f"a factor body or a scheduler. Got {written!r} instead.")
    in_keras = info.keras_source({}).kind
    if in_keras != "none" and in_keras != ("callback" if factor is None else "factor"):
        raise ValueError(f"schedule {name!r}: a function of the step is a 'factor' in Keras, a schedule that "
                         f"watches a metric a 'callback'. Got {in_keras!r}.")
    _REGISTRY.register(name, info)


def _signature_defaults(fn: FactorFn | None) -> dict[str, Any]:
    import inspect

    params = list(inspect.signature(fn).parameters.values())[2:] if fn else []
    return {p.name: p for p in params}


_register("constant", _constant, {"warmup_fraction": _WARMUP}, "constant learning rate (optional warmup)",
          source=_constant_source, keras=_keras_factor)
_register("step", _step, {"step_size": POSITIVE_INT, "gamma": FRACTION_POSITIVE, "warmup_fraction": _WARMUP},
          "multiply by gamma every step_size epochs", source=_step_source, keras=_keras_factor)
_register("multistep", _multistep,
          {"milestones": Bound("pair", 0.0, 1.0, low_open=True, high_open=True), "gamma": FRACTION_POSITIVE,
           "warmup_fraction": _WARMUP},
          "multiply by gamma at two milestones given as fractions of training", source=_multistep_source,
          keras=_keras_factor)
_register("exponential", _exponential, {"gamma": FRACTION_POSITIVE, "warmup_fraction": _WARMUP},
          "multiply by gamma every epoch", source=_exponential_source, keras=_keras_factor)
_register("cosine", _cosine, {"warmup_fraction": _WARMUP, "min_lr_ratio": UNIT_OPEN},
          "cosine decay to min_lr_ratio * lr (optional warmup)", source=_cosine_source, keras=_keras_factor)
_register("cosine_restarts", _cosine_restarts,
          {"t0_epochs": POSITIVE_INT, "t_mult": POSITIVE_INT, "min_lr_ratio": UNIT_OPEN},
          "cosine decay restarted every t0_epochs, each cycle t_mult times longer (SGDR)",
          source=_cosine_restarts_source, keras=_keras_factor)
_register("linear", _linear, {"warmup_fraction": _WARMUP, "end_factor": UNIT},
          "linear warmup, then linear decay to end_factor * lr", source=_linear_source, keras=_keras_factor)
_register("warmup_cosine", _cosine, {"warmup_fraction": _WARMUP, "min_lr_ratio": UNIT_OPEN},
          "linear warmup, then cosine decay", defaults={"warmup_fraction": 0.05, "min_lr_ratio": 0.0},
          source=_cosine_source, keras=_keras_factor)
_register("onecycle", _onecycle,
          {"pct_start": Bound("float", 0.0, 1.0, low_open=True, high_open=True),
           "div_factor": Bound("float", 1.0, math.inf), "final_div_factor": Bound("float", 1.0, math.inf)},
          "one-cycle: rise from lr/div_factor to lr, then anneal far below it", source=_onecycle_source,
          keras=_keras_factor)
_register("polynomial", _polynomial, {"power": POSITIVE, "end_factor": UNIT, "warmup_fraction": _WARMUP},
          "polynomial decay to end_factor * lr", source=_polynomial_source, keras=_keras_factor)
_register("plateau", None,
          {"factor": Bound("float", 0.0, 1.0, low_open=True, high_open=True), "patience": NON_NEGATIVE_INT,
           "threshold": NON_NEGATIVE},
          "multiply by factor when the validation metric stops improving for patience epochs",
          defaults={"factor": 0.1, "patience": 5, "threshold": 1e-4}, interval="epoch", source=_plateau_source,
          keras=_keras_plateau)


def get_schedule(name: str) -> ScheduleInfo:
    """Returns the registry entry for ``name``; unknown names raise a ConfigError listing the valid ones."""
    return _REGISTRY.get(name)


def list_schedules() -> list[str]:
    return _REGISTRY.names()


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    params: dict[str, Any],
    *,
    epochs: int,
    steps_per_epoch: int = 1,
    mode: str = "max",
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Builds the torch scheduler.

    Step it after every batch, except ``plateau`` (``get_schedule(name).interval == "epoch"``), which is
    stepped once per epoch with the validation metric. With ``steps_per_epoch=1`` every schedule is
    per-epoch.

    The schedule spans ``epochs * steps_per_epoch`` calls of ``step()``. Stepped past that, it holds the
    value it reached at the end and warns once (``RuntimeWarning``): a loop that steps every batch while
    ``steps_per_epoch`` says otherwise would otherwise run the whole schedule in the first few batches. The
    value held is the one the last planned batch trained at (``step(total - 1)``): a schedule that restarts or
    decays once more at ``total`` does not do so for batches past the plan.
    """
    import warnings

    import torch

    info = get_schedule(name)
    kwargs = {**info.defaults, **params}
    if info.factor is None:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, **kwargs)
    h = Horizon(epochs, max(1, steps_per_epoch))
    fn = functools.partial(info.factor, h=h, **kwargs)
    total, warned = h.total_steps, []
    # Optimizer steps, counted to tell a scheduler stepped once per epoch (steps_per_epoch optimizer steps
    # between two of its steps), which would cover 1/steps_per_epoch of its plan: [steps, at the last call].
    updates = [0, 0]

    def counted(*_: Any) -> None:
        updates[0] += 1

    optimizer.register_step_post_hook(counted)

    def factor(step: int) -> float:
        # A plain function, not a callable object: LambdaLR.state_dict() stores nothing for it, so
        # checkpoints stay loadable with torch.load(weights_only=True).
        gap, updates[1] = updates[0] - updates[1], updates[0]
        if step > 0 and h.steps_per_epoch > 1 and gap >= h.steps_per_epoch and "rare" not in warned:
            warned.append("rare")
            warnings.warn(
                f"The {name!r} learning-rate schedule was stepped once for {gap} optimizer steps: it plans "
                f"steps_per_epoch={h.steps_per_epoch} steps an epoch, so stepped once per epoch it would cover "
                f"1/{h.steps_per_epoch} of its course. Call scheduler.step() after every optimizer.step().",
                RuntimeWarning, stacklevel=_callers_level())
        if step >= total:  # past the last batch trained: the rate that batch trained at, not one more change
            if step > total and "often" not in warned:
                warned.append("often")
                warnings.warn(
                    f"The {name!r} learning-rate schedule was stepped more often than the {total} steps it was "
                    f"planned for (epochs={h.epochs} x steps_per_epoch={h.steps_per_epoch}); it holds its "
                    f"last batch's value from here on. Step it once per batch and pass steps_per_epoch=len(loader), "
                    f"the number of batches in an epoch.", RuntimeWarning, stacklevel=_callers_level())
            step = total - 1
        return fn(step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _callers_level() -> int:
    """The ``stacklevel`` of the first frame outside tuner and torch, from the caller of this function's
    caller: a warning about the schedule points at the line of the user's loop that stepped it (through
    ``setup.step`` or ``scheduler.step()``), not into torch's scheduler."""
    import sys
    from pathlib import Path

    import torch

    inside = (str(Path(torch.__file__).parent), str(Path(__file__).parents[1]))
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def lr_factors(name: str, params: dict[str, Any], *, epochs: int, steps_per_epoch: int) -> list[float]:
    """The multiplier of the base learning rate at every batch, for plotting (``plateau``: all 1.0)."""
    info = get_schedule(name)
    h = Horizon(epochs, max(1, steps_per_epoch))
    if info.factor is None:
        return [1.0] * h.total_steps
    kwargs = {**info.defaults, **params}
    return [info.factor(step, h, **kwargs) for step in range(h.total_steps)]
