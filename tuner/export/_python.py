"""``python_snippet``: a ``TrainConfig`` as standalone Python that rebuilds it with plain PyTorch.

The generated file imports only ``math``, ``random`` and ``torch``. It reproduces what ``TrainConfig`` does
exactly: the same initialisation calls in the same order (so the same random weights for the same seed), the
same parameter groups and optimizer arguments, the schedule's factor function written out with its constants
substituted (so the same learning rate at every step), the same penalty terms, and ``setup(model,
steps_per_epoch)``, the training step of ``config.setup`` (penalties, gradient clipping, L-BFGS's closure, the
schedule stepped at its interval).

This module only assembles: what is written for a schedule, an initialiser or an optimizer comes from its
registry entry (``ScheduleInfo.python_source``, ``InitInfo.python_source``, ``OptimizerInfo.python_source``).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from torch import nn

from tuner._source import INDENT, WIDTH, literal, qualified
from tuner.config import TrainConfig
from tuner.init import _init_layers, get_init
from tuner.optim import get_optimizer, get_schedule
from tuner.regularization import _DROPOUT

__all__ = ["python_snippet"]


# -- text ----------------------------------------------------------------------------------------------
def _pretty(value: Any, level: int = 0, used: int = 0, force: bool = False) -> str:
    """Like ``literal``, but a dict or list too long for the rest of its line gets one item per line.

    ``level``: the nesting depth (four spaces each); ``used``: the characters already on the line.
    """
    inline = literal(value)
    if not isinstance(value, (dict, list)) or not value or (not force and used + len(inline) <= WIDTH):
        return inline
    pad = INDENT * (level + 1)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            start = f"{pad}{literal(key)}: "
            items.append(f"{start}{_pretty(item, level + 1, len(start) + 1)},")
        open_, close = "{", "}"
    else:
        items = [f"{pad}{_pretty(item, level + 1, len(pad) + 1)}," for item in value]
        open_, close = "[", "]"
    return open_ + "\n" + "\n".join(items) + "\n" + INDENT * level + close


def _indent(lines: list[str] | tuple[str, ...], levels: int = 1) -> list[str]:
    return [INDENT * levels + line if line else "" for line in lines]


def _docstring(indent: str, *paragraphs: str) -> list[str]:
    """A docstring of ``paragraphs``, each wrapped to fit in the width, the first one opening it."""
    lines: list[str] = []
    for i, text in enumerate(paragraphs):
        lines += [""] * (i > 0) + textwrap.wrap(('"""' if i == 0 else "") + text, WIDTH - len(indent))
    if len(lines) == 1 and len(lines[0]) + 3 <= WIDTH - len(indent):
        return [f'{indent}{lines[0]}"""']
    return [f"{indent}{line}" if line else "" for line in lines] + [f'{indent}"""']


def _comment(indent: str, text: str) -> list[str]:
    """``text`` as ``# ...`` lines that fit in the width."""
    return [f"{indent}# {line}" for line in textwrap.wrap(text, WIDTH - len(indent) - 2)]


def _class_tuple(target: str, classes: tuple[type, ...]) -> list[str]:
    """``target = (nn.A, nn.B)``, packed onto continuation lines when it is too long for one."""
    names = [qualified(c, nn, "nn") for c in classes]
    line = f"{target} = ({', '.join(names)})"
    if len(line) <= WIDTH:
        return [line]
    lines, current = [f"{target} = ("], INDENT
    for name in names:
        if len(current) + len(name) + 2 > WIDTH and current.strip():
            lines.append(current.rstrip())
            current = INDENT
        current += f"{name}, "
    return [*lines, current.rstrip(), ")"]


def _clean_title(title: str) -> str:
    text = " ".join(str(title).split())
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _interval(config: TrainConfig) -> str:
    """When the scheduler steps: ``batch``, ``epoch`` or ``plateau`` (per epoch, on the metric)."""
    return get_schedule(config.schedule.name).python_source(config.schedule.params).interval


# -- header --------------------------------------------------------------------------------------------
def _header(config: TrainConfig, title: str) -> list[str]:
    from tuner._version import __version__

    heading = "Recommended optimizer settings from a tuner study"
    if title.strip():
        heading += f": {_clean_title(title)}"
    interval = _interval(config)
    mode = f', mode="{config.plateau_mode}"' if interval == "plateau" else ""
    end_epoch = {
        "batch": "        training.end_epoch(val_metric)           # the schedule stepped every batch: nothing to do",
        "epoch": "        training.end_epoch(val_metric)           # the learning rate changes once per epoch",
        "plateau": "        training.end_epoch(val_metric)           # the schedule lowers the lr on this metric",
    }[interval]
    done = ["zeroes the gradients", "adds penalty(model) to the loss", "backpropagates"]
    if config.grad_clip_norm is not None:
        done.append("clips the gradient norm to GRAD_CLIP_NORM")
    if get_optimizer(config.optimizer.name).needs_closure:
        done.append("steps the optimizer with a closure, which L-BFGS calls several times")
    else:
        done.append("steps the optimizer")
    if interval == "batch":
        done.append("steps the schedule")
    info = get_optimizer(config.optimizer.name)
    needs = (f"needs PyTorch and the {info.package!r} package (pip install {info.package})" if info.package
             else "needs only PyTorch")
    return [
        f'"""{heading}.',
        "",
        f"    {config.summary()}",
        "",
        *textwrap.wrap(f"Written by tuner {__version__}; {needs}. The settings, as code for your own training "
                       f"script:", WIDTH),
        "",
        "    model = MyModel()",
        f"    training = setup(model, steps_per_epoch=len(train_loader){mode})  # batches of BATCH_SIZE",
        "    for epoch in range(EPOCHS):",
        "        for x, y in train_loader:",
        "            loss = training.step(lambda: loss_fn(model(x), y))",
        *(["        training.eval(itertools.islice(train_loader, 50))  # schedule-free: the averaged weights",
           "        # (the batches: for a model with BatchNorm, its statistics computed again through them)"]
          if info.train_eval else []),
        end_epoch,
        "",
        *textwrap.wrap("setup seeds the random generators with SEED, initialises the weights, sets the dropout "
                       "rate and builds the optimizer and the scheduler. training.step(loss_fn) trains on one "
                       f"batch: it {', '.join(done[:-1])} and {done[-1]}.", WIDTH),
        "",
        "train(model, x_train, y_train) below is this loop, complete and ready to run, and",
        "`python <this file>` trains a tiny demo model on random data to show that everything works.",
        '"""',
    ]


# -- initialisation and dropout ------------------------------------------------------------------------
def _init_source(config: TrainConfig) -> list[str]:
    info = get_init(config.init.name)
    draw = info.python_source(config.init.params)
    if draw is None:
        return [
            "def apply_init(model):",
            '    """Keeps PyTorch\'s own initialisation, which the study found best: nothing to do."""',
        ]
    return [
        "# The layers whose weights are initialised; other layers (norms) keep their unit scale and zero shift.",
        *_class_tuple("INIT_LAYERS", _init_layers()),
        "",
        "",
        "@torch.no_grad()",
        "def apply_init(model):",
        f'    """Initialises the model in place: {info.name}, {info.description}.',
        "",
        "    Every weight (dimension >= 2) of the INIT_LAYERS is drawn anew and their biases are set to zero (an",
        "    embedding's padding row too); frozen parameters (requires_grad=False) are left as they are.",
        '    """',
        "    for module in model.modules():",
        "        if isinstance(module, INIT_LAYERS):",
        "            for name, param in module.named_parameters(recurse=False):",
        "                if not param.requires_grad:",
        "                    continue",
        "                if param.ndim >= 2:",
        f"                    {draw}",
        '                elif name.startswith("bias"):',
        "                    param.zero_()",
        "            embedding = isinstance(module, nn.Embedding) and module.weight.requires_grad",
        "            if embedding and module.padding_idx is not None:",
        "                module.weight[module.padding_idx].zero_()  # the padding row stays zero, as in nn.Embedding",
    ]


def _dropout_source(config: TrainConfig) -> list[str]:
    rate = config.regularization.dropout
    if rate is None:
        return [
            "def apply_dropout(model):",
            '    """The study kept the model\'s own dropout rates: nothing to do."""',
        ]
    return [
        *_class_tuple("DROPOUT_LAYERS", _DROPOUT),
        "",
        "",
        "def apply_dropout(model):",
        f'    """Sets the rate of every dropout layer of the model to {literal(rate)}."""',
        "    for module in model.modules():",
        "        if isinstance(module, DROPOUT_LAYERS):",
        f"            module.p = {literal(rate)}",
    ]


# -- build: the optimizer and the schedule -------------------------------------------------------------
def _optimizer_source(config: TrainConfig) -> list[str]:
    info = get_optimizer(config.optimizer.name)
    weight_decay = config.regularization.weight_decay
    lines = _comment("", f"The optimizer: {info.name}, {info.description}.")
    if not info.supports_weight_decay and weight_decay:
        lines.append("# It takes no weight_decay: the L2 term is added to the loss by penalty(model) instead.")
    params = {"lr": config.optimizer.lr, **config.optimizer.params}
    return lines + info.python_source(params, weight_decay if info.supports_weight_decay else 0.0)


def _schedule_source(config: TrainConfig) -> list[str]:
    info = get_schedule(config.schedule.name)
    written = info.python_source(config.schedule.params)
    lines = _comment("", f"The learning-rate schedule: {info.name}, {info.description}.")
    lines += _comment("", {
        "batch": "TrainingSetup.step steps it after every batch: scheduler.step().",
        "epoch": "TrainingSetup.end_epoch steps it once per epoch: scheduler.step().",
        "plateau": "TrainingSetup.end_epoch steps it once per epoch with the validation metric: "
                   "scheduler.step(metric).",
    }[written.interval])
    if written.scheduler:
        return [*lines, *written.setup, *written.scheduler]
    many = "batches" if written.interval == "batch" else "epochs"
    holds = re.search(r"\bstep\b", "\n".join(written.factor)) is not None
    text = "\n".join(written.setup + written.factor)
    holds_at = "total_steps" if written.interval == "batch" else "EPOCHS"
    uses_total = (holds and holds_at == "total_steps") or "total_steps" in text
    lines.append(f"# lr_factor(step) multiplies the base lr after `step` {many}.")
    if uses_total or "steps_per_epoch" in text:
        lines.append("steps_per_epoch = max(1, steps_per_epoch)")
    if uses_total:
        lines.append("total_steps = max(1, EPOCHS * steps_per_epoch)  # the length of training, in batches")
    lines += [*written.setup, "", "def lr_factor(step):"]
    if holds:
        lines.append(f"    step = min(step, {holds_at} - 1)  # past the end of training: the lr of its last "
                     f"{'batch' if holds_at == 'total_steps' else 'epoch'}")
    return [*lines, *_indent(written.factor), "", "scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)"]


def _build_source(config: TrainConfig) -> list[str]:
    plateau = _interval(config) == "plateau"
    mode = ('mode: "max" when the validation metric is maximised (accuracy), "min" for a loss.' if plateau
            else "mode is not used by this schedule, which does not watch a metric.")
    return [
        f'def build(model, steps_per_epoch, mode="{config.plateau_mode}"):',
        *_docstring(INDENT, "Returns (optimizer, scheduler) for `model`; setup(model, steps_per_epoch) calls it.",
                    "steps_per_epoch: the number of batches in an epoch (len(train_loader)); the schedule spans "
                    f"EPOCHS epochs of that many batches. {mode}"),
        *_indent(_optimizer_source(config)),
        "",
        *_indent(_schedule_source(config)),
        "    return optimizer, scheduler",
    ]


# -- penalty -------------------------------------------------------------------------------------------
def _penalty_source(config: TrainConfig) -> list[str]:
    info = get_optimizer(config.optimizer.name)
    l1 = config.regularization.l1
    l2 = 0.0 if info.supports_weight_decay else config.regularization.weight_decay
    if l1 == 0.0 and l2 == 0.0:
        return [
            "def penalty(model):",
            '    """No penalty terms in these settings (weight decay, if any, is done by the optimizer)."""',
            "    return 0.0",
        ]
    terms, lines, doc = [], [], []
    if l1 > 0.0:
        lines.append(f"    l1 = {literal(l1)} * sum(p.abs().sum() for p in weights)")
        terms.append("l1")
        doc.append(f"    L1: {literal(l1)} * sum(|w|) over the weights (not biases or norm-layer scales).")
    if l2 > 0.0:
        lines.append(f"    l2 = 0.5 * {literal(l2)} * sum(p.pow(2).sum() for p in weights)")
        terms.append("l2")
        doc.append(f"    L2: 0.5 * {literal(l2)} * sum(w^2) over the weights: the weight decay, as a loss term")
        doc.append(f"    because {info.name} takes no weight_decay.")
    return [
        "def penalty(model):",
        '    """The loss terms the optimizer does not apply itself: TrainingSetup.step adds them to the loss.',
        "",
        *doc,
        '    """',
        "    weights = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]",
        *lines,
        f"    return {' + '.join(terms)}",
    ]


# -- setup: the training step ----------------------------------------------------------------------------
def _setup_source(config: TrainConfig) -> list[str]:
    interval = _interval(config)
    clip = [
        "if GRAD_CLIP_NORM is not None:  # clip the gradient norm before the update",
        "    torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP_NORM)",
    ]
    if get_optimizer(config.optimizer.name).needs_closure:
        why = "as L-BFGS evaluates it several times a step"
        update = [
            "losses = []",
            "",
            "def closure():  # the full objective: L-BFGS's line search must see what it minimises",
            "    self.optimizer.zero_grad()",
            "    loss = loss_fn()",
            "    full = loss + penalty(self.model)  # the data loss plus the penalty terms",
            "    full.backward()",
            *_indent(clip),
            "    losses.append(loss.detach())",
            "    return full",
            "",
            "self.optimizer.step(closure)",
        ]
        loss = "losses[0]"
    else:
        why = "called once the gradients are zeroed"
        update = [
            "self.optimizer.zero_grad()",
            "loss = loss_fn()",
            "(loss + penalty(self.model)).backward()  # the data loss plus the penalty terms",
            *clip,
            "self.optimizer.step()",
        ]
        loss = "loss.detach()"
    train_eval = get_optimizer(config.optimizer.name).train_eval
    if train_eval:
        update.insert(0, "self.optimizer.train()  # schedule-free: steps move the training weights")
    if interval == "batch":
        update.append("self.scheduler.step()  # the learning rate changes after every batch")
        end_doc = ("Ends an epoch. The schedule changes the learning rate after every batch, in step: nothing "
                   "to do here, and metric is not used.")
        end = []
    elif interval == "epoch":
        end_doc = "Ends an epoch: the learning rate changes once per epoch. metric is not used."
        end = ["self.scheduler.step()"]
    else:
        end_doc = ("Ends an epoch: metric is the epoch's validation metric (maximised, or minimised with "
                   'setup(..., mode="min")); the schedule lowers the learning rate when it stops improving.')
        end = [
            "if metric is None:",
            '    raise ValueError("end_epoch(metric): the plateau schedule needs the validation metric")',
            "self.scheduler.step(float(metric))",
        ]
    return [
        "def seed_everything(seed):",
        '    """Seeds Python\'s random module, NumPy\'s (when it is installed) and PyTorch\'s generators."""',
        "    random.seed(seed)",
        "    try:",
        "        import numpy",
        "    except ImportError:",
        "        pass",
        "    else:",
        "        numpy.random.seed(seed % 2**32)",
        "    torch.manual_seed(seed)",
        "",
        "",
        "class TrainingSetup:",
        '    """These settings applied to a model, as setup(model, steps_per_epoch) returns them.',
        "",
        "    step(loss_fn) trains on one batch and end_epoch(metric) ends an epoch; optimizer and scheduler are",
        "    the torch objects (for their state_dict in a checkpoint, say).",
        '    """',
        "",
        "    def __init__(self, model, optimizer, scheduler):",
        "        self.model = model",
        "        self.optimizer = optimizer",
        "        self.scheduler = scheduler",
        "",
        "    def step(self, loss_fn):",
        *_docstring(INDENT * 2, "Trains on one batch and returns its loss (detached; the data loss, without the "
                    "penalties).",
                    "loss_fn() computes the batch's loss with the model, lambda: loss_fn(model(x), y): a "
                    f"function, {why}. The gradients are zeroed, penalty(model) is added to the loss, which is "
                    "backpropagated, the gradient norm is clipped to GRAD_CLIP_NORM when it is set, and the "
                    "optimizer steps" + (", then the schedule." if interval == "batch" else ".")),
        *_indent(update, 2),
        f"        return {loss}",
        "",
        *([
            "    def eval(self, batches=None):",
            '        """Call before evaluating or saving the model: the schedule-free optimizer switches the weights',
            "        to their average (the next step switches back). batches: for a model with BatchNorm layers, some",
            "        training inputs (tensors, or (x, y) pairs) through which their running statistics are computed",
            '        again for the averaged weights, e.g. itertools.islice(train_loader, 50)."""',
            "        self.optimizer.eval()",
            "        norms = [m for m in self.model.modules()",
            "                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]",
            "        if batches is None or not norms:",
            "            return",
            "        was_training, momenta = self.model.training, [m.momentum for m in norms]",
            "        for m in norms:",
            "            m.reset_running_stats()",
            "            m.momentum = None  # a cumulative average over the batches",
            "        self.model.train()",
            "        with torch.no_grad():",
            "            for batch in batches:",
            "                self.model(batch[0] if isinstance(batch, (tuple, list)) else batch)",
            "        for m, momentum in zip(norms, momenta):",
            "            m.momentum = momentum",
            "        self.model.train(was_training)",
            "",
        ] if train_eval else []),
        "    def end_epoch(self, metric=None):",
        *_docstring(INDENT * 2, end_doc),
        *_indent(end, 2),
        "",
        "",
        f'def setup(model, steps_per_epoch, mode="{config.plateau_mode}"):',
        '    """Applies these settings to `model` and returns the TrainingSetup that trains it.',
        "",
        "    In this order: seeds the random generators with SEED, initialises the weights (apply_init), sets the",
        "    dropout rate (apply_dropout) and builds the optimizer and the scheduler (build). Move the model to",
        "    its device first. steps_per_epoch: the number of batches in an epoch, len(train_loader).",
        '    """',
        "    seed_everything(SEED)",
        "    apply_init(model)",
        "    apply_dropout(model)",
        "    optimizer, scheduler = build(model, steps_per_epoch, mode)",
        "    return TrainingSetup(model, optimizer, scheduler)",
    ]


# -- training loop -------------------------------------------------------------------------------------
def _train_source(config: TrainConfig) -> list[str]:
    interval = _interval(config)
    train_eval = get_optimizer(config.optimizer.name).train_eval
    return [
        "def train(model, x_train, y_train, loss_fn=torch.nn.functional.cross_entropy, x_val=None, y_val=None):",
        '    """Trains `model` in place with these settings on the tensors x_train, y_train and returns it.',
        "",
        "    A minimal loop around setup. The model and the tensors must be on the same device. With x_val, y_val",
        "    the validation loss is printed after every epoch"
        + (" and drives the scheduler." if interval == "plateau" else "."),
        '    """',
        "    n = len(x_train)",
        "    steps_per_epoch = math.ceil(n / BATCH_SIZE)",
        '    training = setup(model, steps_per_epoch, mode="min")  # the metric below is a loss',
        "    generator = torch.Generator(device=x_train.device).manual_seed(SEED)  # for the shuffling",
        "    for epoch in range(EPOCHS):",
        "        model.train()",
        "        perm = torch.randperm(n, generator=generator, device=x_train.device)  # a new shuffle every epoch",
        "        total = 0.0",
        "        for i in range(0, n, BATCH_SIZE):",
        "            idx = perm[i:i + BATCH_SIZE]",
        "            xb, yb = x_train[idx], y_train[idx]",
        "            total += training.step(lambda: loss_fn(model(xb), yb)).item()",
        "        metric = total / steps_per_epoch",
        '        message = f"epoch {epoch + 1}/{EPOCHS}: train loss {metric:.4f}"',
        # The averaged weights are the ones to evaluate; a BatchNorm's statistics are computed again through
        # them on up to 50 training batches, as tuner's trainer does.
        *(["        training.eval(x_train[i:i + BATCH_SIZE] for i in range(0, min(n, 50 * BATCH_SIZE), BATCH_SIZE))"]
          if train_eval else []),
        "        if x_val is not None:",
        "            model.eval()",
        "            with torch.no_grad():",
        "                metric = loss_fn(model(x_val), y_val).item()",
        '            message += f", validation loss {metric:.4f}"',
        "        print(message)",
        "        training.end_epoch(metric)  # the validation loss, else the training loss",
        "    return model",
    ]


def _main_source() -> list[str]:
    return [
        'if __name__ == "__main__":',
        "    # A quick check that everything runs: a tiny model on random data, for one epoch.",
        "    EPOCHS = 1",
        "    torch.manual_seed(0)",
        "    x = torch.randn(512, 20)",
        "    y = (x[:, 0] + x[:, 1] > 0).long()",
        "    demo = nn.Sequential(nn.Linear(20, 32), nn.LayerNorm(32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))",
        "    train(demo, x[:384], y[:384], x_val=x[384:], y_val=y[384:])",
    ]


# -- public --------------------------------------------------------------------------------------------
def python_snippet(config: TrainConfig, *, title: str = "") -> str:
    """Standalone Python source (imports only math, random and torch) that rebuilds ``config`` with plain PyTorch.

    The source defines ``CONFIG`` (the settings as a dict), ``BATCH_SIZE``, ``EPOCHS``, ``SEED``,
    ``GRAD_CLIP_NORM``, and ``apply_init(model)``, ``apply_dropout(model)``,
    ``build(model, steps_per_epoch, mode) -> (optimizer, scheduler)`` and ``penalty(model)``, which do exactly
    what the ``TrainConfig`` methods of the same names do; ``setup(model, steps_per_epoch, mode)``, which seeds
    with ``seed_everything(SEED)``, applies all of them and returns a ``TrainingSetup`` whose ``step(loss_fn)``
    and ``end_epoch(metric)`` do what those of ``config.setup`` do; ``train(model, x_train, y_train, ...)``, a
    complete training loop, and a ``__main__`` demo. ``title`` (the study's name, say) goes in the header.

    Example:
        >>> Path("best_settings.py").write_text(python_snippet(config, title="digits-mlp"))
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"python_snippet expects a TrainConfig. Got {type(config).__name__} instead.")
    blank2 = ["", ""]
    clip = config.grad_clip_norm
    sections = [
        _header(config, title),
        [""],
        ["import math", "import random", "", "import torch", "from torch import nn"],
        [""],
        ["# The settings as tuner stores them, for reference; the code below does not read this dict.",
         f"CONFIG = {_pretty(config.to_dict(), force=True)}"],
        [""],
        [
            f"BATCH_SIZE = {literal(config.batch_size)}",
            f"EPOCHS = {literal(config.epochs)}",
            f"SEED = {literal(config.seed)}",
            f"GRAD_CLIP_NORM = {literal(None if clip is None else float(clip))}"
            + ("  # clip the gradient norm to this before every optimizer step" if clip is not None else
               "  # no gradient clipping"),
        ],
        blank2,
        _init_source(config),
        blank2,
        _dropout_source(config),
        blank2,
        _build_source(config),
        blank2,
        _penalty_source(config),
        blank2,
        _setup_source(config),
        blank2,
        _train_source(config),
        blank2,
        _main_source(),
    ]
    return "\n".join(line for section in sections for line in section) + "\n"
