"""Small data: a built-in space drops the batch sizes a training set cannot fill (and says so), refuses only
when none is left, and ``--batch-size`` / ``batch_size:`` / ``tune(batch_size=)`` replace the space's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.datasets import load_wine
from typer.testing import CliRunner

import tuner
from tuner.cli import app
from tuner.errors import ConfigError
from tuner.spaces import load_space
from tuner.study import StudySpec, create_or_join, prepare
from tuner.study._record import StudyKey


@pytest.fixture
def wine_csv(tmp_path: Path) -> Path:
    """scikit-learn's wine set: 178 rows, so 113 training rows after the test and validation splits."""
    x, y = load_wine(return_X_y=True)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["target"] = y
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    return path


def _spec(wine_csv: Path, storage_url: str, **fields) -> StudySpec:
    return StudySpec.from_mapping({"name": "wine", "objective": "tabular", "data": str(wine_csv), "target": "target",
                                   "n_trials": 2, "epochs": 1, "storage": storage_url, "device": "cpu",
                                   "threads": 1, "sampler": "random", "pruner": "none", **fields}, "test")


def _batch_choices(study: optuna.Study) -> object:
    return study.user_attrs[StudyKey.SPACE]["batch_size"]


def test_the_default_space_drops_batch_sizes_larger_than_the_training_set(wine_csv: Path, storage_url: str):
    assert load_space("default").batch_size.distribution.choices == (32, 64, 128)
    prepared = prepare(_spec(wine_csv, storage_url))
    assert prepared.space_notes == [f"batch sizes 128 left out: larger than the 113 training samples of objective "
                                    f"'tabular:{wine_csv}' (searching 32, 64)"]
    study = create_or_join(prepared)
    assert _batch_choices(study) == {"choices": [32, 64]}
    # Continued from the storage, the study keeps the space it was created with (and the same fingerprint).
    again = prepare(_spec(wine_csv, storage_url))
    assert again.space.fingerprint() == prepared.space.fingerprint()


def test_the_cli_says_what_it_left_out_and_trains(wine_csv: Path, storage_url: str, tmp_cwd: Path):
    result = CliRunner().invoke(app, ["study", "create", "--objective", "tabular", "--data", str(wine_csv),
                                      "--target", "target", "--n-trials", "2", "--epochs", "1", "--storage",
                                      storage_url, "--device", "cpu", "--no-known-starts"])
    assert result.exit_code == 0, result.output
    assert "batch sizes 128 left out: larger than the 113 training samples" in result.output
    study = optuna.load_study(study_name="tabular-default", storage=storage_url)
    assert {t.params["batch_size"] for t in study.trials} <= {32, 64}
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def test_batch_size_flag_replaces_the_space_batch_sizes(wine_csv: Path, storage_url: str, tmp_cwd: Path):
    result = CliRunner().invoke(app, ["study", "create", "--objective", "tabular", "--data", str(wine_csv),
                                      "--target", "target", "--n-trials", "3", "--epochs", "1", "--storage",
                                      storage_url, "--device", "cpu", "--batch-size", "8,16", "--format", "json",
                                      "--name", "flag"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"]["space_notes"] == []
    study = optuna.load_study(study_name="flag", storage=storage_url)
    assert _batch_choices(study) == {"choices": [8, 16]}
    assert {t.params["batch_size"] for t in study.trials} <= {8, 16}


def test_one_batch_size_is_fixed_and_spec_lists_work(wine_csv: Path, storage_url: str):
    fixed = prepare(_spec(wine_csv, storage_url, batch_size="24"))
    assert fixed.space.batch_size.fixed and fixed.space.batch_size.value == 24
    listed = prepare(_spec(wine_csv, storage_url, batch_size=[64, 16, 200]))
    assert listed.space.batch_size.distribution.choices == (16, 64)
    assert listed.space_notes[0].startswith("batch sizes 200 left out")


@pytest.mark.parametrize("value", ["0", "16,x", "", [], [True], -4])
def test_a_bad_batch_size_value_is_refused(value, wine_csv: Path, storage_url: str):
    with pytest.raises(ConfigError, match="batch_size"):
        _spec(wine_csv, storage_url, batch_size=value)


def test_none_left_is_refused_naming_the_size_and_the_fix(wine_csv: Path, storage_url: str, db_path: Path,
                                                         assert_nothing_written):
    with pytest.raises(ConfigError) as error:
        prepare(_spec(wine_csv, storage_url, batch_size=[128, 256]))
    assert str(error.value) == (
        f"batch_size (--batch-size or the spec's batch_size): every batch size (128, 256) is larger than the 113 "
        f"training samples of objective 'tabular:{wine_csv}'; pass --batch-size with sizes up to 113 (e.g. "
        f"--batch-size 16,32,64).")
    assert_nothing_written(db_path)


def test_a_space_file_fixed_too_large_names_the_file(wine_csv: Path, storage_url: str, tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text("optimizer: adam\nbatch_size: 512\n")
    with pytest.raises(ConfigError, match=rf"{space}: key 'batch_size': 512 is larger than the 113 training "
                                          r"samples .*--batch-size 16,32,64"):
        prepare(_spec(wine_csv, storage_url, space=str(space)))


def test_a_range_is_cut_at_the_training_set(wine_csv: Path, storage_url: str, tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text("optimizer: adam\nbatch_size: {type: int, low: 16, high: 512, log: true}\n")
    prepared = prepare(_spec(wine_csv, storage_url, space=str(space)))
    d = prepared.space.batch_size.distribution
    assert (d.low, d.high, d.log) == (16, 113, True)
    assert prepared.space_notes == [f"batch sizes above 113 left out: larger than the 113 training samples of "
                                    f"objective 'tabular:{wine_csv}' (searching 16 to 113)"]
    space.write_text("optimizer: adam\nbatch_size: {type: int, low: 200, high: 512}\n")
    with pytest.raises(ConfigError, match="the range 200 to 512 lies above the 113 training samples"):
        prepare(_spec(wine_csv, storage_url, space=str(space)))


def test_tune_takes_batch_sizes_too():
    seen = []

    def train(ctx: tuner.TrialContext) -> float:
        seen.append(ctx.config.batch_size)
        ctx.report(0, 0.5)
        return 0.5

    tuner.tune(train, space="default", n_trials=4, epochs=1, batch_size=[4, 8], verbose=False, known_starts=False)
    assert set(seen) <= {4, 8} and seen
    for bad in (0, 32.5, "32", True, [16, None]):  # refused as a spec's batch_size is, not with a TypeError
        with pytest.raises(ConfigError, match="batch_size: expected a positive integer"):
            tuner.tune(train, space="default", n_trials=1, epochs=1, batch_size=bad, verbose=False)
    seen.clear()  # as run_study reads them: a whole float, NumPy's ints
    tuner.tune(train, space="default", n_trials=2, epochs=1, batch_size=[np.int64(4), 8.0], verbose=False,
               known_starts=False)
    assert set(seen) <= {4, 8} and seen and all(type(b) is int for b in seen)
