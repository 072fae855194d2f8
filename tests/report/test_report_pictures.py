"""The report's pictures as a person sees them: no text outside its figure, no overlapping tick labels, values
on every axis, one panel per batch size, every optimizer present (also one whose trials were all pruned), and
the whole report rendered by a real browser (headless Chromium; skipped where it is not installed)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pytest

import tuner
from benchmarks.report_screenshot import chromium, page_facts, screenshot
from tuner.report import _plots, write_report

SPACE = {
    "optimizer": {"adam": {"lr": {"low": 1.0e-4, "high": 0.1, "log": True},
                           "weight_decay": {"low": 1.0e-6, "high": 1.0e-3, "log": True},
                           "one_minus_beta1": {"low": 0.02, "high": 0.5, "log": True}},  # not a whole decade
                  "nesterov": {"lr": {"low": 1.0e-3, "high": 0.5, "log": True}},
                  "sgd": {"lr": {"low": 1.0e-3, "high": 0.5, "log": True}}},
    "schedule": ["constant", "cosine"],
    "batch_size": {"choices": [16, 32, 64]},
    "regularization": {"dropout": {"low": 0.0, "high": 0.3}},
}


def _train(ctx: tuner.TrialContext) -> float:
    c = ctx.config
    if c.optimizer.name == "sgd":  # every sgd trial diverges: recorded as pruned
        ctx.report(0, float("nan"))
        return float("nan")
    value = 0.9 - abs(math.log10(c.optimizer.lr) + 2) / 10 - c.regularization.dropout / 5 - c.batch_size / 1000
    for epoch in range(c.epochs):
        ctx.report(epoch, value * (epoch + 1) / c.epochs)
    return value


@pytest.fixture(scope="module")
def study():
    result = tuner.tune(_train, space=SPACE, n_trials=40, epochs=3, pruner="none", verbose=False, seed=1,
                        known_starts=False)
    names = {t.params.get("optimizer") for t in result.study.trials if t.state.name == "COMPLETE"}
    assert names == {"adam", "nesterov"}
    return result.study


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch):
    """Every figure the report draws, kept open (laid out as saved) to be measured."""
    kept: dict[str, plt.Figure] = {}
    original = plt.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        original(fig, path, *args, **kwargs)
        kept[Path(path).stem] = fig

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    monkeypatch.setitem(plt.rcParams, "figure.max_open_warning", 0)  # kept open on purpose, closed below
    yield kept
    for fig in kept.values():
        plt.close(fig)


def _texts(fig: plt.Figure):
    renderer = fig.canvas.get_renderer()
    for text in fig.findobj(plt.Text):
        if text.get_visible() and text.get_text().strip() and text.figure is fig:
            yield text, text.get_window_extent(renderer)


def test_no_text_falls_outside_its_picture(study, figures, tmp_path: Path):
    write_report(study, tmp_path / "r")
    assert {"importance", "parallel", "slices", "lr_batch", "optimizers", "curves", "history"} <= set(figures)
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        drawn = fig.get_tightbbox(renderer)  # inches: everything drawn (titles, legends, labels in view)
        width, height = fig.get_size_inches()
        assert (drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01
                and drawn.y1 <= height + 0.01), f"{name}: drawn {drawn} in a {width} x {height} inch picture"


def test_tick_labels_never_overlap(study, figures, tmp_path: Path):
    write_report(study, tmp_path / "r")
    renderer = None
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
                view = ax.get_xlim() if axis is ax.xaxis else ax.get_ylim()
                lo, hi = min(view), max(view)
                shown = [t for t in labels if lo <= (t.get_position()[0] if axis is ax.xaxis
                                                     else t.get_position()[1]) <= hi]
                boxes = [t.get_window_extent(renderer) for t in shown]
                for (a, ta), (b, tb) in itertools.combinations(zip(boxes, shown, strict=True), 2):
                    assert not a.overlaps(b), f"{name}: tick labels {ta.get_text()!r} and {tb.get_text()!r} overlap"


def test_parallel_axes_carry_values_and_say_log(study, figures, tmp_path: Path):
    write_report(study, tmp_path / "r")
    fig = figures["parallel"]
    texts = {t.get_text() for t, _ in _texts(fig)}
    assert "low" not in texts and "high" not in texts
    # lr merges every optimizer's range: 1e-4 .. 0.5, its middle the geometric one; weight decay 1e-6 .. 1e-3
    assert {"0.0001", "0.00707", "0.5", "1e-06", "0.001"} <= texts
    assert any(t.endswith("(log)") for t in (lab.get_text() for lab in fig.axes[0].get_xticklabels()))


def test_a_parallel_line_breaks_at_an_axis_its_trial_has_no_value_on(study, figures, tmp_path: Path):
    """A nesterov trial has no adam.weight_decay: its line crossed that axis as if it had a value there."""
    write_report(study, tmp_path / "r")
    fig = figures["parallel"]
    ax = fig.axes[0]
    names = [lab.get_text().replace("\n", "").removesuffix("(log)") for lab in ax.get_xticklabels()]
    decay = names.index("adam.weight_decay")
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == len(names)]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(lines) == len(complete)
    at_decay = [line.get_ydata()[decay] for line in lines]
    nesterov = sum(t.params["optimizer"] == "nesterov" for t in complete)
    assert sum(math.isnan(y) for y in at_decay) == nesterov > 0
    assert all(line.get_marker() == "o" for line in lines)  # a value between two gaps still shows
    assert "a line breaks at an axis its trial has no value on" in " ".join(ax.get_title().split())


def test_learning_curves_say_which_trials_they_cannot_draw(study, figures, tmp_path: Path):
    """Every sgd trial diverges in its first epoch (no finite value): the curves said nothing of them, and
    their legend still listed 'pruned', though no pruned line was drawn. The legend sits under the axes."""
    write_report(study, tmp_path / "r")
    ax = figures["curves"].axes[0]
    n_sgd = sum(t.params.get("optimizer") == "sgd" for t in study.trials if t.state.name == "PRUNED")
    assert n_sgd > 0
    assert f"{n_sgd} trials with no finite value (diverged at once) not drawn" in " ".join(ax.get_title().split())
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "pruned" not in labels and "complete" in labels
    box, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert box.y1 <= axes_box.y0  # below the curves, not over them


def test_a_trial_that_diverged_before_its_first_validation_is_counted_too(figures, tmp_path: Path):
    """Its training loss diverged in the first epoch: no value at all, not even a NaN one."""
    from tuner.study._record import Key

    study = optuna.create_study(direction="maximize")
    create = optuna.trial.create_trial
    study.add_trial(create(value=0.6, user_attrs={Key.VAL_HISTORY: [0.5, 0.6]}))
    study.add_trial(create(state=optuna.trial.TrialState.PRUNED, user_attrs={Key.VAL_HISTORY: [float("nan")]}))
    study.add_trial(create(state=optuna.trial.TrialState.PRUNED, user_attrs={Key.DIVERGED: True}))
    study.add_trial(create(state=optuna.trial.TrialState.FAIL))  # a crash, not a divergence: not counted
    _plots.learning_curves(study, "accuracy", tmp_path / "curves.png")
    title = " ".join(figures["curves"].axes[0].get_title().split())
    assert "2 trials with no finite value (diverged at once) not drawn" in title, title


def test_lr_batch_is_one_panel_of_points_per_batch_size(study, figures, tmp_path: Path):
    write_report(study, tmp_path / "r")
    fig = figures["lr_batch"]
    sizes = {t.params["batch_size"] for t in study.trials if t.state.name == "COMPLETE"}
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert [t.split(" (")[0] for t in titles] == sorted(f"batch size {b}" for b in sizes)
    assert not any(ax.collections and type(c).__name__ == "TriContourSet" for ax in fig.axes for c in ax.collections)


def test_an_optimizer_whose_trials_were_all_pruned_keeps_its_place(study, figures, tmp_path: Path):
    files = write_report(study, tmp_path / "r")
    fig = figures["optimizers"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][-1] == "sgd"
    assert any(t.get_text().startswith("no complete\ntrial:") for t, _ in _texts(fig))
    n_sgd = sum(t.params.get("optimizer") == "sgd" for t in study.trials)
    text = files["report.md"].read_text()
    assert f"| sgd | - | - | - | no complete trial ({n_sgd} pruned) |" in text
    # A tune() study's best trial, not confirmed: the report says how to confirm it, as `study show` does.
    assert "result.recommend()\\` of tuner.tune() re-trains the top trials with new seeds in your code" in text


def test_wrapped_titles_fit_their_width():
    text = "Parallel coordinates of complete trials (colour: validation accuracy; each axis labelled)"
    lines = _plots._wrapped(text, 4.0, 11).splitlines()
    assert len(lines) > 1 and all(len(line) <= int(4.0 * 72 / (11 * 0.55)) for line in lines)


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_report_renders_in_a_real_browser_with_every_picture(study, tmp_path: Path):
    files = write_report(study, tmp_path / "r")
    pictures = [f for f in files.values() if f.suffix == ".png"]
    facts = page_facts(files["report.html"])
    assert facts["images"] == len(pictures) and facts["broken"] == 0
    assert facts["clipped"] == 0  # no code block or table a reader has to scroll sideways
    shot = screenshot(files["report.html"], tmp_path / "report.png")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.width == 1200 and image.height >= facts["height"]
        colours = len(image.convert("RGB").resize((300, 600)).getcolors(maxcolors=300 * 600))
    assert colours > 500  # plots, not a blank page


@pytest.mark.parametrize("n_trials", [1, 3])
def test_the_history_counts_trials_in_whole_numbers(figures, tmp_path: Path, n_trials: int):
    few = tuner.tune(_train, space=SPACE, n_trials=n_trials, epochs=1, pruner="none", verbose=False,
                     known_starts=False)
    write_report(few.study, tmp_path / "r")
    ax = figures["history"].axes[0]
    lo, hi = sorted(ax.get_xlim())
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown and all(float(t).is_integer() for t in shown), shown


def test_log_axes_are_labelled_at_round_values_inside_their_range():
    from tuner.report._plots import _log_ticks

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    for low, high in ((6.7e-6, 0.15), (0.0022, 0.03), (1e-4, 3e-2)):
        _log_ticks(ax.xaxis, low, high)
        ticks = list(ax.get_xticks())
        assert len(ticks) >= 2 and all(low <= t <= high for t in ticks), ticks
        assert all(float(f"{t:.1g}") == pytest.approx(t) for t in ticks), ticks  # 1, 2 or 5 times a power of ten
    plt.close(fig)


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_a_long_study_name_and_notes_wrap_inside_the_page(study, tmp_path: Path):
    """The heading, the Study table's cell and the follow-up command hold a name longer than a line."""
    storage = optuna.storages.InMemoryStorage()
    name = "a-study-name-without-spaces-" + "x" * 150
    optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage, to_storage=storage,
                      to_study_name=name)
    files = write_report(optuna.load_study(study_name=name, storage=storage), tmp_path / "r")
    html = files["report.html"].read_text(encoding="utf-8")
    assert name in html and "`" not in html.split("<style>")[0] + html.split("</style>")[1].split("<img")[0]
    facts = page_facts(files["report.html"])
    assert facts["clipped"] == 0 and facts["broken"] == 0
    # The short words of the table keep whole beside the long name (the key column read "storag / e"); the long
    # name may break.
    assert '<td class="w">storage</td>' in html and f'<td class="w">{name}</td>' not in html


def test_the_pareto_legend_hides_no_trial(figures, tmp_path: Path):
    """Slow trials of low accuracy sit at the lower right, where the legend was pinned."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, seconds in [(0.95, 0.30), (0.90, 0.12), (0.80, 0.05), (0.60, 0.02), (0.34, 0.092), (0.30, 0.28),
                              (0.25, 0.25), (0.40, 0.2), (0.85, 0.2)]:
        study.add_trial(optuna.trial.create_trial(values=[accuracy, seconds], params={}, distributions={}))
    _plots.pareto(study, "accuracy", tmp_path / "pareto.png")
    fig = figures["pareto"]
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    points = ax.transData.transform([(t.values[1], t.values[0]) for t in study.trials])
    hidden = [t.number for t, (x, y) in zip(study.trials, points, strict=True) if legend.contains(x, y)]
    assert hidden == [], f"trials {hidden} lie under the legend"
