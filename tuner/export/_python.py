"""``python_snippet``: a ``TrainConfig`` as standalone Python that rebuilds it with plain PyTorch.

The generated file imports only ``torch`` and ``math``. It reproduces what ``TrainConfig`` does exactly:
the same initialisation calls in the same order (so the same random weights for the same seed), the same
parameter groups and optimizer arguments, the schedule's factor function written out with its constants
substituted (so the same learning rate at every step), and the same penalty terms.
"""

from __future__ import annotations

import json
import math
import textwrap
from typing import Any

import torch
from torch import nn

from tuner.config import TrainConfig
from tuner.init import _INIT_LAYERS, get_init
from tuner.optim import get_optimizer, get_schedule
from tuner.regularization import _DROPOUT

__all__ = ["python_snippet"]

_WIDTH = 100  # lines longer than this are broken up
_INDENT = "    "


# -- literals ------------------------------------------------------------------------------------------
def _literal(value: Any) -> str:
    """A Python expression for ``value``; floats round-trip exactly (``repr``), infinities use ``math.inf``."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return "math.inf" if value > 0 else "-math.inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted literal that Python reads back unchanged
    if isinstance(value, tuple):
        items = [_literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"Cannot write {type(value).__name__} value {value!r} as a Python literal.")


def _pretty(value: Any, level: int = 0, used: int = 0, force: bool = False) -> str:
    """Like ``_literal``, but a dict or list too long for the rest of its line gets one item per line.

    ``level``: the nesting depth (four spaces each); ``used``: the characters already on the line.
    """
    inline = _literal(value)
    if not isinstance(value, (dict, list)) or not value or (not force and used + len(inline) <= _WIDTH):
        return inline
    pad = _INDENT * (level + 1)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            start = f"{pad}{_literal(key)}: "
            items.append(f"{start}{_pretty(item, level + 1, len(start) + 1)},")
        open_, close = "{", "}"
    else:
        items = [f"{pad}{_pretty(item, level + 1, len(pad) + 1)}," for item in value]
        open_, close = "[", "]"
    return open_ + "\n" + "\n".join(items) + "\n" + _INDENT * level + close


def _call(indent: str, prefix: str, args: list[str]) -> list[str]:
    """``prefix(arg, ...)`` on one line, or one argument per line when that is too long."""
    line = f"{indent}{prefix}({', '.join(args)})"
    if len(line) <= _WIDTH:
        return [line]
    return [f"{indent}{prefix}("] + [f"{indent}{_INDENT}{arg}," for arg in args] + [f"{indent})"]


def _comment(indent: str, text: str) -> list[str]:
    """``text`` as ``# ...`` lines that fit in the width."""
    return [f"{indent}# {line}" for line in textwrap.wrap(text, _WIDTH - len(indent) - 2)]


def _qualified(cls: type, module: Any, module_name: str) -> str:
    """``nn.Linear`` / ``torch.optim.AdamW`` for classes the module exports, else the full dotted name."""
    if getattr(module, cls.__name__, None) is cls:
        return f"{module_name}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_tuple(target: str, classes: tuple[type, ...]) -> list[str]:
    """``target = (nn.A, nn.B)``, packed onto continuation lines when it is too long for one."""
    names = [_qualified(c, nn, "nn") for c in classes]
    line = f"{target} = ({', '.join(names)})"
    if len(line) <= _WIDTH:
        return [line]
    lines, current = [f"{target} = ("], _INDENT
    for name in names:
        if len(current) + len(name) + 2 > _WIDTH and current.strip():
            lines.append(current.rstrip())
            current = _INDENT
        current += f"{name}, "
    return [*lines, current.rstrip(), ")"]


def _clean_title(title: str) -> str:
    text = " ".join(str(title).split())
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


# -- header --------------------------------------------------------------------------------------------
def _header(config: TrainConfig, title: str) -> list[str]:
    from tuner import __version__

    heading = "Recommended optimizer settings from a tuner study"
    if title.strip():
        heading += f": {_clean_title(title)}"
    info = get_optimizer(config.optimizer.name)
    per_epoch = config.schedule.interval == "epoch"
    loop = [
        "    torch.manual_seed(SEED)",
        "    model = MyModel()",
        "    apply_init(model)                      # the tuned weight initialisation",
        "    apply_dropout(model)                   # the tuned dropout rate",
        "    optimizer, scheduler = build(model, steps_per_epoch=len(train_loader))  # batches of BATCH_SIZE",
        "    for epoch in range(EPOCHS):",
        "        for x, y in train_loader:",
    ]
    step = [
        "optimizer.zero_grad()",
        "loss = loss_fn(model(x), y) + penalty(model)",
        "loss.backward()",
    ]
    if config.grad_clip_norm is not None:
        step.append("torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)")
    if info.needs_closure:
        loop.append("            def closure():")
        loop += [f"                {line}" for line in step + ["return loss"]]
        loop.append("            optimizer.step(closure)        # L-BFGS re-evaluates the loss")
    else:
        loop += [f"            {line}" for line in step]
        loop.append("            optimizer.step()")
    if per_epoch:
        loop.append("        scheduler.step(val_metric)         # once per epoch, with the validation metric")
    else:
        loop.append("            scheduler.step()               # after every batch")
    return [
        f'"""{heading}.',
        "",
        f"    {config.summary()}",
        "",
        f"Written by tuner {__version__}; needs only PyTorch. The settings, as code for your own training script:",
        "",
        *loop,
        "",
        "train(model, x_train, y_train) below is this loop, complete and ready to run, and",
        "`python <this file>` trains a tiny demo model on random data to show that everything works.",
        '"""',
    ]


# -- initialisation ------------------------------------------------------------------------------------
def _init_call(name: str, kw: dict[str, Any]) -> str:
    lit = {k: _literal(v) for k, v in kw.items()}
    if name == "uniform":
        return f"nn.init.uniform_(param, -{lit['scale']}, {lit['scale']})"
    if name == "normal":
        return f"nn.init.normal_(param, 0.0, {lit['std']})"
    if name in ("xavier_uniform", "xavier_normal"):
        return f"nn.init.{name}_(param, gain=nn.init.calculate_gain({lit['nonlinearity']}))"
    if name in ("kaiming_uniform", "kaiming_normal"):
        return f"nn.init.{name}_(param, mode={lit['mode']}, nonlinearity={lit['nonlinearity']})"
    if name == "orthogonal":
        return f"nn.init.orthogonal_(param, gain={lit['gain']})"
    if name == "trunc_normal":
        return f"nn.init.trunc_normal_(param, std={lit['std']}, a=-2 * {lit['std']}, b=2 * {lit['std']})"
    raise NotImplementedError(f"python_snippet does not know how to write the {name!r} initialiser.")


def _init_source(config: TrainConfig) -> list[str]:
    info = get_init(config.init.name)
    if info.fn is None:
        return [
            "def apply_init(model):",
            '    """Keeps PyTorch\'s own initialisation, which the study found best: nothing to do."""',
        ]
    kwargs = {**info.defaults, **config.init.params}
    return [
        "# The layers whose weights are initialised; other layers (norms) keep their unit scale and zero shift.",
        *_class_tuple("INIT_LAYERS", _INIT_LAYERS),
        "",
        "",
        "@torch.no_grad()",
        "def apply_init(model):",
        f'    """Initialises the model in place: {info.name}, {info.description}.',
        "",
        "    Every weight (dimension >= 2) of the INIT_LAYERS is drawn anew and their biases are set to zero.",
        '    """',
        "    for module in model.modules():",
        "        if isinstance(module, INIT_LAYERS):",
        "            for name, param in module.named_parameters(recurse=False):",
        "                if param.ndim >= 2:",
        f"                    {_init_call(info.name, kwargs)}",
        '                elif name.startswith("bias"):',
        "                    param.zero_()",
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
        f'    """Sets the rate of every dropout layer of the model to {_literal(rate)}."""',
        "    for module in model.modules():",
        "        if isinstance(module, DROPOUT_LAYERS):",
        f"            module.p = {_literal(rate)}",
    ]


# -- optimizer -----------------------------------------------------------------------------------------
def _optimizer_source(config: TrainConfig) -> list[str]:
    info = get_optimizer(config.optimizer.name)
    kwargs = {**info.defaults, **{"lr": config.optimizer.lr, **config.optimizer.params}, **info.fixed}
    args = [f"{key}={_literal(value)}" for key, value in kwargs.items()]
    cls = _qualified(info.cls, torch.optim, "torch.optim")
    weight_decay = config.regularization.weight_decay
    lines = _comment("    ", f"The optimizer: {info.name}, {info.description}.")
    if not info.supports_weight_decay:
        if weight_decay:
            lines.append("    # It takes no weight_decay: the L2 term is added to the loss by penalty(model) instead.")
        lines.append("    params = [p for p in model.parameters() if p.requires_grad]")
        return lines + _call("    ", f"optimizer = {cls}", ["params", *args])
    lines += [
        "    # Weights (dimension >= 2) in one list; biases and norm-layer scales (1-d) in the other.",
        "    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]",
        "    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]",
    ]
    if weight_decay == 0.0:
        lines += [
            "    # No weight decay: a single group, weights first.",
            '    groups = [{"params": decay + no_decay, "weight_decay": 0.0}]',
        ]
    else:
        how = ("decoupled: it shrinks the weights directly" if info.decoupled_weight_decay
               else "coupled: weight_decay * w is added to the gradient (L2)")
        lines += [
            f"    # Weight decay ({how}) on the weights only.",
            f'    groups = [{{"params": decay, "weight_decay": {_literal(weight_decay)}}},',
            '              {"params": no_decay, "weight_decay": 0.0}]',
            '    groups = [group for group in groups if group["params"]]',
        ]
    return lines + _call("    ", f"optimizer = {cls}", ["groups", *args])


# -- schedule ------------------------------------------------------------------------------------------
def _cosine_expr(min_lr_ratio: float, angle: str) -> str:
    """``min + (1 - min) * 0.5 * (1 + cos(angle))``; with min = 0 the same value written shorter."""
    half = f"0.5 * (1 + math.cos({angle}))"
    if min_lr_ratio == 0.0:
        return half
    m = _literal(min_lr_ratio)
    return f"{m} + (1 - {m}) * {half}"


def _factor_body(name: str, p: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The lines of ``build`` before ``def lr_factor`` and the body of ``lr_factor``.

    Every expression is the one in ``tuner.optim._schedules`` with the constants substituted, evaluated in
    the same order, so the factors are the same floats; terms like ``0.0 + x`` and ``1.0 * x`` are dropped,
    which changes no value.
    """
    lit = {k: _literal(v) for k, v in p.items()}
    warmup = p.get("warmup_fraction", 0.0) > 0.0
    pre: list[str] = []
    body: list[str] = []
    if warmup:
        pre.append(f"    warmup_steps = round({lit['warmup_fraction']} * total_steps)  # linear warmup, in batches")

    def with_progress(expr: str) -> None:
        if warmup:
            body.extend([
                "        if step < warmup_steps:",
                "            warm, progress = (step + 1) / warmup_steps, 0.0",
                "        else:",
                "            warm = 1.0",
                "            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))",
                f"        return warm * ({expr})",
            ])
        else:
            body.extend(["        progress = min(1.0, step / total_steps)  # 0 -> 1 over training",
                         f"        return {expr}"])

    def with_warm(expr: str) -> None:
        if warmup:
            body.extend(["        warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0",
                         f"        return warm * {expr}"])
        else:
            body.append(f"        return {expr}")

    if name == "constant":
        if warmup:
            body.append("        return (step + 1) / warmup_steps if step < warmup_steps else 1.0")
        else:
            body.append("        return 1.0")
    elif name == "step":
        epoch_count = "step // steps_per_epoch" if p["step_size"] == 1 else \
            f"(step // steps_per_epoch) // {lit['step_size']}"
        with_warm(f"{lit['gamma']} ** ({epoch_count})")
    elif name == "multistep":
        milestones = ", ".join(f"int({_literal(m)} * total_steps)" for m in p["milestones"])
        pre.append(f"    milestones = [{milestones}]  # in batches")
        with_warm(f"{lit['gamma']} ** sum(step >= m for m in milestones)")
    elif name == "exponential":
        with_warm(f"{lit['gamma']} ** (step // steps_per_epoch)")
    elif name in ("cosine", "warmup_cosine"):
        with_progress(_cosine_expr(p["min_lr_ratio"], "math.pi * progress"))
    elif name == "linear":
        with_progress("1 - progress" if p["end_factor"] == 0.0 else f"1 - (1 - {lit['end_factor']}) * progress")
    elif name == "polynomial":
        decay = f"(1 - progress) ** {lit['power']}"
        with_progress(decay if p["end_factor"] == 0.0 else f"{lit['end_factor']} + (1 - {lit['end_factor']}) * {decay}")
    elif name == "cosine_restarts":
        pre.append(f"    cycle = {lit['t0_epochs']} * steps_per_epoch  # the first cycle, in batches")
        if p["t_mult"] == 1:
            body.append(f"        return {_cosine_expr(p['min_lr_ratio'], 'math.pi * (step % cycle) / cycle')}")
        else:
            body.extend([
                "        position, length = step, cycle",
                f"        while position >= length:  # every cycle is {lit['t_mult']} times longer than the last",
                "            position -= length",
                f"            length *= {lit['t_mult']}",
                f"        return {_cosine_expr(p['min_lr_ratio'], 'math.pi * position / length')}",
            ])
    elif name == "onecycle":
        div, final = lit["div_factor"], lit["final_div_factor"]
        pre += [
            f"    peak = max(1, int({lit['pct_start']} * total_steps))  # the batch at which the lr peaks",
            f"    start, end = 1 / {div}, 1 / ({div} * {final})  # the first and the last factor",
        ]
        body += [
            "        if step < peak:  # rise from start to 1",
            "            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * step / peak))",
            "        progress = min(1.0, (step - peak) / max(1, total_steps - peak))  # then anneal from 1 to end",
            "        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))",
        ]
    else:
        raise NotImplementedError(f"python_snippet does not know how to write the {name!r} schedule.")
    return pre, body


def _schedule_source(config: TrainConfig) -> list[str]:
    name = config.schedule.name
    info = get_schedule(name)
    p = {**info.defaults, **config.schedule.params}
    if info.factor is None:  # plateau
        args = ["optimizer", "mode=mode", *(f"{k}={_literal(v)}" for k, v in p.items())]
        return [
            *_comment("    ", f"The learning-rate schedule: {name}, {info.description}."),
            "    # Step it once per epoch with the validation metric: scheduler.step(metric).",
            *_call("    ", "scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau", args),
        ]
    pre, body = _factor_body(name, p)
    text = "\n".join(pre + body)
    uses_total = "total_steps" in text
    setup = []
    if uses_total or "steps_per_epoch" in text:
        setup.append("    steps_per_epoch = max(1, steps_per_epoch)")
    if uses_total:
        setup.append("    total_steps = max(1, EPOCHS * steps_per_epoch)  # the length of training, in batches")
    return [
        *_comment("    ", f"The learning-rate schedule: {name}, {info.description}."),
        "    # lr_factor(step) multiplies the base lr after `step` batches; step the scheduler after every batch.",
        *setup,
        *pre,
        "",
        "    def lr_factor(step):",
        *body,
        "",
        "    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)",
    ]


def _build_source(config: TrainConfig) -> list[str]:
    per_epoch = config.schedule.interval == "epoch"
    if per_epoch:
        head = [
            'def build(model, steps_per_epoch, mode="max"):',
            '    """Returns (optimizer, scheduler) for `model`.',
            "",
            "    Call scheduler.step(metric) once per epoch with the validation metric; mode is \"max\" for a metric",
            "    to maximise (accuracy), \"min\" for a loss. steps_per_epoch is not used by this schedule.",
            '    """',
        ]
    else:
        head = [
            "def build(model, steps_per_epoch):",
            '    """Returns (optimizer, scheduler) for `model`: call scheduler.step() after every batch.',
            "",
            "    steps_per_epoch: the number of batches in an epoch (len(train_loader)); the schedule spans",
            "    EPOCHS epochs of that many batches.",
            '    """',
        ]
    return head + _optimizer_source(config) + [""] + _schedule_source(config) + ["    return optimizer, scheduler"]


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
        lines.append(f"    l1 = {_literal(l1)} * sum(p.abs().sum() for p in weights)")
        terms.append("l1")
        doc.append(f"    L1: {_literal(l1)} * sum(|w|) over the weights (not biases or norm-layer scales).")
    if l2 > 0.0:
        lines.append(f"    l2 = 0.5 * {_literal(l2)} * sum(p.pow(2).sum() for p in weights)")
        terms.append("l2")
        doc.append(f"    L2: 0.5 * {_literal(l2)} * sum(w^2) over the weights: the weight decay, as a loss term")
        doc.append(f"    because {info.name} takes no weight_decay.")
    return [
        "def penalty(model):",
        '    """The loss terms the optimizer does not apply itself: add penalty(model) to every batch\'s loss.',
        "",
        *doc,
        '    """',
        "    weights = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]",
        *lines,
        f"    return {' + '.join(terms)}",
    ]


# -- training loop -------------------------------------------------------------------------------------
def _train_source(config: TrainConfig) -> list[str]:
    info = get_optimizer(config.optimizer.name)
    per_epoch = config.schedule.interval == "epoch"
    lines = [
        "def train(model, x_train, y_train, loss_fn=torch.nn.functional.cross_entropy, x_val=None, y_val=None):",
        '    """Trains `model` in place with these settings on the tensors x_train, y_train and returns it.',
        "",
        "    A minimal loop that shows where every piece goes. The model and the tensors must be on the same",
        "    device. With x_val, y_val the validation loss is printed after every epoch"
        + (" and drives the scheduler." if per_epoch else "."),
        '    """',
        "    torch.manual_seed(SEED)  # seed first: the initialisation and the dropout masks depend on it",
        "    apply_init(model)",
        "    apply_dropout(model)",
        "    n = len(x_train)",
        "    steps_per_epoch = math.ceil(n / BATCH_SIZE)",
    ]
    if per_epoch:
        lines.append('    optimizer, scheduler = build(model, steps_per_epoch, mode="min")  # a loss is minimised')
    else:
        lines.append("    optimizer, scheduler = build(model, steps_per_epoch)")
    lines += [
        "    generator = torch.Generator(device=x_train.device).manual_seed(SEED)  # for the shuffling",
        "    for epoch in range(EPOCHS):",
        "        model.train()",
        "        perm = torch.randperm(n, generator=generator, device=x_train.device)  # a new shuffle every epoch",
        "        total = 0.0",
        "        for i in range(0, n, BATCH_SIZE):",
        "            idx = perm[i:i + BATCH_SIZE]",
        "            xb, yb = x_train[idx], y_train[idx]",
    ]
    step = [
        "optimizer.zero_grad()",
        "loss = loss_fn(model(xb), yb) + penalty(model)  # the data loss plus the penalty terms",
        "loss.backward()",
        "if GRAD_CLIP_NORM is not None:  # clip the gradient norm before the step",
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)",
    ]
    if info.needs_closure:
        lines += [
            "",
            "            def closure(xb=xb, yb=yb):  # L-BFGS evaluates the loss and gradient several times a step",
            *(f"                {line}" for line in step),
            "                return loss",
            "",
            "            loss = optimizer.step(closure)  # returns the loss of the first evaluation",
        ]
    else:
        lines += [f"            {line}" for line in step] + ["            optimizer.step()"]
    if not per_epoch:
        lines.append("            scheduler.step()  # the learning rate changes after every batch")
    lines += [
        "            total += loss.item()",
        "        metric = total / steps_per_epoch",
        '        message = f"epoch {epoch + 1}/{EPOCHS}: train loss {metric:.4f}"',
        "        if x_val is not None:",
        "            model.eval()",
        "            with torch.no_grad():",
        "                metric = loss_fn(model(x_val), y_val).item()",
        '            message += f", validation loss {metric:.4f}"',
        "        print(message)",
    ]
    if per_epoch:
        lines.append("        scheduler.step(metric)  # once per epoch: the validation loss (else the training loss)")
    lines.append("    return model")
    return lines


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
    """Standalone Python source (imports only torch and math) that rebuilds ``config`` with plain PyTorch.

    The source defines ``CONFIG`` (the settings as a dict), ``BATCH_SIZE``, ``EPOCHS``, ``SEED``,
    ``GRAD_CLIP_NORM``, and ``apply_init(model)``, ``apply_dropout(model)``,
    ``build(model, steps_per_epoch) -> (optimizer, scheduler)`` and ``penalty(model)``, which do exactly what
    the ``TrainConfig`` methods of the same names do, plus ``train(model, x_train, y_train, ...)``, a
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
        ["import math", "", "import torch", "from torch import nn"],
        [""],
        ["# The settings as tuner stores them, for reference; the code below does not read this dict.",
         f"CONFIG = {_pretty(config.to_dict(), force=True)}"],
        [""],
        [
            f"BATCH_SIZE = {_literal(config.batch_size)}",
            f"EPOCHS = {_literal(config.epochs)}",
            f"SEED = {_literal(config.seed)}",
            f"GRAD_CLIP_NORM = {_literal(None if clip is None else float(clip))}"
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
        _train_source(config),
        blank2,
        _main_source(),
    ]
    return "\n".join(line for section in sections for line in section) + "\n"
