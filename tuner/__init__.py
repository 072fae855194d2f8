"""tuner: tune a PyTorch model's optimizer settings with Optuna.

Example:
    >>> import tuner
    >>> config = tuner.load_config("best.yaml")
    >>> setup = config.setup(model, steps_per_epoch=len(loader))   # then setup.step(lambda: ...) per batch

    >>> result = tuner.tune(train_fn, space="default", n_trials=30)   # train_fn(ctx): ctx.config, ctx.report
    >>> config = tuner.suggest(trial, "adam-family")                   # inside your own Optuna objective
    >>> result = tuner.run_study(objective="mnist1d-mlp", n_trials=64)  # `tuner study create` from Python
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner._version import __version__
from tuner.errors import ConfigError, DataError, StudyError, TunerError

if TYPE_CHECKING:
    from tuner._api import TrialContext, TuneResult, suggest, tune
    from tuner._run import StudyResult, run_study
    from tuner._setup import TrainingSetup, seed_everything
    from tuner.config import InitConfig, OptimizerConfig, Regularization, ScheduleConfig, TrainConfig, load_config

__all__ = [
    "ConfigError",
    "TrialContext",
    "TuneResult",
    "StudyResult",
    "run_study",
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


# Everything that needs torch or Optuna is imported on first use: ``import tuner`` (and the ``tuner`` command's
# --help and listings) stay light.
_LAZY = {
    "tune": "tuner._api", "suggest": "tuner._api", "TrialContext": "tuner._api", "TuneResult": "tuner._api",
    "run_study": "tuner._run", "StudyResult": "tuner._run",
    "TrainingSetup": "tuner._setup", "seed_everything": "tuner._setup",
    **dict.fromkeys(("InitConfig", "OptimizerConfig", "Regularization", "ScheduleConfig", "TrainConfig",
                     "load_config"), "tuner.config"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
