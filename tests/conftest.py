"""Shared fixtures: a private data cache, a clean working directory, and a tiny objective for fast studies."""

from __future__ import annotations

import os
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# `pack: auto` chooses a pack size by timing training on the machine at hand, so a study's trials would run
# packed or not depending on the machine's load. Tests run one trial at a time unless they ask for packs
# (`pack: K` in their spec, or TUNER_PACK set by the test itself); worker subprocesses inherit this.
os.environ["TUNER_PACK"] = "1"
# Likewise `--workers auto` starts one process per core where timing says a trial trains as fast on one thread:
# tests run in one process unless they ask for workers (or unset TUNER_WORKERS to test `auto`).
os.environ["TUNER_WORKERS"] = "1"

# 200 samples in 3 classes, 10 features (6 informative: two Gaussian clusters per class at random corners of a
# hypercube, in the manner of scikit-learn's make_classification; 4 noise), made with NumPy alone so that the
# many processes the tests start do not import scikit-learn: 128 train / 32 validation / 40 test rows (every
# class in each), a two-layer MLP with one nn.Dropout. A trial of a few epochs takes milliseconds.
SYNTHETIC_OBJECTIVE = textwrap.dedent(
    '''
    """A tiny synthetic classification objective for the tests."""

    from functools import lru_cache

    import numpy as np
    from torch import nn

    from tuner.objectives import Dataset, Objective, from_arrays


    def make_samples(n_samples=200, n_features=10, n_informative=6, n_classes=3, class_sep=1.0, random_state=0):
        rng = np.random.default_rng(random_state)
        corners = rng.choice([-class_sep, class_sep], size=(2 * n_classes, n_informative))
        y = rng.permutation(np.arange(n_samples) % n_classes)
        cluster = y + n_classes * rng.integers(0, 2, n_samples)
        x = rng.normal(size=(n_samples, n_features))
        x[:, :n_informative] = x[:, :n_informative] @ rng.normal(size=(n_informative, n_informative)) / 2
        x[:, :n_informative] += corners[cluster]
        return x, y


    @lru_cache(maxsize=1)
    def load_data() -> Dataset:
        x, y = make_samples(random_state=0)
        x_test, y_test, x_val, y_val, x_train, y_train = x[:40], y[:40], x[40:72], y[40:72], x[72:], y[72:]
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        x_train, x_val, x_test = ((v - mean) / std for v in (x_train, x_val, x_test))
        return from_arrays(x_train, y_train, x_val, y_val, x_test, y_test, n_classes=3)


    def build_model(data: Dataset) -> nn.Module:
        return nn.Sequential(nn.Linear(data.n_features, 32), nn.ReLU(), nn.Dropout(0.0),
                             nn.Linear(32, data.n_classes))


    objective = Objective("synthetic", load_data=load_data, build_model=build_model, metric="accuracy",
                          description="Gaussian clusters, 200 samples, 3 classes")
    '''
)

# The synthetic objective, with each training batch taking `SLEEP` seconds: trials last long enough to be
# killed or interrupted in the middle.
SLOW_OBJECTIVE = SYNTHETIC_OBJECTIVE + '''

import os
import time

SLEEP = float(os.environ.get("TUNER_TEST_SLEEP", "0.05"))


class Slow(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if self.training:
            time.sleep(SLEEP)
        return self.inner(x)


slow = Objective("slow", load_data=load_data, build_model=lambda d: Slow(build_model(d)), metric="accuracy")


class OOM(nn.Module):
    """Raises CUDA's out-of-memory error for training batches over 16 rows, as a GPU would."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.buffer = None

    def forward(self, x):
        if self.training and x.shape[0] > 16:
            import torch

            self.buffer = torch.zeros(1_000_000)  # memory the failed trial must not keep
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


oom = Objective("oom", load_data=load_data, build_model=lambda d: OOM(build_model(d)), metric="accuracy")
'''
N_TRAIN = 128  # rows of the synthetic objective's training split

# Two optimizers, small batches: every sampler (grid included) and the 128-row training split can use it.
TINY_SPACE = textwrap.dedent(
    """\
    description: a tiny space for tests
    optimizer:
      adam:
        lr: {low: 1.0e-3, high: 3.0e-2, log: true}
      sgd:
        lr: {low: 1.0e-2, high: 0.3, log: true}
    batch_size: {choices: [16, 32]}
    """
)


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """MNIST-1D is generated once per session into a temporary cache, never into ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNER_CACHE_DIR", str(tmp_path_factory.mktemp("tuner-cache")))
        yield


@pytest.fixture
def tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs the test in an empty directory, with the default storage (no $TUNER_STORAGE)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def objective_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("objective") / "synthetic_objective.py"
    path.write_text(SYNTHETIC_OBJECTIVE)
    return path


@pytest.fixture(scope="session")
def objective_ref(objective_file: Path) -> str:
    """``/abs/path/synthetic_objective.py:objective``."""
    return f"{objective_file}:objective"


@pytest.fixture(scope="session")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "studies.db"


@pytest.fixture
def storage_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


def study_names_in(db_path: Path) -> list[str]:
    """The study names in a SQLite storage, read without Optuna (which would create the file)."""
    if not db_path.exists():
        return []
    with sqlite3.connect(db_path) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "studies" not in tables:
            return []
        return [r[0] for r in con.execute("SELECT study_name FROM studies")]


@pytest.fixture
def assert_nothing_written() -> Callable[[Path], None]:
    """Checks that a SQLite storage file does not exist, or holds no study."""

    def check(path: Path) -> None:
        assert study_names_in(path) == [], f"{path} holds studies {study_names_in(path)}"

    return check


# -- a throwaway PostgreSQL server ---------------------------------------------------------------------------
PG_PASSWORD = "S3cr3t-pg"


def _pg_bin() -> Path | None:
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL server (Debian's package, installed by .ci/test) on 127.0.0.1 in a temporary
    directory, with password authentication; yields ``postgresql://postgres:PASSWORD@127.0.0.1:PORT``."""
    import os
    import shutil
    import subprocess

    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/test does it as root)")
    import tempfile

    # Not under pytest's temporary folder: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        for p in (sock, pwfile):
            shutil.chown(p, "postgres")
        root.chmod(0o700)
        as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_postgres, *cmd], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
    # Each test process starts its own server: a port found free may be taken by another's before this server
    # binds it, so a failed start tries another port.
    for attempt in range(3):
        port = _free_port()
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        try:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-t", "60", "-l", str(root / "log"),
                "start")
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str):
    """A fresh database on the throwaway server; yields its URL."""
    import uuid

    import sqlalchemy

    name = "t_" + uuid.uuid4().hex[:12]
    engine = sqlalchemy.create_engine(f"{postgres_url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as con:
        con.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    yield f"{postgres_url}/{name}"


# An object whose collection sends this process SIGTERM, and waits in its __del__ for the handler: the handler's
# exception is then lost there ("Exception ignored in ..."), as it is where the signal comes during a database
# connection's weakref callback.
LOST_SIGTERM = """
    import os
    import signal
    import time

    class Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs here: Python prints "Exception ignored" and goes on
"""


def legends_of(draw: Callable[[], object]) -> list[str]:
    """The legend texts of every figure ``draw()`` saves through the report's plots (drawn as they are)."""
    from tuner.report import _plots

    seen: list[str] = []
    real = _plots._save

    def save(fig, path):
        seen.extend(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
        return real(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_plots, "_save", save)
        draw()
    return seen
