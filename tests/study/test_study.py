"""Study specs, samplers and pruners, create/join/resume, failures and storage, on the synthetic objective."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

import tuner
from tuner.errors import ConfigError, StudyError, TunerError
from tuner.study import (
    StudySpec,
    counts,
    create_or_join,
    list_pruners,
    list_samplers,
    load_spec,
    open_study,
    prepare,
    run_trials,
    stored_spec,
)
from tuner.study._record import StudyKey

SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "grid": optuna.samplers.RandomSampler,  # the grid's points are enqueued trials
}
PRUNER_CLASSES = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "patient": optuna.pruners.PatientPruner,
    "top_third": optuna.pruners.PercentilePruner,
    "none": optuna.pruners.NopPruner,
}


@pytest.fixture
def make_spec(objective_ref: str, space_file: Path, storage_url: str):
    def make(**overrides) -> StudySpec:
        fields = {"name": "s", "objective": objective_ref, "space": str(space_file), "sampler": "random",
                  "pruner": "none", "n_trials": 3, "epochs": 2, "storage": storage_url, "device": "cpu",
                  "threads": 1}
        return StudySpec.from_mapping({**fields, **overrides}, "test")

    return make


def _create(spec: StudySpec) -> tuple[optuna.Study, object]:
    prepared = prepare(spec)
    return create_or_join(prepared), prepared


def _finished(study: optuna.Study) -> int:
    c = counts(study)
    return c["COMPLETE"] + c["PRUNED"]


# -- spec validation ----------------------------------------------------------------------------------

def test_unknown_spec_key_lists_valid_keys_with_file_and_line(tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nobjective: digits-mlp\nsampler: tpe\nn_trial: 3\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: Unknown study-spec key 'n_trial'. Valid: ")
    for key in ("objective", "space", "sampler", "pruner", "n_trials", "epochs", "storage"):
        assert key in message
    assert "Did you mean 'n_trials'?" in message


def test_bad_spec_value_points_at_its_line(tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\n\nepochs: -2\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: key 'epochs': .*greater than 0.*Got -2 instead"):
        load_spec(path)
    path.write_text("name: x\nn_trials: 0\n")  # the 0 of "greater than 0" is the bound, not the value given
    with pytest.raises(ConfigError, match=rf"^{path}:2: key 'n_trials': Input should be greater than 0\. Got 0 "
                                          rf"instead\.$"):
        load_spec(path)


@pytest.mark.parametrize("line, said", [
    ("warm_start: {study: a, storag: 'sqlite:///x.db'}",
     "key 'warm_start': Unknown warm_start key 'storag'. Valid: storage, study, top. Did you mean 'storage'?"),
    ("warm_start: {study: a, top: 0}",
     "key 'warm_start.top': Input should be greater than or equal to 1. Got 0 instead."),
    ("warm_start: {top: 2}", "key 'warm_start.study' is missing: name the earlier study"),
    ("warm_start: ''", "key 'warm_start.study': String should have at least 1 character. Got '' instead."),
    # Of another type: converted, `timeout: yes` was a study with a 1-second timeout and `seed: true` seed 1
    ("timeout: yes", "key 'timeout': Input should be a valid number. Got True instead."),  # YAML's yes
    ("seed: true", "key 'seed': Input should be a valid integer. Got True instead."),
    ("n_trials: '3'", "key 'n_trials': Input should be a valid integer. Got '3' instead."),
    ("epochs: 2.5", "key 'epochs': Input should be a valid integer. Got 2.5 instead."),
    ("calibrate: 1", "key 'calibrate': Input should be a valid boolean. Got 1 instead."),
    ("known_starts: 'off'", "key 'known_starts': Input should be a valid boolean. Got 'off' instead."),
    ("grace_period: true", "key 'grace_period': Input should be a valid number. Got True instead."),
])
def test_a_bad_spec_value_is_named_with_its_line_and_key_and_refused_by_run_study_too(tmp_path: Path, line: str,
                                                                                      said: str):
    path = tmp_path / "spec.yaml"
    path.write_text(f"objective: digits-mlp\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}:2: {said}"
    with pytest.raises(ConfigError, match="tuner.run_study\\(\\): key "):
        tuner.run_study(**yaml.safe_load(line), storage=f"sqlite:///{tmp_path / 'n.db'}")
    assert not (tmp_path / "n.db").exists()


def test_a_spec_takes_a_whole_number_of_seconds_as_a_timeout(tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\ntimeout: 60\n")
    assert load_spec(path).timeout == 60.0


def test_a_space_written_in_the_spec_is_checked_with_its_file_and_line(tmp_path: Path, storage_url: str):
    from typer.testing import CliRunner

    from tuner.cli import app
    from tuner.study._spec import check_inline_space

    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nobjective: digits-mlp\nspace:\n  optimizer:\n    adam:\n"
                    "      lr: {low: 0.1, high: 0.01}\n")
    with pytest.raises(ConfigError, match=rf"^{path}:6: key 'optimizer.adam.lr': 'low' must be less than 'high'"):
        check_inline_space(path)
    args = ["study", "create", str(path), "--storage", storage_url, "--no-run"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and f"{path}:6: key 'optimizer.adam.lr'" in refused.output, refused.output
    # --space replaces the spec's space: the one written there is not used, so it is not refused.
    replaced = CliRunner().invoke(app, [*args, "--space", "lr-only"])
    assert replaced.exit_code == 0, replaced.output
    path.write_text("name: x\nspace:\n  optimizer:\n    adam:\n      lr: {low: 0.01, high: 0.1}\n")
    check_inline_space(path)
    assert load_spec(path).space == {"optimizer": {"adam": {"lr": {"low": 0.01, "high": 0.1}}}}


@pytest.mark.parametrize("value", [0, -1])
def test_n_trials_must_be_positive(value: int):
    with pytest.raises(ConfigError, match="key 'n_trials'.*greater than 0"):
        StudySpec.from_mapping({"n_trials": value})
    with pytest.raises(ConfigError, match="^--n-trials: .*greater than 0"):
        StudySpec().with_overrides(n_trials=value)


def test_spec_must_be_a_mapping_and_names_are_checked(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys. It holds a list"):
        load_spec(path)
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"It holds nothing \(an empty file, or comments only\)"):
        load_spec(tmp_path / "empty.yaml")
    with pytest.raises(ConfigError, match="key 'name': must not be empty"):
        StudySpec.from_mapping({"name": "  "})
    with pytest.raises(ConfigError, match="needs a 'name' key"):
        StudySpec.from_mapping({"sampler": {"n_startup_trials": 3}})
    with pytest.raises(ConfigError, match=r"needs a 'name' key, e.g. \{name: median"):  # a pruner's example
        StudySpec.from_mapping({"pruner": {"n_warmup_steps": 3}})


def test_unknown_builtin_spec_name():
    with pytest.raises(ConfigError, match="Unknown study spec 'quikstart'.*Did you mean 'quickstart'"):
        load_spec("quikstart")
    assert load_spec("quickstart").study_name == "quickstart"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sampler", "tpee", "Unknown sampler 'tpee'. Valid: cmaes, gp, grid, nsgaii, qmc, random, tpe. Did you "
                            "mean 'tpe'?"),
        ("pruner", "medain", "Unknown pruner 'medain'. Valid: hyperband, median, none, patient, percentile, "
                             "successive_halving, top_third, wilcoxon. Did you mean 'median'?"),
    ],
)
def test_unknown_sampler_or_pruner(make_spec, db_path: Path, assert_nothing_written, field, value, expected):
    with pytest.raises(ConfigError) as info:
        _create(make_spec(**{field: value}))
    assert str(info.value) == f"test: key {field!r}: {expected}"  # the spec's source and key, then the choices
    assert_nothing_written(db_path)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("sampler", {"name": "tpe", "bogus": 1},
         "'tpe' sampler takes no option 'bogus'. Valid options: .*n_startup_trials"),
        ("sampler", {"name": "random", "seed": "x"},
         r"The 'seed' option of the 'random' sampler must be a whole number \(0 or more\) or null. Got 'x'"),
        # Values Optuna itself takes without a word: a negative count samples as 0, any text as "on".
        ("sampler", {"name": "tpe", "n_startup_trials": -3},
         r"'n_startup_trials' option of the 'tpe' sampler must be a whole number \(0 or more\)\. Got -3"),
        ("sampler", {"name": "tpe", "n_startup_trials": 2.5}, "must be a whole number"),
        ("sampler", {"name": "tpe", "n_ei_candidates": True}, "must be a whole number"),
        ("sampler", {"name": "tpe", "multivariate": "no"},
         "'multivariate' option of the 'tpe' sampler must be true, false or null. Got 'no'"),
        ("sampler", {"name": "qmc", "scramble": "yes"}, "must be true or false. Got 'yes'"),
        ("sampler", {"name": "gp", "n_startup_trials": -1}, "must be a whole number"),
        ("pruner", {"name": "hyperband", "reduction_factor": -1}, "must be a whole number"),
        ("pruner", {"name": "wilcoxon", "p_threshold": "0.1"}, "'p_threshold' option .* must be a number"),
        ("pruner", {"name": "successive_halving", "min_resource": 2.5},
         r"'min_resource' option of the 'successive_halving' pruner must be a whole number \(0 or more\) or "
         r"\"auto\"\. Got 2\.5"),  # the text Optuna takes is named, not "a text"
        ("sampler", {"name": "qmc", "scramble": None}, "must be true or false. Got null instead"),
        ("pruner", {"name": "patient", "min_delta": float("nan")}, "'min_delta' option .* must be a finite number"),
        ("sampler", {"name": "qmc", "qmc_type": "nope"}, "Invalid options for the 'qmc' sampler"),
        ("pruner", {"name": "percentile", "percentile": 150}, "Invalid options for the 'percentile' pruner"),
        ("pruner", {"name": "median", "n_warmup": 1}, "'median' pruner takes no option 'n_warmup'"),
        # Taken by Optuna, then a division by zero or a math domain error at the first report:
        ("pruner", {"name": "hyperband", "reduction_factor": 1},
         r"The 'reduction_factor' option of the 'hyperband' pruner must be 2 or more .*Got 1 instead"),
        ("pruner", {"name": "hyperband", "max_resource": 0},
         r"The 'max_resource' option of the 'hyperband' pruner must be 1 or more \(epochs\), or \"auto\""),
        ("pruner", {"name": "hyperband", "min_resource": 3, "max_resource": 2},
         r"The 'hyperband' pruner's min_resource \(3\) must be at most its max_resource \(2\)"),
        ("pruner", {"name": "hyperband", "min_resource": 5},  # max_resource: the study's 2 epochs
         r"pruner: the 'hyperband' pruner's min_resource \(5\) must be at most its max_resource \(2; by default"),
        # Every trial of the budget pruned: the first bootstrap_count trials at each rung are.
        ("pruner", {"name": "successive_halving", "bootstrap_count": 3},
         r"pruner: the 'successive_halving' pruner's bootstrap_count \(3\) prunes the first 3 trials to reach each "
         r"rung, and the study has 3: none could complete"),
    ],
)
def test_bad_sampler_and_pruner_options(make_spec, db_path: Path, assert_nothing_written, field, value, match):
    with pytest.raises(ConfigError, match=match):
        _create(make_spec(**{field: value}))
    assert_nothing_written(db_path)


@pytest.mark.parametrize("pruner, said", [
    ({"name": "median", "n_warmup_steps": 100}, "pruner median: it judges none of the 2 epochs (n_warmup_steps 100), "
                                                "so no trial is pruned"),
    ({"name": "percentile", "percentile": 50.0, "n_warmup_steps": 2},
     "pruner percentile: it judges none of the 2 epochs (n_warmup_steps 2)"),
    ({"name": "successive_halving", "min_resource": 4},
     "pruner successive_halving: its first rung would be at epoch 5, past the last of 2 (min_resource 4)"),
])
def test_a_pruner_that_judges_none_of_the_epochs_is_said_so(make_spec, pruner, said):
    prepared = prepare(make_spec(pruner=pruner))
    assert any(note.startswith(said) for note in prepared.space_notes), prepared.space_notes
    assert not any(n.startswith("pruner ") for n in prepare(make_spec(pruner="median")).space_notes)


def test_sampler_options_are_applied(make_spec):
    prepared = prepare(make_spec(sampler={"name": "tpe", "n_startup_trials": 2}, pruner={"name": "median",
                                                                                         "n_startup_trials": 1}))
    assert isinstance(prepared.sampler, optuna.samplers.TPESampler)
    assert prepared.sampler._n_startup_trials == 2
    assert prepared.pruner._n_startup_trials == 1
    # Values of the types an option allows besides its plain one: null, "auto", a whole number for a float.
    prepared = prepare(make_spec(sampler={"name": "cmaes", "popsize": None},
                                 pruner={"name": "hyperband", "max_resource": "auto"}))
    assert prepared.sampler._popsize is None
    assert prepared.pruner._max_resource == "auto"
    assert prepare(make_spec(pruner={"name": "percentile", "percentile": 25})).pruner._percentile == 25
    # NumPy's numbers and booleans are numbers and booleans (a library caller's values often are).
    import numpy as np

    prepared = prepare(make_spec(sampler={"name": "tpe", "n_startup_trials": np.int64(3), "multivariate": np.True_}))
    assert prepared.sampler._n_startup_trials == 3
    with pytest.raises(ConfigError, match="'min_delta' option .* must be a finite number"):
        prepare(make_spec(pruner={"name": "patient", "min_delta": np.float32("nan")}))
    # A whole-number float for a count is that count (YAML's 10.0); Optuna's own negative default is allowed.
    prepared = prepare(make_spec(sampler={"name": "cmaes", "n_startup_trials": 4.0, "inc_popsize": -1}))
    assert prepared.sampler._n_startup_trials == 4 and isinstance(prepared.sampler._n_startup_trials, int)


def test_a_study_with_numpy_options_is_stored_plain_and_continues(make_spec, storage_url: str):
    import numpy as np

    study, prepared = _create(make_spec(n_trials=1, sampler={"name": "tpe", "n_startup_trials": np.int64(3),
                                                            "multivariate": np.True_}))
    run_trials(study, prepared)
    assert study.user_attrs[StudyKey.SPEC]["sampler"] == {"name": "tpe", "n_startup_trials": 3, "multivariate": True}
    spec, space_data = stored_spec("s", storage_url)
    prepared = prepare(spec.with_overrides(n_trials=2), space_data=space_data)
    run_trials(create_or_join(prepared), prepared)
    assert len(stored_spec("s", storage_url)[0].sampler) == 3 and prepared.sampler._n_startup_trials == 3


def test_a_stored_spec_is_read_as_it_was_accepted_when_the_study_was_created(make_spec, storage_url: str):
    """Checks added since a study was created do not lock it out: an option value that passed then still runs."""
    study, prepared = _create(make_spec(n_trials=1))
    run_trials(study, prepared)
    stored = dict(study.user_attrs[StudyKey.SPEC])
    stored["sampler"] = {"name": "tpe", "n_startup_trials": -3, "multivariate": "no"}  # as an older tuner took
    study.set_user_attr(StudyKey.SPEC, stored)
    spec, space_data = stored_spec("s", storage_url)
    assert spec.sampler == {"name": "tpe", "n_startup_trials": -3, "multivariate": "no"}
    prepared = prepare(spec.with_overrides(n_trials=2), space_data=space_data)
    assert len(run_trials(create_or_join(prepared), prepared).outcomes) == 1
    with pytest.raises(ConfigError, match="must be a whole number"):  # given anew, the same value is refused
        spec.with_overrides(sampler={"name": "tpe", "n_startup_trials": -3})


# -- every sampler and pruner --------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", list(list_samplers()))
def test_every_sampler_runs_a_study(make_spec, sampler: str):
    assert set(list_samplers()) == set(SAMPLER_CLASSES)
    study, prepared = _create(make_spec(name=f"sampler-{sampler}", sampler=sampler, n_trials=3))
    assert isinstance(study.sampler, SAMPLER_CLASSES[sampler])
    summary = run_trials(study, prepared)
    assert [o.state for o in summary.outcomes] == ["COMPLETE"] * 3
    assert summary.stopped_by == "budget"
    trials = study.get_trials()
    assert len(trials) == 3
    for trial in trials:
        assert 0.0 <= trial.value <= 1.0
        config = trial.user_attrs["config"]
        assert config["optimizer"]["name"] in ("adam", "sgd")
        assert config["batch_size"] in (16, 32)
        assert config["epochs"] == 2
        assert len(trial.user_attrs["val_history"]) == 2
        assert trial.user_attrs["test_value"] is not None
    assert study.user_attrs[StudyKey.SPEC]["sampler"] == sampler


def test_grid_runs_each_point_once_and_stops_at_the_grid_size(make_spec):
    study, prepared = _create(make_spec(name="grid", sampler="grid", n_trials=1000))
    size = len(prepared.space.grid_points())
    assert prepared.spec.n_trials == size
    assert f"n_trials: 1000 asked, {size} run: the grid over space" in "\n".join(prepared.preparation_lines())
    summary = run_trials(study, prepared)
    assert len(summary.outcomes) == size and summary.stopped_by == "budget"
    params = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(set(params)) == size
    assert sorted(params) == sorted(tuple(sorted(p.items())) for p in prepared.space.grid_points())


@pytest.mark.parametrize("pruner", list(list_pruners()))
def test_every_pruner_runs_a_study(make_spec, pruner: str):
    assert set(list_pruners()) == set(PRUNER_CLASSES)
    study, prepared = _create(make_spec(name=f"pruner-{pruner}", pruner=pruner, n_trials=4, epochs=3))
    assert isinstance(study.pruner, PRUNER_CLASSES[pruner])
    summary = run_trials(study, prepared)
    assert len(summary.outcomes) == 4
    assert _finished(study) == 4
    for trial in study.get_trials():
        assert trial.state.name in ("COMPLETE", "PRUNED")
        reported = sorted(trial.intermediate_values)
        if trial.state.name == "PRUNED":
            assert reported == list(range(len(reported)))
            last = " (its last)" if len(reported) == 3 else ""
            assert trial.user_attrs["reason"].startswith(
                f"pruned by the {pruner} pruner after epoch {len(reported)}{last} (validation ")
        else:
            assert reported == [0, 1, 2]
    if pruner == "none":
        assert counts(study)["PRUNED"] == 0


def test_median_pruner_stops_a_hopeless_trial(make_spec, tmp_path: Path):
    space = tmp_path / "sgd.yaml"
    space.write_text("optimizer:\n  sgd:\n    lr: {low: 1.0e-6, high: 0.3, log: true}\nbatch_size: 16\n")
    spec = make_spec(space=str(space), n_trials=2, epochs=4,
                     pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    study, prepared = _create(spec)
    study.enqueue_trial({"sgd.lr": 0.3})
    study.enqueue_trial({"sgd.lr": 1.0e-6})  # learns nothing in 4 epochs
    summary = run_trials(study, prepared)
    assert [o.state for o in summary.outcomes] == ["COMPLETE", "PRUNED"]
    pruned = study.get_trials()[1]
    assert pruned.params == {"sgd.lr": 1.0e-6}
    assert pruned.user_attrs["reason"].startswith("pruned by the median pruner after epoch ")
    assert len(pruned.intermediate_values) < 4
    assert len(pruned.user_attrs["epoch_times"]) == len(pruned.intermediate_values)
    assert pruned.user_attrs["val_history"] == list(pruned.intermediate_values.values())


# -- create, join, resume -------------------------------------------------------------------------------

def test_existing_name_with_different_spec_is_refused_and_nothing_changes(make_spec, space_file: Path):
    study, prepared = _create(make_spec(n_trials=2))
    run_trials(study, prepared)
    before = open_study("s", make_spec().storage)
    attrs_before, n_before = dict(before.user_attrs), len(before.trials)
    assert n_before == 2

    other_space = space_file.parent / "other.yaml"
    other_space.write_text("optimizer: adam\nbatch_size: 16\n")
    for change, detail in [({"epochs": 3}, "epochs: 2 -> 3"), ({"seed": 5}, "seed: 0 -> 5"),
                           ({"sampler": "tpe"}, "sampler: 'random' -> 'tpe'"),
                           ({"space": str(other_space)}, "space tiny -> other: optimizer: [adam, sgd] -> fixed "
                                                          "'adam'; batch_size: [16, 32] -> fixed 16")]:
        with pytest.raises(StudyError) as info:
            _create(make_spec(**change))
        message = str(info.value)
        assert detail in message and "Nothing was changed" in message and "tuner study run s" in message
        after = open_study("s", make_spec().storage)
        assert len(after.trials) == n_before
        assert after.user_attrs == attrs_before
    assert len(optuna.get_all_study_names(make_spec().storage)) == 1


def test_same_spec_joins_and_budget_fields_may_change(make_spec):
    study, prepared = _create(make_spec(n_trials=2))
    run_trials(study, prepared)
    joined, _ = _create(make_spec(n_trials=5, device="cpu"))
    assert joined._study_id == study._study_id
    assert len(joined.trials) == 2
    assert len(optuna.get_all_study_names(make_spec().storage)) == 1


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resume_does_not_repeat_the_first_run_s_parameters(make_spec, storage_url: str, sampler: str):
    study, prepared = _create(make_spec(n_trials=3, sampler=sampler))
    run_trials(study, prepared)
    spec, space_data = stored_spec("s", storage_url)
    prepared = prepare(spec.with_overrides(n_trials=6), space_data=space_data)
    resumed = create_or_join(prepared)
    run_trials(resumed, prepared)
    lrs = [next(v for k, v in t.params.items() if k.endswith(".lr")) for t in resumed.get_trials()]
    assert len(lrs) == 6
    assert set(lrs[3:]).isdisjoint(lrs[:3])


def test_raised_budget_is_saved_for_later_runs(make_spec, storage_url: str):
    study, prepared = _create(make_spec(n_trials=2))
    run_trials(study, prepared)
    spec, space_data = stored_spec("s", storage_url)
    prepared = prepare(spec.with_overrides(n_trials=3), space_data=space_data)
    run_trials(create_or_join(prepared), prepared)
    spec, _ = stored_spec("s", storage_url)
    assert spec.n_trials == 3


def test_interrupt_while_sampling_leaves_no_running_trial(make_spec, monkeypatch):
    from tuner.spaces import SearchSpace

    study, prepared = _create(make_spec(n_trials=3))
    original = SearchSpace.sample
    calls = []

    def sample(self, trial, **kwargs):
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, trial, **kwargs)

    monkeypatch.setattr(SearchSpace, "sample", sample)
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, prepared)
    states = [(t.number, t.state.name, t.user_attrs.get("reason")) for t in study.get_trials()]
    assert states == [(0, "COMPLETE", None), (1, "FAIL", "interrupted")]


@pytest.mark.parametrize("pack", [1, 4])
def test_interrupt_inside_ask_leaves_no_running_trial(make_spec, monkeypatch, pack: int):
    """Ctrl-C that lands inside ``study.ask()``, once its trial exists but before it is anybody's, fails that
    trial as interrupted instead of leaving it running for the reaper to call lost."""
    import signal

    study, prepared = _create(make_spec(n_trials=8, pack=pack))
    original = optuna.Study.ask
    asked = []

    def ask(self, *args, **kwargs):
        trial = original(self, *args, **kwargs)
        if self.study_name != study.study_name:  # the pack-size probe's own in-memory study
            return trial
        asked.append(trial.number)
        if len(asked) == 2:
            signal.raise_signal(signal.SIGINT)  # Python runs the handler at once, still inside ask
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_trials(study, prepared)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after the hold
    finally:
        signal.signal(signal.SIGINT, previous)
    states = {t.number: (t.state.name, t.user_attrs.get("reason")) for t in study.get_trials()}
    assert "RUNNING" not in {state for state, _ in states.values()}, states
    assert states[asked[1]] == ("FAIL", "interrupted"), states


def test_signals_held_take_effect_at_the_end_in_order_and_a_repeat_at_once():
    import signal

    from tuner.study._engine import interrupts_held

    got: list[str] = []

    def on_term(signum, frame):
        got.append("term")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, on_term)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGINT)
                got.append("body done")  # neither has taken effect yet
        assert got == ["body done", "term"]  # then both, in the order they came
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is on_term
        got.clear()
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                signal.raise_signal(signal.SIGINT)
                got.append("first held")
                signal.raise_signal(signal.SIGINT)  # a second Ctrl-C: now
                got.append("not reached")
        assert got == ["first held"]
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_failing_sampler_is_a_clear_error_and_leaves_no_running_trial(make_spec):
    study, prepared = _create(make_spec(n_trials=3, sampler={"name": "tpe", "n_startup_trials": 1,
                                                             "n_ei_candidates": 0}))
    with pytest.raises(StudyError, match="'tpe' sampler could not propose a trial .*check its options"):
        run_trials(study, prepared)
    assert counts(study)["RUNNING"] == 0


def test_study_not_created_by_tuner_is_refused(make_spec, storage_url: str):
    optuna.create_study(study_name="s", storage=storage_url)
    with pytest.raises(StudyError, match="plain Optuna study, not created by tuner"):
        _create(make_spec())
    with pytest.raises(StudyError, match="no tuner spec.*cannot run it"):
        stored_spec("s", storage_url)


def test_resumed_study_runs_only_the_missing_trials(make_spec, storage_url: str):
    study, prepared = _create(make_spec(n_trials=2))
    first = run_trials(study, prepared)
    assert len(first.outcomes) == 2

    # `tuner study run s --n-trials 5`: the spec and space come from the storage
    spec, space_data = stored_spec("s", storage_url)
    assert spec.epochs == 2 and spec.sampler == "random" and spec.n_trials == 2
    assert space_data["optimizer"]["adam"]["lr"] == {"low": 1.0e-3, "high": 3.0e-2, "log": True}
    prepared = prepare(spec.with_overrides(n_trials=5), space_data=space_data)
    resumed = create_or_join(prepared)
    second = run_trials(resumed, prepared)
    assert len(second.outcomes) == 3
    assert [o.number for o in second.outcomes] == [2, 3, 4]
    assert _finished(resumed) == 5

    # complete: running it again runs nothing
    third = run_trials(resumed, prepared)
    assert third.outcomes == []
    assert len(open_study("s", storage_url).trials) == 5


def test_trials_use_distinct_seeds_and_the_study_seed(make_spec):
    study, prepared = _create(make_spec(n_trials=3, seed=4))
    run_trials(study, prepared)
    seeds = [t.user_attrs["config"]["seed"] for t in study.get_trials()]
    assert len(set(seeds)) == 3
    assert seeds[0] == 4 * 1_000_003 % 2**31


# -- failures --------------------------------------------------------------------------------------------

def _flaky_objective(tmp_path: Path, fail_first: int) -> str:
    """An objective whose ``build_model`` raises on ``fail_first`` calls after the first (the first one is
    the check ``prepare`` makes before a study exists)."""
    path = tmp_path / f"flaky_{fail_first}.py"
    path.write_text(textwrap.dedent(
        f"""
        from torch import nn
        from tuner.objectives import Objective, from_arrays
        import numpy as np

        _calls = [0]

        def load_data():
            rng = np.random.default_rng(0)
            x = rng.normal(size=(60, 4))
            y = (x[:, 0] > 0).astype(int)
            return from_arrays(x[:40], y[:40], x[40:], y[40:], n_classes=2)

        def build_model(data):
            _calls[0] += 1
            if 2 <= _calls[0] <= {fail_first} + 1:
                raise RuntimeError(f"boom {{_calls[0]}}")
            return nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.0))

        objective = Objective("flaky", load_data=load_data, build_model=build_model)
        """
    ))
    return f"{path}:objective"


def test_failing_trial_is_recorded_and_the_study_continues(make_spec, tmp_path: Path):
    spec = make_spec(objective=_flaky_objective(tmp_path, fail_first=1), n_trials=2)
    study, prepared = _create(spec)
    summary = run_trials(study, prepared)
    assert [o.state for o in summary.outcomes] == ["FAIL", "COMPLETE", "COMPLETE"]
    failed = study.get_trials()[0]
    assert failed.state.name == "FAIL"
    # The reason names the line of the user's code that raised (the objective file's build_model).
    assert re.fullmatch(r"RuntimeError: boom 2 \(at .*flaky_1\.py:\d+ in build_model\)", failed.user_attrs["reason"])
    assert failed.user_attrs["error_at"].endswith(" in build_model")
    assert "boom 2" in failed.user_attrs["traceback"]
    assert counts(study) == {**counts(study), "COMPLETE": 2, "FAIL": 1, "RUNNING": 0}


def test_model_that_does_not_fit_its_data_is_refused_before_the_study_exists(make_spec, tmp_path, db_path):
    path = tmp_path / "misfit.py"
    path.write_text(textwrap.dedent(
        """
        import numpy as np
        from torch import nn
        from tuner.objectives import Objective, from_arrays

        def load_data():
            x = np.random.default_rng(0).normal(size=(60, 4))
            return from_arrays(x[:40], (x[:40, 0] > 0).astype(int), x[40:], (x[40:, 0] > 0).astype(int), n_classes=2)

        objective = Objective("misfit", load_data=load_data, build_model=lambda d: nn.Linear(7, 2))
        """
    ))
    with pytest.raises(ConfigError, match="model of objective 'misfit' does not fit its data: RuntimeError"):
        prepare(make_spec(objective=f"{path}:objective"))
    assert not db_path.exists()


def test_a_metric_that_does_not_fit_the_model_is_refused_before_the_study_exists(make_spec, tmp_path, db_path):
    path = tmp_path / "wrongmetric.py"
    path.write_text(textwrap.dedent(
        """
        import numpy as np
        from torch import nn
        from tuner.objectives import Objective, from_arrays

        def load_data():
            x = np.random.default_rng(0).normal(size=(60, 4))
            y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
            return from_arrays(x[:40], y[:40], x[40:], y[40:], n_classes=3)

        objective = Objective("wrongmetric", load_data=load_data, build_model=lambda d: nn.Linear(4, 3),
                              metric="mse")
        """
    ))
    with pytest.raises(ConfigError, match="The metric 'mse' of objective 'wrongmetric' does not fit its model's "
                                          r"output \(shape \(2, 3\)\).*Classification takes 'accuracy'"):
        prepare(make_spec(objective=f"{path}:objective"))
    assert not db_path.exists()


@pytest.mark.parametrize("targets, n_classes, loss, why", [
    ("x.sum(1)", "None", "None", r"its data has no classes \(n_classes=None and real-valued targets: "
                                 r"regression\)"),
    # one logit and a binary loss: a model that trains, scored by an argmax that is always 0
    ("(x[:, 0] > 0).astype(int)", "2", "lambda o, y: nn.functional.binary_cross_entropy_with_logits(o[:, 0], "
                                        "y.float())", r"its model gives 1 output\(s\) per sample, not one per class"),
])
def test_accuracy_on_data_without_classes_is_refused_before_a_study_exists(make_spec, tmp_path: Path, db_path: Path,
                                                                           targets: str, n_classes: str,
                                                                           loss: str, why: str):
    """The default metric, accuracy, on regression targets or a one-output model: argmax over one column is
    always 0, so every trial would complete at one score."""
    path = tmp_path / "acc.py"
    path.write_text(textwrap.dedent(
        f"""
        import numpy as np
        from torch import nn
        from tuner.objectives import Objective, from_arrays

        def load_data():
            x = np.random.default_rng(0).normal(size=(60, 4))
            y = {targets}
            return from_arrays(x[:40], y[:40], x[40:], y[40:], n_classes={n_classes})

        objective = Objective("acc", load_data=load_data, build_model=lambda d: nn.Linear(4, 1), loss={loss})
        """
    ))
    with pytest.raises(ConfigError, match=f"Objective 'acc': the metric 'accuracy' scores class labels, but {why}"):
        prepare(make_spec(objective=f"{path}:objective"))
    assert not db_path.exists()


def test_class_labels_are_checked_where_data_is_made():
    from tuner.errors import DataError
    from tuner.objectives import Dataset, from_arrays

    x = np.zeros((4, 2))
    with pytest.raises(DataError, match=r"n_classes=3 says the targets are class labels, but they hold fractions "
                                        r"\(such as 0.5\)"):
        from_arrays(x, [0.5, 1.0, 2.0, 0.0], x, [0, 1, 2, 0], n_classes=3)
    from_arrays(x, [0.0, 1.0, 2.0, 0.0], x, [0, 1, 2, 0], n_classes=3)  # whole floats are labels
    xt = torch.zeros(4, 2)
    with pytest.raises(DataError, match="validation split's class labels run from 0 to 3, outside 0 to 2"):
        Dataset(xt, torch.tensor([0, 1, 2, 0]), xt, torch.tensor([0, 1, 3, 0]), n_classes=3)
    with pytest.raises(DataError, match="train split's targets are float32, but n_classes=3"):
        Dataset(xt, torch.zeros(4), xt, torch.zeros(4, dtype=torch.long), n_classes=3)
    with pytest.raises(DataError, match="n_classes must be an int of at least 2"):
        Dataset(xt, torch.zeros(4, dtype=torch.long), xt, torch.zeros(4, dtype=torch.long), n_classes=1)


def test_a_model_without_dropout_layers_keeps_its_own_rates_and_the_study_says_so(make_spec, tmp_path: Path,
                                                                                 objective_ref: str):
    """A space that tunes dropout, on a model with no nn.Dropout: the rate would act on nothing, a dimension of
    noise for the sampler, the importance and the export."""
    path, space = tmp_path / "plain.py", tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(
        """
        from torch import nn
        from tuner.objectives import Objective
        from synthetic_objective import load_data

        objective = Objective("plain", load_data=load_data, build_model=lambda d: nn.Linear(d.n_features, 3))
        """
    ))
    space.write_text("optimizer:\n  adam:\n    lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
                     "regularization:\n  dropout: {low: 0.0, high: 0.3}\n")
    import sys

    sys.path.insert(0, str(Path(objective_ref.split(":")[0]).parent))
    try:
        prepared = prepare(make_spec(objective=f"{path}:objective", space=str(space)))
        kept = prepare(make_spec(space=str(space)))  # the synthetic objective's model has nn.Dropout
    finally:
        sys.path.remove(str(Path(objective_ref.split(":")[0]).parent))
    assert "dropout" not in prepared.space.distributions()
    assert ("regularization.dropout is not searched: the model of objective 'plain' has no nn.Dropout layer to apply "
            "it to (add nn.Dropout where it should act to tune it)") in prepared.preparation_lines()
    assert "dropout" in kept.space.distributions()
    assert not any("dropout" in line for line in kept.preparation_lines())


def test_a_study_made_with_the_dropout_rate_is_joined_as_it_was_made(tmp_path: Path, objective_ref: str,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """A study whose stored space searches dropout on a model without dropout layers (made before the rate was
    left out) is joined by its own spec, not refused as a different one."""
    import sys

    import tuner
    from tuner.spaces import SearchSpace

    path, space, url = tmp_path / "plain.py", tmp_path / "space.yaml", f"sqlite:///{tmp_path / 'old.db'}"
    path.write_text("from torch import nn\nfrom tuner.objectives import Objective\n"
                    "from synthetic_objective import load_data\n\n"
                    "objective = Objective('plain', load_data=load_data, build_model=lambda d: nn.Linear("
                    "d.n_features, 3))\n")
    space.write_text("optimizer:\n  adam:\n    lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
                     "regularization:\n  dropout: {low: 0.0, high: 0.3}\nbatch_size: 16\n")
    monkeypatch.syspath_prepend(str(Path(objective_ref.split(":")[0]).parent))
    spec = {"objective": f"{path}:objective", "space": str(space), "epochs": 1, "sampler": "random",
            "storage": url, "name": "old", "device": "cpu", "pack": 1, "verbose": False}
    with monkeypatch.context() as old:
        old.setattr(SearchSpace, "without_dropout", lambda self, why: (self, ""))
        tuner.run_study(n_trials=1, **spec)
    again = tuner.run_study(n_trials=2, **spec)
    assert len(again.study.trials) == 2 and "dropout" in again.prepared.space.distributions()
    assert sys.modules.get("synthetic_objective") is not None


def test_a_study_uses_its_objectives_pruner_unless_the_spec_names_one(tmp_path: Path, space_file: Path):
    from tuner.objectives import load_objective

    path = tmp_path / "noisy.py"
    path.write_text(textwrap.dedent(
        """
        import numpy as np
        from torch import nn
        from tuner.objectives import Objective, from_arrays

        def load_data():
            x = np.random.default_rng(0).normal(size=(60, 4)).astype("float32")
            y = (x[:, 0] > 0).astype(int)
            return from_arrays(x[:40], y[:40], x[40:], y[40:], n_classes=2)

        objective = Objective("noisy", load_data=load_data, build_model=lambda d: nn.Linear(4, 2), pruner="patient")
        """
    ))
    (tmp_path / "bad.py").write_text(textwrap.dedent(
        """
        from torch import nn
        from tuner.objectives import Objective

        bad = Objective("bad", load_data=lambda: None, build_model=lambda d: nn.Linear(4, 2), pruner="nope")
        """
    ))

    def spec(**fields) -> StudySpec:
        return StudySpec.from_mapping({"name": "s", "objective": f"{path}:objective", "space": str(space_file),
                                       "storage": f"sqlite:///{tmp_path / 's.db'}", "n_trials": 2, "epochs": 2,
                                       **fields}, "test")

    prepared = prepare(spec())
    assert prepared.spec.pruner == "patient" and isinstance(prepared.pruner, optuna.pruners.PatientPruner)
    study = create_or_join(prepared)
    assert stored_spec("s", f"sqlite:///{tmp_path / 's.db'}")[0].pruner == "patient"
    assert create_or_join(prepare(spec())).study_name == study.study_name  # the same spec: it joins
    assert prepare(spec(pruner="median", name="t")).spec.pruner == "median"  # the spec's own wins
    with pytest.raises(ConfigError, match=r"bad.py:\d+: Objective 'bad': Unknown pruner 'nope'. Valid: hyperband"):
        prepare(spec(objective=f"{tmp_path / 'bad.py'}:bad", name="u"))
    # Built in: the MLP on MNIST-1D, whose validation accuracy is noisy, prunes patiently; the others by median.
    assert load_objective("mnist1d-mlp").pruner == "patient"
    assert load_objective("digits-mlp").pruner is None and load_objective("mnist1d-cnn").pruner is None


def test_consecutive_failures_stop_the_study(make_spec, tmp_path: Path):
    spec = make_spec(objective=_flaky_objective(tmp_path, fail_first=100), n_trials=5)
    study, prepared = _create(spec)
    seen: list[str] = []
    with pytest.raises(StudyError, match="stopped after 3 consecutive failed trials.*RuntimeError: boom 4"):
        run_trials(study, prepared, max_consecutive_failures=3, on_trial=lambda o, s: seen.append(o.state))
    assert seen == ["FAIL"] * 3
    c = counts(study)
    assert (c["FAIL"], c["COMPLETE"], c["RUNNING"]) == (3, 0, 0)


def test_timeouts_duplicates_and_discarded_trials_leave_the_failures_in_a_row_as_they_were():
    from types import SimpleNamespace

    from tuner.study._engine import RunSummary, TrialOutcome, record_outcome
    from tuner.study._record import StopKind, StopReason

    plan, study = SimpleNamespace(max_consecutive_failures=3, started=None), SimpleNamespace(study_name="s")

    def outcome(state: str, kind: StopKind | None = None) -> TrialOutcome:
        return TrialOutcome(0, state, None, None, StopReason(kind, str(kind)) if kind else None, 0.0, None)

    consecutive, summary = 0, RunSummary()
    for o in (outcome("FAIL", StopKind.ERROR), outcome("FAIL", StopKind.DUPLICATE), outcome("FAIL", StopKind.ERROR),
              outcome("FAIL", StopKind.DISCARDED), outcome("FAIL", StopKind.TIMEOUT)):
        consecutive = record_outcome(study, plan, summary, o, consecutive, None)
    assert consecutive == 2  # the three in between neither counted nor reset it
    with pytest.raises(StudyError, match="stopped after 3 consecutive failed trials"):
        record_outcome(study, plan, summary, outcome("FAIL", StopKind.ERROR), consecutive, None)
    assert record_outcome(study, plan, summary, outcome("PRUNED", StopKind.PRUNED), 2, None) == 0


# -- storage ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["journal:{dir}/studies.journal", "{dir}/studies.journal"])
def test_journal_storage(make_spec, tmp_path: Path, form: str):
    url = form.format(dir=tmp_path)
    journal = tmp_path / "studies.journal"
    assert not journal.exists()
    study, prepared = _create(make_spec(storage=url, n_trials=3))
    run_trials(study, prepared)
    assert journal.is_file() and journal.stat().st_size > 0
    reopened = open_study("s", url)
    assert _finished(reopened) == 3
    spec, _ = stored_spec("s", url)
    assert spec.epochs == 2
    raw = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert optuna.get_all_study_names(raw) == ["s"]


def test_opening_a_missing_storage_creates_nothing(tmp_path: Path):
    db = tmp_path / "absent.db"
    for url in (f"sqlite:///{db}", f"journal:{tmp_path / 'absent.journal'}"):
        with pytest.raises(StudyError, match="does not exist yet"):
            open_study("s", url)
        with pytest.raises(StudyError, match="does not exist yet"):
            stored_spec("s", url)
    assert list(tmp_path.iterdir()) == []


def test_unknown_study_name_lists_names(make_spec, storage_url: str):
    _create(make_spec(name="alpha"))
    with pytest.raises(StudyError, match="Unknown study 'alpah'. Valid: alpha. Did you mean 'alpha'"):
        open_study("alpah", storage_url)


def test_default_storage_is_tuner_db_in_the_working_directory(tmp_cwd: Path, make_spec):
    study, prepared = _create(make_spec(storage=None, n_trials=1))
    assert prepared.storage_url == "sqlite:///tuner.db"
    run_trials(study, prepared)
    assert (tmp_cwd / "tuner.db").is_file()


def _csv_with_columns(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30)))
    return path


@pytest.mark.parametrize(
    "case",
    ["sampler", "pruner", "sampler_option", "optimizer_in_space", "space_file", "objective", "device",
     "csv_target", "batch_size", "storage_scheme"],
)
def test_bad_input_writes_nothing(case: str, make_spec, tmp_path: Path, db_path: Path, assert_nothing_written):
    space = tmp_path / "space.yaml"
    if case == "optimizer_in_space":
        space.write_text("optimizer:\n  adamx:\n    lr: 0.01\n")
    elif case == "batch_size":
        space.write_text("optimizer: adam\nbatch_size: 1024\n")
    overrides = {
        "sampler": {"sampler": "nope"},
        "pruner": {"pruner": "nope"},
        "sampler_option": {"sampler": {"name": "gp", "n_startup": 3}},
        "optimizer_in_space": {"space": str(space)},
        "space_file": {"space": str(tmp_path / "missing.yaml")},
        "objective": {"objective": "mnist2d-cnn"},
        "device": {"device": "tpu"},
        "csv_target": {"objective": "tabular", "data": str(_csv_with_columns(tmp_path)), "target": "y"},
        "batch_size": {"space": str(space)},
        "storage_scheme": {"storage": "redis://localhost/0"},
    }[case]
    with pytest.raises(TunerError):
        _create(make_spec(**overrides))
    assert_nothing_written(db_path)
    assert not db_path.exists()


def test_spec_stores_local_files_by_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "obj.py").write_text("objective = None\n")
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    spec = StudySpec(objective="obj.py:objective", data="d.csv", target="b")
    assert spec.objective == f"{tmp_path.resolve()}/obj.py:objective"
    assert spec.data == str((tmp_path / "d.csv").resolve())
    assert StudySpec(objective="mnist1d-cnn").objective == "mnist1d-cnn"


def test_threads_pinned_by_the_spec_are_used(make_spec):
    import torch

    study, prepared = _create(make_spec(n_trials=1, threads=1))
    summary = run_trials(study, prepared)
    assert summary.threads == 1 and torch.get_num_threads() == 1
    study, prepared = _create(make_spec(name="auto", n_trials=1, threads=None))
    assert run_trials(study, prepared).threads in (1, max(1, (__import__("os").cpu_count() or 1)))


def test_epochs_default_to_the_objectives_own(make_spec, tmp_path: Path, objective_file: Path, storage_url: str):
    """A spec without ``epochs`` trains each trial for the objective's ``epochs`` (else 20); the resolved
    number is stored, so resuming with the same spec joins the study."""
    module = tmp_path / "long_objective.py"
    module.write_text(objective_file.read_text().replace(
        'description="Gaussian clusters, 200 samples, 3 classes")',
        'description="Gaussian clusters, 200 samples, 3 classes", epochs=3)'))
    spec = make_spec(objective=f"{module}:objective", epochs=None, n_trials=2)
    study, prepared = _create(spec)
    assert prepared.spec.epochs == 3
    run_trials(study, prepared)
    assert [len(t.intermediate_values) for t in study.trials] == [3, 3]
    assert stored_spec("s", storage_url)[0].epochs == 3
    _create(spec)  # same spec again: joins, no identity conflict
    assert prepare(make_spec(epochs=None)).spec.epochs == 20
    assert prepare(make_spec(objective=f"{module}:objective", epochs=5, name="t")).spec.epochs == 5


def test_objective_epochs_must_be_positive(objective_file: Path, tmp_path: Path):
    from tuner.objectives import load_objective

    module = tmp_path / "bad_epochs.py"
    module.write_text(objective_file.read_text().replace('3 classes")', '3 classes", epochs=0)'))
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        load_objective(f"{module}:objective")


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_a_trial_is_found_by_its_number_and_a_missing_one_is_named(tmp_path: Path, backend: str):
    """``export --trial N`` reads trial N alone; a number that is not there (a journal storage would read -1 as
    the last trial) is refused with the trials there are."""
    from tuner.study._record import Key, trial_with_config

    storage = (f"sqlite:///{tmp_path / 'a.db'}" if backend == "sqlite" else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "a.journal"))))
    study = optuna.create_study(study_name="s", storage=storage)
    for i in range(3):
        trial = study.ask()
        if i < 2:  # the third trial holds no config
            trial.set_user_attr(Key.CONFIG, {"optimizer": "adam"})
        study.tell(trial, 0.5)
    assert trial_with_config(study, 1).number == 1
    for number in (-1, 2, 9):
        with pytest.raises(StudyError,
                           match=rf"^Study 's' has no trial {number} with a config \(trials 0..1 hold one\)\.$"):
            trial_with_config(study, number)


def test_the_failures_in_a_row_of_a_run_are_its_own_across_workers():
    """Counted over every process of the run (the trials they finished since it began), but not the trials a
    crashed earlier run left behind (reaped as worker lost, or started before this run)."""
    import datetime

    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial, TrialState

    from tuner.study._engine import _failures_in_a_row

    study = optuna.create_study()
    since = datetime.datetime(2026, 1, 1, 12, 0, 0)

    def add(minute: int, kind: str | None, started: int | None = None) -> None:
        start = since + datetime.timedelta(minutes=minute if started is None else started)
        study.add_trial(FrozenTrial(
            number=0, state=TrialState.FAIL if kind else TrialState.COMPLETE, value=None if kind else 0.5,
            datetime_start=start, datetime_complete=since + datetime.timedelta(minutes=minute, seconds=30),
            params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"reason_kind": kind} if kind else {}, system_attrs={}, intermediate_values={},
            trial_id=0))

    add(-5, "error")  # before the run
    add(1, "worker lost", started=-3)  # reaped: a trial of the run before
    add(2, "error")
    add(3, "worker lost")  # another worker of this run died: not train_fn's failure
    add(4, "error")
    assert _failures_in_a_row(study, since) == 2
    add(5, None)
    assert _failures_in_a_row(study, since) == 0


def test_export_of_a_trial_in_a_study_whose_trials_are_all_queued_says_why_none_has_a_config() -> None:
    from tuner.errors import StudyError
    from tuner.study._record import trial_with_config

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    with pytest.raises(StudyError, match=r"no trial 0 with a config \(no trial holds one yet: queued trials get "
                                         r"theirs when they start\)\.$"):
        trial_with_config(study, 0)


def test_export_of_a_queued_trial_says_it_is_queued() -> None:
    from tuner.errors import StudyError
    from tuner.study._record import Key, trial_with_config

    study = optuna.create_study()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(Key.CONFIG, {"optimizer": {"name": "adam", "lr": 1e-3}})
    study.tell(trial, 0.5)
    study.enqueue_trial({"x": 0.5})
    with pytest.raises(StudyError, match=r"no trial 1 with a config \(it is queued, and gets its config when it "
                                         r"starts; trials 0..0 hold one\)\.$"):
        trial_with_config(study, 1)
