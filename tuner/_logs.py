"""Library logging and warnings that would drown the output of a run: quieted in every process tuner runs."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


def quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*independent sampl.*")


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's info lines ("A new study created in memory ...") kept out of the block's output; the caller's
    own verbosity is restored after it."""
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
