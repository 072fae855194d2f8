"""Several settings of ``tuner study create`` side by side, against the peer figures of a full run.

    python -m benchmarks.settings --setting "" --setting "--calibrate"
    python -m benchmarks.settings --setting "" --setting "--pruner patient" --workloads mnist1d-mlp --seeds 2
    python -m benchmarks.settings --setting "" --setting "TUNER_WORKER_START=spawn" --workloads digits-mlp

Each setting runs, per workload and seed, with the wall-clock budget and target (best validation accuracy) of
the plain-Optuna TPE run recorded in ``--reference`` (a ``benchmarks.run`` results file); the settings' order
rotates from seed to seed, so that a slow spell of a shared machine does not fall on one setting. Work a study
does before its first trial (the LR range test of ``--calibrate``) counts against its budget. Writes
``results/<date>-<machine>-settings-<tag>.{json,md}``.

With ``--confirm``, each study is then exported as a user exports it (``tuner study export``: the top three
trials re-trained with three new seeds, the best mean recommended; untimed), and the peer's best params are
trained again with three new seeds: the table adds the test accuracy each tool's delivered config keeps when
trained again, beside that of the single lucky run that put it on top.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from benchmarks.run import RESULTS, WORKLOADS, machine
from benchmarks.search import retrain_peer, run_tuner, time_to_target

REFERENCE = RESULTS / "2026-11-21-x86_64-2core-cpu-full.json"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.settings", description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append",
                        help="extra `tuner study create` flags of one setting (\"\" for the defaults), after any "
                             "NAME=VALUE environment variables of its command; repeat")
    parser.add_argument("--workloads", nargs="+", default=None, choices=WORKLOADS,
                        help="default: every workload the reference has a peer-TPE run of")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply the peer's wall time by this (0.5: a short budget)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="a benchmarks.run results file")
    parser.add_argument("--tag", default="", help="a name for the result files")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--confirm", action="store_true",
                        help="export each study (confirmation runs) and re-train the peer's best params")
    parser.add_argument("--retable", type=Path, help="rewrite the .md table of an earlier results .json and stop")
    args = parser.parse_args(argv)
    if args.retable:
        return retable(args.retable)
    if not args.setting:
        parser.error("--setting is required (\"\" for the defaults), unless --retable is given")
    argv = sys.argv[1:] if argv is None else argv
    reference = json.loads(args.reference.read_text())
    peers = {(r["workload"], r["seed"]): r for r in reference["search"] if r["tool"] == "peer-tpe"}
    workloads = args.workloads or [w for w in WORKLOADS if (w, 0) in peers]
    missing = sorted({(w, s) for w in workloads for s in range(args.seeds)} - set(peers))
    if missing:
        parser.error(f"{args.reference} has no peer-TPE run of {missing[0][0]} seed {missing[0][1]}")
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    rows = []
    for workload in workloads:
        for seed in range(args.seeds):
            peer = peers[(workload, seed)]
            peer_retrained = (retrain_peer(workload, peer["best_config"], reference.get("peer_epochs", 30))
                              if args.confirm else None)
            budget = peer["wall_s"] * args.budget_scale
            order = args.setting[seed % len(args.setting):] + args.setting[:seed % len(args.setting)]
            for setting in order:
                run = run_tuner(workload, seed, budget_s=budget, extra=shlex.split(setting),
                                label=setting or "defaults", confirm=args.confirm)
                run.update(budget_s=round(budget, 1), target=peer["best_val"],
                           time_to_target_s=time_to_target(run["curve"], peer["best_val"]),
                           peer_time_to_target_s=peer["time_to_target_s"])
                if peer_retrained:
                    run.update(peer_test_of_best=peer["test_of_best"], peer_retrained_test=peer_retrained["test"])
                rows.append(run)
                print(json.dumps({k: v for k, v in run.items() if k not in ("curve", "best_config")}), flush=True)
    tag = args.tag or "-".join(s.strip("-").replace(" ", "_") or "defaults" for s in args.setting)[:60]
    stamp = f"{date.today().isoformat()}-{machine()}-settings-{tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{stamp}.json"
    out.write_text(json.dumps({"command": "python -m benchmarks.settings " + shlex.join(argv or []),
                               "reference": str(args.reference), "budget_scale": args.budget_scale,
                               "seconds": round(time.time() - started, 1), "runs": rows}, indent=1))
    (args.out / f"{stamp}.md").write_text(table(rows, args.setting))
    print(table(rows, args.setting))
    return out


def retable(path: Path) -> Path:
    """The table of a results file again (after a change to how it is drawn), peer figures from its reference."""
    data = json.loads(path.read_text())
    reference = json.loads(Path(data["reference"]).read_text())
    peers = {(r["workload"], r["seed"]): r for r in reference["search"] if r["tool"] == "peer-tpe"}
    for run in data["runs"]:
        run.setdefault("peer_time_to_target_s", peers[(run["workload"], run["seed"])]["time_to_target_s"])
    settings = list(dict.fromkeys("" if r["tool"] == "defaults" else r["tool"] for r in data["runs"]))
    path.write_text(json.dumps(data, indent=1))
    out = path.with_suffix(".md")
    out.write_text(table(data["runs"], settings))
    print(out.read_text())
    return out


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict], settings: list[str]) -> str:
    lines = ["| workload | setting | best val | test of delivered config | time-to-target ratio | reached | "
             "trials (complete/pruned) | s before trials |", "|---|---|---|---|---|---|---|---|"]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        for setting in settings:
            runs = [r for r in rows if r["workload"] == workload and r["tool"] == (setting or "defaults")]
            if not runs:
                continue
            ratios = [r["time_to_target_s"] / r["peer_time_to_target_s"] for r in runs
                      if r["time_to_target_s"] is not None]
            lines.append(f"| {workload} | {setting or 'defaults'} | {cell(med([r['best_val'] for r in runs]))} | "
                         f"{cell(med([r['test_of_best'] for r in runs if r['test_of_best'] is not None]))} | "
                         f"{cell(med(ratios), 2) if len(ratios) == len(runs) else cell(med(ratios), 2) + ' *'} | "
                         f"{len(ratios)}/{len(runs)} | {med([r['complete'] for r in runs])}/"
                         f"{med([r['pruned'] for r in runs])} | "
                         f"{cell(med([r['seconds_before_trials'] for r in runs]), 1)} |")
    lines.append("\nMedians over seeds. Time-to-target ratio: seconds until the running best validation accuracy "
                 "reached the peer-TPE's final best, over the seconds the peer-TPE run took to reach it (as in "
                 "`benchmarks.run`); `*`: the median of the seeds that reached it.")
    if any("confirmed_test" in r for r in rows):
        lines += retrained_table(rows, settings)
    return "\n".join(lines) + "\n"


def retrained_table(rows: list[dict], settings: list[str]) -> list[str]:
    """The test accuracy each tool's delivered config keeps when trained again with new seeds."""
    lines = ["", "| workload | tool | test, the best trial's own run | best trial re-trained | delivered config "
             "re-trained | delivered is another trial | seconds of confirmation |", "|---|---|---|---|---|---|---|"]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        confirmed = [r for r in rows if r["workload"] == workload and "confirmed_test" in r]
        peers = list({r["seed"]: r for r in confirmed}.values())
        if peers:
            lines.append(f"| {workload} | peer-tpe (reference) | {cell(med([r['peer_test_of_best'] for r in peers]))} "
                         f"| {cell(med([r['peer_retrained_test'] for r in peers]))} | (the best trial) | - | - |")
        for setting in settings:
            runs = [r for r in confirmed if r["tool"] == (setting or "defaults")]
            if runs:
                lines.append(f"| {workload} | tuner {setting or 'defaults'} | "
                             f"{cell(med([r['test_of_best'] for r in runs]))} | "
                             f"{cell(med([r['best_trial_retrained_test'] for r in runs]))} | "
                             f"{cell(med([r['confirmed_test'] for r in runs]))} | "
                             f"{sum(not r['confirmed_is_best_trial'] for r in runs)}/{len(runs)} | "
                             f"{med([r['confirm_s'] for r in runs]):.1f} |")
    lines.append("\nRe-trained: the mean test accuracy over three new seeds (medians over the workload's seeds). The "
                 "peer's best params are trained again as its script trains them; tuner's delivered config is the one "
                 "`tuner study export` recommends after re-training the top three trials with three new seeds each.")
    return lines


if __name__ == "__main__":
    main()
