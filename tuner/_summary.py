"""One line per config, from the mapping ``TrainConfig.to_dict`` writes (a trial's record holds it), without
PyTorch: ``study show`` lists the best trials before PyTorch would have loaded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["config_line"]


def config_line(config: Mapping[str, Any]) -> str:
    """``adamw lr=3.00e-03 warmup_cosine bs=64 wd=1.0e-02``: the optimizer and its learning rate, the schedule,
    the batch size, and weight decay, dropout and the initialiser where they are set."""
    optimizer = config.get("optimizer") or {}
    schedule = config.get("schedule") or {}
    init = config.get("init") or {}
    regularization = config.get("regularization") or {}
    lr = optimizer.get("lr")
    parts = [f"{optimizer.get('name', '?')} lr={lr:.2e}" if isinstance(lr, int | float) else
             f"{optimizer.get('name', '?')} lr=?", schedule.get("name", "constant"), f"bs={config.get('batch_size')}"]
    if regularization.get("weight_decay"):
        parts.append(f"wd={regularization['weight_decay']:.1e}")
    if regularization.get("dropout"):
        parts.append(f"dropout={regularization['dropout']:.2f}")
    if init.get("name", "default") != "default":
        parts.append(f"init={init['name']}")
    return " ".join(parts)
