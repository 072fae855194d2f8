"""What a study spec names outside itself, checked before the objective and PyTorch load: its search space,
its objective file, the tabular objective's CSV file, the configs to try first and the study to warm-start
from. ``study create`` calls this first, so that a mistake there is refused at once; ``prepare`` reads them
all again once the objective is loaded (and fits the space to its data)."""

from __future__ import annotations

from tuner.errors import ConfigError
from tuner.study._spec import StudySpec


def check_inputs(spec: StudySpec) -> None:
    """Raises the error ``prepare`` would raise for a space, objective file, CSV file, enqueued config or
    warm-start study that is missing or wrong; returns nothing, writes nothing."""
    from tuner.spaces import load_space

    space = load_space(spec.space)
    check_objective_files(spec.objective, spec.data)
    if spec.sampler_name != "grid" and (spec.enqueue or spec.warm_start):  # a grid runs its own points
        from tuner.study._starts import gather_starts
        from tuner.study._storage import default_storage

        warm = spec.warm_start
        gather_starts(space, enqueue=spec.enqueue, warm_start=warm.study if warm else None,
                      warm_storage=(warm.storage if warm and warm.storage else spec.storage or default_storage()),
                      warm_top=warm.top if warm else 5, known=False)


def check_objective_files(objective: str, data: str | None) -> None:
    """An objective file (``path/file.py:attr``) that is not there, or the tabular objective's CSV file that is
    missing or not a file, refused as loading the objective would refuse it."""
    from tuner._builtin import missing_objective_file

    missing = missing_objective_file(objective)
    if missing:
        raise ConfigError(missing)
    if objective == "tabular" and data is not None:
        from tuner._files import check_csv_file

        check_csv_file(data)
