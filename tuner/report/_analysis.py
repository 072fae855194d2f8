"""Tables and statistics over a study's trials: the trials frame, importances with conditional parameters,
per-optimizer bests and a narrowed search space."""

from __future__ import annotations

import copy
import math
import random
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import ConfigError, StudyError, count
from tuner.study._record import MIN_TOP, Key, primary, range_position, ranked_trials, set_by_known_start

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["trials_frame", "Importance", "importances", "per_optimizer_best", "narrow_space", "complete_trials",
           "EVALUATORS"]

EVALUATORS = ("ped-anova", "fanova")


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with a finite value, best first (the study's one ranking: ``ranked_trials``)."""
    return ranked_trials(study)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = ", ".join(str(v) for v in value) if all(not isinstance(v, dict) for v in value) else str(value)
    else:
        out[prefix] = value


_LONG_ATTRS = (Key.VAL_HISTORY, Key.EPOCH_TIMES, Key.TRAIN_LOSS, Key.TRACEBACK)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, timing, every Optuna parameter (``params.<name>``) and every
    user attribute flattened (``config.optimizer.lr``, ``test_value``, ``reason``, ...). Per-epoch histories
    become ``epochs_run`` and ``last_val``."""
    import pandas as pd

    from tuner.study._record import objectives_of

    rows = []
    others = objectives_of(study)[1:] if len(study.directions) > 1 else []  # train_seconds, beside the metric
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name, "value": primary(t),
            **{name: (t.values[i + 1] if t.values and len(t.values) > i + 1 else None)
               for i, name in enumerate(others)},
            "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
            "duration_s": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None,
        }
        row.update({f"params.{k}": v for k, v in t.params.items()})
        attrs = dict(t.user_attrs)
        history = attrs.get(Key.VAL_HISTORY) or list(t.intermediate_values.values())
        row["epochs_run"] = len(history)
        row["last_val"] = history[-1] if history else None
        for key in _LONG_ATTRS:
            attrs.pop(key, None)
        flat: dict[str, Any] = {}
        _flatten("", attrs, flat)
        row.update(flat)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", "value"])
    first = ["number", "state", "value", *others, "test_value", "duration_s", "epochs_run", "last_val", "reason"]
    lead = [c for c in first if c in frame.columns]
    params = sorted(c for c in frame.columns if c.startswith("params."))
    rest = sorted(c for c in frame.columns if c not in lead and c not in params)
    return frame[lead + params + rest]


# -- importances -----------------------------------------------------------------------------------------
@dataclass
class Importance:
    """A parameter's share of the variation in the objective (shares sum to 1)."""

    name: str
    importance: float
    present: float  # fraction of complete trials that have it
    merged_from: list[str]  # per-branch parameters merged into this one (``adamw.lr``, ``sgd.lr`` -> ``lr``)

    @property
    def conditional(self) -> bool:
        return self.present < 1.0


def _merge_groups(trials: list[FrozenTrial]) -> dict[str, list[str]]:
    """Per-branch parameters that every trial has exactly one of (every optimizer's ``lr``, each optimizer's
    own ``weight_decay`` or the global one) merge into one parameter, all floats on one scale."""
    names: set[str] = set()
    dists: dict[str, Any] = {}
    for t in trials:
        names.update(t.params)
        dists.update(t.distributions)
    by_key: dict[str, list[str]] = {}
    for name in sorted(names):
        key = name.split(".", 1)[1] if "." in name else name
        by_key.setdefault(key, []).append(name)
    groups = {}
    for key, members in by_key.items():
        if len(members) < 2:
            continue
        if not all(isinstance(dists[m], FloatDistribution) for m in members):
            continue
        if len({dists[m].log for m in members}) != 1:
            continue
        if not all(sum(m in t.params for m in members) == 1 for t in trials):
            continue
        # Ranges that barely overlap (decoupled vs coupled weight decay) measure different things: merging
        # them would turn the merged value into a proxy for the optimizer.
        if all(_overlap(dists[a], dists[b]) >= 0.25 for a in members for b in members if a < b):
            groups[key] = members
    return groups


def _overlap(a: FloatDistribution, b: FloatDistribution) -> float:
    """The share of the narrower range that both ranges cover (on the log scale for log ranges)."""
    f = math.log if a.log else float
    lo, hi = max(f(a.low), f(b.low)), min(f(a.high), f(b.high))
    narrower = min(f(a.high) - f(a.low), f(b.high) - f(b.low))
    if narrower <= 0:
        return 1.0 if lo <= hi else 0.0
    return max(0.0, hi - lo) / narrower


def _random_value(dist: Any, rng: random.Random) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(list(dist.choices))
    if isinstance(dist, IntDistribution):
        if dist.log:
            return int(round(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))))
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    if dist.log:
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.uniform(dist.low, dist.high)


def _imputed_study(trials: list[FrozenTrial], direction: optuna.study.StudyDirection,
                   groups: dict[str, list[str]], seed: int = 0, impute: bool = True
                   ) -> tuple[optuna.Study, dict[str, float]]:
    """An in-memory study in which every trial has every parameter: merged groups take the branch's value,
    other absent parameters random values from their distribution."""
    member_of = {m: key for key, members in groups.items() for m in members}
    dists: dict[str, Any] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            target = member_of.get(name, name)
            if target in dists and target in groups:
                old = dists[target]
                dists[target] = FloatDistribution(min(old.low, dist.low), max(old.high, dist.high), log=old.log)
            else:
                dists.setdefault(target, dist)
    present = {name: 0 for name in dists}
    rows = []
    for t in trials:
        row = {}
        for name, value in t.params.items():
            row[member_of.get(name, name)] = value
        rows.append(row)
        for name in row:
            present[name] += 1
    # A parameter absent from some trials gets random values there (uniform over its range, on its scale):
    # they carry no information, so its share measures its effect where it applies, and not whether its
    # branch was chosen, which is the share of the branch's own parameter (``optimizer``).
    rng = random.Random(seed)
    for name, dist in dists.items():
        if present[name] == len(trials) or not impute:
            continue
        for row in rows:
            if name not in row:
                row[name] = _random_value(dist, rng)
    imputed = optuna.create_study(direction=direction)
    imputed.add_trials([
        optuna.trial.create_trial(params=row, distributions={k: dists[k] for k in row}, value=primary(t))
        for row, t in zip(rows, trials, strict=True)
    ])
    return imputed, {name: present[name] / len(trials) for name in dists}


def importances(study: optuna.Study, evaluator: str = "ped-anova", seed: int = 0,
                min_trials: int = 5) -> list[Importance]:
    """Hyperparameter importances over every parameter, conditional ones included, largest first.

    PED-ANOVA (the default) compares where the best trials' values lie against all trials; fANOVA fits a
    random forest. Per-branch parameters present in every trial under different names merge (``lr``);
    parameters that only some trials have (``adamw.one_minus_beta1``) get random values in the trials without
    them, so their share is their effect where they apply; whether their branch was chosen is the share of
    ``optimizer`` (or ``schedule``, ``init``).
    """
    if evaluator not in EVALUATORS:
        raise ConfigError(f"Unknown importance evaluator {evaluator!r}. Valid choices: {', '.join(EVALUATORS)}.")
    trials = complete_trials(study)
    if len(trials) < min_trials:
        raise StudyError(f"Study {study.study_name!r} has {count(len(trials), 'complete trial')}; importances need at "
                         f"least {min_trials}.")
    groups = _merge_groups(trials)
    # PED-ANOVA rates a parameter within the trials that have it, weighted by how many of the best trials
    # do: conditional parameters need nothing more. fANOVA needs every parameter in every trial.
    imputed, present = _imputed_study(trials, study.directions[0], groups, seed, impute=evaluator == "fanova")
    dists_all: dict[str, Any] = {}
    for t in imputed.trials:
        dists_all.update(t.distributions)
    varying = [name for name, d in dists_all.items() if not d.single()]
    if not varying:
        return []
    if evaluator == "fanova":
        ev: optuna.importance.BaseImportanceEvaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    else:
        ev = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = optuna.importance.get_param_importances(imputed, evaluator=ev, params=varying, normalize=False)
    total = sum(raw.values())
    shares = {k: (v / total if total > 0 else 1.0 / len(raw)) for k, v in raw.items()}
    out = [Importance(name, share, present[name], groups.get(name, [])) for name, share in shares.items()]
    return sorted(out, key=lambda i: -i.importance)


# -- per-optimizer bests ---------------------------------------------------------------------------------
def optimizer_of(trial: FrozenTrial) -> str | None:
    """A trial's optimizer: its config's, else the parameter a space with several optimizers samples."""
    return (trial.user_attrs.get(Key.CONFIG) or {}).get("optimizer", {}).get("name") or trial.params.get("optimizer")


def per_optimizer_best(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The best complete trial of each optimizer, best optimizer first."""
    best: dict[str, FrozenTrial] = {}
    for t in complete_trials(study):
        name = optimizer_of(t)
        if name and name not in best:
            best[name] = t
    return best


def optimizers_without_complete(study: optuna.Study) -> dict[str, str]:
    """Optimizers the study tried whose every trial was pruned or failed (they have no best config), with how
    their trials ended: ``{"sgd": "3 pruned, 1 failed"}``. Without them a table or plot of the best per
    optimizer would drop them silently."""
    from collections import Counter

    complete = set(per_optimizer_best(study))
    ended: dict[str, Counter[str]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.FAIL)):
        name = optimizer_of(t)
        if name and name not in complete:
            ended.setdefault(name, Counter())[t.state.name.lower()] += 1
    return {name: ", ".join(f"{n} {state}" for state, n in sorted(c.items(), key=lambda kv: kv[0] != "pruned"))
            for name, c in sorted(ended.items())}


# -- a narrowed space ------------------------------------------------------------------------------------
_REG = ("weight_decay", "l1", "dropout")


def _raw_slot(raw: dict[str, Any], name: str) -> tuple[dict[str, Any], str] | None:
    """Where Optuna parameter ``name`` lives in a space's YAML mapping."""
    if name in ("batch_size", "grad_clip_norm"):
        return raw, name
    if name in _REG:
        return raw.setdefault("regularization", {}), name
    if "." in name:
        branch, key = name.split(".", 1)
        for group in ("optimizer", "schedule", "init"):
            entries = raw.get(group)
            if isinstance(entries, dict) and isinstance(entries.get(branch), dict) and key in entries[branch]:
                return entries[branch], key
    return None


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def _shown(value: float) -> str:
    """A range's end in as few digits as tell it apart from its neighbours: 0.9999 (not 1), 0.99, 3e-05."""
    for digits in range(3, 13):
        text = f"{value:.{digits}g}"
        if float(text) == value:
            return text
    return f"{value:.12g}"


def narrow_space(study: optuna.Study, raw_space: dict[str, Any], top_fraction: float = 0.25, min_top: int = MIN_TOP,
                 edge: float = 0.05, anchor: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """A search space for a follow-up study around the best trials, and notes on what changed.

    The top trials (``top_fraction`` of the complete ones, at least ``min_top``, but never more than the
    better half of them, which it says in its first note) decide: optimizers,
    schedules and initialisers none of them chose are dropped, categorical choices they never took are
    dropped, and each range shrinks to span their values with a margin. Where the best trial (or trial
    ``anchor``, the recommended one) sits within ``edge`` of a range's end, that end is widened instead: the
    optimum may lie outside.
    """
    trials = complete_trials(study)
    if len(trials) < min_top:
        raise StudyError(f"Study {study.study_name!r} has {count(len(trials), 'complete trial')}; a narrowed "
                         f"space needs at least {min_top}.")
    # The best quarter, at least min_top, but never the worse half: with few complete trials, those would let
    # trials that trained no better than chance keep their corner of the space.
    half = math.ceil(len(trials) / 2)
    top = trials[:min(max(min_top, math.ceil(top_fraction * len(trials))), half)]
    front_note = ""
    if len(study.directions) > 1:
        # Accuracy against cost: the Pareto front's trials (its cheap end too), topped up by the metric's best,
        # again never into the worse half
        from tuner.study._record import pareto_front

        front = pareto_front(study)
        on_front = {t.number for t in front}
        extra = [t for t in trials if t.number not in on_front][:max(0, min(min_top, half) - len(front))]
        top = front + extra
        front_note = (f"drawn from the {len(front)} trial(s) of the Pareto front"
                      + (f" and the next {len(extra)} by the first objective" if extra else "")
                      + f", of the {count(len(trials), 'complete trial')}")
    best = next((t for t in trials if t.number == anchor), trials[0])
    if best.number not in {t.number for t in top}:
        top.append(best)
    from tuner.study._record import tie_at_top

    tie = tie_at_top(study, trials)
    if tie is not None:  # the best trial was picked from a tie: no end is widened at it
        edge = -1.0
    raw = copy.deepcopy(raw_space)
    notes: list[str] = [front_note or f"drawn from the best {len(top)} of the {count(len(trials), 'complete trial')}"]
    if tie is not None:
        notes.append(f"{tie[0]} of the {tie[1]} complete trials tie at the best value, {tie[2]:.4g}: no end is "
                     f"widened at the best trial, which the tie picked")
    for group in ("optimizer", "schedule", "init"):
        entries = raw.get(group)
        chosen = {t.params.get(group) for t in top if group in t.params}
        if isinstance(entries, dict) and len(entries) > 1 and chosen:
            dropped = [name for name in entries if name not in chosen]
            for name in dropped:
                del entries[name]
            if dropped:
                notes.append(f"{group}: dropped {', '.join(dropped)} (not among the top {count(len(top), 'trial')})")
    dists: dict[str, Any] = {}
    for t in trials:
        dists.update(t.distributions)
    for name, dist in sorted(dists.items()):
        if name in ("optimizer", "schedule", "init"):
            continue
        slot = _raw_slot(raw, name)
        if slot is None:
            continue
        parent, key = slot
        values = [t.params[name] for t in top if name in t.params]
        if not values:
            continue
        if isinstance(dist, CategoricalDistribution):
            keep = [c for c in dist.choices if c in values]
            if len(keep) < len(dist.choices):
                parent[key] = {"choices": keep} if len(keep) > 1 else keep[0]
                notes.append(f"{name}: kept {', '.join(map(str, keep))} of {', '.join(map(str, dist.choices))}")
            continue
        before = parent[key]
        # Widen by half the range at an edge, or less where the parameter's bounds forbid that.
        for widen in (0.5, 0.2, 0.05, 0.0):
            # A value a known start put at an end is no sign of better ones beyond it.
            at = None if set_by_known_start(best, name) else best.params.get(name)
            parent[key], note = _narrow_range(name, dist, values, at, edge if widen else -1.0, widen)
            if _valid(raw):
                break
        else:
            parent[key], note = before, None
        if note:
            notes.append(note)
    return raw, notes


def _valid(raw: dict[str, Any]) -> bool:
    from tuner.spaces import SearchSpace

    try:
        SearchSpace.from_dict(raw)
    except ConfigError:
        return False
    return True


def _narrow_range(name: str, dist: Any, values: list[float], best: float | None, edge: float, widen_by: float
                  ) -> tuple[dict[str, Any], str | None]:
    log = dist.log
    fwd = math.log if log else (lambda v: v)
    inv = math.exp if log else (lambda v: v)
    lo, hi = fwd(dist.low), fwd(dist.high)
    span = hi - lo
    vlo, vhi = fwd(min(values)), fwd(max(values))
    margin = 0.1 * span
    new_lo, new_hi = max(lo, vlo - margin), min(hi, vhi + margin)
    side = None
    pos = range_position(dist, best) if best is not None else None
    if pos is not None:
        widen = widen_by * span
        if pos <= edge:
            new_lo, side = lo - widen, "low"
        elif pos >= 1 - edge:
            new_hi, side = hi + widen, "high"
    low, high = inv(new_lo), inv(new_hi)
    stepped = dist.step is not None and not (isinstance(dist, IntDistribution) and dist.step == 1)
    if stepped:  # on the range's own grid, which the new range keeps (a step must divide its range)
        low = dist.low + math.floor((low - dist.low) / dist.step + 1e-9) * dist.step
        high = dist.low + math.ceil((high - dist.low) / dist.step - 1e-9) * dist.step
    if isinstance(dist, IntDistribution):
        low, high = int(math.floor(low)), int(math.ceil(high))
        low = max(low, 1) if log else low
    elif stepped:
        low, high = float(f"{low:.12g}"), float(f"{high:.12g}")
    else:
        low, high = _round(low), _round(high)
    note = None
    old_range, new_range = f"[{_shown(dist.low)}, {_shown(dist.high)}]", f"[{_shown(low)}, {_shown(high)}]"
    change = f"{old_range} -> {new_range}"
    if side is not None:  # the whole new range: its other end may have narrowed
        note = (f"{name}: the best value {best:.3g} sits at the {side} end of {old_range}; "
                f"widened {'down' if side == 'low' else 'up'} past it: {change}")
    elif new_range != old_range:
        note = f"{name}: {change}"
    if high <= low:
        return low, note
    out: dict[str, Any] = {"type": "int", "low": low, "high": high} if isinstance(dist, IntDistribution) else {
        "low": low, "high": high}
    if log:
        out["log"] = True
    if stepped:
        out["step"] = dist.step
    return out, note
