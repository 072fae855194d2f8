"""The learning-rate schedule registry.

Every schedule but ``plateau`` is a pure function ``factor(step)`` of the batch counter, wrapped in a
``LambdaLR`` that is stepped once per batch: per-epoch schedules (step, exponential, cosine restarts) are
written in epochs and turn into a staircase over batches. ``plateau`` watches the validation metric and is
stepped once per epoch. The same factor functions draw the schedule curve in reports.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tuner._registry import Registry
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

__all__ = ["ScheduleInfo", "get_schedule", "list_schedules", "build_scheduler", "lr_factors"]

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


_WARMUP = Bound("float", 0.0, 0.5)
_REGISTRY: Registry[ScheduleInfo] = Registry("schedule")


def _register(name: str, factor: FactorFn | None, bounds: dict[str, Bound], description: str,
              defaults: dict[str, Any] | None = None, interval: str = "batch") -> None:
    if defaults is None:
        defaults = {k: v.default for k, v in _signature_defaults(factor).items()}
    _REGISTRY.register(name, ScheduleInfo(name, defaults, bounds, factor, interval, description))


def _signature_defaults(fn: FactorFn | None) -> dict[str, Any]:
    import inspect

    params = list(inspect.signature(fn).parameters.values())[2:] if fn else []
    return {p.name: p for p in params}


_register("constant", _constant, {"warmup_fraction": _WARMUP}, "constant learning rate (optional warmup)")
_register("step", _step, {"step_size": POSITIVE_INT, "gamma": FRACTION_POSITIVE, "warmup_fraction": _WARMUP},
          "multiply by gamma every step_size epochs")
_register("multistep", _multistep,
          {"milestones": Bound("pair", 0.0, 1.0, low_open=True, high_open=True), "gamma": FRACTION_POSITIVE,
           "warmup_fraction": _WARMUP},
          "multiply by gamma at two milestones given as fractions of training")
_register("exponential", _exponential, {"gamma": FRACTION_POSITIVE, "warmup_fraction": _WARMUP},
          "multiply by gamma every epoch")
_register("cosine", _cosine, {"warmup_fraction": _WARMUP, "min_lr_ratio": UNIT_OPEN},
          "cosine decay to min_lr_ratio * lr (optional warmup)")
_register("cosine_restarts", _cosine_restarts,
          {"t0_epochs": POSITIVE_INT, "t_mult": POSITIVE_INT, "min_lr_ratio": UNIT_OPEN},
          "cosine decay restarted every t0_epochs, each cycle t_mult times longer (SGDR)")
_register("linear", _linear, {"warmup_fraction": _WARMUP, "end_factor": UNIT},
          "linear warmup, then linear decay to end_factor * lr")
_register("warmup_cosine", _cosine, {"warmup_fraction": _WARMUP, "min_lr_ratio": UNIT_OPEN},
          "linear warmup, then cosine decay", defaults={"warmup_fraction": 0.05, "min_lr_ratio": 0.0})
_register("onecycle", _onecycle,
          {"pct_start": Bound("float", 0.0, 1.0, low_open=True, high_open=True),
           "div_factor": Bound("float", 1.0, math.inf), "final_div_factor": Bound("float", 1.0, math.inf)},
          "one-cycle: rise from lr/div_factor to lr, then anneal far below it")
_register("polynomial", _polynomial, {"power": POSITIVE, "end_factor": UNIT, "warmup_fraction": _WARMUP},
          "polynomial decay to end_factor * lr")
_register("plateau", None,
          {"factor": Bound("float", 0.0, 1.0, low_open=True, high_open=True), "patience": NON_NEGATIVE_INT,
           "threshold": NON_NEGATIVE},
          "multiply by factor when the validation metric stops improving for patience epochs",
          defaults={"factor": 0.1, "patience": 5, "threshold": 1e-4}, interval="epoch")


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
    """
    info = get_schedule(name)
    kwargs = {**info.defaults, **params}
    if info.factor is None:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, **kwargs)
    fn = functools.partial(info.factor, h=Horizon(epochs, max(1, steps_per_epoch)), **kwargs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def lr_factors(name: str, params: dict[str, Any], *, epochs: int, steps_per_epoch: int) -> list[float]:
    """The multiplier of the base learning rate at every batch, for plotting (``plateau``: all 1.0)."""
    info = get_schedule(name)
    h = Horizon(epochs, max(1, steps_per_epoch))
    if info.factor is None:
        return [1.0] * h.total_steps
    kwargs = {**info.defaults, **params}
    return [info.factor(step, h, **kwargs) for step in range(h.total_steps)]
