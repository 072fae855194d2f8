"""Running a study, and describing one: what ``study create/run/list/show`` do, without any printing.

``run_study`` runs a prepared study in this process or with ``--workers`` processes (each runs the trial
engine); the caller gets a ``TrialOutcome`` per finished trial and a ``SessionResult``. ``study_summary`` and
``list_studies`` (from ``_describe``, which loads without PyTorch) describe studies as data. The command line
only parses flags and prints these.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna

from tuner.config import TrainConfig
from tuner.errors import count
from tuner.study._describe import list_studies, study_summary, trial_row
from tuner.study._engine import TrialOutcome
from tuner.study._local import run_prepared
from tuner.study._prepare import PreparedStudy
from tuner.study._record import FINISHED, best_trial, better, direction_of, primary, record_of
from tuner.study._workers import MAX_WORKERS_PER_CORE, WorkerReport, check_workers, no_pool, parse_devices, run_workers

if TYPE_CHECKING:
    from tuner.study._autopack import PackChoice

__all__ = ["SessionResult", "run_study", "run_prepared", "check_workers", "study_summary", "list_studies",
           "trial_row", "trial_line", "outcome_of", "MAX_WORKERS_PER_CORE"]

OnTrial = Callable[[TrialOutcome, optuna.Study], None]


@dataclass
class SessionResult:
    trials: int = 0
    seconds: float = 0.0
    stopped_by: str = "budget"  # budget | timeout
    threads: int | None = None  # torch threads of a run in this process
    workers: list[WorkerReport] = field(default_factory=list)  # --workers: what each process did
    requeued: list[int] = field(default_factory=list)  # trials of lost workers whose parameters run again
    interrupted: int | None = None  # the signal that stopped the workers
    pack: int | None = None  # trials trained at once in this process
    pack_why: str = ""
    workers_why: str = ""  # why this many processes (``auto``), in words

    @property
    def failure(self) -> str | None:
        """Why the run failed as a whole (every worker stopped with an error), or None."""
        lost = self.lost_workers
        if self.interrupted is None and self.workers and lost and len(lost) == len(self.workers):
            return f"every worker stopped with an error; the first: {lost[0].stopped()}"
        return None

    @property
    def lost_workers(self) -> list[WorkerReport]:
        """Workers that stopped with an error (not by Ctrl-C or SIGTERM)."""
        return [w for w in self.workers if (w.exitcode not in (0, None) or w.error) and w.exitcode not in (130, 143)]


def queued_waiting(queued: int) -> str:
    """`` (2 queued configs wait for it)`` after "raise the budget": configs queued beyond a spent budget."""
    return f" ({count(queued, 'queued config')} {'waits' if queued == 1 else 'wait'} for it)" if queued else ""


def run_study(study: optuna.Study, prepared: PreparedStudy, *, n_trials: int | None = None,
              timeout: float | None = None, workers: int | str = 1, devices: str | None = None,
              on_trial: OnTrial | None = None, on_start: Callable[[str], None] | None = None) -> SessionResult:
    """Runs ``study`` until its budget (or ``timeout``) is met, here or in ``workers`` processes (``auto``: one
    per core where a trial trains as fast on one thread, see ``_autoworkers``); ``on_start`` gets lines saying
    how the trials will run (processes, pack size, and why) before the first trial. Every finished trial is
    logged to the spec's ``mlflow`` / ``tensorboard`` (or ``$TUNER_MLFLOW_URI``), if any."""
    from tuner._surface import option
    from tuner.study._autopack import choose_pack, requested_pack
    from tuner.study._autoworkers import WorkersChoice, choose_workers, requested_workers
    from tuner.track import tracking

    n_trials = n_trials or prepared.spec.n_trials
    timeout = timeout if timeout is not None else prepared.spec.timeout
    # The timeout is the whole run's, from here: choosing the workers, timing threads and packs count, in one
    # process as with workers (whose start-up counts too).
    deadline = time.time() + timeout if timeout else None
    device_list = parse_devices(devices)
    left = n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if left <= 0:  # the budget is spent: no workers to start, no pack to time (the caller says how to go on)
        no_pool()
        if prepared.storage_url:  # ... but trials a dead worker left RUNNING are failed, their configs queued again
            from tuner.study._liveness import reap_stale

            reap_stale(study, prepared.spec.grace_period)
        with tracking(study, None, mlflow=prepared.spec.mlflow, tensorboard=prepared.spec.tensorboard):
            pass  # ... but the trials a tracker has not logged yet are logged, as any run logs them
        return SessionResult(0, 0.0, "budget")
    choice = choose_workers(prepared, requested_workers(workers), devices=device_list, n_left=left,
                            timeout=timeout)
    pack = None
    if choice.n > 1 and choice.auto and not device_list and requested_pack(prepared.spec) != 1:
        # Trial packs, where they pay, train in one process on every core: asked first, as one process would.
        probe = choose_pack(prepared, left, 1, choice.alone or 1, _left(deadline))
        pack = probe  # packs that do not pay here pay less in a worker's share: the workers are told, not re-timed
        if probe.k > 1:
            packs = "trial packs pay off here" if probe.auto else f"packs of {probe.k} were asked for"
            n = option("workers", str(choice.n), str(choice.n))
            choice = WorkersChoice(1, f"{packs}, and they train in one process on the cores ({n} starts "
                                      f"{choice.n} processes anyway)", threads=choice.alone)
    check_workers(choice.n)
    if choice.n == 1:
        no_pool()  # a fork server started early for a pool that auto did not choose
    if on_start is not None and choice.why:
        on_start(choice.line())
    with tracking(study, on_trial, mlflow=prepared.spec.mlflow, tensorboard=prepared.spec.tensorboard) as on_trial:
        if choice.n > 1:
            result = _run_pool(study, prepared, choice.n, device_list, on_trial, deadline, choice.threads, pack)
            result.workers_why, result.threads = choice.why, choice.threads
            if pack is not None:
                result.pack, result.pack_why = pack.k, pack.why
            return result
        run = run_prepared(study, prepared, n_trials=n_trials, deadline=deadline, on_trial=on_trial,
                           on_start=on_start, threads=choice.threads, pack=pack)
    return SessionResult(len(run.outcomes), run.seconds, run.stopped_by, run.threads, pack=run.pack,
                         pack_why=run.pack_why, workers_why=choice.why)


def _run_pool(study: optuna.Study, prepared: PreparedStudy, workers: int, devices: list[str],
              on_trial: OnTrial | None, deadline: float | None, threads: int | None = None,
              pack: PackChoice | None = None) -> SessionResult:
    spec = prepared.spec
    # The timeout is the supervisor's: workers stop when it is up, however long they took to start.
    overrides = {k: v for k, v in (("deadline", deadline), ("threads", spec.threads or threads), ("pack", spec.pack),
                                   ("device", None if devices else spec.device)) if v is not None}
    overrides["started"] = time.time()  # the failures in a row are the workers' together, from now
    if pack is not None:  # chosen here already (one at a time): each worker says so instead of timing packs again
        overrides["pack_choice"] = {"k": pack.k, "why": pack.why}

    def finished(t: optuna.trial.FrozenTrial, s: optuna.Study) -> None:
        if on_trial is not None:
            on_trial(outcome_of(t), s)

    pool = run_workers(prepared.name, prepared.storage_url, workers, devices=devices, overrides=overrides,
                       on_trial=finished)
    # A worker that stopped at the deadline says so: the run stopped by its timeout, not by the budget.
    stopped_by = "timeout" if any(w.stopped_by == "timeout" for w in pool.workers) else "budget"
    return SessionResult(pool.finished, pool.seconds, stopped_by, None, pool.workers, pool.reaped, pool.interrupted)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.time())


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


class RunningBest:
    """The best value among the trials said so far, for trial lines: with workers the study may already hold a
    better trial whose line comes next, and a line must not show a best that no line above it had."""

    def __init__(self, study: optuna.Study) -> None:
        best = best_trial(study)
        self.value: float | None = primary(best) if best else None
        self.direction = direction_of(study)

    def see(self, outcome: TrialOutcome) -> float | None:
        """Takes a finished trial in; returns the best so far."""
        value = outcome.value
        if outcome.state == "COMPLETE" and value is not None and math.isfinite(value) and (
                self.value is None or better(value, self.value, self.direction)):
            self.value = value
        return self.value


def trial_lines(study: optuna.Study, done: int, n_trials: int,
                say: Callable[[str], None] | None) -> Callable[[TrialOutcome, optuna.Study], None]:
    """The callback that gives ``say`` one line per finished trial (None: says nothing): trials done of
    ``n_trials``, counted on from ``done``, and the best value so far as the lines above it showed it."""
    running_best = RunningBest(study)
    finished = [done]

    def on_trial(outcome: TrialOutcome, s: optuna.Study) -> None:
        finished[0] += outcome.state in ("COMPLETE", "PRUNED")
        best = running_best.see(outcome)
        if say is not None:
            say(trial_line(outcome, finished[0], n_trials, best))

    return on_trial


def trial_line(outcome: TrialOutcome, done: int, n_trials: int, best: float | None) -> str:
    """One line per finished trial, for logs and for ``tune(verbose=True)``."""
    config = outcome.config.summary() if outcome.config else "-"
    line = (f"trial {outcome.number:>4} {outcome.state:<8} val {_fmt(outcome.value)} test "
            f"{_fmt(outcome.test_value)} {outcome.seconds:6.1f}s  {config}  | done {done}/{n_trials} best "
            f"{_fmt(best)}")
    if outcome.reason and outcome.state != "COMPLETE":
        line += f"  ({' '.join(str(outcome.reason).split())})"
    return line


def outcome_of(trial: optuna.trial.FrozenTrial) -> TrialOutcome:
    """The outcome of a finished trial, read back from its record (a trial another process ran)."""
    rec = record_of(trial)
    return TrialOutcome(rec.number, rec.state, rec.value, rec.test_value, rec.reason, rec.seconds,
                        TrainConfig.from_dict(rec.config) if rec.config else None)
