"""The ``tuner`` command line, in process with Typer's CliRunner."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tuner import __version__
from tuner.cli import app
from tuner.errors import ConfigError
from tuner.objectives import list_objectives
from tuner.spaces import list_spaces


@pytest.fixture
def cli(tmp_cwd: Path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _create_args(objective_ref: str, storage_url: str, *extra: str) -> list[str]:
    return ["study", "create", "--objective", objective_ref, "--n-trials", "3", "--epochs", "2",
            "--storage", storage_url, "--sampler", "random", "--device", "cpu", "--name", "cli", *extra]


def _terminal(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """Standard output as a terminal of ``width`` columns (piped, tables keep their rows whole)."""
    from tuner.cli import _output

    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setattr(_output.out, "width", width)


def _assert_user_error(result, *fragments: str) -> str:
    """Exit code 1, one 'error:' line naming the problem, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"tuner {__version__} (optuna {optuna.__version__})")


def test_create_runs_a_study_with_json_output(cli, objective_ref: str, storage_url: str, db_path: Path):
    summary = _json(cli(*_create_args(objective_ref, storage_url, "--format", "json")))
    assert summary["name"] == "cli"
    assert summary["objective"] == objective_ref
    assert summary["direction"] == "maximize"
    assert summary["n_trials"] == 3
    assert summary["counts"] == {"complete": 3, "pruned": 0, "failed": 0, "running": 0, "left_behind": 0,
                                 "queued": 0}
    assert summary["run"]["trials"] == 3 and summary["run"]["stopped_by"] == "budget"
    assert 0.0 <= summary["best"]["value"] <= 1.0
    assert summary["best"]["config"]["epochs"] == 2
    assert len(summary["top"]) == 3
    assert db_path.is_file()
    study = optuna.load_study(study_name="cli", storage=storage_url)
    assert len(study.trials) == 3


def test_create_text_output(cli, objective_ref: str, storage_url: str):
    result = cli(*_create_args(objective_ref, storage_url))
    assert result.exit_code == 0, result.output
    assert "study cli in sqlite:///" in result.stdout
    assert "objective synthetic" in result.stdout and "3 trials x 2 epochs on cpu" in result.stdout
    assert result.stdout.count(" COMPLETE ") == 3
    assert "ran 3 trial(s)" in result.stdout
    assert "trials: 3 complete, 0 pruned, 0 failed (budget 3)" in result.stdout
    assert "best config" in result.stdout


def test_no_run_then_study_run(cli, objective_ref: str, storage_url: str):
    created = _json(cli(*_create_args(objective_ref, storage_url, "--no-run", "--format", "json")))
    assert created["counts"]["complete"] == 0 and created["best"] is None
    text = cli(*_create_args(objective_ref, storage_url, "--no-run", "--workers", "2"))
    assert text.exit_code == 0, text.output  # the study exists: joined, and the flags not stored are in the hint
    assert "joined the existing study cli in sqlite:///" in text.stdout and "(0 trials finished already)" in text.stdout
    assert f"run it with: tuner study run cli --storage {storage_url} --workers 2" in text.stdout
    # A tracker the printed command would refuse is refused now, before a study exists.
    bad = cli(*_create_args(objective_ref, storage_url, "--no-run", "--name", "t2", "--tensorboard",
                            str(Path(storage_url.removeprefix("sqlite:///"))) + "/logs"))
    _assert_user_error(bad, "TensorBoard folder")
    assert "t2" not in optuna.get_all_study_names(storage_url)
    # Tracking is not stored with a study: the command it is told to run carries it.
    logged = cli(*_create_args(objective_ref, storage_url, "--no-run", "--tensorboard", "my logs"))
    assert logged.exit_code == 0, logged.output
    assert f"tuner study run cli --storage {storage_url} --tensorboard 'my logs'" in logged.stdout
    assert "not stored with the study" in logged.stdout

    ran = _json(cli("study", "run", "cli", "--storage", storage_url, "--format", "json"))
    assert ran["counts"]["complete"] == 3 and ran["run"]["trials"] == 3
    again = _json(cli("study", "run", "cli", "--storage", storage_url, "--format", "json"))
    assert again["run"]["trials"] == 0
    more = _json(cli("study", "run", "cli", "--storage", storage_url, "--n-trials", "4", "--timeout", "600",
                     "--format", "json"))
    assert more["run"]["trials"] == 1 and more["counts"]["complete"] == 4
    # The budget is saved; the timeout was that run's (saved, it time-boxed every later run, and no value
    # cleared it).
    stored = optuna.load_study(study_name="cli", storage=storage_url).user_attrs["tuner:spec"]
    assert (stored["n_trials"], stored["timeout"]) == (4, None)
    # Created again without --n-trials: the study keeps its budget of 4 (not the default 30) and runs nothing.
    joined = cli("study", "create", "--objective", objective_ref, "--epochs", "2", "--storage", storage_url,
                 "--sampler", "random", "--device", "cpu", "--name", "cli")
    assert joined.exit_code == 0, joined.output
    assert optuna.load_study(study_name="cli", storage=storage_url).user_attrs["tuner:spec"]["n_trials"] == 4
    assert len(optuna.load_study(study_name="cli", storage=storage_url).trials) == 4


def test_the_tracking_flags_of_a_run_command_hide_a_password():
    from tuner.cli._app import _tracking_flags
    from tuner.study import StudySpec

    spec = StudySpec(mlflow="postgresql://me:s3cret@db/mlflow", tensorboard="tb")
    assert _tracking_flags(spec) == " --mlflow <your MLflow URI> --tensorboard tb"
    assert _tracking_flags(StudySpec(mlflow="sqlite:///m.db")) == " --mlflow sqlite:///m.db"


def test_confirmation_flags_where_no_confirmation_runs_are_said_to_do_nothing(cli, objective_ref: str,
                                                                              storage_url: str):
    assert cli(*_create_args(objective_ref, storage_url)).exit_code == 0
    for extra, said in ((["--trial", "0", "--seeds", "2"], "--seeds sizes the confirmation runs, and none run here "
                                                           "(--trial takes that trial as it is)"),
                        (["--no-confirm", "--top-k", "2"], "--top-k sizes the confirmation runs, and none run here "
                                                           "(--no-confirm runs no confirmation)")):
        done = cli("study", "export", "cli", "--storage", storage_url, *extra)
        assert done.exit_code == 0 and f"warning: {said}" in " ".join(done.output.split()), done.output
    assert "warning" not in cli("study", "export", "cli", "--storage", storage_url, "--trial", "0").output


def test_study_run_uses_the_default_storage(cli, objective_ref: str, tmp_cwd: Path):
    args = ["study", "create", "--objective", objective_ref, "--n-trials", "1", "--epochs", "1", "--device",
            "cpu", "--no-run"]
    assert cli(*args).exit_code == 0
    assert (tmp_cwd / "tuner.db").is_file()
    name = Path(objective_ref.split(":")[0]).stem + "-default"
    ran = _json(cli("study", "run", name, "--format", "json"))
    assert ran["run"]["trials"] == 1


def test_create_refuses_a_different_spec_under_the_same_name(cli, objective_ref: str, storage_url: str):
    assert cli(*_create_args(objective_ref, storage_url, "--no-run")).exit_code == 0
    result = cli(*_create_args(objective_ref, storage_url, "--no-run", "--seed", "3"))
    _assert_user_error(result, "Study 'cli' already exists", "seed: 0 -> 3", "Nothing was changed")


def test_an_empty_warm_start_flag_is_named_as_the_flag(cli, objective_ref: str, storage_url: str):
    refused = cli("study", "create", "--objective", objective_ref, "--warm-start", "", "--no-run", "--storage",
                  storage_url)
    assert refused.exit_code == 1
    assert "error: --warm-start: String should have at least 1 character. Got '' instead." in refused.output


def test_trials_of_a_study_without_trials_says_so(cli, objective_ref: str, storage_url: str):
    made = cli("study", "create", "--objective", objective_ref, "--no-run", "--name", "e", "--storage", storage_url,
               "--no-known-starts", "--device", "cpu")
    assert made.exit_code == 0, made.output
    shown = cli("study", "trials", "e", "--storage", storage_url)
    assert shown.exit_code == 0 and "Empty DataFrame" not in shown.output
    assert f"study 'e' has no trials yet; `tuner study run e --storage {storage_url}` runs them" in \
        " ".join(shown.output.split())


def test_study_list_and_show(cli, objective_ref: str, storage_url: str):
    empty = cli("study", "list", "--storage", storage_url)
    assert empty.exit_code == 0 and "no studies in" in empty.stdout and "does not exist yet" in empty.stdout
    assert _json(cli("study", "list", "--storage", storage_url, "--format", "json")) == []

    assert cli(*_create_args(objective_ref, storage_url)).exit_code == 0
    rows = _json(cli("study", "list", "--storage", storage_url, "--format", "json"))
    assert [(r["name"], r["trials"], r["objective"]) for r in rows] == [("cli", 3, objective_ref)]
    assert 0.0 <= rows[0]["best"] <= 1.0
    listed = cli("study", "list", "--storage", storage_url)
    assert listed.exit_code == 0 and "cli" in listed.stdout
    # A study created, not run: its queued first trials are not counted as trials.
    assert cli("study", "create", "--objective", objective_ref, "--space", "default", "--name", "later", "--storage",
               storage_url, "--no-run").exit_code == 0
    later = next(r for r in _json(cli("study", "list", "--storage", storage_url, "--format", "json"))
                 if r["name"] == "later")
    assert later["trials"] == 0 and later["queued"] == 2
    shown = cli("study", "list", "--storage", storage_url).stdout.split()  # wrapped within the terminal's width
    assert "(+2" in shown and "queued)" in shown

    assert "best trials (2 of 3 complete)" in cli("study", "show", "cli", "--storage", storage_url, "--top", "2").stdout
    shown = _json(cli("study", "show", "cli", "--storage", storage_url, "--format", "json", "--top", "2"))
    assert shown["counts"]["complete"] == 3 and len(shown["top"]) == 2
    assert shown["best"]["value"] == max(r["value"] for r in shown["top"])
    for bad in ("0", "-1"):  # -1 listed all but the last trial, as a Python slice does
        refused = cli("study", "show", "cli", "--storage", storage_url, "--top", bad)
        _assert_user_error(refused, "--top")
    text = cli("study", "show", "cli", "--storage", storage_url)
    assert text.exit_code == 0
    assert "trials: 3 complete" in text.stdout and "best trials" in text.stdout and "best config" in text.stdout
    assert "maximize accuracy" in text.stdout.splitlines()[0]  # the header names the metric
    assert "optimizer:" in text.stdout


def test_a_storage_in_a_folder_that_is_not_there_is_refused(cli, objective_ref: str, tmp_cwd: Path):
    """A mistyped folder made a new, empty storage where nobody would look for the study."""
    for url in ("sqlite:///nodir/x.db", "journal:nodir/x.journal"):
        _assert_user_error(cli(*_create_args(objective_ref, url)), f"Cannot open storage {url}",
                           "the folder nodir does not exist")
    assert not (tmp_cwd / "nodir").exists()


def test_show_unknown_study(cli, objective_ref: str, storage_url: str, db_path: Path):
    _assert_user_error(cli("study", "show", "cli", "--storage", storage_url), "does not exist yet")
    assert not db_path.exists()
    _assert_user_error(cli("study", "run", "cli", "--storage", storage_url), "does not exist yet")
    assert not db_path.exists()
    assert cli(*_create_args(objective_ref, storage_url, "--no-run")).exit_code == 0
    _assert_user_error(cli("study", "show", "clj", "--storage", storage_url), "Unknown study 'clj'",
                       "Did you mean 'cli'?")
    # A storage of many studies: the line names a dozen of them, not all.
    for i in range(14):
        optuna.create_study(study_name=f"other-{i:02d}", storage=storage_url)
    line = _assert_user_error(cli("study", "show", "clj", "--storage", storage_url), "Did you mean 'cli'?",
                              "and 3 more (`tuner study list` lists them all)")
    assert "other-11" not in line and "other-10" in line


def test_spaces_list_and_show(cli):
    rows = _json(cli("spaces", "list", "--format", "json"))
    assert set(rows) == set(list_spaces())
    assert {"default", "full", "lr-only"} <= set(rows)
    assert all(rows.values())
    text = cli("spaces", "list")
    assert text.exit_code == 0 and "lr-only" in text.stdout

    shown = _json(cli("spaces", "show", "lr-only", "--format", "json"))
    assert shown["name"] == "lr-only"
    assert shown["parameters"] == {"adam.lr": "FloatDistribution(high=0.1, log=True, low=1e-05, step=None)"}
    text = cli("spaces", "show", "default")
    assert text.exit_code == 0
    assert "adamw:" in text.stdout and "tunable parameters" in text.stdout


def test_objectives_list_and_show(cli, objective_ref: str):
    rows = _json(cli("objectives", "list", "--format", "json"))
    assert set(rows) == set(list_objectives())
    assert "MNIST-1D" in rows["mnist1d-cnn"]
    text = cli("objectives", "list")
    assert text.exit_code == 0 and "digits-mlp" in text.stdout

    digits = _json(cli("objectives", "show", "digits-mlp", "--format", "json"))
    assert digits["task"] == "classification" and digits["classes"] == 10
    assert digits["input_shape"] == [64]
    assert digits["train"] + digits["validation"] + digits["test"] == 1797
    assert digits["dropout_modules"] == 2
    user = _json(cli("objectives", "show", objective_ref, "--format", "json"))
    assert (user["name"], user["train"], user["validation"], user["test"]) == ("synthetic", 128, 32, 40)
    text = cli("objectives", "show", "digits-mlp")
    assert text.exit_code == 0 and "Dropout" in text.stdout


def test_objectives_show_tabular(cli, tmp_cwd: Path):
    (tmp_cwd / "d.csv").write_text("x,y,target\n" + "".join(f"{i},{i % 5},{i * 0.5}\n" for i in range(40)))
    info = _json(cli("objectives", "show", "tabular", "--data", "d.csv", "--target", "target", "--format",
                     "json"))
    assert info["task"] == "regression" and info["metric"] == "r2" and info["classes"] is None
    text = cli("objectives", "show", "tabular", "--data", "d.csv", "--target", "target").stdout
    assert "task: regression" in text and "classes" not in text  # not "classes: None"


# -- user errors ------------------------------------------------------------------------------------------

def test_unknown_optimizer_in_space_file(cli, objective_ref: str, storage_url: str, db_path: Path,
                                         tmp_cwd: Path):
    (tmp_cwd / "space.yaml").write_text("optimizer:\n  adamx:\n    lr: {low: 1.0e-4, high: 1.0e-2}\n")
    result = cli(*_create_args(objective_ref, storage_url, "--space", "space.yaml"))
    _assert_user_error(result, "space.yaml:2", "Unknown optimizer 'adamx'", "Did you mean 'adamax'?")
    assert not db_path.exists()


def test_unknown_sampler(cli, objective_ref: str, storage_url: str, db_path: Path):
    result = cli(*_create_args(objective_ref, storage_url, "--sampler", "tpee"))
    _assert_user_error(result, "Unknown sampler 'tpee'", "Did you mean 'tpe'?")
    assert not db_path.exists()


def test_malformed_yaml_spec(cli, storage_url: str, db_path: Path, tmp_cwd: Path):
    (tmp_cwd / "spec.yaml").write_text("name: x\nobjective: [digits-mlp\nepochs: 2\n")
    result = cli("study", "create", "spec.yaml", "--storage", storage_url)
    _assert_user_error(result, "spec.yaml:", "invalid YAML")
    assert not db_path.exists()


def test_python_tags_in_yaml_spec_are_refused(cli, storage_url: str, db_path: Path, tmp_cwd: Path):
    (tmp_cwd / "evil.yaml").write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    _assert_user_error(cli("study", "create", "evil.yaml", "--storage", storage_url), "not allowed")
    assert not db_path.exists()


def test_unknown_key_in_yaml_spec(cli, storage_url: str, db_path: Path, tmp_cwd: Path):
    (tmp_cwd / "spec.yaml").write_text("name: x\nobjective: digits-mlp\nepoch: 2\n")
    result = cli("study", "create", "spec.yaml", "--storage", storage_url)
    _assert_user_error(result, "spec.yaml:3", "Unknown study-spec key 'epoch'", "Did you mean 'epochs'?")
    assert not db_path.exists()


def test_a_space_the_spec_names_that_is_not_there_names_the_spec_line_and_where_it_looked(
        cli, storage_url: str, db_path: Path, tmp_cwd: Path):
    specs = tmp_cwd / "specs"
    specs.mkdir()
    (specs / "spec.yaml").write_text("name: x\nobjective: digits-mlp\nspace: myspace.yaml\n")
    _assert_user_error(cli("study", "create", "specs/spec.yaml", "--storage", storage_url),
                       "specs/spec.yaml:3: key 'space': myspace.yaml: no such search-space file (looked next to the "
                       f"spec, in {specs.resolve()}, then in the working directory)")
    (specs / "spec.yaml").write_text("name: x\nobjective: digits-mlp\nspace: defualt\n")
    _assert_user_error(cli("study", "create", "specs/spec.yaml", "--storage", storage_url),
                       "specs/spec.yaml:3: key 'space': defualt: Unknown search space", "Did you mean 'default'?")
    assert not db_path.exists()
    (specs / "myspace.yaml").write_text("optimizer: adam\nbatch_size: 16\n")  # found next to the spec
    (specs / "spec.yaml").write_text("name: x\nobjective: digits-mlp\nspace: myspace.yaml\nepochs: 1\n"
                                     "n_trials: 1\n")
    assert cli("study", "create", "specs/spec.yaml", "--storage", storage_url, "--no-run").exit_code == 0


def test_missing_csv_target(cli, storage_url: str, db_path: Path, tmp_cwd: Path):
    (tmp_cwd / "d.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30)))
    result = cli("study", "create", "--objective", "tabular", "--data", "d.csv", "--target", "lable",
                 "--storage", storage_url)
    _assert_user_error(result, "d.csv", "Unknown target column 'lable'", "Valid: a, b, label.")
    assert not db_path.exists()


def test_bad_option_values(cli, objective_ref: str, storage_url: str, db_path: Path):
    _assert_user_error(cli(*_create_args(objective_ref, storage_url, "--device", "tpu")), "Unknown device 'tpu'")
    _assert_user_error(cli(*_create_args(objective_ref, storage_url, "--device", "gpu")), "Did you mean 'cuda'?")
    _assert_user_error(cli("lr-find", "--objective", "digits-mlp", "--device", "gpu:1"), "Did you mean 'cuda:1'?")
    # A value a flag gave is named by the flag (not the spec key it sets, nor nothing).
    for flag, value in (("--warm-start", "nosuch"), ("--enqueue", "nofile.yaml"), ("--objectives", "accuracy,bogus"),
                        ("--space", "adam-famly"), ("--device", "gpu"), ("--devices", "cpu,gpu")):
        line = _assert_user_error(cli(*_create_args(objective_ref, storage_url, flag, value)))
        assert line.startswith(f"error: {flag}: "), line  # --devices' gpu beside --device cpu: --devices'
    assert cli(*_create_args(objective_ref, storage_url, "--pack", "+2")).exit_code == 2  # as parse_pack reads
    _assert_user_error(cli(*_create_args(objective_ref, storage_url, "--epochs", "0")), "--epochs")
    _assert_user_error(cli(*_create_args(objective_ref, storage_url, "--pruner", "medain")),
                       "Did you mean 'median'?")
    _assert_user_error(cli(*_create_args("digits-mlpp", storage_url)), "Unknown objective 'digits-mlpp'")
    assert not db_path.exists()


def _ranged_options():
    """Every option of every command that the command line itself checks against a range (``min=``)."""
    import typer.main

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])
        for param in getattr(command, "params", []) if not hasattr(command, "commands") else []:
            if getattr(param, "min", None) is not None or getattr(param, "max", None) is not None:
                yield [*path], param

    return [pytest.param(path, param.opts[0], param.min, param.max, id=" ".join([*path, param.opts[0]]))
            for path, param in walk(typer.main.get_command(app), [])]


@pytest.mark.parametrize("path, flag, low, high", _ranged_options())
def test_a_number_out_of_range_is_refused_input_and_a_word_is_a_command_line_not_understood(cli, path, flag, low,
                                                                                               high):
    """A number out of range on the command line exits 1, as the same number in a spec or another command's
    flag does (README: 1 for input tuner refuses); a word where a number goes exits 2 (cannot parse)."""
    out = low - 1 if low is not None else high + 1
    args = [*path, "x"] if path[-1] not in ("lr-find",) else [*path, "--objective", "digits-mlp"]
    _assert_user_error(cli(*args, flag, str(out)), flag)
    assert cli(*args, flag, "many").exit_code == 2


@pytest.mark.parametrize("command", [["study", "create", "--objective", "digits-mlp"], ["study", "run", "x"]])
def test_a_word_for_workers_or_pack_is_a_command_line_not_understood(cli, command):
    """`--workers abc` exited 1 and `--seed abc` 2: a word where auto or a number goes is a command line tuner
    cannot parse (2); a number out of range is input it refuses (1)."""
    for flag in ("--workers", "--pack"):
        word = cli(*command, flag, "many")
        assert word.exit_code == 2 and "'many' is neither auto nor a whole number" in word.output, word.output
        assert cli(*command, flag, "2.5").exit_code == 2
        _assert_user_error(cli(*command, flag, "0"), flag)


def test_flags_and_arguments_mixed_up_get_what_was_meant(cli):
    """A newcomer's mix-ups of flags and arguments: each line says what the command takes (exit 2 still)."""
    for args, said in (
            (("study", "show", "x", "--debug"), "--debug goes before the command: `tuner --debug study show ...`"),
            (("spaces", "calibrate", "--space", "default"),
             "This command takes the SPACE without a flag: `tuner spaces calibrate SPACE ...`"),
            (("study", "show", "--name", "x"), "This command takes the NAME without a flag"),
            (("lr-find", "digits-mlp"), "Did you mean `--objective digits-mlp`?"),
            (("study", "run", "x", "--space", "lr-only"), "A study keeps the --space it was created with"),
            (("study", "run", "x", "--no-calibrate"), "A study keeps the --no-calibrate it was created with"),
            (("study", "run", "--name", "x"), "This command takes the NAME without a flag")):
        result = cli(*args)
        assert result.exit_code == 2 and said in result.output, (args, result.output)
    assert "Did you mean" not in cli("lr-find", "--objective", "digits-mlp", "extra").output


def test_debug_shows_the_exception(cli, objective_ref: str, storage_url: str, db_path: Path):
    result = cli("--debug", *_create_args(objective_ref, storage_url, "--sampler", "tpee"))
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)
    assert "Unknown sampler 'tpee'" in str(result.exception)
    assert not db_path.exists()
    # --debug does not stick to later invocations
    _assert_user_error(cli(*_create_args(objective_ref, storage_url, "--sampler", "tpee")), "tpee")


def test_no_arguments_shows_help(cli):
    result = cli()
    assert "study" in result.output and "spaces" in result.output and "objectives" in result.output


def test_create_again_joins_the_study_and_runs_nothing_more(cli, objective_ref: str, storage_url: str):
    first = cli(*_create_args(objective_ref, storage_url))
    assert first.exit_code == 0, first.output
    again = cli(*_create_args(objective_ref, storage_url))
    assert again.exit_code == 0, again.output
    assert "already has its 3 finished trials" in again.output
    # Nothing is started or timed for a spent budget: no workers, no pack.
    spent = cli("study", "run", "cli", "--storage", storage_url, "--workers", "2")
    assert spent.exit_code == 0 and "already has its 3 finished trials" in spent.output, spent.output
    assert "worker" not in spent.output and "pack:" not in spent.output, spent.output
    optuna.load_study(study_name="cli", storage=storage_url).add_trial(  # failed: not counted as finished
        optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    more = cli(*_create_args(objective_ref, storage_url), "--n-trials", "4")
    assert more.exit_code == 0, more.output
    assert "ran 1 trial(s)" in more.output
    # The header says the study was joined (it read as a new study's, then went on at trial 3).
    assert more.stdout.startswith("joined the existing study cli in ") and "(3 trials finished already)" in more.stdout
    assert first.stdout.startswith("study cli in ")
    # A study's name where a spec goes, and a built-in spec's name where a study goes: each says what it is.
    _assert_user_error(cli("study", "create", "cli", "--storage", storage_url),
                       "Unknown study spec 'cli'", f"`tuner study run cli --storage {storage_url}` goes on with it")
    line = _assert_user_error(cli("study", "run", "quickstart", "--storage", storage_url),
                              "'quickstart' is a built-in study spec",
                              f"`tuner study create quickstart --storage {storage_url}` creates its study")
    assert "Did you mean" not in line


def test_spec_file_storage_beats_the_environment(cli, tmp_cwd: Path, objective_ref: str, monkeypatch):
    (tmp_cwd / "sp.yaml").write_text(f"name: sp\nobjective: {objective_ref}\nstorage: sqlite:///spec.db\n")
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///env.db")
    result = cli("study", "create", "sp.yaml", "--no-run")
    assert result.exit_code == 0, result.output
    assert (tmp_cwd / "spec.db").exists() and not (tmp_cwd / "env.db").exists()
    assert "tuner study run sp --storage sqlite:///spec.db" in result.output
    # with no storage in the file or on the command line, the environment's is used
    result = cli("study", "create", "--objective", objective_ref, "--name", "env", "--no-run")
    assert result.exit_code == 0, result.output
    assert (tmp_cwd / "env.db").exists()


def test_spec_paths_are_relative_to_the_spec_file(cli, tmp_cwd: Path, objective_file: Path):
    project = tmp_cwd / "project"
    project.mkdir()
    (project / "model.py").write_text(objective_file.read_text())
    (project / "space.yaml").write_text("optimizer: {adam: {lr: {low: 0.001, high: 0.01, log: true}}}\n"
                                        "batch_size: 16\n")
    (project / "study.yaml").write_text("name: rel\nobjective: model.py\nspace: space.yaml\nn_trials: 1\n"
                                        "epochs: 1\n")
    result = cli("study", "create", "project/study.yaml", "--format", "json")
    summary = _json(result)
    assert summary["counts"]["complete"] == 1


def test_a_file_next_to_the_spec_wins_over_one_of_that_name_in_the_working_directory(tmp_cwd: Path):
    """Found next to the spec first, as the README says: one of the same name in the working directory (the
    spec's author's files are beside it) was taken instead."""
    from tuner.study import load_spec

    project = tmp_cwd / "project"
    project.mkdir()
    for folder in (tmp_cwd, project):
        (folder / "space.yaml").write_text("optimizer: adam\n")
        (folder / "first.yaml").write_text("optimizer: {name: adam, lr: 0.001}\n")
    (project / "study.yaml").write_text("space: space.yaml\nenqueue: first.yaml\n")
    spec = load_spec(project / "study.yaml")
    assert spec.space == str((project / "space.yaml").resolve())
    assert spec.enqueue == [str((project / "first.yaml").resolve())]
    (project / "study.yaml").write_text("name: x\nenqueue: [first.yaml, nothere.yaml]\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(project / 'study.yaml'))}:2: key 'enqueue': "
                                          rf"nothere.yaml: no such file \(looked next to the spec, in "):
        load_spec(project / "study.yaml")


def test_errors_in_a_user_objective_file_are_one_line(cli, tmp_cwd: Path):
    (tmp_cwd / "broken.py").write_text("import torch\n\ndef f(:\n")
    line = _assert_user_error(cli("study", "create", "--objective", "broken.py"), "broken.py:3",
                              "importing the objective file failed: SyntaxError")
    assert "Traceback" not in line
    (tmp_cwd / "missing.py").write_text("import torch\nimport no_such_module_here\n")
    _assert_user_error(cli("study", "create", "--objective", "missing.py:objective"),
                       "missing.py:2", "ModuleNotFoundError", "no_such_module_here")  # the line that raised
    (tmp_cwd / "zero.py").write_text("import torch\n\nSCALE = 1 / 0\n")
    _assert_user_error(cli("study", "create", "--objective", "zero.py:objective"), "zero.py:3",
                       "ZeroDivisionError")
    (tmp_cwd / "plain.py").write_text("SCALE = 2\n")  # no Objective in it: what the file needs
    _assert_user_error(cli("objectives", "show", "plain.py"), "the module has no 'objective'",
                       "define `objective = Objective(...)` in it")


def test_module_attr_objective_is_found_in_the_working_directory(cli, tmp_cwd: Path, objective_file: Path):
    (tmp_cwd / "my_model_mod.py").write_text(objective_file.read_text())
    result = cli("objectives", "show", "my_model_mod:objective", "--format", "json")
    info = _json(result)
    assert info["train"] > 0 and info["dropout_modules"] >= 1


def test_every_command_the_cli_suggests_carries_the_storage(cli, objective_ref: str, storage_url: str,
                                                           tmp_cwd: Path):
    """Copied from the output, a suggested command must find the study: wherever a line shows ``tuner study
    ...`` for a study outside the default storage, it carries ``--storage``."""
    import re

    outputs = [cli(*_create_args(objective_ref, storage_url, "--no-run")),
               cli("study", "run", "cli", "--storage", storage_url),
               cli("study", "show", "cli", "--storage", storage_url)]
    config = tmp_cwd / "one.yaml"
    config.write_text("optimizer: {name: adamw, lr: 0.002}\nschedule: {name: warmup_cosine, warmup_fraction: 0.05}\n"
                      "batch_size: 32\n")  # not a config the study has trained (that one is not queued again)
    outputs.append(cli("study", "enqueue", "cli", str(config), "--storage", storage_url))
    outputs.append(cli("study", "run", "cli", "--storage", storage_url, "--n-trials", "1"))  # below what is done
    outputs.append(cli("study", "export", "cli", "--storage", storage_url, "--trial", "0", "--no-confirm"))
    text = " ".join(" ".join(r.output.split()) for r in outputs)  # lines the console wrapped, joined
    commands = re.findall(r"(tuner study [a-z]+ [^`;)]*)", text)
    assert len(commands) >= 4, text
    for c in commands:
        assert f"--storage {storage_url}" in c, c


def test_a_budget_below_the_finished_trials_is_refused(cli, objective_ref: str, storage_url: str):
    _json(cli(*_create_args(objective_ref, storage_url, "--format", "json")))
    refused = cli("study", "run", "cli", "--storage", storage_url, "--n-trials", "1")
    _assert_user_error(refused, "already has 3 finished trials, more than the budget asked for (1); nothing was "
                                "changed")
    stored = optuna.load_study(study_name="cli", storage=storage_url).user_attrs["tuner:spec"]
    assert stored["n_trials"] == 3  # the budget was not lowered


def test_a_study_whose_trials_all_diverged_says_why_and_how_to_get_rates_that_train(cli, tmp_path: Path,
                                                                                    storage_url: str,
                                                                                    objective_ref: str, monkeypatch):
    """Running the study again would run its stored space again: the hint sends the user to an LR range test and
    a new study on the space it writes."""
    space = tmp_path / "explode.yaml"
    space.write_text("optimizer:\n  sgd:\n    lr: {low: 1.0e+6, high: 1.0e+8, log: true}\nbatch_size: 16\n")
    ran = cli("study", "create", "--objective", objective_ref, "--space", space, "--n-trials", "3", "--epochs", "2",
              "--storage", storage_url, "--name", "boom", "--device", "cpu", "--sampler", "random", "--pack", "1")
    assert ran.exit_code == 0, ran.output
    assert {t.state for t in optuna.load_study(study_name="boom", storage=storage_url).trials} == {
        optuna.trial.TrialState.PRUNED}
    line = _assert_user_error(cli("study", "report", "boom", "--storage", storage_url),
                              "Study 'boom' has no complete trial: nothing to report. All 3 finished trial(s) were "
                              "pruned (3 with: diverged", "the learning rates the space searches are too high, and "
                              "a study keeps the space it was created with")
    # The two commands it gives, as a user pastes them: an LR range test, then a new study on its space.
    calibrate, create = re.findall(r"`(tuner spaces calibrate [^`]*|tuner study create [^`]*)`", line)
    assert calibrate == f"tuner spaces calibrate {space} --objective {objective_ref} -o calibrated.yaml"
    assert create == (f"tuner study create --objective {objective_ref} --space calibrated.yaml --name "
                      f"boom-calibrated --storage {storage_url}")
    monkeypatch.chdir(tmp_path)
    assert (done := cli(*shlex.split(calibrate)[1:])).exit_code == 0, done.output
    assert (done := cli(*shlex.split(create)[1:], "--n-trials", "3", "--epochs", "2", "--device", "cpu",
                        "--pack", "1")).exit_code == 0, done.output
    calibrated = optuna.load_study(study_name="boom-calibrated", storage=storage_url)
    assert optuna.trial.TrialState.COMPLETE in {t.state for t in calibrated.trials}


def test_report_and_export_of_a_study_whose_trials_all_failed_say_why(cli, tmp_path: Path, storage_url: str,
                                                                      monkeypatch):
    monkeypatch.delenv("TUNER_PACK", raising=False)  # pack: auto, whose timing probe meets the error first
    path = tmp_path / "broken.py"
    path.write_text(
        "import numpy as np\nfrom torch import nn\nfrom tuner.objectives import Objective, from_arrays\n\n"
        "def load_data():\n    x = np.random.default_rng(0).normal(size=(300, 4)).astype('float32')\n"
        "    y = (x[:, 0] > 0).astype(int)\n    return from_arrays(x[:240], y[:240], x[240:], y[240:], n_classes=2)\n\n"
        "class Broken(nn.Linear):\n    def forward(self, x):\n        if len(x) > 2:\n"
        "            raise RuntimeError('boom in my layer')\n        return super().forward(x)\n\n"
        "objective = Objective('broken', load_data=load_data, build_model=lambda d: Broken(4, 2))\n")
    ran = cli("study", "create", "--objective", f"{path}:objective", "--space", "lr-only", "--n-trials", "20",
              "--epochs", "1", "--storage", storage_url, "--name", "broken", "--device", "cpu")
    said = " ".join(ran.output.split())  # lines the console wrapped, joined
    assert ran.exit_code == 1 and "stopped after 5 consecutive failed trials" in said, ran.output
    assert "pack: 1 (auto): one trial failed in the timing probe (RuntimeError: boom in my layer (at " in said
    for verb, what in (("report", "nothing to report"), ("export", "nothing to export")):
        line = _assert_user_error(cli("study", verb, "broken", "--storage", storage_url),
                                  f"Study 'broken' has no complete trial: {what}. All 5 finished trial(s) failed")
        assert "boom in my layer" in line and f"tuner study show broken --storage {storage_url}" in line
        assert "confirmation stored" not in line
    # show says the study stopped short of its budget, and how it goes on
    shown = " ".join(cli("study", "show", "broken", "--storage", storage_url).output.split())
    assert "stopped early: after 5 consecutive failed trials; the last failed with: RuntimeError: boom in " \
           "my layer" in shown and f"`tuner study run broken --storage {storage_url}` goes on once that is fixed" \
           in shown, shown


def test_study_list_keeps_names_whole_at_80_columns(cli, objective_ref: str, storage_url: str, tmp_cwd: Path,
                                                    monkeypatch):
    """The name is what a user copies: it stays on one line while the other columns wrap; an objective file
    below this folder is shown from here."""

    local = tmp_cwd / "my_model.py"
    local.write_text(Path(objective_ref.split(":")[0]).read_text())
    name = "a-study-of-24-characters"
    assert cli(*_create_args(f"{local}:objective", storage_url), "--name", name).exit_code == 0
    assert cli(*_create_args(objective_ref, storage_url), "--name", "cost", "--objectives",
               "accuracy,train_seconds").exit_code == 0  # its kind: "tuner (2 objectives)"
    _terminal(monkeypatch, 80)
    listed = cli("study", "list", "--storage", storage_url).stdout
    assert any(name in line.split() for line in listed.splitlines()), listed
    assert "my_model.py:" in listed and str(tmp_cwd) not in listed
    from rich.cells import cell_len

    # Every line within the 80 columns (the table ran to 90, so a terminal broke each row in two).
    assert max(cell_len(line) for line in listed.splitlines()) <= 80, listed


def test_a_storage_from_the_environment_is_named_as_such(cli, monkeypatch):
    """A stale $TUNER_STORAGE in a shell profile: the error says where the storage the user never typed came from."""
    monkeypatch.setenv("TUNER_STORAGE", "tuner.db")
    _assert_user_error(cli("study", "list"), "Unknown storage 'tuner.db' (from $TUNER_STORAGE). Valid:")
    monkeypatch.setenv("TUNER_STORAGE", "sqlite://")
    _assert_user_error(cli("study", "list"), "'sqlite://' (from $TUNER_STORAGE) is an in-memory database")
    _assert_user_error(cli("study", "list", "--storage", "other.db"), "Unknown storage 'other.db'. Valid:",
                       "sqlite:///other.db (SQLite)")
    # One slash, an absolute path meant: the URL offered keeps it absolute (sqlite:///x.db was relative).
    _assert_user_error(cli("study", "list", "--storage", "sqlite:/srv/x.db"), "sqlite:////srv/x.db (SQLite)",
                       "journal:/srv/x.db")


def test_listings_wrap_their_text_under_itself_at_the_terminals_width(cli, monkeypatch):
    """spaces list, objectives list and spaces starts: a description longer than the line continues under
    itself, not back at the first column."""

    _terminal(monkeypatch, 80)
    for args in (("spaces", "list"), ("objectives", "list"), ("spaces", "starts", "default")):
        lines = [line for line in cli(*args).stdout.splitlines() if not line.startswith("space ")]  # the total
        assert all(len(line.rstrip()) <= 80 for line in lines), (args, lines)
        continued = [line for line in lines if line.startswith(" ")]
        assert continued and all(line[:12].strip() == "" for line in continued), (args, lines)


def test_piped_output_keeps_each_row_on_one_line(cli, objective_ref: str, storage_url: str, tmp_cwd: Path,
                                                monkeypatch):
    """`tuner study list | grep NAME` found half a row: output that is no terminal was wrapped at 80 columns.
    Piped, every table and listing keeps a row on one line, without the spaces that padded it; COLUMNS still
    asks for a width."""
    monkeypatch.delenv("COLUMNS", raising=False)  # pytest-xdist's workers set it
    local = tmp_cwd / "a_model_file_with_a_rather_long_name_for_this.py"
    local.write_text(Path(objective_ref.split(":")[0]).read_text())
    name = "a-study-whose-name-is-long-enough-to-wrap"
    assert cli(*_create_args(f"{local}:objective", storage_url), "--name", name).exit_code == 0
    for args, whole in ((("study", "list", "--storage", storage_url), name),
                        (("study", "show", name, "--storage", storage_url), "lr="),
                        (("study", "trials", name, "--storage", storage_url), "optimizer"),
                        (("spaces", "list"), "dropout and batch size."),
                        (("objectives", "list"), "digits-mlp")):
        lines = cli(*args).stdout.splitlines()
        assert all(line == line.rstrip() for line in lines), (args, lines)
        rows = [line for line in lines if whole in line]
        assert rows, (args, lines)
        if args[:2] == ("study", "list"):
            assert "a_model_file_with_a_rather_long_name_for_this.py:objective" in rows[0], lines
            assert len(lines) == 5, lines  # the three lines of the head, the row and the bottom line
        if args[:2] == ("spaces", "list"):
            assert all(line.split()[0] in list_spaces() for line in lines if line.strip()), lines
    _terminal(monkeypatch, 60)  # COLUMNS=60 (which Rich reads as it starts)
    assert max(len(line) for line in cli("spaces", "list").stdout.splitlines()) <= 60


def test_on_a_terminal_a_table_is_fitted_to_what_shows_and_leaves_out_what_it_can(monkeypatch):
    """On a terminal the bold heading's escape codes were counted as width: a table that fitted 100 columns was
    drawn without its box and wrapped. Where the columns cannot all keep their words whole, study list leaves
    out its first-trial date, then the kind, rather than break the names."""
    from rich.text import Text

    from tuner.cli import _output

    monkeypatch.setattr(_output.out, "_force_terminal", True)
    rows = [["a-study-name-of-some-length", "tuner", "digits-mlp", "0 (+2 queued)", "-", "2026-12-07 18:49"],
            ["digits-mlp-default", "tuner", "digits-mlp", "6", "0.8924", "2026-12-07 18:50"]]
    columns = ["name", "kind", "objective", "trials", "best", "first trial"]

    def shown(width: int) -> list[str]:
        monkeypatch.setattr(_output.out, "width", width)
        with _output.out.capture() as captured:
            _output.print_table(columns, rows, numbers=(3, 4), optional=(1, 5))
        return [Text.from_ansi(line).plain for line in captured.get().splitlines()]

    wide = shown(100)
    assert wide[0].startswith("┏") and all(len(line) <= 100 for line in wide)
    assert any(f"│ {rows[0][0]} │" in line and rows[0][5] in line for line in wide), wide
    narrow = shown(60)
    assert all(len(line) <= 60 for line in narrow)
    assert "first trial" not in narrow[0] and "kind" not in narrow[0] and "objective" in narrow[0]
    assert any(line.startswith(rows[0][0]) for line in narrow), narrow  # the name whole


def test_study_trials_fits_the_terminals_width(cli, objective_ref: str, storage_url: str, monkeypatch):

    assert cli(*_create_args(objective_ref, storage_url)).exit_code == 0
    _terminal(monkeypatch, 80)
    lines = cli("study", "trials", "cli", "--storage", storage_url).stdout.splitlines()
    assert lines[0].split()[:4] == ["trial", "state", "value", "test"] and "optimizer" in lines[0]
    assert all(len(line) <= 80 for line in lines), lines


def test_export_writes_the_format_its_file_name_says(cli, objective_ref: str, storage_url: str, tmp_cwd: Path):
    """`-o best.json` held YAML, which json.load refused: the suffix picks the format where --format is left out,
    and a --format the suffix contradicts is refused before anything is written."""
    assert cli(*_create_args(objective_ref, storage_url)).exit_code == 0
    base = ("study", "export", "cli", "--storage", storage_url, "--no-confirm")
    assert cli(*base, "-o", "best.json").exit_code == 0
    assert json.loads((tmp_cwd / "best.json").read_text())["optimizer"]["name"]
    assert cli(*base, "-o", "best.py").exit_code == 0
    assert compile((tmp_cwd / "best.py").read_text(), "best.py", "exec")  # a plain-torch script
    assert cli(*base, "-o", "best.txt").exit_code == 0
    assert "optimizer:" in (tmp_cwd / "best.txt").read_text()  # any other name: YAML, as before
    _assert_user_error(cli(*base, "--format", "yaml", "-o", "y.json"), "--format yaml does not fit -o y.json")
    _assert_user_error(cli(*base, "--format", "json", "-o", "j.yml"), "--format json does not fit -o j.yml")
    assert not (tmp_cwd / "y.json").exists() and not (tmp_cwd / "j.yml").exists()
    assert cli(*base, "--format", "keras", "-o", "k.py").exit_code == 0
    assert "keras" in (tmp_cwd / "k.py").read_text()


def test_running_a_finished_grid_again_says_the_grid_is_done(cli, objective_ref: str, storage_url: str):
    """`study run NAME --n-trials 5` on a grid of 3 points said "raise the budget with --n-trials", the flag
    just given."""
    made = cli("study", "create", "--objective", objective_ref, "--sampler", "grid", "--space", "lr-only",
               "--epochs", "1", "--storage", storage_url, "--name", "g", "--device", "cpu")
    assert made.exit_code == 0, made.output
    again = cli("study", "run", "g", "--storage", storage_url, "--n-trials", "5")
    assert again.exit_code == 0, again.output
    assert "every point of the grid over space 'lr-only' has run (3 trials)" in again.stdout
    assert "raise the budget" not in again.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch: pytest.MonkeyPatch):
    """`tuner ... | head`: a command whose output pipe closed printed "error: BrokenPipeError" and exited 1, and
    one printing through Rich exited 1 without a word; both exit as a process killed by SIGPIPE, quietly."""
    import typer

    from tuner.cli import _output
    from tuner.cli._app import handle_errors
    from tuner.cli._output import SIGPIPE_EXIT

    monkeypatch.setattr("tuner.cli._output.quiet_pipe", lambda stream: None)  # keep the test's own stdout
    said: list[str] = []
    monkeypatch.setattr("tuner.cli._app.error_line", said.append)

    @handle_errors
    def printing() -> None:
        _output.out.on_broken_pipe()  # what Rich calls when a write fails with EPIPE

    with pytest.raises(typer.Exit) as info:
        printing()
    assert info.value.exit_code == SIGPIPE_EXIT == 141 and said == []
    _output.out.quiet = False


def test_a_built_in_file_named_by_its_path_outside_the_repository_is_given_its_name(tmp_cwd: Path) -> None:
    """`tuner study create studies/mnist1d-mlp.yaml`, as the README's examples read from the repository's root,
    said only "no such file" anywhere else; the built-in of that name works from any folder."""
    runner = CliRunner()
    for args, said in (
            (["study", "create", "studies/mnist1d-mlp.yaml", "--no-run"],
             "studies/mnist1d-mlp.yaml: no such file; the built-in study spec of that name is 'mnist1d-mlp'"),
            (["study", "create", "--objective", "digits-mlp", "--space", "search_spaces/adam-family.yaml", "--no-run"],
             "no such search-space file; the built-in search space of that name is 'adam-family'"),
            (["study", "create", "--objective", "objectives/digits_mlp.py:objective", "--no-run"],
             "does not exist; the built-in objective of that name is 'digits-mlp'")):
        _assert_user_error(runner.invoke(app, args), said)
    _assert_user_error(runner.invoke(app, ["study", "create", "mine.yaml", "--no-run"]), "mine.yaml: no such file")
    assert not list(tmp_cwd.iterdir())


def test_study_trials_keeps_each_reason_on_its_trials_row(cli, storage_url: str, monkeypatch):
    """A long reason made pandas cut the table into two blocks, the reasons under the whole table with no trial
    number beside them; a missing value of a text column showed as None."""
    import tuner

    def train(ctx: tuner.TrialContext) -> float:
        if ctx.number == 0:
            raise ValueError("broken by hand " + "x" * 300)
        ctx.report(0, 0.5)
        return 0.5

    result = tuner.tune(train, space="lr-only", n_trials=3, epochs=1, storage=storage_url, study_name="r",
                        verbose=False, known_starts=False)
    _terminal(monkeypatch, 100)
    lines = cli("study", "trials", "r", "--storage", storage_url).stdout.splitlines()
    assert lines[0].split()[0] == "trial" and lines[0].split()[-1] == "reason", lines
    assert len(lines) == len(result.study.trials) + 1 and all(len(line) <= 100 for line in lines), lines
    row = next(line for line in lines[1:] if line.split()[0] == "0")
    assert row.endswith("...") and "ValueError: broken" in row and " None" not in " ".join(lines), lines
