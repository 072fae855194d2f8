"""Tuning-free optimizers (Prodigy, schedule-free AdamW) and the report's tuned vs tuning-free line."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tuner import TrainConfig
from tuner.cli import app
from tuner.errors import ConfigError
from tuner.objectives import load_objective
from tuner.optim import get_optimizer
from tuner.optim._optimizers import OptimizerInfo, _optional
from tuner.train import Trainer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_schedule_free_evaluates_its_averaged_weights_and_steps_on_the_others() -> None:
    config = TrainConfig.from_dict({"optimizer": {"name": "schedulefree_adamw", "lr": 1e-2}})
    model = _model()
    setup = config.setup(model, steps_per_epoch=4)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(4):
        setup.step(lambda: nn.functional.cross_entropy(model(x), y))
    assert setup.optimizer.param_groups[0]["train_mode"] is True
    training = [p.detach().clone() for p in model.parameters()]
    setup.eval()
    assert setup.optimizer.param_groups[0]["train_mode"] is False
    averaged = [p.detach().clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(training, averaged, strict=True))
    setup.eval()  # twice is once
    assert all(torch.equal(a, p) for a, p in zip(averaged, model.parameters(), strict=True))
    setup.step(lambda: nn.functional.cross_entropy(model(x), y))  # switches back to train mode by itself
    assert setup.optimizer.param_groups[0]["train_mode"] is True


def test_schedule_free_eval_recomputes_batchnorm_statistics_for_the_averaged_weights() -> None:
    """The schedulefree package's advice for BatchNorm: running statistics gathered with the stepped weights
    do not fit the averaged ones the model evaluates with. Without batches a warning says so; with them, the
    statistics are those of the averaged weights over those batches, and the model's mode is kept."""
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    setup = TrainConfig.from_dict({"optimizer": {"name": "schedulefree_adamw", "lr": 5e-2}}).setup(
        model, steps_per_epoch=4)
    x, y = torch.randn(64, 6) * 3 + 1, torch.randint(0, 3, (64,))
    for _ in range(8):
        setup.step(lambda: nn.functional.cross_entropy(model(x), y))
    with pytest.warns(RuntimeWarning, match="has BatchNorm layers: their running statistics were gathered with "
                                            "the weights it steps"):
        setup.eval()
    setup.step(lambda: nn.functional.cross_entropy(model(x), y))
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup.eval([(x[:32], y[:32]), (x[32:], y[32:])])
    assert not model.training  # as it was
    with torch.no_grad():
        hidden = model[0](x)  # the averaged weights' first layer
    norm = model[1]
    assert torch.allclose(norm.running_mean, hidden.mean(0), atol=1e-5)
    assert norm.momentum == 0.1
    setup.step(lambda: nn.functional.cross_entropy(model(x), y))
    before = norm.running_mean.clone()
    with pytest.raises(ConfigError, match="the batches were empty"):
        setup.eval(iter([]))
    assert torch.equal(norm.running_mean, before)  # no batch: the statistics are left as they were


def test_end_epoch_warns_once_when_a_schedule_free_model_was_evaluated_on_its_training_weights() -> None:
    import warnings

    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for name, forgets in (("schedulefree_adamw", True), ("schedulefree_adamw", False), ("adam", True),
                          ("schedulefree_adamw", "its own eval()")):
        model = _model()
        setup = TrainConfig.from_dict({"optimizer": {"name": name}, "epochs": 3}).setup(model, steps_per_epoch=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                for _ in range(2):
                    setup.step(lambda m=model: nn.functional.cross_entropy(m(x), y))
                if not forgets:
                    setup.eval()
                elif forgets == "its own eval()":  # schedulefree's documented call, not tuner's
                    setup.optimizer.eval()
                setup.end_epoch(0.5)
        said = [w for w in caught if "Call setup.eval() before evaluating" in str(w.message)]
        assert len(said) == (1 if name == "schedulefree_adamw" and forgets is True else 0), (name, forgets, caught)
        if said:
            assert said[0].filename == __file__  # points at the user's end_epoch line


def test_setup_eval_does_nothing_for_other_optimizers() -> None:
    model = _model()
    setup = TrainConfig.from_dict({"optimizer": {"name": "adam"}}).setup(model, steps_per_epoch=1)
    before = [p.detach().clone() for p in model.parameters()]
    setup.eval()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", ["prodigy", "schedulefree_adamw"])
def test_the_trainer_trains_with_them_at_their_defaults(name: str) -> None:
    trainer = Trainer(load_objective("digits-mlp"), device="cpu")
    result = trainer.fit(TrainConfig.from_dict({"optimizer": {"name": name}, "epochs": 4, "batch_size": 64}),
                         keep_model=True)
    assert result.train_loss[-1] < 0.5 * result.train_loss[0]
    assert result.value > 0.8  # ten classes: far above chance
    if name == "schedulefree_adamw":  # the model handed back holds the averaged weights it was evaluated with
        assert trainer.evaluate(result.model, trainer.data.x_val, trainer.data.y_val) == pytest.approx(result.value)


def test_the_trainer_evaluates_a_schedule_free_batchnorm_model_with_statistics_of_its_averaged_weights() -> None:
    import warnings

    from tuner.objectives import Objective, from_arrays, split_arrays

    def load():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(300, 6, generator=generator) * 2 + 1
        y = (x[:, 0] > 1).long()
        x_tr, y_tr, x_val, y_val = split_arrays(x.numpy(), y.numpy(), 0.2)
        return from_arrays(x_tr, y_tr, x_val, y_val, n_classes=2)

    objective = Objective("bn", load_data=load, metric="accuracy", build_model=lambda data: nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)))
    trainer = Trainer(objective, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "running statistics were gathered with the weights it steps"
        result = trainer.fit(TrainConfig.from_dict({"optimizer": {"name": "schedulefree_adamw", "lr": 0.05},
                                                    "epochs": 2, "batch_size": 32}), keep_model=True)
    model, x = result.model, trainer.data.x_train
    with torch.no_grad():  # the running mean: the mean of the batches' means, under the averaged weights
        means = torch.stack([model[0](x[i:i + 32]).mean(0) for i in range(0, len(x), 32)])
    assert torch.allclose(model[1].running_mean, means.mean(0), atol=1e-5)


def test_a_missing_package_says_how_to_install_it(monkeypatch, objective_ref: str, storage_url: str) -> None:
    missing = _optional("no_such_package_for_tuner", "Thing")
    with pytest.raises(ConfigError, match=r"pip install no_such_package_for_tuner \(or install tuner with its "
                                          r"tuning-free extra"):
        missing([nn.Parameter(torch.zeros(1))])
    assert get_optimizer("prodigy").available
    monkeypatch.setattr(OptimizerInfo, "available", property(lambda self: self.name != "prodigy"))
    from tuner.study import StudySpec, prepare

    with pytest.raises(ConfigError, match=r"tuning-free\.yaml: key 'optimizer\.prodigy': the 'prodigy' "
                                          r"optimizer needs the 'prodigyopt' package"):
        prepare(StudySpec(name="x", objective=objective_ref, space="tuning-free", storage=storage_url,
                          device="cpu"))


def test_the_report_says_what_tuning_bought_over_prodigy_on_the_same_seeds(objective_ref: str, storage_url: str,
                                                                           tmp_cwd: Path) -> None:
    from tuner.report._confirm import BASELINE_KEY, confirmation_seeds

    runner = CliRunner()
    created = runner.invoke(app, ["study", "create", "--objective", objective_ref, "--n-trials", "6", "--epochs",
                                  "3", "--storage", storage_url, "--device", "cpu", "--name", "r"])
    assert created.exit_code == 0, created.output
    report = runner.invoke(app, ["study", "report", "r", "--storage", storage_url, "-o", "rep"])
    assert report.exit_code == 0, report.output
    study = optuna.load_study(study_name="r", storage=storage_url)
    stored = study.user_attrs[BASELINE_KEY]
    confirmed_seeds = study.user_attrs["tuner:confirmation"]["candidates"][0]["seeds"]
    assert stored["seeds"] == confirmation_seeds(0, 3) == confirmed_seeds
    assert stored["config"]["optimizer"] == {"name": "prodigy"} and stored["config"]["epochs"] == 3
    mean = statistics.fmean(stored["values"])
    text = (tmp_cwd / "rep" / "report.md").read_text()
    line = next(line for line in text.splitlines() if "tuned vs tuning-free" in line)
    assert f"against {mean:.4f} ± " in line and "for Prodigy at its defaults" in line and "tuning bought" in line
    confirmed = study.user_attrs["tuner:confirmation"]
    assert math.isfinite(mean)
    # A second report reuses both the confirmation and the baseline.
    again = runner.invoke(app, ["study", "report", "r", "--storage", storage_url, "-o", "rep2"])
    assert again.exit_code == 0 and "confirmation:" not in again.output
    assert optuna.load_study(study_name="r", storage=storage_url).user_attrs[BASELINE_KEY] == stored
    assert confirmed == optuna.load_study(study_name="r", storage=storage_url).user_attrs["tuner:confirmation"]


def test_the_baseline_line_of_one_seed_shows_no_spread() -> None:
    from tuner.report._confirm import Baseline, Candidate, Confirmation, Recommendation, baseline_line

    config = TrainConfig.from_dict({"optimizer": {"name": "adam"}})
    base = {"optimizer": {"name": "prodigy"}, "schedule": {"name": "constant"}, "batch_size": 64, "epochs": 2}

    def confirmed(values: list[float]) -> Recommendation:  # as recommendation() makes it from a confirmation
        best = Candidate(3, 0.95, {}, seeds=list(range(len(values))), values=values,
                         test_values=[None] * len(values))
        return Recommendation(config, 3, best.mean, best.std, None, None, "x",
                              Confirmation(1, len(values), "maximize", [best], 3))

    one = baseline_line(confirmed([0.95]), Baseline(base, [7], [0.90], [None]), "accuracy", "maximize")
    assert "± " not in one and "on the same seed: tuning bought +0.0500" in one
    two = baseline_line(confirmed([0.94, 0.95, 0.96]), Baseline(base, [7, 8], [0.90, 0.92], [None, None]),
                        "accuracy", "maximize")
    assert "0.9500 ± 0.01 " in two and "on the same 2 seeds: tuning bought +0.0400" in two
    worse = baseline_line(confirmed([0.80]), Baseline(base, [7], [0.90], [None]), "accuracy", "maximize")
    assert "tuning bought -0.1000 - Prodigy at its defaults did better than the tuned config" in worse
    assert ("over wider ranges where its best trials sit at an edge (the report's narrowed space widens them; it needs "
            "at least 5 complete trials)") in worse
    assert "did better" not in one
    # Within the spread of the seeds (the tuned 0.5717 +- 0.019, Prodigy 0.5672 +- 0.038 over 3 seeds each, as a
    # study of a loss gave): no advice to switch, in either direction.
    for tuned, prodigy in (([0.55, 0.57, 0.59], [0.53, 0.56, 0.61]), ([0.53, 0.56, 0.61], [0.55, 0.57, 0.59])):
        close = baseline_line(confirmed(tuned), Baseline(base, [7, 8, 9], prodigy, [None] * 3), "mse", "minimize")
        assert "within the spread of the seeds" in close and "did better" not in close, close
    clear = baseline_line(confirmed([0.50, 0.51, 0.52]), Baseline(base, [7, 8, 9], [0.60, 0.61, 0.62], [None] * 3),
                          "accuracy", "maximize")
    assert "did better" in clear and "within the spread" not in clear
