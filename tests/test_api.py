"""``tuner.tune`` (the user's own training function) and ``tuner.suggest`` (the user's own Optuna loop), and
the example pipelines in ``examples/``."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import tuner
from tuner.errors import ConfigError, StudyError

ROOT = Path(__file__).resolve().parents[1]


def _quadratic(ctx: tuner.TrialContext) -> float:
    """A 'training run' whose value peaks at lr = 1e-2 and improves over epochs."""
    lr = ctx.config.optimizer.lr
    value = 0.0
    for epoch in range(ctx.config.epochs):
        value = (1 - (math.log10(lr) + 2) ** 2 / 10) * (epoch + 1) / ctx.config.epochs
        ctx.report(epoch, value)
    return value


def test_tune_runs_the_budget_and_returns_the_best_config(tmp_path: Path):
    result = tuner.tune(_quadratic, space="adam-family", n_trials=12, epochs=3, seed=0)
    states = [t.state.name for t in result.study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 12
    assert isinstance(result.best_config, tuner.TrainConfig)
    assert result.best_config.epochs == 3
    assert result.best_value == max(t.value for t in result.study.trials if t.value is not None)
    assert result.best_trial.user_attrs["val_history"]


def test_the_study_tune_returns_pickles_as_optunas_own_does(tmp_path: Path):
    """Optuna's way to keep an in-memory study is ``joblib.dump``/pickle: the study ``tune`` returns keeps
    nothing of tuner's on its storage once it has run."""
    import pickle

    result = tuner.tune(_quadratic, space="lr-only", n_trials=3, epochs=2, seed=0)
    again = pickle.loads(pickle.dumps(result.study))
    assert [t.value for t in again.trials] == [t.value for t in result.study.trials]


def test_tune_prunes_through_ctx_report():
    def slow_starter(ctx):
        for epoch in range(5):
            ctx.report(epoch, ctx.config.optimizer.lr * (epoch + 1))
        return ctx.config.optimizer.lr * 5

    result = tuner.tune(slow_starter, space="lr-only", n_trials=20, epochs=5, pruner="median", sampler="random")
    pruned = [t for t in result.study.trials if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["reason"].startswith("pruned by the median pruner after epoch") for t in pruned)


def test_failing_and_diverging_trials_are_recorded_and_the_study_goes_on():
    calls = []

    def flaky(ctx):
        calls.append(ctx.number)
        if ctx.number % 3 == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        if ctx.number % 3 == 2:
            ctx.report(0, float("nan"))
        return 0.5

    result = tuner.tune(flaky, space="lr-only", n_trials=4, epochs=2, pruner="none")
    by_state = {}
    for t in result.study.trials:
        by_state.setdefault(t.state.name, []).append(t)
    assert "illegal memory access" in by_state["FAIL"][0].user_attrs["reason"]
    assert "traceback" in by_state["FAIL"][0].user_attrs
    assert by_state["PRUNED"][0].user_attrs["reason"].startswith("diverged")
    assert len(by_state["COMPLETE"]) + len(by_state["PRUNED"]) == 4


def test_consecutive_failures_stop_the_study():
    def broken(ctx):
        raise ValueError("shape mismatch")

    with pytest.raises(StudyError, match="3 consecutive failed trials.*shape mismatch"):
        tuner.tune(broken, space="lr-only", n_trials=10, max_consecutive_failures=3)


def test_tune_resumes_from_storage_and_refuses_another_space(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    tuner.tune(_quadratic, space="lr-only", n_trials=4, epochs=2, storage=url, study_name="s")
    result = tuner.tune(_quadratic, space="lr-only", n_trials=6, epochs=2, storage=url, study_name="s")
    assert len(result.study.trials) == 6  # only the missing two ran
    with pytest.raises(StudyError, match="different search space") as info:
        tuner.tune(_quadratic, space="adam-family", n_trials=6, storage=url, study_name="s")
    assert "(space lr-only -> adam-family: optimizer: " in str(info.value)  # what changed, named
    with pytest.raises(StudyError, match=r"space lr-only: batch_size: fixed 64 -> fixed 16"):
        tuner.tune(_quadratic, space="lr-only", n_trials=6, storage=url, study_name="s", batch_size=[16])


def test_bad_input_is_refused_before_a_study_exists(tmp_path: Path):
    db = tmp_path / "t.db"
    with pytest.raises(ConfigError, match="search space"):
        tuner.tune(_quadratic, space="no-such-space", storage=f"sqlite:///{db}")
    with pytest.raises(ConfigError, match="sampler"):
        tuner.tune(_quadratic, sampler="annealing", storage=f"sqlite:///{db}")
    with pytest.raises(ConfigError, match="direction"):
        tuner.tune(_quadratic, direction="up")
    assert not db.exists()


def test_recommend_confirms_with_the_train_function():
    result = tuner.tune(_quadratic, space="adam-family", n_trials=8, epochs=2)
    rec = result.recommend(top_k=2, seeds=2)
    assert rec.confirmation is not None and len(rec.confirmation.candidates) == 2
    assert all(len(c.values) == 2 for c in rec.confirmation.candidates)
    assert rec.trial in [c.trial for c in rec.confirmation.candidates]


def test_recommend_says_why_a_train_function_that_reads_its_trial_fails_every_re_run():
    """A train function that named its log folder after ctx.trial.number tuned, then failed every confirmation
    run with an AttributeError listed without its trial."""

    def logged(ctx):
        folder = f"runs/{ctx.trial.number}"
        return _quadratic(ctx) if folder else 0.0

    result = tuner.tune(logged, space="adam-family", n_trials=3, epochs=1, verbose=False)
    with pytest.raises(StudyError) as info:
        result.recommend(top_k=2, seeds=1)
    said = str(info.value)
    assert said.startswith("Every confirmation run failed or diverged; no config can be recommended. trial ")
    assert "AttributeError: 'NoneType' object has no attribute 'number'" in said
    assert said.endswith("Confirmation runs train outside any Optuna trial: there, ctx.trial and ctx.number are "
                         "None (guard their use with `if ctx.trial is not None`).")


def test_suggest_in_a_users_own_optuna_loop():
    seen = []

    def objective(trial):
        config = tuner.suggest(trial, "adam-family", epochs=4)
        seen.append(config)
        model = torch.nn.Linear(3, 2)
        optimizer, scheduler = config.build(model, steps_per_epoch=2)
        return optimizer.param_groups[0]["lr"]

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=5)
    assert len(seen) == 5 and all(c.epochs == 4 for c in seen)
    assert {c.optimizer.name for c in seen} <= {"adam", "adamw", "nadam", "nadamw", "radam", "adamax"}
    assert all(f"{c.optimizer.name}.lr" in t.params for c, t in zip(seen, study.trials, strict=True))


@pytest.mark.parametrize("direction, mode", [("minimize", "min"), ("maximize", "max")])
def test_suggest_takes_the_plateau_mode_from_the_callers_study(direction: str, mode: str):
    space = {"optimizer": {"adam": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
             "schedule": {"plateau": {"factor": 0.5, "patience": 1}}, "batch_size": 32}
    modes = []

    def objective(trial):
        config = tuner.suggest(trial, space, epochs=3)
        modes.append((config.direction, config.setup(torch.nn.Linear(2, 1), steps_per_epoch=1).scheduler.mode))
        return 0.0

    optuna.create_study(direction=direction).optimize(objective, n_trials=1)
    assert modes == [(direction, mode)]


@pytest.mark.parametrize("script, args, expected", [
    ("tune_own_loop.py", ["--trials", "5", "--epochs", "2"], "saved"),
    ("optuna_loop.py", ["--trials", "4", "--epochs", "2"], "best validation accuracy"),
])
def test_examples_run(script: str, args: list[str], expected: str, tmp_path: Path):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout


def test_train_from_export_example_trains_an_exported_config(tmp_path: Path):
    config = tuner.TrainConfig.from_dict({"optimizer": {"name": "adamw", "lr": 3e-3},
                                          "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.05},
                                          "batch_size": 64, "epochs": 20})
    path = config.save(tmp_path / "best.yaml", study="x", metric="accuracy", value=0.9)
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "train_from_export.py"), str(path), "--seeds", "1",
                          "--epochs", "3"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    test_acc = float(run.stdout.strip().splitlines()[-1].split()[2])
    assert 0.3 < test_acc <= 1.0  # three epochs of the CNN: well above chance (0.1)
    for flag, said in (("--seeds", "--seeds must be at least 1 (got 0)"), ("--epochs", "--epochs must be at least 1 "
                                                                                       "(got 0)")):
        bad = subprocess.run([sys.executable, str(ROOT / "examples" / "train_from_export.py"), str(path), flag, "0"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and said in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": 2**32}, "seed must be an int in the range"),
    ({"seed": -1}, "seed must be an int in the range"),
    ({"timeout": float("nan")}, "timeout must be a finite number"),
    ({"timeout": float("inf")}, "timeout must be a finite number"),
    ({"n_trials": 2.5}, "n_trials must be an int"),
    ({"epochs": True}, "epochs must be an int"),
    ({"sampler": 5}, "The sampler must be a name or a mapping with a 'name' key"),
    ({"pruner": {"n_startup_trials": 5}}, "The pruner must be a name or a mapping with a 'name' key"),
    ({"pruner": None}, r"e.g. \{name: median, n_warmup_steps: 2\}, or 'none' for no pruning"),  # not a sampler's
    ({"sampler": {"name": "tpe", "multivariate": "no"}}, "'multivariate' option of the 'tpe' sampler must be true"),
])
def test_tune_refuses_values_that_are_not_what_they_seem(kwargs: dict, message: str, tmp_path: Path):
    import tuner

    with pytest.raises(tuner.ConfigError, match=message):
        tuner.tune(lambda ctx: 0.5, space="lr-only", storage=f"sqlite:///{tmp_path / 't.db'}", **kwargs)
    assert not (tmp_path / "t.db").exists()


def test_tune_refuses_to_resume_with_another_direction_or_metric(tmp_path: Path):
    import tuner

    url = f"sqlite:///{tmp_path / 't.db'}"
    tuner.tune(lambda ctx: 0.5, space="lr-only", n_trials=1, epochs=1, storage=url, study_name="t",
               metric="accuracy")
    with pytest.raises(tuner.StudyError, match="tuned to maximize 'accuracy', not to minimize 'loss'"):
        tuner.tune(lambda ctx: 0.5, space="lr-only", n_trials=2, epochs=1, storage=url, study_name="t",
                   direction="minimize", metric="loss")
    with pytest.raises(tuner.StudyError, match="not to maximize 'f1'"):
        tuner.tune(lambda ctx: 0.5, space="lr-only", n_trials=2, epochs=1, storage=url, study_name="t",
                   metric="f1")


def test_two_lambdas_in_one_storage_do_not_share_a_study_by_name(tmp_path: Path):
    """Both were 'tune-<lambda>-default': the second resumed the first's study, its values mixed in."""
    import tuner

    url = f"sqlite:///{tmp_path / 't.db'}"
    with pytest.raises(tuner.ConfigError, match="a lambda has no name to tell its study from another lambda's"):
        tuner.tune(lambda ctx: 0.3, space="lr-only", n_trials=1, epochs=1, storage=url, verbose=False)
    assert not (tmp_path / "t.db").exists()
    done = tuner.tune(lambda ctx: 0.3, space="lr-only", n_trials=1, epochs=1, verbose=False)  # no storage: fine
    assert done.best_value == 0.3


def test_tune_refuses_a_foreign_file_as_storage(tmp_path: Path):
    import tuner

    log = tmp_path / "app.log"
    log.write_text("not a journal\n")
    for url in (str(log), f"journal:{log}"):
        with pytest.raises(tuner.TunerError):
            tuner.tune(lambda ctx: 0.5, space="lr-only", storage=url)
    assert log.read_text() == "not a journal\n" and sorted(p.name for p in tmp_path.iterdir()) == ["app.log"]
