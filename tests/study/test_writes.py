"""Batched storage writes and the one-read study view that trial packs use to report and prune K members at once."""

from __future__ import annotations

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from tuner.study._liveness import Heartbeat
from tuner.study._record import Key
from tuner.study._writes import StudyView, Write, write_attrs, write_batch


@pytest.fixture(params=["sqlite", "journal"])
def study(request, tmp_path) -> optuna.Study:
    from tuner.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 's.db'}" if request.param == "sqlite" else f"journal:{tmp_path / 's.journal'}"
    return optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize",
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))


def test_a_batch_lands_every_write(study):
    trials = [study.ask() for _ in range(3)]
    errors = write_batch(study, [w for i, t in enumerate(trials) for w in (
        Write(t._trial_id, "value", 0, 0.1 * i), Write(t._trial_id, "value", 1, 0.2 * i),
        Write(t._trial_id, "user", "k", [i]), Write(t._trial_id, "system", "s", i))])
    assert errors == {}
    for i, t in enumerate(study.get_trials()):
        assert t.intermediate_values == {0: pytest.approx(0.1 * i), 1: pytest.approx(0.2 * i)}
        assert t.user_attrs == {"k": [i]} and t.system_attrs["s"] == i


def test_a_finished_trial_in_a_batch_costs_the_others_nothing(study):
    a, b, c = (study.ask() for _ in range(3))
    study.tell(b, 1.0)
    errors = write_batch(study, [Write(t._trial_id, "value", 0, 0.5) for t in (a, b, c)])
    assert list(errors) == [b._trial_id] and isinstance(errors[b._trial_id], UpdateFinishedTrialError)
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[a.number].intermediate_values == {0: 0.5} == by_number[c.number].intermediate_values
    assert by_number[b.number].intermediate_values == {}
    with pytest.raises(UpdateFinishedTrialError):
        write_attrs(study, b._trial_id, {"x": 1})
    write_attrs(study, a._trial_id, {"x": 1, "y": "two"})
    assert study.get_trials()[a.number].user_attrs == {"x": 1, "y": "two"}


def test_the_view_prunes_as_the_pruner_does_on_the_study(study):
    # Two finished trials set the median at each step; running trials above and below it are judged.
    for values in ([0.5, 0.6, 0.7], [0.3, 0.4, 0.5]):
        t = study.ask()
        for step, v in enumerate(values):
            t.report(v, step)
        study.tell(t, values[-1])
    running = [study.ask() for _ in range(4)]
    for i, t in enumerate(running):
        write_batch(study, [Write(t._trial_id, "value", 0, 0.2 + 0.1 * i)])
    view = StudyView(study)
    decisions = [view.should_prune(t._trial_id) for t in running]
    expected = [study.pruner.prune(study, study._storage.get_trial(t._trial_id)) for t in running]
    assert decisions == expected == [True, True, False, False]
    assert len(view.get_trials(states=(TrialState.COMPLETE,))) == 2 and view.direction == study.direction


def test_one_heartbeat_beats_for_every_member_of_a_pack(study):
    trials = [study.ask() for _ in range(3)]
    with Heartbeat(study, None, interval=3600) as heartbeat:
        for t in trials:
            heartbeat.add(t._trial_id)
        beats = {t.number: t.system_attrs[Key.HEARTBEAT] for t in study.get_trials()}
        assert len(beats) == 3
        heartbeat.discard(trials[0]._trial_id)
        study.tell(trials[1], 1.0)  # finished: its beat fails and the heartbeat lets it go
        assert heartbeat.beat() is True
        assert heartbeat.trial_ids == {trials[2]._trial_id}
        after = {t.number: t.system_attrs[Key.HEARTBEAT] for t in study.get_trials()}
        assert after[trials[0].number] == beats[trials[0].number]
        assert after[trials[2].number] > beats[trials[2].number]
        study.tell(trials[2], 1.0)
        assert heartbeat.beat() is False  # nothing left to beat for
