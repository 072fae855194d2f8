"""Trial packs: trials per hour and best validation accuracy against wall time, packed against one at a time.

Studies mode (the default) runs real studies with ``tuner study create`` (TPE, median pruner, SQLite), one per
workload, seed and pack setting (``--pack 1`` is the one-trial loop; ``auto`` is the default), and reads every
trial's finish time back from the storage. Reported per run: trials per hour over the run's wall time, the
best validation accuracy at the end (equal trial counts) and at the wall time of the fastest setting of that
workload and seed (equal wall time). Results go to ``benchmarks/results/<date>-<machine>-packs.{json,md}``
and one anytime plot per workload.

    python -m benchmarks.packs                                    # 3 workloads x K in 1, auto, 4, 16, 64 x 3 seeds
    python -m benchmarks.packs --workloads mnist1d-mlp --packs 1,auto --seeds 0 --n-trials 32
    python -m benchmarks.packs --training                         # training only: model-epochs/s of PackTrainer
    python -m benchmarks.packs --bookkeeping --packs 1,16         # ms per trial: ask, report, prune, tell, training
    python -m benchmarks.packs --device cuda --n-trials 1024 --packs 1,auto,64,256,1024 --ks 1,64,256,1024,4096
    python -m benchmarks.packs --packs 1,1x4,auto --n-trials 64 --tag workers    # 1x4: pack 1 in 4 workers

On a GPU (``--device cuda``) the studies train there and ``nvidia-smi`` is sampled every 200 ms while each runs:
the mean and peak GPU utilisation and the peak memory go into the table.

Training mode times PackTrainer against the Trainer without any study around it: K configs (Adam, one
learning rate per member, each its own seed and data order) against one config, warmed up, same epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from tuner._pack import PackTrainer
from tuner.config import TrainConfig
from tuner.objectives import load_objective
from tuner.train import Trainer, sync

RESULTS = Path(__file__).resolve().parent / "results"
TUNER = str(Path(sys.executable).with_name("tuner"))


def measure(workload: str, ks: list[int], epochs: int, threads: int, device: str) -> list[dict]:
    torch.set_num_threads(threads)
    trainer = Trainer(load_objective(workload), device=device)
    base = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-3}, "batch_size": 64, "epochs": epochs})
    trainer.fit(base)  # warm-up
    sync(trainer.device)
    start = time.perf_counter()
    trainer.fit(base)
    sync(trainer.device)
    single = epochs / (time.perf_counter() - start)
    rows = []
    for k in ks:
        pack = PackTrainer(trainer, k, 64, "adam")
        for slot in range(k):
            pack.fill(slot, TrainConfig.from_dict({**base.to_dict(), "seed": slot,
                                                   "optimizer": {"name": "adam", "lr": 1e-3 * 1.2 ** (slot % 20)}}))
        pack.run_epoch()  # warm-up
        for slot in range(k):
            pack.fill(slot, pack.members[slot].config)
        sync(trainer.device)
        start = time.perf_counter()
        for _ in range(epochs):
            pack.run_epoch()
        sync(trainer.device)
        packed = k * epochs / (time.perf_counter() - start)
        rows.append({"workload": workload, "device": str(trainer.device), "threads": threads, "K": k,
                     "trainer_epochs_per_s": round(single, 2), "pack_model_epochs_per_s": round(packed, 2),
                     "ratio": round(packed / single, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


class GpuSampler:
    """``nvidia-smi`` sampled every 200 ms while a study runs: utilisation (%) and memory used (MiB). A machine
    without it (or without a GPU) samples nothing."""

    QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "200"]

    def __init__(self, device: str) -> None:
        import shutil

        self.process = None
        if device.startswith("cuda") and shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(self.QUERY, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> dict:
        if self.process is None:
            return {}
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return parse_gpu_samples(out)


def parse_gpu_samples(text: str) -> dict:
    """Mean and peak utilisation and peak memory from ``nvidia-smi`` CSV lines (first GPU of each sample)."""
    util, memory = [], []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            util.append(int(parts[0]))
            memory.append(int(parts[1]))
    if not util:
        return {}
    return {"gpu_util_mean": round(statistics.fmean(util), 1), "gpu_util_max": max(util),
            "gpu_memory_max_mib": max(memory), "gpu_samples": len(util)}


def run_study(workload: str, setting: str, seed: int, n_trials: int, epochs: int, space: str,
              device: str = "cpu", timeout: float | None = None, pruner: str | None = None) -> dict:
    """One study in a fresh process; its wall time, and every trial's finish time and running best.
    ``setting`` is a pack setting (``1``, ``auto``, ``64``), or ``KxW``: pack K in W worker processes.
    ``timeout``: the study's ``--timeout`` (no trial starts after it; a running one stops at its next epoch)."""
    import optuna

    pack, _, workers = setting.partition("x")

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/b.db"
        env = {k: v for k, v in os.environ.items() if k != "TUNER_PACK"}
        gpu = GpuSampler(device)
        start = time.monotonic()
        done = subprocess.run([TUNER, "study", "create", "--name", "b", "--storage", url, "--format", "json",
                               "--objective", workload, "--space", space, "--n-trials", str(n_trials), "--epochs",
                               str(epochs), "--seed", str(seed), "--pack", pack, "--device", device,
                               "--workers", workers or "1",  # packs in one process unless asked
                               *(["--timeout", f"{timeout:g}"] if timeout else []),
                               *(["--pruner", pruner] if pruner else [])],
                              capture_output=True, text=True, env=env, timeout=3600)
        process_seconds = time.monotonic() - start
        usage = gpu.stop()
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        run = json.loads(done.stdout)["run"]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        trials = optuna.load_study(study_name="b", storage=url).get_trials(deepcopy=False)
    t0 = min(t.datetime_start for t in trials if t.datetime_start)
    curve, best = [], None
    # Trials that ended (complete or pruned); one stopped by the timeout (failed) is not a trial done.
    finished = sorted((t for t in trials if t.datetime_complete and t.state.name != "FAIL"),
                      key=lambda t: t.datetime_complete)
    for t in finished:
        if t.state.name == "COMPLETE" and (best is None or t.value > best):
            best = t.value
        if best is not None:
            curve.append(((t.datetime_complete - t0).total_seconds(), best))
    if not finished:
        raise RuntimeError(f"no trial of {len(trials)} ended before the study stopped (--timeout {timeout})")
    span = (finished[-1].datetime_complete - t0).total_seconds()
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    # A run in workers says each worker's pack size instead of one.
    chosen = max((w.get("pack") or 0 for w in run["workers"]), default=0) or None if run["workers"] else run["pack"]
    return {"workload": workload, "tool": f"pack {setting}", "pack": setting, "chosen": chosen,
            "why": run.get("pack_why", ""), "threads": run.get("threads"), "seed": seed, "n_trials": n_trials,
            "epochs_trained": sum(len(t.intermediate_values) for t in trials), "states": states,
            "seconds": round(span, 2), "process_seconds": round(process_seconds, 2),
            "trials_per_hour": round(len(finished) / span * 3600), "best_val": best, "curve": curve,
            "device": device, **usage}


def bookkeeping(workload: str, pack: int, n_trials: int, epochs: int, space: str, storage: str) -> dict:
    """One study in this process with timers around each part of the trial loop: asking and sampling a
    trial, the epoch reports (one batched write), the pruning checks (one read of the study), closing a
    trial (attributes and tell), and training itself; milliseconds per trial. The wall time runs from the
    first trial's ask to the end (the thread and pack probes before it are not in it)."""
    import collections

    import optuna

    from tuner._pack import PackTrainer as Packs
    from tuner.study import StudySpec, create_or_join, prepare
    from tuner.study import _packs as engine
    from tuner.study._local import run_prepared

    spent: dict[str, float] = collections.defaultdict(float)
    first: list[float] = []  # when the first trial was asked for: the wall time starts there

    def timed(name: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            if not first:
                first.append(start)
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    from tuner.study import _engine as single

    patches = {(engine, "_take"): "ask + sample", (engine, "write_batch"): "report (batched write)",
               (engine, "StudyView"): "prune checks (one read)", (engine, "finish_trial"): "close (attrs + tell)",
               (engine, "reap_stale"): "reaper", (Packs, "run_epoch"): "training",
               # One trial at a time: the same parts, reports and pruning checks inside the Trainer's epochs.
               (single, "_take"): "ask + sample", (single, "finish_trial"): "close (attrs + tell)",
               (single, "report_epoch"): "report + prune (per epoch)", (Trainer, "fit"): "training"}
    originals = {target: getattr(*target) for target in patches}
    for (owner, attr), name in patches.items():
        setattr(owner, attr, timed(name, originals[(owner, attr)]))
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        spec = StudySpec.from_mapping({"name": "k", "objective": workload, "space": space, "n_trials": n_trials,
                                       "epochs": epochs, "storage": storage, "pack": pack}, "benchmark")
        prepared = prepare(spec)
        study = create_or_join(prepared)
        run_prepared(study, prepared)  # the thread and pack probes before the first trial are not timed
        wall = time.perf_counter() - first[0]
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
    if "report + prune (per epoch)" in spent:  # the Trainer's time includes the reports made from inside it
        spent["training"] -= spent["report + prune (per epoch)"]
    trials = study.get_trials(deepcopy=False)
    row = {"workload": workload, "pack": pack, "trials": len(trials), "storage": storage.split(":")[0],
           "epochs_trained": sum(len(t.intermediate_values) for t in trials),
           "ms_per_trial": {name: round(1000 * seconds / len(trials), 2) for name, seconds in spent.items()},
           "wall_ms_per_trial": round(1000 * wall / len(trials), 2), "process": os.getpid()}
    print(json.dumps(row), flush=True)
    return row


def best_by(curve: list, seconds: float) -> float | None:
    values = [best for t, best in curve if t <= seconds]
    return values[-1] if values else None


def studies(args: argparse.Namespace) -> None:
    """Every workload x seed x setting; the results are written after each run, and an interrupt (Ctrl-C, or
    the SIGINT of a time limit) ends the loop with the runs that finished."""
    runs: list[dict] = []
    try:
        for workload in args.workloads.split(","):
            for seed in range(args.seeds):
                # The order of the settings rotates with the seed, so that no setting always runs first.
                packs = args.packs.split(",")
                packs = packs[seed % len(packs):] + packs[:seed % len(packs)]
                for pack in packs:
                    try:
                        run = run_study(workload, pack, seed, args.n_trials, args.epochs, args.space, args.device,
                                        args.study_timeout, args.pruner)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # the other settings still run
                        print(f"{workload}, pack {pack}, seed {seed} failed: {str(exc)[-1500:]}", flush=True)
                        continue
                    runs.append(run)
                    print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
                    write_studies(runs, args, plots=False)
    except KeyboardInterrupt:
        print(f"interrupted: the table holds the {len(runs)} run(s) that finished", flush=True)
    if runs:
        write_studies(runs, args, plots=True)


def write_studies(runs: list[dict], args: argparse.Namespace, plots: bool) -> None:
    for workload in dict.fromkeys(r["workload"] for r in runs):
        for seed in range(args.seeds):
            mine = [r for r in runs if r["workload"] == workload and r["seed"] == seed]
            if not mine:
                continue
            horizon = min(r["seconds"] for r in mine)
            for r in mine:
                r["equal_time_seconds"] = horizon
                r["best_val_at_equal_time"] = best_by(r["curve"], horizon)
    stamp = f"{date.today().isoformat()}-{platform.machine()}-{os.cpu_count()}core-" \
            f"{'cuda' if args.device.startswith('cuda') else 'cpu'}-packs{'-' + args.tag if args.tag else ''}".lower()
    RESULTS.mkdir(exist_ok=True)
    meta = {"command": " ".join(["python -m benchmarks.packs", *sys.argv[1:]]), "torch": torch.__version__,
            "python": platform.python_version(), "cores": os.cpu_count(), "n_trials": args.n_trials,
            "epochs": args.epochs, "space": args.space, "device": args.device, "pruner": args.pruner}
    (RESULTS / f"{stamp}.json").write_text(json.dumps({**meta, "runs": runs}, indent=1))
    table = markdown(runs, meta)
    (RESULTS / f"{stamp}.md").write_text(table)
    if not plots:
        return
    from benchmarks.plots import anytime_plots

    for path in anytime_plots(runs, RESULTS, stamp):
        print(path)
    print(table)


def markdown(runs: list[dict], meta: dict) -> str:
    lines = [f"# Trial packs: {meta['n_trials']} trials x {meta['epochs']} epochs, space {meta['space']}, "
             f"{meta['cores']} cores, {meta.get('device', 'cpu')}, torch {meta['torch']}", "",
             f"`{meta['command']}`", "",
             "| workload | pack | chosen K | trials/hour | x one-at-a-time | epochs trained | best val (equal trials) "
             "| best val (equal time) | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    gpu_columns = any("gpu_util_mean" in r for r in runs)
    if gpu_columns:
        lines[-2] += " GPU utilisation % (mean) | GPU memory MiB (peak) |"
        lines[-1] += "---|---|"
    # Pack 1 in W worker processes ("1xW"), where run: every setting's trials/hour against it too.
    in_workers = next((r["pack"] for r in runs if r["pack"].startswith("1x")), None)
    if in_workers:
        lines[-2] += f" x pack 1 in {in_workers.partition('x')[2]} workers |"
        lines[-1] += "---|"
    med = statistics.median
    for workload in dict.fromkeys(r["workload"] for r in runs):
        base = [r for r in runs if r["workload"] == workload and r["pack"] == "1"]
        base_rate = med([r["trials_per_hour"] for r in base]) if base else None
        for pack in dict.fromkeys(r["pack"] for r in runs if r["workload"] == workload):
            mine = [r for r in runs if r["workload"] == workload and r["pack"] == pack]
            rate = med([r["trials_per_hour"] for r in mine])

            def spread(key: str, rows: list[dict] = mine) -> str:
                values = [r[key] for r in rows if r[key] is not None]
                return f"{med(values):.4f} ({min(values):.4f}-{max(values):.4f})" if values else "-"

            chosen = ",".join(str(c) for c in sorted({r["chosen"] for r in mine}))
            gpu = ""
            if gpu_columns:
                sampled = [r for r in mine if "gpu_util_mean" in r]
                gpu = (f" {med([r['gpu_util_mean'] for r in sampled]):.0f} | "
                       f"{max(r['gpu_memory_max_mib'] for r in sampled)} |" if sampled else " - | - |")
            versus = ""
            if in_workers:
                rates = [r["trials_per_hour"] for r in runs if r["workload"] == workload and r["pack"] == in_workers]
                versus = f" {rate / med(rates):.2f} |" if rates else " - |"
            lines.append(f"| {workload} | {pack} | {chosen} | {rate:.0f} | "
                         f"{f'{rate / base_rate:.2f}' if base_rate else '-'} | "
                         f"{med([r['epochs_trained'] for r in mine]):.0f} | "
                         f"{spread('best_val')} | {spread('best_val_at_equal_time')} | "
                         f"{med([r['seconds'] for r in mine]):.1f} |{gpu}{versus}")
    lines += ["", "Medians over seeds (range in brackets). Trials/hour: finished trials over the time from the "
              "first trial's start to the last trial's end. Equal time: the best validation accuracy reached "
              "by the wall time of the fastest setting of that workload and seed."]
    whys = {r["why"] for r in runs if r["pack"] == "auto" and r["why"]}
    lines += ["", "What auto said:"] + [f"- {w}" for w in sorted(whys)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training", action="store_true", help="training throughput only (no studies)")
    parser.add_argument("--workloads", default="mnist1d-mlp,digits-mlp,mnist1d-cnn")
    parser.add_argument("--packs", default="1,auto,4,16,64", help="studies: pack settings (1 = one at a time)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=64)
    parser.add_argument("--space", default="lr-only")
    parser.add_argument("--pruner", default=None, help="studies: the pruner [default: the objective's]")
    parser.add_argument("--ks", default="1,4,16", help="training: pack sizes")
    parser.add_argument("--threads", default="1,2", help="training: torch thread counts")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (studies: 10; training: 3)")
    parser.add_argument("--device", default="cpu", help="device of the studies and of training (cpu, cuda)")
    parser.add_argument("--bookkeeping", action="store_true", help="time each part of a packed trial loop")
    parser.add_argument("--tag", default="", help="studies: a name added to the result files")
    parser.add_argument("--study-timeout", type=float, default=None,
                        help="studies: each study's --timeout in seconds (n-trials is then a cap)")
    args = parser.parse_args()
    if args.bookkeeping:
        settings = [(workload, int(pack)) for workload in args.workloads.split(",")
                    for pack in args.packs.split(",") if pack != "auto"]
        with tempfile.TemporaryDirectory() as tmp:
            if len(settings) == 1:
                workload, pack = settings[0]
                bookkeeping(workload, pack, args.n_trials, args.epochs or 10, args.space,
                            f"sqlite:///{tmp}/{workload}-{pack}.db")
                return
            # Each setting in a fresh process: one study's thread choice and warm caches would be the next one's.
            for workload, pack in settings:
                subprocess.run([sys.executable, "-m", "benchmarks.packs", "--bookkeeping", "--workloads", workload,
                                "--packs", str(pack), "--n-trials", str(args.n_trials), "--space", args.space,
                                *(["--epochs", str(args.epochs)] if args.epochs else [])], check=True)
        return
    if not args.training:
        args.epochs = args.epochs or 10
        studies(args)
        return
    args.epochs = args.epochs or 3
    rows: list[dict] = []
    try:
        for workload in args.workloads.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                rows += measure(workload, [int(k) for k in args.ks.split(",")], args.epochs, threads, args.device)
    except KeyboardInterrupt:  # the rows measured so far were printed as they came
        print("interrupted", flush=True)
    print(f"\n{platform.node()} ({platform.processor() or platform.machine()}), torch {torch.__version__}")
    print("| workload | device | threads | K | Trainer epochs/s | pack model-epochs/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['device']} | {r['threads']} | {r['K']} | {r['trainer_epochs_per_s']} | "
              f"{r['pack_model_epochs_per_s']} | {r['ratio']} |")


if __name__ == "__main__":
    main()
