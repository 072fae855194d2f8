"""Trial packs: K configs trained as one stacked model. Each member must train exactly as the unpacked Trainer
trains its config alone (same weights, data order and update rule), whatever the other members do."""

from __future__ import annotations

import logging
import math
import re
import time

import optuna
import pytest
import torch

from tuner._pack import FAMILIES, PackTrainer, _Dropout, pack_key, packable
from tuner.config import TrainConfig
from tuner.objectives import load_objective
from tuner.train import Diverged, Trainer

# The correctness tests run on each device there is: on a GPU (benchmarks/gpu/run.sh runs them with -k cuda)
# a member must train exactly as alone there too.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.fixture(scope="module", params=DEVICES)
def trainer(request: pytest.FixtureRequest) -> Trainer:
    torch.set_num_threads(1)
    return Trainer(load_objective("digits-mlp"), device=request.param)


def _config(name: str, lr: float, seed: int, *, batch_size: int = 32, epochs: int = 2, schedule="constant",
            wd: float = 0.0, l1: float = 0.0, clip: float | None = None, dropout: float = 0.0, **extra) -> TrainConfig:
    return TrainConfig.from_dict({"optimizer": {"name": name, "lr": lr, **extra}, "schedule": schedule,
                                  "batch_size": batch_size, "epochs": epochs, "seed": seed, "grad_clip_norm": clip,
                                  "regularization": {"weight_decay": wd, "l1": l1, "dropout": dropout}})


# Members of one pack differ in everything a member may have of its own.
PACKS = {
    "sgd": [
        _config("sgd", 0.05, 0),
        _config("momentum", 0.02, 1, momentum=0.8, schedule={"name": "step", "step_size": 1}, wd=1e-3, l1=1e-5,
                clip=1.0),
        _config("nesterov", 0.03, 2, momentum=0.95, schedule="linear", wd=1e-4, clip=0.3),
    ],
    "adam": [
        _config("adam", 1e-3, 0),
        _config("adamw", 3e-3, 1, betas=[0.85, 0.99], schedule={"name": "cosine", "warmup_fraction": 0.1},
                wd=1e-2, l1=1e-5, clip=1.0),
        _config("adam", 2e-3, 2, amsgrad=True, eps=1e-6, schedule="onecycle", wd=1e-3, clip=0.5),
        _config("adamw", 1e-2, 3, schedule="exponential"),
    ],
    # No L1 below: with an L1 subgradient, an optimizer that divides by the gradient's size (Adamax, RMSprop)
    # turns the float rounding of a batched matmul into sign flips of near-zero weights; the rule is the same.
    "adamax": [
        _config("adamax", 2e-3, 0),
        _config("adamax", 5e-3, 1, betas=[0.8, 0.99], eps=1e-6, schedule="cosine", wd=1e-3, clip=1.0),
    ],
    "rmsprop": [
        _config("rmsprop", 1e-3, 0),
        _config("rmsprop", 5e-4, 1, momentum=0.9, centered=True, alpha=0.9, schedule="linear", wd=1e-4, clip=0.5),
        _config("rmsprop", 2e-3, 2, centered=True),
        _config("rmsprop", 1e-3, 3, momentum=0.5),
    ],
    "nadam": [
        _config("nadam", 2e-3, 0, l1=1e-5),
        _config("nadam", 5e-3, 1, betas=[0.8, 0.99], momentum_decay=1e-2, schedule="cosine", wd=1e-3, clip=1.0),
        _config("nadamw", 3e-3, 2, betas=[0.93, 0.995], schedule="warmup_cosine", wd=0.08),  # decoupled decay
    ],
    "radam": [
        _config("radam", 1e-3, 0, l1=1e-5),
        _config("radam", 3e-3, 1, betas=[0.85, 0.995], schedule="linear", wd=1e-4, clip=0.5),
    ],
    "adagrad": [
        _config("adagrad", 1e-2, 0, l1=1e-5),
        _config("adagrad", 5e-2, 1, lr_decay=1e-3, initial_accumulator_value=0.1, schedule={"name": "step"},
                wd=1e-3, clip=1.0),
    ],
}


def _trained_pack(trainer: Trainer, configs: list[TrainConfig], family: str, epochs: int = 2) -> PackTrainer:
    pack = PackTrainer(trainer, len(configs), configs[0].batch_size, family)
    for slot, config in enumerate(configs):
        pack.fill(slot, config)
    for _ in range(epochs):
        pack.run_epoch()
    return pack


def _assert_trained_as_alone(pack: PackTrainer, slot: int, alone, atol: float) -> None:
    """The member's weights, buffers (e.g. BatchNorm's running statistics) and validation history."""
    for name, param in alone.model.named_parameters():
        torch.testing.assert_close(pack.member_parameters(slot)[name], param.detach(), rtol=1e-5, atol=atol)
    for name, buffer in alone.model.named_buffers():
        torch.testing.assert_close(pack.buffers[name][slot], buffer, rtol=1e-5, atol=1e-6)
    assert pack.members[slot].val_history == pytest.approx(alone.val_history, abs=1e-6)


@pytest.mark.parametrize("family", sorted(PACKS))
def test_every_member_trains_exactly_as_it_would_alone(trainer: Trainer, family: str):
    configs = PACKS[family]
    pack = _trained_pack(trainer, configs, family)
    for slot, config in enumerate(configs):
        alone = trainer.fit(config, keep_model=True)
        _assert_trained_as_alone(pack, slot, alone, atol=5e-6)
        assert pack.test_value(slot) == pytest.approx(alone.test_value, abs=1e-6)


# Members that use no weight decay, L1, clipping or AMSGrad: the update skips those terms for the whole pack.
PLAIN = {"sgd": ("momentum", {"momentum": 0.9}), "adam": ("adam", {}), "adamax": ("adamax", {}),
         "rmsprop": ("rmsprop", {}), "nadam": ("nadam", {}), "radam": ("radam", {}), "adagrad": ("adagrad", {})}


@pytest.mark.parametrize("family", sorted(PLAIN))
def test_members_without_decay_penalties_or_clipping_train_exactly_as_alone(trainer: Trainer, family: str):
    name, extra = PLAIN[family]
    configs = [_config(name, lr, seed, **extra) for seed, lr in enumerate((1e-3, 2e-3) if family != "sgd"
                                                                         else (0.01, 0.05))]
    pack = _trained_pack(trainer, configs, family)
    assert not any(pack.uses.values()) and pack.l2 is None and pack.direct_decay is None
    for slot, config in enumerate(configs):
        _assert_trained_as_alone(pack, slot, trainer.fit(config, keep_model=True), atol=5e-6)


def test_a_member_with_decay_refilled_into_a_plain_pack_gets_its_decay(trainer: Trainer):
    plain, decayed = _config("adam", 1e-3, 0), _config("adamw", 3e-3, 1, wd=0.05, l1=1e-5, clip=0.5)
    pack = PackTrainer(trainer, 2, 32, "adam")
    pack.fill(0, plain)
    pack.fill(1, _config("adam", 2e-3, 2))
    pack.run_epoch()
    assert not any(pack.uses.values())
    pack.free(1)
    pack.fill(1, decayed)
    pack.run_epoch()
    pack.run_epoch()
    _assert_trained_as_alone(pack, 1, trainer.fit(decayed, keep_model=True), atol=5e-6)
    pack.free(1)  # its terms leave with it
    assert not any(pack.uses.values()) and pack.l2 is None and pack.direct_decay is None
    empty = PackTrainer(trainer, 3, 32, "adam")
    empty.grow(5)
    assert not any(empty.uses.values())


def test_a_pack_of_one_config_and_a_pack_of_many_give_that_member_the_same_trajectory(trainer: Trainer):
    config = PACKS["adam"][1]
    alone = PackTrainer(trainer, 1, 32, "adam")
    alone.fill(0, config)
    crowd = PackTrainer(trainer, 4, 32, "adam")
    for slot, other in enumerate(PACKS["adam"]):
        crowd.fill(slot, other)
    for _ in range(2):
        alone.run_epoch()
        crowd.run_epoch()
    assert crowd.members[1].val_history == alone.members[0].val_history
    for name, value in alone.member_parameters(0).items():
        torch.testing.assert_close(crowd.member_parameters(1)[name], value, rtol=1e-5, atol=1e-6)


def test_a_diverging_member_does_not_touch_the_others(trainer: Trainer):
    calm = _config("momentum", 0.02, 1, momentum=0.8)
    wild = _config("sgd", 1e6, 5)  # diverges in its first epoch
    reference = PackTrainer(trainer, 1, 32, "sgd")
    reference.fill(0, calm)
    pack = PackTrainer(trainer, 2, 32, "sgd")
    pack.fill(0, calm)
    pack.fill(1, wild)
    reference.run_epoch()
    values = pack.run_epoch()
    with pytest.raises(Diverged, match="diverged"):
        pack.check(1)
    pack.check(0)  # the calm member is fine
    assert values[0] == reference.members[0].val_history[0] and math.isfinite(values[0])
    pack.free(1)
    pack.run_epoch()
    reference.run_epoch()
    assert pack.members[0].val_history == reference.members[0].val_history


def test_a_freed_slot_refilled_at_an_epoch_boundary_starts_fresh(trainer: Trainer):
    first, second = PACKS["adam"][0], PACKS["adam"][3]
    pack = PackTrainer(trainer, 2, 32, "adam")
    pack.fill(0, first)
    pack.fill(1, PACKS["adam"][2])
    pack.run_epoch()
    pack.free(1)
    pack.fill(1, second)  # new weights, new optimizer state, its own schedule from step 0
    pack.run_epoch()
    pack.run_epoch()
    _assert_trained_as_alone(pack, 1, trainer.fit(second, keep_model=True), atol=1e-6)


@pytest.mark.parametrize("family", ["adam", "nadam"])
def test_a_compacted_pack_trains_its_remaining_members_on_as_before(trainer: Trainer, family: str):
    configs = PACKS[family]
    full = PackTrainer(trainer, len(configs), 32, family)
    drained = PackTrainer(trainer, len(configs), 32, family)
    for slot, config in enumerate(configs):
        full.fill(slot, TrainConfig.from_dict({**config.to_dict(), "epochs": 3}))
        drained.fill(slot, TrainConfig.from_dict({**config.to_dict(), "epochs": 3}))
    full.run_epoch()
    drained.run_epoch()
    drained.free(0)
    moved = drained.compact()  # member 1 (and any later) move down; state, schedule and data order go along
    assert moved == {old: old - 1 for old in range(1, len(configs))} and drained.k == len(configs) - 1
    assert [m.slot for m in drained.members] == list(range(drained.k))
    for _ in range(2):
        full.run_epoch()
        drained.run_epoch()
    for old, new in moved.items():
        assert drained.members[new].val_history == full.members[old].val_history
        for name, value in full.member_parameters(old).items():
            torch.testing.assert_close(drained.member_parameters(new)[name], value, rtol=1e-5, atol=1e-6)


def test_batchnorm_members_keep_their_own_running_statistics():
    from torch import nn

    from tuner.objectives import Objective

    digits = load_objective("digits-mlp")

    def build(data):
        return nn.Sequential(nn.Linear(data.n_features, 32), nn.BatchNorm1d(32), nn.ReLU(),
                             nn.Linear(32, data.n_classes))

    bn_trainer = Trainer(Objective(name="bn", load_data=digits.load_data, build_model=build), device="cpu")
    configs = [_config("sgd", 0.05, 0), _config("momentum", 0.02, 1, momentum=0.9, schedule="cosine")]
    pack = _trained_pack(bn_trainer, configs, "sgd")
    for slot, config in enumerate(configs):  # running mean and variance and batches tracked, per member
        _assert_trained_as_alone(pack, slot, bn_trainer.fit(config, keep_model=True), atol=1e-6)


def test_each_member_has_its_own_dropout_rate_and_masks():
    trainer = Trainer(load_objective("mnist1d-mlp"), device="cpu")
    pack = PackTrainer(trainer, 3, 64, "adam")
    for slot, rate in enumerate((0.0, 0.5, 0.5)):
        pack.fill(slot, _config("adam", 1e-3, 7, batch_size=64, epochs=1, dropout=rate))
    rates = {name: b for name, b in pack.buffers.items() if name.endswith(".p")}
    assert rates and all(b.tolist() == [0.0, 0.5, 0.5] for b in rates.values())
    x = trainer.data.x_train[:8].expand(3, 8, *trainer.data.x_train.shape[1:])
    out = pack._forward(pack._views(pack.flat), x, train=True)
    # Same weights (same seed) and input: members 1 and 2 differ only by their own masks; member 0 has none.
    assert not torch.allclose(out[1], out[2])
    eval_out = pack._forward(pack._views(pack.flat), x, train=False)
    torch.testing.assert_close(eval_out[1], eval_out[2])
    torch.testing.assert_close(out[0], eval_out[0])


def test_channel_dropout_drops_whole_channels_at_each_members_rate_and_alpha_dropout_is_not_packed():
    """nn.Dropout1d/2d/3d take the config's rate as nn.Dropout does (regularization.set_dropout sets all four),
    so in a pack each member has its own rate and drops whole channels; nn.AlphaDropout, whose rate a config
    sets too but which a pack cannot give each member, is refused with the reason (its trials train alone)."""
    from torch import nn

    from tuner.objectives import Objective

    digits = load_objective("digits-mlp")

    def conv(data):
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout2d(0.0),
                             nn.Flatten(), nn.Linear(4 * 36, data.n_classes))

    trainer = Trainer(Objective(name="conv", load_data=digits.load_data, build_model=conv), device="cpu")
    pack = PackTrainer(trainer, 3, 64, "adam")
    for slot, rate in enumerate((0.0, 0.5, 0.5)):
        pack.fill(slot, _config("adam", 1e-3, 7, batch_size=64, epochs=1, dropout=rate))
    assert [b.tolist() for name, b in pack.buffers.items() if name.endswith(".p")] == [[0.0, 0.5, 0.5]]
    x = trainer.data.x_train[:8].expand(3, 8, *trainer.data.x_train.shape[1:])
    out = pack._forward(pack._views(pack.flat), x, train=True)
    eval_out = pack._forward(pack._views(pack.flat), x, train=False)
    torch.testing.assert_close(out[0], eval_out[0])  # rate 0: no mask
    assert not torch.allclose(out[1], out[2])  # same weights, own masks
    dropped = _Dropout(0.5, spatial=2).train()(torch.ones(16, 4, 6, 6))  # whole channels, scaled by 1 / keep
    per_channel = dropped.flatten(2)
    assert set(per_channel.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))

    class Alpha(nn.Module):
        def __init__(self, data):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(data.n_features, 16), nn.SELU(), nn.AlphaDropout(0.0),
                                     nn.Linear(16, data.n_classes))

        def forward(self, x):
            return self.net(x)

    alpha = Trainer(Objective(name="alpha", load_data=digits.load_data, build_model=Alpha), device="cpu")
    with pytest.raises(ValueError, match="AlphaDropout takes the config's dropout rate, which trials in a pack "
                                         "cannot each have"):
        PackTrainer(alpha, 2, 64, "adam").fill(0, _config("adam", 1e-3, 0, batch_size=64, dropout=0.3))


def test_what_cannot_be_packed_says_why():
    assert packable(_config("lbfgs", 1.0, 0)) == "the 'lbfgs' optimizer has no fused update"
    assert "steps on each member's metric" in packable(_config("adam", 1e-3, 0, schedule="plateau"))
    assert packable(_config("nesterov", 0.1, 0, momentum=0.9)) is None
    assert pack_key(_config("adamw", 1e-3, 0)) == pack_key(_config("adam", 1e-2, 3)) == (32, "adam", 2)
    assert pack_key(_config("sgd", 0.1, 0)) != pack_key(_config("sgd", 0.1, 0, batch_size=64))
    assert set(FAMILIES.values()) == {"sgd", "adam", "adamax", "rmsprop", "adagrad", "nadam", "radam"}


# -- packs as trials -------------------------------------------------------------------------------------------
def _packed_study(tmp_path, n_trials: int, pack: int, **fields):
    from tuner.study import StudySpec, create_or_join, prepare

    spec = StudySpec.from_mapping({"name": "p", "objective": "digits-mlp", "space": "lr-only", "n_trials": n_trials,
                                   "epochs": 3, "storage": f"sqlite:///{tmp_path / 'p.db'}", "device": "cpu",
                                   "threads": 1, "pack": pack, **fields}, "test")
    prepared = prepare(spec)
    return create_or_join(prepared), prepared


def test_a_pruned_members_line_shows_the_value_optuna_records_for_it(tmp_path):
    """One trial at a time, a pruned trial's line shows the last value it reported (Optuna's value of a pruned
    trial); a pack's pruned member's line showed "val -"."""
    from tuner.study import run_trials

    study, prepared = _packed_study(tmp_path, n_trials=16, pack=4, sampler="random", pruner="median")
    outcomes = run_trials(study, prepared).outcomes
    pruned = [o for o in outcomes if o.state == "PRUNED"]
    assert pruned, "the median pruner stopped no member"
    by_number = {t.number: t for t in study.trials}
    for o in pruned:
        assert o.value is not None and o.value == pytest.approx(by_number[o.number].value), o


def test_every_member_of_a_pack_is_a_real_trial_with_its_own_record(tmp_path):
    from tuner.study import run_trials

    study, prepared = _packed_study(tmp_path, n_trials=10, pack=4, sampler="random", pruner="median")
    summary = run_trials(study, prepared)
    trials = study.trials
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials) == 10
    assert len(summary.outcomes) == len(trials)
    for t in trials:
        assert t.user_attrs["pack"] == 4 and t.user_attrs["config"] and t.user_attrs["val_history"]
        assert len(t.intermediate_values) == len(t.user_attrs["val_history"])  # reported after every epoch
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.user_attrs["test_value"] is not None
        else:
            assert t.user_attrs["reason"].startswith(("pruned by the median pruner", "diverged"))
    # A packed trial's value is the one its config gets alone.
    done = next(t for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    alone = prepared.trainer.fit(TrainConfig.from_dict(done.user_attrs["config"]))
    assert done.value == pytest.approx(alone.value, abs=1e-6)
    assert done.user_attrs["val_history"] == pytest.approx(alone.val_history, abs=1e-5)


def test_the_pack_holds_only_the_pruners_first_trials_until_they_are_complete(tmp_path, monkeypatch):
    from tuner.study import run_trials

    sizes = []
    original = PackTrainer.run_epoch

    def run_epoch(self):
        sizes.append(sum(m is not None for m in self.members))
        return original(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", run_epoch)
    # The median pruner prunes nothing before 5 trials are complete: a first pack of 8 would train all 8 to
    # their last epoch. The pack holds 5 until then, then grows to 8.
    study, prepared = _packed_study(tmp_path, n_trials=16, pack=8, sampler="random", pruner="median")
    run_trials(study, prepared)
    first = study.trials[:5]
    assert max(sizes[:3]) == 5 and max(sizes) == 8
    complete_at = sorted(t.datetime_complete for t in first)[-1]
    assert all(t.datetime_start >= complete_at for t in study.trials[5:] if t.user_attrs.get("pack"))
    # Without a pruner there is nothing to wait for: the first pack is full.
    sizes.clear()
    (tmp_path / "none").mkdir()
    study, prepared = _packed_study(tmp_path / "none", n_trials=8, pack=8, sampler="random", pruner="none")
    run_trials(study, prepared)
    assert sizes[0] == 8


def test_a_slot_added_to_a_pack_trains_its_member_as_alone(trainer: Trainer):
    first, second = PACKS["adam"][0], PACKS["adam"][1]
    pack = PackTrainer(trainer, 1, 32, "adam")
    pack.fill(0, first)
    pack.run_epoch()
    pack.grow(2)
    pack.fill(1, second)
    pack.run_epoch()
    pack.run_epoch()
    _assert_trained_as_alone(pack, 1, trainer.fit(second, keep_model=True), atol=1e-6)


def test_configs_of_different_kinds_train_in_packs_side_by_side(tmp_path, monkeypatch):
    from tuner.study import run_trials

    kinds_per_round = []
    original = PackTrainer.run_epoch

    def run_epoch(self):
        kinds_per_round.append((self.batch_size, self.family, sum(m is not None for m in self.members)))
        return original(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", run_epoch)
    space = tmp_path / "kinds.yaml"
    space.write_text("optimizer:\n  adam: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}\n"
                     "  momentum: {lr: {low: 1.0e-2, high: 0.1, log: true}, momentum: 0.9}\n"
                     "schedule: constant\nbatch_size: {choices: [32, 64]}\n")
    study, prepared = _packed_study(tmp_path, n_trials=12, pack=6, sampler="random", pruner="none",
                                    space=str(space))
    run_trials(study, prepared)
    kinds = {(b, f) for b, f, _ in kinds_per_round}
    assert len(kinds) >= 3  # several kinds, each in a pack of its own
    assert all(n <= 6 for _, _, n in kinds_per_round)
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 12
    assert {t.user_attrs["pack"] for t in trials} == {6}
    for t in trials[:4]:  # each member trained as its config does alone, whatever shared the round
        alone = prepared.trainer.fit(TrainConfig.from_dict(t.user_attrs["config"]))
        assert t.value == pytest.approx(alone.value, abs=1e-6)


def test_a_config_that_cannot_be_packed_trains_alone_beside_the_pack(tmp_path):
    from tuner.study import run_trials

    space = tmp_path / "mixed.yaml"
    space.write_text("optimizer:\n  adam: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}\n  lbfgs: {lr: 0.1}\n"
                     "schedule: constant\nbatch_size: 64\n")
    study, prepared = _packed_study(tmp_path, n_trials=8, pack=4, sampler="random", pruner="none",
                                    space=str(space))
    run_trials(study, prepared)
    by_optimizer: dict[str, set] = {}
    for t in study.trials:  # L-BFGS may diverge (recorded as pruned): finished either way
        assert t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        by_optimizer.setdefault(t.user_attrs["config"]["optimizer"]["name"], set()).add(t.user_attrs.get("pack"))
    assert by_optimizer.get("lbfgs", {None}) == {None}  # trained alone
    assert by_optimizer["adam"] == {4}


# -- pack: auto ------------------------------------------------------------------------------------------------
def _prepared(tmp_path, **fields):
    from tuner.study import StudySpec, prepare

    spec = StudySpec.from_mapping({"name": "a", "objective": "digits-mlp", "space": "lr-only", "n_trials": 64,
                                   "epochs": 3, "storage": f"sqlite:///{tmp_path / 'a.db'}", "device": "cpu",
                                   "threads": 1, "pack": "auto", **fields}, "test")
    return prepare(spec)


@pytest.fixture
def auto_pack(monkeypatch):
    monkeypatch.delenv("TUNER_PACK", raising=False)


def _fake_timings(monkeypatch, alone: float, pack_rates: dict[int, float]) -> list[int]:
    """Steps per second of one trial alone, and model-steps per second of each pack size; returns the sizes
    timed, in order."""
    timed = []
    monkeypatch.setattr(Trainer, "time_steps", lambda self, config, steps: steps / alone)

    def pack_time(self, steps):
        if not timed or timed[-1] != self.k:  # each size is timed in a few rounds
            timed.append(self.k)
        return self.k * steps / pack_rates[self.k]

    monkeypatch.setattr(PackTrainer, "time_steps", pack_time)
    return timed


def test_auto_picks_the_pack_size_with_the_most_model_steps_and_says_why(tmp_path, monkeypatch, auto_pack):
    from tuner.study._autopack import choose_pack

    timed = _fake_timings(monkeypatch, 100.0, {1: 40.0, 2: 80.0, 4: 150.0, 8: 300.0, 16: 250.0, 32: 400.0})
    choice = choose_pack(_prepared(tmp_path), n_trials=64)
    assert timed == [1, 2, 4, 8, 16]  # 16 is past the best: larger packs are not timed
    assert choice.k == 8 and choice.threads is not None
    assert "8 trials at once trained 3.0x the model-steps/s of one trial (300 vs 100)" in choice.why
    assert choice.line().startswith("pack: 8 (auto): ")


def test_auto_stays_at_one_where_packs_do_not_pay_off(tmp_path, monkeypatch, auto_pack):
    from tuner.study._autopack import MIN_GAIN, choose_pack

    _fake_timings(monkeypatch, 100.0, {1: 40.0, 2: 70.0, 4: 90.0, 8: 120.0, 16: 110.0})
    choice = choose_pack(_prepared(tmp_path), n_trials=64)
    assert choice.k == 1 and choice.threads is None
    assert choice.why == f"packs trained at most 1.20x the model-steps/s of one trial here (a pack needs {MIN_GAIN}x)"


def test_auto_says_packs_got_slower_where_the_probe_stopped_before_a_pack_of_four(tmp_path, monkeypatch, auto_pack):
    """On a loaded machine a pack of 4 timed slower than a pack of 2: the probe stopped there and the choice
    said "not even a pack of 4 fits in half the free memory", with 20 GB free."""
    from tuner.study._autopack import choose_pack

    timed = _fake_timings(monkeypatch, 100.0, {1: 90.0, 2: 120.0, 4: 80.0, 8: 400.0})
    choice = choose_pack(_prepared(tmp_path), n_trials=64)
    assert timed == [1, 2, 4] and choice.k == 1
    assert choice.why == ("a pack of 4 trained slower (80 model-steps/s) than a pack of 2 (120): trials train one at "
                          "a time")


def test_auto_stops_timing_packs_after_a_quarter_of_the_time_left(tmp_path, monkeypatch, auto_pack):
    """On a loaded machine the probe took the whole timeout of a short study: its workers ran no trial."""
    from tuner.study import _autopack
    from tuner.study._autopack import choose_pack

    timed = _fake_timings(monkeypatch, 100.0, {1: 90.0, 2: 170.0, 4: 330.0, 8: 600.0})
    clock = iter(range(0, 1000, 3))  # each look at the clock: 3 s later
    monkeypatch.setattr(_autopack.time, "monotonic", lambda: float(next(clock)))
    choice = choose_pack(_prepared(tmp_path), n_trials=64, time_left=20.0)  # 5 s for the probe
    assert timed == [1, 2] and choice.k == 1
    assert choice.why == ("timing packs took over 25% of the 20s left before the timeout before a pack of 4 was "
                          "timed: trials train one at a time")


def test_auto_bounds_the_pack_by_the_budget_and_free_memory(tmp_path, monkeypatch, auto_pack):
    from tuner.study import _autopack
    from tuner.study._autopack import choose_pack

    timed = _fake_timings(monkeypatch, 10.0, {1: 10.0, 2: 20.0, 4: 40.0, 8: 80.0, 16: 160.0, 32: 320.0, 64: 640.0})
    choice = choose_pack(_prepared(tmp_path), n_trials=40)  # at most a quarter of 40 trials: 10
    assert timed == [1, 2, 4, 8] and choice.k == 8 and "at most a quarter of the 40-trial budget" in choice.why
    too_few = choose_pack(_prepared(tmp_path), n_trials=15)
    assert too_few.k == 1 and too_few.why == ("15 trial(s) to run are too few to share (a pack holds 4 or more, "
                                              "and at most a quarter of them)")
    assert "-50 trial(s)" not in choose_pack(_prepared(tmp_path), n_trials=-50).why
    timed.clear()
    monkeypatch.setattr(_autopack, "_free_memory", lambda device: 1)  # no room for even 4 members
    assert choose_pack(_prepared(tmp_path), n_trials=64).k == 1 and timed == []


def test_a_model_that_fails_in_the_timing_probe_leaves_the_trials_to_record_it(tmp_path, monkeypatch, auto_pack):
    """A model that fails on a full batch (it passed the two-sample check) is not a crash of the whole run:
    auto chooses one trial at a time, saying why and where, and each trial records the error as its reason."""
    from tuner.study._autopack import choose_pack
    from tuner.train import Trainer

    def broken(self, config, steps):
        raise RuntimeError("boom: shape mismatch in my layer")

    monkeypatch.setattr(Trainer, "time_steps", broken)
    choice = choose_pack(_prepared(tmp_path), n_trials=64)
    assert choice.k == 1 and choice.why.startswith("one trial failed in the timing probe (RuntimeError: boom: "
                                                   "shape mismatch in my layer")


def test_auto_bounds_the_pack_by_the_trials_that_fit_before_the_timeout(tmp_path, monkeypatch, auto_pack):
    """A pack's members finish together and a pack cut by the timeout is lost whole: under a timeout, K is at
    most a quarter of the trials that one-at-a-time training would finish in the time left."""
    import math

    from tuner.study._autopack import EVAL_OVERHEAD, _kinds, choose_pack

    timed = _fake_timings(monkeypatch, 100.0, {k: 100.0 * k for k in (1, 2, 4, 8, 16, 32, 64)})
    prepared = _prepared(tmp_path)
    _, _, config = _kinds(prepared.space, 3, 0)
    trial_s = EVAL_OVERHEAD * math.ceil(len(prepared.trainer.data.x_train) / config.batch_size) * 3 / 100.0
    choice = choose_pack(prepared, n_trials=100_000, time_left=40.5 * trial_s)
    assert timed == [1, 2, 4, 8] and choice.k == 8  # 40 fit: at most 10
    assert "at most a quarter of the about 40 trials that fit before the timeout" in choice.why
    assert choose_pack(prepared, n_trials=100_000, time_left=None).k == 64  # no timeout: the budget bounds
    short = choose_pack(prepared, n_trials=100_000, time_left=12.5 * trial_s)
    assert short.k == 1 and short.why.startswith("about 12 trial(s) fit in the ")


def test_auto_counts_what_a_mixed_space_leaves_to_train_alone(tmp_path, monkeypatch, auto_pack):
    from tuner.study._autopack import choose_pack

    # Packs pay off from 4 members; a pack of 1 or 2 is slower than one trial alone.
    _fake_timings(monkeypatch, 100.0, {1: 40.0, 2: 70.0, 4: 300.0, 8: 400.0, 16: 500.0, 32: 600.0, 64: 700.0})
    # The default space mixes 3 batch sizes and 3 update families: 16 members make 9 packs of about 2.
    mixed = choose_pack(_prepared(tmp_path, space="default"), n_trials=64)
    assert mixed.k == 1
    assert mixed.why.startswith("the space mixes 9 kinds of config (batch size x optimizer family), so 16 trials "
                                "at once would make packs of about ")
    assert "running the study at most" in mixed.why and "as fast as one trial at a time" in mixed.why
    # With 64 trials in flight, the packs are large enough.
    many = choose_pack(_prepared(tmp_path, space="default"), n_trials=256)
    assert many.k == 64 and "in packs by kind of config (9 kinds, the commonest" in many.why
    # Half the space cannot be packed: packs pay off for the other half, and the line says so.
    space = tmp_path / "two.yaml"
    space.write_text("optimizer:\n  adam: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}\n"
                     "  lbfgs: {lr: 0.1}\nschedule: constant\nbatch_size: 64\n")
    two = choose_pack(_prepared(tmp_path, space=str(space)), n_trials=64)
    assert two.k == 16 and re.search(r"; \d+% of the space's configs cannot be packed and train alone$", two.why)


def test_auto_says_why_a_space_or_a_model_cannot_be_packed(tmp_path, auto_pack):
    from tuner.study._autopack import choose_pack

    space = tmp_path / "lbfgs.yaml"
    space.write_text("optimizer:\n  lbfgs: {lr: {low: 0.01, high: 1.0, log: true}}\nschedule: constant\n")
    assert choose_pack(_prepared(tmp_path, space=str(space)), 64).why == (
        "no config of the space can share a pack: they train alone (lbfgs (no fused update))")
    module = tmp_path / "branchy.py"
    module.write_text(
        "from torch import nn\n"
        "from tuner.objectives import Objective, load_objective\n\n\n"
        "class Branchy(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(64, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(x) if float(x.sum()) > -1e9 else -self.fc(x)  # data-dependent: not vmappable\n\n\n"
        "def objective() -> Objective:\n"
        "    base = load_objective('digits-mlp')\n"
        "    return Objective(name='branchy', load_data=base.load_data, build_model=lambda data: Branchy())\n")
    choice = choose_pack(_prepared(tmp_path, objective=f"{module}:objective"), 64)
    assert choice.k == 1 and choice.why.startswith("the model cannot be packed (")
    assert "\n" not in choice.why and len(choice.why) < 300  # one line, not vmap's whole explanation
    # A pack size asked for is checked the same way: the study runs unpacked and says why.
    asked = choose_pack(_prepared(tmp_path, objective=f"{module}:objective", pack=4), 64)
    assert asked.k == 1 and not asked.auto
    assert asked.why.startswith("4 at once was asked for, but the model cannot be packed (RuntimeError: ")
    assert asked.why.endswith("): trials train one at a time")
    lbfgs = choose_pack(_prepared(tmp_path, space=str(space), pack=4), 64)
    assert lbfgs.k == 1 and "no config of the space can share a pack (lbfgs (no fused update))" in lbfgs.why
    # A model that fails on a full batch alone as well: not blamed on packing (each trial records its error).
    picky = tmp_path / "picky.py"
    picky.write_text(
        "from torch import nn\n"
        "from tuner.objectives import Objective, load_objective\n\n\n"
        "class Picky(nn.Linear):\n"
        "    def forward(self, x):\n"
        "        if x.shape[0] > 8:\n"
        "            raise ValueError('batches of 8 at most')\n"
        "        return super().forward(x)\n\n\n"
        "def objective() -> Objective:\n"
        "    base = load_objective('digits-mlp')\n"
        "    return Objective(name='picky', load_data=base.load_data, build_model=lambda data: Picky(64, 10))\n")
    alone = choose_pack(_prepared(tmp_path, objective=f"{picky}:objective", pack=4), 64)
    assert alone.k == 1 and alone.why == ("4 at once was asked for, but the model failed alone too (ValueError: "
                                          "batches of 8 at most): trials train one at a time")


def test_a_pack_size_asked_for_says_so(tmp_path, monkeypatch, auto_pack):
    from tuner.study._autopack import choose_pack

    assert choose_pack(_prepared(tmp_path, pack=4), 64).line() == "pack: 4: 4 trials at once, as asked"
    assert choose_pack(_prepared(tmp_path, pack=1), 64).line() == "pack: 1: one trial at a time, as asked"
    monkeypatch.setenv("TUNER_PACK", "8")
    assert choose_pack(_prepared(tmp_path), 64).line() == "pack: 8: 8 trials at once, as $TUNER_PACK asks"


def test_auto_shares_the_budget_between_workers(tmp_path, monkeypatch, auto_pack):
    """With 2 workers, each takes at most an eighth of the budget: a quarter in flight in all."""
    from tuner.study._autopack import choose_pack

    _fake_timings(monkeypatch, 100.0, {1: 40.0, 2: 80.0, 4: 300.0, 8: 600.0, 16: 1200.0})
    one = choose_pack(_prepared(tmp_path), n_trials=64)
    two = choose_pack(_prepared(tmp_path), n_trials=64, workers=2)
    assert one.k == 16 and "at most a quarter of the 64-trial budget" in one.why
    assert two.k == 8 and two.why.endswith("at most 1/8 (a quarter, shared by 2 workers) of the 64-trial budget")
    few = choose_pack(_prepared(tmp_path), n_trials=24, workers=2)
    assert few.k == 1 and few.why.endswith("too few to share (a pack holds 4 or more, and at most 1/8 (a quarter, "
                                           "shared by 2 workers) of them)")


def test_a_pack_whose_step_fails_queues_its_members_again_to_train_alone(tmp_path, monkeypatch, caplog):
    """A training step that raises in a pack (a model that fails under torch.func only on some batches) fails
    its members with the reason, queues their configs again, and trains that kind of config alone from then on:
    the budget is met and no config is lost."""
    from tuner.study import run_trials

    calls = []
    original = PackTrainer.run_epoch

    def run_epoch(self):
        calls.append(self.k)
        if len(calls) == 1:
            raise RuntimeError("vmap: boom\nand more lines")
        return original(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", run_epoch)
    study, prepared = _packed_study(tmp_path, n_trials=8, pack=4, sampler="random", pruner="none")
    with caplog.at_level(logging.WARNING, logger="tuner.study._packs"):
        run_trials(study, prepared)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.user_attrs["reason"] == "discarded: its pack's training step failed (RuntimeError: "
                          "vmap: boom); its config was queued again, to train alone" for t in failed)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8 and all(t.user_attrs.get("pack") is None for t in complete)
    retried = {t.user_attrs.get("retry_of") for t in complete}
    assert {t.number for t in failed} <= retried
    assert len(calls) == 1  # the kind trains alone after its pack failed
    assert any("train one at a time from now on" in r.getMessage() for r in caplog.records)
    # The study remembers it: a later run (or another worker) trains that kind alone from the start.
    from tuner.study import StudySpec, create_or_join, prepare

    (record,) = [v for k, v in study.user_attrs.items() if k.startswith("tuner:pack_failed/")]
    assert record["error"] == "RuntimeError: vmap: boom" and record["trial"] == failed[0].number
    later = prepare(StudySpec.from_mapping({**prepared.spec.model_dump(), "n_trials": 12}, "test"))
    run_trials(create_or_join(later), later)
    assert len(calls) == 1 and len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 12


def test_tuner_pack_sets_what_auto_leaves_open(tmp_path, monkeypatch):
    from tuner.errors import ConfigError
    from tuner.study._autopack import choose_pack

    monkeypatch.setenv("TUNER_PACK", "4")
    assert choose_pack(_prepared(tmp_path), 64).k == 4
    assert choose_pack(_prepared(tmp_path, pack=2), 64).k == 2  # a number in the spec wins
    monkeypatch.setenv("TUNER_PACK", "many")
    with pytest.raises(ConfigError, match=r"\$TUNER_PACK must be auto or a whole number from 1 to 4096; got 'many'"):
        choose_pack(_prepared(tmp_path), 64)


@pytest.mark.parametrize("call", ["command", "run_study"])
def test_a_wrong_tuner_pack_is_refused_before_the_study_is_written(tmp_path, monkeypatch, call):
    """It was refused as the pool started, after the study and its queued known starts had been written."""
    import tuner
    from tuner.errors import ConfigError

    monkeypatch.setenv("TUNER_PACK", "0")
    url = f"journal:{tmp_path / 'fresh.journal'}"
    if call == "command":
        from typer.testing import CliRunner

        from tuner.cli import app

        done = CliRunner().invoke(app, ["study", "create", "--objective", "digits-mlp", "--n-trials", "2",
                                        "--epochs", "1", "--storage", url, "--name", "a"])
        assert done.exit_code == 1 and "$TUNER_PACK must be auto or a whole number from 1 to 4096; got 0" in \
            done.output, done.output
    else:
        with pytest.raises(ConfigError, match=r"\$TUNER_PACK must be auto"):
            tuner.run_study(objective="digits-mlp", n_trials=2, epochs=1, storage=url, name="a", verbose=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [0, 5000, "lots", 2.5, True])
def test_a_bad_pack_size_in_a_spec_names_the_key_and_the_choices(tmp_path, value):
    from tuner.errors import ConfigError

    with pytest.raises(ConfigError, match="pack.*must be auto or a whole number from 1 to 4096"):
        _prepared(tmp_path, pack=value)


def test_the_command_line_says_which_pack_size_it_chose_and_why(tmp_path, monkeypatch, auto_pack):
    from typer.testing import CliRunner

    from tuner.cli import app

    _fake_timings(monkeypatch, 100.0, {1: 40.0, 2: 80.0, 4: 400.0, 8: 200.0})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["study", "create", "--objective", "digits-mlp", "--space", "lr-only",
                                      "--n-trials", "16", "--epochs", "2", "--device", "cpu", "--threads", "1",
                                      "--sampler", "random", "--name", "c",
                                      "--storage", f"sqlite:///{tmp_path / 'c.db'}"])
    assert result.exit_code == 0, result.output
    assert "pack: 4 (auto): 4 trials at once trained 4.0x the model-steps/s of one trial (400 vs 100) on 1 " \
           "thread(s)" in result.stdout
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}")
    assert {t.user_attrs.get("pack") for t in study.trials} == {4}
    bad = CliRunner().invoke(app, ["study", "create", "--objective", "digits-mlp", "--pack", "0"])
    assert bad.exit_code != 0 and "must be auto or a whole number from 1 to 4096" in bad.output


class _Unusual(torch.nn.Module):
    """A learned 0-d scale, and a layer the forward pass never uses."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(n_in, n_out)
        self.spare = torch.nn.Linear(n_in, n_out)
        self.scale = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def test_a_model_with_a_scalar_parameter_and_an_unused_layer_packs_and_trains_as_alone():
    from tuner.objectives import Objective

    digits = load_objective("digits-mlp")
    objective = Objective("unusual", load_data=digits.load_data,
                          build_model=lambda data: _Unusual(data.n_features, data.n_classes), metric="accuracy")
    unusual = Trainer(objective, device="cpu")
    configs = [_config("adamw", 3e-3, 0, wd=1e-2, l1=1e-4), _config("adam", 1e-3, 1)]
    pack = _trained_pack(unusual, configs, "adam")
    for slot, config in enumerate(configs):
        _assert_trained_as_alone(pack, slot, unusual.fit(config, keep_model=True), atol=5e-6)


def _sampler_attrs(trial) -> dict:
    return {k: v for k, v in trial.system_attrs.items() if not k.startswith("tuner:")}


def test_a_refill_round_claims_and_reads_the_study_once(tmp_path, monkeypatch):
    """Filling a pack takes its trials under one claim and one read of the study; the members taken join that
    read, so the sampler's constant liar and the duplicate check see them."""
    from tuner.study import _packs, run_trials

    claims, seen_by_sampler = [], []
    claim = _packs._claim_lock

    def counted(*args, **kwargs):
        claims.append(0)  # the trials taken under this claim
        return claim(*args, **kwargs)

    monkeypatch.setattr(_packs, "_claim_lock", counted)
    take = _packs._take

    params_seen: dict[int, dict] = {}

    def taking(study, plan, device="", trials=None, asked=None, limits=None, set_aside=None):
        running = [t for t in trials or [] if t.state == optuna.trial.TrialState.RUNNING]
        seen_by_sampler.append(len(running))
        params_seen.update({t.number: (t.params, _sampler_attrs(t)) for t in running})
        claims[-1] += 1
        assert limits == {}  # the study's out-of-memory limits, read once for the round
        return take(study, plan, device, trials, asked, limits, set_aside)

    monkeypatch.setattr(_packs, "_take", taking)
    limit_reads = []
    read_limits = _packs.oom_limits
    monkeypatch.setattr(_packs, "oom_limits", lambda study: limit_reads.append(1) or read_limits(study))
    # A conditional space and multivariate TPE: the sampler writes relative parameters as system attributes of
    # each trial it asks for, and its constant liar reads them back for running trials.
    space = tmp_path / "two-optimizers.yaml"
    space.write_text("optimizer:\n  adam: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}\n"
                     "  momentum: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}}\n")
    study, prepared = _packed_study(tmp_path, n_trials=10, pack=6, pruner="none", space=str(space),
                                    sampler={"name": "tpe", "multivariate": True, "group": True,
                                             "n_startup_trials": 2})
    run_trials(study, prepared)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 10
    assert [n for n in claims if n] == [6, 4]  # a round of six, then, once they complete, one of four
    assert len(limit_reads) == len(claims)
    # Each ask saw the members taken before it in its round as running ...
    assert seen_by_sampler == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    # ... with the parameters and system attributes the storage holds for them (without a full read of each)
    assert params_seen == {t.number: (t.params, _sampler_attrs(t)) for t in study.trials if t.number not in (5, 9)}
    assert any(_sampler_attrs(t) for t in study.trials[6:]), [t.system_attrs for t in study.trials]


def test_a_refill_round_sees_a_proposal_set_aside_as_failed(tmp_path, monkeypatch):
    """A proposal set aside in a refill round (here: as a duplicate of a running member) is failed at once;
    the round's later asks see it failed, not running."""
    from tuner.study import _engine, _packs, run_trials

    twin, proposals, seen = _engine._running_twin, [], []

    def second_is_a_twin(trial, trials):
        proposals.append(trial.number)
        return 0 if len(proposals) == 2 else twin(trial, trials)

    monkeypatch.setattr(_engine, "_running_twin", second_is_a_twin)
    take = _packs._take

    def taking(study, plan, device="", trials=None, asked=None, limits=None, set_aside=None):
        seen.append({t.number: t.state for t in trials or []})
        return take(study, plan, device, trials, asked, limits, set_aside)

    monkeypatch.setattr(_packs, "_take", taking)
    study, prepared = _packed_study(tmp_path, n_trials=4, pack=4, sampler="tpe", pruner="none")
    lines: list[tuple[int, str]] = []
    run_trials(study, prepared, on_trial=lambda o, s: lines.append((o.number, o.state)))
    assert (1, "FAIL") in lines  # the proposal set aside has its line
    states = optuna.trial.TrialState
    assert study.trials[1].state == states.FAIL and study.trials[1].user_attrs["duplicate_of"] == 0
    assert [t.state for t in study.trials if t.number != 1] == [states.COMPLETE] * (len(study.trials) - 1)
    assert seen[2] == {0: states.RUNNING, 1: states.FAIL, 2: states.RUNNING}


def test_a_pack_that_runs_out_of_memory_is_halved_and_its_configs_train_again(tmp_path, monkeypatch):
    """Out of memory in a pack of several fails its members with the reason (not counted as failures in a row),
    queues their configs again and halves the packs; the study goes on to its budget."""
    import gc
    import weakref

    from tuner.study import run_trials
    from tuner.study._engine import TrainerExecutor

    sizes, ran_out, gone_at_release = [], [], []
    run_epoch = PackTrainer.run_epoch

    def hungry(self):
        live = sum(m is not None for m in self.members)
        sizes.append(live)
        if live > 3:
            ran_out.append(weakref.ref(self))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run_epoch(self)

    def release(self):
        gc.collect()
        gone_at_release.append(ran_out[-1]() is None)  # the pack that ran out is gone when memory is released

    monkeypatch.setattr(PackTrainer, "run_epoch", hungry)
    monkeypatch.setattr(TrainerExecutor, "release_memory", release)
    study, prepared = _packed_study(tmp_path, n_trials=8, pack=8, sampler="random", pruner="none")
    summary = run_trials(study, prepared)
    states = optuna.trial.TrialState
    trials = study.trials
    assert sum(t.state == states.COMPLETE for t in trials) == 8
    lost = [t for t in trials if t.state == states.FAIL]
    assert lost and all(t.user_attrs["oom"] for t in lost)
    assert {t.user_attrs["reason"].split(" (")[0] for t in lost} == {
        "discarded: a pack of 8 trial(s) at batch size 64 ran out of memory on cpu",
        "discarded: a pack of 4 trial(s) at batch size 64 ran out of memory on cpu"}
    assert "at most 4 trials train at once from now on" in lost[0].user_attrs["reason"]
    # Every config that was lost trained again, and complete.
    again = {t.user_attrs.get("retry_of"): t for t in trials if t.user_attrs.get("retry_of") is not None}
    assert sorted(again) == sorted(t.number for t in lost)
    assert all(again[t.number].params == t.params for t in lost)
    assert sizes[:2] == [8, 4] and max(sizes[2:]) <= 2
    assert gone_at_release == [True, True]
    assert summary.stopped_by == "budget"


def test_the_pack_size_that_ran_out_of_memory_is_kept_for_later_runs_and_said(tmp_path, monkeypatch):
    """After packs ran out of memory together, the cap they were halved to is the study's (per device): a
    later run (a resumed study, another worker) starts at it and says why, and ``study show`` lists it."""
    from tuner.study import run_trials
    from tuner.study._engine import TrainerExecutor, oom_notes, pack_caps

    sizes = []
    run_epoch = PackTrainer.run_epoch

    def hungry(self):
        live = sum(m is not None for m in self.members)
        sizes.append(live)
        if live > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run_epoch(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", hungry)
    monkeypatch.setattr(TrainerExecutor, "release_memory", lambda self: None)
    study, prepared = _packed_study(tmp_path, n_trials=8, pack=8, sampler="random", pruner="none")
    run_trials(study, prepared)
    cap = pack_caps(study)["cpu"]
    assert (cap["trials"], cap["ran_out"]) == (2, 4)
    assert f"out of memory: 4 trials training at once in packs ran out of memory on cpu (trial {cap['trial']}); " \
           f"from then on at most 2 train at once there" in oom_notes(study)
    sizes.clear()
    summary = run_trials(study, prepared, n_trials=12)  # four more, in a later run
    assert sizes and max(sizes) <= 2
    assert summary.pack == 2
    assert f"at most 2 here: 4 trials training at once ran out of memory on cpu before (trial {cap['trial']})" \
        in summary.pack_why
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 12


def test_a_running_worker_adopts_a_pack_cap_another_worker_records(tmp_path, monkeypatch, caplog):
    """Packs that ran out of memory in another worker lower what this one trains at once, within a heartbeat
    interval, not only in its next run."""
    from tuner.study import run_trials
    from tuner.study._engine import record_pack_cap

    sizes: list[int] = []
    recorded_at: list[int] = []
    run_epoch = PackTrainer.run_epoch

    def watched(self):
        sizes.append(sum(m is not None for m in self.members))
        if len(sizes) == 2:
            record_pack_cap(study, "cpu", 2, 8, 999)  # as another worker on this device would
            recorded_at.append(len(sizes))
            time.sleep(0.15)  # past the heartbeat interval: the next round checks
        return run_epoch(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", watched)
    study, prepared = _packed_study(tmp_path, n_trials=20, pack=8, sampler="random", pruner="none",
                                    heartbeat_interval=0.1)
    with caplog.at_level("WARNING", logger="tuner.study._packs"):
        run_trials(study, prepared)
    assert sizes[0] == 8
    # The members that were training finish their 3 epochs; no round after that holds more than 2.
    assert max(sizes[recorded_at[0] + 3:]) <= 2
    assert "at most 2 trials train at once on cpu from now on: 8 trials training at once ran out of memory there " \
           "(trial 999)" in caplog.text
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 20


def test_a_smaller_limit_recorded_by_any_worker_stands():
    """Each record is an attribute of its own: a worker that records a larger limit later (from a stale read)
    does not overwrite a smaller one; limits stored by earlier versions (one dict) still count."""
    from tuner.study._engine import _record_oom, oom_limits, pack_caps, record_pack_cap
    from tuner.study._record import StudyKey

    study = optuna.create_study()
    assert record_pack_cap(study, "cuda:0", 4, 8, 3) == 4
    assert record_pack_cap(study, "cuda:0", 16, 32, 5) == 4  # larger, later: the smaller stands
    assert record_pack_cap(study, "cpu", 8, 16, 6) == 8
    assert pack_caps(study) == {"cuda:0": {"trials": 4, "ran_out": 8, "trial": 3},
                                "cpu": {"trials": 8, "ran_out": 16, "trial": 6}}
    study.set_user_attr(StudyKey.OOM_BATCH, {"cpu": {"batch_size": 128, "trial": 1}})  # an earlier version's
    assert oom_limits(study) == {"cpu": {"batch_size": 128, "trial": 1}}
    assert "batch sizes of 256 or more" in _record_oom(study, "cpu", 256, 7)
    assert oom_limits(study)["cpu"] == {"batch_size": 128, "trial": 1}
    _record_oom(study, "cpu", 64, 9)
    assert oom_limits(study)["cpu"] == {"batch_size": 64, "trial": 9}
    study.set_user_attr(StudyKey.PACK_CAP + "/cpu/x", {"device": "cpu", "trials": "many"})  # malformed: ignored
    assert pack_caps(study)["cpu"]["trials"] == 8


def test_a_pack_of_one_that_runs_out_of_memory_sets_the_batch_size_limit_as_a_trial_alone_does(tmp_path, monkeypatch):
    from tuner.errors import StudyError
    from tuner.study import run_trials
    from tuner.study._engine import oom_limits

    def hungry(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(PackTrainer, "run_epoch", hungry)
    study, prepared = _packed_study(tmp_path, n_trials=6, pack=2, sampler="random", pruner="none")
    with pytest.raises(StudyError, match="batch sizes of 64 or more"):
        run_trials(study, prepared)  # every proposal has batch size 64: the study stops, saying why
    reasons = [t.user_attrs.get("reason", "") for t in study.trials]
    assert reasons[0].startswith("discarded: a pack of 2 trial(s)") and reasons[1] == reasons[0]
    alone = [r for r in reasons if r.startswith("out of memory: CUDA out of memory")]
    assert alone == ["out of memory: CUDA out of memory. Tried to allocate 2.00 GiB; batch sizes of 64 or more "
                     "are not trained on cpu from now on"]
    assert oom_limits(study)["cpu"]["batch_size"] == 64
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


def test_running_out_of_memory_while_a_pack_grows_discards_and_requeues_the_round(tmp_path, monkeypatch):
    """Growing a pack puts new tensors on the device, and that can run out of memory too: the pack's members
    and the round's trials not yet placed are failed with the reason and queued again; the study goes on."""
    from tuner.study import run_trials

    grow = PackTrainer.grow

    def hungry(self, size):
        if size > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return grow(self, size)

    monkeypatch.setattr(PackTrainer, "grow", hungry)
    study, prepared = _packed_study(tmp_path, n_trials=6, pack=8, sampler="random", pruner="none")
    summary = run_trials(study, prepared)
    states = optuna.trial.TrialState
    trials = study.trials
    lost = [t for t in trials if t.state == states.FAIL]
    assert summary.stopped_by == "budget" and sum(t.state == states.COMPLETE for t in trials) == 6
    assert lost and all(t.user_attrs["reason"].startswith(("discarded: a pack of", "discarded: not placed"))
                        for t in lost)
    assert {t.user_attrs.get("retry_of") for t in trials} - {None} == {t.number for t in lost}
    assert not [t for t in trials if t.state == states.RUNNING]


def _two_batch_sizes_study(tmp_path, n_trials: int):
    """A packed study over Adam at batch sizes 32 and 64 whose first round is one config at 64 and three at 32:
    two packs side by side."""
    space = tmp_path / "two-batches.yaml"
    space.write_text("optimizer: {adam: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}}\n"
                     "batch_size: {choices: [32, 64]}\n")
    study, prepared = _packed_study(tmp_path, n_trials=n_trials, pack=4, sampler="random", pruner="none",
                                    space=str(space))
    for i, batch in enumerate((32, 64, 32, 32)):
        study.enqueue_trial({"adam.lr": 1e-3 * (i + 2), "batch_size": batch})
    return study, prepared


def test_a_pack_of_one_beside_other_packs_is_not_blamed_for_running_out_of_memory(tmp_path, monkeypatch):
    """Several packs share the device: the one that ran out of memory is not alone in using it, so its batch
    size is not marked too large; its trial is queued again and fewer train at once."""
    from tuner.study import run_trials
    from tuner.study._engine import oom_limits

    run_epoch, failed = PackTrainer.run_epoch, []

    def shared(self):
        if self.batch_size == 64 and not failed:
            failed.append(sum(m is not None for m in self.members))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return run_epoch(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", shared)
    study, prepared = _two_batch_sizes_study(tmp_path, n_trials=6)
    run_trials(study, prepared)
    trials = study.trials
    lost = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed == [1]  # a pack of one ran out
    assert oom_limits(study) == {}  # batch size 64 is not marked too large
    assert len(lost) == 1 and lost[0].number == 1
    assert lost[0].user_attrs["reason"].startswith("discarded: a pack of 1 trial(s) at batch size 64 ran out of "
                                                   "memory on cpu (CUDA out of memory. Tried to allocate 1.00 GiB) "
                                                   "beside 3 other trial(s)")
    again = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE
    assert again[0].params == lost[0].params


def test_running_out_of_memory_halfway_through_shrinking_a_pack_fails_its_members_cleanly(tmp_path, monkeypatch):
    """Shrinking a draining pack replaces its tensors one by one; out of memory halfway leaves them of two
    sizes. The members are failed with the reason (nothing indexes the half-replaced tensors), queued again,
    and the study goes on."""
    from tuner.study import run_trials

    compact, failed = PackTrainer.compact, []

    def hungry(self):
        keep = [slot for slot, member in enumerate(self.members) if member is not None]
        if not failed and 1 < len(keep) < self.k:
            failed.append(len(keep))
            index = torch.tensor(keep)
            self.coef = {key: value[index].contiguous() for key, value in self.coef.items()}  # halfway
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return compact(self)

    monkeypatch.setattr(PackTrainer, "compact", hungry)
    study, prepared = _packed_study(tmp_path, n_trials=10, pack=8, sampler="random", pruner="median")
    summary = run_trials(study, prepared)
    trials = study.trials
    assert failed, "no pack drained and shrank"
    lost = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(lost) == failed[0] and all(t.user_attrs["reason"].startswith("discarded: a pack of") for t in lost)
    assert summary.stopped_by == "budget" and not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs) == [t.number for t in lost]


def test_a_batch_size_that_runs_out_of_memory_alone_twice_beside_packs_is_blamed(tmp_path, monkeypatch):
    """Beside other packs a lone member that runs out of memory is queued again once; when its batch size runs
    out again alone, that batch size is too large for the device: it is limited, and the other packs keep
    their size (the cap is not cut for a pack of one)."""
    from tuner.study import run_trials
    from tuner.study._engine import oom_limits

    run_epoch, sizes = PackTrainer.run_epoch, []

    def never_fits(self):
        if self.batch_size == 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        sizes.append(sum(m is not None for m in self.members))
        return run_epoch(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", never_fits)
    study, prepared = _two_batch_sizes_study(tmp_path, n_trials=8)
    run_trials(study, prepared)
    trials = study.trials
    assert oom_limits(study)["cpu"]["batch_size"] == 64
    first, second = [t for t in trials if t.user_attrs.get("oom")][:2]
    assert first.user_attrs["reason"].startswith("discarded: a pack of 1 trial(s) at batch size 64")
    assert second.user_attrs.get("retry_of") == first.number
    assert second.user_attrs["reason"].endswith("batch sizes of 64 or more are not trained on cpu from now on; "
                                                "queued again at batch size 32")
    # ... and, as alone, the config that ran out trains again at the next smaller batch size
    assert any(t.user_attrs.get("retry_of") == second.number and t.params["batch_size"] == 32 for t in trials)
    assert max(sizes) == 4  # the cap was not cut for a pack of one: the batch-32 pack fills to 4 once 64 is out
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 8


def test_a_trial_alone_beside_packs_that_runs_out_of_memory_is_queued_again_not_blamed(tmp_path, monkeypatch):
    from tuner.study import run_trials
    from tuner.study._engine import oom_limits

    space = tmp_path / "adam-lbfgs.yaml"
    space.write_text("optimizer:\n  adam: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}\n"
                     "  lbfgs: {lr: {low: 0.1, high: 1.0, log: true}}\n")
    fit, failed = Trainer.fit, []

    def shared(self, config, *args, **kwargs):
        if config.optimizer.name == "lbfgs" and not failed:  # the packs beside it hold the memory, once
            failed.append(1)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return fit(self, config, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", shared)
    study, prepared = _packed_study(tmp_path, n_trials=5, pack=4, sampler="random", pruner="none", space=str(space))
    for i, name in enumerate(("adam", "adam", "adam", "lbfgs")):
        study.enqueue_trial({"optimizer": name, f"{name}.lr": 2e-3 * (i + 1) if name == "adam" else 0.3})
    run_trials(study, prepared)
    trials = study.trials
    lost = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and len(lost) == 1 and lost[0].number == 3, [(t.number, t.user_attrs.get("reason")) for t in lost]
    assert lost[0].user_attrs["reason"].startswith("discarded: ran out of memory on cpu (CUDA out of memory.")
    assert lost[0].user_attrs["reason"].endswith("beside trials in packs; its config was queued again")
    assert oom_limits(study) == {}
    again = [t for t in trials if t.user_attrs.get("retry_of") == 3]
    assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize("pack", [1, 4])
def test_the_sampler_hears_of_every_trial_once_with_its_state_and_value(tmp_path, monkeypatch, pack):
    """A trial's attributes and outcome go to the storage in one transaction, not through ``tell``: the
    sampler is still told each trial once (its ``after_trial``), with the state and value stored."""
    from tuner.study import run_trials

    heard = []
    original = optuna.samplers.TPESampler.after_trial

    def after_trial(self, study, trial, state, values):
        if study.study_name == "p":  # not the throwaway studies that check the sampler's options
            heard.append((trial.number, state, values))
        return original(self, study, trial, state, values)

    monkeypatch.setattr(optuna.samplers.TPESampler, "after_trial", after_trial)
    study, prepared = _packed_study(tmp_path, n_trials=10, pack=pack, sampler="tpe", pruner="median")
    run_trials(study, prepared)
    stored = sorted((t.number, t.state, t.values) for t in study.trials)
    assert sorted(heard, key=lambda h: h[0]) == stored
    assert {state for _, state, _ in stored} >= {optuna.trial.TrialState.COMPLETE}



@pytest.mark.parametrize("pruner, reread", [("median", False), ("successive_halving", True)])
def test_a_median_pruner_judges_a_packs_epoch_against_one_read_even_as_members_complete(tmp_path, monkeypatch,
                                                                                        pruner, reread):
    """Members complete at the same epoch: a median-like pruner already sees each, complete, in the members
    judged after it, so the epoch's checks share one read of the study; other pruners read again after each
    completion (what they see can change with it)."""
    from tuner.study import _packs as engine
    from tuner.study import run_trials

    reads, epochs = [], []
    original_view, original_epoch = engine.StudyView, PackTrainer.run_epoch
    monkeypatch.setattr(engine, "StudyView", lambda *a, **k: reads.append(1) or original_view(*a, **k))
    monkeypatch.setattr(PackTrainer, "run_epoch", lambda self: epochs.append(1) or original_epoch(self))
    study, prepared = _packed_study(tmp_path, n_trials=12, pack=6, sampler="random", pruner=pruner, epochs=4,
                                    seed=0)
    run_trials(study, prepared)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 2
    if reread:
        assert len(reads) > len(epochs)
    else:
        assert 0 < len(reads) <= len(epochs)


def test_a_close_whose_commit_landed_before_its_error_is_not_mistaken_for_a_reaped_trial(tmp_path, monkeypatch):
    """The connection is lost at COMMIT after the commit landed: the retry finds the trial finished, reads it
    back, and since it is the outcome this worker wrote, the trial counts as it is (not as discarded)."""
    import sqlalchemy.exc

    from tuner.study import _engine, run_trials

    real, calls = _engine.close_trial, []

    def lost_at_commit(study, trial_id, attrs, state, values=None):
        calls.append(trial_id)
        told = real(study, trial_id, attrs, state, values)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return told

    monkeypatch.setattr(_engine, "close_trial", lost_at_commit)
    study, prepared = _packed_study(tmp_path, n_trials=2, pack=1, sampler="random", pruner="none")
    summary = run_trials(study, prepared)
    assert [o.state for o in summary.outcomes] == ["COMPLETE", "COMPLETE"]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert summary.outcomes[0].value == study.trials[0].value


def test_an_interrupted_member_keeps_what_it_reported_and_its_pack(tmp_path, monkeypatch):
    """Ctrl-C during a pack's epoch: every member is recorded as interrupted with its pack and the epochs it
    reported, as a trial interrupted alone keeps its history; nothing is left running."""
    from tuner.study import run_trials

    calls = []
    original = PackTrainer.run_epoch

    def run_epoch(self):
        calls.append(self.k)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(PackTrainer, "run_epoch", run_epoch)
    study, prepared = _packed_study(tmp_path, n_trials=8, pack=4, sampler="random", pruner="none")
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, prepared)
    trials = study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    queued = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(failed) == 4 and len(queued) == 4 and len(trials) == 8
    for t in failed:
        assert t.user_attrs["reason"].startswith("interrupted; its config was queued again")
        assert t.user_attrs["pack"] == 4 and len(t.user_attrs["val_history"]) == 1
    # Each member's config trains again when the study resumes.
    assert sorted((t.user_attrs["retry_of"], t.system_attrs["fixed_params"]) for t in queued) == sorted(
        (t.number, t.params) for t in failed)


@pytest.mark.parametrize("family", ["adam", "sgd"])
def test_cnn_members_train_as_they_would_alone(family: str):
    """The built-in CNN (convolutions stacked by vmap): a member trains as its config alone does (one epoch, 50
    steps), and a member's trajectory is its own whatever the other members and its slot (bit for bit on some
    CPUs; on others the grouped convolutions' kernels sum a slot's channels in another order, 1e-7 apart). (Packs
    of two or more run grouped convolutions, whose sums round differently from one model's: this CNN's training
    amplifies such last-bit differences, as it does a 1e-7 change of its initial weights, so the comparison with
    the Trainer alone is made on a pack of one.)"""
    torch.set_num_threads(1)
    cnn = Trainer(load_objective("mnist1d-cnn"), device="cpu")
    configs = ([_config("adam", 1e-3, 0, batch_size=64, epochs=1),
                _config("adamw", 3e-3, 1, batch_size=64, epochs=1, wd=0.01, clip=1.0)]
               if family == "adam" else
               [_config("momentum", 0.05, 0, batch_size=64, epochs=1, momentum=0.9),
                _config("nesterov", 0.02, 1, batch_size=64, epochs=1, momentum=0.8, wd=1e-3, clip=1.0)])
    for config in configs:
        _assert_trained_as_alone(_trained_pack(cnn, [config], family, epochs=1), 0, cnn.fit(config, keep_model=True),
                                 atol=1e-5)
    partner = _config("adam" if family == "adam" else "sgd", 5e-4, 7, batch_size=64, epochs=1)
    first = _trained_pack(cnn, [configs[1], configs[0]], family, epochs=1)
    other = _trained_pack(cnn, [partner, configs[1]], family, epochs=1)
    for name, value in first.member_parameters(0).items():
        torch.testing.assert_close(value, other.member_parameters(1)[name], atol=1e-5, rtol=0, msg=name)
    assert first.members[0].val_history == pytest.approx(other.members[1].val_history, abs=1.5e-3)  # a row of 800


def test_a_batchnorm_model_whose_last_batch_would_hold_one_row_trains_alone_and_packed():
    """129 training rows in batches of 32 leave one row for the last batch, which BatchNorm cannot train on
    ("Expected more than 1 value per channel"): every trial of that batch size failed. The row is left out of
    the epoch, in a pack as alone, and a member still trains as its config does alone."""
    from torch import nn

    from tuner.objectives import Objective, from_arrays

    def data():
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(200, 16, generator=g), torch.randint(0, 3, (200,), generator=g)
        return from_arrays(x[:129], y[:129], x[129:170], y[129:170], x[170:], y[170:], n_classes=3)

    def build(d):
        return nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    trainer = Trainer(Objective(name="bn", load_data=data, build_model=build), device="cpu")
    configs = [_config("sgd", 0.05, 0, batch_size=32), _config("momentum", 0.02, 1, momentum=0.9, batch_size=32)]
    pack = _trained_pack(trainer, configs, "sgd")
    assert pack.steps_per_epoch == 4  # 128 rows in 4 batches: the 129th is left out
    for slot, config in enumerate(configs):
        _assert_trained_as_alone(pack, slot, trainer.fit(config, keep_model=True), atol=1e-6)
