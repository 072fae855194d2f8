"""python_snippet: the standalone PyTorch code rebuilds exactly what TrainConfig builds."""

from __future__ import annotations

import copy
import math
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from _export_cases import FULL, INIT_PARAMS, OPTIMIZER_PARAMS, SCHEDULE_PARAMS
from torch import nn

from tuner import TrainConfig
from tuner.export import python_snippet
from tuner.init import list_inits
from tuner.optim import list_optimizers, list_schedules

LBFGS_PLATEAU = {
    "optimizer": {"name": "lbfgs", "lr": 0.5, "line_search_fn": "strong_wolfe", "history_size": 5},
    "schedule": {"name": "plateau", "patience": 1, "factor": 0.5},
    "init": "xavier_uniform",
    "regularization": {"weight_decay": 1e-4, "l1": 1e-5},
    "grad_clip_norm": 5.0,
    "epochs": 4,
}

CONFIGS: list[dict[str, Any]] = [
    {},
    FULL,
    LBFGS_PLATEAU,
    # Every optimizer with defaults and weight decay (two groups; L-BFGS: an L2 penalty), and without.
    *({"optimizer": name, "regularization": {"weight_decay": 0.01}} for name in list_optimizers()),
    *({"optimizer": name, "regularization": {"l1": 1e-4}} for name in list_optimizers()),
    # Non-default optimizer hyperparameters; an lr whose repr needs all 17 digits.
    {"optimizer": {"name": "adam", "lr": 0.1 + 0.2, "amsgrad": True, "betas": [0.8, 0.9]}},
    {"optimizer": {"name": "nesterov", "momentum": 0.95, "lr": 0.05}, "regularization": {"weight_decay": 5e-4}},
    {"optimizer": {"name": "momentum", "momentum": 0.5}},
    {"optimizer": {"name": "rmsprop", "centered": True, "momentum": 0.9, "alpha": 0.95, "eps": 1e-6}},
    {"optimizer": {"name": "adagrad", "lr_decay": 1e-3, "initial_accumulator_value": 0.1, "eps": 1e-9}},
    {"optimizer": {"name": "adadelta", "rho": 0.95}},
    {"optimizer": {"name": "nadam", "momentum_decay": 1e-3}, "regularization": {"weight_decay": 1e-3, "l1": 1e-5}},
    {"optimizer": {"name": "lbfgs", "max_iter": 2}, "regularization": {"weight_decay": 1e-3}},
    # Every schedule with defaults, and with other values (warmup, restarts that grow, no-op terms).
    *({"schedule": name, "epochs": 3} for name in list_schedules()),
    {"schedule": {"name": "constant", "warmup_fraction": 0.25}, "epochs": 3},
    {"schedule": {"name": "step", "step_size": 1, "gamma": 0.5, "warmup_fraction": 0.2}, "epochs": 4},
    {"schedule": {"name": "step", "step_size": 2, "gamma": 0.3}, "epochs": 5},
    {"schedule": {"name": "multistep", "milestones": [0.3, 0.6], "gamma": 0.2, "warmup_fraction": 0.1}},
    {"schedule": {"name": "exponential", "gamma": 0.9, "warmup_fraction": 0.05}, "epochs": 6},
    {"schedule": {"name": "cosine", "min_lr_ratio": 0.05, "warmup_fraction": 0.1}, "epochs": 3},
    {"schedule": {"name": "cosine_restarts", "t0_epochs": 1, "t_mult": 2, "min_lr_ratio": 0.1}, "epochs": 5},
    {"schedule": {"name": "cosine_restarts", "t0_epochs": 2, "t_mult": 1}, "epochs": 5},
    {"schedule": {"name": "linear", "end_factor": 0.1, "warmup_fraction": 0.0}, "epochs": 3},
    {"schedule": {"name": "warmup_cosine", "warmup_fraction": 0.3, "min_lr_ratio": 0.0}, "epochs": 2},
    {"schedule": {"name": "onecycle", "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0}},
    {"schedule": {"name": "polynomial", "power": 2.0, "end_factor": 0.1, "warmup_fraction": 0.1}, "epochs": 3},
    {"schedule": {"name": "polynomial", "power": 0.5}, "epochs": 2},
    {"schedule": {"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.01}},
    # Every initialiser with defaults, and with other values.
    *({"init": name} for name in list_inits()),
    {"init": {"name": "uniform", "scale": 0.1}},
    {"init": {"name": "normal", "std": 0.05}},
    {"init": {"name": "xavier_normal", "nonlinearity": "tanh"}},
    {"init": {"name": "kaiming_uniform", "mode": "fan_out", "nonlinearity": "leaky_relu"}},
    {"init": {"name": "orthogonal", "gain": 0.5}},
    {"init": {"name": "trunc_normal", "std": 0.1}},
    # Regularisation and clipping.
    {"regularization": {"dropout": 0.3}},
    {"regularization": {"dropout": 0.0, "l1": 1e-3, "weight_decay": 0.1}, "optimizer": "adam"},
    {"grad_clip_norm": 0.5, "batch_size": 8, "seed": 12345},
]
IDS = [f"{i}-{TrainConfig.from_dict(c).summary().replace(' ', '_')}" for i, c in enumerate(CONFIGS)]
SUBPROCESS_CONFIGS = [FULL, LBFGS_PLATEAU]


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.LayerNorm(16), nn.Dropout(0.1), nn.Linear(16, 3))


def _zoo() -> nn.ModuleDict:
    """Every kind of layer the initialisers touch, and some they do not."""
    return nn.ModuleDict({
        "mlp": _model(),
        "embedding": nn.Embedding(10, 4),
        "padded": nn.Embedding(10, 4, padding_idx=2),
        "conv": nn.Conv1d(4, 6, 3),
        "deconv": nn.ConvTranspose2d(2, 3, 2),
        "gru": nn.GRU(4, 5),
        "bilinear": nn.Bilinear(3, 4, 2),
        "norm": nn.BatchNorm1d(4),
        "dropouts": nn.Sequential(nn.Dropout2d(0.1), nn.AlphaDropout(0.1), nn.Dropout1d(0.2)),
    })


def _snippet(config: TrainConfig, folder: Path, title: str = "") -> tuple[str, dict[str, Any]]:
    """The source for ``config`` and the namespace it defines, run from a file as users would."""
    source = python_snippet(config, title=title)
    path = folder / "snippet.py"
    path.write_text(source)
    return source, runpy.run_path(str(path))


@pytest.fixture(scope="module", params=CONFIGS, ids=IDS)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, str, dict]:
    """(config, source, namespace), made once per config for all the tests below."""
    config = TrainConfig.from_dict(request.param)
    return (config, *_snippet(config, tmp_path_factory.mktemp("snippet")))


@pytest.fixture
def config(case: tuple[TrainConfig, str, dict]) -> TrainConfig:
    return case[0]


@pytest.fixture
def ns(case: tuple[TrainConfig, str, dict]) -> dict[str, Any]:
    return case[2]


def _hyper(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params"}


def _lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


# -- the module ------------------------------------------------------------------------------------------
def test_defines_the_documented_names(case: tuple[TrainConfig, str, dict]) -> None:
    config, source, ns = case
    assert "import tuner" not in source and "from tuner" not in source
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"math", "random", "torch"}
    # NumPy is seeded when it is installed, and only then imported.
    assert [line.strip() for line in source.splitlines() if "numpy" in line and "import" in line] == ["import numpy"]
    assert "    try:\n        import numpy\n    except ImportError:" in source
    assert ns["CONFIG"] == config.to_dict()
    assert TrainConfig.from_dict(ns["CONFIG"]) == config
    assert (ns["BATCH_SIZE"], ns["EPOCHS"], ns["SEED"]) == (config.batch_size, config.epochs, config.seed)
    assert ns["GRAD_CLIP_NORM"] == config.grad_clip_norm
    for name in ("apply_init", "apply_dropout", "build", "penalty", "seed_everything", "setup", "TrainingSetup",
                 "train"):
        assert callable(ns[name]), name
    assert max(len(line) for line in source.splitlines()) <= 120


def test_header_names_the_title_and_a_hostile_title_stays_a_comment(tmp_path: Path) -> None:
    config = TrainConfig.from_dict(FULL)
    source, _ = _snippet(config, tmp_path, title="digits-mlp")
    assert source.startswith('"""Recommended optimizer settings from a tuner study: digits-mlp.')
    assert config.summary() in source
    source, ns = _snippet(config, tmp_path, title='evil """\nraise SystemExit(1) \\')
    assert ns["__doc__"].startswith("Recommended optimizer settings from a tuner study: evil")
    assert "SystemExit" in ns["__doc__"]
    assert python_snippet(config).startswith('"""Recommended optimizer settings from a tuner study.\n')


def test_the_header_names_what_the_script_needs_and_a_schedule_free_loop_evaluates_the_averaged_weights() -> None:
    """The header's loop is what a reader copies: a schedule-free optimizer's includes training.eval(), and a
    script that imports a package besides PyTorch says which."""
    plain = python_snippet(TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 1e-3}}))
    assert "needs only PyTorch." in plain and "training.eval(" not in plain.split('"""')[1]
    for name, package in (("schedulefree_adamw", "schedulefree"), ("prodigy", "prodigyopt")):
        pytest.importorskip(package)
        source = python_snippet(TrainConfig.from_dict({"optimizer": {"name": name, "lr": 1.0}}))
        header = source.split('"""')[1]
        assert f"needs PyTorch and the {package!r} package (pip install {package})" in header
        assert f"import {package}" in source and "needs only PyTorch" not in source
        loop = header[header.index("for epoch in range(EPOCHS):"):header.index("training.end_epoch")]
        assert ("training.eval(itertools.islice(train_loader, 50))" in loop) == (name == "schedulefree_adamw"), loop


def test_rejects_anything_but_a_train_config() -> None:
    with pytest.raises(TypeError, match="TrainConfig"):
        python_snippet(FULL)  # type: ignore[arg-type]


# -- build: the optimizer ----------------------------------------------------------------------------------
def test_build_gives_the_same_optimizer_and_groups(config: TrainConfig, ns: dict[str, Any]) -> None:
    model = _model()
    model[2].bias.requires_grad_(False)  # frozen parameters are left out by both
    mine, mine_sched = ns["build"](model, 4)
    theirs, theirs_sched = config.build(model, steps_per_epoch=4)
    assert type(mine) is type(theirs)
    assert type(mine_sched) is type(theirs_sched)
    assert mine.defaults == theirs.defaults
    assert len(mine.param_groups) == len(theirs.param_groups)
    for a, b in zip(mine.param_groups, theirs.param_groups, strict=True):
        assert _hyper(a) == _hyper(b)
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
    assert all(p is not model[2].bias for group in mine.param_groups for p in group["params"])


def test_build_on_a_model_without_biases_drops_the_empty_group(tmp_path: Path) -> None:
    config = TrainConfig.from_dict({"optimizer": "adamw", "regularization": {"weight_decay": 0.1}})
    _, ns = _snippet(config, tmp_path)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    mine, _ = ns["build"](model, 1)
    theirs, _ = config.build(model, steps_per_epoch=1)
    assert len(mine.param_groups) == len(theirs.param_groups) == 1
    assert _hyper(mine.param_groups[0]) == _hyper(theirs.param_groups[0])


# -- build: the schedule -------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps_per_epoch", [1, 7])
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
@pytest.mark.filterwarnings("ignore:The .* learning-rate schedule was stepped more often:RuntimeWarning")
def test_schedule_gives_the_same_lr_at_every_step(config: TrainConfig, ns: dict[str, Any],
                                                  steps_per_epoch: int) -> None:
    model = _model()
    mine, mine_sched = ns["build"](model, steps_per_epoch)
    theirs, theirs_sched = config.build(model, steps_per_epoch=steps_per_epoch)
    if config.schedule.interval == "epoch":
        # plateau steps on a metric, not per batch: compared with a metric sequence below
        assert type(mine_sched) is type(theirs_sched) is torch.optim.lr_scheduler.ReduceLROnPlateau
        return
    steps = config.epochs * steps_per_epoch + 3  # and a few past the end of training, where both hold
    for step in range(steps + 1):
        expected = _lrs(theirs)
        assert _lrs(mine) == pytest.approx(expected, rel=1e-12, abs=0.0), f"step {step}"
        mine_sched.step()
        theirs_sched.step()


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("schedule", [{"name": "plateau"}, LBFGS_PLATEAU["schedule"],
                                      {"name": "plateau", "patience": 0, "factor": 0.3, "threshold": 0.05}])
def test_plateau_reacts_to_the_metric_like_tuners(tmp_path: Path, mode: str, schedule: dict) -> None:
    config = TrainConfig.from_dict({"optimizer": "momentum", "schedule": schedule,
                                    "regularization": {"weight_decay": 1e-3}})
    _, ns = _snippet(config, tmp_path)
    model = _model()
    mine, mine_sched = ns["build"](model, 5, mode=mode)
    theirs, theirs_sched = config.build(model, steps_per_epoch=5, mode=mode)
    assert isinstance(mine_sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert mine_sched.state_dict() == theirs_sched.state_dict()
    metrics = [0.5, 0.6, 0.6, 0.55, 0.6, 0.61, 0.7, 0.7, 0.7, 0.7, 0.2, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
    changed = False
    for metric in metrics:
        mine_sched.step(metric)
        theirs_sched.step(metric)
        assert _lrs(mine) == pytest.approx(_lrs(theirs), rel=1e-12, abs=0.0)
        changed = changed or _lrs(theirs)[0] != config.optimizer.lr
    assert changed  # the sequence exercises a reduction
    # The default mode is tuner's default, "max".
    assert ns["build"](model, 5)[1].mode == config.build(model, steps_per_epoch=5)[1].mode == "max"


# -- initialisation, dropout, penalty -------------------------------------------------------------------------
def test_apply_init_draws_the_same_weights(config: TrainConfig, ns: dict[str, Any]) -> None:
    torch.manual_seed(5)
    mine = _zoo()
    torch.manual_seed(5)
    theirs = _zoo()
    before = {k: v.clone() for k, v in theirs.state_dict().items()}
    torch.manual_seed(11)
    ns["apply_init"](mine)
    torch.manual_seed(11)
    config.apply_init(theirs)
    for (name, a), (other, b) in zip(mine.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert name == other and torch.equal(a, b), name
    changed = any(not torch.equal(before[k], v) for k, v in theirs.state_dict().items())
    assert changed == (config.init.name != "default")
    # An embedding's padding row gets no gradient: it stays zero, as nn.Embedding makes it, under every init.
    assert not theirs["padded"].weight[2].any() and not mine["padded"].weight[2].any()


def test_apply_init_leaves_frozen_parameters_as_they_are(config: TrainConfig, ns: dict[str, Any]) -> None:
    """A pretrained layer frozen with requires_grad_(False) was drawn anew, and trained no more: random for
    good, without a word."""
    for init in (ns["apply_init"], config.apply_init):
        model = _zoo()
        frozen = next(m for m in model.modules() if isinstance(m, nn.Linear))
        frozen.requires_grad_(False)
        before = [p.clone() for p in frozen.parameters()]
        init(model)
        assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters(), strict=True))


def test_apply_init_consumes_the_generator_like_tuner(config: TrainConfig, ns: dict[str, Any]) -> None:
    torch.manual_seed(3)
    ns["apply_init"](_zoo())
    after_mine = torch.rand(4)
    torch.manual_seed(3)
    config.apply_init(_zoo())
    assert torch.equal(after_mine, torch.rand(4))


def test_apply_dropout_sets_the_same_rates(config: TrainConfig, ns: dict[str, Any]) -> None:
    mine, theirs = _zoo(), _zoo()
    ns["apply_dropout"](mine)
    config.apply_dropout(theirs)
    rates = [(name, getattr(m, "p", None)) for name, m in mine.named_modules()]
    assert rates == [(name, getattr(m, "p", None)) for name, m in theirs.named_modules()]
    if config.regularization.dropout is not None:
        assert mine["mlp"][3].p == mine["dropouts"][1].p == config.regularization.dropout


def test_penalty_is_tuners(config: TrainConfig, ns: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = _model()
    model[0].weight.requires_grad_(False)  # frozen weights carry no penalty in either
    mine, theirs = ns["penalty"](model), config.penalty(model)
    assert type(mine) is type(theirs)
    if isinstance(theirs, float):
        assert mine == theirs == 0.0
    else:
        assert mine.item() == pytest.approx(theirs.item(), rel=1e-12, abs=0.0)
        assert mine.requires_grad


# -- running it -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [FULL, LBFGS_PLATEAU, {"optimizer": "momentum", "schedule": "onecycle"}],
                         ids=["adamw", "lbfgs-plateau", "momentum-onecycle"])
def test_train_reduces_the_loss(tmp_path: Path, data: dict, capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig.from_dict({**data, "epochs": 5, "batch_size": 32})
    _, ns = _snippet(config, tmp_path)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=generator)
    y = (x[:, :2].sum(dim=1) > 0).long() + (x[:, 2] > 1).long()  # three classes, nearly separable
    x_val, y_val = x[192:], y[192:]
    x, y = x[:192], y[:192]

    def fresh_start() -> nn.Module:
        torch.manual_seed(1)
        model = _model()
        torch.manual_seed(config.seed)  # train() seeds the same way before its initialisation
        ns["apply_init"](model)
        return model.eval()

    with torch.no_grad():
        loss_before = nn.functional.cross_entropy(fresh_start()(x), y).item()
    torch.manual_seed(1)
    model = _model()
    trained = ns["train"](model, x, y, x_val=x_val, y_val=y_val)
    assert trained is model
    with torch.no_grad():
        loss_after = nn.functional.cross_entropy(trained.eval()(x), y).item()
    assert math.isfinite(loss_after) and loss_after < 0.7 * loss_before
    out = capsys.readouterr().out
    assert out.count("validation loss") == config.epochs


@pytest.mark.parametrize("name", ['x"""; import os; os.system("touch /tmp/tuner-snippet-pwned")  #',
                                  'ends with a quote"', "back\\slash\\", "line\u2028separator\u2029and\x85nel"])
def test_a_hostile_study_name_in_the_title_stays_text(name: str):
    """The study name goes into the exported file's docstring: quotes, backslashes and Unicode line breaks
    cannot end the docstring early or add code."""
    import ast

    source = python_snippet(TrainConfig(), title=f"study {name!r}, trial 3")
    module = ast.parse(source)
    docstring = ast.get_docstring(module) or ""
    assert "study " in docstring and "trial 3" in docstring
    assert "system" not in {n.attr for n in ast.walk(module) if isinstance(n, ast.Attribute)}
    assert not any(isinstance(n, ast.Import) and any(a.name == "os" for a in n.names) for n in ast.walk(module))


# -- setup: the training step, for every registered schedule, initialiser and optimizer ----------------------
# One validation metric per epoch (lower is better) that makes a patient plateau schedule cut the rate.
METRICS = [1.0, 0.9, 0.9, 0.95, 0.7, 0.7, 0.7, 0.72, 0.6, 0.6, 0.6, 0.6]


def test_every_entry_has_a_case_with_other_values() -> None:
    from tuner.init import get_init
    from tuner.optim import get_optimizer, get_schedule

    for cases, names, get in [(SCHEDULE_PARAMS, list_schedules(), get_schedule), (INIT_PARAMS, list_inits(), get_init),
                              (OPTIMIZER_PARAMS, list_optimizers(), get_optimizer)]:
        assert set(cases) == set(names)
        for name, params in cases.items():
            info = get(name)
            info.check(params)  # valid values
            changed = {key for key, value in params.items()
                       if key not in info.defaults or _plain(value) != _plain(info.defaults[key])}
            assert changed >= set(info.defaults) - {"lr"} and "lr" not in params or changed >= set(info.defaults), name


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _exported(data: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and the namespace its exported source defines, executed in a fresh namespace."""
    config = TrainConfig.from_dict(data)
    ns: dict[str, Any] = {"__name__": "exported"}
    exec(compile(python_snippet(config), "exported.py", "exec"), ns)
    return config, ns


@pytest.mark.parametrize("steps_per_epoch", [1, 3])
@pytest.mark.parametrize("params", ["defaults", "other"])
@pytest.mark.parametrize("name", list_schedules())
@pytest.mark.filterwarnings("ignore:The .* learning-rate schedule was stepped more often:RuntimeWarning")
def test_setup_steps_every_schedule_like_tuner(name: str, params: str, steps_per_epoch: int) -> None:
    """The lr at every step of training, and for an epoch past its end, is the one tuner's scheduler gives when
    it is stepped as tuner's trainer steps it: after every batch, or once per epoch with the metric."""
    schedule = {"name": name, **(SCHEDULE_PARAMS[name] if params == "other" else {})}
    config, ns = _exported({"optimizer": {"name": "sgd", "lr": 0.05}, "schedule": schedule, "epochs": 8})
    torch.manual_seed(0)
    mine_model, theirs_model = _model(), _model()
    x = torch.randn(8, 6)
    training = ns["setup"](mine_model, steps_per_epoch, mode="min")
    optimizer, scheduler = config.build(theirs_model, steps_per_epoch=steps_per_epoch, mode="min")
    mine, theirs = [], []
    for epoch in range(config.epochs + 1):  # one epoch past the end, where the lr holds its final value
        for _ in range(steps_per_epoch):
            mine += _lrs(training.optimizer)
            theirs += _lrs(optimizer)
            training.step(lambda: mine_model(x).square().mean())
            optimizer.step()
            if config.schedule.interval == "batch":
                scheduler.step()
        training.end_epoch(METRICS[epoch])
        if config.schedule.interval == "epoch":
            scheduler.step(METRICS[epoch])
    assert mine == pytest.approx(theirs, rel=1e-12, abs=0.0)
    end = config.epochs * steps_per_epoch
    if config.schedule.interval == "batch":
        assert mine[end:] == [mine[end]] * steps_per_epoch  # stepped past the end, it holds
    if params == "other":
        assert len(set(mine)) > 1  # the schedule does change the rate (some defaults do not in 8 epochs)


def test_plateau_needs_the_metric_and_the_others_ignore_it() -> None:
    _, ns = _exported({"schedule": "plateau"})
    training = ns["setup"](_model(), 2)
    with pytest.raises(ValueError, match="needs the validation metric"):
        training.end_epoch()
    training.end_epoch(torch.tensor(0.5))  # a tensor metric is read as a float
    _, ns = _exported({"schedule": "cosine"})
    training = ns["setup"](_model(), 2)
    training.end_epoch()
    assert training.scheduler.last_epoch == 0  # a per-batch schedule is stepped by step() only


@pytest.mark.parametrize("params", ["defaults", "other"])
@pytest.mark.parametrize("name", list_inits())
def test_setup_initialises_every_initialiser_like_tuner(name: str, params: str) -> None:
    """setup seeds with SEED and draws the same weights as tuner's apply_init after the same seed: the same
    nn.init calls in the same order, so the same numbers from the generator (exact equality, no statistics)."""
    import random

    import numpy as np

    from tuner.init import apply_init

    init = {"name": name, **(INIT_PARAMS[name] if params == "other" else {})}
    config, ns = _exported({"init": init, "seed": 7, "regularization": {"dropout": 0.3}})
    torch.manual_seed(5)
    mine = _zoo()
    torch.manual_seed(5)
    theirs = _zoo()
    ns["setup"](mine, 3)
    after = (random.random(), np.random.random(), torch.rand(3))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    apply_init(theirs, name, config.init.params)
    assert after[:2] == (random.random(), np.random.random())  # every generator is seeded with SEED
    assert torch.equal(after[2], torch.rand(3))  # and the initialiser drew as many numbers as tuner's
    for (key, a), (other, b) in zip(mine.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert key == other and torch.equal(a, b), key
    assert mine["mlp"][3].p == mine["dropouts"][2].p == 0.3  # and the dropout rate is set


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=generator)
    y = (x[:, :2].sum(dim=1) > 0).long() + (x[:, 2] > 1).long()  # three classes, nearly separable
    return x, y


@pytest.mark.parametrize("name", list_optimizers())
def test_setup_step_is_tuners_step_with_clipping(name: str) -> None:
    """One step of the exported setup changes the weights exactly as tuner's config.setup step does: the
    penalties, the clipped gradient (norm <= grad_clip_norm, which a loss this large exceeds) and, for
    L-BFGS, the closure it evaluates several times."""
    clip = 0.25
    config, ns = _exported({"optimizer": {"name": name, **OPTIMIZER_PARAMS[name]}, "grad_clip_norm": clip,
                            "regularization": {"weight_decay": 1e-2, "l1": 1e-3}, "schedule": "onecycle"})
    x, y = _batch()
    torch.manual_seed(2)
    mine_model, theirs_model = _model().eval(), _model().eval()  # no dropout: the same function in both
    mine_model.load_state_dict(theirs_model.state_dict())
    mine, theirs = ns["setup"](mine_model, 4), config.setup(theirs_model, steps_per_epoch=4)

    def big_loss(model: nn.Module) -> torch.Tensor:
        return 50 * nn.functional.cross_entropy(model(x), y)

    probe = _model()
    probe.load_state_dict(mine_model.state_dict())
    big_loss(probe).backward()
    assert nn.utils.get_total_norm([p.grad for p in probe.parameters()]) > 10 * clip  # clipping is needed
    for _ in range(2):
        loss = mine.step(lambda: big_loss(mine_model))
        assert torch.equal(loss, theirs.step(lambda: big_loss(theirs_model)))
        assert not loss.requires_grad
        if name != "schedulefree_adamw":  # its step adds the weight decay to the gradients in place
            norm = nn.utils.get_total_norm([p.grad for p in mine_model.parameters() if p.grad is not None])
            assert norm <= clip * (1 + 1e-5)
        for a, b in zip(mine_model.parameters(), theirs_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert _lrs(mine.optimizer) == _lrs(theirs.optimizer)  # and the schedule stepped after the batch
    assert mine.scheduler.last_epoch == 2


@pytest.mark.parametrize("name", list_optimizers())
def test_train_reduces_the_loss_with_every_optimizer(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    config, ns = _exported({"optimizer": {"name": name, **OPTIMIZER_PARAMS[name]}, "epochs": 6, "batch_size": 32,
                            "grad_clip_norm": 1.0, "regularization": {"weight_decay": 1e-4, "l1": 1e-5}})
    x, y = _batch()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    ns["train"](model, x, y)
    losses = [float(line.split("train loss ")[1]) for line in capsys.readouterr().out.splitlines()]
    assert len(losses) == config.epochs and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.filterwarnings("ignore:The .* learning-rate schedule was stepped more often:RuntimeWarning")
def test_a_schedule_stepped_per_epoch_is_stepped_by_end_epoch() -> None:
    """A schedule whose source steps once per epoch (no registered one does yet) is written so: end_epoch
    steps it and the lr holds after EPOCHS epochs."""
    from tuner.optim import _schedules

    def halves(step: int, h: Any, rate: float = 0.5) -> float:
        return rate ** step

    def halves_source(p: dict[str, Any]) -> Any:
        return _schedules.ScheduleSource("epoch", factor=(f"return {p['rate']!r} ** step",))

    _schedules._register("test-halves", halves, {"rate": _schedules.FRACTION_POSITIVE}, "halves every epoch",
                         interval="epoch", source=halves_source)
    try:
        _, ns = _exported({"schedule": {"name": "test-halves", "rate": 0.25}, "epochs": 2, "optimizer": "sgd"})
    finally:
        _schedules._REGISTRY._entries.pop("test-halves")
    training = ns["setup"](_model(), 5)
    seen = []
    for _ in range(4):
        seen.append(_lrs(training.optimizer)[0])
        for _ in range(5):
            training.step(lambda: training.model(torch.ones(2, 6)).sum())
        training.end_epoch()
    assert seen == pytest.approx([0.1, 0.025, 0.025, 0.025], rel=1e-12)  # held at the last epoch's rate


@pytest.mark.slow
def test_runs_as_a_script_without_tuner(tmp_path: Path) -> None:
    """Run in one Python process in which importing tuner fails (the scripts' folder comes first on sys.path):
    two exported scripts as programs (their demo trains for an epoch), and the export of every registered
    schedule, initialiser and optimizer, with other values than the defaults: setup, steps, end of epochs."""
    (tmp_path / "tuner.py").write_text('raise ImportError("the exported script imported tuner")\n')
    configs = [{"schedule": {"name": n, **p}, "epochs": 2} for n, p in SCHEDULE_PARAMS.items()]
    configs += [{"init": {"name": n, **p}} for n, p in INIT_PARAMS.items()]
    configs += [{"optimizer": {"name": n, **p}, "grad_clip_norm": 1.0, "regularization": {"weight_decay": 1e-3}}
                for n, p in OPTIMIZER_PARAMS.items()]
    for i, data in enumerate(SUBPROCESS_CONFIGS):
        source = python_snippet(TrainConfig.from_dict(data), title="a study")
        assert "import tuner" not in source and "from tuner" not in source
        (tmp_path / f"program_{i}.py").write_text(source)
    for i, data in enumerate(configs):
        (tmp_path / f"exported_{i}.py").write_text(python_snippet(TrainConfig.from_dict(data)))
    (tmp_path / "driver.py").write_text(textwrap.dedent(f"""\
        import runpy, sys, torch
        for i in range({len(SUBPROCESS_CONFIGS)}):
            runpy.run_path(f"program_{{i}}.py", run_name="__main__")
        for i in range({len(configs)}):
            ns = runpy.run_path(f"exported_{{i}}.py")
            model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
            training = ns["setup"](model, 2)
            x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
            for epoch in range(2):
                for _ in range(2):
                    loss = training.step(lambda: torch.nn.functional.cross_entropy(model(x), y))
                training.end_epoch(loss.item())
        assert "tuner" not in sys.modules
        print("exported scripts run:", i + 1)
        """))
    run = subprocess.run([sys.executable, "driver.py"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("epoch 1/1: train loss") == len(SUBPROCESS_CONFIGS)
    assert run.stdout.endswith(f"exported scripts run: {len(configs)}\n")


def test_a_schedule_cannot_be_registered_without_its_export_source() -> None:
    from tuner.optim import _schedules

    bounds = {"warmup_fraction": _schedules._WARMUP}
    with pytest.raises(TypeError, match="source"):
        _schedules._register("test-no-source", _schedules._constant, bounds, "no source")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="must step at interval 'batch'"):  # a per-batch factor written as plateau
        _schedules._register("test-no-source", _schedules._constant, bounds, "wrong interval",
                             source=_schedules._plateau_source)
    with pytest.raises(ValueError, match="either a factor body or a scheduler"):
        _schedules._register("test-no-source", _schedules._constant, bounds, "nothing written",
                             source=lambda p: _schedules.ScheduleSource("batch"))
    assert "test-no-source" not in list_schedules()


def test_the_exported_train_helper_recomputes_batchnorm_statistics_for_schedule_free() -> None:
    """The script's own train() called training.eval() without batches, so a BatchNorm model evaluated the
    averaged weights with the stepped weights' statistics (tuner's trainer passes up to 50 batches)."""
    config, ns = _exported({"optimizer": {"name": "schedulefree_adamw", "lr": 0.05}, "seed": 3, "epochs": 2,
                            "batch_size": 16})
    x, y = torch.randn(64, 6) * 2 + 1, torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    ns["train"](model, x, y)
    with torch.no_grad():  # the averaged weights (the last eval), through the training batches in order
        means = torch.stack([model[0](x[i:i + 16]).mean(0) for i in range(0, 64, 16)]).mean(0)
    assert torch.allclose(model[1].running_mean, means, atol=1e-5)


def test_the_exported_schedule_free_eval_recomputes_batchnorm_statistics_as_tuner_does() -> None:
    """The script's training.eval() switched to the averaged weights and left BatchNorm's statistics those of
    the stepped weights; eval(batches) computes them again, to the same values as tuner's setup.eval."""
    data = {"optimizer": {"name": "schedulefree_adamw", "lr": 0.05}, "seed": 3}
    config, ns = _exported(data)
    x, y = torch.randn(64, 6) * 2 + 1, torch.randint(0, 3, (64,))

    def bn_model() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    theirs = bn_model()
    ours = copy.deepcopy(theirs)
    training, setup = ns["setup"](theirs, 2), config.setup(ours, steps_per_epoch=2)
    for _ in range(4):
        training.step(lambda: nn.functional.cross_entropy(theirs(x), y))
        setup.step(lambda: nn.functional.cross_entropy(ours(x), y))
    theirs.eval()
    training.eval([(x[:32], y[:32]), (x[32:], y[32:])])
    setup.eval([(x[:32], y[:32]), (x[32:], y[32:])])
    assert not theirs.training
    assert torch.equal(theirs[1].running_mean, ours[1].running_mean)
    assert torch.equal(theirs[1].running_var, ours[1].running_var) and theirs[1].momentum == 0.1
    with torch.no_grad():
        means = torch.stack([theirs[0](x[:32]).mean(0), theirs[0](x[32:]).mean(0)]).mean(0)
    assert torch.allclose(theirs[1].running_mean, means, atol=1e-6)
