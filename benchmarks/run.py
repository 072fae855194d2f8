"""Runs the benchmarks and writes ``benchmarks/results/<date>-<machine>.{json,md}`` and anytime plots.

    python -m benchmarks.run                      # full: 3 workloads x 3 seeds, 60 peer trials x 30 epochs
    python -m benchmarks.run --quick              # smoke run (a few trials), as the test suite does
    python -m benchmarks.run --workloads mnist1d-cnn --seeds 1 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from benchmarks.search import run_peer, run_tuner, time_to_target
from benchmarks.throughput import measure

BUILTIN_WORKLOADS = ["mnist1d-mlp", "mnist1d-cnn", "digits-mlp"]
WORKLOADS = [*BUILTIN_WORKLOADS, "cancer-tabular", "diabetes-tabular"]  # the last two: no default was tuned on them
RESULTS = Path(__file__).with_name("results")


def machine() -> str:
    cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "cpu"
    return f"{platform.machine()}-{cores}core-{gpu}".lower()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few trials and epochs: checks the harness")
    parser.add_argument("--workloads", nargs="+", default=WORKLOADS, choices=WORKLOADS)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per tool (default 3, quick 1)")
    parser.add_argument("--device", default="cpu", help="device of the throughput benchmark (cpu, cuda)")
    parser.add_argument("--skip-search", action="store_true", help="only the throughput benchmark")
    parser.add_argument("--skip-throughput", action="store_true", help="only the search benchmark")
    parser.add_argument("--tuner-args", default="", help="extra `tuner study create` flags, to compare a "
                                                          "changed default against the current one")
    parser.add_argument("--peer-trials", type=int, default=60, help="trials of each peer run (default 60; 30 "
                                                                     "gives the peer, and so tuner, a short budget)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    trials, epochs = (4, 2) if args.quick else (args.peer_trials, 30)
    started = time.time()

    throughput = []
    devices = ["cpu"] + (["cuda"] if args.device.startswith("cuda") else [])
    # The trainer benchmark runs on the built-in objectives (the tabular one needs its CSV: search only).
    for workload in [] if args.skip_throughput else [w for w in args.workloads if w in BUILTIN_WORKLOADS]:
        for device in devices:
            for threads in sorted({1, os.cpu_count() or 1}):
                row = measure(workload, epochs=2 if args.quick else 30, repeats=1 if args.quick else 5,
                              threads=threads, device=device if device == "cpu" else args.device)
                throughput.append(row)
                print(json.dumps(row), flush=True)

    search = []
    if not args.skip_search:
        torch.set_num_threads(os.cpu_count() or 1)
        for workload in args.workloads:
            for seed in range(seeds):
                tpe = run_peer(workload, "tpe", seed, trials, epochs)
                rnd = run_peer(workload, "random", seed, trials, epochs)
                tun = run_tuner(workload, seed, budget_s=tpe["wall_s"], extra=shlex.split(args.tuner_args),
                                label="tuner " + args.tuner_args if args.tuner_args else "tuner")
                for run in (tpe, rnd, tun):
                    run["budget_s"] = tpe["wall_s"]
                    run["target"] = tpe["best_val"]
                    run["time_to_target_s"] = time_to_target(run["curve"], tpe["best_val"])
                    search.append(run)
                    print(json.dumps({k: v for k, v in run.items() if k not in ("curve", "best_config")}),
                          flush=True)

    stamp = f"{date.today().isoformat()}-{machine()}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
        "seconds": round(time.time() - started, 1), "peer_trials": trials, "peer_epochs": epochs,
        "throughput": throughput, "search": search,
    }
    json_path = args.out / f"{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1))
    (args.out / f"{stamp}.md").write_text(markdown(result))
    if search:
        from benchmarks.plots import anytime_plots

        anytime_plots(search, args.out, stamp)
    print(f"wrote {json_path}", flush=True)
    return json_path


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: dict) -> str:
    lines = [f"# Benchmark results: {result['machine']}", "",
             f"`{result['command']}` (python {result['python']}, torch {result['torch']}, "
             f"{result['seconds']:.0f} s in all)", "",
             "## Trainer throughput (epochs/s; median of interleaved runs)", "",
             "| workload | device | threads | tuner | DataLoader loop | peer loop | tuner / peer "
             "| tuner / DataLoader |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["throughput"]:
        e = r["epochs_per_s"]
        lines.append(f"| {r['workload']} | {r['device']} | {r['threads']} | {e['tuner']:.1f} | {e['dataloader']:.1f} "
                     f"| {e['peer']:.1f} | {r['tuner_vs_peer']:.2f} | {r['tuner_vs_dataloader']:.2f} |")
    if result["search"]:
        lines += ["", f"## Search quality (peer: {result['peer_trials']} trials x {result['peer_epochs']} epochs; "
                  "tuner: its defaults, given the peer-TPE run's wall time)", "",
                  "| workload | seed | tool | budget s | best val | test of delivered config "
                  "| time to peer-TPE best (s) | ratio to peer-TPE | complete / pruned / failed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in result["search"]:
            peer_t = next(x["time_to_target_s"] for x in result["search"] if x["tool"] == "peer-tpe"
                          and x["workload"] == r["workload"] and x["seed"] == r["seed"])
            ratio = (r["time_to_target_s"] / peer_t) if r["time_to_target_s"] is not None and peer_t else None
            lines.append(f"| {r['workload']} | {r['seed']} | {r['tool']} | {r['budget_s']:.0f} | {_fmt(r['best_val'])} "
                         f"| {_fmt(r['test_of_best'])} | {_fmt(r['time_to_target_s'], 1)} | {_fmt(ratio, 2)} "
                         f"| {r['complete']} / {r['pruned']} / {r['failed']} |")
        lines += ["", "### Summary (median over seeds)", "",
                  "| workload | tool | best val | test of delivered config | time-to-target ratio | reached target |",
                  "|---|---|---|---|---|---|"]
        for workload in dict.fromkeys(r["workload"] for r in result["search"]):
            for tool in dict.fromkeys(r["tool"] for r in result["search"]):
                runs = [r for r in result["search"] if r["workload"] == workload and r["tool"] == tool]
                peers = {r["seed"]: r["time_to_target_s"] for r in result["search"]
                         if r["workload"] == workload and r["tool"] == "peer-tpe"}
                ratios = [r["time_to_target_s"] / peers[r["seed"]] for r in runs
                          if r["time_to_target_s"] is not None and peers.get(r["seed"])]
                tests = [r["test_of_best"] for r in runs if r["test_of_best"] is not None]
                vals = [r["best_val"] for r in runs if r["best_val"] is not None]
                lines.append(f"| {workload} | {tool} | {_fmt(statistics.median(vals) if vals else None)} "
                             f"| {_fmt(statistics.median(tests) if tests else None)} "
                             f"| {_fmt(statistics.median(ratios) if ratios else None, 2)} "
                             f"| {len(ratios)}/{len(runs)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
