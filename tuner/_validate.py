"""Value checks shared by configs, spaces and specs, worded like scikit-learn's parameter validation."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from tuner.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """The valid values of one hyperparameter: a number in an interval, a bool, a pair, or a choice."""

    kind: str = "float"  # float | int | bool | pair | choice
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.kind == "bool":
            return "a bool"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        left = "(" if self.low_open or self.low == -math.inf else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        interval = f"{left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.kind == "pair":
            return f"a pair of floats, each in the range {interval}"
        noun = "an int" if self.kind == "int" else "a float"
        return f"{noun} in the range {interval}"

    def contains_number(self, value: float) -> bool:
        if not math.isfinite(value):  # inf passes "(0, inf]"-style bounds, but is no learning rate
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def check(self, value: Any) -> Any:
        """Returns the value normalised (int -> float, list -> tuple); raises ValueError if invalid."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
        elif self.kind == "choice":
            if value in self.choices:
                return value
        elif self.kind == "pair":
            if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
                if all(self.contains_number(float(v)) for v in value):
                    return tuple(float(v) for v in value)
        elif self.kind == "int":  # NumPy's ints too (a seed or batch size taken from an array), as a Python int
            if isinstance(value, numbers.Integral) and not isinstance(value, bool) and self.contains_number(value):
                return int(value)
        elif _is_number(value) and self.contains_number(float(value)):
            return float(value)
        if _is_number(value) and not math.isfinite(float(value)):
            raise ValueError(f"finite: {self.describe()}")
        raise ValueError(self.describe())


def _is_number(value: Any) -> bool:
    """An int or a float, NumPy's included (``numbers.Real``); not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return f"{x:g}"


POSITIVE = Bound("float", 0.0, math.inf, low_open=True)
NON_NEGATIVE = Bound("float", 0.0, math.inf)
UNIT_OPEN = Bound("float", 0.0, 1.0, high_open=True)  # [0, 1)
UNIT = Bound("float", 0.0, 1.0)
FRACTION_POSITIVE = Bound("float", 0.0, 1.0, low_open=True)  # (0, 1]
POSITIVE_INT = Bound("int", 1, math.inf)
NON_NEGATIVE_INT = Bound("int", 0, math.inf)
BOOL = Bound("bool")


def check_param(bounds: dict[str, Bound], key: str, value: Any, owner: str, where: str = "") -> Any:
    """Checks one named value against a table of bounds, with a scikit-learn style message."""
    prefix = f"{where}: " if where else ""
    if key not in bounds:
        valid = ", ".join(sorted(bounds)) or "none"
        raise ConfigError(f"{prefix}{owner} takes no parameter {key!r}. Valid parameters: {valid}.")
    try:
        return bounds[key].check(value)
    except ValueError as exc:
        raise ConfigError(
            f"{prefix}The {key!r} parameter of {owner} must be {exc}. Got {value!r} instead."
        ) from None
