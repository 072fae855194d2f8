"""``report.md`` and a self-contained ``report.html`` (images embedded) from a study's analysis."""

from __future__ import annotations

import base64
import html
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from tuner.report._analysis import Importance
from tuner.report._confirm import Recommendation
from tuner.report._plots import PLOTS
from tuner.study._record import direction_of, objectives_of, record_of

__all__ = ["ReportData", "render_markdown", "render_html", "reason_counts"]


@dataclass
class ReportData:
    study: optuna.Study
    metric: str
    storage: str
    spec: dict[str, Any]
    counts: dict[str, int]
    reasons: dict[str, list[tuple[str, int]]]
    recommendation: Recommendation | None
    per_optimizer: list[dict[str, Any]]
    importances: list[Importance]
    evaluator: str
    narrowed_yaml: str | None
    narrowed_notes: list[str]
    plots: dict[str, Path]
    skipped_plots: dict[str, str]
    notes: list[str] = field(default_factory=list)
    followup: str = ""  # the command that runs a follow-up study over the narrowed space, as it can be typed


def reason_counts(study: optuna.Study) -> dict[str, list[tuple[str, int]]]:
    """Pruned and failed trials grouped by why they stopped."""
    out: dict[str, list[tuple[str, int]]] = {}
    for state in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL):
        trials = study.get_trials(deepcopy=False, states=(state,))
        kinds = Counter(rec.reason.group if rec.reason else "no reason recorded"
                        for rec in map(record_of, trials))
        if kinds:
            out[state.name.lower()] = kinds.most_common()
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):  # before numbers: a bool is an int
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "-"
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return _fmt(mean) + (f" ± {std:.2g}" if std is not None else "")


def _tables(d: ReportData) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by both renderings."""
    tables = []
    seconds = {"timeout", "heartbeat_interval", "grace_period"}  # said with their unit

    def value(key: str, v: Any) -> str:
        if isinstance(v, dict):
            return yaml.safe_dump(v, default_flow_style=True, allow_unicode=True).strip()
        return _fmt(v) + (" s" if key in seconds and isinstance(v, (int, float)) else "")

    spec_rows = [[k, value(k, v)] for k, v in d.spec.items() if v not in (None, "") and k != "name"]
    tables.append(("Study", ["key", "value"], [["study", d.study.study_name], ["storage", d.storage],
                                               ["metric", f"{d.metric} ({direction_of(d.study)})"],
                                               *spec_rows]))
    count_rows = [[state.lower(), str(n)] for state, n in d.counts.items() if n]
    tables.append(("Trials", ["state", "count"], count_rows))
    reason_rows = [[state, kind, str(n)] for state, kinds in d.reasons.items() for kind, n in kinds]
    if reason_rows:
        tables.append(("Why trials stopped early", ["state", "reason", "trials"], reason_rows))
    rec = d.recommendation
    if rec is not None and rec.confirmation is not None:
        rows = []
        for c in rec.confirmation.candidates:
            mark = " (recommended)" if c.trial == rec.trial else ""
            mean = _pm(c.mean, c.std) if c.ran == len(c.values) else (
                f"{_fmt(c.mean_of_runs)} ({c.ran} of {len(c.values)} trained)" if c.ran else "-")
            rows.append([f"{c.trial}{mark}", _fmt(c.trial_value), mean, _pm(c.test_mean, c.test_std),
                         ", ".join(_fmt(v) for v in c.values),
                         (c.config.get("optimizer") or {}).get("name", "")])
        n = rec.confirmation.n_seeds
        tables.append((f"Confirmation runs ({n} new seed{'s' if n != 1 else ''} per config)",
                       ["trial", "trial value", "mean ± std", "test mean ± std", "per seed", "optimizer"], rows))
    if len(d.study.directions) > 1:  # the front's figures, beside pareto.png
        from tuner.config import TrainConfig
        from tuner.study._record import Key, pareto_front

        names = objectives_of(d.study)
        rows = [[f"{t.number}{' (knee, recommended)' if rec is not None and t.number == rec.trial else ''}",
                 *(_fmt(v) for v in t.values),
                 TrainConfig.from_dict(t.user_attrs[Key.CONFIG]).summary() if Key.CONFIG in t.user_attrs else "-"]
                for t in pareto_front(d.study)]
        tables.append((f"Pareto front ({' vs '.join(names)})", ["trial", *names, "config"], rows))
    if d.per_optimizer:
        by = (f" (by {objectives_of(d.study)[0]}; ties by {', '.join(objectives_of(d.study)[1:])})"
              if len(d.study.directions) > 1 else "")
        tables.append((f"Best config per optimizer{by}", ["optimizer", "trial", "value", "test", "config"],
                       [[r["optimizer"], str(r["trial"]), _fmt(r["value"]), _fmt(r["test_value"]), r["summary"]]
                        for r in d.per_optimizer]))
    if d.importances:
        tables.append((f"Hyperparameter importance ({d.evaluator})", ["parameter", "importance", "in trials", "merges"],
                       [[i.name, f"{i.importance:.3f}", f"{100 * i.present:.0f}%", ", ".join(i.merged_from)]
                        for i in d.importances]))
    return tables


#: what Markdown would read as markup (emphasis, links, code, HTML, entities, table cells); escaped with a backslash
_MD_ACTIVE = re.compile(r"([\\`*_\[\]<>|&~])")


def _md(text: Any) -> str:
    """Text as Markdown shows it literally, on one line: a study name, a reason, a note (the HTML report shows
    the same text through ``html.escape``)."""
    return _MD_ACTIVE.sub(r"\\\1", " ".join(str(text).splitlines()))


def _fence(text: str, lang: str = "") -> list[str]:
    """A fenced code block that ``text`` cannot close early: the fence is longer than any run of backticks in
    it."""
    runs = [len(r) for r in re.findall(r"`+", text)]
    ticks = "`" * max(3, max(runs, default=0) + 1)
    return [ticks + lang, text.rstrip(), ticks]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _recommendation_lines(d: ReportData, md: bool = False) -> list[str]:
    """The recommendation in two lines: as Markdown (``md``: the summary bold, text escaped) or as plain text."""
    rec = d.recommendation
    if rec is None:
        return ["No complete trial yet: nothing to recommend."]
    text = _md if md else str
    summary = f"**{_md(rec.config.summary())}**" if md else rec.config.summary()
    others = ""
    if len(d.study.directions) > 1:  # the knee's other objectives, which it was chosen for too
        point = next((t for t in d.study.get_trials(deepcopy=False) if t.number == rec.trial), None)
        if point is not None and point.values:
            others = "".join(f"; {name}: {_fmt(v)}" for name, v in
                             zip(objectives_of(d.study)[1:], point.values[1:], strict=False))
    return [f"{summary} (trial {rec.trial}; {text(rec.source)})",
            text(f"validation {d.metric}: {_pm(rec.value, rec.std)}; test {d.metric}: "
                 f"{_pm(rec.test_value, rec.test_std)}{others}")]


def _in_python(d: ReportData) -> bool:
    """Whether the follow-up is a ``tuner.tune`` call (a study ``tune`` ran), not a command."""
    return d.followup.startswith("tuner.tune(")


def _followup_intro(d: ReportData) -> str:
    if _in_python(d):
        return ("A follow-up study over it, in Python run from the folder the report was written from (with the "
                "function this study tuned):")
    return "A follow-up study over it, from the folder the report was written from:"


def render_markdown(d: ReportData, out_dir: Path) -> Path:
    parts = [f"# Study report: {_md(d.study.study_name)}", ""]
    parts += ["## Recommended config", "", *[line + "  " for line in _recommendation_lines(d, md=True)], ""]
    if d.recommendation is not None:
        parts += [*_fence(d.recommendation.config.to_yaml(), "yaml"), ""]
    parts += [f"- {_md(n)}" for n in d.notes] + ([""] if d.notes else [])
    for title, header, rows in _tables(d):
        parts += [f"## {_md(title)}", "", _md_table(header, rows), ""]
    if d.narrowed_yaml is not None:
        parts += ["## Narrowed search space for a follow-up study", "",
                  f"Saved as `narrowed-space.yaml`. {_followup_intro(d)}", "",
                  *_fence(d.followup, "python" if _in_python(d) else "bash"), ""]
        parts += [f"- {_md(n)}" for n in d.narrowed_notes] + [""]
        parts += [*_fence(d.narrowed_yaml, "yaml"), ""]
    parts += ["## Plots", ""]
    for key, title in PLOTS.items():
        if key in d.plots:
            parts += [f"### {title}", "", f"![{title}]({d.plots[key].name})", ""]
        elif key in d.skipped_plots:
            parts += [f"### {title}", "", f"Not drawn: {_md(d.skipped_plots[key])}.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


_WHOLE = ' class="w"'  # a cell whose words stay whole: a long name elsewhere in its table broke "storag/e"


def _short_words(value: object) -> bool:
    """Whether every word of a cell is short enough to keep whole (a long one must be free to break, or the
    table would run off the page)."""
    return max((len(word) for word in str(value).split()), default=0) <= 24


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
font-size:.9em;vertical-align:top}th{background:#f3f3f3}pre{background:#f6f6f6;padding:.8em;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
img{max-width:100%;border:1px solid #eee;margin:.3em 0 1.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
h1,p,li,td,.rec{overflow-wrap:anywhere}td.w{overflow-wrap:normal}
pre.cmd span{display:inline-block;max-width:100%;white-space:pre-wrap;overflow-wrap:anywhere}
.rec{font-size:1.1em;background:#eef7f1;padding:.6em 1em;border-left:4px solid #1b9e77}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _inline(text: str) -> str:
    """One line of text as HTML, its `quoted commands` as code (the Markdown report shows them so)."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backquote: the text as it is
        return html.escape(text)
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _wrap_at_spaces(command: str) -> str:
    """A command as HTML that a narrow page wraps at its spaces only (a browser broke `--epochs` after its
    first hyphen); copied, it is the same text."""
    return " ".join(f"<span>{html.escape(word)}</span>" for word in command.split(" "))


def render_html(d: ReportData, out_dir: Path) -> Path:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Study report: {e(d.study.study_name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Study report: {e(d.study.study_name)}</h1>", "<h2>Recommended config</h2>",
             '<div class="rec">' + "<br>".join(_inline(line) for line in _recommendation_lines(d))
             + "</div>"]
    if d.recommendation is not None:
        parts.append(f"<pre>{e(d.recommendation.config.to_yaml())}</pre>")
    if d.notes:
        parts.append("<ul>" + "".join(f"<li>{_inline(n)}</li>" for n in d.notes) + "</ul>")
    for title, header, rows in _tables(d):
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td{_WHOLE if _short_words(v) else ''}>{e(v)}</td>" for v in row) + "</tr>"
                  for row in rows]
        parts.append("</table>")
    if d.narrowed_yaml is not None:
        parts.append("<h2>Narrowed search space for a follow-up study</h2>"
                     f"<p>Saved as <code>narrowed-space.yaml</code>. {e(_followup_intro(d))}</p>"
                     f"<pre class=\"cmd\">{_wrap_at_spaces(d.followup)}</pre>")
        parts.append("<ul>" + "".join(f"<li>{_inline(n)}</li>" for n in d.narrowed_notes) + "</ul>")
        parts.append(f"<pre>{e(d.narrowed_yaml)}</pre>")
    parts.append("<h2>Plots</h2>")
    for key, title in PLOTS.items():
        if key in d.plots:
            parts.append(f"<h3>{e(title)}</h3>{_img(d.plots[key], title)}")
        elif key in d.skipped_plots:
            parts.append(f"<h3>{e(title)}</h3><p>Not drawn: {e(d.skipped_plots[key])}.</p>")
    parts.append("</body></html>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
