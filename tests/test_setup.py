"""``config.setup()``: real training through ``TrainingSetup.step`` / ``end_epoch`` for every optimizer and
schedule, clipping, non-finite losses, seeding, and the README's own tune-then-retrain loop on digits."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tuner
from tuner import ConfigError, TrainConfig, TrainingSetup
from tuner.optim import get_optimizer, get_schedule, list_optimizers, list_schedules, lr_factors


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.0), nn.Linear(16, 3))


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _runtime_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


# -- every optimizer -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_trains_through_step(name: str) -> None:
    config = TrainConfig.from_dict({"optimizer": name, "regularization": {"weight_decay": 1e-3, "l1": 1e-5},
                                    "grad_clip_norm": 5.0, "epochs": 1})
    torch.manual_seed(0)
    model = _mlp()
    setup = config.setup(model, steps_per_epoch=30)
    assert isinstance(setup, TrainingSetup)
    assert setup.config is config and setup.model is model
    x, y = _data()
    calls = 0

    def batch_loss() -> torch.Tensor:
        nonlocal calls
        calls += 1
        return _loss(model, x, y)

    with torch.no_grad():
        start = _loss(model, x, y).item()
    losses = [setup.step(batch_loss) for _ in range(30)]
    setup.end_epoch(0.5)
    with torch.no_grad():
        end = _loss(model, x, y).item()
    assert all(not loss.requires_grad and loss.ndim == 0 for loss in losses)
    assert losses[0].item() == pytest.approx(start)  # the data loss of the step's first evaluation
    assert math.isfinite(end) and end < start, f"{name}: {start:.4f} -> {end:.4f}"
    assert setup.skipped_steps == 0 and setup.steps == 30 and setup.epoch == 1
    if get_optimizer(name).needs_closure:
        assert calls > 30  # L-BFGS re-evaluates the loss through the closure
    else:
        assert calls == 30


def test_lbfgs_minimises_the_penalised_objective() -> None:
    # L-BFGS has no weight decay: the L2 penalty is in the loss its line search sees, and a strong one
    # shrinks the weights.
    def weight_norm(weight_decay: float) -> float:
        config = TrainConfig.from_dict({"optimizer": {"name": "lbfgs", "line_search_fn": "strong_wolfe"},
                                        "regularization": {"weight_decay": weight_decay}, "epochs": 1})
        torch.manual_seed(0)
        model = _mlp()
        setup = config.setup(model, steps_per_epoch=5, init=False)
        x, y = _data()
        for _ in range(5):
            setup.step(lambda: _loss(model, x, y))  # noqa: B023 (called before step returns)
        return float(model[0].weight.detach().norm() + model[3].weight.detach().norm())

    assert weight_norm(1.0) < 0.2 * weight_norm(0.0)


# -- every schedule ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_schedules())
def test_every_schedule_follows_its_plan_then_holds(name: str) -> None:
    epochs, steps_per_epoch, lr = 3, 4, 0.1
    config = TrainConfig.from_dict({"optimizer": {"name": "sgd", "lr": lr}, "schedule": name, "epochs": epochs})
    model = _mlp()
    setup = config.setup(model, steps_per_epoch=steps_per_epoch)
    x, y = _data(16)
    plan = [lr * f for f in lr_factors(name, config.schedule.params, epochs=epochs,
                                       steps_per_epoch=steps_per_epoch)]
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(epochs):
            for _ in range(steps_per_epoch):
                seen.append(setup.lr)
                setup.step(lambda: _loss(model, x, y))
            setup.end_epoch(0.5)  # a metric that never improves: plateau keeps its patience of 5
    assert _runtime_warnings(caught) == []
    assert seen == pytest.approx(plan, rel=1e-12)
    final = setup.lr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        past = []
        for _ in range(2):  # two more epochs than planned
            for _ in range(steps_per_epoch):
                setup.step(lambda: _loss(model, x, y))
                past.append(setup.lr)
            setup.end_epoch(0.5)
    assert past == [final] * len(past)
    messages = _runtime_warnings(caught)
    if get_schedule(name).interval == "epoch" or name == "constant":
        assert messages == []  # the plateau has no planned length; a constant lr has nothing to hold
    else:
        assert len(messages) == 1
        assert "12 steps" in messages[0] and "steps_per_epoch=len(loader)" in messages[0]


@pytest.mark.parametrize("mode, metrics", [("max", [0.5, 0.4, 0.6, 0.6]), ("min", [0.5, 0.6, 0.4, 0.4])])
def test_plateau_lowers_the_lr_on_the_metric(mode: str, metrics: list[float]) -> None:
    config = TrainConfig.from_dict({"optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 4,
                                    "schedule": {"name": "plateau", "patience": 0, "factor": 0.5}})
    model = _mlp()
    setup = config.setup(model, steps_per_epoch=2, mode=mode)
    x, y = _data(16)
    lrs = []
    for metric in metrics:
        for _ in range(2):
            setup.step(lambda: _loss(model, x, y))
        setup.end_epoch(metric)
        lrs.append(setup.lr)
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025])
    with pytest.raises(ConfigError, match="metric"):
        setup.end_epoch()


def test_steps_per_epoch_of_one_with_a_per_batch_loop_warns() -> None:
    # The misuse the required steps_per_epoch is about: a loop that steps every batch while the schedule
    # was planned per epoch. The schedule would be over after `epochs` batches; it holds and says so.
    config = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 0.01}, "schedule": "cosine", "epochs": 3})
    model = _mlp()
    setup = config.setup(model, steps_per_epoch=1)
    x, y = _data(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(8):
            setup.step(lambda: _loss(model, x, y))
        setup.end_epoch()
    messages = _runtime_warnings(caught)
    assert len(messages) == 2
    assert "planned for (epochs=3 x steps_per_epoch=1)" in messages[0]
    assert "Epoch 1 had 8 training steps, but steps_per_epoch is 1" in messages[1]
    assert caught[-1].filename == __file__


# -- clipping, non-finite losses, misuse -----------------------------------------------------------------------
def _grad_norm(model: nn.Module) -> float:
    return float(nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))


@pytest.mark.parametrize("optimizer", ["sgd", "lbfgs"])
def test_gradients_are_clipped_to_grad_clip_norm(optimizer: str) -> None:
    def norm_after_step(clip: float | None) -> float:
        config = TrainConfig.from_dict({"optimizer": {"name": optimizer, "lr": 1e-9}, "grad_clip_norm": clip})
        torch.manual_seed(0)
        model = _mlp()
        setup = config.setup(model, steps_per_epoch=1)
        x, y = _data()
        setup.step(lambda: 1e6 * _loss(model, x, y))  # gradients in the millions
        return _grad_norm(model)

    assert norm_after_step(0.5) <= 0.5 + 1e-6
    assert norm_after_step(None) > 1e3


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_a_non_finite_loss_skips_the_update_and_warns_once(optimizer: str) -> None:
    config = TrainConfig.from_dict({"optimizer": optimizer, "schedule": "linear", "epochs": 1})
    model = _mlp()
    setup = config.setup(model, steps_per_epoch=4)
    x, y = _data(16)
    before = [p.detach().clone() for p in model.parameters()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [setup.step(lambda: _loss(model, x, y) * math.nan) for _ in range(2)]
    assert all(math.isnan(loss.item()) for loss in losses)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    messages = [str(w.message) for w in caught]  # no torch warning about the scheduler stepping first
    assert len(messages) == 1 and "update was skipped" in messages[0]
    assert caught[0].filename == __file__  # points at the user's line
    assert setup.skipped_steps == 2
    assert setup.lr == pytest.approx(config.optimizer.lr * lr_factors("linear", config.schedule.params, epochs=1,
                                                                      steps_per_epoch=4)[2])
    setup.step(lambda: _loss(model, x, y))  # a finite loss trains again
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert setup.skipped_steps == 2


def test_a_non_finite_gradient_with_a_finite_loss_is_skipped() -> None:
    config = TrainConfig.from_dict({"optimizer": "sgd"})
    model = nn.Linear(2, 1)
    setup = config.setup(model, steps_per_epoch=1)
    before = model.weight.detach().clone()
    with pytest.warns(RuntimeWarning, match="update was skipped"):
        # sqrt(|b - b|): a loss term of 0 whose gradient is nan
        loss = setup.step(lambda: model(torch.zeros(1, 2)).sum() + (model.bias - model.bias.detach()).abs().sqrt())
    assert math.isfinite(loss.item()) and setup.skipped_steps == 1
    assert torch.equal(model.weight, before)


def test_step_wants_a_function_not_a_loss() -> None:
    model = _mlp()
    setup = TrainConfig().setup(model, steps_per_epoch=1)
    x, y = _data(8)
    with pytest.raises(TypeError, match=r"setup\.step\(lambda: loss_fn\(model\(x\), y\)\)"):
        setup.step(_loss(model, x, y))
    assert setup.step(_loss, model, x, y).ndim == 0  # arguments are passed on


def test_steps_per_epoch_is_required() -> None:
    with pytest.raises(ConfigError, match=r"steps_per_epoch.*len\(loader\)"):
        TrainConfig().build(_mlp())
    with pytest.raises(ConfigError, match=r"config\.setup\(model, steps_per_epoch=\.\.\.\) needs steps_per_epoch"):
        TrainConfig().setup(_mlp())
    for wrong in (0, 2.0, "8"):
        with pytest.raises(ConfigError, match="steps_per_epoch must be an int >= 1"):
            TrainConfig().setup(_mlp(), steps_per_epoch=wrong)


def test_a_loss_from_another_model_is_refused_at_the_first_step() -> None:
    model, other = _mlp(), _mlp()
    setup = TrainConfig().setup(model, steps_per_epoch=1)
    x, y = _data(8)
    with pytest.raises(ConfigError, match="no parameter of the model given to config.setup"):
        setup.step(lambda: _loss(other, x, y))
    assert all(p.grad is None for p in model.parameters())
    setup.step(lambda: _loss(model, x, y))  # the model's own loss trains
    # With an L1 penalty (and L-BFGS's L2), which gives every weight a gradient of its own, the model trained on
    # the penalty alone.
    for settings in ({"regularization": {"l1": 1e-3}}, {"optimizer": {"name": "lbfgs", "lr": 0.1},
                                                        "regularization": {"weight_decay": 1e-3}}):
        penalised = TrainConfig.from_dict(settings).setup(model, steps_per_epoch=1)
        with pytest.raises(ConfigError, match="no parameter of the model given to config.setup"):
            penalised.step(lambda: _loss(other, x, y))
        with pytest.raises(ConfigError, match="not attached to the model's graph"):
            penalised.step(lambda: _loss(model, x, y).detach())
        penalised.step(lambda: _loss(model, x, y))
        with pytest.raises(ConfigError, match="not attached to the model's graph"):  # at every step
            penalised.step(lambda: _loss(model, x, y).detach())


def test_plateau_without_end_epoch_warns_once_an_epoch_has_passed() -> None:
    config = TrainConfig.from_dict({"optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 4,
                                    "schedule": {"name": "plateau", "patience": 0}})
    model = _mlp()
    setup = config.setup(model, steps_per_epoch=2)
    x, y = _data(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            setup.step(lambda: _loss(model, x, y))
        assert not _runtime_warnings(caught)  # one epoch's steps: end_epoch may still come
        for _ in range(4):
            setup.step(lambda: _loss(model, x, y))
    messages = _runtime_warnings(caught)
    assert len(messages) == 1 and "setup.end_epoch(val_metric) after every epoch" in messages[0]
    assert caught[0].filename == __file__  # points at the caller's line


def test_dropout_the_model_cannot_take_warns() -> None:
    config = TrainConfig.from_dict({"regularization": {"dropout": 0.2}})
    with pytest.warns(RuntimeWarning, match=r"dropout rate \(0.2\) was not applied: the model has no dropout "
                                            r"layer it sets \(nn.Dropout, Dropout1d/2d/3d, AlphaDropout, "
                                            r"FeatureAlphaDropout"):
        config.setup(nn.Linear(6, 3), steps_per_epoch=1)
    featured = nn.Sequential(nn.Linear(6, 8), nn.FeatureAlphaDropout(0.5), nn.Linear(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig().setup(nn.Linear(6, 3), steps_per_epoch=1)  # no dropout asked for: nothing to say
        config.setup(_mlp(), steps_per_epoch=1)
        config.setup(featured, steps_per_epoch=1)  # was said to have no dropout layer, and kept its 0.5
    assert featured[1].p == 0.2


# -- init, dropout, seeding ----------------------------------------------------------------------------------
def test_setup_applies_init_and_dropout_unless_told_not_to() -> None:
    config = TrainConfig.from_dict({"init": {"name": "normal", "std": 1e-3}, "regularization": {"dropout": 0.3}})
    model = _mlp()
    config.setup(model, steps_per_epoch=1)
    assert model[0].weight.abs().max() < 1e-2 and model[2].p == 0.3
    model = _mlp()
    config.setup(model, steps_per_epoch=1, init=False, dropout=False)
    assert model[0].weight.abs().max() > 1e-2 and model[2].p == 0.0


def test_seeding_comes_before_the_initialiser() -> None:
    config = TrainConfig.from_dict({"init": "xavier_uniform", "seed": 7})
    a, b = _mlp(), _mlp()  # built from different random states
    config.setup(a, steps_per_epoch=1)
    config.setup(b, steps_per_epoch=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_two_setups_of_one_config_train_identically() -> None:
    config = TrainConfig.from_dict({"optimizer": "adamw", "schedule": "warmup_cosine", "seed": 3,
                                    "regularization": {"dropout": 0.2, "weight_decay": 0.01}, "epochs": 2})
    x, y = _data()

    def run() -> list[torch.Tensor]:
        tuner.seed_everything(config.seed)
        model = _mlp()
        setup = config.setup(model, steps_per_epoch=5)
        for _ in range(config.epochs):
            model.train()
            for i in range(5):
                setup.step(lambda i=i: _loss(model, x[i::5], y[i::5]))
            setup.end_epoch()
        return [p.detach().clone() for p in model.parameters()]

    first, second = run(), run()
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    assert random_after_seed(config.seed) == random_after_seed(config.seed)


def random_after_seed(seed: int) -> tuple[float, float, float]:
    import random

    tuner.seed_everything(seed)
    return random.random(), float(np.random.rand()), float(torch.rand(()))


# -- the README's loop -----------------------------------------------------------------------------------------
class _DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(32 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def one_thread():
    # This small CNN trains fastest on one thread, and several contend on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("one_thread")
def test_readme_loop_tunes_then_retrains_a_cnn_on_digits(tmp_path: Path) -> None:
    x, y = load_digits(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest)
    mean, std = x_train.mean(), x_train.std()

    def images(a: np.ndarray) -> torch.Tensor:  # standardised 1x8x8 images
        return torch.tensor((a - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8)

    train_set = TensorDataset(images(x_train), torch.tensor(y_train))
    val_x, val_y, test_x, test_y = images(x_val), torch.tensor(y_val), images(x_test), torch.tensor(y_test)
    loss_fn = nn.functional.cross_entropy

    def evaluate(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            return (model(xs).argmax(1) == ys).float().mean().item()

    def fit(config: TrainConfig) -> nn.Module:  # the README's loop, as written there
        tuner.seed_everything(config.seed)
        model = _DigitsCNN()
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True)
        setup = config.setup(model, steps_per_epoch=len(loader))
        for _ in range(config.epochs):
            model.train()
            for xb, yb in loader:
                setup.step(lambda: loss_fn(model(xb), yb))  # noqa: B023 (called before step returns)
            setup.end_epoch(evaluate(model, val_x, val_y))
        return model

    def train(ctx: tuner.TrialContext) -> float:
        config = ctx.config
        tuner.seed_everything(config.seed)
        model = _DigitsCNN()
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True)
        setup = config.setup(model, steps_per_epoch=len(loader))
        for epoch in range(config.epochs):
            model.train()
            for xb, yb in loader:
                setup.step(lambda: loss_fn(model(xb), yb))  # noqa: B023 (called before step returns)
            val_accuracy = evaluate(model, val_x, val_y)
            setup.end_epoch(val_accuracy)
            ctx.report(epoch, val_accuracy)
        return val_accuracy

    result = tuner.tune(train, space="adam-family", n_trials=8, epochs=6)
    result.best_config.save(tmp_path / "best.yaml")
    config = tuner.load_config(tmp_path / "best.yaml")
    assert config.to_dict() == result.best_config.to_dict()

    model = fit(config)
    test_accuracy = evaluate(model, test_x, test_y)
    print(f"README loop: {config.summary()}, test accuracy {test_accuracy:.4f}")
    assert test_accuracy >= 0.95
    # The loaded config, seeded as the trial was, retrains the best trial's model: same validation accuracy.
    assert evaluate(model, val_x, val_y) == pytest.approx(result.best_value)

    # The same loop with the scheduler built without steps_per_epoch stops at once, saying what to pass.
    with pytest.raises(ConfigError, match=r"steps_per_epoch=len\(loader\)"):
        config.build(_DigitsCNN())


def test_gradients_the_loop_computed_itself_are_said_to_be_dropped_and_a_loss_fn_calling_backward_is_refused():
    """step zeroes the gradients before it back-propagates: a loop that accumulated some (gradient
    accumulation by hand) loses them, which a warning says once; steps of step alone say nothing. A loss
    function that back-propagates itself gets what to do, not torch's message."""
    model = _mlp()
    setup = TrainConfig.from_dict({"optimizer": "sgd"}).setup(model, steps_per_epoch=4)
    x, y = _data(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            setup.step(lambda: _loss(model, x, y))
        setup.optimizer.zero_grad()  # plain PyTorch's habit before a step: nothing is lost
        setup.step(lambda: _loss(model, x, y))
        model.zero_grad(set_to_none=False)
        setup.step(lambda: _loss(model, x, y))
    assert _runtime_warnings(caught) == []
    _loss(model, x[:8], y[:8]).backward()  # half a batch accumulated by hand
    with pytest.warns(RuntimeWarning, match="found gradients already there: it zeroes them") as said:
        setup.step(lambda: _loss(model, x[8:], y[8:]))
    assert said[0].filename == __file__  # the user's line

    def backward_itself():
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    with pytest.raises(ConfigError, match="loss_fn called backward\\(\\) itself"):
        setup.step(backward_itself)
    with pytest.raises(ConfigError, match="not attached to the model's graph"):
        setup.step(lambda: _loss(model, x, y).detach())


def test_a_schedule_stepped_past_its_plan_warns_at_the_line_that_stepped_it():
    """Through config.build (scheduler.step()) and config.setup (setup.step): the warning points at the
    user's line, not into torch's scheduler."""
    config = TrainConfig.from_dict({"optimizer": "sgd", "schedule": "cosine", "epochs": 1})
    model = _mlp()
    x, y = _data(8)
    optimizer, scheduler = config.build(model, steps_per_epoch=2)
    with pytest.warns(RuntimeWarning, match="stepped more often than the 2 steps it was planned for") as said:
        for _ in range(3):
            optimizer.step()
            scheduler.step()
    assert said[0].filename == __file__
    setup = config.setup(model, steps_per_epoch=2)
    with pytest.warns(RuntimeWarning, match="stepped more often than the 2 steps it was planned for") as said:
        for _ in range(3):
            setup.step(lambda: _loss(model, x, y))
    assert said[0].filename == __file__


def test_a_second_setup_of_the_same_model_says_training_starts_over():
    """config.setup inside the epoch loop re-drew the weights every epoch, and the only warning spoke of
    gradients accumulated by the loop."""
    model, x, y = _mlp(), *_data(16)
    config = TrainConfig()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config.setup(model, steps_per_epoch=1).step(lambda: _loss(model, x, y))
        config.setup(_mlp(), steps_per_epoch=1)  # another model: nothing to say
        config.setup(model, steps_per_epoch=1, init=False)  # going on from the trained weights, as asked
    assert _runtime_warnings(caught) == []
    with pytest.warns(RuntimeWarning, match=r"config.setup\(\) was given this Sequential before: it draws its "
                                            r"weights again \(init\)") as said:
        config.setup(model, steps_per_epoch=1)
    assert said[0].filename == __file__  # the user's line



def test_weights_the_initialiser_leaves_as_they_were_are_named():
    """A model's own nn.Parameter, and nn.MultiheadAttention's in_proj_weight, kept their weights under
    init: orthogonal without a word."""

    class Own(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = nn.Parameter(torch.randn(6, 3))
            self.head = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x @ self.W)

    config = TrainConfig.from_dict({"init": "orthogonal"})
    for model, named in ((Own(), "W"), (nn.TransformerEncoderLayer(8, 2), "self_attn.in_proj_weight")):
        with pytest.warns(RuntimeWarning, match=rf"init 'orthogonal' left 1 weight tensor\(s\) as they were: "
                                                rf"{named}\. It sets the weights of nn.Linear") as said:
            config.setup(model, steps_per_epoch=1)
        assert said[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.setup(_mlp(), steps_per_epoch=1)  # every weight in a layer it sets
        TrainConfig().setup(Own(), steps_per_epoch=1)  # the default initialiser sets none, by design
        config.setup(Own(), steps_per_epoch=1, init=False)


def test_lazy_layers_are_asked_for_a_forward_pass_first_and_the_trainer_makes_one() -> None:
    """config.setup on a model with nn.LazyLinear failed inside the initialisation with PyTorch's "Attempted to
    use an uninitialized parameter"; the built-in trainer, which builds an objective's model, did the same."""
    from tuner.objectives import Objective, from_arrays
    from tuner.train import Trainer

    config = TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 0.01}, "init": {"name": "orthogonal"},
                                    "epochs": 1, "batch_size": 8})
    with pytest.raises(ConfigError, match=r"lazy layers whose parameters are not made yet \(0.weight, 0.bias\): "
                                          r"run one forward pass"):
        config.setup(nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.Linear(3, 2)), steps_per_epoch=2)
    x, y = torch.randn(40, 5).numpy(), (torch.arange(40) % 2).numpy()
    lazy = Objective("lazy", load_data=lambda: from_arrays(x[:32], y[:32], x[32:], y[32:], n_classes=2),
                     build_model=lambda data: nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2)))
    result = Trainer(lazy, device="cpu").fit(config)
    assert 0.0 <= result.value <= 1.0
