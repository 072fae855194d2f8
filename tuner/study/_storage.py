"""Storage URLs: the embedded default, SQLite, Optuna's journal file, PostgreSQL and MySQL.

A storage is opened either to write (create, run) or to read (list, show, trials, export, report). Reading
never changes it: no tables are created, no journal mode is switched, no journal is repaired, and a local
file that does not exist is not created. Either way, a local file that is not an Optuna storage (another
application's SQLite database, a log file, a ``.jsonl`` of another program) is refused, byte for byte
untouched. A journal is only ever a file named ``*.journal`` or given as ``journal:PATH``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._file import get_lock_file

from tuner._files import is_disk_full, os_error_message
from tuner._secrets import has_password, mask_url, remember_url
from tuner.errors import ConfigError, StudyError, TunerError

__all__ = ["default_storage", "open_storage", "check_storage", "mask_url", "storage_exists", "storage_lock",
           "storage_label", "storage_hint", "explain_storage_error", "local_path"]

log = logging.getLogger(__name__)

DEFAULT_FILE = "tuner.db"
_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql", "mysql+pymysql")
# Optuna's tables; a SQLite file holding any other table belongs to another application.
OPTUNA_TABLES = {
    "studies", "study_directions", "study_user_attributes", "study_system_attributes", "trials", "trial_params",
    "trial_values", "trial_intermediate_values", "trial_user_attributes", "trial_system_attributes",
    "trial_heartbeats", "version_info", "alembic_version",
}
SQLITE_INTERNAL = {"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"}
SQLITE_TIMEOUT = 30.0  # seconds a writer waits for SQLite's lock before the write is retried
JOURNAL_LOCK_GRACE = 30.0  # Optuna's: seconds after which a journal lock that has not changed is stale
_held: dict[tuple[str, int], int] = {}  # local storage locks this process holds, by (lock file, thread)
LOCK_TIMEOUT = 300.0  # seconds a process waits for another's lock on a server storage
LOW_SPACE = 1 << 20  # bytes: below this much free space, a failed write is reported as a full disk


def default_storage() -> str:
    """``$TUNER_STORAGE``, else a SQLite file ``tuner.db`` in the working directory."""
    url = os.environ.get("TUNER_STORAGE") or f"sqlite:///{DEFAULT_FILE}"
    remember_url(url)
    return url


def from_environment(url: str, variable: str = "TUNER_STORAGE") -> str:
    """`` (from $TUNER_STORAGE)`` where ``url`` is that variable's value: a storage named by a stale shell
    setting, which the command line never showed."""
    return f" (from ${variable})" if url and os.environ.get(variable) == url else ""


def storage_label(url: str) -> str:
    """How a storage is shown to the user: its URL with any password masked."""
    return mask_url(url)


def storage_hint(url: str, given: bool) -> str:
    """The ``--storage`` part of a command the user is told to run: the URL itself when it holds no secret,
    else a placeholder (the URL with its password would end up in the shell history)."""
    if not given:
        return ""
    if has_password(url):
        return (" --storage <your URL>" if os.environ.get("TUNER_STORAGE") != url
                else "")  # $TUNER_STORAGE already points there
    import shlex

    return f" --storage {shlex.quote(url)}"


def study_command(verb: str, name: str, url: str | None = None, *extra: str) -> str:
    """A ``tuner study VERB NAME ...`` command line the user is told to run, with ``--storage`` where the study
    is not in the default storage (so that copying it finds the study)."""
    import shlex

    url = url or default_storage()
    return shlex.join(["tuner", "study", verb, name, *extra]) + storage_hint(url, given=url != default_storage())


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url[len("journal:"):].removeprefix("//"))
    if "://" not in url and url.endswith(".journal"):
        return Path(url)
    return None


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else ""


def _sqlite_path(url: str) -> str:
    """The file of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``; "" for ``sqlite://`` (memory)."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    return rest[1:].split("?", 1)[0] if rest.startswith("/") else ""


def local_path(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (None for servers and in-memory SQLite)."""
    journal = _journal_path(url)
    if journal is not None:
        return journal
    if _scheme(url) == "sqlite":
        path = _sqlite_path(url)
        return Path(path) if path and path != ":memory:" else None
    return None


def storage_exists(url: str) -> bool:
    """False when the storage is a local file that does not exist yet (so reading it would create it)."""
    path = local_path(url)
    if path is not None:
        return path.exists()
    return True


def check_storage_arg(storage: Any, example: str = "sqlite:///tuner.db") -> None:
    """A storage given from Python must be a URL string (tuner opens it itself, so that workers and later runs
    can too): a ``Path`` is told the SQLite URL to write, anything else what to pass."""
    if storage is None or isinstance(storage, str):
        return
    hint = (f" (for a SQLite file: storage='sqlite:///{storage}')" if isinstance(storage, os.PathLike) else
            " (tuner opens the storage itself, so that workers and later runs can too)")
    raise ConfigError(f"storage must be a URL string such as '{example}' or 'postgresql://user@host/db'; got "
                      f"{type(storage).__name__}{hint}.")


def study_in_storage(name: str, url: str | None) -> bool:
    """Whether study ``name`` is in the storage already (``study create`` then joins it), read without writing:
    False where the storage does not exist yet or cannot be read as one (a new PostgreSQL database)."""
    url = url or default_storage()
    if not storage_exists(url):
        return False
    try:
        return name in optuna.get_all_study_names(open_storage(url, readonly=True))
    except TunerError:
        return False


def _check_scheme(url: str) -> None:
    if _scheme(url) == "sqlite":
        path = _sqlite_path(url)
        if not path or path == ":memory:":
            raise ConfigError(f"{url!r}{from_environment(url)} is an in-memory database: the study would be lost "
                              f"when the command ends. "
                              f"Give a file: sqlite:///tuner.db.")
        if path.startswith("file:") or "uri=true" in url.split("?", 1)[-1].lower().replace(" ", ""):
            raise ConfigError(f"SQLite URI file names are not taken ({mask_url(url)!r}{from_environment(url)}): "
                              f"give the file as "
                              f"sqlite:///PATH.")
    if _journal_path(url) is not None or _scheme(url) in _SCHEMES:
        return
    hint = ""
    if _scheme(url) in ("postgres", "postgres+psycopg2", "postgres+psycopg"):
        hint = " PostgreSQL's scheme is postgresql:// (postgres:// is not taken)."
    elif "://" not in url:
        scheme, colon, rest = url.partition(":")
        file = rest if colon and scheme.lower() in ("sqlite", "journal") else url
        file = "/" + file.lstrip("/") if file.startswith("/") else file  # sqlite:/x.db: the absolute /x.db
        hint = (f" A file needs a scheme: sqlite:///{file} (SQLite) or journal:{file} (Optuna's journal file; "
                f"only files named *.journal are taken as journals without it).")
    raise ConfigError(f"Unknown storage {mask_url(url)!r}{from_environment(url)}. Valid: sqlite:///FILE, "
                      f"postgresql://USER@HOST/DB, "
                      f"mysql://USER@HOST/DB, journal:FILE (or a FILE ending in .journal).{hint}")


def _check_regular(path: Path, what: str) -> os.stat_result | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StudyError(f"Cannot open storage {path}: {os_error_message(exc, path)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise StudyError(f"Cannot open storage {path}: it is a folder; give a {what} file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise StudyError(f"Cannot open storage {path}: it is not a regular file.")
    return info


# SQLite files on read-only media (a read-only mount or folder): read as unchanging files. SQLite cannot open a
# write-ahead-log database there read-only, as it must make its shared-memory file beside it.
_IMMUTABLE: set[Path] = set()


def _ro_uri(path: Path) -> str:
    from urllib.parse import quote

    resolved = path.resolve()
    return f"file:{quote(str(resolved))}?mode=ro" + ("&immutable=1" if resolved in _IMMUTABLE else "")


def _refuse_read_only(path: Path) -> None:
    """Refuses a command that writes to a storage file on read-only media, before any work."""
    if path.exists() and _read_only_medium(path):
        raise StudyError(f"Cannot write to the storage {path}: its folder {path.parent} is read-only. Commands "
                         f"that only read (study list, show, trials, export --no-confirm, report --no-confirm) read "
                         f"it there; to run or change a study, copy the file to a writable folder.")


def _read_only_medium(path: Path) -> bool:
    """Whether this process can read the file but can write neither it nor its folder."""
    return (os.access(path, os.R_OK) and not os.access(path.parent, os.W_OK | os.X_OK)
            and not path.with_name(path.name + "-shm").exists())


def _table_names(path: Path) -> tuple[set[str] | None, str]:
    """The tables of a SQLite file read through a read-only connection, else None and SQLite's error."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{_ro_uri(path)}&uri=true",
                                      connect_args={"timeout": SQLITE_TIMEOUT}, poolclass=sqlalchemy.pool.NullPool)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names()), ""
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return None, str(getattr(exc, "orig", None) or exc).splitlines()[0]
    finally:
        engine.dispose()


def _sqlite_tables(path: Path, readonly: bool) -> set[str] | None:
    """The tables of an existing SQLite file, read without changing it; None for an empty (new) file.

    The file is only ever opened through SQLite: a plain ``open``/``close`` of a database by a process that
    also holds SQLite connections to it drops SQLite's POSIX locks, and another process may then delete
    the write-ahead log under those connections."""
    info = _check_regular(path, "SQLite")
    if info is None or info.st_size == 0:
        return None
    # Read through a read-only connection: whatever state the file is in (another application's, a rollback
    # journal left by a crash), nothing is rolled back, checkpointed or created in it.
    tables, error = _table_names(path)
    if tables is None and "unable to open" in error and _read_only_medium(path):
        _IMMUTABLE.add(path.resolve())
        tables, error = _table_names(path)
    if tables is not None:
        if not readonly:
            _refuse_read_only(path)
        return tables
    if "not a database" in error:
        raise StudyError(f"{path} is not a SQLite database; tuner leaves it untouched. Give a new file name, "
                         f"e.g. sqlite:///tuner.db.")
    raise StudyError(f"Cannot read SQLite database {path}: {error}"
                     + ("" if readonly else "; tuner leaves it untouched."))


SCHEMA_WAIT = 5.0  # seconds: how long a file with some of Optuna's tables may take to get the rest


def _changes(path: Path) -> tuple[tuple[int, int], ...]:
    """The modification times and sizes of the SQLite file, its write-ahead log and its rollback journal (read
    from the directory: the file is not opened)."""
    found = []
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")):
        with contextlib.suppress(OSError):
            info = p.stat()
            found.append((info.st_mtime_ns, info.st_size))
    return tuple(found)


def _seconds_since_change(changes: tuple[tuple[int, int], ...]) -> float:
    return time.time() - max((mtime for mtime, _ in changes), default=0) / 1e9


def _check_sqlite(path: Path, readonly: bool) -> set[str] | None:
    tables = _sqlite_tables(path, readonly)
    own = (tables or set()) - SQLITE_INTERNAL
    # Another process may be creating Optuna's tables in this file right now (two `study create` on a new
    # file at once): they appear one after another, the version table among the last. Only a file whose tables
    # stay short of an Optuna storage for a few seconds is another application's. A file looked at twice, that
    # did not change in between and that nobody wrote for that long by its clock, is not being created
    # (another application's old database is said at once; a file server's clock behind this one's is met by
    # the second look).
    deadline = time.monotonic() + SCHEMA_WAIT
    seen = None
    while own and own <= OPTUNA_TABLES and "version_info" not in own and time.monotonic() < deadline:
        now = (_changes(path), frozenset(own))
        if now == seen and _seconds_since_change(now[0]) >= SCHEMA_WAIT:
            break
        seen = now
        time.sleep(0.1)
        tables = _sqlite_tables(path, readonly)
        own = (tables or set()) - SQLITE_INTERNAL
    # An Optuna storage has only Optuna's tables, among them its version table; a file with a table called
    # "trials" or "studies" and nothing else belongs to someone else.
    if own and not (own <= OPTUNA_TABLES and "version_info" in own):
        foreign = sorted(own - OPTUNA_TABLES) or sorted(own)
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StudyError(f"{path} is the SQLite database of another application (tables: {shown}) and holds no "
                         f"Optuna storage; tuner leaves it untouched. Give another file, e.g. "
                         f"sqlite:///tuner.db.")
    return tables


def _journal_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("op_code"), int) and "worker_id" in record


def _check_journal(path: Path) -> None:
    """A journal's first line is an Optuna record; a file whose only line is torn mid-record is one too."""
    info = _check_regular(path, "journal")
    if info is None or info.st_size == 0:
        return
    with open(path, "rb") as handle:
        first = handle.readline(1 << 20)
    complete = first.endswith(b"\n")
    if (complete and _journal_record(first)) or (not complete and first.startswith(b'{"op_code"')):
        return
    shown = first[:40].decode("utf-8", errors="replace").rstrip()
    raise StudyError(f"{path} is not an Optuna journal (its first line is {shown!r}); tuner leaves it "
                     f"untouched. Give a new file, e.g. journal:tuner.journal.")


class _JournalLock(JournalFileSymlinkLock):
    """Optuna's lock (a symbolic link made beside the journal), linking to the journal's bare file name:
    resolved from the link's own folder, it names the journal from any working directory and on any machine
    that mounts the folder elsewhere. Optuna links to the path as given, which for a journal in a folder
    (``sub/x.journal``) points to ``sub/sub/x.journal``: a lock left by a killed process then dangles, and
    Optuna, unable to read its age, waits on it forever."""

    def __init__(self, filepath: str) -> None:
        super().__init__(filepath)
        self._lock_target_file = os.path.basename(filepath)


class _JournalBackend(JournalFileBackend):
    """Optuna's journal file, whose appends first cut a torn last record (a process killed while it wrote, while
    others go on): appended after it, the next record would be glued onto it and the file unreadable by every
    process from then on."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock), open(self._file_path, "a+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end:  # the last byte, read through the handle that appends: a torn tail is cut first
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    repair_journal_tail(Path(self._file_path))  # under the lock held here
            f.write(text.encode("utf-8"))  # appended at the end of the file as it now is
            f.flush()
            os.fsync(f.fileno())


def _release_dangling_lock(path: Path) -> None:
    """A journal lock left by a killed process as a symbolic link to a path that does not exist (made with a
    relative path) is never released by Optuna, which waits on it forever: removed once older than Optuna's
    grace period (a live holder keeps its lock for milliseconds)."""
    lock = Path(f"{path}.lock")
    try:
        if lock.is_symlink() and not lock.exists() and time.time() - lock.lstat().st_mtime > JOURNAL_LOCK_GRACE:
            lock.unlink()
            log.warning("%s: removed a stale lock left by a process that was killed", lock)
    except OSError:
        pass


def repair_journal_tail(path: Path, lock: object | None = None) -> bool:
    """A process killed while appending can leave the journal's last line torn (no final newline); Optuna
    would glue the next record onto it and make the whole file unreadable. Under the journal's lock, the
    torn tail is cut off (kept in ``<file>.torn``); every complete record stays. Returns whether it cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
    with get_lock_file(lock) if lock is not None else contextlib.nullcontext():
        data = path.read_bytes()
        if data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        with open(f"{path}.torn", "ab") as torn:  # added to what earlier repairs kept, never over it
            torn.write(data[keep:] + b"\n")
        with open(path, "r+b") as f:
            f.truncate(keep)
    log.warning("%s: cut a torn last record (%d bytes, kept in %s.torn)", path,
                                        len(data) - keep, path)
    return True


def _use_wal(path: Path) -> None:
    """Write-ahead logging: readers never block the writer and workers wait less for each other. The mode
    is stored in the database file, so setting it once, before Optuna opens it, is enough."""
    import sqlite3

    with sqlite3.connect(path, timeout=SQLITE_TIMEOUT) as con:
        con.execute("PRAGMA journal_mode=WAL")


def explain_storage_error(exc: BaseException, url: str) -> str:
    """One line for a failed storage operation: ``disk full (/path/tuner.db)`` when it is one."""
    path = local_path(url)
    where = str(path) if path is not None else mask_url(url)
    if is_disk_full(exc) or (path is not None and _free_bytes(path) < LOW_SPACE):
        return f"disk full ({where})"
    cur = _root(exc)
    text = str(cur).splitlines()[0] if str(cur) else type(cur).__name__
    hint = ""
    if isinstance(cur, ImportError):  # the database's driver is not installed: the package that holds it
        module = (cur.name or "").split(".")[0]
        package = {"psycopg": "'psycopg[binary]' (or tuner's postgres extra)", "psycopg2": "psycopg2-binary",
                   "MySQLdb": "mysqlclient (or pymysql, with mysql+pymysql://USER@HOST/DB)",
                   "pymysql": "pymysql"}.get(module)
        hint = f" (the database driver is missing: pip install {package})" if package else ""
    return mask_url(f"{type(cur).__name__}: {text}{hint}")[:500]


def _root(exc: BaseException) -> BaseException:
    """The driver's own error under Optuna's generic wrapper ("An exception is raised during the commit ...
    e.g. exceeding max length" for a SQLite database that is locked)."""
    cur = exc
    for _ in range(10):
        nxt = cur.__cause__ or cur.__context__
        if nxt is None:
            break
        cur = nxt
    return cur


def storage_error_text(exc: BaseException) -> str:
    """One line for a storage error in a warning: the driver's error (``OperationalError: database is
    locked``), credentials masked."""
    cur = _root(exc)
    text = str(cur).splitlines()[0] if str(cur) else ""
    return mask_url(f"{type(cur).__name__}: {text}" if text else type(cur).__name__)[:300]


def _free_bytes(path: Path) -> int:
    folder = path.parent if not path.is_dir() else path
    try:
        return shutil.disk_usage(folder if folder.exists() else Path.cwd()).free
    except OSError:
        return 1 << 62


def check_storage_url(url: str) -> None:
    """Refuses a storage URL whose form tuner cannot use (no scheme, an in-memory database), reading nothing."""
    _check_scheme(url)


def check_storage(url: str) -> None:
    """Refuses a URL tuner cannot use, or a local file that is not an Optuna storage, without creating or
    changing anything (not even a lock file beside it)."""
    remember_url(url)
    _check_scheme(url)
    journal = _journal_path(url)
    if journal is not None:
        _check_journal(journal)
    elif _scheme(url) == "sqlite" and local_path(url) is not None:
        _check_sqlite(local_path(url), readonly=True)  # type: ignore[arg-type]


def open_storage(url: str | None = None, *, readonly: bool = False) -> optuna.storages.BaseStorage:
    """Opens the storage behind a URL: to write (a local file is created, a torn journal tail is cut) or,
    with ``readonly``, to read without changing anything. Foreign files are refused either way."""
    url = url or default_storage()
    remember_url(url)
    _check_scheme(url)
    journal = _journal_path(url)
    if journal is not None:
        return _open_journal(journal, url, readonly)
    scheme = _scheme(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if scheme.startswith("postgresql"):
        # An unreachable server is an error within seconds, not a hang.
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    rdb_url = url
    if scheme == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
        path = local_path(url)
        if path is not None:
            tables = _check_sqlite(path, readonly)
            if readonly:
                if not tables or "studies" not in tables:
                    return optuna.storages.InMemoryStorage()  # nothing stored yet; nothing created
                rdb_url = f"sqlite:///{_ro_uri(path)}&uri=true"
            else:
                _check_folder(path, url)
    try:
        if readonly and scheme == "sqlite":
            return optuna.storages.RDBStorage(rdb_url, engine_kwargs=engine_kwargs, skip_table_creation=True)
        if readonly:
            # Optuna writes its version rows (and creates alembic's table) on every open, tables skipped or not:
            # on a server whose storage another process is setting up, that races its CREATE TABLEs
            # ("duplicate key ... pg_type_typname_nsp_index"). It waits for the set-up, as a writer does.
            with storage_lock(url, "init"):
                return optuna.storages.RDBStorage(rdb_url, engine_kwargs=engine_kwargs, skip_table_creation=True)
        # Creating the tables of a new storage is not safe from two processes at once ("table ... already
        # exists"): one process at a time sets a storage up.
        with storage_lock(url, "init"):
            if scheme == "sqlite" and local_path(url) is not None:
                _use_wal(local_path(url))  # type: ignore[arg-type]
            return optuna.storages.RDBStorage(rdb_url, engine_kwargs=engine_kwargs)
    except StudyError:
        raise
    except Exception as exc:  # driver missing, server unreachable, bad credentials, disk full
        raise StudyError(f"Cannot open storage {mask_url(url)}: {explain_storage_error(exc, url)}") from None


def _check_folder(path: Path, url: str) -> None:
    """A storage file goes into a folder that exists: a mistyped folder made a new, empty storage where nobody
    would look for it (as ``-o nodir/best.yaml`` is refused, so is ``--storage sqlite:///nodir/tuner.db``)."""
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise StudyError(f"Cannot open storage {mask_url(url)}: the folder {folder} {what} (make it first, or "
                         f"check the path).")


def _open_journal(path: Path, url: str, readonly: bool) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalStorage

    _check_journal(path)
    if readonly and not path.exists():
        return optuna.storages.InMemoryStorage()
    if not readonly:
        _refuse_read_only(path)
        _check_folder(path, url)
    try:
        if not readonly:
            _release_dangling_lock(path)
        lock = _JournalLock(str(path))
        backend = (_JournalBackend if not readonly else JournalFileBackend)(str(path), lock_obj=lock)
        if not readonly:
            repair_journal_tail(path, backend._lock)
        return JournalStorage(backend)
    except Exception as exc:
        raise StudyError(f"Cannot open journal {path}: {explain_storage_error(exc, url)}") from None


@contextlib.contextmanager
def storage_lock(url: str, key: str, engine: Any = None) -> Iterator[bool]:
    """Serialises a critical section across processes sharing a storage: creating a study (``key`` "create")
    or taking a study's next trial (``key`` the study name).

    SQLite and the journal file: a lock file beside the storage (all workers are on one machine or share its
    file system). PostgreSQL: an advisory lock, so machines take turns too. Other servers: none. Yields
    whether the section is serialised (False: no lock here, other processes may run it at the same time).
    """
    path = local_path(url)
    if path is not None:
        lock_file = f"{path}.ask-lock"
        mine = (os.path.abspath(lock_file), threading.get_ident())
        if _held.get(mine):  # this thread holds it already (one lock file serves every key): re-entered
            _held[mine] += 1
            try:
                yield True
            finally:
                _held[mine] -= 1
            return
        try:
            import fcntl
        except ImportError:  # not on POSIX: one process per local storage file is the safe use
            yield False
            return
        _check_folder(path, url)
        try:
            handle = open(lock_file, "a")
        except OSError as exc:
            _refuse_read_only(path)
            raise StudyError(f"Cannot lock storage {path}: {os_error_message(exc, lock_file)}") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _held[mine] = 1
            try:
                yield True
            finally:
                _held.pop(mine, None)
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if _scheme(url).startswith("postgresql"):
        import zlib

        import sqlalchemy

        own = engine is None
        lock_key = zlib.crc32(f"tuner:{key}".encode())
        try:
            if own:
                engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10},
                                                  poolclass=sqlalchemy.pool.NullPool)
            con = engine.connect()
        except Exception as exc:
            raise StudyError(f"Cannot open storage {mask_url(url)}: {explain_storage_error(exc, url)}") from None
        try:
            # Waited for with a deadline: a machine that lost its network while holding the lock cannot block
            # every other worker until TCP gives up on it.
            waited = time.monotonic() + LOCK_TIMEOUT
            while not con.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key}).scalar():
                con.commit()
                if time.monotonic() > waited:
                    raise StudyError(f"storage busy: another process has held the lock of {mask_url(url)} "
                                     f"({key}) for over {LOCK_TIMEOUT:g}s")
                time.sleep(0.05)
            con.commit()
            try:
                yield True
            finally:
                with contextlib.suppress(Exception):
                    con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
                    con.commit()
        finally:
            con.close()
            if own:
                engine.dispose()
        return
    yield False


def load_named(name: str, url: str, *, readonly: bool = True) -> optuna.Study:
    """The study ``name`` in the storage at ``url``; a missing storage or name is a StudyError that lists the
    names there."""
    if not storage_exists(url):
        raise StudyError(f"No study named {name!r}: storage {mask_url(url)} does not exist yet."
                         + _spec_hint(name, url))
    storage = open_storage(url, readonly=readonly)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        from tuner.errors import unknown_name_message

        hint = _spec_hint(name, url)
        if hint:  # not a study's misspelling (digits-mlp got "Did you mean 'digits-mlp-sp9'?")
            raise StudyError(f"In {mask_url(url)}: no study named {name!r}.{hint}")
        raise StudyError(f"In {mask_url(url)}: " + unknown_name_message("study", name, names, limit=12,
                                                                          more="`tuner study list` lists them all"))
    from tuner._logs import optuna_quiet

    with optuna_quiet():
        return optuna.load_study(study_name=name, storage=storage)


def _spec_hint(name: str, url: str) -> str:
    """Where a study name is a built-in study spec's (``quickstart``, ``digits-mlp``): the command that creates
    its study; else nothing."""
    from tuner._builtin import builtin_names

    if name not in builtin_names("studies", (".yaml", ".yml")):  # the built-in specs (not _spec's: a cycle)
        return ""
    return f" {name!r} is a built-in study spec: `{study_command('create', name, url)}` creates its study."


def deleted_error(name: str, url: str) -> StudyError:
    """What a run says when its study was deleted from the storage under it."""
    return StudyError(f"Study {name!r} was deleted from {mask_url(url)} while it ran: its trials are gone and "
                      f"nothing more can be recorded.")


def drop_orphans(study: optuna.Study) -> None:
    """A trial a worker was starting as its study was deleted outlives the study in a database (SQLite keeps no
    foreign keys), and SQLite gives the deleted study's id to the next study made there, which would then
    hold that trial (and be refused as not tuner's). Such trials of a study no longer there are deleted, with
    their parameters and values; anything else is left as it is."""
    from optuna.storages import RDBStorage

    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna's cache around an RDB storage
    if not isinstance(backend, RDBStorage):
        return
    from optuna.storages._rdb import models

    study_id = study._study_id
    session = backend.scoped_session()
    try:
        if session.query(models.StudyModel).filter(models.StudyModel.study_id == study_id).first() is None:
            for trial in session.query(models.TrialModel).filter(models.TrialModel.study_id == study_id).all():
                session.delete(trial)  # its params, values and attributes go with it (Optuna's cascades)
            session.commit()
    except Exception:  # a storage that cannot be reached now: the run's stop says what happened all the same
        session.rollback()
    finally:
        backend.scoped_session.remove()


def study_deleted(study: optuna.Study) -> bool:
    """Whether ``study`` is gone from its storage (``tuner study delete --force`` while it ran); False where
    the storage cannot say."""
    try:
        study._storage.get_study_id_from_name(study.study_name)
    except KeyError:
        return True
    except Exception:
        return False
    return False
