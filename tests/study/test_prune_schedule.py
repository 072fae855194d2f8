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
