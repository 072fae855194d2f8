"""The follow-up command a report prints (and writes into report.md / report.html) works as written: the right
path to the narrowed space, a study name not taken yet, the study's objective and storage."""

from __future__ import annotations

import html
import re
import shlex
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.report import followup_command


def _printed_followup(output: str) -> str:
    prefix = "a follow-up study over the narrowed space: "
    return next(line[len(prefix):] for line in output.splitlines() if line.startswith(prefix))


def test_the_printed_follow_up_runs_as_written_twice(tmp_cwd: Path, objective_ref: str, space_file: Path):
    runner = CliRunner()
    url = f"sqlite:///{tmp_cwd / 'f.db'}"
    created = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--space", str(space_file),
                                  "--n-trials", "10", "--epochs", "2", "--storage", url, "--name", "f", "--sampler",
                                  "random", "--pruner", "none", "--device", "cpu", "--threads", "1", "--timeout",
                                  "600", "--on-oom", "accumulate"])
    assert created.exit_code == 0, created.output
    report = runner.invoke(app, ["study", "report", "f", "--storage", url, "--no-confirm"])
    assert report.exit_code == 0, report.output
    command = _printed_followup(report.output)
    assert command == (f"tuner study create --objective {objective_ref} --space f-report/narrowed-space.yaml "
                       f"--name f-narrowed --sampler random --pruner none --n-trials 10 --epochs 2 --timeout 600 "
                       f"--device cpu --on-oom accumulate --storage {url}")  # what the study was run with
    assert command in (tmp_cwd / "f-report" / "report.md").read_text()
    for row in ("| timeout | 600 s |", "| heartbeat\\_interval | 2 s |", "| grace\\_period | 12 s |"):  # with units
        assert row in (tmp_cwd / "f-report" / "report.md").read_text(), row
    # In the HTML, wrapped at spaces only (a browser broke it inside `--epochs` before; a word is broken only
    # where it is longer than a line), the same text.
    page = (tmp_cwd / "f-report" / "report.html").read_text()
    block = re.search(r'<pre class="cmd">(.*?)</pre>', page).group(1)
    assert "pre.cmd span{display:inline-block;" in page and block.count("<span>") == len(command.split(" "))
    assert html.unescape(re.sub(r"</?span>", "", block)) == command
    args = shlex.split(command)
    assert args[:3] == ["tuner", "study", "create"]
    ran = runner.invoke(app, [*args[1:], "--format", "json"])
    assert ran.exit_code == 0, ran.output
    assert optuna.load_study(study_name="f-narrowed", storage=url).user_attrs["tuner:spec"]["space"].endswith(
        "f-report/narrowed-space.yaml")
    # A second report proposes a name that is still free.
    again = runner.invoke(app, ["study", "report", "f", "--storage", url, "--no-confirm"])
    assert "--name f-narrowed-2 " in _printed_followup(again.output)


def _scaled(ctx, scale: float) -> float:
    for epoch in range(ctx.config.epochs):
        ctx.report(epoch, 0.5 * scale)
    return 0.5 * scale


def test_a_tune_study_gets_the_python_call(tmp_path: Path):
    import tuner

    def train(ctx: tuner.TrialContext) -> float:
        for epoch in range(ctx.config.epochs):
            ctx.report(epoch, 0.5)
        return 0.5

    url = f"sqlite:///{tmp_path / 't.db'}"
    result = tuner.tune(train, space="lr-only", n_trials=2, epochs=1, storage=url, study_name="lib", verbose=False)
    assert followup_command(result.study, "lib-report/narrowed-space.yaml", url) == (
        f"tuner.tune(train_fn, space='lib-report/narrowed-space.yaml', study_name='lib-narrowed', storage={url!r}, "
        f"n_trials=2, epochs=1)")  # the study's budget, not tune()'s 30
    # A study tuned away from tune()'s defaults: the call carries its settings, so the follow-up minimizes the
    # same loss over as many epochs, with the same seed and pruner, and its values compare.
    loss = tuner.tune(train, space="lr-only", n_trials=2, epochs=3, storage=url, study_name="loss", metric="error",
                      direction="minimize", seed=7, pruner="none", verbose=False)
    call = followup_command(loss.study, "lib-report/narrowed-space.yaml", url)
    assert call == (f"tuner.tune(train_fn, space='lib-report/narrowed-space.yaml', study_name='loss-narrowed', "
                    f"storage={url!r}, n_trials=2, metric='error', epochs=3, seed=7, pruner='none')")
    with pytest.warns(UserWarning, match="'error' reads as a loss"):  # run as printed (the lr-only space)
        again = tuner.tune(train, space="lr-only", n_trials=1, epochs=3, storage=url, study_name="loss-narrowed",
                           metric="error", seed=7, pruner="none", verbose=False)
    assert again.study.direction.name == "MINIMIZE"
    # A partial's name is its function's, which the follow-up cannot be called with: the placeholder stays.
    import functools

    part = tuner.tune(functools.partial(_scaled, scale=2.0), space="lr-only", n_trials=1, epochs=1, storage=url,
                      study_name="part", verbose=False)
    assert followup_command(part.study, "n.yaml", url).startswith("tuner.tune(train_fn, space='n.yaml'")


def test_the_defaults_a_follow_up_call_leaves_out_are_tunes():
    import inspect

    import tuner
    from tuner._tune_settings import TUNE_DEFAULTS, TUNE_N_TRIALS

    signature = inspect.signature(tuner.tune).parameters
    assert {key: signature[key].default for key in TUNE_DEFAULTS} == TUNE_DEFAULTS
    assert signature["n_trials"].default == TUNE_N_TRIALS
