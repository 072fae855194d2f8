"""SIGTERM and SIGINT as exceptions, and what is left of them where Python lost the exception.

A handler that raises runs between two bytecodes of the main thread. Where those belong to a weakref callback
or a ``__del__`` (a database connection being collected, say), Python prints "Exception ignored in ..." and goes
on as if nothing had happened: the run would then go to its end. The handlers note the signal here as well, and
the run checks the note where it can stop cleanly (before each trial, after each epoch, as a pool starts)."""

from __future__ import annotations

import signal

__all__ = ["Terminated", "clear_terminate", "interrupt", "note_terminate", "raise_if_terminated", "terminate",
           "terminate_pending"]

_PENDING: list[int] = []  # the signal whose exception may have been lost


class Terminated(SystemExit):
    """SIGTERM while a library call (``tune``, ``run_study``) runs trials, as the CLI takes it: the running
    trials are recorded as interrupted and their configs queued again, then the process exits with 143 (unless
    the caller catches this)."""

    def __init__(self) -> None:
        super().__init__(143)


def note_terminate(signum: int = signal.SIGTERM) -> None:
    """Called by a SIGTERM or SIGINT handler of ours before it raises."""
    _PENDING[:] = [signum]


def terminate(signum: int, frame: object) -> None:
    """A SIGTERM handler: ``Terminated``, noted in case Python loses it."""
    note_terminate()
    raise Terminated


def interrupt(signum: int, frame: object) -> None:
    """A SIGINT handler, as Python's own (``KeyboardInterrupt``), noted in case Python loses it."""
    note_terminate(signal.SIGINT)
    raise KeyboardInterrupt


def terminate_pending() -> int | None:
    """The signal whose exception may have been lost, if any."""
    return _PENDING[0] if _PENDING else None


def clear_terminate() -> None:
    _PENDING.clear()


def raise_if_terminated() -> None:
    """Raises ``Terminated`` where a SIGTERM came and its exception was lost (``KeyboardInterrupt`` for a
    SIGINT)."""
    if _PENDING:
        if _PENDING[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated
