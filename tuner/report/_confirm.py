"""The recommended config: the top trials re-trained with fresh seeds, the best mean wins.

One lucky seed can put a mediocre config at the top of a study. Re-training the top ``k`` configs with
``n`` new seeds each and recommending the best mean makes the recommendation a config that is good, not one
that was lucky. The results are stored in the study, so reports and exports reuse them.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.config import TrainConfig
from tuner.errors import StudyError, TunerError, count
from tuner.report._analysis import complete_trials
from tuner.study._record import MIN_TOP, Key, StudyKey, direction_of, primary, top_distinct, trial_with_config

__all__ = ["Candidate", "ConfirmPlan", "Confirmation", "Recommendation", "confirm", "confirmation_plan", "recommend",
           "recommendation", "stored_confirmation", "confirmation_seeds"]


FitFn = Callable[[TrainConfig], tuple[float, float | None]]


@dataclass
class Candidate:
    """One of the top trials and its re-runs."""

    trial: int
    trial_value: float
    config: dict[str, Any]
    seeds: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    test_values: list[float | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """The mean over every re-run; NaN where one failed or diverged."""
        return self.mean_of_runs if self.ran == len(self.values) else math.nan

    @property
    def ran(self) -> int:
        """How many of its re-runs trained to a finite value."""
        return sum(math.isfinite(v) for v in self.values)

    @property
    def mean_of_runs(self) -> float:
        """The mean over the re-runs that trained (NaN where none did): ``mean`` where every one did."""
        finite = [v for v in self.values if math.isfinite(v)]
        return statistics.fmean(finite) if finite else math.nan

    @property
    def std(self) -> float | None:
        """None for one run: it has no spread."""
        return statistics.stdev(self.values) if len(self.values) > 1 and math.isfinite(self.mean) else None

    @property
    def test_mean(self) -> float | None:
        tests = [v for v in self.test_values if v is not None]
        return statistics.fmean(tests) if tests and len(tests) == len(self.test_values) else None

    @property
    def test_std(self) -> float | None:
        tests = [v for v in self.test_values if v is not None]
        return statistics.stdev(tests) if len(tests) > 1 and self.test_mean is not None else None


@dataclass
class Confirmation:
    """The top ``top_k`` trials, each re-trained with the same ``seeds``; ``recommended`` is a trial number."""

    top_k: int
    n_seeds: int
    direction: str
    candidates: list[Candidate]
    recommended: int

    @property
    def best(self) -> Candidate:
        return next(c for c in self.candidates if c.trial == self.recommended)

    def to_dict(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "n_seeds": self.n_seeds, "direction": self.direction,
                "recommended": self.recommended, "candidates": [asdict(c) for c in self.candidates]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confirmation:
        candidates = []
        for c in data["candidates"]:
            c = {**c, "values": [math.nan if v is None else v for v in c["values"]]}
            candidates.append(Candidate(**c))
        return cls(data["top_k"], data["n_seeds"], data["direction"], candidates, data["recommended"])


def confirmation_seeds(study_seed: int, n: int) -> list[int]:
    """Seeds no trial of the study used (trials use ``seed * 1_000_003 + number``)."""
    return [(study_seed * 1_000_003 + 500_000 + 7919 * i) % 2**31 for i in range(n)]


def recommend(candidates: list[Candidate], direction: str) -> Candidate:
    """The candidate with the best mean over its seeds; a tie goes to the better-ranked trial. Candidates
    whose re-runs failed or diverged (mean not finite) are never recommended while another is usable. Where
    every candidate failed on some seed, those that trained on the most seeds compete by the mean over the
    seeds that trained (``Recommendation.source`` says so); only where no re-run trained is nothing
    recommended."""
    usable = [c for c in candidates if math.isfinite(c.mean)]
    if not usable:
        most = max((c.ran for c in candidates), default=0)
        if most == 0:
            errors = [f"trial {c.trial}, {e}" for c in candidates for e in c.errors[:1]]
            hint = (" Confirmation runs train outside any Optuna trial: there, ctx.trial and ctx.number are None "
                    "(guard their use with `if ctx.trial is not None`)." if any("'NoneType'" in e for e in errors)
                    else "")
            raise StudyError("Every confirmation run failed or diverged; no config can be recommended. "
                             + "; ".join(errors) + hint)
        usable = [c for c in candidates if c.ran == most]
    sign = -1.0 if direction == "maximize" else 1.0
    return min(usable, key=lambda c: (sign * c.mean_of_runs, candidates.index(c)))


def stored_confirmation(study: optuna.Study) -> Confirmation | None:
    data = study.user_attrs.get(StudyKey.CONFIRMATION)
    return Confirmation.from_dict(data) if data else None


def current_confirmation(study: optuna.Study) -> Confirmation | None:
    """The stored confirmation where it covers the study's present top trials, else None (trials that finished
    since may have changed the top)."""
    stored = stored_confirmation(study)
    if stored is not None and _reusable(stored, top_distinct(study, stored.top_k), stored.top_k, stored.n_seeds):
        return stored
    return None


def _reusable(stored: Confirmation, top: list[FrozenTrial], top_k: int, seeds: int) -> bool:
    return (stored.top_k == top_k and stored.n_seeds == seeds
            and [c.trial for c in stored.candidates] == [t.number for t in top])


def confirmation_is_stored(study: optuna.Study, top_k: int = 3, seeds: int = 3) -> bool:
    """Whether ``confirm`` would reuse the stored confirmation (and so train nothing and write nothing)."""
    stored = stored_confirmation(study)
    return stored is not None and _reusable(stored, top_distinct(study, top_k), top_k, seeds)


@dataclass
class ConfirmPlan:
    """What a confirmation is about to cost, said before it starts: ``runs`` trainings (0 when the stored one
    is reused), ``baseline_runs`` more for the report's tuning-free line, about ``trial_seconds`` each."""

    top: int
    seeds: int
    runs: int
    baseline_runs: int
    trial_seconds: float | None

    @property
    def seconds(self) -> float | None:
        total = self.runs + self.baseline_runs
        return None if self.trial_seconds is None else total * self.trial_seconds

    def line(self) -> str:
        if not self.runs and not self.baseline_runs:
            return (f"using the confirmation stored in the study (top {self.top} trial(s) x {self.seeds} seed(s)); "
                    f"nothing to re-train")
        parts = []
        if self.runs:
            parts.append(f"re-training the top {self.top} trial(s) with {self.seeds} new seed(s) each ({self.runs} "
                         f"runs)")
        if self.baseline_runs:
            parts.append(f"{self.baseline_runs} run(s) of the tuning-free baseline")
        cost = (f", about {_duration(self.seconds)} at {_duration(self.trial_seconds)} a trial"
                if self.seconds is not None else "")
        return (f"confirming the recommendation: {' and '.join(parts)}{cost}. --no-confirm skips this; the result "
                f"is stored in the study, so later reports and exports reuse it.")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 0.05:  # not "0.0 s"
        return "under 0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {rest} s"


def confirmation_plan(study: optuna.Study, top_k: int = 3, seeds: int = 3, *, baseline: bool = False,
                      study_seed: int = 0) -> ConfirmPlan:
    """How many trainings ``confirm`` (and, with ``baseline``, the report's tuning-free line) will run, and
    about how long they take: the median wall time of the study's complete trials."""
    top = top_distinct(study, top_k)
    stored = stored_confirmation(study)
    reused = stored is not None and _reusable(stored, top, top_k, seeds)
    kept = stored_runs(study)
    runs = 0 if reused else sum((t.number, seed) not in kept for t in top
                                for seed in confirmation_seeds(study_seed, seeds))
    baseline_runs = 0
    if baseline:
        from tuner.optim import get_optimizer

        kept = study.user_attrs.get(BASELINE_KEY)
        # The stored baseline is reused where it was trained over the same seeds like the recommendation (its
        # batch size and epochs); before re-training, any candidate may win, so every one must train like it.
        winners = [stored.best.config] if reused else [t.user_attrs[Key.CONFIG] for t in top]
        same = isinstance(kept, dict) and kept.get("seeds") == confirmation_seeds(study_seed, seeds) and all(
            _baseline_config(TrainConfig.from_dict(config)) == kept.get("config") for config in winners)
        if get_optimizer(BASELINE).available and not same:
            baseline_runs = seeds
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in complete_trials(study)
                 if t.datetime_complete and t.datetime_start]
    return ConfirmPlan(len(top), seeds, runs, baseline_runs, statistics.median(durations) if durations else None)


def confirm(study: optuna.Study, fit: FitFn, *, top_k: int = 3, seeds: int = 3, study_seed: int = 0,
            reuse: bool = True, on_run: Callable[[str, int, float], None] | None = None) -> Confirmation:
    """Re-trains the top ``top_k`` configs with ``seeds`` new seeds each and stores the result in the study.

    ``fit(config) -> (validation, test or None)`` trains one config. A stored confirmation of the same top
    trials, ``top_k`` and ``seeds`` is returned as is (``reuse=False`` re-trains).
    """
    if top_k < 1 or seeds < 1:
        raise StudyError(f"top_k and seeds must be at least 1 (got top_k={top_k}, seeds={seeds}).")
    top = top_distinct(study, top_k)
    if not top:
        raise StudyError(f"Study {study.study_name!r} has no complete trial to recommend from.")
    stored = stored_confirmation(study)
    if reuse and stored is not None and _reusable(stored, top, top_k, seeds):
        return stored
    seed_list = confirmation_seeds(study_seed, seeds)
    runs = stored_runs(study) if reuse else {}
    candidates = []
    for t in top:
        cand = Candidate(t.number, float(primary(t)), t.user_attrs[Key.CONFIG])
        for seed in seed_list:
            if (t.number, seed) in runs:  # trained by a confirmation that was interrupted, or by a smaller one
                value, test, error = runs[t.number, seed]
            else:
                value, test, error = _confirmation_run(fit, TrainConfig.from_dict({**cand.config, "seed": seed}))
                runs[t.number, seed] = (value, test, error)
                _store_runs(study, runs)  # at once: an interrupt loses at most the run in progress
                if on_run is not None:
                    on_run(f"trial {t.number}", seed, value)
            if error:
                cand.errors.append(f"seed {seed}: {error}"[:300])
            cand.seeds.append(seed)
            cand.values.append(value)
            cand.test_values.append(test)
        candidates.append(cand)
    direction = direction_of(study)
    result = Confirmation(top_k, seeds, direction, candidates, recommend(candidates, direction).trial)
    study.set_user_attr(StudyKey.CONFIRMATION, _json_safe(result.to_dict()))
    return result


def _confirmation_run(fit: FitFn, config: TrainConfig) -> tuple[float, float | None, str | None]:
    """One confirmation run: its validation and test values, and why it failed (None where it did not)."""
    try:
        value, test = fit(config)
    except TunerError:  # the objective changed, the data cannot load: not this config's fault
        raise
    except Exception as exc:  # a diverging or crashing re-run counts against its config
        from tuner.study._engine import RunFailed  # here, not above: a look at a study loads no torch

        return math.nan, None, str(exc) if isinstance(exc, RunFailed) else f"{type(exc).__name__}: {exc}"
    return float(value), None if test is None else float(test), None


def stored_runs(study: optuna.Study) -> dict[tuple[int, int], tuple[float, float | None, str | None]]:
    """The confirmation runs stored so far, by (trial, seed): (validation, test, error)."""
    data = study.user_attrs.get(StudyKey.CONFIRMATION_RUNS)
    runs = {}
    for row in data.get("runs", []) if isinstance(data, dict) else []:
        if isinstance(row, list) and len(row) == 5:
            trial, seed, value, test, error = row
            runs[int(trial), int(seed)] = (math.nan if value is None else float(value), test, error)
    return runs


def _store_runs(study: optuna.Study, runs: dict[tuple[int, int], tuple[float, float | None, str | None]]) -> None:
    study.set_user_attr(StudyKey.CONFIRMATION_RUNS, _json_safe(
        {"runs": [[trial, seed, value, test, error] for (trial, seed), (value, test, error) in runs.items()]}))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class Recommendation:
    """The config handed to the user, where it came from, and how good it is."""

    config: TrainConfig
    trial: int
    value: float  # the mean over confirmation seeds, or the trial's own value
    std: float | None
    test_value: float | None
    test_std: float | None
    source: str
    confirmation: Confirmation | None = None

    def metadata(self, study: optuna.Study, metric: str) -> dict[str, Any]:
        out: dict[str, Any] = {"study": study.study_name, "trial": self.trial, "metric": metric,
                               "direction": direction_of(study), "value": _json_safe(self.value)}
        if self.std is not None:
            out["value_std"] = self.std
        if self.test_value is not None:
            out["test_value"] = self.test_value
        if self.test_std is not None:
            out["test_std"] = self.test_std
        out["source"] = self.source
        trained = next((t for t in study.get_trials(deepcopy=False) if t.number == self.trial), None)
        accumulation = trained.user_attrs.get(Key.ACCUMULATION) if trained is not None else None
        if isinstance(accumulation, dict):  # how the study trained it: a note for whoever trains it next
            out["accumulation"] = (f"trained as {accumulation.get('steps')} micro-batches of "
                                   f"{accumulation.get('micro_batch')} per batch (gradient accumulation), where "
                                   f"the whole batch ran out of memory")
        return out


def recommendation(study: optuna.Study, fit: FitFn | None = None, *, trial: int | None = None, top_k: int = 3,
                   seeds: int = 3, study_seed: int = 0, confirm_runs: bool = True,
                   on_run: Callable[[str, int, float], None] | None = None) -> Recommendation:
    """The config to hand over: ``trial`` if given; else the confirmed best (stored, or computed with
    ``fit`` when ``confirm_runs``); else the best trial. A study with several objectives recommends the knee
    of its Pareto front (``tuner.study.knee``) as it is; ``trial`` takes any other point. The config carries
    the study's direction (the plateau schedule's mode where it is used)."""
    rec = _recommendation(study, fit, trial=trial, top_k=top_k, seeds=seeds, study_seed=study_seed,
                          confirm_runs=confirm_runs, on_run=on_run)
    rec.config.direction = direction_of(study)
    return rec


def _recommendation(study: optuna.Study, fit: FitFn | None = None, *, trial: int | None = None, top_k: int = 3,
                    seeds: int = 3, study_seed: int = 0, confirm_runs: bool = True,
                    on_run: Callable[[str, int, float], None] | None = None) -> Recommendation:
    if trial is None and len(study.directions) > 1:
        from tuner.study._record import knee, objectives_of

        point = knee(study)
        if point is None:
            raise StudyError(f"Study {study.study_name!r} has no complete trial to recommend.")
        rec = recommendation(study, trial=point.number)
        rec.source = f"the knee of the Pareto front of {' vs '.join(objectives_of(study))}"
        return rec
    if trial is not None:
        frozen = trial_with_config(study, trial)
        return Recommendation(TrainConfig.from_dict(frozen.user_attrs[Key.CONFIG]), trial, primary(frozen), None,
                              frozen.user_attrs.get(Key.TEST_VALUE), None,
                              f"trial {trial} ({frozen.state.name.lower()})")
    if confirm_runs and fit is not None:
        conf = confirm(study, fit, top_k=top_k, seeds=seeds, study_seed=study_seed, on_run=on_run)
    else:  # nothing re-trained: a stored confirmation stands while it covers the present top trials
        conf = current_confirmation(study)
    if conf is not None:
        best = conf.best
        source = (f"best mean of the top {count(len(conf.candidates), 'trial')} re-trained with "
                  f"{count(conf.n_seeds, 'new seed')} each")
        if best.ran < len(best.values):  # every top trial failed on some seed
            source += (f"; every one failed or diverged on some seed, and this one trained on {best.ran} of "
                       f"{len(best.values)} (its mean is theirs; {best.errors[0] if best.errors else 'not finite'})")
        return Recommendation(TrainConfig.from_dict(best.config), best.trial, best.mean_of_runs, best.std,
                              best.test_mean, best.test_std, source, conf)
    ranked = complete_trials(study)
    if not ranked:
        raise StudyError(f"Study {study.study_name!r} has no complete trial to recommend.")
    best_t = ranked[0]
    return Recommendation(TrainConfig.from_dict(best_t.user_attrs[Key.CONFIG]), best_t.number, primary(best_t), None,
                          best_t.user_attrs.get(Key.TEST_VALUE), None, f"best trial ({best_t.number}), not re-run")


BASELINE = "prodigy"  # the tuning-free method a tuned config is compared with
BASELINE_KEY = "tuner:tuning_free_baseline"


@dataclass
class Baseline:
    """A tuning-free method at its defaults, trained with the recommended config's batch size and epochs on the
    confirmation seeds: what the config would score without any tuning."""

    config: dict[str, Any]
    seeds: list[int]
    values: list[float]
    tests: list[float | None]
    errors: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        return statistics.fmean(finite) if finite else math.nan

    @property
    def std(self) -> float | None:
        finite = [v for v in self.values if math.isfinite(v)]
        return statistics.stdev(finite) if len(finite) > 1 else None

    @property
    def test_mean(self) -> float | None:
        tests = [t for t in self.tests if t is not None and math.isfinite(t)]
        return statistics.fmean(tests) if tests else None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "seeds": self.seeds, "values": self.values, "tests": self.tests,
                "errors": self.errors}


def tuning_free_baseline(study: optuna.Study, fit: FitFn | None, rec: Recommendation, seeds: int,
                         study_seed: int = 0, on_run: Callable[[str, int, float], None] | None = None
                         ) -> Baseline | None:
    """Prodigy at its defaults (lr 1, constant schedule, no weight decay, the model's own dropout), with the
    recommendation's batch size and epochs, over the seeds the confirmation used; stored in the study and
    reused. None where Prodigy is not installed, or where nothing is stored and ``fit`` is None."""
    from tuner.optim import get_optimizer

    seed_list = confirmation_seeds(study_seed, seeds)
    config = _baseline_config(rec.config)
    stored = study.user_attrs.get(BASELINE_KEY)
    if isinstance(stored, dict) and stored.get("config") == config and stored.get("seeds") == seed_list:
        # Read back as stored: nothing is built, so Prodigy's package (and PyTorch with it) is not imported.
        return Baseline(stored["config"], stored["seeds"], stored["values"], stored["tests"], stored.get("errors", []))
    if fit is None or not get_optimizer(BASELINE).available:
        return None
    out = Baseline(config, seed_list, [], [])
    for seed in seed_list:
        try:
            value, test = fit(TrainConfig.from_dict({**config, "seed": seed}))
        except TunerError:
            raise
        except Exception as exc:  # a diverging run counts as such, as in the confirmation
            value, test = math.nan, None
            out.errors.append(f"seed {seed}: {type(exc).__name__}: {exc}"[:300])
        out.values.append(float(value))
        out.tests.append(test)
        if on_run is not None:
            on_run(f"{BASELINE} (tuning-free baseline)", seed, float(value))
    with contextlib.suppress(Exception):  # a study opened read-only keeps nothing; the line is still written
        study.set_user_attr(BASELINE_KEY, _json_safe(out.to_dict()))
    return out


def stored_baseline_line(study: optuna.Study) -> str | None:
    """The report's "tuned vs tuning-free" line, where the study stores both a confirmation that covers its
    present top trials and the tuning-free runs beside it (``study show`` repeats it); None otherwise. Nothing
    is trained."""
    rec = recommendation(study, confirm_runs=False)  # the stored confirmation, where it is current
    if rec.confirmation is None:
        return None
    seed = int((study.user_attrs.get(StudyKey.SPEC) or {}).get("seed") or 0)
    baseline = tuning_free_baseline(study, None, rec, rec.confirmation.n_seeds, seed)
    if baseline is None:
        return None
    return baseline_line(rec, baseline, study.user_attrs.get(StudyKey.METRIC) or "value", direction_of(study))


def _baseline_config(recommended: TrainConfig) -> dict[str, Any]:
    """The tuning-free config trained beside a recommendation: its batch size and epochs, nothing tuned."""
    return {"optimizer": {"name": BASELINE}, "schedule": {"name": "constant"},
            "batch_size": recommended.batch_size, "epochs": recommended.epochs}


def baseline_line(rec: Recommendation, baseline: Baseline, metric: str, direction: str) -> str:
    """One line: what tuning bought over the tuning-free method at its defaults."""
    def pm(mean: float | None, std: float | None) -> str:
        if mean is None or not math.isfinite(mean):
            return "-"
        return f"{mean:.4f}" + (f" ± {std:.2g}" if std is not None else "")  # the spread as the tables show it

    tuned = pm(rec.value, rec.std) + ("" if rec.confirmation is not None else " (one trial, not re-run)")
    test = f" (test {rec.test_value:.4f})" if rec.test_value is not None else ""
    base_test = f" (test {baseline.test_mean:.4f})" if baseline.test_mean is not None else ""
    gain = rec.value - baseline.mean if math.isfinite(baseline.mean) else math.nan
    if direction == "minimize":
        gain = -gain
    bought = f"tuning bought {gain:+.4f}" if math.isfinite(gain) else "every baseline run failed"
    # The standard error of the difference of the two means, where both were measured over several seeds
    n_tuned = (len([v for v in rec.confirmation.best.values if math.isfinite(v)])
               if rec.confirmation is not None else 1)
    n_base = len([v for v in baseline.values if math.isfinite(v)])
    from tuner.study._record import within_noise

    noise = within_noise(gain, rec.std, n_tuned, baseline.std, n_base)
    if noise is not None:
        bought += (f", within the spread of the seeds (twice the standard error of the difference is "
                   f"{noise:.2g}): these runs do not tell the two apart")
    elif math.isfinite(gain) and gain < 0:
        # Not a recommendation to pass over in silence: the default beat what the study found.
        bought += (" - Prodigy at its defaults did better than the tuned config: train with it, or run the study "
                   "longer, over wider ranges where its best trials sit at an edge (the report's narrowed space widens "
                   f"them; it needs at least {MIN_TOP} complete trials)")
    failed = f"; {len(baseline.errors)} baseline run(s) failed" if baseline.errors else ""
    return (f"tuned vs tuning-free: the recommended config scores validation {metric} {tuned}{test} against "
            f"{pm(baseline.mean, baseline.std)}{base_test} for Prodigy at its defaults (lr 1, constant schedule, no "
            f"weight decay; batch size {baseline.config['batch_size']}, {baseline.config['epochs']} epochs) on the "
            f"same {'seed' if len(baseline.seeds) == 1 else f'{len(baseline.seeds)} seeds'}: {bought}{failed}")
