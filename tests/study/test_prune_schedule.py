"""A trial's epoch is put to the pruner only where the pruner can stop it: skipping the others changes no
decision (checked against Optuna's own pruners at every epoch) and saves a read of the whole study each time."""

from __future__ import annotations

import optuna
import pytest

from tuner.study._samplers import build_pruner, list_pruners, may_prune_at

KNOWN_SCHEDULE = ("median", "percentile", "top_third", "none", "patient")


def _decisions(name: str, epochs: int) -> list[tuple[bool, bool]]:
    """(may_prune_at, Optuna's decision) at every epoch, for a trial far below six complete ones."""
    pruner = build_pruner(name, {"epochs": epochs, "seed": 0})
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(6):
        trial = study.ask()
        for step in range(epochs):
            trial.report(1.0, step)
        study.tell(trial, 1.0)
    bad = study.ask()
    out = []
    for step in range(epochs):
        bad.report(0.0, step)
        frozen = study._storage.get_trial(bad._trial_id)
        out.append((may_prune_at(pruner, step), pruner.prune(study, frozen)))
    return out


@pytest.mark.parametrize("epochs", [1, 5, 20, 30])
@pytest.mark.parametrize("name", sorted(list_pruners()))
def test_the_pruner_is_never_skipped_where_it_would_prune(name: str, epochs: int):
    decisions = _decisions(name, epochs)
    assert not [step for step, (may, prunes) in enumerate(decisions) if prunes and not may]
    if name in ("median", "percentile", "top_third"):
        # A trial below every other is stopped at exactly the epochs the pruner judges.
        assert [may for may, _ in decisions] == [prunes for _, prunes in decisions]
    if name not in KNOWN_SCHEDULE:
        assert all(may for may, _ in decisions)  # an unknown schedule is always asked


def test_what_is_skipped():
    twenty = {"epochs": 20, "seed": 0}
    assert [s for s in range(20) if may_prune_at(build_pruner("median", twenty), s)] == list(range(4, 20))
    assert [s for s in range(20) if may_prune_at(build_pruner("top_third", twenty), s)] == [4]
    assert not any(may_prune_at(build_pruner("none", twenty), s) for s in range(20))


def _without_running(study: optuna.Study) -> optuna.Study:
    """The study as a pruner would see it if no other trial were running."""
    from tuner.study._writes import StudyView

    view = StudyView(study)
    view._trials = [t for t in view._trials if t.state != optuna.trial.TrialState.RUNNING]
    return view


@pytest.mark.parametrize("name", sorted(list_pruners()))
def test_pruners_said_to_judge_by_complete_trials_ignore_running_ones(name: str):
    """``judges_by_complete_trials`` lets a trial reuse one read of the study for many pruning checks; that holds
    only if what other running trials reported changes nothing. Checked on every pruner tuner offers, with
    running trials far above and far below the judged one."""
    from tuner.study._samplers import judges_by_complete_trials

    pruner = build_pruner(name, {"epochs": 12, "seed": 0})
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i in range(6):
        trial = study.ask()
        for step in range(12):
            trial.report(0.5 + 0.02 * i + 0.01 * step, step)
        study.tell(trial, 0.6 + 0.02 * i)
    judged = study.ask()
    others = [study.ask() for _ in range(4)]
    differs = []
    for step in range(12):
        judged.report(0.55 + 0.005 * step, step)
        for k, other in enumerate(others):
            other.report(0.99 if k % 2 else 0.01, step)
        frozen = study._storage.get_trial(judged._trial_id)
        differs.append(pruner.prune(study, frozen) != pruner.prune(_without_running(study), frozen))
    complete_only = judges_by_complete_trials(pruner)
    assert complete_only == (name in KNOWN_SCHEDULE)
    if complete_only:
        assert not any(differs)


def test_a_trial_reads_the_study_for_pruning_once_per_max_age_and_decides_as_with_a_read_per_epoch(
        tmp_path, monkeypatch):
    """One worker: the trials (states, epochs trained) are the same whether every pruning check reads the
    study or one read serves a trial's checks for ``PRUNE_READ_MAX_AGE``."""
    from tuner.study import StudySpec, _engine, create_or_join, prepare, run_trials
    from tuner.study._writes import StudyView

    reads = []
    original = StudyView.__init__

    def counted(self, study):
        reads.append(1)
        original(self, study)

    monkeypatch.setattr(StudyView, "__init__", counted)

    def run(name: str, max_age: float) -> list[tuple[str, int]]:
        monkeypatch.setattr(_engine, "PRUNE_READ_MAX_AGE", max_age)
        spec = StudySpec.from_mapping({"name": "p", "objective": "digits-mlp", "space": "lr-only", "n_trials": 14,
                                       "epochs": 6, "seed": 3, "storage": f"sqlite:///{tmp_path / name}",
                                       "device": "cpu", "threads": 1, "pack": 1, "pruner": "median"}, "test")
        prepared = prepare(spec)
        study = create_or_join(prepared)
        run_trials(study, prepared)
        return [(t.state.name, len(t.intermediate_values)) for t in study.trials]

    every_epoch = run("a.db", 0.0)
    per_epoch_reads = len(reads)
    reads.clear()
    once = run("b.db", 1e9)
    assert once == every_epoch
    assert sum(state == "PRUNED" for state, _ in once) >= 2  # the pruner did stop trials
    assert len(reads) == len(once) < per_epoch_reads  # every trial reaches a judged epoch: one read each
