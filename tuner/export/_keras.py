"""``keras_snippet``: a ``TrainConfig`` as Keras 3 source code, and ``keras_differences``: what Keras does otherwise.

The generated file imports only the standard library and ``keras`` (its demo NumPy too) and runs on any Keras
backend (TensorFlow, Keras's default, or, where it is not installed and ``KERAS_BACKEND`` is unset, PyTorch or
JAX). It
gives ``make_optimizer(steps_per_epoch, model)``, a ``keras.optimizers`` optimizer whose learning rate at every
batch is the one tuner's schedule gives (``LearningRate``, a ``LearningRateSchedule`` that looks the optimizer's
step counter up in the factors tuner computes), or a float that the plateau schedule's callback lowers
(``make_callbacks()``); ``initializer()`` and ``regularizer()``; ``configure(model)``, which seeds, draws the
weights, sets the dropout rates and puts the L1/L2 terms on the weights as ``config.setup`` does; and the
constants (``BATCH_SIZE``, ``EPOCHS``, ``DROPOUT``...).

Where Keras computes something otherwise than torch (epsilon placement, momentum buffers, a missing optimizer),
the file says so in a comment at that spot and ``keras_differences`` lists it, one sentence each, for
``tuner study export --format keras`` to warn about.

This module only assembles: what is written for an optimizer, a schedule or an initialiser, and what differs,
comes from its registry entry (``OptimizerInfo.keras_source``, ``ScheduleInfo.keras_source``,
``InitInfo.keras_source``).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from tuner._source import INDENT, WIDTH, call, literal
from tuner.config import TrainConfig
from tuner.export._python import _clean_title, _indent, _pretty
from tuner.init import KerasInit, get_init
from tuner.optim import get_optimizer, get_schedule
from tuner.optim._optimizers import KerasOptimizer
from tuner.optim._schedules import KerasScheduleSource

__all__ = ["keras_snippet", "keras_differences"]

DIFFERS = "Differs from tuner: "


@dataclass(frozen=True)
class _Plan:
    """What the registry entries say about one config, and the differences found where they meet."""

    optimizer: KerasOptimizer
    schedule: KerasScheduleSource
    init: KerasInit | None
    varies: bool  # the learning rate changes during training: a LearningRate schedule or the plateau callback
    at_optimizer: tuple[str, ...]  # the differences, by where the file says so
    at_clip: tuple[str, ...]
    at_regularizer: tuple[str, ...]
    at_init: tuple[str, ...]

    @property
    def differences(self) -> list[str]:
        return [*self.at_optimizer, *self.at_clip, *self.at_regularizer, *self.at_init]

    @property
    def table(self) -> bool:
        """The rate is a ``LearningRate`` table: a schedule that changes it, or Adagrad's lr_decay."""
        return self.schedule.kind == "factor" and (self.varies or bool(self.optimizer.lr_decay))


def _constant_factor(schedule: KerasScheduleSource) -> bool:
    return schedule.python is not None and schedule.python.factor == ("return 1.0",) and not schedule.python.setup


def _plan(config: TrainConfig) -> _Plan:
    schedule = get_schedule(config.schedule.name).keras_source(config.schedule.params)
    varies = schedule.kind == "callback" or (schedule.kind == "factor" and not _constant_factor(schedule))
    info = get_optimizer(config.optimizer.name)
    optimizer = info.keras_source({"lr": config.optimizer.lr, **config.optimizer.params}, lr_changes=varies)
    weight_decay = config.regularization.weight_decay
    at_optimizer = list(optimizer.differences) + list(schedule.differences)
    supported = optimizer.cls is not None and schedule.kind != "none"
    if optimizer.lr_decay and schedule.kind == "callback" and supported:
        at_optimizer.append(
            f"lr_decay: torch's Adagrad divides the learning rate by 1 + step * lr_decay; Keras's Adagrad has no "
            f"lr_decay, and the plateau callback needs a plain float learning rate, so lr_decay = "
            f"{literal(optimizer.lr_decay)} is not applied.")
    at_clip, at_regularizer = [], []
    if config.grad_clip_norm is not None and supported:
        at_clip.append("gradient clipping: Keras's global_clipnorm scales the gradients by clip / norm, torch's "
                       "clip_grad_norm_ by clip / (norm + 1e-6): the clipped gradients differ by a factor of "
                       "1 + 1e-6 / norm.")
    if (config.grad_clip_norm is not None and weight_decay and optimizer.weight_decay == "penalty"
            and info.supports_weight_decay):
        at_regularizer.append(
            "weight decay with gradient clipping: torch adds weight_decay * w to the gradient after clipping it; "
            "here it is the gradient of the L2 term in the loss, so it is clipped with the rest of the gradient.")
    init = get_init(config.init.name).keras_source(config.init.params)
    at_init = (f"the {config.init.name} initialiser has no Keras translation: initializer() returns None and "
               f"configure(model) keeps Keras's initialisation.",) if init is None else init.differences
    return _Plan(optimizer, schedule, init, varies, tuple(at_optimizer), tuple(at_clip), tuple(at_regularizer),
                 tuple(at_init))


def _comment(indent: str, text: str) -> list[str]:
    """``text`` as ``# ...`` lines that fit in the width, words kept whole (``epsilon-hat``, ``1e-6``)."""
    wrapped = textwrap.wrap(text, WIDTH - len(indent) - 2, break_on_hyphens=False, break_long_words=False)
    return [f"{indent}# {line}" for line in wrapped]


def _docstring(indent: str, *paragraphs: str) -> list[str]:
    """A docstring of ``paragraphs``, each wrapped to fit in the width (words kept whole), the first opening it."""
    lines: list[str] = []
    for i, text in enumerate(paragraphs):
        lines += [""] * (i > 0) + textwrap.wrap(('"""' if i == 0 else "") + text, WIDTH - len(indent),
                                                break_on_hyphens=False, break_long_words=False)
    if len(lines) == 1 and len(lines[0]) + 3 <= WIDTH - len(indent):
        return [f'{indent}{lines[0]}"""']
    return [f"{indent}{line}" if line else "" for line in lines] + [f'{indent}"""']


def _differs(indent: str, differences: tuple[str, ...] | list[str]) -> list[str]:
    return [line for text in differences for line in _comment(indent, DIFFERS + text)]


def _notes(indent: str, notes: tuple[str, ...]) -> list[str]:
    return [line for text in notes for line in _comment(indent, text)]


def _long_string(indent: str, start: str, text: str, end: str) -> list[str]:
    """``start"text"end`` with ``text`` as adjacent string literals on lines that fit in the width."""
    pad = indent + " " * len(start)
    chunks = textwrap.wrap(text, WIDTH - len(pad) - 3, drop_whitespace=False) or [""]
    lines = [f"{pad}{literal(chunk)}" for chunk in chunks]
    lines[0] = f"{indent}{start}{lines[0][len(pad):]}"
    lines[-1] += end
    return lines


# -- header --------------------------------------------------------------------------------------------
def _header(config: TrainConfig, title: str, plan: _Plan) -> list[str]:
    from tuner._version import __version__

    heading = "Recommended optimizer settings from a tuner study, for Keras"
    if title.strip():
        heading += f": {_clean_title(title)}"
    optimizer = plan.optimizer.cls
    fit = "callbacks=make_callbacks()" + (' (monitor="val_loss" by default)' if plan.schedule.kind == "callback"
                                          else "")
    lines = [
        f'"""{heading}.',
        "",
        f"    {config.summary()}",
        "",
        f"Written by tuner {__version__} for Keras 3 (any backend); needs only keras. The settings, as code for "
        "your",
        "own training script:",
        "",
        "    model = make_model()   # your model, built: with a keras.Input, or called once on a batch",
        "    configure(model)       # seed, initial weights, dropout rates, L1/L2 terms on the weights",
        "    steps_per_epoch = math.ceil(len(x_train) / BATCH_SIZE)  # the batches fit() makes of an epoch",
        "    model.compile(optimizer=make_optimizer(steps_per_epoch, model), loss=..., metrics=[...])",
        "    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, validation_data=(x_val, y_val),",
        f"              {fit})",
        "",
    ]
    if optimizer is None:
        lines += textwrap.wrap(f"make_optimizer raises NotImplementedError: the {config.optimizer.name} "
                               "optimizer has no Keras equivalent (below); the other settings apply with any "
                               "optimizer.", WIDTH) + [""]
    lines += textwrap.wrap(
        "configure(model) seeds Python's, NumPy's and Keras's generators with SEED, draws the weights with "
        "initializer(), sets every dropout layer's rate to DROPOUT and puts regularizer()'s L1/L2 terms on the "
        "weights, which fit() adds to the loss. To build the layers with these settings instead, pass "
        "kernel_initializer=initializer(), kernel_regularizer=regularizer() and Dropout(DROPOUT). Weights are "
        "drawn from the same distributions as tuner draws them, not the same numbers.", WIDTH)
    lines.append("")
    if plan.differences:
        lines.append(f'What Keras does otherwise than tuner (each also marked "{DIFFERS.strip()}" below):')
        for text in plan.differences:
            wrapped = textwrap.wrap(_clean_title(text), WIDTH - 4, break_on_hyphens=False)
            lines += [f"  - {wrapped[0]}", *(f"    {line}" for line in wrapped[1:])]
    else:
        lines += ["Keras trains with these settings as tuner does: nothing differs but float rounding."]
    return [*lines, "", "`python <this file>` trains a tiny demo model on random data for one epoch.", '"""']


# -- constants -----------------------------------------------------------------------------------------
def _constants(config: TrainConfig, plan: _Plan) -> list[str]:
    reg = config.regularization
    clip = config.grad_clip_norm
    how = {"optimizer": "applied by the optimizer (make_optimizer)",
           "penalty": "WEIGHT_DECAY / 2 * sum(w^2) in the loss (regularizer)"}[plan.optimizer.weight_decay]
    if plan.optimizer.cls is None and plan.optimizer.weight_decay == "optimizer":
        how = "applied by the optimizer, which Keras lacks"
    return [
        f"BATCH_SIZE = {literal(config.batch_size)}",
        f"EPOCHS = {literal(config.epochs)}",
        f"SEED = {literal(config.seed)}",
        f"LEARNING_RATE = {literal(config.optimizer.lr)}"
        + ("  # the base rate, which the schedule multiplies" if plan.varies else ""),
        f"GRAD_CLIP_NORM = {literal(None if clip is None else float(clip))}"
        + ("  # the gradients' global norm is clipped to this before every step" if clip is not None
           else "  # no gradient clipping"),
        f"DROPOUT = {literal(reg.dropout)}"
        + ("  # the rate of every dropout layer" if reg.dropout is not None else "  # the model's own dropout rates"),
        f"L1 = {literal(reg.l1)}" + ("  # L1 * sum(|w|) over the weights in the loss" if reg.l1 else "  # no L1 term"),
        f"WEIGHT_DECAY = {literal(reg.weight_decay)}" + (f"  # {how}" if reg.weight_decay else "  # no weight decay"),
    ]


# -- weights: initialisation, dropout, penalties ------------------------------------------------------------
def _weights_source() -> list[str]:
    return [
        "def weight_variables(model):",
        '    """The variables tuner treats as weights: trainable, of two or more dimensions, not biases.',
        "",
        "    tuner never penalises or decays biases and norm-layer scales, and initialises only weights.",
        '    """',
        "    return [v for v in model.trainable_variables",
        '            if len(v.shape) >= 2 and not v.name.startswith("bias")]',
        "",
        "",
        "def _check_built(model, call):",
        '    if model is None or not getattr(model, "built", False) or not model.trainable_variables:',
        '        raise ValueError(f"{call} needs a built model with weights: give it a keras.Input, or call it on a "',
        '                         "batch first.")',
    ]


def _init_source(config: TrainConfig, plan: _Plan) -> list[str]:
    init = plan.init
    if init is None:
        return [
            "def initializer():",
            '    """No Keras translation of this initialiser: Keras\'s own initialisation stays."""',
            *_differs(INDENT, plan.at_init),
            "    return None",
            "",
            "",
            "def apply_init(model):",
            '    """Keeps Keras\'s initialisation (see initializer): nothing to do."""',
        ]
    info = get_init(config.init.name)
    params = ", ".join(f"{k}={literal(v)}" for k, v in {**info.defaults, **config.init.params}.items())
    what = f"tuner's {info.name} initialiser ({params})" if params else f"tuner's {info.name} initialiser"
    lines = [
        "def initializer():",
        *_docstring(INDENT, f"The initialiser of the weights: {what}, {info.description}.",
                    "Pass it as kernel_initializer (recurrent_initializer, embeddings_initializer) when you build "
                    "layers, or let configure(model) draw every weight with it. Keras's kernels are PyTorch's "
                    "weights transposed, with the same fans, but for embedding tables, whose fans Keras takes the "
                    "other way round: configure(model) draws those transposed."),
        *_notes(INDENT, init.notes),
        *_differs(INDENT, plan.at_init),
        f"    return {init.expr}",
        "",
        "",
        "def apply_init(model):",
    ]
    biases = ("and sets the biases to zero, as tuner does" if init.zero_biases
              else "as tuner keeps PyTorch's own weights (the biases stay as they are)")
    lines += [
        *_docstring(INDENT, f"Draws every weight of the built model anew with initializer(), {biases}.",
                    "Embedding tables are drawn transposed: Keras takes the fans of an (input_dim, output_dim) "
                    "table the other way round from PyTorch's (num_embeddings, embedding_dim) weight. Norm "
                    "layers keep their unit scale and zero shift."),
        '    _check_built(model, "apply_init(model)")',
        "    init = initializer()",
        "    for variable in weight_variables(model):",
        "        shape = tuple(variable.shape)",
        '        if variable.name == "embeddings":',
        "            value = keras.ops.transpose(init(shape[::-1], dtype=variable.dtype))",
        "        else:",
        "            value = init(shape, dtype=variable.dtype)",
        "        variable.assign(value)",
    ]
    if init.zero_biases:
        lines += [
            "    for variable in model.trainable_variables:",
            '        if variable.name.startswith("bias"):',
            "            variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))",
        ]
    return lines


def _dropout_source(config: TrainConfig) -> list[str]:
    lines = [
        "def all_layers(model):",
        '    """The layers of the model and of the models inside it."""',
        "    for layer in model.layers:",
        "        yield layer",
        '        if hasattr(layer, "layers"):',
        "            yield from all_layers(layer)",
        "",
        "",
        "def apply_dropout(model):",
    ]
    if config.regularization.dropout is None:
        return [*lines, '    """The study kept the model\'s own dropout rates: nothing to do."""']
    return [
        *lines,
        *_docstring(INDENT, "Sets the rate of every dropout layer of the model to DROPOUT, as tuner does.",
                    "Dropout, SpatialDropout1D/2D/3D (Dropout layers too) and AlphaDropout: what PyTorch's "
                    "Dropout, Dropout1d/2d/3d and AlphaDropout are; the sublayers of a custom layer are reached "
                    "only through models. Set it before training starts."),
        "    for i, layer in enumerate(all_layers(model)):",
        "        if isinstance(layer, (keras.layers.Dropout, keras.layers.AlphaDropout)):",
        "            layer.rate = DROPOUT",
        "            if DROPOUT > 0 and not hasattr(layer, \"seed_generator\"):",
        "                # A layer built with rate 0 has no random generator, and a built layer takes no new",
        "                # state: the generator is set past Keras's tracking (it holds only the dropout seed).",
        "                object.__setattr__(layer, \"seed_generator\", keras.random.SeedGenerator(SEED + i))",
    ]


def _regularizer_source(config: TrainConfig, plan: _Plan) -> list[str]:
    reg = config.regularization
    l2 = reg.weight_decay if plan.optimizer.weight_decay == "penalty" else 0.0
    if reg.l1 == 0.0 and l2 == 0.0:
        doc = ("No L1 or L2 terms in these settings"
               + (" (the weight decay is the optimizer's)" if reg.weight_decay else "") + ": None.")
        return [
            "def regularizer():",
            f'    """{doc}"""',
            "    return None",
            "",
            "",
            "def apply_regularization(model):",
            '    """No L1 or L2 terms in these settings: nothing to do."""',
        ]
    terms, args = [], []
    if reg.l1:
        terms.append("L1 * sum(|w|)")
        args.append("l1=L1")
    if l2:
        info = get_optimizer(config.optimizer.name)
        terms.append("WEIGHT_DECAY / 2 * sum(w^2), whose gradient WEIGHT_DECAY * w is "
                     + (f"the weight decay of torch's {info.name} (coupled: added to the gradient)"
                        if info.supports_weight_decay else
                        f"tuner's L2 penalty for {info.name}, which takes no weight decay"))
        args.append("l2=WEIGHT_DECAY / 2")
    return [
        "def regularizer():",
        *_docstring(INDENT, f"The loss terms on the weights: {' + '.join(terms)}.",
                    "configure(model) puts it on every weight; or pass kernel_regularizer=regularizer() (and "
                    "recurrent_regularizer, embeddings_regularizer) when you build layers. Not on biases or norm "
                    "layers: tuner never penalises those."),
        *_differs(INDENT, plan.at_regularizer),
        f"    return keras.regularizers.L1L2({', '.join(args)})",
        "",
        "",
        "def apply_regularization(model):",
        *_docstring(INDENT, "Puts regularizer() on every weight of the built model: fit() adds its terms to the "
                    "loss (they are in model.losses; a training loop of your own adds sum(model.losses) itself)."),
        '    _check_built(model, "apply_regularization(model)")',
        "    penalty = regularizer()",
        "    for variable in weight_variables(model):",
        "        variable.regularizer = penalty",
    ]


def _configure_source() -> list[str]:
    return [
        "def configure(model):",
        '    """Applies these settings to a built model and returns it, as tuner\'s config.setup does.',
        "",
        "    In this order: seeds Python's, NumPy's and Keras's generators with SEED (with",
        "    keras.utils.set_random_seed, for the whole program), draws the weights (apply_init), sets the",
        "    dropout rates (apply_dropout) and puts the L1/L2 terms on the weights (apply_regularization).",
        "    make_optimizer gives the optimizer.",
        '    """',
        '    _check_built(model, "configure(model)")',
        "    keras.utils.set_random_seed(SEED)",
        "    apply_init(model)",
        "    apply_dropout(model)",
        "    apply_regularization(model)",
        "    return model",
    ]


# -- the learning rate ---------------------------------------------------------------------------------------
def _factor_source(config: TrainConfig, schedule: KerasScheduleSource) -> list[str]:
    written = schedule.python
    assert written is not None
    info = get_schedule(config.schedule.name)
    text = "\n".join(written.setup + written.factor)
    uses_step = re.search(r"\bstep\b", "\n".join(written.factor)) is not None
    per_epoch = written.interval == "epoch"
    uses_total = "total_steps" in text or (uses_step and not per_epoch)
    lines = [
        "def lr_factor(step, steps_per_epoch):",
        *_docstring(INDENT, f"The multiplier of LEARNING_RATE after `step` batches: tuner's {info.name} schedule, "
                    f"{info.description}, over EPOCHS epochs of steps_per_epoch batches; past the end of "
                    "training it holds the value of its last batch. The same expressions as tuner's, so the same "
                    "floats."),
    ]
    if uses_total or "steps_per_epoch" in text or per_epoch:
        lines.append("    steps_per_epoch = max(1, steps_per_epoch)")
    if uses_total:
        lines.append("    total_steps = max(1, EPOCHS * steps_per_epoch)  # the length of training, in batches")
    lines += _indent(written.setup)
    if per_epoch:
        lines.append("    step = min(step // steps_per_epoch, EPOCHS - 1)  # this schedule counts epochs")
    elif uses_step:
        lines.append("    step = min(step, total_steps - 1)")
    return lines + _indent(written.factor)


def _learning_rate_source(config: TrainConfig, plan: _Plan) -> list[str]:
    lr_decay = plan.optimizer.lr_decay
    decay_doc = (f", divided by 1 + step * {literal(lr_decay)} (torch's Adagrad lr_decay, which Keras's Adagrad "
                 "lacks)" if lr_decay else "")
    lines = [
        "class LearningRate(keras.optimizers.schedules.LearningRateSchedule):",
        *_docstring(INDENT, f"The learning rate at every batch: LEARNING_RATE * lr_factor(step){decay_doc}.",
                    "The rates are computed once, in double precision as tuner computes them, for the EPOCHS * "
                    "steps_per_epoch batches of training; the optimizer looks its step counter up in them (past "
                    "the end, the last one). To load a saved model: keras.models.load_model(path, "
                    'custom_objects={"LearningRate": LearningRate}).'),
        "",
        "    def __init__(self, steps_per_epoch):",
        "        self.steps_per_epoch = max(1, int(steps_per_epoch))",
        "        self.total_steps = max(1, EPOCHS * self.steps_per_epoch)",
        "        steps = range(self.total_steps)",
        "        rates = [LEARNING_RATE * lr_factor(step, self.steps_per_epoch) for step in steps]",
        '        self.rates = keras.ops.convert_to_tensor(rates, dtype="float32")',
        "",
        "    def __call__(self, step):",
        '        index = keras.ops.minimum(keras.ops.cast(step, "int32"), self.total_steps - 1)',
        "        rate = keras.ops.take(self.rates, index)",
    ]
    if lr_decay:
        lines.append(f'        return rate / (1 + keras.ops.cast(step, "float32") * {literal(lr_decay)})')
    else:
        lines.append("        return rate")
    return [*lines, "", "    def get_config(self):", '        return {"steps_per_epoch": self.steps_per_epoch}']


def _schedule_source(config: TrainConfig, plan: _Plan) -> list[str]:
    schedule = plan.schedule
    if schedule.kind == "callback":
        return list(schedule.callback)
    if not plan.table:
        return []
    return [*_factor_source(config, schedule), "", "", *_learning_rate_source(config, plan)]


# -- the optimizer and the callbacks ----------------------------------------------------------------------------
def _optimizer_source(config: TrainConfig, plan: _Plan) -> list[str]:
    opt, info = plan.optimizer, get_optimizer(config.optimizer.name)
    weight_decay = config.regularization.weight_decay
    decays = opt.cls is not None and opt.weight_decay == "optimizer" and bool(weight_decay)
    if opt.cls is None or plan.schedule.kind == "none":
        return [
            "def make_optimizer(steps_per_epoch, model=None):",
            f'    """Keras has no equivalent of tuner\'s {info.name} optimizer: raises NotImplementedError."""',
            *_differs(INDENT, plan.at_optimizer),
            *_long_string(INDENT, "raise NotImplementedError(", plan.at_optimizer[0], ")"),
        ]
    steps_doc = ("the number of batches in an epoch, math.ceil(len(x_train) / BATCH_SIZE) for fit(); the schedule "
                 "spans EPOCHS epochs of that many batches." if plan.table
                 else "not used: the learning rate " + ("changes between epochs, in make_callbacks()."
                                                        if plan.schedule.kind == "callback" else "is constant."))
    model_doc = ("the built model: the weight decay leaves its biases and norm-layer scales alone, as tuner does, "
                 "and needs the model to know them." if decays else "not used (no weight decay in the optimizer).")
    lines = [
        "def make_optimizer(steps_per_epoch, model=None):",
        *_docstring(INDENT, f"Returns the keras.optimizers.{opt.cls} of these settings: tuner's {info.name} "
                    f"optimizer, {info.description}.",
                    f"steps_per_epoch: {steps_doc} model: {model_doc}"),
    ]
    if decays:
        lines.append('    _check_built(model, "make_optimizer(steps_per_epoch, model)")')
    lines += _notes(INDENT, opt.notes)
    lines += _differs(INDENT, plan.at_optimizer)
    lines += _differs(INDENT, plan.at_clip)
    learning_rate = "LearningRate(steps_per_epoch)" if plan.table else "LEARNING_RATE"
    args = [f"learning_rate={learning_rate}", *(f"{k}={literal(v)}" for k, v in opt.args.items())]
    if opt.weight_decay == "optimizer" and (weight_decay or opt.cls == "AdamW"):
        args.append("weight_decay=WEIGHT_DECAY")  # AdamW's default is 0.004: always written
    if config.grad_clip_norm is not None:
        args.append("global_clipnorm=GRAD_CLIP_NORM")
    lines += call(INDENT, f"optimizer = keras.optimizers.{opt.cls}", args, WIDTH)
    if decays:
        lines += [
            "    # Weight decay on the weights only: tuner never decays biases and norm-layer scales and shifts.",
            "    decayed = {id(v) for v in weight_variables(model)}",
            "    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if id(v) not in "
            "decayed])",
        ]
    return [*lines, "    return optimizer"]


def _callbacks_source(plan: _Plan) -> list[str]:
    if plan.schedule.kind != "callback":
        return [
            'def make_callbacks(monitor="val_loss", mode="min"):',
            '    """The callbacks fit() needs for these settings: none, the learning rate is the optimizer\'s',
            '    (monitor and mode are not used)."""',
            "    return []",
        ]
    return [
        'def make_callbacks(monitor="val_loss", mode="min"):',
        *_docstring(INDENT, "The callbacks fit() needs for these settings: PlateauCallback(monitor, mode), tuner's "
                    "plateau schedule, which lowers the learning rate once the monitored metric stops improving.",
                    'monitor: a metric fit() reports every epoch, "val_loss" (the default, with mode="min"; it '
                    'needs validation data) or "val_accuracy" (mode="max"), say.'),
        "    return [PlateauCallback(monitor, mode)]",
    ]


# -- demo ----------------------------------------------------------------------------------------------------
def _main_source(plan: _Plan) -> list[str]:
    lines = [
        'if __name__ == "__main__":',
        "    # A quick check that everything runs: a tiny model on random data, for one epoch.",
        "    import numpy as np",
        "",
        "    EPOCHS = 1",
        "    rng = np.random.default_rng(0)",
        '    x = rng.normal(size=(512, 20)).astype("float32")',
        '    y = (x[:, 0] + x[:, 1] > 0).astype("int32")',
        "    demo = keras.Sequential([",
        "        keras.Input((20,)),",
        "        keras.layers.Dense(32),",
        "        keras.layers.LayerNormalization(),",
        "        keras.layers.ReLU(),",
        "        keras.layers.Dropout(0.1),",
        "        keras.layers.Dense(2),",
        "    ])",
        "    configure(demo)",
    ]
    if plan.optimizer.cls is None or plan.schedule.kind == "none":
        return [*lines, *_long_string(INDENT, "print(", "configure(model) ran; no Keras optimizer for these "
                                                    "settings: " + plan.at_optimizer[0], ")")]
    return [
        *lines,
        "    demo.compile(",
        "        optimizer=make_optimizer(math.ceil(384 / BATCH_SIZE), demo),",
        "        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),",
        '        metrics=["accuracy"],',
        "    )",
        "    demo.fit(x[:384], y[:384], batch_size=BATCH_SIZE, epochs=EPOCHS, validation_data=(x[384:], y[384:]),",
        "             callbacks=make_callbacks())",
    ]


# -- public --------------------------------------------------------------------------------------------
def keras_differences(config: TrainConfig) -> list[str]:
    """What Keras does otherwise than tuner with ``config``, one sentence each (empty when nothing differs but
    float rounding): the warnings of ``tuner study export --format keras``, also comments in ``keras_snippet``."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"keras_differences expects a TrainConfig. Got {type(config).__name__} instead.")
    return _plan(config).differences


def keras_snippet(config: TrainConfig, *, title: str = "") -> str:
    """Keras 3 source (imports only the standard library and keras) that trains with ``config``'s settings.

    The source defines ``CONFIG`` (the settings as a dict), ``BATCH_SIZE``, ``EPOCHS``, ``SEED``,
    ``LEARNING_RATE``, ``GRAD_CLIP_NORM``, ``DROPOUT``, ``L1``, ``WEIGHT_DECAY``; ``initializer()``,
    ``regularizer()``, ``weight_variables(model)``, ``apply_init(model)``, ``apply_dropout(model)``,
    ``apply_regularization(model)`` and ``configure(model)`` (all of them, after seeding); the learning rate
    (``lr_factor`` and the ``LearningRate`` schedule, or the plateau's ``PlateauCallback``);
    ``make_optimizer(steps_per_epoch, model)`` and ``make_callbacks(monitor, mode)``; and a ``__main__`` demo.
    What Keras does otherwise is said in comments, and by ``keras_differences(config)``. ``title`` (the study's
    name, say) goes in the header.

    Example:
        >>> Path("best_settings_keras.py").write_text(keras_snippet(config, title="digits-mlp"))
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"keras_snippet expects a TrainConfig. Got {type(config).__name__} instead.")
    plan = _plan(config)
    blank2 = ["", ""]
    schedule = _schedule_source(config, plan)
    sections = [
        _header(config, title, plan),
        [""],
        ["import importlib.util", "import json", "import math", "import os", "",
         "",
         "def _backend_chosen():",
         "    \"\"\"Whether KERAS_BACKEND names Keras's backend, or keras.json names one that is installed, or",
         "    Keras's default, TensorFlow, is installed.\"\"\"",
         "    if os.environ.get(\"KERAS_BACKEND\"):",
         "        return True",
         "    home = os.environ.get(\"KERAS_HOME\") or os.path.expanduser(\"~/.keras\")",
         "    config = os.path.join(home, \"keras.json\")",
         "    name = None",
         "    if os.path.isfile(config):",
         "        try:",
         "            with open(config) as f:",
         "                name = json.load(f).get(\"backend\")",
         "        except (OSError, ValueError, AttributeError):",
         "            pass",
         "    return isinstance(name, str) and importlib.util.find_spec(name) is not None or \\",
         "        importlib.util.find_spec(\"tensorflow\") is not None",
         "",
         "",
         "if not _backend_chosen():  # the PyTorch or JAX that is installed (KERAS_BACKEND picks one yourself)",
         "    for backend in (\"torch\", \"jax\"):",
         "        if importlib.util.find_spec(backend) is not None:",
         "            os.environ[\"KERAS_BACKEND\"] = backend",
         "            break",
         "",
         "import keras  # noqa: E402"],
        [""],
        ["# The settings as tuner stores them, for reference; the code below does not read this dict.",
         f"CONFIG = {_pretty(config.to_dict(), force=True)}"],
        [""],
        _constants(config, plan),
        blank2,
        _weights_source(),
        blank2,
        _init_source(config, plan),
        blank2,
        _dropout_source(config),
        blank2,
        _regularizer_source(config, plan),
        blank2,
        _configure_source(),
        blank2,
        *([schedule, blank2] if schedule else []),
        _optimizer_source(config, plan),
        blank2,
        _callbacks_source(plan),
        blank2,
        _main_source(plan),
    ]
    return "\n".join(line for section in sections for line in section) + "\n"
