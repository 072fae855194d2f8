"""The optimizer registry: one frozen entry per name, with defaults and capability flags.

Reading the registry (names, defaults, bounds: what a search space is checked against) does not import
PyTorch; an entry's class is imported when an optimizer is built.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

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
from tuner.errors import ConfigError, closest

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["OptimizerInfo", "KerasOptimizer", "get_optimizer", "list_optimizers", "build_optimizer",
           "split_decay_params"]


@dataclass(frozen=True)
class KerasOptimizer:
    """What the Keras export writes for one optimizer (``OptimizerInfo.keras_source``).

    Attributes:
        cls: the class in ``keras.optimizers`` (``"AdamW"``); None where Keras has no equivalent, the reason
            being the first of ``differences``.
        args: its keyword arguments but ``learning_rate``, ``weight_decay`` and ``global_clipnorm``: tuner's
            hyperparameters under Keras's names, translated where Keras's differ.
        weight_decay: how tuner's weight decay is done in Keras: ``"optimizer"``, Keras's own ``weight_decay``
            (the weights shrink by ``lr * weight_decay`` before each step: decoupled), or ``"penalty"``,
            ``weight_decay / 2 * sum(w^2)`` added to the loss, whose gradient is torch's coupled
            ``weight_decay * w``.
        lr_decay: the learning rate after ``t`` steps is divided by ``1 + t * lr_decay`` (Adagrad's); 0 for none.
        notes: why values are written as they are; comments beside the call.
        differences: what the Keras optimizer does differently from torch's, one sentence each: comments at the
            call and warnings of ``tuner study export --format keras``. Never a difference hidden.
    """

    cls: str | None
    args: dict[str, Any] = field(default_factory=dict)
    weight_decay: str = "penalty"
    lr_decay: float = 0.0
    notes: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.weight_decay not in ("optimizer", "penalty"):
            raise ValueError(f"KerasOptimizer.weight_decay is 'optimizer' or 'penalty'. Got {self.weight_decay!r}.")
        if self.cls is None and not self.differences:
            raise ValueError("A KerasOptimizer without a Keras class must say why in its differences.")


# ``keras(kwargs, lr_changes)``: kwargs are the torch keyword arguments but ``lr`` (defaults and fixed values
# filled in); lr_changes is whether the schedule changes the learning rate during training.
KerasTranslation = Callable[[dict[str, Any], bool], KerasOptimizer]


@dataclass(frozen=True)
class OptimizerInfo:
    """How to build one optimizer and which hyperparameters it takes.

    Attributes:
        name: registry name (``adamw``).
        target: the optimizer class, or its dotted path (``"torch.optim.SGD"``), imported on first use of
            ``cls``.
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
        lr_is_multiplier: ``lr`` scales a step size the optimizer works out itself (Adadelta, Prodigy; 1 by
            default), so ``lr_scaling: auto`` leaves it as it is at every batch size.
        keras: what the Keras export writes for it (``keras_source``); None: no translation is known.
    """

    name: str
    target: type[torch.optim.Optimizer] | str
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
    lr_is_multiplier: bool = False
    keras: KerasTranslation | None = None

    @cached_property
    def cls(self) -> type[torch.optim.Optimizer]:
        """The optimizer class (imported here for a dotted ``target``; a stand-in that says how to install
        the package where ``package`` is missing)."""
        if not isinstance(self.target, str):
            return self.target
        module, name = self.target.rsplit(".", 1)
        return _optional(module, name) if self.package else getattr(importlib.import_module(module), name)

    @property
    def available(self) -> bool:
        """Whether the class can be built here (its package is installed and imports)."""
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
        for key in params:
            if key not in self.bounds:
                try:
                    check_param(self.bounds, key, params[key], owner, where)
                except ConfigError as exc:
                    raise ConfigError(f"{exc}{self.misplaced(key, in_space=False)}") from None
        return {key: check_param(self.bounds, key, value, owner, where) for key, value in params.items()}

    def misplaced(self, key: str, in_space: bool, accepted: Any = None) -> str:
        """Where a hyperparameter this optimizer does not take belongs instead (a sentence to append to the
        error), or the closest name it does take (of ``accepted``: a space's keys differ from a config's)."""
        if key == "weight_decay" and not in_space:
            return (" In a train config, weight decay is regularization.weight_decay (a search space sets it per "
                    "optimizer).")
        if key in ("beta1", "beta2", "one_minus_beta1") and self.has_betas and not in_space:
            return (" A train config gives both as betas: [beta1, beta2] (a search space searches beta1, beta2 or "
                    "one_minus_beta1).")
        if key in ("momentum", "nesterov", "dampening", "one_minus_momentum") and not self.has_momentum:
            return (f" {self.name!r} takes no momentum: SGD with momentum is the 'momentum' optimizer, and with "
                    f"Nesterov momentum 'nesterov'.")
        aliases = {"learning_rate": "lr", "learningrate": "lr", "beta_1": "beta1", "beta_2": "beta2",
                   "epsilon": "eps", "wd": "weight_decay"}  # names other libraries use (Keras, papers)
        valid = self.bounds if accepted is None else accepted
        suggestion = aliases.get(key.lower()) if aliases.get(key.lower()) in valid else closest(key, valid)
        if suggestion is None:  # a misspelt name that belongs elsewhere (weight_decya): where that name goes
            elsewhere = aliases.get(key.lower()) or closest(key, ("weight_decay", "beta1", "beta2", "momentum",
                                                                  "nesterov", "dampening", "one_minus_momentum"))
            where = self.misplaced(elsewhere, in_space, accepted) if elsewhere and elsewhere != key else ""
            if where and not where.startswith(" Did you mean"):
                return f" Did you mean {elsewhere!r}?{where}"
        return f" Did you mean {suggestion!r}?" if suggestion else ""

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
        import torch

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

    def keras_source(self, params: dict[str, Any], *, lr_changes: bool) -> KerasOptimizer:
        """What the Keras export writes for this optimizer with ``params`` (``lr`` included, checked).

        ``lr_changes``: whether the schedule changes the learning rate during training (some differences
        between Keras's optimizers and torch's show only then).
        """
        if self.keras is None:
            return KerasOptimizer(None, differences=(
                f"the {self.name} optimizer has no Keras translation: make_optimizer() raises "
                f"NotImplementedError.",))
        kwargs = self.kwargs(params)
        kwargs.pop("lr")
        return self.keras(kwargs, lr_changes)


_LR = {"lr": POSITIVE}
_BETAS = Bound("pair", 0.0, 1.0, high_open=True)
_ADAM_BOUNDS = {**_LR, "betas": _BETAS, "eps": POSITIVE}
_ADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8}


# -- what the Keras export writes for each optimizer -----------------------------------------------------------
# tuner's values under Keras's names; where Keras's optimizer computes something differently from torch's,
# the translation says exactly what and when (``KerasOptimizer.differences``).
def _velocity_with_lr(cls: str, momentum: float, lr_changes: bool, update: str) -> tuple[str, ...]:
    """Keras's SGD and RMSprop keep their momentum buffer with the learning rate in it, torch's without: the same
    updates at a constant rate, not once the schedule changes it. ``update``: the two formulas."""
    if momentum == 0.0 or not lr_changes:
        return ()
    return (f"momentum with a changing learning rate: Keras's {cls} keeps the learning rate inside its momentum "
            f"buffer, torch outside ({update}). The updates are the same while the rate is constant, but after "
            f"the schedule changes it Keras's buffer still carries the earlier rates, for about 1 / (1 - momentum) "
            f"= {1 / (1 - momentum):.3g} steps.",)


def _eps_under_root(cls: str, eps: float) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """``epsilon=eps**2`` for Keras's Adagrad and RMSprop, which add it under the square root where torch adds
    it after: (args, notes, differences). eps**2 is rounded to 12 digits (1e-20, not 1.0000000000000001e-20),
    far below the float32 precision Keras computes in."""
    squared = float(f"{eps * eps:.12g}")
    note = ("epsilon = eps**2: Keras adds it under the square root, sqrt(s + epsilon), where torch adds eps after "
            "it, sqrt(s) + eps.")
    difference = (f"epsilon: Keras's {cls} divides by sqrt(s + epsilon), torch's by sqrt(s) + eps; written as "
                  f"epsilon = eps**2 = {literal(squared)}, the two agree where sqrt(s) is far from eps = "
                  f"{literal(eps)} (above or below it), and Keras's step is larger by a factor of at most sqrt(2) "
                  f"where sqrt(s) is close to eps.")
    return {"epsilon": squared}, (note,), (difference,)


def _epsilon_hat(cls: str, beta_2: float) -> str:
    """Keras's Adam and AdamW add epsilon before the second moment's bias correction, torch after it."""
    return (f"epsilon: Keras's {cls} adds it to sqrt(v) before the bias correction (Kingma & Ba's epsilon-hat), "
            f"torch to sqrt(v / (1 - beta_2**t)) after it: at step t Keras's epsilon acts as torch's eps / "
            f"sqrt(1 - beta_2**t), {1 / math.sqrt(1 - beta_2):.3g} x eps at the first step, tending to eps as "
            f"beta_2**t vanishes. The rest of the update is the same.")


def _no_keras(name: str, why: str, weight_decay: str = "penalty") -> KerasTranslation:
    def translate(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
        return KerasOptimizer(None, weight_decay=weight_decay, differences=(
            f"the {name} optimizer has no Keras equivalent: {why}; make_optimizer() raises NotImplementedError "
            f"(the other settings apply with any optimizer).",))
    return translate


def _keras_sgd(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
    momentum, nesterov = kwargs["momentum"], bool(kwargs.get("nesterov", False))
    if momentum == 0.0:
        return KerasOptimizer("SGD", {"momentum": 0.0}, weight_decay="optimizer", notes=(
            "For plain SGD, Keras's weight_decay (w -= lr * weight_decay * w before the step) is the same update "
            "as torch's (weight_decay * w added to the clipped gradient).",))
    if nesterov:
        update = "v = momentum * v - lr * g; w += momentum * v - lr * g, against b = momentum * b + g; " \
                 "w -= lr * (g + momentum * b)"
    else:
        update = "v = momentum * v - lr * g; w += v, against b = momentum * b + g; w -= lr * b"
    return KerasOptimizer("SGD", {"momentum": momentum, "nesterov": nesterov},
                          differences=_velocity_with_lr("SGD", momentum, lr_changes, update))


def _keras_adagrad(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
    args, notes, differences = _eps_under_root("Adagrad", kwargs["eps"])
    args = {"initial_accumulator_value": float(kwargs.get("initial_accumulator_value", 0.0)), **args}
    notes = ("initial_accumulator_value is written out: Keras's default is 0.1, torch's 0.", *notes)
    return KerasOptimizer("Adagrad", args, lr_decay=kwargs["lr_decay"], notes=notes, differences=differences)


def _keras_adadelta(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
    return KerasOptimizer("Adadelta", {"rho": kwargs["rho"], "epsilon": kwargs["eps"]})


def _keras_rmsprop(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
    args, notes, differences = _eps_under_root("RMSprop", kwargs["eps"])
    momentum = kwargs["momentum"]
    args = {"rho": kwargs["alpha"], "momentum": momentum, **args, "centered": bool(kwargs.get("centered", False))}
    update = "m = momentum * m + lr * g / d; w -= m, against b = momentum * b + g / d; w -= lr * b"
    differences += _velocity_with_lr("RMSprop", momentum, lr_changes, update)
    return KerasOptimizer("RMSprop", args, notes=("rho is torch's alpha.", *notes), differences=differences)


def _adam_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    beta_1, beta_2 = kwargs["betas"]
    return {"beta_1": beta_1, "beta_2": beta_2, "epsilon": kwargs["eps"]}


def _keras_adam(decoupled: bool) -> KerasTranslation:
    cls = "AdamW" if decoupled else "Adam"

    def translate(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
        args = {**_adam_args(kwargs), "amsgrad": bool(kwargs.get("amsgrad", False))}
        return KerasOptimizer(cls, args, weight_decay="optimizer" if decoupled else "penalty",
                              differences=(_epsilon_hat(cls, args["beta_2"]),))
    return translate


def _keras_nadam(decoupled: bool) -> KerasTranslation:
    def translate(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
        decay, beta_1 = kwargs["momentum_decay"], kwargs["betas"][0]
        differences: tuple[str, ...] = ()
        if decay != 1.0:
            differences = (
                f"momentum_decay: Keras's Nadam warms its momentum up as beta_1 * (1 - 0.5 * 0.96**t), which is "
                f"torch's NAdam with momentum_decay=1.0; tuner's momentum_decay={literal(decay)} gives beta_1 * "
                f"(1 - 0.5 * 0.96**({literal(decay)} * t)). At step 100: {beta_1 * (1 - 0.5 * 0.96**100):.3g} in "
                f"Keras, {beta_1 * (1 - 0.5 * 0.96 ** (decay * 100)):.3g} in torch.",)
        notes = ("Keras's weight_decay is decoupled, as torch's NAdam(decoupled_weight_decay=True).",) if decoupled \
            else ()
        return KerasOptimizer("Nadam", _adam_args(kwargs), weight_decay="optimizer" if decoupled else "penalty",
                              notes=notes, differences=differences)
    return translate


def _keras_adamax(kwargs: dict[str, Any], lr_changes: bool) -> KerasOptimizer:
    return KerasOptimizer("Adamax", _adam_args(kwargs), differences=(
        f"epsilon: torch's Adamax adds eps to |g| inside its running maximum, u = max(beta_2 * u, |g| + eps), and "
        f"divides by u; Keras's keeps u = max(beta_2 * u, |g|) and divides by u + epsilon. The first step is the "
        f"same; after it Keras's denominator is at least torch's and at most eps = {literal(kwargs['eps'])} "
        f"larger.",))


_REGISTRY: Registry[OptimizerInfo] = Registry("optimizer")


def _register(info: OptimizerInfo) -> None:
    _REGISTRY.register(info.name, info)


_register(OptimizerInfo(
    "sgd", "torch.optim.SGD", {"lr": 0.1}, dict(_LR), fixed={"momentum": 0.0}, family="sgd",
    description="plain stochastic gradient descent", keras=_keras_sgd,
))
_register(OptimizerInfo(
    "momentum", "torch.optim.SGD", {"lr": 0.1, "momentum": 0.9}, {**_LR, "momentum": UNIT_OPEN},
    family="sgd", description="SGD with heavy-ball momentum", keras=_keras_sgd,
))
_register(OptimizerInfo(
    "nesterov", "torch.optim.SGD", {"lr": 0.1, "momentum": 0.9},
    {**_LR, "momentum": Bound("float", 0.0, 1.0, low_open=True, high_open=True)},
    fixed={"nesterov": True}, family="sgd", description="SGD with Nesterov momentum", keras=_keras_sgd,
))
_register(OptimizerInfo(
    "adagrad", "torch.optim.Adagrad", {"lr": 0.01, "eps": 1e-10, "lr_decay": 0.0},
    {**_LR, "eps": POSITIVE, "lr_decay": NON_NEGATIVE, "initial_accumulator_value": NON_NEGATIVE},
    family="adaptive", description="per-coordinate learning rates from accumulated squared gradients",
    keras=_keras_adagrad,
))
_register(OptimizerInfo(
    "adadelta", "torch.optim.Adadelta", {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
    {**_LR, "rho": UNIT, "eps": POSITIVE},
    family="adaptive", description="Adagrad with a decaying window of squared gradients and updates",
    lr_is_multiplier=True,
    keras=_keras_adadelta,
))
_register(OptimizerInfo(
    "rmsprop", "torch.optim.RMSprop", {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0},
    {**_LR, "alpha": UNIT, "eps": POSITIVE, "momentum": UNIT_OPEN, "centered": BOOL},
    family="adaptive", description="divides by a running average of squared gradients", keras=_keras_rmsprop,
))
_register(OptimizerInfo(
    "adam", "torch.optim.Adam", {"lr": 1e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS, amsgrad=BOOL),
    description="Adam; weight decay is L2 added to the gradient", keras=_keras_adam(decoupled=False),
))
_register(OptimizerInfo(
    "adamw", "torch.optim.AdamW", {"lr": 1e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS, amsgrad=BOOL),
    decoupled_weight_decay=True, description="Adam with decoupled weight decay", keras=_keras_adam(decoupled=True),
))
_register(OptimizerInfo(
    "nadam", "torch.optim.NAdam", {"lr": 2e-3, **_ADAM_DEFAULTS, "momentum_decay": 4e-3},
    dict(_ADAM_BOUNDS, momentum_decay=NON_NEGATIVE),
    description="Adam with Nesterov momentum", keras=_keras_nadam(decoupled=False),
))
_register(OptimizerInfo(
    "nadamw", "torch.optim.NAdam", {"lr": 2e-3, **_ADAM_DEFAULTS, "momentum_decay": 4e-3},
    dict(_ADAM_BOUNDS, momentum_decay=NON_NEGATIVE), fixed={"decoupled_weight_decay": True},
    decoupled_weight_decay=True, description="NAdam with decoupled weight decay (AlgoPerf's NAdamW baseline)",
    keras=_keras_nadam(decoupled=True),
))
_register(OptimizerInfo(
    "radam", "torch.optim.RAdam", {"lr": 1e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS),
    description="Adam with a rectified variance (built-in warmup)",
    keras=_no_keras("radam", "Keras has no RAdam (Adam with a rectified variance)"),
))
_register(OptimizerInfo(
    "adamax", "torch.optim.Adamax", {"lr": 2e-3, **_ADAM_DEFAULTS}, dict(_ADAM_BOUNDS),
    description="Adam with the infinity norm", keras=_keras_adamax,
))
_register(OptimizerInfo(
    "lbfgs", "torch.optim.LBFGS", {"lr": 1.0, "max_iter": 4, "history_size": 10, "line_search_fn": None},
    {**_LR, "max_iter": POSITIVE_INT, "history_size": POSITIVE_INT,
     "line_search_fn": Bound("choice", choices=(None, "strong_wolfe"))},
    family="lbfgs", supports_weight_decay=False, needs_closure=True,
    description="limited-memory BFGS on mini-batches; weight decay becomes an L2 penalty",
    keras=_no_keras("lbfgs", "Keras has no L-BFGS, whose step re-evaluates the loss several times through a "
                             "closure, which fit()'s one-gradient training step has no place for"),
))


def _optional(package: str, name: str) -> type[torch.optim.Optimizer]:
    """The class ``package.name``, or where the package is missing a stand-in that says how to install it."""
    import torch

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
    "prodigy", "prodigyopt.Prodigy",
    {"lr": 1.0, **_ADAM_DEFAULTS, "d0": 1e-6, "d_coef": 1.0, "use_bias_correction": False, "safeguard_warmup": False},
    dict(_ADAM_BOUNDS, d0=POSITIVE, d_coef=POSITIVE, use_bias_correction=BOOL, safeguard_warmup=BOOL),
    fixed={"decouple": True}, decoupled_weight_decay=True, package="prodigyopt", tuning_free=True,
    description="Prodigy: Adam that learns its own step size (lr is a multiplier, 1 by default)",
    lr_is_multiplier=True,
    keras=_no_keras("prodigy", "Keras has no Prodigy (Adam that learns its own step size)", "optimizer"),
))
_register(OptimizerInfo(
    "schedulefree_adamw", "schedulefree.AdamWScheduleFree",
    {"lr": 0.0025, **_ADAM_DEFAULTS, "warmup_steps": 0, "weight_lr_power": 2.0},
    dict(_ADAM_BOUNDS, warmup_steps=Bound("int", 0, float("inf")), weight_lr_power=NON_NEGATIVE),
    decoupled_weight_decay=True, package="schedulefree", train_eval=True, tuning_free=True,
    description="schedule-free AdamW: no decay schedule needed (evaluates the averaged weights)",
    keras=_no_keras("schedulefree_adamw", "keras.optimizers.ScheduleFreeAdamW is another algorithm than the "
                    "schedulefree package's AdamWScheduleFree: it averages the iterates uniformly (no "
                    "weight_lr_power), has no train/eval switch to evaluate the averaged weights, and decays the "
                    "weights otherwise", "optimizer"),
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

