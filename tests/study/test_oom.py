"""A batch size that ran out of memory on a device is not trained there again; the study goes on."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.errors import StudyError
from tuner.study import StudySpec, create_or_join, prepare
from tuner.study._engine import oom_limits
from tuner.study._local import run_prepared
from tuner.study._record import Key, StudyKey

# The synthetic data, with a model that runs out of memory in training at 64 samples a batch or more (as a
# model too large for the device does; torch raises the same error).
HUNGRY = textwrap.dedent(
    '''
    import torch
    from torch import nn
    from sklearn.datasets import make_classification
    from tuner.objectives import Objective, from_arrays, split_arrays


    def load_data():
        x, y = make_classification(n_samples=300, n_features=8, n_classes=2, random_state=0)
        x_rest, y_rest, x_test, y_test = split_arrays(x, y, 0.2, stratify=True)
        x_train, y_train, x_val, y_val = split_arrays(x_rest, y_rest, 0.2, stratify=True)
        return from_arrays(x_train, y_train, x_val, y_val, x_test, y_test, n_classes=2)


    class Hungry(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

        def forward(self, x):
            if self.training and x.shape[0] >= 64:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.net(x)


    objective = Objective("hungry", load_data=load_data, build_model=lambda data: Hungry(), metric="accuracy")
    '''
)


@pytest.fixture
def hungry(tmp_path: Path) -> str:
    path = tmp_path / "hungry.py"
    path.write_text(HUNGRY)
    return f"{path}:objective"


def _hungry_study(name: str, hungry: str, storage_url: str, tmp_path: Path, batches: list[int], n_trials: int = 10,
                  epochs: int = 2, pruner: str = "none", on_oom: str = "avoid", sampler: str = "random",
                  pack: int | str = "auto"):
    """A study of the memory-hungry objective over Adam and the given batch sizes (random sampler)."""
    space = tmp_path / "s.yaml"
    space.write_text("optimizer: {adam: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}}\n"
                     f"batch_size: {{choices: {batches}}}\n")
    spec = StudySpec(name=name, objective=hungry, space=str(space), n_trials=n_trials, epochs=epochs,
                     storage=storage_url, device="cpu", sampler=sampler, pruner=pruner, known_starts=False,
                     on_oom=on_oom, pack=pack)
    prepared = prepare(spec)
    return create_or_join(prepared), prepared


def test_after_an_oom_at_batch_b_no_batch_of_b_or_more_trains_on_that_device(hungry: str, storage_url: str,
                                                                              tmp_path: Path) -> None:
    study, prepared = _hungry_study("oom", hungry, storage_url, tmp_path, [16, 32, 64, 128])
    run_prepared(study, prepared)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ran_out = [t for t in trials if t.user_attrs.get(Key.OOM)]
    assert ran_out, "no trial drew a batch of 64 or more"
    first = ran_out[0]
    b = first.user_attrs[Key.CONFIG]["batch_size"]
    assert f"batch sizes of {b} or more are not trained on cpu from now on" in first.user_attrs[Key.REASON]
    later = [t for t in trials if t.number > first.number]
    for t in later:
        if t.user_attrs[Key.CONFIG]["batch_size"] >= b:
            assert t.state == TrialState.FAIL and t.user_attrs.get(Key.OOM_AVOIDED) is True
            assert t.user_attrs[Key.REASON].startswith("out of memory avoided: batch size ")
            assert not t.user_attrs.get(Key.VAL_HISTORY)  # not trained
        else:
            assert t.state == TrialState.COMPLETE
    assert oom_limits(study)["cpu"]["batch_size"] <= b
    # The budget counts trials that trained: ten finished ones besides those that ran out of memory.
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 10


@pytest.mark.parametrize("pack", [1, 4])
def test_every_trial_of_a_run_has_its_line_the_proposals_set_aside_untrained_too(hungry: str, storage_url: str,
                                                                                 tmp_path: Path, pack: int) -> None:
    """A pool of workers gave an avoided proposal its trial line (its supervisor reads every finished trial
    back); one process, one trial at a time or in packs, gave it none, and did not count it as run."""
    study, prepared = _hungry_study("lines", hungry, storage_url, tmp_path, [16, 32, 64, 128], pack=pack)
    lines: dict[int, str] = {}
    summary = run_prepared(study, prepared, on_trial=lambda o, s: lines.setdefault(o.number, str(o.reason)))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert sorted(lines) == [t.number for t in trials] == sorted(o.number for o in summary.outcomes)
    avoided = [t.number for t in trials if t.user_attrs.get(Key.OOM_AVOIDED)]
    assert avoided, "no proposal was set aside"
    assert all(lines[n].startswith("out of memory avoided: batch size ") for n in avoided), lines


def test_an_avoided_proposal_trains_at_the_largest_batch_below_the_limit_and_tpe_meets_its_budget(
        hungry: str, storage_url: str, tmp_path: Path) -> None:
    """TPE never learns from a proposal that was not trained, and leans towards batch sizes no trial finished
    at: asked again, it proposed batches over the limit until the study stopped short of its budget. The
    proposal is queued again at the largest batch size below the limit and trains next."""
    study, prepared = _hungry_study("tpe", hungry, storage_url, tmp_path, [16, 32, 64, 128, 256], n_trials=20,
                                    epochs=1, sampler="tpe")
    run_prepared(study, prepared)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 20
    avoided = [t for t in trials if t.user_attrs.get(Key.OOM_AVOIDED)]
    assert avoided, "TPE proposed no batch size over the limit"
    retries = {t.user_attrs.get(Key.RETRY_OF): t for t in trials}
    for t in avoided:
        found = re.search(r"where batch size (\d+) ran out of memory \(trial \d+\); queued again at batch size "
                          r"(\d+)$", t.user_attrs[Key.REASON])
        assert found, t.user_attrs[Key.REASON]
        limit, smaller = int(found.group(1)), int(found.group(2))
        assert smaller == max(b for b in (16, 32, 64, 128, 256) if b < limit)
        retry = retries[t.number]  # the same proposal at that batch size, trained next
        assert retry.params == {**t.params, "batch_size": smaller}
        assert retry.state == TrialState.COMPLETE or retry.user_attrs.get(Key.OOM)  # 64 may run out in turn
    # Exporting such a trial warns that it was never trained (not that its value is from an unfinished run).
    from typer.testing import CliRunner

    from tuner.cli import app

    exported = CliRunner().invoke(app, ["study", "export", "tpe", "--storage", storage_url, "--trial",
                                        str(avoided[0].number), "-o", str(tmp_path / "avoided.yaml")])
    assert exported.exit_code == 0, exported.output
    said = " ".join(exported.output.split())
    assert "it was not trained, so the config comes with no value" in said
    assert f"warning: trial {avoided[0].number} is failed (" in said, said  # the state in words, not "fail"


def test_a_space_whose_every_batch_runs_out_of_memory_stops_the_study_with_the_reason(hungry: str,
                                                                                      storage_url: str,
                                                                                      tmp_path: Path) -> None:
    study, prepared = _hungry_study("oom2", hungry, storage_url, tmp_path, [64, 128], n_trials=5, epochs=1,
                                    pruner="median")
    with pytest.raises(StudyError, match=r"ran out of memory on cpu \(trial \d+\); use a space with smaller"):
        run_prepared(study, prepared)
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stored = oom_limits(optuna.load_study(study_name="oom2", storage=storage_url))["cpu"]
    assert stored["batch_size"] == 64  # once 64 ran out too, nothing at all is trained
    trained = [t for t in study.trials if t.user_attrs.get(Key.OOM)]
    assert 1 <= len(trained) <= 2  # at most one run out of memory at 128 and one at 64; the rest avoided


def test_show_and_the_report_say_what_was_avoided(hungry: str, storage_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tuner.cli import app
    from tuner.report import write_report

    study, prepared = _hungry_study("oom3", hungry, storage_url, tmp_path, [16, 32, 64, 128])
    run_prepared(study, prepared)
    limit = oom_limits(study)["cpu"]
    avoided = sum(bool(t.user_attrs.get(Key.OOM_AVOIDED)) for t in study.trials)
    assert avoided, "no config was avoided"
    shown = CliRunner().invoke(app, ["study", "show", "oom3", "--storage", storage_url])
    assert shown.exit_code == 0, shown.output
    group = f"FAIL: out of memory avoided (batch size {limit['batch_size']} or more, not trained on cpu)"
    assert f"{avoided:>4} x {group}" in shown.output
    files = write_report(study, tmp_path / "r")
    report = files["report.md"].read_text()
    assert (f"out of memory: batch size {limit['batch_size']} ran out of memory on cpu (trial {limit['trial']}); "
            f"from then on configs at that batch size or more were not trained there ({avoided} proposal(s) in "
            f"all") in report


def test_with_on_oom_accumulate_larger_batches_train_as_micro_batches(hungry: str, storage_url: str,
                                                                     tmp_path: Path) -> None:
    """``on_oom: accumulate``: after batch B ran out of memory, configs at B or more train as micro-batches of
    B // 2 (halved again if that runs out too), each recorded with what was done; nothing is avoided."""
    from tuner.study._engine import oom_notes

    study, prepared = _hungry_study("acc", hungry, storage_url, tmp_path, [16, 64, 128], n_trials=10,
                                    on_oom="accumulate")
    run_prepared(study, prepared)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ran_out = [t for t in trials if t.user_attrs.get(Key.OOM)]
    assert ran_out and len(ran_out) <= 2, "no trial drew a batch of 64 or more"
    assert not [t for t in trials if t.user_attrs.get(Key.OOM_AVOIDED)]
    assert "train on cpu as micro-batches of" in ran_out[0].user_attrs[Key.REASON]
    after = [t for t in trials if t.number > ran_out[-1].number]
    large = [t for t in after if t.user_attrs[Key.CONFIG]["batch_size"] >= 64]
    assert large, "no batch of 64 or more was drawn after the out-of-memory trials"
    for t in large:  # the model runs out of memory at 64 samples: micro-batches of 32 do not
        batch = t.user_attrs[Key.CONFIG]["batch_size"]
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs[Key.ACCUMULATION] == {"micro_batch": 32, "steps": batch // 32, "device": "cpu"}
    assert all(Key.ACCUMULATION not in t.user_attrs for t in after if t.user_attrs[Key.CONFIG]["batch_size"] < 64)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 10
    notes = oom_notes(study)
    accumulated = sum(Key.ACCUMULATION in t.user_attrs for t in trials)
    assert len(notes) == 1 and "trained there as micro-batches" in notes[0] and f"{accumulated} trial(s)" in notes[0]
    from tuner.study._session import study_summary

    assert study_summary(study)["memory"] == notes  # `study show` prints them too
    # Confirmation re-runs of such a config train it the same way (whole batches would run out of memory), and
    # its export says how it was trained.
    from tuner import TrainConfig
    from tuner.report import study_fit
    from tuner.report._confirm import recommendation

    value, test = study_fit(study, storage_url)(TrainConfig.from_dict(large[0].user_attrs[Key.CONFIG]))
    assert 0 <= value <= 1 and test is not None
    meta = recommendation(study, trial=large[0].number).metadata(study, "accuracy")
    assert meta["accumulation"].startswith(f"trained as {large[0].user_attrs[Key.ACCUMULATION]['steps']} "
                                           f"micro-batches of 32 per batch")


def test_the_library_confirms_such_a_config_as_the_command_does(hungry: str, storage_url: str, tmp_path: Path):
    """run_study(...).fit() and .recommend() train a batch size that ran out of memory as micro-batches, as
    `study export` and `study report` do, instead of failing every confirmation run."""
    import tuner

    space = tmp_path / "s.yaml"
    space.write_text("optimizer: {adam: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}}\nbatch_size: 128\n")
    result = tuner.run_study(objective=hungry, space=str(space), n_trials=2, epochs=2, storage=storage_url,
                             name="lib", device="cpu", sampler="random", pruner="none", known_starts=False,
                             on_oom="accumulate", pack=1, verbose=False)
    states = [t.state.name for t in result.study.trials]  # 128, then micro-batches of 64, ran out of memory
    assert states == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"], states
    value, test = result.fit(result.best_config)
    assert 0 <= value <= 1 and test is not None
    rec = result.recommend(top_k=1, seeds=1)
    assert rec.config.batch_size == 128 and rec.confirmation is not None and 0 <= rec.value <= 1


def test_the_pack_size_probe_that_runs_out_of_memory_trains_one_at_a_time(hungry: str, storage_url: str,
                                                                          tmp_path: Path, monkeypatch) -> None:
    """``pack: auto`` times a config alone before the first trial; where that config's batch size does not fit,
    the study says so and trains one trial at a time (it used to stop with the error)."""
    monkeypatch.delenv("TUNER_PACK", raising=False)
    study, prepared = _hungry_study("probe", hungry, storage_url, tmp_path, [64, 128], n_trials=16,
                                    on_oom="accumulate")
    summary = run_prepared(study, prepared)
    assert summary.pack == 1
    assert summary.pack_why.startswith("one trial at batch size") and "ran out of memory on cpu in the timing probe" \
        in summary.pack_why
    assert sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) == 16


def test_configs_queued_again_at_a_limited_batch_size_do_not_count_as_the_sampler_proposing_them(
        hungry: str, storage_url: str, tmp_path: Path) -> None:
    """Trials of a pack that ran out of memory are queued again; if their batch size is limited by then, each is
    avoided when popped, but that is not the sampler proposing it 25 times in a row."""
    study, prepared = _hungry_study("retries", hungry, storage_url, tmp_path, [16, 32, 64, 128], n_trials=6)
    study.set_user_attr(StudyKey.OOM_BATCH, {"cpu": {"batch_size": 64, "trial": 0}})
    space_params = [name for name in prepared.space.distributions() if name != "batch_size"]
    for i in range(30):
        study.enqueue_trial({space_params[0]: 2e-3, "batch_size": 128}, user_attrs={Key.RETRY_OF: 100 + i})
    run_prepared(study, prepared)  # no StudyError
    trials = study.get_trials(deepcopy=False)
    assert sum(bool(t.user_attrs.get(Key.OOM_AVOIDED)) and Key.RETRY_OF in t.user_attrs for t in trials) == 30
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6


def test_the_notes_say_what_the_study_does_before_any_trial_was_accumulated(hungry: str, storage_url: str,
                                                                            tmp_path: Path) -> None:
    """A limit recorded, nothing avoided or accumulated yet: the notes follow the study's ``on_oom``."""
    from tuner.study._engine import oom_notes

    for mode, says in (("accumulate", "trained there as micro-batches"), ("avoid", "were not trained there")):
        study, _ = _hungry_study(f"notes-{mode}", hungry, storage_url, tmp_path, [16, 64], on_oom=mode)
        study.set_user_attr(StudyKey.OOM_BATCH, {"cpu": {"batch_size": 64, "trial": 3}})
        notes = oom_notes(study)
        assert len(notes) == 1 and says in notes[0] and notes[0].startswith(
            "out of memory: batch size 64 ran out of memory on cpu (trial 3)")


@pytest.mark.parametrize("on_oom", ["avoid", "accumulate"])
def test_the_config_that_first_runs_out_of_memory_trains_again_as_those_after_it_do(
        hungry: str, storage_url: str, tmp_path: Path, on_oom: str) -> None:
    """The proposals after the first out-of-memory trial were queued again at a smaller batch (or trained in
    micro-batches), but the one that ran out itself, the one config known to be proposed, was lost."""
    study, prepared = _hungry_study("first", hungry, storage_url, tmp_path, [16, 32, 64, 128], n_trials=8,
                                    on_oom=on_oom)
    run_prepared(study, prepared)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    first = next(t for t in trials if t.user_attrs.get(Key.OOM))
    retry = next(t for t in trials if t.user_attrs.get(Key.RETRY_OF) == first.number)
    if on_oom == "avoid":
        assert first.user_attrs[Key.REASON].endswith("; queued again at batch size 32")
        assert retry.params == {**first.params, "batch_size": 32} and retry.state == TrialState.COMPLETE
    else:
        assert first.user_attrs[Key.REASON].endswith("; queued again, to train in micro-batches")
        assert retry.params == first.params and retry.state == TrialState.COMPLETE
        assert retry.user_attrs[Key.ACCUMULATION]["micro_batch"] == 32


def test_proposals_set_aside_are_not_failures_in_a_row_for_a_pool_either() -> None:
    """One process left an avoided proposal out of the failures in a row; a pool's count (read from the study)
    counted it, so a real failure after a few avoided proposals could stop the study early."""
    from datetime import datetime, timedelta

    from tuner.study._engine import _failures_in_a_row

    study = optuna.create_study()
    avoided = {Key.OOM_AVOIDED: True, Key.REASON_KIND: "out_of_memory"}
    for attrs in (avoided, avoided, avoided, {Key.REASON_KIND: "error"}):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs))
    assert _failures_in_a_row(study, datetime.now() - timedelta(hours=1)) == 1

