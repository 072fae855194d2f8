"""Sampler and pruner registries: names -> Optuna objects, with options checked against their signatures."""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from tuner._registry import Registry
from tuner.errors import ConfigError

__all__ = ["build_sampler", "build_pruner", "pruner_notes", "plain_options", "list_samplers", "list_pruners",
           "may_prune_at", "judges_by_complete_trials", "refuse_for_several_objectives"]


@dataclass(frozen=True)
class Factory:
    name: str
    cls: type
    defaults: Callable[[dict[str, Any]], dict[str, Any]]
    description: str
    #: it runs in a study of several objectives (a pruner: judging the first, the metric, alone)
    several_objectives: bool = True
    #: checks the options (with the defaults) that Optuna takes and fails on only later, as it first prunes
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None

    def build(self, options: dict[str, Any], context: dict[str, Any], kind: str) -> Any:
        params = inspect.signature(self.cls.__init__).parameters
        valid = [p for p in params if p not in ("self", "args", "kwargs", "wrapped_pruner", "search_space")]
        for key, value in options.items():
            if key not in valid:
                import difflib

                close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
                raise ConfigError(f"The {self.name!r} {kind} takes no option {key!r}. "
                                  f"Valid options: {', '.join(valid) or 'none'}."
                                  + (f" Did you mean {close[0]!r}?" if close else ""))
            bad = _non_finite(value)
            if bad is not None:
                raise ConfigError(_not_finite(key, self.name, kind, bad))
        kwargs = {**self.defaults(context), **options}
        if self.check is not None:
            self.check(kwargs, options)
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Invalid options for the {self.name!r} {kind}: {exc}") from None


_PLAIN_TYPES = {"int", "float", "bool", "str", "None"}


def _plain_kinds(annotation: Any) -> set[str]:
    """The kinds an annotation of plain types (``int``, ``bool | None``, ``str | int``) allows; empty for any
    other annotation (a callable, a sampler, a list), which is left to Optuna."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = {part.strip() for part in text.split("|")}
    return kinds if kinds <= _PLAIN_TYPES else set()


def _negative_default(default: Any) -> bool:
    return isinstance(default, int) and not isinstance(default, bool) and default < 0


def _fits(value: Any, kinds: set[str], default: Any) -> bool:
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, numbers.Integral):
        # Counts are 0 or more, unless Optuna's own default is negative (CMA-ES's inc_popsize: -1).
        return "float" in kinds or ("int" in kinds and (value >= 0 or _negative_default(default)))
    if isinstance(value, numbers.Real):
        return "float" in kinds
    return isinstance(value, str) and "str" in kinds


def _describe_kinds(kinds: set[str], default: Any) -> str:
    text = f'"{default}"' if isinstance(default, str) else "a text"  # the text Optuna takes, where it has one
    whole = "a whole number" if _negative_default(default) else "a whole number (0 or more)"
    words = {"bool": ["true", "false"], "int": [whole], "float": ["a number"], "str": [text], "None": ["null"]}
    items = [w for k in ("bool", "int", "float", "str", "None") if k in kinds for w in words[k]]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _shown(value: Any) -> str:
    """A value as a spec file would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def plain_options(spec: str | dict[str, Any], kind: str) -> str | dict[str, Any]:
    """A sampler or pruner as a user gives it (a name, or ``{"name": ..., **options}``) with each option checked
    against the plain type Optuna's signature gives it, and made plain: NumPy numbers become Python ones and a
    whole-number float for a count its int (``10.0`` is 10). Optuna takes wrong kinds without a word
    (``n_startup_trials: -3`` samples as 0, ``multivariate: "no"`` as on), so they are refused here, for what a
    user gives; a study's stored spec is read as it was accepted then."""
    if isinstance(spec, str):
        return spec
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        example = ("{name: tpe, n_startup_trials: 5}" if kind == "sampler" else
                   "{name: median, n_warmup_steps: 2}, or 'none' for no pruning")
        raise ConfigError(f"The {kind} must be a name or a mapping with a 'name' key, e.g. {example}. Got {spec!r} "
                          f"instead.")
    name, options = _named(spec)
    factory = (_SAMPLERS if kind == "sampler" else _PRUNERS).get(name)
    params = inspect.signature(factory.cls.__init__).parameters
    out: dict[str, Any] = {"name": name}
    for key, value in options.items():
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
            value = value.item()  # a NumPy (or 0-d tensor) number
        bad = _non_finite(value)
        if bad is not None:
            raise ConfigError(_not_finite(key, factory.name, kind, bad))
        param = params.get(key)
        kinds = _plain_kinds(param.annotation) if param is not None else set()
        if isinstance(value, float) and value.is_integer() and "int" in kinds and "float" not in kinds:
            value = int(value)
        if kinds and not _fits(value, kinds, param.default):
            raise ConfigError(f"The {key!r} option of the {factory.name!r} {kind} must be "
                              f"{_describe_kinds(kinds, param.default)}. Got {_shown(value)} instead.")
        out[key] = value
    return out


def _not_finite(key: str, name: str, kind: str, bad: Any) -> str:
    return f"The {key!r} option of the {name!r} {kind} must be a finite number. Got {bad!r} instead."


def _non_finite(value: Any) -> float | None:
    """The first inf or nan inside an option value (numbers, lists and mappings), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            bad = _non_finite(item)
            if bad is not None:
                return bad
    return None


def _seed(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"seed": ctx.get("seed")}


_SAMPLERS: Registry[Factory] = Registry("sampler")
for _f in (
    # multivariate + group model the conditional, per-optimizer parameters jointly.
    Factory("tpe", optuna.samplers.TPESampler,
            lambda c: {"seed": c.get("seed"), "multivariate": True, "group": True, "constant_liar": True,
                       "n_startup_trials": 10},
            "Tree-structured Parzen Estimator (multivariate, grouped by optimizer)"),
    Factory("random", optuna.samplers.RandomSampler, _seed, "independent uniform sampling"),
    Factory("qmc", optuna.samplers.QMCSampler,
            lambda c: {"seed": c.get("seed"), "scramble": True, "warn_independent_sampling": False},
            "scrambled Sobol quasi-random sequence"),
    Factory("nsgaii", optuna.samplers.NSGAIISampler, _seed,
            "NSGA-II genetic algorithm, for several objectives (objectives: [metric, train_seconds])"),
    Factory("cmaes", optuna.samplers.CmaEsSampler,
            lambda c: {"seed": c.get("seed"), "warn_independent_sampling": False},
            "CMA-ES on numeric parameters; categoricals sampled independently", several_objectives=False),
    Factory("gp", optuna.samplers.GPSampler,
            lambda c: {"seed": c.get("seed"), "warn_independent_sampling": False},
            "Gaussian-process Bayesian optimisation"),
    # The grid's points are enqueued when the study is created (one combination per optimizer branch, not the
    # product of all branches' parameters); the sampler itself only runs once they are used up.
    Factory("grid", optuna.samplers.RandomSampler, _seed,
            "every combination of choices and 3 points per range, each optimizer with its own parameters",
            several_objectives=False),
):
    _SAMPLERS.register(_f.name, _f)


def _warmup(ctx: dict[str, Any]) -> int:
    return max(1, int(ctx.get("epochs", 10)) // 5)


def _quarter(ctx: dict[str, Any]) -> int:
    return max(1, int(ctx.get("epochs", 10)) // 4 - 1)  # steps count from 0: epoch epochs/4


def _halving(name: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """Successive halving's and Hyperband's options: Hyperband passes them to its brackets unchecked, and a
    reduction factor under 2 or a minimum resource over the maximum failed only at the first report (a division
    by zero, a math domain error)."""

    def check(options: dict[str, Any], given: dict[str, Any]) -> None:
        def whole(key: str) -> Any:
            value = options.get(key)
            return value if isinstance(value, numbers.Integral) and not isinstance(value, bool) else None

        factor = options.get("reduction_factor")
        if isinstance(factor, numbers.Real) and not isinstance(factor, bool) and factor < 2:
            raise ConfigError(f"The 'reduction_factor' option of the {name!r} pruner must be 2 or more (each rung "
                              f"keeps 1 in reduction_factor of the trials that reach it). Got {factor!r} instead.")
        for key in ("min_resource", "max_resource"):
            if whole(key) is not None and whole(key) < 1:
                raise ConfigError(f"The {key!r} option of the {name!r} pruner must be 1 or more (epochs), or "
                                  f"\"auto\". Got {options[key]!r} instead.")
        low, high = whole("min_resource"), whole("max_resource")
        # Both given (Hyperband's default max_resource is the study's epochs: checked with them, pruner_notes)
        if "min_resource" in given and "max_resource" in given and low is not None and high is not None and \
                low > high:
            raise ConfigError(f"The {name!r} pruner's min_resource ({low}) must be at most its max_resource "
                              f"({high}).")

    return check


_PRUNERS: Registry[Factory] = Registry("pruner")
for _f in (
    Factory("median", optuna.pruners.MedianPruner,
            lambda c: {"n_startup_trials": 5, "n_warmup_steps": _warmup(c)},
            "stop a trial below the median of earlier trials at the same epoch"),
    Factory("percentile", optuna.pruners.PercentilePruner,
            lambda c: {"percentile": 25.0, "n_startup_trials": 5, "n_warmup_steps": _warmup(c)},
            "stop a trial outside the top percentile at the same epoch"),
    Factory("successive_halving", optuna.pruners.SuccessiveHalvingPruner,
            lambda c: {"min_resource": max(1, int(c.get("epochs", 10)) // 9), "reduction_factor": 3},
            "asynchronous successive halving over epochs", check=_halving("successive_halving")),
    Factory("hyperband", optuna.pruners.HyperbandPruner,
            lambda c: {"min_resource": max(1, int(c.get("epochs", 10)) // 9),
                       "max_resource": int(c.get("epochs", 10)), "reduction_factor": 3},
            # Its brackets open the study again from the storage, as a study of several objectives.
            "Hyperband: several successive-halving brackets", several_objectives=False, check=_halving("hyperband")),
    Factory("wilcoxon", optuna.pruners.WilcoxonPruner, lambda c: {"p_threshold": 0.1},
            # It compares with the best trial, which a study of several objectives does not have.
            "Wilcoxon signed-rank test against the best trial's per-epoch values", several_objectives=False),
    Factory("patient", optuna.pruners.PatientPruner,
            lambda c: {"wrapped_pruner": optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                      n_warmup_steps=_warmup(c)),
                       "patience": 3},
            "median pruning that waits until a trial has not improved for `patience` epochs"),
    # One decision, a quarter of the way in: a schedule with warmup or a late decay is not judged epoch by
    # epoch on its early, uninformative values; past that point a trial runs to its end.
    Factory("top_third", optuna.pruners.PercentilePruner,
            lambda c: {"percentile": 100 / 3, "n_startup_trials": 5, "n_warmup_steps": _quarter(c),
                       "interval_steps": 10**9},
            "one check a quarter of the way in: keep the top third of trials at that epoch"),
    Factory("none", optuna.pruners.NopPruner, lambda c: {}, "never prune"),
):
    _PRUNERS.register(_f.name, _f)


def option_name(spec: str | dict[str, Any]) -> str:
    """The name of a sampler or pruner given as a name or as ``{"name": ..., **options}``."""
    return spec if isinstance(spec, str) else str(spec.get("name", "custom"))


def _named(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    options = dict(spec)
    return options.pop("name"), options


def build_sampler(spec: str | dict[str, Any], context: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """``spec`` is a name or ``{"name": ..., **options}``; ``context`` holds seed, epochs and grid, and
    ``multi`` for a study with several objectives."""
    name, options = _named(spec)
    with warnings.catch_warnings():  # the options tuner sets (TPE's group) are "experimental" to Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = _SAMPLERS.get(name).build(options, context, "sampler")
    return FirstObjectiveSampler(sampler) if context.get("multi") else sampler


class _FirstDirection:
    """A study with several objectives as a sampler sees it through ``FirstObjectiveSampler``."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return self._study.directions[0]


class FirstObjectiveSampler(optuna.samplers.BaseSampler):
    """A sampler for a study with several objectives. Optuna's TPE ranks pruned trials by their last reported
    value in ``study.direction``, which such a study does not have; tuner prunes on the first objective (the
    metric), so the sampler is shown that direction. Everything else is the wrapped sampler's."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler = sampler

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        return self.sampler.infer_relative_search_space(_FirstDirection(study), trial)

    def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        return self.sampler.sample_relative(_FirstDirection(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        return self.sampler.sample_independent(_FirstDirection(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial):  # type: ignore[no-untyped-def]
        self.sampler.before_trial(_FirstDirection(study), trial)

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        self.sampler.after_trial(_FirstDirection(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def build_pruner(spec: str | dict[str, Any], context: dict[str, Any]) -> optuna.pruners.BasePruner:
    name, options = _named(spec)
    with warnings.catch_warnings():  # PatientPruner and WilcoxonPruner are "experimental" to Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _PRUNERS.get(name).build(options, context, "pruner")


def pruner_notes(spec: str | dict[str, Any], pruner: optuna.pruners.BasePruner, epochs: int,
                 n_trials: int) -> list[str]:
    """What a study's pruner will do with its epochs and budget, where that is not what pruning is for: one
    given options that make it judge none of the epochs is said (no trial is ever pruned); one that prunes
    every trial of the budget (successive halving's or Hyperband's ``bootstrap_count`` at or over ``n_trials``:
    the first trials to reach each rung are pruned, after the last epoch too), or Hyperband with no bracket, is
    refused."""
    name = option_name(spec)
    if isinstance(pruner, optuna.pruners.NopPruner) or epochs < 1:
        return []
    low, high = getattr(pruner, "_min_resource", None), getattr(pruner, "_max_resource", None)
    if isinstance(pruner, optuna.pruners.HyperbandPruner) and isinstance(low, int) and isinstance(high, int) and \
            low > high:  # no bracket: it failed at the first report
        raise ConfigError(f"pruner: the {name!r} pruner's min_resource ({low}) must be at most its max_resource "
                          f"({high}; by default the study's epochs).")
    bootstrap = getattr(pruner, "_bootstrap_count", 0) or 0
    if bootstrap >= n_trials:
        raise ConfigError(f"pruner: the {name!r} pruner's bootstrap_count ({bootstrap}) prunes the first "
                          f"{bootstrap} trials to reach each rung, and the study has {n_trials}: none could "
                          f"complete. Lower it below n_trials.")
    if not isinstance(spec, dict) or len(spec) < 2:
        return []  # the defaults, which fit their epochs (with one or two epochs there is little to prune)
    if isinstance(pruner, (optuna.pruners.PercentilePruner, optuna.pruners.PatientPruner)):
        if not any(may_prune_at(pruner, step) for step in range(epochs)):
            inner = getattr(pruner, "_wrapped_pruner", pruner)
            warmup = getattr(inner, "_n_warmup_steps", None)
            return [f"pruner {name}: it judges none of the {epochs} epochs (n_warmup_steps {warmup}), so no trial "
                    f"is pruned; lower n_warmup_steps below {epochs}, or use pruner none"]
    if isinstance(low, int) and not isinstance(low, bool) and low >= epochs:
        # Its first rung is at step min_resource (steps count epochs from 0): past the last epoch.
        return [f"pruner {name}: its first rung would be at epoch {low + 1}, past the last of {epochs} (min_resource "
                f"{low}), so no trial is pruned; lower min_resource below {epochs}"]
    return []


def may_prune_at(pruner: optuna.pruners.BasePruner, step: int) -> bool:
    """Whether ``pruner`` can stop a trial that reported every epoch up to ``step`` at that step. Where it
    cannot (no pruner, the warm-up epochs, between a percentile pruner's interval steps, after the one check
    of ``top_third``), asking it would only cost a read of the whole study: on SQLite about as long as a small
    model trains an epoch. The answer is Optuna's own rule for reports at every step: a percentile or median
    pruner judges step ``s`` only when ``s >= n_warmup_steps`` and ``(s - n_warmup_steps) % interval_steps ==
    0``. A pruner this does not know is always asked."""
    if isinstance(pruner, optuna.pruners.NopPruner):
        return False
    if isinstance(pruner, optuna.pruners.PatientPruner):
        wrapped = getattr(pruner, "_wrapped_pruner", None)
        return wrapped is None or may_prune_at(wrapped, step)
    if isinstance(pruner, optuna.pruners.PercentilePruner):  # MedianPruner is one
        warmup, interval = pruner._n_warmup_steps, pruner._interval_steps
        return step >= warmup and (step - warmup) % interval == 0
    return True


def judges_by_complete_trials(pruner: optuna.pruners.BasePruner) -> bool:
    """Whether ``pruner`` decides from the judged trial's own reports and the study's COMPLETE trials alone
    (median, percentile and ``top_third``, ``patient`` around one of those, a threshold, none). Such a pruner
    can judge every epoch of a trial against one read of the study: nothing it looks at in other trials
    changes until another trial completes. Successive halving, Hyperband and Wilcoxon read running trials or
    write rung attributes, and are asked as Optuna asks them."""
    if isinstance(pruner, (optuna.pruners.NopPruner, optuna.pruners.ThresholdPruner)):
        return True
    if isinstance(pruner, optuna.pruners.PatientPruner):
        wrapped = getattr(pruner, "_wrapped_pruner", None)
        return wrapped is None or judges_by_complete_trials(wrapped)
    return type(pruner) in (optuna.pruners.PercentilePruner, optuna.pruners.MedianPruner)


def list_samplers() -> dict[str, str]:
    return {n: _SAMPLERS.get(n).description for n in _SAMPLERS}


def list_pruners() -> dict[str, str]:
    return {n: _PRUNERS.get(n).description for n in _PRUNERS}


def refuse_for_several_objectives(sampler: Any, pruner: Any) -> None:
    """A sampler or pruner that cannot run in a study of several objectives is refused before the study
    exists, naming the ones that can."""
    for kind, registry, spec in (("sampler", _SAMPLERS, sampler), ("pruner", _PRUNERS, pruner)):
        name = option_name(spec)
        factory = registry.get(name) if name in registry else None
        if factory is not None and not factory.several_objectives:
            able = ", ".join(n for n in registry if registry.get(n).several_objectives)
            raise ConfigError(f"objectives: the {name!r} {kind} runs in a study of one objective; with several "
                              f"use {able}.")
