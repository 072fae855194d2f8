"""One line per config, from the mapping ``TrainConfig.to_dict`` writes (a trial's record holds it), without
PyTorch: ``study show`` lists the best trials before PyTorch would have loaded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["config_line"]


def config_line(config: Mapping[str, Any]) -> str:
    """``adamw lr=3.00e-03 warmup_cosine bs=64 wd=1.0e-02``: the optimizer and its learning rate, the schedule,
    the batch size, and weight decay, dropout and the initialiser where they are set."""
    if not isinstance(config, Mapping):
        return "?"
    optimizer, schedule, init = (_named(config.get(key)) for key in ("optimizer", "schedule", "init"))
    regularization = config.get("regularization")
    regularization = regularization if isinstance(regularization, Mapping) else {}
    name = optimizer.get("name", "?")
    parts = [f"{name} lr={_number(optimizer.get('lr'), '.2e')}", str(schedule.get("name", "constant")),
             f"bs={config.get('batch_size', '?')}"]
    if regularization.get("weight_decay"):
        parts.append(f"wd={_number(regularization['weight_decay'], '.1e')}")
    if regularization.get("dropout"):
        parts.append(f"dropout={_number(regularization['dropout'], '.2f')}")
    if init.get("name", "default") != "default":
        parts.append(f"init={init['name']}")
    return " ".join(parts)


def _named(part: Any) -> Mapping[str, Any]:
    """A config part as a mapping: ``"adam"`` (a name alone, as a config file may say it) is ``{"name": "adam"}``."""
    if isinstance(part, str):
        return {"name": part}
    return part if isinstance(part, Mapping) else {}


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and not isinstance(value, bool) else "?"
