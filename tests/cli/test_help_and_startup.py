"""What a newcomer reads first: every command's ``--help`` shows its defaults with nothing eaten by markup,
the listings and the help start without torch, and the progress ETA counts the timeout."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tuner
from tuner.cli import app
from tuner.cli._progress import eta
from tuner.study._spec import StudySpec

ROOT = Path(tuner.__file__).resolve().parents[1]


def _commands() -> list[list[str]]:
    """Every command path of the CLI: [], ["study"], ["study", "create"], ..."""
    import typer.main

    found = []

    def walk(command, path):
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()


def _help(*path: str) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_reached():
    names = {" ".join(p) for p in COMMANDS}
    assert {"study create", "study run", "study report", "study export", "spaces list", "objectives list",
            "lr-find", "spaces calibrate"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tuner")
def test_help_keeps_every_bracket_and_has_no_dropped_text(path: list[str]):
    text = _help(*path)
    flat = " ".join(text.split())
    # A help text that Rich markup had eaten a "[default: ...]" from read "Storage URL ." or "Torch threads .".
    assert not re.search(r"\w \.( |$)", flat), flat
    assert flat.count("[") == flat.count("]"), flat
    assert "<bool>" not in flat  # a flag takes no value


def test_study_create_help_shows_where_studies_go_and_the_spec_defaults():
    flat = " ".join(_help("study", "create").split())
    assert "--storage <str> Storage URL [default: $TUNER_STORAGE, else sqlite:///tuner.db]." in flat
    for field, flag in [("sampler", "--sampler"), ("n_trials", "--n-trials"),
                        ("seed", "--seed"), ("device", "--device"), ("space", "--space")]:
        default = StudySpec.model_fields[field].default
        segment = flat.split(flag + " ", 1)[1].split(" --", 1)[0]
        assert f"[default: {default}]" in segment, (flag, segment)
    assert "[default: the objective's own, else 20]" in flat
    assert "[default: the objective's own, else median]" in flat.split("--pruner", 1)[1].split(" --", 1)[0]
    assert "[default: quickstart, unless --objective is given]" in flat
    assert "Torch threads [default: timed at start]." in flat
    assert "[default: none]" in flat.split("--timeout", 1)[1].split(" --", 1)[0]


@pytest.mark.parametrize("args", [["--help"], ["spaces", "list"], ["objectives", "list"],
                                  ["study", "create", "--help"], ["study", "--help"]])
def test_help_and_listings_do_not_import_torch(args: list[str]):
    code, loaded, stderr, _ = _cli_in_a_fresh_process(args)
    assert code in (0, None) and loaded == "[]", (code, loaded, stderr[-2000:])


HEAVY = ("torch", "sklearn", "pandas", "matplotlib")


def _cli_in_a_fresh_process(args: list[str], cwd: Path | None = None) -> tuple[object, str, str, str]:
    """Runs ``tuner ARGS`` in a new interpreter: its exit code, which of the heavy libraries it loaded (as a
    list's text, "[]" for none), its standard error and its standard output."""
    code = textwrap.dedent(f"""
        import sys
        from tuner.cli import main
        sys.argv = ["tuner", *{args!r}]
        code = 0
        try:
            main()
        except SystemExit as exit:
            code = exit.code
        sys.stdout = sys.__stdout__
        print("CODE", code, "LOADED", sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TUNER_STORAGE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**env, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    *printed, line = done.stdout.strip().splitlines()
    exit_code, loaded = line.removeprefix("CODE ").split(" LOADED ", 1)
    return (None if exit_code == "None" else int(exit_code)), loaded, done.stderr, "\n".join(printed)


def test_listings_read_the_same_descriptions_the_objects_hold():
    from tuner._builtin import objective_descriptions, space_descriptions
    from tuner.objectives import load_objective
    from tuner.spaces import list_spaces, load_space

    assert space_descriptions() == {name: load_space(name).description for name in list_spaces()}
    for name, description in objective_descriptions().items():
        if name != "tabular":  # a factory: its Objective needs a CSV
            assert load_objective(name).description == description


@pytest.mark.parametrize(("elapsed", "done", "left", "timeout", "expected"), [
    (10.0, 2, 8, None, (40.0, "budget")),        # 5 s a trial, 8 left
    (10.0, 2, 8, 30.0, (20.0, "timeout")),       # the timeout comes first
    (10.0, 2, 2, 30.0, (10.0, "budget")),        # the budget comes first
    (3.0, 0, 8, 30.0, (27.0, "timeout")),        # no trial finished yet: only the timeout is known
    (3.0, 0, 8, None, (None, "")),
    (40.0, 2, 8, 30.0, (0.0, "timeout")),        # past the timeout: the running trial stops at its epoch end
])
def test_eta_is_the_earlier_of_budget_and_timeout(elapsed, done, left, timeout, expected):
    assert eta(elapsed, done, left, timeout) == expected


def test_the_run_header_says_it_is_time_boxed(tmp_cwd: Path, objective_ref: str, storage_url: str):
    runner = CliRunner()
    args = ["--objective", objective_ref, "--n-trials", "2", "--epochs", "1", "--storage", storage_url,
            "--device", "cpu", "--name", "boxed"]
    created = runner.invoke(app, ["study", "create", *args, "--timeout", "600"])
    assert created.exit_code == 0, created.output
    assert "2 trials x 1 epoch on cpu; stops at its 600 s timeout if that comes first (--timeout)" in created.output
    resumed = runner.invoke(app, ["study", "run", "boxed", "--storage", storage_url, "--n-trials", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert "study boxed: 2 of 3 trials finished, 1 epoch each, on cpu; stops at its 600 s timeout" in resumed.output


@pytest.mark.parametrize("args", [
    ["study", "create", "spec.yaml"],  # a sampler option of the wrong kind, in the spec file
    ["study", "create", "--objective", "digits-mlp", "--n-trials", "0"],
    ["study", "create", "--objective", "digits-mlp", "--pack", "0"],
    ["study", "create", "--objective", "digits-mlp", "--sampler", "tpee"],
    ["study", "create", "--objective", "digits_mlp"],  # a bare name can only be a built-in one
    ["study", "create", "--workers", "100000"],
    ["study", "run", "s", "--workers", "100000"],
    ["study", "create", "--objective", "digits-mlp", "--workers", "many"],
    ["study", "run", "s", "--workers", "0"],
    ["study", "create", "--objective", "digits-mlp", "--space", "defualt"],
    ["study", "create", "--objective", "digits-mlp", "--space", "mine.yaml"],
    ["lr-find", "--objective", "mnist1d-cnnn"],
    ["lr-find", "--space", "mine.yaml"],
    ["spaces", "show", "defualt"],
    ["spaces", "starts", "mine.yaml"],
    ["spaces", "calibrate", "defualt"],
    ["study", "create", "--objective", "digits-mlp", "--enqueue", "missing.yaml"],
    ["study", "create", "--objective", "digits-mlp", "--enqueue", "wrong.yaml"],  # an unknown optimizer
    ["study", "create", "--objective", "digits-mlp", "--enqueue", "elsewhere.yaml"],  # a schedule not in the space
    ["study", "create", "--objective", "digits-mlp", "--warm-start", "earlier"],
    ["study", "create", "--objective", "missing.py:objective"],
    ["study", "create", "--objective", "tabular", "--data", "missing.csv", "--target", "y"],
    ["study", "create", "--objective", "tabular", "--data", ".", "--target", "y"],
    ["study", "create", "--objective", "digits-mlp", "--tensorboard", "spec.yaml/tb"],  # a folder under a file
    ["lr-find", "--objective", "digits-mlp", "--plot", "missing/lr.png"],  # before the sweeps, not after
    ["lr-find", "--objective", "digits-mlp", "--plot", "."],
    ["lr-find", "--objective", "missing.py:objective"],
    ["lr-find", "--objective", "tabular", "--data", "missing.csv", "--target", "y"],
    ["spaces", "calibrate", "default", "--objective", "digits-mlp", "-o", "missing/calibrated.yaml"],
    ["spaces", "calibrate", "default", "--objective", "tabular", "--data", ".", "--target", "y"],
    ["study", "create", "--objective", "tabular", "--no-run"],  # needs --data and --target
    ["study", "create", "--objective", "tabular", "--data", "spec.yaml"],  # and --target
    ["study", "create", "--objective", "digits-mlp", "--data", "spec.yaml", "--no-run"],  # takes no options
    ["study", "create", "--objective", "digits-mlp", "--device", "foo", "--no-run"],
    ["lr-find", "--objective", "tabular"],
    ["lr-find", "--objective", "digits-mlp", "--device", "gpu"],
    ["lr-find", "--objective", "digits-mlp", "--start-lr", "1", "--end-lr", "0.1"],
    ["lr-find", "--objective", "digits-mlp", "--optimizer", "adamW"],
    ["study", "create", "--objective", "tabular", "--data", "houses.csv", "--target", "Price", "--no-run"],
    ["lr-find", "--objective", "tabular", "--data", "houses.csv", "--target", "Price"],
    ["spaces", "calibrate", "default", "--objective", "digits-mlp", "--optimizer", "adamW"],
    ["spaces", "calibrate", "default", "--objective", "digits-mlp", "--start-lr", "0"],
    ["spaces", "calibrate", "default", "--objective", "digits-mlp", "--target", "y"],
])
def test_a_refused_spec_or_flag_is_said_before_pytorch_is_loaded(args: list[str], tmp_path: Path):
    """A mistake in a spec or a flag, or in a file or study it names, is refused in well under a second: nothing
    waits for PyTorch to load."""
    (tmp_path / "spec.yaml").write_text("objective: digits-mlp\nsampler: {name: tpe, n_startup_trials: ten}\n")
    (tmp_path / "wrong.yaml").write_text("optimizer: {name: adamz, lr: 0.1}\n")
    (tmp_path / "elsewhere.yaml").write_text("optimizer: {name: adam, lr: 0.01}\nschedule: {name: step}\n")
    (tmp_path / "houses.csv").write_text("rooms,price\n3,250000\n4,310000\n")  # --target Price: not a column
    code, loaded, stderr, _ = _cli_in_a_fresh_process(args, cwd=tmp_path)
    assert code not in (0, None) and loaded == "[]", (code, loaded, stderr[-2000:])
    assert stderr.startswith("error: ") or "Error" in stderr, stderr[-2000:]
    assert not list(tmp_path.glob("*.db")), "nothing is written for a refused command"


def test_a_uri_mlflow_cannot_use_is_refused_before_pytorch_is_loaded(tmp_path: Path):
    """MLflow loads to check its URI (and loads pandas); PyTorch does not."""
    pytest.importorskip("mlflow")
    code, loaded, stderr, _ = _cli_in_a_fresh_process(
        ["study", "create", "--objective", "digits-mlp", "--mlflow", "nosuchscheme://host/x"], cwd=tmp_path)
    assert code == 1 and "torch" not in loaded, (code, loaded, stderr[-2000:])
    assert stderr.startswith("error: MLflow cannot log to nosuchscheme://host/x"), stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


WRONG_SPACES = {
    "an unknown optimizer": ("optimizer:\n  adamz: {}\n", "bad.yaml:2: key 'optimizer.adamz': Unknown optimizer "
                                                         "'adamz'. Valid: adadelta,"),
    "a range that cannot be": ("optimizer:\n  adam:\n    lr: {low: -1.0, high: 0.1, log: true}\n",
                               "bad.yaml:3: key 'optimizer.adam.lr': `low > 0` must hold for `log=True`."),
    "a value the optimizer refuses": ("optimizer:\n  adam:\n    betas: [0.9, 1.5]\n", "bad.yaml:3: key "
                                      "'optimizer.adam.betas'"),
    "an unknown schedule": ("optimizer: {adam: {}}\nschedule:\n  cosinee: {}\n",
                            "bad.yaml:3: key 'schedule.cosinee': Unknown schedule 'cosinee'."),
    "an unknown initialiser": ("optimizer: {adam: {}}\ninit:\n  hee: {}\n", "Unknown initialiser 'hee'."),
    "a dropout of 1": ("optimizer: {adam: {}}\nregularization:\n  dropout: 1.0\n", "'regularization.dropout'"),
}


@pytest.mark.parametrize("args", [
    *[["study", "create", "--objective", "digits-mlp", "--space", "bad.yaml", "#" + case] for case in WRONG_SPACES],
    ["study", "create", "spec.yaml"],  # the space inline in a spec file
    ["spaces", "show", "bad.yaml"],
    ["spaces", "starts", "bad.yaml"],
    ["lr-find", "--objective", "digits-mlp", "--space", "bad.yaml"],
    ["spaces", "calibrate", "bad.yaml", "--objective", "digits-mlp", "-o", "out.yaml"],
], ids=lambda args: " ".join(args[:2]) + (f" ({args[-1][1:]})" if args[-1].startswith("#") else f" {args[2]}"))
def test_a_wrong_space_is_refused_before_pytorch_is_loaded(args: list[str], tmp_path: Path):
    """A search space's every mistake (a name, a key, a range, a value) is refused with its file, line and key
    before PyTorch loads, and nothing is written."""
    case = args.pop()[1:] if args[-1].startswith("#") else "an unknown schedule"
    text, said = WRONG_SPACES[case]
    (tmp_path / "bad.yaml").write_text(text)
    (tmp_path / "spec.yaml").write_text("objective: digits-mlp\nspace:\n  optimizer: {adam: {}}\n  schedule:\n"
                                        "    cosinee: {}\n")
    code, loaded, stderr, printed = _cli_in_a_fresh_process(args, cwd=tmp_path)
    assert code == 1 and loaded == "[]", (code, loaded, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    said = "spec.yaml:5: key 'schedule.cosinee'" if args[2] == "spec.yaml" else said
    assert said in lines[0], (said, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "spec.yaml"] and printed == ""


@pytest.mark.parametrize("command", ["show", "run", "export", "report", "trials"])
def test_a_study_that_is_not_there_is_said_before_pytorch_is_loaded(command: str, tmp_path: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    code, loaded, stderr, _ = _cli_in_a_fresh_process(["study", command, "othre"], cwd=tmp_path)
    assert code == 1 and loaded == "[]", (code, loaded, stderr[-2000:])
    assert "Unknown study 'othre'. Valid: other. Did you mean 'other'?" in stderr, stderr[-2000:]


@pytest.mark.parametrize(("storage", "said"), [
    ("sqlite:///app.db", "app.db is the SQLite database of another application (tables: invoices)"),
    ("journal:notes.txt", "notes.txt is not an Optuna journal"),
])
def test_a_storage_file_of_another_application_is_refused_before_pytorch_loads(storage: str, said: str,
                                                                               tmp_path: Path, objective_ref: str):
    """``study create`` into a file that is not an Optuna storage says so at once (not after loading the
    objective, PyTorch and the data) and leaves the file as it was."""
    with sqlite3.connect(tmp_path / "app.db") as con:
        con.execute("CREATE TABLE invoices (id INTEGER)")
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, loaded, stderr, _ = _cli_in_a_fresh_process(["study", "create", "--objective", objective_ref, "--storage",
                                                       storage, "--n-trials", "1"], cwd=tmp_path)
    assert code == 1 and loaded == "[]", (code, loaded, stderr[-2000:])
    assert said in stderr, stderr[-2000:]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, objective_ref: str, space_file: Path) -> str:
    """The storage URL of a study "s" of 4 trials, reported (its confirmation and tuning-free runs stored, which
    ``study show`` repeats); beside it "edge", whose best trial sits at the end of a range (``study show`` says
    so), and "pareto", a study of accuracy and training seconds."""
    folder = tmp_path_factory.mktemp("finished")
    url = f"sqlite:///{folder / 'tuner.db'}"
    created = CliRunner().invoke(app, ["study", "create", "--name", "s", "--objective", objective_ref, "--storage",
                                       url, "--n-trials", "4", "--epochs", "2", "--seed", "0"])
    assert created.exit_code == 0, created.output
    reported = CliRunner().invoke(app, ["study", "report", "s", "--storage", url, "--seeds", "2", "-o",
                                        str(folder / "report")])
    assert reported.exit_code == 0, reported.output
    (folder / "edge.yaml").write_text("optimizer: {name: adam, lr: 0.03}\nbatch_size: 32\n")
    for name, more in (("edge", ["--n-trials", "1", "--enqueue", str(folder / "edge.yaml")]),
                       ("pareto", ["--n-trials", "3", "--objectives", "accuracy,train_seconds"])):
        created = CliRunner().invoke(app, ["study", "create", "--name", name, "--objective", objective_ref, "--space",
                                           str(space_file), "--storage", url, "--epochs", "2", "--seed", "0", *more])
        assert created.exit_code == 0, created.output
    return url


def test_looking_at_a_study_does_not_wait_for_pytorch(tmp_path: Path, finished_study: str):
    """``study show``, ``study list`` and ``study trials`` read the storage alone: none of the heavy libraries
    loads (``trials`` builds its table with pandas), whatever the study holds (trials at the end of a range, two
    objectives), and they print what they print in a process that has them loaded."""
    url = finished_study
    looks = [["study", "list", "--storage", url]]
    for name in ("s", "edge", "pareto"):
        looks += [["study", "show", name, "--storage", url], ["study", "show", name, "--storage", url, "--format",
                                                                "json"], ["study", "trials", name, "--storage", url]]
    for args in looks:
        code, loaded, stderr, printed = _cli_in_a_fresh_process(args, cwd=tmp_path)
        allowed = "['pandas']" if args[1] == "trials" else "[]"
        assert code in (0, None) and loaded in ("[]", allowed), (args, code, loaded, stderr[-2000:])
        here = CliRunner().invoke(app, args)
        assert here.exit_code == 0, here.output
        assert printed.split() == here.stdout.split(), args  # the same words (the terminal's width aside)
    shown = _cli_in_a_fresh_process(["study", "show", "s", "--storage", url], cwd=tmp_path)[3]
    # The stored tuning-free runs are read back without importing Prodigy's package (and PyTorch with it).
    import importlib.util

    assert "tuned vs tuning-free:" in shown or importlib.util.find_spec("prodigyopt") is None, shown
    edge = _cli_in_a_fresh_process(["study", "show", "edge", "--storage", url], cwd=tmp_path)[3]
    assert "adam.lr = 0.03 sits at the high end of its range" in edge, edge
    # An export of a config as it is (YAML or JSON, no confirmation runs) needs none of them either: it loaded
    # PyTorch for the script writers and pandas for the report's tables, for 1.5 s of start-up.
    for fmt in ("yaml", "json"):
        code, loaded, stderr, printed = _cli_in_a_fresh_process(
            ["study", "export", "s", "--no-confirm", "--format", fmt, "--storage", url], cwd=tmp_path)
        assert code in (0, None) and loaded == "[]", (fmt, code, loaded, stderr[-2000:])
        assert printed.split() == CliRunner().invoke(app, ["study", "export", "s", "--no-confirm", "--format", fmt,
                                                           "--storage", url]).stdout.split()


@pytest.mark.parametrize(("args", "said"), [
    (["study", "export", "s", "-o", "missing/best.yaml"], "missing/best.yaml: the folder missing does not exist."),
    (["study", "export", "s", "-o", "."], ".: is a folder; give a file name inside it."),
    (["study", "report", "s", "-o", "taken.txt"], "taken.txt: is a file, not a folder"),
    (["study", "report", "s", "-o", "mine"], "mine: the folder is not empty and was not written by tuner"),
    (["study", "report", "s", "-o", "taken.txt/report"], "taken.txt/report: taken.txt is a file, not a folder."),
    (["study", "trials", "s", "--csv", "mine"], "mine: is a folder; give a file name inside it."),
    (["study", "run", "s", "--tensorboard", "taken.txt/tb"],
     "TensorBoard folder taken.txt/tb: cannot be made (Not a directory)."),
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path, finished_study: str,
                                                                      args: list[str], said: str):
    """An output path that the write would refuse is refused first: before PyTorch, matplotlib and pandas load,
    and before the confirmation runs of ``export`` and ``report`` (which may take minutes)."""
    (tmp_path / "taken.txt").write_text("the user's\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("the user's\n")
    code, loaded, stderr, printed = _cli_in_a_fresh_process([*args, "--storage", finished_study], cwd=tmp_path)
    assert code == 1 and loaded == "[]", (code, loaded, stderr[-2000:])
    assert stderr.strip() == f"error: {said}" or stderr.startswith(f"error: {said}"), stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "taken.txt"] and printed == ""
    assert (tmp_path / "taken.txt").read_text() == "the user's\n" and os.listdir(tmp_path / "mine") == ["notes.md"]


def test_a_trial_that_is_not_there_is_said_before_pytorch_is_loaded(tmp_path: Path, finished_study: str):
    code, loaded, stderr, printed = _cli_in_a_fresh_process(["study", "export", "s", "--trial", "9", "--storage",
                                                            finished_study], cwd=tmp_path)
    assert code == 1 and loaded == "[]" and printed == "", (code, loaded, stderr[-2000:])
    assert stderr.strip() == "error: Study 's' has no trial 9 with a config (trials 0..3 hold one).", stderr


def test_export_to_dev_stdout_writes_into_a_pipe(tmp_path: Path, finished_study: str):
    """``-o /dev/stdout`` with standard output a pipe: the config goes into the pipe (the link leads to no file)."""
    run = "import sys; from tuner.cli import main; sys.argv = ['tuner', *sys.argv[1:]]; main()"
    done = subprocess.run([sys.executable, "-c", run, "study", "export", "s", "--storage", finished_study,
                           "--no-confirm", "-o", "/dev/stdout"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("optimizer:") and "wrote /dev/stdout" in done.stderr



@pytest.mark.parametrize("width", [80, 100, 200])
def test_the_progress_bar_is_one_line_of_the_terminal(width: int, monkeypatch: pytest.MonkeyPatch):
    """On a terminal 80 columns wide the bar's "(budget)" wrapped onto a line of its own, at every redraw."""
    import io

    import optuna
    from rich.console import Console

    from tuner.cli import _progress

    screen = io.StringIO()
    monkeypatch.setattr(_progress, "out", Console(file=screen, width=width, force_terminal=True, soft_wrap=True,
                                                  markup=False, emoji=False, highlight=False, color_system=None))
    monkeypatch.setattr(_progress.sys.stdout, "isatty", lambda: True)
    study = optuna.create_study(study_name="a-study-with-a-rather-long-name-" + "x" * 30)
    progress = _progress.TrialProgress(study, 1000, timeout=3600)
    progress.pruned = progress.failed = 100
    progress.progress.update(progress.task, stats=progress._stats(study))
    progress.progress.console.print(progress.progress.get_renderable())
    lines = [line for line in screen.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].rstrip().endswith("eta 1:00:00 (timeout)"), lines
    assert all(len(line.rstrip()) <= width for line in lines), lines


def test_every_commands_line_in_its_groups_help_is_a_whole_sentence():
    """A group's --help shows each command's first sentence, cut at its first ". ": "(e.g. to" read as cut off."""
    import typer.main

    group = typer.main.get_command(app)

    def lines(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            short = sub.get_short_help_str(limit=200)
            assert short.count("(") == short.count(")") and not short.endswith("..."), (path + [name], short)
            yield from lines(sub, [*path, name])
        yield from ()

    assert list(lines(group, [])) == []


def test_the_readme_lists_every_spec_field_as_a_flag_or_as_file_only():
    """The README's list of a spec's flags and of its fields set in the file only: every field, each one once,
    and every flag named there is one `study create` takes."""
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    listed = readme.split("A spec's fields are flags too: `", 1)[1].split("`", 1)[0]
    flags = {flag.split("/")[0] for flag in listed.split()}
    file_only = {"description", "heartbeat_interval", "grace_period"}
    assert all(f"`{field}`" in readme.split("set in the spec file only:", 1)[1][:200] for field in file_only)
    fields = {name.replace("_", "-") for name in StudySpec.model_fields} - {"data", "target", "task"}
    assert flags == {f"--{name}" for name in fields - {f.replace('_', '-') for f in file_only}}
    create = _help("study", "create")
    assert all(flag in create for flag in flags)


def test_a_trial_line_shows_the_best_of_the_lines_said_so_far(capsys: pytest.CaptureFixture[str]):
    """With workers the study may already hold a better trial whose line comes next: trial 0's line showed
    trial 1's value as the best."""
    import optuna

    from tuner.cli._progress import TrialProgress
    from tuner.study._engine import TrialOutcome

    study = optuna.create_study(direction="maximize")
    progress = TrialProgress(study, 3)
    for value in (0.5125, 0.9225):
        study.add_trial(optuna.trial.create_trial(value=value))
    progress(TrialOutcome(0, "COMPLETE", 0.5125, None, None, 1.0, None), study)
    progress(TrialOutcome(1, "COMPLETE", 0.9225, None, None, 1.0, None), study)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("done 1/3 best 0.5125") and lines[1].endswith("done 2/3 best 0.9225"), lines
