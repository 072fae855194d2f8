"""Trainer overhead: the same model, data and config trained by three loops, side by side.

(a) tuner's ``Trainer``; (b) a typical hand-written loop over ``DataLoader(TensorDataset(...), shuffle=True)``;
(c) the loop of the plain-Optuna peer script (``randperm`` + slicing). All three evaluate on the validation
split after every epoch, as a tuning run does. Runs are interleaved and repeated; the median counts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tuner.config import TrainConfig
from tuner.objectives import Dataset, load_objective
from tuner.train import Trainer, seed_everything

LR, BATCH = 1e-2, 100


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def dataloader_loop(build: Callable[[], nn.Module], data: Dataset, epochs: int, device: torch.device) -> float:
    model = build().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=BATCH, shuffle=True)
    lossf = nn.CrossEntropyLoss()
    xv, yv = data.x_val.to(device), data.y_val.to(device)
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            lossf(model(xb), yb).backward()
            opt.step()
        value = _accuracy(model, xv, yv)
    return value


def peer_loop(build: Callable[[], nn.Module], data: Dataset, epochs: int, device: torch.device) -> float:
    model = build().to(device)
    o = torch.optim.Adam(model.parameters(), lr=LR)
    lossf = nn.CrossEntropyLoss()
    xtr, ytr = data.x_train.to(device), data.y_train.to(device)
    xv, yv = data.x_val.to(device), data.y_val.to(device)
    for _ in range(epochs):
        model.train()
        pr = torch.randperm(len(xtr), device=device)
        for i in range(0, len(xtr), BATCH):
            idx = pr[i:i + BATCH]
            o.zero_grad()
            lossf(model(xtr[idx]), ytr[idx]).backward()
            o.step()
        value = _accuracy(model, xv, yv)
    return value


def measure(workload: str, epochs: int, repeats: int, threads: int, device: str = "cpu") -> dict:
    """Epochs per second of each loop (median over ``repeats`` interleaved runs) and their ratios."""
    torch.set_num_threads(threads)
    objective = load_objective(workload)
    trainer = Trainer(objective, device=device)
    data = trainer.cpu_data
    dev = trainer.device
    config = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": LR}, "batch_size": BATCH,
                                    "epochs": epochs, "seed": 0})

    def build() -> nn.Module:
        return objective.build_model(data)

    loops: dict[str, Callable[[], float]] = {
        "tuner": lambda: trainer.fit(config).value,
        "dataloader": lambda: dataloader_loop(build, data, epochs, dev),
        "peer": lambda: peer_loop(build, data, epochs, dev),
    }
    for run in loops.values():  # warm-up: allocator, kernels, lazy imports
        seed_everything(0)
        run()
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    accuracy: dict[str, float] = {}
    names = list(loops)
    for r in range(repeats):
        for name in names[r % 3:] + names[:r % 3]:  # rotate the order so no loop always runs first
            run = loops[name]
            seed_everything(0)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            accuracy[name] = run()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    eps = {name: epochs / statistics.median(s) for name, s in seconds.items()}
    row = {
        "workload": workload, "device": str(dev), "threads": threads, "epochs": epochs, "repeats": repeats,
        "epochs_per_s": {k: round(v, 2) for k, v in eps.items()},
        "tuner_vs_peer": round(eps["tuner"] / eps["peer"], 3),
        "tuner_vs_dataloader": round(eps["tuner"] / eps["dataloader"], 3),
        "final_val_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
    }
    if dev.type == "cuda":
        row["gpu_max_memory_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return row
