"""Study specs, samplers and pruners, storage, and the trial runner.

The names below are imported on first use, so that ``tuner.study._spec`` (a spec alone) loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.study._engine import RunSummary, TrialOutcome
    from tuner.study._limits import counts
    from tuner.study._local import run_prepared as run_trials
    from tuner.study._open import open_study, stored_spec
    from tuner.study._prepare import PreparedStudy, create_or_join, prepare
    from tuner.study._record import best_trial
    from tuner.study._samplers import build_pruner, build_sampler, list_pruners, list_samplers
    from tuner.study._spec import StudySpec, list_specs, load_spec
    from tuner.study._storage import default_storage, mask_url, open_storage

_LAZY = {
    "RunSummary": "_engine", "TrialOutcome": "_engine", "counts": "_limits",
    "run_trials": "_local:run_prepared",
    "PreparedStudy": "_prepare", "create_or_join": "_prepare", "open_study": "_open", "prepare": "_prepare",
    "stored_spec": "_open",
    "best_trial": "_record",
    "build_pruner": "_samplers", "build_sampler": "_samplers", "list_pruners": "_samplers",
    "list_samplers": "_samplers",
    "StudySpec": "_spec", "list_specs": "_spec", "load_spec": "_spec",
    "default_storage": "_storage", "mask_url": "_storage", "open_storage": "_storage",
}
__all__ = [
    "PreparedStudy",
    "RunSummary",
    "StudySpec",
    "TrialOutcome",
    "best_trial",
    "build_pruner",
    "build_sampler",
    "counts",
    "create_or_join",
    "default_storage",
    "list_pruners",
    "list_samplers",
    "list_specs",
    "load_spec",
    "mask_url",
    "open_storage",
    "open_study",
    "prepare",
    "run_trials",
    "stored_spec",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(f"tuner.study.{module}"), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tuner.study' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
