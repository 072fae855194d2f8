"""Study specs, samplers and pruners, storage, and the trial runner."""

from tuner.study._engine import RunSummary, TrialOutcome, counts
from tuner.study._local import run_prepared as run_trials
from tuner.study._prepare import PreparedStudy, create_or_join, open_study, prepare, stored_spec
from tuner.study._record import best_trial
from tuner.study._samplers import build_pruner, build_sampler, list_pruners, list_samplers
from tuner.study._spec import StudySpec, list_specs, load_spec
from tuner.study._storage import default_storage, mask_url, open_storage

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
