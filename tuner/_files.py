"""Reading the user's files safely, and writing results atomically.

Inputs (spec, space, config files) must be regular files of a sane size: a FIFO, ``/dev/zero`` or a
multi-gigabyte file is refused before a byte is read, so a typo cannot hang or exhaust the machine.

Outputs (exports, reports, CSV tables) are written to a temporary file or folder beside the target and
renamed into place, so an interrupted write never leaves a half file or a half report. A device such as
``/dev/stdout`` is written directly. Operating-system errors become one-line ``OutputError``s that name the
path and the cause ("disk full", "permission denied", "read-only file system").
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tuner.errors import ConfigError, DataError, OutputError

__all__ = ["read_text", "write_text", "write_bytes", "atomic_folder", "os_error_message", "is_disk_full",
           "safe_file_name", "MAX_INPUT_BYTES"]

MAX_INPUT_BYTES = 1 << 20  # spec, space and config files are a few kB; 1 MiB leaves a wide margin

_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EEXIST: "already exists",
    errno.EXDEV: "on another file system",
}


def os_error_message(exc: OSError, path: str | Path) -> str:
    """``disk full (/mnt/x/best.yaml)``: the cause in words, then the path."""
    cause = _CAUSES.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    return f"{cause} ({path})"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or its chain is an out-of-space error (``ENOSPC``, SQLite's "disk is full")."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 20:
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(cur).lower()
        if "disk is full" in text or "no space left" in text or "disk full" in text:
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_text(path: str | Path, *, what: str = "file", limit: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (a byte-order mark is dropped)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        other = next((path.with_suffix(s) for s in (".yaml", ".yml") if path.suffix in (".yaml", ".yml")
                      and s != path.suffix and path.with_suffix(s).is_file()), None)
        raise ConfigError(f"{path}: no such file" + (f"; did you mean {other}?" if other else "")) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {os_error_message(exc, path)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: cannot read the {what}: it is {_kind(info.st_mode)}, not a regular file.")
    if info.st_size > limit:
        raise ConfigError(f"{path}: the {what} is {info.st_size:,} bytes; at most {limit:,} are read.")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {os_error_message(exc, path)}") from None
    if len(data) > limit:  # it grew after the size check
        raise ConfigError(f"{path}: the {what} is over {limit:,} bytes.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text (byte {exc.start}: "
                          f"{data[exc.start:exc.start + 1]!r}); save it as UTF-8.") from None


def _target(path: str | Path) -> Path:
    """The file a write lands in: links followed, the folder checked to exist."""
    shown = Path(path)
    with contextlib.suppress(OSError):
        mode = shown.expanduser().stat().st_mode  # links followed: /dev/stdout as a pipe, a terminal, a file
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            return shown.expanduser()  # a pipe or a device: written into as named (its link may lead nowhere)
    real = Path(os.path.realpath(shown.expanduser()))
    if real.is_dir():
        raise OutputError(f"{shown}: is a folder; give a file name inside it.")
    parent = real.parent
    if not parent.exists():
        raise OutputError(f"{shown}: the folder {shown.parent} does not exist.")
    if not parent.is_dir():
        raise OutputError(f"{shown}: {shown.parent} is a file, not a folder.")
    held = _storage_kind(real)
    if held:
        raise OutputError(f"{shown}: holds {held}; tuner does not write over it (its studies would be lost). Give "
                          f"another file name.")
    return real


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _storage_kind(path: Path) -> str:
    """What study storage ``path`` is, or is part of (a SQLite database, its write-ahead log or shared memory, an
    Optuna journal file); "" for anything else or a file that does not exist."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return ""
    if head.startswith(_SQLITE_MAGIC):
        return "a SQLite database"
    if head.lstrip().startswith(b'{"op_code"'):
        return "an Optuna journal (a study storage)"
    for suffix in ("-wal", "-shm", "-journal"):
        base = path.with_name(path.name[:-len(suffix)]) if path.name.endswith(suffix) else None
        if base is not None and _storage_kind(base) == "a SQLite database":
            return f"the {suffix[1:]} file of the SQLite database {base.name}"
    return ""


def _writable_folder(folder: Path, shown: Path) -> None:
    """Refuses a folder this process may not create files in (permissions, a read-only file system)."""
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK,
                                         effective_ids=os.access in os.supports_effective_ids):
        code = errno.EROFS if _read_only_fs(folder) else errno.EACCES
        raise OutputError(f"cannot write: {os_error_message(OSError(code, os.strerror(code)), shown)}")


def _read_only_fs(folder: Path) -> bool:
    with contextlib.suppress(OSError, AttributeError):
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    return False


def check_file_target(path: str | Path) -> None:
    """Refuses, before any work is done, a file that a write could not land in: a folder, a missing folder or
    a file above it, a folder this process may not write in. A write can still fail (a full disk)."""
    target = _target(path)
    with contextlib.suppress(OSError):
        if target.exists() and not stat.S_ISREG(target.stat().st_mode):
            return  # /dev/stdout, a pipe: written into directly
    _writable_folder(target.parent, Path(path))


def check_folder_target(path: str | Path, ours: Callable[[list[str]], bool] | None = None) -> None:
    """Refuses, before any work is done, a folder that ``atomic_folder`` would refuse (see there), or one
    whose parent this process may not write in."""
    shown = Path(path)
    target = Path(os.path.abspath(shown.expanduser()))
    _folder_checks(target, shown, ours)
    existing = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if existing is not None:
        _writable_folder(existing, shown)


def _folder_checks(target: Path, shown: Path, ours: Callable[[list[str]], bool] | None) -> None:
    if target.exists() and not target.is_dir():
        raise OutputError(f"{shown}: is a file, not a folder; give a folder for the report.")
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{shown}: {shown.parent} is a file, not a folder.")
    _check_replaceable(target, shown, ours)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` atomically (temporary file beside the target, then rename); returns the path."""
    shown = Path(path)
    target = _target(path)
    try:
        if target.exists() and not stat.S_ISREG(target.stat().st_mode):
            with open(target, "wb") as handle:  # /dev/stdout, a pipe: nothing to rename
                handle.write(data)
            return shown
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write: {os_error_message(exc, shown)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"cannot write: {os_error_message(exc, shown)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return shown


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    """The process's umask, read without changing it (setting it, even for a moment, would affect the files
    other threads create meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


_PARTIAL = ".partial-"
FOLDER_MARKER = ".tuner-output"


@contextlib.contextmanager
def atomic_folder(path: str | Path, ours: Callable[[list[str]], bool] | None = None) -> Iterator[Path]:
    """Yields an empty temporary folder beside ``path``; when the block succeeds, it replaces ``path``.

    ``path`` may be missing, an empty folder, or a folder written by an earlier run (with tuner's marker
    file inside, or whose entries ``ours(names)`` recognises); a folder holding anything else is refused,
    so nothing of the user's is replaced. If the block fails or is interrupted, the temporary folder is
    removed and ``path`` is as it was.
    """
    shown = Path(path)
    target = Path(os.path.abspath(Path(path).expanduser()))
    _folder_checks(target, shown, ours)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL}{os.getpid()}-", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result gets a folder's usual mode
    except OSError as exc:
        raise OutputError(f"cannot write: {os_error_message(exc, shown)}") from None
    try:
        yield tmp
        (tmp / FOLDER_MARKER).write_text("written by tuner; the whole folder is replaced when rewritten\n")
        _swap_in(tmp, target, shown, ours)
    except OSError as exc:
        raise OutputError(f"cannot write: {os_error_message(exc, shown)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(target: Path, shown: Path, ours: Callable[[list[str]], bool] | None) -> list[str]:
    if not target.is_dir():
        return []
    try:
        entries = [p.name for p in target.iterdir()]
    except OSError as exc:
        raise OutputError(f"cannot write: {os_error_message(exc, shown)}") from None
    if entries and FOLDER_MARKER not in entries and not (ours is not None and ours(entries)):
        raise OutputError(f"{shown}: the folder is not empty and was not written by tuner "
                          f"({len(entries)} entries); choose a new or empty folder.")
    return entries


def _swap_in(tmp: Path, target: Path, shown: Path, ours: Callable[[list[str]], bool] | None) -> None:
    if target.exists():
        entries = _check_replaceable(target, shown, ours)
        if not entries:
            os.rmdir(target)
        else:
            old = target.with_name(f".{target.name}{_PARTIAL}old-{os.getpid()}")
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except OSError:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
            return
    os.rename(tmp, target)


def _remove_stale_partials(target: Path) -> None:
    """Temporary folders of earlier runs that were killed (their process is gone)."""
    import re

    prefix = f".{target.name}{_PARTIAL}"
    for p in target.parent.glob(f"{glob_escape(prefix)}*"):
        match = re.match(r"(?:old-)?(\d+)", p.name[len(prefix):])
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def safe_file_name(name: str, limit: int = 100) -> str:
    """A study name as one safe path component: no separators, no leading dots, bounded length."""
    import hashlib
    import re

    cleaned = re.sub(r"[^\w.+-]+", "_", name, flags=re.UNICODE).strip("._") or "study"
    if len(cleaned.encode()) > limit or cleaned != name:
        if len(cleaned.encode()) > limit:
            cleaned = cleaned.encode()[:limit].decode(errors="ignore")
        if cleaned != name:
            cleaned = f"{cleaned}-{hashlib.sha256(name.encode(errors='surrogatepass')).hexdigest()[:6]}"
    return cleaned


def check_csv_file(path: str | Path) -> Path:
    """``path`` as a Path when it is a regular file, else a DataError saying why it cannot be read as a CSV file
    (a named pipe would block and /dev/zero would never end: only regular files are read)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such CSV file.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the CSV file: {exc.strerror or exc}.") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise DataError(f"{path}: cannot read the CSV file: it is {kind}.")
    return path
