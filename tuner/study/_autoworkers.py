"""``--workers auto``: how many processes on this machine train a study's trials, and why, in words.

A small model trains about as fast on one torch thread as on all of a CPU's cores: one process then leaves the
other cores idle. ``auto`` times a few training steps on one thread and on all cores, and where one thread per
process gets more done, runs one worker per core (each on one thread). It stays in this process where more
would not pay or would change what the study promises: a GPU (trial packs use it better), a study too short to
pay for starting workers, or a study without a timeout (seeded, it repeats exactly only in one process; with a
timeout, what it finishes depends on the machine's speed anyway).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from tuner.errors import ConfigError

__all__ = ["WorkersChoice", "choose_workers", "requested_workers", "usable_cores", "MIN_STUDY_SECONDS",
           "THREAD_EFFICIENCY"]

MIN_STUDY_SECONDS = 10.0  # a study expected to train for less runs in this process: workers take 3-4 s to start
THREAD_EFFICIENCY = 0.85  # what one process per core keeps of its one-thread speed (shared caches, the supervisor)
WORKER_MEMORY = 400e6  # bytes a worker needs besides its copy of the data (Python, torch, optuna)


@dataclass
class WorkersChoice:
    n: int
    why: str = ""
    threads: int | None = None  # torch threads each process trains on, as timed here (None: timed later)
    auto: bool = True
    alone: int | None = None  # the threads one process would train on, as timed here

    def line(self) -> str:
        head = f"workers: {self.n}" + (" (auto)" if self.auto else "")
        return f"{head}: {self.why}" if self.why else head


def parse_workers(value: object) -> int | str:
    """``auto`` or a whole number of at least 1 (a flag, a keyword argument or ``$TUNER_WORKERS``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be auto or a whole number of at least 1; got {value!r}")
    return value


def requested_workers(value: object, name: str = "--workers") -> int | str:
    """The workers asked for; where that is ``auto``, ``$TUNER_WORKERS`` when set."""
    try:
        asked = parse_workers(value)
    except ValueError as exc:
        raise ConfigError(f"{name} {exc}") from None
    if asked == "auto" and os.environ.get("TUNER_WORKERS"):
        try:
            return parse_workers(os.environ["TUNER_WORKERS"])
        except ValueError as exc:
            raise ConfigError(f"$TUNER_WORKERS {exc}") from None
    return asked


def _memory_bytes() -> float | None:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``), within a cgroup v2 CPU limit (a
    container's ``--cpus``), where the platform says; else ``os.cpu_count()``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def choose_workers(prepared, asked: int | str, *, devices: list[str] | None = None, n_left: int,
                   timeout: float | None) -> WorkersChoice:
    """The processes that train ``prepared``'s study here: the number asked for, one per device of
    ``devices``, or for ``auto`` the timing's choice. ``n_left``: trials left to finish; ``timeout``: seconds."""
    from tuner._surface import option
    from tuner.train import fastest_of

    devices = devices or []
    if asked != "auto":
        n = max(int(asked), len(devices))
        return WorkersChoice(n, "", auto=False)
    if devices:
        return WorkersChoice(len(devices), f"one on each of {', '.join(devices)}")
    cores = usable_cores()
    trainer, spec = prepared.trainer, prepared.spec
    if cores < 2 or trainer.device.type != "cpu" or n_left < 2:
        return WorkersChoice(1)  # nothing to spread (a GPU trains the study's trials in packs)
    spread = option("workers", str(cores), str(cores))
    if timeout is None:  # every study is seeded (0 unless set)
        return WorkersChoice(1, f"a study without a timeout runs in one process, so that it repeats exactly "
                                f"({spread} spreads it over the {cores} cores)")
    anyway = f"({spread} starts them anyway)"
    if timeout < MIN_STUDY_SECONDS:  # said before timing anything: the timing would eat into the timeout
        return WorkersChoice(1, f"a {timeout:g} s timeout: too little to pay for starting workers {anyway}")
    per = spec.threads  # threads asked for: the cores they leave, without timing
    timings = {} if per else trainer.thread_timings([1, cores])
    if not per and not timings:
        return WorkersChoice(1, "training could not be timed here, so the trials run in one process")
    one, every = (timings[1], timings[cores]) if timings else (0.0, 0.0)
    alone = fastest_of(timings) if timings else None  # the threads one process would train on
    n, cap = _fit(cores // per if per else cores, trainer, n_left)
    if n < 2:
        return WorkersChoice(1, f"{cap}, so the trials run in one process", threads=alone)
    # n one-thread processes against one process on every core (each process keeps ~85% of its speed)
    if timings and n * THREAD_EFFICIENCY * every <= one:
        return WorkersChoice(1, f"one trial trains {one / every:.1f}x as fast on {cores} threads as on 1, so one "
                                f"process on the {cores} cores does more than {n} processes", threads=alone)
    training = n_left * spec.epochs * math.ceil(len(trainer.cpu_data.x_train) / 64) * one if timings else timeout
    if min(training, timeout) < MIN_STUDY_SECONDS:  # the study's training on one thread, roughly
        left = f"a {timeout:g} s timeout" if timeout <= training else f"about {training:.1f} s of training"
        return WorkersChoice(1, f"{left}: too little to pay for starting workers {anyway}", threads=alone)
    if per:
        why = f"{per} thread(s) per trial ({option('threads', str(per), str(per))}) on {cores} cores"
        return WorkersChoice(n, f"{why} ({option('workers', '1', '1')}: one process)", threads=per)
    per = 1 if one <= every else max(1, cores // n)  # threads that would idle go to the workers that scale
    speed = (f"one trial trains as fast on 1 thread as on {cores}" if one <= every else
             f"one trial trains about as fast on 1 thread as on {cores}" if one <= 1.1 * every else
             f"one trial trains {one / every:.1f}x as fast on {cores} threads as on 1")
    share = "one thread each" if per == 1 else f"{per} threads each"
    why = f"{speed}, so {n} processes share the {cores} cores, {share}"
    return WorkersChoice(n, f"{why} ({option('workers', '1', '1')}: one process)", threads=per, alone=alone)


def _fit(n: int, trainer, n_left: int) -> tuple[int, str]:
    """At most ``n`` workers that memory holds (half of it, for copies of the data) and that get two trials
    each; and what limited them, in words."""
    limit, cap = _memory_bytes(), ""
    if limit is not None:
        held = max(1, int(0.5 * limit // (trainer.cpu_data.nbytes() + WORKER_MEMORY)))
        if held < n:
            n, cap = held, f"half the memory holds {held} copy(ies) of the data"
    if n_left // 2 < n:
        n, cap = max(1, n_left // 2), f"{n_left} trial(s) left, fewer than two for each of {n} workers"
    return n, cap
