"""The ``tuner`` command line."""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import sys
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from tuner._builtin import builtin_names
from tuner._logs import quiet_libraries
from tuner._terminate import Terminated, clear_terminate, interrupt, raise_if_terminated, terminate
from tuner._version import __version__
from tuner.cli._output import (
    command,
    echo,
    error_line,
    one_line,
    print_best_config,
    print_json,
    print_listing,
    print_summary,
    print_table,
    use_storage,
)
from tuner.errors import ConfigError, StudyError, TunerError, count
from tuner.study._spec import DEFAULT_PRUNER, StudySpec

if TYPE_CHECKING:
    import optuna

try:  # Typer >= 0.20 carries its own copy of Click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older Typer uses Click itself
    from click import exceptions as click_exceptions


class OneLineErrors(TyperGroup):
    """Click's usage errors (an unknown flag, a value of the wrong type) as one line on standard error, like
    every other error of the CLI, with exit code 2 (1 for a number out of range, input tuner refuses as it does
    in a spec); ``--help`` where the user typed too little."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:  # the help, as plain text (see rich_markup_mode)
            from tuner.cli._output import stdout

            stdout.write(exc.ctx.get_help() + "\n")
            stdout.flush()
            rv = exc.exit_code
        except click_exceptions.UsageError as exc:
            message = exc.format_message().rstrip().replace(": Value error, ", ": ")  # click's enum wording
            if message and message[-1] not in ".?!":
                message += "."
            where = f" See '{exc.ctx.command_path} --help'." if exc.ctx is not None else ""
            try:
                hint = _usage_hint(exc, message)
            except Exception:  # a hint is a kindness: never a traceback in its place
                hint = ""
            error_line(f"{message}{hint}{where}")
            rv = 1 if _out_of_range(exc) else exc.exit_code
        except click_exceptions.ClickException as exc:
            error_line(exc.format_message())
            rv = exc.exit_code
        except typer.Abort:
            error_line("aborted")
            rv = 1
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _create_only(ctx: Any) -> set[str]:
    """The flags of `study create` that `study run` does not take (the settings a study is created with), the
    study's name aside (given to both, as an argument to run)."""
    group = getattr(getattr(ctx, "parent", None), "command", None)
    commands = getattr(group, "commands", {})
    if "create" not in commands or "run" not in commands:
        return set()

    def flags(command: Any) -> set[str]:
        return {o.removeprefix("--") for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]
                if o.startswith("--")}

    return flags(commands["create"]) - flags(commands["run"]) - {"name"}


def _usage_hint(exc: Exception, message: str) -> str:
    """What a newcomer meant where the command line mixes up flags and arguments: ``--debug`` after the command,
    a flag for what this command takes as an argument (``spaces calibrate --space default``), an argument for
    what it takes as a flag (``lr-find digits-mlp``)."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command", None)
    if command is None:
        return ""
    words = ctx.command_path.split(" ", 1)  # the program's name as run, then the command
    sub = words[1] if len(words) > 1 else ""
    path = f"tuner {sub}".rstrip()
    flag = re.match(r"No such option: --([\w-]+)", message)
    if flag and flag.group(1) == "debug":
        return f" --debug goes before the command: `tuner --debug {sub} ...`."
    arguments = [p for p in command.params if getattr(p, "param_type_name", "") == "argument"]
    if flag and sub == "study run" and flag.group(1) in _create_only(ctx):
        return (f" A study keeps the --{flag.group(1)} it was created with; a study with another one is a new "
                f"study: `tuner study create ... --{flag.group(1)} ... --name NEW`.")
    if flag:
        named = next((a for a in arguments if a.name == flag.group(1).replace("-", "_")), None)
        if named is not None:
            return (f" This command takes the {named.name.upper()} without a flag: "
                    f"`{path} {named.name.upper()} ...`.")
    extra = re.match(r"Got unexpected extra argument(?:\(s\)|s)? \((.+)\)", message)
    if extra and not arguments:
        def typed(p: Any) -> bool:  # given on the command line, not a default
            source = ctx.get_parameter_source(p.name)
            return source is not None and getattr(source, "name", "") == "COMMANDLINE"

        options = [p for p in command.params if getattr(p, "param_type_name", "") == "option"]
        wanted = [p for p in options if getattr(p, "required", False) and not typed(p)] or \
            [p for p in options if p.name == "objective" and not typed(p)]  # what lr-find and calibrate are about
        if wanted:
            return f" Did you mean `{wanted[0].opts[0]} {extra.group(1).split()[0]}`?"
    return ""


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _out_of_range(exc: Exception) -> bool:
    """A number the command line gave that is a number but out of range (``--seed -1``): input that tuner
    refuses, exit code 1 as everywhere else (a spec's ``seed: -1``, ``study create --seed -1``), not a command
    line it cannot parse (2)."""
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if callable(errors):  # Typer >= 0.20 checks ranges with pydantic
        try:
            first = errors()[0]
        except Exception:  # pragma: no cover - an error of another shape
            return False
        return first.get("type") in _RANGE_ERRORS
    return "is not in the range" in str(getattr(exc, "message", ""))  # Click's own IntRange, older Typer


# Help is plain text: Rich markup would read "[default: ...]" and any other bracket in a help text as a tag and
# drop it, and plain text reads the same in every terminal, pager and log.
app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Tune a PyTorch model's optimizer settings with Optuna.",
                  context_settings={"help_option_names": ["-h", "--help"]})
study_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Create, run and inspect studies.")
spaces_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Search spaces: the built-in ones and your own YAML files.")
objectives_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                             help="Objectives: the built-in ones and your own (file.py:attr).")
app.add_typer(study_app, name="study")
app.add_typer(spaces_app, name="spaces")
app.add_typer(objectives_app, name="objectives")

_state: dict[str, Any] = {"debug": False, "study": None}  # the study being run (for the interrupt message)
F = TypeVar("F", bound=Callable[..., Any])


class Format(str, Enum):
    text = "text"
    json = "json"


def handle_errors(fn: F) -> F:
    """Every error becomes one line on standard error: user errors (exit 1) with their message, anything
    unexpected with its type and message and a pointer to ``--debug`` for the traceback. Ctrl-C exits 130
    and SIGTERM 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_libraries()
        _state["study"] = None  # each command says what it runs; nothing carries over from an earlier one
        _state.pop("preparing", None)
        use_storage(None)
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, terminate)  # noted too, in case Python loses the exception (in a __del__)
        # Ctrl-C as Python's own handler takes it, noted too; a SIGINT ignored (nohup, a background job) stays so.
        previous_int = signal.getsignal(signal.SIGINT)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, interrupt)
        try:
            with contextlib.ExitStack() as cleanup:  # what a command started for its own time (a fork server)
                _state["cleanup"] = cleanup
                clear_terminate()
                done = fn(*args, **kwargs)
                raise_if_terminated()  # a signal whose exception was lost after the command's last check
                return done
        except (typer.Exit, typer.Abort, click_exceptions.ClickException):
            raise
        except Terminated:
            echo(f"terminated{_resumes()}", to_err=True)
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            echo(f"interrupted{_resumes()}", to_err=True)
            raise typer.Exit(130) from None
        except SystemExit:
            raise
        except TunerError as exc:
            if _state["debug"]:
                raise
            error_line(exc)
            raise typer.Exit(1) from None
        except BrokenPipeError:  # `tuner ... | head`: the reader has gone; nothing to say to it
            from tuner.cli._output import SIGPIPE_EXIT, quiet_pipe

            quiet_pipe(sys.__stdout__)
            raise typer.Exit(SIGPIPE_EXIT) from None
        except MemoryError:
            if _state["debug"]:
                raise
            error_line("out of memory (MemoryError); nothing more could be done")
            raise typer.Exit(1) from None
        except OSError as exc:
            if _state["debug"]:
                raise
            from tuner._files import os_error_message

            error_line(os_error_message(exc, exc.filename or "?") if exc.filename else f"{type(exc).__name__}: "
                                                                                    f"{exc}")
            raise typer.Exit(1) from None
        except BaseException as exc:  # a bug, or CancelledError/GeneratorExit from the user's code
            if _state["debug"]:
                raise
            error_line(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
            raise typer.Exit(1) from None
        finally:
            clear_terminate()
            _state.pop("cleanup", None)  # closed: nothing after the command enters it
            signal.signal(signal.SIGTERM, previous)
            if previous_int is signal.default_int_handler:
                signal.signal(signal.SIGINT, previous_int)

    return wrapper  # type: ignore[return-value]


def _resumes() -> str:
    """What an interrupted command says: how to go on with the study it was running, if any."""
    name = _state.get("study")
    if not name and _state.get("preparing"):
        spec, said = _state["preparing"]
        from tuner.study._storage import study_in_storage

        if study_in_storage(spec.study_name, spec.storage):  # interrupted as it was being written
            return (f"; study {spec.study_name!r} was being created: `{command('delete', spec.study_name)}`, then "
                    f"the same command, makes it anew")
        return said
    if not name:
        return ""

    from tuner.study._engine import INTERRUPTED_RUN

    return f"; {INTERRUPTED_RUN}. `{command('run', name)}` resumes the study."


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        echo(f"tuner {__version__} (optuna {version('optuna')})")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for user errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Tune a PyTorch model's optimizer settings with Optuna."""
    _state["debug"] = debug


def _default(field: str) -> str:
    """`` [default: X]`` for a help text: the ``StudySpec`` field's default, so help and behaviour agree."""
    return f" [default: {StudySpec.model_fields[field].default}]."


# No envvar here: TUNER_STORAGE is the default when neither the flag nor the spec file names a storage.
StorageOpt = Annotated[str | None, typer.Option("--storage", help="Storage URL [default: $TUNER_STORAGE, "
                                                                  "else sqlite:///tuner.db].")]
FormatOpt = Annotated[Format, typer.Option("--format", help="text, or json for scripts.")]


def _as_flag(exc: ConfigError, flags: dict[str, Any]) -> ConfigError:
    """``exc`` with the flag that gave its value named where it names the spec key (``warm_start: ...``) or
    nothing (``Unknown search space ...``, ``Unknown device ...``)."""
    message = str(exc)
    for key, given in flags.items():
        if not given:
            continue
        flag = "--" + key.replace("_", "-")
        if message.startswith(f"{key}: "):  # a setting the flag gave (it overrides the spec file's)
            return type(exc)(f"{flag}: {message[len(key) + 2:]}")
        unknown = {"space": "Unknown search space ", "device": "Unknown device ", "devices": "Unknown device "}.get(key)
        # ... and the value named is this flag's (not --devices' beside --device; one of --devices' list)
        if unknown and any(message.startswith(unknown + repr(part.strip())) for part in str(given).split(",")):
            return type(exc)(f"{flag}: {message}")
    return exc


def _number_or_auto(value: str | None) -> str | None:
    """--workers and --pack: a word that is neither auto nor a whole number is a command line not understood
    (exit 2, as for --seed abc); a number out of range is checked where the value is used (exit 1)."""
    if value is None or value.strip().lower() == "auto":
        return value
    if not re.fullmatch(r"\s*-?\d+\s*", value):  # as parse_pack reads one (int() also takes +2 and 1_0)
        raise typer.BadParameter(f"{value!r} is neither auto nor a whole number")
    return value


WorkersOpt = Annotated[str, typer.Option("--workers", metavar="N|auto", show_default=False, callback=_number_or_auto,
                                         help="Worker processes on this machine, each with torch threads = cores / N; "
                                              "auto: one per core for a study with a timeout on a CPU, where "
                                              "one-thread processes get more done than one process, else one "
                                              "[default: auto, or $TUNER_WORKERS].")]
DevicesOpt = Annotated[str | None, typer.Option("--devices", help="Comma-separated devices for the workers (e.g. "
                                                                  "cuda:0,cuda:1): one worker on each, or --workers N "
                                                                  "taken in turn over them.")]
_PACK_HELP = ("Train K trials at once as one stacked model (same batch size and optimizer family; others train "
              "alone); auto times packs at start and packs only where they pay off")
_ON_OOM_HELP = ("After a batch size runs out of memory on a device: avoid (configs with that batch size or more are "
                "not trained there) or accumulate (they train as micro-batches of half that size, gradients "
                "accumulated)")
_TIMEOUT_HELP = ("Seconds of wall time: no trial starts after it, and a running trial stops at its next epoch end "
                 "(recorded as failed, reason 'timeout')")
PackOpt = Annotated[str | None, typer.Option("--pack", metavar="K|auto", callback=_number_or_auto,
                                              help=f"{_PACK_HELP} [default: auto, or $TUNER_PACK].")]
OnOomOpt = Annotated[str | None, typer.Option("--on-oom", metavar="avoid|accumulate",
                                               help=f"{_ON_OOM_HELP} [default: avoid].")]
# study run: a study keeps what it was created with; these change it for this run (and the ones after).
RunPackOpt = Annotated[str | None, typer.Option("--pack", metavar="K|auto", callback=_number_or_auto,
                                                 help=f"{_PACK_HELP} [default: the study's, or $TUNER_PACK].")]
RunOnOomOpt = Annotated[str | None, typer.Option("--on-oom", metavar="avoid|accumulate",
                                                  help=f"{_ON_OOM_HELP} [default: the study's].")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Continue a study whose objective changed (metric, "
                                                        "direction, data), mixing old and new values knowingly.")]
MlflowOpt = Annotated[str | None, typer.Option(
    "--mlflow", metavar="URI", help="Log every finished trial to MLflow (e.g. sqlite:///mlflow.db or "
                                    "http://HOST:5000): an experiment named after the study, a run per trial, the "
                                    "best config [default: the spec's mlflow, else $TUNER_MLFLOW_URI].")]
RunMlflowOpt = Annotated[str | None, typer.Option(
    "--mlflow", metavar="URI", help="Log every finished trial of this run to MLflow (e.g. sqlite:///mlflow.db): an "
                                    "experiment named after the study, a run per trial, the best config; not "
                                    "stored with the study [default: $TUNER_MLFLOW_URI].")]
TensorBoardOpt = Annotated[str | None, typer.Option(
    "--tensorboard", metavar="DIR", help="Write TensorBoard logs to DIR/<study>: a run per trial with its scalars "
                                         "and HParams [default: none].")]
TimeoutOpt = Annotated[float | None, typer.Option(help=f"{_TIMEOUT_HELP} [default: none].")]
DataOpt = Annotated[str | None, typer.Option(help="CSV file (objective 'tabular').")]
TargetOpt = Annotated[str | None, typer.Option(help="Target column (objective 'tabular').")]
TaskOpt = Annotated[str | None, typer.Option(
    metavar="auto|classification|regression",
    help="Objective 'tabular': classification or regression [default: auto: text, true/false or at most 20 distinct "
         "whole numbers are classes].")]


def objective_options(data: str | None, target: str | None, task: str | None) -> dict[str, str]:
    """The objective's options given on the command line (tabular's CSV file, target column and task)."""
    return {k: v for k, v in (("data", data), ("target", target), ("task", task)) if v is not None}
RunTimeoutOpt = Annotated[float | None, typer.Option(help=f"{_TIMEOUT_HELP}; for this run only, not saved "
                                                           f"with the study [default: the study's].")]


def _prepared_json(prepared: Any) -> dict[str, Any]:
    """What preparing the study did, as the text output says it: the first trials queued, and notes on the
    first trials and on the space."""
    return {"queued": [s.to_dict() for s in prepared.queued], "start_notes": list(prepared.start_notes),
            "space_notes": list(prepared.space_notes)}


def _run(study: optuna.Study, prepared: Any, fmt: Format, workers: int | str = 1, devices: str | None = None) -> None:
    from tuner.cli._progress import TrialProgress
    from tuner.study._session import run_study, study_summary

    _state["study"] = prepared.name

    with TrialProgress(study, prepared.spec.n_trials, quiet=fmt is Format.json,
                       timeout=prepared.spec.timeout) as progress:
        run = run_study(study, prepared, workers=workers, devices=devices, on_trial=progress,
                        on_start=None if fmt is Format.json else progress.note)
    summary = study_summary(study)
    # One shape for both: a script reads run.trials whether the study ran here or in workers.
    data = {**summary, "run": {"trials": run.trials, "seconds": round(run.seconds, 2), "stopped_by": run.stopped_by,
                               "threads": run.threads, "pack": run.pack, "pack_why": run.pack_why,
                               "workers_why": run.workers_why, "workers": [w.__dict__ for w in run.workers],
                               "requeued": run.requeued, **_prepared_json(prepared)},
            **({"calibration": prepared.calibration.summary()} if prepared.calibration else {})}
    if run.workers:
        if fmt is Format.json:
            print_json(data)
        else:
            echo(f"{len(run.workers)} workers ran {run.trials} trial(s) in {run.seconds:.1f}s"
                 + (" (timeout reached)" if run.stopped_by == "timeout" else "")
                 + (f"; trials {run.requeued} of lost workers were queued again" if run.requeued else ""))
            for w in run.lost_workers:
                echo(f"worker {w.index} (pid {w.pid}, {w.device}) stopped: "
                     + one_line(w.stopped()), to_err=True)
            print_summary(summary)
            print_best_config(summary)
        if run.interrupted is not None:
            echo(f"{'interrupted' if run.interrupted == signal.SIGINT else 'terminated'}{_resumes()}", to_err=True)
            raise SystemExit(130 if run.interrupted == signal.SIGINT else 143)
        if run.failure:
            raise StudyError(run.failure)
        return
    if fmt is Format.json:
        print_json(data)
        return
    if not run.trials and run.stopped_by == "budget" and prepared.grid:
        space = prepared.spec.space if isinstance(prepared.spec.space, str) else prepared.space.name
        echo(f"every point of the grid over space {space!r} has run ({count(len(prepared.grid), 'trial')}): a grid "
             f"runs each point once, whatever --n-trials asks (a study with another sampler searches further)")
    elif not run.trials and run.stopped_by == "budget":
        from tuner.study._session import queued_waiting

        echo(f"the study already has its {prepared.spec.n_trials} finished trials; raise the budget with "
             f"--n-trials{queued_waiting(summary['counts'].get('queued', 0))}")
    else:
        echo(f"ran {run.trials} trial(s) in {run.seconds:.1f}s on {run.threads} thread(s)"
             + (" (timeout reached)" if run.stopped_by == "timeout" else ""))
    print_summary(summary)
    print_best_config(summary)


@study_app.command("create")
@handle_errors
def study_create(
    spec: Annotated[str | None, typer.Argument(help="Study spec: a YAML file or a built-in name (quickstart, "
                                                    + ", ".join(n for n in builtin_names("studies", (".yaml",))
                                                                if n != "quickstart")
                                                    + ") [default: quickstart, unless --objective is given].")
                    ] = None,
    *,
    name: Annotated[str | None, typer.Option(help="Study name [default: the spec's name; OBJECTIVE-SPACE with "
                                                  "--objective and no spec; quickstart with neither].")] = None,
    objective: Annotated[str | None, typer.Option(help="Built-in objective, path/file.py:attr or module:attr"
                                                       + _default("objective"))] = None,
    space: Annotated[str | None, typer.Option(help="Built-in search space or a YAML file" + _default("space"))
                     ] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random, qmc, cmaes, gp, nsgaii or grid (options: "
                                                     "in a spec file, sampler: {name: tpe, ...})"
                                                     + _default("sampler"))] = None,
    pruner: Annotated[str | None, typer.Option(help="median, percentile, successive_halving, hyperband, "
                                                    "wilcoxon, patient, top_third or none (options: in a spec "
                                                    "file, pruner: {name: median, n_warmup_steps: 2}) [default: "
                                                    "the objective's own, else median].")] = None,
    n_trials: Annotated[int | None, typer.Option(help="Trials to finish (complete or pruned)"
                                                      + _default("n_trials"))] = None,
    timeout: TimeoutOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per trial [default: the objective's own, "
                                                    "else 20].")] = None,
    storage: StorageOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps" + _default("device"))] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the sampler and the trials" + _default("seed"))] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads [default: timed at start].")] = None,
    data: DataOpt = None,
    target: TargetOpt = None,
    task: TaskOpt = None,
    objectives: Annotated[str | None, typer.Option(
        "--objectives", metavar="METRIC,train_seconds", help="Several objectives: the objective's metric, then "
                                                              "train_seconds; show and report draw the Pareto "
                                                              "front and recommend its knee.")] = None,
    batch_size: Annotated[str | None, typer.Option(
        "--batch-size", metavar="N[,N...]", help="Batch sizes to search instead of the space's: one (fixed) or a "
                                                 "comma-separated list.")] = None,
    calibrate: Annotated[bool | None, typer.Option(
        "--calibrate/--no-calibrate", show_default=False,
        help="Run an LR range test first and search the lr ranges it suggests (tuner lr-find; it runs before "
             "--timeout starts counting) [default: the spec's calibrate, else no].")] = None,
    enqueue: Annotated[list[str] | None, typer.Option(
        "--enqueue", metavar="FILE", help="A train-config file (YAML/JSON; one config or a list) to try first; "
                                          "repeat for several.")] = None,
    warm_start: Annotated[str | None, typer.Option(
        "--warm-start", metavar="STUDY", help="An earlier study in the same storage (a spec's warm_start: "
                                              "{study, storage, top} names another) whose 5 best distinct "
                                              "configs this space holds (never from its worse half) are tried "
                                              "first.")] = None,
    known_starts: Annotated[bool | None, typer.Option(
        "--known-starts/--no-known-starts", show_default=False,
        help="Try the known-good starting points the space holds first (tuner spaces starts) [default: the "
             "spec's known_starts, else yes].")] = None,
    no_run: Annotated[bool, typer.Option("--no-run", help="Only create the study.")] = False,
    workers: WorkersOpt = "auto",
    devices: DevicesOpt = None,
    pack: PackOpt = None,
    on_oom: OnOomOpt = None,
    mlflow: MlflowOpt = None,
    tensorboard: TensorBoardOpt = None,
    force: ForceOpt = False,
    fmt: FormatOpt = Format.text,
) -> None:
    """Create a study from a spec file and/or flags, then run it.

    Flags override the spec file; the defaults shown apply where neither sets a value. With no spec and no
    --objective, the quickstart spec runs (studies/quickstart.yaml: the MNIST-1D CNN, 60 trials, a 110 s
    timeout). The study is stored in --storage (default: $TUNER_STORAGE, else ./tuner.db)."""
    from tuner.study import StudySpec, load_spec

    _check_workers(workers, pack)
    try:
        base = load_spec(spec) if spec else (load_spec("quickstart") if objective is None else StudySpec())
    except ConfigError as exc:
        from tuner.study._storage import study_command, study_in_storage

        if spec and study_in_storage(spec, storage):  # a study's name where a spec goes
            raise ConfigError(f"{exc} A study named {spec!r} is in the storage: "
                              f"`{study_command('run', spec, storage)}` goes on with it.") from None
        raise
    spec_obj = base.with_overrides(
        name=name, objective=objective, space=space, sampler=sampler, pruner=pruner, n_trials=n_trials,
        timeout=timeout, epochs=epochs, storage=storage, device=device, seed=seed, data=data, target=target,
        task=task, threads=threads, pack=pack, on_oom=on_oom, batch_size=batch_size, calibrate=calibrate,
        objectives=objectives, enqueue=enqueue or None, warm_start=warm_start, known_starts=known_starts,
        mlflow=mlflow, tensorboard=tensorboard,
    )
    from tuner.study._inputs import open_checked
    from tuner.study._storage import study_in_storage

    joined = study_in_storage(spec_obj.study_name, spec_obj.storage)
    if joined and n_trials is None and "n_trials" not in base.model_fields_set:
        # Joined without a budget asked for: the study keeps its own (the default 30 would replace it).
        spec_obj = _keep_stored_budget(spec_obj)
    # A spec or flag refused there is said before PyTorch loads.
    _early_server(workers, spec_obj.timeout, devices, run=not no_run)
    if not joined:  # an interrupt while the study is prepared (an LR range test) leaves no study behind
        _state["preparing"] = (spec_obj, "; no study was created (it was being prepared" + (
            ", its LR range test running" if spec_obj.calibrate else "") + "): the same command starts again")
    try:
        prepared, study = open_checked(spec_obj, spec_file=spec if space is None else None, devices=devices,
                                       force=force, run=not no_run)
    except ConfigError as exc:  # a value a flag gave is named by the flag, not by the spec key it sets
        raise _as_flag(exc, {"warm_start": warm_start, "enqueue": enqueue, "objectives": objectives,
                             "space": space, "device": device, "devices": devices}) from None
    _state.pop("preparing", None)
    from tuner.study._session import study_summary
    from tuner.study._storage import storage_hint, storage_label

    use_storage(prepared.storage_url)
    # As the budget counts them: complete and pruned trials (failed ones run again)
    from tuner.study._record import FINISHED

    done = len(study.get_trials(deepcopy=False, states=FINISHED)) if joined else 0
    if fmt is Format.text:
        space = prepared.spec.space if isinstance(prepared.spec.space, str) else prepared.space.name  # as show says
        # Joined, the header says so (it read as a new study's, then its trials went on from where they were).
        echo("joined the existing study " if joined else "study ", (prepared.name, "bold"),
             f" in {storage_label(prepared.storage_url)}: objective "
             f"{prepared.objective.name}, space {space}, {count(prepared.spec.n_trials, 'trial')} x "
             f"{count(prepared.spec.epochs, 'epoch')} on {prepared.trainer.device}{_time_box(prepared.spec.timeout)}"
             + (f" ({count(done, 'trial')} finished already)" if joined else ""))
        for line in prepared.preparation_lines():
            echo(line)
    if no_run:
        if fmt is Format.json:
            print_json({**study_summary(study), "created": _prepared_json(prepared)})
        else:
            hint = (storage_hint(prepared.storage_url, given=bool(spec_obj.storage)) + _tracking_flags(spec_obj)
                    + (f" --workers {workers}" if workers != "auto" else "") + (f" --devices {devices}" if devices
                                                                                 else ""))
            echo("run it with" if joined else "created; run it with",
                 f": tuner study run {_quote(prepared.name)}{hint}")
            if spec_obj.mlflow or spec_obj.tensorboard:
                echo("(--mlflow and --tensorboard are not stored with the study: the run they log is the one they "
                     "are given to)")
        return
    _run(study, prepared, fmt, workers, devices)


@study_app.command("run")
@handle_errors
def study_run(
    name: Annotated[str, typer.Argument(help="Study name.")],
    *,
    storage: StorageOpt = None,
    n_trials: Annotated[int | None, typer.Option(help="Raise or lower the study's trial budget [default: the "
                                                      "study's].")] = None,
    timeout: RunTimeoutOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps [default: the study's].")
                      ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads [default: timed at start].")] = None,
    workers: WorkersOpt = "auto",
    devices: DevicesOpt = None,
    pack: RunPackOpt = None,
    on_oom: RunOnOomOpt = None,
    mlflow: RunMlflowOpt = None,
    tensorboard: TensorBoardOpt = None,
    force: ForceOpt = False,
    fmt: FormatOpt = Format.text,
) -> None:
    """Continue (or join) a study: the spec and space come from the storage. Start it on every machine
    (same --storage) to run one study on many."""
    from tuner.study._open import stored_spec

    _check_workers(workers, pack)
    spec_obj, space_data = stored_spec(name, storage)  # a study that is not there is said before PyTorch loads
    spec_obj = spec_obj.with_overrides(n_trials=n_trials, timeout=timeout, device=device, threads=threads, pack=pack,
                                       on_oom=on_oom, mlflow=mlflow, tensorboard=tensorboard)
    from tuner.study._inputs import open_checked

    _early_server(workers, spec_obj.timeout, devices)
    try:
        prepared, study = open_checked(spec_obj, space_data=space_data, devices=devices, force=force)
    except ConfigError as exc:
        raise _as_flag(exc, {"device": device, "devices": devices}) from None
    use_storage(prepared.storage_url)
    if fmt is Format.text:
        from tuner.study._engine import counts

        c = counts(study)
        echo("study ", (prepared.name, "bold"), f": {c['COMPLETE'] + c['PRUNED']} of {prepared.spec.n_trials} trials "
             f"finished, {count(prepared.spec.epochs, 'epoch')} each, on {prepared.trainer.device}"
             f"{_time_box(prepared.spec.timeout)}")
    _run(study, prepared, fmt, workers, devices)


def _early_server(workers: str, timeout: float | None, devices: str | None, run: bool = True) -> None:
    """A run that will likely start workers starts their fork server now, for the command's time: it imports
    PyTorch while this process loads the objective and opens the study."""
    from tuner.study._workers import early_server, pool_likely

    _state["cleanup"].enter_context(early_server(run and pool_likely(workers, timeout, devices)))


def _check_workers(workers: str, pack: str | None = None) -> None:
    """--workers N|auto (or $TUNER_WORKERS), --pack K|auto and $TUNER_PACK, refused before PyTorch loads and
    anything is written (and before the study is looked for)."""
    from tuner.study._autoworkers import requested_workers
    from tuner.study._spec import pack_from_environment, parse_pack
    from tuner.study._workers import check_workers

    if pack is not None:
        try:
            parse_pack(pack)
        except ValueError as exc:
            raise ConfigError(f"--pack: {exc}.") from None
    pack_from_environment()
    asked = requested_workers(workers)
    if asked != "auto":
        check_workers(int(asked))


def _keep_stored_budget(spec: Any) -> Any:
    """``spec`` with the trial budget of the stored study it joins (where one can be read)."""
    from tuner.errors import TunerError
    from tuner.study._open import stored_spec

    try:
        stored, _ = stored_spec(spec.study_name, spec.storage)
    except TunerError:  # not a study of ours: joining it is refused further on, with its reason
        return spec
    return spec.with_overrides(n_trials=stored.n_trials)


def _tracking_flags(spec: Any) -> str:
    """The --mlflow / --tensorboard part of the run command a study created with --no-run is told to run (they
    are not stored with it); a tracking URI that holds a password is a placeholder, as a storage URL is."""
    from tuner._secrets import has_password

    flags = ""
    if spec.mlflow:
        flags += " --mlflow " + ("<your MLflow URI>" if has_password(spec.mlflow) else _quote(spec.mlflow))
    if spec.tensorboard:
        flags += " --tensorboard " + _quote(spec.tensorboard)
    return flags


def _time_box(timeout: float | None) -> str:
    return f"; stops at its {timeout:g} s timeout if that comes first (--timeout)" if timeout else ""


@study_app.command("delete")
@handle_errors
def study_delete(
    name: Annotated[str, typer.Argument(help="Study name.")],
    *,
    storage: StorageOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete it even while its workers train trials (they "
                                                        "stop with an error).")] = False,
) -> None:
    """Delete a study and all its trials (asks first; --yes skips the question; refused while its trials are
    training, unless --force)."""
    from tuner.study._manage import check_deletable, delete_study, study_facts

    facts = study_facts(name, storage)
    check_deletable(facts, force)  # before asking: a question it would refuse anyway
    what = (f"study {name!r} in {facts.storage}: {facts.counted()}"
            + (f", {facts.running} running" if facts.running else ""))
    if not yes:
        if not _can_ask():
            raise StudyError(f"Not deleting {what}: standard input is not a terminal, so it cannot ask first; "
                             f"pass --yes to delete it.")
        if not typer.confirm(f"Delete {what}?", default=False):
            echo("nothing deleted")
            raise typer.Exit(1)
    delete_study(name, storage, force=force)
    echo(f"deleted {what}")


def _can_ask() -> bool:
    """Whether a question can be answered: standard input is a terminal."""
    return sys.stdin.isatty()


@study_app.command("enqueue")
@handle_errors
def study_enqueue(
    name: Annotated[str, typer.Argument(help="Study name.")],
    files: Annotated[list[str], typer.Argument(metavar="FILE", help="Train-config files (YAML/JSON; one config or a "
                                                                    "list each).")],
    *,
    storage: StorageOpt = None,
) -> None:
    """Queue known configs as the next trials of a study (checked against its space first)."""
    from tuner.study._manage import enqueue_files

    starts, follow, notes = enqueue_files(name, files, storage)
    for start in starts:
        echo("queued ", start.source + (f" ({'; '.join(start.changes)})" if start.changes else ""))
    for note in notes:
        echo(note)
    echo(f"{len(starts)} config(s) queued" + (f"; {follow}" if starts else ""))


@study_app.command("rename")
@handle_errors
def study_rename(
    name: Annotated[str, typer.Argument(help="Study name.")],
    new_name: Annotated[str, typer.Argument(help="The new name.")],
    *,
    storage: StorageOpt = None,
) -> None:
    """Rename a study (refused while its trials train, or where the new name is taken)."""
    from tuner.study._manage import rename_study

    facts = rename_study(name, new_name, storage)
    echo(f"renamed study {name!r} to {new_name!r} in {facts.storage} ({facts.counted()})")
    _left_behind_note(facts, new_name, storage)


@study_app.command("copy")
@handle_errors
def study_copy(
    name: Annotated[str, typer.Argument(help="Study name.")],
    new_name: Annotated[str, typer.Argument(help="The copy's name.")],
    *,
    storage: StorageOpt = None,
    to_storage: Annotated[str | None, typer.Option("--to-storage", help="Storage URL of the copy [default: the "
                                                                        "study's own].")] = None,
) -> None:
    """Copy a study with its trials, spec and space: to try another budget, or to another storage."""
    from tuner.study._manage import copy_study
    from tuner.study._storage import mask_url

    facts = copy_study(name, new_name, storage, to_storage)
    where = f" in {mask_url(to_storage)}" if to_storage else ""
    echo(f"copied study {name!r} ({facts.counted()}) to {new_name!r}{where}")
    _left_behind_note(facts, new_name, to_storage or storage)


def _left_behind_note(facts: Any, name: str, storage: str | None) -> None:
    """Trials left RUNNING by a worker that is gone move with a renamed or copied study: said, with what clears
    them."""
    from tuner.cli._output import left_behind_text

    use_storage(storage)
    left = facts.running - facts.live
    if left:
        echo(("note:", "yellow"), f" {left} RUNNING trial(s) went with it, {left_behind_text(left, name)}")


@study_app.command("list")
@handle_errors
def study_list(*, storage: StorageOpt = None, fmt: FormatOpt = Format.text) -> None:
    """List the studies in a storage (tuner's own, and any other Optuna study in it). Changes nothing."""
    from tuner.study import default_storage
    from tuner.study._describe import list_studies
    from tuner.study._storage import storage_label

    url = storage or default_storage()
    rows = list_studies(url)
    if fmt is Format.json:
        print_json(rows)
        return
    if not rows:
        from tuner.study._storage import storage_exists

        missing = "" if storage_exists(url) else " (it does not exist yet: check the path or --storage)"
        echo(f"no studies in {storage_label(url)}{missing}")
        return
    print_table(["name", "kind", "objective", "trials", "best", "first trial"],
                [[r["name"], r["kind"] + (f" ({len(r['directions'])} objectives)" if len(r["directions"]) > 1
                                          and r["kind"] != "multi-objective" else ""),
                  _here(r["objective"]) if r["objective"] else "-",
                  f"{r['trials']}" + (f" (+{r['queued']} queued)" if r["queued"] else ""),
                  "-" if r["best"] is None else f"{r['best']:.4f}" + (" (knee)" if len(r["directions"]) > 1 else ""),
                  str(r["created"])[:16].replace("T", " ") if r["created"] else "-"] for r in rows],
                numbers=(3, 4), optional=(1, 5))  # narrow: without the first trial's date, then the kind


def _here(objective: str) -> str:
    """An objective file's path as given from this folder where it lies below it (``my_model.py:objective``),
    else as stored."""
    from pathlib import Path

    path, sep, attr = objective.rpartition(":")
    if not sep or not path.startswith("/"):
        return objective
    try:
        return f"{Path(path).relative_to(Path.cwd())}:{attr}"
    except ValueError:
        return objective


@study_app.command("show")
@handle_errors
def study_show(
    name: Annotated[str, typer.Argument(help="Study name.")],
    *,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option(min=1, help="Number of best trials to list.")] = 10,
    fmt: FormatOpt = Format.text,
) -> None:
    """Best trials, counts of pruned and failed trials with their reasons, and the best config."""
    from tuner.study._open import open_study

    study = open_study(name, storage)  # a study that is not there is said before PyTorch loads
    from tuner.study._describe import study_summary

    summary = study_summary(study, top=top)
    if (summary.get("confirmation") or {}).get("current"):  # the report's line, where its runs are stored
        from tuner.report._confirm import stored_baseline_line

        summary["tuning_free"] = stored_baseline_line(study)
    use_storage(storage)
    if fmt is Format.json:
        print_json(summary)
        return
    print_summary(summary)
    print_best_config(summary)


@spaces_app.command("list")
@handle_errors
def spaces_list(fmt: FormatOpt = Format.text) -> None:
    """List the built-in search spaces."""
    from tuner._builtin import space_descriptions

    rows = space_descriptions()
    if fmt is Format.json:
        print_json(rows)
        return
    print_listing([[name, description] for name, description in rows.items()])


@spaces_app.command("show")
@handle_errors
def spaces_show(name: Annotated[str, typer.Argument(help="Built-in name or YAML file.")],
                fmt: FormatOpt = Format.text) -> None:
    """Print a search space: its YAML and the Optuna parameters it suggests."""
    from tuner.spaces import load_space

    space = load_space(name)
    dists = {k: str(v) for k, v in space.distributions().items()}
    if fmt is Format.json:
        print_json({"name": space.name, "source": space.source, "space": space.raw, "parameters": dists})
        return
    echo(f"# {space.source}")
    echo(space.to_yaml().rstrip())
    echo(f"\n# {len(dists)} tunable parameter{'' if len(dists) == 1 else 's'}")
    for key, dist in dists.items():
        echo(f"#   {key}: {dist}")


@spaces_app.command("starts")
@handle_errors
def spaces_starts(space: Annotated[str, typer.Argument(help="Built-in name or YAML file.")] = "default",
                  fmt: FormatOpt = Format.text) -> None:
    """List the known-good starting points, and which a space holds (a new study tries those first)."""
    from tuner.spaces import load_space

    the_space = load_space(space)  # a space that is not there, or wrong, is said before PyTorch loads
    from tuner.study._starts import KNOWN_STARTS, known_starts, why_not_held

    # What a held point becomes in this space (a value the space fixes, a rate lr_scaling scales), as
    # `study create` prints it.
    changes = {start.source.removeprefix("known start "): start.changes for start in known_starts(the_space)}
    rows = [{"name": p.name, "in_space": not why, "why_not": why or None, "about": p.about, "config": p.config,
             "changes": changes.get(p.name, [])}
            for p in KNOWN_STARTS for why in [why_not_held(the_space, p)]]
    if fmt is Format.json:
        print_json({"space": the_space.name, "starts": rows})
        return
    lines = []
    for row in rows:
        lines.append([row["name"], "tried first" if row["in_space"] else "not in this space", row["about"]])
        if row["why_not"]:
            lines.append(["", "", f"not held: {row['why_not']}"])
        if row["changes"]:
            lines.append(["", "", f"in this space: {'; '.join(row['changes'])}"])
    print_listing(lines)
    held = sum(row["in_space"] for row in rows)
    echo(f"space {the_space.name}: {held} of {len(rows)} are tried first in a new study (--no-known-starts "
         f"or known_starts: false skips them)")


@objectives_app.command("list")
@handle_errors
def objectives_list(fmt: FormatOpt = Format.text) -> None:
    """List the built-in objectives."""
    from tuner._builtin import objective_descriptions

    rows = objective_descriptions()
    if fmt is Format.json:
        print_json(rows)
        return
    print_listing([[name, description] for name, description in rows.items()])


@objectives_app.command("show")
@handle_errors
def objectives_show(
    name: Annotated[str, typer.Argument(help="Built-in name, path/file.py:attr or module:attr.")],
    data: DataOpt = None,
    target: TargetOpt = None,
    task: TaskOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Describe an objective: its data splits, model and metric."""
    from tuner.objectives import load_objective

    obj = load_objective(name, **objective_options(data, target, task))
    d = obj.load_data()
    model = obj.build_model(d)
    info = {
        "name": obj.name, "description": obj.description, "metric": obj.metric, "direction": obj.direction,
        "task": "classification" if d.n_classes else "regression", "classes": d.n_classes,
        "input_shape": list(d.input_shape), "train": len(d.x_train), "validation": len(d.x_val),
        "test": None if d.x_test is None else len(d.x_test),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dropout_modules": sum(1 for m in model.modules() if "Dropout" in type(m).__name__),
        "epochs_per_trial": obj.trial_epochs,
        "pruner": obj.pruner or DEFAULT_PRUNER,
    }
    if fmt is Format.json:
        print_json(info)
        return
    for key, value in info.items():
        if value is None and key in ("classes", "test"):  # a regression has no classes; a set without a test split
            continue
        echo(f"{key:>16}: {value}")
    echo(str(model))


def _masked(url: str) -> str:
    from tuner.study._storage import storage_label

    return storage_label(url)


def _quote(name: str) -> str:
    import shlex

    return shlex.quote(name)



