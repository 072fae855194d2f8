"""Passwords in storage URLs: masked wherever a URL is shown, and redacted from anything printed.

``mask_url`` hides the password of one URL by its structure. Every password it (or ``remember_url``) sees is
also remembered, so that ``redact`` can scrub it from any text: an error message of a database driver, a
traceback under ``--debug``, a log line. The CLI writes all of its output through ``redact``.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from typing import TextIO
from urllib.parse import unquote

__all__ = ["mask_url", "remember_url", "redact", "has_password", "RedactingStream", "MASK"]

MASK = "***"
# Shorter values would mask ordinary words in the output; structural masking still hides them in URLs.
_MIN_SECRET = 4
_QUERY_SECRET = re.compile(r"((?:ssl)?pass(?:word)?=)([^&\s'\"]*)", re.IGNORECASE)
_secrets: set[str] = set()
_lock = threading.Lock()


def _userinfo_password(url: str) -> tuple[int, int] | None:
    """The span of the password in ``scheme://user:password@host/...``, or None. The last ``@`` before
    the host ends it, so a password holding an unescaped ``@`` or ``:`` is still covered whole."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    at = url.rfind("@", start)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    if colon < 0 or "/" in url[start:colon]:  # a path (sqlite:///a:b@c.db), not user:password
        return None
    return colon + 1, at


def has_password(url: str) -> bool:
    span = _userinfo_password(url)
    return (span is not None and span[1] > span[0]) or bool(_QUERY_SECRET.search(url))


def remember_url(url: str | None) -> None:
    """Remembers the passwords of ``url`` so that ``redact`` hides them from any text."""
    if not url:
        return
    found = []
    span = _userinfo_password(url)
    if span is not None:
        found.append(url[span[0]:span[1]])
    found += [m.group(2) for m in _QUERY_SECRET.finditer(url)]
    with _lock:
        for secret in found:
            # A raw "@" or ":" in a password can make a driver take part of it for the host: its pieces too.
            pieces = {secret, unquote(secret), *re.split(r"[@:/]", unquote(secret))}
            _secrets.update(p for p in pieces if len(p) >= _MIN_SECRET)


def mask_url(url: str) -> str:
    """``postgresql://u:***@host/db``; query values such as ``password=`` and ``sslpassword=`` too."""
    remember_url(url)
    span = _userinfo_password(url)
    if span is not None and span[1] > span[0]:
        url = url[:span[0]] + MASK + url[span[1]:]
    return redact(_QUERY_SECRET.sub(lambda m: m.group(1) + MASK, url))


def redact(text: str) -> str:
    """``text`` with every remembered password replaced by ``***``."""
    if not _secrets or not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            # Not inside a longer word: a password "pass" leaves "password=" as it is (where it ends in a letter
            # or digit; other characters cannot run on into a word).
            text = re.sub(("(?<![A-Za-z0-9])" if secret[0].isalnum() else "") + re.escape(secret)
                          + ("(?![A-Za-z0-9])" if secret[-1].isalnum() else ""), MASK, text)
    return text


class RedactingStream(io.TextIOBase):
    """Writes to ``target()`` (looked up at every write, so a test runner's capture is honoured) with every
    remembered password replaced by ``***``."""

    def __init__(self, target: Callable[[], TextIO]) -> None:
        self._target = target

    def write(self, text: str) -> int:
        self._target().write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        isatty = getattr(self._target(), "isatty", None)
        return bool(isatty and isatty())

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._target(), "errors", None)
