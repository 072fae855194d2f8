"""Anytime curves: best validation accuracy against wall-clock seconds, median and range over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def step_curve(curve: list[tuple[float, float]], grid: np.ndarray) -> np.ndarray:
    """The running best at each time of ``grid`` (NaN before the first finished trial)."""
    out = np.full(len(grid), np.nan)
    for t, best in curve:
        out[grid >= t] = best
    return out


def anytime_data(runs: list[dict], workload: str, points: int = 200) -> dict[str, dict[str, np.ndarray]]:
    """Per tool: the time grid and the median, min and max over seeds."""
    mine = [r for r in runs if r["workload"] == workload and r["curve"]]
    horizon = max(max(t for t, _ in r["curve"]) for r in mine)
    grid = np.linspace(0, horizon, points)
    data = {}
    for tool in dict.fromkeys(r["tool"] for r in mine):
        curves = np.array([step_curve(r["curve"], grid) for r in mine if r["tool"] == tool])
        with np.errstate(all="ignore"):
            data[tool] = {"t": grid, "median": np.nanmedian(curves, axis=0),
                          "low": np.nanmin(curves, axis=0), "high": np.nanmax(curves, axis=0)}
    return data


def anytime_plots(runs: list[dict], out: Path, stamp: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt

    paths = []
    for workload in dict.fromkeys(r["workload"] for r in runs):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for tool, d in anytime_data(runs, workload).items():
                (line,) = ax.plot(d["t"], d["median"], label=tool, drawstyle="steps-post", marker="o",
                                  markersize=2, markevery=max(1, len(d["t"]) // 40))
                ax.fill_between(d["t"], d["low"], d["high"], alpha=0.2, color=line.get_color())
        ax.set_xlabel("wall-clock seconds")
        ax.set_ylabel("best validation accuracy")
        ax.set_title(f"{workload}: median and range over seeds")
        finals = [r["best_val"] for r in runs if r["workload"] == workload and r["best_val"]]
        if finals:
            ax.set_ylim(max(0.0, min(finals) - 0.15), min(1.0, max(finals) + 0.03))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = out / f"{stamp}-{workload}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
