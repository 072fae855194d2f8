"""What a study spec names outside itself, checked before the objective and PyTorch load: its search space,
its objective file, the tabular objective's CSV file, the configs to try first and the study to warm-start
from. ``study create`` calls this first, so that a mistake there is refused at once; ``prepare`` reads them
all again once the objective is loaded (and fits the space to its data)."""

from __future__ import annotations

import re
from typing import Any

from tuner.errors import ConfigError, unknown_device
from tuner.study._spec import StudySpec
from tuner.study._storage import check_storage, default_storage, study_in_storage


def check_inputs(spec: StudySpec) -> None:
    """Raises the error ``prepare`` would raise for a space, objective file, CSV file, enqueued config or
    warm-start study that is missing or wrong, or that ``create_or_join`` would raise for a storage file that
    is not an Optuna storage (another application's database or text file); returns nothing, writes nothing."""
    from tuner.spaces import load_space

    space = load_space(spec.space)
    check_storage(spec.storage or default_storage())  # a local file that is not an Optuna storage
    new = not study_in_storage(spec.study_name, spec.storage)
    if new:
        from tuner.study._spec import check_new_name

        check_new_name(spec.study_name)
    check_objective_files(spec.objective, spec.data, spec.target, spec.task)
    check_device_name(spec.device)
    # A grid runs its own points; a study that exists is joined and queues nothing (it says so).
    if spec.sampler_name != "grid" and (spec.enqueue or spec.warm_start) and new:
        from tuner.study._starts import gather_starts

        warm = spec.warm_start
        gather_starts(space, enqueue=spec.enqueue, warm_start=warm.study if warm else None,
                      warm_storage=(warm.storage if warm and warm.storage else spec.storage or default_storage()),
                      warm_top=warm.top if warm else 5, known=False)


def open_checked(spec: StudySpec, *, space_data: dict[str, Any] | None = None, spec_file: Any = None,
                 devices: str | None = None, force: bool = False, run: bool = True) -> tuple[Any, Any]:
    """The one path from a spec to a study ready to run, for ``study create``, ``study run`` and
    ``tuner.run_study``: first every check that needs no PyTorch (the space written in ``spec_file``, with its
    lines, where the spec's space is that one; the space, files and studies a new study names; the trackers'
    destinations where it will ``run``), then the devices, then ``prepare`` and ``create_or_join``. Returns the
    prepared study and the study; refuses before the study exists."""
    if space_data is None:  # a new study (a stored one holds its space, and was checked when it was made)
        if spec_file is not None and isinstance(spec.space, (dict, str)):
            from tuner.study._spec import check_inline_space

            check_inline_space(spec_file)
        check_inputs(spec)
    if run or spec.mlflow or spec.tensorboard:  # --no-run prints them in the command to run: checked as for it
        from tuner.track import check_destinations

        check_destinations(spec.mlflow, spec.tensorboard)
    # PyTorch is imported from here on: what was refused above is said without waiting for it.
    from tuner.study._prepare import create_or_join, prepare
    from tuner.study._workers import parse_devices

    parse_devices(devices)  # a device that is not there
    try:
        prepared = prepare(spec, space_data=space_data, track=run)
    except ConfigError as exc:
        from tuner.study._spec import locate_in_spec

        raise locate_in_spec(exc, spec_file, spec) from None
    return prepared, create_or_join(prepared, force=force)


_DEVICE = re.compile(r"(auto|(cuda|cpu|mps)(:\d+)?)")


def check_device_name(device: str) -> None:
    """A device name that is none of auto, cpu, cuda, cuda:N or mps (whether the device is there is checked
    once PyTorch loads)."""
    if not _DEVICE.fullmatch(str(device).strip().lower()):
        raise ConfigError(unknown_device(device))


def check_objective_files(objective: str, data: str | None, target: str | None = None,
                          task: str | None = None) -> None:
    """An objective file (``path/file.py:attr``) that is not there, the options a built-in objective needs or
    does not take (``tabular``: data and target), or the tabular objective's CSV file that is missing or not
    a file, refused as loading the objective would refuse it."""
    from tuner._builtin import builtin_objective_options, missing_objective_file

    missing = missing_objective_file(objective)
    if missing:
        raise ConfigError(missing)
    options = builtin_objective_options(objective)
    if options is not None:  # the loader's own messages, without loading it
        needed, optional = options
        given = [k for k, v in (("data", data), ("target", target), ("task", task)) if v is not None]
        if given and not needed and not optional:
            raise ConfigError(f"Objective {objective!r} takes no options; got "
                              f"{', '.join(f'{k} (--{k})' for k in given)}.")
        unknown = [k for k in given if k not in needed + optional]
        if unknown:
            raise ConfigError(f"Objective {objective!r} takes no option {unknown[0]!r}. "
                              f"Valid options: {', '.join(needed + optional)}.")
        absent = [k for k in needed if k not in given]
        if absent:
            flags = " ".join(f"--{k} ..." for k in absent)
            columns = _header(data) if absent == ["target"] and data is not None else None
            which = f"; the columns of {data}: {', '.join(columns[:30])}" if columns else ""
            raise ConfigError(f"Objective {objective!r} needs option {absent[0]!r} (e.g. {flags}){which}.")
    if objective == "tabular" and data is not None:
        from tuner._files import check_csv_file

        path = check_csv_file(data)
        if target is not None:
            _check_target_column(path, target)


def _header(path: Any) -> list[str] | None:
    """The header row of a CSV file, read alone (pandas loads with PyTorch, which takes seconds), or None where
    it cannot be read."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _check_target_column(path: Any, target: str) -> None:
    """A --target that is not a column of the CSV file's header row, said from that row alone; a header it
    cannot read is left to pandas."""
    header = _header(path)
    if header and target not in header and len(set(header)) == len(header):  # pandas renames duplicates: a.1
        from tuner.errors import DataError, unknown_name_message

        raise DataError(f"{path}: " + unknown_name_message("target column", target, header))
