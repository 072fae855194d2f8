"""Checks a spec completely, then creates, joins or opens its Optuna study.

Everything that can be wrong with the user's input (names, ranges, data, batch sizes, sampler options) is
checked before the storage is touched, so a bad spec leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tuner._surface import option
from tuner._version import __version__
from tuner.errors import ConfigError, StudyError, TunerError, unknown_name_message
from tuner.objectives import Objective, load_objective
from tuner.spaces import SearchSpace, load_space
from tuner.study._engine import RunPlan, TrainerExecutor
from tuner.study._open import describe_kind, open_study, stored_spec, study_kind
from tuner.study._record import StudyKey
from tuner.study._samplers import build_pruner, build_sampler, option_name, pruner_notes, refuse_for_several_objectives
from tuner.study._spec import DEFAULT_PRUNER, IDENTITY_FIELDS, StudySpec
from tuner.study._storage import (
    check_storage,
    default_storage,
    explain_storage_error,
    mask_url,
    open_storage,
    storage_exists,
    storage_lock,
    study_command,
    study_in_storage,
)
from tuner.train import Trainer

__all__ = ["PreparedStudy", "prepare", "create_or_join", "open_study", "stored_spec", "study_kind",
           "objective_changes"]

log = logging.getLogger(__name__)

GRID_LIMIT = 100_000
MAX_THREADS_PER_CORE = 4


@dataclass
class PreparedStudy:
    """A validated spec with everything built from it: the study can be created and trials run."""

    spec: StudySpec
    space: SearchSpace
    objective: Objective
    trainer: Trainer
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    grid: list[dict[str, Any]]
    objective_fingerprint: dict[str, Any] = field(default_factory=dict)
    #: the LR range test that calibrated the space (``calibrate: true`` on a new study), else None
    calibration: Any = None
    #: configs queued as the first trials of a new study (enqueue, warm_start, known_starts), and notes
    starts: list[Any] = field(default_factory=list)
    start_notes: list[str] = field(default_factory=list)
    #: what was changed in the space to fit the objective (batch sizes larger than its training set)
    space_notes: list[str] = field(default_factory=list)
    #: the starts queued by ``create_or_join`` (empty when it joined an existing study)
    queued: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.study_name

    @property
    def storage_url(self) -> str:
        return self.spec.storage or default_storage()

    @property
    def direction(self) -> str:
        return self.objective.direction

    @property
    def objectives(self) -> list[str]:
        """The study's objectives: the objective's metric, then ``train_seconds`` where the spec asks for it."""
        return [self.objective.metric, *self.spec.objectives[1:]] if self.spec.objectives else [self.objective.metric]

    @property
    def directions(self) -> list[str]:
        return [self.direction] + ["minimize" for _ in self.objectives[1:]]

    def plan(self) -> RunPlan:
        """What the trial engine needs to run this study's trials."""
        spec = self.spec
        return RunPlan(name=self.name, storage_url=self.storage_url, space=self.space, epochs=spec.epochs,
                       seed=spec.seed, n_trials=spec.n_trials, timeout=spec.timeout,
                       heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_period,
                       pruner_name=spec.pruner_name, sampler_name=spec.sampler_name,
                       objectives=self.objectives, on_oom=spec.on_oom)

    def executor(self) -> TrainerExecutor:
        return TrainerExecutor(self.trainer)

    def preparation_lines(self) -> list[str]:
        """What preparing the study did, in lines for people: space notes, the LR calibration, first trials."""
        lines = list(self.space_notes)
        if self.calibration is not None:
            found = self.calibration
            lines.append(f"lr ranges calibrated by an LR range test (batch size {found.batch_size}, "
                         f"{found.seconds:.1f}s):")
            lines += [f"  note: {note}" for note in found.notes]
            for curve in found.curves.values():
                first, *notes = curve.lines()
                lines += ["  " + first + ("" if curve.found else " - kept the space's range")]
                lines += ["  " + note for note in notes]
            from tuner.lrfind import searched_line

            searched = searched_line(self.space, found)
            if searched:
                lines.append("  " + searched)
        if self.queued:
            lines.append(f"first trials ({len(self.queued)} queued):")
            lines += ["  " + start.source + (f" ({'; '.join(start.changes)})" if start.changes else "")
                      for start in self.queued]
        return lines + list(self.start_notes)

    def changes_lines(self) -> list[str]:
        """Of ``preparation_lines``, those saying that the study does not run what was asked as asked (a space
        fitted to the data or the model, a config the space changed or the budget left out): what a caller
        that prints nothing is warned of."""
        from tuner.study._starts import asked_for_and_changed

        changed, notes = asked_for_and_changed(self.queued, self.start_notes)
        return list(self.space_notes) + changed + notes


def prepare(spec: StudySpec, space_data: dict[str, Any] | None = None, *, track: bool = False) -> PreparedStudy:
    """Validates the spec and loads its objective, data and space; writes nothing. ``track``: a session will
    log to the spec's ``mlflow`` / ``tensorboard`` (or ``$TUNER_MLFLOW_URI``), whose packages and destinations
    are checked here too."""
    if track:
        from tuner.track import check_tracking

        check_tracking(spec.mlflow, spec.tensorboard)
    space = (SearchSpace.from_dict(space_data, name="stored", source=f"study {spec.study_name!r}")
             if space_data is not None else load_space(spec.space))
    objective = load_objective(spec.objective, **spec.objective_options())
    if spec.epochs is None:
        spec = spec.with_overrides(epochs=objective.trial_epochs)
    if spec.pruner is None:  # the objective's own (checked when the Objective was built), else median
        spec = spec.with_overrides(pruner=objective.pruner or DEFAULT_PRUNER)
    _check_threads(spec.threads)
    _check_objectives(spec, objective)
    space_notes = []
    if spec.objectives is not None and len(spec.objectives) < 2:
        spec = spec.model_copy(update={"objectives": None})  # the metric alone: as without the key
        space_notes.append(f"objectives: the metric alone, {objective.metric!r}: one objective, as without the key "
                           f"(a Pareto front of {objective.metric} against training time: "
                           f"{objective.metric},train_seconds)")
    _check_packages(space)
    trainer = Trainer(objective, device=spec.device)
    n_train = len(trainer.data.x_train)
    if space_data is None:  # a stored space already holds the study's batch sizes
        if spec.batch_size is not None:
            space = space.with_batch_sizes(spec.batch_size)
        given = f"batch_size ({option('batch-size')} or the spec's batch_size)" if spec.batch_size is not None else ""
        space, note = space.fit_batch_sizes(n_train, f"objective {objective.name!r}", where=given)
        space_notes += [note] if note else []
    space_notes += space.schedule_notes(spec.epochs) if spec.epochs else []
    output_shape = trainer.check_model()
    if space_data is None and not trainer.dropout_layers and not _stored_space_searches_dropout(spec):
        # A rate with nothing to act on: searching it would only add noise to the sampler and the importance.
        space, note = space.without_dropout(f"the model of objective {objective.name!r} has no nn.Dropout layer to "
                                            f"apply it to (add nn.Dropout where it should act to tune it)")
        space_notes += [note] if note else []
    calibration = None
    uncalibrated = space
    if spec.calibrate and space_data is None:
        space, calibration = _calibrated(spec, space, trainer)
    from tuner.study._starts import sampler_seed

    search = search_setup(space, spec.sampler, spec.pruner, seed=sampler_seed(spec.seed, spec.warm_start),
                          epochs=spec.epochs, n_trials=spec.n_trials, n_objectives=len(spec.objectives or [None]))
    space_notes += search.notes
    if search.n_trials != spec.n_trials:
        space_notes.append(f"n_trials: {spec.n_trials} asked, {search.n_trials} run: the grid over space "
                           f"{space.name!r} has {search.n_trials} points, each run once")
        spec = spec.with_overrides(n_trials=search.n_trials)
    sampler, pruner, grid = search.sampler, search.pruner, search.grid
    if grid and (spec.enqueue or spec.warm_start):
        raise ConfigError("sampler: grid runs the grid's own points: enqueue and warm_start do not apply (use "
                          "another sampler to try known configs first).")
    starts, start_notes = [], []
    if space_data is None:  # a study being created (one being continued has its trials)
        from tuner.study._starts import gather_starts

        # A grid runs its own points; a study that exists is joined and queues nothing (it says so).
        if spec.sampler_name != "grid" and not study_in_storage(spec.study_name, spec.storage):
            warm = spec.warm_start
            starts, start_notes = gather_starts(
                space, enqueue=spec.enqueue, warm_start=warm.study if warm else None,
                warm_storage=(warm.storage if warm and warm.storage else spec.storage or default_storage()),
                warm_top=warm.top if warm else 5, known=spec.known_starts, epochs=spec.epochs)
            if spec.known_starts and space is not uncalibrated:
                start_notes += _dropped_by_calibration(uncalibrated, space)
        for start in starts[:spec.n_trials]:  # those a new study's budget queues
            _check_batch(start.params.get("batch_size"), n_train, start.source, objective.name)
    return PreparedStudy(spec, space, objective, trainer, sampler, pruner, grid,
                         objective_fingerprint(objective, trainer, output_shape), calibration, starts,
                         start_notes, space_notes=space_notes)


def _stored_space_searches_dropout(spec: StudySpec) -> bool:
    """Whether a study of this name exists and its stored space holds the dropout rate: one created before a
    model without dropout layers had the rate left out, joined as it was made."""
    from tuner.study._open import stored_spec

    try:
        _, raw = stored_spec(spec.study_name, spec.storage)
    except TunerError:  # no such study (or storage): nothing to join
        return False
    regularization = raw.get("regularization") if isinstance(raw, dict) else None
    return isinstance(regularization, dict) and regularization.get("dropout") is not None


def not_queued_note(asked: list[str], name: str, url: str, warm_study: str | None, warm_url: str,
                    then: str = "") -> str:
    """Configs to try first (``asked``: enqueue, warm-start) given for a study that exists: what was not done,
    and the commands that do it (``study enqueue`` takes config files: another study's best config is
    exported to one first)."""
    enqueue = study_command("enqueue", name, url, "FILE.yaml")
    how = f"`{enqueue}` queues configs into it{then}"
    if warm_study is not None:
        exported = study_command("export", warm_study, warm_url, "--no-confirm", "-o", "best.yaml")
        how += (f"; for the best config of study {warm_study!r}: `{exported}`, then "
                f"`{study_command('enqueue', name, url, 'best.yaml')}`")
    return f"{' and '.join(asked)}: not queued, the study exists and they apply to a new one; {how}"


def _dropped_by_calibration(space: SearchSpace, calibrated: SearchSpace) -> list[str]:
    """The known-good points ``space`` holds that its calibrated ranges leave out, each with why: said where
    the study is created, not only by ``tuner spaces starts`` on the calibrated file."""
    from tuner.study._starts import KNOWN_STARTS, why_not_held

    return [f"known start {point.name} is not tried: in the calibrated space, {why}"
            for point in KNOWN_STARTS for why in [why_not_held(calibrated, point)]
            if why and not why_not_held(space, point)]


def _check_batch(batch_size: Any, n_train: int, source: str, objective: str) -> None:
    if isinstance(batch_size, int) and batch_size > n_train:
        raise ConfigError(f"enqueue: {source}: batch_size {batch_size} is larger than the {n_train} training "
                          f"samples of objective {objective!r}.")


def _calibrated(spec: StudySpec, space: SearchSpace, trainer: Trainer) -> tuple[SearchSpace, Any]:
    """The space with lr ranges from an LR range test, and the test; a study that exists already keeps the
    space it was calibrated with (a second test could differ a little, and the study's trials with it)."""
    from tuner.lrfind import calibrate_space, lr_find

    url = spec.storage or default_storage()
    if storage_exists(url):
        storage = open_storage(url, readonly=True)
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            if summary.study_name == spec.study_name and summary.user_attrs.get(StudyKey.SPACE):
                stored = summary.user_attrs[StudyKey.SPACE]
                return SearchSpace.from_dict(stored, name=f"{space.name} (calibrated)",
                                             source=f"study {spec.study_name!r}"), None
    from tuner.lrfind import replaced_rates

    result = lr_find(trainer.objective, space=space, trainer=trainer, seed=spec.seed)
    raw = calibrate_space(space, result)
    result.notes += replaced_rates(space, result)  # a rate the space fixed is searched now: said under the ranges
    return SearchSpace.from_dict(raw, name=f"{space.name} (calibrated)", source=space.source), result


def _check_packages(space: SearchSpace) -> None:
    """An optimizer from a package that is not installed is refused before the study exists."""
    from tuner.optim import get_optimizer

    for name in space.optimizer:
        info = get_optimizer(name)
        if not info.available:
            raise ConfigError(f"{space.source}: key 'optimizer.{name}': the {name!r} optimizer needs the "
                              f"{info.package!r} package: pip install {info.package} (or pip install -e "
                              f"'.[tuning-free]').")


SECOND_OBJECTIVES = ("train_seconds",)


def _check_objectives(spec: StudySpec, objective: Objective) -> None:
    """``objectives: [<the objective's metric>, train_seconds]``: what a study with several objectives trades."""
    if spec.objectives is None:
        return
    if not spec.objectives:
        raise ConfigError(f"objectives: name the objective's metric, {objective.metric!r}, then train_seconds "
                          f"(e.g. {objective.metric},train_seconds). Got none.")
    first, *rest = spec.objectives
    if first not in (objective.metric, "metric"):
        raise ConfigError(f"objectives: the first must be the objective's metric, {objective.metric!r} (pruning "
                          f"and ranking use it). Got {first!r} instead.")
    for name in rest:
        if name in (objective.metric, "metric"):
            raise ConfigError(f"objectives: {spec.objectives!r} names the metric, {objective.metric!r}, twice: "
                              f"name it first, then {', '.join(SECOND_OBJECTIVES)}.")
        if name not in SECOND_OBJECTIVES:
            raise ConfigError(f"objectives: after the metric {first!r}: "
                              + unknown_name_message("objective", name, SECOND_OBJECTIVES))
    if len(rest) != len(set(rest)):
        raise ConfigError(f"objectives: {spec.objectives!r} names one twice.")
    if rest and spec.pack not in ("auto", 1):
        raise ConfigError(f"objectives: train_seconds times each trial alone; pack: {spec.pack} would count a "
                          f"pack's time for each member. Use pack: 1 (or auto).")


def _check_threads(threads: int | None) -> None:
    cores = os.cpu_count() or 1
    limit = max(8, MAX_THREADS_PER_CORE * cores)
    if threads is not None and threads > limit:
        raise ConfigError(f"threads must be at most {limit} on this machine ({cores} cores). Got {threads} instead.")


@dataclass
class SearchSetup:
    """A study's sampler and pruner, built and tried; for a grid, its points (shuffled) and the budget capped
    at their number."""

    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    grid: list[dict[str, Any]]
    n_trials: int
    #: what the pruner will not do with these epochs (it judges none of them)
    notes: list[str] = field(default_factory=list)


def search_setup(space: SearchSpace, sampler: Any, pruner: Any, *, seed: int, epochs: int, n_trials: int,
                 n_objectives: int = 1) -> SearchSetup:
    """Builds the sampler and pruner (a name or a mapping with options) for ``space`` as every study does
    (``tuner study create``, ``tuner.tune``): a grid over too many points, a sampler with one objective in a
    study of several, and options Optuna only checks when it first samples or prunes are refused here, before
    any study exists."""
    sampler_name = option_name(sampler)
    if n_objectives > 1:
        refuse_for_several_objectives(sampler, pruner)
    grid: list[dict[str, Any]] = []
    if sampler_name == "grid":
        size = space.grid_size()  # counted before anything is built: a huge grid is refused at once
        if size > GRID_LIMIT:
            raise ConfigError(f"The grid over space {space.name!r} has {size:,} points (over {GRID_LIMIT:,}); "
                              f"use a smaller space or another sampler.")
        grid = space.grid_points()
        n_trials = min(n_trials, len(grid))
        # Spread a partial grid (n_trials below the grid's size) over the whole grid.
        random.Random(seed).shuffle(grid)
    context = {"seed": seed, "epochs": epochs, "multi": n_objectives > 1}
    built = SearchSetup(build_sampler(sampler, context), build_pruner(pruner, context), grid, n_trials)
    built.notes = pruner_notes(pruner, built.pruner, epochs or 0, n_trials)
    _dry_run(space, sampler, pruner, context, n_objectives)
    return built


def _dry_run(space: SearchSpace, sampler: Any, pruner: Any, context: dict[str, Any], n: int) -> None:
    """Asks a throwaway in-memory study for one trial with the study's own sampler and pruner: options that
    Optuna only checks when it first samples or prunes (``n_startup_trials: ten``) fail here, before the
    study exists, not as its first trial."""
    from tuner._logs import optuna_quiet

    try:
        with optuna_quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(sampler=build_sampler(sampler, context),
                                        pruner=build_pruner(pruner, context), directions=["maximize"] * n)
            trial = study.ask()
            space.sample(trial, epochs=context["epochs"] or 1, seed=0)
            if n == 1:
                trial.report(0.5, 0)
                trial.should_prune()
            study.tell(trial, [0.5] * n)
    except (ConfigError, StudyError):
        raise
    except Exception as exc:
        raise ConfigError(f"The {option_name(sampler)!r} sampler or the {option_name(pruner)!r} pruner cannot "
                          f"run with these options: {type(exc).__name__}: {exc}") from None


def objective_fingerprint(objective: Objective, trainer: Trainer, output_shape: tuple[int, ...]) -> dict[str, Any]:
    """What makes a study's values comparable: the objective's name, metric and direction, the model's output
    shape, the shapes of the data splits, and hashes of the validation targets and inputs."""
    data = trainer.cpu_data
    return {
        "name": objective.name,
        "metric": objective.metric,
        "direction": objective.direction,
        "output_shape": list(output_shape),
        "train_shape": list(data.x_train.shape),
        "validation_shape": list(data.x_val.shape),
        "test_shape": None if data.x_test is None else list(data.x_test.shape),
        "validation_targets": _digest(data.y_val),
        # Labels alone can coincide (a stratified split of balanced classes gives the same label sequence
        # for any data): the inputs are hashed too.
        "validation_inputs": _digest(data.x_val),
    }


HASHED_BYTES = 64 << 20  # past this, an evenly spaced sample of rows is hashed


def _digest(tensor: Any) -> str:
    values = tensor.detach().cpu().contiguous()
    if values.numel() * values.element_size() > HASHED_BYTES and len(values) > 1:
        row_bytes = values[0].numel() * values.element_size()
        step = max(1, (len(values) * row_bytes) // HASHED_BYTES)
        values = values[::step].contiguous()
    return hashlib.sha256(str((values.dtype, tuple(tensor.shape))).encode() + values.numpy().tobytes()
                          ).hexdigest()[:16]


_FINGERPRINT_LABELS = {"validation_targets": "validation targets", "validation_inputs": "validation inputs",
                       "output_shape": "model output shape",
                       "train_shape": "training data shape", "validation_shape": "validation data shape",
                       "test_shape": "test data shape"}


def objective_changes(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a study's stored objective fingerprint and the objective as it loads now."""
    if not stored:
        return []
    # Only what both know is compared: a study from a version that stored fewer keys is not refused for it.
    return [f"{_FINGERPRINT_LABELS.get(k, k)}: {stored.get(k)!r} -> {current.get(k)!r}"
            for k in current if k in stored and stored.get(k) != current.get(k)]


def check_objective(study: optuna.Study, prepared: PreparedStudy, force: bool = False) -> None:
    """Refuses to add trials (or confirmation runs) to a study whose objective changed since it was created:
    values of another metric, direction or data would be mixed with the old ones. ``force`` continues
    knowingly; the fingerprint is then updated and the old one kept in the study's history."""
    stored = study.user_attrs.get(StudyKey.OBJECTIVE_FINGERPRINT)
    current = prepared.objective_fingerprint
    if not current:
        return
    changes = objective_changes(stored, current)
    if not stored:
        with contextlib.suppress(Exception):  # a study from before fingerprints: record it now (if writable)
            study.set_user_attr(StudyKey.OBJECTIVE_FINGERPRINT, current)
        return
    if not changes:
        return
    if not force:
        raise StudyError(f"The objective of study {study.study_name!r} changed since the study was created "
                         f"({'; '.join(changes)}): its values would not compare with the stored ones. Create a "
                         f"new study ({option('name')}), or pass {option('force', py_value='True')} to continue "
                         f"knowingly.")
    log.warning("study %r: continuing with a changed objective (%s)", study.study_name, "; ".join(changes))
    history = list(study.user_attrs.get(StudyKey.OBJECTIVE_FINGERPRINT_HISTORY) or [])
    study.set_user_attr(StudyKey.OBJECTIVE_FINGERPRINT_HISTORY, [*history, stored])
    study.set_user_attr(StudyKey.OBJECTIVE_FINGERPRINT, current)


def _joining_seed(seed: int, n_existing: int) -> int:
    """A study that already has trials gets a sampler seed of its own in every process, or each resume (and
    each extra worker) would propose the same parameters again."""
    return (seed * 1_000_003 + n_existing * 7919 + os.getpid()) % 2**31


def _identity(spec: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    ident = {k: spec.get(k) for k in IDENTITY_FIELDS if k != "space"}
    ident["calibrate"] = bool(ident["calibrate"])  # a study stored before the key existed was not calibrated
    ident["objectives"] = list(ident["objectives"] or [])[1:]  # what a study trades against its metric
    ident["space"] = fingerprint
    return ident


def _stored_attrs(prepared: PreparedStudy) -> dict[str, Any]:
    # What is queued at creation (files, an earlier study and its storage URL) is not part of the study's
    # spec: each queued trial records where its config came from. Where a session logs is the session's.
    spec = prepared.spec.model_dump(exclude={"storage", "enqueue", "warm_start", "mlflow", "tensorboard"})
    spec["name"] = prepared.name
    return {
        StudyKey.SPEC: json.loads(json.dumps(spec, default=lambda o: o.item() if hasattr(o, "item") else str(o))),
        StudyKey.SPACE: prepared.space.raw,
        StudyKey.SPACE_FINGERPRINT: prepared.space.fingerprint(),
        StudyKey.OBJECTIVE_FINGERPRINT: prepared.objective_fingerprint,
        StudyKey.VERSION: __version__,
        StudyKey.METRIC: prepared.objective.metric,
        **({StudyKey.CALIBRATION: prepared.calibration.summary()} if prepared.calibration is not None else {}),
    }


def create_or_join(prepared: PreparedStudy, *, force: bool = False, worker: int | None = None) -> optuna.Study:
    """Creates the study, or joins an existing one with the same spec; a different spec is refused.

    The check and the creation happen under the storage's lock, so two processes creating one name with
    different specs at the same moment cannot both succeed, and a fresh SQLite file is set up once.
    ``worker`` (the index of a ``--workers`` process) gives each worker a sampler seed of its own.
    """
    url = prepared.storage_url
    name = prepared.name
    check_storage(url)  # a foreign file is refused before a lock file is made beside it
    try:
        for attempt in range(2):
            try:
                with storage_lock(url, "create"):
                    storage = open_storage(url)
                    study, n_before = _create_or_load(storage, prepared, force)
                break
            except optuna.exceptions.DuplicatedStudyError:
                if attempt:  # a storage without a lock (MySQL), and another process won the race twice
                    raise StudyError(f"Study {name!r} was created by another process at the same moment; "
                                     f"run the command again to join it.") from None
    except StudyError:
        raise
    except Exception as exc:  # the storage failed under us: disk full, server gone
        raise StudyError(f"Cannot create or open study {name!r} in {mask_url(url)}: "
                         f"{explain_storage_error(exc, url)}") from None
    if worker is not None or n_before > 0:
        study.sampler = _joining_sampler(prepared, n_before, worker)
    return study


def stored_space_changes(attrs: dict[str, Any], space: Any, named: Any = None) -> str:
    """How ``space`` differs from the one a study's ``attrs`` hold (``space default -> lr-only: ...``);
    ``named``: the stored space's name (default: the stored spec's)."""
    stored = attrs.get(StudyKey.SPACE)
    if not stored:
        return "space: the search space differs"
    try:
        named = named if named is not None else (attrs.get(StudyKey.SPEC) or {}).get("space")
        named = Path(named).stem if isinstance(named, str) and named.endswith((".yaml", ".yml")) else named
        old = SearchSpace.from_dict(stored, name=named if isinstance(named, str) else "stored",
                                    source="the stored space")
    except Exception:  # a space an older build stored, which this one reads no more
        return "space: the search space differs"
    return space.changes_from(old)


def _create_or_load(storage: optuna.storages.BaseStorage, prepared: PreparedStudy,
                    force: bool) -> tuple[optuna.Study, int]:
    """The study, and how many trials it had before (0 when it was created here)."""
    name = prepared.name
    url = prepared.storage_url
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        attrs = existing[name].user_attrs
        if StudyKey.SPEC not in attrs:
            raise StudyError(f"Study {name!r} in {mask_url(url)} is {describe_kind(existing[name])}; "
                             f"choose another {option('name')}.")
        old = _identity(attrs[StudyKey.SPEC], attrs.get(StudyKey.SPACE_FINGERPRINT, ""))
        new = _identity(_stored_attrs(prepared)[StudyKey.SPEC], prepared.space.fingerprint())
        changed = [k for k in old if old[k] != new[k]]
        if changed:
            metric = attrs.get(StudyKey.METRIC) or prepared.objective.metric

            def said(key: str, value: Any) -> str:  # objectives as given: the metric, then what it trades
                return ", ".join([metric, *value]) if key == "objectives" else repr(value)

            details = ", ".join(
                f"{k}: {said(k, old[k])} -> {said(k, new[k])}" if k != "space" else
                stored_space_changes(attrs, prepared.space) for k in changed
            )
            raise StudyError(f"Study {name!r} already exists in {mask_url(url)} with a different "
                             f"spec ({details}). Nothing was changed. Choose another {option('name')}, or continue it "
                             f"with `{study_command('run', name, url)}`.")
        study = optuna.load_study(study_name=name, storage=storage, pruner=prepared.pruner,
                                  sampler=prepared.sampler)
        check_objective(study, prepared, force)
        _update_budget(study, prepared.spec)
        asked = [option(what) for what, given in (("enqueue", prepared.spec.enqueue),
                                                  ("warm-start", prepared.spec.warm_start)) if given]
        if asked:
            warm = prepared.spec.warm_start
            prepared.start_notes.append(not_queued_note(asked, name, url, warm.study if warm else None,
                                                        warm.storage if warm and warm.storage else url))
        _enqueue_grid(study, prepared)
        return study, existing[name].n_trials
    from tuner._logs import optuna_quiet

    with optuna_quiet():  # the command says it has created the study, in its own words
        study = optuna.create_study(study_name=name, storage=storage, sampler=prepared.sampler,
                                    pruner=prepared.pruner, directions=prepared.directions, load_if_exists=False)
    _store_attrs(study, prepared)
    _enqueue_grid(study, prepared)
    _enqueue_starts(study, prepared)
    return study, 0


def _store_attrs(study: optuna.Study, prepared: PreparedStudy) -> None:
    for key, value in _stored_attrs(prepared).items():
        study.set_user_attr(key, value)


def _enqueue_starts(study: optuna.Study, prepared: PreparedStudy) -> None:
    from tuner.study._starts import START_ATTR, within_budget

    kept, dropped = within_budget(prepared.starts, prepared.spec.n_trials)
    prepared.start_notes.extend(dropped)
    for start in kept:
        study.enqueue_trial(start.params, user_attrs={START_ATTR: start.source})
        prepared.queued.append(start)


def _enqueue_grid(study: optuna.Study, prepared: PreparedStudy) -> None:
    from tuner._logs import optuna_quiet

    with optuna_quiet():  # Optuna logs each point a joined grid holds already
        for params in prepared.grid[:prepared.spec.n_trials]:
            study.enqueue_trial(params, skip_if_exists=True)


def _joining_sampler(prepared: PreparedStudy, n_existing: int, worker: int | None) -> optuna.samplers.BaseSampler:
    from tuner.study._starts import sampler_seed

    seed = sampler_seed(prepared.spec.seed, prepared.spec.warm_start)
    if worker is not None:
        # Workers that start together on a fresh study would otherwise all draw the same first parameters.
        seed = (seed * 1_000_003 + 7919 * (worker + 1) + n_existing) % 2**31
    if n_existing > 0:
        seed = _joining_seed(seed, n_existing)
    context = {"seed": seed, "epochs": prepared.spec.epochs, "multi": len(prepared.spec.objectives or []) > 1}
    return build_sampler(prepared.spec.sampler, context)


def _update_budget(study: optuna.Study, spec: StudySpec) -> None:
    """A raised or lowered budget is saved, so that a later ``study run NAME`` keeps it. A timeout given to one
    run is that run's: the study keeps the one it was created with (a study without one stays without, and
    ``--workers auto`` keeps running it in one process, which repeats exactly)."""
    stored = dict(study.user_attrs.get(StudyKey.SPEC, {}))
    if stored and spec.n_trials != stored.get("n_trials"):
        from optuna.trial import TrialState

        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        if spec.n_trials < done:
            raise StudyError(f"Study {study.study_name!r} already has {done} finished trials, more than the budget "
                             f"asked for ({spec.n_trials}); nothing was changed. To run more, ask for more than "
                             f"{done} ({option('n-trials', str(done + 10))}).")
    if stored and stored.get("n_trials") != spec.n_trials:
        stored.update(n_trials=spec.n_trials)
        study.set_user_attr(StudyKey.SPEC, stored)
