"""Where the built-in search spaces, objectives and study specs live.

A wheel carries them in ``tuner/_builtin/<folder>``; an editable install or a checkout reads the repository's
top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def builtin_dir(folder: str) -> Path:
    shipped = _PACKAGE / "_builtin" / folder
    if shipped.is_dir():
        return shipped
    return _PACKAGE.parent / folder


def builtin_names(folder: str, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{name: path}`` of the files in a built-in folder; names use '-' where file names use '_'."""
    directory = builtin_dir(folder)
    if not directory.is_dir():
        return {}
    return {
        p.stem.replace("_", "-"): p
        for p in sorted(directory.iterdir())
        if p.suffix in suffixes and not p.name.startswith(("_", "."))
    }
