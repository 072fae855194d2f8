"""Re-train a model from an exported config with your own training loop.

    tuner study create                                   # the quickstart: mnist1d-cnn
    tuner study export quickstart -o best.yaml           # the recommended config
    python examples/train_from_export.py best.yaml --seeds 3

Only `torch`, `tuner` (for the config) and the data are used: the model, the loop and the evaluation are
plain PyTorch, as in any training script. Prints the test accuracy of each seed and their mean.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from torch import nn

import tuner
from tuner.objectives import mnist1d  # the data only: MNIST-1D, 3200 train / 800 validation / 1000 test


class CNN(nn.Module):
    """The MNIST-1D paper's CNN: three Conv1d (25 channels), ReLU, flatten 125 -> Linear 10."""

    def __init__(self, channels: int = 25, n_out: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(channels * 5, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)
        x = self.conv1(x).relu()
        x = self.conv2(x).relu()
        x = self.conv3(x).relu()
        return self.fc(self.drop(x.flatten(1)))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(config: tuner.TrainConfig, seed: int, epochs: int | None = None) -> tuple[float, float]:
    if epochs is not None:  # the schedule's horizon follows the epochs actually trained
        config = tuner.TrainConfig.from_dict({**config.to_dict(), "epochs": epochs})
    data = mnist1d()
    tuner.seed_everything(seed)  # this run's seed, before the model is built
    model = CNN()
    n, bs = len(data.x_train), config.batch_size
    # Weight initialisation, the dropout rate, the optimizer and the schedule. seed=False: this run's seed
    # (set above) rather than the config's.
    setup = config.setup(model, steps_per_epoch=math.ceil(n / bs), seed=False)

    def batch_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(xb), yb)

    generator = torch.Generator().manual_seed(seed)
    for _ in range(config.epochs):
        model.train()
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            # L1 (and L2 for L-BFGS), gradient clipping, L-BFGS's closure, the per-batch schedule
            setup.step(batch_loss, data.x_train[idx], data.y_train[idx])
        setup.eval()  # a schedule-free optimizer: evaluate its averaged weights (nothing for the others)
        setup.end_epoch(accuracy(model, data.x_val, data.y_val))  # plateau watches the validation accuracy
    return accuracy(model, data.x_val, data.y_val), accuracy(model, data.x_test, data.y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML or JSON written by `tuner study export`")
    parser.add_argument("--seeds", type=int, default=3, help="training runs, each with its own seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1 (got {args.seeds})")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1 (got {args.epochs})")
    torch.set_num_threads(1)  # this small model trains fastest on one thread
    try:
        config = tuner.load_config(args.config)
    except tuner.TunerError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"config: {config.summary()}, {args.epochs or config.epochs} epochs")
    tests = []
    for seed in range(args.seeds):
        val, test = train(config, seed=1000 + seed, epochs=args.epochs)
        tests.append(test)
        print(f"seed {1000 + seed}: validation {val:.4f}, test {test:.4f}")
    spread = f" ± {statistics.stdev(tests):.4f}" if len(tests) > 1 else ""
    print(f"test accuracy: {statistics.fmean(tests):.4f}{spread} over {len(tests)} seed(s)")


if __name__ == "__main__":
    main()
