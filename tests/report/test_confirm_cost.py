"""Re-training is never silent: ``study report`` and ``study export`` say what the confirmation will cost before
it starts and count the runs as they go; ``study show`` shows the confirmed recommendation beside the best
single trial, so ``show`` and ``export`` never disagree without saying so."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.report._confirm import ConfirmPlan, confirmation_plan
from tuner.study._record import StudyKey


@pytest.fixture
def small_study(tmp_path: Path, objective_ref: str, space_file: Path) -> str:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = CliRunner().invoke(app, ["study", "create", "--objective", objective_ref, "--space", str(space_file),
                                      "--n-trials", "5", "--epochs", "2", "--storage", url, "--name", "c",
                                      "--sampler", "random", "--pruner", "none", "--device", "cpu", "--threads",
                                      "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    return url


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_the_plan_counts_runs_and_prices_them_at_the_median_trial():
    plan = ConfirmPlan(top=3, seeds=3, runs=9, baseline_runs=3, trial_seconds=95.0)
    assert plan.seconds == 12 * 95.0
    assert plan.line() == ("confirming the recommendation: re-training the top 3 trial(s) with 3 new seed(s) each (9 "
                           "runs) and 3 run(s) of the tuning-free baseline, about 19 min 0 s at 1 min 35 s a trial. "
                           "--no-confirm skips this; the result is stored in the study, so later reports and "
                           "exports reuse it.")
    assert ConfirmPlan(3, 3, 0, 0, 1.0).line().startswith("using the confirmation stored in the study")
    assert "about 2 h 30 min" in ConfirmPlan(3, 3, 9, 0, 1000.0).line()


def test_report_says_the_cost_first_counts_the_runs_then_reuses(small_study: str, tmp_path: Path):
    runner = CliRunner()
    study = optuna.load_study(study_name="c", storage=small_study)
    plan = confirmation_plan(study, 3, 2, baseline=True)
    assert plan.runs == 6 and plan.trial_seconds is not None and plan.trial_seconds > 0
    first = runner.invoke(app, ["study", "report", "c", "--storage", small_study, "-o", str(tmp_path / "r1"),
                                "--seeds", "2"])
    assert first.exit_code == 0, first.output
    lines = _lines(first.output)
    total = plan.runs + plan.baseline_runs
    assert lines[0] == plan.line()
    runs = [line for line in lines if line.startswith("confirmation run ")]
    assert [line.split(":")[0] for line in runs] == [f"confirmation run {i}/{total}" for i in range(1, total + 1)]
    assert lines.index(runs[0]) > 0  # the estimate comes before any run
    again = runner.invoke(app, ["study", "report", "c", "--storage", small_study, "-o", str(tmp_path / "r2"),
                                "--seeds", "2"])
    assert again.exit_code == 0, again.output
    assert _lines(again.output)[0].startswith("using the confirmation stored in the study (top 3 trial(s) x 2")
    assert "confirmation run" not in again.output


def test_export_says_the_cost_first_and_no_confirm_trains_nothing(small_study: str, tmp_path: Path):
    runner = CliRunner()
    quiet = runner.invoke(app, ["study", "export", "c", "--storage", small_study, "--no-confirm", "-o",
                                str(tmp_path / "a.yaml")])
    assert quiet.exit_code == 0, quiet.output
    assert "confirm" not in quiet.output.replace("--no-confirm", "")
    result = runner.invoke(app, ["study", "export", "c", "--storage", small_study, "--seeds", "2", "-o",
                                 str(tmp_path / "b.yaml")])
    assert result.exit_code == 0, result.output
    assert _lines(result.output)[0].startswith("confirming the recommendation: re-training the top 3 trial(s) "
                                               "with 2 new seed(s) each (6 runs), about ")
    assert sum(line.startswith("confirmation run ") for line in _lines(result.output)) == 6


def test_show_puts_the_confirmed_recommendation_beside_the_best_trial(small_study: str, tmp_path: Path):
    runner = CliRunner()
    before = runner.invoke(app, ["study", "show", "c", "--storage", small_study])
    assert before.exit_code == 0, before.output
    flat = " ".join(before.output.split())
    export = f"tuner study export c --storage {small_study}"  # as the user must run it, the storage included
    assert f"not confirmed yet: `{export}` (and `study report`) first re-train the top trials" in flat
    assert runner.invoke(app, ["study", "export", "c", "--storage", small_study, "--seeds", "2", "-o",
                               str(tmp_path / "x.yaml")]).exit_code == 0
    study = optuna.load_study(study_name="c", storage=small_study)
    stored = study.user_attrs[StudyKey.CONFIRMATION]
    best = study.best_trial.number
    shown = runner.invoke(app, ["study", "show", "c", "--storage", small_study])
    if stored["recommended"] == best:
        assert "recommended: this config, confirmed with mean validation" in shown.output
    # Whichever trial the seeds favoured, the other case is shown as well: the stored recommendation is made to
    # name the other candidate.
    other = next(c["trial"] for c in stored["candidates"] if c["trial"] != best)

    def with_values(mine: list[float], theirs: list[float]) -> dict:
        candidates = [{**c, "values": mine if c["trial"] == other else theirs if c["trial"] == best else c["values"]}
                      for c in stored["candidates"]]
        return {**stored, "recommended": other, "candidates": candidates}

    study.set_user_attr(StudyKey.CONFIRMATION, with_values([0.90, 0.92], [0.50, 0.52]))
    shown = runner.invoke(app, ["study", "show", "c", "--storage", small_study])
    flat = " ".join(shown.output.split())
    assert (f"recommended (what `{export}` exports): trial {other}," in flat
            and f"the best single trial {best} did worse on new seeds (0.5100 ± 0.0141) (`export --trial {best}` "
                "exports it)" in flat), flat
    # A gap within the seeds' spread is said to be one: "did worse" was said of 0.9267 against 0.9279.
    study.set_user_attr(StudyKey.CONFIRMATION, with_values([0.90, 0.94], [0.89, 0.93]))
    flat = " ".join(runner.invoke(app, ["study", "show", "c", "--storage", small_study]).output.split())
    assert (f"the best single trial {best} scored 0.9100 ± 0.0283 on the same seeds: these runs do not tell the "
            f"two apart (twice the standard error of the difference is 0.057)") in flat, flat
    study.set_user_attr(StudyKey.CONFIRMATION, {**stored, "recommended": other})
    exported = runner.invoke(app, ["study", "export", "c", "--storage", small_study, "--seeds", "2"])
    assert f"\n  trial: {other}\n" in exported.stdout


def _library_train(ctx) -> float:
    value = 1.0 - abs(ctx.config.optimizer.lr - 0.01)
    ctx.report(0, value)
    return value


def test_show_of_a_tune_study_points_at_recommend_and_then_shows_it(tmp_path: Path):
    import tuner

    url = f"sqlite:///{tmp_path / 'lib.db'}"
    result = tuner.tune(_library_train, space="lr-only", n_trials=4, epochs=1, storage=url, study_name="lib",
                        verbose=False)
    runner = CliRunner()
    flat = " ".join(runner.invoke(app, ["study", "show", "lib", "--storage", url]).output.split())
    assert "not confirmed yet: `result.recommend()` of tuner.tune() re-trains the top trials" in flat
    rec = result.recommend(seeds=2)
    flat = " ".join(runner.invoke(app, ["study", "show", "lib", "--storage", url]).output.split())
    if rec.trial == result.best_trial.number:
        assert "recommended: this config, confirmed with mean validation" in flat
    else:
        assert f"recommended (what `tuner study export lib` exports): trial {rec.trial}," in flat
    assert "not confirmed yet" not in flat


def test_no_confirm_hands_over_the_stored_confirmation_and_its_baseline_line(small_study: str, tmp_path: Path):
    """--no-confirm re-trains nothing: export and report use the confirmation stored in the study (as its help
    says and as show does), and the report keeps the tuned-vs-tuning-free line stored with it."""
    runner = CliRunner()
    first = runner.invoke(app, ["study", "report", "c", "--storage", small_study, "-o", str(tmp_path / "r1"),
                                "--seeds", "2"])
    assert first.exit_code == 0, first.output
    report = runner.invoke(app, ["study", "report", "c", "--storage", small_study, "-o", str(tmp_path / "r2"),
                                 "--no-confirm"])
    assert report.exit_code == 0, report.output
    line = next(x for x in (tmp_path / "r1" / "report.md").read_text().splitlines() if "tuned vs tuning-free" in x)
    second_md = (tmp_path / "r2" / "report.md").read_text()
    assert line in second_md.splitlines() and "best single trial" not in second_md
    # study show repeats the line stored with the confirmation (nothing is trained there)
    shown = runner.invoke(app, ["study", "show", "c", "--storage", small_study])
    assert line.removeprefix("- ") in " ".join(shown.output.split()), shown.output
    as_json = runner.invoke(app, ["study", "show", "c", "--storage", small_study, "--format", "json"])
    assert json.loads(as_json.stdout)["tuning_free"] == line.removeprefix("- ")
    study = optuna.load_study(study_name="c", storage=small_study)
    stored = study.user_attrs[StudyKey.CONFIRMATION]
    other = next(c["trial"] for c in stored["candidates"] if c["trial"] != study.best_trial.number)
    study.set_user_attr(StudyKey.CONFIRMATION, {**stored, "recommended": other})  # not the best trial
    exported = runner.invoke(app, ["study", "export", "c", "--storage", small_study, "--no-confirm"])
    assert exported.exit_code == 0, exported.output
    assert f"\n  trial: {other}\n" in exported.stdout and "confirming" not in exported.output


def test_a_study_of_two_objectives_announces_no_confirmation_it_will_not_run(objective_ref: str, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    runner = CliRunner()
    created = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--objectives",
                                  "accuracy,train_seconds", "--n-trials", "4", "--epochs", "1", "--storage", url,
                                  "--name", "m", "--device", "cpu", "--workers", "1"])
    assert created.exit_code == 0, created.output
    for command in (["export", "m"], ["report", "m", "-o", str(tmp_path / "rep")]):
        result = runner.invoke(app, ["study", *command, "--storage", url])
        assert result.exit_code == 0, result.output
        assert "confirming" not in result.output and "confirmation run" not in result.output, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "the knee of the Pareto front" in md and "best single trial" not in md


def test_the_plan_counts_the_baseline_runs_a_changed_recommendation_needs(small_study: str, tmp_path: Path):
    from tuner.optim import get_optimizer
    from tuner.report._confirm import BASELINE, BASELINE_KEY

    if not get_optimizer(BASELINE).available:
        pytest.skip("prodigyopt is not installed: no baseline runs to count")
    runner = CliRunner()
    assert runner.invoke(app, ["study", "report", "c", "--storage", small_study, "-o", str(tmp_path / "r"),
                               "--seeds", "2"]).exit_code == 0
    study = optuna.load_study(study_name="c", storage=small_study)
    assert confirmation_plan(study, 3, 2, baseline=True).baseline_runs == 0  # all stored: nothing to run
    kept = study.user_attrs[BASELINE_KEY]
    study.set_user_attr(BASELINE_KEY, {**kept, "config": {**kept["config"], "batch_size": 999}})
    plan = confirmation_plan(study, 3, 2, baseline=True)
    assert (plan.runs, plan.baseline_runs) == (0, 2)  # it said "nothing to re-train", then trained 2 runs


def test_a_stale_confirmation_is_not_handed_over_by_any_command(small_study: str, tmp_path: Path):
    """A stored confirmation whose candidates are no longer the top trials (trials finished since) is not
    the recommendation of export, report or show: each hands over the best trial until it is confirmed again."""
    import yaml

    runner = CliRunner()
    assert runner.invoke(app, ["study", "export", "c", "--storage", small_study, "--seeds", "2", "-o",
                               str(tmp_path / "x.yaml")]).exit_code == 0
    study = optuna.load_study(study_name="c", storage=small_study)
    stored = study.user_attrs[StudyKey.CONFIRMATION]
    best = study.best_trial.number
    worst = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value).number
    stale = {**stored, "recommended": worst,
             "candidates": [{**stored["candidates"][0], "trial": worst}, *stored["candidates"][1:]]}
    study.set_user_attr(StudyKey.CONFIRMATION, stale)
    exported = runner.invoke(app, ["study", "export", "c", "--storage", small_study, "--no-confirm"])
    assert f"\n  trial: {best}\n" in exported.stdout, exported.output
    report = runner.invoke(app, ["study", "report", "c", "--storage", small_study, "--no-confirm", "-o",
                                 str(tmp_path / "r")])
    assert report.exit_code == 0, report.output
    assert yaml.safe_load((tmp_path / "r" / "recommended.yaml").read_text())["metadata"]["trial"] == best
    shown = " ".join(runner.invoke(app, ["study", "show", "c", "--storage", small_study]).output.split())
    assert "not confirmed yet (the stored one covers earlier top trials)" in shown


def test_show_and_export_agree_when_two_top_trials_share_a_config():
    """The confirmation's candidates are the top trials with distinct configs; show judges a stored
    confirmation current by the same list, so the two never disagree."""
    from optuna.distributions import FloatDistribution

    from tuner.report._confirm import recommendation
    from tuner.study._describe import study_summary
    from tuner.study._record import Key

    study = optuna.create_study(direction="maximize")
    dists = {"adam.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    for value, lr, seed in ((0.9, 1e-3, 1), (0.89, 1e-3, 2), (0.8, 2e-3, 3)):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"adam.lr": lr}, distributions=dists,
            user_attrs={Key.CONFIG: {"optimizer": {"name": "adam", "lr": lr}, "seed": seed}}))
    study.set_user_attr(StudyKey.CONFIRMATION, {
        "top_k": 2, "n_seeds": 1, "direction": "maximize", "recommended": 2,
        "candidates": [{"trial": 0, "trial_value": 0.9, "config": study.trials[0].user_attrs[Key.CONFIG],
                        "seeds": [5], "values": [0.7], "test_values": [None], "errors": []},
                       {"trial": 2, "trial_value": 0.8, "config": study.trials[2].user_attrs[Key.CONFIG],
                        "seeds": [5], "values": [0.85], "test_values": [None], "errors": []}]})
    assert study_summary(study)["confirmation"]["current"] is True
    assert recommendation(study, confirm_runs=False).trial == 2 == study_summary(study)["edges_of"]["trial"]


def test_a_one_seed_confirmation_shows_no_spread(small_study: str, tmp_path: Path):
    runner = CliRunner()
    report = runner.invoke(app, ["study", "report", "c", "--storage", small_study, "-o", str(tmp_path / "r"),
                                 "--seeds", "1"])
    assert report.exit_code == 0, report.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Confirmation runs (1 new seed per config)" in md
    assert not [line for line in md.splitlines() if " ± " in line and "mean ± std" not in line], md
    shown = " ".join(runner.invoke(app, ["study", "show", "c", "--storage", small_study]).output.split())
    assert "over 1 new seed(s)" in shown and "±" not in shown
    again = runner.invoke(app, ["study", "report", "c", "--storage", small_study, "-o", str(tmp_path / "r2"),
                                "--seeds", "2"])
    assert again.exit_code == 0 and " ± " in (tmp_path / "r2" / "report.md").read_text()


CALLS = {"n": 0, "stop_at": None}


def _counted(ctx) -> float:
    """A value of the config and its seed alone; the ``stop_at``-th call is interrupted (Ctrl-C)."""
    CALLS["n"] += 1
    if CALLS["n"] == CALLS["stop_at"]:
        raise KeyboardInterrupt
    value = -abs(ctx.config.optimizer.lr - 1e-3) + ctx.config.seed % 7 * 1e-6
    ctx.report(0, value)
    return value


def test_an_interrupted_confirmation_keeps_its_finished_runs_and_trains_only_the_rest(tmp_path: Path):
    """Confirmation runs are full trainings: Ctrl-C during the fifth of nine loses that one only. The next
    call (and its cost line) counts the four stored, trains the five others, and recommends what an
    uninterrupted confirmation does."""
    import tuner

    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = tuner.tune(_counted, "lr-only", n_trials=5, epochs=1, storage=url, study_name="r", verbose=False,
                        known_starts=False)
    CALLS.update(n=0, stop_at=5)
    with pytest.raises(KeyboardInterrupt):
        result.recommend()
    assert confirmation_plan(result.study, 3, 3).runs == 5
    CALLS.update(n=0, stop_at=None)
    rec = result.recommend()
    assert CALLS["n"] == 5
    assert [len(c.values) for c in rec.confirmation.candidates] == [3, 3, 3]
    CALLS.update(n=0)
    fresh = tuner.tune(_counted, "lr-only", n_trials=5, epochs=1, storage=url, study_name="r2", verbose=False,
                       known_starts=False).recommend()
    assert CALLS["n"] == 5 + 9  # its trials, then every confirmation run
    assert [c.values for c in fresh.confirmation.candidates] == [c.values for c in rec.confirmation.candidates]
    assert fresh.config == rec.config
