"""Studies as things a user keeps: delete one, queue known configs into one, rename or copy one.

Each works on any storage tuner opens (SQLite, journal files, PostgreSQL) and takes the storage's lock where
it writes, so that it cannot interleave with a ``study create`` of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.errors import StudyError
from tuner.study._record import StudyKey
from tuner.study._storage import default_storage, load_named, mask_url, open_storage, storage_lock, study_command

__all__ = ["StudyFacts", "study_facts", "delete_study", "copy_study", "rename_study", "enqueue_files"]


@dataclass
class StudyFacts:
    """What a user should know before deleting or moving a study."""

    name: str
    storage: str  # masked
    trials: int
    running: int
    live: int = 0  # running trials whose worker gave a sign of life within the grace period (not left behind)
    queued: int = 0  # configs queued for it, not trials yet (``trials`` leaves them out, as study list does)

    def counted(self) -> str:
        """``4 trial(s)``, ``4 trial(s), 1 queued``, as the commands that act on a study say what it holds."""
        return f"{self.trials} trial(s)" + (f", {self.queued} queued" if self.queued else "")


def _url(storage_url: str | None) -> str:
    return storage_url or default_storage()


def _names(url: str) -> list[str]:
    return optuna.get_all_study_names(open_storage(url))


def study_facts(name: str, storage_url: str | None = None) -> StudyFacts:
    from tuner.study._liveness import alive

    url = _url(storage_url)
    trials = load_named(name, url).get_trials(deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    queued = sum(t.state == TrialState.WAITING for t in trials)
    return StudyFacts(name, mask_url(url), len(trials) - queued, len(running), sum(alive(t) for t in running),
                      queued)


def delete_study(name: str, storage_url: str | None = None, force: bool = False) -> StudyFacts:
    """Deletes study ``name`` and all its trials; returns what it held. Refused while a worker trains one of
    its trials (it would stop with an error), unless ``force``; trials left RUNNING by a process that is
    gone do not hold it up."""
    url = _url(storage_url)
    facts = study_facts(name, url)
    check_deletable(facts, force)
    with storage_lock(url, "create"):
        optuna.delete_study(study_name=name, storage=open_storage(url))
    return facts


def check_deletable(facts: StudyFacts, force: bool) -> None:
    """Refuses to delete a study whose trials are training now (``--force`` deletes it under them)."""
    if facts.live and not force:
        raise StudyError(f"Study {facts.name!r} has {facts.live} trial(s) training now; stop its workers (or wait) "
                         f"before deleting it, or pass --force to delete it under them (they stop with an error). "
                         f"Nothing was deleted.")


def copy_study(name: str, new_name: str, storage_url: str | None = None, to_storage: str | None = None) -> StudyFacts:
    """Copies study ``name`` (its trials, attributes and tuner's spec, space and records) to ``new_name``, in
    the same storage or in ``to_storage``. Refused where ``new_name`` is taken."""
    url, target = _url(storage_url), to_storage or _url(storage_url)
    facts = study_facts(name, url)
    from tuner.study._spec import check_new_name

    check_new_name(new_name, "the new study name")
    if new_name == name and target == url:
        raise StudyError(f"A copy of study {name!r} needs a name of its own, or another storage (--to-storage); "
                         f"nothing was copied.")
    with storage_lock(target, "create"):
        if new_name in _names(target):
            raise StudyError(f"A study named {new_name!r} exists in {mask_url(target)} already; pick another name "
                             f"(or delete it first: `{study_command('delete', new_name, target)}`).")
        optuna.copy_study(from_study_name=name, from_storage=open_storage(url), to_storage=open_storage(target),
                          to_study_name=new_name)
        copied = optuna.load_study(study_name=new_name, storage=open_storage(target))
        spec = copied.user_attrs.get(StudyKey.SPEC)
        if isinstance(spec, dict) and spec.get("name") == name:
            copied.set_user_attr(StudyKey.SPEC, {**spec, "name": new_name})
    return facts


def rename_study(name: str, new_name: str, storage_url: str | None = None) -> StudyFacts:
    """Renames a study: a copy under ``new_name``, then the old one deleted. Refused while trials train (their
    workers write to the old name); trials left RUNNING by a worker that is gone move with it, for its next
    run to fail and queue again."""
    url = _url(storage_url)
    facts = study_facts(name, url)
    if new_name == name:
        raise StudyError(f"Study {name!r} is named {name!r} already: give another name.")
    if facts.live:
        raise StudyError(f"Study {name!r} has {facts.live} trial(s) training now; stop its workers (or wait) before "
                         f"renaming it.")
    copy_study(name, new_name, url)
    with storage_lock(url, "create"):
        optuna.delete_study(study_name=name, storage=open_storage(url))
    return facts


def enqueue_files(name: str, files: list[str | Path], storage_url: str | None = None
                  ) -> tuple[list[Any], str, list[str]]:
    """Queues the configs of ``files`` (YAML/JSON train configs, one or a list each) as the next trials of
    study ``name``, after checking each against the study's stored space and objective; returns the starts
    queued and what trains them next. Nothing is queued when one config is refused, or into a grid study
    (it runs its grid's points, and would leave the configs waiting)."""
    from tuner.spaces import SearchSpace
    from tuner.study._open import open_study
    from tuner.study._starts import START_ATTR, duplicate_notes, file_starts, unique_starts
    from tuner.study._storage import study_command

    study = open_study(name, storage_url, readonly=False)
    raw = study.user_attrs.get(StudyKey.SPACE)
    if not isinstance(raw, dict):
        raise StudyError(f"Study {name!r} has no stored search space to check configs against.")
    settings = study.user_attrs.get(StudyKey.SPEC) or study.user_attrs.get(StudyKey.TUNE) or {}
    sampler = settings.get("sampler")
    if (sampler.get("name") if isinstance(sampler, dict) else sampler) == "grid":
        raise StudyError(f"Study {name!r} samples a grid: it runs the grid's own points, and queued configs would "
                         f"wait for ever. Nothing was queued; try them in a study with another sampler.")
    named = settings.get("space")
    space = SearchSpace.from_dict(raw, name=named if isinstance(named, str) else f"study {name}'s",
                                  source=f"study {name!r}")
    # Each config once, as the first trials of a new study are; and none the study holds already (queued,
    # running or trained).
    held = [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)]
    starts, notes = [], []
    epochs = settings.get("epochs")
    for start in unique_starts(file_starts(list(files), space, epochs if isinstance(epochs, int) else None)):
        same = next((t for t in held  # a waiting trial's parameters are its fixed ones until it runs
                     if start.params.items() <= (t.params or t.system_attrs.get("fixed_params") or {}).items()), None)
        if same is None:
            starts.append(start)
        else:
            notes += [f"{source}: not queued, the same config as trial {same.number} ({same.state.name.lower()})"
                      for source in (start.source, *start.duplicates)]
    notes += duplicate_notes(starts)
    for start in starts:
        study.enqueue_trial(start.params, user_attrs={START_ATTR: f"enqueued {start.source}"})
    if StudyKey.TUNE in study.user_attrs:
        follow = (f"the next tuner.tune(..., study_name={name!r}) on this storage trains them first (with a "
                  f"larger n_trials if its budget is spent)")
    else:
        # The budget counts finished trials (complete or pruned): where what waits would not fit in what is left,
        # the command raises it, so that it runs as pasted.
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        budget = (study.user_attrs.get(StudyKey.SPEC) or {}).get("n_trials")
        raise_to = (["--n-trials", str(finished + waiting)] if isinstance(budget, int) and finished + waiting > budget
                    else [])
        follow = f"`{study_command('run', name, storage_url, *raise_to)}` trains them first"
    return starts, follow, notes
