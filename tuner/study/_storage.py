"""Storage URLs: the embedded default, SQLite, Optuna's journal file, PostgreSQL and MySQL."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import optuna

from tuner.errors import ConfigError, StudyError

__all__ = ["default_storage", "open_storage", "mask_url", "storage_exists"]

DEFAULT_FILE = "tuner.db"
_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql", "mysql+pymysql")


def default_storage() -> str:
    """``$TUNER_STORAGE``, else a SQLite file ``tuner.db`` in the working directory."""
    return os.environ.get("TUNER_STORAGE") or f"sqlite:///{DEFAULT_FILE}"


def mask_url(url: str) -> str:
    """Hides passwords: ``postgresql://u:***@host/db``, and ``password=`` style query values."""
    masked = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"((?:ssl)?password=)[^&]*", r"\1***", masked, flags=re.IGNORECASE)


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url[len("journal:"):].removeprefix("//"))
    if "://" not in url and url.endswith((".journal", ".log", ".jsonl")):
        return Path(url)
    return None


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else ""


def storage_exists(url: str) -> bool:
    """False when the storage is a local file that does not exist yet (so reading it would create it)."""
    journal = _journal_path(url)
    if journal is not None:
        return journal.exists()
    if _scheme(url) == "sqlite":
        path = url.split(":///", 1)[-1].split("?", 1)[0]
        return path in ("", ":memory:") or Path(path).exists()
    return True


def repair_journal_tail(path: Path, lock: object | None = None) -> bool:
    """A process killed while appending can leave the journal's last line torn (no final newline); Optuna
    would glue the next record onto it and make the whole file unreadable. Under the journal's lock, the
    torn tail is cut off (kept in ``<file>.torn``); every complete record stays. Returns whether it cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    from optuna.storages.journal._file import get_lock_file

    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
    with get_lock_file(lock) if lock is not None else contextlib.nullcontext():
        data = path.read_bytes()
        if data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        Path(f"{path}.torn").write_bytes(data[keep:])
        with open(path, "r+b") as f:
            f.truncate(keep)
    import logging

    logging.getLogger(__name__).warning("%s: cut a torn last record (%d bytes, kept in %s.torn)", path,
                                        len(data) - keep, path)
    return True


SQLITE_TIMEOUT = 30.0  # seconds a writer waits for SQLite's lock before the write is retried


def _use_wal(url: str) -> None:
    """Write-ahead logging: readers never block the writer and workers wait less for each other. The mode
    is stored in the database file, so setting it once, before Optuna opens it, is enough."""
    import sqlite3

    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with sqlite3.connect(path, timeout=SQLITE_TIMEOUT) as con:
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise StudyError(f"Cannot open storage {url}: {exc}") from None


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """Opens (and for local files, creates) the storage behind a URL."""
    url = url or default_storage()
    journal = _journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        journal.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(journal))
        repair_journal_tail(journal, backend._lock)
        return JournalStorage(backend)
    scheme = _scheme(url)
    if scheme not in _SCHEMES:
        raise ConfigError(f"Unknown storage {mask_url(url)!r}. Valid: sqlite:///FILE, postgresql://USER@HOST/DB, "
                          f"mysql://..., journal:FILE (or a FILE ending in .journal).")
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if scheme.startswith("postgresql"):
        # An unreachable server is an error within seconds, not a hang.
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    if scheme == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
        _use_wal(url)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # driver missing, server unreachable, bad credentials
        message = mask_url(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise StudyError(f"Cannot open storage {mask_url(url)}: {message}") from None
