"""``--workers N``: N worker processes on one machine against one study, supervised.

Each worker is a separate process (forked from a fresh server process that has imported PyTorch, Optuna and
the storage's libraries once, so CUDA and threads start clean and N workers do not import them N times; spawned
where there is no fork server) that loads the study's spec from the storage and runs trials until the study's
budget is met; torch threads per worker default to cores / N
and ``--devices`` gives each worker its own GPU. The supervisor shows progress, reaps the trials of workers
that die (SIGKILL, OOM killer) so their parameters run again, and forwards Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna

from tuner._terminate import clear_terminate, note_terminate, terminate_pending
from tuner.errors import ConfigError, StudyError
from tuner.study._record import StopKind, StudyKey, record_of
from tuner.study._storage import deleted_error, drop_orphans, study_deleted

__all__ = ["WorkerReport", "PoolSummary", "run_workers", "parse_devices", "check_workers", "MAX_WORKERS_PER_CORE"]


@dataclass
class WorkerReport:
    index: int
    pid: int | None
    device: str
    exitcode: int | None = None
    trials: int = 0
    error: str | None = None
    pack: int | None = None  # trials it trained at once (None: a tune() worker, or it stopped before choosing)
    pack_why: str = ""
    reported: bool = False  # it sent its report (it started, and ended by itself)
    stopped_by: str = ""  # budget | timeout, as its own run ended

    def stopped(self) -> str:
        """Why it stopped, in words: its error, or its exit code (with the likely cause where it exited with an
        error before it could report: a script that starts workers without guarding its own code)."""
        if self.error:
            return self.error
        return f"exit code {self.exitcode}" + (_NO_REPORT if self.exitcode == 1 and not self.reported else "")


_NO_REPORT = (" before it started (its error is above, on standard error; a Python script that starts workers "
              "must guard its own code with `if __name__ == \"__main__\":`)")


@dataclass
class PoolSummary:
    workers: list[WorkerReport] = field(default_factory=list)
    seconds: float = 0.0
    reaped: list[int] = field(default_factory=list)
    interrupted: int | None = None  # the signal that stopped the pool
    finished: int = 0  # trials that finished while the pool ran, read from the study (an interrupted worker
    #                    cannot report its own)

    @property
    def failed_workers(self) -> list[WorkerReport]:
        return [w for w in self.workers if w.exitcode not in (0, None) or w.error]


MAX_WORKERS_PER_CORE = 8


def check_workers(workers: int, name: str = "--workers") -> None:
    cores = os.cpu_count() or 1
    limit = max(16, MAX_WORKERS_PER_CORE * cores)
    if workers > limit:
        raise ConfigError(f"{name} must be at most {limit} on this machine ({cores} cores). Got {workers}.")


def refuse_unguarded_start(call: str, workers: int, asked: object = None) -> None:
    """In a worker process that is importing the user's script (it holds the code the workers run), a call
    that would start workers again means the script's own code is not guarded: say so, instead of letting
    multiprocessing fail with its bootstrapping error. ``asked``: the value as the caller wrote it."""
    # multiprocessing's own test for "this process is still starting up" (its bootstrapping RuntimeError)
    if workers > 1 and getattr(mp.current_process(), "_inheriting", False):
        given = workers if asked is None else repr(asked)
        raise ConfigError(f"{call}(workers={given}) ran again in a worker process as it imported your script: "
                          f"guard the script's own code with `if __name__ == \"__main__\":` (each worker imports "
                          f"the script to find the code it runs)")


def parse_devices(text: str | None) -> list[str]:
    """``--devices cuda:0,cuda:1``: each checked; None gives none. An empty name (``""``, ``cpu,``) is refused:
    it was taken as no device at all, without a word."""
    if text is None:
        return []
    from tuner.train import resolve_device

    devices = [d.strip() for d in str(text).split(",")]
    if not all(devices):
        raise ConfigError(f"--devices: a comma-separated list of devices (cpu, cuda:0, cuda:1, mps) without empty "
                          f"names. Got {text!r} instead.")
    for d in devices:
        resolve_device(d)  # an unknown or missing device is a ConfigError now, not N failing workers
    return devices


def _worker_main(index: int, name: str, url: str, overrides: dict[str, Any], results: Any,
                 ignore_sigint: bool = False, supervisor: int | None = None, job: dict[str, Any] | None = None,
                 n_workers: int = 1, environ: dict[str, str] | None = None) -> None:
    """One worker: the spec and space come from the storage, like ``tuner study run NAME``; or, for a study of
    ``tuner.tune(workers=N)``, ``job`` names the user's importable ``train_fn`` and the run's settings.
    ``environ``: the supervisor's environment as the pool started, which a forked worker would otherwise take
    from the fork server."""
    # A terminal Ctrl-C reaches the whole process group: each worker records its running trial as failed.
    # A supervisor started with SIGINT ignored (nohup, a background job) has workers that ignore it too.
    # Set first: a worker forked by the pool's fork server starts with both ignored, as the server does.
    report: dict[str, Any] = {"index": index, "trials": 0, "error": None}
    code = 0
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    if hasattr(signal, "pthread_sigmask"):  # blocked in a server that forked this worker (not on Windows)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:  # from here, a signal is an interrupted worker, not a traceback
        if environ is not None:
            _take_environment(environ)
        from tuner._secrets import RedactingStream, remember_url

        remember_url(url)  # this process's own output is redacted too, as the command's is
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = RedactingStream(lambda: stdout)  # type: ignore[assignment]
        sys.stderr = RedactingStream(lambda: stderr)  # type: ignore[assignment]
        from tuner._logs import quiet_libraries

        quiet_libraries()
        _watch_parent(supervisor if supervisor is not None else os.getppid())  # (pid: for the message)
        _check_cuda()
        if job is not None:
            from tuner.study._user import run_user_worker

            report["trials"], report["stopped_by"] = run_user_worker(index, name, url, job, overrides.get("threads"))
        else:
            from tuner.study._autopack import PackChoice
            from tuner.study._local import run_prepared
            from tuner.study._prepare import create_or_join, prepare, stored_spec

            deadline = overrides.pop("deadline", None)  # the supervisor's clock: a worker's start-up counts too
            started = overrides.pop("started", None)  # the pool's start: failures in a row count from it
            chosen = overrides.pop("pack_choice", None)  # the supervisor timed packs already
            spec, space = stored_spec(name, url)
            spec = spec.with_overrides(**overrides)
            prepared = prepare(spec, space_data=space)
            study = create_or_join(prepared, worker=index)
            pack = PackChoice(chosen["k"], chosen["why"]) if chosen else None
            # The pack size chosen: to stderr, stdout may carry JSON; the budget is shared by n_workers packs.
            run = run_prepared(study, prepared, workers=n_workers, deadline=deadline, pack=pack, started=started,
                               on_start=lambda line: print(f"worker {index}: {line}", file=sys.stderr, flush=True))
            report.update(trials=len(run.outcomes), pack=run.pack, pack_why=run.pack_why, stopped_by=run.stopped_by)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 143
    except Exception as exc:  # reported by the supervisor; the other workers go on
        report["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    finally:
        try:
            results.put(report)
        except Exception:
            pass
    sys.exit(code)


def _take_environment(environ: dict[str, str]) -> None:
    """A worker's environment: its supervisor's as the pool started. With it, the threads the pool gives each
    worker, which a server started before the pool did not know: OMP_NUM_THREADS is read as PyTorch loads, and
    a forked worker has it loaded."""
    os.environ.clear()
    os.environ.update(environ)
    threads = environ.get("OMP_NUM_THREADS", "")
    if "torch" in sys.modules and threads.isdigit() and int(threads) > 0:
        sys.modules["torch"].set_num_threads(int(threads))
        try:  # and NumPy's BLAS (OpenBLAS read the server's threads as NumPy loaded with PyTorch)
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(threads))
        except Exception:  # threadpoolctl comes with scikit-learn; without it, PyTorch's own threads are set
            pass


def _watch_parent(parent: int) -> None:
    """A worker whose supervisor dies (SIGKILL, the OOM killer) would train on as an orphan until the budget
    is met. A daemon thread notices the parent's death as it happens and stops the worker the way SIGTERM
    would: its running trial is recorded as interrupted."""
    from multiprocessing.connection import wait

    # The supervisor's end of the pipe it started this process through: readable once the supervisor is gone
    # (also while this worker was still starting up), whether this process was spawned by it or forked by the
    # fork server (whose pid getppid() then names).
    sentinel = mp.parent_process().sentinel

    def watch() -> None:
        wait([sentinel])
        print(f"worker {os.getpid()}: the supervisor (pid {parent}) is gone; stopping", file=sys.stderr, flush=True)
        signal.raise_signal(signal.SIGTERM)

    threading.Thread(target=watch, name="tuner-parent-watch", daemon=True).start()


def _interrupt_once(signum: int, frame: Any) -> None:
    """The first Ctrl-C or SIGTERM stops the worker (its running trial is recorded as failed); repeats, e.g.
    the terminal's and the supervisor's copy of one Ctrl-C, are ignored so that the record gets written."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    note_terminate(signum)  # in case Python loses the exception (raised in a __del__): the trials check the note
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(143)


# Imported once by the fork server instead of once per worker: what every worker imports before its first trial.
# Third-party modules only: the server starts with the interpreter's own sys.path, which may find another tuner
# than the one running; the workers import tuner themselves, with the supervisor's sys.path.
PRELOAD = ["torch", "torch._dynamo", "optuna", "optuna.storages._rdb.storage", "alembic.migration",
           "alembic.command"]


@contextlib.contextmanager
def _start_method() -> Iterator[Any]:
    """The multiprocessing context the pool starts its workers with: a fork server of its own, started with
    this process's environment and output as they are now and stopped after the pool; spawn where there is no
    fork server, or where this process runs one already (its own, for other work: left as it is)."""
    asked = os.environ.get(START_ENV, "").strip().lower() or "forkserver"
    if asked not in ("forkserver", "spawn"):
        raise ConfigError(f"${START_ENV} must be 'forkserver' (the default) or 'spawn' (got {asked!r}).")
    early = _EARLY.get(threading.get_ident())
    if early is not None and asked == "forkserver":  # started by early_server() around this pool: stopped there
        yield early.ctx
        return
    if asked == "spawn" or not _SERVER.acquire(blocking=False):  # another pool of this process (a thread of its
        yield mp.get_context("spawn")  # own) has the server
        return
    try:
        with _server_context() as ctx:
            yield ctx
    finally:
        _SERVER.release()


_SERVER = threading.Lock()
START_ENV = "TUNER_WORKER_START"  # spawn: every worker imports everything itself, as on platforms without a server


@dataclass
class _Early:
    ctx: Any
    stack: contextlib.ExitStack

    def stop(self) -> None:
        self.stack.close()


_EARLY: dict[int, _Early] = {}  # by thread: the server early_server() started for the pool this thread may run


@contextlib.contextmanager
def early_server(likely: bool) -> Iterator[None]:
    """Around preparing a study that will ``likely`` run a pool of workers here: its fork server is started now,
    so that it imports PyTorch beside this process's own preparation (loading the objective, opening the
    storage, timing threads) instead of after it; the pool then forks its workers from it at once. Stopped at
    the block's end, or at once by :func:`no_pool` where the study runs in this process after all."""
    if not likely or threading.get_ident() in _EARLY:
        yield
        return
    stack = contextlib.ExitStack()
    try:
        ctx = stack.enter_context(_start_method())
    except ConfigError:  # $TUNER_WORKER_START: refused before the study is created or opened
        stack.close()
        raise
    except Exception:  # no server here (no socket for it): the pool starts its workers another way
        stack.close()
        yield
        return
    if ctx.get_start_method() != "forkserver":  # spawn: asked for ($TUNER_WORKER_START), or no server here
        stack.close()
        yield
        return
    _EARLY[threading.get_ident()] = early = _Early(ctx, stack)
    try:
        yield
    finally:
        _EARLY.pop(threading.get_ident(), None)
        early.stop()


def pool_likely(workers: object, timeout: float | None, devices: str | None) -> bool:
    """Whether a study's run will likely start a pool of workers here: more than one asked for (or one per
    device of several), or ``auto`` with a timeout long enough for workers on a machine of several cores
    (where ``auto`` still chooses one process, :func:`no_pool` stops the server)."""
    from tuner.study._autoworkers import MIN_STUDY_SECONDS, requested_workers, usable_cores

    asked = requested_workers(workers)
    if asked != "auto" or devices:  # the devices counted, not checked: the study's preparation checks them
        named = len([d for d in (devices or "").split(",") if d.strip()])
        return max(1 if asked == "auto" else int(asked), named) > 1
    return timeout is not None and timeout >= MIN_STUDY_SECONDS and usable_cores() >= 2


def no_pool() -> None:
    """The study runs in this process: a fork server started early for it is stopped now, not at its end."""
    early = _EARLY.pop(threading.get_ident(), None)
    if early is not None:
        early.stop()


def _check_cuda() -> None:
    """A worker forked from a server in which CUDA had started cannot start CUDA: said plainly, with the way
    out, instead of CUDA's own error at the first trial on the GPU."""
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.cuda, "_is_in_bad_fork", lambda: False)():
        raise RuntimeError(f"CUDA had started in the fork server this worker was forked from, so it cannot start "
                           f"here; set {START_ENV}=spawn to start every worker on its own")


@contextlib.contextmanager
def _server_context() -> Iterator[Any]:
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver  # type: ignore[attr-defined]
        ours = "forkserver" in mp.get_all_start_methods() and server._forkserver_pid is None
        # PYTHONSAFEPATH (below) is Python 3.11's, and ignored under -E unless -P or -I say as much
        ours = ours and sys.version_info >= (3, 11) and (sys.flags.safe_path or not sys.flags.ignore_environment)
        previous = list(server._preload_modules)
    except (ImportError, AttributeError):
        ours = False
    if not ours:
        yield mp.get_context("spawn")
        return
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    try:
        with _server_start():
            server.ensure_running()
    except OSError:  # no socket for it (a temporary folder's path too long for AF_UNIX, say)
        server._preload_modules = previous
        yield mp.get_context("spawn")
        return
    try:
        yield ctx
    finally:
        with contextlib.suppress(OSError):  # it has nothing to save, and its exit would unload PyTorch (a second)
            os.kill(server._forkserver_pid, signal.SIGKILL)
        server._stop()
        server._preload_modules = previous


# The fork server's environment, beside this process's own:
SERVER_ENV = {
    # CUDA must not start in the server, or it fails in every worker forked after: importing PyTorch does not
    # start it, and should anything the server imports ask whether CUDA is there, it asks NVML, which leaves
    # CUDA unstarted.
    "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
    # The server runs as `python -c`, which puts the working folder first on sys.path: a file there named like
    # a library it imports (optuna.py, torch.py) would be imported instead.
    "PYTHONSAFEPATH": "1",
}


@contextlib.contextmanager
def _server_start() -> Iterator[None]:
    """Around starting the fork server: its environment, and SIGINT and SIGTERM ignored, which it keeps (an
    ignored signal stays ignored across exec). A Ctrl-C or a SIGTERM to the process group (``timeout``,
    ``kill -- -PGID``, a batch system) then stops the workers and this process, not the server under them:
    without it, each worker would read as dead (exit code 255) while still running, or, while the server was
    still importing, starting a worker would fail with EOFError. The workers set their own handlers first."""
    main = threading.current_thread() is threading.main_thread()
    both = {signal.SIGINT, signal.SIGTERM}
    with _environ(SERVER_ENV):
        # Blocked here meanwhile, not lost: one that comes as the server starts reaches this process's own
        # handlers once they are back. (The server inherits the mask too; the workers unblock both.)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, both) if main else None
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in both} if main else {}
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
            if blocked is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment (and so in the processes it starts) for the block's time."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_workers(
    name: str,
    url: str,
    n_workers: int,
    *,
    devices: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    reap: Callable[[optuna.Study], list[int]] | None = None,
    on_trial: Callable[[optuna.trial.FrozenTrial, optuna.Study], None] | None = None,
    poll: float = 1.0,
    job: dict[str, Any] | None = None,
    grace: float | None = None,
) -> PoolSummary:
    """Runs ``n_workers`` processes on study ``name`` until they stop; returns what each did."""
    from multiprocessing.connection import wait

    from tuner.study._liveness import reap_stale
    from tuner.study._open import open_study

    if n_workers < 1:
        raise StudyError(f"--workers must be at least 1 (got {n_workers}).")
    study = open_study(name, url, readonly=False)  # it fails a dead worker's trial (reap_stale): it writes
    base = dict(overrides or {})
    cores = os.cpu_count() or 1
    threads = base.pop("threads", None) or max(1, cores // n_workers)
    # OMP_NUM_THREADS: the workers' (and the fork server's, as it loads PyTorch), for the pool's time
    with _environ({"OMP_NUM_THREADS": str(threads)}), _start_method() as ctx:
        results = ctx.Queue()
        procs: list[tuple[WorkerReport, Any]] = []
        seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        interrupted: set[int] = set()  # finished as interrupted: not trials the pool ran, their configs run again

        def report_new() -> None:
            for t in study.get_trials(deepcopy=False):
                if t.state.is_finished() and t.number not in seen:
                    seen.add(t.number)
                    reason = record_of(t).reason
                    if reason is not None and reason.kind is StopKind.INTERRUPTED:
                        interrupted.add(t.number)
                    if on_trial is not None:
                        on_trial(t, study)

        before = len(seen)

        summary = PoolSummary()
        start = time.monotonic()
        ignore_sigint = signal.getsignal(signal.SIGINT) is signal.SIG_IGN

        def forward(signum: int, frame: Any) -> None:
            summary.interrupted = signum
            for _, proc in procs:
                if proc.is_alive():
                    with contextlib.suppress(ProcessLookupError):  # ended since
                        os.kill(proc.pid, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

        # Forwarded from before the first worker starts: a signal while they start stops the ones started (and
        # starts no more), instead of leaving them to run the budget while this process waits for them.
        old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        if not ignore_sigint:
            signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        lost = terminate_pending()
        if lost is not None:  # a signal before the pool, whose exception Python lost: no worker starts
            clear_terminate()
            summary.interrupted = lost
        try:
            for i in range(n_workers):
                if summary.interrupted is not None:
                    break
                device = devices[i % len(devices)] if devices else base.get("device")
                worker_overrides = {**base, "threads": threads, **({"device": device} if device else {})}
                proc = ctx.Process(target=_worker_main, args=(i, name, url, worker_overrides, results, ignore_sigint,
                                                              os.getpid(), job, n_workers, dict(os.environ)),
                                   name=f"tuner-worker-{i}", daemon=False)
                proc.start()
                procs.append((WorkerReport(i, proc.pid, device or "auto"), proc))
            if summary.interrupted is not None:  # again: one started as the signal came was not in the list yet
                forward(summary.interrupted, None)
        except BaseException:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            raise

        if grace is None:
            grace = float((study.user_attrs.get(StudyKey.SPEC) or {}).get("grace_period") or 12.0)
        try:
            while alive := [proc.sentinel for _, proc in procs if proc.is_alive()]:
                wait(alive, poll)  # back at once when a worker ends: the last one's end is the pool's
                if summary.interrupted is not None:  # again: one still starting up had it ignored, as forked
                    forward(summary.interrupted, None)
                try:
                    summary.reaped += (reap or (lambda s: reap_stale(s, grace)))(study)
                    report_new()
                except Exception as exc:  # storage trouble: the workers retry on their own; keep supervising
                    if study_deleted(study):  # they stop, each saying so; said once here
                        continue
                    print(f"supervisor: {type(exc).__name__}: {exc}", file=sys.stderr)
            for rep, proc in procs:
                proc.join()
                rep.exitcode = proc.exitcode
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        # Every worker that ended by itself sent one report before it exited, so it is in the queue's pipe now:
        # waited for only while a report is missing (a worker killed outright sends none).
        while not all(rep.reported for rep, _ in procs):
            try:
                data = results.get(timeout=0.5)
            except queue.Empty:
                break
            rep = procs[data["index"]][0]
            rep.trials, rep.error, rep.reported = data["trials"], data["error"], True
            rep.pack, rep.pack_why = data.get("pack"), data.get("pack_why", "")
            rep.stopped_by = data.get("stopped_by", "")
        if study_deleted(study):
            drop_orphans(study)  # after every worker stopped: a trial one asked for as the study was deleted
            raise deleted_error(name, url)
        report_new()
        summary.finished = len(seen) - before - len(interrupted)
        summary.workers = [rep for rep, _ in procs]
        summary.seconds = time.monotonic() - start
        return summary
