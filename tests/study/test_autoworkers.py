"""``--workers auto``: one process per core where a trial trains as fast on one thread, and only where that
keeps the study's promises (a timeout, a CPU, a study long enough to pay for starting workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch

from tuner.errors import ConfigError
from tuner.study import _autoworkers
from tuner.study._autoworkers import choose_workers, parse_workers, requested_workers
from tuner.train import Trainer


def _prepared(timings: dict[int, float] | None, *, threads: int | None = None, epochs: int = 20, rows: int = 6400,
              device: str = "cpu", nbytes: int = 1000) -> SimpleNamespace:
    calls: list[list[int]] = []

    def thread_timings(candidates: list[int]) -> dict[int, float]:
        calls.append(candidates)
        return dict(timings or {})

    data = SimpleNamespace(x_train=torch.zeros(rows, 2), nbytes=lambda: nbytes)
    trainer = SimpleNamespace(device=torch.device(device), cpu_data=data, thread_timings=thread_timings)
    return SimpleNamespace(trainer=trainer, spec=SimpleNamespace(threads=threads, epochs=epochs), calls=calls)


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_autoworkers, "usable_cores", lambda: 4)
    monkeypatch.setattr(_autoworkers, "_memory_bytes", lambda: 64e9)


def test_a_trial_as_fast_on_one_thread_gets_one_worker_per_core(four_cores):
    prepared = _prepared({1: 1e-3, 4: 1e-3})  # 100 steps an epoch: 2 s a trial on one thread
    choice = choose_workers(prepared, "auto", n_left=60, timeout=300.0)
    assert (choice.n, choice.threads, choice.auto) == (4, 1, True)
    assert prepared.calls == [[1, 4]]
    assert choice.line() == ("workers: 4 (auto): one trial trains as fast on 1 thread as on 4, so 4 processes share "
                             "the 4 cores, one thread each (--workers 1: one process)")


@pytest.mark.parametrize(("timings", "n_left", "timeout", "threads", "why"), [
    ({1: 4e-3, 4: 1e-3}, 60, 300.0, 4, "one trial trains 4.0x as fast on 4 threads as on 1, so one process on the 4 "
                                       "cores does more than 4 processes"),
    # 4 trials x 20 epochs x 100 steps x 1 ms: 8 s of training
    ({1: 1e-3, 4: 1e-3}, 4, 300.0, 1, "about 8.0 s of training: too little to pay for starting workers (--workers 4 "
                                      "starts them anyway)"),
    # Said before timing (the run then takes one thread without timing: benchmarks/README.md, throughput)
    ({1: 1e-3, 4: 1e-3}, 60, 5.0, None, "a 5 s timeout: too little to pay for starting workers (--workers 4 starts "
                                        "them anyway)"),
])
def test_where_one_process_does_more_it_stays_in_one_and_says_why(four_cores, timings, n_left, timeout, threads, why):
    choice = choose_workers(_prepared(timings), "auto", n_left=n_left, timeout=timeout)
    assert (choice.n, choice.threads, choice.why) == (1, threads, why)


def test_a_trial_within_a_tenth_on_more_threads_trains_about_as_fast(four_cores):
    choice = choose_workers(_prepared({1: 1.05e-3, 4: 1e-3}), "auto", n_left=60, timeout=300.0)
    assert choice.why.startswith("one trial trains about as fast on 1 thread as on 4, so 4 processes share")


def test_a_trial_somewhat_faster_on_more_threads_still_gets_workers(four_cores):
    # 1.5x faster on 4 threads than on 1: four one-thread processes still do more than twice as much.
    choice = choose_workers(_prepared({1: 1.5e-3, 4: 1e-3}), "auto", n_left=60, timeout=300.0)
    assert choice.n == 4 and "1.5x as fast on 4 threads as on 1, so 4 processes share the 4 cores" in choice.why


def test_without_a_timeout_the_study_runs_in_one_process_and_says_how_to_spread_it(four_cores):
    prepared = _prepared({1: 1e-3, 4: 1e-3})
    choice = choose_workers(prepared, "auto", n_left=60, timeout=None)
    assert choice.n == 1 and prepared.calls == []  # nothing timed
    assert choice.why == ("a study without a timeout runs in one process, so that it repeats exactly "
                          "(--workers 4 spreads it over the 4 cores)")


def test_each_worker_gets_two_trials_at_least(four_cores):
    assert choose_workers(_prepared({1: 1e-3, 4: 1e-3}, epochs=200), "auto", n_left=5, timeout=300.0).n == 2
    assert choose_workers(_prepared({1: 1e-3, 4: 1e-3}), "auto", n_left=1, timeout=300.0).n == 1


@pytest.mark.parametrize(("device", "cores"), [("meta", 4), ("cpu", 1)])
def test_no_workers_on_a_gpu_or_a_single_core(monkeypatch: pytest.MonkeyPatch, device: str, cores: int):
    monkeypatch.setattr(_autoworkers, "usable_cores", lambda: cores)
    prepared = _prepared({1: 1e-3, cores: 1e-3}, device=device)
    assert choose_workers(prepared, "auto", n_left=60, timeout=300.0).n == 1 and prepared.calls == []


def test_threads_asked_for_divide_the_cores_without_timing(four_cores):
    prepared = _prepared(None, threads=2)
    choice = choose_workers(prepared, "auto", n_left=60, timeout=300.0)
    assert (choice.n, choice.threads) == (2, 2) and prepared.calls == []
    assert choice.why == "2 thread(s) per trial (--threads 2) on 4 cores (--workers 1: one process)"


def test_memory_limits_the_workers(four_cores, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_autoworkers, "_memory_bytes", lambda: 4e9)  # room for two copies of 600 MB and a worker
    assert choose_workers(_prepared({1: 1e-3, 4: 1e-3}, nbytes=int(6e8)), "auto", n_left=60, timeout=300.0).n == 2


def test_a_number_asked_for_is_kept_and_devices_get_one_each(four_cores):
    prepared = _prepared({1: 1e-3, 4: 1e-3})
    assert choose_workers(prepared, 3, n_left=60, timeout=None).line() == "workers: 3"
    assert choose_workers(prepared, 1, devices=["cuda:0", "cuda:1"], n_left=60, timeout=None).n == 2
    auto = choose_workers(prepared, "auto", devices=["cuda:0", "cuda:1"], n_left=60, timeout=None)
    assert (auto.n, auto.why) == (2, "one on each of cuda:0, cuda:1")
    assert prepared.calls == []


def test_when_one_process_wins_it_keeps_the_threads_it_trains_fastest_on(four_cores):
    # Too short for workers (9 s of training): the study still trains on 4 threads, 1.5x faster than 1.
    short = choose_workers(_prepared({1: 1.5e-3, 4: 1e-3}, epochs=1), "auto", n_left=60, timeout=300.0)
    assert (short.n, short.threads) == (1, 4) and short.why.startswith("about 9.0 s of training: too little")
    # 3 trials left: one worker only, and one process trains on the 4 cores, 2x faster than 1.
    capped = choose_workers(_prepared({1: 2e-3, 4: 1e-3}, epochs=400), "auto", n_left=3, timeout=300.0)
    assert (capped.n, capped.threads) == (1, 4)
    assert capped.why == "3 trial(s) left, fewer than two for each of 4 workers, so the trials run in one process"


def test_workers_capped_below_the_cores_must_still_beat_one_process(four_cores):
    # 3x faster on 4 threads: 4 one-thread workers (3.4) beat one process (3), 2 workers (1.7) do not.
    assert choose_workers(_prepared({1: 3e-3, 4: 1e-3}, epochs=400), "auto", n_left=60, timeout=300.0).n == 4
    capped = choose_workers(_prepared({1: 3e-3, 4: 1e-3}, epochs=400), "auto", n_left=5, timeout=300.0)
    assert (capped.n, capped.threads) == (1, 4) and "so one process on the 4 cores does more than 2 processes" in \
        capped.why


def test_threads_asked_for_with_a_short_timeout_stay_in_one_process(four_cores):
    choice = choose_workers(_prepared(None, threads=1), "auto", n_left=60, timeout=3.0)
    assert choice.n == 1 and choice.why == ("a 3 s timeout: too little to pay for starting workers (--workers 4 "
                                            "starts them anyway)")


def test_failed_timing_stays_in_one_process(four_cores):
    assert choose_workers(_prepared({}), "auto", n_left=60, timeout=300.0).n == 1


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (" AUTO ", "auto"), ("3", 3), (2, 2)])
def test_parse_workers(value, expected):
    assert parse_workers(value) == expected


@pytest.mark.parametrize("value", ["0", 0, -1, "many", True, 1.5, None])
def test_bad_workers_are_refused_with_the_valid_forms(value):
    with pytest.raises(ConfigError, match=r"^--workers must be auto or a whole number of at least 1; got "):
        requested_workers(value)


def test_the_environment_sets_auto_and_is_checked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TUNER_WORKERS", "3")
    assert requested_workers("auto") == 3 and requested_workers("2") == 2  # a number asked for wins
    monkeypatch.setenv("TUNER_WORKERS", "lots")
    with pytest.raises(ConfigError, match=r"^\$TUNER_WORKERS must be auto or a whole number"):
        requested_workers("auto")


SLEEPY = '''
import os
import time

from torch import nn

from tuner.objectives import Objective, from_arrays
import torch

SLEEP = 0.01


def load_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return from_arrays(x[:128], y[:128], x[128:160], y[128:160], x[160:], y[160:], n_classes=2)


class Sleepy(nn.Module):
    """Training steps that wait more than they compute: as fast on one thread as on all."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 2)

    def forward(self, x):
        if self.training:
            time.sleep(SLEEP)
        return self.inner(x)


sleepy = Objective("sleepy", load_data=load_data, build_model=lambda d: Sleepy(), metric="accuracy")
'''


@pytest.mark.skipif(_autoworkers.usable_cores() < 2, reason="auto starts workers only where several cores are usable")
def test_auto_runs_one_worker_per_core_from_the_command(tmp_path: Path):
    """The command's default, as a user meets it: a timed study whose trial trains as fast on one thread runs
    in one process per core; the JSON says how many and why."""
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    # 2000 trials x 2 epochs x 2 steps x 10 ms: 80 s of training on one thread, more than two workers finish in the
    # timeout. Workers take 3 to 4 s to start on an idle machine (importing PyTorch, its compiler on the first
    # optimizer, the storage) and twice that beside other tests: the timeout leaves time for trials after that.
    timeout = 16
    spec = {"name": "auto", "objective": f"{tmp_path / 'sleepy.py'}:sleepy", "space": "lr-only", "sampler": "random",
            "pruner": "none", "n_trials": 2000, "epochs": 2, "timeout": timeout, "device": "cpu",
            "heartbeat_interval": 0.5, "grace_period": 2.0}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for key in ("TUNER_WORKERS", "TUNER_STORAGE"):
        env.pop(key, None)
    result = subprocess.run([str(Path(sys.executable).with_name("tuner")), "study", "create", "spec.json", "--storage",
                             f"sqlite:///{tmp_path / 'a.db'}", "--format", "json"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout)["run"]
    n = len(run["workers"])
    assert n >= 2, run  # as many as the cores, or as memory holds
    assert run["workers_why"].startswith("one trial trains"), run["workers_why"]
    assert f"so {n} processes share the {_autoworkers.usable_cores()} cores" in run["workers_why"]
    assert all(w["exitcode"] == 0 and w["error"] is None for w in run["workers"]), run["workers"]
    assert run["stopped_by"] == "timeout" and {w["stopped_by"] for w in run["workers"]} == {"timeout"}
    # The timeout counts from when the workers are started, not from each one's own start-up: no trial starts
    # after it (the pool started at most its `seconds` before the command ended).
    pool_started = datetime.now() - timedelta(seconds=run["seconds"])
    trials = optuna.load_study(study_name="auto", storage=f"sqlite:///{tmp_path / 'a.db'}").get_trials()
    assert run["trials"] == sum(t.state.is_finished() for t in trials) > 0  # one JSON shape, counted from the study
    assert max(t.datetime_start for t in trials) <= pool_started + timedelta(seconds=timeout), (pool_started, run)


@pytest.mark.parametrize("timeout", [None, "2"])
def test_the_command_says_why_it_runs_in_one_process(timeout, tmp_cwd: Path, objective_ref: str, storage_url: str,
                                                     monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from tuner.cli import app

    monkeypatch.delenv("TUNER_WORKERS")
    monkeypatch.setattr(_autoworkers, "usable_cores", lambda: 2)
    monkeypatch.setattr(Trainer, "thread_timings", lambda self, candidates, *args: {1: 1e-3, 2: 1e-3})
    args = ["study", "create", "--objective", objective_ref, "--n-trials", "4", "--epochs", "1", "--storage",
            storage_url, "--device", "cpu", *(["--timeout", timeout] if timeout else [])]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    said = " ".join(text.output.split())
    if timeout is None:
        assert ("workers: 1 (auto): a study without a timeout runs in one process, so that it repeats exactly "
                "(--workers 2 spreads it over the 2 cores)") in said
    else:
        assert "workers: 1 (auto): a 2 s timeout: too little to pay for starting workers (--workers 2 starts " \
               "them anyway)" in said
    data = CliRunner().invoke(app, [*args, "--name", "j", "--format", "json"])
    assert data.exit_code == 0, data.output
    run = json.loads(data.stdout)["run"]
    assert run["workers"] == [] and run["requeued"] == []
    assert run["workers_why"].startswith(("a study without a timeout", "a 2 s timeout"))


def test_run_study_takes_auto_and_refuses_what_the_command_refuses(tmp_path: Path, objective_ref: str,
                                                                   monkeypatch: pytest.MonkeyPatch):
    import tuner

    monkeypatch.delenv("TUNER_WORKERS")
    monkeypatch.setattr(_autoworkers, "usable_cores", lambda: 2)
    with pytest.raises(ConfigError, match=r"^workers must be auto or a whole number of at least 1; got 0"):
        tuner.run_study(objective=objective_ref, workers=0, storage=f"sqlite:///{tmp_path / 'x.db'}")
    result = tuner.run_study(objective=objective_ref, workers="auto", n_trials=2, epochs=1, device="cpu",
                             storage=f"sqlite:///{tmp_path / 'r.db'}", verbose=False)
    assert result.trials == 2 and result.workers == []
    assert result.workers_why == ("a study without a timeout runs in one process, so that it repeats exactly "
                                  "(workers=2 spreads it over the 2 cores)")


def _study_auto_would_spread(tmp_path: Path, objective_ref: str, monkeypatch: pytest.MonkeyPatch, n_trials: int):
    """A study (timeout, pack: auto) for which auto chooses 2 workers, and session.run_study to run it."""
    from tuner.study import StudySpec, create_or_join, prepare
    from tuner.study._session import run_study

    monkeypatch.delenv("TUNER_WORKERS")
    monkeypatch.delenv("TUNER_PACK")
    spec = StudySpec.from_mapping({"name": "p", "objective": objective_ref, "space": "lr-only", "n_trials": n_trials,
                                   "epochs": 1, "timeout": 600, "storage": f"sqlite:///{tmp_path / 'p.db'}",
                                   "device": "cpu", "pack": "auto"}, "test")
    prepared = prepare(spec)
    monkeypatch.setattr(_autoworkers, "choose_workers", lambda *a, **k: _autoworkers.WorkersChoice(
        2, "one trial trains as fast on 1 thread as on 2", threads=1, alone=1))
    return lambda **kwargs: run_study(create_or_join(prepared), prepared, workers="auto", **kwargs)


@pytest.mark.parametrize(("auto", "packs", "pack_line"), [
    (True, "trial packs pay off here", "pack: 4 (auto): 4 trials at once trained 2.0x the model-steps/s of one trial"),
    (False, "packs of 4 were asked for", "pack: 4: 4 trials at once, as asked"),
])
def test_where_packs_pay_they_train_in_one_process(auto: bool, packs: str, pack_line: str, tmp_path: Path,
                                                   objective_ref: str, monkeypatch: pytest.MonkeyPatch):
    """auto would start workers, but the pack probe finds that packs pay (or packs were asked for): one process
    trains the packs (each worker's pack would hold a share of the budget), and both lines say so."""
    from tuner.study import _autopack
    from tuner.study._autopack import PackChoice

    run = _study_auto_would_spread(tmp_path, objective_ref, monkeypatch, 8)
    asked: list[tuple] = []

    def probe(prepared, n_trials, workers=1, trainer_threads=1, time_left=None):
        asked.append((n_trials, workers, trainer_threads, time_left))
        return PackChoice(4, pack_line.split(": ", 2)[-1], threads=1, auto=auto)

    monkeypatch.setattr(_autopack, "choose_pack", probe)
    lines: list[str] = []
    result = run(on_start=lines.append)
    assert [a[:3] for a in asked] == [(8, 1, 1)] and 599 < asked[0][3] <= 600  # probed once, as one process would
    assert result.workers == [] and result.pack == 4 and result.trials == 8
    assert lines == [f"workers: 1 (auto): {packs}, and they train in one process on the cores (--workers 2 starts "
                     f"2 processes anyway)", pack_line]


def test_where_packs_do_not_pay_the_workers_are_told_and_do_not_time_them_again(
        tmp_path: Path, objective_ref: str, monkeypatch: pytest.MonkeyPatch):
    from tuner.study import _autopack
    from tuner.study._autopack import PackChoice

    run = _study_auto_would_spread(tmp_path, objective_ref, monkeypatch, 4)
    why = "packs trained at most 0.42x the model-steps/s of one trial here (a pack needs 1.3x)"
    monkeypatch.setattr(_autopack, "choose_pack", lambda *a, **k: PackChoice(1, why))
    result = run()
    assert len(result.workers) == 2 and result.trials >= 4  # the last trials in flight may overshoot
    assert [(w.pack, w.pack_why) for w in result.workers] == [(1, why), (1, why)]  # the supervisor's, as told


@pytest.mark.parametrize("text", ["", ",", "cpu,", " , cpu"])
def test_a_device_list_with_an_empty_name_is_refused(text: str):
    """It was read as no devices at all, without a word."""
    from tuner.errors import ConfigError
    from tuner.study._workers import parse_devices

    with pytest.raises(ConfigError, match=r"--devices: a comma-separated list of devices .* without empty names"):
        parse_devices(text)
    assert parse_devices(None) == [] and parse_devices("cpu, cpu") == ["cpu", "cpu"]
