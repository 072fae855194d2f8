"""Keep your own Optuna loop and let `tuner.suggest` sample the optimizer settings.

`tuner.suggest(trial, space)` returns a `TrainConfig` whose hyperparameters are suggested through your
trial, so any Optuna sampler, pruner, storage or callback of yours keeps working. Here: a small MLP on
scikit-learn's breast-cancer data.

    python examples/optuna_loop.py --trials 20
"""

from __future__ import annotations

import argparse
import math

import optuna
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

import tuner

x, y = load_breast_cancer(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
scaler = StandardScaler().fit(x_train)
x_train, x_val = (torch.tensor(scaler.transform(a), dtype=torch.float32) for a in (x_train, x_val))
y_train, y_val = torch.tensor(y_train), torch.tensor(y_val)


def objective(trial: optuna.Trial, epochs: int) -> float:
    config = tuner.suggest(trial, "adam-family", epochs=epochs)
    tuner.seed_everything(config.seed)
    model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Dropout(0.0), nn.Linear(32, 2))
    n, bs = len(x_train), config.batch_size
    setup = config.setup(model, steps_per_epoch=math.ceil(n / bs))

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])

    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n)
        for i in range(0, n, bs):
            setup.step(batch_loss, perm[i:i + bs])
        setup.eval()  # a schedule-free optimizer: evaluate its averaged weights (nothing for the others)
        model.eval()
        with torch.no_grad():
            acc = (model(x_val).argmax(1) == y_val).float().mean().item()
        setup.end_epoch(acc)
        trial.report(acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    trial.set_user_attr("config", config.to_dict())
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    study.optimize(lambda t: objective(t, args.epochs), n_trials=args.trials)
    best = tuner.TrainConfig.from_dict(study.best_trial.user_attrs["config"])
    print(f"best validation accuracy {study.best_value:.4f}: {best.summary()}")


if __name__ == "__main__":
    main()
