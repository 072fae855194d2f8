"""Where the user works: the command line or Python. A message names an option as the user sets it there
(``--batch-size 32,64`` for the command, ``batch_size=[32, 64]`` in ``tuner.run_study``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CALL: ContextVar[str] = ContextVar("tuner_python_call", default="")  # "": the command line

__all__ = ["from_python", "option"]


@contextlib.contextmanager
def from_python(call: str) -> Iterator[None]:
    """Inside the block, messages speak to a caller of ``call`` (e.g. ``tuner.run_study``)."""
    token = _CALL.set(call)
    try:
        yield
    finally:
        _CALL.reset(token)


def option(name: str, cli_value: str = "", py_value: str = "...") -> str:
    """An option as the user sets it: ``--n-trials 40`` on the command line, ``n_trials=40`` in Python (a flag
    without a value there: ``--force``, ``force=True``)."""
    if _CALL.get():
        return f"{name.replace('-', '_')}={py_value if py_value != '...' or not cli_value else cli_value}"
    return f"--{name}" + (f" {cli_value}" if cli_value else "")
