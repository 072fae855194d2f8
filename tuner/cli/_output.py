"""Rendering for the CLI: Rich on a terminal, plain lines otherwise, JSON on request.

Nothing a user or a library wrote is ever read as Rich markup: the consoles have markup and emoji codes
off, styles are applied to the project's own words only (``Text``), and user text (study names, reasons,
error messages, paths) is shown as it is, with control characters escaped so that it cannot move the
cursor or recolour the terminal. Every byte written passes through ``redact``, so a storage password never
reaches the screen.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tuner._secrets import RedactingStream, redact

stdout = RedactingStream(lambda: sys.stdout)
stderr = RedactingStream(lambda: sys.stderr)


SIGPIPE_EXIT = 141  # as a process killed by SIGPIPE (`yes | head`) exits


def quiet_pipe(stream: Any) -> None:
    """Points a stream whose reader has gone at /dev/null, so that Python's last flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """``tuner ... | head``: the reader has gone; raised on to the command's handler, which exits quietly
        as the other commands do (Rich's own exits with 1)."""
        self.quiet = True
        raise BrokenPipeError


out = _Console(file=stdout, highlight=False, soft_wrap=True, markup=False, emoji=False)
err = _Console(file=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)

# C0 and C1 control characters but line feed and tab, and the invisible characters that reorder or break text
# (bidirectional overrides and isolates, Unicode line and paragraph separators): shown as escapes.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\n\t]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object) -> str:
    """User or library text made safe to show: control and text-reordering characters escaped (``\\x1b``,
    ``\\u202e``), passwords redacted. Line breaks stay (for YAML and other multi-line text)."""
    return redact(_CONTROL.sub(_escape, str(text)))


def cell(text: object) -> str:
    """``clean`` text that must stay on one line (a name, a table cell): line breaks and tabs escaped too, so a
    name cannot forge rows."""
    return _LINE_BREAKS.sub(_escape, clean(text))


def one_line(text: object) -> str:
    """``clean`` text on a single line (an error message of several lines is joined)."""
    return " ".join(clean(text).split())


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line from plain parts (user text, shown as it is) and ``(words, style)`` parts of our own."""
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            line.append(clean(part[0]), style=part[1])
        else:
            line.append(clean(part))
    return line


def echo(*parts: str | tuple[str, str], to_err: bool = False) -> None:
    (err if to_err else out).print(styled(*parts))


def print_listing(rows: list[list[str]]) -> None:
    """Rows of a listing (a name, then text): the name bold, the last column wrapped at the terminal's width
    under itself (a hanging indent), not back at the first column."""
    if not rows:
        return
    grid = Table.grid(padding=(0, 1))
    for i in range(len(rows[0])):
        last = i == len(rows[0]) - 1
        grid.add_column(style="bold" if i == 0 else None, no_wrap=not last, overflow="fold" if last else None)
    for row in rows:
        grid.add_row(*(Text(cell(value)) for value in row))
    whole = _unwrapped_width(grid)
    if whole is None:
        out.print(grid, crop=False)
    else:
        _print_whole(grid, whole)


def error_line(message: object) -> None:
    """``error: <message>`` as one red-labelled line on standard error."""
    err.print(styled(("error:", "red"), " ", one_line(message)))


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _secs(value: float | None) -> str:
    """Seconds to three significant digits (0.0712, 1.07, 143), so that short trials' times compare."""
    return "-" if value is None or value != value else f"{value:.3g}"


def print_summary(summary: dict[str, Any]) -> None:
    c = summary["counts"]
    objectives = summary.get("objectives") or []
    # A study of several objectives: each one's direction (the metric's, then train_seconds minimised).
    goal = (", ".join([f"{summary['direction']} {objectives[0]}", *(f"minimize {o}" for o in objectives[1:])])
            if len(objectives) > 1 else " ".join(filter(None, [summary["direction"], summary.get("metric")])))
    out.print(styled((cell(summary["name"]), "bold"), f": objective {cell(summary['objective'])}, space "
                                                       f"{cell(summary['space'])}, {goal}"))
    calibration = summary.get("calibration")
    if calibration:
        ranges = ", ".join(f"{name} {low:.2g}..{high:.2g}" if low is not None and high is not None
                           else f"{name} (the space's)" for name, (low, high) in calibration["ranges"].items())
        took = calibration.get("seconds")
        cost = f" ({took:.1f} s, before the first trial)" if isinstance(took, (int, float)) else ""
        echo(f"lr ranges from an LR range test at batch size {calibration['batch_size']}{cost}: {ranges}")
        searched = calibration.get("searched")
        if searched and searched["ranges"]:
            echo("  searched as " + searched["as"] + ": " + ", ".join(
                f"{name} {low:.2g}..{high:.2g}" for name, (low, high) in searched["ranges"].items()))
        for note in calibration.get("notes") or []:
            echo(f"  note: {one_line(note)}")
    scaling = summary.get("lr_scaling")
    if scaling:
        echo(f"lr_scaling ({scaling['rule']}, reference batch size {scaling['reference_batch']}): the space searches "
             f"each optimizer's rate at batch size {scaling['reference_batch']}; the trials below show the rate each "
             f"trained at its batch size")
    echo(f"trials: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
         + (f", {c['running']} running" if c["running"] else "")
         + (f" ({c['left_behind']} of them {left_behind_text(c['left_behind'], summary['name'])})"
            if c.get("left_behind") else "")
         + (f", {c['queued']} queued" if c.get("queued") else "")
         + (f" (budget {summary['n_trials']})" if summary["n_trials"] else ""))
    for reason, n in summary["reasons"].items():
        echo(f"  {n:>4} x {one_line(reason)}")
    tie = summary.get("tie")
    if tie:
        from tuner.study._record import tie_text

        echo(("note:", "yellow"), " " + tie_text(tie["trials"], tie["complete"], tie["value"]))
    for note in summary.get("memory") or []:
        echo(one_line(note))
    if summary.get("stopped"):
        run = "tuner.tune() with this study_name" if summary.get("kind") == "tune" else \
            f"`{command('run', summary['name'])}`"
        echo(("stopped early:", "yellow"), f" after {one_line(summary['stopped'])}; {run} goes on once that is fixed")
    if not summary["top"]:
        return  # the best config's line says there is none
    shown, complete = len(summary["top"]), c["complete"]
    title = f"best trials ({shown} of {complete} complete)" if shown < complete else "best trials"
    table = Table(title=title, title_justify="left")
    # "train s": the trial's training time (train_seconds, the second objective of a study that has one)
    for col in ("trial", "validation", "test", "train s", "config"):  # numbers and their headings unbroken
        table.add_column(col, justify="left" if col == "config" else "right", overflow="fold",
                         no_wrap=col != "config", min_width=len(col) if col != "config" else None)
    from tuner._summary import config_line

    for row in summary["top"]:
        summary_text = config_line(row["config"]) if row["config"] else "-"
        table.add_row(*(Text(cell(value)) for value in (str(row["number"]), fmt(row["value"]),
                                                         fmt(row["test_value"]), _secs(row["seconds"]),
                                                         summary_text)))
    print_fitted(table)


def print_pareto(summary: dict[str, Any]) -> None:
    """The Pareto front of a study with several objectives, its knee marked."""
    names = summary["objectives"]
    knee = (summary.get("knee") or {}).get("number")
    table = Table(title=f"Pareto front ({' vs '.join(names)}; * = knee, the recommendation)", title_justify="left")
    for col in ("trial", *names, "config"):
        table.add_column(col, justify="left" if col == "config" else "right", overflow="fold")
    from tuner._summary import config_line

    for row in summary["pareto"]:
        values = [fmt(v) if i == 0 else f"{v:.3g}" for i, v in enumerate(row["values"])]
        mark = "*" if row["number"] == knee else ""
        table.add_row(Text(f"{row['number']}{mark}"), *(Text(v) for v in values),
                      Text(cell(config_line(row["config"]) if row["config"] else "-")))
    print_fitted(table)


_hint_storage: list[str | None] = [None]  # the storage of the study this command works on (``use_storage``)


def use_storage(url: str | None) -> None:
    """The storage of the study the running command works on: the commands it suggests carry ``--storage``
    where that is not the default one."""
    _hint_storage[0] = url


def command(verb: str, name: str, *extra: str) -> str:
    """``tuner study VERB NAME ...`` as the user should run it (with ``--storage`` where needed)."""
    from tuner.study._storage import study_command

    return study_command(verb, name, _hint_storage[0], *extra)


def print_edge_notes(of: dict[str, Any] | None, edges: list[str], after: str = "") -> None:
    """The parameters at an edge of the space at the trial export would take (``of``: ``{trial, is}``), as
    ``study show`` and ``study report`` print them; ``after``: what follows the count on the first line."""
    if not edges:
        return
    of = of or {}
    echo(f"at the edge of the space ({of.get('is', 'the best trial')}, trial {of.get('trial')}): "
         f"{len(edges)} parameter(s){after}")
    for note in edges:
        echo(f"  {one_line(note)}")


def print_edges(summary: dict[str, Any]) -> None:
    edges = summary.get("edges") or []
    if edges:
        print_edge_notes(summary.get("edges_of"), edges)
        from tuner.study._record import MIN_TOP

        complete = (summary.get("counts") or {}).get("complete", 0)
        if complete >= MIN_TOP:
            echo(f"  `{command('report', summary['name'])}` writes narrowed-space.yaml with the ends widened where "
                 f"its recommended trial sits (this one, unless confirmation runs pick another)")
        else:  # the report narrows nothing from fewer trials: promising it would send the user to nothing
            echo(f"  with {complete} complete trial(s), too few to narrow the space ({MIN_TOP} needed): widen those "
                 f"ends in the space file by hand, or run more trials and `{command('report', summary['name'])}` "
                 f"widens them in narrowed-space.yaml")


def print_best_config(summary: dict[str, Any]) -> None:
    import yaml

    if summary.get("knee"):
        print_pareto(summary)
        knee = summary["knee"]
        extra = ", ".join(f"{n} {v:.4g}" for n, v in zip(summary["objectives"][1:], knee["values"][1:], strict=True))
        out.print(styled("\n", ("recommended config", "bold"), f" (trial {knee['number']}, the knee of the Pareto "
                                                               f"front: validation {fmt(knee['value'])}, {extra}; "
                                                               f"export --trial N takes another point):"))
        out.print(Text(clean(yaml.safe_dump(knee["config"], sort_keys=False, allow_unicode=True).rstrip())))
        print_edges(summary)
        return
    best = summary["best"]
    if best is None:
        echo("no complete trial: no best config")
        return
    out.print(styled("\n", ("best config", "bold"), f" (trial {best['number']}, validation {fmt(best['value'])}, "
                                                     f"test {fmt(best['test_value'])}):"))
    out.print(Text(clean(yaml.safe_dump(best["config"], sort_keys=False, allow_unicode=True).rstrip())))
    print_recommendation(summary)
    print_edges(summary)


def print_recommendation(summary: dict[str, Any]) -> None:
    """What ``study export`` hands over beside the best single trial, so that ``show`` and ``export`` never
    disagree silently: the confirmed recommendation (stored by report/export), or that there is none yet."""
    best, conf = summary["best"], summary.get("confirmation")
    export = command("export", summary["name"])
    if conf is None or not conf["current"]:
        stale = " (the stored one covers earlier top trials)" if conf is not None else ""
        if summary.get("kind") == "tune":  # a tuner.tune() study: its training code is the user's, not tuner's
            echo(f"not confirmed yet{stale}: `result.recommend()` of tuner.tune() re-trains the top trials with new "
                 f"seeds in your code; until then `{export}` exports this one.")
            return
        echo(f"not confirmed yet{stale}: `{export}` (and `study report`) first re-train the top "
             f"trials with new seeds and export the best mean, which may be another trial; `--no-confirm` exports "
             f"this one as it is.")
        return
    spread = f" ± {fmt(conf['std'])}" if conf["std"] is not None else ""
    score = (f"mean validation {fmt(conf['mean'])}{spread} over {conf['seeds']} new seed(s)"
             + (f", test {fmt(conf['test_mean'])}" if conf["test_mean"] is not None else ""))
    if conf["trial"] == best["number"]:
        echo(f"recommended: this config, confirmed with {score}; `{export}` exports it.")
    else:
        from tuner._summary import config_line
        from tuner.study._record import within_noise

        other = config_line(conf["config"]) if conf.get("config") else "-"
        runs = conf.get("best_trial_runs")
        noise = (within_noise(conf["mean"] - runs["mean"], conf["std"], conf.get("runs") or 0, runs["std"],
                              runs["n"]) if runs and runs["mean"] is not None and conf["mean"] is not None else None)
        theirs = (f" ({fmt(runs['mean'])}" + (f" ± {fmt(runs['std'])}" if runs["std"] is not None else "") + ")"
                  if runs and runs["mean"] is not None else "")
        than = (f"scored {theirs.strip(' ()')} on the same seeds: these runs do not tell the two apart (twice the "
                f"standard error of the difference is {noise:.2g})" if noise is not None
                else f"did worse on new seeds{theirs}")
        out.print(styled(("recommended", "bold"), f" (what `{export}` exports): trial {conf['trial']}, "
                                                  f"{cell(other)}, confirmed with {score}; the best single trial "
                                                  f"{best['number']} {than} (`export --trial {best['number']}` "
                                                  f"exports it)."))
    if summary.get("tuning_free"):  # stored with the confirmation by `study report`
        echo(summary["tuning_free"])


def print_json(data: Any) -> None:
    stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    stdout.flush()


def print_fitted(table: Table) -> None:
    """Prints ``table`` within the terminal's width with no word broken where that can be done: each column
    at least as wide as its longest word (a ``no_wrap`` column as its longest line), the room left shared out by
    how much more each column holds; without the vertical lines and the outer padding where the boxed table
    cannot hold its words. Where nothing fits, the words fold at the width (nothing is cut off)."""

    whole = _unwrapped_width(table)
    if whole is not None:  # piped to a file or a program: one line per row, as long as the row is
        _print_whole(table, whole)
        return
    # Then long words of the other columns fold (a path), the whole columns still whole where they fit.
    if not _fit_whole(table) and not any(_fit_widths(table, fold) for fold in (12, 6)):
        for column in table.columns:
            column.no_wrap = False
    out.print(table, soft_wrap=False, crop=False)


def _fit_whole(table: Table) -> bool:
    """Fits ``table`` to the terminal with no word broken: boxed, else without its vertical lines and outer
    padding (left so, for the folding that follows); False where neither fits."""
    from rich import box

    if _fit_widths(table):
        return True
    table.box, table.show_edge, table.pad_edge = box.SIMPLE_HEAD, False, False
    return _fit_widths(table)


def _piped() -> bool:
    """Standard output is no terminal and ``COLUMNS`` asks for no width: rows are printed whole."""
    return not out.is_terminal and not os.environ.get("COLUMNS")


def _unwrapped_width(renderable: Any) -> int | None:
    """The width that holds ``renderable``'s lines whole where standard output is no terminal and ``COLUMNS``
    does not ask for a width (``tuner study list | grep NAME`` finds the whole row); None on a terminal."""
    if not _piped():
        return None
    from rich.measure import Measurement

    return max(1, Measurement.get(out, out.options.update(max_width=100_000), renderable).maximum)


def _print_whole(renderable: Any, width: int) -> None:
    """``renderable`` on standard output ``width`` columns wide (``Console.print(width=)`` goes no wider than
    the console), without the spaces that pad its lines to that width."""
    wide = _Console(width=width, highlight=False, soft_wrap=True, markup=False, emoji=False,
                    color_system=out.color_system)
    with wide.capture() as captured:
        wide.print(renderable, soft_wrap=False, crop=False)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    out.file.flush()


def _fit_widths(table: Table, fold: int | None = None) -> bool:
    """Fixes the columns' widths so that the table fits the terminal without breaking a word (``fold``: words
    longer than that may break, outside the ``no_wrap`` columns); False (nothing changed) where it cannot."""
    from rich.cells import cell_len

    columns = table.columns
    texts = [[str(column.header), *(c.plain if isinstance(c, Text) else str(c) for c in column._cells)]
             for column in columns]
    longest = [max(cell_len(line) for t in cells for line in t.splitlines() or [""]) for cells in texts]
    words = [max((cell_len(w) for t in cells for w in t.split()), default=1) for cells in texts]
    least = [full if column.no_wrap else word if fold is None else min(word, fold)
             for column, full, word in zip(columns, longest, words, strict=True)]
    saved = [column.width for column in columns]
    # What the box, the edges and the padding take: a table of the same make with one-character columns (the
    # table itself at width 1 ran as wide as its longest whole value, which left too little room).
    probe = Table(box=table.box, show_edge=table.show_edge, pad_edge=table.pad_edge, padding=table.padding,
                  show_header=table.show_header)
    for _ in columns:
        probe.add_column("x", width=1)
    probe.add_row(*("x" for _ in columns))
    with out.capture() as captured:
        out.print(probe, soft_wrap=False, crop=False)
    # Measured as shown (on a terminal the captured lines hold escape codes for the bold heading).
    overhead = max(Text.from_ansi(line).cell_len for line in captured.get().splitlines()) - len(columns)
    room = out.width - overhead
    if sum(longest) <= room:
        for column, width in zip(columns, saved, strict=True):
            column.width = width
        return True
    if sum(least) > room:
        for column, width in zip(columns, saved, strict=True):
            column.width = width
        return False
    spare, wants = room - sum(least), [full - low for full, low in zip(longest, least, strict=True)]
    total = sum(wants) or 1
    widths = [low + spare * want // total for low, want in zip(least, wants, strict=True)]
    for i in sorted(range(len(widths)), key=lambda i: wants[i] - (widths[i] - least[i]), reverse=True):
        if sum(widths) < room and widths[i] < longest[i]:
            widths[i] += 1  # what the rounding down left over
    for column, width in zip(columns, widths, strict=True):
        column.width = width
    return True


def print_table(columns: list[str], rows: list[list[Any]], *, whole: tuple[int, ...] = (0,),
                numbers: tuple[int, ...] = (), optional: tuple[int, ...] = ()) -> None:
    """A table whose cells are user text, shown as it is. The ``whole`` columns (a name to copy) keep their
    values on one line while the others wrap; ``numbers`` are aligned right. In a terminal too narrow for
    every column with its words whole, the ``optional`` ones are left out (last first), rather than names and
    headings broken mid-word."""
    def build(keep: list[int]) -> Table:
        table = Table()
        for i in keep:
            # A whole column keeps its width while the others wrap (a name longer than the line still folds: it
            # is never cut short). Not min_width: a table with one came out wider than the terminal.
            table.add_column(columns[i], overflow="fold", no_wrap=i in whole,
                             justify="right" if i in numbers else "left")
        for row in rows:
            table.add_row(*(Text(cell(row[i])) for i in keep))
        return table

    keep = list(range(len(columns)))
    table = build(keep)
    if not _piped() and not _fits_whole(table):
        for drop in reversed(optional):
            keep.remove(drop)
            table = build(keep)
            if _fits_whole(table):
                break
    print_fitted(table)  # where even the fewest columns cannot keep their words whole, those fold


def _fits_whole(table: Table) -> bool:
    """Whether ``table`` fits the terminal with no word broken (``_fit_whole``), the table left as it was."""
    saved = (table.box, table.show_edge, table.pad_edge, [c.width for c in table.columns])
    try:
        return _fit_whole(table)
    finally:
        table.box, table.show_edge, table.pad_edge = saved[:3]
        for column, width in zip(table.columns, saved[3], strict=True):
            column.width = width


def left_behind_text(n: int, name: str) -> str:
    """What a user should know of trials left RUNNING by a worker that is gone (killed, or its machine down)."""
    return (f"left by a worker that is gone: the next `{command('run', name)}` fails "
            f"{'it' if n == 1 else 'them'} and queues {'its config' if n == 1 else 'their configs'} again")
