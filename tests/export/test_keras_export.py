"""keras_snippet: the Keras 3 code trains with tuner's settings, on Keras's torch backend.

Where Keras computes something otherwise than torch, the export says so (keras_differences, comments, CLI
warnings); the tests check both halves: that everything else is the same as tuner's torch training (learning
rate at every step, optimizer updates, penalties, weight decay, clipping), and that each documented difference
is exactly what the export says it is.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("KERAS_BACKEND", "torch")  # before the first import of keras; no TensorFlow
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - keras was imported earlier with another backend
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

from _export_cases import FULL, INIT_PARAMS, SCHEDULE_PARAMS  # noqa: E402
from _export_cases import OPTIMIZER_PARAMS as BASE_OPTIMIZER_PARAMS  # noqa: E402

from tuner import TrainConfig  # noqa: E402
from tuner.export import FORMATS, export_warnings, keras_differences, keras_snippet  # noqa: E402
from tuner.init import list_inits  # noqa: E402
from tuner.optim import build_optimizer, get_optimizer, get_schedule, list_optimizers, list_schedules  # noqa: E402

# keras.ops.convert_to_numpy on the torch backend calls np.array(tensor) in the way NumPy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# The shared cases, with an Adagrad decay large enough to show in a few steps.
OPTIMIZER_PARAMS = {**BASE_OPTIMIZER_PARAMS,
                    "adagrad": {"lr": 0.1, "eps": 1e-9, "lr_decay": 1e-2, "initial_accumulator_value": 0.1}}
KERAS_OPTIMIZERS = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
                    "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW", "nadam": "Nadam",
                    "nadamw": "Nadam", "adamax": "Adamax"}
NO_KERAS = {"radam", "lbfgs", "prodigy", "schedulefree_adamw"}
# Keras optimizers step in float32, in another order of operations than torch's: a few float32 roundings
# per step, over 5 steps. The measured worst cases are below 2e-6 relative.
RTOL, ATOL = 1e-5, 1e-7

LBFGS = {"optimizer": {"name": "lbfgs", "lr": 0.5}, "regularization": {"weight_decay": 1e-4, "l1": 1e-5},
         "grad_clip_norm": 5.0, "init": "xavier_uniform", "epochs": 2}
PLATEAU = {"optimizer": "momentum", "schedule": {"name": "plateau", "patience": 1, "factor": 0.5},
           "regularization": {"weight_decay": 1e-3, "dropout": 0.1}, "epochs": 3}
CONFIGS: list[dict[str, Any]] = [
    {}, FULL, LBFGS, PLATEAU,
    *({"optimizer": {"name": n, **p}, "regularization": {"weight_decay": 0.01, "l1": 1e-4}, "grad_clip_norm": 1.0}
      for n, p in OPTIMIZER_PARAMS.items()),
    *({"schedule": {"name": n, **p}, "epochs": 3} for n, p in SCHEDULE_PARAMS.items()),
    *({"init": {"name": n, **p}} for n, p in INIT_PARAMS.items()),
]
IDS = [f"{i}-{TrainConfig.from_dict(c).summary().replace(' ', '_')}" for i, c in enumerate(CONFIGS)]


def _exported(data: dict[str, Any] | TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and the namespace its Keras source defines, executed in a fresh namespace."""
    config = data if isinstance(data, TrainConfig) else TrainConfig.from_dict(data)
    ns: dict[str, Any] = {"__name__": "exported_keras"}
    exec(compile(keras_snippet(config), "exported_keras.py", "exec"), ns)
    return config, ns


def test_every_entry_has_a_case_here() -> None:
    assert set(SCHEDULE_PARAMS) == set(list_schedules())
    assert set(INIT_PARAMS) == set(list_inits())
    assert set(OPTIMIZER_PARAMS) == set(list_optimizers()) == set(KERAS_OPTIMIZERS) | NO_KERAS
    for name, params in OPTIMIZER_PARAMS.items():
        get_optimizer(name).check(params)


# -- the module ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", CONFIGS, ids=IDS)
def test_defines_the_documented_names(data: dict[str, Any]) -> None:
    config = TrainConfig.from_dict(data)
    source = keras_snippet(config)
    module = ast.parse(source)
    top = {alias.name for node in module.body if isinstance(node, ast.Import) for alias in node.names}
    everywhere = {alias.name for node in ast.walk(module) if isinstance(node, ast.Import) for alias in node.names}
    # the standard library (the backend's choice, where TensorFlow is missing) and keras; numpy: the demo's data
    assert top == {"importlib.util", "json", "math", "os", "keras"} and everywhere == top | {"numpy"}
    assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(module))
    _, ns = _exported(config)
    assert ns["CONFIG"] == config.to_dict() and TrainConfig.from_dict(ns["CONFIG"]) == config
    assert (ns["BATCH_SIZE"], ns["EPOCHS"], ns["SEED"]) == (config.batch_size, config.epochs, config.seed)
    assert ns["LEARNING_RATE"] == config.optimizer.lr and ns["GRAD_CLIP_NORM"] == config.grad_clip_norm
    assert ns["DROPOUT"] == config.regularization.dropout and ns["L1"] == config.regularization.l1
    assert ns["WEIGHT_DECAY"] == config.regularization.weight_decay
    for name in ("initializer", "regularizer", "weight_variables", "apply_init", "apply_dropout",
                 "apply_regularization", "configure", "make_optimizer", "make_callbacks"):
        assert callable(ns[name]), name
    assert max(len(line) for line in source.splitlines()) <= 120
    # Every difference is said at its spot in the file and in the header.
    comments = " ".join(line.strip()[2:] for line in source.splitlines() if line.strip().startswith("# "))
    header = " ".join(ns["__doc__"].split())
    for text in keras_differences(config):
        assert f"Differs from tuner: {text}" in comments
        assert f"- {text}" in header


def test_header_title_and_a_hostile_title_stays_text() -> None:
    config = TrainConfig.from_dict(FULL)
    assert keras_snippet(config, title="digits").startswith(
        '"""Recommended optimizer settings from a tuner study, for Keras: digits.')
    source = keras_snippet(config, title='x"""; import os; os.system("touch /tmp/pwned")  # \\')
    module = ast.parse(source)
    assert "system" not in {n.attr for n in ast.walk(module) if isinstance(n, ast.Attribute)}
    assert "os.system" in (ast.get_docstring(module) or "")


def test_rejects_anything_but_a_train_config() -> None:
    with pytest.raises(TypeError, match="TrainConfig"):
        keras_snippet(FULL)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TrainConfig"):
        keras_differences(FULL)  # type: ignore[arg-type]


def test_export_formats_and_warnings() -> None:
    assert "keras" in FORMATS
    config = TrainConfig.from_dict(LBFGS)
    assert export_warnings(config, "python") == [] and export_warnings(config, "yaml") == []
    assert export_warnings(config, "keras") == keras_differences(config)


# -- the learning rate at every step -------------------------------------------------------------------------
def _torch_lrs(config: TrainConfig, steps_per_epoch: int, steps: int) -> list[float]:
    """tuner's learning rate at every step, stepping the scheduler config.setup builds after every batch."""
    model = nn.Linear(2, 2)
    training = config.setup(model, steps_per_epoch=steps_per_epoch, init=False, dropout=False, seed=False)
    lrs = []
    for _ in range(steps):
        lrs.append(training.lr)
        training.optimizer.step()
        training.scheduler.step()
    return lrs


def _keras_lrs(ns: dict[str, Any], steps_per_epoch: int, steps: int) -> list[float]:
    """The exported optimizer's learning rate at every step, read before each update, as Keras uses it."""
    variable = keras.Variable(np.ones((2, 2), "float32"))
    optimizer = ns["make_optimizer"](steps_per_epoch)
    lrs = []
    for _ in range(steps):
        lrs.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        optimizer.apply([keras.ops.zeros((2, 2))], [variable])
    return lrs


@pytest.mark.parametrize("steps_per_epoch", [1, 7])
@pytest.mark.parametrize("params", ["defaults", "other"])
@pytest.mark.parametrize("name", [n for n in list_schedules() if n != "plateau"])
@pytest.mark.filterwarnings("ignore:The .* learning-rate schedule was stepped more often:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_learning_rate_at_every_step_is_tuners(name: str, params: str, steps_per_epoch: int) -> None:
    """3 epochs of 7 batches (and of 1), and 4 batches past the end where both hold: Keras's learning rate is
    tuner's, rounded to float32 (the precision Keras keeps it in; torch rounds it so when it uses it)."""
    schedule = {"name": name, **(SCHEDULE_PARAMS[name] if params == "other" else {})}
    config, ns = _exported({"optimizer": {"name": "sgd", "lr": 0.05}, "schedule": schedule, "epochs": 3})
    steps = 3 * steps_per_epoch + 4
    theirs = np.float32(_torch_lrs(config, steps_per_epoch, steps))
    mine = np.float32(_keras_lrs(ns, steps_per_epoch, steps))
    np.testing.assert_array_equal(mine, theirs)  # exactly: the same float64 expressions, rounded to float32
    if params == "other" and steps_per_epoch > 1:
        assert len(set(mine.tolist())) > 1


def test_a_constant_rate_is_a_plain_float() -> None:
    _, ns = _exported({"schedule": "constant"})
    optimizer = ns["make_optimizer"](5)
    assert "LearningRate" not in ns and "lr_factor" not in ns
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == np.float32(1e-3)
    optimizer.learning_rate = 0.5  # settable, as a float rate is


def test_learning_rate_schedule_serialises() -> None:
    _, ns = _exported({"schedule": "cosine"})
    schedule = ns["LearningRate"](4)
    again = ns["LearningRate"].from_config(schedule.get_config())
    for step in (0, 3, 11, 100):
        assert float(schedule(step)) == float(again(step))


@pytest.mark.filterwarnings("ignore:The .* learning-rate schedule was stepped more often:RuntimeWarning")
def test_a_schedule_counted_in_epochs_holds_per_epoch() -> None:
    """A schedule whose source counts epochs (no registered one does yet) is tabulated per batch from the
    epoch counter, held after EPOCHS epochs."""
    from tuner.optim import _schedules

    def halves(step: int, h: Any, rate: float = 0.5) -> float:
        return rate ** step

    def halves_source(p: dict[str, Any]) -> Any:
        return _schedules.ScheduleSource("epoch", factor=(f"return {p['rate']!r} ** step",))

    _schedules._register("test-halves-keras", halves, {"rate": _schedules.FRACTION_POSITIVE}, "halves every epoch",
                         interval="epoch", source=halves_source, keras=_schedules._keras_factor)
    try:
        _, ns = _exported({"schedule": {"name": "test-halves-keras", "rate": 0.25}, "epochs": 2,
                           "optimizer": {"name": "sgd", "lr": 0.1}})
    finally:
        _schedules._REGISTRY._entries.pop("test-halves-keras")
    lrs = _keras_lrs(ns, 3, 12)
    assert lrs == pytest.approx([0.1] * 3 + [0.025] * 9, rel=1e-6)  # held at the last epoch's rate


# -- plateau: a callback that is torch's ReduceLROnPlateau, step for step --------------------------------------
PLATEAU_METRICS = [0.5, 0.6, 0.6, 0.55, 0.6, 0.61, 0.7, 0.7, 0.7, 0.7, 0.2, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1,
                   0.1, 0.1, 0.1, 0.1, 0.1, 0.1]


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("schedule", [{"name": "plateau"}, {"name": "plateau", "patience": 1, "factor": 0.5},
                                      {"name": "plateau", "patience": 0, "factor": 0.3, "threshold": 0.05},
                                      {"name": "plateau", "patience": 2, "factor": 0.01, "threshold": 0.0}])
def test_plateau_callback_lowers_the_rate_like_torch(mode: str, schedule: dict[str, Any]) -> None:
    config, ns = _exported({"optimizer": {"name": "sgd", "lr": 1e-5}, "schedule": schedule})
    assert "LearningRate" not in ns and get_schedule("plateau").keras_source(config.schedule.params).kind == "callback"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=ns["make_optimizer"](5), loss="mse")
    (callback,) = ns["make_callbacks"](monitor="val_metric", mode=mode)
    callback.set_model(model)
    optimizer, scheduler = config.build(nn.Linear(2, 1), steps_per_epoch=5, mode=mode)
    mine, theirs = [], []
    for epoch, metric in enumerate(PLATEAU_METRICS):
        callback.on_epoch_end(epoch, {"val_metric": metric})
        scheduler.step(metric)
        mine.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        theirs.append(optimizer.param_groups[0]["lr"])
    assert np.float32(mine).tolist() == np.float32(theirs).tolist()
    assert len(set(theirs)) > 1  # the sequence lowers the rate
    # Lowered to where torch stops (a change under 1e-8) with the first schedule: lr 1e-5 * 0.1**3 = 1e-8.
    if schedule == {"name": "plateau"} and mode == "min":
        assert min(theirs) == pytest.approx(1e-7)


def _plateau_rates(callback: Any, lr: float, metrics: list[float]) -> list[float]:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    callback.set_model(model)
    callback.on_train_begin()
    rates = []
    for epoch, metric in enumerate(metrics):
        callback.on_epoch_end(epoch, {"val_loss": metric})
        rates.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    return rates


def test_plateau_callback_stops_where_torch_stops_and_keras_builtin_does_not() -> None:
    """torch leaves the rate alone once a reduction would change it by under 1e-8; Keras's built-in callback
    keeps lowering it, and lowers it one epoch earlier for the same patience: why the export has its own."""
    metrics = [1.0] + [2.0] * 12
    config, ns = _exported({"optimizer": {"name": "sgd", "lr": 4e-8}, "schedule": {"name": "plateau", "patience": 1,
                                                                                  "factor": 0.5, "threshold": 0.0}})
    optimizer, scheduler = config.build(nn.Linear(2, 1), steps_per_epoch=1, mode="min")
    theirs = []
    for metric in metrics:
        scheduler.step(metric)
        theirs.append(optimizer.param_groups[0]["lr"])
    mine = _plateau_rates(ns["make_callbacks"]()[0], 4e-8, metrics)
    assert np.float32(mine).tolist() == np.float32(theirs).tolist()
    assert theirs[-1] == 2e-8  # 4e-8 -> 2e-8; then a change of 1e-8, not over 1e-8, is skipped
    builtin = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.5, patience=1, min_delta=0)
    keras_rates = _plateau_rates(builtin, 4e-8, metrics)
    assert keras_rates[1] == pytest.approx(2e-8) and theirs[1] == pytest.approx(4e-8)  # one epoch earlier
    shifted = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.5, patience=2, min_delta=0)
    keras_rates = _plateau_rates(shifted, 4e-8, metrics)
    assert keras_rates[:4] == pytest.approx(theirs[:4], rel=1e-6)  # patience + 1 matches torch's epochs...
    assert keras_rates[-1] < 0.1 * theirs[-1]  # ...but not torch's 1e-8 rule


def test_plateau_callback_needs_its_metric() -> None:
    _, ns = _exported({"schedule": "plateau"})
    (callback,) = ns["make_callbacks"]()
    with pytest.raises(ValueError, match="'val_loss', which fit\\(\\) did not report"):
        callback.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="mode"):
        ns["PlateauCallback"]("val_loss", "auto")


# -- the optimizers: one update after another, from the same weights and the same gradients ------------------
def _steps(name: str, params: dict[str, Any], n: int = 5, scale: float = 1.0, weight_decay: float = 0.0,
           torch_params: dict[str, Any] | None = None, adjust=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(Keras's weights, torch's weights) after each of n updates with the same gradients, from the same weights:
    a (4, 3) kernel and a (3,) bias. The torch optimizer is the one tuner builds (``torch_params`` overriding
    its hyperparameters); ``adjust(optimizer, t)`` may change its groups before step t."""
    config, ns = _exported({"optimizer": {"name": name, **params}, "regularization": {"weight_decay": weight_decay}})
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    grads = [[(scale * rng.normal(size=w.shape)).astype("float32") for w in start] for _ in range(n)]
    variables = [keras.Variable(w, name=label) for w, label in zip(start, ["kernel", "bias"], strict=True)]
    model = nn.Module()
    params_t = [nn.Parameter(torch.tensor(w)) for w in start]
    for i, p in enumerate(params_t):
        model.register_parameter(f"p{i}", p)
    keras_model = _Holder(variables)
    optimizer = ns["make_optimizer"](100, keras_model)
    hyper = {"lr": config.optimizer.lr, **config.optimizer.params, **(torch_params or {})}
    reference = build_optimizer(name, model, hyper, weight_decay)
    mine, theirs = [], []
    for t, grad in enumerate(grads, 1):
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grad], variables)
        if adjust is not None:
            adjust(reference, t)
        for p, g in zip(params_t, grad, strict=True):
            p.grad = torch.tensor(g)
        reference.step()
        mine.append(np.concatenate([keras.ops.convert_to_numpy(v).ravel() for v in variables]))
        theirs.append(np.concatenate([p.detach().numpy().ravel() for p in params_t]))
    return mine, theirs


class _Holder:
    """Stands for a built model holding the variables (what make_optimizer reads of one)."""

    built = True

    def __init__(self, variables: list[Any]) -> None:
        self.trainable_variables = variables


def _adam_eps(eps: float):
    """Keras's Adam is torch's with eps / sqrt(1 - beta_2**t) at step t (the documented epsilon-hat)."""
    def adjust(optimizer: torch.optim.Optimizer, t: int) -> None:
        for group in optimizer.param_groups:
            group["eps"] = eps / math.sqrt(1 - group["betas"][1] ** t)
    return adjust


def _optimizer_differences(config: TrainConfig) -> list[str]:
    """keras_differences but the default initialiser's (the configs here keep it)."""
    return [text for text in keras_differences(config) if not text.startswith("init default:")]


def _worst(mine: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3))) for a, b in zip(mine, theirs, strict=True))


@pytest.mark.parametrize("name", list(KERAS_OPTIMIZERS))
def test_optimizer_updates_like_torchs(name: str) -> None:
    """Five updates with tuner's hyperparameters (none at its default) give torch's weights, with the documented
    differences put into torch's optimizer where they apply: Adam's epsilon at step t is eps / sqrt(1 -
    beta_2**t), and Keras's Nadam is torch's with momentum_decay=1.0. The others need nothing: Adagrad's and
    RMSprop's epsilon = eps**2 under the root is torch's eps beside it for gradients far above eps, Adamax's
    epsilon moves its denominator by less than eps, and the momentum difference needs a changing rate."""
    params = OPTIMIZER_PARAMS[name]
    adjust = _adam_eps(params["eps"]) if name in ("adam", "adamw") else None
    torch_params = {"momentum_decay": 1.0} if name in ("nadam", "nadamw") else None
    mine, theirs = _steps(name, params, adjust=adjust, torch_params=torch_params)
    for step, (a, b) in enumerate(zip(mine, theirs, strict=True), 1):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"{name}, step {step}")
    assert not np.allclose(mine[-1], mine[0])


@pytest.mark.parametrize("name", ["sgd", "adamw", "nadamw"])
def test_decoupled_weight_decay_is_torchs_and_spares_the_bias(name: str) -> None:
    """Keras's weight_decay shrinks the weights by lr * weight_decay before the step: torch's AdamW and
    NAdam(decoupled_weight_decay=True), and for plain SGD the same as torch's coupled decay. The bias (1-d) is
    excluded, as tuner excludes it."""
    params = {**OPTIMIZER_PARAMS[name], "momentum_decay": 1.0} if name == "nadamw" else OPTIMIZER_PARAMS[name]
    adjust = _adam_eps(params["eps"]) if name == "adamw" else None
    mine, theirs = _steps(name, params, weight_decay=0.1, adjust=adjust)
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert not np.allclose(theirs[-1], _steps(name, params, adjust=adjust)[1][-1])  # the decay did something


def test_decoupled_weight_decay_needs_the_model() -> None:
    _, ns = _exported({"optimizer": "adamw", "regularization": {"weight_decay": 0.1}})
    with pytest.raises(ValueError, match="needs a built model"):
        ns["make_optimizer"](10)
    _, ns = _exported({"optimizer": "adamw"})
    assert float(ns["make_optimizer"](10).weight_decay) == 0.0  # not Keras's default 0.004


# -- each documented difference is what the export says ---------------------------------------------------------
def test_adam_epsilon_difference_is_epsilon_hat() -> None:
    """With a large eps the difference shows: Keras's Adam is not torch's with the same eps, but is torch's with
    eps / sqrt(1 - beta_2**t) at step t, as documented."""
    params = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-2}
    mine, theirs = _steps("adam", params, scale=0.05)
    assert _worst(mine, theirs) > 1e-3
    mine, theirs = _steps("adam", params, scale=0.05, adjust=_adam_eps(1e-2))
    assert _worst(mine, theirs) < RTOL
    (text,) = _optimizer_differences(TrainConfig.from_dict({"optimizer": {"name": "adam", **params}}))
    assert "eps / sqrt(1 - beta_2**t)" in text and "31.6 x eps at the first step" in text


@pytest.mark.parametrize("name", ["nadam", "nadamw"])
def test_nadam_momentum_decay_difference(name: str) -> None:
    params = OPTIMIZER_PARAMS[name]
    mine, theirs = _steps(name, params)
    assert _worst(mine, theirs) > 1e-3  # tuner's momentum_decay: not Keras's
    mine, theirs = _steps(name, params, torch_params={"momentum_decay": 1.0})
    assert _worst(mine, theirs) < RTOL
    config = TrainConfig.from_dict({"optimizer": {"name": name, **params}})
    assert any("momentum_decay=1.0" in text for text in keras_differences(config))
    assert _optimizer_differences(TrainConfig.from_dict({"optimizer": {"name": name, "momentum_decay": 1.0}})) == []


@pytest.mark.parametrize("name", ["adagrad", "rmsprop"])
def test_epsilon_under_the_root_differs_by_at_most_sqrt2(name: str) -> None:
    """Keras divides by sqrt(s + eps**2), torch by sqrt(s) + eps: the first step's ratio is (|g| + eps) /
    sqrt(g**2 + eps**2) for Adagrad (s = g**2), sqrt(2) where |g| = eps, and 1 far from it."""
    eps = 1e-3
    params = {"eps": eps} if name == "adagrad" else {"eps": eps, "alpha": 0.0}
    config = TrainConfig.from_dict({"optimizer": {"name": name, **params}})
    assert any("at most sqrt(2)" in t for t in keras_differences(config))
    largest = 0.0
    for scale in (eps, 1e4 * eps, 1e-4 * eps):
        lr = 1.0 if scale >= eps else 100.0  # steps large enough to measure on float32 weights
        mine, theirs = _steps(name, {**params, "lr": lr}, n=1, scale=scale)
        rng = np.random.default_rng(0)  # the weights and the gradient _steps drew
        start = np.concatenate([rng.normal(size=(4, 3)).ravel(), rng.normal(size=(3,)).ravel()]).astype("float32")
        g = np.abs(np.concatenate([rng.normal(size=(4, 3)).ravel(), rng.normal(size=(3,)).ravel()])) * scale
        measured = (mine[0] - start) / (theirs[0] - start)
        np.testing.assert_allclose(measured, (g + eps) / np.sqrt(g * g + eps * eps), rtol=1e-3)
        if scale != eps:
            assert np.all(np.abs(measured - 1) < 0.05)  # far from eps: nearly the same step
        largest = max(largest, float(measured.max()))
    assert 1.3 < largest <= math.sqrt(2) * (1 + 1e-3)
    assert math.sqrt(2) == pytest.approx(max((1 + x) / math.sqrt(1 + x * x) for x in np.linspace(0, 10, 10001)))


def test_adamax_epsilon_difference_is_bounded_by_eps() -> None:
    """The same first step; after it Keras divides by u + eps with u = max(beta_2 * u, |g|), torch by max(beta_2
    * u, |g| + eps): Keras's denominator is at least torch's and at most eps larger."""
    eps, lr, beta_1 = 0.05, 0.01, 0.9
    params = {"lr": lr, "betas": [beta_1, 0.99], "eps": eps}
    mine, theirs = _steps("adamax", params, scale=0.1)
    np.testing.assert_allclose(mine[0], theirs[0], rtol=RTOL, atol=ATOL)
    assert _worst(mine, theirs) > 1e-4
    # Replay both denominators from the steps: the change of the weights is lr / (1 - beta_1**t) * m / denominator.
    rng = np.random.default_rng(0)
    start = np.concatenate([rng.normal(size=(4, 3)).ravel(), rng.normal(size=(3,)).ravel()]).astype("float32")
    grads = [np.concatenate([0.1 * rng.normal(size=(4, 3)).ravel(), 0.1 * rng.normal(size=(3,)).ravel()])
             for _ in range(5)]
    m = np.zeros_like(start, dtype="float64")
    before_mine, before_theirs = start, start
    for t, (g, a, b) in enumerate(zip(grads, mine, theirs, strict=True), 1):
        m = beta_1 * m + (1 - beta_1) * g
        step = lr / (1 - beta_1**t) * m
        big = np.abs(step) > 1e-3  # steps large enough for float32 weights to measure them
        denominator_mine = step[big] / (before_mine - a)[big]
        denominator_theirs = step[big] / (before_theirs - b)[big]
        assert np.all(denominator_mine >= denominator_theirs * (1 - 1e-3))
        assert np.all(denominator_mine <= (denominator_theirs + eps) * (1 + 1e-3))
        before_mine, before_theirs = a, b


@pytest.mark.parametrize("name", ["momentum", "nesterov", "rmsprop"])
def test_momentum_with_a_changing_rate_differs_as_documented(name: str) -> None:
    """Keras keeps the learning rate inside the momentum buffer: the same updates while the rate is constant
    (test_optimizer_updates_like_torchs), and different ones once it changes. Replayed here with the formulas
    the export states, Keras's weights come out exactly; torch's do not."""
    params = ({"lr": 0.05, "alpha": 0.9, "momentum": 0.5, "eps": 1e-9} if name == "rmsprop"
              else OPTIMIZER_PARAMS[name])
    config = TrainConfig.from_dict({"optimizer": {"name": name, **params}, "schedule": "step"})
    assert any("momentum with a changing learning rate" in t for t in keras_differences(config))
    constant = TrainConfig.from_dict({"optimizer": {"name": name, **params}})
    assert not any("momentum" in t for t in keras_differences(constant))
    lrs = [0.05, 0.05, 0.01, 0.01, 0.002]  # a rate that drops, set before each step in both
    momentum = params["momentum"]
    _, ns = _exported(constant)
    rng = np.random.default_rng(1)
    w = rng.normal(size=5).astype("float32")
    grads = [rng.normal(size=5).astype("float32") for _ in lrs]
    variable = keras.Variable(w)
    optimizer = ns["make_optimizer"](1)
    param = nn.Parameter(torch.tensor(w))
    reference = build_optimizer(name, nn.ParameterList([param]), {"lr": lrs[0], **params})
    v = np.zeros(5)  # Keras's buffer, with the rate inside, as the export states
    square = np.zeros(5)
    documented = w.astype("float64")
    for lr, g in zip(lrs, grads, strict=True):
        optimizer.learning_rate = lr
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
        reference.param_groups[0]["lr"] = lr
        param.grad = torch.tensor(g)
        reference.step()
        if name == "rmsprop":  # m = momentum * m + lr * g / d; w -= m
            square = params["alpha"] * square + (1 - params["alpha"]) * g * g
            v = momentum * v + lr * g / np.sqrt(square)
            documented = documented - v
        else:  # v = momentum * v - lr * g; w += v (Nesterov: w += momentum * v - lr * g)
            v = momentum * v - lr * g
            documented = documented + (momentum * v - lr * g if name == "nesterov" else v)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), documented, rtol=1e-5)
    assert np.max(np.abs(documented - param.detach().numpy())) > 1e-3  # torch's differs


def test_clipping_differs_by_the_documented_factor() -> None:
    """global_clipnorm scales by clip / norm, torch by clip / (norm + 1e-6): visible with a tiny norm."""
    config = TrainConfig.from_dict({"optimizer": {"name": "sgd", "lr": 1.0}, "grad_clip_norm": 1e-4})
    _, ns = _exported(config)
    g = np.full(4, 5e-4, "float32")  # norm 1e-3
    variable = keras.Variable(np.zeros(4, "float32"))
    ns["make_optimizer"](1).apply([keras.ops.convert_to_tensor(g)], [variable])
    param = nn.Parameter(torch.zeros(4))
    param.grad = torch.tensor(g)
    nn.utils.clip_grad_norm_([param], 1e-4)
    keras_step, torch_step = -keras.ops.convert_to_numpy(variable), param.grad.numpy()
    np.testing.assert_allclose(keras_step / torch_step, 1 + 1e-6 / 1e-3, rtol=1e-5)
    assert any("clip / (norm + 1e-6)" in t for t in keras_differences(config))


# -- a training step of the model, end to end, against tuner's config.setup ----------------------------------
def _twin_models() -> tuple[nn.Module, Any]:
    """A torch MLP with a LayerNorm and the Keras model with the same weights (Dense kernels transposed)."""
    torch.manual_seed(0)
    torch_model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))
    keras_model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                                    keras.layers.LayerNormalization(epsilon=1e-5), keras.layers.Activation("tanh"),
                                    keras.layers.Dense(3)])
    with torch.no_grad():
        torch_model[1].weight.uniform_(0.5, 1.5)  # a norm scale and shift that are not 1 and 0
        torch_model[1].bias.uniform_(-0.5, 0.5)
    t = torch_model
    values = [t[0].weight.T, t[0].bias, t[1].weight, t[1].bias, t[3].weight.T, t[3].bias]
    for variable, value in zip(keras_model.trainable_variables, values, strict=True):
        variable.assign(value.detach().numpy())
    return torch_model, keras_model


def _keras_params(keras_model: Any) -> list[np.ndarray]:
    v = [keras.ops.convert_to_numpy(x) for x in keras_model.trainable_variables]
    return [v[0].T, v[1], v[2], v[3], v[4].T, v[5]]


END_TO_END = {
    "sgd": {"optimizer": {"name": "sgd", "lr": 0.2}, "grad_clip_norm": 0.5, "schedule": "onecycle",
            "regularization": {"weight_decay": 0.05, "l1": 1e-3}},
    "adam": {"optimizer": {"name": "adam", "lr": 1e-2, "betas": [0.8, 0.99]}, "schedule": "warmup_cosine",
             "regularization": {"weight_decay": 0.05, "l1": 1e-3}},
    "adamw": {"optimizer": {"name": "adamw", "lr": 1e-2}, "grad_clip_norm": 0.5, "schedule": "linear",
              "regularization": {"weight_decay": 0.1, "l1": 1e-3}},
    "nadamw": {"optimizer": {"name": "nadamw", "lr": 1e-2, "momentum_decay": 1.0}, "schedule": "cosine",
               "regularization": {"weight_decay": 0.1}, "grad_clip_norm": 0.5},
    "adagrad": {"optimizer": {"name": "adagrad", "lr": 0.1, "lr_decay": 0.05, "eps": 1e-12},
                "schedule": "polynomial", "regularization": {"weight_decay": 0.05, "l1": 1e-3}},
    "adadelta": {"optimizer": {"name": "adadelta", "lr": 1.0}, "schedule": "step",
                 "regularization": {"weight_decay": 0.05}},
    "rmsprop": {"optimizer": {"name": "rmsprop", "lr": 1e-2, "centered": True, "eps": 1e-12},
                "schedule": "cosine_restarts",
                "regularization": {"weight_decay": 0.05, "l1": 1e-3}},
    "momentum": {"optimizer": {"name": "momentum", "lr": 0.05}, "regularization": {"weight_decay": 0.05}},
}


@pytest.mark.parametrize("name", list(END_TO_END))
@pytest.mark.filterwarnings("ignore:The .* learning-rate schedule was stepped more often:RuntimeWarning")
def test_training_steps_match_tuners_setup(name: str) -> None:
    """fit()'s own training step (train_on_batch) with configure's L1/L2 terms, make_optimizer's weight decay,
    clipping and schedule, against tuner's config.setup stepping the same torch model on the same batches:
    the same weights after every step (Adam's epsilon put into torch as documented). Configs without a
    documented difference but Adam's epsilon; the biases and the norm layer are spared the penalties."""
    data = {**END_TO_END[name], "epochs": 2}
    config, ns = _exported(data)
    # Adam's epsilon is put into torch below; clipping's 1e-6 / norm, and Adagrad's and RMSprop's epsilon under
    # the root (eps = 1e-12 here, against gradients of 1e-4 and more: a relative 1e-8), are below float32's
    # precision (the tests above show each where it is not); the initialiser is not used (the weights are copied).
    allowed = ("epsilon: Keras's Adam", "gradient clipping:", "init default:", "epsilon: Keras's Adagrad",
               "epsilon: Keras's RMSprop")
    assert [t for t in keras_differences(config) if not t.startswith(allowed)] == []
    torch_model, keras_model = _twin_models()
    ns["apply_regularization"](keras_model)
    steps_per_epoch = 3
    keras_model.compile(optimizer=ns["make_optimizer"](steps_per_epoch, keras_model),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    training = config.setup(torch_model, steps_per_epoch=steps_per_epoch, init=False, dropout=False, seed=False)
    adjust = _adam_eps(config.optimizer.params.get("eps", 1e-8)) if name in ("adam", "adamw") else None
    rng = np.random.default_rng(3)
    for t in range(1, 2 * steps_per_epoch + 1):
        x = rng.normal(size=(16, 6)).astype("float32")
        y = rng.integers(0, 3, size=16)
        keras_model.train_on_batch(x, y)
        if adjust is not None:
            adjust(training.optimizer, t)
        xt, yt = torch.tensor(x), torch.tensor(y)
        training.step(lambda: nn.functional.cross_entropy(torch_model(xt), yt))  # noqa: B023
        theirs = [p.detach().numpy() for p in torch_model.parameters()]
        for a, b in zip(_keras_params(keras_model), theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6, err_msg=f"{name}, step {t}")


def test_coupled_weight_decay_with_clipping_differs_as_documented() -> None:
    """With clipping, torch adds Adam's weight_decay * w after clipping; here it is the L2 term's gradient,
    clipped with the rest: the same as torch with the L2 penalty in the loss (and no weight_decay)."""
    data = {"optimizer": {"name": "adagrad", "lr": 0.1}, "grad_clip_norm": 0.05,
            "regularization": {"weight_decay": 0.5}, "epochs": 1}
    config, ns = _exported(data)
    assert any("clipped with the rest of the gradient" in t for t in keras_differences(config))
    torch_model, keras_model = _twin_models()
    penalised = copy.deepcopy(torch_model)  # trained the documented way
    ns["apply_regularization"](keras_model)
    keras_model.compile(optimizer=ns["make_optimizer"](1, keras_model),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    training = config.setup(torch_model, steps_per_epoch=1, init=False, dropout=False, seed=False)
    documented = build_optimizer("adagrad", penalised, {"lr": 0.1}, 0.0)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 3, size=16)
    keras_model.train_on_batch(x, y)
    xt, yt = torch.tensor(x), torch.tensor(y)
    training.step(lambda: nn.functional.cross_entropy(torch_model(xt), yt))
    from tuner.regularization import l2_penalty

    loss = nn.functional.cross_entropy(penalised(xt), yt) + l2_penalty(penalised, 0.5)
    loss.backward()
    nn.utils.clip_grad_norm_(list(penalised.parameters()), 0.05)
    documented.step()
    mine = _keras_params(keras_model)
    for a, b in zip(mine, [p.detach().numpy() for p in penalised.parameters()], strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)
    assert max(float(np.max(np.abs(a - p.detach().numpy())))
               for a, p in zip(mine, torch_model.parameters(), strict=True)) > 1e-4


def test_regularizer_terms_are_tuners_penalty() -> None:
    """model.losses after configure: tuner's L1 penalty, plus its L2 term where the weight decay is coupled."""
    from tuner.regularization import l2_penalty

    for data, coupled in [({"optimizer": "adam", "regularization": {"weight_decay": 0.01, "l1": 1e-3}}, True),
                          ({"optimizer": "adamw", "regularization": {"weight_decay": 0.01, "l1": 1e-3}}, False),
                          ({"optimizer": "lbfgs", "regularization": {"weight_decay": 0.01}}, True)]:
        config, ns = _exported(data)
        torch_model, keras_model = _twin_models()
        ns["apply_regularization"](keras_model)
        with torch.no_grad():
            expected = float(config.l1_penalty(torch_model)) + (
                float(l2_penalty(torch_model, 0.01)) if coupled else 0.0)
        mine = float(sum(keras.ops.convert_to_numpy(loss) for loss in keras_model.losses))
        assert mine == pytest.approx(expected, rel=1e-5)
    _, ns = _exported({"optimizer": "adamw", "regularization": {"weight_decay": 0.01}})
    assert ns["regularizer"]() is None


# -- initialisation and dropout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", ["defaults", "other"])
@pytest.mark.parametrize("name", list_inits())
def test_initializer_draws_tuners_distribution(name: str, params: str) -> None:
    """Keras's initializer on a Dense kernel (300, 200) and a Conv2D kernel (3, 3, 16, 32) draws from the
    distribution tuner's draws from on the Linear (200, 300) and Conv2d (32, 16, 3, 3) weights: the same
    standard deviation and range (statistically: 60,000 and 4,608 samples), orthogonal where tuner's is."""
    init = {"name": name, **(INIT_PARAMS[name] if params == "other" else {})}
    config, ns = _exported({"init": init})
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    for keras_shape, torch_layer in [((300, 200), nn.Linear(300, 200)), ((3, 3, 16, 32), nn.Conv2d(16, 32, 3))]:
        mine = keras.ops.convert_to_numpy(ns["initializer"]()(keras_shape, dtype="float32"))
        config.apply_init(torch_layer)
        theirs = torch_layer.weight.detach().numpy()
        assert mine.std() == pytest.approx(theirs.std(), rel=0.05)
        assert abs(mine.mean()) < 0.05 * theirs.std()
        if name in ("uniform", "xavier_uniform", "kaiming_uniform", "default"):
            assert np.abs(mine).max() == pytest.approx(np.abs(theirs).max(), rel=0.02)
        if name == "trunc_normal":  # cut at 2 std; Keras's torch backend keeps a value once in 4e-6 draws
            bound = 2 * config.init.params.get("std", 0.02)
            assert np.mean(np.abs(mine) > bound) < 1e-3 and np.abs(theirs).max() <= bound
        if name == "orthogonal":
            gain = config.init.params.get("gain", 1.0)
            flat = mine.reshape(-1, mine.shape[-1])  # (fan_in, out): orthonormal columns when taller
            small = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
            np.testing.assert_allclose(small, gain**2 * np.eye(len(small)), atol=1e-4)


def test_configure_seeds_draws_weights_sets_dropout_and_penalties() -> None:
    config, ns = _exported({"init": {"name": "kaiming_uniform", "mode": "fan_in"}, "seed": 5,
                            "regularization": {"dropout": 0.35, "l1": 1e-3}})
    def build() -> Any:
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.AlphaDropout(0.1)])
        return keras.Sequential([
            keras.Input((5,), dtype="int32"), keras.layers.Embedding(50, 4), keras.layers.Flatten(),
            keras.layers.Dense(4, bias_initializer="ones"), keras.layers.Dropout(0.1), inner,
            keras.layers.GaussianDropout(0.1), keras.layers.BatchNormalization(), keras.layers.Dense(2)])

    model = ns["configure"](build())
    weights = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    again = {v.path: keras.ops.convert_to_numpy(v) for v in ns["configure"](build()).trainable_variables}
    # Seeded: the same weights for the same architecture (paths differ between builds, values do not).
    assert all(np.array_equal(a, b) for a, b in zip(weights.values(), again.values(), strict=True))
    embeddings = next(v for k, v in weights.items() if k.endswith("embeddings"))
    # He uniform with torch's fan_in of an embedding table: its dimension (4), not the vocabulary (50).
    assert np.abs(embeddings).max() == pytest.approx(math.sqrt(6 / 4), rel=0.1)
    for key, value in weights.items():
        if key.endswith("bias"):
            assert not value.any(), key  # zero, as tuner sets them
        if key.endswith("gamma"):
            assert (value == 1).all(), key  # norm layers untouched
    rates = {type(layer).__name__: layer.rate for layer in ns["all_layers"](model) if hasattr(layer, "rate")}
    assert rates == {"Dropout": 0.35, "AlphaDropout": 0.35, "GaussianDropout": 0.1}
    assert len(model.losses) == len(ns["weight_variables"](model)) == 4  # embeddings and three kernels
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="needs a built model"):
        ns["configure"](unbuilt)


def test_default_init_is_pytorchs_linear_default_and_says_what_is_not() -> None:
    config, ns = _exported({"optimizer": "sgd"})
    (text,) = keras_differences(config)
    assert text.startswith("init default:") and "embeddings N(0, 1)" in text
    model = keras.Sequential([keras.Input((400,)), keras.layers.Dense(300, bias_initializer="ones")])
    ns["configure"](model)
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in model.trainable_variables)
    assert np.abs(kernel).max() == pytest.approx(1 / math.sqrt(400), rel=0.01)  # U(+-1/sqrt(fan_in))
    assert (bias == 1).all()  # default leaves biases alone


# -- running it --------------------------------------------------------------------------------------------------
FIT_CONFIGS = {
    "adamw-full": FULL,
    "momentum-plateau": PLATEAU,
    "adagrad-decay": {"optimizer": {"name": "adagrad", "lr": 0.05, "lr_decay": 0.01}, "schedule": "onecycle",
                      "regularization": {"weight_decay": 1e-3}, "grad_clip_norm": 1.0},
    "rmsprop-orthogonal": {"optimizer": {"name": "rmsprop", "momentum": 0.5}, "init": "orthogonal",
                           "schedule": "polynomial"},
}


@pytest.mark.parametrize("data", FIT_CONFIGS.values(), ids=FIT_CONFIGS.keys())
def test_fit_trains_for_an_epoch(data: dict[str, Any]) -> None:
    """The usage of the header: configure, compile with make_optimizer, fit with make_callbacks."""
    config, ns = _exported({**data, "epochs": 2, "batch_size": 32})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.5),
                              keras.layers.Dense(2)])
    ns["configure"](model)
    steps = math.ceil(192 / ns["BATCH_SIZE"])
    model.compile(optimizer=ns["make_optimizer"](steps, model),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x[:192], y[:192], batch_size=ns["BATCH_SIZE"], epochs=ns["EPOCHS"], verbose=0,
                        validation_data=(x[192:], y[192:]), callbacks=ns["make_callbacks"]())
    losses = history.history["loss"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2 * steps


def test_a_dropout_layer_built_with_rate_zero_drops_after_configure() -> None:
    """Models written as tuner's objectives are (a Dropout(0.0) for tuner to set) train with the exported rate:
    Keras gives a Dropout built with rate 0 no random generator, and a built layer takes no new state."""
    config, ns = _exported({"optimizer": "adam", "regularization": {"dropout": 0.5}, "epochs": 1, "batch_size": 16})
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dropout(0.0),
                              keras.layers.Dense(2)])
    ns["configure"](model)
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    model.compile(optimizer=ns["make_optimizer"](4, model),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, (x[:, 0] > 0).astype("int32"), batch_size=16, epochs=1, verbose=0)
    train = [keras.ops.convert_to_numpy(model(x, training=True)) for _ in range(2)]
    infer = keras.ops.convert_to_numpy(model(x, training=False))
    assert not np.allclose(train[0], train[1]) and np.allclose(infer, keras.ops.convert_to_numpy(model(x)))


def test_no_keras_optimizer_raises_and_the_rest_works() -> None:
    for name in sorted(NO_KERAS):
        config, ns = _exported({"optimizer": {"name": name, **OPTIMIZER_PARAMS[name]},
                                "regularization": {"weight_decay": 1e-3, "l1": 1e-4}})
        (text, *_) = keras_differences(config)
        assert text.startswith(f"the {name} optimizer has no Keras equivalent")
        with pytest.raises(NotImplementedError, match="no Keras equivalent"):
            ns["make_optimizer"](10)
        model = ns["configure"](keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        # L-BFGS and RAdam take weight decay as L2 (tuner's penalty, torch's coupled decay); the others decouple it.
        assert len(model.losses) == 1
        assert ns["regularizer"]().l2 == (5e-4 if name in ("lbfgs", "radam") else 0.0)


@pytest.mark.slow
def test_runs_as_a_script_without_tuner(tmp_path: Path) -> None:
    """`python exported.py` without KERAS_BACKEND, where TensorFlow is not installed (the file picks the torch
    backend) and importing tuner fails: the demo fits one epoch."""
    (tmp_path / "tuner.py").write_text('raise ImportError("the exported script imported tuner")\n')
    for i, data in enumerate([FULL, PLATEAU, LBFGS]):
        (tmp_path / f"exported_{i}.py").write_text(keras_snippet(TrainConfig.from_dict(data), title="a study"))
    driver = ("import runpy, sys\n"
              "for i in range(3):\n"
              "    runpy.run_path(f'exported_{i}.py', run_name='__main__')\n"
              "assert 'tuner' not in sys.modules\n")
    (tmp_path / "driver.py").write_text(driver + "assert keras.backend.backend() == 'torch'\n".replace(
        "keras", "sys.modules['keras']"))
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"} | {"PYTHONPATH": ""}
    run = subprocess.run([sys.executable, "driver.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("val_loss") >= 2
    assert "no Keras optimizer for these settings: the lbfgs optimizer has no Keras equivalent" in run.stdout


# -- the command line ------------------------------------------------------------------------------------------
LBFGS_SPACE = "optimizer:\n  lbfgs:\n    lr: {low: 0.1, high: 1.0, log: true}\nbatch_size: {choices: [32]}\n"


@pytest.mark.slow
def test_cli_exports_keras_with_one_warning_per_difference(objective_ref: str, space_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tuner.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'k.db'}"
    (tmp_path / "lbfgs.yaml").write_text(LBFGS_SPACE)
    for name, space in [("k", str(space_file)), ("kl", "lbfgs.yaml")]:
        args = ["study", "create", "--objective", objective_ref, "--n-trials", "2", "--epochs", "1", "--storage", url,
                "--sampler", "random", "--device", "cpu", "--name", name, "--space", space]
        created = runner.invoke(app, args)
        assert created.exit_code == 0, created.output

    result = runner.invoke(app, ["study", "export", "k", "--storage", url, "--format", "keras", "--no-confirm", "-o",
                                 "out.py"])
    assert result.exit_code == 0, result.output
    source = (tmp_path / "out.py").read_text()
    compile(source, "out.py", "exec")
    assert "Recommended optimizer settings from a tuner study, for Keras: study 'k', trial" in source
    config = TrainConfig.from_dict(_config_dict(source))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: keras export: {text}" for text in keras_differences(config)]
    assert "wrote out.py" in result.stderr

    result = runner.invoke(app, ["study", "export", "kl", "--storage", url, "--format", "keras", "--no-confirm"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('"""Recommended optimizer settings from a tuner study, for Keras')
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    config = TrainConfig.from_dict(_config_dict(result.stdout))
    assert config.optimizer.name == "lbfgs"
    assert warnings == [f"warning: keras export: {text}" for text in keras_differences(config)]
    assert warnings[0].startswith("warning: keras export: the lbfgs optimizer has no Keras equivalent: Keras has no "
                                  "L-BFGS")
    assert "# Differs from tuner: the lbfgs optimizer has no Keras equivalent" in result.stdout

    # The exported file runs: a 1-epoch fit of its demo, on the torch backend, without tuner.
    (tmp_path / "tuner.py").write_text('raise ImportError("the exported script imported tuner")\n')
    env = {**os.environ, "PYTHONPATH": "", "KERAS_BACKEND": "torch"}
    run = subprocess.run([sys.executable, "out.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "val_loss" in run.stdout


def _config_dict(source: str) -> dict[str, Any]:
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CONFIG")
    return ast.literal_eval(node.value)


def test_the_backend_choice_leaves_a_users_own_alone(tmp_path: Path) -> None:
    """KERAS_BACKEND, or a keras.json naming an installed backend, is the user's choice; only where neither is
    given and TensorFlow is missing does the file pick torch."""
    source = keras_snippet(TrainConfig())
    head = source[source.index("import importlib.util"):source.index("import keras  # noqa")]
    home = tmp_path / "keras-home"
    home.mkdir()
    cases = [({"KERAS_BACKEND": "jax"}, None, "jax"), ({}, "numpy", "numpy"), ({}, None, "torch"),
             ({}, "not-installed", "torch")]
    for env, named, expected in cases:
        if named:
            (home / "keras.json").write_text(json.dumps({"backend": named}))
        elif (home / "keras.json").exists():
            (home / "keras.json").unlink()
        environ = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | {"KERAS_HOME": str(home)} | env
        script = head + "print(os.environ.get('KERAS_BACKEND') or json.load(open(os.path.join("  \
            "os.environ['KERAS_HOME'], 'keras.json')))['backend'])\n"
        run = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == expected, (env, named, run.stdout)
