"""The trainer on the tiny synthetic objective: reporting, learning, divergence, L-BFGS, determinism, devices."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tuner import TrainConfig
from tuner.errors import ConfigError
from tuner.objectives import load_objective
from tuner.optim import list_optimizers
from tuner.study import StudySpec, create_or_join, prepare, run_trials
from tuner.train import Diverged, Trainer, resolve_device, seed_everything

CHANCE = 1 / 3  # three balanced classes


@pytest.fixture(scope="module")
def trainer(objective_ref: str) -> Trainer:
    return Trainer(load_objective(objective_ref), device="cpu")


def _config(name: str = "adam", lr: float = 1e-2, epochs: int = 3, **extra) -> TrainConfig:
    return TrainConfig.from_dict({"optimizer": {"name": name, "lr": lr}, "epochs": epochs, "batch_size": 16,
                                  **extra})


def test_reports_every_epoch_and_learns(trainer: Trainer):
    reports: list[tuple[int, float]] = []
    result = trainer.fit(_config(epochs=8), report=lambda epoch, value: reports.append((epoch, value)))
    assert [epoch for epoch, _ in reports] == list(range(8))
    assert [value for _, value in reports] == result.val_history
    assert result.value == result.val_history[-1]
    assert len(result.train_loss) == len(result.epoch_times) == 8
    assert result.value > CHANCE + 0.2
    assert result.test_value is not None and result.test_value > CHANCE + 0.2
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.model is None
    assert trainer.fit(_config(epochs=1), keep_model=True).model is not None


def test_report_can_stop_training(trainer: Trainer):
    class Stop(Exception):
        pass

    seen: list[int] = []

    def report(epoch: int, value: float) -> None:
        seen.append(epoch)
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        trainer.fit(_config(epochs=5), report=report)
    assert seen == [0, 1]


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_divergence_guard(trainer: Trainer, name: str):
    reports: list[int] = []
    with pytest.raises(Diverged) as info:
        trainer.fit(_config(name, lr=10.0, epochs=3), report=lambda e, v: reports.append(e))
    assert info.value.reason.startswith("diverged")
    assert info.value.epoch == 0
    assert reports == []  # stopped before the first report


def test_diverged_trial_is_pruned_with_its_reason(tmp_path: Path, objective_ref: str):
    space = tmp_path / "explode.yaml"
    space.write_text("optimizer:\n  sgd:\n    lr: 10.0\nbatch_size: 16\n")
    spec = StudySpec(name="explode", objective=objective_ref, space=str(space), sampler="random", pruner="none",
                     n_trials=2, epochs=3, storage=f"sqlite:///{tmp_path / 's.db'}", device="cpu")
    prepared = prepare(spec)
    study = create_or_join(prepared)
    summary = run_trials(study, prepared)
    assert [o.state for o in summary.outcomes] == ["PRUNED", "PRUNED"]
    for trial in study.get_trials():
        assert trial.state.name == "PRUNED"
        assert trial.user_attrs["reason"].startswith("diverged")
        assert trial.user_attrs["diverged"] is True
        assert trial.user_attrs["config"]["optimizer"] == {"name": "sgd", "lr": 10.0}
        # the record keeps how far it got: no finished epoch, a non-finite or exploding training loss
        assert trial.user_attrs["val_history"] == []
        losses = trial.user_attrs["train_loss"]
        assert len(losses) == 1 and (isinstance(losses[0], str) or losses[0] > 20)


def test_lbfgs_trains(trainer: Trainer):
    result = trainer.fit(_config("lbfgs", lr=0.5, epochs=4, batch_size=32))
    assert all(math.isfinite(v) for v in result.train_loss)
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.value > CHANCE + 0.1


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_runs_through_the_trainer(trainer: Trainer, name: str):
    result = trainer.fit(TrainConfig.from_dict({"optimizer": name, "epochs": 2, "batch_size": 32,
                                                "regularization": {"weight_decay": 1e-4, "l1": 1e-5}}))
    assert len(result.val_history) == 2
    assert all(math.isfinite(v) for v in result.train_loss)
    assert 0.0 <= result.value <= 1.0


def test_same_config_and_seed_give_identical_results(trainer: Trainer, objective_ref: str):
    config = _config(epochs=3, seed=7, regularization={"dropout": 0.2})
    first = trainer.fit(config)
    second = trainer.fit(config)
    fresh = Trainer(load_objective(objective_ref), device="cpu").fit(config)
    for other in (second, fresh):
        assert other.train_loss == first.train_loss
        assert other.val_history == first.val_history
        assert other.test_value == first.test_value
    other_seed = trainer.fit(_config(epochs=3, seed=8, regularization={"dropout": 0.2}))
    assert other_seed.train_loss != first.train_loss


@pytest.mark.parametrize("extra", [
    {"optimizer": {"name": "adamw", "lr": 3e-2}, "schedule": "warmup_cosine", "grad_clip_norm": 0.5,
     "regularization": {"l1": 1e-4, "weight_decay": 1e-2, "dropout": 0.2}, "init": "kaiming_uniform"},
    {"optimizer": {"name": "lbfgs", "lr": 0.5}, "schedule": {"name": "plateau", "patience": 0},
     "regularization": {"weight_decay": 1e-3}, "batch_size": 32},
])
def test_the_trainer_trains_as_a_users_setup_loop(trainer: Trainer, extra: dict):
    # A tuned config retrained with config.setup() in a user's loop gets the trainer's numbers: both use one
    # training step. (seed=False: the trainer seeds before building the model, as the loop below does.)
    config = TrainConfig.from_dict({"epochs": 3, "batch_size": 16, "seed": 5, **extra})
    result = trainer.fit(config, keep_model=True)
    data = trainer.cpu_data
    seed_everything(config.seed)
    model = trainer.objective.build_model(data)
    n = len(data.x_train)
    setup = config.setup(model, steps_per_epoch=math.ceil(n / config.batch_size), seed=False)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for _ in range(config.epochs):
        model.train()
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, config.batch_size):
            idx = perm[i:i + config.batch_size]
            setup.step(lambda idx=idx: trainer.loss_fn(model(data.x_train[idx]), data.y_train[idx]))
        history.append(trainer.evaluate(model, data.x_val, data.y_val))
        setup.end_epoch(history[-1])
    assert history == result.val_history
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), result.model.parameters(), strict=True))


@pytest.mark.parametrize("extra", [
    {"optimizer": {"name": "adamw", "lr": 3e-2}, "schedule": "warmup_cosine", "grad_clip_norm": 0.5,
     "regularization": {"l1": 1e-4, "weight_decay": 1e-2}},
    {"optimizer": {"name": "lbfgs", "lr": 0.2}, "regularization": {"weight_decay": 1e-2}},
    {"optimizer": {"name": "nesterov", "lr": 5e-2, "momentum": 0.9}, "regularization": {"l1": 1e-4}},
])
def test_micro_batches_accumulate_to_the_whole_batchs_update(trainer: Trainer, extra: dict, monkeypatch):
    """Gradient accumulation (after an out-of-memory batch size, ``on_oom: accumulate``): a batch of 32 run as
    micro-batches of 8 (and of 12: uneven, the last one smaller) updates the weights as the whole batch does,
    up to float rounding: the same loss, gradients, penalties (added once) and clipping."""
    config = TrainConfig.from_dict({"epochs": 2, "batch_size": 32, "seed": 3, **extra})
    whole = trainer.fit(config, keep_model=True)
    loss_fn, seen = trainer.loss_fn, []

    def sized(out, y):
        seen.append(len(y))
        return loss_fn(out, y)

    monkeypatch.setattr(trainer, "loss_fn", sized)
    for micro in (8, 12):
        seen.clear()
        parts = trainer.fit(config, keep_model=True, micro_batch=micro)
        assert max(seen) == micro and micro in seen  # the forward passes saw micro-batches, not whole ones
        assert parts.train_loss == pytest.approx(whole.train_loss, rel=1e-5)
        for p, q in zip(parts.model.parameters(), whole.model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=2e-5, rtol=1e-4)
    assert trainer.fit(config, micro_batch=32).train_loss == whole.train_loss  # not smaller: one batch, as before


def test_device_validation():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    for bad in ("tpu", "banana", "cuda:99"):
        with pytest.raises(ConfigError):
            resolve_device(bad)
    with pytest.raises(ConfigError, match="Unknown device 'tpu'. Valid: auto, cpu, cuda"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_trainer_validates_its_device(objective_ref: str):
    with pytest.raises(ConfigError, match="Unknown device"):
        Trainer(load_objective(objective_ref), device="tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_matches_metric_range(objective_ref: str):
    result = Trainer(load_objective(objective_ref), device="cuda").fit(_config(epochs=5))
    assert all(math.isfinite(v) for v in result.train_loss)
    assert result.value > CHANCE + 0.1


def test_fastest_threads_picks_one_of_the_candidates_and_restores_the_setting(trainer: Trainer):
    import torch

    before = torch.get_num_threads()
    assert trainer.fastest_threads([1, 2], steps=3) in (1, 2)
    assert trainer.fastest_threads([3]) == 3
    assert torch.get_num_threads() == before


def test_evaluation_that_runs_out_of_memory_is_done_in_smaller_chunks_not_blamed_on_the_batch_size() -> None:
    """Evaluation runs thousands of rows at once, whatever the config's batch size: where they run out of
    memory, they are evaluated in halves (and the smaller size kept), and the trial trains on."""
    from torch import nn

    from tuner.objectives import Objective, from_arrays

    class Hungry(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(64, 10)
            self.widest = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training and len(x) > 100:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            self.widest = max(self.widest, len(x))
            return self.net(x)

    def data():
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(900, 64, generator=g), torch.randint(0, 10, (900,), generator=g)
        return from_arrays(x[:500], y[:500], x[500:800], y[500:800], x[800:], y[800:], n_classes=10)

    models = []
    objective = Objective("hungry", load_data=data, build_model=lambda d: models.append(Hungry()) or models[-1])
    trainer = Trainer(objective, device="cpu")
    result = trainer.fit(_config(epochs=2, batch_size=16))
    assert len(result.val_history) == 2 and trainer.eval_batch <= 100
    assert models[-1].widest == trainer.eval_batch  # every later evaluation at the size that fits

    def never_fits(rows: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):  # a single row that does not fit is still an error
        Trainer(objective, device="cpu").metric_of(never_fits, torch.zeros(3, 64), torch.zeros(3))
