"""``tuner study delete | enqueue | rename | copy``: keeping studies tidy without losing anything by accident."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

import tuner.cli._app as cli_app
from tuner.cli import app
from tuner.study._starts import START_ATTR

runner = CliRunner()


@pytest.fixture
def made(tmp_path: Path, objective_ref: str, space_file: Path) -> str:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    result = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--space", str(space_file),
                                 "--n-trials", "3", "--epochs", "2", "--storage", url, "--name", "m", "--sampler",
                                 "random", "--pruner", "none", "--device", "cpu", "--threads", "1", "--format",
                                 "json"])
    assert result.exit_code == 0, result.output
    return url


def _names(url: str) -> list[str]:
    return optuna.get_all_study_names(url)


def test_delete_asks_and_yes_skips_the_question(made: str, monkeypatch: pytest.MonkeyPatch):
    refused = runner.invoke(app, ["study", "delete", "m", "--storage", made])
    assert refused.exit_code == 1 and "pass --yes to delete it" in refused.output
    assert _names(made) == ["m"]
    monkeypatch.setattr(cli_app, "_can_ask", lambda: True)
    kept = runner.invoke(app, ["study", "delete", "m", "--storage", made], input="n\n")
    assert kept.exit_code == 1 and "Delete study 'm' in" in kept.output and "3 trial(s)" in kept.output
    assert "nothing deleted" in kept.output and _names(made) == ["m"]
    asked = runner.invoke(app, ["study", "delete", "m", "--storage", made], input="y\n")
    assert asked.exit_code == 0, asked.output
    assert _names(made) == []
    gone = runner.invoke(app, ["study", "delete", "m", "--storage", made, "--yes"])
    assert gone.exit_code == 1 and "Unknown study 'm'" in gone.output


def test_delete_is_refused_while_a_worker_trains_a_trial_unless_forced(made: str):
    """A study deleted under a running worker stopped it with a storage error: refused while a trial shows
    signs of life (before asking), --force deletes it; a trial left RUNNING by a dead process holds nothing."""
    import time

    from tuner.study._liveness import worker_identity
    from tuner.study._record import Key

    study = optuna.load_study(study_name="m", storage=made)
    trial = study.ask()  # RUNNING, in this (live) process, beating now
    study._storage.set_trial_user_attr(trial._trial_id, Key.WORKER, worker_identity())
    study._storage.set_trial_system_attr(trial._trial_id, Key.HEARTBEAT, time.time())
    refused = runner.invoke(app, ["study", "delete", "m", "--storage", made, "--yes"])
    assert refused.exit_code == 1 and "has 1 trial(s) training now" in refused.output and "--force" in refused.output
    assert _names(made) == ["m"]
    study._storage.set_trial_system_attr(trial._trial_id, Key.HEARTBEAT, time.time() - 3600)  # long silent
    stale = runner.invoke(app, ["study", "delete", "m", "--storage", made, "--yes"])
    assert stale.exit_code == 0 and "1 running" in stale.output, stale.output
    assert _names(made) == []


def test_forced_delete_under_a_run_stops_it_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    import tuner

    url = f"sqlite:///{tmp_path / 'd.db'}"
    waits: list[float] = []  # a record that no longer exists is not retried as a busy storage is (0.5, 1, 2 s)
    monkeypatch.setattr(time, "sleep", waits.append)

    def train(ctx):
        if ctx.number == 1:  # another terminal: `tuner study delete d --force`
            optuna.delete_study(study_name="d", storage=url)
        ctx.report(0, 0.5)
        return 0.5

    with pytest.raises(tuner.StudyError, match="Study 'd' was deleted from .* while it ran: its trials are gone"):
        tuner.tune(train, "lr-only", n_trials=4, epochs=1, storage=url, study_name="d", verbose=False,
                   known_starts=False)
    assert waits == []


def test_enqueue_queues_checked_configs_that_run_next(made: str, tmp_path: Path):
    study = optuna.load_study(study_name="m", storage=made)
    config = dict(study.trials[0].user_attrs["config"])
    config["optimizer"] = {**config["optimizer"], "lr": 0.0123}
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["study", "enqueue", "m", str(good), "--storage", made])
    assert result.exit_code == 0, result.output
    assert f"queued {good}" in result.output and "1 config(s) queued" in result.output
    # The budget of 3 is spent: the command it gives raises it, so that it runs the config as pasted.
    said = " ".join(result.output.split())
    assert f"`tuner study run m --n-trials 4 --storage {made}` trains them first" in said, said
    shown = runner.invoke(app, ["study", "show", "m", "--storage", made])
    assert shown.exit_code == 0 and ", 1 queued" in shown.output, shown.output  # as `study list` says "+1 queued"
    # The commands that act on the study count its trials as study list does, the queued config beside them
    copied = runner.invoke(app, ["study", "copy", "m", "m2", "--storage", made])
    assert copied.exit_code == 0 and "(3 trial(s), 1 queued)" in copied.output, copied.output
    spent = runner.invoke(app, ["study", "run", "m", "--storage", made])  # its budget of 3 is spent
    assert "the study already has its 3 finished trials; raise the budget with --n-trials (1 queued config waits " \
           "for it)" in " ".join(spent.output.split())
    ran = runner.invoke(app, ["study", "run", "m", "--storage", made, "--n-trials", "4"])
    assert ran.exit_code == 0, ran.output
    trial = optuna.load_study(study_name="m", storage=made).trials[3]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs[START_ATTR] == f"enqueued {good}"
    assert trial.user_attrs["config"]["optimizer"]["lr"] == pytest.approx(0.0123)

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**config, "optimizer": {"name": "adagrad", "lr": 0.01}}))
    refused = runner.invoke(app, ["study", "enqueue", "m", str(good), str(bad), "--storage", made])
    assert refused.exit_code == 1 and str(bad) in refused.output and "cannot sample this config" in refused.output
    waiting = optuna.load_study(study_name="m", storage=made).get_trials(states=(TrialState.WAITING,))
    assert waiting == []  # the good file before the bad one was not queued either


def test_rename_keeps_every_trial_and_the_study_runs_on(made: str):
    before = [(t.number, t.value) for t in optuna.load_study(study_name="m", storage=made).trials]
    result = runner.invoke(app, ["study", "rename", "m", "m2", "--storage", made])
    assert result.exit_code == 0, result.output
    assert _names(made) == ["m2"]
    renamed = optuna.load_study(study_name="m2", storage=made)
    assert [(t.number, t.value) for t in renamed.trials] == before
    assert renamed.user_attrs["tuner:spec"]["name"] == "m2"
    ran = runner.invoke(app, ["study", "run", "m2", "--storage", made, "--n-trials", "4"])
    assert ran.exit_code == 0, ran.output
    assert len(optuna.load_study(study_name="m2", storage=made).trials) == 4


def test_rename_is_refused_onto_a_taken_name_or_with_running_trials(made: str):
    runner.invoke(app, ["study", "copy", "m", "other", "--storage", made])
    taken = runner.invoke(app, ["study", "rename", "m", "other", "--storage", made])
    assert taken.exit_code == 1 and "exists in" in taken.output and sorted(_names(made)) == ["m", "other"]
    study = optuna.load_study(study_name="m", storage=made)
    study.ask()  # a trial some worker is running (started just now: within the grace period)
    running = runner.invoke(app, ["study", "rename", "m", "m3", "--storage", made])
    assert running.exit_code == 1 and "has 1 trial(s) training now" in running.output
    assert sorted(_names(made)) == ["m", "other"]


def test_a_trial_left_running_by_a_killed_worker_is_said_and_moves_with_a_rename_or_copy(made: str, tmp_path: Path):
    """After a kill -9, rename was refused for ever ("stop its workers (or wait)": there were none), while
    delete went ahead; show, and a copy, said nothing of the trial the dead worker left RUNNING."""
    import subprocess
    import sys

    from tuner.study._liveness import worker_identity
    from tuner.study._record import Key

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study = optuna.load_study(study_name="m", storage=made)
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, Key.WORKER, {**worker_identity(), "pid": int(dead.stdout)})
    left = f"left by a worker that is gone: the next `tuner study run m --storage {made}` fails it and queues its " \
           f"config again"
    shown = runner.invoke(app, ["study", "show", "m", "--storage", made])
    assert f"1 running (1 of them {left})" in " ".join(shown.output.split())
    renamed = runner.invoke(app, ["study", "rename", "m", "m2", "--storage", made])
    assert renamed.exit_code == 0, renamed.output
    assert f"note: 1 RUNNING trial(s) went with it, {left.replace('run m ', 'run m2 ')}" in " ".join(
        renamed.output.split())
    journal = f"journal:{tmp_path / 'c.journal'}"
    copied = runner.invoke(app, ["study", "copy", "m2", "c", "--storage", made, "--to-storage", journal])
    assert f"`tuner study run c --storage {journal}` fails it" in " ".join(copied.output.split())
    resumed = runner.invoke(app, ["study", "run", "m2", "--storage", made])  # its budget is spent: it ran nothing
    assert resumed.exit_code == 0 and "the study already has its 3 finished trials" in resumed.output
    assert not optuna.load_study(study_name="m2", storage=made).get_trials(states=(TrialState.RUNNING,))


def test_a_new_name_follows_the_rule_of_new_studies_and_an_old_name_still_opens(made: str):
    """study copy/rename refuse the names a new study is refused (an option, an invisible character, over 512);
    a study that has such a name already (made before the rule, or elsewhere) is still run under it."""
    for bad, problem in (("-x", "must not start with '-'"), ("a\u202eb", "invisible formatting"),
                         ("n" * 600, "at most 512")):
        refused = runner.invoke(app, ["study", "copy", "--storage", made, "--", "m", bad])
        assert refused.exit_code == 1 and problem in refused.output, refused.output
    assert _names(made) == ["m"]

    study = optuna.load_study(study_name="m", storage=made)
    optuna.copy_study(from_study_name="m", from_storage=made, to_storage=made, to_study_name="-old")  # as before
    old = optuna.load_study(study_name="-old", storage=made)
    old.set_user_attr("tuner:spec", {**study.user_attrs["tuner:spec"], "name": "-old"})
    ran = runner.invoke(app, ["study", "run", "--storage", made, "--n-trials", "4", "--", "-old"])
    assert ran.exit_code == 0, ran.output
    assert len(optuna.load_study(study_name="-old", storage=made).trials) == 4


def test_copy_to_another_storage_is_a_whole_study(made: str, tmp_path: Path):
    journal = f"journal:{tmp_path / 'copy.journal'}"
    result = runner.invoke(app, ["study", "copy", "m", "m-copy", "--storage", made, "--to-storage", journal])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["study", "show", "m-copy", "--storage", journal, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert '"complete": 3' in shown.output
    assert _names(made) == ["m"]
    # A copy onto its own name: the advice was to delete the study being copied.
    same = runner.invoke(app, ["study", "copy", "m", "m", "--storage", made])
    assert same.exit_code == 1 and "delete" not in same.output, same.output
    assert "needs a name of its own" in same.output
    assert runner.invoke(app, ["study", "copy", "m", "m", "--storage", made, "--to-storage", journal.replace(
        "copy.journal", "other.journal")]).exit_code == 0  # the same name in another storage is a copy


def test_study_list_reads_each_studys_trials_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``study list`` of a storage with many trials reads each study's trials once (not once for the counts,
    once for the best and once for the queued), and says what Optuna's own summaries say."""
    from datetime import datetime

    import tuner.study._describe as describe

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'many.db'}"
    x = optuna.distributions.FloatDistribution(0, 1)
    for name, direction in (("up", "maximize"), ("down", "minimize")):
        study = optuna.create_study(study_name=name, storage=url, direction=direction)
        study.add_trials([optuna.trial.create_trial(params={"x": i / 10}, distributions={"x": x}, value=i / 10)
                          for i in range(10)])
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
        study.enqueue_trial({"x": 0.5})
    # and one of two objectives, as tune() makes them: its best column is its knee's, from the same one read
    pareto = optuna.create_study(study_name="pareto", storage=url, directions=["maximize", "minimize"])
    pareto.set_user_attr("tuner:tune", {"function": "train", "objectives": ["value", "train_seconds"]})
    pareto.add_trials([optuna.trial.create_trial(params={"x": i / 10}, distributions={"x": x}, values=[v, s])
                       for i, (v, s) in enumerate(((0.95, 10.0), (0.94, 2.0), (0.10, 1.0)))])
    reads: list[int] = []
    rdb = optuna.storages.RDBStorage
    read = rdb._get_trials  # what every read of a study's trials comes down to, cached or not

    def counting(self, study_id, *args, **kwargs):
        reads.append(study_id)
        return read(self, study_id, *args, **kwargs)

    monkeypatch.setattr(rdb, "_get_trials", counting)
    rows = describe.list_studies(url)
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 3
    assert rows[2]["name"] == "pareto" and rows[2]["best"] == pytest.approx(0.94)  # the knee, trial 1
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(url, include_best_trial=False)}
    for row, best in zip(rows[:2], (0.9, 0.0), strict=True):
        summary = summaries[row["name"]]
        assert (row["trials"], row["queued"], row["best"]) == (summary.n_trials - 1, 1, best)
        assert datetime.fromisoformat(row["created"]) == summary.datetime_start.replace(microsecond=0)


def test_a_trial_started_as_its_study_was_deleted_does_not_pass_to_the_next_study(tmp_path: Path):
    """A worker inserting its next trial as `study delete --force` ran left that trial behind (SQLite keeps no
    foreign keys), and SQLite gave the next study made in the file the deleted one's id: tune() then refused
    its own new study as "a plain Optuna study". The run's stop drops such trials."""
    import sqlite3

    import tuner

    url = f"sqlite:///{tmp_path / 'd.db'}"
    con = sqlite3.connect(tmp_path / "d.db")

    def deleting(ctx):
        if ctx.number == 1:  # another terminal deletes the study; a worker's insert lands after the delete
            study_id = con.execute("SELECT study_id FROM studies WHERE study_name = 'd'").fetchone()[0]
            optuna.delete_study(study_name="d", storage=url)
            with con:
                con.execute("INSERT INTO trials (number, study_id, state, datetime_start) VALUES (5, ?, 'RUNNING', "
                            "'2026-01-01 00:00:00')", (study_id,))
        ctx.report(0, 0.5)
        return 0.5

    with pytest.raises(tuner.StudyError, match="was deleted from"):
        tuner.tune(deleting, "lr-only", n_trials=3, epochs=1, storage=url, study_name="d", verbose=False,
                   known_starts=False)
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone() == (0,)

    def train(ctx):
        ctx.report(0, 0.5)
        return 0.5

    result = tuner.tune(train, "lr-only", n_trials=1, epochs=1, storage=url, study_name="w", verbose=False,
                        known_starts=False)
    assert len(result.study.trials) == 1  # its own trial only
