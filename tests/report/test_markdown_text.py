"""report.md shows user text (study names, descriptions, reasons, notes, narrowed spaces) literally: Markdown
markup, HTML and pipes in it are neither rendered nor able to break a table or close a code block."""

from __future__ import annotations

import html
import re
from pathlib import Path

import optuna
from markdown_it import MarkdownIt

from tuner.report._render import ReportData, render_markdown

EVIL = "evil[/x]<b>bold</b> *em* _u_ `code` [link](http://x) &amp; a|b ~~s~~ \\ back"


def test_every_user_text_in_report_md_renders_literally(tmp_path: Path):
    study = optuna.create_study(study_name=EVIL)
    data = ReportData(
        study=study, metric="accuracy", storage="sqlite:///t.db",
        spec={"description": EVIL, "objective": "x.py:" + EVIL, "space": {"name": EVIL}},
        counts={"COMPLETE": 0, "FAIL": 2}, reasons={"fail": [("RuntimeError: " + EVIL, 2)]},
        recommendation=None, per_optimizer=[], importances=[], evaluator="fanova",
        narrowed_yaml=f"description: '{EVIL} ``` end'\noptimizer: adam\n", narrowed_notes=[EVIL],
        plots={}, skipped_plots={"history": EVIL}, notes=[EVIL, "two\nlines " + EVIL],
        followup=f"tuner study create --name '{EVIL} ```'")
    md = render_markdown(data, tmp_path).read_text()
    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(md)
    # No markup of the user text became HTML: no tags, no emphasis, no link, no inline code, no strikethrough.
    tags = set(re.findall(r"</?([a-z0-9]+)", rendered))
    assert tags <= {"h1", "h2", "h3", "p", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "pre",
                    "code"}, tags
    assert "<b>" not in rendered and "<em>" not in rendered and "<a " not in rendered and "<s>" not in rendered
    # The text itself is all there, as it was typed (HTML-escaped in the HTML Markdown makes).
    literal = html.escape(EVIL, quote=False)
    assert rendered.count(literal) >= 8, rendered
    assert f"<h1>Study report: {literal}</h1>" in rendered
    # A pipe cannot add a column; a backtick run cannot close a fence early.
    rows = [r for r in rendered.split("<tr>")[1:]]
    assert all(r.count("<td>") in (0, 2, 3) for r in rows), rows
    blocks = re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", rendered, re.S)
    assert any("``` end" in b and "optimizer: adam" in b for b in blocks), blocks
    assert any(b.strip() == html.escape(data.followup, quote=False) for b in blocks), blocks


def test_the_study_table_shows_lists_and_switches_as_words(tmp_path: Path):
    data = ReportData(
        study=optuna.create_study(study_name="s"), metric="accuracy", storage="sqlite:///t.db",
        spec={"objectives": ["accuracy", "train_seconds"], "calibrate": False, "known_starts": True, "epochs": 3},
        counts={}, reasons={}, recommendation=None, per_optimizer=[], importances=[], evaluator="fanova",
        narrowed_yaml=None, narrowed_notes=[], plots={}, skipped_plots={})
    md = render_markdown(data, tmp_path).read_text()
    for row in ("| objectives | accuracy, train\\_seconds |", "| calibrate | no |", "| known\\_starts | yes |",
                "| epochs | 3 |"):
        assert row in md, md


def test_the_html_report_shows_text_without_markdown_escapes(tmp_path: Path):
    """The two renderings share their lines: the HTML one must not show report.md's backslashes."""
    from tuner.config import TrainConfig
    from tuner.report._confirm import Recommendation
    from tuner.report._render import render_html

    config = TrainConfig.from_dict({"optimizer": "adamw", "schedule": "warmup_cosine"})
    data = ReportData(
        study=optuna.create_study(study_name="s_1"), metric="val_acc", storage="sqlite:///t.db",
        spec={"objective": "my_model.py:objective"}, counts={"COMPLETE": 1}, reasons={},
        recommendation=Recommendation(config, 0, 0.9, None, None, None, "best_trial *as is*"), per_optimizer=[],
        importances=[], evaluator="fanova", narrowed_yaml=None, narrowed_notes=[], plots={}, skipped_plots={},
        notes=["a_b"])
    page = render_html(data, tmp_path).read_text()
    visible = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    assert "\\_" not in visible and "\\*" not in visible and "**" not in visible
    assert "warmup_cosine" in visible and "best_trial *as is*" in visible and "my_model.py:objective" in visible
    md = render_markdown(data, tmp_path).read_text()
    assert "**adamw" in md and "warmup\\_cosine" in md and "best\\_trial \\*as is\\*" in md


def test_a_study_of_pruned_trials_with_budget_left_is_told_to_run_not_to_lower_its_budget():
    from tuner.report import no_complete_trial
    from tuner.study._record import StopKind, StopReason, StudyKey

    def study_of(budget: int, pruned: int) -> optuna.Study:
        study = optuna.create_study(study_name="s")
        study.set_user_attr(StudyKey.SPEC, {"n_trials": budget})
        for _ in range(pruned):
            trial = study.ask()
            for key, value in StopReason(StopKind.PRUNED, "pruned at epoch 2: below the median").attrs().items():
                trial.set_user_attr(key, value)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return study

    left = no_complete_trial(study_of(20, 5), "sqlite:///x.db", "nothing to report")
    assert "run it with `tuner study run s --storage sqlite:///x.db`" in left and "--n-trials" not in left
    spent = no_complete_trial(study_of(3, 3), "sqlite:///x.db", "nothing to report")
    assert "--n-trials 6`" in spent and "(3 with: pruned" in spent
