"""Trial packs as trials: K trials of a study trained at once by ``tuner._pack.PackTrainer``.

Every member is a real Optuna trial: asked from the study under the claim lock (the budget counts it), its
config sampled, reported after every epoch and pruned on its own, told on its own with the same record as an
unpacked trial (config, history, test value, timings, reason). A pruned, diverged, timed-out or finished member
frees its slot, and the slot is refilled with a new trial at the next epoch boundary, so the pack stays full
until the budget is met. Configs that cannot be packed (L-BFGS, Adadelta, ``plateau``) and configs of another
batch size or optimizer family than the running pack train unpacked, one after the other, beside it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from tuner._pack import PackTrainer, pack_key, packable
from tuner.config import TrainConfig
from tuner.study._engine import (
    Executor,
    RunPlan,
    RunSummary,
    TrialOutcome,
    _claim_lock,
    _fail_own_running,
    _storage_reason,
    _storage_stop,
    _take,
    _TimedOut,
    check_epoch,
    finish_trial,
    is_disk_full_error,
    record_outcome,
    run_one,
)
from tuner.study._liveness import Heartbeat, reap_stale
from tuner.study._record import FINISHED, Key, StopKind, StopReason
from tuner.study._writes import StudyView, Write, write_batch
from tuner.train import Diverged

__all__ = ["run_packed"]


@dataclass
class _Slot:
    trial: optuna.Trial
    config: TrainConfig
    started: float


def _pruner_startup(pruner: optuna.pruners.BasePruner) -> int:
    """How many complete trials the pruner waits for before it prunes anything (median, percentile and
    threshold-free pruners of that kind: ``n_startup_trials``; wrapped by ``patient``), else 0."""
    inner = getattr(pruner, "_wrapped_pruner", pruner)
    startup = getattr(inner, "_n_startup_trials", 0)
    return startup if isinstance(startup, int) and startup > 0 else 0


def _complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def run_packed(study: optuna.Study, plan: RunPlan, executor: Executor, trainer, pack: int, *,
               n_trials: int | None = None, timeout: float | None = None, threads: int = 1,
               on_trial: Callable[[TrialOutcome, optuna.Study], None] | None = None) -> RunSummary:
    """Runs trials ``pack`` at a time until the study holds ``n_trials`` finished trials (or ``timeout``)."""
    n_trials = n_trials or plan.n_trials
    timeout = timeout if timeout is not None else plan.timeout
    summary = RunSummary(threads=threads)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    packer: PackTrainer | None = None
    current: tuple[int, str, int] | None = None  # the pack key of the configs in the slots
    slots: list[_Slot | None] = [None] * pack
    consecutive = 0
    next_reap = 0.0
    # Until the pruner has its first complete trials, no member can be pruned, and a full first pack would
    # train every member to its last epoch; one at a time, the trials after those first ones are pruned
    # early. So the pack holds only as many members as the pruner waits for, until they are complete.
    startup = _pruner_startup(study.pruner)
    # One heartbeat thread for the whole pack: every member's beat in one write.
    heartbeat = Heartbeat(study, None, plan.heartbeat_interval) if plan.storage_url else None

    def done(outcome: TrialOutcome) -> None:
        nonlocal consecutive
        consecutive = record_outcome(study, plan, summary, outcome, consecutive, on_trial)

    def close(slot: int, state: TrialState, reason: StopReason | None, value: float | None = None,
              test: float | None = None, extra: dict | None = None) -> None:
        entry = slots[slot]
        assert entry is not None and packer is not None
        member = packer.members[slot]
        if heartbeat is not None:
            heartbeat.discard(entry.trial._trial_id)
        attrs = {Key.VAL_HISTORY: [round(v, 6) for v in member.val_history],
                 Key.EPOCH_TIMES: [round(t, 4) for t in member.epoch_times],
                 Key.TRAIN_LOSS: [round(v, 6) if math.isfinite(v) else str(v) for v in member.train_loss],
                 Key.PACK: pack, **(extra or {})}
        packer.free(slot)
        slots[slot] = None
        done(finish_trial(study, plan, entry.trial, entry.config, time.perf_counter() - entry.started, state,
                          reason, value, test, attrs))

    try:
        if heartbeat is not None:
            heartbeat.__enter__()
        while True:
            timed_out = deadline is not None and time.monotonic() >= deadline
            if plan.storage_url and time.monotonic() >= next_reap:
                # At most once a heartbeat interval: a lost worker's trial waits out the grace period anyway.
                reap_stale(study, plan.grace_period)
                next_reap = time.monotonic() + plan.heartbeat_interval
            # Refill free slots at the epoch boundary, within the budget. A config of another kind (another
            # batch size or optimizer family, or one that cannot be packed) trains unpacked, right away.
            if not any(slots):  # the pack ran out: the next one starts afresh
                slots, packer = [], None
            if startup and _complete(study) >= startup:
                startup = 0  # the pruner has what it needs: the pack may be full from now on
            room = pack if not startup else min(pack, startup)
            if len(slots) < room:
                if packer is not None:
                    packer.grow(room)
                slots += [None] * (room - len(slots))
            while not timed_out and None in slots:
                with _claim_lock(study, plan.storage_url):
                    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                    taken = _take(study, plan, executor.device) if len(trials) < n_trials else None
                if taken is None:
                    break
                trial, config = taken
                key = pack_key(config) if packable(config) is None else None
                if key is None or (any(slots) and key != current):
                    done(run_one(study, plan, executor, trial, config, deadline=deadline))
                    timed_out = deadline is not None and time.monotonic() >= deadline
                    continue
                if packer is None or key != current:
                    packer, current = PackTrainer(trainer, len(slots), key[0], key[1]), key
                slot = slots.index(None)
                packer.fill(slot, config)
                if heartbeat is not None:
                    heartbeat.add(trial._trial_id)
                slots[slot] = _Slot(trial, config, time.perf_counter())
            if None in slots and any(slots):
                # Nothing more to train now (the budget is met, or the pruner's first trials are still
                # running): the pack computes for its members only, and grows again when it may.
                moved = packer.compact()
                slots = [slots[old] for old in sorted(moved)]
            if not any(slots):
                if timed_out:
                    summary.stopped_by = "timeout"
                    break
                if len(study.get_trials(deepcopy=False, states=FINISHED)) >= n_trials:
                    break
                time.sleep(min(1.0, plan.heartbeat_interval))  # the rest of the budget is in flight elsewhere
                continue
            assert packer is not None
            values = packer.run_epoch()
            # The epoch's reports in one write, then every member judged against one read of the study.
            reported: dict[int, float] = {}
            for slot, value in values.items():
                try:
                    packer.check(slot)
                except Diverged as exc:
                    close(slot, TrialState.PRUNED, StopReason(StopKind.DIVERGED, exc.reason),
                          extra={Key.DIVERGED: True})
                    continue
                reported[slot] = value
            epochs = {slot: packer.members[slot].epoch - 1 for slot in reported}
            errors = write_batch(study, [Write(slots[slot].trial._trial_id, "value", epochs[slot], value)
                                         for slot, value in reported.items()])
            view: StudyView | None = None  # read again after a member completes, as one trial after another would
            for slot, value in reported.items():
                entry = slots[slot]
                epoch = epochs[slot]
                error = errors.get(entry.trial._trial_id)
                if error is not None:
                    if is_disk_full_error(error, plan.storage_url):
                        raise _storage_stop(study, plan, error, entry.trial.number) from error
                    close(slot, TrialState.FAIL, _storage_reason(error))
                    continue
                view = view or StudyView(study)
                try:
                    check_epoch(plan, entry.config, epoch, value, deadline, view.should_prune(entry.trial._trial_id))
                except optuna.TrialPruned as exc:
                    close(slot, TrialState.PRUNED, StopReason(StopKind.PRUNED, str(exc)))
                    continue
                except _TimedOut as exc:
                    close(slot, TrialState.FAIL, StopReason(StopKind.TIMEOUT, str(exc)), extra={Key.TIMED_OUT: True})
                    continue
                if packer.members[slot].epoch >= entry.config.epochs:
                    test = packer.test_value(slot)
                    close(slot, TrialState.COMPLETE, None, value, test, extra={Key.TEST_VALUE: test})
                    view = None
    except BaseException:
        if heartbeat is not None:
            with contextlib.suppress(Exception):
                heartbeat.__exit__(None, None, None)
        _fail_own_running(study)
        raise
    if heartbeat is not None:
        heartbeat.__exit__(None, None, None)
    summary.seconds = time.monotonic() - start
    return summary
