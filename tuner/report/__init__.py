"""What a study found: importances, plots, the recommended config, a narrowed space, and the report files.

Example:
    >>> from tuner.report import write_report
    >>> paths = write_report(study, "report/", fit=study_fit(study, storage_url))
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

from tuner._report_files import is_report_folder
from tuner.errors import StudyError, TunerError, count
from tuner.report._analysis import (
    EVALUATORS,
    Importance,
    complete_trials,
    importances,
    narrow_space,
    per_optimizer_best,
    trials_frame,
)
from tuner.report._confirm import (
    Candidate,
    Confirmation,
    FitFn,
    Recommendation,
    _json_safe,
    confirm,
    confirmation_is_stored,
    recommend,
    recommendation,
    stored_confirmation,
)
from tuner.study._limits import oom_notes
from tuner.study._record import Key, StudyKey, direction_of, objectives_of, primary, stopped_early
from tuner.study._spec import OBJECTIVE_OPTIONS

__all__ = [
    "CONFIRMATION_ATTR",
    "EVALUATORS",
    "Candidate",
    "Confirmation",
    "FitFn",
    "Importance",
    "Recommendation",
    "confirm",
    "confirmation_is_stored",
    "importances",
    "narrow_space",
    "per_optimizer_best",
    "recommend",
    "recommendation",
    "stored_confirmation",
    "study_fit",
    "study_recommendation",
    "open_for_recommendation",
    "export_recommendation",
    "trials_frame",
    "write_report",
]

log = logging.getLogger(__name__)

CONFIRMATION_ATTR = StudyKey.CONFIRMATION  # the study attribute that holds the stored confirmation


class _StudyFit:
    """Trains a config on the study's own objective (loaded lazily from the stored spec)."""

    def __init__(self, study: optuna.Study, storage_url: str | None) -> None:
        self.study, self.storage_url = study, storage_url
        self._prepared: Any = None

    def prepared(self) -> Any:
        if self._prepared is None:
            from tuner.study import prepare, stored_spec
            from tuner.study._engine import use_threads
            from tuner.study._prepare import check_objective

            spec, space = stored_spec(self.study.study_name, self.storage_url)
            prepared = prepare(spec, space_data=space)
            check_objective(self.study, prepared)  # confirmation runs on changed data would not compare
            use_threads(prepared.trainer, prepared.spec.threads)
            self._prepared = prepared
        return self._prepared

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.prepared().trainer.data.x_train) / batch_size)

    def __call__(self, config: Any) -> tuple[float, float | None]:
        from tuner.study._engine import run_study_config

        return run_study_config(self.study, self.prepared().executor(), config)


def batches_per_epoch(study: optuna.Study, fit: Any, batch_size: int) -> tuple[int, bool]:
    """The batches in an epoch of the study's objective at ``batch_size`` (from its loaded data, else from the
    training set's size stored with the study), and whether it is an assumption (100: a ``tuner.tune`` study,
    whose loop is the user's own)."""
    rows = (study.user_attrs.get(StudyKey.OBJECTIVE_FINGERPRINT) or {}).get("train_shape") or [None]
    if isinstance(fit, _StudyFit) and fit._prepared is not None:
        return fit.steps_per_epoch(batch_size), False
    if isinstance(rows[0], int) and rows[0] > 0:
        return math.ceil(rows[0] / batch_size), False
    return 100, True


def open_for_recommendation(name: str, storage: str | None, *, confirm: bool, trial: int | None = None,
                            top_k: int = 3, seeds: int = 3, what: str = "nothing to report",
                            study: optuna.Study | None = None) -> optuna.Study:
    """A study opened to read only, unless confirmation runs will have to store their result in it. A study
    without a complete trial is refused here (``what``: what it cannot give), before anything is announced.
    ``study``: the study as the caller already opened it to read (else it is opened here)."""
    from tuner.study._open import open_study

    study = study or open_study(name, storage)
    if trial is None and not complete_trials(study):
        raise StudyError(no_complete_trial(study, storage, what))
    if confirm and trial is None and not confirmation_is_stored(study, top_k, seeds):
        study = open_study(name, storage, readonly=False)
    return study


def export_recommendation(study: optuna.Study, rec: Recommendation, fmt: str) -> str:
    """The text of ``tuner study export``: the recommended config with where it came from (YAML or JSON, for
    ``tuner.load_config``), or a plain-torch script (``python``) or a Keras 3 one (``keras``)."""
    from tuner.export import export_text

    meta = rec.metadata(study, _metric(study))
    return export_text(rec, _json_safe(meta) if fmt == "json" else meta, fmt, f"study {study.study_name!r}")


def study_fit(study: optuna.Study, storage_url: str | None = None) -> _StudyFit | None:
    """A ``fit(config)`` that re-trains on the study's objective, or None for studies not created from a
    spec (``tuner.tune`` studies: pass their ``train_fn`` to ``tuner.confirm`` instead)."""
    spec = study.user_attrs.get(StudyKey.SPEC) or {}
    return _StudyFit(study, storage_url) if spec.get("objective") else None


def _metric(study: optuna.Study) -> str:
    return study.user_attrs.get(StudyKey.METRIC) or "value"


def study_recommendation(study: optuna.Study, storage_url: str | None = None, *, trial: int | None = None,
                         top_k: int = 3, seeds: int = 3, confirm_runs: bool = True,
                         on_run: Callable[[str, int, float], None] | None = None,
                         fit: _StudyFit | None = None) -> Recommendation:
    """The recommendation of a study created by ``tuner study create``: confirmed by re-training on its
    objective unless stored already (or ``confirm_runs=False``); ``fit`` reuses a prepared ``study_fit``."""
    spec = study.user_attrs.get(StudyKey.SPEC) or {}
    fit = (fit or study_fit(study, storage_url)) if confirm_runs else None
    return recommendation(study, fit, trial=trial, top_k=top_k, seeds=seeds, study_seed=int(spec.get("seed") or 0),
                          confirm_runs=confirm_runs, on_run=on_run)


def followup_command(study: optuna.Study, space_file: str | Path, storage_url: str | None = None) -> str:
    """The command that runs a follow-up study over ``space_file`` (the report's narrowed space), as it can
    be typed: the study's objective, epochs, budget and search settings, a study name not yet taken in the
    storage, and ``--storage`` where it is not the default. For a ``tuner.tune`` study: the Python call."""
    import shlex

    from tuner.study._spec import StudySpec
    from tuner.study._storage import default_storage, storage_hint

    spec = dict(study.user_attrs.get(StudyKey.SPEC) or {})
    taken = set(optuna.get_all_study_names(study._storage))
    name = f"{study.study_name}-narrowed"
    n = 2
    while name in taken:
        name, n = f"{study.study_name}-narrowed-{n}", n + 1
    if not spec.get("objective"):
        return _followup_call(study, space_file, name, storage_url)
    args = ["tuner", "study", "create", "--objective", spec["objective"]]
    for key in OBJECTIVE_OPTIONS:
        if spec.get(key):
            args += [f"--{key}", str(spec[key])]
    args += ["--space", str(space_file), "--name", name]
    defaults = StudySpec.model_fields
    for key in ("sampler", "pruner", "n_trials", "epochs", "seed", "timeout", "objectives", "device", "on_oom"):
        value = spec.get(key)
        if value is None or isinstance(value, dict) or value == defaults[key].default:
            continue
        shown = ",".join(value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)
        args += [f"--{key.replace('_', '-')}", shown]
    url = storage_url or default_storage()
    return shlex.join(args) + storage_hint(url, given=url != default_storage())


def _followup_call(study: optuna.Study, space_file: str | Path, name: str, storage_url: str | None) -> str:
    """The ``tuner.tune`` call of a follow-up to a ``tune`` study: the settings it was tuned with (function,
    metric and direction, epochs, seed, sampler, pruner, objectives) where they are not ``tune``'s defaults, so
    that the follow-up's values compare with the study's and it is tuned the same way, and its budget."""
    from tuner._tune_settings import TUNE_DEFAULTS, TUNE_N_TRIALS, resolve_direction
    from tuner.study._record import FINISHED, direction_of

    stored = dict(study.user_attrs.get(StudyKey.TUNE) or {})
    metric = study.user_attrs.get(StudyKey.METRIC) or "value"
    function = stored.get("function")
    fn = function if stored.get("plain_function") and isinstance(function, str) and function.isidentifier() \
        else "train_fn"
    args = [fn, f"space={str(space_file)!r}", f"study_name={name!r}"]
    if storage_url and ("://" in storage_url or storage_url.startswith("journal:")):
        args.append(f"storage={storage_url!r}")
    # As many trials as the study finished (tune()'s budget counts complete and pruned ones), not tune()'s 30.
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if finished and finished != TUNE_N_TRIALS:
        args.append(f"n_trials={finished}")
    if metric != TUNE_DEFAULTS["metric"]:
        args.append(f"metric={metric!r}")
    direction = direction_of(study)
    if resolve_direction(metric, "auto")[0] != direction:
        args.append(f"direction={direction!r}")
    for key in ("epochs", "seed", "sampler", "pruner", "objectives"):
        value = stored.get(key)
        if value is None or value == TUNE_DEFAULTS[key] or key == "objectives" and len(value) < 2:
            continue
        args.append(f"{key}={value!r}")
    return f"tuner.tune({', '.join(args)})"


def no_complete_trial(study: optuna.Study, storage_url: str | None, what: str) -> str:
    """Why a study without a complete trial has nothing to give, and what to do: where its trials all failed,
    their commonest reason (running it again would fail the same way), else the command that runs it."""
    from collections import Counter

    from tuner.study._record import StopKind, record_of
    from tuner.study._storage import study_command

    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    head = f"Study {study.study_name!r} has no complete trial: {what}."
    tune = StudyKey.TUNE in study.user_attrs
    run = ("call tuner.tune() again with its storage and study_name" if tune
           else f"run it with `{study_command('run', study.study_name, storage_url)}`")
    stopped = (StopKind.INTERRUPTED, StopKind.TIMEOUT, StopKind.WORKER_LOST, StopKind.STORAGE)
    faults = [r for t in finished if (r := record_of(t)).reason is None or r.reason.kind not in stopped]
    if finished and faults:  # every finished trial failed or was pruned, not all of them for want of time
        reasons = Counter(r.reason.group if r.reason else "no reason recorded" for r in faults)
        reason, count = reasons.most_common(1)[0]
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in finished)
        ended = ("failed" if not pruned else "were pruned" if pruned == len(finished)
                 else "failed or were pruned")
        # Pruned trials count toward the budget: where they used it up, running the study as it is runs nothing,
        # so the hint raises it by one more round of that size (a study with budget left is told to run).
        budget = (study.user_attrs.get(StudyKey.SPEC) or {}).get("n_trials")
        if pruned and (tune or not isinstance(budget, int) or pruned >= budget):
            more = pruned + (budget if isinstance(budget, int) and not tune else pruned)
            run = (f"call tuner.tune() again with its storage and study_name and n_trials={more}" if tune else
                   f"run it with a larger budget: `{study_command('run', study.study_name, storage_url)} "
                   f"--n-trials {more}`")
        show = f"`{study_command('show', study.study_name, storage_url)}` lists the reasons"
        if reason.startswith(StopKind.DIVERGED.value):
            # A study keeps the space it was created with: lower rates need a new study, not more trials.
            return f"{head} All {len(finished)} finished trial(s) {ended} ({count} with: {reason}); " + (
                "the learning rates the space searches are too high: call tuner.tune() with a space of lower "
                "ones and another study_name" if tune else _lower_rates_hint(study, storage_url)) + f" ({show})."
        return (f"{head} All {len(finished)} finished trial(s) {ended} ({count} with: {reason}); fix that, then "
                f"{run} ({show}).")
    return f"{head} To go on, {run}."


def thin_importance_notes(imps: list[Any], complete: int, few: int = 3, top: int = 3) -> list[str]:
    """A caution for each of the ``top`` ranked parameters that ``few`` complete trials or fewer have (an
    optimizer's own hyperparameter, where that optimizer was seldom drawn): its share rests on them alone."""
    notes = []
    for imp in imps[:top]:
        n = round(imp.present * complete)
        if imp.conditional and n <= few:
            notes.append(f"importance of {imp.name} ({imp.importance:.3f}) rests on the {count(n, 'complete trial')} "
                         f"that have it: too few to tell how much it matters")
    return notes


def _lower_rates_hint(study: optuna.Study, storage_url: str | None) -> str:
    """For a study whose trials all diverged: the LR range test that finds rates which train, and the new study
    on its space (running this one again would run its space again)."""
    import shlex

    from tuner.study._storage import default_storage, storage_hint

    spec = study.user_attrs.get(StudyKey.SPEC) or {}
    objective = ["--objective", str(spec.get("objective") or "OBJECTIVE")] + [
        f"--{key}={spec[key]}" for key in OBJECTIVE_OPTIONS if spec.get(key) is not None]
    space = spec.get("space") if isinstance(spec.get("space"), str) else "SPACE.yaml"
    url = storage_url or default_storage()
    calibrate = shlex.join(["tuner", "spaces", "calibrate", space, *objective, "-o", "calibrated.yaml"])
    create = shlex.join(["tuner", "study", "create", *objective, "--space", "calibrated.yaml", "--name",
                         f"{study.study_name}-calibrated"]) + storage_hint(url, given=url != default_storage())
    return (f"the learning rates the space searches are too high, and a study keeps the space it was created "
            f"with: `{calibrate}` writes one whose rates train (an LR range test), and `{create}` tunes it")


def write_report(study: optuna.Study, out_dir: str | Path, *, storage_label: str = "", fit: FitFn | None = None,
                 evaluator: str = "ped-anova", top_k: int = 3, seeds: int = 3, confirm_runs: bool = True,
                 steps_per_epoch: int | None = None, storage_url: str | None = None, followup: str | None = None,
                 on_run: Callable[[str, int, float], None] | None = None) -> dict[str, Path]:
    """Writes ``report.md``, ``report.html`` (self-contained), the PNG plots, ``recommended.yaml`` and
    ``narrowed-space.yaml`` into ``out_dir``; returns the files by name.

    ``fit(config) -> (validation, test)`` re-trains configs for the confirmation runs; without it a stored
    confirmation is used, else the best trial.
    """
    from tuner._files import atomic_folder

    if evaluator not in EVALUATORS:
        from tuner.errors import ConfigError

        raise ConfigError(f"Unknown importance evaluator {evaluator!r}. Valid choices: {', '.join(EVALUATORS)}.")
    if not complete_trials(study):
        raise StudyError(no_complete_trial(study, storage_url, "nothing to report"))
    # Written into a temporary folder beside ``out_dir`` and renamed into place when complete: an interrupted
    # report leaves no half folder, and an earlier report is replaced whole.
    with atomic_folder(out_dir, ours=is_report_folder) as tmp:
        files = _write_report(study, tmp, storage_label=storage_label, fit=fit, evaluator=evaluator, top_k=top_k,
                              seeds=seeds, confirm_runs=confirm_runs, steps_per_epoch=steps_per_epoch,
                              on_run=on_run, storage_url=storage_url,
                              followup=followup or followup_command(study, Path(out_dir) / "narrowed-space.yaml",
                                                                    storage_url))
    return {name: Path(out_dir) / path.relative_to(tmp) for name, path in files.items()}


def _space_notes(study: optuna.Study, raw_space: Any) -> list[str]:
    """How to read the space's parameters: a normalised learning rate, lr ranges from an LR range test."""
    notes = []
    if isinstance(raw_space, dict) and raw_space.get("lr_scaling"):
        from tuner.spaces import SearchSpace

        with contextlib.suppress(TunerError):
            scaling = SearchSpace.from_dict(raw_space).lr_scaling
            if scaling is not None:
                notes.append(f"the space samples the {scaling.describe()}: the <optimizer>.lr parameters in "
                             f"the importances, the slices and the parallel coordinates are normalised rates; the "
                             f"plot of the metric against the learning rate per batch size, the configs and the "
                             f"exports hold the rate trained with")
    calibration = study.user_attrs.get(StudyKey.CALIBRATION)
    if isinstance(calibration, dict) and isinstance(calibration.get("ranges"), dict):
        lines = [str(v.get("line")) for v in calibration["ranges"].values() if isinstance(v, dict)]
        notes.append(f"lr ranges came from an LR range test at batch size {calibration.get('batch_size')}: "
                     + "; ".join(lines))
    return notes


def _write_report(study: optuna.Study, out: Path, *, storage_label: str, fit: FitFn | None, evaluator: str,
                  top_k: int, seeds: int, confirm_runs: bool, steps_per_epoch: int | None,
                  on_run: Callable[[str, int, float], None] | None, followup: str,
                  storage_url: str | None = None) -> dict[str, Path]:
    from tuner.report._plots import draw_all
    from tuner.report._render import ReportData, reason_counts, render_html, render_markdown
    from tuner.study import counts

    spec = dict(study.user_attrs.get(StudyKey.SPEC) or {})
    metric = _metric(study)
    notes: list[str] = []
    rec = recommendation(study, fit, top_k=top_k, seeds=seeds, study_seed=int(spec.get("seed") or 0),
                         confirm_runs=confirm_runs, on_run=on_run)
    if len(study.directions) > 1:
        from tuner.study._record import pareto_front
        from tuner.study._storage import study_command

        front = pareto_front(study)
        mine = next((t.values for t in front if t.number == rec.trial), None)
        other = next((t.number for t in front if t.values != mine), None)  # not a twin of the knee
        if other is None:
            another = ""
        elif spec.get("objective"):
            another = (f" (another point, trial {other} for one: "
                       f"`{study_command('export', study.study_name, storage_url, '--trial', str(other))}`)")
        else:  # a tuner.tune study: its train function is the caller's
            another = f" (another point, trial {other} for one: result.recommend(trial={other}))"
        notes.append(f"the recommendation is {rec.source}: a point of the front is not re-trained with other seeds"
                     + another)
        notes.append("tuned vs tuning-free: not compared (that comparison re-trains the recommendation with new "
                     "seeds, which a point of a Pareto front is not)")
    elif rec.confirmation is None:
        remedy = ("; `result.recommend()` of tuner.tune() re-trains the top trials with new seeds in your code"
                  if StudyKey.TUNE in study.user_attrs else "")
        notes.append("the recommendation is the best single trial: its config was not re-trained with other seeds"
                     + remedy)
    if rec.confirmation is not None:
        from tuner.optim import get_optimizer
        from tuner.report._confirm import BASELINE, baseline_line, tuning_free_baseline

        # Trained here with the confirmation, or the one stored with it (report --no-confirm).
        baseline = tuning_free_baseline(study, fit if confirm_runs else None, rec, rec.confirmation.n_seeds,
                                        int(spec.get("seed") or 0), on_run=on_run)
        if baseline is not None:
            notes.append(baseline_line(rec, baseline, metric, direction_of(study)))
        elif not get_optimizer(BASELINE).available:
            notes.append("tuned vs tuning-free: not compared (pip install prodigyopt for Prodigy)")
        elif StudyKey.TUNE in study.user_attrs:
            notes.append("tuned vs tuning-free: not compared (the training function of a tuner.tune() study runs "
                         "only in your code)")
        else:
            notes.append("tuned vs tuning-free: not compared (nothing re-trained, and no comparison stored for "
                         "this recommendation)")
    files: dict[str, Path] = {}
    files["recommended.yaml"] = rec.config.save(out / "recommended.yaml", **rec.metadata(study, metric))
    try:
        imps = importances(study, evaluator)
    except TunerError as exc:
        imps = []
        notes.append(f"importances not computed: {exc}")
    notes += thin_importance_notes(imps, counts(study)["COMPLETE"])
    if imps and len(study.directions) > 1:  # computed on the metric alone: not what drives the trade-off
        notes.append(f"importances are of validation {metric} alone, not of the trade-off against "
                     f"{', '.join(objectives_of(study)[1:])}")
    stop = stopped_early(study)
    if stop:
        notes.append(f"the study stopped early, short of its budget, after {stop}")
    from tuner.study._record import tie_at_top, tie_text

    tie = tie_at_top(study)
    if tie is not None:
        notes.append(tie_text(*tie))
    per_opt = []
    for name, t in per_optimizer_best(study).items():
        from tuner.config import TrainConfig

        per_opt.append({"optimizer": name, "trial": t.number, "value": primary(t),
                        "test_value": t.user_attrs.get(Key.TEST_VALUE),
                        "summary": TrainConfig.from_dict(t.user_attrs[Key.CONFIG]).summary()})
    from tuner.report._analysis import optimizers_without_complete

    for name, ended in optimizers_without_complete(study).items():
        per_opt.append({"optimizer": name, "trial": "-", "value": None, "test_value": None,
                        "summary": f"no complete trial ({ended})"})
    narrowed_yaml, narrowed_notes = None, []
    raw_space = study.user_attrs.get(StudyKey.SPACE)
    notes += _space_notes(study, raw_space) + oom_notes(study)
    if raw_space:
        try:
            narrowed, narrowed_notes = narrow_space(study, raw_space, anchor=rec.trial)
            narrowed["description"] = f"narrowed from study {study.study_name!r} around its best trials"
            narrowed_yaml = yaml.safe_dump(narrowed, sort_keys=False, allow_unicode=True)
            files["narrowed-space.yaml"] = out / "narrowed-space.yaml"
            files["narrowed-space.yaml"].write_text(narrowed_yaml, encoding="utf-8")
        except TunerError as exc:
            notes.append(f"no narrowed space: {exc}")
    if narrowed_yaml is None:  # the narrowed space's notes say the edges where there is one; else they are said here
        from tuner.study._describe import edge_notes

        notes += [f"at the edge of the space (trial {rec.trial}): {note}; widen that end in the space file by "
                  f"hand, or run more trials for a narrowed space that widens it"
                  for note in edge_notes(study, rec.trial)]
    assumed = False
    if steps_per_epoch is None:
        steps_per_epoch, assumed = batches_per_epoch(study, fit, rec.config.batch_size)
    plots, skipped = draw_all(study, out, metric, imps, evaluator, rec.config, steps_per_epoch, assumed,
                              recommended=rec.trial)
    files.update({p.name: p for p in plots.values()})
    data = ReportData(study, metric, storage_label, spec, {k: v for k, v in counts(study).items()},
                      reason_counts(study), rec, per_opt, imps, evaluator, narrowed_yaml, narrowed_notes, plots,
                      skipped, notes, followup=followup)
    files["report.md"] = render_markdown(data, out)
    files["report.html"] = render_html(data, out)
    return files

