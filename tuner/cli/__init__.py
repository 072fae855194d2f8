"""The ``tuner`` command line (Typer)."""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    """The ``tuner`` script. Before anything else is imported, every storage password the process can see
    (``$TUNER_STORAGE``, URLs in the arguments) is remembered and standard output and error are wrapped to
    redact them, so that no path (an error of a driver, a traceback under ``--debug``, a log line) prints one."""
    from tuner._secrets import RedactingStream, remember_url

    remember_url(os.environ.get("TUNER_STORAGE"))
    for arg in sys.argv[1:]:
        if "://" in arg:
            remember_url(arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg)
    original_out, original_err = sys.stdout, sys.stderr
    sys.stdout = RedactingStream(lambda: original_out)  # type: ignore[assignment]
    sys.stderr = RedactingStream(lambda: original_err)  # type: ignore[assignment]
    try:
        _load_app()()
    except KeyboardInterrupt:  # while the app loads, before a command's own handler is in place
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:  # `tuner ... | head`: the reader has gone; the rest goes nowhere, quietly
            from tuner.cli._output import SIGPIPE_EXIT, quiet_pipe

            quiet_pipe(original_out)
            raise SystemExit(SIGPIPE_EXIT) from None


def _load_app() -> Any:
    from tuner.cli import _lrfind, _results  # noqa: F401  (register lr-find, spaces calibrate, study report|...)
    from tuner.cli._app import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load_app()
    raise AttributeError(f"module 'tuner.cli' has no attribute {name!r}")
