"""Training throughput of trial packs against one model at a time: model-epochs per second.

For each workload and pack size K, K configs (Adam, one learning rate per member, each its own seed and data
order) are trained as one stacked model by ``tuner._pack.PackTrainer``, and one config is trained by the
``Trainer`` (the path every trial takes today). Both are warmed up first, then timed over the same number of
epochs; the ratio is the pack's model-epochs per second over the Trainer's epochs per second. Training only:
asking, reporting and telling trials are not included (packs are not yet run as trials).

    python -m benchmarks.packs                                   # 3 workloads, K = 1, 4, 16, 1 and 2 threads
    python -m benchmarks.packs --workloads mnist1d-cnn --ks 1,4,16,64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from tuner._pack import PackTrainer
from tuner.config import TrainConfig
from tuner.objectives import load_objective
from tuner.train import Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(workload: str, ks: list[int], epochs: int, threads: int, device: str) -> list[dict]:
    torch.set_num_threads(threads)
    trainer = Trainer(load_objective(workload), device=device)
    base = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-3}, "batch_size": 64, "epochs": epochs})
    trainer.fit(base)  # warm-up
    _sync(trainer.device)
    start = time.perf_counter()
    trainer.fit(base)
    _sync(trainer.device)
    single = epochs / (time.perf_counter() - start)
    rows = []
    for k in ks:
        pack = PackTrainer(trainer, k, 64, "adam")
        for slot in range(k):
            pack.fill(slot, TrainConfig.from_dict({**base.to_dict(), "seed": slot,
                                                   "optimizer": {"name": "adam", "lr": 1e-3 * 1.2 ** slot}}))
        pack.run_epoch()  # warm-up
        for slot in range(k):
            pack.fill(slot, pack.members[slot].config)
        _sync(trainer.device)
        start = time.perf_counter()
        for _ in range(epochs):
            pack.run_epoch()
        _sync(trainer.device)
        packed = k * epochs / (time.perf_counter() - start)
        rows.append({"workload": workload, "device": str(trainer.device), "threads": threads, "K": k,
                     "trainer_epochs_per_s": round(single, 2), "pack_model_epochs_per_s": round(packed, 2),
                     "ratio": round(packed / single, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="digits-mlp,mnist1d-mlp,mnist1d-cnn")
    parser.add_argument("--ks", default="1,4,16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    for workload in args.workloads.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            rows += measure(workload, [int(k) for k in args.ks.split(",")], args.epochs, threads, args.device)
    print(f"\n{platform.node()} ({platform.processor() or platform.machine()}), torch {torch.__version__}")
    print("| workload | device | threads | K | Trainer epochs/s | pack model-epochs/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['device']} | {r['threads']} | {r['K']} | {r['trainer_epochs_per_s']} | "
              f"{r['pack_model_epochs_per_s']} | {r['ratio']} |")


if __name__ == "__main__":
    main()
