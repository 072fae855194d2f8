"""``TrainConfig``: the optimizer settings a study tunes, the trainer consumes and users deploy."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner._validate import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Bound, check_param
from tuner.errors import ConfigError, closest, unknown_name_message, what_it_holds
from tuner.init import apply_init, get_init
from tuner.optim import build_optimizer, build_scheduler, get_optimizer, get_schedule

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tuner._setup import TrainingSetup

# A config is read, checked and written without PyTorch (a search space is checked against it before a study
# starts); what trains with it (tuner._setup, tuner.regularization) is imported by the methods that do.
__all__ = ["TrainConfig", "OptimizerConfig", "ScheduleConfig", "InitConfig", "Regularization", "load_config"]


def _named_dict(value: Any, where: str, default_name: str | None = None) -> tuple[str, dict[str, Any]]:
    """Accepts ``"adam"`` or ``{"name": "adam", ...}``; returns (name, other keys)."""
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a name or a mapping with a 'name' key. Got {value!r} instead.")
    params = dict(value)
    name = params.pop("name", default_name)
    if name is None:
        raise ConfigError(f"{where}: the 'name' key is missing.")
    return name, params


def _params(value: Any, where: str) -> dict[str, Any]:
    """A part's other hyperparameters: a mapping of name to value (None for none)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: its params are a mapping of hyperparameter to value, such as {{'momentum': "
                          f"0.9}}; got {type(value).__name__} {value!r}.")
    return value


@dataclass
class OptimizerConfig:
    """An optimizer name, its learning rate and its other hyperparameters (torch keyword arguments)."""

    name: str = "adam"
    lr: float = 1e-3
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        info = get_optimizer(self.name)
        checked = info.check({"lr": self.lr, **_params(self.params, "optimizer")}, where="optimizer")
        self.lr = checked.pop("lr")
        self.params = checked

    def to_dict(self) -> dict[str, Any]:
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        return {"name": self.name, "lr": self.lr, **params}

    @classmethod
    def from_dict(cls, value: Any) -> OptimizerConfig:
        name, params = _named_dict(value, "optimizer")
        get_optimizer(name)
        lr = params.pop("lr", get_optimizer(name).defaults["lr"])
        return cls(name, lr, params)


@dataclass
class ScheduleConfig:
    """A learning-rate schedule name and its parameters."""

    name: str = "constant"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = get_schedule(self.name).check(_params(self.params, "schedule"), where="schedule")

    @property
    def interval(self) -> str:
        """``batch``: ``scheduler.step()`` after every batch (``setup.step`` does it); ``epoch``: once per epoch
        with the validation metric (``setup.end_epoch(metric)``)."""
        return get_schedule(self.name).interval

    def to_dict(self) -> dict[str, Any]:
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        return {"name": self.name, **params}

    @classmethod
    def from_dict(cls, value: Any) -> ScheduleConfig:
        return cls(*_named_dict(value, "schedule"))


@dataclass
class InitConfig:
    """A weight initialiser name and its parameters."""

    name: str = "default"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = get_init(self.name).check(_params(self.params, "init"), where="init")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    @classmethod
    def from_dict(cls, value: Any) -> InitConfig:
        return cls(*_named_dict(value, "init"))


_REG_BOUNDS = {"weight_decay": NON_NEGATIVE, "l1": NON_NEGATIVE, "dropout": Bound("float", 0.0, 1.0, high_open=True)}


@dataclass
class Regularization:
    """L2 (weight decay, never on biases or norm scales), an L1 penalty, and the model's dropout rate.

    ``dropout=None`` leaves the model's own dropout rates alone.
    """

    weight_decay: float = 0.0
    l1: float = 0.0
    dropout: float | None = None

    def __post_init__(self) -> None:
        for key in ("weight_decay", "l1", "dropout"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, check_param(_REG_BOUNDS, key, value, "regularization", "regularization"))

    def to_dict(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay, "l1": self.l1, "dropout": self.dropout}

    @classmethod
    def from_dict(cls, value: Any) -> Regularization:
        if not isinstance(value, dict):
            raise ConfigError(f"regularization: expected a mapping. Got {value!r} instead.")
        unknown = set(value) - set(_REG_BOUNDS)
        if unknown:
            raise ConfigError("regularization: " + unknown_name_message("key", sorted(unknown)[0], _REG_BOUNDS))
        return cls(**value)


def _checked_direction(value: Any, where: str) -> str:
    if value not in ("maximize", "minimize"):
        raise ConfigError(f"{where}: 'maximize' or 'minimize' (the direction of the metric the config was tuned on; "
                          f"the plateau schedule's mode); got {value!r}.")
    return value


_TOP_KEYS = ("optimizer", "schedule", "batch_size", "init", "regularization", "grad_clip_norm", "epochs", "seed")


@dataclass
class TrainConfig:
    """Everything about *how* a model is trained, independent of the model and the data.

    Example:
        >>> config = TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 3e-3},
        ...                                 "schedule": {"name": "warmup_cosine"}, "epochs": 20})
        >>> optimizer, scheduler = config.build(model, steps_per_epoch=len(loader))
    """

    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch_size: int = 64
    init: InitConfig = field(default_factory=InitConfig)
    regularization: Regularization = field(default_factory=Regularization)
    grad_clip_norm: float | None = None
    epochs: int = 10
    seed: int = 0
    #: "maximize" or "minimize": the direction of the metric the config was tuned on (a study's trials, an
    #: export's metadata, ``TuneResult.best_config``). ``setup`` and ``build`` take the ``plateau`` schedule's
    #: mode from it when none is given. Not one of the config's values (not compared); ``to_dict`` and ``save``
    #: write it as ``metadata: {direction: ...}``, which ``from_dict`` and ``load_config`` read back.
    direction: str | None = field(default=None, compare=False, repr=False)

    @property
    def plateau_mode(self) -> str:
        """The ``plateau`` schedule's mode by default: ``"min"`` where the tuned metric was minimised."""
        return "min" if self.direction == "minimize" else "max"

    def __post_init__(self) -> None:
        if self.direction not in (None, "maximize", "minimize"):
            raise ConfigError(f"TrainConfig(direction=...): 'maximize', 'minimize' or None (the plateau schedule's "
                              f"mode: 'minimize' for a loss); got {self.direction!r}.")
        # The parts as from_dict reads them: a name ("adam") or a mapping; anything else is refused here, not as
        # an AttributeError when the config is first used.
        for key, kind in (("optimizer", OptimizerConfig), ("schedule", ScheduleConfig), ("init", InitConfig),
                          ("regularization", Regularization)):
            value = getattr(self, key)
            if not isinstance(value, kind):
                if not isinstance(value, (str, dict)) or (key == "regularization" and isinstance(value, str)):
                    raise ConfigError(f"TrainConfig({key}=...) takes a {kind.__name__}, a mapping"
                                      f"{'' if key == 'regularization' else ' or a name'}; got "
                                      f"{type(value).__name__} {value!r}.")
                setattr(self, key, kind.from_dict(value))
        table = {"batch_size": POSITIVE_INT, "epochs": POSITIVE_INT,
                 "seed": Bound("int", 0, 2**63 - 1), "grad_clip_norm": POSITIVE}
        for key in ("batch_size", "epochs", "seed", "grad_clip_norm"):
            value = getattr(self, key)
            if value is not None or key != "grad_clip_norm":
                setattr(self, key, check_param(table, key, value, "the train config", key))

    def check(self) -> TrainConfig:
        """Checks the config again, as it was checked when made: a value changed since (``config.optimizer.lr =
        0``, ``config.schedule = "cosine"``) is refused, or read as ``from_dict`` reads it (a name becomes its
        part), before ``build``/``setup`` use it. Returns the config."""
        self.__post_init__()
        for part in (self.optimizer, self.schedule, self.init, self.regularization):
            part.__post_init__()
        return self

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The config's values as a mapping that ``from_dict`` reads back; a config that knows the direction of
        its metric adds ``metadata: {direction: ...}`` (the plateau schedule's mode), as ``save`` does."""
        data = {
            "optimizer": self.optimizer.to_dict(),
            "schedule": self.schedule.to_dict(),
            "batch_size": self.batch_size,
            "init": self.init.to_dict(),
            "regularization": self.regularization.to_dict(),
            "grad_clip_norm": self.grad_clip_norm,
            "epochs": self.epochs,
            "seed": self.seed,
        }
        if self.direction is not None:
            data["metadata"] = {"direction": self.direction}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"A train config must be a mapping of keys. It holds {what_it_holds(data)}.")
        unknown = [k for k in data if k not in _TOP_KEYS and k != "metadata"]
        if unknown:
            raise ConfigError(unknown_name_message("train-config key", unknown[0], _TOP_KEYS))
        kwargs: dict[str, Any] = {}
        if "optimizer" in data:
            kwargs["optimizer"] = OptimizerConfig.from_dict(data["optimizer"])
        if "schedule" in data:
            kwargs["schedule"] = ScheduleConfig.from_dict(data["schedule"])
        if "init" in data:
            kwargs["init"] = InitConfig.from_dict(data["init"])
        if "regularization" in data:
            kwargs["regularization"] = Regularization.from_dict(data["regularization"] or {})
        for key in ("batch_size", "grad_clip_norm", "epochs", "seed"):
            if key in data:
                kwargs[key] = data[key]
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and metadata.get("direction") is not None:
            # an export's: the plateau schedule's mode
            kwargs["direction"] = _checked_direction(metadata["direction"], "metadata.direction")
        return cls(**kwargs)

    def _with_metadata(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """The config as a mapping, with ``metadata``; the config's own direction goes with it unless the
        metadata gives one, so that a saved config loads back with the plateau schedule's mode."""
        data = self.to_dict()
        data.pop("metadata", None)  # the config's direction: written below unless the metadata gives one
        if self.direction is not None and metadata.get("direction") is None:
            metadata = {**metadata, "direction": self.direction}
        if metadata:
            data["metadata"] = metadata
        return data

    def to_json(self, **metadata: Any) -> str:
        return json.dumps(self._with_metadata(metadata), indent=2)

    def to_yaml(self, **metadata: Any) -> str:
        import yaml

        return yaml.safe_dump(self._with_metadata(metadata), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path, **metadata: Any) -> Path:
        """Writes YAML, or JSON when the file name ends in ``.json``, atomically (a temporary file beside it
        is renamed into place): an interrupted save never leaves half a config."""
        from tuner._files import write_text

        path = Path(path)
        if path.suffix.lower() == ".py":
            raise ConfigError(f"{path}: config.save writes a train config as YAML (.yaml) or JSON (.json), which "
                              f"load_config reads back; a runnable script is `tuner study export --format python`.")
        if metadata.get("direction") is not None:
            _checked_direction(metadata["direction"], "save(direction=...)")
        self.check()
        text = self.to_json(**metadata) if path.suffix.lower() == ".json" else self.to_yaml(**metadata)
        write_text(path, text + ("\n" if not text.endswith("\n") else ""))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        from tuner._yaml import load_yaml_file

        path = Path(path)
        refuse_script(path)
        data = load_yaml_file(path)  # JSON is YAML
        optimizer = data.get("optimizer") if isinstance(data, dict) else None
        if isinstance(optimizer, dict) and "name" not in optimizer and optimizer and all(
                isinstance(v, dict) or v is None for v in optimizer.values()):
            raise ConfigError(f"{path}: looks like a search space (its optimizer holds {', '.join(map(str, optimizer))}"
                              f"); a train config names one optimizer and its values, e.g. optimizer: {{name: adamw, "
                              f"lr: 0.001}}. A study over the space finds one: tuner study create --space {path}")
        core = ("optimizer", "schedule", "batch_size")
        if isinstance(data, dict) and not (set(core) & set(data)) and not any(
                k not in _TOP_KEYS and closest(str(k), core) for k in data):  # a misspelt key: from_dict says it
            raise ConfigError(f"{path}: holds no train config (none of optimizer, schedule, batch_size); "
                              f"`tuner study export` or config.save() writes one.")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    # -- use with a model ------------------------------------------------------------------------------
    def setup(
        self, model: nn.Module, steps_per_epoch: int | None = None, *, mode: str | None = None, init: bool = True,
        dropout: bool = True, seed: bool = True,
    ) -> TrainingSetup:
        """Applies this config to ``model`` and returns the ``TrainingSetup`` that trains it.

        ``steps_per_epoch`` is required: the number of batches in an epoch, ``len(loader)``. Seeds Python's
        ``random``, NumPy and torch with ``seed`` (``seed=False`` to skip), then initialises the weights
        (``init=False``) and sets the dropout rate (``dropout=False``), and builds the optimizer and scheduler;
        ``mode`` is ``"max"`` when the validation metric given to ``end_epoch`` is maximised, ``"min"`` for a
        loss (the ``plateau`` schedule); by default the config's ``direction`` says which (set in a ``tune``
        trial, by an export's metadata and by ``best_config``), else ``"max"``. Then, per batch,
        ``setup.step(lambda: loss_fn(model(x), y))`` (penalties, gradient clipping, L-BFGS's closure, the
        schedule), and per epoch ``setup.end_epoch(val_metric)``.

        Example:
            >>> setup = config.setup(model, steps_per_epoch=len(loader))
            >>> for epoch in range(config.epochs):
            ...     for x, y in loader:
            ...         setup.step(lambda: loss_fn(model(x), y))
            ...     setup.end_epoch(val_accuracy)
        """
        from tuner._setup import TrainingSetup

        return TrainingSetup(self, model, steps_per_epoch, mode=mode, init=init, dropout=dropout, seed=seed)

    def build(
        self, model: nn.Module, steps_per_epoch: int | None = None, mode: str | None = None
    ) -> tuple[torch.optim.Optimizer, Any]:
        """Returns ``(optimizer, scheduler)`` for ``model``; ``config.setup`` does the training step as well.

        ``steps_per_epoch`` is required: the number of batches in an epoch, ``len(loader)``; the schedule spans
        ``epochs * steps_per_epoch`` batches (stepped further, it holds the rate of its last planned batch and
        warns). Call ``scheduler.step()`` after every batch; for ``plateau`` (``config.schedule.interval ==
        "epoch"``) call
        ``scheduler.step(metric)`` once per epoch instead, ``mode`` saying whether the metric is maximised
        (``"max"``) or minimised (``"min"``; by default from the config's ``direction``, as for ``setup``).
        Gradient clipping (``grad_clip_norm``) and ``penalty(model)``
        are the loop's to apply, and so, for a schedule-free optimizer (``schedulefree_adamw``), are
        ``optimizer.train()`` before training and ``optimizer.eval()`` before evaluating.
        """
        from tuner._setup import check_steps_per_epoch

        self.check()
        steps_per_epoch = check_steps_per_epoch(steps_per_epoch)
        mode = mode or self.plateau_mode
        if mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' (a metric such as accuracy) or 'min' (a loss). Got {mode!r}.")
        info = get_optimizer(self.optimizer.name)
        weight_decay = self.regularization.weight_decay if info.supports_weight_decay else 0.0
        optimizer = build_optimizer(
            self.optimizer.name, model, {"lr": self.optimizer.lr, **self.optimizer.params}, weight_decay
        )
        scheduler = build_scheduler(
            self.schedule.name, optimizer, self.schedule.params,
            epochs=self.epochs, steps_per_epoch=steps_per_epoch, mode=mode,
        )
        return optimizer, scheduler

    def apply_init(self, model: nn.Module) -> int:
        """Initialises the model's weights in place; returns how many tensors were set."""
        return apply_init(model, self.init.name, self.init.params)

    def apply_dropout(self, model: nn.Module) -> int:
        """Sets every ``nn.Dropout`` of the model to the configured rate; returns how many were set."""
        from tuner import regularization

        if self.regularization.dropout is None:
            return 0
        return regularization.set_dropout(model, self.regularization.dropout)

    def l1_penalty(self, model: nn.Module) -> torch.Tensor | float:
        from tuner import regularization

        return regularization.l1_penalty(model, self.regularization.l1)

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        """The loss terms the optimizer does not apply itself: L1, and L2 for optimizers without weight decay."""
        from tuner import regularization

        total = self.l1_penalty(model)
        if not get_optimizer(self.optimizer.name).supports_weight_decay:
            total = total + regularization.l2_penalty(model, self.regularization.weight_decay)
        return total

    def summary(self) -> str:
        """A one-line description: ``adamw lr=3.00e-03 warmup_cosine bs=64 wd=1.0e-02``."""
        from tuner._summary import config_line

        return config_line(self.to_dict())


def refuse_script(path: Path) -> None:
    """A ``.py`` file where a train config goes (``tuner study export --format python`` writes one): said as
    such, not as invalid YAML."""
    if path.suffix == ".py":
        raise ConfigError(f"{path}: is a Python script (`tuner study export --format python` writes one, to run); "
                          f"a train config is a .yaml or .json file (`tuner study export NAME -o best.yaml`).")


def load_config(path: str | Path | dict[str, Any]) -> TrainConfig:
    """Reads a ``TrainConfig`` from a YAML or JSON file (as written by ``TrainConfig.save``); a mapping of the
    same keys is read as ``TrainConfig.from_dict`` reads it."""
    if isinstance(path, dict):
        return TrainConfig.from_dict(path)
    if not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
        raise ConfigError(f"load_config() takes a file path (or a mapping of train-config keys); got "
                          f"{type(path).__name__}.")
    return TrainConfig.load(path)

