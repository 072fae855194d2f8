"""Reading the user's files safely and writing results atomically (``tuner._files``)."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest

from tuner._files import (
    FOLDER_MARKER,
    atomic_folder,
    check_file_target,
    read_text,
    safe_file_name,
    write_text,
)
from tuner.errors import ConfigError, OutputError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_new_file_gets_the_usual_mode_and_no_temporary_file_is_left(tmp_path: Path):
    target = write_text(tmp_path / "best.yaml", "a: 1\n")
    assert target.read_text() == "a: 1\n"
    assert stat.S_IMODE((tmp_path / "best.yaml").stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.yaml"]


def test_rewriting_keeps_the_mode_and_writes_through_a_link(tmp_path: Path):
    real = tmp_path / "real.yaml"
    real.write_text("old\n")
    real.chmod(0o600)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    write_text(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_a_device_is_written_directly(tmp_path: Path):
    write_text("/dev/null", "discarded\n")
    with pytest.raises(OutputError, match=r"disk full \(/dev/full\)"):
        write_text("/dev/full", "x" * 100_000)


@pytest.mark.parametrize("make, target, message", [
    (lambda d: None, "nodir/x.yaml", "the folder nodir does not exist"),
    (lambda d: (d / "f").write_text("x"), "f/x.yaml", "f is a file, not a folder"),
    (lambda d: (d / "out").mkdir(), "out", "out: is a folder"),
])
def test_unwritable_targets_are_one_clear_error(make, target: str, message: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputError, match=message):
        write_text(target, "x\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_folder_replaces_an_earlier_one_whole(tmp_path: Path):
    target = tmp_path / "rep"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
        (tmp / "old.txt").write_text("gone next time")
    assert (target / FOLDER_MARKER).exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_umask()  # not the temporary folder's 0700
    with atomic_folder(target) as tmp:
        assert not target.joinpath("b.txt").exists()
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == [FOLDER_MARKER, "b.txt"]
    assert not list(tmp_path.glob(".rep.partial-*"))


def test_a_failure_inside_leaves_the_earlier_folder_and_no_partial_one(tmp_path: Path):
    target = tmp_path / "rep"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("kept")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "kept" and not (target / "half.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_a_folder_of_the_users_is_refused_before_anything_is_done(tmp_path: Path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("keep")
    ran = []
    with pytest.raises(OutputError, match="not empty and was not written by tuner"), atomic_folder(target):
        ran.append(True)
    assert not ran and (target / "chapter1.tex").read_text() == "keep"


def test_the_partial_folder_of_a_dead_process_is_removed(tmp_path: Path):
    dead = tmp_path / ".rep.partial-999999999-abc"
    dead.mkdir()
    alive = tmp_path / f".rep.partial-{os.getppid()}-abc"  # a live process (the test runner's parent)
    alive.mkdir()
    with atomic_folder(tmp_path / "rep") as tmp:
        (tmp / "x").write_text("x")
    assert not dead.exists() and alive.exists()


def test_reading_refuses_pipes_devices_folders_and_huge_files_at_once(tmp_path: Path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    reader = threading.Thread(target=lambda: result.append(pytest.raises(ConfigError, read_text, fifo).value))
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a named pipe blocked"
    assert "named pipe" in str(result[0])
    with pytest.raises(ConfigError, match="a device"):
        read_text("/dev/zero")
    with pytest.raises(ConfigError, match="a folder"):
        read_text(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2000)
    with pytest.raises(ConfigError, match="2,000 bytes; at most 1,000"):
        read_text(big, limit=1000)


def test_reading_text_drops_a_bom_and_refuses_other_encodings(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_bytes("\ufeffoptimizer: adam\n".encode())
    assert read_text(path) == "optimizer: adam\n"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 3"):
        read_text(path)


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "..", ".hidden", "a/../../b", "\\\\server\\share",
                                  "x" * 600, "名前 with spaces", ""])
def test_a_study_name_becomes_one_safe_path_component(name: str):
    safe = safe_file_name(name)
    assert safe and "/" not in safe and "\\" not in safe and not safe.startswith(".")
    assert len(safe.encode()) <= 110
    assert safe_file_name("quickstart") == "quickstart"


def test_no_output_is_written_over_a_study_storage(tmp_path: Path):
    """`study export -o tuner.db`, `study trials --csv x.db`, `config.save` onto a database: refused before
    anything is written, whatever the file is called, with the storage's bytes untouched."""
    import sqlite3

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    db = tmp_path / "studies.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        kept = sqlite3.connect(db)  # open: its -wal and -shm files exist beside it
        kept.execute("SELECT * FROM t").fetchall()
    journal = tmp_path / "notes.txt"  # a journal under any name
    optuna.create_study(storage=JournalStorage(JournalFileBackend(str(journal))), study_name="j")
    for target, says in ((db, "holds a SQLite database"), (journal, "holds an Optuna journal"),
                         (tmp_path / "studies.db-wal", "holds the wal file of the SQLite database studies.db"),
                         (tmp_path / "studies.db-shm", "holds the shm file of the SQLite database studies.db")):
        assert target.exists(), target
        before = target.read_bytes()
        with pytest.raises(OutputError, match=re.escape(f"{target}: {says}")):
            write_text(target, "optimizer: adam\n")
        with pytest.raises(OutputError, match="does not write over it"):
            check_file_target(target)
        assert target.read_bytes() == before
    kept.close()
    plain = tmp_path / "best.yaml"
    plain.write_text("old")
    write_text(plain, "new")  # any other file is replaced as before
    assert plain.read_text() == "new"
