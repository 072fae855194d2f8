"""Library logging and warnings that would drown the output of a run: quieted in every process tuner runs."""

from __future__ import annotations

import warnings


def quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*independent sampl.*")
