"""Studies with several objectives: the metric against train_seconds, pruning on the metric, the Pareto front,
its knee as the recommendation, and any point by ``export --trial``."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config import TrainConfig
from tuner.errors import ConfigError
from tuner.study import StudySpec, create_or_join, prepare
from tuner.study._record import Key, knee, pareto_front

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _multi_study(values: list[tuple[float, float]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for acc, sec in values:
        study.add_trial(optuna.trial.create_trial(values=[acc, sec], params={}, distributions={}))
    return study


def test_the_front_keeps_what_nothing_beats_on_both_and_the_knee_gives_up_least() -> None:
    study = _multi_study([(0.90, 10.0), (0.89, 2.0), (0.50, 1.0), (0.80, 5.0), (0.89, 3.0)])
    assert [t.number for t in pareto_front(study)] == [0, 1, 2]  # 3 and 4 are beaten by 1
    assert knee(study).number == 1  # 0.01 less accuracy for a fifth of the time
    assert knee(_multi_study([(0.9, 3.0), (0.8, 1.0)])).number == 0  # under three points: the best metric
    # A point short of the line through the extremes trades worse than either: never the knee.
    assert knee(_multi_study([(0.95, 10.0), (0.20, 8.0), (0.10, 1.0)])).number == 0
    assert knee(_multi_study([(0.95, 10.0), (0.90, 2.0), (0.10, 1.0)])).number == 1
    # With a fourth point on the front, the one that gives up least is still the knee.
    assert knee(_multi_study([(0.95, 10.0), (0.94, 2.0), (0.10, 1.0), (0.30, 1.5)])).number == 1


def test_objectives_are_checked_before_anything_is_created(objective_ref: str, storage_url: str, db_path: Path,
                                                           assert_nothing_written) -> None:
    def spec(**fields):
        return StudySpec(**{"name": "o", "objective": objective_ref, "n_trials": 2, "epochs": 1,
                            "storage": storage_url, "device": "cpu", **fields})

    assert spec(objectives="accuracy, train_seconds").objectives == ["accuracy", "train_seconds"]
    assert prepare(spec(objectives=["accuracy"])).spec.objectives is None  # the metric alone: as without the key
    for one in ("train_seconds", "loss", ["nonsense"]):  # one name that is not the metric: refused, not dropped
        with pytest.raises(ConfigError, match="the first must be the objective's metric, 'accuracy'"):
            prepare(spec(objectives=one))
    with pytest.raises(ConfigError, match="the first must be the objective's metric, 'accuracy'"):
        prepare(spec(objectives="loss,train_seconds"))
    with pytest.raises(ConfigError, match="after the metric 'accuracy': Unknown objective 'seconds'. "
                                          "Valid: train_seconds"):
        prepare(spec(objectives="accuracy,seconds"))
    with pytest.raises(ConfigError, match="names the metric, 'accuracy', twice"):
        prepare(spec(objectives="accuracy,train_seconds,accuracy"))
    with pytest.raises(ConfigError, match="pack: 8 would count a pack's time for each member"):
        prepare(spec(objectives="accuracy,train_seconds", pack=8))
    with pytest.raises(ConfigError, match="the 'cmaes' sampler runs in a study of one objective; with several use "
                                          "tpe, random, qmc, nsgaii, gp"):
        prepare(spec(objectives="accuracy,train_seconds", sampler="cmaes"))
    for pruner in ("hyperband", "wilcoxon"):  # Optuna's own need a single direction or a best trial
        with pytest.raises(ConfigError, match=f"the {pruner!r} pruner runs in a study of one objective; with "
                                              f"several use median, percentile, successive_halving, patient, "
                                              f"top_third, none"):
            prepare(spec(objectives="accuracy,train_seconds", pruner=pruner))
    assert_nothing_written(db_path)


def test_a_study_made_with_other_objectives_is_refused_naming_them_as_given(objective_ref: str,
                                                                            storage_url: str) -> None:
    from tuner.errors import StudyError
    from tuner.study import create_or_join

    def spec(**fields):
        return StudySpec(**{"name": "o", "objective": objective_ref, "n_trials": 2, "epochs": 1,
                            "storage": storage_url, "device": "cpu", **fields})

    create_or_join(prepare(spec()))
    with pytest.raises(StudyError, match=r"with a different spec \(objectives: accuracy -> accuracy, "
                                         r"train_seconds\)\. Nothing was changed"):
        create_or_join(prepare(spec(objectives="accuracy,train_seconds")))


def test_a_study_of_accuracy_and_train_seconds_records_both_and_prunes_on_accuracy(objective_ref: str,
                                                                                    storage_url: str,
                                                                                    monkeypatch) -> None:
    from tuner.study._local import run_prepared

    monkeypatch.setenv("TUNER_PACK", "8")  # what a spec leaves to auto: not a pack with train_seconds

    spec = StudySpec(name="o", objective=objective_ref, objectives=["accuracy", "train_seconds"], n_trials=14,
                     epochs=4, storage=storage_url, device="cpu", pruner={"name": "median", "n_startup_trials": 3,
                                                                          "n_warmup_steps": 0})
    prepared = prepare(spec)
    study = create_or_join(prepared)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    run = run_prepared(study, prepared)
    assert run.pack == 1 and "train_seconds is an objective" in run.pack_why
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 3
    for t in complete:
        assert t.values[0] == t.user_attrs[Key.VAL_HISTORY][-1]
        assert t.values[1] == pytest.approx(t.user_attrs[Key.SECONDS], abs=1e-3)
        assert sorted(t.intermediate_values) == [0, 1, 2, 3]
    # Pruning judged each running trial on accuracy against the others at the same epoch, as a study of
    # accuracy alone does: replay every pruned trial's last report in such a study.
    pruned = [t for t in trials if t.state == TrialState.PRUNED and "median" in t.user_attrs.get(Key.REASON, "")]
    single = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(3, 0))
    for t in sorted(trials, key=lambda t: t.number):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            last = max(t.intermediate_values)
            if t.state == TrialState.PRUNED:
                twin = single.ask()
                for step in sorted(t.intermediate_values):
                    twin.report(t.intermediate_values[step], step)
                assert twin.should_prune(), t.number
                single.tell(twin, state=TrialState.PRUNED)
            else:
                single.add_trial(optuna.trial.create_trial(
                    value=t.values[0], intermediate_values=dict(t.intermediate_values), params={},
                    distributions={}))
            assert last in t.intermediate_values
    assert len(study.trials) == 14
    assert pruned, [t.state.name for t in trials]  # the median pruner stopped some


def test_show_export_and_report_recommend_the_knee(objective_ref: str, storage_url: str, tmp_cwd: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--objectives",
                                  "accuracy,train_seconds", "--n-trials", "10", "--epochs", "3", "--storage",
                                  storage_url, "--device", "cpu", "--name", "mo", "--sampler", "random"])
    assert created.exit_code == 0, created.output
    study = optuna.load_study(study_name="mo", storage=storage_url)
    point = knee(study)
    shown = runner.invoke(app, ["study", "show", "mo", "--storage", storage_url])
    assert shown.exit_code == 0, shown.output
    assert "Pareto front (accuracy vs train_seconds; * = knee, the recommendation)" in shown.output
    assert f"recommended config (trial {point.number}, the knee of the Pareto front" in shown.output
    as_json = json.loads(runner.invoke(app, ["study", "show", "mo", "--storage", storage_url, "--format",
                                             "json"]).output)
    assert (as_json["objectives"], as_json["directions"]) == (["accuracy", "train_seconds"], ["maximize", "minimize"])
    assert as_json["knee"]["number"] == point.number and point.number in [r["number"] for r in as_json["pareto"]]
    # The trials table has both objectives, each under its own name; no NaN or None beside "-".
    listed = runner.invoke(app, ["study", "trials", "mo", "--storage", storage_url, "--format", "json"])
    rows = {r["number"]: r for r in json.loads(listed.output)}
    assert rows[point.number]["train_seconds"] == point.values[1] and rows[point.number]["value"] == point.values[0]
    table = runner.invoke(app, ["study", "trials", "mo", "--storage", storage_url]).output
    assert "train_seconds" in table.splitlines()[0] and "NaN" not in table and "None" not in table
    exported = runner.invoke(app, ["study", "export", "mo", "--storage", storage_url, "-o", "knee.yaml"])
    assert exported.exit_code == 0, exported.output
    sized = runner.invoke(app, ["study", "export", "mo", "--storage", storage_url, "--top-k", "2", "--seeds", "1"])
    assert "warning: --top-k and --seeds size the confirmation runs, and none run here (this study has several " \
           "objectives" in " ".join(sized.output.split())  # not ignored in silence
    assert TrainConfig.load("knee.yaml") == TrainConfig.from_dict(point.user_attrs[Key.CONFIG])
    other = next(t for t in study.trials if t.state == TrialState.COMPLETE and t.number != point.number)
    runner.invoke(app, ["study", "export", "mo", "--storage", storage_url, "--trial", str(other.number), "-o",
                        "other.yaml"])
    assert TrainConfig.load("other.yaml").optimizer == TrainConfig.from_dict(other.user_attrs[Key.CONFIG]).optimizer
    # A trial off the front is exported as asked, with a warning naming a trial of the front that beats it.
    front = {t.number for t in pareto_front(study)}
    for t in (t for t in study.trials if t.state == TrialState.COMPLETE):
        picked = runner.invoke(app, ["study", "export", "mo", "--storage", storage_url, "--trial", str(t.number),
                                     "-o", f"t{t.number}.yaml"])
        said = " ".join(picked.output.split())
        assert picked.exit_code == 0 and (f"trial {t.number} is not on the Pareto front: trial " in said) == (
            t.number not in front), said
    report = runner.invoke(app, ["study", "report", "mo", "--storage", storage_url, "-o", "rep"])
    assert report.exit_code == 0, report.output
    assert (tmp_cwd / "rep" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_cwd / "rep" / "report.md").read_text()
    assert "the knee of the Pareto front of accuracy vs train\\_seconds" in text and "pareto.png" in text  # Markdown
    # The front's figures too, the knee's train_seconds in the recommendation's line.
    assert "## Pareto front (accuracy vs train\\_seconds)" in text
    assert f"| {point.number} (knee, recommended) | {point.values[0]:.4g} | {point.values[1]:.4g} |" in text
    assert len([t for t in text.splitlines() if re.match(r"\| \d+", t)]) >= len(pareto_front(study))
    assert f"; train\\_seconds: {point.values[1]:.4g}" in text
    # The importances are the metric's alone: said, so that they are not read as what drives the trade-off.
    assert "importances are of validation accuracy alone, not of the trade-off against train\\_seconds" in text
    # Another point of the front, as a command that runs (not a placeholder name without the storage).
    found = re.search(r"another point, trial (\d+) for one: `(tuner study export mo --trial \d+ --storage [^`]+)`",
                      text.replace("\\", ""))
    assert found, text
    assert int(found.group(1)) in {t.number for t in pareto_front(study)} - {point.number}
    again = runner.invoke(app, shlex.split(found.group(2))[1:] + ["-o", "again.yaml"])
    assert again.exit_code == 0, again.output


def test_a_foreign_multi_objective_study_is_listed_and_refused_in_one_line(storage_url: str, tmp_cwd: Path) -> None:
    from tuner.study._storage import open_storage

    foreign = optuna.create_study(study_name="nsga", storage=open_storage(storage_url),
                                  directions=["maximize", "minimize"])
    foreign.add_trial(optuna.trial.create_trial(values=[0.5, 2.0], params={}, distributions={}))
    runner = CliRunner()
    listed = runner.invoke(app, ["study", "list", "--storage", storage_url])
    assert listed.exit_code == 0 and "multi-objective" in listed.output
    for command in (["study", "show", "nsga"], ["study", "report", "nsga"], ["study", "export", "nsga"]):
        result = runner.invoke(app, [*command, "--storage", storage_url])
        assert result.exit_code == 1, result.output
        assert "a study of 2 objectives that tuner did not create" in " ".join(result.output.split()) \
            and "Traceback" not in result.output


def test_edge_notes_name_each_parameter_at_an_end_of_its_range() -> None:
    from optuna.distributions import FloatDistribution, IntDistribution

    from tuner.study._describe import edge_notes

    study = optuna.create_study()
    dists = {"adam.lr": FloatDistribution(1e-4, 1e-2, log=True), "dropout": FloatDistribution(0.0, 0.5),
             "layers": IntDistribution(1, 9)}
    study.add_trial(optuna.trial.create_trial(value=1.0, params={"adam.lr": 9.5e-3, "dropout": 0.2, "layers": 1},
                                              distributions=dists))
    assert edge_notes(study, 0) == [
        "adam.lr = 0.0095 sits at the high end of its range [0.0001, 0.01]: better values may lie above it",
        "layers = 1 sits at the low end of its range [1, 9]: better values may lie below it"]


def test_edge_notes_leave_out_ends_where_the_hyperparameter_itself_stops() -> None:
    """Dropout at 0 or a warmup fraction at 0 sit at an end of their ranges, but nothing lies beyond it: the
    study's stored space tells those ends, and show does not call them edges."""
    from optuna.distributions import FloatDistribution

    from tuner.spaces import SearchSpace, load_space
    from tuner.study._describe import edge_notes
    from tuner.study._record import StudyKey

    hard = load_space("default").hard_ends()
    assert hard["dropout"] == ["low"] and hard["warmup_cosine.warmup_fraction"] == ["low"]
    assert not any(name.endswith(".lr") for name in hard) and "batch_size" not in hard
    space = SearchSpace.from_dict({"optimizer": {"adam": {"one_minus_beta1": {"low": 0.001, "high": 0.1}}},
                                   "schedule": {"warmup_cosine": {"warmup_fraction": {"low": 0.1, "high": 0.5}}},
                                   "regularization": {"dropout": {"low": 0.0, "high": 0.5}}})
    # beta1 may go on past 0.9 and 0.999 (1 - the range's ends); warmup fractions stop at 0.5, dropout at 0.
    assert space.hard_ends() == {"warmup_cosine.warmup_fraction": ["high"], "dropout": ["low"]}
    study = optuna.create_study()
    study.set_user_attr(StudyKey.SPACE, load_space("default").raw)  # the ends come from the stored space
    dists = {"adam.lr": FloatDistribution(1e-4, 1e-2, log=True), "dropout": FloatDistribution(0.0, 0.5)}
    study.add_trial(optuna.trial.create_trial(value=1.0, params={"adam.lr": 1e-4, "dropout": 0.0},
                                              distributions=dists))
    assert edge_notes(study, 0) == [
        "adam.lr = 0.0001 sits at the low end of its range [0.0001, 0.01]: better values may lie below it"]
    # Another stored space with the same ends gives the same notes.
    older = optuna.create_study()
    older.set_user_attr(StudyKey.SPACE, {"optimizer": {"adam": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
                                         "regularization": {"dropout": {"low": 0.0, "high": 0.5}}})
    older.add_trial(optuna.trial.create_trial(value=1.0, params={"adam.lr": 1e-4, "dropout": 0.0},
                                              distributions=dists))
    assert edge_notes(older, 0) == edge_notes(study, 0)


def test_show_looks_for_edges_at_the_trial_it_would_export() -> None:
    """The best trial until a confirmation is stored; then the recommended trial, as report and export do."""
    from optuna.distributions import FloatDistribution

    from tuner.study._describe import study_summary
    from tuner.study._record import Key, StudyKey

    study = optuna.create_study(direction="maximize")
    dists = {"adam.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    for value, lr in ((0.9, 1e-4), (0.8, 1e-3)):
        study.add_trial(optuna.trial.create_trial(value=value, params={"adam.lr": lr}, distributions=dists,
                                                  user_attrs={Key.CONFIG: {"optimizer": {"name": "adam", "lr": lr}}}))
    summary = study_summary(study)
    assert summary["edges_of"] == {"trial": 0, "is": "the best trial"} and len(summary["edges"]) == 1
    study.set_user_attr(StudyKey.CONFIRMATION, {
        "top_k": 2, "n_seeds": 2, "direction": "maximize", "recommended": 1,
        "candidates": [{"trial": 0, "trial_value": 0.9, "config": {}, "seeds": [1, 2], "values": [0.7, 0.7],
                        "test_values": [None, None], "errors": []},
                       {"trial": 1, "trial_value": 0.8, "config": {}, "seeds": [1, 2], "values": [0.8, 0.8],
                        "test_values": [None, None], "errors": []}]})
    summary = study_summary(study)
    assert summary["edges_of"] == {"trial": 1, "is": "the recommended trial"} and summary["edges"] == []


def test_show_says_which_parameters_sit_at_the_edge_of_the_space(objective_ref: str, storage_url: str,
                                                                 tmp_path: Path, tmp_cwd: Path) -> None:
    space = tmp_path / "low.yaml"
    space.write_text("optimizer: {adam: {lr: {low: 1.0e-6, high: 1.0e-4, log: true}}}\nbatch_size: 16\n")
    TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-4}}).save("top.yaml")
    runner = CliRunner()
    created = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--space", str(space),
                                  "--n-trials", "1", "--epochs", "2", "--storage", storage_url, "--device", "cpu",
                                  "--name", "edge", "--enqueue", "top.yaml"])
    assert created.exit_code == 0, created.output
    for output in (created.output, runner.invoke(app, ["study", "show", "edge", "--storage", storage_url]).output):
        assert "at the edge of the space (the best trial, trial 0): 1 parameter(s)" in output
        assert "adam.lr = 0.0001 sits at the high end of its range [1e-06, 0.0001]" in output
        flat = " ".join(output.split())
        # One complete trial: too few for the report's narrowed space, so it is not promised.
        assert "with 1 complete trial(s), too few to narrow the space (5 needed): widen those ends in the space " \
               "file by hand" in flat and "writes narrowed-space.yaml" not in flat
    # The report says it too, on the terminal and in its files.
    reported = runner.invoke(app, ["study", "report", "edge", "--storage", storage_url, "--no-confirm", "-o",
                                   str(tmp_path / "rep")])
    assert reported.exit_code == 0, reported.output
    flat = " ".join(reported.output.split())
    # (one complete trial: too few for a narrowed space, so nothing is said to be widened)
    assert "at the edge of the space (the best trial, trial 0): 1 parameter(s) adam.lr = 0.0001 sits at the high " \
           "end of its range" in flat and "narrowed-space" not in flat
    for page in ("report.md", "report.html"):  # the files say it without a narrowed space too
        text = " ".join((tmp_path / "rep" / page).read_text(encoding="utf-8").replace("\\", "").split())
        assert "at the edge of the space (trial 0): adam.lr = 0.0001 sits at the high end of its range [1e-06, " \
               "0.0001]: better values may lie above it; widen that end in the space file by hand" in text, page


def test_tune_with_two_objectives_prunes_on_the_metric_and_recommends_the_knee(tmp_path: Path, capsys) -> None:
    import time

    import tuner

    def train(ctx: tuner.TrialContext) -> float:
        lr = ctx.config.optimizer.lr
        value = 0.0
        for epoch in range(ctx.config.epochs):
            time.sleep(0.002 * ctx.config.batch_size / 32)  # larger batches take longer here
            value = (1 - abs(lr - 1e-2)) * (epoch + 1) / ctx.config.epochs
            ctx.report(epoch, value)
        return value

    storage = f"sqlite:///{tmp_path / 't.db'}"
    result = tuner.tune(train, space="default", n_trials=12, epochs=3, objectives=["value", "train_seconds"],
                        storage=storage, verbose=False, known_starts=False)
    assert len(result.study.directions) == 2
    front = result.pareto_front
    assert front and all(len(t.values) == 2 for t in front)
    rec = result.recommend()
    assert rec.trial in [t.number for t in front] and rec.source == (
        "the knee of the Pareto front of value vs train_seconds")  # no command-line hint in the library's answer
    tuner.tune(train, space="default", n_trials=1, epochs=1, objectives=["value", "train_seconds"],
               known_starts=False)
    assert "maximize 'value', minimize 'train_seconds'" in capsys.readouterr().out  # the header names both
    with pytest.raises(ConfigError, match="top_k and seeds do not apply"):
        result.recommend(top_k=2, seeds=1)  # they were ignored in silence
    other = next(t.number for t in front if t.number != rec.trial) if len(front) > 1 else rec.trial
    assert result.recommend(trial=other).trial == other
    with pytest.raises(ConfigError, match="objectives must start with the metric"):
        tuner.tune(train, objectives=["train_seconds"], verbose=False)
    with pytest.raises(Exception, match="objective"):
        tuner.tune(train, space="default", n_trials=1, epochs=1, storage=storage, verbose=False,
                   study_name=result.study.study_name)  # one objective against a study of two
    # The command line shows and exports it like a study it created (it was refused as "not handled").
    name = result.study.study_name
    shown = CliRunner().invoke(app, ["study", "show", name, "--storage", storage])
    assert shown.exit_code == 0, shown.output
    assert "train(), space default, maximize value, minimize train_seconds" in shown.output
    assert "Pareto front" in shown.output
    listed = CliRunner().invoke(app, ["study", "list", "--storage", storage, "--format", "json"])
    ((kind, objective),) = [(r["kind"], r["objective"]) for r in json.loads(listed.stdout)]
    assert kind == "tune" and objective.endswith("train()")  # the function's qualified name
    assert [r["directions"] for r in json.loads(listed.stdout)] == [["maximize", "minimize"]]
    from tuner.cli import _output

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_output.out, "width", 200)
        table = CliRunner().invoke(app, ["study", "list", "--storage", storage]).output
    assert "│ tune (2 objectives) │" in table, table
    exported = CliRunner().invoke(app, ["study", "export", name, "--storage", storage, "--format", "json"])
    assert exported.exit_code == 0 and json.loads(exported.output)["optimizer"]["name"], exported.output


def test_the_edge_lines_promise_a_narrowed_space_only_where_the_report_writes_one(capsys) -> None:
    from tuner.cli._output import print_edges

    for complete, promised in ((4, False), (5, True)):
        print_edges({"name": "e", "edges": ["adam.lr = 0.0001 sits at the high end of its range"],
                     "edges_of": {"trial": 0, "is": "the best trial"}, "counts": {"complete": complete}})
        flat = " ".join(capsys.readouterr().out.split())
        assert ("writes narrowed-space.yaml with the ends widened where its recommended trial sits" in flat) is promised
        assert ("too few to narrow the space (5 needed)" in flat) is not promised


def test_best_config_of_two_objectives_is_the_knee_that_recommend_and_export_hand_over(tmp_path: Path) -> None:
    """``result.best_config.save(...)``, the README's way to keep what tune() found, saves the trial that
    ``recommend()`` and ``tuner study export`` give: the knee, not the end of the front with the best metric."""
    import time

    import tuner
    from tuner.study._record import knee, ranked_trials

    loss_and_seconds = {0.001: (0.10, 0.6), 0.002: (0.15, 0.2), 0.003: (0.50, 0.05), 0.004: (0.30, 0.12)}

    def train(ctx: tuner.TrialContext) -> float:
        loss, seconds = loss_and_seconds[round(ctx.config.optimizer.lr, 6)]
        time.sleep(seconds)
        ctx.report(0, loss)
        return loss

    storage = f"sqlite:///{tmp_path / 'k.db'}"
    result = tuner.tune(train, space="lr-only", n_trials=4, epochs=1, metric="val_loss", storage=storage,
                        objectives=["val_loss", "train_seconds"], pruner="none", known_starts=False, verbose=False,
                        enqueue=[{"optimizer": {"name": "adam", "lr": lr}} for lr in loss_and_seconds])
    point = knee(result.study)
    assert point.number == 1 != ranked_trials(result.study)[0].number  # the knee is not the lowest loss
    assert result.best_trial.number == result.recommend().trial == point.number
    assert result.best_config.optimizer.lr == pytest.approx(0.002) and result.best_value == pytest.approx(0.15)
    exported = CliRunner().invoke(app, ["study", "export", result.study.study_name, "--storage", storage,
                                        "--format", "json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output)["optimizer"]["lr"] == pytest.approx(result.best_config.optimizer.lr)


def test_a_study_of_two_objectives_warm_starts_another_by_its_metric(tmp_path: Path) -> None:
    """README: a warm start takes "an earlier study ... of this objective or another"; one of accuracy and
    training seconds gives its best configs by accuracy, and says so (it was refused)."""
    import tuner
    from tuner.spaces import load_space
    from tuner.study._starts import gather_starts

    def train(ctx: tuner.TrialContext) -> float:
        value = 1 - abs(ctx.config.optimizer.lr - 1e-2)
        ctx.report(0, value)
        return value

    storage = f"sqlite:///{tmp_path / 'w.db'}"
    made = tuner.tune(train, space="lr-only", n_trials=4, epochs=1, objectives=["value", "train_seconds"],
                      storage=storage, study_name="two", known_starts=False, verbose=False)
    starts, notes = gather_starts(load_space("lr-only"), enqueue=[], warm_start="two", warm_storage=storage,
                                  warm_top=2, known=False)
    best = sorted((t for t in made.study.trials), key=lambda t: -t.values[0])[:2]
    assert [s.source.split(" (")[0] for s in starts] == [f"study 'two' trial {t.number}" for t in best]
    assert notes == ["warm start: study 'two' has 2 objectives: its best configs by the first, value, were taken"]


def test_a_study_whose_trials_tie_at_chance_reads_no_edge_from_its_best_trial(storage_url: str, tmp_cwd: Path
                                                                              ) -> None:
    """Every trial at chance (0.1007): the "best" was picked from a tie, so show and the narrowed space said
    its step size sat at an edge and widened it. Now show says the trials tie and reads no edge."""
    import tuner
    from tuner.report._analysis import narrow_space
    from tuner.study._describe import edge_notes

    def chance(ctx: tuner.TrialContext) -> float:
        ctx.report(0, 0.1007)
        return 0.1007

    # The first trial, the "best" of the tie, at the top of the space's learning rates (lr-only: adam 1e-5..0.1)
    result = tuner.tune(chance, space="lr-only", n_trials=6, epochs=1, storage=storage_url, study_name="flat",
                        known_starts=False, verbose=False, enqueue=[{"optimizer": {"name": "adam", "lr": 0.1}}])
    best = result.best_trial
    assert best.number == 0 and best.params["adam.lr"] == pytest.approx(0.1)
    assert edge_notes(result.study, best.number) == []
    shown = CliRunner().invoke(app, ["study", "show", "flat", "--storage", storage_url])
    said = " ".join(shown.output.split())
    assert shown.exit_code == 0 and "6 of the 6 complete trials tie at the best value, 0.1007" in said, said
    assert "at the edge of the space" not in said
    _, notes = narrow_space(result.study, result.study.user_attrs["tuner:space"], anchor=best.number)
    assert "6 of the 6 complete trials tie at the best value, 0.1007: no end is widened" in notes[1]
    assert not [n for n in notes if "widened down past" in n or "widened up past" in n], notes


# Accuracy and seconds per trial number: trial 1 is the knee (0.02 less accuracy for a sixth of the time), trial 0
# the most accurate.
KNEE_VALUES = {0: (0.95, 0.30), 1: (0.93, 0.05), 2: (0.50, 0.01), 3: (0.60, 0.20), 4: (0.70, 0.25), 5: (0.40, 0.20)}


def _knee_study(storage: str, capsys=None) -> tuple[object, str]:
    import time

    import tuner

    def train(ctx: tuner.TrialContext) -> float:
        value, seconds = KNEE_VALUES[ctx.number]
        time.sleep(seconds)
        ctx.report(0, value)
        return value

    result = tuner.tune(train, space="adam-family", n_trials=6, epochs=1, metric="accuracy", storage=storage,
                        study_name="knee", objectives=["accuracy", "train_seconds"], pruner="none",
                        known_starts=False)
    return result, capsys.readouterr().out if capsys is not None else ""


def test_every_place_that_names_the_best_of_two_objectives_names_the_knee(tmp_path: Path, tmp_cwd: Path,
                                                                         capsys) -> None:
    """tune()'s last line named the most accurate trial while best_trial was the knee; so did the learning
    curves' "best" and study list's best column."""
    from tuner.report import _plots

    storage = f"sqlite:///{tmp_path / 'k.db'}"
    result, said = _knee_study(storage, capsys)
    assert result.best_trial.number == 1 == knee(result.study).number
    last = said.strip().splitlines()[-1]
    assert re.search(r"; the knee of the Pareto front, trial 1: accuracy 0\.9300, train_seconds 0\.\d+$", last), last
    listed = json.loads(CliRunner().invoke(app, ["study", "list", "--storage", storage, "--format", "json"]).output)
    assert [r["best"] for r in listed] == [pytest.approx(0.93)]
    table = CliRunner().invoke(app, ["study", "list", "--storage", storage]).output
    assert "0.9300" in table and "(knee)" in table and "0.9500" not in table
    from conftest import legends_of

    legends = legends_of(lambda: _plots.learning_curves(result.study, "accuracy", tmp_path / "curves.png"))
    assert "knee of the Pareto front (trial 1)" in legends and not [t for t in legends if t.startswith("best")]
    # A study of one objective still says "best trial".
    import tuner

    one = tuner.tune(lambda ctx: 0.5, space="lr-only", n_trials=1, epochs=1, known_starts=False)
    assert one.best_trial.number == 0 and "; best trial 0: value 0.5000" in capsys.readouterr().out


def test_the_report_of_a_tune_study_of_two_objectives_says_what_it_did_not_do(tmp_path: Path, tmp_cwd: Path) -> None:
    """The follow-up call was Python in a bash block; the tuned-vs-tuning-free line was missing without a word;
    "show" and "trials" used one heading for two different times."""
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    result, _ = _knee_study(storage)
    done = CliRunner().invoke(app, ["study", "report", "knee", "--storage", storage, "-o", "rep"])
    assert done.exit_code == 0, done.output
    text = (tmp_cwd / "rep" / "report.md").read_text()
    assert "```python\ntuner.tune(" in text and "```bash\ntuner.tune(" not in text
    assert "in Python run from the folder the report was written from" in text
    html = (tmp_cwd / "rep" / "report.html").read_text()
    assert "in Python run from the folder the report was written from" in html
    assert "tuned vs tuning-free: not compared (that comparison re-trains the recommendation" in text
    assert "Best config per optimizer (by accuracy; ties by train\\_seconds)" in text
    from tuner.cli import _output

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_output.out, "width", 200)
        shown = CliRunner().invoke(app, ["study", "show", "knee", "--storage", storage]).output
        trials = CliRunner().invoke(app, ["study", "trials", "knee", "--storage", storage]).output
    assert "train s" in shown and "seconds" not in shown.split("Pareto front")[0].replace("train_seconds", "")
    seconds = result.study.trials[2].values[1]
    assert f"{seconds:.3g}" in shown  # three significant digits, not 0.0
    assert "wall s" in trials.splitlines()[0] and " seconds" not in trials.splitlines()[0]


def test_twin_points_of_the_front_share_one_label_and_are_not_offered_as_another_point(tmp_path: Path,
                                                                                      tmp_cwd: Path) -> None:
    import tuner
    from tuner.report import _plots

    study = _multi_study([(0.8, 0.02), (0.9, 0.5), (0.7, 0.01), (0.7, 0.01)])  # 2 and 3: the same point
    labels = []
    with pytest.MonkeyPatch.context() as patch:
        real = _plots._save
        patch.setattr(_plots, "_save", lambda fig, path: (labels.extend(
            t.get_text() for ax in fig.axes for t in ax.texts), real(fig, path))[1])
        _plots.pareto(study, "accuracy", tmp_path / "p.png")
    assert sorted(labels) == ["0", "1", "2, 3"]

    # Every trial the same: the front is four twins, and no other point is offered.
    storage = f"sqlite:///{tmp_path / 't.db'}"

    def same(ctx: tuner.TrialContext) -> float:
        ctx.report(0, 0.8)
        return 0.8

    result = tuner.tune(same, space="lr-only", n_trials=4, epochs=1, storage=storage, study_name="tie",
                        objectives=["value", "train_seconds"], known_starts=False, verbose=False)
    done = CliRunner().invoke(app, ["study", "report", "tie", "--storage", storage, "-o", "rep"])
    assert done.exit_code == 0, done.output
    text = (tmp_cwd / "rep" / "report.md").read_text()
    assert "4 of the 4 complete trials tie at the best value, 0.8" in text  # as study show says it
    front = pareto_front(result.study)
    twins = [t.number for t in front if t.values == knee(result.study).values]
    offered = re.search(r"another point, trial (\d+)", text)
    assert offered is None or int(offered.group(1)) not in twins


def test_a_value_a_known_start_put_at_an_end_is_no_edge(tmp_path: Path) -> None:
    """The known start adamw-warmup-cosine trains beta2 0.999, the low end of adam-family's one_minus_beta2:
    as the best trial it made the report say better values may lie below, and the narrowed space widen it."""
    import tuner
    from tuner.report._analysis import narrow_space
    from tuner.study._describe import edge_notes

    def train(ctx: tuner.TrialContext) -> float:
        value = 0.9 if ctx.number == 1 else 0.5 + 0.01 * ctx.number  # 1: the known start adamw-warmup-cosine
        ctx.report(0, value)
        return value

    result = tuner.tune(train, space="adam-family", n_trials=6, epochs=1, known_starts=True, verbose=False,
                        storage=f"sqlite:///{tmp_path / 'q.db'}", study_name="q")
    best = result.best_trial
    assert best.number == 1 and best.params["adamw.one_minus_beta2"] == pytest.approx(0.001)
    assert not [n for n in edge_notes(result.study, 1) if "one_minus_beta2" in n]
    _, notes = narrow_space(result.study, result.study.user_attrs["tuner:space"], anchor=1)
    assert not [n for n in notes if "one_minus_beta2" in n and "widened" in n], notes
    # The same value drawn by the sampler is an edge.
    sampled = optuna.trial.create_trial(value=0.95, params=dict(best.params), distributions=dict(best.distributions),
                                        user_attrs=dict(best.user_attrs))
    result.study.add_trial(sampled)
    number = result.study.trials[-1].number
    assert [n for n in edge_notes(result.study, number) if n.startswith("adamw.one_minus_beta2 = 0.001 sits at the")]


def test_objectives_mistakes_name_the_spec_line_and_the_direction_key_is_explained(tmp_path: Path,
                                                                                  objective_ref: str) -> None:
    import tuner

    spec = tmp_path / "s.yaml"
    spec.write_text(f"objective: {objective_ref}\nn_trials: 2\nepochs: 1\n"
                    f"objectives: [accuracy, train_seconds, accuracy]\n")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    done = CliRunner().invoke(app, ["study", "create", str(spec), "--no-run", "--storage", storage])
    said = " ".join(done.output.split())
    assert done.exit_code != 0 and f"{spec}:4: key 'objectives': ['accuracy', 'train_seconds', 'accuracy'] names " \
        "the metric, 'accuracy', twice" in said, said
    # Given on the command line instead, the spec's line is not blamed.
    done = CliRunner().invoke(app, ["study", "create", str(spec), "--no-run", "--storage", storage, "--objectives",
                                    "train_seconds,accuracy"])
    said = " ".join(done.output.split())
    assert done.exit_code != 0 and "error: --objectives: the first must be" in said and f"{spec}:" not in said, said
    for key in ("direction", "directions"):
        spec.write_text(f"objective: {objective_ref}\n{key}: minimize\n")
        done = CliRunner().invoke(app, ["study", "create", str(spec), "--no-run", "--storage", storage])
        said = " ".join(done.output.split())
        assert f"{spec}:2: a study spec has no key {key!r}: a study's direction is its objective's metric's" in said
        assert "description" not in said
    spec.write_text(f"objective: {objective_ref}\nn_trials: 1\nepochs: 1\nobjectives: accuracy\n")
    done = CliRunner().invoke(app, ["study", "create", str(spec), "--no-run", "--storage", storage])
    assert done.exit_code == 0 and "objectives: the metric alone, 'accuracy': one objective" in " ".join(
        done.output.split()), done.output
    with pytest.raises(ConfigError, match="the metric is train_seconds itself"):
        tuner.tune(lambda ctx: 1.0, metric="train_seconds", objectives=["train_seconds", "train_seconds"])
    with pytest.raises(ConfigError) as refused:
        tuner.tune(lambda ctx: 1.0, metric="train_seconds", objectives=["value", "train_seconds"])
    assert "['train_seconds', 'train_seconds']" not in str(refused.value)
