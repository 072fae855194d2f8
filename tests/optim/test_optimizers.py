"""The optimizer registry: every entry builds, trains a small MLP under several schedules, and says what it
takes."""

from __future__ import annotations

import builtins
import importlib
import inspect

import pytest
import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.optim import (
    build_optimizer,
    build_scheduler,
    get_optimizer,
    get_schedule,
    list_optimizers,
    lr_factors,
    split_decay_params,
)

SCHEDULES = ["constant", "warmup_cosine", "step", "onecycle", "plateau"]
STEPS = 25
# The registry's default learning rates suit long runs; a 25-step test wants larger ones.
LR = {"adagrad": 0.1, "rmsprop": 1e-2, "adam": 1e-2, "adamw": 1e-2, "nadam": 1e-2, "nadamw": 1e-2, "radam": 1e-2,
      "adamax": 2e-2}


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.LayerNorm(16), nn.Linear(16, 1))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.3).tanh()
    return x, y


def _torch_params(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "params"}


def test_registry_is_nonempty_and_unique() -> None:
    names = list_optimizers()
    assert len(names) == len(set(names))
    assert {"sgd", "adam", "adamw", "lbfgs"} <= set(names)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", list_optimizers())
def test_optimizer_reduces_loss_under_schedule(name: str, schedule: str) -> None:
    info = get_optimizer(name)
    model = _mlp()
    x, y = _batch()
    loss_fn = nn.MSELoss()
    base_lr = LR.get(name, info.defaults["lr"])
    optimizer = build_optimizer(name, model, {"lr": base_lr}, weight_decay=1e-4)
    scheduler = build_scheduler(schedule, optimizer, {}, epochs=STEPS, steps_per_epoch=1, mode="min")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(base_lr * lr_factors(
        schedule, {}, epochs=STEPS, steps_per_epoch=1)[0])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    with torch.no_grad():
        start = loss_fn(model(x), y).item()
    if info.train_eval:
        optimizer.train()  # schedule-free: steps in train mode, evaluated in eval mode
    for _ in range(STEPS):
        if info.needs_closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        if get_schedule(schedule).interval == "epoch":
            with torch.no_grad():
                scheduler.step(loss_fn(model(x), y).item())
        else:
            scheduler.step()
    if info.train_eval:
        optimizer.eval()
    with torch.no_grad():
        end = loss_fn(model(x), y).item()
    assert torch.isfinite(torch.tensor(end))
    assert end < 0.8 * start, f"{name}/{schedule}: loss {start:.4f} -> {end:.4f}"
    if schedule != "plateau":
        factors = lr_factors(schedule, {}, epochs=STEPS, steps_per_epoch=1)
        # LambdaLR has been stepped STEPS times: past the horizon, it holds the rate the last batch trained at.
        info_s = get_schedule(schedule)
        expected = base_lr * info_s.factor(STEPS - 1, _horizon(), **info_s.defaults)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
        assert len(factors) == STEPS


def _horizon():
    from tuner.optim._schedules import Horizon

    return Horizon(STEPS, 1)


def test_classification_batch_with_adamw() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(90, 2, generator=g)
    labels = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    optimizer = build_optimizer("adamw", model, {"lr": 1e-2}, weight_decay=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    start = loss_fn(model(x), labels).item()
    for _ in range(40):
        optimizer.zero_grad()
        loss_fn(model(x), labels).backward()
        optimizer.step()
    end = loss_fn(model(x), labels).item()
    assert end < 0.7 * start
    assert (model(x).argmax(1) == labels).float().mean().item() > 0.8


# -- parameter groups ----------------------------------------------------------------------------------
def test_split_decay_params_puts_biases_and_norm_scales_in_no_decay() -> None:
    model = _mlp()
    decay, no_decay = split_decay_params(model)
    assert [tuple(p.shape) for p in decay] == [(16, 4), (1, 16)]
    assert all(p.ndim == 1 for p in no_decay)
    assert len(no_decay) == 4  # two biases, LayerNorm weight and bias
    ids = {id(p) for p in decay} | {id(p) for p in no_decay}
    assert ids == {id(p) for p in model.parameters()}


def test_split_decay_params_skips_frozen() -> None:
    model = _mlp()
    model[0].weight.requires_grad_(False)
    decay, no_decay = split_decay_params(model)
    assert all(p is not model[0].weight for p in decay + no_decay)
    assert len(decay) == 1


@pytest.mark.parametrize("name", [n for n in list_optimizers() if get_optimizer(n).supports_weight_decay])
def test_weight_decay_groups(name: str) -> None:
    model = _mlp()
    optimizer = build_optimizer(name, model, {}, weight_decay=0.01)
    assert len(optimizer.param_groups) == 2
    decay_group, no_decay_group = optimizer.param_groups
    assert decay_group["weight_decay"] == 0.01
    assert no_decay_group["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay_group["params"])
    assert all(p.ndim == 1 for p in no_decay_group["params"])
    assert {id(p) for p in decay_group["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in no_decay_group["params"]} == {
        id(model[0].bias), id(model[2].weight), id(model[2].bias), id(model[3].bias)}
    assert type(optimizer) is get_optimizer(name).cls


def test_no_weight_decay_gives_one_group() -> None:
    optimizer = build_optimizer("adamw", _mlp(), {}, weight_decay=0.0)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 0.0
    assert len(optimizer.param_groups[0]["params"]) == 6


def test_decay_bias_and_norm_gives_one_decayed_group() -> None:
    optimizer = build_optimizer("sgd", _mlp(), {}, weight_decay=0.1, decay_bias_and_norm=True)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 0.1


def test_lbfgs_gets_one_group_without_weight_decay() -> None:
    optimizer = build_optimizer("lbfgs", _mlp(), {}, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.LBFGS)
    assert len(optimizer.param_groups) == 1
    assert "weight_decay" not in optimizer.param_groups[0]


def test_params_and_fixed_reach_torch() -> None:
    optimizer = build_optimizer("nesterov", _mlp(), {"lr": 0.05, "momentum": 0.8})
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.05, 0.8, True)
    sgd = build_optimizer("sgd", _mlp(), {"lr": 0.2})
    assert (sgd.param_groups[0]["lr"], sgd.param_groups[0]["momentum"]) == (0.2, 0.0)
    adam = build_optimizer("adam", _mlp(), {"betas": (0.8, 0.99)})
    assert adam.param_groups[0]["betas"] == (0.8, 0.99)
    assert adam.param_groups[0]["lr"] == get_optimizer("adam").defaults["lr"]


# -- capability flags ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_optimizers())
def test_capability_flags_match_torch_class(name: str) -> None:
    info = get_optimizer(name)
    accepted = _torch_params(info.cls)
    assert issubclass(info.cls, torch.optim.Optimizer)
    assert info.has_betas == ("betas" in accepted)
    assert info.supports_weight_decay == ("weight_decay" in accepted)
    assert info.needs_closure == (info.cls is torch.optim.LBFGS)
    if info.has_momentum:
        assert "momentum" in accepted
    elif "momentum" in accepted:
        # SGD without momentum: the torch argument exists but is pinned to 0.
        assert info.fixed.get("momentum") == 0.0
    assert info.has_eps == ("eps" in info.defaults)
    # Every default, bound and fixed argument is a keyword the torch class takes.
    assert set(info.defaults) <= accepted
    assert set(info.bounds) <= accepted
    assert set(info.fixed) <= accepted
    assert set(info.defaults) <= set(info.bounds)
    assert "lr" in info.defaults
    assert info.check(dict(info.defaults)) == {k: tuple(v) if isinstance(v, list) else v
                                               for k, v in info.defaults.items()}
    assert info.family in {"sgd", "adam", "adaptive", "lbfgs"}
    assert info.name == name


def test_specific_flags() -> None:
    assert get_optimizer("momentum").has_momentum
    assert not get_optimizer("sgd").has_momentum
    assert get_optimizer("adamw").decoupled_weight_decay
    assert not get_optimizer("adam").decoupled_weight_decay
    assert get_optimizer("lbfgs").needs_closure
    assert not get_optimizer("lbfgs").supports_weight_decay
    assert not get_optimizer("adagrad").has_betas


def test_check_rejects_out_of_range_and_unknown() -> None:
    info = get_optimizer("adam")
    with pytest.raises(ConfigError, match=r"'betas' parameter of the 'adam' optimizer must be a pair"):
        info.check({"betas": (0.9, 1.0)})
    with pytest.raises(ConfigError, match=r"'momentum'. Valid parameters: amsgrad, betas, eps, lr\."):
        info.check({"momentum": 0.9})
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        get_optimizer("nesterov").check({"momentum": 0.0})


# -- unknown names ---------------------------------------------------------------------------------------
def test_unknown_name_lists_valid_and_closest() -> None:
    with pytest.raises(ConfigError) as excinfo:
        get_optimizer("adamw2")
    message = str(excinfo.value)
    assert "Unknown optimizer 'adamw2'" in message
    assert "Did you mean 'adamw'?" in message
    for name in list_optimizers():
        assert name in message
    assert ", ".join(sorted(list_optimizers())) in message


def test_unknown_name_fails_in_build() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'adam'"):
        build_optimizer("adm", _mlp(), {})


@pytest.mark.parametrize("name", ["os.system", "torch.optim.__init__", "torch.optim.SGD", "SGD", "__import__",
                                  "subprocess.run", "", None, 3])
def test_dotted_or_foreign_names_rejected_without_import(name: object, monkeypatch) -> None:
    imported: list[str] = []
    real_import = builtins.__import__
    real_import_module = importlib.import_module

    def spy_import(module: str, *args: object, **kwargs: object) -> object:
        imported.append(module)
        return real_import(module, *args, **kwargs)

    def spy_import_module(module: str, *args: object, **kwargs: object) -> object:
        imported.append(module)
        return real_import_module(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy_import)
    monkeypatch.setattr(importlib, "import_module", spy_import_module)
    with pytest.raises(ConfigError, match="Unknown optimizer") as excinfo:
        get_optimizer(name)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert "Valid: " in str(excinfo.value)
    # Nothing named by the input (or a package on its path) was imported or looked up as a module.
    if isinstance(name, str) and name:
        parts = name.split(".")
        prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
        assert not prefixes & set(imported), imported
    assert not {"os", "torch", "torch.optim", "subprocess"} & set(imported), imported


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("name", list_optimizers())
def test_python_source_builds_what_build_optimizer_builds(name: str, weight_decay: float) -> None:
    """The lines the Python export writes for an optimizer, run on their own, give the optimizer, the groups and
    the hyperparameters of ``build_optimizer``."""
    info = get_optimizer(name)
    weight_decay = weight_decay if info.supports_weight_decay else 0.0  # L-BFGS: an L2 penalty instead
    model = _mlp()
    model[2].bias.requires_grad_(False)  # frozen parameters are left out by both
    params = {"lr": 0.1 + 0.2, **({"eps": 1e-7} if info.has_eps else {})}
    namespace = {"torch": torch, "model": model}
    exec("\n".join(info.python_source(params, weight_decay)), namespace)  # the exported code under test
    mine, theirs = namespace["optimizer"], build_optimizer(name, model, params, weight_decay)
    assert type(mine) is type(theirs) is info.cls
    assert mine.defaults == theirs.defaults
    assert len(mine.param_groups) == len(theirs.param_groups)
    for a, b in zip(mine.param_groups, theirs.param_groups, strict=True):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]


def test_python_source_writes_torch_optim_classes_only() -> None:
    from tuner.optim import OptimizerInfo

    class Mine(torch.optim.SGD):
        pass

    info = OptimizerInfo("mine", Mine, {"lr": 0.1}, {})
    with pytest.raises(NotImplementedError, match="torch.optim classes only"):
        info.python_source({"lr": 0.1}, 0.0)


def test_the_registries_are_read_without_pytorch() -> None:
    """Names, defaults, bounds and families (what a search space and a config are checked against) come without
    importing PyTorch: a wrong space is refused at once. A class is imported where an optimizer is built."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tuner.config import TrainConfig\n"
        "from tuner.init import get_init\n"
        "from tuner.optim import get_optimizer, get_schedule, list_optimizers\n"
        "from tuner.spaces import load_space\n"
        "load_space('full'); load_space('tuning-free'); TrainConfig.from_dict({'optimizer': 'nadamw'})\n"
        "infos = [get_optimizer(n) for n in list_optimizers()]\n"
        "assert {i.family for i in infos} == {'sgd', 'adam', 'adaptive', 'lbfgs'}\n"
        "get_schedule('warmup_cosine').check({'warmup_fraction': 0.1}); get_init('kaiming_normal').keras_source({})\n"
        "print(sorted(m for m in ('torch', 'prodigyopt', 'schedulefree') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr[-2000:])


def test_an_entry_names_its_class_by_path_or_by_the_class_itself() -> None:
    from tuner.optim import OptimizerInfo

    assert get_optimizer("nadamw").cls is torch.optim.NAdam and get_optimizer("nadamw").target == "torch.optim.NAdam"
    missing = OptimizerInfo("gone", "no_such_package_for_tuner.Thing", {"lr": 0.1}, {},
                            package="no_such_package_for_tuner")
    assert not missing.available and missing.cls.missing and missing.cls.__name__ == "Thing"
    with pytest.raises(ConfigError, match="pip install no_such_package_for_tuner"):
        missing.cls([torch.nn.Parameter(torch.zeros(1))])


def test_a_package_that_is_installed_but_does_not_import_is_not_available(tmp_path, monkeypatch) -> None:
    """Installed is not enough: a package whose import fails leaves its optimizer unavailable, so that a space
    naming it is refused before a study exists (not a study whose every trial fails)."""
    from tuner.optim import OptimizerInfo

    (tmp_path / "broken_optimizer_pkg.py").write_text("raise ImportError('a dependency is missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = OptimizerInfo("broken", "broken_optimizer_pkg.Thing", {"lr": 0.1}, {}, package="broken_optimizer_pkg")
    assert not broken.available
