"""Checks a spec completely, then creates, joins or opens its Optuna study.

Everything that can be wrong with the user's input (names, ranges, data, batch sizes, sampler options) is
checked before the storage is touched, so a bad spec leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import optuna

from tuner import __version__
from tuner.errors import ConfigError, StudyError
from tuner.objectives import Objective, load_objective
from tuner.spaces import SearchSpace, load_space
from tuner.study._samplers import build_pruner, build_sampler
from tuner.study._spec import IDENTITY_FIELDS, StudySpec
from tuner.study._storage import default_storage, mask_url, open_storage, storage_exists
from tuner.train import Trainer

__all__ = ["PreparedStudy", "prepare", "create_or_join", "open_study", "stored_spec", "SPEC_ATTR"]

SPEC_ATTR = "tuner:spec"
SPACE_ATTR = "tuner:space"
FINGERPRINT_ATTR = "tuner:space_fingerprint"
VERSION_ATTR = "tuner:version"
METRIC_ATTR = "tuner:metric"
GRID_LIMIT = 100_000


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

    @property
    def name(self) -> str:
        return self.spec.study_name

    @property
    def storage_url(self) -> str:
        return self.spec.storage or default_storage()

    @property
    def direction(self) -> str:
        return self.objective.direction


def prepare(spec: StudySpec, space_data: dict[str, Any] | None = None) -> PreparedStudy:
    """Validates the spec and loads its objective, data and space; writes nothing."""
    space = (SearchSpace.from_dict(space_data, name="stored", source=f"study {spec.study_name!r}")
             if space_data is not None else load_space(spec.space))
    objective = load_objective(spec.objective, **spec.objective_options())
    if spec.epochs is None:
        spec = spec.with_overrides(epochs=objective.trial_epochs)
    trainer = Trainer(objective, device=spec.device)
    n_train = len(trainer.data.x_train)
    too_big = [b for b in space.batch_size.endpoints() if isinstance(b, int) and b > n_train]
    if too_big:
        raise ConfigError(f"{space.source}: key 'batch_size': {max(too_big)} is larger than the {n_train} "
                          f"training samples of objective {objective.name!r}.")
    trainer.check_model()
    grid: list[dict[str, Any]] = []
    if spec.sampler_name == "grid":
        grid = space.grid_points()
        if len(grid) > GRID_LIMIT:
            raise ConfigError(f"The grid over space {space.name!r} has {len(grid)} points (over {GRID_LIMIT}); "
                              f"use a smaller space or another sampler.")
        if spec.n_trials > len(grid):
            spec = spec.with_overrides(n_trials=len(grid))
        # Spread a partial grid (n_trials below the grid's size) over the whole grid.
        random.Random(spec.seed).shuffle(grid)
    context = {"seed": spec.seed, "epochs": spec.epochs}
    sampler = build_sampler(spec.sampler, context)
    pruner = build_pruner(spec.pruner, context)
    return PreparedStudy(spec, space, objective, trainer, sampler, pruner, grid)


def _joining_seed(seed: int, n_existing: int) -> int:
    """A study that already has trials gets a sampler seed of its own in every process, or each resume (and
    each extra worker) would propose the same parameters again."""
    return (seed * 1_000_003 + n_existing * 7919 + os.getpid()) % 2**31


def _identity(spec: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    ident = {k: spec.get(k) for k in IDENTITY_FIELDS if k != "space"}
    ident["space"] = fingerprint
    return ident


def _stored_attrs(prepared: PreparedStudy) -> dict[str, Any]:
    spec = prepared.spec.model_dump(exclude={"storage"})
    spec["name"] = prepared.name
    return {
        SPEC_ATTR: json.loads(json.dumps(spec, default=str)),
        SPACE_ATTR: prepared.space.raw,
        FINGERPRINT_ATTR: prepared.space.fingerprint(),
        VERSION_ATTR: __version__,
        METRIC_ATTR: prepared.objective.metric,
    }


def create_or_join(prepared: PreparedStudy) -> optuna.Study:
    """Creates the study, or joins an existing one with the same spec; a different spec is refused."""
    storage = open_storage(prepared.storage_url)
    name = prepared.name
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        attrs = existing[name].user_attrs
        if SPEC_ATTR not in attrs:
            raise StudyError(f"Study {name!r} in {mask_url(prepared.storage_url)} was not created by tuner; "
                             f"choose another --name.")
        old = _identity(attrs[SPEC_ATTR], attrs.get(FINGERPRINT_ATTR, ""))
        new = _identity(_stored_attrs(prepared)[SPEC_ATTR], prepared.space.fingerprint())
        changed = [k for k in old if old[k] != new[k]]
        if changed:
            details = ", ".join(
                f"{k}: {old[k]!r} -> {new[k]!r}" if k != "space" else "space: the search space differs"
                for k in changed
            )
            raise StudyError(f"Study {name!r} already exists in {mask_url(prepared.storage_url)} with a different "
                             f"spec ({details}). Nothing was changed. Choose another --name, or continue it "
                             f"with `tuner study run {name}`.")
        study = optuna.load_study(study_name=name, storage=storage, pruner=prepared.pruner,
                                  sampler=_joining_sampler(prepared, existing[name].n_trials))
        _update_budget(study, prepared.spec)
        _enqueue_grid(study, prepared)
        return study
    study = optuna.create_study(study_name=name, storage=storage, sampler=prepared.sampler,
                                pruner=prepared.pruner, direction=prepared.direction, load_if_exists=True)
    for key, value in _stored_attrs(prepared).items():
        study.set_user_attr(key, value)
    _enqueue_grid(study, prepared)
    return study


def _enqueue_grid(study: optuna.Study, prepared: PreparedStudy) -> None:
    for params in prepared.grid[:prepared.spec.n_trials]:
        study.enqueue_trial(params, skip_if_exists=True)


def _joining_sampler(prepared: PreparedStudy, n_existing: int) -> optuna.samplers.BaseSampler:
    if n_existing == 0:
        return prepared.sampler
    context = {"seed": _joining_seed(prepared.spec.seed, n_existing), "epochs": prepared.spec.epochs}
    return build_sampler(prepared.spec.sampler, context)


def _update_budget(study: optuna.Study, spec: StudySpec) -> None:
    """A raised or lowered budget is saved, so that a later ``study run NAME`` keeps it."""
    stored = dict(study.user_attrs.get(SPEC_ATTR, {}))
    if stored and (stored.get("n_trials"), stored.get("timeout")) != (spec.n_trials, spec.timeout):
        stored.update(n_trials=spec.n_trials, timeout=spec.timeout)
        study.set_user_attr(SPEC_ATTR, stored)


def stored_spec(name: str, storage_url: str | None = None) -> tuple[StudySpec, dict[str, Any]]:
    """The spec and search space saved with a study."""
    url = storage_url or default_storage()
    study = _load(name, url)
    attrs = study.user_attrs
    if SPEC_ATTR not in attrs:
        if "tuner:tune" in attrs:
            raise StudyError(f"Study {name!r} was created by tuner.tune() in Python: continue it by calling "
                             f"tuner.tune() again with the same storage and study_name.")
        raise StudyError(f"Study {name!r} in {mask_url(url)} was not created by tuner: it has no stored spec.")
    spec = StudySpec.from_mapping({**attrs[SPEC_ATTR], "storage": storage_url}, f"study {name!r}")
    return spec, attrs.get(SPACE_ATTR) or {}


def open_study(name: str, storage_url: str | None = None) -> optuna.Study:
    return _load(name, storage_url or default_storage())


def _load(name: str, url: str) -> optuna.Study:
    if not storage_exists(url):
        raise StudyError(f"No study named {name!r}: storage {mask_url(url)} does not exist yet.")
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        from tuner.errors import unknown_name_message

        raise StudyError(f"In {mask_url(url)}: " + unknown_name_message("study", name, names))
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    finally:
        optuna.logging.set_verbosity(previous)
