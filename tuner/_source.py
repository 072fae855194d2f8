"""Python source as text: literals that read back as the same values, calls broken to fit a line.

The registries write what the Python export puts in its script for each of their entries
(``ScheduleInfo.source``, ``InitInfo.source``, ``OptimizerInfo.python_source``), and what the Keras export
writes (their ``keras_source``); ``tuner.export`` assembles those pieces. All use these helpers, so that every
number is written the same way.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["INDENT", "WIDTH", "call", "literal", "qualified"]

WIDTH = 100  # lines longer than this are broken up
INDENT = "    "


def literal(value: Any) -> str:
    """A Python expression for ``value``; floats round-trip exactly (``repr``), infinities use ``math.inf``."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return "math.inf" if value > 0 else "-math.inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted literal that Python reads back unchanged
    if isinstance(value, tuple):
        items = [literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"Cannot write {type(value).__name__} value {value!r} as a Python literal.")


def call(indent: str, prefix: str, args: list[str], width: int = WIDTH) -> list[str]:
    """``prefix(arg, ...)`` on one line, or one argument per line when that is longer than ``width``."""
    line = f"{indent}{prefix}({', '.join(args)})"
    if len(line) <= width:
        return [line]
    return [f"{indent}{prefix}("] + [f"{indent}{INDENT}{arg}," for arg in args] + [f"{indent})"]


def qualified(cls: type, module: Any, module_name: str) -> str:
    """``nn.Linear`` / ``torch.optim.AdamW`` for classes the module exports, else the full dotted name."""
    if getattr(module, cls.__name__, None) is cls:
        return f"{module_name}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"
