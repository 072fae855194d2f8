"""The ``tuner`` command line (Typer)."""

from tuner.cli._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
