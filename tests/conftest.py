"""Shared fixtures: a private data cache, a clean working directory, and a tiny objective for fast studies."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# 200 samples of make_classification (3 classes, 10 features): 128 train / 32 validation / 40 test rows,
# a two-layer MLP with one nn.Dropout. A trial of a few epochs takes milliseconds.
SYNTHETIC_OBJECTIVE = textwrap.dedent(
    '''
    """A tiny synthetic classification objective for the tests."""

    from functools import lru_cache

    from sklearn.datasets import make_classification
    from torch import nn

    from tuner.objectives import Dataset, Objective, from_arrays, split_arrays, standardize


    @lru_cache(maxsize=1)
    def load_data() -> Dataset:
        x, y = make_classification(n_samples=200, n_features=10, n_informative=6, n_redundant=2,
                                   n_classes=3, class_sep=1.5, random_state=0)
        x_rest, y_rest, x_test, y_test = split_arrays(x, y, 0.2, stratify=True)
        x_train, y_train, x_val, y_val = split_arrays(x_rest, y_rest, 0.2, stratify=True)
        x_train, x_val, x_test = standardize(x_train, x_val, x_test)
        return from_arrays(x_train, y_train, x_val, y_val, x_test, y_test, n_classes=3)


    def build_model(data: Dataset) -> nn.Module:
        return nn.Sequential(nn.Linear(data.n_features, 32), nn.ReLU(), nn.Dropout(0.0),
                             nn.Linear(32, data.n_classes))


    objective = Objective("synthetic", load_data=load_data, build_model=build_model, metric="accuracy",
                          description="make_classification, 200 samples, 3 classes")
    '''
)
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
