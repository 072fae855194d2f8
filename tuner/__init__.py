"""tuner: tune a PyTorch model's optimizer settings with Optuna.

Example:
    >>> import tuner
    >>> config = tuner.load_config("best.yaml")
    >>> optimizer, scheduler = config.build(model, steps_per_epoch=len(loader))
"""

from __future__ import annotations

__version__ = "0.1.0"

from tuner.config import InitConfig, OptimizerConfig, Regularization, ScheduleConfig, TrainConfig, load_config
from tuner.errors import ConfigError, DataError, StudyError, TunerError

__all__ = [
    "ConfigError",
    "DataError",
    "InitConfig",
    "OptimizerConfig",
    "Regularization",
    "ScheduleConfig",
    "StudyError",
    "TrainConfig",
    "TunerError",
    "__version__",
    "load_config",
]
