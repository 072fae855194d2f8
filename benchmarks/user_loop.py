"""The library path as a user walks it: tune a small 2-D CNN on scikit-learn's digits (1x8x8 images) with
``tuner.tune``, export the best config, load it back and retrain it with the README's ``config.setup`` loop.

Per seed it prints the tuned config, the validation value of the best trial, the test accuracy of the
retrained config (the loop the README shows), and the same retraining with the schedule planned for
``steps_per_epoch=1`` while it is stepped every batch (the mistake ``build()`` used to make silently; it now
warns). It also checks that two ``tune`` runs with one seed give identical values.

    python -m benchmarks.user_loop                   # 3 seeds x 8 trials x 6 epochs (about a minute on 2 cores)
    python -m benchmarks.user_loop --seeds 1 --trials 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tuner


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(32 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def data():
    x, y = load_digits(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest)
    mean, std = x_train.mean(), x_train.std()

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.tensor((a - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8)

    return (TensorDataset(images(x_train), torch.tensor(y_train)), images(x_val), torch.tensor(y_val),
            images(x_test), torch.tensor(y_test))


TRAIN_SET, VAL_X, VAL_Y, TEST_X, TEST_Y = data()
LOSS = nn.functional.cross_entropy


def evaluate(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(xs).argmax(1) == ys).float().mean().item()


def fit(config: tuner.TrainConfig, steps_per_epoch: int | None = None) -> nn.Module:
    """The README's loop; ``steps_per_epoch`` overrides the right value (``len(loader)``) to show a mistake."""
    tuner.seed_everything(config.seed)
    model = DigitsCNN()
    loader = DataLoader(TRAIN_SET, batch_size=config.batch_size, shuffle=True)
    setup = config.setup(model, steps_per_epoch=steps_per_epoch or len(loader))
    for _ in range(config.epochs):
        model.train()
        for xb, yb in loader:
            setup.step(lambda: LOSS(model(xb), yb))  # noqa: B023 (called before step returns)
        setup.end_epoch(evaluate(model, VAL_X, VAL_Y))
    return model


def train(ctx: tuner.TrialContext) -> float:
    config = ctx.config
    tuner.seed_everything(config.seed)
    model = DigitsCNN()
    loader = DataLoader(TRAIN_SET, batch_size=config.batch_size, shuffle=True)
    setup = config.setup(model, steps_per_epoch=len(loader))
    value = 0.0
    for epoch in range(config.epochs):
        model.train()
        for xb, yb in loader:
            setup.step(lambda: LOSS(model(xb), yb))  # noqa: B023 (called before step returns)
        value = evaluate(model, VAL_X, VAL_Y)
        setup.end_epoch(value)
        ctx.report(epoch, value)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--space", default="adam-family")
    args = parser.parse_args()
    torch.set_num_threads(1)
    right, wrong = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        result = tuner.tune(train, space=args.space, n_trials=args.trials, epochs=args.epochs, seed=seed,
                            verbose=False)
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:
            result.best_config.save(Path(folder) / "best.yaml")
            config = tuner.load_config(Path(folder) / "best.yaml")
        right.append(evaluate(fit(config), TEST_X, TEST_Y))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrong.append(evaluate(fit(config, steps_per_epoch=1), TEST_X, TEST_Y))
        warned = sum(issubclass(w.category, RuntimeWarning) for w in caught)
        print(f"seed {seed}: tune {args.trials} trials in {seconds:.1f}s, best val {result.best_value:.4f}, "
              f"{config.summary()}; retrained test {right[-1]:.4f}; with steps_per_epoch=1 {wrong[-1]:.4f} "
              f"({warned} warning(s))", flush=True)
    again = tuner.tune(train, space=args.space, n_trials=args.trials, epochs=args.epochs, seed=0, verbose=False)
    first = tuner.tune(train, space=args.space, n_trials=args.trials, epochs=args.epochs, seed=0, verbose=False)
    same = [t.value for t in again.study.trials] == [t.value for t in first.study.trials]
    print(f"retrained test accuracy: mean {statistics.fmean(right):.4f} (min {min(right):.4f}); "
          f"schedule planned for steps_per_epoch=1: mean {statistics.fmean(wrong):.4f}")
    print(f"two tune() runs with seed 0 gave identical trial values: {same}")


if __name__ == "__main__":
    main()
