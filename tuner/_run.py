"""``tuner.run_study``: ``tuner study create`` from Python. A study of an objective (built-in, an objective
file, or the tabular objective on a CSV), from a spec file, a built-in spec or a mapping, with the spec's keys
as keyword arguments. It runs on the same engine, with the same checks, as the command: packs, workers,
pruning, heartbeats, trackers and resuming included."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from tuner._api import TuneResult
from tuner.errors import ConfigError, StudyError, count
from tuner.study._record import handed_over_text

__all__ = ["StudyResult", "run_study"]


@dataclass
class StudyResult(TuneResult):
    """The study ``run_study`` ran (``best_config``, ``best_value``, ``fit``, ``recommend`` as for ``tune``;
    ``fit`` and ``recommend`` train on the study's objective), and how this call ran it: ``trials`` finished
    here, in ``seconds``, ``stopped_by`` ("budget" or "timeout"), ``pack`` trials at once and why (None with
    ``workers``: each worker chooses its own, and prints it)."""

    prepared: Any = None
    trials: int = 0
    seconds: float = 0.0
    stopped_by: str = "budget"
    pack: int | None = 1
    pack_why: str = ""
    workers: list[Any] = field(default_factory=list)  # with ``workers``: each one's report (pid, device, trials)
    workers_why: str = ""  # with ``workers="auto"``: why this many processes

    def _executor(self) -> Any:
        return self.prepared.executor()


#: the spec keys that None sets (to no timeout, the objective's own epochs and pruner, the space's batch sizes,
#: one objective, threads chosen by timing, no warm start, no tracker) when given to run_study
NONE_REPLACES = frozenset({"timeout", "epochs", "batch_size", "objectives", "pruner", "threads", "warm_start",
                           "mlflow", "tensorboard"})


def run_study(spec: str | os.PathLike[str] | Mapping[str, Any] | None = None, *, workers: int | str = 1,
              devices: str | None = None, force: bool = False, verbose: bool = True, **fields: Any) -> StudyResult:
    """Creates (or joins) and runs a study of an objective, as ``tuner study create SPEC`` does.

    ``spec``: a spec file, a built-in spec name (``quickstart``, ``mnist1d-mlp``, ...) or a mapping of spec
    keys; None: ``quickstart``, or an empty spec where ``objective`` is given. ``fields`` are the spec's keys
    (``objective``, ``space``, ``n_trials``, ``epochs``, ``pack``, ``storage``, ``timeout``, ``seed``, ...)
    and replace the spec's, as the command's flags do; ``None`` replaces it where None is a setting of its
    own (``timeout=None``: no timeout; also ``epochs``, ``batch_size``, ``objectives``, ``pruner``,
    ``threads``, ``warm_start``, ``mlflow``, ``tensorboard``) and is taken as not given elsewhere (``name``,
    ``storage``, ``n_trials``, ...); an unknown key is refused with the valid ones.
    ``workers``: processes on this machine (``devices``: ``"cuda:0,cuda:1"`` to spread them; ``"auto"``: one
    per core where a trial trains as fast on one thread, as the command's default; the default here is 1, as
    a script that starts workers must guard its own code with ``if __name__ == "__main__":``); ``force``:
    replace a study of the same name made with a different spec. A spec, space, file or study named that is
    wrong is refused before the study is created (``ConfigError``). The same name and storage again resumes
    the study and runs only what its budget still misses.

    Ctrl-C (or a run that stops: every worker failing, the storage failing) raises, and the exception holds
    what finished as ``exc.result``.

    Example:
        >>> result = tuner.run_study(objective="mnist1d-mlp", space="lr-only", n_trials=64, pack="auto",
        ...                          storage="sqlite:///tuner.db")
        >>> result.pack, result.best_config
    """
    from tuner._surface import from_python

    with from_python("tuner.run_study"):  # messages name options as keyword arguments
        return _run(spec, workers, devices, force, verbose, fields)


def _say_interrupted(say: Any, prepared: Any, how: str = "interrupted") -> None:
    """What an interrupted (or terminated) run_study says, as the command says it: what became of the running
    trials, and how to go on."""
    if say:
        from tuner.study._engine import INTERRUPTED_RUN

        say(f"{how}: {INTERRUPTED_RUN}; run_study() with the same name and storage ({prepared.name!r}) resumes "
            f"the study")


def _refuse_objective_object(objective: Any) -> None:
    """A study stores where its objective comes from, so that workers, other machines and a later run load it
    again: an ``Objective`` object is refused with the reference to pass instead, where one can be found."""
    import sys

    from tuner.objectives import Objective
    from tuner.objectives._loader import OBJECTIVE_MODULE_PREFIX

    if not isinstance(objective, Objective):
        return
    module = sys.modules.get(getattr(objective.load_data, "__module__", ""), None)
    attr = next((k for k, v in vars(module).items() if v is objective), None) if module else None
    from tuner._builtin import builtin_names

    builtin = builtin_names("objectives", (".py",)).get(objective.name)
    file = getattr(module, "__file__", None)
    ref = None
    if builtin is not None and file and os.path.samefile(builtin, file):
        ref = objective.name
    elif attr and module.__name__ != "__main__" and not module.__name__.startswith(OBJECTIVE_MODULE_PREFIX):
        ref = f"{module.__name__}:{attr}"
    elif attr and file:  # a script, or a file loaded by its path
        ref = f"{file}:{attr}"
    how = (f"pass objective={ref!r}" if ref else "pass objective='path/to/file.py:attr' or 'package.module:attr' "
           "naming it")
    raise ConfigError(f"objective is an Objective object ({objective.name!r}); a study stores where its objective "
                      f"comes from, so that workers and later runs load it again: {how} (a script's own "
                      f"objective: define it at module level, with the study started under "
                      f"`if __name__ == \"__main__\":`). tuner.tune() takes your own training function instead.")


def _run(spec: Any, workers: int | str, devices: str | None, force: bool, verbose: bool,
         fields: dict[str, Any]) -> StudyResult:
    from tuner.study import StudySpec, load_spec
    from tuner.study._workers import check_workers, early_server, parse_devices, pool_likely, refuse_unguarded_start

    for key, flag in (("verbose", verbose), ("force", force)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{key} must be True or False (got {flag!r}).")
    from tuner.study._autoworkers import requested_workers

    asked = requested_workers(workers, "workers")
    from tuner.study._spec import pack_from_environment

    pack_from_environment()  # a wrong $TUNER_PACK: refused before the study is written
    unknown = sorted(set(fields) - set(StudySpec.model_fields) - {"description"})
    if unknown:
        from tuner.errors import unknown_name_message

        valid = [*sorted(set(StudySpec.model_fields) - {"description"}), "devices", "force", "spec", "verbose",
                 "workers"]
        raise ConfigError("tuner.run_study(): " + unknown_name_message("argument", unknown[0], valid))
    _refuse_objective_object(fields.get("objective"))
    if isinstance(spec, Mapping):
        _refuse_objective_object(spec.get("objective"))
    from tuner.study._storage import check_storage_arg

    check_storage_arg(fields.get("storage"))
    # one worker per device at least, as the command runs; auto may start several
    processes = max(2 if asked == "auto" else asked, len(parse_devices(devices)))
    check_workers(processes, "workers")
    refuse_unguarded_start("tuner.run_study", processes, workers)
    if processes > 1 and threading.current_thread() is not threading.main_thread():
        raise ConfigError(f"workers={workers!r} must be started from the main thread (it supervises the processes "
                          f"with signal handlers); call run_study() there, or use workers=1.")
    if spec is None:
        base = load_spec("quickstart") if fields.get("objective") is None else StudySpec()
    elif isinstance(spec, Mapping):
        base = StudySpec.from_mapping(dict(spec), "run_study(spec)")
    elif isinstance(spec, (str, os.PathLike)):
        base = load_spec(spec)
    else:
        raise ConfigError(f"spec must be a spec file, a built-in spec name or a mapping; got {type(spec).__name__}.")
    # None is a value of its own for some keys (timeout=None: no timeout; epochs=None: the objective's own; no
    # tracker): given, it replaces the spec's. For the others (name, storage, n_trials, ...) None is "not
    # given", as a wrapper that passes its optional arguments on means it: the spec's value stays.
    given = {key: value for key, value in fields.items() if value is not None or key in NONE_REPLACES}
    spec_obj = StudySpec.from_mapping({**base.model_dump(), **given}, "tuner.run_study()")
    spec_file = spec if isinstance(spec, (str, os.PathLike)) and "space" not in given else None
    # A run that will likely start workers starts their fork server now, as the command does.
    with early_server(pool_likely(workers, spec_obj.timeout, devices)):
        return _open_and_run(spec_obj, spec_file, workers, devices, force, verbose)


def _open_and_run(spec_obj: Any, spec_file: Any, workers: int | str, devices: str | None, force: bool,
                  verbose: bool) -> StudyResult:
    from tuner._terminate import Terminated
    from tuner.study._engine import sigterm_exits
    from tuner.study._inputs import open_checked
    from tuner.study._session import run_study as run_session
    from tuner.study._storage import storage_label

    prepared, study = open_checked(spec_obj, spec_file=spec_file, devices=devices, force=force)
    say = (lambda line: print(line, flush=True)) if verbose else None
    n_trials, timeout = prepared.spec.n_trials, prepared.spec.timeout
    if say:
        say(f"study {prepared.name} in {storage_label(prepared.storage_url)}: objective {prepared.objective.name}, "
            f"space {prepared.spec.space if isinstance(prepared.spec.space, str) else prepared.space.name}, "
            f"{count(n_trials, 'trial')} x {count(prepared.spec.epochs, 'epoch')} on "
            f"{prepared.trainer.device}" + (f"; stops at its {timeout:g} s timeout if that comes first"
                                            if timeout else ""))
        for line in prepared.preparation_lines():
            say(line)
    else:  # what the call asked for and does not get, said even when nothing is printed
        import warnings

        for line in prepared.changes_lines():
            warnings.warn(f"tuner.run_study: {line}", UserWarning, stacklevel=4)
    done = before = _finished(study)
    if say and 0 < before < n_trials:  # as tune() says it (one that has them all says how to run more, below)
        say(f"resuming study {prepared.name!r}: it has {count(before, 'finished trial')} of {n_trials}")
    start = time.monotonic()

    from tuner.study._session import trial_lines

    on_trial = trial_lines(study, done, n_trials, say)

    result = StudyResult(study, None, prepared.spec.seed, prepared)  # type: ignore[arg-type]

    def stopped(exc: BaseException, how: str) -> BaseException:
        """``exc`` with what finished in this call as ``exc.result``."""
        result.trials, result.seconds, result.stopped_by = _finished(study) - before, time.monotonic() - start, how
        exc.result = result  # type: ignore[attr-defined]
        return exc

    try:
        with sigterm_exits():
            run = run_session(study, prepared, workers=workers, devices=devices, on_trial=on_trial, on_start=say)
    except (KeyboardInterrupt, Terminated) as exc:
        _say_interrupted(say, prepared, "terminated" if isinstance(exc, Terminated) else "interrupted")
        raise stopped(exc, "interrupted") from None
    except StudyError as exc:
        raise stopped(exc, "error") from None
    result.trials, result.seconds, result.stopped_by = run.trials, run.seconds, run.stopped_by
    result.pack, result.pack_why, result.workers = run.pack, run.pack_why, list(run.workers)
    result.workers_why = run.workers_why
    for w in run.lost_workers if say else []:
        say(f"worker {w.index} (pid {w.pid}, {w.device}) stopped: {w.stopped()}")
    if run.interrupted is not None:
        term = run.interrupted == signal.SIGTERM
        _say_interrupted(say, prepared, "terminated" if term else "interrupted")
        raise stopped(Terminated() if term else KeyboardInterrupt(), "interrupted")
    if run.failure:
        raise stopped(StudyError(run.failure), "error")
    if say:
        if not run.trials and run.stopped_by == "budget":
            from optuna.trial import TrialState

            from tuner.study._session import queued_waiting

            waits = queued_waiting(len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))))
            say(f"the study already has its {n_trials} finished trials; raise the budget with n_trials={waits}")
        stop = " (timeout reached)" if run.stopped_by == "timeout" else ""
        say(f"ran {run.trials} trial(s) in {run.seconds:.1f}s{stop}; {handed_over_text(study)}")
    return result


def _finished(study: optuna.Study) -> int:
    return len([t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")])
