"""``lr_scaling``: a space samples the learning rate at a reference batch size and trains with it scaled."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from tuner.errors import ConfigError
from tuner.lrfind import LRCurve, LRFindResult, calibrate_space
from tuner.spaces import LRScaling, load_space

SPACE = {
    "optimizer": {"nesterov": {"lr": {"low": 0.01, "high": 0.1, "log": True}},
                  "adamw": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
                  "lbfgs": {"lr": {"low": 0.1, "high": 1.0, "log": True}}},
    "batch_size": {"choices": [16, 32, 128]},
}


def _trials(space, n: int = 60) -> list[tuple[optuna.trial.FrozenTrial, object]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        config = space.sample(trial, epochs=1)
        study.tell(trial, 0.0)
        out.append((study.trials[-1], config))
    return out


@pytest.mark.parametrize("rule,expected", [("auto", {"nesterov": 1.0, "adamw": 0.5, "lbfgs": 0.0}),
                                           ("linear", {"nesterov": 1.0, "adamw": 1.0, "lbfgs": 1.0}),
                                           ("sqrt", {"nesterov": 0.5, "adamw": 0.5, "lbfgs": 0.5})])
def test_the_trained_rate_is_the_sampled_one_scaled_by_the_batch_size(rule: str, expected: dict) -> None:
    space = load_space({**SPACE, "lr_scaling": {"rule": rule, "reference_batch": 32}})
    seen = set()
    for frozen, config in _trials(space):
        name = config.optimizer.name
        sampled = frozen.params[f"{name}.lr"]
        bs = config.batch_size
        assert config.optimizer.lr == pytest.approx(sampled * (bs / 32) ** expected[name], rel=1e-12)
        seen.add((name, bs))
    assert len(seen) == 9  # every optimizer at every batch size was drawn


def test_auto_leaves_the_multipliers_of_adadelta_and_prodigy_unscaled() -> None:
    """Their lr multiplies a step size they work out themselves (1 by default): at batch 128 it stays 1."""
    auto = LRScaling("auto", 32)
    assert [auto.exponent(name) for name in ("adadelta", "prodigy", "lbfgs", "adagrad", "sgd")] == \
        [0.0, 0.0, 0.0, 0.5, 1.0]
    assert auto.factor("prodigy", 128) == 1.0 and auto.factor("adam", 128) == 2.0


def test_without_lr_scaling_the_sampled_rate_is_trained_and_the_fingerprint_is_unchanged() -> None:
    plain = load_space(SPACE)
    for frozen, config in _trials(plain, 10):
        assert config.optimizer.lr == frozen.params[f"{config.optimizer.name}.lr"]
    scaled = load_space({**SPACE, "lr_scaling": {"rule": "linear", "reference_batch": 32}})
    assert plain.fingerprint() == load_space(dict(SPACE)).fingerprint()
    assert scaled.fingerprint() != plain.fingerprint()  # a study refuses to resume under another rule
    assert scaled.fingerprint() != load_space({**SPACE, "lr_scaling": {"rule": "sqrt"}}).fingerprint()


def test_short_forms() -> None:
    assert load_space({**SPACE, "lr_scaling": True}).lr_scaling == LRScaling("auto", 32)
    assert load_space({**SPACE, "lr_scaling": "sqrt"}).lr_scaling == LRScaling("sqrt", 32)
    assert load_space({**SPACE, "lr_scaling": False}).lr_scaling is None


@pytest.mark.parametrize("block,fragment", [
    ("lr_scaling: {rule: cube}", "Unknown lr scaling rule 'cube'. Valid: auto, linear, sqrt"),
    ("lr_scaling: {rule: [linear]}", "Unknown lr scaling rule ['linear']. Valid: auto, linear, sqrt"),
    ("lr_scaling: {rule: {x: 1}}", "Unknown lr scaling rule {'x': 1}. Valid: auto, linear, sqrt"),
    ("lr_scaling: {rule: linear, reference: 32}", "key 'lr_scaling.reference': Unknown lr_scaling key"),
    ("lr_scaling: {reference_batch: 0}", "key 'lr_scaling.reference_batch': must be a whole number >= 1"),
    ("lr_scaling: [linear]", "key 'lr_scaling': expected a mapping"),
])
def test_bad_lr_scaling_names_the_file_line_key_and_choices(tmp_path: Path, block: str, fragment: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("optimizer: {adam: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}}\nbatch_size: 32\n" + block + "\n")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert f"{path}:3" in str(info.value) and fragment in str(info.value)


def test_a_calibrated_scaled_space_holds_rates_at_the_reference_batch() -> None:
    space = load_space({**SPACE, "lr_scaling": {"rule": "auto", "reference_batch": 32}})
    curve = LRCurve("nesterov", [], [], low=0.02, high=0.4)
    adam = LRCurve("adamw", [], [], low=4e-4, high=4e-2)
    result = LRFindResult("synthetic", batch_size=128, device="cpu", curves={"nesterov": curve, "adamw": adam})
    raw = calibrate_space(space, result)
    # The test ran at batch 128: nesterov scales linearly (128/32 = 4), adamw by the square root (2).
    assert raw["optimizer"]["nesterov"]["lr"] == {"low": 0.005, "high": 0.1, "log": True}
    assert raw["optimizer"]["adamw"]["lr"] == {"low": 2e-4, "high": 2e-2, "log": True}
    assert raw["lr_scaling"] == {"rule": "auto", "reference_batch": 32}
    assert "lr normalised to batch size 32" in raw["description"]
    assert math.isclose(load_space(raw).lr_scaling.factor("nesterov", 128), 4.0)
    # What the command line prints beside the test's ranges: the ranges the space searches.
    from tuner.lrfind import searched_line

    assert searched_line(load_space(raw), result) == (
        "searched as lr normalised to batch size 32 (auto scaling): nesterov 0.005..0.1, adamw 0.0002..0.02")
    assert searched_line(load_space(SPACE), result) is None  # no lr_scaling: the test's ranges are searched


def test_known_starts_in_a_scaled_space_take_their_lr_at_the_reference_batch() -> None:
    """A known start leaves the batch size to the sampler: its lr is the rate at the reference batch, which
    the drawn batch size then scales, and the start says so."""
    from tuner.study._starts import known_starts

    space = load_space({"optimizer": {"adamw": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
                        "schedule": {"warmup_cosine": {"warmup_fraction": {"low": 0.0, "high": 0.1}}},
                        "regularization": {"weight_decay": {"low": 1e-4, "high": 0.1, "log": True}},
                        "batch_size": {"choices": [16, 64, 128]},
                        "lr_scaling": {"rule": "sqrt", "reference_batch": 32}})
    (start,) = known_starts(space)
    assert start.params["adamw.lr"] == pytest.approx(1e-3) and "batch_size" not in start.params
    assert start.changes == ["lr 0.001 at batch size 32, scaled to the batch size drawn (lr_scaling)"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(start.params)
    trial = study.ask()
    config = space.sample(trial, epochs=1)
    assert config.optimizer.lr == pytest.approx(1e-3 * math.sqrt(config.batch_size / 32))


def test_a_config_fitted_to_a_scaled_space_says_what_rate_trains() -> None:
    """The numbers of a clipped lr are rates at the reference batch, not the file's, and a batch size moved to
    the nearest choice changes the rate that trains: both say what trains."""
    from tuner import TrainConfig

    space = load_space({"optimizer": {"adam": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}},
                        "batch_size": {"choices": [16, 64, 256]},
                        "lr_scaling": {"rule": "linear", "reference_batch": 32}})
    clipped = space.params_for(TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 0.5}, "batch_size": 16}))
    assert clipped.changes == ["adam.lr: 1 -> 0.1 (the space's range is 0.0001..0.1); rates at batch size 32 "
                               "(lr_scaling): it trains at lr 0.05 with batch size 16"]
    moved = space.params_for(TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-3}, "batch_size": 20}))
    assert moved.changes == ["batch_size: 20 -> 16 (the nearest choice); rates at batch size 32 (lr_scaling): it "
                             "trains at lr 0.0008 with batch size 16"]


def test_a_partial_config_without_a_batch_size_takes_its_lr_at_the_reference_batch() -> None:
    from tuner.study._starts import file_starts

    space = load_space({"optimizer": {"adam": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}},
                        "batch_size": {"choices": [16, 64, 256]},
                        "lr_scaling": {"rule": "linear", "reference_batch": 32}})
    (start,) = file_starts([{"optimizer": {"name": "adam", "lr": 1e-3}}], space)
    assert start.params == {"adam.lr": pytest.approx(1e-3)}
    assert start.changes == ["lr 0.001 at batch size 32, scaled to the batch size drawn (lr_scaling)"]
    # A space that fixes the batch size trains the lr as given: nothing to say.
    fixed = load_space({**space.raw, "batch_size": 128})
    (start,) = file_starts([{"optimizer": {"name": "adam", "lr": 1e-3}}], fixed)
    assert start.params == {"adam.lr": pytest.approx(1e-3 / 4)} and start.changes == []
    (clipped,) = file_starts([{"optimizer": {"name": "adam", "lr": 0.5}}], space)
    assert clipped.changes == ["adam.lr: 0.5 -> 0.1 (the space's range is 0.0001..0.1); rates at batch size 32 "
                               "(lr_scaling), scaled to the batch size the sampler draws"]


def test_show_says_the_space_scales_rates_and_which_rate_sits_at_an_edge(objective_ref: str, storage_url: str,
                                                                         tmp_cwd: Path) -> None:
    """The trials' table shows the rate each trained at (0.4 at batch 128, above the range's 0.1); the lines
    above it say the space searches rates at batch size 32, and the edge line which rate it means."""
    import yaml
    from typer.testing import CliRunner

    from tuner.cli import app

    (tmp_cwd / "scaled.yaml").write_text(yaml.safe_dump({
        "optimizer": {"nesterov": {"lr": {"low": 0.01, "high": 0.1, "log": True}}},
        "batch_size": {"choices": [32, 128]}, "lr_scaling": {"rule": "linear", "reference_batch": 32}}))
    (tmp_cwd / "start.yaml").write_text("optimizer: {name: nesterov, lr: 0.4}\nbatch_size: 128\n")
    runner = CliRunner()
    made = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--space", "scaled.yaml", "--name",
                               "s", "--n-trials", "1", "--epochs", "1", "--storage", storage_url, "--device", "cpu",
                               "--no-known-starts", "--enqueue", "start.yaml"])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["study", "show", "s", "--storage", storage_url])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "lr_scaling (linear, reference batch size 32): the space searches each optimizer's rate at batch size " \
           "32; the trials below show the rate each trained at its batch size" in text
    assert "lr=4.00e-01" in text  # the rate trained
    assert "nesterov.lr = 0.1 (the rate at batch size 32, lr_scaling) sits at the high end of its range" in text
