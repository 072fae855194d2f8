"""``pack: auto``: how many trials to train at once, chosen by a short timing probe on this machine.

A pack pays off where one trial leaves the device idle (small models, per-step overhead) and not where one
model already fills it. The probe draws configs from the study's space to learn its kinds (batch size x update
family: each kind trains in packs of its own) and their shares, then times a few training steps of one config
of the commonest kind as the ``Trainer`` runs it alone, and the same config stacked K times for growing K. It
picks the K under which the study as a whole runs fastest (the K members split between the kinds by their
shares, each kind at the timed rate of a pack of its size; configs that cannot be packed train alone), and
packs only if that is ``MIN_GAIN`` times one trial at a time. K is bounded by the budget (at most a quarter of
the trials left: pruning needs complete trials to compare with) and by the device's free memory. The choice
and its reason are one line of output.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import optuna
import torch

from tuner._pack import PackTrainer, pack_key, packable
from tuner.config import TrainConfig
from tuner.errors import error_text
from tuner.optim import get_schedule
from tuner.study._engine import release_device_memory
from tuner.study._spec import pack_from_environment

__all__ = ["PackChoice", "choose_pack", "requested_pack", "MIN_GAIN"]

MIN_GAIN = 1.3  # a pack must train this many times the model-steps per second of one trial alone
CPU_SIZES = (1, 2, 4, 8, 16, 32, 64)
GPU_SIZES = (1, 4, 16, 64, 256, 1024, 4096)
PROBE_STEPS = 12
ROUNDS = 3
PROBE_SHARE = 0.25  # of the time left before a timeout: the most the probe spends timing packs
MIN_PROBE_SECONDS = 5.0  # under a timeout this short, packs are not timed (the probe takes up to a second)


@dataclass(frozen=True)
class PackChoice:
    """How many trials train at once, on how many torch threads (None: unchanged), and why, in words."""

    k: int
    why: str
    threads: int | None = None
    auto: bool = True  # chosen by the probe (False: the spec's or $TUNER_PACK's number)

    def line(self) -> str:
        head = f"pack: {self.k}" + (" (auto)" if self.auto else "")
        return f"{head}: {self.why}" if self.why else head


SPACE_SAMPLES = 64


def _kinds(space, epochs: int | None, seed: int) -> tuple[dict[tuple, float], float, TrainConfig | None]:
    """Draws configs from the space (random sampler, fixed seed; nothing trains): the share of each kind of
    packable config (batch size, update family), the share that cannot be packed, and a config of the
    commonest kind. Each kind trains in packs of its own; the others train alone (``_alone`` says why)."""
    from tuner._logs import optuna_quiet

    with optuna_quiet():
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    kinds: dict[tuple | None, list[TrainConfig]] = {}
    for _ in range(SPACE_SAMPLES):
        config = space.sample(probe.ask(), epochs=epochs or 10, seed=seed)
        kinds.setdefault(pack_key(config) if packable(config) is None else None, []).append(config)
    alone = len(kinds.pop(None, [])) / SPACE_SAMPLES
    if not kinds:
        return {}, alone, None
    shares = {key: len(configs) / SPACE_SAMPLES for key, configs in kinds.items()}
    return shares, alone, kinds[max(shares, key=shares.__getitem__)][0]


def _alone(space) -> str:
    """The space's optimizers and schedules that cannot share a pack, in words: the reason said when packs do
    not pay for that reason."""
    from tuner._pack import FAMILIES

    names = [f"{name} (no fused update)" for name in space.optimizer if name not in FAMILIES]
    names += [f"{name} (steps on each member's metric)" for name in space.schedule
              if get_schedule(name).factor is None]
    return ", ".join(names) or "none"


def _rate_at(rates: dict[int, float], n: float) -> float:
    """Model-steps per second of a pack of ``n`` members, interpolated (in log size) between timed sizes."""
    sizes = sorted(rates)
    if n <= sizes[0]:  # a kind with under one member in flight on average: a pack of one when it has one
        return rates[sizes[0]]
    for a, b in zip(sizes, sizes[1:], strict=False):
        if n <= b:
            t = math.log(n / a) / math.log(b / a)
            return rates[a] + t * (rates[b] - rates[a])
    return rates[sizes[-1]]


def _speedup(rates: dict[int, float], alone: float, k: int, shares: dict[tuple, float], unpackable: float) -> float:
    """How much faster the study runs with ``k`` members in flight than one trial at a time: the members
    split between the kinds by their shares, each kind at the rate of a pack of its size; configs that
    cannot be packed train alone."""
    packed = sum(shares.values())
    per_trial = sum(share * alone / _rate_at(rates, k * share / packed) for share in shares.values())
    return 1.0 / (per_trial + unpackable)


def _free_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _member_bytes(pack: PackTrainer, batch_size: int) -> int:
    """Memory one more member needs: parameters, the step's gradient (and autograd's per-parameter one), a
    scratch tensor, optimizer state and weight-decay tensors (9 copies of P floats), and its batch's
    activations, estimated generously as 32 floats per input value."""
    x = pack.trainer.data.x_train
    per_sample = x[0].numel() if len(x) else 1
    return pack.flat.shape[1] * 4 * 9 + batch_size * per_sample * 4 * 32


def _pack_failure(prepared, config: TrainConfig, threads: int) -> str | None:
    """Why the objective's model cannot train in a pack (two members of ``config``, a few steps), in words,
    or None; running out of memory is not the model's fault (the packs find their size when they train)."""
    batch_size, family, _ = pack_key(config)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        pack = PackTrainer(prepared.trainer, 2, batch_size, family)
        for slot in range(2):
            pack.fill(slot, config)
        pack.time_steps(1)
    except torch.cuda.OutOfMemoryError:
        return None
    except Exception as exc:
        pack = None  # its tensors freed before the model trains alone
        try:  # the model alone: an error there is the trials' own, recorded with each of them
            prepared.trainer.time_steps(config, 1)
        except Exception as alone:
            return f"the model failed alone too ({error_text(alone)})"
        return f"the model cannot be packed ({error_text(exc)})"
    finally:
        torch.set_num_threads(previous)
    return None


def requested_pack(spec) -> int | str:
    """The spec's pack size; where it says ``auto``, ``$TUNER_PACK`` when set (``1`` never packs)."""
    if spec.pack != "auto":
        return spec.pack
    from_environment = pack_from_environment()
    return spec.pack if from_environment is None else from_environment


EVAL_OVERHEAD = 1.25  # a trial's time over its training steps' (evaluations, reports)


def choose_pack(prepared, n_trials: int, workers: int = 1, trainer_threads: int = 1,
                time_left: float | None = None) -> PackChoice:
    """The pack size for this process, ``n_trials`` being the trials left to run and ``time_left`` the
    seconds before the timeout (None: no timeout): the spec's number (or ``$TUNER_PACK``'s), or for ``auto``
    the probe's choice. Under a timeout, K is also at most a quarter of the trials that fit in the time left
    at one trial's speed: a pack's members finish together, and a pack cut by the timeout is lost whole."""
    spec = prepared.spec
    requested = requested_pack(spec)
    threads = spec.threads or max(1, (os.cpu_count() or 1) // max(1, workers))  # a pack's steps are large
    if len(spec.objectives or []) > 1:  # before $TUNER_PACK: a member's seconds would be its pack's
        return PackChoice(1, "train_seconds is an objective: each trial trains alone, so that its time is its own")
    if requested != "auto":
        k = int(requested)
        asked = "as $TUNER_PACK asks" if spec.pack == "auto" else "as asked"
        if k == 1:
            return PackChoice(1, f"one trial at a time, {asked}", auto=False)
        _, _, config = _kinds(prepared.space, spec.epochs, spec.seed)
        if config is None:
            return PackChoice(1, f"{k} at once was asked for, but no config of the space can share a pack "
                                 f"({_alone(prepared.space)}): trials train one at a time", auto=False)
        failure = _pack_failure(prepared, config, threads)
        if failure:
            return PackChoice(1, f"{k} at once was asked for, but {failure}: trials train one at a time",
                              auto=False)
        return PackChoice(k, f"{k} trials at once, {asked}", threads, auto=False)
    # At most a quarter of the trials left are in flight at once: with workers, each worker's pack a share.
    part = "a quarter" if workers <= 1 else f"1/{4 * workers} (a quarter, shared by {workers} workers)"
    cap = n_trials // (4 * max(1, workers))
    if cap < 4:
        return PackChoice(1, f"{max(0, n_trials)} trial(s) to run are too few to share (a pack holds 4 or more, "
                             f"and at most {part} of them)")
    if time_left is not None and time_left < MIN_PROBE_SECONDS:  # the probe itself would take much of it
        return PackChoice(1, f"{time_left:.1f} s left before the timeout: too little to time packs, so one trial "
                             f"at a time")
    shares, unpackable, config = _kinds(prepared.space, spec.epochs, spec.seed)
    if config is None:
        return PackChoice(1, f"no config of the space can share a pack: they train alone "
                             f"({_alone(prepared.space)})")
    if unpackable and 1.0 / unpackable < MIN_GAIN:  # even infinitely fast packs would not pay: no timing
        return PackChoice(1, f"{unpackable:.0%} of the space's configs cannot be packed ({_alone(prepared.space)}) "
                             f"and train alone, so packs would speed the study up {1 / unpackable:.2f}x "
                             f"at most (a pack needs {MIN_GAIN}x)")
    trainer = prepared.trainer
    batch_size, family, _ = pack_key(config)
    previous = torch.get_num_threads()
    rates: dict[int, float] = {}
    try:
        torch.set_num_threads(trainer_threads)
        # Each timing is the best of ROUNDS: one noisy moment on a shared machine does not decide.
        try:
            alone = PROBE_STEPS / min(trainer.time_steps(config, PROBE_STEPS) for _ in range(ROUNDS))
        except torch.cuda.OutOfMemoryError:
            alone = 0.0
        except Exception as exc:  # the model fails on a full batch: each trial records it with its reason
            from tuner.study._engine import user_frame

            where = user_frame(exc)
            return PackChoice(1, f"one trial failed in the timing probe ({error_text(exc)}"
                                 f"{f' (at {where})' if where else ''}): trials train one at a time")
        if not alone:
            # The config alone does not fit at its batch size: the trials find out which batch sizes do (an
            # out-of-memory trial records its batch size as too large there), one at a time.
            release_device_memory(trainer.device)  # here, where the error and its traceback are gone
            return PackChoice(1, f"one trial at batch size {batch_size} ran out of memory on {trainer.device} in "
                                 f"the timing probe: trials train one at a time")
        by_time = None
        if time_left is not None:
            steps = math.ceil(len(trainer.data.x_train) / batch_size) * (spec.epochs or 10)
            trial_s = EVAL_OVERHEAD * steps / alone
            fit = int(time_left / trial_s)
            if fit // 4 < cap:
                cap, by_time = fit // 4, (fit, trial_s)
            if cap < 4:
                return PackChoice(1, f"about {fit} trial(s) fit in the {time_left:.0f}s left before the timeout "
                                     f"(one takes about {trial_s:.1f}s alone): too few to share (a pack holds 4 "
                                     f"or more, and at most a quarter of them)")
        torch.set_num_threads(threads)
        free = _free_memory(trainer.device)
        sizes = GPU_SIZES if trainer.device.type == "cuda" else CPU_SIZES
        per_member: int | None = None
        slower = None  # (k, its rate) where a larger pack trained slower than a smaller one: the probe stopped
        # Under a timeout, the probe spends at most a quarter of the time left (a loaded machine times slowly)
        probe_end = time.monotonic() + PROBE_SHARE * time_left if time_left is not None else None
        out_of_time = False
        for k in (k for k in sizes if k <= cap):
            if probe_end is not None and rates and time.monotonic() > probe_end:
                out_of_time = True
                break
            if free is not None and per_member is not None and per_member * k > free // 2:
                break  # checked before the pack is built: it would not fit in half the free memory
            try:
                pack = PackTrainer(trainer, k, batch_size, family)
                for slot in range(k):
                    pack.fill(slot, config)
                per_member = _member_bytes(pack, batch_size)
                if free is not None and per_member * k > free // 2:
                    break
                rate = k * PROBE_STEPS / min(pack.time_steps(PROBE_STEPS) for _ in range(ROUNDS))
            except torch.cuda.OutOfMemoryError:
                break
            except Exception as exc:  # the model does not work under torch.func: say so, train unpacked
                if k == sizes[0]:
                    return PackChoice(1, f"the model cannot be packed ({error_text(exc)})")
                break
            finally:
                pack = None
            if rates and rate < 0.9 * max(rates.values()):
                slower = (k, rate)
                break  # past the best pack size: larger packs only get slower
            rates[k] = rate
    finally:
        torch.set_num_threads(previous)
    candidates = [k for k in rates if k >= 4]
    if not candidates and slower is not None:
        best = max(rates, key=rates.__getitem__)
        return PackChoice(1, f"a pack of {slower[0]} trained slower ({slower[1]:.0f} model-steps/s) than "
                             f"{'one trial' if best == 1 else f'a pack of {best}'} ({rates[best]:.0f}): trials train "
                             f"one at a time")
    if not candidates and out_of_time:
        return PackChoice(1, f"timing packs took over {PROBE_SHARE:.0%} of the {time_left:.0f}s left before the "
                             f"timeout before a pack of 4 was timed: trials train one at a time")
    if not candidates:
        return PackChoice(1, "not even a pack of 4 fits in half the free memory")
    best_k = max(candidates, key=lambda k: _speedup(rates, alone, k, shares, unpackable))
    overall = _speedup(rates, alone, best_k, shares, unpackable)
    top = max(rates[k] for k in candidates)
    if top / alone < MIN_GAIN:
        return PackChoice(1, f"packs trained at most {top / alone:.2f}x the model-steps/s of one trial here "
                             f"(a pack needs {MIN_GAIN}x)")
    commonest = max(shares.values())
    if overall < MIN_GAIN:
        return PackChoice(1, f"the space mixes {len(shares)} kinds of config (batch size x optimizer family), so "
                             f"{best_k} trials at once would make packs of about {max(1, round(best_k * commonest))} "
                             f"trial(s) each, running the study at most {overall:.2f}x as fast as one trial at a "
                             f"time (packing needs {MIN_GAIN}x)")
    bound = ""
    if best_k * 2 > cap:
        bound = (f"; at most a quarter of the about {by_time[0]} trials that fit before the timeout"
                 if by_time is not None else f"; at most {part} of the {n_trials}-trial budget")
    if unpackable:
        bound += f"; {unpackable:.0%} of the space's configs cannot be packed and train alone"
    gain = rates[best_k] / alone
    if len(shares) == 1:
        return PackChoice(best_k, f"{best_k} trials at once trained {gain:.1f}x the model-steps/s of one trial "
                                  f"({rates[best_k]:.0f} vs {alone:.0f}) on {threads} thread(s){bound}", threads)
    return PackChoice(best_k, f"{best_k} trials at once, in packs by kind of config ({len(shares)} kinds, the "
                              f"commonest {commonest:.0%}), should run the study {overall:.1f}x as fast as one "
                              f"at a time on {threads} thread(s){bound}", threads)
