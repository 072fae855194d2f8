"""The first trials of a new study: configs from files (``enqueue``), the best configs of an earlier study
(``warm_start``) and a short list of known-good starting points (``known_starts``), each turned into the
parameters of the study's space (``SearchSpace.params_for``) and queued before the sampler proposes anything."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.config import TrainConfig, refuse_script
from tuner.errors import ConfigError, StudyError, count
from tuner.spaces import SearchSpace
from tuner.spaces._space import CONFIG_PARTS

__all__ = ["Start", "KNOWN_STARTS", "known_starts", "file_starts", "study_starts", "gather_starts", "within_budget",
           "asked_for_and_changed", "sampler_seed"]

START_ATTR = "start"  # a queued trial's user attribute: where its config came from


def sampler_seed(seed: int, warm_start: Any = None) -> int:
    """The sampler's seed for a new study: ``seed``, mixed with the earlier study's name where the study starts
    from one. The earlier study drew its configs with the same space and, by default, the same seed: its sampler
    would propose them again, in the same order, as the new study's trials after its warm starts."""
    if warm_start is None:
        return seed
    import zlib

    name = getattr(warm_start, "study_name", None) or getattr(warm_start, "study", None) or str(warm_start)
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


@dataclass
class Start:
    """One queued config: where it came from, its parameters in the space, and what changed to fit."""

    source: str
    params: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    #: later starts that were the same config, not queued again
    duplicates: list[str] = field(default_factory=list, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "params": self.params, "changes": self.changes}


@dataclass(frozen=True)
class KnownStart:
    name: str
    about: str
    config: dict[str, Any]
    parts: tuple[str, ...]


KNOWN_STARTS = (
    KnownStart("algoperf-nadamw",
               "the AlgoPerf NAdamW prize-qualification baseline (lr 1.75e-3, beta1 0.933, beta2 0.9955, weight "
               "decay 0.081, 2% warmup then cosine decay, dropout 0.1)",
               {"optimizer": {"name": "nadamw", "lr": 0.0017486387539278373,
                              "betas": [1 - 0.06733926164, 0.9955159689799007]},
                "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.02},
                "regularization": {"weight_decay": 0.08121616522670176, "dropout": 0.1}},
               ("optimizer", "schedule", "weight_decay", "dropout")),
    KnownStart("adamw-warmup-cosine",
               "PyTorch's AdamW defaults (lr 1e-3, betas 0.9 and 0.999, weight decay 0.01) with 5% warmup then "
               "cosine decay",
               {"optimizer": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999]},
                "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.05},
                "regularization": {"weight_decay": 0.01}},
               ("optimizer", "schedule", "weight_decay")),
    KnownStart("nesterov-warmup-cosine",
               "the classic ResNet recipe: SGD with lr 0.1, Nesterov momentum 0.9 and weight decay 5e-4, with 5% "
               "warmup then cosine decay",
               {"optimizer": {"name": "nesterov", "lr": 0.1, "momentum": 0.9},
                "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.05},
                "regularization": {"weight_decay": 5e-4}},
               ("optimizer", "schedule", "weight_decay")),
)


def known_starts(space: SearchSpace) -> list[Start]:
    """The known-good points the space holds as they are: their optimizer and schedule are in it and no value
    of theirs falls outside its ranges (a value the space fixes stays the space's)."""
    out = []
    for point in KNOWN_STARTS:
        fit = space.params_for(TrainConfig.from_dict(point.config), parts=point.parts)
        if not _why_not_held(fit):
            out.append(Start(f"known start {point.name}", fit.params, fit.changes + fit.notes))
    return out


def why_not_held(space: SearchSpace, point: Any) -> str:
    """Why ``space`` does not hold a known-good point ("" where it does): what of the point it lacks, or which
    value falls outside its ranges."""
    return _why_not_held(space.params_for(TrainConfig.from_dict(point.config), parts=point.parts))


def _why_not_held(fit: Any) -> str:
    return "; ".join(fit.problems or [c for c in fit.changes if "(fixed by the space)" not in c])


def _configs_in(path: Path) -> list[tuple[str, Any]]:
    from tuner._yaml import load_yaml_file

    refuse_script(path)
    data = load_yaml_file(path)
    if isinstance(data, dict) and "configs" in data:
        others = sorted(str(key) for key in data if key != "configs")
        if others:  # a config's own keys beside the list, or a typo: neither would be used
            raise ConfigError(f"{path}: key {others[0]!r}: a file with 'configs:' holds that list only (each item a "
                              f"train config); got {', '.join(repr(k) for k in others)} beside it.")
        data = data["configs"]
    if isinstance(data, dict):
        return [(str(path), data)]
    if isinstance(data, list) and data:
        return [(f"{path} item {i + 1}", item) for i, item in enumerate(data)]
    got = "an empty list" if isinstance(data, list) else type(data).__name__
    raise ConfigError(f"{path}: expected a train config (as `tuner study export` writes), a list of them, or "
                      f"'configs:' with a list. Got {got} instead.")


def _given_parts(raw: Any) -> tuple[str, ...]:
    """The parts of a config a file or mapping gives (an exported config gives them all); the space's sampler
    draws the others, as it does for the known-good points."""
    if not isinstance(raw, dict):
        return CONFIG_PARTS
    regularization = raw.get("regularization") if isinstance(raw.get("regularization"), dict) else {}
    given = {key for key in ("optimizer", "schedule", "init", "batch_size", "grad_clip_norm") if key in raw}
    given |= {key for key in ("weight_decay", "l1", "dropout") if key in regularization}
    return tuple(part for part in CONFIG_PARTS if part in given)


def _line_of_problem(raw: Any, message: str) -> int | None:
    """The line of a config file that a refusal is about: the key it names (``optimizer: ...``, ``key
    'schedul'``), else the config's first line; None where the config did not come from YAML."""
    import re

    from tuner._yaml import line_of

    named = re.match(r"(\w+): ", message)
    keys = ([named.group(1)] if named else []) + re.findall(r"'(\w+)'", message)
    found = line_of(raw)
    mapping = raw
    for key in keys:  # the deepest key named: optimizer, then its 'lr'
        if isinstance(mapping, dict) and key in mapping:
            found, mapping = line_of(mapping, key), mapping[key]
    return found


def file_starts(items: list[Any], space: SearchSpace, epochs: int | None = None) -> list[Start]:
    """Every config of the files (paths; in Python also ``TrainConfig``s and mappings), in order; one the space
    cannot sample is refused, naming the file. A config giving other ``epochs`` than the study's trains the
    study's (each trial does), which its changes say."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, TrainConfig):
            pairs: list[tuple[str, Any]] = [(f"config {i + 1}", item.to_dict())]
        elif isinstance(item, dict):
            pairs = [(f"config {i + 1}", item)]
        elif isinstance(item, (str, Path)):
            path = Path(item)
            if not path.is_file():
                what = "is a folder; give a config file in it" if path.is_dir() else "no such file"
                raise ConfigError(f"enqueue: {item}: {what} (a YAML or JSON train config, or a list of them).")
            pairs = _configs_in(path)
        else:
            raise ConfigError(f"enqueue: item {i + 1} is a {type(item).__name__}; give file paths, TrainConfigs "
                              f"or mappings.")
        for where, raw in pairs:
            parts = _given_parts(raw) if isinstance(item, (str, Path, dict)) else CONFIG_PARTS
            try:
                config = TrainConfig.from_dict(raw)
            except ConfigError as exc:
                line = _line_of_problem(raw, str(exc)) if isinstance(item, (str, Path)) else None
                at = where if line is None else where.replace(str(item), f"{item}:{line}", 1)  # file:line
                raise ConfigError(f"enqueue: {at}: {exc}") from None
            fit = space.params_for(config, parts=parts)
            if fit.problems:
                raise ConfigError(f"enqueue: {where}: the space {space.name!r} cannot sample this config: "
                                  f"{'; '.join(fit.problems)}.")
            changes = fit.changes + fit.notes
            given = raw.get("epochs") if isinstance(raw, dict) else None
            if epochs is not None and given is not None and given != epochs:
                changes.append(f"epochs: {given} -> {epochs} (every trial of the study trains its epochs)")
            out.append(Start(where, fit.params, changes))
    return out


def study_starts(name: Any, storage_url: str | None, space: SearchSpace, top: int = 5) -> tuple[list[Start], str]:
    """The ``top`` best distinct configs of study ``name`` (or an ``optuna.Study``) that the space can sample
    (another objective's study too), best first, and a line on what was skipped (where none was taken: why)."""
    import optuna

    from tuner.study._record import Key, primary, ranked_trials
    from tuner.study._storage import load_named

    if isinstance(name, optuna.Study):
        study, name = name, name.study_name
    elif not storage_url:
        raise ConfigError(f"warm_start {name!r}: give the storage that holds it (or pass the optuna.Study).")
    else:
        study = load_named(name, storage_url, readonly=True)
    ranked = ranked_trials(study)  # of a study of several objectives: by the first, its metric
    if not ranked:
        raise StudyError(f"warm_start: study {name!r} has no complete trial to start from.")
    out: list[Start] = []
    seen: set[str] = set()
    outside = no_config = 0
    # Never from its worse half: in a study of five trials, "the five best" would bring in its worst.
    better = math.ceil(len(ranked) / 2)
    worse_half: set[str] = set()  # configs that fit, left out for that alone
    for position, trial in enumerate(ranked):
        raw = trial.user_attrs.get(Key.CONFIG)
        if not isinstance(raw, dict):
            no_config += 1
            continue
        fit = space.params_for(TrainConfig.from_dict(raw))
        key = repr(sorted(fit.params.items()))
        if fit.problems:
            outside += 1
            continue
        if position >= better and key not in seen and len(out) < top:
            worse_half.add(key)
        if key in seen or len(out) == top or position >= better:
            continue
        seen.add(key)
        out.append(Start(f"study {name!r} trial {trial.number} ({primary(trial):.4g})", fit.params,
                         fit.changes + fit.notes))
    of_its = f"of its {count(len(ranked), 'complete trial')}"
    notes = ([f"{outside} {of_its} ha{'s' if outside == 1 else 've'} an optimizer, schedule or initialiser this "
              f"space lacks"] if outside else []) + (
        [f"{no_config} {of_its} hold{'s' if no_config == 1 else ''} no tuner config (the study was not made by "
         f"tuner)"] if no_config else [])
    if worse_half:
        notes.append(f"from the better half of its {count(len(ranked), 'complete trial')} only (the best {better}): "
                     f"{count(len(worse_half), 'config')} of the worse half left out")
    if len(study.directions) > 1 and out:
        from tuner.study._record import objectives_of

        notes.append(f"study {name!r} has {len(study.directions)} objectives: its best configs by the first, "
                     f"{objectives_of(study)[0]}, were taken")
    said = "; ".join(notes)
    if not out:  # configs that fit, in its worse half alone; or none that fits
        said = (f"nothing queued from study {name!r} ({said})" if worse_half
                else f"no complete trial of study {name!r} fits this space ({said})")
    return out, said


def gather_starts(space: SearchSpace, *, enqueue: list[Any], warm_start: Any = None, warm_storage: str | None = None,
                  warm_top: int = 5, known: bool = True, epochs: int | None = None) -> tuple[list[Start], list[str]]:
    """The queued configs in order (files, then the warm start, then known-good points), each config once, and
    notes on what a warm start skipped; ``epochs``: the study's, which a file's config giving others is told."""
    starts: list[Start] = []
    notes: list[str] = []
    starts += file_starts(list(enqueue), space, epochs)
    if warm_start is not None:
        try:
            found, note = study_starts(warm_start, warm_storage, space, warm_top)
        except StudyError as exc:  # a study that is not there or cannot be started from: the caller's input
            message = str(exc)
            raise ConfigError(message if message.startswith("warm_start") else f"warm_start: {message}") from None
        starts += found
        if note:
            notes.append(f"warm start: {note}")
    if known:
        starts += known_starts(space)
    return unique_starts(starts), notes


def unique_starts(starts: list[Start]) -> list[Start]:
    """Each config once: a start whose parameters an earlier one already holds (a known-good point that a warm
    start brings again, with the batch size the earlier study sampled for it) would train the same again; it is
    left out and named in the earlier one's ``duplicates`` (``duplicate_notes`` says so)."""
    unique: list[Start] = []
    for start in starts:
        same = next((earlier for earlier in unique if start.params.items() <= earlier.params.items()), None)
        if same is None:
            unique.append(start)
        else:
            same.duplicates.append(start.source)
    return unique


def duplicate_notes(starts: list[Start]) -> list[str]:
    return [f"{copy}: the same config as {start.source}, queued once" for start in starts
            for copy in start.duplicates]


def asked_for_and_changed(queued: list[Start], notes: list[str]) -> tuple[list[str], list[str]]:
    """What a caller that prints nothing is warned of: each config it queued that the space changed, and the
    notes (from ``within_budget`` and the like) that are not only about the known-good points, which it did not
    ask for by name."""
    def known_only(note: str) -> bool:
        if note.startswith("known start "):
            return True
        head, _, sources = note.partition(" trial(s): ")
        return head.startswith("first trials: ") and all(s.startswith("known start ") for s in sources.split("; "))

    changed = [f"{s.source}: {'; '.join(s.changes)}" for s in queued
               if s.changes and not s.source.startswith("known start")]
    return changed, [note for note in notes if not known_only(note)]


def within_budget(starts: list[Start], n_trials: int) -> tuple[list[Start], list[str]]:
    """The starts a new study's budget of ``n_trials`` holds, in order, and notes naming the copies of them
    that were dropped and the starts the budget leaves out (a study queues its first trials once, when it is
    created)."""
    kept, left = starts[:n_trials], starts[n_trials:]
    notes = duplicate_notes(kept)
    if left:
        notes.append(f"first trials: {len(left)} not queued, beyond the budget of {n_trials} trial(s): "
                     + "; ".join(s.source for s in left))
    return kept, notes
