"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"; fastai's
``lr_find``): train one model for a few hundred batches while the learning rate grows exponentially, record the
training loss, and read off the range of rates over which the loss falls fastest and still falls.

Every optimizer of a space is swept on its own, from the space's centre (its other hyperparameters at the middle
of their ranges, a constant rate, no weight decay). The suggested *range* runs from where the loss has started to
fall (or the steepest fall, whichever is lower) up to the last rate before the smoothed loss climbs back above
its starting value (where its fall is done, where it never climbs back), and spans ``MIN_DECADES`` to
``MAX_DECADES`` with the steepest fall inside: it is meant as the bounds of a search, not as one rate to train
with.

Example:
    >>> result = lr_find("mnist1d-cnn", optimizers=["adamw", "nesterov"])
    >>> result.curves["adamw"].low, result.curves["adamw"].high
    >>> calibrated = calibrate_space("default", result)          # a space mapping with those lr bounds
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuner._setup import TrainingSetup
from tuner.config import TrainConfig
from tuner.errors import ConfigError
from tuner.objectives import Objective, load_objective
from tuner.optim import get_optimizer
from tuner.spaces import SearchSpace, load_space
from tuner.train import Trainer

__all__ = ["LRCurve", "LRFindResult", "lr_find", "calibrate_space", "calibrated_yaml", "plot_lr_find"]

START_LR = 1e-7
END_LR = 10.0
STEPS_PER_DECADE = 20
STOP_FACTOR = 4.0       # the sweep stops when the running loss exceeds this multiple of its lowest value
MIN_DROP = 0.05         # a fall of the smoothed loss below this fraction of its start is no fall
DESCENT = 0.1           # the range starts where this fraction of the whole fall is done ...
DONE = 0.05             # ... and, where the loss never climbs back, ends where all but this fraction is done, ...
MIN_DECADES = 1.0       # ... and spans at least this many decades ...
MAX_DECADES = 3.0       # ... and at most this many (a multiplier's range widened to its default may span more)
WARM_STEPS = 10         # steps before the stop rule applies


@dataclass
class LRCurve:
    """One optimizer's sweep and what it suggests.

    Attributes:
        optimizer: registry name.
        lrs, losses: the rates swept and the training loss at each (the median over repeats).
        smoothed: the losses smoothed over ``STEPS_PER_DECADE // 2`` neighbouring rates, centred (no lag).
        low, high: the suggested range of learning rates; ``None`` when the loss did not fall (``note`` says).
            ``high`` is the last rate before the smoothed loss climbs back above its start (where it never
            does, the rate where its fall is done).
        minimum: the rate where the smoothed loss is lowest; steepest: where it falls fastest.
        stop: why the sweep ended; seconds: how long it took (all repeats).
    """

    optimizer: str
    lrs: list[float]
    losses: list[float]
    smoothed: list[float] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    minimum: float | None = None
    steepest: float | None = None
    stop: str = ""
    note: str = ""
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.low is not None and self.high is not None

    def line(self) -> str:
        """``adamw: lr 3.2e-04 .. 1.0e-02 (steepest 1.2e-03, lowest loss at 1.0e-02; 141 steps, 0.6 s)``"""
        done = f"{len(self.lrs)} steps, {self.seconds:.1f} s"
        if not self.found:
            return f"{self.optimizer}: no range ({self.note}; {done})"
        return (f"{self.optimizer}: lr {self.low:.2g} .. {self.high:.2g} (steepest fall at {self.steepest:.2g}, "
                f"lowest loss at {self.minimum:.2g}; {done})")

    def lines(self) -> list[str]:
        """``line()``, then the note on a found range (a missing range's note is in its line)."""
        return [self.line()] + ([f"  note: {self.note}"] if self.note and self.found else [])

    def to_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "low": self.low, "high": self.high, "minimum": self.minimum,
                "steepest": self.steepest, "stop": self.stop, "note": self.note, "seconds": round(self.seconds, 3),
                "config": self.config, "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed}


@dataclass
class LRFindResult:
    """The sweeps of one objective: one ``LRCurve`` per optimizer."""

    objective: str
    batch_size: int
    device: str
    curves: dict[str, LRCurve]
    start_lr: float = START_LR
    end_lr: float = END_LR
    repeats: int = 1
    #: what the test changed to run, for people: a batch size that ran out of memory and the one it ran at
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.curves.values())

    def summary(self) -> dict[str, Any]:
        """What a study keeps of the test: the suggested ranges, without the curves."""
        return {"objective": self.objective, "batch_size": self.batch_size, "device": self.device,
                "repeats": self.repeats, "seconds": round(self.seconds, 3), "notes": list(self.notes),
                "ranges": {k: {"low": c.low, "high": c.high, "minimum": c.minimum, "steepest": c.steepest,
                               "note": c.note, "line": c.line()} for k, c in self.curves.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "batch_size": self.batch_size, "device": self.device,
                "start_lr": self.start_lr, "end_lr": self.end_lr, "repeats": self.repeats,
                "seconds": round(self.seconds, 3), "curves": {k: c.to_dict() for k, c in self.curves.items()}}


def lr_find(objective: str | Objective, optimizers: str | list[str] | None = None, *, space: str | SearchSpace |
            dict[str, Any] = "default", batch_size: int | None = None, start_lr: float = START_LR,
            end_lr: float = END_LR, steps: int | None = None, repeats: int = 3, device: str = "auto",
            seed: int = 0, trainer: Trainer | None = None, objective_options: dict[str, Any] | None = None,
            ) -> LRFindResult:
    """Runs the LR range test on ``objective`` for each optimizer (default: every optimizer of ``space``).

    Args:
        objective: a built-in name, ``path/file.py:attr``, ``module:attr`` or an ``Objective``.
        optimizers: registry names; an optimizer the space does not hold is swept from its registry defaults.
        space: where the optimizers' other hyperparameters and the batch size come from (their centres).
        batch_size: overrides the space's middle batch size (a learning rate suits one batch size).
        start_lr, end_lr: the sweep's first and last rates; steps: how many batches (default
            ``STEPS_PER_DECADE`` per decade); repeats: sweeps with different seeds, whose losses' median counts.
        trainer: a ``Trainer`` for the objective whose data is already loaded.
    """
    if not (isinstance(start_lr, (int, float)) and isinstance(end_lr, (int, float))
            and 0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ConfigError(f"lr_find needs 0 < start_lr < end_lr. Got start_lr={start_lr!r}, end_lr={end_lr!r}.")
    decades = math.log10(end_lr / start_lr)
    steps = steps if steps is not None else max(20, round(STEPS_PER_DECADE * decades))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 20:
        raise ConfigError(f"lr_find needs at least 20 steps. Got steps={steps!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be a whole number >= 1. Got {repeats!r}.")
    the_space = space if isinstance(space, SearchSpace) else load_space(space)
    if isinstance(optimizers, str):  # one name, not its letters
        optimizers = [optimizers]
    names = list(optimizers) if optimizers else list(the_space.optimizer)
    for name in names:
        get_optimizer(name)  # an unknown name is refused with the valid ones
    if trainer is None:
        obj = objective if isinstance(objective, Objective) else load_objective(objective, **(objective_options or {}))
        trainer = Trainer(obj, device=device)
    n_train = len(trainer.data.x_train)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ConfigError(f"batch_size must be a whole number >= 1. Got {batch_size!r}.")
    lrs = list(np.geomspace(start_lr, end_lr, steps))
    notes: list[str] = []
    asked = batch_size
    while True:
        curves: dict[str, LRCurve] = {}
        used_batch = 0
        failed: _OutOfMemory | None = None
        try:
            for name in names:
                config = _config(the_space, name, batch_size, seed)
                used_batch = min(config.batch_size, n_train)
                curves[name] = _curve(trainer, config, lrs, repeats)
        except _OutOfMemory as exc:
            failed = exc
        if failed is None:
            break
        from tuner.study._engine import release_device_memory

        release_device_memory(trainer.device)  # out of the except block: what the failed sweep held is gone
        # One batch size for every optimizer (a rate suits one batch size): the whole test again, smaller.
        # The space's next batch size below, else half of it
        smaller = the_space.largest_batch_below(failed.batch_size) or (failed.batch_size // 2 or None)
        if asked is not None or smaller is None:
            how = ("a smaller --batch-size (batch_size= in Python)" if asked is not None else
                   "a space whose batch sizes fit")
            raise ConfigError(f"The LR range test of {failed.optimizer!r} on objective {trainer.objective.name!r} "
                              f"ran out of memory on {trainer.device} at batch size {failed.batch_size}: give it "
                              f"{how}.")
        notes.append(f"batch size {failed.batch_size} ran out of memory on {trainer.device}: the test ran at "
                     f"{smaller}")
        batch_size = smaller
    return LRFindResult(trainer.objective.name, used_batch, str(trainer.device), curves, float(start_lr),
                        float(end_lr), repeats, notes)


# torch.OutOfMemoryError from PyTorch 2.5 (CUDA's is a subclass); torch.cuda's alone before
_OOM_ERRORS = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _OutOfMemory(Exception):
    def __init__(self, optimizer: str, batch_size: int) -> None:
        super().__init__(optimizer, batch_size)
        self.optimizer, self.batch_size = optimizer, batch_size


def _config(space: SearchSpace, name: str, batch_size: int | None, seed: int) -> TrainConfig:
    if name in space.optimizer:
        return space.central_config(name, batch_size=batch_size, seed=seed)
    center = space.central_config(next(iter(space.optimizer)), batch_size=batch_size, seed=seed)
    data = center.to_dict()
    data["optimizer"] = {"name": name}
    return TrainConfig.from_dict(data)


def _curve(trainer: Trainer, config: TrainConfig, lrs: list[float], repeats: int) -> LRCurve:
    start = time.perf_counter()
    runs: list[list[float]] = []
    stops: list[str] = []
    for r in range(repeats):
        run_config = copy.deepcopy(config)
        run_config.seed = config.seed + r
        losses, stop = _sweep(trainer, run_config, lrs)
        runs.append(losses)
        stops.append(stop)
    length = min(len(r) for r in runs)
    losses = [float(v) for v in np.median(np.array([r[:length] for r in runs]), axis=0)] if length else []
    curve = LRCurve(config.optimizer.name, [float(v) for v in lrs[:length]], losses,
                    stop=stops[int(np.argmin([len(r) for r in runs]))], config=config.to_dict())
    _analyse(curve, reached_end=length == len(lrs))
    curve.seconds = time.perf_counter() - start
    return curve


def _sweep(trainer: Trainer, config: TrainConfig, lrs: list[float]) -> tuple[list[float], str]:
    """One sweep: a batch per rate; stops early when the loss is not finite or has grown far past its lowest."""
    data, device = trainer.data, trainer.device
    model = trainer.build_model(config).to(device)
    setup = TrainingSetup(config, model, steps_per_epoch=len(lrs), init=False, dropout=False, seed=False)
    n = len(data.x_train)
    bs = min(config.batch_size, n)
    generator = torch.Generator(device=data.x_train.device).manual_seed(config.seed)
    perm, pos = torch.randperm(n, generator=generator, device=data.x_train.device), 0
    losses: list[float] = []
    running, lowest, beta = 0.0, math.inf, 0.9
    model.train()
    for i, lr in enumerate(lrs):
        for group in setup.optimizer.param_groups:
            group["lr"] = lr
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=generator, device=data.x_train.device), 0
        idx = perm[pos:pos + bs]
        pos += bs
        try:
            xb, yb = data.x_train[idx].to(device), data.y_train[idx].to(device)
            loss = float(setup._step(lambda: trainer.loss_fn(model(xb), yb), False))  # noqa: B023
        except _OOM_ERRORS:
            # Said to lr_find, which frees the memory once this frame, and the error's traceback, are gone.
            raise _OutOfMemory(config.optimizer.name, bs) from None
        except Exception as exc:
            raise ConfigError(f"The LR range test of {config.optimizer.name!r} on objective "
                              f"{trainer.objective.name!r} failed at lr {lr:.3g}: {type(exc).__name__}: {exc}") from exc
        if not math.isfinite(loss):
            return losses, f"the loss became {loss} at lr {lr:.3g}"
        losses.append(loss)
        running = beta * running + (1 - beta) * loss
        smooth = running / (1 - beta ** (i + 1))
        lowest = min(lowest, smooth)
        if i >= WARM_STEPS and smooth > STOP_FACTOR * lowest:
            return losses, f"the loss grew past {STOP_FACTOR:g}x its lowest at lr {lr:.3g}"
    return losses, f"the sweep reached its end, lr {lrs[-1]:.3g}"


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """A centred moving average (no lag); the window shrinks at the ends."""
    half = window // 2
    cums = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    lo, hi = np.maximum(0, idx - half), np.minimum(len(values), idx + half + 1)
    return (cums[hi] - cums[lo]) / (hi - lo)


def _analyse(curve: LRCurve, reached_end: bool) -> None:
    if len(curve.losses) < WARM_STEPS:
        curve.note = f"the sweep stopped after {len(curve.losses)} steps ({curve.stop}); start lower (--start-lr)"
        return
    lrs = np.array(curve.lrs)
    s = _smooth(np.array(curve.losses), max(3, STEPS_PER_DECADE // 2 + 1))
    curve.smoothed = [float(v) for v in s]
    i_min = int(np.argmin(s))
    first = float(s[0])
    drop = first - float(s[i_min])
    if drop <= MIN_DROP * abs(first):
        curve.note = (f"the loss did not fall: from {first:.4g} to at best {s[i_min]:.4g} between lr "
                      f"{lrs[0]:.2g} and {lrs[-1]:.2g}")
        return
    log_lr = np.log10(lrs)
    slope = np.gradient(s, log_lr)
    i_steep = int(np.argmin(slope[:i_min + 1]))
    i_start = int(np.argmax(s <= first - DESCENT * drop))
    above = np.nonzero(s[i_min:] > first)[0]
    # The top: the last rate before the loss climbs back above where it started (training is then worse
    # than not training at all); a warmup and a decaying schedule often train best a little below it.
    # Where it never climbs back (a loss that falls, then stays flat to the sweep's end), the top is where the
    # fall is done (all but DONE of it; the lowest point of a flat stretch is where noise put it): nothing shows
    # that higher rates train better, and the sweep's end (--end-lr) must not move the range.
    i_top = i_min + int(above[0]) - 1 if len(above) else int(np.argmax(s <= s[i_min] + DONE * drop))
    curve.minimum, curve.steepest = float(lrs[i_min]), float(lrs[i_steep])
    high = float(lrs[i_top])
    steepest = float(lrs[i_steep])
    low = max(min(float(lrs[i_start]), steepest, high / 10 ** MIN_DECADES), high / 10 ** MAX_DECADES)
    if low > steepest:  # the range keeps the steepest fall: MAX_DECADES cuts its top instead
        low, high = steepest, steepest * 10 ** MAX_DECADES
    curve.low, curve.high = low, high
    notes = []
    if curve.low < float(lrs[0]) * (1 - 1e-9):  # a range spans MIN_DECADES at least, below the sweep's start too
        notes.append(f"the range's bottom, {curve.low:.2g}, lies below the sweep's start, {lrs[0]:.2g} (a range "
                     f"spans {MIN_DECADES:g} decade(s) at least): rates there were not tried (--start-lr)")
    if not len(above) and reached_end:
        falling = math.log10(lrs[-1] / lrs[i_top]) <= 0.5  # the fall done only within half a decade of the end
        notes.append("the loss had not climbed back by the sweep's end: the range's top is where its fall was done"
                     + ("; it was still falling there, so the top may be higher (--end-lr)" if falling else ""))
    if notes:
        curve.note = "; ".join(notes)
    _keep_default_multiplier(curve)


def _keep_default_multiplier(curve: LRCurve) -> None:
    """Adadelta's and Prodigy's ``lr`` multiplies a step size the optimizer works out as it trains, and a sweep
    grows both at once: where the range it suggests leaves out the multiplier's default (1, what their authors
    advise), the range is widened to include it, and the line says so."""
    info = get_optimizer(curve.optimizer)
    default = info.defaults.get("lr")
    if not info.lr_is_multiplier or default is None or curve.low <= default <= curve.high:
        return
    swept = f"{curve.low:.2g} .. {curve.high:.2g}"
    curve.low, curve.high = min(curve.low, default), max(curve.high, default)
    note = (f"lr multiplies the step size {curve.optimizer} works out itself, which grows during the sweep too: "
            f"the swept range {swept} is widened to its default, {default:g}")
    curve.note = f"{curve.note}; {note}" if curve.note else note


def calibrate_space(space: str | SearchSpace | dict[str, Any], result: LRFindResult) -> dict[str, Any]:
    """The space as a mapping, with each swept optimizer's ``lr`` range replaced by the suggested one (log
    scale); optimizers without a suggestion keep their range. The mapping loads with ``load_space``."""
    the_space = space if isinstance(space, SearchSpace) else load_space(space)
    raw = copy.deepcopy(the_space.raw)
    optimizers = raw.get("optimizer")
    if isinstance(optimizers, (str, list)):
        optimizers = {name: {} for name in ([optimizers] if isinstance(optimizers, str) else optimizers)}
        raw["optimizer"] = optimizers
    scaling = the_space.lr_scaling
    ranges = []
    for name, curve in result.curves.items():
        if name in optimizers and curve.found:
            # A space with lr_scaling samples the rate at its reference batch size: the test's rates (at
            # result.batch_size) are scaled back to it.
            factor = scaling.factor(name, result.batch_size) if scaling is not None else 1.0
            low, high = _round(curve.low / factor), _round(curve.high / factor)
            branch = dict(optimizers[name] or {})
            branch["lr"] = {"low": low, "high": high, "log": True}
            optimizers[name] = branch
            ranges.append(f"{name} {low:g}..{high:g}")
    ranges = ", ".join(ranges) + (f" ({scaling.describe()})" if scaling is not None and ranges else "")
    # The space's own description named the ranges it replaces: it is not kept beside the new ones.
    replaced = "".join(f" {line}." for line in replaced_rates(the_space, result))  # names as written: adamw
    raw["description"] = (f"{the_space.name}, with lr ranges from an LR range test on {result.objective} "
                          f"(batch size {result.batch_size}): {ranges or 'none found'}; the rest as in "
                          f"{the_space.name}.{replaced}")
    SearchSpace.from_dict(raw, name="calibrated", source="calibrated space")  # the result must load
    return raw


def replaced_rates(space: str | SearchSpace | dict[str, Any], result: LRFindResult) -> list[str]:
    """The learning rates a space fixed, or chose from a list, that its calibrated copy searches over a range
    (which ``calibrate_space`` does for every swept optimizer): one line each, for the user to see."""
    the_space = space if isinstance(space, SearchSpace) else load_space(space)
    optimizers = the_space.raw.get("optimizer")
    out = []
    for name, curve in result.curves.items():
        was = (optimizers.get(name) or {}).get("lr") if isinstance(optimizers, dict) else None
        if not curve.found:
            continue
        if isinstance(was, (int, float)) and not isinstance(was, bool):
            out.append(f"{name}: the space fixed lr at {was:g}; the calibrated space searches a range instead")
        elif isinstance(was, dict) and "choices" in was:
            out.append(f"{name}: the space chose lr from {was['choices']}; the calibrated space searches a range "
                       f"instead")
    return out


def searched_line(calibrated: SearchSpace, result: LRFindResult) -> str | None:
    """Where a space calibrated by ``result`` has ``lr_scaling``: the lr ranges it samples (at its reference
    batch size), which differ from the test's (at ``result.batch_size``)."""
    scaling = calibrated.lr_scaling
    if scaling is None:
        return None
    parts = []
    for name, curve in result.curves.items():
        if curve.found and name in calibrated.optimizer and scaling.factor(name, result.batch_size) != 1.0:
            lr = calibrated.optimizer[name]["lr"].distribution
            parts.append(f"{name} {lr.low:g}..{lr.high:g}")
    return f"searched as {scaling.describe()}: {', '.join(parts)}" if parts else None


def calibrated_yaml(raw: dict[str, Any], result: LRFindResult) -> str:
    """A space ``calibrate_space`` made from ``result``, as YAML text with a header saying where its lr ranges
    came from."""
    import yaml

    lines = [f"# lr ranges from `tuner lr-find` on {result.objective} (batch size {result.batch_size}, "
             f"{result.repeats} sweep(s) per optimizer, {result.device}):"]
    for curve in result.curves.values():
        lines += [f"#   {line}" for line in curve.lines()]
    return "\n".join(lines) + "\n" + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def _round(value: float | None) -> float:
    return float(f"{value:.2g}")


def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    """Loss against learning rate (log axis), one curve per optimizer, the suggested range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tops: list[float] = []
    bottoms: list[float] = []
    for i, curve in enumerate(result.curves.values()):
        color = colors[i % len(colors)]
        if not curve.lrs:
            continue
        ax.plot(curve.lrs, curve.losses, color=color, alpha=0.25, linewidth=0.8)
        shown = curve.smoothed or curve.losses
        label = (f"{curve.optimizer}: {curve.low:.2g} .. {curve.high:.2g}" if curve.found
                 else f"{curve.optimizer}: no range")
        # A dash pattern of its own: optimizers that sweep alike (Adam and AdamW without weight decay) would
        # otherwise draw one line over the other.
        ax.plot(curve.lrs, shown, color=color, linewidth=1.8, label=label,
                linestyle=["-", "--", ":", "-."][i % 4])
        if curve.found:
            ax.axvspan(curve.low, curve.high, color=color, alpha=0.08)
            ax.plot([curve.low, curve.high], [np.interp(np.log10(curve.low), np.log10(curve.lrs), shown),
                                              np.interp(np.log10(curve.high), np.log10(curve.lrs), shown)],
                    "o", color=color, markersize=5)
        tops.append(shown[0])
        bottoms.append(min(shown))
    ax.set_xscale("log")
    if tops:  # the start of the curves and a margin: a divergence's tail would squash the rest
        top, bottom = max(tops), min(bottoms)
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.35 * (top - bottom) + 1e-12)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test: {result.objective}, batch size {result.batch_size}", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", title="suggested lr range", title_fontsize=8)
    fig.tight_layout()
    import io

    from tuner._files import write_bytes

    suffix = Path(path).suffix.lower().lstrip(".")
    kind = suffix if suffix in fig.canvas.get_supported_filetypes() else "png"  # as savefig(path) chooses
    image = io.BytesIO()
    fig.savefig(image, format=kind, dpi=110)
    plt.close(fig)
    return write_bytes(path, image.getvalue())  # whole or not at all, with a clear error where it cannot be written
