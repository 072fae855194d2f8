"""TrainConfig: round trips through dicts and files, building optimizers and schedulers, and validation."""

from __future__ import annotations

import json

import pytest
import torch
from _export_cases import FULL
from torch import nn

from tuner import (
    ConfigError,
    InitConfig,
    OptimizerConfig,
    Regularization,
    ScheduleConfig,
    TrainConfig,
    load_config,
)
from tuner.optim import list_optimizers, list_schedules


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))


CONFIGS = [
    FULL,
    {},
    {"optimizer": "sgd"},
    {"optimizer": {"name": "lbfgs", "lr": 0.5, "line_search_fn": "strong_wolfe", "history_size": 5},
     "regularization": {"weight_decay": 1e-4}},
    {"optimizer": {"name": "nesterov", "momentum": 0.95},
     "schedule": {"name": "multistep", "milestones": [0.3, 0.6]}},
    {"optimizer": {"name": "rmsprop", "centered": True}, "schedule": "plateau", "init": "orthogonal"},
]


@pytest.mark.parametrize("data", CONFIGS)
def test_dict_round_trip(data: dict) -> None:
    config = TrainConfig.from_dict(data)
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config
    assert again.to_dict() == config.to_dict()
    json.dumps(config.to_dict())  # plain JSON-able values only


def test_from_dict_values() -> None:
    config = TrainConfig.from_dict(FULL)
    assert config.optimizer == OptimizerConfig("adamw", 3e-3, {"betas": (0.85, 0.995), "eps": 1e-7})
    assert config.schedule == ScheduleConfig("warmup_cosine", {"warmup_fraction": 0.1, "min_lr_ratio": 0.01})
    assert config.init == InitConfig("kaiming_normal", {"mode": "fan_out"})
    assert config.regularization == Regularization(1e-5, 1e-6, 0.2)
    assert (config.batch_size, config.grad_clip_norm, config.epochs, config.seed) == (32, 1.0, 7, 3)
    assert config.to_dict()["optimizer"] == {"name": "adamw", "lr": 3e-3, "betas": [0.85, 0.995], "eps": 1e-7}


def test_defaults() -> None:
    config = TrainConfig.from_dict({})
    assert config == TrainConfig()
    assert config.optimizer.name == "adam" and config.optimizer.lr == 1e-3
    assert config.schedule.name == "constant" and config.init.name == "default"
    assert config.regularization.dropout is None
    # An optimizer given without lr gets the registry default.
    assert TrainConfig.from_dict({"optimizer": "sgd"}).optimizer.lr == 0.1
    assert TrainConfig.from_dict({"optimizer": {"name": "adadelta"}}).optimizer.lr == 1.0


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
@pytest.mark.parametrize("data", CONFIGS)
def test_file_round_trip(tmp_path, suffix: str, data: dict) -> None:
    config = TrainConfig.from_dict(data)
    path = config.save(tmp_path / f"best{suffix}", trial=12, value=0.93)
    text = path.read_text()
    assert text.endswith("\n")
    if suffix == ".json":
        parsed = json.loads(text)
        assert parsed["metadata"] == {"trial": 12, "value": 0.93}
    else:
        assert "metadata:" in text and text.lstrip().startswith("optimizer:")
    loaded = load_config(path)
    assert loaded == config
    assert TrainConfig.load(str(path)) == config


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip_small_floats(tmp_path, suffix: str) -> None:
    # json.dumps writes 1e-05 (no dot), which YAML 1.1 would read as a string.
    config = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-5, "eps": 1e-10},
                                    "regularization": {"weight_decay": 1e-6, "l1": 2e-7}})
    path = config.save(tmp_path / f"c{suffix}")
    loaded = load_config(path)
    assert loaded == config
    assert loaded.optimizer.lr == 1e-5


@pytest.mark.parametrize("text, value", [("1e-05", 1e-5), ("1.0e10", 1e10), ("-2.5E-3", -2.5e-3),
                                         (".5e1", 5.0), ("1_000.0e-3", 1.0), ("+3e2", 300.0)])
def test_yaml_reads_every_float_spelling_as_a_number(text: str, value: float) -> None:
    from tuner._yaml import load_yaml_text

    assert load_yaml_text(f"x: {text}") == {"x": value}


def test_yaml_keeps_non_numbers_as_text() -> None:
    from tuner._yaml import load_yaml_text

    assert load_yaml_text("a: 1e\nb: e10\nc: 1.2.3e4\nd: '1e5'") == {"a": "1e", "b": "e10", "c": "1.2.3e4",
                                                                      "d": "1e5"}


def test_yaml_written_by_hand(tmp_path) -> None:
    path = tmp_path / "hand.yaml"
    path.write_text("optimizer: {name: adamw, lr: 1e-3}\nschedule: onecycle\nbatch_size: 16\n"
                    "regularization: {weight_decay: 0.01}\n")
    config = load_config(path)
    assert config.optimizer.lr == 1e-3
    assert config.schedule.name == "onecycle"
    assert config.batch_size == 16
    assert config.regularization.weight_decay == 0.01


# -- build -------------------------------------------------------------------------------------------------
def test_build_param_groups_and_lambda_scheduler() -> None:
    config = TrainConfig.from_dict(FULL)
    model = _mlp()
    optimizer, scheduler = config.build(model, steps_per_epoch=4)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert len(optimizer.param_groups) == 2
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[3].bias)}
    for group in optimizer.param_groups:
        assert group["initial_lr"] == 3e-3
        assert group["betas"] == (0.85, 0.995)
        assert group["eps"] == 1e-7
    # warmup_fraction 0.1 of 7 * 4 = 28 steps -> 3 warmup steps, starting at 1/3 of lr.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_build_without_weight_decay_gives_one_group() -> None:
    optimizer, scheduler = TrainConfig().build(_mlp(), steps_per_epoch=1)
    assert isinstance(optimizer, torch.optim.Adam)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("mode", ["min", "max"])
def test_build_plateau(mode: str) -> None:
    config = TrainConfig.from_dict({"optimizer": "momentum", "schedule": {"name": "plateau", "patience": 1}})
    assert config.schedule.interval == "epoch"
    optimizer, scheduler = config.build(_mlp(), steps_per_epoch=5, mode=mode)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.mode == mode
    assert scheduler.patience == 1
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9


def test_build_lbfgs_puts_weight_decay_in_penalty() -> None:
    config = TrainConfig.from_dict({"optimizer": "lbfgs", "regularization": {"weight_decay": 0.1}})
    model = _mlp()
    optimizer, _ = config.build(model, steps_per_epoch=1)
    assert isinstance(optimizer, torch.optim.LBFGS)
    assert len(optimizer.param_groups) == 1
    assert len(optimizer.param_groups[0]["params"]) == 4


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_builds_from_config(name: str) -> None:
    config = TrainConfig.from_dict({"optimizer": name, "regularization": {"weight_decay": 0.01}})
    optimizer, _ = config.build(_mlp(), steps_per_epoch=1)
    assert optimizer.param_groups[0]["lr"] == config.optimizer.lr


def test_build_requires_steps_per_epoch() -> None:
    with pytest.raises(ConfigError, match=r"steps_per_epoch.*len\(loader\)"):
        TrainConfig().build(_mlp())


@pytest.mark.parametrize("value", [0, -3, 2.5, "10", True, None])
def test_build_refuses_a_wrong_steps_per_epoch(value) -> None:
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        TrainConfig().build(_mlp(), steps_per_epoch=value)


def test_build_refuses_an_unknown_mode() -> None:
    with pytest.raises(ConfigError, match="mode must be 'max'.*or 'min'"):
        TrainConfig().build(_mlp(), steps_per_epoch=2, mode="maximize")


@pytest.mark.parametrize("name", list_schedules())
def test_every_schedule_builds_from_config(name: str) -> None:
    config = TrainConfig.from_dict({"schedule": name})
    _, scheduler = config.build(_mlp(), steps_per_epoch=3)
    expected = (torch.optim.lr_scheduler.ReduceLROnPlateau if config.schedule.interval == "epoch"
                else torch.optim.lr_scheduler.LambdaLR)
    assert isinstance(scheduler, expected)


def test_apply_init_and_dropout() -> None:
    model = _mlp()
    config = TrainConfig.from_dict({"init": "orthogonal", "regularization": {"dropout": 0.4}})
    assert config.apply_init(model) == 2
    assert torch.count_nonzero(model[0].bias) == 0
    assert config.apply_dropout(model) == 1
    assert model[2].p == 0.4
    assert TrainConfig().apply_dropout(model) == 0
    assert model[2].p == 0.4


# -- penalty -------------------------------------------------------------------------------------------------
def _value(x: torch.Tensor | float) -> float:
    return x.item() if isinstance(x, torch.Tensor) else float(x)


def _known_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, -4.0]]))
        model[0].bias.fill_(9.0)
    return model


@pytest.mark.parametrize("name", list_optimizers())
def test_penalty_adds_l2_for_lbfgs_only(name: str) -> None:
    config = TrainConfig.from_dict({"optimizer": name, "regularization": {"weight_decay": 0.2, "l1": 0.1}})
    penalty = config.penalty(_known_model())
    l1 = 0.1 * 7.0
    l2 = 0.5 * 0.2 * 25.0
    expected = l1 + l2 if name == "lbfgs" else l1
    assert _value(penalty) == pytest.approx(expected)


def test_penalty_zero_without_regularization() -> None:
    assert TrainConfig().penalty(_known_model()) == 0.0
    lbfgs_l2 = TrainConfig.from_dict({"optimizer": "lbfgs", "regularization": {"weight_decay": 0.2}})
    assert _value(lbfgs_l2.penalty(_known_model())) == pytest.approx(2.5)
    assert _value(lbfgs_l2.l1_penalty(_known_model())) == 0.0


def test_summary() -> None:
    summary = TrainConfig.from_dict(FULL).summary()
    assert summary.startswith("adamw lr=3.00e-03 warmup_cosine bs=32")
    assert "wd=1.0e-05" in summary and "dropout=0.20" in summary and "init=kaiming_normal" in summary
    assert TrainConfig().summary() == "adam lr=1.00e-03 constant bs=64"


def test_a_stored_config_is_summed_up_without_pytorch() -> None:
    """``study show`` sums up the configs of a trial's record with ``config_line`` (no PyTorch): the same line
    as the config's own ``summary()``."""
    import subprocess
    import sys

    from tuner._summary import config_line

    stored = TrainConfig.from_dict(FULL).to_dict()
    assert config_line(stored) == "adamw lr=3.00e-03 warmup_cosine bs=32 wd=1.0e-05 dropout=0.20 init=kaiming_normal"
    # What a hand-written record may hold: names alone, parts missing or of the wrong kind.
    assert config_line({"optimizer": "adam", "init": "xavier_uniform", "batch_size": 16}) == (
        "adam lr=? constant bs=16 init=xavier_uniform")
    assert config_line({"optimizer": {"name": "sgd", "lr": "fast"}, "regularization": [1]}) == "sgd lr=? constant bs=?"
    assert config_line("adam") == "?"
    code = ("import sys, json; from tuner._summary import config_line; "
            f"print(config_line(json.loads({json.dumps(json.dumps(stored))}))); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [TrainConfig.from_dict(FULL).summary(), "False"]


# -- validation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"optimizer": {"name": "adam", "lr": -0.1}},
         ["optimizer:", "'lr' parameter of the 'adam' optimizer must be a float in the range (0, inf)",
          "Got -0.1"]),
        ({"optimizer": {"name": "sgd", "lr": 0}}, ["(0, inf)", "Got 0"]),
        ({"optimizer": "adamw2"}, ["Unknown optimizer 'adamw2'", "Did you mean 'adamw'?", "lbfgs, momentum"]),
        ({"schedule": "cosin"}, ["Unknown schedule 'cosin'", "Did you mean 'cosine'?", "warmup_cosine"]),
        ({"init": {"name": "xavier_unifrom"}}, ["Unknown initialiser 'xavier_unifrom'",
                                                "Did you mean 'xavier_uniform'?"]),
        ({"optimzer": "adam"}, ["Unknown train-config key 'optimzer'", "Did you mean 'optimizer'?",
                                "batch_size", "regularization"]),
        ({"regularization": {"weight_decya": 0.1}}, ["Unknown key 'weight_decya'",
                                                     "Valid: dropout, l1, weight_decay",
                                                     "Did you mean 'weight_decay'?"]),
        ({"optimizer": {"name": "adam", "betas": [0.9, 1.0]}},
         ["'betas' parameter of the 'adam' optimizer must be a pair of floats, each in the range [0, 1)"]),
        ({"optimizer": {"name": "adam", "betas": [0.9]}}, ["must be a pair of floats"]),
        ({"optimizer": {"name": "adam", "betas": [-0.1, 0.9]}}, ["must be a pair of floats"]),
        ({"optimizer": {"name": "adam", "momentum": 0.9}},
         ["the 'adam' optimizer takes no parameter 'momentum'", "Valid parameters: amsgrad, betas, eps, lr"]),
        ({"optimizer": {"name": "adam", "weight_decay": 0.1}},
         ["takes no parameter 'weight_decay'", "In a train config, weight decay is regularization.weight_decay"]),
        ({"optimizer": {"name": "adamw", "beta1": 0.8}}, ["takes no parameter 'beta1'",
                                                          "gives both as betas: [beta1, beta2]"]),
        ({"optimizer": {"name": "sgd", "momentum": 0.9}}, ["SGD with momentum is the 'momentum' optimizer",
                                                           "Nesterov momentum 'nesterov'"]),
        ({"optimizer": {"name": "adam", "bets": [0.9, 0.99]}}, ["Did you mean 'betas'?"]),
        # A misspelt name that belongs elsewhere: the name, and where it goes
        ({"optimizer": {"name": "adamw", "weight_decya": 0.05}},
         ["Did you mean 'weight_decay'? In a train config, weight decay is regularization.weight_decay"]),
        ({"optimizer": {"name": "adamw", "wd": 0.05}}, ["Did you mean 'weight_decay'? In a train config"]),
        ({"optimizer": {"name": "adam", "momentun": 0.9}}, ["Did you mean 'momentum'? 'adam' takes no momentum"]),
        ({"optimizer": {"name": "adamw", "learning_rate": 1e-3}}, ["Did you mean 'lr'?"]),
        ({"schedule": "cosine_warmup"}, ["Did you mean 'warmup_cosine'?"]),
        ({"optimizer": "AdamW"}, ["Did you mean 'adamw'?"]),
        ({"batch_size": 0},
         ["batch_size:", "'batch_size' parameter of the train config must be an int in the range [1, inf)",
          "Got 0"]),
        ({"batch_size": 32.0}, ["must be an int"]),
        ({"epochs": -1}, ["'epochs'", "[1, inf)"]),
        ({"seed": -1}, ["'seed'"]),
        ({"grad_clip_norm": 0.0}, ["'grad_clip_norm'", "(0, inf)"]),
        ({"regularization": {"dropout": 1.0}},
         ["'dropout' parameter of regularization must be a float in the range [0, 1)"]),
        ({"regularization": {"weight_decay": -1e-4}}, ["'weight_decay'", "[0, inf)"]),
        ({"regularization": [0.1]}, ["regularization: expected a mapping"]),
        ({"optimizer": {"lr": 0.1}}, ["optimizer: the 'name' key is missing"]),
        ({"optimizer": 3}, ["optimizer: expected a name or a mapping"]),
        ({"schedule": {"name": "step", "gamma": 2.0}},
         ["schedule:", "'gamma' parameter of the 'step' schedule"]),
        ({"schedule": {"name": "step", "size": 2}}, ["takes no parameter 'size'",
                                                     "Valid parameters: gamma, step_size, warmup_fraction"]),
        ({"init": {"name": "normal", "std": 0}}, ["init:", "'std' parameter of the 'normal' initialiser"]),
        ({"optimizer": {"name": "rmsprop", "centered": "yes"}}, ["must be a bool"]),
    ],
)
def test_bad_inputs(data: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        TrainConfig.from_dict(data)
    message = str(excinfo.value)
    for part in expected:
        assert part in message, message


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping of keys. It holds a list"):
        TrainConfig.from_dict([1, 2])


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="'lr' parameter"):
        OptimizerConfig("adam", -1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="Unknown schedule"):
        ScheduleConfig("nope")


def test_load_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer: {name: adam, lr: -1.0}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value).startswith(f"{path}: optimizer: ")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    # A file that is not a train config says what it is instead: a study spec (its epochs and seed are config
    # keys too), an exported script, a search space, or a config with a misspelt key.
    for name, text, said in (
            ("spec.yaml", "objective: digits-mlp\nspace: default\nn_trials: 20\nepochs: 5\nseed: 1\n",
             "holds no train config"),
            ("best.py", "import torch\n", "is a Python script"),
            ("space.yaml", "optimizer:\n  adamw:\n    lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n  sgd:\n",
             "looks like a search space \\(its optimizer holds adamw, sgd\\)"),
            ("typo.yaml", "optimiser: adam\nbatch_sise: 32\n",
             "Unknown train-config key 'optimiser'.*Did you mean 'optimizer'")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"{path}: {said}"):
            load_config(path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"optimizer": {"name": "adam",\n "lr": }')
    with pytest.raises(ConfigError, match=r"broken\.json:2: invalid YAML"):
        load_config(broken)


def test_metadata_is_ignored_on_load(tmp_path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("optimizer: sgd\nmetadata: {study: x, anything: [1, 2]}\n")
    assert load_config(path) == TrainConfig.from_dict({"optimizer": "sgd"})


def test_an_unknown_name_among_none_says_there_is_none() -> None:
    from tuner.errors import unknown_name_message

    assert unknown_name_message("study", "nope", []) == "Unknown study 'nope': there is none."


def test_a_config_changed_after_it_was_made_is_checked_again_before_use(tmp_path) -> None:
    model = nn.Linear(3, 2)
    config = TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 1e-3}})
    config.optimizer.lr = 0
    with pytest.raises(ConfigError, match="lr"):
        config.build(model, steps_per_epoch=2)
    config = TrainConfig()
    config.regularization.weight_decay = -0.1
    with pytest.raises(ConfigError, match="weight_decay"):
        config.setup(model, steps_per_epoch=2)
    config = TrainConfig()
    config.epochs = -5
    with pytest.raises(ConfigError, match="epochs"):
        config.save(tmp_path / "c.yaml")
    assert not (tmp_path / "c.yaml").exists()
    config = TrainConfig()
    config.schedule = "cosine"  # a name, as from_dict reads it
    _, scheduler = config.build(model, steps_per_epoch=2)
    assert isinstance(config.schedule, ScheduleConfig) and config.schedule.name == "cosine"
    config.optimizer.params["momentun"] = 0.9
    with pytest.raises(ConfigError, match="momentun"):
        config.build(model, steps_per_epoch=2)


def test_direction_is_one_of_two_words_wherever_it_is_given(tmp_path) -> None:
    for bad in ("min", "minimise", "MINIMIZE"):
        with pytest.raises(ConfigError, match="'maximize', 'minimize' or None"):
            TrainConfig(direction=bad)
        with pytest.raises(ConfigError, match="metadata.direction: 'maximize' or 'minimize'"):
            TrainConfig.from_dict({"optimizer": {"name": "adam"}, "metadata": {"direction": bad}})
        with pytest.raises(ConfigError, match=r"save\(direction=...\)"):
            TrainConfig().save(tmp_path / "c.yaml", direction=bad)
    saved = TrainConfig().save(tmp_path / "c.yaml", direction="minimize")
    assert load_config(saved).direction == "minimize"


def test_a_saved_config_keeps_its_direction_and_the_plateau_schedule_its_mode(tmp_path) -> None:
    """``best_config.save(path)`` of a study that minimized a loss: loaded back into the user's loop, the
    plateau schedule still waits for the loss to fall, not to rise."""
    config = TrainConfig(schedule=ScheduleConfig("plateau"), direction="minimize")
    for name in ("best.yaml", "best.json"):
        loaded = load_config(config.save(tmp_path / name))
        assert loaded.direction == "minimize", name
        assert loaded.setup(torch.nn.Linear(2, 1), steps_per_epoch=1).scheduler.mode == "min", name
    assert load_config(config.save(tmp_path / "given.yaml", direction="maximize")).direction == "maximize"
    assert "metadata" not in TrainConfig().to_yaml()  # no direction: nothing to keep


def test_a_config_through_to_dict_and_from_dict_keeps_its_direction() -> None:
    """``trial.set_user_attr("config", config.to_dict())`` in a hand-written Optuna loop (examples/optuna_loop.py)
    and ``TrainConfig.from_dict`` of it later: the plateau schedule of a config sampled for a minimized loss
    still waits for the loss to fall."""
    import optuna

    import tuner

    trial = optuna.create_study(direction="minimize").ask()
    sampled = tuner.suggest(trial, {"optimizer": {"adam": {"lr": 1e-3}}, "schedule": {"plateau": {}},
                                    "batch_size": 64})
    again = TrainConfig.from_dict(sampled.to_dict())
    assert again.direction == "minimize" and again == sampled
    assert again.setup(nn.Linear(2, 1), steps_per_epoch=1).scheduler.mode == "min"
    assert "metadata" not in TrainConfig().to_dict()  # no direction: the mapping holds the values alone


def test_save_picks_json_by_suffix_in_any_case_and_refuses_a_script(tmp_path) -> None:
    path = TrainConfig().save(tmp_path / "c.JSON")
    assert json.loads(path.read_text())["batch_size"] == 64
    assert load_config(path) == TrainConfig()
    with pytest.raises(ConfigError, match="tuner study export --format python"):
        TrainConfig().save(tmp_path / "best.py")
    assert not (tmp_path / "best.py").exists()


def test_setup_takes_a_config_and_true_or_false_flags() -> None:
    from tuner import TrainingSetup

    model = nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="takes a TrainConfig"):
        TrainingSetup({"optimizer": "adam"}, model, 3)
    for key, value in (("seed", 5), ("init", "no"), ("dropout", 0.5)):
        with pytest.raises(ConfigError, match=rf"{key}=...\) takes True or False; got {value!r}"):
            TrainConfig().setup(model, 3, **{key: value})


@pytest.mark.parametrize("call, said", [
    (lambda: OptimizerConfig("adam", 0.1, ["x"]), "optimizer: its params are a mapping"),
    (lambda: __import__("tuner").seed_everything(2**70), "from -2\\*\\*63 to 2\\*\\*64 - 1"),
    (lambda: __import__("tuner").tune(lambda ctx: 0.0, space=TrainConfig()), "A TrainConfig is one config, not a "
                                                                              "space: pass it as enqueue"),
    (lambda: __import__("tuner").tune(lambda ctx: 0.0, "lr-only", enqueue=5), "enqueue: a list of configs"),
    (lambda: __import__("tuner").objectives.Objective("x", load_data=dict, build_model=dict, loss="mse"),
     "loss must be a function loss\\(outputs, targets\\).*got str 'mse'"),
    (lambda: __import__("tuner").objectives.Objective("x", load_data=dict, build_model=dict, pruner={"name": "x"}),
     "pruner must be a pruner's name"),
])
def test_a_wrong_kind_of_argument_is_a_config_error_that_says_what_goes_there(call, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        call()


def test_a_part_without_params_has_none() -> None:
    assert ScheduleConfig("cosine", None).params == ScheduleConfig("cosine").params


def test_saved_text_keeps_its_characters(tmp_path) -> None:
    path = TrainConfig().save(tmp_path / "c.yaml", study="ünïcödé 名前")
    assert "study: ünïcödé 名前" in path.read_text(encoding="utf-8")
    assert load_config(path) == TrainConfig()


def test_a_suggestion_is_made_only_for_a_name_alike_enough() -> None:
    """`tuner study show nope` suggested 'mine' (two letters of four in common)."""
    from tuner.errors import closest

    assert closest("nope", ["digits-adam", "mine", "quickstart"]) is None
    assert closest("adamw2", ["adam", "adamw", "sgd"]) == "adamw"
    assert closest("optimzer", ["optimizer", "schedule"]) == "optimizer"
    assert closest("cosine_warmup", ["warmup_cosine", "cosine"]) == "warmup_cosine"
    # A shortened name, or one with more to it, where one valid name fits
    from tuner.init import list_inits
    from tuner.optim import list_schedules
    from tuner.study._spec import StudySpec

    keys = list(StudySpec.model_fields)
    assert [closest(n, keys) for n in ("study_name", "search_space", "random_seed", "warm")] == [
        "name", "space", "seed", "warm_start"]
    assert [closest(n, list_schedules()) for n in ("reduce_on_plateau", "cosineannealing", "poly")] == [
        "plateau", "cosine", "polynomial"]
    assert [closest(n, list_inits()) for n in ("trunc", "orth")] == ["trunc_normal", "orthogonal"]
    assert closest("adam", ["adam-family", "default", "sgd-family"]) == "adam-family"
