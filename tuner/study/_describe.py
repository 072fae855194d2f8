"""Describing studies as data, without PyTorch: what ``study show`` and ``study list`` print (the command line
only prints it), so that looking at a study does not wait for PyTorch to load."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.study._limits import counts, oom_notes
from tuner.study._open import study_kind
from tuner.study._record import (
    EDGE,
    Key,
    StudyKey,
    direction_of,
    handed_over,
    primary,
    range_position,
    ranked_trials,
    record_of,
    set_by_known_start,
    stopped_early,
    tie_at_top,
    top_distinct,
)
from tuner.study._storage import open_storage, storage_exists

__all__ = ["study_summary", "list_studies", "trial_row", "edge_notes", "exported_edges"]


def trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    rec = record_of(t)
    row = {"number": rec.number, "value": rec.value, "test_value": rec.test_value,
           "seconds": t.user_attrs.get(Key.SECONDS), "config": rec.config}
    if t.values and len(t.values) > 1:
        row["values"] = list(t.values)
    return row


def study_summary(study: optuna.Study, top: int = 5) -> dict[str, Any]:
    """Everything ``study show`` prints, as data."""
    c = counts(study)
    ranked = ranked_trials(study)
    reasons: Counter[str] = Counter()
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.FAIL)):
        rec = record_of(t)
        reasons[f"{t.state.name}: {rec.reason.group if rec.reason else 'no reason recorded'}"] += 1
    spec = study.user_attrs.get(StudyKey.SPEC, {})
    tune = study.user_attrs.get(StudyKey.TUNE)
    tune = tune if isinstance(tune, dict) else {}
    pareto = _pareto(study)
    confirmation = _confirmation(study, ranked)
    edges_of = _exported(pareto, confirmation, ranked)
    space = stored_space(study.user_attrs.get(StudyKey.SPACE))
    scaling = space.lr_scaling if space is not None else None
    tie = tie_at_top(study, ranked)
    return {
        "edges": edge_notes(study, edges_of["trial"]) if edges_of else [],
        "tie": {"trials": tie[0], "complete": tie[1], "value": tie[2]} if tie else None,
        "lr_scaling": ({"rule": scaling.rule, "reference_batch": scaling.reference_batch} if scaling else None),
        "edges_of": edges_of,
        "name": study.study_name,
        "kind": study_kind(study.user_attrs, len(study.directions)),
        "direction": direction_of(study),
        "metric": study.user_attrs.get(StudyKey.METRIC),
        "objective": _objective_of(spec, tune),
        "space": next((v for v in (spec.get("space"), tune.get("space")) if isinstance(v, str)), "custom"),
        "calibration": _calibration(study.user_attrs.get(StudyKey.CALIBRATION), space),
        "n_trials": spec.get("n_trials"),
        "counts": {"complete": c["COMPLETE"], "pruned": c["PRUNED"], "failed": c["FAIL"], "running": c["RUNNING"],
                   "left_behind": _left_behind(study),
                   "queued": c.get("WAITING", 0)},
        "reasons": dict(reasons.most_common()),
        "memory": oom_notes(study),
        "stopped": stopped_early(study),
        "best": trial_row(ranked[0]) if ranked else None,
        "confirmation": confirmation,
        "top": [trial_row(t) for t in ranked[:top]],
        **pareto,
    }


def _left_behind(study: optuna.Study) -> int:
    """RUNNING trials whose worker gives no sign of life (its process is gone, or silent past the grace period):
    the next run of the study fails them and queues their configs again."""
    from tuner.study._liveness import alive

    return sum(not alive(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _exported(pareto: dict[str, Any], confirmation: dict[str, Any] | None, ranked: list[Any]
              ) -> dict[str, Any] | None:
    """The trial ``study export`` would take, and what it is: the knee of a Pareto front, the confirmed
    recommendation while it covers the present top trials, else the best trial."""
    if pareto.get("knee"):
        return {"trial": pareto["knee"]["number"], "is": "the knee of the Pareto front"}
    if confirmation and confirmation["current"]:
        return {"trial": confirmation["trial"], "is": "the recommended trial"}
    return {"trial": ranked[0].number, "is": "the best trial"} if ranked else None


def exported_edges(study: optuna.Study) -> tuple[dict[str, Any] | None, list[str]]:
    """The trial export would take (``{trial, is}``) and the parameters at an edge of the space there, as
    ``study show`` says them, for commands that need only these."""
    ranked = ranked_trials(study)
    of = _exported(_pareto(study), _confirmation(study, ranked), ranked)
    return of, edge_notes(study, of["trial"]) if of else []


def edge_notes(study: optuna.Study, number: int) -> list[str]:
    """For the recommended trial (``number``): each parameter whose value sits at an end of its range, where
    better values may lie beyond it. Ends where the hyperparameter's own valid values stop (dropout at 0) are
    not edges: there is nothing beyond them to search."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        return []
    if tie_at_top(study) is not None:  # a trial picked from a tie: its parameters sit where they sit by chance
        return []
    space = stored_space(study.user_attrs.get(StudyKey.SPACE))
    # Ends where the hyperparameter's valid values stop; a space this version no longer reads: none, every end
    # counts as an edge
    hard = space.hard_ends() if space is not None else {}
    scaling = space.lr_scaling if space is not None else None
    notes = []
    for name, dist in sorted(trial.distributions.items()):
        value = trial.params[name]
        pos = None if set_by_known_start(trial, name) else range_position(dist, value)
        if pos is not None and (pos <= EDGE or pos >= 1 - EDGE):
            end = "low" if pos <= EDGE else "high"
            if end in (hard.get(name) or ()):
                continue
            # With lr_scaling the space searches the rate at its reference batch size, not the rate trained.
            at = (f" (the rate at batch size {scaling.reference_batch}, lr_scaling)"
                  if scaling is not None and name.endswith(".lr") else "")
            notes.append(f"{name} = {value:.3g}{at} sits at the {end} end of its range [{dist.low:.3g}, "
                         f"{dist.high:.3g}]: better values may lie {'below' if end == 'low' else 'above'} it")
    return notes


def stored_space(raw_space: Any) -> Any:
    """The study's stored search space, read (no PyTorch); None where there is none, or for a space this
    version no longer reads."""
    from tuner.errors import TunerError
    from tuner.spaces import SearchSpace

    try:
        return SearchSpace.from_dict(raw_space) if isinstance(raw_space, dict) else None
    except TunerError:
        return None


def _objective_of(spec: Any, tune: Any) -> str | None:
    """A study's objective: its spec's, or for a tuner.tune() study the function it tuned."""
    if isinstance(spec, dict) and spec.get("objective"):
        return str(spec["objective"])
    if isinstance(tune, dict) and tune.get("function"):
        return f"{tune['function']}()"
    return None


def _pareto(study: optuna.Study) -> dict[str, Any]:
    """A study with several objectives: their names, the Pareto front (best metric first) and its knee."""
    if len(study.directions) < 2:
        return {}
    from tuner.study._record import knee, objectives_of, pareto_front

    point = knee(study)
    return {"objectives": objectives_of(study), "directions": [d.name.lower() for d in study.directions],
            "pareto": [trial_row(t) for t in pareto_front(study)],
            "knee": trial_row(point) if point is not None else None}


def _confirmation(study: optuna.Study, ranked: list[Any]) -> dict[str, Any] | None:
    """The confirmed recommendation stored by ``study report``/``export`` (the top trials re-trained with new
    seeds), or None; ``current``: whether it covers the study's present top trials."""
    import math
    import statistics

    data = study.user_attrs.get(StudyKey.CONFIRMATION)
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
        return None
    def runs(candidate: dict[str, Any]) -> dict[str, Any]:
        values = [float(v) for v in candidate["values"] if v is not None and math.isfinite(float(v))]
        return {"mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}  # one: no spread

    try:
        chosen = next(c for c in data["candidates"] if c["trial"] == data["recommended"])
        tests = [float(v) for v in chosen.get("test_values") or [] if v is not None]
        top_k = int(data["top_k"])
        # The same test as export's: the candidates are the top trials with distinct configs.
        current = [c["trial"] for c in data["candidates"]] == [t.number for t in top_distinct(study, top_k)]
        mine = runs(chosen)
        # The best single trial's runs on the same seeds, beside the recommendation's, where it is another trial
        best = next((runs(c) for c in data["candidates"] if ranked and c["trial"] == ranked[0].number
                     and c["trial"] != chosen["trial"]), None)
        return {"trial": chosen["trial"], "mean": mine["mean"], "std": mine["std"], "runs": mine["n"],
                "test_mean": statistics.fmean(tests) if tests else None, "seeds": int(data["n_seeds"]),
                "top_k": top_k, "current": current, "config": chosen.get("config"), "best_trial_runs": best}
    except (KeyError, TypeError, ValueError, StopIteration):
        return None


def _calibration(stored: Any, space: Any = None) -> dict[str, Any] | None:
    """The lr ranges an LR range test gave the study's space when it was created (``calibrate: true``), what
    calibrating noted, and, in a space with ``lr_scaling``, the ranges searched (at its reference batch size,
    not the test's)."""
    if not isinstance(stored, dict) or not isinstance(stored.get("ranges"), dict):
        return None
    ranges = {k: [v.get("low"), v.get("high")] for k, v in stored["ranges"].items() if isinstance(v, dict)}
    searched = None
    scaling = space.lr_scaling if space is not None else None
    if scaling is not None and stored.get("batch_size") != scaling.reference_batch:
        searched = {"as": scaling.describe(), "ranges": {
            name: [lr.distribution.low, lr.distribution.high] for name, (low, _) in ranges.items()
            if low is not None and name in space.optimizer and (lr := space.optimizer[name].get("lr")) is not None
            and lr.distribution is not None and scaling.exponent(name) != 0}}  # (L-BFGS' and others' are not)
    return {"batch_size": stored.get("batch_size"), "device": stored.get("device"), "repeats": stored.get("repeats"),
            "seconds": stored.get("seconds"), "ranges": ranges, "searched": searched,
            "notes": [str(n) for n in stored.get("notes") or []]}


def list_studies(url: str) -> list[dict[str, Any]]:
    """Every study in a storage (tuner's and any other Optuna study), read without changing anything."""
    rows: list[dict[str, Any]] = []
    if not storage_exists(url):
        return rows
    opened = open_storage(url, readonly=True)
    for frozen in opened.get_all_studies():  # each study's trials are read once, below
        spec = frozen.user_attrs.get(StudyKey.SPEC, {})
        kind = study_kind(frozen.user_attrs, len(frozen.directions))
        study = optuna.load_study(study_name=frozen.study_name, storage=opened)
        trials = study.get_trials(deepcopy=False)
        best = None
        if kind != "multi-objective":  # tuner's studies of two objectives: the knee's metric, as export takes it
            point = handed_over(study, trials)
            best = primary(point) if point is not None else None
        # Trials run or running; configs queued for a study never run (its first trials) are not trials yet.
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        rows.append({"name": frozen.study_name, "kind": kind, "directions": [d.name.lower() for d in frozen.directions],
                     "trials": len(trials) - waiting, "queued": waiting,
                     "objective": _objective_of(spec, frozen.user_attrs.get(StudyKey.TUNE)), "best": best,
                     "created": min(starts).isoformat(timespec="seconds") if starts else None})
    return rows
