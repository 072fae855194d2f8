"""tuner: tune a PyTorch model's optimizer settings with Optuna.

Example:
    >>> import tuner
    >>> config = tuner.load_config("best.yaml")
    >>> setup = config.setup(model, steps_per_epoch=len(loader))   # then setup.step(lambda: ...) per batch

    >>> result = tuner.tune(train_fn, space="default", n_trials=30)   # train_fn(ctx): ctx.config, ctx.report
    >>> config = tuner.suggest(trial, "adam-family")                   # inside your own Optuna objective
"""

from __future__ import annotations

from tuner._setup import TrainingSetup, seed_everything
from tuner._version import __version__
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
    "TrainingSetup",
    "TunerError",
    "__version__",
    "load_config",
    "seed_everything",
]


def __getattr__(name: str):
    # The tuning API pulls in Optuna; ``import tuner`` for load_config/build stays light without it.
    if name in ("tune", "suggest", "TrialContext", "TuneResult"):
        from tuner import _api

        return getattr(_api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
