"""One search-space entry: a fixed value or an Optuna distribution, parsed from YAML."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuner._yaml import line_of
from tuner.errors import ConfigError, unknown_name_message

_SCALAR = (int, float, str, bool, type(None))
_DIST_KEYS = {"type", "low", "high", "log", "step", "choices"}
MAX_STEPS = 1e12  # values on a stepped range; beyond that a step only breaks Optuna's decimal arithmetic


@dataclass(frozen=True)
class Param:
    """A fixed value (``distribution is None``) or a distribution to sample from."""

    value: Any = None
    distribution: BaseDistribution | None = None

    @property
    def fixed(self) -> bool:
        return self.distribution is None

    def sample(self, trial: optuna.Trial, name: str) -> Any:
        if self.distribution is None:
            return self.value
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(name, d.choices)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        assert isinstance(d, FloatDistribution)
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)

    def endpoints(self) -> list[Any]:
        """The values whose validity implies every sampled value is valid."""
        d = self.distribution
        if d is None:
            return [self.value]
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        return [d.low, d.high]

    def to_yaml(self) -> Any:
        d = self.distribution
        if d is None:
            return list(self.value) if isinstance(self.value, tuple) else self.value
        if isinstance(d, CategoricalDistribution):
            return {"choices": list(d.choices)}
        out: dict[str, Any] = {"low": d.low, "high": d.high}
        if isinstance(d, IntDistribution):
            out = {"type": "int", **out}
        if d.log:
            out["log"] = True
        if d.step is not None and not (isinstance(d, IntDistribution) and d.step == 1):
            out["step"] = d.step
        return out


def parse_param(raw: Any, where: str) -> Param:
    """Parses ``0.9``, ``[0.9, 0.999]``, ``{choices: [...]}`` or ``{low, high, log, step, type}``."""
    if isinstance(raw, _SCALAR):
        return Param(raw)
    if isinstance(raw, list):
        if not all(isinstance(v, _SCALAR) for v in raw):
            raise ConfigError(f"{where}: a fixed list may hold only numbers, strings, bools or null.")
        return Param(tuple(raw))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a value, {{choices: [...]}} or {{low: ..., high: ...}}. Got {raw!r}.")
    unknown = set(raw) - _DIST_KEYS
    if unknown:
        raise ConfigError(f"{where}: " + unknown_name_message("key", sorted(unknown)[0], _DIST_KEYS))
    if "choices" in raw:
        return _categorical(raw, where)
    return _numeric(raw, where)


def _categorical(raw: dict[str, Any], where: str) -> Param:
    extra = set(raw) - {"choices", "type"}
    if extra:
        raise ConfigError(f"{where}: 'choices' cannot be combined with {sorted(extra)[0]!r}.")
    choices = raw["choices"]
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: 'choices' must be a non-empty list. Got {choices!r} instead.")
    if not all(isinstance(c, _SCALAR) for c in choices):
        raise ConfigError(f"{where}: choices may be numbers, strings, bools or null. Got {choices!r}.")
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}: choices contain a duplicate: {choices!r}.")
    if len(choices) == 1:
        return Param(choices[0])
    return Param(distribution=CategoricalDistribution(choices))


def _numeric(raw: dict[str, Any], where: str) -> Param:
    kind = raw.get("type", "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}: 'type' must be 'float', 'int' or absent with 'choices'. Got {kind!r}.")
    missing = [k for k in ("low", "high") if k not in raw]
    if missing:
        raise ConfigError(f"{where}: the {missing[0]!r} key is missing (a range needs 'low' and 'high').")
    low, high, log, step = raw["low"], raw["high"], raw.get("log", False), raw.get("step")
    for key, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: {key!r} must be a finite number. Got {value!r} instead.")
        if kind == "int" and not float(value).is_integer():
            raise ConfigError(f"{where}: {key!r} must be an integer for type 'int'. Got {value!r} instead.")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: 'log' must be true or false. Got {log!r} instead.")
    if low >= high:
        raise ConfigError(f"{where}: 'low' must be less than 'high'. Got low={low!r}, high={high!r}.")
    if log and low <= 0:
        raise ConfigError(f"{where}: `low > 0` must hold for `log=True`. Got low={low!r}.")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: 'step' must be positive. Got {step!r}.")
    if log and step is not None and not (kind == "int" and step == 1):
        raise ConfigError(f"{where}: 'step' cannot be combined with 'log: true'.")
    span = float(high) - float(low)
    if not math.isfinite(span):
        raise ConfigError(f"{where}: the range from {low!r} to {high!r} is too wide to sample.")
    if step is not None and span / float(step) > MAX_STEPS:
        raise ConfigError(f"{where}: 'step' {step!r} cuts the range into {span / float(step):.3g} values "
                          f"(at most {MAX_STEPS:.0e}); use a larger step or no step.")
    if step is not None:
        steps = span / float(step)
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):  # Optuna would lower 'high' to the last step
            last = float(low) + math.floor(steps + 1e-9) * float(step)
            fits = span / max(1, round(steps))
            end = f"{int(last)}" if kind == "int" else f"{last:.6g}"
            raise ConfigError(f"{where}: 'step' {step!r} does not divide the range from {low!r} to {high!r} "
                              f"({steps:.3g} steps), so the range would end at {end}, not {high!r}. Write "
                              f"high: {end}, or a step that divides the range"
                              + (f" (such as {fits:.6g})" if kind == "float" else "") + ".")
    try:
        if kind == "int":
            return Param(distribution=IntDistribution(int(low), int(high), log=log, step=int(step or 1)))
        return Param(distribution=FloatDistribution(float(low), float(high), log=log,
                                                    step=None if step is None else float(step)))
    except (ValueError, ArithmeticError) as exc:  # Optuna's own checks, e.g. Decimal on extreme steps
        raise ConfigError(f"{where}: invalid range: {exc}") from None


def location(source: str, mapping: Any, key: Any, path: str) -> str:
    """``file.yaml:12: key 'optimizer.adamw.lr'`` (without the line when unknown)."""
    line = line_of(mapping, key)
    at = f"{source}:{line}" if line else source
    return f"{at}: key {path!r}"


def center(param: Param) -> Any:
    """A representative value of an entry: a fixed value itself, the middle choice of a categorical one, the
    geometric middle of a log range, the middle of a linear one (on the step grid where there is one)."""
    d = param.distribution
    if d is None:
        return param.value
    if isinstance(d, CategoricalDistribution):
        return d.choices[(len(d.choices) - 1) // 2]
    mid = math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2
    if d.step is not None:
        mid = d.low + round((mid - d.low) / d.step) * d.step
    return int(round(mid)) if isinstance(d, IntDistribution) else float(mid)
