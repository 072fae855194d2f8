"""Tune the optimizer settings of your own training loop with `tuner.tune`.

Your code stays yours: `train(ctx)` builds the model, reads the sampled `ctx.config` (optimizer, schedule,
batch size, initialisation, regularisation), reports the validation accuracy after every epoch (pruning
happens there) and returns it. Here: an MLP on scikit-learn's digits.

    python examples/tune_own_loop.py --trials 30 --epochs 15 --storage sqlite:///examples.db
"""

from __future__ import annotations

import argparse
import math

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import tuner

x, y = load_digits(return_X_y=True)
x_train, x_rest, y_train, y_rest = train_test_split(x / 16.0, y, test_size=0.4, random_state=0, stratify=y)
x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest)
x_train, x_val, x_test = (torch.tensor(a, dtype=torch.float32) for a in (x_train, x_val, x_test))
y_train, y_val, y_test = (torch.tensor(a) for a in (y_train, y_val, y_test))


def accuracy(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(xs).argmax(1) == ys).float().mean().item()


def train(ctx: tuner.TrialContext) -> tuple[float, float]:
    config = ctx.config
    tuner.seed_everything(config.seed)  # before building the model: the same weights on every run
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.0), nn.Linear(128, 10))
    n, bs = len(x_train), config.batch_size
    # Initialisation, dropout, optimizer and schedule; the schedule spans epochs x steps_per_epoch batches.
    setup = config.setup(model, steps_per_epoch=math.ceil(n / bs))

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])

    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(n)
        for i in range(0, n, bs):
            # penalties, gradient clipping, L-BFGS's closure and the per-batch schedule
            setup.step(batch_loss, perm[i:i + bs])
        setup.eval()  # a schedule-free optimizer: evaluate its averaged weights (nothing for the others)
        val = accuracy(model, x_val, y_val)
        setup.end_epoch(val)  # the plateau schedule watches the validation accuracy
        ctx.report(epoch, val)  # raises optuna.TrialPruned when the pruner stops this trial
    return val, accuracy(model, x_test, y_test)  # (validation, test): the test value is only recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--storage", default=None, help="e.g. sqlite:///examples.db (resumable); default in memory")
    parser.add_argument("--out", default="digits-best.yaml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = tuner.tune(train, space="default", n_trials=args.trials, epochs=args.epochs, storage=args.storage,
                        study_name="digits-own-loop", metric="accuracy")
    print(f"best trial: {result.best_value:.4f} with {result.best_config.summary()}")
    rec = result.recommend(top_k=3, seeds=2)  # re-train the top 3 with 2 new seeds each
    print(f"recommended: {rec.config.summary()}: validation {rec.value:.4f} ± {rec.std:.4f}, "
          f"test {rec.test_value:.4f}")
    rec.config.save(args.out, **rec.metadata(result.study, "accuracy"))
    print(f"saved {args.out}; load it with tuner.load_config({args.out!r})")


if __name__ == "__main__":
    main()
