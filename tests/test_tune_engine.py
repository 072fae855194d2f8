"""``tuner.tune`` runs on the one trial engine: what the CLI guarantees, the library path guarantees too
(seeding, printed progress, the user's file and line in errors, the reaper, out-of-memory handling, the
timeout, interrupts, worker processes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import LOST_SIGTERM
from optuna.trial import TrialState

import tuner
from tuner.study._record import Key, StopKind, record_of


def _noisy(ctx: tuner.TrialContext) -> float:
    """A run whose value depends on torch's, NumPy's and Python's random state: equal only when seeded."""
    import random

    import numpy as np

    model = torch.nn.Linear(4, 1)
    x = torch.randn(32, 4)
    value = float(model(x).mean().detach()) + float(np.random.rand()) + random.random()
    ctx.report(0, value)
    return value


def _values(result: tuner.TuneResult) -> list[float]:
    return [t.value for t in result.study.trials]


def test_two_runs_with_one_seed_give_identical_values():
    first = tuner.tune(_noisy, space="lr-only", n_trials=4, epochs=1, seed=3, pruner="none", verbose=False)
    second = tuner.tune(_noisy, space="lr-only", n_trials=4, epochs=1, seed=3, pruner="none", verbose=False)
    other = tuner.tune(_noisy, space="lr-only", n_trials=4, epochs=1, seed=4, pruner="none", verbose=False)
    assert _values(first) == _values(second)
    assert _values(first) != _values(other)


def test_one_seed_gives_the_same_trials_in_another_process_with_known_starts_queued():
    # A fresh study whose first trials are queued starts is not a resumed one: its sampler keeps the seed (a
    # resumed study's sampler is reseeded per process, which made every call to tune() draw other trials).
    code = textwrap.dedent("""
        import tuner

        def train(ctx):
            ctx.report(0, ctx.config.optimizer.lr)
            return ctx.config.optimizer.lr

        result = tuner.tune(train, space="adam-family", n_trials=4, epochs=1, seed=5, verbose=False)
        print(sorted(sorted(t.params.items()) for t in result.study.trials))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(tuner.__file__).resolve().parents[1])}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr[-3000:]
    assert "known" not in runs[0].stdout and "batch_size" in runs[0].stdout
    assert runs[0].stdout == runs[1].stdout


def test_progress_lines_and_summary_are_printed_unless_quiet(capsys):
    tuner.tune(_noisy, space="lr-only", n_trials=3, epochs=1, pruner="none", study_name="shown")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tuning _noisy over space 'lr-only': study 'shown', 3 trials x 1 epoch")
    assert out.pop(1) == ("direction: maximize (the default; pass direction='minimize' if train returns a loss or "
                          "an error)")
    assert [line.split()[:3] for line in out[1:4]] == [["trial", "0", "COMPLETE"], ["trial", "1", "COMPLETE"],
                                                        ["trial", "2", "COMPLETE"]]
    assert "done 3/3" in out[3]
    assert out[4].startswith("ran 3 trial(s) in") and "best trial" in out[4]
    tuner.tune(_noisy, space="lr-only", n_trials=2, epochs=1, pruner="none", verbose=False)
    assert capsys.readouterr().out == ""


def _broken(ctx: tuner.TrialContext) -> float:
    if ctx.number == 0:
        raise KeyError("shard-3")  # the line the record must point at
    return 0.5


def test_an_error_in_user_code_is_recorded_with_its_file_and_line(capsys):
    result = tuner.tune(_broken, space="lr-only", n_trials=2, epochs=1)
    failed = record_of(result.study.trials[0])
    line = next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if 'KeyError("shard-3")' in text)
    assert failed.state == "FAIL" and failed.reason.kind is StopKind.ERROR
    assert failed.reason == f"KeyError: 'shard-3' (at {__file__}:{line} in _broken)"
    assert failed.error_at == f"{__file__}:{line} in _broken"
    assert f"{Path(__file__).name}:{line} in _broken" in capsys.readouterr().out  # the per-trial line shows it


def _out_of_memory(ctx: tuner.TrialContext) -> float:
    if ctx.number == 0:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return 0.5


def test_out_of_memory_fails_the_trial_with_the_reason_and_the_study_goes_on():
    result = tuner.tune(_out_of_memory, space="lr-only", n_trials=2, epochs=1, verbose=False)
    first = result.study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs[Key.OOM] is True
    assert first.user_attrs[Key.REASON].startswith("out of memory: CUDA out of memory")
    assert [t.state for t in result.study.trials[1:]] == [TrialState.COMPLETE] * 2


def _endless(ctx: tuner.TrialContext) -> float:
    import time

    for epoch in range(ctx.config.epochs):
        time.sleep(0.05)
        ctx.report(epoch, 0.5)
    return 0.5


def test_the_timeout_stops_the_running_trial_at_its_next_report():
    result = tuner.tune(_endless, space="lr-only", n_trials=3, epochs=100_000, timeout=1.0, pruner="none",
                        verbose=False)
    last = record_of(result.study.trials[-1])
    assert last.state == "FAIL" and last.reason.kind is StopKind.TIMEOUT
    assert 0 < len(result.study.trials[-1].intermediate_values) < 100_000


def test_a_trial_of_a_dead_process_is_reaped_and_its_config_run_again(tmp_path: Path):
    """A RUNNING trial left by a process that died (SIGKILL, the OOM killer) is failed as 'worker lost' and
    its parameters queued again when tune() resumes the study, as the CLI's workers do."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    tuner.tune(_noisy, space="lr-only", n_trials=1, epochs=1, storage=url, study_name="t", verbose=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.load_study(study_name="t", storage=url)
    orphan = study.ask({"adam.lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)})
    from tuner.study._liveness import worker_identity

    identity = {**worker_identity(), "pid": dead.pid}
    orphan.set_user_attr(Key.WORKER, identity)
    lr = orphan.params["adam.lr"]
    result = tuner.tune(_noisy, space="lr-only", n_trials=3, epochs=1, storage=url, study_name="t", verbose=False)
    reaped = record_of(result.study.trials[orphan.number])
    assert reaped.state == "FAIL" and reaped.reason.kind is StopKind.WORKER_LOST
    assert any(t.params.get("adam.lr") == lr and t.state == TrialState.COMPLETE for t in result.study.trials)
    assert not result.study.get_trials(states=(TrialState.RUNNING,))


def test_workers_run_an_importable_train_fn_in_processes(tmp_path: Path):
    script = tmp_path / "train_job.py"
    script.write_text(textwrap.dedent("""
        import os
        import time
        import tuner

        def train(ctx):
            for epoch in range(ctx.config.epochs):
                time.sleep(0.1)  # long enough that a worker ready first does not take every trial
                ctx.report(epoch, ctx.config.optimizer.lr)
            return ctx.config.optimizer.lr

        def broken(ctx):
            raise ValueError("boom")

        def deleting(ctx):
            if ctx.number == 2:  # another terminal: `tuner study delete d --force`
                import optuna
                optuna.delete_study(study_name="d", storage="sqlite:///d.db")
            time.sleep(0.1)
            ctx.report(0, 0.5)
            return 0.5

        if __name__ == "__main__":
            try:  # failures in a row are the study's, counted over both workers: not 3 per worker
                tuner.tune(broken, space="lr-only", n_trials=20, epochs=1, workers=2, max_consecutive_failures=3,
                           storage="sqlite:///w.db", study_name="b", verbose=False)
            except tuner.StudyError as exc:
                print("stopped:", exc)
            try:
                # A storage of its own: SQLite gives the next study the deleted one's id, and a worker's trial
                # written as the study was deleted would then be that study's
                tuner.tune(deleting, space="lr-only", n_trials=8, epochs=1, workers=2, storage="sqlite:///d.db",
                           study_name="d", verbose=False, known_starts=False)
            except tuner.StudyError as exc:
                print("deleted:", exc)
            result = tuner.tune(train, space="lr-only", n_trials=6, epochs=2, pruner="none", workers=2,
                                storage="sqlite:///w.db", study_name="w")
            print("best", result.best_value, os.getpid())
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(tuner.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w.db'}")
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 6
    pids = {t.user_attrs[Key.WORKER]["pid"] for t in finished}
    assert len(pids) == 2 and int(done.stdout.split()[-1]) not in pids  # trained by two other processes
    assert "2 workers ran 6 trial(s)" in done.stdout
    assert "deleted: Study 'd' was deleted from sqlite:///d.db while it ran" in done.stdout, done.stdout[-2000:]
    failed = optuna.load_study(study_name="b", storage=f"sqlite:///{tmp_path / 'w.db'}").trials
    assert "stopped:" in done.stdout and "consecutive failed trials" in done.stdout and "boom" in done.stdout
    # 3 in a row stop it; the other worker's trial in flight then may fail as a fourth, not 3 more.
    assert 3 <= len([t for t in failed if t.state == TrialState.FAIL]) <= 4, [t.state for t in failed]


def test_a_timeout_with_workers_counts_their_start_up_as_run_study_does(tmp_path: Path):
    """tune(timeout=T, workers=N) stops T seconds after the call, as run_study and the command do; a worker's
    start-up is not a fresh T of its own."""
    script = tmp_path / "slow_start.py"
    script.write_text(textwrap.dedent("""
        import time
        import tuner

        if __name__ != "__main__":  # a worker importing this script: a slow start-up (2 s), past the timeout
            time.sleep(2)

        def train(ctx):
            return ctx.config.optimizer.lr

        if __name__ == "__main__":
            result = tuner.tune(train, space="lr-only", n_trials=50, epochs=1, workers=2, timeout=1,
                                storage="sqlite:///w.db", study_name="w")
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(tuner.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 workers ran 0 trial(s)" in done.stdout and "(timeout reached)" in done.stdout, done.stdout
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w.db'}")
    assert not [t for t in study.trials if t.state.is_finished()]


def test_workers_need_an_importable_function_and_a_storage(tmp_path: Path):
    with pytest.raises(tuner.ConfigError, match="workers=2 needs a storage"):
        tuner.tune(_noisy, space="lr-only", n_trials=2, workers=2)
    with pytest.raises(tuner.ConfigError, match="importable"):
        tuner.tune(lambda ctx: 0.5, space="lr-only", n_trials=2, workers=2,
                   storage=f"sqlite:///{tmp_path / 'x.db'}")
    assert not (tmp_path / "x.db").exists()


def test_a_train_fn_defined_under_the_main_guard_is_refused_for_workers(tmp_path: Path):
    """The workers import the script without running its `if __name__ == "__main__":` block: a train_fn
    defined there is not found by them (each died with an AttributeError before)."""
    from tuner.study._user import _refuse_guarded

    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import tuner
        from os.path import join as helper

        def top(ctx):
            return 0.5

        if __name__ == "__main__":
            def local(ctx):
                return 0.5
            tuner.tune(local, workers=2, storage="sqlite:///j.db")
    """))
    with pytest.raises(tuner.ConfigError, match=r"local is defined under `if __name__ == \"__main__\":` in .*job.py "
                                                r"\(line 8\).*define it above that block"):
        _refuse_guarded(str(script), "local")
    _refuse_guarded(str(script), "top")  # defined at the top: found by the workers
    _refuse_guarded(str(script), "helper")  # imported at the top


def _sometimes_nothing(ctx: tuner.TrialContext) -> float | None:
    if ctx.number == 1:
        return None  # a config this train_fn skips: that trial fails, the study goes on
    return 0.5


def test_a_trial_whose_train_fn_returns_nothing_fails_alone():
    result = tuner.tune(_sometimes_nothing, space="lr-only", n_trials=3, epochs=1, verbose=False)
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "train_fn returned None and reported nothing" in result.study.trials[1].user_attrs[Key.REASON]


def _returns_a_dict(ctx: tuner.TrialContext) -> dict:
    for epoch in range(ctx.config.epochs):
        ctx.report(epoch, 0.5)
    return {"accuracy": 0.5}


def test_a_mistake_in_the_train_fns_code_stops_the_study_at_its_first_trial(tmp_path):
    """A dict returned (or epochs reported out of order) is the code's mistake, which every trial makes: five
    trials ran and failed before the study stopped, more than the budget of two."""
    import optuna

    from tuner.errors import StudyError

    url = f"sqlite:///{tmp_path / 'm.db'}"
    with pytest.raises(StudyError, match=r"stopped at trial 0: TrainFnMisuse: train_fn must return the validation "
                                         r"metric .*got dict\. Fix train_fn and run again"):
        tuner.tune(_returns_a_dict, space="lr-only", n_trials=2, epochs=1, verbose=False, known_starts=False,
                   storage=url, study_name="m")
    trials = optuna.load_study(study_name="m", storage=url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # its config queued for the fix
    assert trials[1].system_attrs["fixed_params"] == trials[0].params


def _two_epochs(ctx: tuner.TrialContext) -> float:
    value = 0.5 + ctx.config.optimizer.lr  # the sampled rate, as a loop trains with it
    for epoch in range(2):  # a fixed loop, not range(ctx.config.epochs)
        ctx.report(epoch, value)
    return value


def _unreported(ctx: tuner.TrialContext) -> float:
    return 0.5 + ctx.config.optimizer.lr


def test_a_loop_that_trains_fewer_epochs_than_the_config_or_never_reports_is_said_once():
    """The config recorded says 10 epochs that were never trained (its schedule stopped at a fifth): warned
    once, attributed to train_fn; so is a loop that never reports (no pruning, no timeout, no history). A loop
    that trains them all, reporting every other epoch, is not."""
    for fn, epochs, says in ((_two_epochs, 10, "last ctx.report was epoch 1 (counted from 0) of the config's 10"),
                             (_unreported, 1, "returned without calling ctx.report(epoch, value)")):
        with pytest.warns(RuntimeWarning, match=re.escape(says)) as caught:
            result = tuner.tune(fn, space="lr-only", n_trials=3, epochs=epochs, verbose=False, known_starts=False)
        assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 3
        mine = [w for w in caught if "tuner.tune: train_fn" in str(w.message)]
        assert len(mine) == 1 and mine[0].filename == __file__, [str(w.message) for w in mine]

    def every_other(ctx: tuner.TrialContext) -> float:
        for epoch in range(1, ctx.config.epochs, 2):
            ctx.report(epoch, 0.5)
        return 0.5

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tuner.tune(every_other, space="lr-only", n_trials=2, epochs=4, verbose=False, known_starts=False)


def _reports_loss_returns_accuracy(ctx: tuner.TrialContext) -> float:
    lr = ctx.config.optimizer.lr
    for epoch in range(ctx.config.epochs):
        ctx.report(epoch, 2.0 - lr * (epoch + 1))  # the validation loss
    return 0.5 + lr  # the validation accuracy


def _counts_from_one(ctx: tuner.TrialContext) -> float:
    value = 0.5 + ctx.config.optimizer.lr
    for epoch in range(1, ctx.config.epochs + 1):
        ctx.report(epoch, value)
    return value


def _nan_at_the_second_report(ctx: tuner.TrialContext) -> float:
    ctx.report(0, 0.5 + ctx.config.optimizer.lr)
    ctx.report(1, float("nan"))
    return 0.5


def test_a_nan_reported_names_the_epoch_as_ctx_report_numbered_it():
    """"in epoch 2" for ctx.report(1, nan) sent a user to the wrong epoch: the report's own number is given."""
    result = tuner.tune(_nan_at_the_second_report, space="lr-only", n_trials=1, epochs=3, verbose=False,
                        known_starts=False)
    assert "diverged: reported value nan in epoch 2 (ctx.report(1, ...): ctx.report counts epochs from 0)" in \
        result.study.trials[0].user_attrs[Key.REASON]


def _ignores_its_config(ctx: tuner.TrialContext) -> float:
    for epoch in range(ctx.config.epochs):  # its own fixed optimizer: the sampled one is never trained
        ctx.report(epoch, 0.5)
    return 0.5


def test_a_loop_that_never_uses_its_sampled_config_is_told_once():
    """Every trial trained the same settings while the study ranked the sampled ones: said once, attributed to
    train_fn. A loop that uses its config (and copies or pickles it) is not told; the copy is a plain config."""
    import copy
    import pickle

    with pytest.warns(RuntimeWarning, match=r"train_fn finished a trial without using its sampled config \(it "
                                            r"read ctx\.config\.epochs\)") as caught:
        tuner.tune(_ignores_its_config, space="lr-only", n_trials=3, epochs=2, verbose=False, known_starts=False)
    mine = [w for w in caught if "without using its sampled config" in str(w.message)]
    assert len(mine) == 1 and mine[0].filename == __file__

    def uses_it(ctx: tuner.TrialContext) -> float:
        config = ctx.config
        again, copied = pickle.loads(pickle.dumps(config)), copy.deepcopy(config)
        assert type(again) is type(copied) is tuner.TrainConfig and isinstance(config, tuner.TrainConfig)
        assert again.to_dict() == copied.to_dict() == config.to_dict()
        for epoch in range(config.epochs):
            ctx.report(epoch, 0.5 + config.optimizer.lr)
        assert type(config) is tuner.TrainConfig  # a setting read: plain from then on (the loop's reads cost nothing)
        return 0.5 + config.optimizer.lr

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*without using its sampled config")
        result = tuner.tune(uses_it, space="lr-only", n_trials=2, epochs=1, verbose=False, known_starts=False)
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 2


def test_a_loop_that_reports_another_metric_than_it_returns_or_counts_epochs_from_one_is_told_once():
    """Reporting the validation loss and returning the accuracy: the pruner would stop the trials with the
    lowest loss, the best ones. Reporting epochs 1..N: the last is past the config's. Each said once, attributed
    to train_fn; a loop that returns its best reported value is not."""
    for fn, says in ((_reports_loss_returns_accuracy, "no epoch reported"),
                     (_counts_from_one, "reported epoch 3 of a config of 3 epochs")):
        with pytest.warns(RuntimeWarning, match=re.escape(says)) as caught:
            result = tuner.tune(fn, space="lr-only", n_trials=3, epochs=3, verbose=False, known_starts=False,
                                pruner="none")
        assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 3
        mine = [w for w in caught if "tuner.tune: train_fn" in str(w.message)]
        assert len(mine) == 1 and mine[0].filename == __file__, [str(w.message) for w in mine]

    def best_epoch(ctx: tuner.TrialContext) -> float:
        values = [0.3, 0.7, 0.6]
        for epoch in range(ctx.config.epochs):
            ctx.report(epoch, values[epoch])
        return max(values)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tuner.tune(best_epoch, space="lr-only", n_trials=2, epochs=3, verbose=False, known_starts=False)


def test_what_train_fn_returns_is_a_number_and_a_test_value_or_none():
    def no_test(ctx: tuner.TrialContext):
        ctx.report(0, 0.5)
        return 0.5, None  # no test set: as test_value's default

    result = tuner.tune(no_test, space="lr-only", n_trials=2, epochs=1, verbose=False, known_starts=False)
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 2
    assert result.study.trials[0].user_attrs[Key.TEST_VALUE] is None

    def reported(value):
        def fn(ctx: tuner.TrialContext):
            ctx.report(0, 0.5)
            return value
        return fn

    def reports_a_bool(ctx: tuner.TrialContext):
        ctx.report(0, True)
        return 0.5

    def reports_a_tensor_bool(ctx: tuner.TrialContext):
        ctx.report(0, torch.tensor(0.7) > 0.5)
        return 0.5

    for fn, says in ((reported((0.5, "x")), "test_value must be the test metric as a number, or None (got str 'x')"),
                     (reported((0.5, True)), "test_value must be the test metric as a number, or None (got bool"),
                     (reported(True), "not True (a bool would be recorded as 1)"),
                     # NumPy's and torch's bools too (`return acc > 0.9`): each made every trial "the best"
                     (reported(np.bool_(True)), "(a bool would be recorded as 1)"),
                     (reported(torch.tensor(True)), "(a bool would be recorded as 1)"),
                     (reported((0.5, np.bool_(False))), "test_value must be the test metric as a number"),
                     (reports_a_bool, "ctx.report(epoch, value): value must be the epoch's validation metric"),
                     (reports_a_tensor_bool, "ctx.report(epoch, value): value must be the epoch's validation")):
        with pytest.raises(tuner.StudyError) as info:
            tuner.tune(fn, space="lr-only", n_trials=2, epochs=1, verbose=False, known_starts=False,
                       max_consecutive_failures=1)
        assert "TrainFnMisuse" in str(info.value) and says in str(info.value), str(info.value)


def _own_width(ctx: tuner.TrialContext) -> float:
    hidden = ctx.trial.suggest_int("hidden", 16, 128)  # a parameter of its own, beside the config's
    value = ctx.config.optimizer.lr * hidden
    ctx.report(0, value)
    return value


def test_parameters_train_fn_samples_itself_are_said_not_to_travel_with_the_config():
    """They are recorded with the trial, but a config holds only the space's parameters: said once; and the
    confirmation runs, which cannot replay them, are refused before they train, naming the way out."""
    with pytest.warns(RuntimeWarning, match=r"sampled parameters of its own through ctx.trial \(hidden\)"):
        result = tuner.tune(_own_width, space="lr-only", n_trials=3, epochs=1, verbose=False, known_starts=False)
    assert all(t.user_attrs[Key.OWN_PARAMS] == ["hidden"] and "hidden" in t.params for t in result.study.trials)
    with pytest.raises(tuner.ConfigError, match=r"cannot replay .* recommend\(trial=N\)"):
        result.recommend()
    assert "tuner:confirmation" not in result.study.user_attrs  # no confirmation run was stored
    best = result.recommend(trial=result.best_trial.number)
    assert best.config.optimizer.lr == result.best_trial.user_attrs[Key.CONFIG]["optimizer"]["lr"]
    with pytest.raises(tuner.ConfigError, match=r"trial=\d+ takes that trial's config as it is.* top_k and seeds "
                                                r"do not apply"):  # seeds=1 was ignored in silence
        result.recommend(trial=result.best_trial.number, seeds=1)
    # A study of several objectives recommends its Pareto front's knee, re-training nothing: not refused.
    with pytest.warns(RuntimeWarning, match="of its own"):
        front = tuner.tune(_own_width, space="lr-only", n_trials=3, epochs=1, verbose=False, known_starts=False,
                           objectives=["value", "train_seconds"])
    assert "knee of the Pareto front" in front.recommend().source


def test_the_first_trial_does_not_pay_for_the_first_optimizer_of_the_process():
    """PyTorch's first optimizer imports its compiler stack, about a second: paid before the first trial's
    clock starts (else the first trial's train_seconds, often a known-good start, is off the Pareto front)."""
    code = ("import sys, torch\n"
            "from tuner.study._engine import UserExecutor\n"
            "UserExecutor(lambda ctx: 0.5)\n"
            "before = set(sys.modules)\n"
            "torch.optim.Adam([torch.zeros(1, requires_grad=True)])\n"
            "print(sorted(set(sys.modules) - before))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(tuner.__file__).resolve().parents[1])}
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "[]"


INTERRUPT = {"on": True}


def _interrupted(ctx: tuner.TrialContext) -> float:
    ctx.report(0, 0.5)
    ctx.report(1, 0.6)
    if INTERRUPT["on"]:
        raise KeyboardInterrupt
    ctx.report(2, 0.7)
    return 0.7


def test_an_interrupted_trial_keeps_what_it_reported_and_trains_first_on_resume(tmp_path: Path, capsys):
    url = f"sqlite:///{tmp_path / 'i.db'}"
    with pytest.raises(KeyboardInterrupt):
        tuner.tune(_interrupted, space="lr-only", n_trials=2, epochs=3, storage=url, study_name="i")
    said = capsys.readouterr().out
    assert "interrupted" in said and "queued again" in said
    assert "call tuner.tune() again with the same storage and study_name" in said
    trial, retry = optuna.load_study(study_name="i", storage=url).trials
    assert trial.state == TrialState.FAIL and trial.user_attrs[Key.REASON].startswith("interrupted; its config was "
                                                                                      "queued again")
    assert trial.user_attrs[Key.VAL_HISTORY] == [0.5, 0.6]
    # Not the config's fault: the same call again trains it first, then goes on.
    assert retry.state == TrialState.WAITING and retry.system_attrs["fixed_params"] == trial.params
    INTERRUPT["on"] = False
    try:
        result = tuner.tune(_interrupted, space="lr-only", n_trials=2, epochs=3, storage=url, study_name="i",
                            verbose=False)
    finally:
        INTERRUPT["on"] = True
    again = result.study.trials[1]
    assert again.state == TrialState.COMPLETE and again.params == trial.params
    assert again.user_attrs[Key.RETRY_OF] == 0


def test_an_interrupt_without_a_storage_says_where_the_trials_are(capsys):
    with pytest.raises(KeyboardInterrupt) as caught:
        tuner.tune(_interrupted, space="lr-only", n_trials=2, epochs=3)
    said = capsys.readouterr().out
    assert "interrupted" in said and "the exception's .result" in said
    assert caught.value.result.study.trials[0].user_attrs[Key.VAL_HISTORY] == [0.5, 0.6]


def test_a_resumed_tune_proposes_new_parameters(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    tuner.tune(_noisy, space="lr-only", n_trials=3, epochs=1, storage=url, study_name="r", pruner="none",
               verbose=False)
    result = tuner.tune(_noisy, space="lr-only", n_trials=6, epochs=1, storage=url, study_name="r", pruner="none",
                        verbose=False)
    lrs = [t.params["adam.lr"] for t in result.study.trials]
    assert len(lrs) == 6 and not set(lrs[:3]) & set(lrs[3:])


def test_workers_from_a_thread_are_refused_before_anything_starts(tmp_path: Path):
    import threading

    caught: list[BaseException] = []

    def run() -> None:
        try:
            tuner.tune(_noisy, space="lr-only", n_trials=2, workers=2, storage=f"sqlite:///{tmp_path / 't.db'}")
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert len(caught) == 1 and isinstance(caught[0], tuner.ConfigError)
    assert "main thread" in str(caught[0]) and not (tmp_path / "t.db").exists()


def test_a_storage_stop_of_tune_says_how_to_resume_in_python():
    from tuner.spaces import load_space
    from tuner.study._engine import RunPlan, _storage_stop

    study = optuna.create_study(study_name="s")
    plan = RunPlan(name="s", storage_url="sqlite:///s.db", space=load_space("lr-only"), epochs=1, seed=0, n_trials=1,
                   resume_hint="call tuner.tune() again with the same storage and study_name")
    message = str(_storage_stop(study, plan, OSError(28, "No space left on device")))
    assert "call tuner.tune() again" in message and "tuner study run" not in message


def test_user_code_beside_a_library_folder_is_still_named(tmp_path: Path, monkeypatch):
    """A folder named like a library's (``tuner_jobs`` beside ``tuner``) is the user's, not the library's."""
    from tuner.study import _engine

    (tmp_path / "tuner").mkdir()
    (tmp_path / "tuner_jobs").mkdir()
    job = tmp_path / "tuner_jobs" / "job.py"
    job.write_text("def train():\n    raise ValueError('boom')\n")
    monkeypatch.setattr(_engine, "_LIBRARY_ROOTS", (tmp_path / "tuner",))
    namespace: dict = {}
    exec(compile(job.read_text(), str(job), "exec"), namespace)
    with pytest.raises(ValueError) as raised:
        namespace["train"]()
    assert _engine.user_frame(raised.value) == f"{job}:2 in train"


def test_a_trial_pruned_after_its_last_epoch_says_so(monkeypatch):
    """Pruned there too, as Optuna's pruners do (judged complete, such trials lowered the median pruner's bar for
    every later trial, and the search got slower); its reason says it was the last epoch."""
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: True)

    def train(ctx: tuner.TrialContext) -> float:
        for epoch in range(ctx.config.epochs):
            ctx.report(epoch, 0.5)
        return 0.5

    for epochs, said in ((1, "after epoch 1 (its last) (validation 0.5)"), (2, "after epoch 1 (validation 0.5)")):
        result = tuner.tune(train, "lr-only", n_trials=2, epochs=epochs, verbose=False,
                            pruner={"name": "median", "n_warmup_steps": 0})
        assert [t.state for t in result.study.trials] == [TrialState.PRUNED] * 2
        assert all(t.user_attrs[Key.REASON].endswith(said) for t in result.study.trials)


@pytest.mark.parametrize("call", [
    "tuner.tune(train, space='lr-only', n_trials=3, epochs=40, storage=URL, study_name='t', known_starts=False)",
    "tuner.run_study(objective='slow.py:objective', space='lr-only', n_trials=3, epochs=40, storage=URL, "
    "name='t', threads=1, pack=1, known_starts=False)",
])
def test_sigterm_records_the_running_trial_as_interrupted_as_the_command_does(tmp_path: Path, call: str,
                                                                              objective_file: Path):
    """SIGTERM (a scheduler stopping a job) to a script that calls tune() or run_study(): the running trial is
    recorded as interrupted and its config queued again, as `tuner study run` does, not left RUNNING until a
    later run reaps it; the script says so and exits with 143."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import time
        import tuner

        def train(ctx):
            for epoch in range(ctx.config.epochs):
                time.sleep(0.1)
                ctx.report(epoch, 0.5)
            return 0.5

        if __name__ == "__main__":
            URL = {url!r}
            {call}
        """))
    # The tests' synthetic objective, with a model slow enough (20 ms a batch) to be stopped mid-trial.
    (tmp_path / "slow.py").write_text(objective_file.read_text() + textwrap.dedent("""
        import time as _time

        class _Slow(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                _time.sleep(0.02)
                return self.inner(x)

        objective = Objective("slow", load_data=load_data, build_model=lambda data: _Slow(build_model(data)),
                              metric="accuracy")
        """))
    env = {k: v for k, v in os.environ.items() if k != "TUNER_STORAGE"}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # mid-trial: the first trial has reported an epoch
        try:
            trials = optuna.load_study(study_name="t", storage=url).trials
            if trials and trials[0].intermediate_values:
                break
        except Exception:  # the study is still being created
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "terminated: the trials that were running are recorded as failed (interrupted)" in out, out + err
    first, retry = optuna.load_study(study_name="t", storage=url).trials
    assert first.state == TrialState.FAIL
    assert first.user_attrs[Key.REASON].startswith("interrupted; its config was queued again")
    assert retry.state == TrialState.WAITING


@pytest.mark.parametrize("how, code", [("tune", 143), ("tune", 130), ("command", 143), ("command", 130)])
def test_a_sigterm_whose_exception_python_lost_still_ends_the_run(how: str, code: int, tmp_path: Path,
                                                                   objective_file: Path):
    """A SIGTERM handler raises; where it runs inside a ``__del__`` Python loses that exception. The run still
    ends as terminated at its next check (here the trial's next epoch): the trial is recorded as interrupted,
    no later trial starts, and the exit code is 143, instead of the study going on to its end with 0. The
    command and ``tune()`` take a Ctrl-C (SIGINT) so too: the command exits with 130, and ``tune()`` raises
    ``KeyboardInterrupt``, which ends a script as Python ends it (killed by SIGINT)."""
    lost = LOST_SIGTERM if code == 143 else LOST_SIGTERM.replace("signal.SIGTERM", "signal.SIGINT")
    url = f"sqlite:///{tmp_path / 't.db'}"
    env = {k: v for k, v in os.environ.items() if k != "TUNER_STORAGE"}
    if how == "tune":
        (tmp_path / "job.py").write_text(textwrap.dedent(lost) + textwrap.dedent(f"""
            import tuner

            def train(ctx):
                for epoch in range(3):
                    if ctx.number == 1 and epoch == 1:
                        Collected()  # collected at once
                    ctx.report(epoch, 0.5)
                return 0.5

            if __name__ == "__main__":
                tuner.tune(train, space="lr-only", n_trials=6, epochs=3, storage={url!r}, study_name="t",
                           verbose=False, known_starts=False)
                print("finished")
            """))
        command = [sys.executable, "job.py"]
    else:
        source = objective_file.read_text() + textwrap.dedent(lost)
        (tmp_path / "obj.py").write_text(source + textwrap.dedent("""
            built = []

            def _build(data):
                built.append(1)
                if len(built) == 3:  # the second trial's model (the first is built as the study is prepared)
                    Collected()
                return build_model(data)

            objective = Objective("lost", load_data=load_data, build_model=_build, metric="accuracy")
            """))
        command = [str(Path(sys.executable).with_name("tuner")), "study", "create", "--objective", "obj.py:objective",
                   "--space", "lr-only", "--name", "t", "--n-trials", "6", "--epochs", "3", "--threads", "1",
                   "--pack", "1", "--workers", "1", "--no-known-starts", "--storage", url]
    # As from a terminal: a test runner started in the background (`&`, nohup) ignores SIGINT, and a child that
    # inherits the ignored signal rightly keeps ignoring it.
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "Exception ignored" in done.stderr, done.stderr[-3000:]  # the exception was lost, as in the wild
    expected = -signal.SIGINT if (how, code) == ("tune", 130) else code  # Python's own exit on Ctrl-C
    assert done.returncode == expected and "finished" not in done.stdout, (done.returncode, done.stderr[-3000:])
    said = [line for line in done.stderr.splitlines() if line.startswith(("terminated", "interrupted"))]
    assert how == "tune" or (len(said) == 1 and said[0].startswith("terminated" if code == 143 else "interrupted"))
    trials = optuna.load_study(study_name="t", storage=url).trials
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "FAIL"], [t.state.name for t in trials]
    assert trials[1].user_attrs["reason_kind"] == "interrupted", trials[1].user_attrs
    assert all(t.state.name == "WAITING" for t in trials[2:])  # its config queued again; nothing else ran


def test_a_pruned_trial_line_shows_the_value_it_was_pruned_at_as_a_workers_line_does(capsys) -> None:
    """In one process a pruned trial's line read "val -", with workers "val 0.3164": Optuna records the last
    reported value as a pruned trial's value, and both lines now show it."""
    import optuna

    def pruned_at_once(ctx: tuner.TrialContext) -> float:
        ctx.report(0, 0.3125)
        raise optuna.TrialPruned("stopped by hand")

    result = tuner.tune(pruned_at_once, space="lr-only", n_trials=1, epochs=2, known_starts=False)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("trial    0"))
    assert "PRUNED   val 0.3125" in line, line
    assert result.study.trials[0].value == pytest.approx(0.3125)
