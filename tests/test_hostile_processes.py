"""Hostile and clumsy input, run as a user would: the installed ``tuner`` script in a real process, on real
files in a folder of its own.

Every case of the table must end with its documented exit code (1 for a refused input, 2 for a command line
Click cannot parse), exactly one line on standard error that starts with ``error:`` and holds the expected
fragments verbatim (no Rich markup eaten), nothing on standard output, no traceback, no password, and every
file of the folder exactly as it was (bytes and modification time), with no file created. The cases run a
few at a time in a module fixture, so the table costs about a minute, not the sum of its startups.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
from conftest import SYNTHETIC_OBJECTIVE, TINY_SPACE

pytestmark = pytest.mark.slow

TUNER = str(Path(sys.executable).with_name("tuner"))
PASSWORD = "S3cr3t"
CASE_TIMEOUT = 120  # seconds; a hang (FIFO, /dev/zero, a deadlock) fails the case instead of the suite

Setup = Callable[[Path], None]


@dataclass
class Case:
    id: str
    args: list[str | bytes]
    fragments: list[str]
    files: dict[str, str | bytes | Setup] = field(default_factory=dict)
    code: int = 1
    study: bool = False  # the folder holds `tuner.db` with study "s" (3 trials), made for real beforehand


def _file(text: str) -> str:
    return textwrap.dedent(text)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        con.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    con.close()


def _only_trials_table(path: Path) -> None:
    """Another application's database, last written an hour ago (a file written a moment ago with some of
    Optuna's table names is looked at again for a few seconds: it may be Optuna's in the making)."""
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, drug TEXT)")
    con.close()
    then = path.stat().st_mtime - 3600
    os.utime(path, (then, then))


def _hot_journal(path: Path) -> None:
    """Another application's database as a crash leaves it: a rollback journal still beside it."""
    scratch = path.with_name("scratch.db")
    with sqlite3.connect(scratch) as con:
        con.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount REAL)")
        con.execute("INSERT INTO ledger (amount) VALUES (1.0)")
    con.close()
    con = sqlite3.connect(scratch, isolation_level=None)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("BEGIN IMMEDIATE")
    con.execute("UPDATE ledger SET amount = 2.0")
    con.execute("INSERT INTO ledger (amount) SELECT amount FROM ledger")
    shutil.copy(scratch, path)  # mid-transaction: the database and its hot journal
    shutil.copy(scratch.with_name("scratch.db-journal"), path.with_name(path.name + "-journal"))
    con.execute("ROLLBACK")
    con.close()
    for leftover in scratch.parent.glob("scratch.db*"):
        leftover.unlink()


def _report_like(path: Path) -> None:
    path.mkdir()
    (path / "report.html").write_text("<h1>my own report</h1>")
    (path / "screenshot.png").write_bytes(b"\x89PNG not really")


def _plain_optuna(path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{path}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    mo = optuna.create_study(study_name="mo", storage=f"sqlite:///{path}", directions=["maximize", "minimize"])
    mo.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)


def _alias_bomb(where: str) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    anchors = "\n".join(lines)
    if where == "space":  # the billion laughs, inside the free-text description
        return "optimizer: adam\ndescription:\n  " + anchors.replace("\n", "\n  ") + "\n"
    return ("sampler:\n  name: tpe\n  bomb: &b0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"  b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]\n" for i in range(1, 10)))


def _big_grid() -> str:
    # Six free ranges at 3 points each and many choices: about two million points.
    return _file("""\
        optimizer:
          adam:
            lr: {low: 1.0e-4, high: 1.0e-1, log: true}
            beta1: {low: 0.8, high: 0.95}
            beta2: {low: 0.9, high: 0.999}
            eps: {low: 1.0e-9, high: 1.0e-6, log: true}
        batch_size: {choices: [8, 16, 24, 32, 40, 48, 56, 64, 72, 80]}
        init: [default, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal, orthogonal]
        regularization:
          weight_decay: {low: 0.0, high: 0.1}
          l1: {low: 0.0, high: 0.01}
          dropout: {choices: [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45]}
        grad_clip_norm: {choices: [0.5, 1.0, 2.0, 5.0, 10.0]}
        """)


MODELS = _file('''\
    """Objectives that misbehave outside a trial."""
    import torch
    from torch import nn

    from tuner.objectives import Objective, from_arrays


    def _data():
        x = torch.randn(64, 4).numpy()
        y = (x[:, 0] > 0).astype("int64")
        return from_arrays(x[:48], y[:48], x[48:], y[48:], n_classes=2)


    def _raises(data):
        raise ValueError("no GPU quota left for [bold]this[/bold] model")


    def _shard():
        raise FileNotFoundError("missing shard [/data/shard-3]")


    raises = Objective("raises", load_data=_data, build_model=_raises)
    huge = Objective("huge", load_data=_data, build_model=lambda d: torch.nn.Linear(torch.empty(10**13).numel(), 2))
    not_a_module = Objective("nm", load_data=_data, build_model=lambda d: "a string")
    shard = Objective("shard", load_data=_shard, build_model=lambda d: nn.Linear(4, 2))


    def unannotated():
        raise SystemExit("this factory must not be called")
    ''')

SPACE = {"space.yaml": TINY_SPACE}


def _space(body: str) -> dict[str, str]:
    return {"space.yaml": _file(body)}


CASES = [
    # -- storage URLs and passwords ----------------------------------------------------------------------
    Case("password in a spec file's storage", ["study", "create", "spec.yaml"], ["postgresql://u:***@127.0.0.1:1/db"],
         {"spec.yaml": f"objective: {{obj}}\nspace: {{space}}\nstorage: postgresql://u:{PASSWORD}@127.0.0.1:1/db\n"}),
    Case("password holding @ and :", ["study", "list", "--storage", f"postgresql://u:p@{PASSWORD}:x@127.0.0.1:1/db"],
         ["postgresql://u:***@127.0.0.1:1/db"]),
    Case("password in the query string", ["study", "list", "--storage",
                                          f"postgresql://u@127.0.0.1:1/db?password={PASSWORD}"], ["password=***"]),
    # -- foreign and unsafe storages: refused, left byte for byte ------------------------------------------
    Case("log file without a scheme", ["study", "list", "--storage", "app.log"], ["Unknown storage", "journal:app.log"],
         {"app.log": "line one\nline two\nlast line without newline"}),
    Case("journal: scheme on a text file", ["study", "list", "--storage", "journal:app.log"],
         ["app.log is not an Optuna journal"], {"app.log": "2026-12-01 started\n2026-12-01 torn"}),
    Case("journal: scheme on another program's jsonl", ["study", "create", "--objective", "{obj}", "--space", "{space}",
                                                        "--storage", "journal:events.jsonl"],
         ["events.jsonl is not an Optuna journal"], {"events.jsonl": '{"event": "click", "x": 1}\n{"event": "key"'}),
    Case("foreign SQLite database, listed", ["study", "list", "--storage", "sqlite:///app.db"],
         ["another application", "invoices"], {"app.db": _foreign_sqlite}),
    Case("foreign SQLite database, created into", ["study", "create", "--objective", "{obj}", "--space", "{space}",
                                                   "--storage", "sqlite:///app.db", "--n-trials", "1"],
         ["another application", "invoices"], {"app.db": _foreign_sqlite}),
    Case("text file as SQLite", ["study", "list", "--storage", "sqlite:///notes.txt"], ["not a SQLite database"],
         {"notes.txt": "shopping: milk, eggs\n" * 50}),
    Case("folder as SQLite", ["study", "list", "--storage", "sqlite:///data"], ["is a folder"],
         {"data/keep.txt": "x"}),
    Case("a database whose only table is called trials", ["study", "create", "--objective", "{obj}", "--space",
                                                         "{space}", "--storage", "sqlite:///clinic.db"],
         ["another application", "trials"], {"clinic.db": _only_trials_table}),
    Case("a SQLite URI file name", ["study", "create", "--objective", "{obj}", "--space", "{space}", "--storage",
                                    "sqlite:///file:app.db?uri=true"], ["URI file names"],
         {"app.db": _foreign_sqlite}),
    Case("a foreign database with a hot journal, listed", ["study", "list", "--storage", "sqlite:///app.db"],
         ["app.db", "leaves it untouched"], {"app.db": _hot_journal}),
    Case("in-memory SQLite", ["study", "create", "--storage", "sqlite://"], ["in-memory database"]),
    # -- studies of other tools ------------------------------------------------------------------------
    Case("plain Optuna study: show", ["study", "show", "plain", "--storage", "sqlite:///o.db"],
         ["plain Optuna study"], {"o.db": _plain_optuna}),
    Case("plain Optuna study: export", ["study", "export", "plain", "--storage", "sqlite:///o.db"],
         ["plain Optuna study"], {"o.db": _plain_optuna}),
    Case("plain Optuna study: run", ["study", "run", "plain", "--storage", "sqlite:///o.db"],
         ["plain Optuna study", "cannot run"], {"o.db": _plain_optuna}),
    Case("multi-objective study: show", ["study", "show", "mo", "--storage", "sqlite:///o.db"],
         ["a study of 2 objectives that tuner did not create"], {"o.db": _plain_optuna}),
    # -- output paths ---------------------------------------------------------------------------------
    Case("report -o an existing file", ["study", "report", "s", "-o", "notes.txt", "--no-confirm"],
         ["notes.txt: is a file, not a folder"], {"notes.txt": "keep me\n"}, study=True),
    Case("report -o below a file", ["study", "report", "s", "-o", "notes.txt/sub", "--no-confirm"],
         ["is a file, not a folder"], {"notes.txt": "keep me\n"}, study=True),
    Case("report -o a folder of the user's", ["study", "report", "s", "-o", "mine", "--no-confirm"],
         ["mine: the folder is not empty and was not written by tuner"], {"mine/thesis.tex": "chapter 1\n"},
         study=True),
    Case("report -o a folder with the user's own report.html", ["study", "report", "s", "-o", "docs",
                                                                 "--no-confirm"],
         ["docs: the folder is not empty and was not written by tuner"], {"docs": _report_like}, study=True),
    Case("export -o into a missing folder", ["study", "export", "s", "-o", "nodir/x.yaml", "--no-confirm"],
         ["the folder", "nodir does not exist"], study=True),
    Case("export -o /dev/full", ["study", "export", "s", "-o", "/dev/full", "--no-confirm"],
         ["disk full (/dev/full)"], study=True),
    Case("export -o where writing is denied", ["study", "export", "s", "-o", "/sys/x.yaml", "--no-confirm"],
         ["cannot write", "/sys/x.yaml"], study=True),
    Case("trials --csv a folder", ["study", "trials", "s", "--csv", "out"], ["out: is a folder"],
         {"out/keep.txt": "x"}, study=True),
    # -- Rich markup and control characters in user text ------------------------------------------------
    Case("markup in an objective's error", ["study", "create", "--objective", "models.py:shard", "--space", "{space}"],
         ["missing shard [/data/shard-3]"], {"models.py": MODELS}),
    Case("markup in a sampler option", ["study", "create", "spec.yaml"], ["takes no option '[/x]'"],
         {"spec.yaml": "objective: {obj}\nspace: {space}\nsampler: {name: tpe, '[/x]': 1}\n"}),
    Case("markup in a file name", ["study", "create", "--space", "[bold]space[/bold].yaml"],
         ["[bold]space[/bold].yaml: no such search-space file"]),
    # -- sizes and shapes of input --------------------------------------------------------------------
    Case("alias bomb in a space", ["study", "create", "--space", "space.yaml"], ["alias bomb"],
         {"space.yaml": _alias_bomb("space")}),
    Case("alias bomb in a spec's sampler options", ["study", "create", "spec.yaml"], ["alias bomb"],
         {"spec.yaml": _alias_bomb("spec")}),
    Case("5000-deep nesting", ["study", "create", "--space", "space.yaml"], ["nested more than"],
         {"space.yaml": "optimizer: adam\ndescription: " + "[" * 5000 + "]" * 5000 + "\n"}),
    Case("a recursive alias", ["study", "create", "spec.yaml"], ["recursive alias"], {"spec.yaml": "a: &x [*x]\n"}),
    Case("a list as a mapping key", ["study", "create", "spec.yaml"], ["spec.yaml:1", "a key must be a plain value"],
         {"spec.yaml": "? [a, b]\n: 1\n"}),
    Case("a 5000-digit seed", ["study", "create", "spec.yaml"], ["spec.yaml", "digits"],
         {"spec.yaml": "seed: " + "9" * 5000 + "\n"}),
    Case("/dev/zero as the space", ["study", "create", "--space", "/dev/zero"], ["/dev/zero", "not a regular file"]),
    Case("a FIFO as the space", ["study", "create", "--space", "pipe.yaml"], ["pipe.yaml", "named pipe"],
         {"pipe.yaml": _fifo}),
    Case("a 2 MB space", ["study", "create", "--space", "space.yaml"], ["2,", "bytes; at most 1,048,576"],
         {"space.yaml": "optimizer: adam\n" + "# padding\n" * 200_000}),
    Case("a FIFO as the CSV", ["study", "create", "--objective", "tabular", "--data", "data.csv", "--target", "y"],
         ["data.csv", "not a regular file"], {"data.csv": _fifo}),
    Case("two million grid points", ["study", "create", "--objective", "{obj}", "--space", "space.yaml", "--sampler",
                                     "grid"], ["points (over 100,000)"], {"space.yaml": _big_grid()}),
    Case("a step of 1e-300", ["study", "create", "--space", "space.yaml"], ["'step' 1e-300 cuts the range"],
         _space("optimizer:\n  adam:\n    lr: {low: 0.001, high: 0.1, step: 1.0e-300}\n")),
    # -- encodings --------------------------------------------------------------------------------------
    Case("a Latin-1 space", ["study", "create", "--space", "space.yaml"], ["not UTF-8 text", "save it as UTF-8"],
         {"space.yaml": "description: caf\xe9 au lait\noptimizer: adam\n".encode("latin-1")}),
    Case("NUL bytes in a space", ["study", "create", "--space", "space.yaml"], ["space.yaml", "invalid YAML"],
         {"space.yaml": b"optimizer: adam\x00\n"}),
    Case("a study name that is not UTF-8", ["study", "create", "--objective", "{obj}", "--space", "{space}",
                                            "--name", b"bad-\xff-name"], ["name", "not UTF-8"]),
    # -- objective references that must not be called -------------------------------------------------
    Case("os:abort", ["study", "create", "--objective", "os:abort"], ["os:abort", "a built-in function",
                                                                      "It was not called"]),
    Case("builtins:breakpoint", ["study", "create", "--objective", "builtins:breakpoint"], ["It was not called"]),
    Case("pdb:set_trace", ["study", "create", "--objective", "pdb:set_trace"], ["not annotated", "It was not called"]),
    Case("an unannotated factory", ["study", "create", "--objective", "models.py:unannotated"],
         ["not annotated", "It was not called"], {"models.py": MODELS}),
    Case("build_model raises", ["study", "create", "--objective", "models.py:raises", "--space", "{space}"],
         ["could not be built", "ValueError: no GPU quota left for [bold]this[/bold] model"], {"models.py": MODELS}),
    Case("build_model allocates 10^13 elements", ["study", "create", "--objective", "models.py:huge", "--space",
                                                  "{space}"], ["could not be built", "[enforce fail at alloc_cpu.cpp"],
         {"models.py": MODELS}),
    Case("build_model returns a string", ["study", "create", "--objective", "models.py:not_a_module", "--space",
                                          "{space}"], ["returned str, not a torch.nn.Module"], {"models.py": MODELS}),
    # -- values that pass bounds but are not numbers ----------------------------------------------------
    Case("lr: .inf", ["study", "create", "--space", "space.yaml"], ["'lr' must be finite"],
         _space("optimizer:\n  adam: {lr: .inf}\n")),
    Case("lr: 1e400", ["study", "create", "--space", "space.yaml"], ["'lr' must be finite"],
         _space("optimizer:\n  adam: {lr: 1e400}\n")),
    Case("eps: .inf", ["study", "create", "--space", "space.yaml"], ["'eps' must be finite"],
         _space("optimizer:\n  adam: {eps: .inf}\n")),
    Case("a range up to .inf", ["study", "create", "--space", "space.yaml"], ["'high' must be a finite number"],
         _space("optimizer:\n  adam:\n    lr: {low: 1.0e-3, high: .inf, log: true}\n")),
    Case("seed of 2^32", ["study", "create", "--seed", "4294967296"], ["seed", "less than 4294967296"]),
    Case("100000 threads", ["study", "create", "--objective", "{obj}", "--space", "{space}", "--threads", "100000"],
         ["threads must be at most"]),
    Case("100000 workers", ["study", "create", "--workers", "100000"], ["--workers must be at most"]),
    Case("timeout of inf", ["study", "create", "--timeout", "inf"], ["timeout", "finite"]),
    Case("a heartbeat every 1e10 seconds", ["study", "create", "spec.yaml"], ["heartbeat_interval", "3600"],
         {"spec.yaml": "heartbeat_interval: 1.0e10\ngrace_period: 3.0e10\n"}),
    Case("a sampler option of .inf", ["study", "create", "spec.yaml"], ["'n_startup_trials'", "finite"],
         {"spec.yaml": "objective: {obj}\nspace: {space}\nsampler: {name: tpe, n_startup_trials: .inf}\n"}),
    Case("a sampler option of the wrong type", ["study", "create", "spec.yaml"],
         ["spec.yaml:3: key 'sampler'", "'tpe' sampler must be a whole number (0 or more). Got 'ten'"],
         {"spec.yaml": "objective: {obj}\nspace: {space}\nsampler: {name: tpe, n_startup_trials: ten}\n"}),
    # -- command lines Click cannot parse (exit code 2) ------------------------------------------------
    Case("misspelt flag", ["study", "create", "--n-trails", "3"], ["No such option: --n-trails", "--n-trials"], code=2),
    Case("markup as a choice", ["study", "create", "--format", "[/x]"], ["'--format'", "'[/x]'"], code=2),
]


def _snapshot(root: Path) -> dict[str, tuple[str, int, int] | str]:
    """Every entry under ``root``: a regular file's hash, size and modification time; others by kind."""
    out: dict[str, tuple[str, int, int] | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            out[rel] = "special"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            info = path.stat()
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), info.st_size, info.st_mtime_ns)
    return out


@dataclass
class Outcome:
    case: Case
    code: int
    stdout: str
    stderr: str
    before: dict
    after: dict


def _make_study(folder: Path, objective_ref: str, space_file: Path) -> Path:
    """A real study "s" (3 trials) in ``folder/tuner.db``, made once and copied into the cases that need it."""
    env = {**os.environ}
    env.pop("TUNER_STORAGE", None)
    done = subprocess.run([TUNER, "study", "create", "--objective", objective_ref, "--space", str(space_file),
                           "--name", "s", "--n-trials", "3", "--epochs", "1", "--threads", "1"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for extra in folder.glob("tuner.db-*"):
        extra.unlink()
    (folder / "tuner.db.ask-lock").unlink(missing_ok=True)
    return folder / "tuner.db"


def _run(case: Case, root: Path, study_db: Path, objective_ref: str, space_file: Path) -> Outcome:
    folder = root / hashlib.sha1(case.id.encode()).hexdigest()[:10]
    folder.mkdir()
    if case.study:
        shutil.copy(study_db, folder / "tuner.db")
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{obj}", objective_ref).replace("{space}", str(space_file)))
    args = [a.replace("{obj}", objective_ref).replace("{space}", str(space_file)) if isinstance(a, str) else a
            for a in case.args]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TUNER_STORAGE", None)
    before = _snapshot(folder)
    try:
        done = subprocess.run([TUNER, *args], cwd=folder, env=env, capture_output=True, timeout=CASE_TIMEOUT,
                              stdin=subprocess.DEVNULL)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = -999, exc.stdout or b"", (exc.stderr or b"") + b"\n<timed out>"
    return Outcome(case, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"), before,
                   _snapshot(folder))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, objective_ref: str, space_file: Path) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("hostile")
    study_db = _make_study(tmp_path_factory.mktemp("study"), objective_ref, space_file)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = pool.map(lambda c: _run(c, root, study_db, objective_ref, space_file), CASES)
        return {o.case.id: o for o in results}


def test_the_table_is_large_and_its_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_with_one_line_and_nothing_touched(case: Case, outcomes: dict[str, Outcome]):
    o = outcomes[case.id]
    lines = [line for line in o.stderr.splitlines() if line.strip()]
    assert o.code == case.code, (o.code, o.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), o.stderr[-3000:]
    for fragment in case.fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert o.stdout == "", o.stdout[-2000:]
    assert "Traceback" not in o.stderr and PASSWORD not in o.stdout + o.stderr
    after = dict(o.after)
    if case.study:
        # Reading a SQLite database in write-ahead-log mode makes SQLite create its -wal and -shm companions
        # when they are missing (the sqlite3 shell does the same); the database file itself is untouched.
        for companion in ("tuner.db-wal", "tuner.db-shm"):
            if companion not in o.before:
                after.pop(companion, None)
    assert after == o.before, {k: (o.before.get(k), after.get(k)) for k in set(o.before) | set(after)
                               if o.before.get(k) != after.get(k)}


def test_debug_shows_the_traceback_of_a_refusal(tmp_path: Path):
    done = subprocess.run([TUNER, "--debug", "study", "create", "--objective", "os:abort"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=CASE_TIMEOUT)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ConfigError" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_markup_and_escapes_in_names_and_reasons_are_shown_as_they_are(tmp_path: Path, objective_ref: str,
                                                                        space_file: Path):
    """A study name and a trial's failure reason full of Rich markup and terminal escapes: every command shows
    them verbatim (escapes as text), on a storage that also holds a plain Optuna study with such a name."""
    (tmp_path / "bad.py").write_text(SYNTHETIC_OBJECTIVE + textwrap.dedent('''

        class Broken(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = nn.Linear(10, 3)

            def forward(self, x):
                if x.shape[0] > 2:  # the model check (two rows) passes; training fails
                    raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] [bold red]boom[/] \\x1b[2J")
                return self.linear(x)

        broken = Objective("broken", load_data=load_data, build_model=lambda d: Broken())
        '''))
    name = "evil[/x] :rocket: [link=file:///etc/passwd]click[/link]"
    common = ["--storage", "sqlite:///t.db"]
    created = subprocess.run([TUNER, "study", "create", "--objective", f"{tmp_path / 'bad.py'}:broken", "--space",
                              str(space_file), "--name", name, "--n-trials", "2", "--epochs", "1", "--threads", "1",
                              *common], cwd=tmp_path, capture_output=True, text=True, timeout=CASE_TIMEOUT)
    # Five failed trials in a row stop it: one line, the reason verbatim.
    assert created.returncode == 1, created.stderr
    assert "[enforce fail at alloc_cpu.cpp:127] [bold red]boom[/] \\x1b[2J" in created.stdout + created.stderr
    assert "\x1b[2J" not in created.stdout + created.stderr
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="plain\x1b]0;title\x07[/x]", storage=f"sqlite:///{tmp_path / 't.db'}")
    optuna.create_study(study_name="two\nlines \u202eright-to-left", storage=f"sqlite:///{tmp_path / 't.db'}")
    for args in (["study", "list"], ["study", "show", name], ["study", "trials", name],
                 ["study", "list", "--format", "json"]):
        done = subprocess.run([TUNER, *args, *common], cwd=tmp_path, capture_output=True, text=True,
                              timeout=CASE_TIMEOUT, env={**os.environ, "COLUMNS": "300"})
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr and "\x1b" not in done.stdout and "\x07" not in done.stdout
        if args[-1] == "json":
            assert name in [row["name"] for row in json.loads(done.stdout)]
        elif args[1] in ("list", "show"):
            assert name in done.stdout, done.stdout
        if args[1] == "list" and args[-1] != "json":
            assert "plain\\x1b]0;title\\x07[/x]" in done.stdout and "optuna" in done.stdout
            # A line break cannot forge a row, a bidirectional override cannot reorder the table.
            assert "two\\x0alines \\u202eright-to-left" in done.stdout and "\u202e" not in done.stdout
    shown = subprocess.run([TUNER, "study", "show", name, *common], cwd=tmp_path, capture_output=True, text=True,
                           timeout=CASE_TIMEOUT)
    assert "[bold red]boom[/]" in shown.stdout


# -- passwords on a real server ------------------------------------------------------------------------------

def _run_tuner(*args: str, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = CASE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    base = {**os.environ}
    base.pop("TUNER_STORAGE", None)
    return subprocess.run([TUNER, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_no_password_in_hints_banners_or_tracebacks(tmp_path: Path, postgres_db: str, objective_ref: str,
                                                     space_file: Path):
    """`study create --no-run` on PostgreSQL ends with a hint to run the study: it says `--storage <your URL>`
    (or nothing, when $TUNER_STORAGE points there), never the password, whether the URL came from a flag, a
    spec file or the environment; a wrong password under --debug shows a traceback without it."""
    password = postgres_db.split(":")[2].split("@")[0]
    url = postgres_db.replace("postgresql://", "postgresql+psycopg://")
    outputs = []
    flag = _run_tuner("study", "create", "--objective", objective_ref, "--space", str(space_file), "--name", "pg",
                      "--epochs", "1", "--no-run", "--storage", url, cwd=tmp_path)
    assert flag.returncode == 0, flag.stderr
    assert "run it with: tuner study run pg --storage <your URL>" in flag.stdout
    (tmp_path / "spec.yaml").write_text(f"name: pg2\nobjective: {objective_ref}\nspace: {space_file}\nstorage: {url}\n")
    spec = _run_tuner("study", "create", "spec.yaml", "--no-run", cwd=tmp_path)
    assert spec.returncode == 0 and "--storage <your URL>" in spec.stdout, spec.stderr
    env = _run_tuner("study", "create", "--objective", objective_ref, "--space", str(space_file), "--name", "pg3",
                     "--no-run", cwd=tmp_path, env={"TUNER_STORAGE": url})
    assert env.returncode == 0 and "run it with: tuner study run pg3\n" in env.stdout, env.stdout
    wrong = _run_tuner("--debug", "study", "list", "--storage", url.replace(password, "x" + password), cwd=tmp_path)
    assert wrong.returncode != 0 and "Traceback" in wrong.stderr
    for done in (flag, spec, env, wrong):
        outputs.append(done.stdout + done.stderr)
    for args in (["study", "list"], ["study", "show", "pg"]):
        done = _run_tuner(*args, "--storage", url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    leaks = [o for o in outputs if password in o]
    assert not leaks, leaks[0][-1000:]
    assert all(url not in o for o in outputs)


# -- reports and exports on disk ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory, objective_ref: str, space_file: Path) -> Path:
    return _make_study(tmp_path_factory.mktemp("study-folder"), objective_ref, space_file).parent


def test_a_killed_report_leaves_no_half_folder(tmp_path: Path, study_folder: Path):
    """SIGKILL while `study report` runs its confirmation re-trainings: the report folder does not appear
    half-written; the next report removes the dead run's temporary folder and writes a whole one."""
    shutil.copy(study_folder / "tuner.db", tmp_path / "tuner.db")
    base = {**os.environ}
    base.pop("TUNER_STORAGE", None)
    proc = subprocess.Popen([TUNER, "study", "report", "s", "--seeds", "30"], cwd=tmp_path, env=base,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".s-report.partial-*")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".s-report.partial-*")), "the report never started writing"
    time.sleep(0.5)
    proc.kill()
    proc.wait(timeout=30)
    assert not (tmp_path / "s-report").exists()
    done = _run_tuner("study", "report", "s", "--no-confirm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s-report" / "report.html").is_file()
    assert not list(tmp_path.glob(".s-report.partial-*"))
    # A second report replaces the first whole; a folder of the user's is never replaced (see the table).
    again = _run_tuner("study", "report", "s", "--no-confirm", cwd=tmp_path)
    assert again.returncode == 0 and (tmp_path / "s-report" / "report.html").is_file()


def test_a_study_name_does_not_steer_where_the_report_goes(tmp_path: Path, objective_ref: str, space_file: Path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    name = "../../escaped"
    made = _run_tuner("study", "create", "--objective", objective_ref, "--space", str(space_file), "--name",
                      name, "--n-trials", "2", "--epochs", "1", "--threads", "1", cwd=work)
    assert made.returncode == 0, made.stderr
    done = _run_tuner("study", "report", name, "--no-confirm", cwd=work)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]
    folders = [p for p in work.iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.endswith("-report") and (folders[0] / "report.html").is_file()
    from tuner._files import safe_file_name

    for hostile in ("/tmp/abs", "..", ".hidden", "a/../../b", "\\server\\share", "x" * 600):
        safe = safe_file_name(hostile)
        assert "/" not in safe and "\\" not in safe and not safe.startswith(".") and 0 < len(safe) <= 110


# -- training that is cancelled, and timeouts ---------------------------------------------------------------

CANCELLING = SYNTHETIC_OBJECTIVE + textwrap.dedent('''

    import asyncio


    class Cancelled(nn.Module):
        def __init__(self, exc):
            super().__init__()
            self.linear, self.exc = nn.Linear(10, 3), exc

        def forward(self, x):
            if x.shape[0] > 2:  # training batches; the two-row model check passes
                raise self.exc
            return self.linear(x)


    cancelled = Objective("c", load_data=load_data, build_model=lambda d: Cancelled(asyncio.CancelledError()))
    generator_exit = Objective("g", load_data=load_data, build_model=lambda d: Cancelled(GeneratorExit()))
    ''')


@pytest.mark.parametrize("attr, exc", [("cancelled", "CancelledError"), ("generator_exit", "GeneratorExit")])
def test_cancelled_training_leaves_nothing_running(attr: str, exc: str, tmp_path: Path, space_file: Path):
    (tmp_path / "c.py").write_text(CANCELLING)
    done = _run_tuner("study", "create", "--objective", f"c.py:{attr}", "--space", str(space_file), "--name", "c",
                      "--n-trials", "3", "--epochs", "1", "--threads", "1", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: unexpected {exc}"), done.stderr
    trials = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials
    # Not the config's fault: it is queued again, to train when the study resumes.
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert trials[0].user_attrs["reason"].startswith(f"interrupted by {exc}")
    assert trials[0].user_attrs["reason"].endswith("its config was queued again")


def test_cancelled_train_fn_of_tune_leaves_nothing_running(tmp_path: Path):
    import asyncio

    import tuner

    def train(ctx):
        ctx.report(0, 0.5)
        raise asyncio.CancelledError()

    with pytest.raises(asyncio.CancelledError):
        tuner.tune(train, space="lr-only", n_trials=2, epochs=1, storage=f"sqlite:///{tmp_path / 't.db'}",
                   study_name="t")
    trials = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert trials[0].user_attrs["reason"] == "interrupted by CancelledError; its config was queued again"


def test_the_timeout_stops_a_running_trial(tmp_path: Path, objective_ref: str, space_file: Path):
    """`--timeout 3` with 100,000 epochs per trial: the running trial stops at its next epoch end (recorded
    as failed with reason 'timeout'), instead of training for many minutes past the timeout."""
    done = _run_tuner("study", "create", "--objective", objective_ref, "--space", str(space_file), "--name", "t",
                      "--n-trials", "5", "--epochs", "100000", "--timeout", "3", "--threads", "1", cwd=tmp_path,
                      timeout=90)
    assert done.returncode == 0, done.stderr
    assert "(timeout reached)" in done.stdout
    trials = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'tuner.db'}").trials
    assert trials and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert trials[-1].user_attrs["reason"].startswith("timeout: the study's timeout (3s) was reached")
    assert 0 < len(trials[-1].intermediate_values) < 100000


def test_the_progress_bar_on_a_terminal(tmp_path: Path, objective_ref: str, space_file: Path):
    """On a real terminal (a pseudo-terminal from `script`), `study create` draws its progress bar, shows a
    study name full of markup as it is, and finishes (the bar once wrote into itself without end)."""
    if shutil.which("script") is None:
        pytest.fail("util-linux `script` is needed to run tuner on a pseudo-terminal")
    import shlex

    command = shlex.join([TUNER, "study", "create", "--objective", objective_ref, "--space", str(space_file),
                          "--name", "bar[/x]", "--n-trials", "3", "--epochs", "1", "--threads", "1"])
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    env.pop("TUNER_STORAGE", None)
    done = subprocess.run(["script", "-q", "-e", "-c", command, "/dev/null"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=CASE_TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "bar[/x]" in done.stdout and "3/3" in done.stdout and "best config" in done.stdout
    assert "Traceback" not in done.stdout
