"""MLflow logging of studies (``--mlflow``, the spec key ``mlflow:``, ``tune(mlflow=...)``), read back with
MLflow's own client from a real SQLite tracking store."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import optuna
import pytest
from _tracking_cases import train_all_states
from typer.testing import CliRunner

import tuner
from tuner.cli import app
from tuner.errors import ConfigError

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

ROLE, STUDY_ID = "tuner.role", "tuner.study_id"


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_cwd: Path) -> None:
    """MLflow keeps a SQLite store's artifacts in ./mlruns: in the test's own folder."""


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tracking store for the module (setting one up takes a second); every test uses its own study name."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


_train = train_all_states


def _logged(uri: str, name: str) -> tuple[MlflowClient, object, list, dict[int, object]]:
    """The experiment of study ``name``, its parent runs and its trial runs by trial number (each once)."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no experiment {name!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(ROLE) == "study"]
    trial_runs = [r for r in runs if r.data.tags.get(ROLE) == "trial"]
    by_number = {int(r.data.tags["trial_number"]): r for r in trial_runs}
    assert len(by_number) == len(trial_runs), "a trial was logged twice"
    return client, experiment, parents, by_number


def _best_config(uri: str, run_id: str, tmp_path: Path) -> tuner.TrainConfig:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="best_config.yaml",
                                               dst_path=str(tmp_path / run_id), tracking_uri=uri)
    return tuner.load_config(path)


def test_tune_logs_every_trial_with_its_config_history_state_and_the_best_config(mlflow_uri: str, tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 't.db'}"
    result = tuner.tune(_train, space="lr-only", n_trials=4, epochs=3, pruner="none", storage=storage,
                        study_name="mlflow-tune", verbose=False, mlflow=mlflow_uri)
    trials = {t.number: t for t in result.study.trials}
    assert [t.state.name for t in trials.values()] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE", "COMPLETE"]

    client, experiment, parents, runs = _logged(mlflow_uri, "mlflow-tune")
    assert experiment.name == "mlflow-tune"
    assert len(parents) == 1 and parents[0].info.run_name == "mlflow-tune"
    parent = parents[0]
    assert sorted(runs) == sorted(trials)
    for number, run in runs.items():
        trial = trials[number]
        config = trial.user_attrs["config"]
        assert run.info.run_name == f"trial-{number}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["state"] == trial.state.name
        assert run.data.params["optimizer.name"] == "adam"
        assert float(run.data.params["optimizer.lr"]) == config["optimizer"]["lr"]
        assert run.data.params["schedule.name"] == "constant"
        assert run.data.params["batch_size"] == "64"
        assert run.data.params["seed"] == str(number)
        history = client.get_metric_history(run.info.run_id, "val_value")
        assert sorted((m.step, m.value) for m in history) == sorted(trial.intermediate_values.items())
        assert run.data.metrics["train_seconds"] == pytest.approx(trial.user_attrs["seconds"])
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_value")] == [0, 1, 2]

    complete, pruned, failed = runs[0], runs[1], runs[2]
    assert complete.info.status == "FINISHED" and "reason" not in complete.data.tags
    assert complete.data.metrics["final_val_value"] == pytest.approx(trials[0].value)
    assert complete.data.metrics["test_value"] == pytest.approx(trials[0].value / 2)
    assert pruned.info.status == "KILLED" and pruned.data.tags["reason_kind"] == "diverged"
    assert "final_val_value" not in pruned.data.metrics
    assert failed.info.status == "FAILED" and failed.data.tags["reason_kind"] == "error"
    assert "boom in epoch 2" in failed.data.tags["reason"]
    assert len(client.get_metric_history(failed.info.run_id, "val_value")) == 1  # the epoch it finished

    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial"] == str(result.best_trial.number)
    assert parent.data.metrics["best_val_value"] == pytest.approx(result.best_value)
    assert _best_config(mlflow_uri, parent.info.run_id, tmp_path) == result.best_config

    # Resumed: the same experiment and parent run, only the new trials are logged.
    again = tuner.tune(_train, space="lr-only", n_trials=6, epochs=3, pruner="none", storage=storage,
                       study_name="mlflow-tune", verbose=False, mlflow=mlflow_uri)
    _, _, parents, runs = _logged(mlflow_uri, "mlflow-tune")
    assert len(parents) == 1 and parents[0].info.run_id == parent.info.run_id
    assert sorted(runs) == [t.number for t in again.study.trials] == list(range(7))


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _create(objective_ref: str, storage_url: str, name: str, *extra: str) -> list[str]:
    return ["study", "create", "--objective", objective_ref, "--space", "lr-only", "--n-trials", "2", "--epochs",
            "2", "--storage", storage_url, "--sampler", "random", "--device", "cpu", "--threads", "1", "--name",
            name, *extra]


def test_cli_create_then_run_log_into_one_experiment_without_duplicates(
        tmp_cwd: Path, objective_ref: str, storage_url: str, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch):
    created = _cli(*_create(objective_ref, storage_url, "mlflow-cli", "--mlflow", mlflow_uri, "--format", "json"))
    assert created.exit_code == 0, created.output
    summary = json.loads(created.stdout)  # nothing of MLflow's on standard output
    assert summary["counts"]["complete"] == 2
    client, _, parents, runs = _logged(mlflow_uri, "mlflow-cli")
    assert sorted(runs) == [0, 1] and len(parents) == 1
    run = runs[0]
    assert run.data.params["optimizer.name"] == "adam" and "optimizer.lr" in run.data.params
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [0, 1]
    assert {"final_val_accuracy", "test_accuracy", "train_loss", "train_seconds"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2

    # `study run` with $TUNER_MLFLOW_URI instead of the flag: the same experiment, the new trial only.
    monkeypatch.setenv("TUNER_MLFLOW_URI", mlflow_uri)
    ran = _cli("study", "run", "mlflow-cli", "--storage", storage_url, "--n-trials", "3", "--threads", "1")
    assert ran.exit_code == 0, ran.output
    _, _, parents, runs = _logged(mlflow_uri, "mlflow-cli")
    assert sorted(runs) == [0, 1, 2] and len(parents) == 1
    best = optuna.load_study(study_name="mlflow-cli", storage=storage_url).best_trial
    assert client.get_run(parents[0].info.run_id).data.tags["best_trial"] == str(best.number)
    logged = _best_config(mlflow_uri, parents[0].info.run_id, tmp_cwd)
    assert logged == tuner.TrainConfig.from_dict(best.user_attrs["config"]) and logged.direction == "maximize"


def test_the_spec_key_logs_and_is_not_part_of_the_study(tmp_cwd: Path, objective_ref: str, storage_url: str,
                                                         mlflow_uri: str):
    spec = tmp_cwd / "spec.yaml"
    spec.write_text(f"name: mlflow-spec\nobjective: {objective_ref}\nspace: lr-only\nn_trials: 1\nepochs: 1\n"
                    f"sampler: random\ndevice: cpu\nthreads: 1\nstorage: {storage_url}\nmlflow: {mlflow_uri}\n"
                    f"tensorboard: {tmp_cwd / 'tb'}\n")
    result = _cli("study", "create", str(spec))
    assert result.exit_code == 0, result.output
    _, _, _, runs = _logged(mlflow_uri, "mlflow-spec")
    assert sorted(runs) == [0]
    assert (tmp_cwd / "tb" / "mlflow-spec" / "trial-0000").is_dir()
    stored = optuna.load_study(study_name="mlflow-spec", storage=storage_url).user_attrs["tuner:spec"]
    assert "mlflow" not in stored and "tensorboard" not in stored
    # Another destination (or none) is the same study: it is joined, not refused.
    again = _cli("study", "create", str(spec), "--mlflow", f"sqlite:///{tmp_cwd / 'other.db'}", "--n-trials", "2")
    assert again.exit_code == 0, again.output
    _, _, _, other = _logged(f"sqlite:///{tmp_cwd / 'other.db'}", "mlflow-spec")
    assert sorted(other) == [0, 1]  # the earlier trial too: a new destination gets the whole study


@pytest.mark.slow
def test_workers_are_logged_by_the_supervising_process(tmp_cwd: Path, objective_ref: str, storage_url: str,
                                                       mlflow_uri: str, monkeypatch: pytest.MonkeyPatch):
    from tuner.track._mlflow import MlflowTracker

    seen: list[int] = []
    real = MlflowTracker.trial_finished

    def spy(self, trial, study):
        seen.append(trial.number)
        return real(self, trial, study)

    monkeypatch.setattr(MlflowTracker, "trial_finished", spy)
    result = _cli(*_create(objective_ref, storage_url, "mlflow-pool", "--n-trials", "4", "--workers", "2",
                           "--mlflow", mlflow_uri))
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlflow-pool", storage=storage_url)
    _, _, parents, runs = _logged(mlflow_uri, "mlflow-pool")
    assert sorted(runs) == sorted(t.number for t in study.trials) and len(runs) >= 4
    assert sorted(seen) == sorted(runs)  # each as the supervisor saw it finish, not only at the end
    assert len(parents) == 1


def test_missing_mlflow_is_refused_before_any_study_exists(tmp_cwd: Path, objective_ref: str, storage_url: str,
                                                            db_path: Path, assert_nothing_written,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    result = _cli(*_create(objective_ref, storage_url, "missing", "--mlflow", "sqlite:///m.db"))
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "pip install 'optim-tuner[mlflow]'" in result.output
    assert "Traceback" not in result.output
    assert_nothing_written(db_path)
    with pytest.raises(ConfigError, match=r"tuner\[mlflow\]"):
        tuner.tune(_train, space="lr-only", n_trials=1, epochs=1, storage=storage_url, study_name="missing",
                   verbose=False, mlflow="sqlite:///m.db")
    assert_nothing_written(db_path)
    monkeypatch.setenv("TUNER_MLFLOW_URI", "sqlite:///m.db")  # the environment's URI is checked as well
    result = _cli(*_create(objective_ref, storage_url, "missing"))
    assert result.exit_code == 1 and "optim-tuner[mlflow]" in result.output
    assert_nothing_written(db_path)


def test_a_uri_mlflow_cannot_use_is_refused_before_any_study_exists(tmp_cwd: Path, objective_ref: str,
                                                                     storage_url: str, db_path: Path,
                                                                     assert_nothing_written):
    result = _cli(*_create(objective_ref, storage_url, "bad-uri", "--mlflow", "nosuchscheme://host/x"))
    assert result.exit_code == 1, result.output
    assert "MLflow cannot log to nosuchscheme://host/x: Unknown scheme 'nosuchscheme'. Valid: databricks, " \
           "databricks-uc, file, http, https, mssql, mysql, postgresql, sqlite, uc." in " ".join(result.output.split())
    assert len(result.output) < 300, result.output  # not MLflow's paragraph on its model registry
    assert ".." not in result.output.replace("...", ""), result.output  # MLflow's own full stop is not doubled
    assert_nothing_written(db_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_down_does_not_stop_the_study(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting wins over tuner's 2 retries
    with caplog.at_level(logging.WARNING, logger="tuner.track"):
        result = tuner.tune(_train, space="lr-only", n_trials=3, epochs=2, pruner="none", verbose=False,
                            mlflow=f"http://127.0.0.1:{_free_port()}")
    assert len([t for t in result.study.trials if t.state.name in ("COMPLETE", "PRUNED")]) == 3  # the budget
    warnings = [r.getMessage() for r in caplog.records if r.name == "tuner.track"]
    assert len(warnings) == 1 and "MLflow logging could not start" in warnings[0]
    assert "the study goes on" in warnings[0]


def test_a_failure_mid_study_warns_once_and_the_next_session_logs_what_was_missed(
        tmp_path: Path, mlflow_uri: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    from tuner.track._mlflow import MlflowTracker

    real = MlflowTracker._log
    calls = []

    def flaky(self, trial, study):
        calls.append(trial.number)
        if len(calls) == 2:
            raise ConnectionError("tracking server went away")
        return real(self, trial, study)

    monkeypatch.setattr(MlflowTracker, "_log", flaky)
    storage = f"sqlite:///{tmp_path / 't.db'}"
    with caplog.at_level(logging.WARNING, logger="tuner.track"):
        result = tuner.tune(_train, space="lr-only", n_trials=4, epochs=1, pruner="none", storage=storage,
                            study_name="mlflow-flaky", verbose=False, mlflow=mlflow_uri)
    assert len(result.study.trials) == 4 and calls == [0, 1]  # left out after its failure
    warnings = [r.getMessage() for r in caplog.records if r.name == "tuner.track"]
    assert len(warnings) == 1 and "ConnectionError: tracking server went away" in warnings[0]
    _, _, _, runs = _logged(mlflow_uri, "mlflow-flaky")
    assert sorted(runs) == [0]

    monkeypatch.setattr(MlflowTracker, "_log", real)
    tuner.tune(_train, space="lr-only", n_trials=4, epochs=1, pruner="none", storage=storage,
               study_name="mlflow-flaky", verbose=False, mlflow=mlflow_uri)
    _, _, parents, runs = _logged(mlflow_uri, "mlflow-flaky")
    assert sorted(runs) == [0, 1, 2, 3] and len(parents) == 1


def test_two_studies_of_one_name_keep_their_trials_apart(mlflow_uri: str):
    for _ in range(2):  # in memory: two different studies named alike
        tuner.tune(_train, space="lr-only", n_trials=2, epochs=1, pruner="none", study_name="mlflow-twins",
                   verbose=False, mlflow=mlflow_uri)
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("mlflow-twins")
    parents = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{ROLE}` = 'study'")
    assert len(parents) == 2
    for parent in parents:
        uid = parent.data.tags[STUDY_ID]
        runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{STUDY_ID}` = '{uid}'")
        assert sorted(r.data.tags.get("trial_number", "-") for r in runs) == ["-", "0", "1"]
