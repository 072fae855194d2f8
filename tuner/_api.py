"""Tuning inside a user's own training code: ``tuner.tune`` runs the study, ``tuner.suggest`` samples a
``TrainConfig`` inside a user's own Optuna loop."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner._terminate import Terminated
from tuner._tune_settings import resolve_direction
from tuner.config import TrainConfig
from tuner.errors import ConfigError, StudyError, count
from tuner.study._engine import (
    INTERRUPTED_RUN,
    RunPlan,
    TrialContext,
    TrialOutcome,
    UserExecutor,
    run_study_config,
    run_trials,
    sigterm_exits,
)
from tuner.study._record import Key, StudyKey, direction_of, handed_over, handed_over_text, primary

__all__ = ["TrialContext", "TuneResult", "suggest", "tune"]


def _space(space: Any) -> Any:
    from tuner.spaces import SearchSpace, load_space

    return space if isinstance(space, SearchSpace) else load_space(space)


def suggest(trial: optuna.Trial, space: Any = "default", *, epochs: int = 10, seed: int | None = None) -> TrainConfig:
    """Samples a ``TrainConfig`` from ``space`` (a built-in name, a YAML path, a mapping or a ``SearchSpace``)
    with an Optuna trial of the caller's own study. The config's ``direction`` is the study's (its first
    objective's), so that ``config.setup``'s ``plateau`` schedule lowers the rate when the metric stops rising
    in a maximized study and when it stops falling in a minimized one.

    Example:
        >>> def objective(trial):
        ...     config = tuner.suggest(trial, "adam-family", epochs=20)
        ...     setup = config.setup(model, steps_per_epoch=len(loader))
    """
    if not callable(getattr(trial, "suggest_float", None)):
        raise ConfigError(f"tuner.suggest(trial, ...) takes the Optuna trial your objective is given; got "
                          f"{type(trial).__name__}.")
    # Checked before the trial samples anything: a refused call leaves the caller's trial as it was.
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"tuner.suggest(): epochs must be an int of at least 1 (got {epochs!r}).")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"tuner.suggest(): seed must be an int >= 0, or None for the trial's number (got {seed!r}).")
    config = _space(space).sample(trial, epochs=epochs, seed=trial.number if seed is None else seed)
    study = getattr(trial, "study", None)
    if study is not None:  # the plateau schedule's mode follows the caller's study, as in tune()
        from tuner.study._record import direction_of

        config.direction = direction_of(study)
    return config


@dataclass
class TuneResult:
    """The study ``tune`` ran, with the best config and, on request, a confirmed recommendation."""

    study: optuna.Study
    train_fn: Callable[[TrialContext], Any]
    seed: int = 0

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        """The best complete trial; of a study with two objectives, the knee of its Pareto front, the trial that
        ``recommend()``, ``tuner study show`` and ``tuner study export`` hand over (``pareto_front`` lists the
        others)."""
        best = handed_over(self.study)
        if best is None:
            raise StudyError(f"Study {self.study.study_name!r} has no complete trial.")
        return best

    @property
    def best_config(self) -> TrainConfig:
        from tuner.study._record import Key

        config = TrainConfig.from_dict(self.best_trial.user_attrs[Key.CONFIG])
        config.direction = direction_of(self.study)  # config.setup's plateau mode in the caller's loop
        return config

    @property
    def best_value(self) -> float:
        return float(primary(self.best_trial))

    @property
    def pareto_front(self) -> list[optuna.trial.FrozenTrial]:
        """A study with two objectives: the complete trials no other beats on both, best metric first."""
        from tuner.study._record import pareto_front

        return pareto_front(self.study)

    def fit(self, config: TrainConfig | dict[str, Any] | str) -> tuple[float, float | None]:
        """Runs ``train_fn`` once on ``config`` (a ``TrainConfig``, a mapping of one, or a file that
        ``config.save`` or ``tuner study export`` wrote) outside the study (no pruning; seeded from
        ``config.seed``)."""
        from pathlib import Path

        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        elif isinstance(config, (str, Path)):
            config = TrainConfig.load(config)
        elif not isinstance(config, TrainConfig):
            raise ConfigError(f"fit(config) takes a TrainConfig, a mapping or a config file; got "
                              f"{type(config).__name__}.")
        return run_study_config(self.study, self._executor(), config)

    def _executor(self) -> Any:
        return UserExecutor(self.train_fn, direction=direction_of(self.study))

    def recommend(self, top_k: int | None = None, seeds: int | None = None, *, trial: int | None = None) -> Any:
        """Re-trains the top ``top_k`` configs (default 3) with ``seeds`` new seeds each (default 3) and returns
        the ``Recommendation`` with the best mean (stored in the study; a repeat call reuses it).

        A study of several objectives (``objectives=[metric, "train_seconds"]``) recommends the knee of its Pareto
        front as it is, without confirmation runs (``top_k``/``seeds`` do not apply there); ``trial=N`` takes
        any trial instead."""
        from tuner.report import recommendation

        for key, value in (("top_k", top_k), ("seeds", seeds), ("trial", trial)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (
                    0 if key == "trial" else 1)):
                raise ConfigError(f"recommend(): {key} must be an int of at least {0 if key == 'trial' else 1} "
                                  f"(got {value!r}).")
        if trial is not None and (top_k, seeds) != (None, None):
            raise ConfigError(f"recommend(): trial={trial} takes that trial's config as it is, without confirmation "
                              f"runs, so top_k and seeds do not apply (leave trial out to re-train the best "
                              f"configs with new seeds).")
        if len(self.study.directions) > 1 and trial is None and (top_k, seeds) != (None, None):
            raise ConfigError("recommend(): this study has several objectives: it recommends the knee of its "
                              "Pareto front without confirmation runs, so top_k and seeds do not apply (trial=N "
                              "takes another point of the front; result.study.best_trials lists them).")
        if trial is not None or len(self.study.directions) > 1:  # a Pareto front's knee: nothing is re-trained
            return recommendation(self.study, trial=trial)
        own = sorted({name for t in self.study.get_trials(deepcopy=False)
                      for name in t.user_attrs.get(Key.OWN_PARAMS) or []})
        if own:
            raise ConfigError(f"recommend(): train_fn sampled parameters of its own through ctx.trial "
                              f"({', '.join(own)}), which a confirmation run cannot replay (it has no trial: "
                              f"ctx.trial is None there). Take the best trial as it is: recommend(trial=N), with "
                              f"its own parameters in result.study.trials[N].params.")
        return recommendation(self.study, self.fit, top_k=3 if top_k is None else top_k,
                              seeds=3 if seeds is None else seeds, study_seed=self.seed)


def _check_objectives(objectives: Any, metric: str) -> list[str]:
    if objectives is None:
        return [metric]
    if isinstance(objectives, str):
        objectives = [o.strip() for o in objectives.split(",") if o.strip()]
    if not isinstance(objectives, (list, tuple)) or not objectives or objectives[0] not in (metric, "metric"):
        example = f"e.g. [{metric!r}, 'train_seconds'] " if metric != "train_seconds" else ""
        raise ConfigError(f"objectives must start with the metric, {metric!r}, {example}(got {objectives!r}).")
    if any(o != "train_seconds" for o in objectives[1:]) or len(objectives) > 2:
        raise ConfigError(f"objectives: the only second objective is 'train_seconds' (got {list(objectives)!r}).")
    if len(objectives) == 2 and metric == "train_seconds":
        raise ConfigError(f"objectives: the metric is train_seconds itself, so a second train_seconds would trade it "
                          f"against itself (got {list(objectives)!r}); leave objectives out for one objective.")
    return [metric, *objectives[1:]]


def _check_train_fn(train_fn: Any) -> None:
    """``train_fn`` is called as ``train_fn(ctx)``: a model, a model class or a function that takes no argument
    (a model factory) is refused before the study exists, with what to pass instead."""
    import inspect

    from torch import nn

    usage = "pass a function `def train(ctx): ...` that builds the model, trains it and returns the metric"
    if isinstance(train_fn, nn.Module):
        raise ConfigError(f"train_fn is a model ({type(train_fn).__name__}), not a training function: {usage} "
                          f"(README: 'Tuning inside your own training code').")
    if isinstance(train_fn, type):
        raise ConfigError(f"train_fn is a class ({train_fn.__name__}), not a training function: {usage}.")
    if not callable(train_fn):
        raise ConfigError(f"train_fn must be a function taking the trial context; got {type(train_fn).__name__}.")
    try:
        signature = inspect.signature(train_fn)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: called as it is
        return
    try:
        signature.bind(object())
    except TypeError:
        name = getattr(train_fn, "__qualname__", type(train_fn).__name__)
        raise ConfigError(f"train_fn {name}{signature} cannot be called with the trial context as its one "
                          f"argument: {usage}.") from None


def _check_args(train_fn: Any, direction: str, ints: dict[str, Any], seed: Any, timeout: Any) -> None:
    _check_train_fn(train_fn)
    if direction not in ("auto", "maximize", "minimize"):
        raise ConfigError(f"direction must be 'maximize', 'minimize' or 'auto' (got {direction!r}).")
    for key, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be an int of at least 1 (got {value!r}).")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an int in the range [0, 2**32) (got {seed!r}).")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError(f"timeout must be a finite number of seconds above 0, or None (got {timeout!r}).")


def tune(
    train_fn: Callable[[TrialContext], Any],
    space: Any = "default",
    *,
    n_trials: int = 30,
    timeout: float | None = None,
    epochs: int = 10,
    storage: str | None = None,
    study_name: str | None = None,
    direction: str = "auto",
    metric: str = "value",
    sampler: str | dict[str, Any] = "tpe",
    pruner: str | dict[str, Any] = "median",
    seed: int = 0,
    max_consecutive_failures: int = 5,
    verbose: bool = True,
    workers: int = 1,
    enqueue: list[Any] | None = None,
    warm_start: str | dict[str, Any] | optuna.Study | None = None,
    known_starts: bool = True,
    objectives: list[str] | None = None,
    batch_size: int | list[int] | None = None,
    mlflow: str | None = None,
    tensorboard: str | None = None,
) -> TuneResult:
    """Tunes ``train_fn(ctx)``, the user's own training code, over ``space``.

    ``train_fn`` reads ``ctx.config`` (a ``TrainConfig``: ``ctx.config.setup(model, steps_per_epoch=N)``
    gives the optimizer, scheduler and a training step), calls ``ctx.report(epoch, value)`` after every
    epoch (pruning happens there), and returns the final validation value (or ``(value, test_value)``).
    ``metric`` names that value; ``direction="auto"`` minimizes a metric named like a loss, an error or a cost
    (``val_loss``, ``mse``, ``top1_error``, ``train_seconds``) and maximizes a score and any other, saying so
    where it guessed (pass ``"maximize"`` or ``"minimize"``; see ``resolve_direction``).

    Every trial runs on tuner's trial engine, as ``tuner study run`` does: Python's ``random``, NumPy and
    torch are seeded from ``ctx.config.seed`` right before ``train_fn`` is called (so two calls with the same
    ``seed`` give the same trials and values); a trial that raises is recorded as failed with its reason and
    the file and line in your code, and the study goes on; ``max_consecutive_failures`` in a row stop it; a
    non-finite value is recorded as diverged (pruned); a CUDA out-of-memory error fails the trial and frees
    the cached memory; ``timeout`` (seconds) stops the running trial at its next ``ctx.report``; an interrupt
    (Ctrl-C, ``CancelledError``) records the running trial as failed and is raised again.

    ``n_trials`` is the study's budget of finished trials: with a ``storage`` (``sqlite:///x.db``,
    ``journal:x.journal``, PostgreSQL) a second call with the same ``study_name`` resumes and runs only what
    is missing. ``verbose`` prints a line per trial and a summary to standard output.

    A new study's first trials are the configs of ``enqueue`` (file paths, ``TrainConfig``s or mappings), then
    the best distinct configs of ``warm_start`` (a study name in ``storage``, ``{study, storage, top}`` as in a
    spec file, or an ``optuna.Study``) that the space holds, then the known-good starting points the space holds
    (``known_starts=False`` skips them); a config the space cannot sample is refused before the study is
    created.

    ``objectives=[metric, "train_seconds"]`` tunes the metric against each trial's training time: a study with
    two objectives (pruning still on the metric); ``result.pareto_front`` holds the trials no other beats on
    both, and ``result.recommend()`` returns its knee.

    ``batch_size`` (one size, or a list) replaces the space's batch sizes, e.g. for a training set smaller than
    its largest one.

    ``mlflow="sqlite:///mlflow.db"`` (default ``$TUNER_MLFLOW_URI``) logs every finished trial to MLflow: an
    experiment named after the study, a run per trial (the config as params, the metric of every epoch, the
    final and test values, state and reason) nested under a run of the study, which gets the best config as
    ``best_config.yaml``. ``tensorboard="runs"`` writes a TensorBoard run per trial to ``runs/<study>`` with
    its scalars and HParams. A resumed study logs only the trials not logged yet; a tracker that fails is
    reported once and the study goes on. They need ``pip install 'optim-tuner[mlflow]'`` /
    ``'optim-tuner[tensorboard]'``.

    A run that stops (``max_consecutive_failures`` failed trials in a row, a storage that fails, Ctrl-C)
    raises, and the exception holds what finished as ``exc.result``, a ``TuneResult``: without a ``storage``
    the study exists nowhere else.

    ``workers=N`` trains in N processes on this machine (torch threads split between them), each asking the
    shared study for trials; it needs a ``storage`` and a ``train_fn`` defined at the top level of a module or
    script (the processes import it; guard the script's own code with ``if __name__ == "__main__":``).

    Example:
        >>> result = tuner.tune(train, space="adam-family", n_trials=20, epochs=10)
        >>> result.best_config.save("best.yaml")
    """
    from tuner.study._samplers import build_sampler, option_name, plain_options

    _check_args(train_fn, direction, {"n_trials": n_trials, "epochs": epochs,
                                      "max_consecutive_failures": max_consecutive_failures}, seed, timeout)
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"metric must be the name of the value train_fn returns, e.g. 'val_accuracy' (got "
                          f"{metric!r}).")
    from tuner.study._storage import check_storage_arg

    check_storage_arg(storage, "sqlite:///tune.db")
    if study_name is not None and (not isinstance(study_name, str) or not study_name.strip()):
        raise ConfigError(f"study_name must be a non-empty string, or None for a name from the function and space "
                          f"(got {study_name!r}).")
    if study_name is not None:
        from tuner.study._spec import name_problem
        from tuner.study._storage import study_in_storage

        problem = name_problem(study_name, new=not (storage and study_in_storage(study_name, storage)))
        if problem:
            raise ConfigError(f"study_name {problem}.")
    direction, direction_note, unsure = resolve_direction(metric, direction)
    if not verbose and unsure:  # a guess, and nothing printed to say so
        warnings.warn(f"tuner.tune: direction {direction_note}", UserWarning, stacklevel=2)
    for key, flag in (("verbose", verbose), ("known_starts", known_starts)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{key} must be True or False (got {flag!r}).")
    sampler, pruner = plain_options(sampler, "sampler"), plain_options(pruner, "pruner")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an int of at least 1 (got {workers!r}).")
    ref = None
    if workers > 1:
        from tuner.study._user import function_ref
        from tuner.study._workers import check_workers, refuse_unguarded_start

        check_workers(workers, "workers")
        refuse_unguarded_start("tuner.tune", workers)
        import threading

        if threading.current_thread() is not threading.main_thread():
            raise ConfigError(f"workers={workers} must be started from the main thread (it supervises the "
                              f"processes with signal handlers); call tune() there, or use workers=1.")
        if not storage:
            raise ConfigError(f"workers={workers} needs a storage the processes share, e.g. "
                              f"storage='sqlite:///tune.db'.")
        ref = function_ref(train_fn)
    from tuner.study._workers import early_server

    # A pool's fork server starts now, beside what is prepared here (the study, the storage), as the command's.
    with early_server(ref is not None):
        objectives = _check_objectives(objectives, metric)
        from tuner.track import check_tracking, tracking

        check_tracking(mlflow, tensorboard)  # a missing package fails here, before any study exists
        search = _space(space)  # a bad space fails here, before any study exists
        if batch_size is not None:
            search = search.with_batch_sizes(batch_size)
        from tuner.study._starts import gather_starts

        if isinstance(enqueue, (str, Path, TrainConfig, dict)):
            enqueue = [enqueue]
        elif enqueue is not None and not isinstance(enqueue, (list, tuple)):
            raise ConfigError(f"enqueue: a list of configs (file paths, TrainConfigs or mappings), or one of them; got "
                              f"{type(enqueue).__name__}.")
        warm_name, warm_storage, warm_top = warm_start, storage, 5
        if warm_start is not None and not isinstance(warm_start, optuna.Study):
            from tuner.study._spec import parse_warm_start

            parsed = parse_warm_start(warm_start, "tuner.tune()")  # a mapping as in a spec file: {study, storage, top}
            warm_name, warm_storage, warm_top = parsed.study, parsed.storage or storage, parsed.top
        starts, start_notes = gather_starts(search, enqueue=list(enqueue or []), warm_start=warm_name,
                                            warm_storage=warm_storage, warm_top=warm_top, known=bool(known_starts),
                                            epochs=epochs)
        start_notes = search.schedule_notes(epochs) + start_notes  # a schedule longer than the trials: said first
        from tuner.study._prepare import search_setup
        from tuner.study._starts import sampler_seed

        draws = sampler_seed(seed, warm_name if warm_start is not None else None)
        setup = search_setup(search, sampler, pruner, seed=draws, epochs=epochs, n_trials=n_trials,
                             n_objectives=len(objectives))  # bad options fail here, before any study exists
        start_notes += setup.notes
        if setup.grid:
            if enqueue or warm_start:
                raise ConfigError("sampler='grid' runs the grid's own points: enqueue and warm_start do not apply "
                                  "(use another sampler to try known configs first).")
            if setup.n_trials != n_trials:
                start_notes.append(f"n_trials: {n_trials} asked, {setup.n_trials} run: the grid over space "
                                   f"{search.name!r} has {setup.n_trials} points, each run once")
            n_trials, starts = setup.n_trials, []  # a grid runs its own points
        if study_name is None and storage and getattr(train_fn, "__name__", "") == "<lambda>":
            # Every lambda has one name: two of them in one file would share a study, their values mixed.
            raise ConfigError("tuner.tune(): a lambda has no name to tell its study from another lambda's (both "
                              "would be 'tune-<lambda>-...' in the storage, their trials mixed): pass study_name=, "
                              "or give a function defined with def.")
        name = study_name or f"tune-{getattr(train_fn, '__name__', 'fn')}-{search.name}"
        if study_name is None and isinstance(space, dict) and storage:
            # A space given as a mapping was named "<space>" before it was named "custom": a study made then, under
            # the old default name, is resumed, not started again beside it.
            from tuner.study._storage import study_in_storage

            older = f"tune-{getattr(train_fn, '__name__', 'fn')}-<space>"
            if not study_in_storage(name, storage) and study_in_storage(older, storage):
                name = older
        settings = _plain({"sampler": sampler, "pruner": pruner})
        from tuner.study._starts import within_budget

        starts, dropped = within_budget(starts, n_trials)
        study, queued, existed = _create_or_join(train_fn, search, name, storage, direction, metric, epochs, seed,
                                                 setup.sampler, setup.pruner, starts, objectives, settings,
                                                 setup.grid[:n_trials], default_name=study_name is None)
        plan = RunPlan(name=name, storage_url=storage, space=search, epochs=epochs, seed=seed, n_trials=n_trials,
                       timeout=timeout, pruner_name=option_name(pruner), sampler_name=option_name(sampler),
                       max_consecutive_failures=max_consecutive_failures, objectives=objectives,
                       resume_hint="call tuner.tune() again with the same storage and study_name")
        if queued:  # created here: what its budget left out of the first trials
            start_notes += dropped
        # Trials that ran before (queued ones, a grid's points among them, are not a resume).
        existing = sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
        asked = [what for what, given in (("enqueue", enqueue), ("warm_start", warm_start)) if given]
        if existed and asked:
            from tuner.study._prepare import not_queued_note

            warm = warm_name if isinstance(warm_name, str) else None  # (a Study object: no command reaches it)
            start_notes.append(not_queued_note(asked, name, storage, warm, warm_storage or storage,
                                               then=" for the next tuner.tune() call"))
        if existing:
            # A resumed study: a sampler seeded as in the first call would propose the same parameters again.
            from tuner.study._prepare import _joining_seed

            study.sampler = build_sampler(sampler, {"seed": _joining_seed(seed, existing), "epochs": epochs,
                                                    "multi": len(objectives) > 1})
        done = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.state.name != "FAIL"])

        from tuner.study._session import trial_lines

        on_trial = trial_lines(study, done, n_trials, (lambda line: print(line, flush=True)) if verbose else None)

        if verbose:
            print(f"tuning {getattr(train_fn, '__qualname__', 'train_fn')} over space {search.name!r}: study {name!r}, "
                  f"{count(n_trials, 'trial')} x {count(epochs, 'epoch')}, {direction} {metric!r}"
                  + "".join(f", minimize {name!r}" for name in objectives[1:])
                  + (f", timeout {timeout:g}s" if timeout else ""), flush=True)
            if direction_note:
                print(f"direction: {direction_note}", flush=True)
            if existed:
                from tuner.study._storage import mask_url

                more = ("" if done < n_trials else "; every point of the grid has run" if setup.grid else
                        "; raise the budget with n_trials=")
                print(f"resuming study {name!r} in {mask_url(storage)}: it has "
                      f"{count(done, 'finished trial')} of {n_trials}{more}", flush=True)
            if queued:
                print(f"first trials ({len(queued)} queued): " + "; ".join(
                    s.source + (f" ({'; '.join(s.changes)})" if s.changes else "") for s in queued), flush=True)
            for note in start_notes:
                print(note, flush=True)
        else:  # what the call asked for and did not get, said even when nothing is printed
            from tuner.study._starts import asked_for_and_changed

            changed, notes = asked_for_and_changed(queued, start_notes)
            for note in notes + changed:
                warnings.warn(f"tuner.tune: {note}", UserWarning, stacklevel=2)
        try:
            with sigterm_exits(), tracking(study, on_trial, mlflow=mlflow, tensorboard=tensorboard) as tracked:
                if ref is not None:
                    _run_workers(study, plan, ref, workers, sampler, pruner, tracked, verbose, draws)
                    return TuneResult(study, train_fn, seed)
                run = run_trials(study, plan, UserExecutor(train_fn), on_trial=tracked)
        except (StudyError, KeyboardInterrupt, Terminated) as exc:
            # What finished is the caller's: ``exc.result`` (a study without a storage exists nowhere else).
            exc.result = TuneResult(study, train_fn, seed)
            if verbose and isinstance(exc, (KeyboardInterrupt, Terminated)):
                resume = ("call tuner.tune() again with the same storage and study_name to resume" if storage else
                          "the study has no storage: the exception's .result holds what finished")
                how = "terminated" if isinstance(exc, Terminated) else "interrupted"
                print(f"{how}: {INTERRUPTED_RUN}; {resume}", flush=True)
            raise
        if verbose:
            stop = " (timeout reached)" if run.stopped_by == "timeout" else ""
            print(f"ran {len(run.outcomes)} trial(s) in {run.seconds:.1f}s{stop}; {handed_over_text(study)}",
                  file=sys.stdout, flush=True)
        return TuneResult(study, train_fn, seed)


def _run_workers(study: optuna.Study, plan: RunPlan, ref: dict[str, str], workers: int, sampler: Any, pruner: Any,
                 on_trial: Callable[[TrialOutcome, optuna.Study], None], verbose: bool, draws: int) -> None:
    from tuner.study._session import outcome_of
    from tuner.study._workers import run_workers

    job = {"ref": ref, "epochs": plan.epochs, "seed": plan.seed, "sampler_seed": draws, "n_trials": plan.n_trials,
           "timeout": plan.timeout,
           "sampler": sampler, "pruner": pruner, "sampler_name": plan.sampler_name, "pruner_name": plan.pruner_name,
           "space_name": plan.space.name, "max_consecutive_failures": plan.max_consecutive_failures,
           "objectives": plan.objectives,
           # The timeout is the caller's, from now: the workers' start-up counts, as in run_study.
           "deadline": time.time() + plan.timeout if plan.timeout else None,
           "started": time.time()}  # the failures in a row are the workers' together, from now
    pool = run_workers(plan.name, plan.storage_url or "", workers, job=job, grace=plan.grace_period,
                       on_trial=lambda t, s: on_trial(outcome_of(t), s))
    lost = [w for w in pool.failed_workers if w.exitcode not in (130, 143)]
    if verbose:
        timed_out = any(w.stopped_by == "timeout" for w in pool.workers)
        print(f"{workers} workers ran {pool.finished} trial(s) in {pool.seconds:.1f}s"
              + (" (timeout reached)" if timed_out else "")
              + (f"; trials {pool.reaped} of lost workers were queued again" if pool.reaped else ""), flush=True)
        for w in lost:
            print(f"worker {w.index} (pid {w.pid}) stopped: {w.stopped()}", flush=True)
    elif lost:
        warnings.warn("; ".join(f"worker {w.index} (pid {w.pid}) stopped: {w.stopped()}"
                                for w in lost), RuntimeWarning, stacklevel=3)
    if pool.interrupted is not None:
        raise Terminated if pool.interrupted == signal.SIGTERM else KeyboardInterrupt
    if lost and len(lost) == len(pool.workers):
        raise StudyError(f"every worker stopped with an error; the first: {lost[0].stopped()}")


def _function_name(train_fn: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """A name for ``train_fn`` that is the same in every process (a ``functools.partial``'s function, a
    callable object's class; None where there is none: a repr with a memory address), its module, and the name
    and the absolute path of the file that defines it; None where there is no such file (an interactive
    session, a builtin, a notebook's cell, which ipykernel names after a hash of its code that changes with
    every edit)."""
    import functools
    import inspect

    while isinstance(train_fn, functools.partial):
        train_fn = train_fn.func
    target = train_fn if hasattr(train_fn, "__qualname__") else type(train_fn)
    name = getattr(target, "__qualname__", None)
    try:
        path = inspect.getsourcefile(target)
    except (TypeError, OSError):
        path = None
    if not path or path.startswith("<") or "ipykernel_" in path or not Path(path).is_file():
        path = None
    return ((name if name and " at 0x" not in name else None), getattr(target, "__module__", None),
            Path(path).name if path else None, str(Path(path).resolve()) if path else None)


def _plain(value: Any) -> Any:
    """``value`` as the storage keeps it (JSON): tuples as lists, NumPy numbers as Python's."""
    import json

    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _identity(train_fn: Any, epochs: int, seed: int, objectives: list[str], settings: dict[str, Any],
              with_path: bool = False) -> dict[str, Any]:
    """What a study of ``tune`` was tuned with, to compare on resuming; ``with_path`` (a study named after the
    function and space, not by the caller): the file's absolute path too."""
    function, module, file, path = _function_name(train_fn)
    return _plain({"function": function, "module": module, "file": file, **({"path": path} if with_path else {}),
                   "epochs": epochs, "seed": seed, "objectives": objectives, **settings})


def _bare(spec: Any) -> Any:
    """A sampler or pruner as its name where a mapping gives nothing but the name."""
    return spec["name"] if isinstance(spec, dict) and set(spec) == {"name"} else spec


def _changes(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a study's stored ``tune`` settings and this call's (keys a study made by an earlier
    version does not hold are not compared; a script run as ``__main__`` may import its function elsewhere)."""
    changes = []
    for key, value in new.items():
        if key not in stored or stored[key] == value:
            continue
        if key == "path":
            # A study named after the function and space, made by another project's file of the same name
            # (p1/train.py, p2/train.py), which is still there; a project moved elsewhere (its old path gone,
            # another machine) is the same, and a study_name given by the caller is theirs to resume.
            if (None not in (stored[key], value) and Path(stored[key]).name == Path(value).name
                    and Path(stored[key]).is_file()):
                changes.append(f"file: {stored[key]!r} -> {value!r}, another file of the same name; pass "
                               f"study_name= to resume that study from here")
            continue
        if key in ("function", "module", "file") and (None in (stored[key], value)
                                                      or "__main__" in (stored[key], value)
                                                      or " at 0x" in str(stored[key])):
            continue  # no name that holds from one process to the next, or a script imported under another name
        if key == "objectives" and list(stored[key] or []) == list(value):
            continue
        if key in ("sampler", "pruner") and _bare(stored[key]) == _bare(value):
            continue  # {"name": "median"} is "median"
        changes.append(f"{key}: {stored[key]!r} -> {value!r}")
    return changes


def _create_or_join(train_fn: Any, search: Any, name: str, storage: str | None, direction: str, metric: str,
                    epochs: int, seed: int, sampler: Any, pruner: Any, starts: list[Any],
                    objectives: list[str], settings: dict[str, Any] | None = None,
                    grid: list[dict[str, Any]] = (), default_name: bool = False) -> tuple[optuna.Study, list, bool]:
    """Created (or joined) under the storage's lock: two processes tuning one study name over different
    spaces cannot both go ahead. A study created here gets ``starts`` queued as its first trials; they are
    returned (an empty list when the study existed), with whether it did. A study joined must have been tuned
    the same way (the function, epochs, seed, sampler, pruner, metric): else its values would not compare, and
    nothing is changed. ``grid``: the points of a grid sampler, queued (once each) in either case."""
    from tuner.study._open import describe_kind
    from tuner.study._starts import START_ATTR
    from tuner.study._storage import check_storage, mask_url, open_storage, storage_lock

    fingerprint = search.fingerprint()
    identity = _identity(train_fn, epochs, seed, objectives, settings or {}, with_path=default_name)
    if storage:
        check_storage(storage)
    with storage_lock(storage, "create") if storage else contextlib.nullcontext():
        from tuner._logs import optuna_quiet

        with optuna_quiet():
            study = optuna.create_study(
                storage=open_storage(storage) if storage else None, study_name=name,
                directions=[direction] + ["minimize"] * (len(objectives) - 1),
                sampler=sampler, pruner=pruner, load_if_exists=True,
            )
        stored = study.user_attrs.get(StudyKey.TUNE)
        where = f" in {mask_url(storage)}" if storage else ""
        if stored and stored.get("space_fingerprint") != fingerprint:
            from tuner.study._prepare import stored_space_changes

            raise StudyError(f"Study {name!r}{where} was tuned over a different search space "
                             f"({stored_space_changes(study.user_attrs, search, stored.get('space'))}); nothing was "
                             f"changed. Use another study_name, or the same space (and batch_size) to resume it.")
        if len(study.directions) != len(objectives):
            raise StudyError(f"Study {name!r} has {len(study.directions)} objective(s), not {len(objectives)} "
                             f"({', '.join(objectives)}); use another study_name.")
        if direction_of(study) != direction or (stored and study.user_attrs.get(StudyKey.METRIC) != metric):
            was = study.user_attrs.get(StudyKey.METRIC)
            raise StudyError(f"Study {name!r}{where} was tuned to {direction_of(study)} {was!r}, not to {direction} "
                             f"{metric!r}: its values would not compare. Nothing was changed. Pass "
                             f"metric={was!r}, direction={direction_of(study)!r} to resume it, or use another "
                             f"study_name.")
        changes = _changes(stored, identity) if stored else []
        if changes:
            raise StudyError(f"Study {name!r}{where} was tuned with other settings ({'; '.join(changes)}): its "
                             f"values would not compare with this call's. Nothing was changed. Use another "
                             f"study_name, or the same settings to resume it.")
        if not stored and (study.get_trials(deepcopy=False) or study.user_attrs):
            raise StudyError(f"Study {name!r} in {mask_url(storage or '')} is {describe_kind(study)}; "
                             f"use another study_name.")
        with optuna_quiet():  # Optuna logs each point a resumed grid holds already
            for params in grid:
                study.enqueue_trial(params, skip_if_exists=True)
        if not stored:
            import inspect

            # Whether the function's name is what a follow-up call passes (not a partial's, nor a callable
            # object's class): said by the report's follow-up call, not compared on resume.
            plain = inspect.isfunction(train_fn) and train_fn.__qualname__.isidentifier()
            study.set_user_attr(StudyKey.TUNE, {**identity, "space": search.name, "space_fingerprint": fingerprint,
                                                "plain_function": plain})
            study.set_user_attr(StudyKey.SPACE, search.raw)
            study.set_user_attr(StudyKey.METRIC, metric)
            for start in starts:
                study.enqueue_trial(start.params, user_attrs={START_ATTR: start.source})
            return study, starts, False
    return study, [], True
