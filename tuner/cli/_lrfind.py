"""``tuner lr-find`` and ``tuner spaces calibrate``: the learning-rate range test from the command line."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from tuner.cli._app import (
    DataOpt,
    Format,
    FormatOpt,
    TargetOpt,
    TaskOpt,
    app,
    handle_errors,
    objective_options,
    spaces_app,
)
from tuner.cli._output import echo, print_json

ObjectiveOpt = Annotated[str, typer.Option(help="Built-in objective, path/file.py:attr or module:attr.")]
OptimizerOpt = Annotated[list[str] | None, typer.Option(
    "--optimizer", metavar="NAME", help="Optimizer to sweep; repeat for several [default: every optimizer of the "
                                        "space].")]
BatchOpt = Annotated[int | None, typer.Option(min=1, help="Batch size of the sweep [default: the space's middle "
                                                          "batch size].")]
StartOpt = Annotated[float, typer.Option(help="First learning rate of the sweep (above 0).")]
EndOpt = Annotated[float, typer.Option(help="Last learning rate of the sweep (above the first).")]
StepsOpt = Annotated[int | None, typer.Option(min=20, help="Batches in a sweep [default: 20 per decade].")]
RepeatsOpt = Annotated[int, typer.Option(min=1, help="Sweeps per optimizer with different seeds; the median "
                                                     "loss counts.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
SeedOpt = Annotated[int, typer.Option(min=0, help="Seed of the first sweep.")]
def _load(objective: str, given: dict[str, str]) -> Any:
    """The objective, loaded once before the sweeps (its name names the default plot file)."""
    from tuner.objectives import load_objective

    return load_objective(objective, **given)


def _find(objective: Any, space: str, optimizer: list[str] | None, batch_size: int | None, start_lr: float,
          end_lr: float, steps: int | None, repeats: int, device: str, seed: int) -> Any:
    from tuner.lrfind import lr_find

    return lr_find(objective, optimizer or None, space=space, batch_size=batch_size, start_lr=start_lr,
                   end_lr=end_lr, steps=steps, repeats=repeats, device=device, seed=seed)


def _print_curves(result: Any, asked_batch: int | None = None) -> None:
    smaller = (f" (not {asked_batch}: the training set has {result.batch_size} rows)"
               if asked_batch is not None and asked_batch > result.batch_size else "")
    echo(f"LR range test on {result.objective}, batch size {result.batch_size}{smaller}, {result.device}, lr "
         f"{result.start_lr:.2g} .. {result.end_lr:.2g}, {result.repeats} sweep(s) per optimizer, "
         f"{result.seconds:.1f}s:")
    for note in result.notes:
        echo(f"  note: {note}")
    for curve in result.curves.values():
        for line in curve.lines():
            echo("  ", line)


def _check_inputs(objective: str, space: str, given: dict[str, str], output: Path | None, device: str,
                  start_lr: float, end_lr: float, optimizer: list[str] | None = None) -> None:
    """An objective, a CSV file, a space or a sweep that is not there or is wrong, and an output file that could
    not be written, are said before PyTorch loads and before the sweeps (a minute or more) run."""
    import math

    from tuner._builtin import unknown_objective
    from tuner._files import check_file_target
    from tuner.errors import ConfigError
    from tuner.spaces import load_space
    from tuner.study._inputs import check_device_name, check_objective_files

    unknown = unknown_objective(objective)
    if unknown:
        raise ConfigError(unknown)
    check_objective_files(objective, given.get("data"), given.get("target"), given.get("task"))
    check_device_name(device)
    if not (math.isfinite(start_lr) and math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise ConfigError(f"--start-lr and --end-lr: the sweep needs 0 < --start-lr < --end-lr (got {start_lr:g} "
                          f"and {end_lr:g}).")
    load_space(space)
    from tuner.optim import get_optimizer

    for name in optimizer or []:
        try:
            get_optimizer(name)  # a misspelt name: the valid ones, and the nearest
        except ConfigError as exc:
            raise ConfigError(f"--optimizer: {exc}") from None
    if output is not None:
        check_file_target(output)
        from pathlib import Path

        if Path(space).is_file() and output.resolve() == Path(space).resolve():
            raise ConfigError(f"-o {output}: that is the space being calibrated; write to another file (it would "
                              f"replace {space}, comments and all).")


@app.command("lr-find")
@handle_errors
def lr_find_command(
    *,
    objective: ObjectiveOpt = "mnist1d-cnn",
    space: Annotated[str, typer.Option(help="Built-in space or YAML file: its optimizers, their other "
                                            "hyperparameters (at their centres) and batch size.")] = "default",
    optimizer: OptimizerOpt = None,
    batch_size: BatchOpt = None,
    start_lr: StartOpt = 1e-7,
    end_lr: EndOpt = 10.0,
    steps: StepsOpt = None,
    repeats: RepeatsOpt = 3,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    data: DataOpt = None,
    target: TargetOpt = None,
    task: TaskOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Plot of loss against learning rate; the extension picks the "
                                                   "format (.png, .pdf, .svg; any other: PNG) "
                                                   "[default: ./lr-find-<objective>.png].")] = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Suggest a learning-rate range per optimizer (the LR range test).

    Per optimizer, trains a fresh model --repeats times (3 by default) for up to --steps batches each (20
    per decade of rates: 160 for the default 1e-7..10; a sweep stops where the loss diverges) while the rate
    grows exponentially, prints the range of rates over which the median loss falls, and writes a plot of loss
    against rate."""
    given = objective_options(data, target, task)
    _check_inputs(objective, space, given, plot, device, start_lr, end_lr, optimizer)
    from tuner._files import check_file_target, safe_file_name
    from tuner.lrfind import plot_lr_find

    loaded = _load(objective, given)
    plot = plot or Path(f"lr-find-{safe_file_name(loaded.name)}.png")
    check_file_target(plot)  # the default file too: before the sweeps, not after them
    result = _find(loaded, space, optimizer, batch_size, start_lr, end_lr, steps, repeats, device, seed)
    path = plot_lr_find(result, plot)
    if fmt is Format.json:
        print_json({**result.to_dict(), "plot": str(path)})
        return
    _print_curves(result, batch_size)
    echo(f"plot: {path}")
    q = shlex.quote
    from tuner.spaces import load_space

    held = set(load_space(space).optimizer)
    outside = [name for name in result.curves if name not in held]
    if outside:
        echo(f"not in the space {space!r}: {', '.join(outside)}; add them to a space file to use these ranges")
    if held & {name for name, curve in result.curves.items() if curve.found}:
        # Only the space's optimizers: `spaces calibrate` refuses one the space does not hold.
        calibrated = [name for name in result.curves if name in held] if optimizer else None
        same = _same_sweep(objective, given, calibrated, batch_size, start_lr, end_lr, steps, repeats, seed)
        echo(f"a space with these ranges: tuner spaces calibrate {q(space)} {same} -o calibrated.yaml")


def _same_sweep(objective: str, given: dict[str, str], optimizer: list[str] | None,
                batch_size: int | None, start_lr: float, end_lr: float, steps: int | None, repeats: int,
                seed: int) -> str:
    """The options that run the same sweep again (for a command printed as a hint)."""
    from tuner.lrfind import END_LR, START_LR

    args = ["--objective", objective, *(x for key, value in given.items() for x in (f"--{key}", value))]
    for flag, value, default in (("--batch-size", batch_size, None), ("--start-lr", start_lr, START_LR),
                                 ("--end-lr", end_lr, END_LR), ("--steps", steps, None), ("--repeats", repeats, 3),
                                 ("--seed", seed, 0)):
        if value is not None and value != default:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for name in optimizer or []:
        args += ["--optimizer", name]
    return shlex.join(args)


@spaces_app.command("calibrate")
@handle_errors
def spaces_calibrate(
    space: Annotated[str, typer.Argument(help="Built-in space or YAML file.")],
    *,
    objective: ObjectiveOpt = "mnist1d-cnn",
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the calibrated space.")] = Path(
        "calibrated.yaml"),
    optimizer: OptimizerOpt = None,
    batch_size: BatchOpt = None,
    start_lr: StartOpt = 1e-7,
    end_lr: EndOpt = 10.0,
    steps: StepsOpt = None,
    repeats: RepeatsOpt = 3,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    data: DataOpt = None,
    target: TargetOpt = None,
    task: TaskOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write a copy of a space whose optimizers' lr ranges come from an LR range test on the objective."""
    from tuner.errors import ConfigError

    given = objective_options(data, target, task)
    _check_inputs(objective, space, given, output, device, start_lr, end_lr, optimizer)
    from tuner.spaces import load_space

    held = list(load_space(space).optimizer)
    for name in optimizer or []:
        if name not in held:  # checked before the sweeps: calibrate writes ranges for the space's own optimizers
            raise ConfigError(f"--optimizer {name}: not an optimizer of the space {space!r} (it holds "
                              f"{', '.join(held)}), so a calibrated copy could not hold its range; `tuner lr-find "
                              f"--optimizer {name}` sweeps it all the same.")
    from tuner.lrfind import calibrate_space, calibrated_yaml

    result = _find(_load(objective, given), space, optimizer, batch_size, start_lr, end_lr, steps, repeats,
                   device, seed)
    calibrated = calibrate_space(space, result)
    text = calibrated_yaml(calibrated, result)
    from tuner._files import write_text

    path = write_text(output, text)
    if fmt is Format.json:
        print_json({**result.to_dict(), "output": str(path)})
        return
    _print_curves(result, batch_size)
    from tuner.lrfind import searched_line

    searched = searched_line(load_space(calibrated), result)
    if searched:
        echo(f"  {searched} (what {path} holds)")
    kept = [c.optimizer for c in result.curves.values() if not c.found]
    echo(f"wrote {path}" + (f" (kept the space's lr range of {', '.join(kept)})" if kept else ""))
    from tuner.lrfind import replaced_rates

    for line in replaced_rates(space, result):
        echo(f"  note: {line}")
    use = ["--objective", objective, *(x for key, value in given.items() for x in (f"--{key}", value))]
    echo(f"use it: tuner study create {shlex.join(use)} --space {shlex.quote(str(path))}")
