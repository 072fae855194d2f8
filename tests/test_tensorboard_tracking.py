"""TensorBoard logging of studies (``--tensorboard``, the spec key ``tensorboard:``, ``tune(tensorboard=...)``),
read back with TensorBoard's own event reader and HParams backend."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from _tracking_cases import train_all_states
from typer.testing import CliRunner

import tuner
from tuner.cli import app
from tuner.errors import ConfigError
from tuner.track._facts import flatten

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, metadata  # noqa: E402

_train = train_all_states


def _events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def _start_info(acc: EventAccumulator):
    return metadata.parse_session_start_info_plugin_data(acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG)
                                                          .plugin_data.content)


def _end_info(acc: EventAccumulator):
    return metadata.parse_session_end_info_plugin_data(acc.SummaryMetadata(metadata.SESSION_END_INFO_TAG)
                                                        .plugin_data.content)


def _hparams(start_info) -> dict[str, object]:
    out = {}
    for key, value in start_info.hparams.items():
        out[key] = getattr(value, value.WhichOneof("kind"))
    return out


def test_tune_writes_a_run_per_trial_with_scalars_and_hparams(tmp_path: Path):
    logdir = tmp_path / "tb"
    result = tuner.tune(_train, space="lr-only", n_trials=4, epochs=3, pruner="none", study_name="tb-tune",
                        verbose=False, tensorboard=str(logdir))
    trials = {t.number: t for t in result.study.trials}
    assert [t.state.name for t in trials.values()] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE", "COMPLETE"]
    root = logdir / "tb-tune"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"trial-{n:04d}" for n in trials]

    statuses = {"COMPLETE": api_pb2.STATUS_SUCCESS, "PRUNED": api_pb2.STATUS_UNKNOWN, "FAIL": api_pb2.STATUS_FAILURE}
    for number, trial in trials.items():
        acc = _events(root / f"trial-{number:04d}")
        scalars = acc.Tags()["scalars"]
        history = [(e.step, e.value) for e in acc.Scalars("val/value")]
        assert [s for s, _ in history] == sorted(trial.intermediate_values)
        assert [v for _, v in history] == pytest.approx([trial.intermediate_values[s] for s, _ in history])
        assert "final/train_seconds" in scalars
        if trial.state.name == "COMPLETE":
            assert acc.Scalars("final/val_value")[0].value == pytest.approx(trial.value)
            assert acc.Scalars("final/test_value")[0].value == pytest.approx(trial.value / 2)
        else:
            assert "final/val_value" not in scalars
        start = _start_info(acc)
        assert start.group_name == f"trial-{number:04d}"
        hparams = _hparams(start)
        config = flatten(trial.user_attrs["config"])
        assert hparams["optimizer.name"] == "adam" and hparams["schedule.name"] == "constant"
        assert hparams["optimizer.lr"] == pytest.approx(config["optimizer.lr"])
        assert hparams["batch_size"] == 64 and hparams["seed"] == number
        assert _end_info(acc).status == statuses[trial.state.name]
    assert [e.step for e in _events(root / "trial-0000").Scalars("val/value")] == [0, 1, 2]

    experiment = metadata.parse_experiment_plugin_data(_events(root).SummaryMetadata(metadata.EXPERIMENT_TAG)
                                                       .plugin_data.content)
    assert experiment.name == "tb-tune"
    infos = {h.name: h for h in experiment.hparam_infos}
    assert {"optimizer.name", "optimizer.lr", "schedule.name", "batch_size", "seed"} <= set(infos)
    assert infos["optimizer.lr"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["optimizer.name"].type == api_pb2.DATA_TYPE_STRING
    assert [v.string_value for v in infos["optimizer.name"].domain_discrete.values] == ["adam"]
    assert {m.name.tag for m in experiment.metric_infos} == {"final/val_value", "val/value", "final/test_value",
                                                            "final/train_seconds"}


def test_the_hparams_dashboard_lists_the_trials(tmp_path: Path):
    """TensorBoard's own HParams backend, as the dashboard queries it: the experiment and a session group per
    trial, with its hyperparameters, metrics and status."""
    from google.protobuf import json_format
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context, get_experiment, list_session_groups

    logdir = tmp_path / "tb"
    result = tuner.tune(_train, space="lr-only", n_trials=3, epochs=2, pruner="none", study_name="tb-dash",
                        verbose=False, tensorboard=str(logdir))
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer,
                               data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)))
    backend = backend_context.Context(tb)
    request = context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    assert "optimizer.lr" in [h.name for h in experiment.hparam_infos]
    assert "final/val_value" in [m.name.tag for m in experiment.metric_infos]
    query = json_format.Parse('{"startIndex": 0, "sliceSize": 100, "allowedStatuses": ["STATUS_UNKNOWN", '
                              '"STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"], '
                              '"colParams": [{"hparam": "optimizer.lr"}, {"metric": {"tag": "final/val_value"}}]}',
                              api_pb2.ListSessionGroupsRequest())
    groups = {g.name: g for g in list_session_groups.Handler(request, backend, "", query).run().session_groups}
    assert sorted(groups) == [f"trial-{t.number:04d}" for t in result.study.trials]
    best = result.best_trial
    group = groups[f"trial-{best.number:04d}"]
    assert group.hparams["optimizer.lr"].number_value == pytest.approx(best.user_attrs["config"]["optimizer"]["lr"])
    values = {m.name.tag: m.value for m in group.metric_values}
    assert values["final/val_value"] == pytest.approx(best.value)


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _create(objective_ref: str, storage_url: str, name: str, *extra: str) -> list[str]:
    return ["study", "create", "--objective", objective_ref, "--space", "lr-only", "--n-trials", "2", "--epochs",
            "2", "--storage", storage_url, "--sampler", "random", "--device", "cpu", "--threads", "1", "--name",
            name, *extra]


def test_cli_create_then_run_write_each_trial_once(tmp_cwd: Path, objective_ref: str, storage_url: str):
    logdir = tmp_cwd / "tb"
    created = _cli(*_create(objective_ref, storage_url, "tb-cli", "--tensorboard", logdir))
    assert created.exit_code == 0, created.output
    ran = _cli("study", "run", "tb-cli", "--storage", storage_url, "--n-trials", "3", "--threads", "1",
               "--tensorboard", logdir)
    assert ran.exit_code == 0, ran.output
    root = logdir / "tb-cli"
    study = optuna.load_study(study_name="tb-cli", storage=storage_url)
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    assert [p.name for p in runs] == [f"trial-{t.number:04d}" for t in study.trials]
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        acc = _events(run)
        assert [e.step for e in acc.Scalars("val/accuracy")] == [0, 1]
        assert [e.step for e in acc.Scalars("train/loss")] == [0, 1]
        assert {"final/val_accuracy", "final/test_accuracy"} <= set(acc.Tags()["scalars"])
    assert len(list(root.glob("events.out.tfevents.*"))) == 1  # one experiment summary, the latest


@pytest.mark.slow
def test_tune_with_workers_writes_every_trial(tmp_path: Path):
    script = tmp_path / "train_job.py"
    script.write_text(textwrap.dedent("""
        import tuner

        def train(ctx):
            for epoch in range(ctx.config.epochs):
                ctx.report(epoch, ctx.config.optimizer.lr)
            return ctx.config.optimizer.lr

        if __name__ == "__main__":
            tuner.tune(train, space="lr-only", n_trials=4, epochs=2, pruner="none", workers=2,
                       storage="sqlite:///w.db", study_name="w", tensorboard="tb", verbose=False)
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(tuner.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w.db'}")
    runs = sorted(p.name for p in (tmp_path / "tb" / "w").iterdir() if p.is_dir())
    assert runs == [f"trial-{t.number:04d}" for t in study.trials] and len(runs) == 4
    for trial in study.trials:
        acc = _events(tmp_path / "tb" / "w" / f"trial-{trial.number:04d}")
        assert [e.step for e in acc.Scalars("val/value")] == [0, 1]
        assert _hparams(_start_info(acc))["optimizer.lr"] == pytest.approx(trial.user_attrs["config"]["optimizer"]
                                                                           ["lr"])


def test_missing_tensorboard_is_refused_before_any_study_exists(tmp_cwd: Path, objective_ref: str,
                                                                storage_url: str, db_path: Path,
                                                                assert_nothing_written,
                                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import raises ImportError
    result = _cli(*_create(objective_ref, storage_url, "missing", "--tensorboard", tmp_cwd / "tb"))
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "pip install 'optim-tuner[tensorboard]'" in result.output
    assert_nothing_written(db_path)
    with pytest.raises(ConfigError, match=r"tuner\[tensorboard\]"):
        tuner.tune(_train, space="lr-only", n_trials=1, epochs=1, storage=storage_url, study_name="missing",
                   verbose=False, tensorboard=str(tmp_cwd / "tb"))
    assert_nothing_written(db_path)


def test_a_folder_that_cannot_be_made_is_refused_first_and_nothing_is_made_before_a_refusal(
        tmp_cwd: Path, objective_ref: str, storage_url: str, db_path: Path, assert_nothing_written):
    (tmp_cwd / "taken").write_text("a file\n")
    result = _cli(*_create(objective_ref, storage_url, "folder", "--tensorboard", "taken/tb"))
    assert result.exit_code == 1 and "TensorBoard folder taken/tb: cannot be made (Not a directory)." in result.output
    # Another mistake of the same command (an MLflow URI MLflow cannot open) leaves no TensorBoard folder made.
    result = _cli(*_create(objective_ref, storage_url, "folder", "--tensorboard", "tb/runs", "--mlflow", "bogus://x"))
    assert result.exit_code == 1, result.output
    assert not (tmp_cwd / "tb").exists()
    assert_nothing_written(db_path)


def test_a_failing_writer_does_not_stop_the_study(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch):
    from tuner.track._tensorboard import TensorBoardTracker

    def full_disk(self, trial, study):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardTracker, "_write", full_disk)
    with caplog.at_level(logging.WARNING, logger="tuner.track"):
        result = tuner.tune(_train, space="lr-only", n_trials=3, epochs=1, pruner="none", verbose=False,
                            tensorboard=str(tmp_path / "tb"))
    assert len(result.study.trials) == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "tuner.track"]
    assert len(warnings) == 1 and "TensorBoard logging failed" in warnings[0]
    assert "No space left on device" in warnings[0]


def test_two_studies_of_one_name_get_folders_of_their_own(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    for _ in range(2):  # in memory: two different studies named alike
        tuner.tune(_train, space="lr-only", n_trials=1, epochs=1, study_name="tb-twins", verbose=False,
                   tensorboard=str(tmp_path))
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and folders[0] == "tb-twins" and folders[1].startswith("tb-twins-")
    assert all((tmp_path / f / "trial-0000").is_dir() for f in folders)
    # The second is told where its logs went.
    said = [r.getMessage() for r in caplog.records if "holds the logs of another study" in r.getMessage()]
    assert said == [f"TensorBoard: {tmp_path / 'tb-twins'} holds the logs of another study named 'tb-twins': this one "
                    f"logs to {tmp_path / folders[1]}"]


def test_flatten_names_nested_keys_with_dots():
    assert flatten({"optimizer": {"name": "adam", "betas": [0.9, 0.99]}, "batch_size": 64}) == {
        "optimizer.name": "adam", "optimizer.betas.0": 0.9, "optimizer.betas.1": 0.99, "batch_size": 64}


def test_a_study_whose_budget_is_spent_logs_the_trials_not_logged_yet(tmp_cwd: Path, objective_ref: str,
                                                                      storage_url: str):
    """study run with --tensorboard on a study that has run its trials: nothing trains, the trials are logged."""
    created = _cli(*_create(objective_ref, storage_url, "tb-late"))
    assert created.exit_code == 0, created.output
    logdir = tmp_cwd / "tb"
    ran = _cli("study", "run", "tb-late", "--storage", storage_url, "--tensorboard", logdir)
    assert ran.exit_code == 0 and "already has its" in ran.output, ran.output
    study = optuna.load_study(study_name="tb-late", storage=storage_url)
    assert sorted(p.name for p in (logdir / "tb-late").iterdir() if p.is_dir()) == [
        f"trial-{t.number:04d}" for t in study.trials]


def test_a_tracker_that_cannot_start_promises_a_catch_up_only_where_a_later_session_can_give_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """A study in memory (tune() without a storage) has no later session: the warning said the next one would
    log the trials missed."""
    import tuner.track as track

    def refuse(*args, **kwargs):
        raise OSError("the destination is down")

    monkeypatch.setattr(track, "_open_tensorboard", refuse)
    for storage, says in ((None, "the study is in memory (no storage), so the trials missed are not logged later"),
                          (f"sqlite:///{tmp_path / 't.db'}", "the next session that logs to the same destination")):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            tuner.tune(lambda ctx: 0.5, space="lr-only", n_trials=1, epochs=1, verbose=False, known_starts=False,
                       storage=storage, study_name="t", tensorboard=str(tmp_path / "runs"))
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "TensorBoard logging could not start" in said and says in said, said
