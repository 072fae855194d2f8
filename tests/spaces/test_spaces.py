"""Search spaces: the built-in ones load and sample valid configs; bad YAML gives a ConfigError at
file:line."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from torch import nn

from tuner import ConfigError, TrainConfig
from tuner.init import get_init, list_inits
from tuner.optim import get_optimizer, get_schedule, list_optimizers, list_schedules
from tuner.spaces import list_spaces, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SINGLE_KEYS = {"optimizer", "schedule", "init", "batch_size", "weight_decay", "l1", "dropout",
               "grad_clip_norm"}


def _study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))


def _sample(space, n: int, seed: int = 0) -> list[tuple[dict, TrainConfig]]:
    study = _study(seed)
    out = []
    for _ in range(n):
        trial = study.ask()
        config = space.sample(trial, epochs=3, seed=1)
        out.append((dict(trial.params), config))
        study.tell(trial, 0.0)
    return out


def _target_key(key: str) -> str:
    """``one_minus_beta1`` -> ``betas``, ``one_minus_momentum`` -> ``momentum``."""
    key = key.removeprefix("one_minus_")
    return "betas" if key in ("beta1", "beta2") else key


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0), nn.Linear(4, 1))


# -- built-in spaces ---------------------------------------------------------------------------------------
def test_builtin_spaces_exist() -> None:
    spaces = list_spaces()
    assert {"default", "full", "lr-only", "adam-family", "sgd-family"} <= set(spaces)
    assert all(path.is_file() and path.suffix in (".yaml", ".yml") for path in spaces.values())


@pytest.mark.parametrize("name", list(list_spaces()))
def test_builtin_space_samples_valid_configs(name: str) -> None:
    space = load_space(name)
    assert space.name == name
    assert space.description
    dists = space.distributions()
    samples = _sample(space, 30)
    for params, config in samples:
        opt, sched, init = config.optimizer.name, config.schedule.name, config.init.name
        assert opt in space.optimizer and sched in space.schedule and init in space.init
        for key, value in params.items():
            assert key in dists, key
            dist = dists[key]
            if isinstance(dist, CategoricalDistribution):
                assert value in dist.choices
            else:
                assert dist.low <= value <= dist.high
            if "." not in key:
                assert key in SINGLE_KEYS, key
                continue
            owner, param = key.split(".", 1)
            # Conditional parameters: only the chosen optimizer's / schedule's / initialiser's are suggested.
            assert owner in (opt, sched, init), (key, opt, sched, init)
            if owner == opt:
                assert param == "weight_decay" or _target_key(param) in get_optimizer(opt).bounds, key
            elif owner == sched:
                assert param in get_schedule(sched).bounds, key
            else:
                assert param in get_init(init).bounds, key
        # Everything the config holds is within the optimizer's bounds.
        info = get_optimizer(opt)
        assert set(config.optimizer.params) <= set(info.bounds)
        assert info.check({"lr": config.optimizer.lr, **config.optimizer.params}) == {
            "lr": config.optimizer.lr, **config.optimizer.params}
        assert info.bounds["lr"].contains_number(config.optimizer.lr)
        assert get_schedule(sched).check(config.schedule.params) == config.schedule.params
        assert config.epochs == 3 and config.seed == 1
        # The optimizer's branch in the trial is its own: the chosen optimizer's name, when it is a choice.
        if len(space.optimizer) > 1:
            assert params["optimizer"] == opt
        for other in space.optimizer:
            if other != opt:
                assert not any(k.startswith(other + ".") for k in params)
        optimizer, scheduler = config.build(_mlp(), steps_per_epoch=2)
        assert isinstance(optimizer, info.cls)
        assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", list(list_spaces()))
def test_builtin_space_fingerprint_is_stable(name: str) -> None:
    assert load_space(name).fingerprint() == load_space(name).fingerprint()


def test_builtin_fingerprints_differ() -> None:
    prints = {load_space(name).fingerprint() for name in list_spaces()}
    assert len(prints) == len(list_spaces())


def test_lr_only_space() -> None:
    space = load_space("lr-only")
    assert list(space.distributions()) == ["adam.lr"]
    for params, config in _sample(space, 10):
        assert set(params) == {"adam.lr"}
        assert config.optimizer.lr == params["adam.lr"]
        assert 1e-5 <= config.optimizer.lr <= 1e-1
        assert config.schedule.name == "constant" and config.batch_size == 64


def test_full_space_covers_every_registry_entry() -> None:
    from tuner.optim import get_optimizer

    space = load_space("full")
    # The tuning-free optimizers come from packages of their own (an extra): they have a space of their own.
    own_package = {n for n in list_optimizers() if get_optimizer(n).package}
    assert own_package == {"prodigy", "schedulefree_adamw"}
    assert set(space.optimizer) == set(list_optimizers()) - own_package
    assert set(load_space("tuning-free").optimizer) == own_package
    assert set(space.schedule) == set(list_schedules())
    assert set(space.init) == set(list_inits())
    dists = space.distributions()
    assert set(dists["optimizer"].choices) == set(list_optimizers()) - own_package
    assert set(dists["schedule"].choices) == set(list_schedules())
    assert set(dists["init"].choices) == set(list_inits())


def test_full_space_samples_lbfgs_with_its_own_params() -> None:
    space = load_space("full")
    seen = set()
    for params, config in _sample(space, 150, seed=3):
        seen.add(config.optimizer.name)
        if config.optimizer.name == "lbfgs":
            assert {k for k in params if k.startswith("lbfgs.")} == {"lbfgs.lr", "lbfgs.history_size",
                                                                    "lbfgs.max_iter"}
            assert config.optimizer.params["history_size"] in (5, 10, 20)
            assert 2 <= config.optimizer.params["max_iter"] <= 6
    assert seen == set(load_space("full").optimizer)  # every optimizer of the space was drawn


def test_per_optimizer_weight_decay() -> None:
    # adamw has its own weight_decay range in 'default'; the others use the top-level one (none there: 0).
    for params, config in _sample(load_space("default"), 30):
        if config.optimizer.name in ("adamw", "adam", "nesterov", "rmsprop"):
            key = f"{config.optimizer.name}.weight_decay"
            assert config.regularization.weight_decay == params[key]
            assert "weight_decay" not in params


# -- reparametrisations ------------------------------------------------------------------------------------
def test_one_minus_beta1_gives_beta1() -> None:
    space = load_space({"optimizer": {"adam": {"lr": 1e-3, "one_minus_beta1": {"low": 0.01, "high": 0.5,
                                                                               "log": True}}}})
    for params, config in _sample(space, 10):
        value = params["adam.one_minus_beta1"]
        assert 0.01 <= value <= 0.5
        beta1, beta2 = config.optimizer.params["betas"]
        assert beta1 == pytest.approx(1.0 - value, abs=1e-15)
        assert beta2 == 0.999  # the optimizer's default
        assert config.optimizer.lr == 1e-3


def test_one_minus_momentum_and_beta2() -> None:
    space = load_space({"optimizer": {
        "nesterov": {"one_minus_momentum": {"low": 0.01, "high": 0.1}},
        "adamw": {"beta1": 0.8, "one_minus_beta2": {"choices": [0.01, 0.001]}},
    }})
    for params, config in _sample(space, 20):
        if config.optimizer.name == "nesterov":
            value = params["nesterov.one_minus_momentum"]
            assert config.optimizer.params["momentum"] == pytest.approx(1 - value)
            assert config.optimizer.lr == get_optimizer("nesterov").defaults["lr"]
        else:
            assert config.optimizer.params["betas"] == pytest.approx(
                (0.8, 1 - params["adamw.one_minus_beta2"]))


def test_scientific_notation_without_dot(tmp_path) -> None:
    path = _write(tmp_path, "optimizer:\n  adam:\n    lr: {low: 1e-4, high: 1e-2, log: true}\n")
    space = load_space(path)
    for _, config in _sample(space, 5):
        assert 1e-4 <= config.optimizer.lr <= 1e-2


def test_space_from_file_and_grid(tmp_path) -> None:
    path = _write(tmp_path, "optimizer:\n  momentum:\n    lr: {low: 0.01, high: 1.0, log: true}\n"
                            "schedule: [constant, step]\nbatch_size: {choices: [8, 16]}\n", "mine.yml")
    space = load_space(str(path))
    assert space.name == "mine" and space.source == str(path)
    grid = space.grid_points(points=3)
    assert len(grid) == 3 * 2 * 2
    assert sorted({p["momentum.lr"] for p in grid}) == pytest.approx([0.01, 0.1, 1.0])
    assert {p["schedule"] for p in grid} == {"constant", "step"}
    assert {p["batch_size"] for p in grid} == {8, 16}


def test_grid_combines_each_optimizer_only_with_its_own_parameters(tmp_path) -> None:
    path = _write(tmp_path, "optimizer:\n  adam:\n    lr: {low: 0.001, high: 0.1, log: true}\n"
                            "    weight_decay: {choices: [0.0, 0.1]}\n"
                            "  sgd:\n    lr: {low: 0.025, high: 0.125, step: 0.025}\n"
                            "batch_size: {type: int, low: 16, high: 256, step: 16}\n"
                            "regularization: {weight_decay: {choices: [0.0, 0.01]}}\n", "g.yaml")
    grid = load_space(path).grid_points(points=3)
    adam = [p for p in grid if p["optimizer"] == "adam"]
    sgd = [p for p in grid if p["optimizer"] == "sgd"]
    # adam: 3 lr x its own 2 weight decays (the global one does not apply) x 3 batch sizes
    assert len(adam) == 3 * 2 * 3 and all("sgd.lr" not in p and "weight_decay" not in p for p in adam)
    # sgd: 3 points on its 0.025 step grid x 2 global weight decays x 3 batch sizes
    assert len(sgd) == 3 * 2 * 3 and all("adam.lr" not in p for p in sgd)
    assert sorted({p["sgd.lr"] for p in sgd}) == pytest.approx([0.025, 0.075, 0.125])
    assert {p["batch_size"] for p in grid} <= set(range(16, 257, 16))
    assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)


# -- errors --------------------------------------------------------------------------------------------
BAD = [
    # (id, yaml, line, parts the message must contain)
    ("unknown-optimizer",
     "optimizer:\n  adamw2:\n    lr: 0.1\n", 2,
     ["Unknown optimizer 'adamw2'", "Did you mean 'adamw'?",
      "Valid: " + ", ".join(sorted(list_optimizers()))]),
    ("unknown-optimizer-list",
     "description: x\noptimizer: [adam, adamw2]\n", 2,
     ["Unknown optimizer 'adamw2'", "Did you mean 'adamw'?"]),
    ("unknown-schedule",
     "optimizer: adam\nschedule:\n  constant: {}\n  cosin: {}\n", 4,
     ["Unknown schedule 'cosin'", "Did you mean 'cosine'?", "Valid: " + ", ".join(sorted(list_schedules()))]),
    ("unknown-schedule-short",
     "optimizer: adam\n\nschedule: warmup_cosin\n", 3,
     ["Unknown schedule 'warmup_cosin'", "Did you mean 'warmup_cosine'?"]),
    ("unknown-init",
     "optimizer: adam\ninit: [default, xavier_unifrom]\n", 2,
     ["Unknown initialiser 'xavier_unifrom'", "Did you mean 'xavier_uniform'?",
      "Valid: " + ", ".join(sorted(list_inits()))]),
    ("malformed",
     "optimizer:\n  adam:\n    lr: [0.1, 0.2\nbatch_size: 3\n", 4, ["invalid YAML"]),
    ("bad-indent",
     "optimizer:\n  adam:\n    lr: 0.1\n   eps: 1.0\n", 4, ["invalid YAML", "check the indentation of this line"]),
    ("over-indented-key",
     "optimizer: adam\n  batch_size: 3\n", 2, ["invalid YAML", "check the indentation of this line and the one above"]),
    ("duplicate-key",
     "optimizer:\n  adam:\n    lr: 0.1\n    lr: 0.2\n", 4,
     ["invalid YAML", "duplicate key 'lr'", "first on line 3"]),
    ("int-range-for-a-real-number",
     "optimizer:\n  adam:\n    lr: {type: int, low: 1, high: 3}\n", 3,
     ["'lr' takes real numbers, and type: int would sample only the whole numbers 1..3: leave 'type' out"]),
    ("float-type-for-a-whole-number",
     "optimizer: adam\nschedule:\n  step: {step_size: {type: float, low: 2, high: 5}}\n", 3,
     ["'step_size' takes whole numbers, and this is a float range (a range without 'type', or type: float)"]),
    ("two-documents",
     "optimizer: adam\n---\nbatch_size: 64\n", 2,
     ["a second document starts here ('---'): a file holds one document; remove the '---' line"]),
    ("duplicate-top-key",
     "optimizer: adam\nbatch_size: 8\nbatch_size: 16\n", 3, ["duplicate key 'batch_size'"]),
    ("duplicate-key-beside-a-merge",  # a key a merge brings may be set again; one written twice may not
     "optimizer:\n  adamw: &base {lr: 0.1}\n  adam:\n    <<: *base\n    eps: 1.0e-8\n    eps: 1.0e-7\n", 6,
     ["duplicate key 'eps' (first on line 5)"]),
    ("low-ge-high",
     "optimizer:\n  adam:\n    lr: {low: 0.1, high: 0.01}\n", 3,
     ["'optimizer.adam.lr'", "'low' must be less than 'high'", "low=0.1, high=0.01"]),
    ("low-eq-high",
     "optimizer:\n  adam:\n    lr: {low: 0.1, high: 0.1}\n", 3, ["'low' must be less than 'high'"]),
    ("log-low-zero",
     "optimizer:\n  adam:\n    eps: 1.0e-8\n    lr: {low: 0.0, high: 0.1, log: true}\n", 4,
     ["`low > 0` must hold for `log=True`", "low=0.0"]),
    ("log-low-negative",
     "optimizer: adam\nregularization:\n  weight_decay: {low: -1.0, high: 0.1, log: true}\n", 3,
     ["'regularization.weight_decay'", "`low > 0` must hold for `log=True`"]),
    ("empty-choices",
     "optimizer:\n  adam:\n    lr: {choices: []}\n", 3, ["'choices' must be a non-empty list"]),
    ("negative-lr",
     "optimizer:\n  sgd:\n    lr: -0.1\n", 3, ["'lr' must be a float in the range (0, inf)", "Got -0.1"]),
    ("negative-lr-range",
     "optimizer:\n  sgd:\n    lr: {low: -0.1, high: 0.1}\n", 3,
     ["'lr' must be a float in the range (0, inf)"]),
    ("negative-lr-choice",
     "optimizer:\n  sgd:\n    lr: {choices: [0.1, -0.01]}\n", 3, ["Got -0.01"]),
    ("param-not-taken",
     "optimizer:\n  adamw:\n    lr: 0.01\n  adam:\n    lr: 0.01\n    momentum: 0.9\n", 6,
     ["the 'adam' optimizer takes no parameter 'momentum'",
      "Valid parameters: amsgrad, beta1, beta2, betas, eps, lr, one_minus_beta1, one_minus_beta2, "
      "weight_decay"]),
    ("schedule-param-not-taken",
     "optimizer: adam\nschedule:\n  onecycle:\n    warmup_fraction: 0.1\n", 4,
     ["the 'onecycle' schedule takes no parameter 'warmup_fraction'", "div_factor", "pct_start"]),
    ("unknown-top-key",
     "optimizer: adam\nbatch_sise: 32\n", 2,
     ["Unknown search-space key 'batch_sise'", "Did you mean 'batch_size'?",
      "Valid: batch_size, description, grad_clip_norm, init, lr_scaling, optimizer, regularization, schedule"]),
    ("unknown-regularization-key",
     "optimizer: adam\nregularization:\n  dropout: 0.1\n  l2: 0.1\n", 4,
     ["Unknown regularization key 'l2'", "weight_decay"]),
    ("one-minus-out-of-range",
     "optimizer:\n  adam:\n    one_minus_beta1: {low: 0.0, high: 0.1}\n", 3,
     ["'beta1' must be a float in the range [0, 1)", "1 - 0.0 = 1.0"]),
    ("betas-and-beta1",
     "optimizer:\n  adam:\n    betas: [0.9, 0.99]\n    beta1: 0.8\n", 2,
     ["give either 'betas' or 'beta1'/'beta2'"]),
    ("momentum-and-one-minus",
     "optimizer:\n  momentum:\n    momentum: 0.9\n    one_minus_momentum: 0.1\n", 2,
     ["give either 'momentum' or 'one_minus_momentum'"]),
    ("dist-unknown-key",
     "optimizer:\n  adam:\n    lr: {low: 0.001, hihg: 0.1}\n", 3,
     ["Unknown key 'hihg'", "Valid: choices, high, log", "Did you mean 'high'?"]),
    ("dist-unknown-key-short",
     "optimizer:\n  adam:\n    lr: {low: 0.001, hgh: 0.1}\n", 3, ["Unknown key 'hgh'", "Did you mean 'high'?"]),
    ("bad-batch-size",
     "optimizer: adam\nbatch_size: {choices: [0, 32]}\n", 2,
     ["'batch_size' must be an int in the range [1, inf)"]),
    ("int-range-not-integer",
     "optimizer: adam\nbatch_size: {type: int, low: 8.5, high: 64}\n", 2, ["must be an integer"]),
    ("int-range-without-type",
     "optimizer: adam\nbatch_size: {low: 16, high: 128}\n", 2,
     ["'batch_size' takes whole numbers", "write {type: int, low: 16, high: 128}, or give 'choices'"]),
    ("int-parameter-range-without-type",
     "optimizer:\n  schedulefree_adamw:\n    warmup_steps: {low: 0, high: 100}\n", 3,
     ["'warmup_steps' takes whole numbers", "{type: int, low: 0, high: 100}"]),
]


@pytest.mark.parametrize(("text", "line", "parts"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_space_yaml(tmp_path, text: str, line: int, parts: list[str]) -> None:
    path = _write(tmp_path, text, "bad_space.yaml")
    with pytest.raises(ConfigError) as excinfo:
        load_space(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert "bad_space.yaml" in message
    for part in parts:
        assert part in message, message
    assert "\n" not in message.strip()


@pytest.mark.parametrize(
    "text",
    [
        'optimizer:\n  adam:\n    lr: !!python/object/apply:os.system ["touch {sentinel}"]\n',
        '!!python/object/apply:os.system ["touch {sentinel}"]\n',
        'optimizer: !!python/object/apply:subprocess.call [["touch", "{sentinel}"]]\n',
        'optimizer:\n  adam:\n    lr: !!python/name:os.system\n',
    ],
    ids=["nested", "document", "subprocess", "name-tag"],
)
def test_python_tags_are_refused_and_never_run(tmp_path, monkeypatch, text: str) -> None:
    monkeypatch.chdir(tmp_path)
    sentinel = tmp_path / "SENTINEL"
    path = _write(tmp_path, text.replace("{sentinel}", str(sentinel)), "evil.yaml")
    with pytest.raises(ConfigError) as excinfo:
        load_space(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}:")
    assert int(message[len(str(path)) + 1:].split(":", 1)[0]) >= 1
    assert "tags that construct Python objects are not allowed" in message
    assert not sentinel.exists()
    assert not (tmp_path / "SENTINEL").exists()


def test_empty_and_non_mapping_files(tmp_path) -> None:
    for text, holds in (("", "nothing (an empty file, or comments only)"), ("- adam\n- sgd\n", "a list"),
                        ("just a string\n", "a single value ('just a string')")):
        path = _write(tmp_path, text, "odd.yaml")
        with pytest.raises(ConfigError) as excinfo:
            load_space(path)
        assert str(excinfo.value).startswith(f"{path}: a search space must be a mapping")
        assert str(excinfo.value).endswith(f"It holds {holds}.")  # not Python's NoneType


def test_missing_optimizer_key(tmp_path) -> None:
    path = _write(tmp_path, "schedule: constant\n", "noopt.yaml")
    with pytest.raises(ConfigError, match=r"noopt\.yaml: the 'optimizer' key is missing"):
        load_space(path)


def test_unknown_builtin_name_and_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_space("defualt")
    message = str(excinfo.value)
    assert "Unknown search space 'defualt'" in message
    assert "Did you mean 'default'?" in message
    assert all(name in message for name in list_spaces())
    with pytest.raises(ConfigError, match="no such search-space file"):
        load_space(tmp_path / "nope.yaml")


def test_sampled_values_respect_bounds_on_edges() -> None:
    # Ranges that touch a bound's edge are fine when the bound is closed there.
    space = load_space({"optimizer": {"rmsprop": {"alpha": {"low": 0.0, "high": 1.0},
                                                  "momentum": {"low": 0.0, "high": 0.5}}},
                        "regularization": {"dropout": {"low": 0.0, "high": 0.5}}})
    for _, config in _sample(space, 10):
        assert 0.0 <= config.optimizer.params["alpha"] <= 1.0
        assert 0.0 <= config.regularization.dropout <= 0.5
        assert math.isfinite(config.optimizer.lr)
        optimizer, _ = config.build(_mlp(), steps_per_epoch=1)
        assert isinstance(optimizer, torch.optim.RMSprop)


def test_multistep_milestones_out_of_order_are_refused_at_load(tmp_path) -> None:
    path = _write(tmp_path, "optimizer: {adam: {lr: 0.01}}\nschedule:\n  multistep:\n"
                            "    milestones: [0.8, 0.3]\n", "ms.yaml")
    with pytest.raises(ConfigError, match=r"ms\.yaml:3: key 'schedule\.multistep'.*milestones.*must increase"):
        load_space(path)


def test_a_space_given_as_a_mapping_is_named_custom():
    """Its name shows in a tune() study's default name and in headers: not '<space>'."""
    space = load_space({"optimizer": "adam", "batch_size": 16})
    assert space.name == "custom"
    with pytest.raises(ConfigError, match="^the space mapping: "):
        load_space({"optimizer": "adamx"})


def test_a_plain_list_for_a_searched_value_says_how_to_write_choices():
    with pytest.raises(ConfigError, match=r"A list is one fixed value here; to search among values write "
                                          r"\{choices: \[32, 64\]\}"):
        load_space({"optimizer": "adam", "batch_size": [32, 64]})
    with pytest.raises(ConfigError, match=r"write \{type: int, low: 1, high: 3\}"):  # whole bounds, which load
        load_space({"optimizer": "sgd", "schedule": {"step": {"step_size": {"low": 0.5, "high": 3}}}})
    assert load_space({"optimizer": "sgd", "schedule": {"step": {"step_size": {"type": "int", "low": 1, "high": 3}}}})


def test_a_misspelt_optimizer_key_in_a_space_is_matched_against_the_keys_a_space_takes():
    for typo, meant in (("Beta1", "beta1"), ("weight_decy", "weight_decay")):
        with pytest.raises(ConfigError, match=f"Did you mean '{meant}'"):
            load_space({"optimizer": {"adam": {typo: 0.9}}})


def test_a_schedule_longer_than_the_trials_is_noted():
    sgd = load_space("sgd-family")  # step_size 3..15
    (note,) = sgd.schedule_notes(3)
    assert note.startswith("schedule step: trials train 3 epoch(s), so step with step_size 3..15 never lowers")
    (some,) = sgd.schedule_notes(10)
    assert "step at 10 or more, in step_size 3..15 never lowers the learning rate" in some
    assert sgd.schedule_notes(20) == []
    default = load_space({"optimizer": "sgd", "schedule": ["step", "cosine_restarts"]})  # their defaults: 10
    assert [n.split(":")[0] for n in default.schedule_notes(5)] == ["schedule step", "schedule cosine_restarts"]
    assert "step_size 10 (its default)" in default.schedule_notes(5)[0]
    # One epoch: no step_size lies below it, so the note does not ask for one.
    assert sgd.schedule_notes(1)[0].endswith("never lowers the learning rate: train more epochs")
    assert sgd.schedule_notes(3)[0].endswith(": search step_size below 3, or train more epochs")


def test_a_merge_key_s_values_may_be_set_again_as_yaml_means(tmp_path: Path):
    """`<<: *base` then `weight_decay: 0.0` was refused as a duplicate key (pointing into the anchor)."""
    path = tmp_path / "anchors.yaml"
    path.write_text("optimizer:\n  adamw: &base\n    lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                    "    weight_decay: {low: 1.0e-3, high: 0.5, log: true}\n  adam:\n    <<: *base\n"
                    "    weight_decay: 0.0\n")
    space = load_space(str(path))
    assert space.optimizer["adam"]["weight_decay"].value == 0.0
    assert space.optimizer["adam"]["lr"] == space.optimizer["adamw"]["lr"]
    assert space.optimizer["adamw"]["weight_decay"].distribution is not None


@pytest.mark.parametrize(("entry", "said"), [
    ("regularization:\n  dropout: {low: 0.0, high: 0.3, step: 0.07}\n",
     "key 'regularization.dropout': 'step' 0.07 does not divide the range from 0.0 to 0.3 (4.29 steps), so the "
     "range would end at 0.28, not 0.3. Write high: 0.28, or a step that divides the range (such as 0.075)."),
    ("batch_size: {type: int, low: 16, high: 100, step: 32}\n",
     "key 'batch_size': 'step' 32 does not divide the range from 16 to 100 (2.62 steps), so the range would end at "
     "80, not 100. Write high: 80, or a step that divides the range."),
])
def test_a_step_that_does_not_divide_its_range_is_refused_with_the_end_it_would_have(tmp_path: Path, entry: str,
                                                                                     said: str):
    """Optuna lowered 'high' to the last step with a UserWarning (twice, naming neither file nor key)."""
    path = tmp_path / "steps.yaml"
    path.write_text("optimizer: {adam: {lr: 0.001}}\n" + entry)
    with pytest.raises(ConfigError) as info:
        load_space(str(path))
    assert str(info.value).endswith(said), str(info.value)
    path.write_text("optimizer: {adam: {lr: 0.001}}\nregularization:\n  dropout: {low: 0.0, high: 0.3, step: 0.1}\n")
    assert load_space(str(path)).regularization["dropout"].distribution.high == 0.3  # 0.3 / 0.1 in floats: 2.99..


def test_a_decay_schedule_beside_a_schedule_free_optimizer_is_noted():
    """schedulefree_adamw with cosine trained three trials without a word, though it replaces a decay schedule."""
    mixed = load_space({"optimizer": {"schedulefree_adamw": {"lr": 1e-3}, "adam": {"lr": 1e-3}},
                        "schedule": ["constant", "cosine", "step"]})
    assert mixed.schedule_notes(60) == [
        "schedulefree_adamw is schedule-free, which replaces a decay schedule, and the space pairs it with cosine, "
        "step: such trials decay the rate as well (schedule: constant, with warmup_fraction for a warmup, is how "
        "their authors use them)"]
    assert load_space("tuning-free").schedule_notes(60) == []
    assert load_space({"optimizer": "schedulefree_adamw", "schedule": "constant"}).schedule_notes(60) == []
