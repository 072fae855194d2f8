"""The schedule registry: every schedule builds, and ``lr_factors`` draws the documented curve."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from torch import nn

from tuner.errors import ConfigError
from tuner.optim import build_optimizer, build_scheduler, get_schedule, list_schedules, lr_factors


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr)


def test_registry_has_expected_schedules() -> None:
    names = list_schedules()
    assert len(names) == len(set(names))
    assert {"constant", "warmup_cosine", "step", "onecycle", "plateau", "cosine", "linear"} <= set(names)


@pytest.mark.parametrize("name", list_schedules())
def test_builds_and_factors_have_right_length(name: str) -> None:
    info = get_schedule(name)
    assert info.name == name
    assert set(info.defaults) <= set(info.bounds)
    assert info.check(dict(info.defaults)) == {k: tuple(v) if isinstance(v, list) else v
                                               for k, v in info.defaults.items()}
    optimizer = _optimizer(0.1)
    scheduler = build_scheduler(name, optimizer, {}, epochs=6, steps_per_epoch=5)
    if info.interval == "epoch":
        assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        assert info.factor is None
    else:
        assert info.interval == "batch"
        assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    factors = lr_factors(name, {}, epochs=6, steps_per_epoch=5)
    assert len(factors) == 30
    assert all(isinstance(f, float) and math.isfinite(f) and 0.0 <= f <= 1.0 + 1e-12 for f in factors)
    assert max(factors) == pytest.approx(1.0)
    assert len(lr_factors(name, {}, epochs=3, steps_per_epoch=0)) == 3  # steps_per_epoch clamps to 1
    # The torch scheduler follows the same curve, batch by batch.
    if info.interval == "batch":
        seen = []
        for _ in range(30):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert seen == pytest.approx([0.1 * f for f in factors])
        # Past the plan, the rate holds at the last batch's: cosine_restarts did not jump back to its peak, and
        # step and exponential did not decay once more than any batch trained.
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * factors[-1])
        with pytest.warns(RuntimeWarning, match="stepped more often"):
            for _ in range(3):
                optimizer.step()
                scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * factors[-1])


def test_constant_is_flat() -> None:
    assert lr_factors("constant", {}, epochs=4, steps_per_epoch=3) == [1.0] * 12


def test_constant_warmup_rises_linearly_then_holds() -> None:
    factors = lr_factors("constant", {"warmup_fraction": 0.25}, epochs=4, steps_per_epoch=5)  # 5 warmup steps
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[5:] == [1.0] * 15


def test_warmup_cosine_rises_then_decays_to_min_lr_ratio() -> None:
    params = {"warmup_fraction": 0.1, "min_lr_ratio": 0.05}
    factors = lr_factors("warmup_cosine", params, epochs=10, steps_per_epoch=20)  # 200 steps, 20 warmup
    warmup = factors[:20]
    assert all(b > a for a, b in zip(warmup, warmup[1:], strict=False))
    assert warmup[0] == pytest.approx(1 / 20)
    assert warmup[-1] == pytest.approx(1.0)
    decay = factors[20:]
    assert decay[0] == pytest.approx(1.0)
    assert all(b <= a for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] == pytest.approx(0.05, abs=1e-3)
    assert min(factors) >= 0.05 - 1e-12
    # Half-way through the decay the cosine is at the mid-point between 1 and min_lr_ratio.
    assert decay[90] == pytest.approx(0.05 + 0.95 * 0.5, abs=1e-9)


def test_warmup_cosine_defaults_warm_up() -> None:
    factors = lr_factors("warmup_cosine", {}, epochs=10, steps_per_epoch=10)  # 5% of 100 = 5 steps
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[-1] < 1e-3


def test_cosine_without_warmup_starts_at_one_and_ends_near_min() -> None:
    factors = lr_factors("cosine", {"min_lr_ratio": 0.1}, epochs=50, steps_per_epoch=2)
    assert factors[0] == 1.0
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_step_drops_by_gamma_every_step_size_epochs() -> None:
    factors = lr_factors("step", {"step_size": 3, "gamma": 0.5}, epochs=9, steps_per_epoch=4)
    per_epoch = [factors[e * 4: (e + 1) * 4] for e in range(9)]
    for epoch, values in enumerate(per_epoch):
        assert values == pytest.approx([0.5 ** (epoch // 3)] * 4), epoch
    assert factors[11] == 1.0 and factors[12] == 0.5 and factors[24] == 0.25


def test_multistep_drops_at_milestones() -> None:
    factors = lr_factors("multistep", {"milestones": [0.5, 0.75], "gamma": 0.1}, epochs=4, steps_per_epoch=5)
    assert factors[:10] == [1.0] * 10
    assert factors[10:15] == pytest.approx([0.1] * 5)
    assert factors[15:] == pytest.approx([0.01] * 5)


def test_exponential_multiplies_every_epoch() -> None:
    factors = lr_factors("exponential", {"gamma": 0.9}, epochs=3, steps_per_epoch=2)
    assert factors == pytest.approx([1.0, 1.0, 0.9, 0.9, 0.81, 0.81])


def test_linear_decays_to_end_factor() -> None:
    factors = lr_factors("linear", {"warmup_fraction": 0.0, "end_factor": 0.2}, epochs=10, steps_per_epoch=1)
    assert factors == pytest.approx([1 - 0.8 * i / 10 for i in range(10)])


def test_polynomial_power_two() -> None:
    factors = lr_factors("polynomial", {"power": 2.0}, epochs=4, steps_per_epoch=1)
    assert factors == pytest.approx([1.0, 0.5625, 0.25, 0.0625])


def test_cosine_restarts_resets_every_t0_epochs() -> None:
    factors = lr_factors("cosine_restarts", {"t0_epochs": 2, "t_mult": 1}, epochs=6, steps_per_epoch=4)
    assert factors[0] == factors[8] == factors[16] == 1.0
    assert factors[7] < 0.1
    assert factors[:8] == pytest.approx(factors[8:16])
    longer = lr_factors("cosine_restarts", {"t0_epochs": 1, "t_mult": 2}, epochs=7, steps_per_epoch=1)
    restarts = [i for i, f in enumerate(longer) if f == 1.0]
    assert restarts == [0, 1, 3]  # cycles of 1, 2, 4 epochs


def test_onecycle_peaks_at_pct_start() -> None:
    params = {"pct_start": 0.3, "div_factor": 10.0, "final_div_factor": 100.0}
    factors = lr_factors("onecycle", params, epochs=10, steps_per_epoch=10)
    peak = factors.index(max(factors))
    assert peak == 30
    assert factors[30] == pytest.approx(1.0)
    assert factors[0] == pytest.approx(1 / 10)
    assert all(b > a for a, b in zip(factors[:31], factors[1:31], strict=False))
    assert all(b < a for a, b in zip(factors[30:], factors[31:], strict=False))
    assert 1 / 1000 < factors[-1] < 2 / 1000  # one step before the end of the anneal to lr / 1000
    assert min(factors) >= 1 / 1000 - 1e-12


@pytest.mark.parametrize("pct_start", [0.1, 0.5, 0.8])
def test_onecycle_peak_moves_with_pct_start(pct_start: float) -> None:
    factors = lr_factors("onecycle", {"pct_start": pct_start}, epochs=20, steps_per_epoch=5)
    assert factors.index(max(factors)) == int(pct_start * 100)


def test_plateau_reduces_lr_when_metric_stalls() -> None:
    optimizer = _optimizer(1.0)
    scheduler = build_scheduler("plateau", optimizer, {"factor": 0.5, "patience": 2}, epochs=20, mode="min")
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    lrs = []
    for metric in [1.0, 0.9, 0.8, 0.7]:  # improving: no change
        scheduler.step(metric)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == [1.0] * 4
    for _ in range(3):  # stalls for patience + 1 epochs
        scheduler.step(0.7)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    for _ in range(3):
        scheduler.step(0.7)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)


def test_plateau_mode_max_treats_rising_metric_as_improvement() -> None:
    optimizer = _optimizer(1.0)
    scheduler = build_scheduler("plateau", optimizer, {"patience": 0}, epochs=5, mode="max")
    for metric in [0.1, 0.2, 0.3, 0.4]:
        scheduler.step(metric)
    assert optimizer.param_groups[0]["lr"] == 1.0
    scheduler.step(0.3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # default factor


def test_plateau_factors_are_flat() -> None:
    assert lr_factors("plateau", {}, epochs=3, steps_per_epoch=2) == [1.0] * 6


def test_scheduler_params_reach_lambda() -> None:
    optimizer = build_optimizer("sgd", nn.Linear(2, 1), {"lr": 1.0})
    scheduler = build_scheduler("step", optimizer, {"step_size": 1, "gamma": 0.5}, epochs=3,
                                steps_per_epoch=2)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


@pytest.mark.parametrize("name", [n for n in list_schedules() if get_schedule(n).interval == "batch"])
def test_stepped_past_its_plan_a_schedule_holds_and_warns_once(name: str) -> None:
    optimizer = _optimizer(0.1)
    scheduler = build_scheduler(name, optimizer, {}, epochs=3, steps_per_epoch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the planned 6 steps: no warning
        for _ in range(6):
            optimizer.step()
            scheduler.step()
    final = optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lrs = []
        for _ in range(5):
            optimizer.step()
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == [final] * 5
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "planned for (epochs=3 x steps_per_epoch=2)" in messages[0]
    assert "steps_per_epoch=len(loader)" in messages[0]


def test_a_scheduler_checkpoint_loads_with_weights_only() -> None:
    optimizer = _optimizer(1.0)
    scheduler = build_scheduler("step", optimizer, {"step_size": 1, "gamma": 0.5}, epochs=4, steps_per_epoch=2)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed_optimizer = _optimizer(1.0)
    resumed = build_scheduler("step", resumed_optimizer, {"step_size": 1, "gamma": 0.5}, epochs=4, steps_per_epoch=2)
    resumed.load_state_dict(state)
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.25)  # step 4: two epochs in


# -- validation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("step", {"step_size": 0},
         "'step_size' parameter of the 'step' schedule must be an int in the range [1, inf)"),
        ("step", {"gamma": 1.5},
         "'gamma' parameter of the 'step' schedule must be a float in the range (0, 1]"),
        ("step", {"step_size": 2.5}, "must be an int"),
        ("cosine", {"min_lr_ratio": 1.0},
         "'min_lr_ratio' parameter of the 'cosine' schedule must be a float in the range [0, 1)"),
        ("warmup_cosine", {"warmup_fraction": 0.9}, "in the range [0, 0.5]"),
        ("onecycle", {"pct_start": 0.0}, "in the range (0, 1)"),
        ("onecycle", {"div_factor": 0.5}, "in the range [1, inf)"),
        ("plateau", {"patience": -1}, "in the range [0, inf)"),
        ("plateau", {"factor": 1.0}, "in the range (0, 1)"),
        ("multistep", {"milestones": [0.8, 0.2]}, "must increase"),
        ("multistep", {"milestones": [0.5]}, "a pair of floats"),
    ],
)
def test_bad_values_raise_config_error(name: str, params: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        get_schedule(name).check(params, where="schedule")
    message = str(excinfo.value)
    assert message.startswith("schedule: ")
    assert expected in message
    assert "Got " in message


@pytest.mark.parametrize("name", list_schedules())
def test_unknown_parameter_lists_valid_names(name: str) -> None:
    info = get_schedule(name)
    with pytest.raises(ConfigError) as excinfo:
        info.check({"no_such_param": 1})
    message = str(excinfo.value)
    assert f"the {name!r} schedule takes no parameter 'no_such_param'" in message
    assert f"Valid parameters: {', '.join(sorted(info.bounds))}." in message


def test_unknown_schedule_lists_valid_and_closest() -> None:
    with pytest.raises(ConfigError) as excinfo:
        get_schedule("cosin")
    message = str(excinfo.value)
    assert "Unknown schedule 'cosin'" in message
    assert "Did you mean 'cosine'?" in message
    assert all(name in message for name in list_schedules())
    with pytest.raises(ConfigError, match="Unknown schedule"):
        lr_factors("nope", {}, epochs=1, steps_per_epoch=1)


def test_a_scheduler_stepped_once_per_epoch_warns_where_it_was_stepped():
    """config.build's scheduler stepped once per epoch, the most common slip with torch schedulers, moved a
    warmup-cosine schedule from 0.1 to 0.0993 over its whole run, without a word."""
    from tuner import TrainConfig

    config = TrainConfig.from_dict({"optimizer": {"name": "sgd", "lr": 0.1}, "schedule": "warmup_cosine",
                                    "epochs": 2})

    def run(per_batch: bool) -> list[warnings.WarningMessage]:
        model = nn.Linear(3, 2)
        optimizer, scheduler = config.build(model, steps_per_epoch=5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                for _ in range(5):
                    optimizer.zero_grad()
                    model(torch.ones(4, 3)).sum().backward()
                    optimizer.step()
                    if per_batch:
                        scheduler.step()
                if not per_batch:
                    scheduler.step()
        return [w for w in caught if issubclass(w.category, RuntimeWarning)]

    (said,) = run(per_batch=False)
    assert str(said.message).startswith("The 'warmup_cosine' learning-rate schedule was stepped once for 5 optimizer "
                                        "steps: it plans steps_per_epoch=5 steps an epoch")
    assert said.filename == __file__
    assert run(per_batch=True) == []
