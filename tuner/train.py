"""The trainer: one ``TrainConfig`` on one objective, on CPU or GPU, reporting every epoch.

Small data sets live on the device as tensors and are batched by indexing a shuffled permutation, which
avoids a DataLoader's per-batch Python overhead. A loss that turns non-finite or grows far beyond its
starting value stops the run at once with ``Diverged``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from tuner._setup import TrainingSetup, lazy_parameters, seed_everything
from tuner.config import TrainConfig
from tuner.errors import ConfigError, DataError, unknown_device
from tuner.objectives import Dataset, Objective, get_metric

__all__ = ["Trainer", "fastest_of", "TrainResult", "Diverged", "resolve_device", "seed_everything", "sync"]

ReportFn = Callable[[int, float], None]
EVAL_BATCH = 4096


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA), so that a timing measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
DIVERGENCE_CHECK_EVERY = 32  # batches between mid-epoch checks (each one waits for the device)
NORM_BATCHES = 50  # training batches through which a schedule-free model's BatchNorm statistics are recomputed
DIVERGENCE_FACTOR = 20.0  # an epoch whose mean training loss is over this multiple of the first batch's diverged


class Diverged(Exception):
    """The training loss became non-finite or exploded; ``reason`` says when and how."""

    def __init__(self, reason: str, epoch: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch


@dataclass
class TrainResult:
    value: float
    test_value: float | None
    val_history: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    model: nn.Module | None = None


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(unknown_device(device)) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(unknown_device(device))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"Device {device!r} was asked for, but CUDA is not available on this machine "
                              f"(torch {torch.__version__}): use cpu, or auto (the best device there is).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"Device {device!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s).")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"Device {device!r} was asked for, but MPS is not available on this machine.")
    return dev


def _load(objective: Objective) -> Dataset:
    try:
        data = objective.load_data()
    except (DataError, ConfigError):
        raise
    except Exception as exc:
        raise DataError(f"Objective {objective.name!r} could not load its data: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, Dataset):
        raise DataError(f"Objective {objective.name!r}: load_data() returned {type(data).__name__}, not a Dataset.")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else "(no message)"


def fastest_of(timings: dict[int, float], margin: float = 0.25) -> int:
    """The thread count to train on, given seconds per step for each (``Trainer.thread_timings``): the fewest
    threads within ``margin`` of the fastest, as more threads cost cores that other work could use."""
    best = min(timings.values())
    return min(c for c, t in timings.items() if t <= (1 + margin) * best)


def rows_left_out(n: int, batch_size: int, model: nn.Module) -> int:
    """The rows an epoch leaves out: 1 where its last batch would hold a single row in a model with BatchNorm,
    which cannot train on one row ("Expected more than 1 value per channel": every trial of that batch size
    would fail), else 0. A different row each epoch, as the rows are shuffled; ``DataLoader(drop_last=True)``
    leaves out a short last batch the same way."""
    single = n > 1 and n % batch_size == 1
    return int(single and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()))


class Trainer:
    """Trains models for one objective; the data is loaded and placed once, then reused by every ``fit``.

    Args:
        objective: the workload.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        divergence_factor: stop when an epoch's mean training loss exceeds this multiple of the first
            batch's loss.

    Example:
        >>> result = Trainer(load_objective("digits-mlp")).fit(TrainConfig(epochs=5))
    """

    def __init__(self, objective: Objective, device: str = "auto", divergence_factor: float = DIVERGENCE_FACTOR,
                 data: Dataset | None = None) -> None:
        self.objective = objective
        self.device = resolve_device(device)
        self.divergence_factor = divergence_factor
        self.cpu_data = data if data is not None else _load(objective)
        self.data = self._place(self.cpu_data)
        self.metric = get_metric(objective.metric)
        self.eval_batch = EVAL_BATCH  # rows evaluated at once; halved where they run out of memory
        self.last_result: TrainResult | None = None
        self.loss_fn = objective.loss_fn(self.cpu_data)

    def _place(self, data: Dataset) -> Dataset:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if data.nbytes() > 0.5 * free:
                return data  # batches are copied to the GPU one at a time
        return data.to(self.device)

    def check_model(self) -> tuple[int, ...]:
        """Builds the model and runs one forward and backward pass on two samples, so that a model that cannot
        be built or does not fit its data is reported before a study exists, not as a run of failed trials.
        Returns the shape of one sample's output."""
        name = self.objective.name
        try:
            model = self.objective.build_model(self.cpu_data)
        except (ConfigError, DataError):
            raise
        except Exception as exc:  # MemoryError, torch's allocator errors and the user's own bugs alike
            raise ConfigError(f"The model of objective {name!r} could not be built: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from exc
        if not isinstance(model, nn.Module):
            raise ConfigError(f"build_model of objective {name!r} returned {type(model).__name__}, "
                              f"not a torch.nn.Module.")
        from tuner.regularization import dropout_modules

        #: the model's dropout layers, which a tuned dropout rate sets (counted by check_model)
        self.dropout_layers = len(dropout_modules(model))
        try:
            model.to(self.device)
            out = model(self.data.x_train[:2].to(self.device))
            loss = self.loss_fn(out, self.data.y_train[:2].to(self.device))
            loss.backward()
        except Exception as exc:
            raise ConfigError(f"The model of objective {name!r} does not fit its data: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"The model of objective {name!r} returned {type(out).__name__}, not a tensor.")
        regression = self.data.n_classes is None and self.data.y_train.is_floating_point()
        if self.metric.classes and (regression or out.dim() < 2 or out.shape[1] < 2):
            # argmax over one column is always 0, and never equals a real-valued target: every trial would
            # complete at the same score
            why = ("its data has no classes (n_classes=None and real-valued targets: regression)" if regression
                   else f"its model gives {out.shape[1] if out.dim() > 1 else 1} output(s) per sample, not one "
                        f"per class")
            raise ConfigError(f"Objective {name!r}: the metric {self.metric.name!r} scores class labels, but "
                              f"{why}. Classification takes 'accuracy' with a model that gives one output per "
                              f"class; regression 'mse', 'rmse' or 'r2' (Objective(..., metric='r2')).")
        n_classes = self.data.n_classes
        if self.metric.classes and n_classes is not None and out.dim() > 1 and out.shape[1] < n_classes:
            # label n_classes - 1 is out of the model's range: every trial would fail with an IndexError
            raise ConfigError(f"The model of objective {name!r} gives {out.shape[1]} outputs per sample, but its "
                              f"data has {n_classes} classes (labels 0 to {n_classes - 1}): give the last layer "
                              f"{n_classes} outputs.")
        try:
            with torch.no_grad():
                float(self.metric.fn(out.detach(), self.data.y_train[:2].to(self.device)))
        except Exception as exc:
            raise ConfigError(f"The metric {self.metric.name!r} of objective {name!r} does not fit its model's "
                              f"output (shape {tuple(out.shape)}) and targets (shape "
                              f"{tuple(self.data.y_train[:2].shape)}): {type(exc).__name__}: {_first_line(exc)}. "
                              f"Classification takes 'accuracy'; regression 'mse', 'rmse' or 'r2'.") from exc
        return tuple(out.shape[1:])

    def fastest_threads(self, candidates: list[int], steps: int = 40, batch_size: int = 64, rounds: int = 3,
                        margin: float = 0.25) -> int:
        """Times a few training steps with each torch thread count and returns the fastest. Small models
        often train faster on one thread than on several; larger ones the other way round.

        More threads must win by ``margin`` to be chosen, as they cost cores that other work (evaluation,
        storage writes, other workers) could use."""
        candidates = sorted(set(candidates))
        if len(candidates) == 1 or self.device.type != "cpu":
            return candidates[-1]
        timings = self.thread_timings(candidates, steps, batch_size, rounds)
        return fastest_of(timings, margin) if timings else candidates[-1]

    def thread_timings(self, candidates: list[int], steps: int = 40, batch_size: int = 64,
                       rounds: int = 3) -> dict[int, float]:
        """Seconds per training step (Adam, ``batch_size`` samples) with each torch thread count, on this
        trainer's CPU; empty where the model cannot train at that batch size (the trials will tell).

        The candidates are timed in alternating rounds and each keeps its best time, so that one noisy moment
        on a shared machine does not decide."""
        candidates = sorted(set(candidates))
        previous = torch.get_num_threads()
        x, y = self.data.x_train[:batch_size], self.data.y_train[:batch_size]
        timings = {c: float("inf") for c in candidates}
        try:
            model = self.objective.build_model(self.cpu_data).to(self.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for r in range(rounds):
                for threads in candidates if r % 2 == 0 else candidates[::-1]:
                    torch.set_num_threads(threads)
                    for i in range(steps + 5):
                        if i == 5:
                            start = time.perf_counter()
                        optimizer.zero_grad()
                        self.loss_fn(model(x), y).backward()
                        optimizer.step()
                    timings[threads] = min(timings[threads], (time.perf_counter() - start) / steps)
        except Exception:  # the model fails at this batch size (out of memory, say)
            return {}
        finally:
            torch.set_num_threads(previous)
        return timings

    def check_batch_size(self, batch_size: int) -> None:
        n = len(self.data.x_train)
        if batch_size > n:
            raise DataError(f"batch_size {batch_size} is larger than the {n} training samples of "
                            f"objective {self.objective.name!r}.")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        return self.metric_of(model, x, y)

    def metric_of(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
        """The metric of ``forward`` over ``x``, evaluated ``eval_batch`` rows at a time. Rows that run out of
        memory are evaluated again in halves, and the smaller size is kept: evaluating is not what a trial's
        batch size is judged by."""
        while True:
            chunk = self.eval_batch
            try:
                outs = [forward(x[i:i + chunk].to(self.device, non_blocking=True)) for i in range(0, len(x), chunk)]
                return float(self.metric.fn(torch.cat(outs), y.to(self.device)))
            except torch.cuda.OutOfMemoryError:
                if chunk <= 1:
                    raise
                outs = []
                self.eval_batch = chunk // 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def build_model(self, config: TrainConfig) -> nn.Module:
        """The objective's model for ``config``, on the CPU: seeded with the config's seed, initialised and
        with its dropout rate, as every trial of the config starts."""
        seed_everything(config.seed)
        model = self.objective.build_model(self.cpu_data)
        if lazy_parameters(model):
            with torch.no_grad():  # lazy layers (nn.LazyLinear) make their parameters on a first batch
                model.eval()(self.cpu_data.x_train[:2])
            model.train()
        config.apply_init(model)
        config.apply_dropout(model)
        return model

    def time_steps(self, config: TrainConfig, steps: int) -> float:
        """Seconds that ``steps`` training steps of ``config`` take, as ``fit`` does them (after two
        unmeasured ones); for choosing a pack size against one trial at a time."""
        model = self.build_model(config).to(self.device)
        bs = min(config.batch_size, len(self.data.x_train))
        setup = TrainingSetup(config, model, math.ceil(len(self.data.x_train) / bs), init=False, dropout=False,
                              seed=False)
        xb, yb = self.data.x_train[:bs].to(self.device), self.data.y_train[:bs].to(self.device)

        def batch_loss() -> torch.Tensor:
            return self.loss_fn(model(xb), yb)

        model.train()
        for _ in range(2):
            setup._step(batch_loss, False)
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            setup._step(batch_loss, False)
        sync(self.device)
        return time.perf_counter() - start

    def fit(self, config: TrainConfig, report: ReportFn | None = None, keep_model: bool = False,
            micro_batch: int | None = None) -> TrainResult:
        """Trains one model; ``report(epoch, value)`` is called after every epoch and may raise to stop.
        ``micro_batch``: every batch of ``config.batch_size`` is run as micro-batches of at most this many
        samples whose gradients are accumulated before the one update (the same effective batch in less
        memory; BatchNorm sees each micro-batch's statistics, and dropout draws its masks per micro-batch)."""
        if micro_batch is not None and not 1 <= micro_batch:
            raise ValueError(f"micro_batch must be at least 1; got {micro_batch}")
        self.last_result = None
        self.check_batch_size(config.batch_size)
        data, device = self.data, self.device
        model = self.build_model(config).to(device)
        n, bs = len(data.x_train), config.batch_size
        tail = rows_left_out(n, bs, model)
        steps_per_epoch = math.ceil((n - tail) / bs)
        mode = "max" if self.metric.direction == "maximize" else "min"
        # The same training step as a user's loop with config.setup(); seeding, initialisation and dropout
        # are done above, before the model moves to its device. The losses are checked for divergence in
        # bulk below rather than every batch, which would wait for the device each time.
        setup = TrainingSetup(config, model, steps_per_epoch, mode=mode, init=False, dropout=False, seed=False)
        train_step = setup._step
        generator = torch.Generator(device=data.x_train.device).manual_seed(config.seed)
        loss_fn = self.loss_fn
        result = TrainResult(value=math.nan, test_value=None)
        self.last_result = result  # what a pruned or diverged run got through, for the record
        initial_loss: float | None = None

        def batch_loss() -> torch.Tensor:
            return loss_fn(model(xb), yb)

        accumulate = micro_batch is not None and micro_batch < bs

        def micro_parts() -> list[tuple[Callable[[], torch.Tensor], float]]:
            size = len(xb)
            return [(functools.partial(lambda x, y: loss_fn(model(x), y), xb[i:i + micro_batch],
                                       yb[i:i + micro_batch]), min(micro_batch, size - i) / size)
                    for i in range(0, size, micro_batch)]

        on_device = data.x_train.device == device
        for epoch in range(config.epochs):
            start = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=generator, device=data.x_train.device)
            losses: list[torch.Tensor] = []
            for step, i in enumerate(range(0, n - tail, bs)):
                idx = perm[i:i + bs]
                xb, yb = data.x_train[idx], data.y_train[idx]
                if not on_device:
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                losses.append(train_step(batch_loss, False, micro_parts() if accumulate else None))
                if initial_loss is None:
                    initial_loss = abs(float(losses[0])) + 1e-8
                if step % DIVERGENCE_CHECK_EVERY == DIVERGENCE_CHECK_EVERY - 1:
                    partial = torch.stack(losses[-DIVERGENCE_CHECK_EVERY:]).sum()
                    if not torch.isfinite(partial):
                        raise Diverged(f"diverged: training loss became {float(partial)} in epoch {epoch + 1}", epoch)
            total = torch.stack(losses).sum()
            mean_loss = float(total) / steps_per_epoch
            result.train_loss.append(mean_loss)
            if not math.isfinite(mean_loss):
                raise Diverged(f"diverged: training loss became {mean_loss} in epoch {epoch + 1}", epoch)
            if initial_loss is not None and mean_loss > self.divergence_factor * initial_loss:
                raise Diverged(f"diverged: training loss {mean_loss:.4g} in epoch {epoch + 1} is over "
                               f"{self.divergence_factor:g}x the initial {initial_loss:.4g}", epoch)
            # A schedule-free optimizer evaluates its averaged weights; BatchNorm's statistics are computed again
            # for them over up to NORM_BATCHES training batches (only where both are there).
            setup.eval(data.x_train[i:i + bs] for i in range(0, min(n - tail, NORM_BATCHES * bs), bs))
            value = self.evaluate(model, data.x_val, data.y_val)
            if not math.isfinite(value):
                raise Diverged(f"diverged: validation {self.metric.name} is {value} in epoch {epoch + 1}", epoch)
            setup.end_epoch(value)
            result.epoch_times.append(time.perf_counter() - start)
            result.val_history.append(value)
            result.value = value
            if report is not None:
                report(epoch, value)

        if data.x_test is not None:
            result.test_value = self.evaluate(model, data.x_test, data.y_test)
        if keep_model:
            result.model = model
        return result
