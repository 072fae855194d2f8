"""tuner: tune a PyTorch model's optimizer settings with Optuna.

Example:
    >>> import tuner
    >>> config = tuner.load_config("best.yaml")
    >>> optimizer, scheduler = config.build(model, steps_per_epoch=len(loader))

    >>> result = tuner.tune(train_fn, space="default", n_trials=30)   # train_fn(ctx): ctx.config, ctx.report
    >>> config = tuner.suggest(trial, "adam-family")                   # inside your own Optuna objective
"""

from __future__ import annotations

__version__ = "0.1.0"

from tuner.config import InitConfig, OptimizerConfig, Regularization, ScheduleConfig, TrainConfig, load_config
from tuner.errors import ConfigError, DataError, StudyError, TunerError

__all__ = [
    "ConfigError",
    "TrialContext",
    "TuneResult",
    "suggest",
    "tune",
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


def __getattr__(name: str):
    # The tuning API pulls in Optuna; ``import tuner`` for load_config/build stays light without it.
    if name in ("tune", "suggest", "TrialContext", "TuneResult"):
        from tuner import _api

        return getattr(_api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
