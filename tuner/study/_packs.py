"""Trial packs as trials: K trials of a study trained at once by ``tuner._pack.PackTrainer``.

Every member is a real Optuna trial: asked from the study under the claim lock (the budget counts it), its
config sampled, reported after every epoch and pruned on its own, told on its own with the same record as an
unpacked trial (config, history, test value, timings, reason). A pruned, diverged, timed-out or finished member
frees its slot, and the slot is refilled with a new trial at the next epoch boundary, so the packs stay full
until the budget is met. Configs of different kinds (batch size, update family) train in packs of their own,
side by side, one epoch of each per round; configs that cannot be packed (L-BFGS, Adadelta, the tuning-free
optimizers, ``plateau``) train unpacked, one after the other, beside them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from tuner._pack import PackTrainer, pack_key, packable
from tuner.config import TrainConfig
from tuner.errors import error_text
from tuner.study._engine import (
    INTERRUPTED,
    Executor,
    RunPlan,
    RunSummary,
    TrialOutcome,
    _claim_lock,
    _fail_own_running,
    _record_oom,
    _storage_reason,
    _storage_stop,
    _take,
    _TimedOut,
    check_epoch,
    device_key,
    finish_trial,
    is_disk_full_error,
    micro_batch_for,
    oom_limits,
    pack_caps,
    queue_again,
    record_outcome,
    record_pack_cap,
    run_one,
    stops_if_deleted,
)
from tuner.study._limits import failed_pack_kinds
from tuner.study._liveness import Heartbeat, reap_stale
from tuner.study._record import FINISHED, Key, StopKind, StopReason, StudyKey, history_attrs, storage_of
from tuner.study._samplers import judges_by_complete_trials, may_prune_at
from tuner.study._writes import StudyView, Write, write_batch
from tuner.train import Diverged

__all__ = ["run_packed"]

log = logging.getLogger(__name__)


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


def _as_read(study: optuna.Study, trial: optuna.Trial, taken: bool) -> FrozenTrial:
    """``trial`` as a read of the study would see it now. The trial taken is RUNNING with the parameters just
    sampled, which Optuna's ``Trial`` keeps in hand: a copy of that and of the trial's system attributes, not a
    full read (about 2 ms on SQLite with a pack running). A proposal set aside was told FAIL since: that is read."""
    kept = getattr(trial, "_cached_frozen_trial", None)
    storage = storage_of(study)
    if taken and isinstance(kept, FrozenTrial) and kept.state == TrialState.RUNNING:
        frozen = copy.deepcopy(kept)
        # What the sampler wrote while asking (TPE's relative parameters, which its constant liar reads for
        # running trials) is not in the Trial's copy: read that alone (one small query on an RDB storage).
        backend = getattr(storage, "_backend", None)  # an RDB storage under Optuna's cache: its own small query
        frozen.system_attrs = (backend if isinstance(backend, optuna.storages.RDBStorage)
                               else storage).get_trial_system_attrs(trial._trial_id)
        return frozen
    return storage.get_trial(trial._trial_id)


def _complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class _Pack:
    """One kind of config (batch size, update family) in training: its stacked trainer and the trials in its
    slots (``None``: a free slot)."""

    def __init__(self, trainer: PackTrainer) -> None:
        self.trainer = trainer
        self.slots: list[_Slot | None] = [None] * trainer.k

    def live(self) -> int:
        return sum(entry is not None for entry in self.slots)

    def free_slot(self, room: int) -> int:
        """A free slot, adding slots (doubling, up to ``room``) when none is free."""
        if None not in self.slots:
            size = max(len(self.slots) + 1, min(2 * len(self.slots), room))
            self.trainer.grow(size)
            self.slots += [None] * (size - len(self.slots))
        return self.slots.index(None)

    def compact(self) -> None:
        if None in self.slots and self.live():
            moved = self.trainer.compact()
            self.slots = [self.slots[old] for old in sorted(moved)]


@stops_if_deleted
def run_packed(study: optuna.Study, plan: RunPlan, executor: Executor, trainer, pack: int, *,
               n_trials: int | None = None, timeout: float | None = None, threads: int = 1,
               on_trial: Callable[[TrialOutcome, optuna.Study], None] | None = None) -> RunSummary:
    """Runs trials ``pack`` at a time until the study holds ``n_trials`` finished trials (or ``timeout``):
    one pack per kind of config (batch size, update family), ``pack`` members in all, every pack trained
    one epoch per round; configs that cannot be packed train alone."""
    n_trials = n_trials or plan.n_trials
    timeout = timeout if timeout is not None else plan.timeout
    summary = RunSummary(threads=threads)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    packs: dict[tuple[int, str, int], _Pack] = {}
    consecutive = 0
    next_reap = 0.0
    # Until the pruner has its first complete trials, no member can be pruned, and a full first pack would
    # train every member to its last epoch; one at a time, the trials after those first ones are pruned
    # early. So packs hold only as many members as the pruner waits for, until they are complete.
    startup = _pruner_startup(study.pruner)
    # The most trials that train at once: halved each time several run out of memory together, and kept in
    # the study per device (``run_prepared`` starts a later run at it).
    cap = pack
    suspects: set[int] = set()  # batch sizes that ran out of memory alone in a pack beside other packs, once
    failed_kinds = set(failed_pack_kinds(study))  # kinds of config whose pack's training step raised
    # One heartbeat thread for all members: every member's beat in one write.
    heartbeat = Heartbeat(study, None, plan.heartbeat_interval) if plan.storage_url else None

    def done(outcome: TrialOutcome, set_aside: bool = False) -> None:
        nonlocal consecutive
        consecutive = record_outcome(study, plan, summary, outcome, consecutive, on_trial, set_aside=set_aside)

    def close(p: _Pack, slot: int, state: TrialState, reason: StopReason | None, value: float | None = None,
              test: float | None = None, extra: dict | None = None, dropped: bool = False) -> None:
        entry, member = p.slots[slot], p.trainer.members[slot]
        assert entry is not None and member is not None
        if heartbeat is not None:
            heartbeat.discard(entry.trial._trial_id)
        attrs = {**history_attrs(member.val_history, member.epoch_times, member.train_loss), Key.PACK: pack,
                 **(extra or {})}
        if not dropped:  # a dropped pack's tensors may be half replaced (out of memory while growing or shrinking)
            p.trainer.free(slot)
        p.slots[slot] = None
        done(finish_trial(study, plan, entry.trial, entry.config, time.perf_counter() - entry.started, state,
                          reason, value, test, attrs))

    def train_epoch(p: _Pack) -> None:
        try:
            values = p.trainer.run_epoch()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # the model fails under torch.func here, though the probe's steps did not
            pack_failed(p, exc)
            return
        # The epoch's reports in one write, then every member judged against one read of the study.
        reported: dict[int, float] = {}
        for slot, value in values.items():
            try:
                p.trainer.check(slot)
            except Diverged as exc:
                history = p.trainer.members[slot].val_history  # its last value, this epoch's, was not reported
                close(p, slot, TrialState.PRUNED, StopReason(StopKind.DIVERGED, exc.reason),
                      history[-2] if len(history) > 1 else None, extra={Key.DIVERGED: True})
                continue
            reported[slot] = value
        epochs = {slot: p.trainer.members[slot].epoch - 1 for slot in reported}
        # Median-like pruners see the members that started before a member as complete (StudyView).
        members = ({e.trial._trial_id for q in packs.values() for e in q.slots if e is not None}
                   if judges_by_complete_trials(study.pruner) else set())
        errors = write_batch(study, [Write(p.slots[slot].trial._trial_id, "value", epochs[slot], value)
                                     for slot, value in reported.items()])
        view: StudyView | None = None  # read again after a member completes, as one trial after another would
        # In trial-number order: a member is compared with the members that started before it (StudyView).
        for slot, value in sorted(reported.items(), key=lambda item: p.slots[item[0]].trial.number):
            entry = p.slots[slot]
            error = errors.get(entry.trial._trial_id)
            if error is not None:
                if is_disk_full_error(error, plan.storage_url):
                    raise _storage_stop(study, plan, error, entry.trial.number) from error
                close(p, slot, TrialState.FAIL, _storage_reason(error, requeued=True))
                queue_again(study, entry.trial)  # not the config's fault: it trains again
                if view is not None:
                    view.forget(entry.trial._trial_id)
                continue
            judged = may_prune_at(study.pruner, epochs[slot])  # else asking would only cost a read of the study
            view = view or (StudyView(study, members) if judged else None)
            try:
                check_epoch(plan, entry.config, epochs[slot], value, deadline,
                            judged and view is not None and view.should_prune(entry.trial._trial_id))
            except optuna.TrialPruned as exc:
                close(p, slot, TrialState.PRUNED, StopReason(StopKind.PRUNED, str(exc)), value)
                view.forget(entry.trial._trial_id)  # a pruned trial is not one the next members are compared with
                continue
            except _TimedOut as exc:
                close(p, slot, TrialState.FAIL, StopReason(StopKind.TIMEOUT, str(exc)), extra={Key.TIMED_OUT: True})
                if view is not None:
                    view.forget(entry.trial._trial_id)
                continue
            if p.trainer.members[slot].epoch >= entry.config.epochs:
                test = p.trainer.test_value(slot)
                close(p, slot, TrialState.COMPLETE, None, value, test, extra={Key.TEST_VALUE: test})
                # A median-like pruner already sees it, complete, in the members judged after it (an earlier
                # member, with every epoch it reported); other pruners read the study again.
                view = view if members else None

    def alone(config: TrainConfig) -> bool:
        """A config that cannot be packed, of a kind whose pack failed, or that trains as micro-batches
        (gradient accumulation) here."""
        return (packable(config) is not None or pack_key(config) in failed_kinds
                or micro_batch_for(study, plan, config, executor.device) is not None)

    def pack_failed(p: _Pack, exc: Exception) -> None:
        """A pack whose training step raised (not out of memory): its members are failed with the reason and
        their configs queued again, and configs of its kind train alone from now on, as unpacked trials (one
        that fails alone then fails with its own error)."""
        key = next(k for k, q in packs.items() if q is p)
        del packs[key]
        text = error_text(exc)
        failed_kinds.add(key)
        number = next(e.trial.number for e in p.slots if e is not None)
        with contextlib.suppress(Exception):  # other workers and later runs of the study train them alone too
            study.set_user_attr(f"{StudyKey.PACK_FAILED}/{key[0]}/{key[1]}/{key[2]}",
                                {"batch_size": key[0], "family": key[1], "epochs": key[2], "error": text,
                                 "trial": number})
        log.warning("a pack's training step failed (%s): trials of batch size %d with %s-family optimizers train "
                    "one at a time from now on", text, key[0], key[1])
        reason = StopReason(StopKind.DISCARDED, f"discarded: its pack's training step failed ({text}); its config "
                                                f"was queued again, to train alone")
        for slot, entry in enumerate(p.slots):
            if entry is not None:
                close(p, slot, TrialState.FAIL, reason, dropped=True)
                queue_again(study, entry.trial)

    def blamed(batch: int, alone: bool) -> bool:
        """Whether a batch size that ran out of memory with ``alone`` trial(s) of it on the device is too large
        there. Beside other trials in packs, the device's memory is shared: the first time, it is not blamed
        (its trial is queued again); the second time at that batch size, it is."""
        if not alone:
            return False
        if not sum(q.live() for q in packs.values()) or batch in suspects:
            return True
        suspects.add(batch)
        return False

    def out_of_memory(key: tuple[int, str, int], error: str,
                      unplaced: list[tuple[optuna.Trial, TrainConfig]] = ()) -> None:
        """The pack of ``key`` ran out of memory (training, or growing for ``unplaced[0]``, the round's trial
        being placed): its members and the trial being placed are failed with the reason and the pack dropped;
        the round's trials not yet placed are set aside and queued again. Several trials of the pack on the
        device: their configs were not at fault, so they are queued again (as trials of a lost worker are) and
        at most half as many trials train at once from now on. One: see ``blamed``; a trial blamed is one whose
        batch size is too large for the device, as for a trial trained on its own."""
        nonlocal cap
        p = packs.pop(key, None)
        slots = [slot for slot, entry in enumerate(p.slots) if entry is not None] if p is not None else []
        placing, rest = list(unplaced[:1]), list(unplaced[1:])
        held = [(p.slots[slot].trial, p.slots[slot].config) for slot in slots] + placing
        others = sum(q.live() for q in packs.values())
        batch, device = key[0], device_key(executor.device)
        blame = blamed(batch, len(held) == 1)
        smaller = None
        if blame:
            # As a trial trained alone: the config that ran out trains again at the space's next smaller batch
            # size (under accumulate, as it is, in micro-batches: queued again below).
            smaller = (plan.space.largest_batch_below(batch) if plan.on_oom != "accumulate"
                       and all("batch_size" in t.params for t, _ in held) else None)
            reason = StopReason(StopKind.OUT_OF_MEMORY, f"out of memory: {error}"
                                + _record_oom(study, executor.device, batch, held[0][0].number, plan.on_oom)
                                + (f"; queued again at batch size {smaller}" if smaller else ""))
        else:
            if len(held) > 1:
                cap = max(1, min(cap, (len(held) + others) // 2))
                log.warning("%d trials ran out of memory on %s: at most %d train at once from now on",
                            len(held) + others, device, cap)
                cap = record_pack_cap(study, executor.device, cap, len(held) + others, held[0][0].number)
            reason = StopReason(StopKind.DISCARDED, f"discarded: a pack of {len(held)} trial(s) at batch size "
                                                    f"{batch} ran out of memory on {device} ({error})"
                                                    + (f" beside {others} other trial(s)" if others else "")
                                                    + f"; its config was queued again, and at most {cap} trials "
                                                      f"train at once from now on")
        aside = StopReason(StopKind.DISCARDED, f"discarded: not placed, as a pack at batch size {batch} ran out of "
                                               f"memory on {device} ({error}); its config was queued again")
        for slot in slots:
            close(p, slot, TrialState.FAIL, reason, extra={Key.OOM: True}, dropped=True)
        for (trial, config), why in [(t, reason) for t in placing] + [(t, aside) for t in rest]:
            done(finish_trial(study, plan, trial, config, 0.0, TrialState.FAIL, why,
                              attrs={Key.OOM: True} if why is reason else {}))
        again = not blame or plan.on_oom == "accumulate"  # accumulated, a batch size blamed may fit now
        for trial, _ in [*held, *rest] if again else rest:
            queue_again(study, trial)
        for trial, _ in held if smaller is not None else []:
            queue_again(study, trial, {**trial.params, "batch_size": smaller})

    try:
        if heartbeat is not None:
            heartbeat.__enter__()
        while True:
            timed_out = deadline is not None and time.monotonic() >= deadline
            if plan.storage_url and time.monotonic() >= next_reap:
                # At most once a heartbeat interval: a lost worker's trial waits out the grace period anyway.
                reap_stale(study, plan.grace_period)
                next_reap = time.monotonic() + plan.heartbeat_interval
                # A cap another worker recorded since (its packs ran out of memory on this device) holds here too.
                recorded = pack_caps(study).get(device_key(executor.device))
                if recorded and recorded["trials"] < cap:
                    log.warning("at most %d trials train at once on %s from now on: %d trials training at once "
                                "ran out of memory there (trial %s)", recorded["trials"],
                                device_key(executor.device), recorded.get("ran_out"), recorded.get("trial"))
                    cap = recorded["trials"]
                failed_kinds.update(failed_pack_kinds(study))  # another worker's packs that failed
            for key in [key for key, p in packs.items() if not p.live()]:
                del packs[key]  # a pack that ran out: the next of its kind starts afresh
            if startup and _complete(study) >= startup:
                startup = 0  # the pruner has what it needs: packs may be full from now on
            room = min(cap, pack if not startup else min(pack, startup))
            live = sum(p.live() for p in packs.values())
            ran_out = False  # a pack ran out of memory: release what it held once it is gone
            # Refill at the epoch boundary, within the budget: each config joins the pack of its kind (a new
            # one if none is training); one that cannot be packed trains alone, once the round's are filled.
            # One claim per round: the study is read once, and every trial taken joins that read, so the
            # sampler (constant liar) and the duplicate check see the members just taken.
            while not timed_out and live < room:
                taken: list[tuple[optuna.Trial, TrainConfig]] = []
                set_aside: list[TrialOutcome] = []
                with _claim_lock(study, plan.storage_url) as locked:
                    trials = study.get_trials(deepcopy=False)
                    started = sum(t.state in FINISHED or t.state == TrialState.RUNNING for t in trials)
                    # Read once for the round's trials (a study that accumulates gradients avoids nothing).
                    limits = oom_limits(study) if locked and plan.on_oom != "accumulate" else None
                    while live + len(taken) < room and started < n_trials:
                        asked: list[optuna.Trial] = []
                        taken.append(_take(study, plan, executor.device, trials if locked else None, asked, limits,
                                           set_aside))
                        started += len(asked)  # set-aside proposals are finished trials of the budget too
                        if not locked or alone(taken[-1][1]):
                            # No lock: another worker may ask meanwhile, so read again. A config that trains
                            # alone trains before the next is asked, as one trial after another would.
                            break
                        trials = [*trials, *(_as_read(study, t, t is taken[-1][0]) for t in asked)]
                for aside in set_aside:  # a line each, as a pool's supervisor gives them
                    done(aside, set_aside=True)
                if not taken:
                    break
                for i, (trial, config) in enumerate(taken):
                    if alone(config):  # the round's last: the packs are filled, it trains now
                        done(run_one(study, plan, executor, trial, config, deadline=deadline, blame_oom=blamed))
                        timed_out = deadline is not None and time.monotonic() >= deadline
                        continue
                    key = pack_key(config)
                    try:
                        if key not in packs:
                            packs[key] = _Pack(PackTrainer(trainer, 1, key[0], key[1]))
                        slot = packs[key].free_slot(room)  # may grow the pack: new tensors on the device
                        packs[key].trainer.fill(slot, config)
                    except torch.cuda.OutOfMemoryError as exc:
                        out_of_memory(key, f"{exc}".splitlines()[0][:800], taken[i:])
                        ran_out = True
                        break
                    if heartbeat is not None:
                        heartbeat.add(trial._trial_id)
                    packs[key].slots[slot] = _Slot(trial, config, time.perf_counter())
                    live += 1
                if ran_out:
                    break
            for key in list(packs):
                # Free slots that could not be filled (budget met, the pruner's first trials still running):
                # each pack computes for its members only, and grows again when it may.
                try:
                    packs[key].compact()
                except torch.cuda.OutOfMemoryError as exc:
                    out_of_memory(key, f"{exc}".splitlines()[0][:800])
                    ran_out = True
            live = sum(p.live() for p in packs.values())
            if ran_out:
                executor.release_memory()  # outside the except block: the error's traceback is gone
                ran_out = False
            if not live:
                if timed_out:
                    summary.stopped_by = "timeout"
                    break
                if len(study.get_trials(deepcopy=False, states=FINISHED)) >= n_trials:
                    break
                time.sleep(min(1.0, plan.heartbeat_interval))  # the rest of the budget is in flight elsewhere
                continue
            for key in list(packs):
                if key in packs and packs[key].live():
                    try:
                        train_epoch(packs[key])
                    except torch.cuda.OutOfMemoryError as exc:
                        out_of_memory(key, f"{exc}".splitlines()[0][:800])
                        ran_out = True
                if ran_out:
                    # Outside the except block: the error's traceback, which holds the pack's activations,
                    # is gone by now, and so is the dropped pack.
                    executor.release_memory()
                    ran_out = False
    except BaseException as exc:
        if heartbeat is not None:
            with contextlib.suppress(Exception):
                heartbeat.__exit__(None, None, None)
        try:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                # Each member keeps what it reported, with its pack, as a trial interrupted alone does.
                reason = StopReason(StopKind.INTERRUPTED, INTERRUPTED)
                for p in list(packs.values()):
                    for slot, entry in enumerate(p.slots):
                        if entry is not None:
                            with contextlib.suppress(Exception):
                                close(p, slot, TrialState.FAIL, reason, dropped=True)
                            queue_again(study, entry.trial)
        finally:
            _fail_own_running(study)  # anything left: asked, not placed yet
        raise
    if heartbeat is not None:
        heartbeat.__exit__(None, None, None)
    summary.seconds = time.monotonic() - start
    return summary
