"""The progress of a running study on the terminal: a bar with counts, the best value, elapsed time and an
ETA on a terminal; one line per trial otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

import optuna
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from tuner.cli._output import cell, clean, fmt, one_line, out, stderr, stdout, styled
from tuner.study._engine import TrialOutcome, counts
from tuner.study._session import RunningBest, trial_line

__all__ = ["TrialProgress", "eta"]


def eta(elapsed: float, done_here: int, left: int, timeout: float | None) -> tuple[float | None, str]:
    """Seconds until the run ends and what ends it: ``budget`` (the trials left at the pace so far) or
    ``timeout`` (the wall time left), whichever comes first; ``(None, "")`` before anything is known."""
    by_budget = elapsed / done_here * left if done_here else None
    by_timeout = max(0.0, timeout - elapsed) if timeout is not None else None
    if by_timeout is not None and (by_budget is None or by_timeout < by_budget):
        return by_timeout, "timeout"
    if by_budget is not None:
        return by_budget, "budget"
    return None, ""


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _EtaColumn(ProgressColumn):
    """``eta 0:00:28 (timeout)``: redrawn as the clock runs, not only when a trial ends."""

    def __init__(self, progress: TrialProgress) -> None:
        super().__init__()
        self.owner = progress

    def render(self, task: Any) -> Text:
        seconds, why = self.owner.eta()
        if seconds is None:
            return Text("eta -:--:--", style="progress.remaining")
        return Text(f"eta {_clock(seconds)} ({why})", style="progress.remaining")


class TrialProgress:
    """A progress bar with done/pruned/failed counts, the best value, elapsed time and ETA on a terminal;
    one line per trial otherwise (to stderr when stdout carries JSON). The ETA is the earlier of the trial
    budget at the pace so far and the ``timeout``, and says which."""

    def __init__(self, study: optuna.Study, n_trials: int, *, quiet: bool = False,
                 timeout: float | None = None) -> None:
        self.n_trials = n_trials
        self.quiet = quiet
        self.timeout = timeout
        c = counts(study)
        self.done = c["COMPLETE"] + c["PRUNED"]
        self.done_before = self.done
        self.pruned, self.failed = c["PRUNED"], c["FAIL"]
        self.start = time.monotonic()
        self.running_best = RunningBest(study)
        self.rich = sys.stdout.isatty() and not quiet
        self.progress: Progress | None = None
        if self.rich:
            # One line on a terminal as wide as it is: the bar takes what the text leaves (the counts, the stats
            # and "eta 0:00:00 (timeout)" need about 60 columns besides the name, the elapsed clock 8 more); on a
            # narrow one the name is shortened and the elapsed clock left out.
            narrow = out.width < 100
            name, room = cell(study.study_name), max(10, out.width // (6 if narrow else 4))
            if len(name) > room:
                name = name[:room - 1] + "…"
            bar = max(4, min(40, out.width - len(name) - len(str(n_trials)) * 2 - (58 if narrow else 72)))
            clocks = [_EtaColumn(self)] if narrow else [TimeElapsedColumn(), _EtaColumn(self)]
            self.progress = Progress(
                TextColumn("{task.description}", style="bold", markup=False), BarColumn(bar_width=bar),
                TextColumn("{task.completed}/{task.total}", markup=False),
                TextColumn("{task.fields[stats]}", markup=False), *clocks,
                console=out, transient=False,
                # The console writes through sys.stdout: a progress that swapped sys.stdout for its own proxy
                # would write into itself without end. Trial lines go through progress.console instead.
                redirect_stdout=False, redirect_stderr=False,
            )
            self.task = self.progress.add_task(name, total=n_trials,
                                               completed=min(self.done, n_trials), stats=self._stats(study))

    def eta(self) -> tuple[float | None, str]:
        return eta(time.monotonic() - self.start, self.done - self.done_before, max(0, self.n_trials - self.done),
                   self.timeout)

    def _stats(self, study: optuna.Study) -> str:
        return f"pruned {self.pruned} failed {self.failed} best {fmt(self.running_best.value)}"

    def __enter__(self) -> TrialProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def note(self, line: str) -> None:
        """A line about the run (e.g. the pack size chosen), above the progress bar or between trial lines."""
        if self.progress is not None:
            self.progress.console.print(clean(line), markup=False, highlight=False)
            return
        stream = stderr if self.quiet else stdout
        stream.write(clean(line) + "\n")
        stream.flush()

    def __call__(self, outcome: TrialOutcome, study: optuna.Study) -> None:
        if outcome.state in ("COMPLETE", "PRUNED"):
            self.done += 1
        best = self.running_best.see(outcome)
        self.pruned += outcome.state == "PRUNED"
        self.failed += outcome.state == "FAIL"
        if self.progress is not None:
            self.progress.update(self.task, completed=min(self.done, self.n_trials), stats=self._stats(study))
            if outcome.state == "FAIL":
                self.progress.console.print(styled((f"trial {outcome.number} failed:", "red"), " ",
                                                   one_line(outcome.reason)))
            return
        line = trial_line(outcome, self.done, self.n_trials, best)
        stream = stderr if self.quiet else stdout
        stream.write(clean(line) + "\n")
        stream.flush()
