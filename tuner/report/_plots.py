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

from tuner._report_files import PLOTS  # noqa: E402
from tuner.config import TrainConfig  # noqa: E402
from tuner.errors import count  # noqa: E402
from tuner.optim import lr_factors  # noqa: E402
from tuner.report._analysis import Importance, complete_trials, optimizer_of, per_optimizer_best  # noqa: E402
from tuner.study._record import Key, StudyKey, direction_of, primary

__all__ = ["draw_all", "PLOTS"]

DPI = 110


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _wrapped(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize`` (an average glyph is about 0.55 em
    wide), so that no title runs out of its figure."""
    import textwrap

    chars = max(20, int(width_inches * 72 / (fontsize * 0.55)))
    return "\n".join(textwrap.wrap(text, chars))


def _title(ax: plt.Axes, text: str, fontsize: float = 11) -> None:
    width = ax.figure.get_figwidth() * ax.get_position().width
    ax.set_title(_wrapped(text, width, fontsize), fontsize=fontsize)


def _log_ticks(axis: Any, low: float, high: float, n: int = 4) -> None:
    """A log axis over [low, high] with ``n`` readable labels and no minor labels (matplotlib labels minor ticks
    when a range spans less than a decade, and they overlap)."""
    from matplotlib.ticker import NullFormatter

    # Round values (1, 2 and 5 times a power of ten) inside the range, rather than its padded ends (6.7e-06).
    round_values = [m * 10.0 ** k for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
                    for m in (1, 2, 5) if low <= m * 10.0 ** k <= high]
    if len(round_values) >= 2:
        picks = sorted(set(np.linspace(0, len(round_values) - 1, min(n, len(round_values))).round().astype(int)))
        ticks = [round_values[i] for i in picks]
    else:
        ticks = list(np.geomspace(low, high, n))
    axis.set_ticks(ticks, [f"{v:.2g}" for v in ticks])
    axis.set_minor_formatter(NullFormatter())


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
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers: no 0.5 or -0.04
    low, high = ax.get_xlim()
    if high - low < 2:  # one trial: the locator would fall back to fractions around it
        ax.set_xticks([n for n in range(math.ceil(low), math.floor(high) + 1)])
    if ax.get_legend() is not None:  # Optuna's runs off the picture's right with a long metric name; inside the
        # axes it covers trials: below them, in a row
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8, frameon=False)
    _title(ax, "Optimization history (complete trials)")
    return _save(fig, path)


def importance_bars(imps: list[Importance], path: Path, evaluator: str) -> Path:
    shown = imps[:15][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
    labels = [i.name + (" *" if i.conditional else "") for i in shown]
    ax.barh(labels, [i.importance for i in shown], color=["#d95f02" if i.conditional else "#1b9e77" for i in shown])
    for y, i in enumerate(shown):
        ax.text(i.importance, y, f" {i.importance:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance ({evaluator}; shares sum to 1)")
    fig.tight_layout()
    _title(ax, "Hyperparameter importance (* = only in some trials)")
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
        # A trial has no value on another optimizer's axes: its line breaks there (NaN), rather than crossing
        # them as if it had one; a dot marks each value it has, one between two gaps included.
        ax.plot(xs, row, color=cmap(norm(v)), alpha=0.6, lw=1, marker="o", ms=2.5)
    box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}
    for x, (name, choices) in enumerate(zip(names, cats, strict=True)):
        ax.axvline(x, color="0.7", lw=0.8)
        if choices:
            for i, c in enumerate(choices):
                ax.text(x + 0.03, i / max(1, len(choices) - 1), c, fontsize=7, va="center", bbox=box)
            continue
        # The values at the bottom, middle and top of a numeric axis (the middle of a log axis is geometric).
        for pos, value in zip((0.0, 0.5, 1.0), _axis_values(trials, name, members), strict=True):
            ax.text(x + 0.03, pos, f"{value:.3g}", fontsize=7, va="center", bbox=box)
    # Names broken after their optimizer (adam.\none_minus_beta1) and set level, so that neighbours never overlap.
    ax.set_xticks(xs, [n.replace(".", ".\n") + ("\n(log)" if log else "")
                       for n, log in zip(names, _encoded(trials, names, members)[2], strict=True)], fontsize=7)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    if norm is not None:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_metric_label(metric))
    fig.tight_layout()
    gaps = " a line breaks at an axis its trial has no value on (another optimizer's);" \
        if np.isnan(data).any() else ""
    _title(ax, "Parallel coordinates of complete trials (colour: " + _metric_label(metric) + ";" + gaps +
               " each axis labelled with its lowest, middle and highest value)")
    return _save(fig, path)


def _axis_values(trials: list[FrozenTrial], name: str, members: Members) -> tuple[float, float, float]:
    """The values at the bottom, middle and top of a numeric axis of ``_encoded``."""
    dists = _dists(trials, name, members)
    lo, hi = min(d.low for d in dists), max(d.high for d in dists)
    mid = math.sqrt(lo * hi) if dists[0].log else (lo + hi) / 2
    return lo, mid, hi


def slices(study: optuna.Study, names: list[str], members: Members, metric: str, path: Path) -> Path:
    trials = complete_trials(study)
    n = len(names)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    optimizers = sorted({t.params.get("optimizer", "") for t in trials})
    colors = {o: plt.get_cmap("tab10")(i % 10) for i, o in enumerate(optimizers)}
    # lr_scaling: the space's rates are at its reference batch size, not the rates trained
    from tuner.study._describe import stored_space

    space = stored_space(study.user_attrs.get(StudyKey.SPACE))
    reference = space.lr_scaling.reference_batch if space is not None and space.lr_scaling is not None else None
    for ax, name in zip(axes.flat, names, strict=False):
        pts = [(v, primary(t), t.params.get("optimizer", "")) for t in trials
               if (v := _value(t, name, members)) is not None]
        dist = _dists(trials, name, members)[0]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(pts))
            xs = [labels.index(str(p[0])) + j for p, j in zip(pts, jitter, strict=True)]
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            xs = [p[0] for p in pts]
            dists = _dists(trials, name, members)
            low, high = min(d.low for d in dists), max(d.high for d in dists)
            if dist.log:  # the whole searched range, so that a best value at its end shows as such
                ax.set_xscale("log")
                _log_ticks(ax.xaxis, low, high)
                ax.set_xlim(low / (high / low) ** 0.04, high * (high / low) ** 0.04)
            else:
                pad = (high - low) * 0.04 or 0.5
                ax.set_xlim(low - pad, high + pad)
            ax.tick_params(axis="x", labelsize=7)
        ax.scatter(xs, [p[1] for p in pts], c=[colors[p[2]] for p in pts], s=14, alpha=0.8)
        scaled = reference and name.endswith(".lr") and space.lr_scaling.exponent(name.split(".")[0]) != 0
        ax.set_title(name + (f"\n(normalised to batch {reference})" if scaled else ""), fontsize=9)
        ax.set_ylabel(_metric_label(metric), fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(_wrapped("Slices: validation metric against each parameter over its searched range (complete "
                          "trials)", fig.get_figwidth(), 12), fontsize=12)
    if len(optimizers) > 1:
        handles = [plt.Line2D([], [], marker="o", ls="", color=colors[o], label=o) for o in optimizers]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(optimizers)), fontsize=8,
                   title="optimizer", bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def lr_batch_contour(study: optuna.Study, metric: str, path: Path) -> Path | None:
    """The validation metric against the learning rate (every optimizer's), one panel per batch size: points
    only, nothing interpolated between batch sizes that were never tried."""
    pts = []
    for t in complete_trials(study):
        config = t.user_attrs.get(Key.CONFIG) or {}
        lr, bs = (config.get("optimizer") or {}).get("lr"), config.get("batch_size")
        if lr and bs:
            pts.append((float(lr), int(bs), primary(t), config["optimizer"]["name"]))
    if not pts:
        return None
    groups = _batch_groups(sorted({p[1] for p in pts}))
    fig, axes = plt.subplots(1, len(groups), figsize=(min(12, 2.4 + 2.9 * len(groups)), 4), sharey=True,
                             squeeze=False)
    optimizers = sorted({p[3] for p in pts})
    colors = {o: plt.get_cmap("tab10")(i % 10) for i, o in enumerate(optimizers)}
    markers = dict(zip(optimizers, "osD^v<>px*" * 3, strict=False))
    lrs = [p[0] for p in pts]
    low, high = min(lrs) / 1.5, max(lrs) * 1.5
    for ax, (label, sizes) in zip(axes[0], groups, strict=True):
        for o in optimizers:
            sel = [p for p in pts if p[3] == o and p[1] in sizes]
            ax.scatter([p[0] for p in sel], [p[2] for p in sel], color=colors[o], marker=markers[o], s=28,
                       edgecolors="k", linewidths=0.4, alpha=0.85)
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, low, high, 3)
        ax.set_xlim(low, high)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"batch size {label} ({sum(p[1] in sizes for p in pts)})", fontsize=9)
        ax.set_xlabel("learning rate", fontsize=8)
    axes[0][0].set_ylabel(_metric_label(metric))
    handles = [plt.Line2D([], [], marker=markers[o], ls="", color=colors[o], markeredgecolor="k", label=o)
               for o in optimizers]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(optimizers)), fontsize=8, title="optimizer")
    fig.suptitle(_wrapped("Validation metric against learning rate, one panel per batch size (complete trials)",
                          fig.get_figwidth(), 12), fontsize=12)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _batch_groups(sizes: list[int], most: int = 5) -> list[tuple[str, set[int]]]:
    """One panel per batch size, or, for more than ``most`` sizes (a range of integers), ``most`` panels of
    neighbouring sizes."""
    if len(sizes) <= most:
        return [(str(b), {b}) for b in sizes]
    chunks = np.array_split(np.array(sizes), most)
    return [(f"{c[0]}-{c[-1]}" if len(c) > 1 else str(c[0]), set(map(int, c))) for c in chunks if len(c)]


def learning_curves(study: optuna.Study, metric: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    from tuner.study._record import handed_over

    point = handed_over(study)
    best = [point] if point is not None else []
    what = "knee of the Pareto front" if len(study.directions) > 1 else "best"
    styles = {TrialState.COMPLETE: ("#1b9e77", 0.5), TrialState.PRUNED: ("#d95f02", 0.45),
              TrialState.FAIL: ("#7570b3", 0.45)}
    seen = set()
    unseen = 0  # trials whose every value is NaN (diverged in their first epoch): nothing to draw
    for t in study.get_trials(deepcopy=False):
        hist = t.user_attrs.get(Key.VAL_HISTORY) or [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        if t.state not in styles or not hist and not t.user_attrs.get(Key.DIVERGED):
            continue
        hist = [float(v) for v in hist]
        finite = [i for i, v in enumerate(hist) if math.isfinite(v)]
        if not finite:  # every value NaN, or none (its training loss diverged before a first validation)
            unseen += 1
            continue
        color, alpha = styles[t.state]
        label = t.state.name.lower() if t.state not in seen else None
        seen.add(t.state)
        epochs = np.arange(1, len(hist) + 1)
        ax.plot(epochs, hist, color=color, alpha=alpha, lw=1, label=label)
        if t.state != TrialState.COMPLETE:  # where it stopped: its last value that can be drawn
            ax.plot(epochs[finite[-1]], hist[finite[-1]], marker="x", color=color, ms=5, alpha=0.8)
    for t in best:
        hist = t.user_attrs.get(Key.VAL_HISTORY) or [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        if hist:
            ax.plot(np.arange(1, len(hist) + 1), hist, color="k", lw=2, label=f"{what} (trial {t.number})")
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_metric_label(metric))
    gone = f"; {count(unseen, 'trial')} with no finite value (diverged at once) not drawn" if unseen else ""
    _title(ax, f"Learning curves (x: pruned or stopped early{gone})")
    if seen:  # below the axes, in a row: inside them it covered curves
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    return _save(fig, path)


def optimizer_comparison(study: optuna.Study, metric: str, path: Path, recommended: int | None = None) -> Path:
    """Every complete trial per optimizer and its best (a star), the recommended trial ringed where it is not
    a star (a confirmation or a Pareto front's knee chose another); an optimizer whose trials were all pruned
    or failed keeps its place, with how they ended."""
    from tuner.report._analysis import optimizers_without_complete

    trials = complete_trials(study)
    bests = per_optimizer_best(study)
    missing = optimizers_without_complete(study)
    names = list(bests) + list(missing)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(names) + 2), 4))
    rng = np.random.default_rng(0)
    values = [primary(t) for t in trials]
    floor = min(values) if values else 0.0
    for i, name in enumerate(names):
        if name in missing:
            ax.text(i, floor, f"no complete\ntrial:\n{missing[name].replace(', ', chr(10))}", ha="center",
                    va="bottom", fontsize=7, color="#7570b3")
            continue
        vals = [primary(t) for t in trials if optimizer_of(t) == name]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, s=12, alpha=0.5, color="0.4")
        ax.scatter([i], [primary(bests[name])], marker="*", s=180, color="#d95f02", zorder=3)
        ax.text(i + 0.08, primary(bests[name]), f"{primary(bests[name]):.4g}\nn={len(vals)}", fontsize=7,
                va="bottom")
    chosen = next((t for t in trials if t.number == recommended), None)
    chosen_at = optimizer_of(chosen) if chosen is not None else None
    if chosen is not None and chosen_at in bests and bests[chosen_at].number != chosen.number:
        ax.scatter([names.index(chosen_at)], [primary(chosen)], s=160, facecolors="none", edgecolors="#1b9e77",
                   linewidths=2, zorder=4, label=f"recommended (trial {chosen.number})")
        ax.legend(fontsize=8, loc="best")
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.margins(y=0.15)  # room for the labels of the best
    ax.set_ylabel(_metric_label(metric))
    fig.tight_layout()
    _title(ax, "Per optimizer: every complete trial, and the best (star)")
    return _save(fig, path)


def lr_schedule(config: TrainConfig, steps_per_epoch: int, path: Path, assumed: bool = False) -> Path:
    factors = lr_factors(config.schedule.name, config.schedule.params, epochs=config.epochs,
                         steps_per_epoch=steps_per_epoch)
    lrs = np.array(factors) * config.optimizer.lr
    epochs = np.arange(len(lrs)) / max(1, steps_per_epoch)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(epochs, lrs, color="#1b9e77")
    ax.set_xlabel(f"epoch ({'assuming ' if assumed else ''}{steps_per_epoch} batches each)")
    ax.set_ylabel("learning rate")
    title = f"Learning rate of the recommended config: {config.optimizer.name}, {config.schedule.name}"
    if config.schedule.interval == "epoch":
        title += " (reduced when validation stalls; shown flat)"
    _title(ax, title, 9)
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
    twins: dict[tuple[float, ...], list[int]] = {}  # trials at the same point: one label, "2, 3"
    for t in front:
        twins.setdefault(tuple(t.values), []).append(t.number)
    for (metric_value, cost), numbers in twins.items():
        # Beside the point, not on it: the knee's star would hide its number.
        ax.annotate(", ".join(map(str, numbers)), (cost, metric_value), xytext=(7, 5), textcoords="offset points",
                    fontsize=7)
    if point is not None:
        ax.scatter([point.values[1]], [point.values[0]], marker="*", s=240, color="#d95f02", zorder=4,
                   label=f"knee: trial {point.number} (recommended)")
    ax.set_xlabel(names[1].replace("_", " ") + (" (log scale)" if _spread(trials) else ""))
    if _spread(trials):
        ax.set_xscale("log")
    ax.set_ylabel(_metric_label(metric))
    ax.set_title(f"{names[0]} against {names[1]}", fontsize=11)
    ax.legend(fontsize=8, loc="best")  # where it covers the fewest points (dominated ones often sit lower right)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _spread(trials: list[FrozenTrial]) -> bool:
    costs = [t.values[1] for t in trials if t.values[1] > 0]
    return bool(costs) and max(costs) / min(costs) > 20


def draw_all(study: optuna.Study, out_dir: Path, metric: str, imps: list[Importance], evaluator: str,
             config: TrainConfig | None, steps_per_epoch: int, assumed: bool = False, recommended: int | None = None
             ) -> tuple[dict[str, Path], dict[str, str]]:
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
        "optimizers": lambda p: optimizer_comparison(study, metric, p, recommended),
        "schedule": lambda p: lr_schedule(config, steps_per_epoch, p, assumed) if config is not None else None,
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

