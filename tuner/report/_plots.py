"""The report's figures, drawn with matplotlib (Agg) and saved as PNG."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from tuner.config import TrainConfig  # noqa: E402
from tuner.optim import lr_factors  # noqa: E402
from tuner.report._analysis import Importance, complete_trials, per_optimizer_best  # noqa: E402
from tuner.study._record import Key, direction_of, primary

__all__ = ["draw_all", "PLOTS"]

DPI = 110


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _metric_label(metric: str) -> str:
    return f"validation {metric}"


def _maximize(study: optuna.Study) -> bool:
    return direction_of(study) == "maximize"


def history(study: optuna.Study, metric: str, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = primary if len(study.directions) > 1 else None  # the metric of a study with several objectives
        ax = optuna.visualization.matplotlib.plot_optimization_history(study, target=target,
                                                                       target_name=_metric_label(metric))
    fig = ax.figure
    fig.set_size_inches(7, 4)
    ax.set_title("Optimization history (complete trials)")
    return _save(fig, path)


def importance_bars(imps: list[Importance], path: Path, evaluator: str) -> Path:
    shown = imps[:15][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
    labels = [i.name + (" *" if i.conditional else "") for i in shown]
    ax.barh(labels, [i.importance for i in shown], color=["#d95f02" if i.conditional else "#1b9e77" for i in shown])
    for y, i in enumerate(shown):
        ax.text(i.importance, y, f" {i.importance:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance ({evaluator}; shares sum to 1)")
    ax.set_title("Hyperparameter importance (* = only in some trials)")
    ax.set_xlim(0, max(i.importance for i in shown) * 1.2 + 1e-9)
    return _save(fig, path)


Members = dict[str, list[str]]


def _value(t: FrozenTrial, name: str, members: Members) -> Any:
    """A trial's value of ``name``, or of the per-branch parameter merged into it; None when absent."""
    for m in members.get(name) or [name]:
        if m in t.params:
            return t.params[m]
    return None


def _dists(trials: list[FrozenTrial], name: str, members: Members) -> list[Any]:
    names = members.get(name) or [name]
    return [t.distributions[m] for t in trials for m in names if m in t.distributions]


def _encoded(trials: list[FrozenTrial], names: list[str], members: Members
             ) -> tuple[np.ndarray, list[list[str] | None], list[bool]]:
    """Each parameter on [0, 1] (log scale where the distribution is), categorical as evenly spaced codes."""
    cols, cats, logs = [], [], []
    for name in names:
        dists = _dists(trials, name, members)
        dist = dists[0]
        raw = [_value(t, name, members) for t in trials]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            choices = [str(c) for c in dist.choices]
            vals = [choices.index(str(v)) / max(1, len(choices) - 1) if v is not None else np.nan for v in raw]
            cats.append(choices)
            logs.append(False)
        else:
            log = bool(dist.log)
            lo = min(d.low for d in dists)
            hi = max(d.high for d in dists)
            f = math.log if log else float
            span = (f(hi) - f(lo)) or 1.0
            vals = [(f(v) - f(lo)) / span if v is not None else np.nan for v in raw]
            cats.append(None)
            logs.append(log)
        cols.append(vals)
    return np.array(cols, dtype=float).T, cats, logs


def parallel_coordinates(study: optuna.Study, names: list[str], members: Members, metric: str, path: Path) -> Path:
    trials = complete_trials(study)[::-1]  # best drawn last, on top
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4.5))
    data, cats, _ = _encoded(trials, names, members)
    values = np.array([primary(t) for t in trials])
    norm = plt.Normalize(values.min(), values.max()) if len(values) else None
    cmap = plt.get_cmap("viridis" if _maximize(study) else "viridis_r")
    xs = np.arange(len(names))
    for row, v in zip(data, values, strict=True):
        ok = ~np.isnan(row)
        ax.plot(xs[ok], row[ok], color=cmap(norm(v)), alpha=0.6, lw=1)
    for x, choices in enumerate(cats):
        ax.axvline(x, color="0.7", lw=0.8)
        if choices:
            for i, c in enumerate(choices):
                ax.text(x + 0.03, i / max(1, len(choices) - 1), c, fontsize=7, va="center")
    ax.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_title("Parallel coordinates of complete trials (colour: " + _metric_label(metric) + ")")
    if norm is not None:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_metric_label(metric))
    return _save(fig, path)


def slices(study: optuna.Study, names: list[str], members: Members, metric: str, path: Path) -> Path:
    trials = complete_trials(study)
    n = len(names)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    optimizers = sorted({t.params.get("optimizer", "") for t in trials})
    colors = {o: plt.get_cmap("tab10")(i % 10) for i, o in enumerate(optimizers)}
    for ax, name in zip(axes.flat, names, strict=False):
        pts = [(v, primary(t), t.params.get("optimizer", "")) for t in trials
               if (v := _value(t, name, members)) is not None]
        dist = _dists(trials, name, members)[0]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(pts))
            xs = [labels.index(str(p[0])) + j for p, j in zip(pts, jitter, strict=True)]
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
        else:
            xs = [p[0] for p in pts]
            if dist.log:
                ax.set_xscale("log")
        ax.scatter(xs, [p[1] for p in pts], c=[colors[p[2]] for p in pts], s=14, alpha=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(_metric_label(metric), fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if len(optimizers) > 1:
        handles = [plt.Line2D([], [], marker="o", ls="", color=colors[o], label=o) for o in optimizers]
        fig.legend(handles=handles, loc="upper right", fontsize=7, title="optimizer")
    fig.suptitle("Slices: validation metric against each parameter (complete trials)")
    return _save(fig, path)


def lr_batch_contour(study: optuna.Study, metric: str, path: Path) -> Path:
    """Learning rate (every optimizer's) against batch size, coloured by the validation metric."""
    pts = []
    for t in complete_trials(study):
        config = t.user_attrs.get(Key.CONFIG) or {}
        lr, bs = (config.get("optimizer") or {}).get("lr"), config.get("batch_size")
        if lr and bs:
            pts.append((float(lr), float(bs), primary(t), config["optimizer"]["name"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("viridis" if _maximize(study) else "viridis_r")
    if pts:
        x = np.log10([p[0] for p in pts])
        y = np.log2([p[1] for p in pts])
        z = np.array([p[2] for p in pts])
        if len({(a, b) for a, b in zip(x, y, strict=True)}) >= 4 and np.ptp(x) > 0 and np.ptp(y) > 0:
            try:
                cont = ax.tricontourf(x, y, z, levels=12, cmap=cmap, alpha=0.55)
                fig.colorbar(cont, ax=ax, label=_metric_label(metric))
            except (ValueError, RuntimeError):  # degenerate triangulation: the points alone
                pass
        markers = {o: m for o, m in zip(sorted({p[3] for p in pts}), "osD^v<>px*", strict=False)}
        for o, m in markers.items():
            sel = [i for i, p in enumerate(pts) if p[3] == o]
            ax.scatter(x[sel], y[sel], c=z[sel], cmap=cmap, marker=m, edgecolors="k", s=30, label=o,
                       vmin=z.min(), vmax=z.max())
        ax.legend(fontsize=7, title="optimizer")
        yt = sorted(set(y))
        ax.set_yticks(yt, [str(int(2 ** v)) for v in yt])
    ax.set_xlabel("learning rate (log10)")
    ax.set_ylabel("batch size")
    ax.set_title("Learning rate x batch size (complete trials)")
    return _save(fig, path)


def learning_curves(study: optuna.Study, metric: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = complete_trials(study)[:1]
    styles = {TrialState.COMPLETE: ("#1b9e77", 0.5), TrialState.PRUNED: ("#d95f02", 0.45),
              TrialState.FAIL: ("#7570b3", 0.45)}
    seen = set()
    for t in study.get_trials(deepcopy=False):
        hist = t.user_attrs.get(Key.VAL_HISTORY) or [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        if not hist or t.state not in styles:
            continue
        hist = [float(v) for v in hist]
        color, alpha = styles[t.state]
        label = t.state.name.lower() if t.state not in seen else None
        seen.add(t.state)
        epochs = np.arange(1, len(hist) + 1)
        ax.plot(epochs, hist, color=color, alpha=alpha, lw=1, label=label)
        if t.state != TrialState.COMPLETE:
            ax.plot(epochs[-1], hist[-1], marker="x", color=color, ms=5, alpha=0.8)
    for t in best:
        hist = t.user_attrs.get(Key.VAL_HISTORY) or [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        if hist:
            ax.plot(np.arange(1, len(hist) + 1), hist, color="k", lw=2, label=f"best (trial {t.number})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(_metric_label(metric))
    ax.set_title("Learning curves (x: pruned or stopped early)")
    if seen:
        ax.legend(fontsize=8)
    return _save(fig, path)


def optimizer_comparison(study: optuna.Study, metric: str, path: Path) -> Path:
    trials = complete_trials(study)
    bests = per_optimizer_best(study)
    names = list(bests)
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 4))
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        vals = [primary(t) for t in trials
                if (t.user_attrs.get(Key.CONFIG) or {}).get("optimizer", {}).get("name") == name]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, s=12, alpha=0.5, color="0.4")
        ax.scatter([i], [primary(bests[name])], marker="*", s=180, color="#d95f02", zorder=3)
        ax.text(i, primary(bests[name]), f"  {primary(bests[name]):.4g}\n  n={len(vals)}", fontsize=7, va="bottom")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(_metric_label(metric))
    ax.set_title("Per optimizer: every complete trial, and the best (star)")
    return _save(fig, path)


def lr_schedule(config: TrainConfig, steps_per_epoch: int, path: Path) -> Path:
    factors = lr_factors(config.schedule.name, config.schedule.params, epochs=config.epochs,
                         steps_per_epoch=steps_per_epoch)
    lrs = np.array(factors) * config.optimizer.lr
    epochs = np.arange(len(lrs)) / max(1, steps_per_epoch)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(epochs, lrs, color="#1b9e77")
    ax.set_xlabel(f"epoch ({steps_per_epoch} batches each)")
    ax.set_ylabel("learning rate")
    title = f"Learning rate of the recommended config: {config.optimizer.name}, {config.schedule.name}"
    if config.schedule.interval == "epoch":
        title += " (reduced when validation stalls; shown flat)"
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def pareto(study: optuna.Study, metric: str, path: Path) -> Path | None:
    """A study with several objectives: every complete trial by its metric and its cost, the Pareto front
    joined as a step line, the knee (the recommendation) starred."""
    from tuner.study._record import knee, objectives_of, pareto_front

    if len(study.directions) != 2:
        return None
    trials = [t for t in complete_trials(study) if t.values and len(t.values) == 2]
    front = sorted(pareto_front(study), key=lambda t: t.values[1])
    point = knee(study)
    names = objectives_of(study)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([t.values[1] for t in trials], [t.values[0] for t in trials], s=14, color="0.6", alpha=0.6,
               label="complete trials")
    ax.step([t.values[1] for t in front], [t.values[0] for t in front], where="post", color="#1b9e77", lw=1.5)
    ax.scatter([t.values[1] for t in front], [t.values[0] for t in front], s=28, color="#1b9e77",
               label=f"Pareto front ({len(front)})", zorder=3)
    for t in front:
        ax.annotate(f" {t.number}", (t.values[1], t.values[0]), fontsize=7)
    if point is not None:
        ax.scatter([point.values[1]], [point.values[0]], marker="*", s=240, color="#d95f02", zorder=4,
                   label=f"knee: trial {point.number} (recommended)")
    ax.set_xlabel(names[1].replace("_", " ") + (" (log scale)" if _spread(trials) else ""))
    if _spread(trials):
        ax.set_xscale("log")
    ax.set_ylabel(_metric_label(metric))
    ax.set_title(f"{names[0]} against {names[1]}", fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _spread(trials: list[FrozenTrial]) -> bool:
    costs = [t.values[1] for t in trials if t.values[1] > 0]
    return bool(costs) and max(costs) / min(costs) > 20


PLOTS: dict[str, str] = {
    "pareto": "Pareto front",
    "history": "Optimization history",
    "importance": "Hyperparameter importance",
    "parallel": "Parallel coordinates",
    "slices": "Slice plots",
    "lr_batch": "Learning rate x batch size",
    "curves": "Learning curves",
    "optimizers": "Per-optimizer comparison",
    "schedule": "Learning-rate schedule of the recommended config",
}


def draw_all(study: optuna.Study, out_dir: Path, metric: str, imps: list[Importance], evaluator: str,
             config: TrainConfig | None, steps_per_epoch: int) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure that the study's trials allow; returns the files and, for figures not drawn, why."""
    params = [i.name for i in imps if i.importance > 0][:8]
    members = {i.name: i.merged_from for i in imps if i.merged_from}
    jobs: dict[str, Callable[[Path], Any]] = {
        "pareto": lambda p: pareto(study, metric, p),
        "history": lambda p: history(study, metric, p),
        "importance": lambda p: importance_bars(imps, p, evaluator) if imps else None,
        "parallel": lambda p: parallel_coordinates(study, params, members, metric, p) if len(params) >= 2 else None,
        "slices": lambda p: slices(study, params, members, metric, p) if params else None,
        "lr_batch": lambda p: lr_batch_contour(study, metric, p),
        "curves": lambda p: learning_curves(study, metric, p),
        "optimizers": lambda p: optimizer_comparison(study, metric, p),
        "schedule": lambda p: lr_schedule(config, steps_per_epoch, p) if config is not None else None,
    }
    files, skipped = {}, {}
    for key, job in jobs.items():
        path = out_dir / f"{key}.png"
        try:
            if job(path) is None:
                if key != "pareto" or len(study.directions) > 1:  # a single objective has no front to draw
                    skipped[key] = "not enough varied trials"
                continue
        except Exception as exc:  # one figure that cannot be drawn must not cost the report
            plt.close("all")
            skipped[key] = f"{type(exc).__name__}: {exc}"
            continue
        files[key] = path
    return files, skipped

