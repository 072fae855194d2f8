"""Batched storage writes and the one-read study view that trial packs use to report and prune K members at once."""

from __future__ import annotations

import logging

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
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    study.url = url  # for a read through a storage object of its own
    return study


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


def test_a_heartbeat_of_a_deleted_study_stops_without_a_warning(study, caplog):
    """``tuner study delete --force`` under a run: the run stops with one line saying so; its heartbeat lets
    the trials go in silence instead of logging a failed write first."""
    trial = study.ask()
    with Heartbeat(study, trial._trial_id, interval=3600) as heartbeat:
        optuna.delete_study(study_name="s", storage=study._storage)
        with caplog.at_level(logging.WARNING, logger="tuner.study._liveness"):
            beating = heartbeat.beat()
        assert heartbeat.failures == 0
        if study.url.startswith("sqlite"):  # the write fails (the journal appends it, unread): nothing left to beat
            assert beating is False and heartbeat.trial_ids == set()
    assert not [r for r in caplog.records if "heartbeat" in r.getMessage()], caplog.text


def _count_trial_reads(study, monkeypatch) -> list[int]:
    """Counts the storage's full reads of the study's trials (what ``one_read`` saves)."""
    from tuner.study._record import storage_of

    storage, calls = storage_of(study), []
    original = type(storage).get_all_trials

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(storage), "get_all_trials", counted)
    return calls


def test_asking_and_sampling_inside_one_read_read_the_study_once(study, monkeypatch):
    import threading

    from tuner.study._writes import one_read

    study.sampler = optuna.samplers.TPESampler(n_startup_trials=2, constant_liar=True, seed=0)
    for i in range(3):
        t = study.ask()
        t.suggest_float("x", 0, 1)
        study.tell(t, float(i))
    running = study.ask()
    running.suggest_float("x", 0, 1)
    calls = _count_trial_reads(study, monkeypatch)
    seen_by_other_thread = []
    with one_read(study):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.suggest_float("y", 0, 1)
        # The sampler saw the running trial (constant liar) from the one read; another thread reads afresh.
        assert [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))] == [3]
        worker = threading.Thread(target=lambda: seen_by_other_thread.append(len(study.get_trials())))
        worker.start()
        worker.join()
    assert len(calls) == 2  # the block's one read, and the other thread's own
    assert seen_by_other_thread == [5]  # the trial asked inside the block included
    assert len(study.get_trials()) == 5 and len(calls) == 3  # after the block, reads go to the storage again
    assert study.get_trials()[4].params.keys() == {"x", "y"}


def test_a_trial_asked_inside_one_read_is_not_read_back_from_the_database(rdb_study, monkeypatch):
    """``ask`` creates a trial and ``Trial.__init__`` reads it back at once: inside ``one_read`` on an RDB
    storage, that read answers from what the creation returned (a copy), and later reads go to the database."""
    from tuner.study._record import storage_of
    from tuner.study._writes import _rdb_backend, one_read

    study = rdb_study
    backend = _rdb_backend(storage_of(study))
    reads = []
    original = type(backend).get_trial
    monkeypatch.setattr(type(backend), "get_trial", lambda self, trial_id: reads.append(trial_id)
                        or original(self, trial_id))
    study.enqueue_trial({"x": 0.25})
    with one_read(study):
        queued = study.ask()  # an enqueued trial: not created in the block, read from the database
        assert reads == [queued._trial_id]
        asked = study.ask()
        assert reads == [queued._trial_id]
        asked.suggest_float("x", 0, 1)
        asked.set_user_attr("a", 1)
        again = storage_of(study).get_trial(asked._trial_id)  # only the first read answers from the creation
        assert reads == [queued._trial_id, asked._trial_id] and again.params == asked.params
    assert queued.suggest_float("x", 0, 1) == 0.25  # its fixed parameters, as read
    stored = original(backend, asked._trial_id)
    created = asked._cached_frozen_trial
    assert (created.number, created.state, created.datetime_start, created.user_attrs, created.params) == (
        stored.number, stored.state, stored.datetime_start, stored.user_attrs, stored.params)
    outside = study.ask()
    assert reads[-1] == outside._trial_id  # outside the block, as Optuna reads it
    # A trial enqueued inside the block is created from a template: asked for, it is read as it now is.
    with one_read(study):
        study.enqueue_trial({"x": 0.75})
        popped = study.ask()
    assert popped._cached_frozen_trial.state == TrialState.RUNNING and reads[-1] == popped._trial_id
    assert popped.suggest_float("x", 0, 1) == 0.75
    study.tell(asked, 0.5)
    assert study.trials[asked.number].value == 0.5


def test_a_batch_looks_each_trial_up_once_and_lookups_outside_it_are_as_before(tmp_path):
    """RDB storages (journal writes go one by one)."""
    import sqlalchemy
    from optuna.storages._rdb import models

    from tuner.study import open_storage
    from tuner.study._record import storage_of
    from tuner.study._writes import _rdb_backend

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'b.db'}"))
    statements: list[str] = []
    engine = _rdb_backend(storage_of(study)).engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    trials = [study.ask() for _ in range(3)]
    statements.clear()
    assert write_batch(study, [Write(t._trial_id, kind, key, 1.0) for t in trials
                               for kind, key in (("value", 0), ("value", 1), ("user", "a"), ("user", "b"))]) == {}
    lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "FROM trials" in s
               and "trial_values" not in s and "trial_intermediate_values" not in s]
    assert len(lookups) == 1  # one query for the three trials, where the per-row helpers made twelve
    # Outside a batch, lookups go to the database again.
    statements.clear()
    found = models.TrialModel.find_or_raise_by_id(trials[0]._trial_id, _rdb_backend(storage_of(study)).scoped_session())
    assert found.trial_id == trials[0]._trial_id and len(statements) == 1
    for t in study.get_trials():
        assert t.intermediate_values == {0: 1.0, 1: 1.0} and t.user_attrs == {"a": 1.0, "b": 1.0}


def test_a_recent_view_reads_once_and_sees_trials_completed_elsewhere_after_max_age(study, monkeypatch):
    from tuner.study import _writes
    from tuner.study._writes import RecentView

    def complete(value: float) -> None:
        t = study.ask()
        t.report(value, 0)
        study.tell(t, value)

    complete(0.5)
    complete(0.3)
    judged = study.ask()
    judged.report(0.45, 0)  # above the median of the two complete trials (0.4)
    clock = [100.0]
    monkeypatch.setattr(_writes.time, "monotonic", lambda: clock[0])
    calls = _count_trial_reads(study, monkeypatch)
    recent = RecentView(study, max_age=1.0)
    assert recent.judge(judged._get_latest_trial()) is False
    complete(0.9)  # another worker completes two better trials: the median is now 0.65
    complete(0.8)
    reads = len(calls)
    clock[0] += 0.5
    assert recent.judge(judged._get_latest_trial()) is False  # within max_age: the earlier read
    assert len(calls) == reads
    clock[0] += 0.6
    assert recent.judge(judged._get_latest_trial()) is True  # read again: the new trials count
    assert len(calls) == reads + 1
    assert bool(judged.should_prune()) is True  # as Optuna decides on a fresh read


def test_pack_members_that_started_earlier_count_as_complete_for_a_median_pruner(study):
    """In a pack, a member is compared with the complete trials and with the members that started before it
    (with what they reported so far), as it would be if the trials had run one after another."""
    def complete(value: float) -> None:
        t = study.ask()
        t.report(value, 0)
        study.tell(t, value)

    complete(0.2)
    complete(0.4)  # the median of the complete trials at step 0: 0.3
    members = [study.ask() for _ in range(4)]  # trials 2..5, training side by side
    for t, value in zip(members, (0.9, 0.8, 0.5, 0.7), strict=True):
        write_batch(study, [Write(t._trial_id, "value", 0, value)])
    ids = {t._trial_id for t in members}
    judged = members[2]  # 0.5: above the complete trials' median, below the median with trials 2 and 3 (0.6)
    assert StudyView(study).should_prune(judged._trial_id) is False
    view = StudyView(study, ids)
    assert view.should_prune(judged._trial_id) is True
    assert view.should_prune(members[0]._trial_id) is False  # nobody started before trial 2 but the complete ones
    # Trial 5 (0.7) came later: it does not count for trial 4; once trial 2 is pruned, neither does it.
    view.forget(members[0]._trial_id)
    assert view.should_prune(judged._trial_id) is False  # median of 0.2, 0.4, 0.8: 0.4
    assert [t.number for t in view.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))] == [0, 1]


def _stored(study, trial):
    """The trial as another process would read it (a journal storage's own view shares its objects with the
    trials this process holds)."""
    from tuner.study import open_storage

    return optuna.load_study(study_name="s", storage=open_storage(study.url)).trials[trial.number]


@pytest.mark.parametrize("case", ["complete", "pruned", "pruned without reports", "pruned at nan", "fail"])
def test_closing_a_trial_writes_what_attributes_and_tell_write(study, case):
    """``close_trial`` (one transaction on an RDB storage) leaves a trial as ``write_attrs`` then ``tell``."""
    from tuner.study._record import storage_of
    from tuner.study._writes import _rdb_backend, close_trial

    state = {"complete": TrialState.COMPLETE, "fail": TrialState.FAIL}.get(case, TrialState.PRUNED)
    values = 0.75 if case == "complete" else None
    attrs = {"reason": case, "history": [0.5, 0.6], "seconds": 1.5}
    reports = {"pruned without reports": []}.get(case, [0.5, 0.6, float("nan")] if case == "pruned at nan"
                                                  else [0.5, 0.625])
    closed, told = study.ask(), study.ask()
    for t in (closed, told):
        t.suggest_float("x", 0, 1)
        for step, v in enumerate(reports):
            t.report(v, step)
    result = close_trial(study, closed._trial_id, attrs, state, values)
    if _rdb_backend(storage_of(study)) is None:  # elsewhere nothing is written: the caller writes and tells
        assert result is None
        assert (_stored(study, closed).state, _stored(study, closed).user_attrs) == (TrialState.RUNNING, {})
        return
    write_attrs(study, told._trial_id, attrs)
    study.tell(told, values, state=state)
    a, b = _stored(study, closed), _stored(study, told)
    assert (a.state, a.values, a.user_attrs, a.params.keys()) == (b.state, b.values, b.user_attrs, b.params.keys())
    assert a.datetime_complete is not None
    expected = {"complete": [0.75], "pruned": [0.625]}.get(case)
    assert a.values == expected
    assert result == (expected,)  # what was written; the caller tells the sampler


def test_closing_a_trial_of_a_study_with_two_objectives(tmp_path):
    from tuner.study import open_storage
    from tuner.study._writes import close_trial

    url = f"sqlite:///{tmp_path / 'm.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), directions=["maximize", "minimize"])
    study.url = url
    done, pruned = study.ask(), study.ask()
    study._storage.set_trial_intermediate_value(pruned._trial_id, 0, 0.5)
    assert close_trial(study, done._trial_id, {"a": 1}, TrialState.COMPLETE, [0.9, 12.5]) == ([0.9, 12.5],)
    assert close_trial(study, pruned._trial_id, {}, TrialState.PRUNED) == (None,)  # as tell: no value
    assert (_stored(study, done).values, _stored(study, done).user_attrs) == ([0.9, 12.5], {"a": 1})
    assert (_stored(study, pruned).state, _stored(study, pruned).values) == (TrialState.PRUNED, None)


@pytest.mark.filterwarnings("ignore:.*constraints_func:FutureWarning")
def test_what_one_transaction_does_not_cover_is_left_to_tell(tmp_path):
    """A value ``tell`` refuses (NaN, the wrong number of values) and a sampler that writes to the trial when
    told of it (a ``constraints_func``): nothing is written, the caller writes the attributes and tells."""
    from tuner.study import open_storage
    from tuner.study._writes import close_trial

    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    study.url = url
    trial = study.ask()
    assert close_trial(study, trial._trial_id, {"a": 1}, TrialState.COMPLETE, float("nan")) is None
    assert close_trial(study, trial._trial_id, {"a": 1}, TrialState.COMPLETE, [0.5, 0.5]) is None
    assert close_trial(study, trial._trial_id, {"a": 1}, TrialState.COMPLETE, None) is None
    study.sampler = optuna.samplers.TPESampler(constraints_func=lambda t: [0.0])
    assert close_trial(study, trial._trial_id, {"a": 1}, TrialState.COMPLETE, 0.5) is None
    assert (_stored(study, trial).state, _stored(study, trial).user_attrs) == (TrialState.RUNNING, {})


def test_the_storage_is_optunas_own_again_outside_the_blocks(study):
    """The per-block readers and writers are the storage object's only inside a block (of any thread): after
    it, the object pickles (``joblib.dump(study)``) and reads and writes as Optuna's."""
    import pickle

    from tuner.study._record import storage_of
    from tuner.study._writes import held_params, one_read

    storage = storage_of(study)
    trial = study.ask()
    with one_read(study):
        assert "get_all_trials" in vars(storage)
        with held_params(study, trial) as flush:
            assert "set_trial_param" in vars(storage)
            trial.suggest_float("x", 0, 1)
            flush({})
        assert "set_trial_param" not in vars(storage)
    assert "get_all_trials" not in vars(storage)
    pickle.dumps(storage)


def test_closing_a_finished_trial_writes_nothing(study):
    from tuner.study._record import storage_of
    from tuner.study._writes import _rdb_backend, close_trial

    trial = study.ask()
    study.tell(trial, 0.5)
    if _rdb_backend(storage_of(study)) is None:  # not one transaction there: nothing written, the caller tells
        assert close_trial(study, trial._trial_id, {"reason": "late"}, TrialState.FAIL) is None
    else:
        with pytest.raises(UpdateFinishedTrialError):
            close_trial(study, trial._trial_id, {"reason": "late"}, TrialState.FAIL)
    stored = _stored(study, trial)
    assert (stored.state, stored.values, stored.user_attrs) == (TrialState.COMPLETE, [0.5], {})


def test_held_parameters_are_written_with_the_attributes_at_the_flush(study):
    from tuner.study._writes import held_params

    trial = study.ask()
    with held_params(study, trial) as flush:
        x = trial.suggest_float("x", 1e-4, 1, log=True)
        name = trial.suggest_categorical("opt", ["adam", "sgd"])
        assert trial.params == {"x": x, "opt": name}  # the trial sees what it sampled
        assert _stored(study, trial).params == {}  # nothing written yet
        flush({"config": {"lr": x}, "worker": {"pid": 1}})
    stored = _stored(study, trial)
    assert stored.params == {"x": x, "opt": name} and stored.user_attrs == {"config": {"lr": x}, "worker": {"pid": 1}}
    assert trial.user_attrs == stored.user_attrs
    assert stored.distributions["x"] == optuna.distributions.FloatDistribution(1e-4, 1, log=True)
    # Outside a block, and for other trials, parameters are written as they are sampled.
    other = study.ask()
    other.suggest_float("x", 1e-4, 1, log=True)
    assert "x" in _stored(study, other).params


def test_held_parameters_are_checked_at_the_flush_and_dropped_on_an_error(study):
    from tuner.study._writes import held_params

    first = study.ask()
    first.suggest_float("x", 0, 1)
    study.tell(first, 1.0)
    trial = study.ask()
    # A parameter whose distribution disagrees with an earlier trial's: Optuna's check runs at the flush, and
    # neither the parameters nor the attributes are written.
    with pytest.raises(ValueError), held_params(study, trial) as flush:
        trial.suggest_categorical("x", ["a", "b"])
        trial.suggest_float("y", 0, 1)
        flush({"config": {}})
    stored = _stored(study, trial)
    assert stored.params == {} and stored.user_attrs == {}
    # Left by an error before the flush: nothing written, and the next block starts clean.
    with pytest.raises(RuntimeError), held_params(study, trial):
        trial.suggest_float("z", 0, 1)
        raise RuntimeError("sampler failed")
    assert _stored(study, trial).params == {}
    with held_params(study, trial) as flush:
        trial.suggest_float("w", 0, 1)
        flush({})
    assert list(_stored(study, trial).params) == ["w"]


@pytest.fixture(params=["sqlite", "postgres", "per-row"])
def rdb_study(request, tmp_path):
    """An RDB study on SQLite, on a real PostgreSQL server, and on SQLite with the per-row helpers that other
    databases (MySQL) get; yields the study and a list of the INSERT statements it sends."""
    import sqlalchemy

    from tuner.study import _writes, open_storage
    from tuner.study._record import storage_of

    url = request.getfixturevalue("postgres_db") if request.param == "postgres" else f"sqlite:///{tmp_path / 'u.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    study.url = url
    if request.param == "per-row":
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr(_writes, "_upsert", lambda *args: False)
    inserts: list[str] = []
    sqlalchemy.event.listen(_writes._rdb_backend(storage_of(study)).engine, "before_cursor_execute",
                            lambda *a: inserts.append(a[2]) if a[2].lstrip().upper().startswith("INSERT") else None)
    study.inserts = inserts
    study.per_row = request.param == "per-row"
    return study


def test_many_rows_go_in_few_statements_and_overwrite_as_optuna_does(rdb_study):
    """Intermediate values and attributes of many trials: one INSERT ... ON CONFLICT statement per table (and
    per ``UPSERT_ROWS`` rows) on SQLite and PostgreSQL, one per row elsewhere; the same rows either way,
    values written again and NaN or infinite values included."""
    from tuner.study._writes import UPSERT_ROWS, close_trial

    study = rdb_study
    trials = [study.ask() for _ in range(3)]
    assert write_batch(study, [Write(t._trial_id, "value", 0, 0.5) for t in trials]
                       + [Write(trials[0]._trial_id, "user", "a", {"x": [1]})]) == {}
    study.inserts.clear()
    steps = range(UPSERT_ROWS // 2)  # 3 trials: more rows than one statement takes
    writes = [Write(t._trial_id, "value", step, 0.01 * step + i) for i, t in enumerate(trials) for step in steps]
    writes += [Write(t._trial_id, "value", step, value)
               for t, step, value in zip(trials, (1, 2, 3), (float("nan"), float("inf"), -float("inf")), strict=True)]
    writes += [Write(t._trial_id, kind, key, [i, key]) for i, t in enumerate(trials)
               for kind, key in (("user", "a"), ("user", "b"), ("system", "s"))]
    assert write_batch(study, writes) == {}
    rows = 3 * len(steps)
    if study.per_row:  # a statement per new row (the ORM's unit of work may group some)
        assert len(study.inserts) > rows // 2
    else:
        assert len(study.inserts) == -(-rows // UPSERT_ROWS) + 2  # values, user and system attributes
    stored = {t.number: t for t in optuna.load_study(study_name="s", storage=study.url).trials}
    for i, t in enumerate(trials):
        values = stored[t.number].intermediate_values
        assert len(values) == len(steps)
        assert values[0] == pytest.approx(i) and values[len(steps) - 1] == pytest.approx(0.01 * (len(steps) - 1) + i)
        assert stored[t.number].user_attrs == {"a": [i, "a"], "b": [i, "b"]}  # "a" of trial 0 written again
        assert stored[t.number].system_attrs["s"] == [i, "s"]
    import math

    assert math.isnan(stored[0].intermediate_values[1])
    assert stored[1].intermediate_values[2] == float("inf") and stored[2].intermediate_values[3] == -float("inf")
    # Closing a trial: its attributes in one statement too.
    study.inserts.clear()
    close_trial(study, trials[0]._trial_id, {"reason": "done", "history": [0.5], "a": 2}, TrialState.COMPLETE, 0.5)
    assert len([s for s in study.inserts if "trial_user_attributes" in s]) == (3 if study.per_row else 1)
    closed = optuna.load_study(study_name="s", storage=study.url).trials[0]
    assert closed.user_attrs == {"a": 2, "b": [0, "b"], "reason": "done", "history": [0.5]}
    assert (closed.state, closed.values) == (TrialState.COMPLETE, [0.5])
    # A batch that names a finished trial writes nothing of it, and the others' writes land.
    errors = write_batch(study, [Write(t._trial_id, "user", "late", 1) for t in trials])
    assert list(errors) == [trials[0]._trial_id] and isinstance(errors[trials[0]._trial_id], UpdateFinishedTrialError)
    after = {t.number: t.user_attrs for t in optuna.load_study(study_name="s", storage=study.url).trials}
    assert "late" not in after[0] and after[1]["late"] == 1 == after[2]["late"]


def test_a_storage_error_in_a_warning_names_the_drivers_error_not_optunas_wrapper():
    """Optuna wraps a locked SQLite database as 'An exception is raised during the commit ... e.g. exceeding max
    length'; the worker's warnings (heartbeat, reaping) say what the driver said."""
    import sqlite3

    from tuner.study._storage import storage_error_text

    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as inner:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. This typically "
                                                         "happens due to invalid data in the commit, e.g. exceeding "
                                                         "max length.") from inner
    except optuna.exceptions.StorageInternalError as exc:
        assert storage_error_text(exc) == "OperationalError: database is locked"
    masked = storage_error_text(RuntimeError("postgresql://u:S3cr3t@h/db down"))
    assert "S3cr3t" not in masked and masked.startswith("RuntimeError: postgresql://u:")
