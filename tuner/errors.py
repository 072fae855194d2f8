"""Errors a user can act on. The CLI prints their message as one line and exits 1."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["TunerError", "ConfigError", "DataError", "StudyError", "OutputError", "error_text", "unknown_name_message"]


class TunerError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class ConfigError(TunerError, ValueError):
    """A config, search space or study spec is invalid. Raised before anything is written."""


class DataError(TunerError, ValueError):
    """The data an objective loads cannot be trained on (empty, missing column, too small)."""


class StudyError(TunerError):
    """A study cannot be created, found or continued as asked."""


class OutputError(TunerError):
    """A result (export, report, table) cannot be written where asked; nothing half-written is left."""


def count(n: int, word: str) -> str:
    """``1 trial``, ``3 trials``: a number and its noun, plural where it is not one."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name meant by ``name``: the same but for case (``TPE``), the same words in another order
    (``cosine_warmup``), else the most alike."""
    valid = [str(v) for v in valid]
    words = sorted(re.split(r"[_\-\s]+", str(name).lower()))
    for v in valid:
        if v.lower() == str(name).lower() or sorted(re.split(r"[_\-\s]+", v.lower())) == words:
            return v
    matches = difflib.get_close_matches(str(name).lower(), [v.lower() for v in valid], n=1, cutoff=0.6)
    if matches:
        return next(v for v in valid if v.lower() == matches[0])
    # A shortened name (orth, poly, warm) or one with more to it (study_name, reduce_on_plateau): where a single
    # valid name fits either way, that one. (Not a looser likeness: 'nope' is not 'mine'.)
    low = str(name).lower().replace("-", "_")
    starts = [v for v in valid if len(low) >= 3 and v.lower().replace("-", "_").startswith(low)]
    if len(starts) == 1:
        return starts[0]
    inside = [v for v in valid if len(v) >= 4 and v.lower().replace("-", "_") in low]
    return inside[0] if len(inside) == 1 else None


def what_it_holds(data: object) -> str:
    """What a document that should be a mapping holds instead, in words: ``an empty file``, ``a list``."""
    if data is None:
        return "nothing (an empty file, or comments only)"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, (str, int, float, bool)):
        return f"a single value ({str(data)[:40]!r})"
    return type(data).__name__


def unknown_name_message(kind: str, name: object, valid: Iterable[str], *, limit: int | None = None,
                         more: str = "") -> str:
    """``Unknown optimizer 'adamw2'. Valid: adam, adamw, ... Did you mean 'adamw'?``; ``limit``: at most that
    many names listed (a storage's studies grow without end), then how many more and ``more``."""
    valid = sorted(valid)
    if not valid:  # e.g. a storage whose only study was deleted
        return f"Unknown {kind} {name!r}: there is none."
    listed = valid if limit is None or len(valid) <= limit else valid[:limit]
    rest = f" and {len(valid) - len(listed)} more" + (f" ({more})" if more else "") if len(listed) < len(valid) else ""
    message = f"Unknown {kind} {name!r}. Valid: {', '.join(listed)}{rest}."
    suggestion = closest(str(name), valid)
    if suggestion is not None:
        message += f" Did you mean {suggestion!r}?"
    return message


def error_text(exc: BaseException) -> str:
    """An exception in a line: its type and first line, cut after its first sentence where that is long."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(first) > 200:
        end = first.find(". ", 0, 200)
        first = first[:end + 1] if end > 0 else first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def unknown_device(device: object) -> str:
    """``Unknown device 'gpu'. Valid: ... Did you mean 'cuda'?``: an NVIDIA GPU is ``cuda`` to PyTorch."""
    name = str(device).strip().lower()
    meant = ("cuda" + name[3:] if name.startswith("gpu") and re.fullmatch(r"gpu(:\d+)?", name)
             else "cuda" if name in ("nvidia", "cuda0", "gpus") else "mps" if name in ("metal", "apple") else None)
    return f"Unknown device {device!r}. Valid: auto, cpu, cuda, cuda:N, mps." + (
        f" Did you mean {meant!r}?" if meant else "")
