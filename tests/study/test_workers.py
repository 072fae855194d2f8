"""Many workers on one study, with real processes: the load test on SQLite and PostgreSQL, a worker killed
with SIGKILL mid-trial, Ctrl-C and SIGTERM, a storage that stays busy, out-of-memory trials."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import LOST_SIGTERM, SLOW_OBJECTIVE, SYNTHETIC_OBJECTIVE
from optuna.trial import TrialState

from tuner.errors import StudyError
from tuner.study import StudySpec, create_or_join, prepare, run_trials

TUNER = [str(Path(sys.executable).with_name("tuner"))]
FAST = {"heartbeat_interval": 0.5, "grace_period": 2.0}


@pytest.fixture(scope="module")
def slow_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slow") / "slow_objective.py"
    path.write_text(SLOW_OBJECTIVE)
    return path


def _spec_file(tmp_path: Path, slow_file: Path, space_file: Path, attr: str = "slow", **fields) -> Path:
    spec = {"name": "w", "objective": f"{slow_file}:{attr}", "space": str(space_file), "sampler": "random",
            "pruner": "none", "n_trials": 8, "epochs": 2, "device": "cpu", "threads": 1, **FAST, **fields}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def _env(**extra: str) -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), **extra}
    env.pop("TUNER_STORAGE", None)
    return env


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*TUNER, *args], capture_output=True, text=True, env=env or _env(), timeout=timeout)


def _load(name: str, url: str) -> optuna.Study:
    from tuner.study import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url))


QUEUED_AGAIN = "interrupted; its config was queued again"  # an interrupted trial's config trains on resume


def _check_clean(study: optuna.Study, budget: int) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))  # unique and contiguous
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget
    return trials


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_load_four_workers_fifty_trials_each(backend: str, tmp_path: Path, slow_file: Path, space_file: Path,
                                             request):
    url = f"sqlite:///{tmp_path / 'load.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_db")
    spec = _spec_file(tmp_path, slow_file, space_file, n_trials=200, epochs=1)
    result = _cli("study", "create", str(spec), "--storage", url, "--workers", "4", "--format", "json",
                  env=_env(TUNER_TEST_SLEEP="0"))
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout)["run"]
    assert len(run["workers"]) == 4
    assert all(w["exitcode"] == 0 and w["error"] is None for w in run["workers"]), run["workers"]
    assert sum(w["trials"] for w in run["workers"]) == 200
    study = _load("w", url)
    trials = _check_clean(study, 200)
    assert len(trials) == 200  # no overshoot, no failure
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 4  # every worker took part
    assert url.split("@")[0] not in result.stdout + result.stderr or "postgres:" not in url


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_workers_compose_with_packs(backend: str, tmp_path: Path, slow_file: Path, space_file: Path):
    url = f"sqlite:///{tmp_path / 'p.db'}" if backend == "sqlite" else f"journal:{tmp_path / 'p.journal'}"
    spec = _spec_file(tmp_path, slow_file, space_file, n_trials=16, epochs=2, pruner="median")
    result = _cli("study", "create", str(spec), "--storage", url, "--workers", "2", "--pack", "4", "--format", "json",
                  env=_env(TUNER_TEST_SLEEP="0.02"))  # long enough for both workers to take part
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout)["run"]
    assert all(w["exitcode"] == 0 and w["error"] is None for w in run["workers"]), run["workers"]
    assert [w["pack"] for w in run["workers"]] == [4, 4]  # each worker says how many trials it trained at once
    trials = _load("w", url).get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 16
    packed = [t for t in trials if t.user_attrs.get("pack") == 4]
    assert len({t.user_attrs["worker"]["pid"] for t in packed}) == 2  # both workers trained packs
    assert all(len(t.intermediate_values) == len(t.user_attrs["val_history"]) for t in packed)


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql"])
def test_sigkilled_worker_trial_is_failed_and_rerun_with_its_params(backend: str, tmp_path: Path, slow_file: Path,
                                                                    space_file: Path, request):
    url = {"sqlite": f"sqlite:///{tmp_path / 'k.db'}", "journal": f"journal:{tmp_path / 'k.journal'}"}.get(backend)
    url = url or request.getfixturevalue("postgres_db")
    spec = _spec_file(tmp_path, slow_file, space_file, n_trials=8, epochs=6)
    assert _cli("study", "create", str(spec), "--storage", url, "--no-run").returncode == 0
    proc = subprocess.Popen([*TUNER, "study", "run", "w", "--storage", url, "--workers", "3", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    study = _load("w", url)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # Early in its training, so that the kill lands mid-trial, not as it finishes.
            if "worker" in t.user_attrs and 1 <= len(t.intermediate_values) <= 3:
                victim = t
                break
        time.sleep(0.1)
    assert victim is not None, "no trial started"
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    # The supervisor fails it at once: on SQLite it opened the study read-only and could not
    assert "could not fail stale trial" not in err, err[-3000:]
    study = _load("w", url)
    trials = _check_clean(study, 8)
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs["reason"].startswith("worker lost: ")
    assert f"pid {victim.user_attrs['worker']['pid']} " in killed.user_attrs["reason"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == victim.params
    run = json.loads(out)["run"]
    assert sorted(w["exitcode"] for w in run["workers"]) == [-signal.SIGKILL, 0, 0]


@pytest.mark.parametrize("workers, sig, code, pack, group", [
    (1, signal.SIGINT, 130, 1, True), (1, signal.SIGTERM, 143, 1, False), (2, signal.SIGINT, 130, 1, True),
    (2, signal.SIGTERM, 143, 1, False), (2, signal.SIGINT, 130, 3, True),
    (2, signal.SIGTERM, 143, 1, True),  # `timeout`, `kill -- -PGID`, a batch system: the whole group
])
def test_interrupt_leaves_nothing_running_and_resumes(workers: int, sig: int, code: int, pack: int, group: bool,
                                                      tmp_path: Path, slow_file: Path, space_file: Path):
    url = f"sqlite:///{tmp_path / 'i.db'}"
    spec = _spec_file(tmp_path, slow_file, space_file, n_trials=6, epochs=8, pack=pack)
    # As from a terminal: a test runner started in the background (nohup, `&`) ignores SIGINT, and a child
    # that inherits the ignored signal rightly keeps ignoring it.
    proc = subprocess.Popen([*TUNER, "study", "create", str(spec), "--storage", url, "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if Path(url[len("sqlite:///"):]).exists():
            try:
                running = _load("w", url).get_trials(states=(TrialState.RUNNING,))
                if any(1 <= len(t.intermediate_values) <= 4 for t in running):  # mid-trial
                    break
            except Exception:  # the command is still creating the storage
                pass
        time.sleep(0.1)
    if group:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole process group
    else:
        os.kill(proc.pid, sig)  # SIGTERM to the command only: it stops its workers itself
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert "exit code" not in err, err[-3000:]  # no worker taken for dead while it records its trial
    study = _load("w", url)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    assert any(t.user_attrs.get("reason", "").startswith(QUEUED_AGAIN) for t in study.trials)
    if workers > 1:  # the trials the interrupted workers finished are counted, read from the study; the
        # interrupted ones are not (their configs train again on resume)
        ran = sum(t.state.is_finished() and not t.user_attrs.get("reason", "").startswith("interrupted")
                  for t in study.trials)
        assert ran < len(study.trials)
        assert f"{workers} workers ran {ran} trial(s)" in out, out
    resumed = _cli("study", "run", "w", "--storage", url, env=_env(TUNER_TEST_SLEEP="0"))  # no need to be slow now
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _check_clean(_load("w", url), 6)


def _prepared(spec_fields: dict, slow_file: Path, space_file: Path, url: str, attr: str = "slow"):
    spec = StudySpec.from_mapping({"name": "b", "objective": f"{slow_file}:{attr}", "space": str(space_file),
                                   "sampler": "random", "pruner": "none", "epochs": 1, "device": "cpu",
                                   "threads": 1, "storage": url, **FAST, **spec_fields}, "test")
    prepared = prepare(spec)
    return create_or_join(prepared), prepared


@pytest.mark.parametrize("hold, expect", [(1.5, "COMPLETE"), (6.0, "FAIL")])
def test_busy_storage_is_retried_then_recorded_and_the_worker_goes_on(hold: float, expect: str, tmp_path: Path,
                                                                     slow_file: Path, space_file: Path,
                                                                     monkeypatch):
    """Another connection holds SQLite's write lock when a trial's result is written: held shortly, the retry
    succeeds; held past every retry, the trial is recorded as failed ("storage busy") and the study goes on."""
    from tuner.study import _storage

    monkeypatch.setattr(_storage, "SQLITE_TIMEOUT", 0.2)
    monkeypatch.setenv("TUNER_TEST_SLEEP", "0")
    db = tmp_path / "busy.db"
    study, prepared = _prepared({"n_trials": 3}, slow_file, space_file, f"sqlite:///{db}")
    fit = prepared.trainer.fit
    held = threading.Event()

    def fit_then_lock(config, report=None, keep_model=False, micro_batch=None):
        result = fit(config, report=report, micro_batch=micro_batch)
        if not held.is_set():
            held.set()

            def hold_lock():
                con = sqlite3.connect(db, timeout=5, isolation_level=None)
                con.execute("BEGIN EXCLUSIVE")
                locked.set()
                time.sleep(hold)
                con.execute("COMMIT")
                con.close()

            locked = threading.Event()
            threading.Thread(target=hold_lock, daemon=True).start()
            locked.wait(5)
        return result

    monkeypatch.setattr(prepared.trainer, "fit", fit_then_lock)
    outcomes = run_trials(study, prepared).outcomes
    assert outcomes[0].state == expect
    final = _load("b", f"sqlite:///{db}")
    if expect == "FAIL":
        assert outcomes[0].reason.startswith("storage busy: could not record the result")
        assert outcomes[0].reason.endswith("; its config was queued again")
        retry = next(t for t in final.trials if t.user_attrs.get("retry_of") == outcomes[0].number)
        assert retry.state == TrialState.COMPLETE and retry.params == final.trials[outcomes[0].number].params
    assert not final.get_trials(states=(TrialState.RUNNING,))
    assert len(final.get_trials(states=(TrialState.COMPLETE,))) == 3  # the worker went on


def test_out_of_memory_trials_fail_with_the_reason_and_the_study_goes_on(tmp_path: Path, slow_file: Path):
    space = tmp_path / "bs.yaml"
    space.write_text("optimizer: {adam: {lr: {low: 1.0e-3, high: 1.0e-2, log: true}}}\n"
                     "batch_size: {choices: [16, 32]}\n")
    study, prepared = _prepared({"n_trials": 6, "sampler": "grid"}, slow_file, space, f"sqlite:///{tmp_path / 'o.db'}",
                                attr="oom")
    run_trials(study, prepared)
    trials = study.get_trials(deepcopy=False)
    ooms = [t for t in trials if t.state == TrialState.FAIL]
    assert ooms and all(t.params["batch_size"] == 32 for t in ooms)
    ran_out = [t for t in ooms if t.user_attrs.get("oom")]
    assert len(ran_out) == 1 and ran_out[0].user_attrs["reason"].startswith("out of memory: CUDA out of memory")
    # After that, batch 32 is not trained again on this device: recorded as avoided, with the reason.
    assert all(t.user_attrs.get("oom_avoided") and t.user_attrs["reason"].startswith("out of memory avoided")
               for t in ooms if t not in ran_out)
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 3  # the batch-16 configs trained
    # Nothing of the failed trials is kept alive: their models (and the buffers they held) were freed.
    import gc

    gc.collect()
    leaked = [o for o in gc.get_objects() if type(o) is torch.Tensor and o.numel() == 1_000_000]
    assert not leaked


def test_a_space_that_only_runs_out_of_memory_stops_the_study(tmp_path: Path, slow_file: Path):
    from tuner.study._engine import MAX_OOM_ASKS

    space = tmp_path / "big.yaml"
    space.write_text("optimizer: adam\nbatch_size: 64\n")
    study, prepared = _prepared({"n_trials": 20}, slow_file, space, f"sqlite:///{tmp_path / 'o.db'}", attr="oom")
    with pytest.raises(StudyError, match=f"batch sizes of 64 or more {MAX_OOM_ASKS} times in a row, and those ran "
                                         f"out of memory on cpu \\(trial 0\\)"):
        run_trials(study, prepared)
    assert len(study.trials) == 1 + MAX_OOM_ASKS  # one trained and ran out; the rest were not trained
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def test_a_torn_journal_tail_is_cut_and_the_study_goes_on(tmp_path: Path):
    """A crash mid-append leaves ``{"op_code": 4, "worker_id"`` without a newline: the next open cuts it (and
    keeps it aside), every earlier trial stays readable, and new trials append and parse."""
    from tuner.study import open_storage

    path = tmp_path / "t.journal"
    study = optuna.create_study(storage=open_storage(f"journal:{path}"), study_name="j")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 4, "worker_id"')
    study = optuna.load_study(storage=open_storage(f"journal:{path}"), study_name="j")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    fresh = optuna.load_study(storage=open_storage(f"journal:{path}"), study_name="j")
    assert [t.state for t in fresh.trials] == [TrialState.COMPLETE] * 5
    assert (tmp_path / "t.journal.torn").read_bytes() == b'{"op_code": 4, "worker_id"\n'
    # Torn while the study is open (another process sharing the journal killed mid-append): the next append
    # cuts it first instead of gluing its record onto it, and what an earlier repair kept aside stays.
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "trial')
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    fresh = optuna.load_study(storage=open_storage(f"journal:{path}", readonly=True), study_name="j")
    assert [t.state for t in fresh.trials] == [TrialState.COMPLETE] * 6
    assert (tmp_path / "t.journal.torn").read_bytes() == b'{"op_code": 4, "worker_id"\n{"op_code": 5, "trial\n'


def test_a_journal_in_a_folder_locks_by_its_file_name_and_a_dangling_lock_is_released(tmp_path: Path,
                                                                                        monkeypatch):
    """Optuna's journal lock is a symbolic link to the journal: made from a relative path in a folder it
    dangled (sub/x.journal.lock -> sub/sub/x.journal), and one left by a killed process was waited on forever.
    The link now holds the journal's file name (resolved beside it, from any folder or mount point), and a
    dangling one older than the grace period is removed."""
    import os
    import time

    from optuna.storages.journal._file import get_lock_file

    from tuner.study import open_storage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()  # a storage's folder is the user's to make
    storage = open_storage("journal:sub/x.journal")
    with get_lock_file(storage._backend._lock):
        assert os.readlink(tmp_path / "sub" / "x.journal.lock") == "x.journal"  # resolved beside the lock
        assert (tmp_path / "sub" / "x.journal.lock").exists()
    lock = tmp_path / "sub" / "x.journal.lock"
    os.symlink("sub/x.journal", lock)  # as a killed process left it: dangling
    old = time.time() - 60
    os.utime(lock, (old, old), follow_symlinks=False)
    study = optuna.create_study(storage=open_storage("journal:sub/x.journal"), study_name="x")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # would spin forever on the dangling lock
    assert not lock.is_symlink() and len(study.trials) == 1


def test_a_trial_reaped_while_alive_is_discarded_and_the_worker_goes_on(tmp_path: Path, slow_file: Path,
                                                                        space_file: Path, monkeypatch):
    """A worker that stalls past the grace period (SIGSTOP, a swapping machine) finds its trial failed by
    another worker when it wakes: its result is discarded with a reason, the re-queued copy runs, and the
    study completes its budget."""
    from tuner.study._liveness import reap_stale

    monkeypatch.setenv("TUNER_TEST_SLEEP", "0")
    study, prepared = _prepared({"n_trials": 3}, slow_file, space_file, f"sqlite:///{tmp_path / 'r.db'}")
    fit = prepared.trainer.fit
    stalled = []

    def fit_reaped_meanwhile(config, report=None, keep_model=False, micro_batch=None):
        result = fit(config, report=report, micro_batch=micro_batch)
        if not stalled:
            stalled.append(True)
            assert reap_stale(study, grace=-1.0)  # as another worker would after the grace period
        return result

    monkeypatch.setattr(prepared.trainer, "fit", fit_reaped_meanwhile)
    outcomes = run_trials(study, prepared).outcomes
    assert outcomes[0].state == "FAIL" and outcomes[0].reason.startswith("discarded:")
    trials = _check_clean(_load("b", f"sqlite:///{tmp_path / 'r.db'}"), 3)
    assert trials[0].user_attrs["reason"].startswith("worker lost")
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == trials[0].params


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path, slow_file: Path, space_file: Path):
    """SIGKILL to the supervisor of `--workers 2` (the OOM killer, a closed terminal): its workers notice
    within seconds, record their running trials as interrupted and exit, instead of training on as orphans;
    the next run leaves nothing RUNNING and meets the budget."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    spec = _spec_file(tmp_path, slow_file, space_file, n_trials=4, epochs=10)
    proc = subprocess.Popen([*TUNER, "study", "create", str(spec), "--storage", url, "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    training = False
    while not (len(workers) == 2 and training) and time.monotonic() < deadline:
        time.sleep(0.1)
        if Path(url[len("sqlite:///"):]).exists():
            try:
                running = [t for t in _load("w", url).get_trials(states=(TrialState.RUNNING,))
                           if "worker" in t.user_attrs]
                workers = {t.user_attrs["worker"]["pid"] for t in running}
                # A trial early in its training, so that the kill (noticed within half a second) lands while it
                # trains, not as it finishes: between two trials a worker stops with nothing to interrupt.
                training = any(1 <= len(t.intermediate_values) <= 3 for t in running)
            except Exception:  # still being created
                pass
    assert len(workers) == 2 and training, "the workers did not start"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stop_by = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < stop_by:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "orphaned workers kept training"
    study = _load("w", url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert sum(t.user_attrs.get("reason", "").startswith(QUEUED_AGAIN) for t in study.trials) >= 1
    assert _cli("study", "run", "w", "--storage", url, env=_env(TUNER_TEST_SLEEP="0")).returncode == 0
    _check_clean(_load("w", url), 4)


def test_workers_never_propose_the_same_config(tmp_path: Path, slow_file: Path):
    """Two workers starting together on a fresh study: each has its own sampler seed, so the first trials
    differ (with one seed for both, every startup trial was proposed twice). Trials of a second or so: a
    worker forked ready does not run all eight before the other has loaded its objective."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    done = _cli("study", "create", "--objective", f"{slow_file}:slow",
                "--space", "lr-only", "--name", "d", "--n-trials", "8", "--epochs", "1", "--threads", "1",
                "--workers", "2", "--storage", url)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = _load("d", url).trials
    params = [t.params["adam.lr"] for t in trials if "adam.lr" in t.params]
    assert len(params) >= 8 and len(set(params)) == len(params), params
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2


def test_workers_joining_a_fresh_study_at_once_get_their_own_seeds(tmp_path: Path, slow_file: Path,
                                                                    space_file: Path):
    """The race of the test above made deterministic: both workers join while the study has no trial yet
    (the moment where one spec seed used to serve every worker), and still draw different parameters."""
    study, prepared = _prepared({"n_trials": 4, "sampler": "random"}, slow_file, space_file,
                                f"sqlite:///{tmp_path / 'fresh.db'}")
    assert not study.trials
    # Each worker process prepares the spec on its own; both join while the study has zero trials.
    joined = [create_or_join(prepare(prepared.spec), worker=worker) for worker in (0, 1)]
    drawn = [study.ask().suggest_float("x", 1e-5, 1.0, log=True) for study in joined]
    assert drawn[0] != drawn[1]


def test_a_config_already_running_is_not_trained_twice(tmp_path: Path, slow_file: Path, space_file: Path):
    """A proposal equal to the config a running trial trains (here: the running trial's parameters queued
    again, as a retry would be) is set aside with the reason, and another config is asked for."""
    study, prepared = _prepared({"n_trials": 1, "sampler": "random"}, slow_file, space_file,
                                f"sqlite:///{tmp_path / 'one.db'}")
    from tuner.study._engine import _take

    first, _ = _take(study, prepared.plan())
    study.enqueue_trial(first.params)
    second, _ = _take(study, prepared.plan())
    assert second.params != first.params
    skipped = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert len(skipped) == 1 and skipped[0].params == first.params
    assert skipped[0].user_attrs["reason"].startswith(f"duplicate: the same parameters as trial {first.number}")
    assert skipped[0].user_attrs["duplicate_of"] == first.number
    for trial in (first, second):
        study.tell(trial, 0.5)


def test_when_every_worker_fails_the_summary_is_printed_before_the_error(tmp_path: Path, space_file: Path):
    """Each worker's error, the study summary and the JSON still reach the user; then one error line, exit 1."""
    objective = tmp_path / "only_here.py"
    objective.write_text(SYNTHETIC_OBJECTIVE + "\nimport multiprocessing\nif multiprocessing.parent_process() "
                                               "is not None:\n    raise RuntimeError('cannot load in a worker')\n")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    args = ("study", "create", "--objective", f"{objective}:objective", "--space", str(space_file), "--name", "f",
            "--n-trials", "2", "--epochs", "1", "--threads", "1", "--workers", "2", "--storage", url)
    done = _cli(*args)
    assert done.returncode == 1
    assert done.stderr.count("cannot load in a worker") >= 3  # worker 0, worker 1, the error line
    assert "trials: 0 complete, 0 pruned, 0 failed" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("error: every worker stopped with an error")
    as_json = _cli("study", "run", "f", "--storage", url, "--workers", "2", "--format", "json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert [w["exitcode"] for w in report["run"]["workers"]] == [1, 1]


def test_without_a_claim_lock_the_duplicate_check_reads_the_study_after_sampling(tmp_path: Path, slow_file: Path,
                                                                                 space_file: Path, monkeypatch):
    """Where no lock serialises the workers (a server without one), another worker may take the same
    proposal while this one samples: the duplicate check must see it, so it reads the study afresh."""
    from tuner.study._engine import _take
    from tuner.study._record import storage_of

    study, prepared = _prepared({"n_trials": 2, "sampler": "random"}, slow_file, space_file,
                                f"sqlite:///{tmp_path / 'race.db'}")
    plan = prepared.plan()
    first, _ = _take(study, plan)
    study.tell(first, 0.5)
    study.enqueue_trial(first.params)
    sample = plan.space.sample

    def racing(trial, **kwargs):
        config = sample(trial, **kwargs)
        if trial.params == first.params:  # meanwhile another worker starts the same config
            storage_of(study).create_new_trial(study._study_id, template_trial=optuna.trial.create_trial(
                state=TrialState.RUNNING, params=first.params, distributions=first.distributions))
        return config

    monkeypatch.setattr(plan.space, "sample", racing)
    second, _ = _take(study, plan)  # no claim-lock read handed over: as a worker without a lock
    assert second.params != first.params
    skipped = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert len(skipped) == 1 and skipped[0].user_attrs["reason"].startswith("duplicate: the same parameters")


def test_the_storage_lock_says_whether_it_serialises(tmp_path: Path):
    from tuner.study._storage import storage_lock

    url = f"sqlite:///{tmp_path / 'lock.db'}"
    with storage_lock(url, "s") as locked:
        with storage_lock(url, "s") as again:  # re-entered by the same thread
            assert locked is True and again is True
    with storage_lock(f"journal:{tmp_path / 'l.journal'}", "s") as locked:
        assert locked is True
    with storage_lock("mysql://user@127.0.0.1/db", "s") as locked:  # no lock for this server: workers race
        assert locked is False


def test_a_lost_trial_says_whether_it_was_queued_again(tmp_path: Path):
    """The reaper's reason and ``study show``'s group agree: a lost trial with a config is queued again (one of
    a space of fixed values too, which has no parameters); one lost before it had a config (asked, nothing
    sampled yet) is not, and says why."""
    from tuner.study._liveness import reap_stale
    from tuner.study._record import StopReason

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'l.db'}", study_name="l")
    bare = study.ask()
    sampled = study.ask()
    sampled.suggest_float("x", 0.0, 1.0)
    fixed = study.ask()
    fixed.set_user_attr("config", {"optimizer": {"name": "sgd", "lr": 0.1}})
    assert sorted(reap_stale(study, grace=-1.0)) == [bare.number, sampled.number, fixed.number]
    reasons = {t.number: StopReason.parse(t.user_attrs["reason"], t.user_attrs.get("reason_kind"))
               for t in study.get_trials() if t.number in (bare.number, sampled.number, fixed.number)}
    assert reasons[bare.number].endswith("not queued again (it had no config yet)")
    assert reasons[bare.number].group == "worker lost (not re-queued)"
    assert reasons[sampled.number].endswith("its parameters were queued again")
    assert reasons[sampled.number].group == "worker lost (re-queued)"
    assert reasons[fixed.number].endswith("its parameters were queued again")
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL", "FAIL", "WAITING", "WAITING"]


def test_a_worker_whose_sigterm_exception_python_lost_still_stops(tmp_path: Path, space_file: Path):
    """A worker's signal handler raises; run inside a ``__del__``, Python loses that exception. The worker still
    stops at its trial's next epoch, records the trial as interrupted (its config queued again), and the other
    worker finishes the budget: the command neither hangs on that worker nor runs its trials on."""
    objective = tmp_path / "lost.py"
    objective.write_text(SYNTHETIC_OBJECTIVE + textwrap.dedent(LOST_SIGTERM) + textwrap.dedent("""
        import multiprocessing

        def _build(data):
            # worker 0's first trial's model (its first model is built as the worker prepares the study)
            _build.built += 1
            if multiprocessing.current_process().name == "tuner-worker-0" and _build.built == 2:
                Collected()
            return build_model(data)

        _build.built = 0
        lost = Objective("lost", load_data=load_data, build_model=_build, metric="accuracy")
        """))
    spec = _spec_file(tmp_path, objective, space_file, attr="lost", n_trials=6, epochs=3)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    result = _cli("study", "create", str(spec), "--storage", url, "--workers", "2", "--format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Exception ignored" in result.stderr, result.stderr[-3000:]  # lost, as in the wild
    workers = json.loads(result.stdout)["run"]["workers"]
    assert sorted(w["exitcode"] for w in workers) == [0, 143], workers
    trials = _load("w", url).get_trials(deepcopy=False)
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["reason_kind"] == "interrupted", stopped
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6  # the other worker ran the budget
