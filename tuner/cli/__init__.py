"""The ``tuner`` command line (Typer)."""

from tuner.cli import _results  # noqa: F401  (registers study report|export|trials)
from tuner.cli._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
