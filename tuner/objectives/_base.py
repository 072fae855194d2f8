"""What a workload is: data, a model builder, a loss and a metric with its direction."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tuner._registry import Registry
from tuner.errors import ConfigError, DataError

__all__ = ["Dataset", "Objective", "Metric", "get_metric", "list_metrics"]


@dataclass
class Dataset:
    """Train/validation/test tensors. The test split is only touched once a trial has finished."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    n_classes: int | None = None  # None for regression

    def __post_init__(self) -> None:
        if self.n_classes is not None and not isinstance(self.n_classes, bool):
            try:  # NumPy's and torch's ints too (n_classes=y.max() + 1), as a Python int
                self.n_classes = operator.index(self.n_classes)
            except TypeError:
                pass
        if self.n_classes is not None and (isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int)
                                           or self.n_classes < 2):
            raise DataError(f"n_classes must be an int of at least 2 for class labels, or None for regression "
                            f"targets (got {self.n_classes!r}).")
        for split, x, y in (("train", self.x_train, self.y_train), ("validation", self.x_val, self.y_val),
                            ("test", self.x_test, self.y_test)):
            if x is None and y is None:
                continue
            for what, t in (("inputs", x), ("targets", y)):
                if not isinstance(t, torch.Tensor):  # a NumPy array failed later, as "has no attribute 'to'"
                    raise DataError(f"The {split} split's {what} are {type(t).__name__}, not a torch.Tensor: give "
                                    f"tensors (torch.as_tensor), or build the Dataset with Dataset.from_arrays, "
                                    f"which takes NumPy arrays.")
            if split != "train" and x.shape[1:] != self.x_train.shape[1:]:  # every trial would fail on it
                raise DataError(f"The {split} split's inputs are shaped {tuple(x.shape[1:])} per sample, the train "
                                f"split's {tuple(self.x_train.shape[1:])}: the model takes one shape.")
            if self.n_classes is not None and y.dim() != 1:  # (N, 1) labels broadcast to N x N in the accuracy
                raise DataError(f"The {split} split's class labels are shaped {tuple(y.shape)}: give one label per "
                                f"sample, a 1-D tensor of {len(y)} (y.reshape(-1)).")
            if len(x) == 0:
                raise DataError(f"The {split} split is empty: there is nothing to train or evaluate on.")
            if len(x) != len(y):
                raise DataError(f"The {split} split has {len(x)} inputs but {len(y)} targets.")
            if self.n_classes is not None and isinstance(y, torch.Tensor) and y.numel():
                if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                    raise DataError(f"The {split} split's targets are {str(y.dtype).removeprefix('torch.')}, but "
                                    f"n_classes={self.n_classes} says they are class labels: give integer labels "
                                    f"0 to {self.n_classes - 1}, or n_classes=None for regression targets.")
                low, high = int(y.min()), int(y.max())
                if low < 0 or high >= self.n_classes:
                    raise DataError(f"The {split} split's class labels run from {low} to {high}, outside 0 to "
                                    f"{self.n_classes - 1} (n_classes={self.n_classes}).")
            for what, t in (("inputs", x), ("targets", y)):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    bad = int((~torch.isfinite(t)).sum())
                    if bad:  # every trial would diverge, and be recorded as if its learning rate were to blame
                        raise DataError(f"The {split} split's {what} hold {bad} non-finite value(s) (NaN or inf): "
                                        f"impute or drop them before training.")

    @property
    def n_features(self) -> int:
        return int(self.x_train[0].numel())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device) -> Dataset:
        move = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Dataset(**move)

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.__dict__.values() if isinstance(v, torch.Tensor))


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    direction: str  # maximize | minimize
    #: the metric scores class labels (a Dataset with ``n_classes``, one output per class): accuracy does
    classes: bool = False


DEFAULT_EPOCHS = 20


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(1) == y).float().mean()


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.reshape(y.shape) - y).pow(2).mean()


def _r2(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    residual = (out.reshape(y.shape) - y).pow(2).sum()
    total = (y - y.mean()).pow(2).sum().clamp_min(1e-12)
    return 1 - residual / total


_METRICS: Registry[Metric] = Registry("metric")
for _m in (Metric("accuracy", _accuracy, "maximize", classes=True), Metric("r2", _r2, "maximize"),
           Metric("mse", _mse, "minimize"), Metric("rmse", lambda o, y: _mse(o, y).sqrt(), "minimize")):
    _METRICS.register(_m.name, _m)


def get_metric(name: str) -> Metric:
    return _METRICS.get(name)


def list_metrics() -> list[str]:
    return _METRICS.names()


def _regression_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.reshape(y.shape), y)


@dataclass
class Objective:
    """A workload to tune on.

    Args:
        name: shown in listings and stored with the study.
        load_data: returns the ``Dataset`` (called once per worker; cache expensive work).
        build_model: ``build_model(data) -> nn.Module``; put ``nn.Dropout`` modules where dropout belongs,
            since the tuned dropout rate is applied to them.
        metric: ``accuracy``, ``r2``, ``mse`` or ``rmse``; its direction is the study's direction.
        loss: ``loss(outputs, targets)``; defaults to cross-entropy with classes, MSE without.
        description: one line for ``tuner objectives list``.
        epochs: training epochs per trial that studies use unless their spec sets ``epochs`` (default 20).
        pruner: the pruner studies use unless their spec sets ``pruner`` (default ``median``), for a workload
            whose validation curves call for another (``patient`` where they are noisy).

    Example:
        >>> objective = Objective("my-task", load_data=my_data, build_model=lambda d: MyNet(d.n_features))
    """

    name: str
    load_data: Callable[[], Dataset]
    build_model: Callable[[Dataset], nn.Module]
    metric: str = "accuracy"
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    description: str = ""
    options: dict[str, Any] | None = None
    epochs: int | None = None
    pruner: str | None = None

    def __post_init__(self) -> None:
        get_metric(self.metric)
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ConfigError(f"Objective {self.name!r}: epochs must be a positive integer (got {self.epochs!r}).")
        for key, fn in (("load_data", self.load_data), ("build_model", self.build_model)):
            if not callable(fn):
                raise ConfigError(f"Objective {self.name!r}: {key} must be a function (got "
                                  f"{type(fn).__name__}).")
        if self.loss is not None and not callable(self.loss):
            hint = (" (the metric is metric=...; a loss is a function such as torch.nn.functional.mse_loss)"
                    if isinstance(self.loss, str) else "")
            raise ConfigError(f"Objective {self.name!r}: loss must be a function loss(outputs, targets), or None for "
                              f"cross-entropy with classes and MSE without (got {type(self.loss).__name__}"
                              f"{f' {self.loss!r}' if isinstance(self.loss, str) else ''}){hint}.")
        if self.pruner is not None:
            from tuner.errors import unknown_name_message
            from tuner.study._samplers import list_pruners

            if not isinstance(self.pruner, str):
                raise ConfigError(f"Objective {self.name!r}: pruner must be a pruner's name, one of "
                                  f"{', '.join(list_pruners())} (got {type(self.pruner).__name__}); a spec's "
                                  f"pruner: key takes its options.")
            if self.pruner not in list_pruners():
                raise ConfigError(f"Objective {self.name!r}: " + unknown_name_message("pruner", self.pruner,
                                                                                       list_pruners()))

    @property
    def trial_epochs(self) -> int:
        """Epochs per trial for studies whose spec does not set them."""
        return self.epochs or DEFAULT_EPOCHS

    @property
    def direction(self) -> str:
        return get_metric(self.metric).direction

    def loss_fn(self, data: Dataset) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.loss is not None:
            return self.loss
        return nn.functional.cross_entropy if data.n_classes else _regression_loss



