"""``StudySpec``: what a study tunes, how it searches and for how long; a YAML file or CLI flags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tuner._builtin import builtin_names, unknown_objective
from tuner._yaml import line_of, load_yaml_file
from tuner.errors import ConfigError, unknown_name_message, what_it_holds

__all__ = ["StudySpec", "WarmStart", "load_spec", "list_specs", "IDENTITY_FIELDS"]

DEFAULT_PRUNER = "median"  # where neither the spec nor the objective names one
# Fields that change what a study's trials mean. A study may not be continued with other values for them;
# the budget (n_trials, timeout), device, storage and where a session logs (mlflow, tensorboard) may change from
# one run to the next.
IDENTITY_FIELDS = ("objective", "data", "target", "task", "space", "calibrate", "objectives", "sampler", "pruner",
                   "epochs", "seed")
#: the options a study passes to its objective (``tabular``'s CSV file, target column and task)
OBJECTIVE_OPTIONS = ("data", "target", "task")
MAX_NAME_LENGTH = 512


def name_problem(value: str, new: bool = True) -> str:
    """What makes ``value`` unusable as a study name ("" if nothing): the same rule for a spec, the command's
    flags, ``tune``, ``run_study`` and ``study copy/rename``, so that every storage takes the name and every
    command printed with it runs as shown. ``new=False``: a study that exists already (made elsewhere, or
    before these rules) is still opened under a name they would refuse now."""
    import unicodedata

    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_NAME_LENGTH:  # PostgreSQL's column holds 512; SQLite would take more
        return f"must be at most {MAX_NAME_LENGTH} characters (got {len(value)})"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "must not contain control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid text (it holds bytes that are not UTF-8)"
    if new and any(unicodedata.category(c) == "Cf" for c in value):  # invisible formatting (U+202E)
        return "must not contain control or invisible formatting characters"
    if new and value.startswith("-"):  # read as an option by every command the name is given to
        return "must not start with '-'"
    return ""


def check_new_name(value: str, key: str = "name") -> None:
    """Refuses a name a new study (or a copy) cannot take."""
    problem = name_problem(value)
    if problem:
        raise ConfigError(f"{key} {problem}.")


class WarmStart(BaseModel):
    """``warm_start: NAME`` or ``{study: NAME, storage: URL, top: 5}``: the best distinct configs of an earlier
    study are the first trials of a new one."""

    model_config = ConfigDict(extra="forbid")

    study: str = Field(..., min_length=1, description="the earlier study's name")
    storage: str | None = Field(None, description="its storage; default: the new study's")
    top: int = Field(5, ge=1, le=1000, description="how many of its best distinct configs to queue")


class _WarmStartHolder(BaseModel):
    warm_start: WarmStart


def parse_warm_start(value: Any, source: str) -> WarmStart:
    """``warm_start`` given in Python: a study name or ``{study, storage, top}``, checked as in a spec file."""
    if not isinstance(value, (str, dict)):
        raise ConfigError(f"{source}: warm_start must be a study name, a mapping {{study, storage, top}} or an "
                          f"optuna.Study. Got {type(value).__name__} instead.")
    data = {"warm_start": {"study": value} if isinstance(value, str) else value}
    try:
        return _WarmStartHolder.model_validate(data).warm_start
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, source)) from None


class StudySpec(BaseModel):
    """A study's full description.

    Example (``studies/mnist1d-cnn.yaml``)::

        name: mnist1d-cnn
        objective: mnist1d-cnn
        space: default
        sampler: tpe
        pruner: median
        n_trials: 60
        epochs: 30
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    _stored: bool = PrivateAttr(default=False)  # read back from a study's storage (``from_mapping(stored=True)``)

    name: str | None = Field(None, description="study name; default: <objective>-<space>")
    objective: str = Field("mnist1d-cnn", description="built-in name, path/file.py:attr or module:attr")
    data: str | None = Field(None, description="CSV file for the tabular objective")
    target: str | None = Field(None, description="target column for the tabular objective")
    task: Literal["auto", "classification", "regression"] | None = Field(
        None, description="the tabular objective's task: classification, regression, or auto (the default: text, "
                          "true/false, or at most 20 distinct whole numbers are classes)")
    space: str | dict[str, Any] = Field("default", description="built-in space name, YAML path, or mapping")
    objectives: list[str] | None = Field(None, description="several objectives: the objective's metric, then "
                                                          "train_seconds (a Pareto front of accuracy against cost; "
                                                          "pruning on the metric)")
    batch_size: int | list[int] | None = Field(None, description="batch sizes to search instead of the "
                                                                  "space's: one (fixed) or a list, e.g. [16, 32]")
    calibrate: bool = Field(False, strict=True, description="run an LR range test when the study is created and search "
                                               "the lr ranges it suggests (see `tuner lr-find`)")
    sampler: str | dict[str, Any] = Field("tpe", description="tpe, random, qmc, cmaes, gp, nsgaii or grid")
    pruner: str | dict[str, Any] | None = Field(None, description="median, percentile, successive_halving, "
                                                                       "hyperband, wilcoxon, patient, top_third or "
                                                                       "none; default: the objective's own "
                                                                       "(Objective.pruner), else median")
    n_trials: int = Field(30, gt=0, strict=True, description="trials to finish (complete or pruned) in the study")
    timeout: float | None = Field(None, gt=0, strict=True, description="seconds after which no new trial starts")
    epochs: int | None = Field(None, gt=0, strict=True, description="training epochs per trial; default: the "
                                                                     "objective's own (Objective.epochs), else 20")
    storage: str | None = Field(None, description="storage URL; default $TUNER_STORAGE or sqlite:///tuner.db")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    seed: int = Field(0, ge=0, lt=2**32, strict=True, description="seed of the sampler and of every trial's training")
    threads: int | None = Field(None, gt=0, strict=True, description="torch threads per worker; default: the "
                                                                      "faster of 1 and cores / workers, timed on the "
                                                                      "objective at start")
    pack: int | str = Field("auto", description="trials trained at once as one stacked model (trial packs; the "
                                                "same batch size and optimizer family share a pack): 1 to 4096, "
                                                "or auto: timed at start, 1 where packs do not pay off")
    on_oom: Literal["avoid", "accumulate"] = Field(
        "avoid", description="after a batch size runs out of memory on a device: avoid (configs with that batch "
                             "size or a larger one are not trained there) or accumulate (they train there as "
                             "micro-batches of half that size, gradients accumulated to the same batch)")
    heartbeat_interval: float = Field(2.0, ge=0.1, le=3600, strict=True,
                                      description="seconds between a running trial's heartbeats")
    grace_period: float = Field(12.0, gt=0, le=86400, strict=True,
                                description="seconds without a heartbeat after which a running trial's worker "
                                            "counts as lost: the trial is failed and its parameters queued again")
    enqueue: list[str | dict[str, Any]] = Field(default_factory=list, description="train configs that are the "
                                                "first trials: files (YAML/JSON, one config or a list) or "
                                                "mappings of config parts")
    warm_start: WarmStart | None = Field(None, description="an earlier study whose best configs are queued first: "
                                                           "NAME or {study, storage, top}")
    known_starts: bool = Field(True, strict=True, description="queue the known-good starting points the space holds "
                                                 "(tuner spaces starts)")
    mlflow: str | None = Field(None, description="MLflow tracking URI every finished trial is logged to (e.g. "
                                                 "sqlite:///mlflow.db or http://HOST:5000); default "
                                                 "$TUNER_MLFLOW_URI. Not stored with the study")
    tensorboard: str | None = Field(None, description="folder for TensorBoard logs: a run per trial with its "
                                                      "scalars and HParams. Not stored with the study")
    description: str = ""

    @field_validator("enqueue", mode="before")
    @classmethod
    def _one_or_more_files(cls, value: Any) -> Any:
        from tuner.config import TrainConfig

        values = [value] if isinstance(value, (str, dict, TrainConfig)) else value
        if isinstance(values, (list, tuple)):
            return [str(Path(v).resolve()) if isinstance(v, str) and Path(v).is_file() else
                    v.to_dict() if isinstance(v, TrainConfig) else v for v in values]
        return values

    @field_validator("batch_size", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        if isinstance(value, str):  # --batch-size 16,32,64
            parts = [v.strip() for v in value.split(",") if v.strip()]
            if not parts or not all(p.isdigit() for p in parts):
                raise ValueError("expected a positive integer or a comma-separated list of them (e.g. 16,32,64)")
            value = [int(p) for p in parts]
        if isinstance(value, list):
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise ValueError("expected positive integers")
            return value[0] if len(value) == 1 else sorted(set(value))
        if isinstance(value, bool) or (isinstance(value, int) and value < 1):
            raise ValueError("expected a positive integer")
        return value

    @field_validator("objectives", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value  # one name must be the objective's metric: checked, then dropped, when the study is prepared

    @field_validator("warm_start", mode="before")
    @classmethod
    def _study_name(cls, value: Any) -> Any:
        return {"study": value} if isinstance(value, str) else value

    @field_validator("pack", mode="before")
    @classmethod
    def _check_pack(cls, value: Any) -> int | str:
        return parse_pack(value)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None:
            problem = name_problem(value, new=False)  # a new study's name is checked where it is created
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("objective")
    @classmethod
    def _absolute_objective(cls, value: str) -> str:
        unknown = unknown_objective(value)  # said before anything loads
        if unknown:
            raise ValueError(unknown.rstrip("."))
        # A study is continued from any directory (or machine), so a local file is stored by absolute path.
        head, sep, attr = value.rpartition(":")
        path, suffix = (head, sep + attr) if sep and "/" not in attr else (value, ":objective")
        if path.endswith(".py") and Path(path).is_file():
            return str(Path(path).resolve()) + suffix
        return value

    @field_validator("data")
    @classmethod
    def _absolute_data(cls, value: str | None) -> str | None:
        if value is not None and Path(value).is_file():
            return str(Path(value).resolve())
        return value

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, value: str | None) -> str | None:
        if value:
            from tuner.study._storage import check_storage_url

            try:
                check_storage_url(value)
            except ConfigError as exc:
                raise ValueError(str(exc).rstrip(".")) from None
        return value

    @field_validator("sampler", "pruner")
    @classmethod
    def _check_named(cls, value: str | dict[str, Any] | None, info: ValidationInfo) -> str | dict[str, Any] | None:
        if value is None:  # the pruner: the objective's own, else median (set by prepare)
            return value
        if isinstance(value, dict) and not isinstance(value.get("name"), str):
            raise ValueError("a mapping needs a 'name' key, e.g. " + ("{name: tpe, n_startup_trials: 5}" if
                                                                      info.field_name == "sampler" else
                                                                      "{name: median, n_warmup_steps: 2}"))
        # The name and the option keys are checked here, where the spec file's line is known.
        import warnings

        from tuner.study._samplers import build_pruner, build_sampler, plain_options

        build = build_sampler if info.field_name == "sampler" else build_pruner
        try:
            if not (info.context or {}).get("stored"):  # a stored spec is read as it was accepted then
                value = plain_options(value, str(info.field_name))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental-option warnings: said when the study runs
                build(value, {"seed": 0, "epochs": 1, "multi": False})
        except ConfigError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        except Exception:  # noqa: S110 - values Optuna refuses are tried (and reported) before the study exists
            pass
        return value

    @model_validator(mode="after")
    def _grace_over_heartbeats(self) -> StudySpec:
        if self.grace_period < 2 * self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period:g}s) must be at least twice heartbeat_interval "
                             f"({self.heartbeat_interval:g}s), or busy workers would be taken for lost")
        return self

    @property
    def study_name(self) -> str:
        if self.name:
            return self.name
        space = self.space if isinstance(self.space, str) else "custom"
        return f"{Path(self.objective.split(':')[0]).stem}-{Path(space).stem}"

    @property
    def sampler_name(self) -> str:
        return self.sampler if isinstance(self.sampler, str) else self.sampler["name"]

    @property
    def pruner_name(self) -> str:
        """The pruner's name (``prepare`` sets an unset pruner to the objective's own, else median)."""
        if self.pruner is None:
            return DEFAULT_PRUNER
        return self.pruner if isinstance(self.pruner, str) else self.pruner["name"]

    def objective_options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OBJECTIVE_OPTIONS if getattr(self, k) is not None}

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<spec>", *, stored: bool = False) -> StudySpec:
        """``stored``: the spec a study keeps, read back as it was accepted when the study was created (checks
        added since do not lock the study out)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a study spec must be a mapping of keys. It holds {what_it_holds(data)}.")
        try:
            spec = cls.model_validate(data, context={"stored": stored})
            spec._stored = stored
            return spec
        except ValidationError as exc:
            raise ConfigError(_describe(exc, data, source)) from None
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def with_overrides(self, **overrides: Any) -> StudySpec:
        """A copy with the given fields replaced (``None`` values are ignored), validated."""
        given = {k: v for k, v in overrides.items() if v is not None}
        merged = {**self.model_dump(), **given}
        return StudySpec.from_mapping(merged, "command line",
                                      stored=self._stored and not {"sampler", "pruner"} & set(given))


MAX_PACK = 4096


def parse_pack(value: Any) -> int | str:
    """A pack size as given in a spec, a flag or ``$TUNER_PACK``: ``auto`` or a whole number 1..4096."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PACK:
        raise ValueError(f"must be auto or a whole number from 1 to {MAX_PACK}; got {value!r}")
    return value


def pack_from_environment() -> int | str | None:
    """``$TUNER_PACK`` (None where unset), checked: a wrong one is refused as a run starts, before it writes."""
    import os

    value = os.environ.get("TUNER_PACK")
    if not value:
        return None
    try:
        return parse_pack(value)
    except ValueError as exc:
        raise ConfigError(f"$TUNER_PACK {exc}") from None


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    line = line_of(data, key) if key in data else line_of(data)
    where = f"{source}:{line}" if line else source
    inner = [str(part) for part in err["loc"][1:] if not isinstance(part, int)]
    if err["type"] == "extra_forbidden" and inner and key == "warm_start":
        return f"{where}: key 'warm_start': " + unknown_name_message("warm_start key", inner[-1],
                                                                     WarmStart.model_fields)
    if err["type"] == "extra_forbidden" and key in ("direction", "directions"):
        return (f"{where}: a study spec has no key {key!r}: a study's direction is its objective's metric's "
                f"(accuracy and r2 maximised, mse and rmse minimised); a study of several objectives names them: "
                f"objectives: [<the metric>, train_seconds].")
    if err["type"] == "extra_forbidden":
        return f"{where}: " + unknown_name_message("study-spec key", key, StudySpec.model_fields)
    if inner and key == "warm_start":  # a value inside the mapping: name its key
        key_path = ".".join([key, *inner])
        if err["type"] == "missing":  # only a mapping can lack its study
            return f"{where}: key {key_path!r} is missing: name the earlier study"
        given = data.get(key)
        got = given.get(inner[-1]) if isinstance(given, dict) else given  # a bare name stands for its study
        message = err["msg"].removeprefix("Value error, ") + f". Got {got!r} instead."
        return f"--warm-start: {message}" if source == "command line" else f"{where}: key {key_path!r}: {message}"
    message = err["msg"].removeprefix("Value error, ")
    if not key:
        return f"{where}: {message}."
    got = data.get(key, None)
    # "greater than 0" holds the 0 of n_trials: 0 as a word of its own is not the value shown
    bound = re.search(rf"\b(than|to|least|most) {re.escape(repr(got))}(?!\w)", message)
    shown = (f"got {got}" in message.lower() or (repr(got) in message and not bound) or isinstance(got, dict)
             or key == "storage")  # a storage URL may hold a password: the message shows it masked
    end = "" if message.endswith((".", "?", "!")) else "."
    said = "" if shown else f" Got {got!r} instead."
    if source == "command line":  # a flag, not a key of a file
        return f"--{key.replace('_', '-')}: {message}{end}{said}"
    return f"{where}: key {key!r}: {message}{end}{said}"


def list_specs() -> dict[str, Path]:
    """The built-in study specs, by name."""
    return builtin_names("studies", (".yaml", ".yml"))


def _spec_path(ref: str | Path) -> Path:
    text = str(ref)
    path = Path(text)
    if not path.exists() and "/" not in text and path.suffix not in (".yaml", ".yml"):
        builtin = list_specs()
        if text not in builtin:
            raise ConfigError(unknown_name_message("study spec", text, builtin) + " Or give a path to a YAML file.")
        path = builtin[text]
    elif not path.exists():
        from tuner._builtin import builtin_hint

        hint = builtin_hint(path, "studies", (".yaml", ".yml"), "study spec")
        if hint:
            raise ConfigError(f"{path}: no such file{hint}")
    return path


def load_spec(ref: str | Path) -> StudySpec:
    """Loads a spec from a YAML path or a built-in spec name (``quickstart``)."""
    path = _spec_path(ref)
    data = load_yaml_file(path)
    if isinstance(data, dict):
        from tuner.spaces._params import location

        where = location(str(path), data, "enqueue", "enqueue")  # before the paths are resolved in place
        _resolve_relative(data, path.parent)
        enqueue = data.get("enqueue")
        for item in [enqueue] if isinstance(enqueue, str) else enqueue if isinstance(enqueue, list) else []:
            if isinstance(item, str) and not Path(item).is_file():  # said here, where the spec's line is known
                what = "is a folder; give a config file in it" if Path(item).is_dir() else "no such file"
                raise ConfigError(f"{where}: {item}: {what} (looked next to the spec, in {path.parent.resolve()}, "
                                  f"then in the working directory).")
    return StudySpec.from_mapping(data, str(path))


def locate_in_spec(exc: ConfigError, ref: str | Path | None, spec: StudySpec) -> ConfigError:
    """An error that a later check (once the objective is loaded) gave a spec key, ``"objectives: ..."``, with
    the spec file and the key's line, where the file wrote that key and the command line did not replace it;
    else the error as it is."""
    key, sep, rest = str(exc).partition(": ")
    if ref is None or not sep or key not in StudySpec.model_fields:
        return exc
    try:
        path = _spec_path(ref)
        data = load_yaml_file(path)
        if not isinstance(data, dict) or key not in data or load_spec(ref).model_dump().get(key) != \
                spec.model_dump().get(key):
            return exc
    except ConfigError:
        return exc
    from tuner.spaces._params import location

    return ConfigError(f"{location(str(path), data, key, key)}: {rest}")


def check_inline_space(ref: str | Path) -> None:
    """Checks a search space written in the spec (``space:`` a mapping) where its lines are known: a mistake
    in it names the spec's file and line; a space named there (a built-in name or a file) that is not there
    names them too, and where the file was looked for. For a spec whose space is used (not replaced by
    ``--space``)."""
    path = _spec_path(ref)
    data = load_yaml_file(path)
    if isinstance(data, dict) and isinstance(data.get("space"), dict):
        from tuner.spaces import SearchSpace

        SearchSpace.from_dict(data["space"], name="inline", source=str(path))
    elif isinstance(data, dict) and isinstance(data.get("space"), str):
        from tuner._builtin import space_source
        from tuner.spaces._params import location

        named = data["space"]
        resolved = dict(data)
        _resolve_relative(resolved, path.parent)
        try:
            space_source(resolved["space"])
        except ConfigError as exc:
            looked = ("" if Path(named).is_absolute() or not named.endswith((".yaml", ".yml")) and "/" not in named
                      else f" (looked next to the spec, in {path.parent.resolve()}, then in the working directory)")
            reason = str(exc).removeprefix(f"{resolved['space']}: ")
            raise ConfigError(f"{location(str(path), data, 'space', 'space')}: {named}: {reason}{looked}") from None


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Files named in a spec are found next to the spec first, then in the working directory."""
    enqueue = data.get("enqueue")
    if isinstance(enqueue, (str, list)):
        items = [enqueue] if isinstance(enqueue, str) else enqueue
        data["enqueue"] = [str((base / v).resolve()) if isinstance(v, str) and not Path(v).is_absolute()
                           and (base / v).is_file() else v for v in items]
    for key in ("space", "objective", "data"):
        value = data.get(key)
        if not isinstance(value, str) or Path(value).is_absolute():
            continue
        head, sep, attr = value.rpartition(":") if key == "objective" else ("", "", "")
        file_part = head if sep and "/" not in attr else value
        candidate = base / file_part
        if candidate.is_file():
            data[key] = str(candidate.resolve()) + (value[len(file_part):])
