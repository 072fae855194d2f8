"""The GPU run's table: trials per hour of every pack setting against one trial at a time and against pack 1 in
worker processes on the same device, beside the targets of trial packs, from the newest results of
``benchmarks/gpu/run.sh`` (``*-packs-gpu-*.json``).

    python -m benchmarks.gpu.summary benchmarks/results [--newer FILE]   # only files written after FILE
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

# Trials per hour, end to end, against one trial at a time (pack 1) and against pack 1 in 4 workers.
TARGETS = {"mnist1d-mlp": (200.0, 10.0), "mnist1d-cnn": (20.0, 10.0)}


def newest(folder: Path, tag: str, after: float = 0.0) -> dict | None:
    """The newest results of ``tag`` written after ``after`` (a modification time): one run's, not an earlier
    try's or another device's."""
    files = sorted((p for p in folder.glob(f"*-packs-{tag}.json") if p.stat().st_mtime > after),
                   key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else None


def rates(runs: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (workload, setting): median trials/hour, GPU utilisation and memory, and the pack auto chose."""
    out: dict[tuple[str, str], dict] = {}
    for key in dict.fromkeys((r["workload"], r["pack"]) for r in runs):
        mine = [r for r in runs if (r["workload"], r["pack"]) == key]
        util = [r["gpu_util_mean"] for r in mine if "gpu_util_mean" in r]
        out[key] = {"rate": statistics.median(r["trials_per_hour"] for r in mine),
                    "util": statistics.median(util) if util else None,
                    "memory": max((r["gpu_memory_max_mib"] for r in mine if "gpu_memory_max_mib" in r), default=None),
                    "chosen": ",".join(sorted({str(r["chosen"]) for r in mine})), "n_trials": mine[0]["n_trials"],
                    "best_val": statistics.median(r["best_val"] for r in mine if r["best_val"] is not None)
                    if any(r["best_val"] is not None for r in mine) else None}
    return out


def table(folder: Path, after: float = 0.0) -> str:
    found: dict[tuple[str, str], dict] = {}
    for tag in ("gpu-baselines", "gpu-mlp", "gpu-cnn"):
        data = newest(folder, tag, after)
        if data:
            found.update(rates(data["runs"]))
    if not found:
        return "no GPU results found\n"
    lines = ["| workload | setting | trials | chosen K | trials/hour | x pack 1 | x pack 1 in 4 workers | "
             "GPU util % (mean) | GPU MiB (peak) | best val |", "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for workload in dict.fromkeys(w for w, _ in found):
        one = found.get((workload, "1"))
        four = found.get((workload, "1x4"))
        for (w, setting), r in found.items():
            if w != workload:
                continue
            x_one = r["rate"] / one["rate"] if one else None
            x_four = r["rate"] / four["rate"] if four else None
            lines.append(f"| {w} | {setting} | {r['n_trials']} | {r['chosen']} | {r['rate']:.0f} | "
                         f"{_num(x_one)} | {_num(x_four)} | {_num(r['util'], '.0f')} | {r['memory'] or '-'} | "
                         f"{_num(r['best_val'], '.4f')} |")
            if workload in TARGETS and setting not in ("1", "1x4") and x_one is not None and x_four is not None:
                need_one, need_four = TARGETS[workload]
                verdicts.append(f"- {workload} pack {setting}: {x_one:.1f}x one at a time (target {need_one:g}x: "
                                f"{'met' if x_one >= need_one else 'missed'}), {x_four:.1f}x 4 workers (target "
                                f"{need_four:g}x: {'met' if x_four >= need_four else 'missed'})")
    return "\n".join(lines + [""] + verdicts) + "\n"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=Path(__file__).resolve().parents[1] / "results")
    parser.add_argument("--newer", type=Path, default=None, help="only result files written after this file")
    args = parser.parse_args()
    print(table(args.folder, args.newer.stat().st_mtime if args.newer else 0.0), end="")


if __name__ == "__main__":
    main()
