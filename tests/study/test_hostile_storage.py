"""Storages under hostile conditions, with real processes and real files: reading changes nothing, creation
is atomic across processes, a changed objective is refused, and a full disk is named and survived."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import SYNTHETIC_OBJECTIVE
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

TUNER = str(Path(sys.executable).with_name("tuner"))


def _env() -> dict[str, str]:
    env = {**os.environ}
    env.pop("TUNER_STORAGE", None)
    return env


def _tuner(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TUNER, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _state(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _load(url: str, name: str = "s") -> optuna.Study:
    from tuner.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(url, readonly=True))


# -- read-only commands -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_read_only_commands_change_nothing(kind: str, tmp_path: Path, objective_ref: str, space_file: Path):
    """list, show, trials (to the screen and to CSV), export and report without confirmation runs leave the
    storage file byte for byte as it was; a torn journal tail is left for a command that writes to repair."""
    url = "sqlite:///t.db" if kind == "sqlite" else "journal:t.journal"
    made = _tuner("study", "create", "--objective", objective_ref, "--space", str(space_file), "--name", "s",
                  "--n-trials", "3", "--epochs", "1", "--threads", "1", "--storage", url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    store = tmp_path / ("t.db" if kind == "sqlite" else "t.journal")
    if kind == "journal":
        with open(store, "ab") as handle:
            handle.write(b'{"op_code": 4, "worker_id"')  # a writer killed mid-record
    before = _state(store)
    commands = [["study", "list"], ["study", "show", "s"], ["study", "trials", "s", "--csv", "trials.csv"],
                ["study", "export", "s", "--no-confirm"]]
    if kind == "sqlite":
        commands += [["study", "trials", "s"], ["study", "report", "s", "--no-confirm", "-o", "rep"]]
    for args in commands:
        done = _tuner(*args, "--storage", url, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert _state(store) == before, args
    assert not (tmp_path / "t.journal.torn").exists()
    if kind == "sqlite":
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()
    else:  # a command that writes cuts the torn tail (kept aside) and goes on
        assert _tuner("study", "run", "s", "--n-trials", "4", "--storage", url, cwd=tmp_path).returncode == 0
        assert (tmp_path / "t.journal.torn").read_bytes() == b'{"op_code": 4, "worker_id"\n'
        assert sum(t.state == TrialState.COMPLETE for t in _load(f"journal:{tmp_path}/t.journal").trials) == 4


def test_a_missing_storage_is_not_created_by_reading(tmp_path: Path):
    for url in ("sqlite:///absent.db", "journal:absent.journal"):
        assert _tuner("study", "list", "--storage", url, cwd=tmp_path).returncode == 0
        assert _tuner("study", "show", "s", "--storage", url, cwd=tmp_path).returncode == 1
    assert list(tmp_path.iterdir()) == []


# -- creation is atomic ----------------------------------------------------------------------------------

def _other_space(tmp_path: Path) -> Path:
    path = tmp_path / "other.yaml"
    path.write_text("optimizer:\n  adam:\n    lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nbatch_size: 16\n")
    return path


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql"])
def test_concurrent_creates_with_different_specs_one_wins(backend: str, tmp_path: Path, objective_ref: str,
                                                          space_file: Path, request):
    """Two `study create` of one name with different spaces, started together: exactly one
    wins each time, the other is refused, and the stored space is the winner's."""
    other = _other_space(tmp_path)
    for round_ in range(2 if backend == "sqlite" else 1):  # the lock is one piece of code per kind of storage
        url = {"sqlite": f"sqlite:///{tmp_path}/c{round_}.db",
               "journal": f"journal:{tmp_path}/c{round_}.journal"}.get(backend)
        url = url or request.getfixturevalue("postgres_db")
        procs = [subprocess.Popen([TUNER, "study", "create", "--objective", objective_ref, "--space", str(space),
                                   "--name", "same", "--no-run", "--storage", url], cwd=tmp_path, env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for space in (space_file, other)]
        results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 1], results
        loser = next(err for code, _, err in results if code == 1)
        assert "already exists" in loser and "different spec" in loser and len(loser.strip().splitlines()) == 1
        winner = 0 if results[0][0] == 0 else 1
        stored = _load(url, "same").user_attrs["tuner:space"]
        assert ("sgd" in stored["optimizer"]) == (winner == 0)
        if backend == "postgresql":  # one database serves both rounds: start the next round afresh
            from tuner.study import open_storage

            optuna.delete_study(study_name="same", storage=open_storage(url))


def test_a_look_at_a_server_storage_waits_for_its_set_up(postgres_db: str):
    """Optuna writes its version rows and creates alembic's table on every open, reading or not: a look at the
    storage (is the study there?) while another process creates its tables raced their CREATE TABLEs
    ("duplicate key value violates unique constraint pg_type_typname_nsp_index"). It waits for the set-up."""
    import threading

    from tuner.study._storage import open_storage, storage_lock

    opened = threading.Event()

    def look() -> None:
        open_storage(postgres_db, readonly=True)
        opened.set()

    open_storage(postgres_db)  # its tables
    with storage_lock(postgres_db, "init"):  # another process setting the storage up
        looker = threading.Thread(target=look, daemon=True)
        looker.start()
        assert not opened.wait(1.0), "the look did not wait for the set-up"
    looker.join(timeout=30)
    assert opened.is_set()


def test_concurrent_creates_on_a_fresh_sqlite_file_both_succeed(tmp_path: Path, objective_ref: str,
                                                                space_file: Path):
    for round_ in range(2):
        url = f"sqlite:///{tmp_path}/fresh{round_}.db"
        procs = [subprocess.Popen([TUNER, "study", "create", "--objective", objective_ref, "--space",
                                   str(space_file), "--name", name, "--no-run", "--storage", url], cwd=tmp_path,
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name in ("a", "b")]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        assert [code for code, _ in results] == [0, 0], results
        assert sorted(optuna.get_all_study_names(url)) == ["a", "b"]


# -- a changed objective -----------------------------------------------------------------------------------

def test_a_changed_objective_is_refused_and_force_continues(tmp_path: Path, space_file: Path):
    objective = tmp_path / "obj.py"
    objective.write_text(SYNTHETIC_OBJECTIVE)
    ref = f"{objective}:objective"
    made = _tuner("study", "create", "--objective", ref, "--space", str(space_file), "--name", "s", "--n-trials",
                  "2", "--epochs", "1", "--threads", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    # The data changed under the study: other samples, so other validation targets.
    objective.write_text(SYNTHETIC_OBJECTIVE.replace("random_state=0", "random_state=1"))
    refused = _tuner("study", "run", "s", "--n-trials", "3", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "objective of study 's' changed" in refused.stderr and "validation targets" in refused.stderr
    assert "--force" in refused.stderr
    assert len(_load("sqlite:///" + str(tmp_path / "tuner.db")).trials) == 2  # nothing ran
    # A change of metric (and so of direction) is named too.
    objective.write_text(SYNTHETIC_OBJECTIVE.replace('metric="accuracy"', 'metric="mse"')  # a regression now
                         .replace("n_classes=3)", "n_classes=None)").replace("data.n_classes)", "1)"))
    refused = _tuner("study", "run", "s", cwd=tmp_path)
    assert refused.returncode == 1 and "metric: 'accuracy' -> 'mse'" in refused.stderr
    assert "direction: 'maximize' -> 'minimize'" in refused.stderr
    # --force continues knowingly; the old fingerprint is kept in the study's history.
    objective.write_text(SYNTHETIC_OBJECTIVE.replace("random_state=0", "random_state=1"))
    forced = _tuner("study", "run", "s", "--n-trials", "3", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    study = _load("sqlite:///" + str(tmp_path / "tuner.db"))
    assert len(study.user_attrs["tuner:objective_fingerprint_history"]) == 1
    assert len(study.trials) == 3
    # Confirmation runs on changed data would not compare either: export refuses to re-train.
    objective.write_text(SYNTHETIC_OBJECTIVE.replace("random_state=0", "random_state=2"))
    export = _tuner("study", "export", "s", cwd=tmp_path)
    assert export.returncode == 1 and "objective of study 's' changed" in export.stderr
    assert len(export.stderr.strip().splitlines()) == 1 and "confirmation" not in export.stderr


# -- a full disk ----------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs at ``tmp_path/disk`` (root only: a real file system that fills up)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    """Fills the disk until ``leave`` bytes are free; returns the filler file."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_disk_full_at_create_is_named_and_nothing_is_left(small_disk: Path, tmp_path: Path, objective_ref: str,
                                                          space_file: Path):
    filler = _fill(small_disk, 4096)
    url = f"sqlite:///{small_disk}/t.db"
    args = ["study", "create", "--objective", objective_ref, "--space", str(space_file), "--name", "s",
            "--n-trials", "2", "--epochs", "1", "--threads", "1", "--storage", url]
    full = _tuner(*args, cwd=tmp_path)
    assert full.returncode == 1
    assert full.stderr.strip().splitlines() == [full.stderr.strip()], full.stderr
    assert f"disk full ({small_disk}/t.db)" in full.stderr and "Traceback" not in full.stderr
    filler.unlink()
    (small_disk / "t.db").unlink(missing_ok=True)
    again = _tuner(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_disk_full_mid_run_stops_with_the_path_and_resumes(kind: str, small_disk: Path, tmp_path: Path,
                                                           objective_ref: str, space_file: Path):
    """The disk fills while trials run: the study stops with "disk full (path)" (not a sampler or a length
    error), and once space is freed the next run fails what was left running and meets the budget."""
    store = small_disk / ("t.db" if kind == "sqlite" else "t.journal")
    url = f"sqlite:///{store}" if kind == "sqlite" else f"journal:{store}"
    made = _tuner("study", "create", "--objective", objective_ref, "--space", str(space_file), "--name", "s",
                  "--n-trials", "400", "--epochs", "2", "--threads", "1", "--sampler", "random", "--no-run",
                  "--storage", url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    filler = _fill(small_disk, 96 * 1024)
    full = _tuner("study", "run", "s", "--storage", url, cwd=tmp_path)
    assert full.returncode == 1, full.stdout[-2000:] + full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"disk full ({store})" in last, full.stderr[-3000:]
    assert "sampler" not in last and "Traceback" not in full.stderr
    filler.unlink()
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in _load(url).trials)
    resumed = _tuner("study", "run", "s", "--n-trials", str(done + 2), "--storage", url, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = _load(url)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) >= done + 2



@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_storage_on_a_read_only_mount_is_read_and_a_write_names_the_folder(kind: str, small_disk: Path,
                                                                               tmp_path: Path, objective_ref: str,
                                                                               space_file: Path):
    """A study archived on a read-only mount: SQLite could not open its write-ahead-log database there ("Cannot
    read SQLite database ...: unable to open database file", for `study list` too); a command that writes said
    only that it could not make its lock file, or trained its confirmation runs first."""
    from typer.testing import CliRunner

    from tuner.cli import app

    store = small_disk / ("t.db" if kind == "sqlite" else "t.journal")
    url = f"sqlite:///{store}" if kind == "sqlite" else f"journal:{store}"
    made = _tuner("study", "create", "--objective", objective_ref, "--space", str(space_file), "--name", "s",
                  "--n-trials", "2", "--epochs", "1", "--threads", "1", "--storage", url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True)
    assert remount.returncode == 0, remount.stderr
    before = _state(store)
    runner = CliRunner()
    for args in (["study", "list"], ["study", "show", "s"], ["study", "trials", "s"],
                 ["study", "export", "s", "--no-confirm", "-o", str(tmp_path / "best.yaml")],
                 ["study", "report", "s", "--no-confirm", "-o", str(tmp_path / "rep")]):
        done = runner.invoke(app, [*args, "--storage", url])
        assert done.exit_code == 0, (args, done.output)
    assert (tmp_path / "rep" / "report.html").exists() and (tmp_path / "best.yaml").exists()
    assert len(_load(url).trials) == 2
    for args in (["study", "run", "s", "--n-trials", "3"], ["study", "export", "s"], ["study", "delete", "s", "-y"]):
        refused = runner.invoke(app, [*args, "--storage", url])
        assert refused.exit_code == 1, (args, refused.output)
        assert " ".join(refused.output.split()) == (
            f"error: Cannot write to the storage {store}: its folder {small_disk} is read-only. Commands that only "
            f"read (study list, show, trials, export --no-confirm, report --no-confirm) read it there; to run or "
            f"change a study, copy the file to a writable folder."), (args, refused.output)
    assert _state(store) == before


def test_a_lock_held_too_long_on_postgresql_is_an_error_not_a_hang(postgres_db: str, monkeypatch):
    """A machine that holds a study's lock and goes silent (its network gone) must not block the others
    forever: after LOCK_TIMEOUT they stop with "storage busy"."""
    import sqlalchemy

    from tuner.errors import StudyError
    from tuner.study import _storage

    monkeypatch.setattr(_storage, "LOCK_TIMEOUT", 1.0)
    engine = sqlalchemy.create_engine(postgres_db, poolclass=sqlalchemy.pool.NullPool)
    with _storage.storage_lock(postgres_db, "s"):  # a lock that works is taken and released
        pass
    with engine.connect() as holder:
        import zlib

        holder.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": zlib.crc32(b"tuner:s")})
        with pytest.raises(StudyError, match=r"storage busy: another process has held the lock .* for over 1s"), \
                _storage.storage_lock(postgres_db, "s"):
            pass
    engine.dispose()
    with _storage.storage_lock(postgres_db, "s"):  # released with its holder
        pass


def test_a_file_whose_optuna_tables_are_still_being_created_is_waited_for(tmp_path: Path):
    """Two `study create` on a new SQLite file at once: one may look while the other is halfway through
    creating Optuna's tables. That file is Optuna's in the making, not another application's."""
    import sqlite3
    import threading
    import time

    from tuner.study._storage import check_storage

    path = tmp_path / "new.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY)")

    def finish() -> None:  # the other process creates the version table a moment later
        time.sleep(0.5)
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE version_info (version_info_id INTEGER PRIMARY KEY)")

    other = threading.Thread(target=finish)
    other.start()
    try:
        check_storage(f"sqlite:///{path}")
    finally:
        other.join()


@pytest.mark.parametrize("age", [0.0, 3600.0])
def test_a_partial_schema_is_waited_for_only_while_the_file_is_being_written(tmp_path: Path, monkeypatch, age):
    """A file with only a table called "trials": written a moment ago, it may be Optuna's in the making and is
    looked at again until ``SCHEMA_WAIT`` has passed; untouched for an hour, it is another application's after
    a second look that finds it unchanged."""
    import os
    import sqlite3

    from tuner.errors import StudyError
    from tuner.study import _storage

    path = tmp_path / "clinic.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, drug TEXT)")
    con.close()
    then = path.stat().st_mtime - age
    os.utime(path, (then, then))
    looks = []
    tables = _storage._sqlite_tables
    monkeypatch.setattr(_storage, "_sqlite_tables", lambda *a: looks.append(1) or tables(*a))
    monkeypatch.setattr(_storage, "SCHEMA_WAIT", 1.0 if age == 0 else 0.3)
    with pytest.raises(StudyError, match="another application.*tables: trials"):
        _storage.check_storage(f"sqlite:///{path}")
    assert (len(looks) == 2) == (age > 0), len(looks)  # an old file: looked at twice, unchanged in between
    assert path.stat().st_mtime == then  # untouched


def test_a_missing_database_driver_says_what_to_install():
    from tuner.study._storage import explain_storage_error

    def said(module: str, url: str) -> str:
        try:
            try:
                raise ModuleNotFoundError(f"No module named '{module}'", name=module)
            except ImportError as inner:
                raise RuntimeError("could not load the dialect") from inner
        except RuntimeError as exc:
            return explain_storage_error(exc, url)

    mysql = said("MySQLdb", "mysql://me:secret@db/studies")
    assert mysql.startswith("ModuleNotFoundError: No module named 'MySQLdb'") and "pip install mysqlclient" in mysql
    assert "secret" not in mysql
    # SQLAlchemy 2 loads psycopg (3) for postgresql://: the hint names the package of the module that is missing.
    assert "pip install 'psycopg[binary]'" in said("psycopg", "postgresql://me@db/studies")
    assert "pip install psycopg2-binary" in said("psycopg2", "postgresql+psycopg2://me@db/studies")


# -- an epoch's report on a busy storage ----------------------------------------------------------------------

@pytest.fixture
def locked_reports(monkeypatch):
    """Every insert of an epoch's value fails as a busy SQLite does, ``times`` times (``None``: always). The
    waits between tries are recorded in ``waits`` instead of slept."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from tuner.study import _engine

    state = {"left": 0, "seen": 0, "waits": []}
    monkeypatch.setattr(_engine.time, "sleep", state["waits"].append)

    def busy(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("INSERT") and "trial_intermediate_values" in statement:
            state["seen"] += 1
            if state["left"] is None or state["left"] > 0:
                state["left"] = None if state["left"] is None else state["left"] - 1
                raise sqlite3.OperationalError("database is locked")

    event.listen(Engine, "before_cursor_execute", busy)
    yield state
    event.remove(Engine, "before_cursor_execute", busy)


@pytest.mark.parametrize("error, tries", [
    (sqlite3.OperationalError("database is locked"), 4),  # the storage's: tried again, 4 times in all
    (KeyError("Record does not exist."), 1),  # its study was deleted: no try brings it back
    (TypeError("Object of type set is not JSON serializable"), 1),  # the same value fails the same way
    (optuna.exceptions.UpdateFinishedTrialError("finished"), 1),
])
def test_only_the_storage_s_errors_are_tried_again(error: Exception, tries: int, monkeypatch: pytest.MonkeyPatch):
    from tuner.study import _engine

    calls: list[int] = []
    waits: list[float] = []
    monkeypatch.setattr(_engine.time, "sleep", waits.append)

    def write() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        _engine._retried(write)
    assert len(calls) == tries and waits == [0.5, 1.0, 2.0][:tries - 1]


@pytest.mark.parametrize("path", ["run_study", "tune"])
@pytest.mark.parametrize("times", [1, None])
def test_an_epoch_report_on_a_busy_storage_is_retried_then_a_storage_failure(path: str, times: int | None,
                                                                              locked_reports: dict, tmp_path: Path,
                                                                              objective_ref: str, space_file: Path):
    """An epoch's value is written as every other write of a trial is, one trial at a time as in packs: a
    write the storage refuses once is tried again and the trial completes; one it keeps refusing fails the
    trial with a storage reason (not as an error of the user's code), and a storage that refuses every trial
    stops the study after the consecutive-failure limit, saying why."""
    from tuner.errors import StudyError

    url = f"sqlite:///{tmp_path / 'r.db'}"
    locked_reports["left"] = times
    if times is None:
        with pytest.raises(StudyError, match="consecutive failed trials; the last failed with: storage busy"):
            _run_two(path, url, objective_ref, space_file)
        trials = _load(url, "r").trials
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert len(failed) == 5 and locked_reports["seen"] >= 5 * 4  # each report tried 4 times
        assert locked_reports["waits"] == [0.5, 1.0, 2.0] * 5  # with backoff
        for t in failed:
            assert t.user_attrs["reason_kind"] == "storage", t.user_attrs
            assert t.user_attrs["reason"].startswith("storage busy: could not record"), t.user_attrs["reason"]
            assert t.user_attrs["reason"].endswith("; its config was queued again")
        # Not the config's fault: each one trains again (the next trial), and the last is still queued.
        assert [t.params or t.system_attrs["fixed_params"] for t in trials[1:]] == [t.params for t in trials[:-1]]
        assert trials[-1].state == TrialState.WAITING
        return
    trials = _run_two(path, url, objective_ref, space_file).study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert [len(t.intermediate_values) for t in trials] == [2, 2]
    assert locked_reports["seen"] == 5 and locked_reports["waits"] == [0.5]  # 4 reports, one of them twice


def _run_two(path: str, url: str, objective_ref: str, space_file: Path):
    import tuner

    if path == "run_study":
        result = tuner.run_study(objective=objective_ref, space=str(space_file), n_trials=2, epochs=2, storage=url,
                                 name="r", pack=1, threads=1, known_starts=False, verbose=False)
    else:
        def train_fn(ctx):
            for epoch in range(2):
                ctx.report(epoch, 0.5 + 0.1 * epoch)
            return 0.6

        result = tuner.tune(train_fn, space="lr-only",
                            n_trials=2, epochs=2, storage=url, study_name="r", verbose=False)
    return result
