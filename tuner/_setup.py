"""``TrainingSetup``: a ``TrainConfig`` applied to one model, and the training step that uses all of it.

``config.setup(model, steps_per_epoch=len(loader))`` seeds, initialises the weights, sets the dropout rate and
builds the optimizer and the scheduler; ``setup.step(lambda: loss_fn(model(x), y))`` then does everything a
tuned config asks of one batch (penalties, gradient clipping, L-BFGS's closure, the per-batch schedule) and
``setup.end_epoch(val_metric)`` what it asks of an epoch (the ``plateau`` schedule).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import random
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.optim import get_optimizer

__all__ = ["TrainingSetup", "seed_everything", "check_steps_per_epoch", "steps_schedule_every_batch"]

LossFn = Callable[[], torch.Tensor]
# A tuner.TrainConfig. Not imported: tuner.config imports this module (config.setup and config.build use it).
TrainConfig = Any


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy and torch on every device (``torch.manual_seed`` seeds CUDA too).

    Call it before building the model for weights that are the same on every run.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed_everything() takes a whole number; got {seed!r}.")
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:  # torch's range
        raise ConfigError(f"seed_everything() takes a whole number from -2**63 to 2**64 - 1 (torch's seeds); got "
                          f"{seed}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_steps_per_epoch(value: Any, call: str = "config.build(model, steps_per_epoch=...)") -> int:
    """Returns ``value`` as an int >= 1; a missing or wrong value raises a ConfigError saying what to pass."""
    if value is None:
        raise ConfigError(
            f"{call} needs steps_per_epoch, the number of batches in an epoch: pass steps_per_epoch=len(loader) "
            f"(or math.ceil(n_samples / config.batch_size)). The learning-rate schedule spans "
            f"epochs x steps_per_epoch batches.")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(
            f"steps_per_epoch must be an int >= 1, the number of batches in an epoch (len(loader)). "
            f"Got {value!r} ({type(value).__name__}) instead.")
    return int(value)


def lazy_parameters(model: nn.Module) -> list[str]:
    """The parameters of lazy layers (``nn.LazyLinear``) not made yet: they exist after a first batch."""
    return [name for name, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]


_SET_UP: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # the models config.setup was given, while they live


def _warn_weights_left(model: nn.Module, init: str) -> None:
    """Warns where the config's initialiser left weights as they were: those not held by the layers it sets (a
    model's own nn.Parameter, nn.MultiheadAttention's in_proj_weight)."""
    from tuner.init import _init_layers, get_init

    if get_init(init).fn is None:  # "default": the layers' own initialisation, by design
        return
    layers = _init_layers()
    left = [f"{owner}.{name}" if owner else name for owner, module in model.named_modules()
            if not isinstance(module, layers)
            for name, p in module.named_parameters(recurse=False) if p.ndim >= 2 and p.requires_grad]
    if left:
        shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        warnings.warn(f"The config's init {init!r} left {len(left)} weight tensor(s) as they were: {shown}. It sets "
                      f"the weights of nn.Linear, Conv, ConvTranspose, RNN/LSTM/GRU, Bilinear and Embedding layers; "
                      f"initialise the others yourself, or keep them in such layers.", RuntimeWarning, stacklevel=4)


_DETACHED = ("setup.step(loss_fn): the loss loss_fn returned is not attached to the model's graph (it called "
             "backward() itself, or computed the loss under torch.no_grad() or from detached outputs): return the "
             "loss of the model's output, setup.step back-propagates it.")
_NO_GRADIENT = ("setup.step(): no parameter of the model given to config.setup() got a gradient from the loss. "
                "Compute the loss with that model (setup.step(lambda: loss_fn(model(x), y))), and check that its "
                "parameters have requires_grad=True.")


def _check_loss_uses(loss: torch.Tensor, params: list[torch.Tensor]) -> None:
    """On the first step of a config with a penalty (L1, or L-BFGS's L2), which gives every weight a gradient of
    its own: that the data loss reaches the model's parameters (one extra backward pass, once)."""
    trained = [p for p in params if p.requires_grad]
    if all(g is None for g in torch.autograd.grad(loss, trained, retain_graph=True, allow_unused=True)):
        raise ConfigError(_NO_GRADIENT)


def steps_schedule_every_batch(config: TrainConfig) -> bool:
    """Whether the scheduler has to be stepped after every batch: a per-batch schedule that can change the
    learning rate (a constant one without warmup never does)."""
    schedule = config.schedule
    return schedule.interval == "batch" and not (schedule.name == "constant"
                                                 and not schedule.params.get("warmup_fraction"))


_watch = threading.local()  # the setups made in this thread while a trial runs (``watching``)


@contextlib.contextmanager
def watching() -> Iterator[list[TrainingSetup]]:
    """Within the block, every ``TrainingSetup`` made in this thread is added to the list it yields: the trial
    engine reads their skipped steps after each report of a trial that trains in the caller's own loop."""
    outer = getattr(_watch, "setups", None)
    _watch.setups = setups = []
    try:
        yield setups
    finally:
        _watch.setups = outer


class _NonFinite(Exception):
    """Raised inside the closure to stop an update whose loss or gradient is not finite."""


class TrainingSetup:
    """A ``TrainConfig`` applied to a model: its optimizer and scheduler, and the step that uses them.

    Made by ``config.setup(model, steps_per_epoch=len(loader))``, which, in this order, seeds Python's
    ``random``, NumPy and torch with ``config.seed`` (``seed=False`` to skip), initialises the weights with the
    config's initialiser (``init=False``), sets the rate of every ``nn.Dropout`` (``dropout=False``), and
    builds the optimizer and the scheduler. Move the model to its device before.

    Seeding comes before the initialiser, so two setups of one config on identically built models start from
    the same weights. The layers' own default initialisation runs when the model is built, before ``setup``:
    for weights that are the same on every run with the ``default`` initialiser, call
    ``tuner.seed_everything(config.seed)`` before building the model.

    Example:
        >>> setup = config.setup(model, steps_per_epoch=len(loader))
        >>> for epoch in range(config.epochs):
        ...     model.train()
        ...     for x, y in loader:
        ...         loss = setup.step(lambda: loss_fn(model(x), y))
        ...     setup.end_epoch(val_metric)     # needed by `plateau`; harmless for the others
    """

    def __init__(self, config: TrainConfig, model: nn.Module, steps_per_epoch: int | None = None, *,
                 mode: str | None = None, init: bool = True, dropout: bool = True, seed: bool = True) -> None:
        # a TrainConfig, told by what it does (tuner.config imports this module)
        if not (callable(getattr(config, "check", None)) and callable(getattr(config, "to_dict", None))):
            raise ConfigError(f"TrainingSetup(config, model, ...) takes a TrainConfig (tuner.load_config(path) or "
                              f"TrainConfig.from_dict(mapping) makes one); got {type(config).__name__}.")
        for key, flag in (("seed", seed), ("init", init), ("dropout", dropout)):
            if not isinstance(flag, bool):
                hint = (" (it seeds with config.seed: dataclasses.replace(config, seed=N) for another)"
                        if key == "seed" else "")
                raise ConfigError(f"config.setup(..., {key}=...) takes True or False; got {flag!r}{hint}.")
        config.check()
        steps_per_epoch = check_steps_per_epoch(steps_per_epoch, "config.setup(model, steps_per_epoch=...)")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"config.setup(model, ...) takes the model, a torch.nn.Module (not "
                              f"model.parameters()); got {type(model).__name__}.")
        lazy = lazy_parameters(model)
        if lazy:
            raise ConfigError(f"config.setup(model, ...): the {type(model).__name__} has lazy layers whose parameters "
                              f"are not made yet ({', '.join(lazy[:3])}{' ...' if len(lazy) > 3 else ''}): run one "
                              f"forward pass on a batch, model(x), before config.setup, so that they exist to be "
                              f"initialised and trained.")
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"config.setup(model, ...): the {type(model).__name__} has no parameter to train "
                              f"(none, or all with requires_grad=False).")
        if init and model in _SET_UP:
            warnings.warn(f"config.setup() was given this {type(model).__name__} before: it draws its weights again "
                          f"(init) and starts a new optimizer and schedule, so training starts over. Call setup once, "
                          f"before the epoch loop; to go on from the trained weights with a new setup, pass "
                          f"init=False.", RuntimeWarning, stacklevel=3)
        _SET_UP.add(model)
        if seed:
            seed_everything(config.seed)
        if init:
            config.apply_init(model)
            _warn_weights_left(model, config.init.name)
        if dropout:
            applied = config.apply_dropout(model)
            if (config.regularization.dropout or 0) > 0 and not applied:
                warnings.warn(f"The config's dropout rate ({config.regularization.dropout:g}) was not applied: the "
                              f"model has no dropout layer it sets (nn.Dropout, Dropout1d/2d/3d, AlphaDropout, "
                              f"FeatureAlphaDropout; a dropout rate held in a float, as nn.MultiheadAttention's, is "
                              f"its own). Add nn.Dropout where it should act, or tune a space without dropout.",
                              RuntimeWarning, stacklevel=3)
        self.config = config
        self.model = model
        self.steps_per_epoch = steps_per_epoch
        self.optimizer, self.scheduler = config.build(model, steps_per_epoch=steps_per_epoch, mode=mode)
        #: training steps taken (``step`` calls), epochs ended (``end_epoch`` calls), updates skipped
        self.steps = 0
        self.epoch = 0
        self.skipped_steps = 0
        #: the first step's loss, and the sum and count of the finite losses ``step`` returned
        self.initial_loss: float | None = None
        self.loss_sum = 0.0
        self.loss_steps = 0
        self._grads_left: tuple[int, int] | None = None  # the watched gradient as the last step left it
        info = get_optimizer(config.optimizer.name)
        reg = config.regularization
        self._needs_closure = info.needs_closure
        self._has_penalty = reg.l1 > 0 or (not info.supports_weight_decay and reg.weight_decay > 0)
        self._clip = config.grad_clip_norm
        self._params = list(model.parameters())
        self._watched = next((p for p in self._params if p.requires_grad), None)  # see _grad_mark
        self._per_epoch_schedule = config.schedule.interval == "epoch"
        self._step_schedule = steps_schedule_every_batch(config)
        self._epoch_steps = 0
        self._warned: set[str] = set()
        self._train_eval = info.train_eval  # schedule-free: the optimizer's own train/eval modes
        self._optimizer_training = False
        watchers = getattr(_watch, "setups", None)
        if watchers is not None:
            watchers.append(self)

    @property
    def lr(self) -> float:
        """The current learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, loss_fn: Callable[..., torch.Tensor], /, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Trains on one batch and returns its loss (detached; the data loss, without the penalties).

        ``loss_fn(*args, **kwargs)`` returns the batch's loss as a scalar tensor: the forward pass, usually
        ``lambda: loss_fn(model(x), y)``. It is called before ``step`` returns: once, or several times by
        L-BFGS, whose step re-evaluates the loss. (So a lambda may use the loop's ``x`` and ``y``; where a linter
        flags that, as bugbear's B023 does, pass them as arguments: ``setup.step(batch_loss, x, y)``.)
        In order: the gradients are zeroed, the config's penalty (L1, and L2 for optimizers without weight
        decay) is added to the loss, which is back-propagated, the gradients are clipped to ``grad_clip_norm``
        when it is set, the optimizer steps, and a per-batch schedule steps.

        When the loss or the gradient is not finite (NaN or inf), the update is skipped: the weights and the
        optimizer's state are left as they were, a ``RuntimeWarning`` says so the first time, and
        ``skipped_steps`` counts it. The non-finite loss is returned, so that a loop which checks it can stop.
        (L-BFGS evaluates the loss several times in one step; the check is on the first evaluation, so a step
        that goes astray later shows up as a non-finite loss on the next one.)
        """
        if not callable(loss_fn):
            raise TypeError(
                f"setup.step() takes a function that computes the batch loss, not the loss itself: "
                f"setup.step(lambda: loss_fn(model(x), y)). Got a {type(loss_fn).__name__}.")
        if args or kwargs:
            loss_fn = functools.partial(loss_fn, *args, **kwargs)
        if self._grads_changed():  # the caller's own backward() since the last step
            self._warn_once("gradients-there", (
                "setup.step() found gradients already there: it zeroes them and back-propagates the loss its "
                "function returns, so gradients accumulated by your loop (or a backward() of your own) are "
                "dropped. Give step the loss, and for gradient accumulation pass the batch whole: "
                "config.setup trains a batch in one step. (Where another model's loss reached this one, as a "
                "GAN's generator loss reaches its discriminator, dropping them is right.)"), stacklevel=3)
        loss = self._step(loss_fn, check=True)
        self._grads_left = self._grad_mark()
        value = float(loss)  # the finiteness check has waited for the device already
        if math.isfinite(value):  # for tune(): an exploding loss is a diverging trial, as in the built-in trainer
            if self.initial_loss is None:
                self.initial_loss = abs(value) + 1e-8
            self.loss_sum += value
            self.loss_steps += 1
        return loss

    def _step(self, loss_fn: LossFn, check: bool,
              parts: list[tuple[LossFn, float]] | None = None) -> torch.Tensor:
        """``step`` without the argument check; ``check=False`` also skips the finiteness check, which waits
        for the device every batch (the trainer checks the losses in bulk instead). ``parts``: the batch as
        micro-batches (gradient accumulation), each a loss function and its share of the batch; each is
        back-propagated on its own, so only one micro-batch's activations are held at a time, and the
        gradients add up to the whole batch's (the penalties are added once)."""
        optimizer, model, config, params, clip = self.optimizer, self.model, self.config, self._params, self._clip
        has_penalty = self._has_penalty
        first: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            # The full objective (data loss + penalties): L-BFGS's line search must see the function whose
            # gradient it follows. The data loss of the first evaluation is what the step returns.
            optimizer.zero_grad(set_to_none=True)
            if parts is None:
                loss = loss_fn()
                if not isinstance(loss, torch.Tensor):
                    raise TypeError(f"setup.step(loss_fn): loss_fn must return the batch loss as a tensor (keep it "
                                    f"attached to the graph: no .item() or float()); it returned "
                                    f"{type(loss).__name__}.")
                if has_penalty:  # the penalty alone gives the model gradients: the checks below would pass
                    if not loss.requires_grad:
                        raise ConfigError(_DETACHED)
                    if self.steps == 1 and not first:
                        _check_loss_uses(loss, params)
                full = loss + config.penalty(model) if has_penalty else loss
                if not full.requires_grad:
                    raise ConfigError(_DETACHED)
                try:
                    full.backward()
                except RuntimeError as exc:
                    if "second time" not in str(exc):
                        raise
                    raise ConfigError(  # the function's own backward() freed the graph
                        "setup.step(loss_fn): loss_fn called backward() itself; return the loss of the model's "
                        "output instead, setup.step back-propagates it.") from None
            else:
                shares = []
                for part_loss, share in parts:
                    part = part_loss() * share
                    part.backward()  # frees this micro-batch's activations before the next
                    shares.append(part.detach())
                loss = full = torch.stack(shares).sum()
                if has_penalty and self.steps == 1 and not first and not any(p.grad is not None for p in params):
                    raise ConfigError(_NO_GRADIENT)
                if has_penalty:
                    penalty = config.penalty(model)
                    penalty.backward()
                    full = loss + penalty.detach()
            norm = nn.utils.clip_grad_norm_(params, clip) if clip is not None else None
            if not first:
                first.append(loss.detach())
                if self.steps == 1 and not any(p.grad is not None for p in params):
                    raise ConfigError(_NO_GRADIENT)
                if check:
                    _check_finite(full, norm, params)
            return full

        if self._train_eval and not self._in_train_mode():
            self.optimizer.train()
            self._optimizer_training = True
        self.steps += 1
        self._epoch_steps += 1
        try:
            if self._needs_closure:
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
        except _NonFinite:
            self._skip(first[0])
            if self._step_schedule:  # the batch still counts: the schedule stays in step with the epochs
                with warnings.catch_warnings():  # torch's warning about a scheduler step before any update
                    warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
                    self.scheduler.step()
            return first[0]
        if self._step_schedule:
            self.scheduler.step()
        elif self._per_epoch_schedule and self.epoch == 0 and self._epoch_steps > self.steps_per_epoch:
            self._warn_once("plateau-end-epoch", (
                f"{self._epoch_steps} training steps and no setup.end_epoch(metric) yet, but steps_per_epoch is "
                f"{self.steps_per_epoch}: the {self.config.schedule.name!r} schedule lowers the learning rate in "
                f"end_epoch, from the validation metric. Call setup.end_epoch(val_metric) after every epoch."),
                stacklevel=4)
        return first[0]

    def _skip(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self._warn_once("non-finite", f"The loss ({float(loss):.4g}) or its gradient was not finite at step "
                                      f"{self.steps}: the update was skipped and the weights are unchanged. "
                                      f"setup.skipped_steps counts such steps; this warning is shown once. A "
                                      f"lower learning rate, or grad_clip_norm, usually helps.", stacklevel=5)

    def eval(self, batches: Iterable[Any] | None = None) -> None:
        """Call before evaluating the model (and before saving it). Schedule-free optimizers evaluate an
        average of the weights they train and must be switched to it; for every other optimizer this does
        nothing. The next ``step`` switches back.

        ``batches``: for a model with BatchNorm layers under a schedule-free optimizer, training inputs (a
        loader's batches: an input tensor each, or a tuple or list whose first element is the input) through
        which their running statistics are computed again for the averaged weights (those the steps left
        belong to the weights stepped); without them, a warning says so once."""
        if not (self._train_eval and self._in_train_mode()):
            return
        self.optimizer.eval()
        self._optimizer_training = False
        norms = [m for m in self.model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms:
            return
        if batches is None:
            self._warn_once("schedule-free-batchnorm", (
                f"The {self.config.optimizer.name!r} optimizer is schedule-free and the model has BatchNorm layers: "
                f"their running statistics were gathered with the weights it steps, not with the averaged weights "
                f"the model now holds. Pass some training batches, setup.eval(itertools.islice(loader, 50)), to "
                f"compute them again."), stacklevel=3)
            return
        _recompute_norms(self.model, norms, batches)

    def _in_train_mode(self) -> bool:
        """The schedule-free optimizer's own mode: a loop may also switch it with ``optimizer.train()`` and
        ``optimizer.eval()``, as the schedulefree package documents."""
        return bool(self.optimizer.param_groups[0].get("train_mode", self._optimizer_training))

    def end_epoch(self, metric: float | torch.Tensor | None = None) -> None:
        """Ends an epoch. ``metric`` is the epoch's validation metric (maximised, or minimised with
        ``mode="min"``): the ``plateau`` schedule needs it and lowers the learning rate when it stops
        improving; the other schedules step every batch in ``step`` and ignore it. Call it every epoch whatever
        the schedule: it checks that the epoch took ``steps_per_epoch`` steps (a wrong one is said here)."""
        if metric is not None and self._train_eval and self._in_train_mode() and self._epoch_steps:
            # The metric came from the weights being trained, not from their average, which is the model.
            self._warn_once("schedule-free-eval", (
                f"The {self.config.optimizer.name!r} optimizer is schedule-free: the model it trains is the "
                f"average of its weights, and the metric passed to end_epoch was measured on the weights it "
                f"steps. Call setup.eval() before evaluating (and before saving the model); the next "
                f"setup.step switches back."), stacklevel=3)
        if self._per_epoch_schedule:
            if metric is None:
                raise ConfigError(
                    f"The {self.config.schedule.name!r} schedule lowers the learning rate when the validation "
                    f"metric stops improving: pass the metric, setup.end_epoch(metric) (with "
                    f"config.setup(..., mode='min') when lower is better).")
            try:
                if isinstance(metric, (str, bytes)):
                    raise TypeError
                value = float(metric)
            except (TypeError, ValueError, RuntimeError):  # a tensor of several values, text, a list
                raise ConfigError(f"setup.end_epoch(metric): metric must be one number, the epoch's validation "
                                  f"metric (got {type(metric).__name__}"
                                  f"{f' of shape {tuple(metric.shape)}' if hasattr(metric, 'shape') else ''})."
                                  ) from None
            self.scheduler.step(value)
        self.check_epoch_steps(self.epoch, self._epoch_steps, stacklevel=4)
        self.epoch += 1
        self._epoch_steps = 0

    def check_epoch_steps(self, epoch: int, steps: int, stacklevel: int = 3) -> None:
        """Warns (once) where an epoch took another number of training steps than ``steps_per_epoch`` and the
        schedule steps every batch: it then does not follow the epochs (``end_epoch`` checks each epoch; a
        ``tune`` trial's ``ctx.report`` checks too, for a loop that never calls ``end_epoch``)."""
        if self._step_schedule and steps != self.steps_per_epoch:
            self._warn_once("steps-per-epoch", (
                f"Epoch {epoch + 1} had {steps} training steps, but steps_per_epoch is "
                f"{self.steps_per_epoch}: the {self.config.schedule.name!r} schedule is planned over "
                f"epochs x steps_per_epoch = {self.config.epochs * self.steps_per_epoch} steps, so it does not "
                f"follow the epochs. Pass steps_per_epoch=len(loader), the number of setup.step() calls in an "
                f"epoch."), stacklevel=stacklevel)

    def _grad_mark(self) -> tuple[int, int] | None:
        """Which gradient tensor the watched parameter holds, and its version (bumped by an in-place
        accumulation). One parameter stands for all: a backward() of the loop's own reaches every one it trains,
        and reading one keeps the check off the cost of a step."""
        grad = self._watched.grad if self._watched is not None else None
        return None if grad is None else (id(grad), grad._version)

    def _grads_changed(self) -> bool:
        """Whether gradients were computed since the last step (or before the first): a loop accumulating
        them, or calling backward() itself, whose gradients step would drop. Gradients cleared in between
        (``zero_grad()``, to None or to zeros) lose nothing."""
        mark = self._grad_mark()
        return mark is not None and mark != self._grads_left and bool(self._watched.grad.any())

    def _warn_once(self, key: str, message: str, stacklevel: int) -> None:
        # stacklevel counts from here to the caller of the public method: the user's line
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)

    def __repr__(self) -> str:
        return (f"TrainingSetup({self.config.summary()}, steps_per_epoch={self.steps_per_epoch}, "
                f"epoch={self.epoch}, steps={self.steps}, lr={self.lr:.3g})")


def _recompute_norms(model: nn.Module, norms: list[nn.Module], batches: Iterable[Any]) -> None:
    """The BatchNorm layers' running statistics computed afresh (a cumulative average) over ``batches``, run
    through the model in training mode without gradients; the model's mode and the layers' momenta restored."""
    was_training, momenta = model.training, [m.momentum for m in norms]
    kept = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    device = next((p.device for p in model.parameters()), None)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    seen = 0
    try:
        model.train()
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device) if device is not None else x)
                seen += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if not seen:
        for m, state in zip(norms, kept, strict=True):
            m.load_state_dict(state)
        raise ConfigError("setup.eval(batches): the batches were empty; give some training batches (an "
                          "exhausted iterator gives none).")


def _check_finite(full: torch.Tensor, norm: torch.Tensor | None, params: list[nn.Parameter]) -> None:
    """Raises ``_NonFinite`` unless the loss and the gradients' total norm are finite (one device sync)."""
    if norm is None:
        norm = _total_norm([p.grad for p in params if p.grad is not None], full.device)
    if not bool(torch.isfinite(full.detach() + norm.to(full.device))):
        raise _NonFinite


def _total_norm(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not grads:
        return torch.zeros((), device=device)
    if hasattr(nn.utils, "get_total_norm"):  # torch >= 2.6
        return nn.utils.get_total_norm(grads)
    norms = [torch.linalg.vector_norm(g).to(device) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms))
