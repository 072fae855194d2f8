"""``SearchSpace``: a declarative YAML space over optimizer settings that samples ``TrainConfig``s.

Conditional parameters get one Optuna name per branch (``adamw.lr``, ``nesterov.momentum``), so a trial
only ever holds the hyperparameters its optimizer takes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tuner._builtin import builtin_names, space_source
from tuner._validate import NON_NEGATIVE, Bound
from tuner._yaml import LineDict, line_of, load_yaml_file
from tuner.config import TrainConfig
from tuner.errors import ConfigError, closest, unknown_name_message, what_it_holds
from tuner.init import get_init
from tuner.optim import get_optimizer, get_schedule
from tuner.spaces._params import Param, center, location, parse_param

__all__ = ["SearchSpace", "LRScaling", "ConfigFit", "CONFIG_PARTS", "load_space", "list_spaces"]

_TOP_KEYS = ("description", "optimizer", "schedule", "batch_size", "lr_scaling", "init", "regularization",
             "grad_clip_norm")
_SCALING_RULES = {"linear": 1.0, "sqrt": 0.5, "auto": None}
_REG_KEYS = {"weight_decay": NON_NEGATIVE, "l1": NON_NEGATIVE, "dropout": Bound("float", 0.0, 1.0, high_open=True)}
_GRAD_CLIP = Bound("float", 0.0, float("inf"), low_open=True)
_ONE_MINUS = "one_minus_"

Branch = dict[str, Param]


@dataclass(frozen=True)
class LRScaling:
    """The learning rate a space samples is the rate at ``reference_batch``; a trial trains with
    ``lr * (batch_size / reference_batch) ** p``, ``p = 1`` (``linear``, Goyal et al. 2017) or ``0.5``
    (``sqrt``, Malladi et al. 2022). ``auto`` takes ``linear`` for the SGD family, ``sqrt`` for Adam-like and
    adaptive optimizers, and leaves unscaled the step of L-BFGS and the multipliers of Adadelta and Prodigy.
    So the sampled rate means the same at every batch size, and the search does not confound the two."""

    rule: str = "auto"
    reference_batch: int = 32

    def exponent(self, optimizer: str) -> float:
        fixed = _SCALING_RULES[self.rule]
        if fixed is not None:
            return fixed
        info = get_optimizer(optimizer)
        if info.family == "lbfgs" or info.lr_is_multiplier:  # a step size the optimizer finds itself
            return 0.0
        return 1.0 if info.family == "sgd" else 0.5

    def factor(self, optimizer: str, batch_size: int) -> float:
        """What the sampled (normalised) rate is multiplied by to train at ``batch_size``."""
        return (batch_size / self.reference_batch) ** self.exponent(optimizer)

    def describe(self, optimizer: str | None = None) -> str:
        rule = self.rule if optimizer is None or self.rule != "auto" else (
            {1.0: "linear", 0.5: "sqrt", 0.0: "none"}[self.exponent(optimizer)])
        return f"lr normalised to batch size {self.reference_batch} ({rule} scaling)"


def _branch_keys(bounds: dict[str, Bound]) -> dict[str, tuple[str, Bound]]:
    """Space keys accepted for an entry: its own parameters, ``beta1``/``beta2`` for ``betas``, and
    ``one_minus_<key>`` for parameters in [0, 1] (momentum, betas, rho, alpha)."""
    keys: dict[str, tuple[str, Bound]] = {}
    for key, bound in bounds.items():
        if bound.kind == "pair" and key == "betas":
            scalar = Bound("float", bound.low, bound.high, bound.low_open, bound.high_open)
            keys[key] = (key, bound)
            for sub in ("beta1", "beta2"):
                keys[sub] = (sub, scalar)
                keys[_ONE_MINUS + sub] = (sub, scalar)
            continue
        keys[key] = (key, bound)
        if bound.kind == "float" and bound.low >= 0.0 and bound.high <= 1.0:
            keys[_ONE_MINUS + key] = (key, bound)
    return keys


CONFIG_PARTS = ("optimizer", "schedule", "init", "batch_size", "weight_decay", "l1", "dropout", "grad_clip_norm")


@dataclass
class ConfigFit:
    """A config as a space's Optuna parameters (``SearchSpace.params_for``): the parameters, what stops the
    space from sampling the config at all, and what had to change for it to fit."""

    params: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    #: what the config means in the space without a change to it (its lr scaled to the batch size drawn)
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.problems and not self.changes

    def put(self, name: str, param: Param, value: Any) -> None:
        d = param.distribution
        if d is None:
            if not _same(value, param.value):
                self.changes.append(f"{name}: {_show(value)} -> {_show(param.value)} (fixed by the space)")
            return
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            if any(_same(value, c) for c in d.choices):
                self.params[name] = next(c for c in d.choices if _same(value, c))
                return
            numbers = [c for c in d.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if isinstance(value, (int, float)) and numbers and len(numbers) == len(d.choices):
                nearest = min(numbers, key=lambda c: (abs(math.log(c / value)) if c > 0 and value > 0
                                                      else abs(c - value)))
                self.params[name] = nearest
                self.changes.append(f"{name}: {_show(value)} -> {_show(nearest)} (the nearest choice)")
                return
            self.problems.append(f"{name}: {_show(value)} is not among the choices {list(d.choices)}")
            return
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problems.append(f"{name}: {_show(value)} is not a number")
            return
        clipped = min(max(value, d.low), d.high)
        if d.step is not None:
            clipped = d.low + round((clipped - d.low) / d.step) * d.step
        if isinstance(d, optuna.distributions.IntDistribution):
            clipped = int(round(clipped))
        if not _same(clipped, value):
            self.changes.append(f"{name}: {_show(value)} -> {_show(clipped)} (the space's range is "
                                f"{_show(d.low)}..{_show(d.high)})")
        self.params[name] = clipped


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def _config_values(config: TrainConfig, scaling: LRScaling | None, batch_size: int) -> dict[str, Any]:
    """A config's optimizer hyperparameters by space key: lr (trained at ``batch_size``, as the rate at the
    space's reference batch size where it scales the rate), the rest, and weight decay."""
    opt = config.optimizer
    lr = opt.lr / scaling.factor(opt.name, batch_size) if scaling is not None else opt.lr
    info = get_optimizer(opt.name)
    return {**info.defaults, **opt.params, "lr": lr, "weight_decay": config.regularization.weight_decay}


def _branch_value(key: str, values: dict[str, Any], defaults: dict[str, Any]) -> Any:
    """The value a branch key stands for: ``one_minus_x`` is 1 - x; ``beta1``/``beta2`` come from ``betas``."""
    merged = {**defaults, **values}
    plain = key[len(_ONE_MINUS):] if key.startswith(_ONE_MINUS) else key
    if plain in ("beta1", "beta2"):
        betas = merged.get("betas", (0.9, 0.999))
        value = betas[0 if plain == "beta1" else 1]
    else:
        value = merged.get(plain)
    if isinstance(value, tuple):
        value = list(value)
    return 1.0 - value if key.startswith(_ONE_MINUS) and isinstance(value, (int, float)) else value


def _not_tuned(fit: ConfigFit, prefix: str, given: dict[str, Any], branch: Branch, defaults: dict[str, Any]) -> None:
    """Settings of a config that the space's branch neither tunes nor fixes: a trial of the space trains them at
    their defaults, so a queued config loses them; each one set otherwise is said as a change."""
    held = {key[len(_ONE_MINUS):] if key.startswith(_ONE_MINUS) else key for key in branch}
    for key, value in given.items():
        if key == "betas" and isinstance(value, (list, tuple)):  # the space holds beta1 and beta2 one by one
            unheld = [(f"beta{i + 1}", v, (defaults.get("betas") or (0.9, 0.999))[i])
                      for i, v in enumerate(value[:2]) if f"beta{i + 1}" not in held]
        else:
            unheld = [] if key in held or key == "lr" else [(key, value, defaults.get(key))]
        for name, v, default in unheld:
            if not _same(v, default):
                now = _show(default) if name in defaults or name.startswith("beta") else "not set"
                fit.changes.append(f"{prefix}.{name}: {_show(v)} -> {now} (the space does not tune it: a trial "
                                   f"trains {prefix}'s default)")


@dataclass
class SearchSpace:
    """A validated search space.

    Example:
        >>> space = load_space("default")
        >>> config = space.sample(trial)          # a TrainConfig
    """

    name: str
    source: str
    optimizer: dict[str, Branch]
    schedule: dict[str, Branch]
    init: dict[str, Branch]
    batch_size: Param
    regularization: dict[str, Param]
    grad_clip_norm: Param
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    lr_scaling: LRScaling | None = None

    # -- loading --------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, name: str = "<space>", source: str = "<space>") -> SearchSpace:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a search space must be a mapping of keys "
                              f"({', '.join(_TOP_KEYS)}). It holds {what_it_holds(data)}.")
        for key in data:
            if key not in _TOP_KEYS:
                raise ConfigError(f"{location(source, data, key, key)}: "
                                  + unknown_name_message("search-space key", key, _TOP_KEYS))
        if "optimizer" not in data:
            raise ConfigError(f"{source}: the 'optimizer' key is missing: name the optimizers to search, "
                              f"e.g. 'optimizer: {{adamw: {{lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}}}}}'.")
        optimizer = _parse_choices(data, "optimizer", source, "optimizer", get_optimizer, optimizer_mode=True)
        schedule = _parse_choices(data, "schedule", source, "schedule", get_schedule, default="constant")
        init = _parse_choices(data, "init", source, "initialiser", get_init, default="default")
        batch_size = _parse_checked(data, "batch_size", source, "batch_size", Bound("int", 1, float("inf")), 64)
        reg_raw = data.get("regularization") or {}
        if not isinstance(reg_raw, dict):
            raise ConfigError(f"{location(source, data, 'regularization', 'regularization')}: expected a mapping "
                              f"with keys {', '.join(_REG_KEYS)}.")
        for key in reg_raw:
            if key not in _REG_KEYS:
                raise ConfigError(f"{location(source, reg_raw, key, 'regularization.' + key)}: "
                                  + unknown_name_message("regularization key", key, _REG_KEYS))
        regularization = {
            key: _parse_checked(reg_raw, key, source, f"regularization.{key}", bound, None if key == "dropout" else 0.0)
            for key, bound in _REG_KEYS.items()
        }
        grad_clip = _parse_checked(data, "grad_clip_norm", source, "grad_clip_norm", _GRAD_CLIP, None)
        description = data.get("description") or ""
        scaling = _parse_scaling(data, source)
        return cls(name, source, optimizer, schedule, init, batch_size, regularization, grad_clip,
                   str(description).strip(), _plain(data), scaling)

    # -- sampling -------------------------------------------------------------------------------------
    def sample(self, trial: optuna.Trial, *, epochs: int = 10, seed: int = 0) -> TrainConfig:
        """Samples one ``TrainConfig``; only the chosen optimizer's hyperparameters are suggested."""
        opt_name = _choose(trial, "optimizer", self.optimizer)
        opt_values = {k: p.sample(trial, f"{opt_name}.{k}") for k, p in self.optimizer[opt_name].items()}
        weight_decay = opt_values.pop("weight_decay", None)
        if weight_decay is None:
            weight_decay = self.regularization["weight_decay"].sample(trial, "weight_decay")
        sched_name = _choose(trial, "schedule", self.schedule)
        sched_values = {k: p.sample(trial, f"{sched_name}.{k}") for k, p in self.schedule[sched_name].items()}
        init_name = _choose(trial, "init", self.init)
        init_values = {k: p.sample(trial, f"{init_name}.{k}") for k, p in self.init[init_name].items()}
        info = get_optimizer(opt_name)
        batch_size = self.batch_size.sample(trial, "batch_size")
        opt_resolved = _resolve(opt_values, info.defaults)
        if self.lr_scaling is not None and "lr" in opt_resolved:
            opt_resolved["lr"] = opt_resolved["lr"] * self.lr_scaling.factor(opt_name, batch_size)
        return TrainConfig.from_dict({
            "optimizer": {"name": opt_name, **opt_resolved},
            "schedule": {"name": sched_name, **_resolve(sched_values, {})},
            "init": {"name": init_name, **_resolve(init_values, {})},
            "batch_size": batch_size,
            "regularization": {
                "weight_decay": weight_decay,
                "l1": self.regularization["l1"].sample(trial, "l1"),
                "dropout": self.regularization["dropout"].sample(trial, "dropout"),
            },
            "grad_clip_norm": self.grad_clip_norm.sample(trial, "grad_clip_norm"),
            "epochs": epochs,
            "seed": seed,
        })

    def central_config(self, optimizer: str, *, epochs: int = 1, seed: int = 0, weight_decay: float = 0.0,
                       batch_size: int | None = None) -> TrainConfig:
        """The config at the middle of this space for one of its optimizers: every hyperparameter of the
        optimizer at the centre of its range (geometric for a log range), a constant learning rate, the default
        initialiser, no dropout and the given weight decay; what an LR range test sweeps the rate of."""
        if optimizer not in self.optimizer:
            raise ConfigError(f"{self.source}: " + unknown_name_message("optimizer of this space", optimizer,
                                                                       self.optimizer))
        values = {k: center(p) for k, p in self.optimizer[optimizer].items() if k != "weight_decay"}
        info = get_optimizer(optimizer)
        return TrainConfig.from_dict({
            "optimizer": {"name": optimizer, **_resolve(values, info.defaults)},
            "batch_size": batch_size if batch_size is not None else center(self.batch_size),
            "regularization": {"weight_decay": weight_decay},
            "epochs": epochs,
            "seed": seed,
        })

    def params_for(self, config: TrainConfig, parts: tuple[str, ...] = CONFIG_PARTS) -> ConfigFit:
        """The Optuna parameters under which this space samples ``config`` (the inverse of ``sample``), for
        ``study.enqueue_trial``: only the ``parts`` of the config given (``optimizer``, ``schedule``, ``init``,
        ``batch_size``, ``weight_decay``, ``l1``, ``dropout``, ``grad_clip_norm``); the sampler draws the rest.

        A config whose optimizer, schedule or initialiser the space does not hold cannot be sampled
        (``problems``); a value outside a range is clipped to it, a batch size or other number missing from
        the choices becomes the nearest one, and a value the space fixes stays the space's (``changes``)."""
        fit = ConfigFit()
        opt = config.optimizer.name
        groups = [("optimizer", self.optimizer, opt)] if "optimizer" in parts else []
        if "schedule" in parts:
            groups.append(("schedule", self.schedule, config.schedule.name))
        if "init" in parts:
            groups.append(("init", self.init, config.init.name))
        for key, group, name in groups:
            if name not in group:
                fit.problems.append(f"{key} {name!r} is not in the space ({', '.join(group)})")
            elif len(group) > 1:
                fit.params[key] = name
        if fit.problems:
            return fit
        scaling = self.lr_scaling
        # A config that gives no batch size trains its lr at the batch size the space fixes, else (lr_scaling)
        # as the rate at the reference batch, scaled to the batch size the sampler draws.
        drawn = "batch_size" not in parts and not self.batch_size.fixed
        lr_batch = (config.batch_size if "batch_size" in parts or scaling is None else
                    scaling.reference_batch if drawn else self.batch_size.value)
        values = _config_values(config, scaling, lr_batch)
        lr_change = None
        # A config without an optimizer (a file giving a schedule only) leaves it, and its settings, to the sampler.
        branch = self.optimizer[opt] if "optimizer" in parts else {}
        for key, param in branch.items():
            if key == "weight_decay" and "weight_decay" not in parts:
                continue
            before = len(fit.changes)
            fit.put(f"{opt}.{key}", param, _branch_value(key, values, get_optimizer(opt).defaults))
            if key == "lr" and len(fit.changes) > before:
                lr_change = before
        if "optimizer" in parts:
            _not_tuned(fit, opt, config.optimizer.params, branch, get_optimizer(opt).defaults)
        per_branch = any("weight_decay" in b for b in self.optimizer.values())
        if "weight_decay" in parts and "optimizer" not in parts and per_branch:
            # The space tunes it with each optimizer: without one, the sampler draws it with the optimizer it picks.
            fit.notes.append(f"weight_decay {config.regularization.weight_decay:g} is left to the sampler: the space "
                             f"tunes it with each optimizer (give the optimizer too to queue it)")
        elif "weight_decay" in parts and "weight_decay" not in branch:
            fit.put("weight_decay", self.regularization["weight_decay"], config.regularization.weight_decay)
        for key, group, name, lookup in (("schedule", self.schedule, config.schedule.name, get_schedule),
                                         ("init", self.init, config.init.name, get_init)):
            if key in parts:
                given = {**lookup(name).defaults, **getattr(config, key).params}
                for pkey, param in group[name].items():
                    fit.put(f"{name}.{pkey}", param, _branch_value(pkey, given, {}))
                _not_tuned(fit, name, getattr(config, key).params, group[name], lookup(name).defaults)
        singles = {"batch_size": (self.batch_size, config.batch_size),
                   "l1": (self.regularization["l1"], config.regularization.l1),
                   "dropout": (self.regularization["dropout"], config.regularization.dropout),
                   "grad_clip_norm": (self.grad_clip_norm, config.grad_clip_norm)}
        for key, (param, value) in singles.items():
            if key in parts and not (key == "dropout" and value is None):
                fit.put(key, param, value)
        if scaling is not None and isinstance(fit.params.get(f"{opt}.lr"), float):
            # With lr_scaling the numbers are rates at the reference batch, and a changed batch size changes the
            # rate that trains: where either changed, say what trains; a rate the drawn batch size scales is
            # said as such.
            reference = scaling.reference_batch
            batch_change = next((i for i, c in enumerate(fit.changes) if c.startswith("batch_size:")), None)
            at = lr_change if lr_change is not None else batch_change
            if at is not None and drawn:
                fit.changes[at] += f"; rates at batch size {reference} (lr_scaling), scaled to the batch size the " \
                                   f"sampler draws"
            elif at is not None:
                batch = fit.params.get("batch_size", lr_batch)
                fit.changes[at] += (f"; rates at batch size {reference} (lr_scaling): it trains at lr "
                                    f"{fit.params[f'{opt}.lr'] * scaling.factor(opt, batch):.3g} with batch size "
                                    f"{batch}")
            elif drawn and scaling.exponent(opt):
                fit.notes.append(f"lr {config.optimizer.lr:g} at batch size {reference}, scaled to the batch size "
                                 f"drawn (lr_scaling)")
        return fit

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Every Optuna parameter the space can suggest, by name (conditional ones included)."""
        out: dict[str, Any] = {}
        for group, key in ((self.optimizer, "optimizer"), (self.schedule, "schedule"), (self.init, "init")):
            if len(group) > 1:
                out[key] = optuna.distributions.CategoricalDistribution(list(group))
            for branch, params in group.items():
                out.update({f"{branch}.{k}": p.distribution for k, p in params.items() if not p.fixed})
        singles = {"batch_size": self.batch_size, "grad_clip_norm": self.grad_clip_norm, **self.regularization}
        out.update({k: p.distribution for k, p in singles.items() if not p.fixed})
        return out

    def hard_ends(self) -> dict[str, list[str]]:
        """For each range parameter, the ends (``low``, ``high``) it cannot be widened past: the range already
        starts or stops where the hyperparameter's valid values do (dropout at 0, a warmup fraction at its
        maximum). An edge there is no hint that better values lie beyond it."""
        ranges: list[tuple[str, Param, Bound, bool]] = []
        for group, lookup in ((self.optimizer, get_optimizer), (self.schedule, get_schedule), (self.init, get_init)):
            for branch, params in group.items():
                accepted = _branch_keys(lookup(branch).bounds)
                accepted.setdefault("weight_decay", ("weight_decay", NON_NEGATIVE))
                for key, param in params.items():
                    if key in accepted:
                        ranges.append((f"{branch}.{key}", param, accepted[key][1], key.startswith(_ONE_MINUS)))
        ranges.append(("batch_size", self.batch_size, Bound("int", 1, float("inf")), False))
        ranges.append(("grad_clip_norm", self.grad_clip_norm, _GRAD_CLIP, False))
        ranges += [(key, self.regularization[key], bound, False) for key, bound in _REG_KEYS.items()]
        out: dict[str, list[str]] = {}
        for name, param, bound, negate in ranges:
            d = param.distribution
            if d is None or isinstance(d, optuna.distributions.CategoricalDistribution) or bound.kind == "pair":
                continue
            if negate:  # one_minus_x: widening the range down raises x
                ends = [end for end, stop in (("low", 1 - d.low >= bound.high), ("high", 1 - d.high <= bound.low))
                        if stop]
            else:
                ends = [end for end, stop in (("low", d.low <= bound.low), ("high", d.high >= bound.high)) if stop]
            if ends:
                out[name] = ends
        return out

    def _grid_parts(self, points: int) -> list[list[tuple[dict[str, Any], dict[str, list[Any]]]]]:
        """The grid as independent parts (optimizer, schedule, init, shared values); each part is a list of
        (fixed params, {param: values}) alternatives whose value lists combine in a product."""
        def branches(key: str, group: dict[str, Branch], extra: dict[str, Param] | None = None) -> list:
            out = []
            for name, params in group.items():
                free = {f"{name}.{k}": _grid_values(p, points) for k, p in params.items() if not p.fixed}
                if extra:
                    free.update({k: _grid_values(p, points) for k, p in extra.items()
                                 if not p.fixed and k not in params})
                out.append(({key: name} if len(group) > 1 else {}, free))
            return out

        shared = {"batch_size": self.batch_size, "grad_clip_norm": self.grad_clip_norm,
                  "l1": self.regularization["l1"], "dropout": self.regularization["dropout"]}
        return [
            # The global weight decay only applies to optimizers without their own.
            branches("optimizer", self.optimizer, {"weight_decay": self.regularization["weight_decay"]}),
            branches("schedule", self.schedule),
            branches("init", self.init),
            [({}, {k: _grid_values(p, points) for k, p in shared.items() if not p.fixed})],
        ]

    def grid_size(self, points: int = 3) -> int:
        """How many points ``grid_points`` would return, counted without building them."""
        total = 1
        for part in self._grid_parts(points):
            total *= sum(math.prod(len(v) for v in free.values()) for _, free in part)
        return total

    def grid_points(self, points: int = 3) -> list[dict[str, Any]]:
        """Every combination a grid search runs, as Optuna params: conditional parameters only combine with
        their own branch, ranges become ``points`` values (on the ``step`` grid when there is one)."""
        parts = []
        for part in self._grid_parts(points):
            combos = []
            for fixed, free in part:
                for values in itertools.product(*free.values()):
                    combos.append({**fixed, **dict(zip(free, values, strict=True))})
            parts.append(combos)
        grid = []
        for combo in itertools.product(*parts):
            point: dict[str, Any] = {}
            for piece in combo:
                point.update(piece)
            grid.append(point)
        return grid

    def fingerprint(self) -> str:
        """A hash of the distributions; a study refuses to resume with a space whose fingerprint differs."""
        canon = {k: optuna.distributions.distribution_to_json(d) for k, d in sorted(self.distributions().items())}
        identity: dict[str, Any] = {"dists": canon, "fixed": self.fixed_values()}
        if self.lr_scaling is not None:  # absent from spaces without it, whose fingerprints stay as they were
            identity["lr_scaling"] = [self.lr_scaling.rule, self.lr_scaling.reference_batch]
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def changes_from(self, old: SearchSpace, most: int = 4) -> str:
        """How this space differs from ``old`` in what it searches (a study refuses to resume over another
        space; this names why): ``optimizer: adam, sgd -> adam; batch_size: [32, 64] -> [16]``."""
        def shown(value: Any) -> str:
            if isinstance(value, optuna.distributions.CategoricalDistribution):
                return "[" + ", ".join(str(c) for c in value.choices) + "]"
            if isinstance(value, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
                return f"{value.low:g}..{value.high:g}" + (" (log)" if value.log else "")
            return f"fixed {value!r}"

        def searched(space: SearchSpace) -> dict[str, Any]:
            one = {key: next(iter(group)) for key, group in (("optimizer", space.optimizer),
                                                              ("schedule", space.schedule), ("init", space.init))
                   if len(group) == 1}  # a single choice: fixed, not sampled
            return {**one, **space.fixed_values(), **space.distributions()}

        before, after = searched(old), searched(self)
        parts = []
        keys = list(before) + [k for k in after if k not in before]
        for key in sorted(keys, key=lambda k: "." in k):  # the choices (optimizer, batch size) first
            if key not in after:
                parts.append(f"{key}: {shown(before[key])} -> not searched")
            elif key not in before:
                parts.append(f"{key}: not searched -> {shown(after[key])}")
            elif shown(before[key]) != shown(after[key]):
                parts.append(f"{key}: {shown(before[key])} -> {shown(after[key])}")
        if (old.lr_scaling is None) != (self.lr_scaling is None) or (
                old.lr_scaling and self.lr_scaling and old.lr_scaling.describe() != self.lr_scaling.describe()):
            parts.append(f"lr_scaling: {old.lr_scaling.describe() if old.lr_scaling else 'none'} -> "
                         f"{self.lr_scaling.describe() if self.lr_scaling else 'none'}")
        names = f"{old.name} -> {self.name}" if old.name != self.name else self.name
        more = f"; and {len(parts) - most} more" if len(parts) > most else ""
        return f"space {names}: " + ("; ".join(parts[:most]) + more if parts else "the same values searched")

    def fixed_values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group in (self.optimizer, self.schedule, self.init):
            for branch, params in group.items():
                out.update({f"{branch}.{k}": p.value for k, p in params.items() if p.fixed})
        singles = {"batch_size": self.batch_size, "grad_clip_norm": self.grad_clip_norm, **self.regularization}
        out.update({k: p.value for k, p in singles.items() if p.fixed})
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.raw, sort_keys=False, allow_unicode=True)

    # -- batch sizes ------------------------------------------------------------------------------------
    def without_dropout(self, why: str) -> tuple[SearchSpace, str]:
        """This space keeping the model's own dropout rates where it searches (or sets) ``regularization.dropout``,
        and a note that says so with ``why``; the space itself and no note where it leaves them already."""
        dropout = self.regularization["dropout"]
        if dropout.fixed and dropout.value is None:
            return self, ""
        reg = {k: v for k, v in (self.raw.get("regularization") or {}).items() if k != "dropout"}
        raw = {**self.raw, "regularization": reg}
        what = "searched" if not dropout.fixed else f"set to {dropout.value:g}"
        return (SearchSpace.from_dict(raw, name=self.name, source=self.source),
                f"regularization.dropout is not {what}: {why}")

    def largest_batch_below(self, limit: int) -> int | None:
        """The largest batch size this space can sample below ``limit`` (None: none): where a batch size ran
        out of memory, the one to train a config at instead."""
        dist = self.batch_size.distribution
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            below = [c for c in dist.choices if isinstance(c, int) and c < limit]
            return max(below) if below else None
        if isinstance(dist, optuna.distributions.IntDistribution) and dist.low < limit:
            return dist.low + (min(limit - 1, dist.high) - dist.low) // dist.step * dist.step
        return None

    def with_batch_sizes(self, sizes: int | list[int] | tuple[int, ...]) -> SearchSpace:
        """This space searching ``sizes`` (one value: fixed) instead of its own batch sizes."""
        def whole(value: Any) -> int | None:  # NumPy's ints and 32.0 too, as a spec's batch_size reads them
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                return None
            try:
                return int(value) if isinstance(value, float) else operator.index(value)
            except TypeError:
                return None

        many = isinstance(sizes, (list, tuple, set, frozenset, range))
        values = [whole(v) for v in (sizes if many else [sizes])]
        if not values or not all(v is not None and v >= 1 for v in values):
            raise ConfigError(f"batch_size: expected a positive integer or a list of them (e.g. 16 or "
                              f"16,32,64); got {sizes!r}.")
        values = sorted(set(values))
        raw = {**self.raw, "batch_size": values[0] if len(values) == 1 else {"choices": values}}
        return SearchSpace.from_dict(raw, name=self.name, source=self.source)

    def schedule_notes(self, epochs: int) -> list[str]:
        """Schedules that will not do what the space seems to ask (a note each, for the study's output): those
        whose length in epochs reaches past the ``epochs`` a trial trains (a step schedule whose step_size is
        ``epochs`` or more never lowers the learning rate; warm restarts whose first cycle is that long never
        restart), and decay schedules beside a schedule-free optimizer, which replaces them."""
        from tuner.optim import get_optimizer, get_schedule

        notes = []
        free = [name for name in self.optimizer if get_optimizer(name).train_eval]
        decaying = [name for name in self.schedule if name != "constant"]
        if free and decaying:
            notes.append(f"{', '.join(free)} {'is' if len(free) == 1 else 'are'} schedule-free, which replaces a "
                         f"decay schedule, and the space pairs {'it' if len(free) == 1 else 'them'} with "
                         f"{', '.join(decaying)}: such trials decay the rate as well (schedule: constant, with "
                         f"warmup_fraction for a warmup, is how their authors use them)")
        for name, key, effect in (("step", "step_size", "never lowers the learning rate"),
                                  ("cosine_restarts", "t0_epochs", "never restarts, and its decay is cut short")):
            if name not in self.schedule:
                continue
            param = self.schedule[name].get(key)
            values = param.endpoints() if param is not None else [get_schedule(name).defaults[key]]
            values = [v for v in values if isinstance(v, (int, float))]
            if not values or max(values) < epochs:
                continue
            shown = (f"{key} {min(values):g}..{max(values):g}" if len(values) > 1 and min(values) != max(values)
                     else f"{key} {max(values):g}" + ("" if param is not None else " (its default)"))
            some = "with" if min(values) >= epochs else f"at {epochs} or more, in"
            fix = f"search {key} below {epochs}, or train more epochs" if epochs > 1 else "train more epochs"
            notes.append(f"schedule {name}: trials train {epochs} epoch(s), so {name} {some} {shown} {effect}: {fix}")
        return notes

    def fit_batch_sizes(self, n_train: int, data: str, where: str = "") -> tuple[SearchSpace, str | None]:
        """This space without the batch sizes larger than the ``n_train`` training samples of ``data`` (a
        choice is dropped, a range's upper end lowered), and a line saying what changed (None: nothing).
        Refused, naming what is left to do, where no batch size would be left; ``where`` names where the
        batch sizes came from (default: the space's file and key)."""
        param = self.batch_size
        where = where or f"{self.source}: key 'batch_size'"
        from tuner._surface import option

        sizes = _fitting_sizes(n_train)
        fix = (f"pass {option('batch-size')} with sizes up to {n_train} (e.g. "
               f"{option('batch-size', sizes, '[' + sizes.replace(',', ', ') + ']')})")
        d = param.distribution
        if d is None:
            if param.value <= n_train:
                return self, None
            raise ConfigError(f"{where}: {param.value} is larger than the {n_train} training samples of {data}; "
                              f"{fix}.")
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            kept = [b for b in d.choices if b <= n_train]
            dropped = [b for b in d.choices if b > n_train]
            if not dropped:
                return self, None
            if not kept:
                raise ConfigError(f"{where}: every batch size ({', '.join(map(str, d.choices))}) is larger than "
                                  f"the {n_train} training samples of {data}; {fix}.")
            raw = {**self.raw, "batch_size": kept[0] if len(kept) == 1 else {"choices": kept}}
            note = (f"batch sizes {', '.join(map(str, dropped))} left out: larger than the {n_train} training "
                    f"samples of {data} (searching {', '.join(map(str, kept))})")
        else:
            if d.high <= n_train:
                return self, None
            if d.low > n_train:
                raise ConfigError(f"{where}: the range {d.low} to {d.high} lies above the {n_train} training "
                                  f"samples of {data}; {fix}.")
            high = n_train if d.step in (None, 1) else d.low + (n_train - d.low) // d.step * d.step
            raw = {**self.raw, "batch_size": {**param.to_yaml(), "high": int(high)}}
            note = (f"batch sizes above {n_train} left out: larger than the {n_train} training samples of {data} "
                    f"(searching {d.low} to {high})")
        return SearchSpace.from_dict(raw, name=self.name, source=self.source), note


def _fitting_sizes(n_train: int) -> str:
    """A few powers of two up to ``n_train``, as a ``--batch-size`` value."""
    sizes = [b for b in (8, 16, 32, 64, 128, 256) if b <= n_train][-3:] or [n_train]
    return ",".join(map(str, sizes))



def _parse_scaling(data: Any, source: str) -> LRScaling | None:
    raw = data.get("lr_scaling")
    if raw is None or raw is False:
        return None
    where = location(source, data, "lr_scaling", "lr_scaling")
    if raw is True:
        return LRScaling()
    if isinstance(raw, str):
        raw = {"rule": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{rule: sqrt, reference_batch: 32}}, or true. "
                          f"Got {raw!r} instead.")
    for key in raw:
        if key not in ("rule", "reference_batch"):
            raise ConfigError(f"{location(source, raw, key, 'lr_scaling.' + str(key))}: "
                              + unknown_name_message("lr_scaling key", key, ("rule", "reference_batch")))
    rule = raw.get("rule", "auto")
    if not isinstance(rule, str) or rule not in _SCALING_RULES:  # a list or a mapping here cannot be looked up
        raise ConfigError(f"{location(source, raw, 'rule', 'lr_scaling.rule')}: "
                          + unknown_name_message("lr scaling rule", rule, _SCALING_RULES))
    ref = raw.get("reference_batch", 32)
    if isinstance(ref, bool) or not isinstance(ref, int) or ref < 1:
        raise ConfigError(f"{location(source, raw, 'reference_batch', 'lr_scaling.reference_batch')}: must be a "
                          f"whole number >= 1. Got {ref!r} instead.")
    return LRScaling(rule, ref)


def _grid_values(param: Param, points: int) -> list[Any]:
    import numpy as np

    d = param.distribution
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return list(d.choices)
    if d.step is not None and (d.high - d.low) / d.step < points:
        count = int(round((d.high - d.low) / d.step)) + 1
        return [d.low + i * d.step for i in range(count)]
    if d.step is not None:
        steps = np.linspace(0, (d.high - d.low) // d.step, points).round()
        values = [d.low + k * d.step for k in steps]
    else:
        values = list(np.geomspace(d.low, d.high, points) if d.log else np.linspace(d.low, d.high, points))
    cast = int if isinstance(d, optuna.distributions.IntDistribution) else float
    return sorted({cast(round(float(v), 12)) for v in values})


def _choose(trial: optuna.Trial, key: str, group: dict[str, Branch]) -> str:
    names = list(group)
    return names[0] if len(names) == 1 else trial.suggest_categorical(key, names)


def _resolve(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Turns ``one_minus_x`` into ``x`` and ``beta1``/``beta2`` into ``betas``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(_ONE_MINUS):
            key, value = key[len(_ONE_MINUS):], 1.0 - value
        out[key] = value
    if "beta1" in out or "beta2" in out:
        b1, b2 = defaults.get("betas", (0.9, 0.999))
        out["betas"] = [out.pop("beta1", b1), out.pop("beta2", b2)]
    return out


def _parse_choices(data: Any, key: str, source: str, kind: str, lookup: Any, *, default: str | None = None,
                   optimizer_mode: bool = False) -> dict[str, Branch]:
    raw = data.get(key, default)
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        # Short forms ``schedule: cosine`` and ``init: [a, b]``: errors point at the key's line.
        names = raw
        raw = LineDict({name: {} for name in names})
        raw.line = (line_of(data, key) if key in data else None) or 0
        raw.lines = {name: raw.line for name in names}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{location(source, data, key, key)}: expected a {kind} name, a list of names, or a "
                          f"mapping of {kind} names to their hyperparameters. Got {raw!r} instead.")
    branches: dict[str, Branch] = {}
    for name, params in raw.items():
        where = location(source, raw, name, f"{key}.{name}")
        try:
            info = lookup(name)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        params = params if params is not None else {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: expected a mapping of hyperparameters. Got {params!r} instead.")
        accepted = _branch_keys(info.bounds)
        if optimizer_mode:
            # Per-optimizer weight decay: decoupled and coupled decay want different ranges.
            accepted["weight_decay"] = ("weight_decay", NON_NEGATIVE)
        branch: Branch = {}
        for pkey, praw in params.items():
            pwhere = location(source, params, pkey, f"{key}.{name}.{pkey}")
            if pkey not in accepted:
                if optimizer_mode:
                    hint = info.misplaced(pkey, in_space=True, accepted=accepted)
                else:
                    suggestion = closest(pkey, accepted)
                    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
                raise ConfigError(f"{pwhere}: the {name!r} {kind} takes no parameter {pkey!r}. "
                                  f"Valid parameters: {', '.join(sorted(accepted))}.{hint}")
            param = parse_param(praw, pwhere)
            target, bound = accepted[pkey]
            _check_range(param, bound, pwhere, target, negate=pkey.startswith(_ONE_MINUS))
            branch[pkey] = param
        if optimizer_mode and "lr" not in branch:
            branch["lr"] = Param(info.defaults["lr"])
        _check_exclusive(branch, where)
        fixed = _resolve({k: p.value for k, p in branch.items() if p.fixed and k != "weight_decay"},
                         getattr(info, "defaults", {}))
        info.check(fixed, where=where)  # checks across parameters, e.g. multistep milestones in order
        branches[name] = branch
    return branches


def _check_exclusive(branch: Branch, where: str) -> None:
    for key in list(branch):
        plain = key[len(_ONE_MINUS):] if key.startswith(_ONE_MINUS) else None
        if plain and plain in branch:
            raise ConfigError(f"{where}: give either {plain!r} or {key!r}, not both.")
    if "betas" in branch and any(k in branch for k in ("beta1", "beta2", "one_minus_beta1", "one_minus_beta2")):
        raise ConfigError(f"{where}: give either 'betas' or 'beta1'/'beta2', not both.")


def _check_range(param: Param, bound: Bound, where: str, target: str, negate: bool = False) -> None:
    if bound.kind == "int" and isinstance(param.distribution, optuna.distributions.FloatDistribution):
        d = param.distribution
        low, high = math.ceil(d.low), math.floor(d.high)  # the whole numbers of the range, which the fix must hold
        fix = (f"write {{type: int, low: {low}, high: {high}}}" if low <= high else
               "it holds no whole number: give whole bounds as {type: int, low: ..., high: ...}")
        raise ConfigError(f"{where}: {target!r} takes whole numbers, and this is a float range (a range without "
                          f"'type', or type: float): {fix}, or give 'choices'.")
    if bound.kind == "float" and isinstance(param.distribution, optuna.distributions.IntDistribution):
        d = param.distribution
        raise ConfigError(f"{where}: {target!r} takes real numbers, and type: int would sample only the whole "
                          f"numbers {d.low}..{d.high}: leave 'type' out ({{low: {d.low}, high: {d.high}}}), or give "
                          f"'choices'.")
    for value in param.endpoints():
        if value is None:
            continue
        checked = 1.0 - value if negate and isinstance(value, (int, float)) else value
        try:
            bound.check(checked)
        except ValueError as exc:
            shown = f"1 - {value!r} = {checked!r}" if negate else repr(value)
            # A plain list is one fixed value (a pair of betas); values to choose from are written as choices.
            listed = (f" A list is one fixed value here; to search among values write {{choices: "
                      f"{list(value)}}}." if isinstance(value, (list, tuple)) and param.distribution is None else "")
            raise ConfigError(f"{where}: {target!r} must be {exc}. Got {shown} instead.{listed}") from None


def _parse_checked(data: Any, key: str, source: str, path: str, bound: Bound, default: Any) -> Param:
    if key not in data or data[key] is None:
        return Param(default)
    where = location(source, data, key, path)
    param = parse_param(data[key], where)
    _check_range(param, bound, where, key)
    return param


def _plain(value: Any) -> Any:
    """Drops the line bookkeeping so the space can be stored as JSON."""
    if isinstance(value, LineDict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def list_spaces() -> dict[str, Path]:
    """The built-in search spaces, by name."""
    return builtin_names("search_spaces", (".yaml", ".yml"))


def load_space(ref: str | Path | dict[str, Any]) -> SearchSpace:
    """Loads a built-in space by name (``default``), a YAML file path, or a dict."""
    if isinstance(ref, dict):  # named "custom" where it shows (a study's default name, its header)
        return SearchSpace.from_dict(ref, name="custom", source="the space mapping")
    if not isinstance(ref, (str, Path)):
        from tuner.config import TrainConfig

        hint = (" A TrainConfig is one config, not a space: pass it as enqueue=[config] to train it first, or "
                "fix its values in a space mapping." if isinstance(ref, TrainConfig) else "")
        raise ConfigError(f"space: a built-in space's name, a YAML file's path, a mapping or a SearchSpace; got "
                          f"{type(ref).__name__}.{hint}")
    path, name = space_source(str(ref))
    return SearchSpace.from_dict(load_yaml_file(path), name=name, source=str(path))

