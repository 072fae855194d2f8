"""A new study's first trials: queued config files, an earlier study's best configs, known-good points."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

import tuner
from tuner.cli import app
from tuner.config import TrainConfig
from tuner.errors import ConfigError, StudyError
from tuner.spaces import list_spaces, load_space
from tuner.study import StudySpec, create_or_join, prepare
from tuner.study._starts import KNOWN_STARTS, known_starts

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("name", list(list_spaces()))
def test_params_for_inverts_sample_on_every_builtin_space(name: str) -> None:
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(150):
        trial = study.ask()
        config = space.sample(trial, epochs=2)
        fit = space.params_for(config)
        assert fit.exact, (fit.problems, fit.changes)
        assert fit.params.keys() == trial.params.keys()
        for key, value in trial.params.items():
            assert fit.params[key] == pytest.approx(value, rel=1e-9) if isinstance(value, float) else \
                fit.params[key] == value
        study.tell(trial, 0.0)


def test_params_for_normalises_the_rate_of_a_scaled_space() -> None:
    space = load_space({"optimizer": {"nesterov": {"lr": {"low": 1e-3, "high": 1.0, "log": True}}},
                        "batch_size": {"choices": [32, 128]}, "lr_scaling": {"rule": "linear", "reference_batch": 32}})
    config = TrainConfig.from_dict({"optimizer": {"name": "nesterov", "lr": 0.4}, "batch_size": 128})
    assert space.params_for(config).params["nesterov.lr"] == pytest.approx(0.1)


def test_params_for_clips_snaps_and_says_what_changed_or_what_stops_it() -> None:
    space = load_space("default")
    config = TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 0.5, "betas": [0.9, 0.99]},
                                    "schedule": {"name": "linear", "warmup_fraction": 0.05}, "batch_size": 100,
                                    "regularization": {"weight_decay": 0.01, "dropout": 0.1}})
    fit = space.params_for(config)
    assert not fit.problems
    assert fit.params["adamw.lr"] == 0.03 and fit.params["batch_size"] == 128
    assert fit.params["adamw.one_minus_beta1"] == pytest.approx(0.1)
    assert any(c.startswith("adamw.lr: 0.5 -> 0.03 (the space's range is") for c in fit.changes)
    assert "batch_size: 100 -> 128 (the nearest choice)" in fit.changes
    assert "adamw.beta2: 0.99 -> 0.999 (fixed by the space)" in fit.changes
    lbfgs = TrainConfig.from_dict({"optimizer": {"name": "lbfgs"}, "schedule": "step"})
    assert space.params_for(lbfgs).problems == ["optimizer 'lbfgs' is not in the space (adamw, adam, nesterov, "
                                                "rmsprop)", "schedule 'step' is not in the space (warmup_cosine, "
                                                "linear)"]


def test_known_starts_are_the_points_a_space_holds() -> None:
    assert [s.source for s in known_starts(load_space("default"))] == [
        "known start adamw-warmup-cosine", "known start nesterov-warmup-cosine"]
    assert len(known_starts(load_space("full"))) == len(KNOWN_STARTS)
    assert known_starts(load_space("lr-only")) == []  # constant schedule: no point fits


def _spec(objective_ref: str, storage_url: str, **fields) -> StudySpec:
    return StudySpec(**{"name": "s", "objective": objective_ref, "space": "default", "n_trials": 3, "epochs": 1,
                        "storage": storage_url, "device": "cpu", "sampler": "random", **fields})


def _run(study: optuna.Study, prepared) -> None:
    from tuner.study._local import run_prepared

    run_prepared(study, prepared)


def test_a_new_study_trains_the_known_starts_first_and_records_where_they_came_from(objective_ref: str,
                                                                                      storage_url: str) -> None:
    prepared = prepare(_spec(objective_ref, storage_url))
    study = create_or_join(prepared)
    assert [s.source for s in prepared.queued] == ["known start adamw-warmup-cosine",
                                                   "known start nesterov-warmup-cosine"]
    _run(study, prepared)
    first, second, third = sorted(study.trials, key=lambda t: t.number)
    config = TrainConfig.from_dict(first.user_attrs["config"])
    assert (config.optimizer.name, config.optimizer.lr, tuple(config.optimizer.params["betas"])) == \
        ("adamw", pytest.approx(1e-3), (pytest.approx(0.9), 0.999))
    assert config.regularization.weight_decay == pytest.approx(0.01)
    assert (config.schedule.name, config.schedule.params["warmup_fraction"]) == ("warmup_cosine", 0.05)
    assert first.user_attrs["start"] == "known start adamw-warmup-cosine"
    nesterov = TrainConfig.from_dict(second.user_attrs["config"])
    assert (nesterov.optimizer.name, nesterov.optimizer.lr) == ("nesterov", pytest.approx(0.1))
    assert "start" not in third.user_attrs  # the sampler's own
    # Joining the study again queues nothing more.
    again = prepare(_spec(objective_ref, storage_url, n_trials=4))
    create_or_join(again)
    assert again.queued == []
    off = prepare(_spec(objective_ref, storage_url, name="off", known_starts=False))
    create_or_join(off)
    assert off.queued == []


def test_enqueued_files_come_first_exactly_as_exported(objective_ref: str, storage_url: str, tmp_path: Path) -> None:
    exported = TrainConfig.from_dict({"optimizer": {"name": "rmsprop", "lr": 2e-3},
                                      "schedule": {"name": "linear", "warmup_fraction": 0.02}, "batch_size": 64,
                                      "regularization": {"weight_decay": 1e-5, "dropout": 0.2}, "epochs": 9})
    one = exported.save(tmp_path / "best.yaml", study="x", trial=3)  # with its metadata, as export writes
    many = tmp_path / "many.yaml"
    many.write_text(yaml.safe_dump({"configs": [
        {"optimizer": {"name": "adam", "lr": 5e-3}, "schedule": "warmup_cosine"},
        {"optimizer": {"name": "adam", "lr": 5e-3}, "schedule": "warmup_cosine"},  # the same: queued once
    ]}))
    prepared = prepare(_spec(objective_ref, storage_url, enqueue=[str(one), str(many)], known_starts=False,
                             n_trials=4))
    study = create_or_join(prepared)
    assert [s.source for s in prepared.queued] == [str(one), f"{many} item 1"]
    assert f"{many} item 2: the same config as {many} item 1, queued once" in prepared.start_notes
    _run(study, prepared)
    first = TrainConfig.from_dict(sorted(study.trials, key=lambda t: t.number)[0].user_attrs["config"])
    assert first.optimizer == exported.optimizer and first.schedule == exported.schedule
    assert first.batch_size == 64 and first.regularization == exported.regularization
    assert first.epochs == 1  # the study's epochs, not the file's


def test_a_config_the_space_cannot_sample_is_refused_before_the_study_exists(objective_ref: str, storage_url: str,
                                                                              db_path: Path, tmp_path: Path,
                                                                              assert_nothing_written) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"optimizer": {"name": "adam"}, "schedule": "warmup_cosine"},
                                   {"optimizer": {"name": "lbfgs"}}]))
    with pytest.raises(ConfigError, match=r"enqueue: .*bad\.yaml item 2: the space 'default' cannot sample this "
                                          r"config: optimizer 'lbfgs' is not in the space"):
        prepare(_spec(objective_ref, storage_url, enqueue=[str(bad)]))
    with pytest.raises(ConfigError, match="no such file"):
        prepare(_spec(objective_ref, storage_url, enqueue=[str(tmp_path / "missing.yaml")]))
    typo = tmp_path / "typo.yaml"
    typo.write_text("batch_size: 64\noptimizer:\n  name: adamw\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml:4: optimizer: .*'lrr'"):  # the line, as a spec's errors
        prepare(_spec(objective_ref, storage_url, enqueue=[str(typo)]))
    beside = tmp_path / "beside.yaml"  # keys beside 'configs:' would be used by nothing
    beside.write_text("configs: [{optimizer: {name: adamw}}]\nepochs: 5\n")
    with pytest.raises(ConfigError, match=r"beside\.yaml: key 'epochs': a file with 'configs:' holds that list only"):
        prepare(_spec(objective_ref, storage_url, enqueue=[str(beside)]))
    empty = tmp_path / "empty.yaml"
    empty.write_text("[]\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: expected a train config .* Got an empty list instead"):
        prepare(_spec(objective_ref, storage_url, enqueue=[str(empty)]))
    script = tmp_path / "best.py"  # what `study export --format python` writes: refused as such, not as bad YAML
    script.write_text("import torch\n\nCONFIG = {}\n")
    with pytest.raises(ConfigError, match=r"best\.py: is a Python script .* a train config is a \.yaml or \.json"):
        prepare(_spec(objective_ref, storage_url, enqueue=[str(script)]))
    assert_nothing_written(db_path)


def test_a_warm_start_queues_the_best_distinct_configs_another_space_holds(objective_ref: str, storage_url: str,
                                                                           space_file: Path) -> None:
    # The earlier study: the tiny space (adam, sgd; constant schedule) on the same data.
    earlier = prepare(_spec(objective_ref, storage_url, name="earlier", space=str(space_file), n_trials=12))
    study = create_or_join(earlier)
    _run(study, earlier)
    ranked = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    adam_best = [t for t in ranked if t.params.get("optimizer") == "adam"]
    # The new study: the lr-only space (adam at batch 64, its only parameter adam.lr) holds the adam configs
    # of the earlier study, not the sgd ones; a learning rate outside its range is clipped.
    later = prepare(_spec(objective_ref, storage_url, name="later", space="lr-only", warm_start="earlier",
                          known_starts=False))
    create_or_join(later)
    sources = [s.source for s in later.queued]
    assert sources and all(s.startswith("study 'earlier' trial ") for s in sources)
    assert len(sources) <= 3  # n_trials
    lrs = [s.params["adam.lr"] for s in later.queued]
    best_lr = TrainConfig.from_dict(adam_best[0].user_attrs["config"]).optimizer.lr
    assert lrs[0] == pytest.approx(min(max(best_lr, 1e-5), 1e-1))
    assert len(set(lrs)) == len(lrs)
    with pytest.raises(ConfigError, match="Unknown study 'nope'"):
        prepare(_spec(objective_ref, storage_url, name="x", warm_start="nope"))
    empty = prepare(_spec(objective_ref, storage_url, name="empty", n_trials=1))
    create_or_join(empty)
    with pytest.raises(ConfigError, match="has no complete trial"):
        prepare(_spec(objective_ref, storage_url, name="y", warm_start={"study": "empty", "top": 2}))


def test_study_create_flags_and_spaces_starts(objective_ref: str, storage_url: str, tmp_cwd: Path) -> None:
    runner = CliRunner()
    TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 4e-3}, "schedule": "linear"}).save("c.yaml")
    result = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--n-trials", "3", "--epochs",
                                 "1", "--storage", storage_url, "--device", "cpu", "--name", "f", "--enqueue",
                                 "c.yaml", "--no-known-starts"])
    assert result.exit_code == 0, result.output
    assert "first trials (1 queued):" in result.output and "c.yaml" in result.output
    assert "known start" not in result.output
    shown = runner.invoke(app, ["spaces", "starts", "default"])
    flat = " ".join(shown.output.split())  # the listing wraps its last column at the terminal's width
    assert "adamw-warmup-cosine" in flat and "space default: 2 of 3 are tried first" in flat
    assert "not held: optimizer 'nadamw' is not in the space" in flat  # why a point is not tried
    (tmp_cwd / "high.yaml").write_text("optimizer:\n  adamw:\n    lr: {low: 1.0e-2, high: 1.0e-1, log: true}\n"
                                        "schedule: {warmup_cosine: {}}\n")
    high = runner.invoke(app, ["spaces", "starts", "high.yaml", "--format", "json"])
    rows = {r["name"]: r for r in json.loads(high.output)["starts"]}
    assert "adamw.lr: 0.001 -> 0.01 (the space's range is 0.01..0.1)" in rows["adamw-warmup-cosine"]["why_not"]
    # A held point that a value the space fixes changes says what it becomes there, as `study create` does.
    (tmp_cwd / "nodecay.yaml").write_text("optimizer:\n  adamw:\n    lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"
                                           "schedule: {warmup_cosine: {}}\n")
    fixed = runner.invoke(app, ["spaces", "starts", "nodecay.yaml"])
    assert "in this space: weight_decay: 0.01 -> 0 (fixed by the space)" in " ".join(fixed.output.split()), \
        fixed.output


def test_run_study_queues_mappings_and_train_configs_as_tune_does(objective_ref: str, tmp_path: Path) -> None:
    """run_study's enqueue takes what tune's does (file paths, mappings, TrainConfigs), one item or a list."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = tuner.run_study(objective=objective_ref, space="lr-only", n_trials=2, epochs=1, storage=url, name="q",
                             known_starts=False, verbose=False,
                             enqueue=[{"optimizer": {"name": "adam", "lr": 3e-3}},
                                      TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 5e-3}})])
    assert [t.params["adam.lr"] for t in result.study.trials] == [pytest.approx(3e-3), pytest.approx(5e-3)]
    with pytest.raises(ConfigError, match="enqueue: config 1: the space 'lr-only' cannot sample"):
        tuner.run_study(objective=objective_ref, space="lr-only", n_trials=2, epochs=1, storage=url, name="r",
                        enqueue={"optimizer": "sgd"}, verbose=False)
    assert "r" not in optuna.get_all_study_names(url)


def test_tune_queues_configs_and_refuses_what_its_space_cannot_sample(tmp_path: Path) -> None:
    seen = []

    def train(ctx: tuner.TrialContext) -> float:
        seen.append((ctx.config.optimizer.name, ctx.config.optimizer.lr))
        ctx.report(0, 0.5)
        return 0.5

    config = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 3e-3}})
    tuner.tune(train, space="lr-only", n_trials=3, epochs=1, enqueue=[config], verbose=False)
    assert seen[0] == ("adam", pytest.approx(3e-3))
    seen.clear()
    tuner.tune(train, space="default", n_trials=3, epochs=1, verbose=False)
    assert [name for name, _ in seen[:2]] == ["adamw", "nesterov"]  # the known starts of the default space
    assert math.isclose(seen[1][1], 0.1)
    with pytest.raises(ConfigError, match="cannot sample"):
        tuner.tune(train, space="lr-only", n_trials=3, enqueue=[{"optimizer": "sgd"}], verbose=False,
                   storage=f"sqlite:///{tmp_path / 't.db'}")
    assert not (tmp_path / "t.db").exists()


def test_starts_beyond_the_budget_are_named_not_dropped_in_silence(objective_ref: str, storage_url: str,
                                                                 tmp_path: Path) -> None:
    files = []
    for i, lr in enumerate((1e-3, 2e-3, 3e-3)):
        files.append(str(TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": lr},
                                                "schedule": "linear"}).save(tmp_path / f"c{i}.yaml")))
    prepared = prepare(_spec(objective_ref, storage_url, enqueue=files, n_trials=2))
    create_or_join(prepared)
    assert [s.source for s in prepared.queued] == files[:2]
    (note,) = [n for n in prepared.start_notes if "not queued" in n]
    assert note.startswith("first trials: 3 not queued, beyond the budget of 2 trial(s): ") and files[2] in note \
        and "known start adamw-warmup-cosine" in note
    again = prepare(_spec(objective_ref, storage_url, enqueue=[*files, files[0]], n_trials=2))
    create_or_join(again)  # joined: nothing is queued, so nothing was left out or queued once
    assert again.queued == [] and not [n for n in again.start_notes if n.startswith("first trials")
                                       or "queued once" in n]


def test_joining_a_study_says_its_enqueue_and_warm_start_are_not_queued(objective_ref: str, storage_url: str,
                                                                       tmp_path: Path) -> None:
    create_or_join(prepare(_spec(objective_ref, storage_url)))
    path = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-3}, "schedule": "linear"}).save(
        tmp_path / "c.yaml")
    again = prepare(_spec(objective_ref, storage_url, enqueue=[str(path)]))
    create_or_join(again)
    assert again.queued == []
    assert any(n.startswith("--enqueue: not queued, the study exists and they apply to a new one; `tuner study "
                            "enqueue s FILE.yaml") for n in again.start_notes), again.start_notes


def test_a_warm_start_that_brings_a_known_start_again_does_not_train_it_twice(objective_ref: str,
                                                                             storage_url: str) -> None:
    """The earlier study trained the known starts with batch sizes its sampler drew; the new study's known
    starts (batch size left to the sampler) are the same configs, and are not queued again. (Of a study of two
    trials, the better one is warm-started: never its worse half.)"""
    earlier = prepare(_spec(objective_ref, storage_url, name="earlier", n_trials=2))
    _run(create_or_join(earlier), earlier)
    later = prepare(_spec(objective_ref, storage_url, name="later", warm_start="earlier", n_trials=6))
    create_or_join(later)
    sources = [s.source.split(" (")[0] for s in later.queued]
    warmed = [s for s in sources if s.startswith("study 'earlier' trial ")]
    assert len(warmed) == 1 and len(sources) == 2 and sources[1].startswith("known start "), sources
    said = [n for n in later.start_notes if "queued once" in n]
    assert len(said) == 1 and said[0].startswith("known start ") and f": the same config as {warmed[0]}" in said[0]
    assert any("from the better half of its 2 complete trials only (the best 1): 1 config of the worse half "
               "left out" in n for n in later.start_notes), later.start_notes


def test_study_enqueue_refuses_a_grid_study_and_points_a_tune_study_to_tune(objective_ref: str, storage_url: str,
                                                                           tmp_path: Path) -> None:
    from tuner.study._manage import enqueue_files

    path = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-3}}).save(tmp_path / "c.yaml")
    linear = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-3}, "schedule": "linear"}).save(
        tmp_path / "l.yaml")
    grid = prepare(_spec(objective_ref, storage_url, name="g", space="lr-only", sampler="grid"))
    create_or_join(grid)
    with pytest.raises(StudyError, match="samples a grid.*Nothing was queued"):
        enqueue_files("g", [path], storage_url)
    assert not [t for t in optuna.load_study(study_name="g", storage=storage_url).trials
                if t.user_attrs.get("start")]

    def train(ctx: tuner.TrialContext) -> float:
        ctx.report(0, 0.5)
        return 0.5

    tuner.tune(train, space="lr-only", n_trials=1, epochs=1, storage=storage_url, study_name="t", verbose=False)
    starts, follow, notes = enqueue_files("t", [path], storage_url)
    assert len(starts) == 1 and "tuner.tune(..., study_name='t')" in follow and notes == []
    made = prepare(_spec(objective_ref, storage_url, name="m"))
    create_or_join(made)
    _, follow, _ = enqueue_files("m", [linear], storage_url)
    assert follow.startswith("`tuner study run m --storage ")
    # The same config again (waiting in the study already), or twice in one call: queued once, and said.
    again, _, notes = enqueue_files("m", [linear, linear], storage_url)
    assert again == [] and len(notes) == 2 and all(f"{linear}: not queued, the same config as trial" in n
                                                   for n in notes), notes
    trained = optuna.load_study(study_name="t", storage=storage_url).trials[0]
    done = TrainConfig.from_dict(trained.user_attrs["config"]).save(tmp_path / "done.yaml")
    none, _, notes = enqueue_files("t", [done], storage_url)  # trial 0's config: trained already
    assert none == [] and notes == [f"{done}: not queued, the same config as trial 0 (complete)"]
    other = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 2e-3}}).save(tmp_path / "o.yaml")
    twice, _, notes = enqueue_files("t", [other, other], storage_url)
    assert len(twice) == 1 and notes == [f"{other}: the same config as {other}, queued once"]
    with pytest.raises(ConfigError, match="the space 'default' cannot sample this config"):
        enqueue_files("m", [path], storage_url)
    with pytest.raises(ConfigError, match=f"enqueue: {tmp_path}: is a folder; give a config file in it"):
        enqueue_files("m", [tmp_path], storage_url)


def test_flags_switch_a_specs_known_starts_and_calibrate_either_way(objective_ref: str, storage_url: str,
                                                                   tmp_cwd: Path) -> None:
    Path("s.yaml").write_text(f"objective: {objective_ref}\nknown_starts: false\ncalibrate: true\nn_trials: 3\n"
                              f"epochs: 1\ndevice: cpu\n")
    runner = CliRunner()
    result = runner.invoke(app, ["study", "create", "s.yaml", "--known-starts", "--no-calibrate", "--no-run",
                                 "--storage", storage_url, "--name", "k"])
    assert result.exit_code == 0, result.output
    assert "known start adamw-warmup-cosine" in result.output and "LR range test" not in result.output
    spec = optuna.load_study(study_name="k", storage=storage_url).user_attrs["tuner:spec"]
    assert spec["known_starts"] is True and spec["calibrate"] is False


def test_tune_takes_a_warm_start_mapping_as_a_spec_file_does(tmp_path: Path) -> None:
    def train(ctx: tuner.TrialContext) -> float:
        value = 1.0 - abs(ctx.config.optimizer.lr - 3e-3)
        ctx.report(0, value)
        return value

    other = f"sqlite:///{tmp_path / 'other.db'}"
    tuner.tune(train, space="lr-only", n_trials=4, epochs=1, storage=other, study_name="before", verbose=False)
    result = tuner.tune(train, space="lr-only", n_trials=3, epochs=1, verbose=False, known_starts=False,
                        warm_start={"study": "before", "storage": other, "top": 2})
    sources = [t.user_attrs.get("start", "") for t in sorted(result.study.trials, key=lambda t: t.number)]
    assert all(s.startswith("study 'before' trial ") for s in sources[:2]), sources  # its top 2
    assert sources[2] == ""
    with pytest.raises(ConfigError, match="Unknown warm_start key 'stor'.*Did you mean 'storage'"):
        tuner.tune(train, space="lr-only", n_trials=1, epochs=1, verbose=False,
                   warm_start={"study": "before", "stor": other})
    with pytest.raises(ConfigError, match="warm_start must be a study name, a mapping .* Got int instead"):
        tuner.tune(train, space="lr-only", n_trials=1, epochs=1, verbose=False, warm_start=5)


def test_json_output_of_create_holds_the_first_trials_and_their_notes(objective_ref: str, storage_url: str,
                                                                      tmp_cwd: Path) -> None:
    import json

    runner = CliRunner()
    made = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--n-trials", "1", "--epochs", "1",
                               "--storage", storage_url, "--device", "cpu", "--name", "j", "--no-run",
                               "--format", "json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)["created"]
    assert [q["source"] for q in created["queued"]] == ["known start adamw-warmup-cosine"]
    assert created["start_notes"] == ["first trials: 1 not queued, beyond the budget of 1 trial(s): known start "
                                      "nesterov-warmup-cosine"]
    ran = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--n-trials", "1", "--epochs", "1",
                              "--storage", storage_url, "--device", "cpu", "--name", "k", "--format", "json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["run"]["start_notes"] == created["start_notes"]


def test_a_warm_start_from_a_plain_optuna_study_says_its_trials_hold_no_config(storage_url: str) -> None:
    from tuner.study._starts import gather_starts

    plain = optuna.create_study(study_name="plain", storage=storage_url)
    for x in (1.0, 2.0):
        plain.add_trial(optuna.trial.create_trial(value=x, params={"x": x},
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 3)}))
    starts, notes = gather_starts(load_space("default"), enqueue=[], warm_start="plain", warm_storage=storage_url,
                                  known=False)
    assert starts == [] and notes == ["warm start: no complete trial of study 'plain' fits this space (2 of its 2 "
                                      "complete trials hold no tuner config (the study was not made by tuner))"]
    with pytest.raises(ConfigError, match=r"^warm_start: .*'nope'"):
        gather_starts(load_space("default"), enqueue=[], warm_start="nope", warm_storage=storage_url, known=False)


def test_a_partial_config_leaves_what_it_does_not_give_to_the_sampler(tmp_path: Path) -> None:
    """A file that gives only an optimizer is not filled with TrainConfig's defaults (a constant schedule the
    space lacks, batch size 64, no weight decay): the sampler draws the rest, as for the known-good points.
    An exported config gives every part, and a TrainConfig is whole."""
    from tuner.study._starts import file_starts

    partial = tmp_path / "partial.yaml"
    partial.write_text("optimizer: {name: adamw, lr: 2.0e-3}\nregularization: {dropout: 0.1}\n")
    (start,) = file_starts([str(partial)], load_space("default"))
    assert start.changes == []
    # The optimizer as given, its other hyperparameters at their defaults (beta1 0.9); no schedule, batch size
    # or weight decay.
    assert set(start.params) == {"optimizer", "adamw.lr", "adamw.one_minus_beta1", "dropout"}
    whole = TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 2e-3}, "schedule": "linear"})
    (start,) = file_starts([whole], load_space("default"))
    assert {"schedule", "batch_size", "adamw.weight_decay"} <= set(start.params)
    with pytest.raises(ConfigError, match="schedule 'constant' is not in the space"):
        file_starts([TrainConfig.from_dict({"optimizer": {"name": "adamw"}})], load_space("default"))
    # A config without an optimizer leaves it to the sampler (not TrainConfig's default, adam, which the space
    # may lack), with its settings; a weight decay given goes where the space tunes it outside the optimizers.
    no_optimizer = tmp_path / "schedule.yaml"
    no_optimizer.write_text("schedule: {name: warmup_cosine, warmup_fraction: 0.02}\nbatch_size: 128\n")
    (start,) = file_starts([str(no_optimizer)], load_space("sgd-family"))
    assert start.params == {"schedule": "warmup_cosine", "warmup_cosine.warmup_fraction": 0.02, "batch_size": 128}
    (start,) = file_starts([{"regularization": {"weight_decay": 1e-3}}], load_space("sgd-family"))
    assert start.params == {"weight_decay": 1e-3}
    # Where the space tunes weight decay with each optimizer, it is left to the sampler, and said so (it is not
    # a value the space fixes).
    (start,) = file_starts([{"regularization": {"weight_decay": 1e-3}}], load_space("default"))
    assert start.params == {} and start.changes == [
        "weight_decay 0.001 is left to the sampler: the space tunes it with each optimizer (give the optimizer too "
        "to queue it)"]


def test_joining_a_study_does_not_look_for_its_warm_start_again(objective_ref: str, storage_url: str) -> None:
    """A study created with a warm start is joined by the same command later, when the earlier study may be
    gone: nothing is queued when joining, so nothing is looked up (it was refused as an unknown study)."""
    earlier = prepare(_spec(objective_ref, storage_url, name="earlier", n_trials=2))
    _run(create_or_join(earlier), earlier)
    spec = _spec(objective_ref, storage_url, name="later", warm_start="earlier", known_starts=False)
    made = prepare(spec)
    create_or_join(made)
    assert made.queued
    optuna.delete_study(study_name="earlier", storage=storage_url)
    from tuner.study._inputs import check_inputs

    check_inputs(spec)
    again = prepare(spec)
    create_or_join(again)
    assert again.queued == [] and any(n.startswith("--warm-start: not queued, the study exists")
                                      for n in again.start_notes), again.start_notes
    # The way to bring the other study's best config in, as commands that take it (study enqueue takes files).
    (note,) = [n for n in again.start_notes if n.startswith("--warm-start")]
    assert "for the best config of study 'earlier': `tuner study export earlier --no-confirm -o best.yaml " \
           "--storage " in note
    assert "`tuner study enqueue later best.yaml --storage" in note


def test_a_known_start_that_calibration_leaves_out_is_said_where_the_study_is_created() -> None:
    """An LR range test that moves a range past a known-good point's rate drops that point: `study create
    --calibrate` says so, with why, as `tuner spaces starts` on the calibrated space does."""
    from tuner.spaces import SearchSpace
    from tuner.study._prepare import _dropped_by_calibration

    space = load_space("default")
    raw = copy.deepcopy(space.raw)
    raw["optimizer"]["adamw"]["lr"] = {"low": 0.0011, "high": 0.077, "log": True}
    calibrated = SearchSpace.from_dict(raw, name="default (calibrated)")
    assert _dropped_by_calibration(space, calibrated) == [
        "known start adamw-warmup-cosine is not tried: in the calibrated space, adamw.lr: 0.001 -> 0.0011 (the "
        "space's range is 0.0011..0.077)"]
    assert _dropped_by_calibration(space, space) == []


def test_a_queued_config_that_gives_other_epochs_is_told_it_trains_the_studys(objective_ref: str, storage_url: str,
                                                                             tmp_cwd: Path) -> None:
    """Every trial of a study trains its epochs: a config file giving 50 is queued at the study's 2, and the
    first-trials line says so (from the command, tune() and `study enqueue` alike)."""
    import json

    import tuner

    (tmp_cwd / "long.yaml").write_text("optimizer: {name: adam, lr: 0.003}\nepochs: 50\n")
    (tmp_cwd / "same.yaml").write_text("optimizer: {name: adam, lr: 0.004}\nepochs: 2\n")
    runner = CliRunner()
    made = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--n-trials", "3", "--epochs", "2",
                               "--storage", storage_url, "--device", "cpu", "--name", "e", "--no-run",
                               "--no-known-starts", "--enqueue", "long.yaml", "--enqueue", "same.yaml",
                               "--format", "json"])
    assert made.exit_code == 0, made.output
    queued = {q["source"]: q["changes"] for q in json.loads(made.stdout)["created"]["queued"]}
    said = "epochs: 50 -> 2 (every trial of the study trains its epochs)"
    assert said in queued[str(tmp_cwd / "long.yaml")] and not any("epochs" in c for c in queued[str(tmp_cwd /
                                                                                                   "same.yaml")])
    (tmp_cwd / "more.yaml").write_text("optimizer: {name: adam, lr: 0.005}\nepochs: 9\n")
    enqueued = runner.invoke(app, ["study", "enqueue", "e", "more.yaml", "--storage", storage_url])
    assert enqueued.exit_code == 0 and "epochs: 9 -> 2" in enqueued.output, enqueued.output

    def train(ctx: tuner.TrialContext) -> float:
        ctx.report(0, 0.5)
        return 0.5

    result = tuner.tune(train, space="lr-only", n_trials=1, epochs=1, known_starts=False, verbose=False,
                        enqueue=[{"optimizer": {"name": "adam", "lr": 0.003}, "epochs": 7}])
    (trial,) = result.study.trials
    assert trial.user_attrs["config"]["epochs"] == 1
    from tuner.study._starts import file_starts

    (start,) = file_starts([{"optimizer": {"name": "adam", "lr": 0.003}, "epochs": 7}], load_space("lr-only"), 1)
    assert "epochs: 7 -> 1 (every trial of the study trains its epochs)" in start.changes


def _drawn(study: optuna.Study) -> list[float]:
    """The learning rates the sampler drew (not queued) in a study of the lr-only space, in trial order."""
    trials = sorted(study.trials, key=lambda t: t.number)
    return [t.params["adam.lr"] for t in trials if "start" not in t.user_attrs and "retry_of" not in t.user_attrs]


@pytest.mark.parametrize("how", ["command", "tune"])
def test_a_warm_started_study_does_not_draw_the_earlier_study_s_configs_again(how: str, objective_ref: str,
                                                                             storage_url: str) -> None:
    """The earlier study drew its configs with the same space and seed. A sampler seeded as it was would
    propose them again, in the same order, right after the warm starts that already brought the best ones."""
    if how == "command":
        earlier = prepare(_spec(objective_ref, storage_url, name="earlier", space="lr-only", n_trials=4,
                                known_starts=False))
        study = create_or_join(earlier)
        _run(study, earlier)
        later = prepare(_spec(objective_ref, storage_url, name="later", space="lr-only", n_trials=6,
                              known_starts=False, warm_start={"study": "earlier", "top": 2}))
        again = create_or_join(later)
        _run(again, later)
    else:
        def train(ctx: tuner.TrialContext) -> float:
            ctx.report(0, -abs(ctx.config.optimizer.lr - 3e-3))
            return -abs(ctx.config.optimizer.lr - 3e-3)

        common = {"space": "lr-only", "epochs": 1, "storage": storage_url, "verbose": False, "known_starts": False,
                  "sampler": "random"}
        study = tuner.tune(train, n_trials=4, study_name="earlier", **common).study
        again = tuner.tune(train, n_trials=6, study_name="later", warm_start={"study": "earlier", "top": 2},
                           **common).study
    before, drawn = _drawn(study), _drawn(again)
    assert len(before) == 4 and len(drawn) == 4, (before, drawn)
    assert not set(drawn) & set(before), (before, drawn)


def test_params_for_says_which_settings_of_a_config_the_space_does_not_tune() -> None:
    """A queued config trains the space's branch: settings the branch neither tunes nor fixes train at their
    defaults, so each one the config sets otherwise is said, as a clipped or fixed value is."""
    space = load_space("default")
    config = TrainConfig.from_dict({"optimizer": {"name": "rmsprop", "lr": 1e-3, "momentum": 0.9, "alpha": 0.99},
                                    "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.1,
                                                 "min_lr_ratio": 0.1}})
    fit = space.params_for(config, parts=("optimizer", "schedule"))
    assert not fit.problems
    assert fit.changes == ["rmsprop.momentum: 0.9 -> 0 (the space does not tune it: a trial trains rmsprop's "
                           "default)",
                           "warmup_cosine.min_lr_ratio: 0.1 -> 0 (the space does not tune it: a trial trains "
                           "warmup_cosine's default)"]  # alpha 0.99 is rmsprop's default: nothing lost
    adamw = TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 1e-3, "amsgrad": True, "betas": [0.8, 0.999]}})
    changes = space.params_for(adamw, parts=("optimizer",)).changes
    assert changes == ["adamw.amsgrad: True -> not set (the space does not tune it: a trial trains adamw's "
                       "default)"]  # beta1 is tuned, beta2 is the space's


def test_study_create_prints_an_enqueued_setting_the_space_does_not_tune(objective_ref: str, storage_url: str,
                                                                          tmp_cwd: Path) -> None:
    (tmp_cwd / "r.yaml").write_text("optimizer: {name: rmsprop, lr: 1.0e-3, momentum: 0.9}\n")
    made = CliRunner().invoke(app, ["study", "create", "--objective", objective_ref, "--n-trials", "2", "--storage",
                                    storage_url, "--name", "q", "--enqueue", "r.yaml", "--no-run"])
    assert made.exit_code == 0, made.output
    assert "rmsprop.momentum: 0.9 -> 0 (the space does not tune it" in " ".join(made.output.split())
