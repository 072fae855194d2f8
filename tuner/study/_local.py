"""Running a prepared study's trials in this process: on the trial engine one by one, or in packs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import optuna
import torch

from tuner.study._autopack import PackChoice, choose_pack
from tuner.study._autoworkers import MIN_STUDY_SECONDS
from tuner.study._engine import RunSummary, TrialOutcome, pack_caps, run_trials, use_threads
from tuner.study._prepare import PreparedStudy
from tuner.study._record import FINISHED

__all__ = ["run_prepared"]

OnTrial = Callable[[TrialOutcome, optuna.Study], None]


def run_prepared(study: optuna.Study, prepared: PreparedStudy, *, n_trials: int | None = None,
                 timeout: float | None = None, workers: int = 1, max_consecutive_failures: int | None = None,
                 on_trial: OnTrial | None = None, on_start: Callable[[str], None] | None = None,
                 threads: int | None = None, deadline: float | None = None,
                 pack: PackChoice | None = None, started: float | None = None) -> RunSummary:
    """Runs a prepared study's trials in this process on the trial engine (``tuner.study.run_trials``), in
    packs where the spec asks for them (``pack: auto`` times them first). ``workers``: how many processes
    share this machine's cores (torch threads default to cores / workers). ``on_start`` gets one line saying
    how the trials will run (pack size and why) before the first starts. ``threads``: torch threads already
    timed (the spec's ``threads`` wins; None: timed here). ``deadline``: a ``time.time()`` at which the
    timeout is up (a worker's supervisor's), instead of ``timeout`` seconds from the first trial. ``pack``: the
    pack size already chosen. ``started``: when a pool of workers began (the failures in a row are theirs
    together)."""
    plan = prepared.plan()
    plan.started = started
    if max_consecutive_failures is not None:
        plan.max_consecutive_failures = max_consecutive_failures
    if deadline is not None:
        timeout = max(0.0, deadline - time.time())
    time_left = timeout if timeout is not None else plan.timeout
    # Under a short timeout, timing threads (a second or so) would take much of it: one thread, the faster on
    # the small models such studies train (benchmarks/README.md, "Trainer throughput").
    short = time_left is not None and time_left < MIN_STUDY_SECONDS
    threads = use_threads(prepared.trainer, prepared.spec.threads or threads or (1 if short else None), workers)
    n_trials = n_trials or plan.n_trials
    left = n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if deadline is not None:
        timeout = max(0.0, deadline - time.time())
    time_left = timeout if timeout is not None else plan.timeout
    choice = pack or choose_pack(prepared, left, workers, threads, time_left)
    memory = pack_caps(study).get(str(prepared.trainer.device))
    if choice.k > 1 and memory and memory["trials"] < choice.k:
        k = memory["trials"]
        choice = dataclasses.replace(
            choice, k=k, threads=choice.threads if k > 1 else None,
            why=f"{choice.why}{'; ' if choice.why else ''}at most {k} here: {memory.get('ran_out')} trials training at "
                f"once ran out of memory on {prepared.trainer.device} before (trial {memory.get('trial')})")
    if on_start is not None and (choice.k > 1 or choice.why):
        on_start(choice.line())
    if deadline is not None:  # what the pack probe took is the timeout's too
        timeout = max(0.0, deadline - time.time())
    if choice.k > 1:
        from tuner.study._packs import run_packed

        if choice.threads is not None:
            torch.set_num_threads(choice.threads)
            threads = choice.threads
        summary = run_packed(study, plan, prepared.executor(), prepared.trainer, choice.k, n_trials=n_trials,
                             timeout=timeout, threads=threads, on_trial=on_trial)
    else:
        summary = run_trials(study, plan, prepared.executor(), n_trials=n_trials, timeout=timeout, threads=threads,
                             on_trial=on_trial)
    summary.pack, summary.pack_why = choice.k, choice.why
    return summary
