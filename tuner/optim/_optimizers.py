"""The optimizer registry: one frozen entry per name, with defaults and capability flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tuner._registry import Registry
from tuner._source import INDENT, WIDTH, call, literal
from tuner._validate import (
    BOOL,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    UNIT,
    UNIT_OPEN,
    Bound,
    check_param,
)

__all__ = ["OptimizerInfo", "get_optimizer", "list_optimizers", "build_optimizer", "split_decay_params"]


@dataclass(frozen=True)
class OptimizerInfo:
    """How to build one optimizer and which hyperparameters it takes.

    Attributes:
        name: registry name (``adamw``).
        cls: the ``torch.optim`` class.
        defaults: tunable hyperparameters and their default values (``lr`` included).
        bounds: valid values of every tunable hyperparameter.
        fixed: keyword arguments always passed and never tuned (``nesterov=True``).
        family: ``sgd``, ``adam``, ``adaptive`` or ``lbfgs``; used to group results.
        decoupled_weight_decay: weight decay is applied to the weights directly (AdamW) rather than
            added to the gradient.
        supports_weight_decay: the torch class takes ``weight_decay``; when it does not (L-BFGS),
            L2 is added to the loss as a penalty so that weight decay means the same everywhere.
        needs_closure: ``step`` must be given a closure that re-evaluates the loss.
        package: the pip package the class comes from when it is not ``torch.optim`` (installed with
            the ``tuning-free`` extra); None for torch's own.
        train_eval: the optimizer keeps two weight sequences and must be told ``optimizer.train()`` before
            training steps and ``optimizer.eval()`` before evaluating (schedule-free methods).
        tuning_free: the optimizer is meant to work at its defaults (the report compares the tuned config
            with it).
    """

    name: str
    cls: type[torch.optim.Optimizer]
    defaults: dict[str, Any]
    bounds: dict[str, Bound]
    fixed: dict[str, Any] = field(default_factory=dict)
    family: str = "adam"
    decoupled_weight_decay: bool = False
    supports_weight_decay: bool = True
    needs_closure: bool = False
    description: str = ""
    package: str | None = None
    train_eval: bool = False
    tuning_free: bool = False

    @property
    def available(self) -> bool:
        """Whether the class can be built here (its package is installed)."""
        return not getattr(self.cls, "missing", False)

    @property
    def has_momentum(self) -> bool:
        return "momentum" in self.defaults

    @property
    def has_betas(self) -> bool:
        return "betas" in self.defaults

    @property
    def has_eps(self) -> bool:
        return "eps" in self.defaults

    def check(self, params: dict[str, Any], where: str = "") -> dict[str, Any]:
        owner = f"the {self.name!r} optimizer"
        return {key: check_param(self.bounds, key, value, owner, where) for key, value in params.items()}

    def kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of ``cls`` for ``params`` (``lr`` included): defaults, then params, then fixed."""
        return {**self.defaults, **params, **self.fixed}

    def python_source(self, params: dict[str, Any], weight_decay: float) -> list[str]:
        """What the Python export writes to build this optimizer as ``build_optimizer`` does.

        Lines for a function body where ``model`` is defined, without its indentation, that assign
        ``optimizer``: the parameter groups (weight decay on the weights only) and the ``torch.optim`` call
        with ``params`` (``lr`` included) written in. ``weight_decay``: what the optimizer itself applies
        (0.0 for one that takes none: the export adds that L2 term to the loss instead).
        """
        if self.package is None and getattr(torch.optim, self.cls.__name__, None) is not self.cls:
            raise NotImplementedError(f"The Python export writes torch.optim classes only; the {self.name!r} "
                                      f"optimizer is {self.cls.__module__}.{self.cls.__qualname__}.")
        width = WIDTH - len(INDENT)
        args = [f"{key}={literal(value)}" for key, value in self.kwargs(params).items()]
        construct = (f"optimizer = torch.optim.{self.cls.__name__}" if self.package is None
                     else f"optimizer = {self.package}.{self.cls.__name__}")
        prefix = [f"import {self.package}  # pip install {self.package}"] if self.package else []
        if not self.supports_weight_decay:
            return [*prefix, "params = [p for p in model.parameters() if p.requires_grad]",
                    *call("", construct, ["params", *args], width)]
        lines = [
            *prefix,
            "# Weights (dimension >= 2) in one list; biases and norm-layer scales (1-d) in the other.",
            "decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]",
            "no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]",
        ]
        if weight_decay == 0.0:
            lines += [
                "# No weight decay: a single group, weights first.",
                'groups = [{"params": decay + no_decay, "weight_decay": 0.0}]',
            ]
        else:
            how = ("decoupled: it shrinks the weights directly" if self.decoupled_weight_decay
                   else "coupled: weight_decay * w is added to the gradient (L2)")
            lines += [
                f"# Weight decay ({how}) on the weights only.",
                f'groups = [{{"params": decay, "weight_decay": {literal(weight_decay)}}},',
                '          {"params": no_decay, "weight_decay": 0.0}]',
                'groups = [group for group in groups if group["params"]]',
            ]
        return lines + call("", construct, ["groups", *args], width)


_LR = {"lr": POSITIVE}
_BETAS = Bound("pair", 0.0, 1.0, high_open=True)
_ADAM_BOUNDS = {**_LR, "betas": _BETAS, "eps": POSITIVE}
_ADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8}

_REGISTRY: Registry[OptimizerInfo] = Registry("optimizer")


def _register(info: OptimizerInfo) -> None:
    _REGISTRY.register(info.name, info)


_register(OptimizerInfo(
    "sgd", torch.optim.SGD, {"lr": 0.1}, dict(_LR), fixed={"momentum": 0.0}, family="sgd",
    description="plain stochastic gradient descent",
))
_register(OptimizerInfo(
    "momentum", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, {**_LR, "momentum": UNIT_OPEN},
    family="sgd", description="SGD with heavy-ball momentum",
))
_register(OptimizerInfo(
    "nesterov", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9},
    {**_LR, "momentum": Bound("float", 0.0, 1.0, low_open=True, high_open=True)},
    fixed={"nesterov": True}, family="sgd", description="SGD with Nesterov momentum",
))
_register(OptimizerInfo(
    "adagrad", torch.optim.Adagrad, {"lr": 0.01, "eps": 1e-10, "lr_decay": 0.0},
    {**_LR, "eps": POSITIVE, "lr_decay": NON_NEGATIVE, "initial_accumulator_value": NON_NEGATIVE},
    family="adaptive", description="per-coordinate learning rates from accumulated squared gradients",
))
_register(OptimizerInfo(
    "adadelta", torch.optim.Adadelta, {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
    {**_LR, "rho": UNIT, "eps": POSITIVE},
    family="adaptive", description="Adagrad with a decaying window of squared gradients and updates",
))
_register(OptimizerInfo(
    "rmsprop", torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0},
    {**_LR, "alpha": UNIT, "eps": POSITIVE, "momentum": UNIT_OPEN, "centered": BOOL},
    family="adaptive", description="divides by a running average of squared gradients",
))
_register(OptimizerInfo(
    "adam", torch.optim.Adam, {"lr": 1e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS, amsgrad=BOOL),
    description="Adam; weight decay is L2 added to the gradient",
))
_register(OptimizerInfo(
    "adamw", torch.optim.AdamW, {"lr": 1e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS, amsgrad=BOOL),
    decoupled_weight_decay=True, description="Adam with decoupled weight decay",
))
_register(OptimizerInfo(
    "nadam", torch.optim.NAdam, {"lr": 2e-3, **_ADAM_DEFAULTS, "momentum_decay": 4e-3},
    dict(_ADAM_BOUNDS, momentum_decay=NON_NEGATIVE),
    description="Adam with Nesterov momentum",
))
_register(OptimizerInfo(
    "nadamw", torch.optim.NAdam, {"lr": 2e-3, **_ADAM_DEFAULTS, "momentum_decay": 4e-3},
    dict(_ADAM_BOUNDS, momentum_decay=NON_NEGATIVE), fixed={"decoupled_weight_decay": True},
    decoupled_weight_decay=True, description="NAdam with decoupled weight decay (AlgoPerf's NAdamW baseline)",
))
_register(OptimizerInfo(
    "radam", torch.optim.RAdam, {"lr": 1e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS),
    description="Adam with a rectified variance (built-in warmup)",
))
_register(OptimizerInfo(
    "adamax", torch.optim.Adamax, {"lr": 2e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS),
    description="Adam with the infinity norm",
))
_register(OptimizerInfo(
    "lbfgs", torch.optim.LBFGS, {"lr": 1.0, "max_iter": 4, "history_size": 10, "line_search_fn": None},
    {**_LR, "max_iter": POSITIVE_INT, "history_size": POSITIVE_INT,
     "line_search_fn": Bound("choice", choices=(None, "strong_wolfe"))},
    family="lbfgs", supports_weight_decay=False, needs_closure=True,
    description="limited-memory BFGS on mini-batches; weight decay becomes an L2 penalty",
))


def _optional(package: str, name: str) -> type[torch.optim.Optimizer]:
    """The class ``package.name``, or where the package is missing a stand-in that says how to install it."""
    import importlib

    try:
        return getattr(importlib.import_module(package), name)
    except ImportError:
        pass

    class Missing(torch.optim.Optimizer):
        missing = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            from tuner.errors import ConfigError

            raise ConfigError(f"The {name} optimizer needs the {package!r} package: pip install {package} (or "
                              f"install tuner with its tuning-free extra: pip install -e '.[tuning-free]').")

    Missing.__name__ = Missing.__qualname__ = name
    return Missing


# Tuning-free methods, from their own packages (the `tuning-free` extra): Prodigy estimates the step size as it
# trains (lr is a multiplier, 1 by default; Mishchenko & Defazio 2024), schedule-free AdamW needs no decay
# schedule (Defazio et al. 2024).
_register(OptimizerInfo(
    "prodigy", _optional("prodigyopt", "Prodigy"),
    {"lr": 1.0, **_ADAM_DEFAULTS, "d0": 1e-6, "d_coef": 1.0, "use_bias_correction": False, "safeguard_warmup": False},
    dict(_ADAM_BOUNDS, d0=POSITIVE, d_coef=POSITIVE, use_bias_correction=BOOL, safeguard_warmup=BOOL),
    fixed={"decouple": True}, decoupled_weight_decay=True, package="prodigyopt", tuning_free=True,
    description="Prodigy: Adam that learns its own step size (lr is a multiplier, 1 by default)",
))
_register(OptimizerInfo(
    "schedulefree_adamw", _optional("schedulefree", "AdamWScheduleFree"),
    {"lr": 0.0025, **_ADAM_DEFAULTS, "warmup_steps": 0, "weight_lr_power": 2.0},
    dict(_ADAM_BOUNDS, warmup_steps=Bound("int", 0, float("inf")), weight_lr_power=NON_NEGATIVE),
    decoupled_weight_decay=True, package="schedulefree", train_eval=True, tuning_free=True,
    description="schedule-free AdamW: no decay schedule needed (evaluates the averaged weights)",
))


def get_optimizer(name: str) -> OptimizerInfo:
    """Returns the registry entry for ``name``; unknown names raise a ConfigError listing the valid ones."""
    return _REGISTRY.get(name)


def list_optimizers() -> list[str]:
    return _REGISTRY.names()


def split_decay_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weights of dimension >= 2 are decayed; biases and norm-layer scales (1-d) are not."""
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    return decay, no_decay


def build_optimizer(
    name: str,
    model: nn.Module,
    params: dict[str, Any],
    weight_decay: float = 0.0,
    decay_bias_and_norm: bool = False,
) -> torch.optim.Optimizer:
    """Builds the optimizer with weight decay on the weights only (unless ``decay_bias_and_norm``)."""
    info = get_optimizer(name)
    kwargs = info.kwargs(params)
    if not info.supports_weight_decay:
        return info.cls([p for p in model.parameters() if p.requires_grad], **kwargs)
    decay, no_decay = split_decay_params(model)
    if decay_bias_and_norm or weight_decay == 0.0:
        groups = [{"params": decay + no_decay, "weight_decay": weight_decay}]
    else:
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return info.cls(groups, **kwargs)

