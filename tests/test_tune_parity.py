"""What the CLI refuses or records, ``tuner.tune`` and a config used in the caller's own loop do too: a study
resumed with other settings, a grid, sampler options that cannot run, a trial whose updates were all skipped,
a pruning decision swallowed by the caller's code, work kept when a run without a storage stops."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import tuner
from tuner.errors import ConfigError, StudyError
from tuner.study._record import Key


def _lr(ctx: tuner.TrialContext) -> float:
    value = -abs(ctx.config.optimizer.lr - 1e-3)
    ctx.report(0, value)
    return value


def test_a_study_resumed_with_other_settings_is_refused_naming_them(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    tuner.tune(_lr, "lr-only", n_trials=2, epochs=1, storage=url, study_name="s", verbose=False)
    for change, says in (({"epochs": 2}, "epochs: 1 -> 2"), ({"seed": 3}, "seed: 0 -> 3"),
                         ({"sampler": "random"}, "sampler: 'tpe' -> 'random'"),
                         ({"pruner": "none"}, "pruner: 'median' -> 'none'")):
        args = {"n_trials": 4, "epochs": 1, **change}
        with pytest.raises(StudyError, match="was tuned with other settings") as info:
            tuner.tune(_lr, "lr-only", storage=url, study_name="s", verbose=False, **args)
        assert says in str(info.value) and "Nothing was changed" in str(info.value)
    with pytest.raises(StudyError, match=r"Nothing was changed. Pass metric='value', direction='maximize'") as info:
        tuner.tune(_lr, "lr-only", storage=url, study_name="s", verbose=False, n_trials=4, epochs=1,
                   metric="val_accuracy")
    assert url in str(info.value)
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 2  # nothing ran, nothing was queued

    def other(ctx: tuner.TrialContext) -> float:
        return 0.9

    with pytest.raises(StudyError, match=r"function: '.*_lr' -> '.*other'"):
        tuner.tune(other, "lr-only", n_trials=4, epochs=1, storage=url, study_name="s", verbose=False)
    resumed = tuner.tune(_lr, "lr-only", n_trials=4, epochs=1, storage=url, study_name="s", verbose=False)
    assert len(resumed.study.trials) == 4  # the same settings resume
    spelled = tuner.tune(_lr, "lr-only", n_trials=5, epochs=1, storage=url, study_name="s", verbose=False,
                         pruner={"name": "median"}, sampler={"name": "tpe"})  # the same settings, written out
    assert len(spelled.study.trials) == 5


def test_two_functions_of_one_name_do_not_share_a_study_in_silence(tmp_path: Path):
    """The default study name comes from the function's name: a second function of that name (another
    module, or a script's other ``train``) is refused instead of returning the first one's best config."""
    url = f"sqlite:///{tmp_path / 't.db'}"

    def train(ctx: tuner.TrialContext) -> float:
        return 0.5

    first = train
    tuner.tune(first, "lr-only", n_trials=2, epochs=1, storage=url, verbose=False)

    def make():
        def train(ctx: tuner.TrialContext) -> float:
            return 0.9
        return train

    with pytest.raises(StudyError, match="function: "):
        tuner.tune(make(), "lr-only", n_trials=2, epochs=1, storage=url, verbose=False)


def test_two_scripts_with_a_train_function_do_not_share_a_study(tmp_path: Path):
    """Two scripts each define ``train`` and run it as ``__main__`` (the README's names) on one storage: the
    second is refused, naming both files, instead of handing back the first one's results; so is another
    project's script of the same name, while the first is still there. The first script, moved to another
    folder, resumes and says so; given the study's name, a copy resumes it too."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'tune.db'}"
    script = ("import tuner\n"
              "def train(ctx):\n"
              "    ctx.report(0, {value})\n"
              "    return {value}\n"
              "if __name__ == '__main__':\n"
              "    r = tuner.tune(train, 'lr-only', n_trials={n}, epochs=1, storage={url!r},\n"
              "                   known_starts=False{extra})\n"
              "    print('best', r.best_value)\n")
    env = {"PYTHONPATH": str(Path(tuner.__file__).resolve().parents[1]), "TUNER_PACK": "1"}

    def run(folder: str, name: str, value: float, n: int, extra: str = "") -> subprocess.CompletedProcess:
        path = tmp_path / folder / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(script.format(value=value, n=n, url=url, extra=extra))
        return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=300)

    first = run("one", "a.py", 0.9, 2)
    assert first.returncode == 0 and "best 0.9" in first.stdout, first.stderr[-2000:]
    other = run("one", "b.py", 0.01, 2)
    assert other.returncode != 0 and "best" not in other.stdout
    assert "was tuned with other settings (file: 'a.py' -> 'b.py')" in other.stderr, other.stderr[-2000:]
    project = run("two", "a.py", 0.01, 3)  # another project's a.py, the first one's still there
    assert project.returncode != 0 and "best" not in project.stdout
    said = " ".join(project.stderr.split())
    assert (f"file: '{tmp_path / 'one' / 'a.py'}' -> '{tmp_path / 'two' / 'a.py'}', another file of the same "
            f"name; pass study_name= to resume that study from here") in said, project.stderr[-2000:]
    (tmp_path / "one" / "a.py").rename(tmp_path / "one" / "old.py")  # the first project moved: its path is gone
    moved = run("two", "a.py", 0.9, 3)
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "resuming study 'tune-train-lr-only' in " in moved.stdout and "it has 2 finished trials of 3" in moved.stdout
    copy = run("three", "a.py", 0.9, 4, extra=", study_name='tune-train-lr-only'")  # named: the caller's to resume
    assert copy.returncode == 0, copy.stderr[-2000:]
    assert len(optuna.load_study(study_name="tune-train-lr-only", storage=url).trials) == 4


def test_a_notebook_cell_edited_between_calls_resumes_its_study(tmp_path: Path):
    """ipykernel names each cell's code after a hash of its text: the file of a function defined in a notebook
    says nothing of which code it is, so an edited cell resumes (as a script edited in place does)."""
    url = f"sqlite:///{tmp_path / 'nb.db'}"
    for n, body in ((2, "0.5"), (3, "0.25 + 0.25")):  # the cell edited, then run again
        namespace: dict = {"__name__": "__main__"}
        code = f"def train(ctx):\n    ctx.report(0, {body})\n    return {body}\n"
        exec(compile(code, f"/tmp/ipykernel_4242/{abs(hash(code))}.py", "exec"), namespace)
        result = tuner.tune(namespace["train"], "lr-only", n_trials=n, epochs=1, storage=url, study_name="nb",
                            verbose=False, known_starts=False)
    assert len(result.study.trials) == 3


def test_a_grid_runs_its_points_from_the_library_too(capsys):
    result = tuner.tune(_lr, "lr-only", sampler="grid", n_trials=10, epochs=1, pruner="none")
    from tuner.spaces import load_space

    size = len(load_space("lr-only").grid_points())
    assert f"n_trials: 10 asked, {size} run: the grid over space 'lr-only'" in capsys.readouterr().out

    points = load_space("lr-only").grid_points()
    ran = sorted(t.params["adam.lr"] for t in result.study.trials)
    assert ran == sorted(p["adam.lr"] for p in points)  # every point once, and the budget capped at their number


def test_a_grid_study_called_again_says_its_points_have_run(tmp_path: Path, capsys):
    """The grid's points are queued when the study is made: a new grid is not a resumed study, and one whose
    points have all run is not told to raise its budget; Optuna's log of each point held already is quiet."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    tuner.tune(_lr, "lr-only", sampler="grid", n_trials=10, epochs=1, storage=url, study_name="g")
    first = capsys.readouterr()
    assert "resuming" not in first.out
    tuner.tune(_lr, "lr-only", sampler="grid", n_trials=10, epochs=1, storage=url, study_name="g")
    again = capsys.readouterr()
    assert "resuming study 'g' in " in again.out and "it has 3 finished trials of 3; every point of the grid" \
        in again.out and "raise the budget" not in again.out
    assert "already exists" not in again.out + again.err


def test_sampler_options_that_cannot_run_are_refused_before_a_study_exists(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    with pytest.raises(ConfigError, match=r"'n_startup_trials' option of the 'tpe' sampler must be a whole number"):
        tuner.tune(_lr, "lr-only", sampler={"name": "tpe", "n_startup_trials": "ten"}, storage=url,
                   study_name="a", verbose=False)
    with pytest.raises(ConfigError, match="cannot run with these options"):
        tuner.tune(_lr, "lr-only", sampler={"name": "tpe", "n_startup_trials": 0, "n_ei_candidates": 0},
                   storage=url, study_name="a", verbose=False)
    with pytest.raises(ConfigError, match="'cmaes' sampler runs in a study of one objective"):
        tuner.tune(_lr, "lr-only", sampler="cmaes", objectives=["value", "train_seconds"], storage=url,
                   study_name="b", verbose=False)
    assert not (tmp_path / "t.db").exists() or not optuna.get_all_study_names(url)


def _diverging(ctx: tuner.TrialContext) -> float:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    setup = ctx.config.setup(model, steps_per_epoch=4)

    def loss(xb: torch.Tensor, yb: torch.Tensor, scale: float) -> torch.Tensor:
        return ((model(xb) - yb) ** 2).mean() * scale

    for epoch in range(ctx.config.epochs):
        for i in range(4):
            scale = float("inf") if epoch >= 1 else 1.0  # from the second epoch on, the loss is infinite
            setup.step(loss, x[i::4], y[i::4], scale)
        with torch.no_grad():
            ctx.report(epoch, -float(((model(x) - y) ** 2).mean()))
    return ctx.history[-1]


def test_a_trial_whose_updates_were_skipped_is_recorded_as_diverged():
    with pytest.warns(RuntimeWarning, match="not finite"):
        result = tuner.tune(_diverging, "lr-only", n_trials=2, epochs=3, pruner="none", verbose=False)
    for t in result.study.trials:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs[Key.REASON].startswith("diverged: the loss or its gradient was not finite in 4 of 4 "
                                                   "training steps of epoch 2")


def _samples_for_steps(ctx: tuner.TrialContext) -> float:
    """A loop that gives steps_per_epoch the number of samples, not of batches, and never calls end_epoch."""
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    setup = ctx.config.setup(model, steps_per_epoch=len(x))
    for epoch in range(ctx.config.epochs):
        for i in range(0, len(x), 16):
            setup.step(lambda xb, yb: ((model(xb) - yb) ** 2).mean(), x[i:i + 16], y[i:i + 16])
        ctx.report(epoch, -float(((model(x) - y) ** 2).mean().detach()))  # the warning's line
    return ctx.history[-1]


def _reports_every_other_epoch(ctx: tuner.TrialContext) -> float:
    """Right steps_per_epoch, no end_epoch, and a report every second epoch only: nothing to warn of."""
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    setup = ctx.config.setup(model, steps_per_epoch=4)
    for epoch in range(ctx.config.epochs):
        for i in range(0, len(x), 16):
            setup.step(lambda xb, yb: ((model(xb) - yb) ** 2).mean(), x[i:i + 16], y[i:i + 16])
        if epoch % 2:
            ctx.report(epoch, -float(((model(x) - y) ** 2).mean().detach()))
    return ctx.history[-1]


def test_a_schedule_planned_over_samples_not_batches_is_said_in_a_trial_without_end_epoch():
    space = {"optimizer": {"adam": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}},
             "schedule": {"warmup_cosine": {"warmup_fraction": 0.1}}, "batch_size": 16}
    with pytest.warns(RuntimeWarning, match=r"Epoch 1 had 4 training steps, but steps_per_epoch is 64: the "
                                            r"'warmup_cosine' schedule") as caught:
        tuner.tune(_samples_for_steps, space, n_trials=1, epochs=3, verbose=False, known_starts=False)
    assert [w for w in caught if "steps_per_epoch is 64" in str(w.message)][0].filename == __file__
    with warnings.catch_warnings():  # a loop that counts its batches right says nothing
        warnings.filterwarnings("error", message=".*steps_per_epoch is")
        tuner.tune(_diverging, "lr-only", n_trials=1, epochs=1, pruner="none", verbose=False)
        tuner.tune(_reports_every_other_epoch, space, n_trials=1, epochs=4, pruner="none", verbose=False,
                   known_starts=False)


def _exploding(ctx: tuner.TrialContext, players: int = 1) -> float:
    """The loss grows 100-fold from the second epoch on but stays finite (as SGD at too high a rate does)."""
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 1) for _ in range(players)]
    setups = [ctx.config.setup(m, steps_per_epoch=4) for m in models]
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    def loss(model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, scale: float) -> torch.Tensor:
        return ((model(xb) - yb) ** 2).mean() * scale

    for epoch in range(ctx.config.epochs):
        for i in range(4):
            for model, setup in zip(models, setups, strict=True):
                setup.step(loss, model, x[i::4], y[i::4], 100.0 if epoch >= 1 else 1.0)
        ctx.report(epoch, 0.5)
    return 0.5


def test_a_trial_whose_loss_explodes_but_stays_finite_is_recorded_as_diverged():
    """The built-in trainer's rule (an epoch's mean loss over 20x the first) holds for a train_fn's setup too;
    with two setups (a GAN's players) a rising loss is left alone."""
    result = tuner.tune(_exploding, "lr-only", n_trials=2, epochs=3, pruner="none", verbose=False)
    for t in result.study.trials:
        assert t.state == TrialState.PRUNED
        assert re.match(r"diverged: training loss [0-9.e+]+ in epoch 2 is over 20x the initial",
                        t.user_attrs[Key.REASON])
    two = tuner.tune(lambda ctx: _exploding(ctx, players=2), "lr-only", n_trials=1, epochs=3, pruner="none",
                     verbose=False)
    assert two.study.trials[0].state == TrialState.COMPLETE


def test_a_pruning_decision_swallowed_by_train_fn_still_prunes():
    calls = []

    def stubborn(ctx: tuner.TrialContext) -> float:
        value = 0.0
        for epoch in range(ctx.config.epochs):
            value = 1.0 if ctx.number == 0 else 0.1  # trial 0 is the best; the others are pruned at epoch 1
            try:
                ctx.report(epoch, value)
            except Exception:  # a broad except in the caller's code
                calls.append(ctx.number)
        return value

    result = tuner.tune(stubborn, "lr-only", n_trials=3, epochs=3, sampler="random",
                        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}, verbose=False)
    assert calls, "the pruner never stopped a trial"
    pruned = [t for t in result.study.trials if t.number in calls]
    assert pruned and all(t.state == TrialState.PRUNED for t in pruned)
    assert all("went on after ctx.report() stopped it" in t.user_attrs[Key.REASON] for t in pruned)


def test_an_epoch_reported_twice_fails_the_trial_with_the_fix():
    def same_epoch(ctx: tuner.TrialContext) -> float:
        for _ in range(3):
            ctx.report(0, 0.5)
        return 0.5

    with pytest.raises(StudyError, match="stopped at trial 0: TrainFnMisuse") as info:  # the code's mistake
        tuner.tune(same_epoch, "lr-only", n_trials=1, epochs=3, verbose=False)
    t = info.value.result.study.trials[0]  # what the run finished is handed over, as after failures in a row
    assert t.state == TrialState.FAIL and "epoch 0 was reported already" in t.user_attrs[Key.REASON]


def test_a_stopped_run_without_a_storage_hands_over_what_it_finished():
    def flaky(ctx: tuner.TrialContext) -> float:
        if ctx.number >= 2:
            raise ValueError("broken")
        return 0.5 + ctx.number

    with pytest.raises(StudyError) as info:
        tuner.tune(flaky, "lr-only", n_trials=10, epochs=1, max_consecutive_failures=2, known_starts=False,
                   verbose=False)
    result = info.value.result
    assert isinstance(result, tuner.TuneResult) and result.best_value == 1.5
    assert sum(t.state == TrialState.COMPLETE for t in result.study.trials) == 2


def test_flags_of_the_library_are_checked_as_booleans():
    for key in ("known_starts", "verbose"):
        with pytest.raises(ConfigError, match=f"{key} must be True or False"):
            tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, **{key: "false"})


def test_a_loss_is_minimized_unless_the_direction_says_otherwise(capsys):
    from tuner._api import resolve_direction

    assert resolve_direction("val_loss", "auto")[0] == "minimize"
    assert resolve_direction("mse", "auto")[0] == "minimize"
    assert resolve_direction("top1_error", "auto")[0] == "minimize"
    assert resolve_direction("accuracy", "auto")[0] == "maximize"
    assert resolve_direction("value", "auto")[0] == "maximize"
    assert resolve_direction("val_loss", "maximize") == ("maximize", "", False)
    # Names glued together or in camelCase read as what they are.
    for name in ("valLoss", "logloss", "cross_entropy", "val_errors", "WER", "train_seconds", "brier_score",
                 "mape", "bce", "huberLoss"):
        assert resolve_direction(name, "auto")[0] == "minimize", name
    for name in ("f1", "valAUC", "val_acc", "reward", "neg_logloss", "top1", "mAP", "mIoU", "nDCG@10"):
        direction, note, unsure = resolve_direction(name, "auto")
        assert direction == "maximize" and "reads as a score" in note and not unsure, name
    for name in ("neg_log_likelihood", "negative_elbo", "1-acc", "1 - accuracy", "one_minus_f1", "accuracy_drop",
                 "generalization_gap"):  # a negated score, or how far a score fell
        assert resolve_direction(name, "auto")[0] == "minimize", name
    for name in ("cost_savings", "time_saved", "brier_skill_score"):  # a cost and a benefit: not guessed in silence
        assert "reads as both a cost and a benefit" in resolve_direction(name, "auto")[1], name
    for name in ("policy_entropy", "lossless_ratio"):
        assert "reads as neither" in resolve_direction(name, "auto")[1], name
    # Which guesses warn when nothing is printed: a minimized name, or one read as neither or both.
    for name, unsure in (("val_loss", True), ("policy_entropy", True), ("cost_savings", True), ("f1", False),
                         ("accuracy", False), ("mse", False), ("value", False)):
        assert resolve_direction(name, "auto")[2] is unsure, name
    result = tuner.tune(_lr, "lr-only", n_trials=2, epochs=1, metric="val_loss")
    assert result.study.direction == optuna.study.StudyDirection.MINIMIZE
    assert "direction: minimize ('val_loss' reads as a loss" in capsys.readouterr().out


def test_a_queued_config_the_space_changed_says_what_changed(capsys):
    tuner.tune(_lr, "lr-only", n_trials=1, epochs=1,
               enqueue={"optimizer": {"name": "adam", "lr": 5.0}, "batch_size": 100})
    out = capsys.readouterr().out
    assert "first trials (1 queued): config 1 (adam.lr: 5 -> 0.1" in out and "batch_size: 100 -> 64" in out


def test_library_calls_made_wrongly_say_what_to_pass(tmp_path: Path):
    config = tuner.TrainConfig()
    model = torch.nn.Linear(3, 1)
    with pytest.raises(ConfigError, match=r"takes the model, a torch.nn.Module \(not model.parameters\(\)\)"):
        config.setup(model.parameters(), steps_per_epoch=1)
    frozen = torch.nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(ConfigError, match="has no parameter to train"):
        config.setup(frozen, steps_per_epoch=1)
    setup = config.setup(model, steps_per_epoch=1)
    with pytest.raises(TypeError, match="must return the batch loss as a tensor"):
        setup.step(lambda: 0.5)
    with pytest.raises(ConfigError, match="takes the Optuna trial"):
        tuner.suggest("trial")
    trial = optuna.create_study().ask()
    for bad, said in (({"epochs": 0}, "epochs must be an int of at least 1"), ({"seed": -1}, "seed must be")):
        with pytest.raises(ConfigError, match=said):
            tuner.suggest(trial, **bad)
    assert trial.params == {}  # refused before anything was sampled on the caller's trial
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    with pytest.raises(ConfigError, match="holds no train config"):
        tuner.load_config(empty)

    def text(ctx: tuner.TrialContext) -> str:
        return "0.9"

    with pytest.raises(StudyError) as info:
        tuner.tune(text, "lr-only", n_trials=1, epochs=1, max_consecutive_failures=1, verbose=False)
    assert "not text" in info.value.result.study.trials[0].user_attrs[Key.REASON]
    result = tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, verbose=False)
    with pytest.raises(ConfigError, match="seeds must be an int"):
        result.recommend(seeds="3")
    with pytest.raises(ConfigError, match="fit\\(config\\) takes a TrainConfig"):
        result.fit(3)
    assert result.fit({"optimizer": {"name": "adam", "lr": 1e-3}})[0] == _lr(
        tuner.TrialContext(tuner.TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": 1e-3}})))


def test_values_and_parts_of_the_wrong_kind_are_refused_where_they_are_passed(tmp_path: Path):
    import numpy as np

    # A config built by hand: a part given by name is read as from_dict reads it; a number is refused at once.
    config = tuner.TrainConfig(optimizer="adam", schedule="cosine")
    assert config.optimizer.name == "adam" and config.schedule.name == "cosine"
    with pytest.raises(ConfigError, match=r"TrainConfig\(optimizer=...\) takes a OptimizerConfig, a mapping or a "
                                          r"name; got int 3"):
        tuner.TrainConfig(optimizer=3)
    assert tuner.load_config({"optimizer": "adamw"}).optimizer.name == "adamw"  # a mapping, as from_dict
    with pytest.raises(ConfigError, match=r"load_config\(\) takes a file path"):
        tuner.load_config(5)
    with pytest.raises(ConfigError, match=r"seed_everything\(\) takes a whole number; got '1'"):
        tuner.seed_everything("1")
    tuner.seed_everything(np.int64(3))
    plateau = tuner.TrainConfig.from_dict({"schedule": "plateau"}).setup(torch.nn.Linear(2, 1), steps_per_epoch=1)
    with pytest.raises(ConfigError, match=r"end_epoch\(metric\): metric must be one number.*shape \(2,\)"):
        plateau.end_epoch(torch.tensor([0.5, 0.3]))
    plateau.end_epoch(torch.tensor(0.5))

    def reports(value):
        def train(ctx: tuner.TrialContext) -> float:
            ctx.report(0, value)
            return 0.5
        return train

    for value, said in ((None, "value must be the epoch's validation metric as a number (got None)"),
                        ("0.5", "as a number (got '0.5')"),
                        (torch.tensor([0.5, 0.6]), "value must be one number, the epoch's validation metric (got "
                                                   "Tensor of shape (2,))")):
        with pytest.raises(StudyError) as info:
            tuner.tune(reports(value), "lr-only", n_trials=1, epochs=1, max_consecutive_failures=1, verbose=False)
        assert said in info.value.result.study.trials[0].user_attrs[Key.REASON]


def test_a_model_a_class_or_a_factory_as_train_fn_is_refused_before_a_study_exists(tmp_path: Path):
    import functools

    class Net(torch.nn.Module):
        def forward(self, x):
            return x

    def make_model():
        return Net()

    def two(ctx, data):
        return 0.5

    url = f"sqlite:///{tmp_path / 'f.db'}"
    for wrong, said in ((Net(), "train_fn is a model (Net)"), (Net, "train_fn is a class (Net)"),
                        (make_model, "make_model() cannot be called with the trial context"),
                        (two, "two(ctx, data) cannot be called with the trial context")):
        with pytest.raises(ConfigError, match=re.escape(said)) as info:
            tuner.tune(wrong, "lr-only", n_trials=1, epochs=1, storage=url, verbose=False)
        assert "def train(ctx)" in str(info.value)
    assert not (tmp_path / "f.db").exists()

    class Callable:
        def __call__(self, ctx, *, scale=1.0):
            return _lr(ctx) * scale

    for right in (functools.partial(two, data=None), Callable(), lambda ctx: 0.5):
        assert tuner.tune(right, "lr-only", n_trials=1, epochs=1, verbose=False).best_value is not None


def test_a_storage_that_is_not_a_url_or_a_study_name_that_is_not_text_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match=re.escape(f"storage='sqlite:///{tmp_path / 'p.db'}'")):
        tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, storage=tmp_path / "p.db", verbose=False)
    with pytest.raises(ConfigError, match="storage must be a URL string.*got RDBStorage"):
        tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, verbose=False,
                   storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}"))
    for name in (5, "", "  "):
        with pytest.raises(ConfigError, match="study_name must be a non-empty string"):
            tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, study_name=name, verbose=False)
    assert not (tmp_path / "p.db").exists()


def test_epochs_may_be_numpy_or_torch_integers():
    import numpy as np

    def counted(ctx: tuner.TrialContext) -> float:
        for epoch in np.arange(2):
            ctx.report(epoch, 0.5)
        for epoch in torch.arange(2, 3):
            ctx.report(epoch, 0.6)
        return 0.6

    result = tuner.tune(counted, "lr-only", n_trials=1, epochs=3, verbose=False)
    assert result.study.trials[0].state == TrialState.COMPLETE
    assert sorted(result.study.trials[0].intermediate_values) == [0, 1, 2]


def test_a_partial_or_a_callable_object_resumes_in_another_process(tmp_path: Path):
    """Their repr holds a memory address, which differs from process to process: not a changed setting."""
    import functools
    import subprocess
    import sys
    import textwrap

    url = f"sqlite:///{tmp_path / 't.db'}"
    code = textwrap.dedent(f"""
        import functools, tuner

        def train(ctx, scale):
            ctx.report(0, scale * ctx.config.optimizer.lr)
            return scale * ctx.config.optimizer.lr

        class Train:
            def __call__(self, ctx):
                return train(ctx, 1.0)

        import sys
        n = int(sys.argv[1])
        tuner.tune(functools.partial(train, scale=2.0), "lr-only", n_trials=n, epochs=1, storage={url!r},
                   study_name="p", verbose=False)
        tuner.tune(Train(), "lr-only", n_trials=n, epochs=1, storage={url!r}, study_name="c", verbose=False)
    """)
    env = {"PYTHONPATH": str(Path(tuner.__file__).resolve().parents[1]), "TUNER_PACK": "1"}
    for n in (2, 3):
        ran = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True, env=env,
                             timeout=300)
        assert ran.returncode == 0, ran.stderr[-2000:]
    assert len(optuna.load_study(study_name="p", storage=url).trials) == 3
    assert len(optuna.load_study(study_name="c", storage=url).trials) == 3
    assert functools.partial  # the names used above


def test_a_pruned_trial_does_not_keep_its_model_alive():
    import gc
    import weakref

    models: list[weakref.ref] = []
    alive: list[int] = []

    def train(ctx: tuner.TrialContext) -> float:
        alive.append(sum(ref() is not None for ref in models))  # the earlier trials' models, while this one runs
        model = torch.nn.Linear(4, 1)
        models.append(weakref.ref(model))
        setup = ctx.config.setup(model, steps_per_epoch=1)
        x = torch.randn(8, 4)
        value = 0.0
        for epoch in range(ctx.config.epochs):
            setup.step(lambda: model(x).pow(2).mean())
            value = 1.0 if ctx.number == 0 else 0.1
            ctx.report(epoch, value)
        return value

    gc.collect()
    gc.disable()  # freed as soon as the trial ends, not whenever the cycle collector happens to run
    try:
        result = tuner.tune(train, "lr-only", n_trials=8, epochs=3, sampler="random",
                            pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}, verbose=False)
    finally:
        gc.enable()
    assert any(t.state == TrialState.PRUNED for t in result.study.trials)
    # At most the trial just before (its outcome in the engine's hands until the next one starts); the earlier
    # ones' models are gone, where a pruned trial's kept its model alive, trial after trial.
    assert max(alive) <= 1, alive
    gc.collect()
    assert [ref() for ref in models] == [None] * len(models)


def test_sampler_options_are_kept_as_the_storage_keeps_them(tmp_path: Path):
    import numpy as np

    url = f"sqlite:///{tmp_path / 't.db'}"
    options = {"name": "tpe", "n_startup_trials": np.int64(5)}
    tuner.tune(_lr, "lr-only", sampler=options, n_trials=2, epochs=1, storage=url, study_name="s", verbose=False)
    again = tuner.tune(_lr, "lr-only", sampler={"name": "tpe", "n_startup_trials": 5}, n_trials=3, epochs=1,
                       storage=url, study_name="s", verbose=False)
    assert len(again.study.trials) == 3


def test_negated_losses_are_maximized_and_a_grid_refuses_known_configs():
    from tuner._api import resolve_direction

    assert resolve_direction("neg_mse", "auto")[0] == "maximize"
    assert resolve_direction("neg_log_loss", "auto")[0] == "maximize"
    assert resolve_direction("val_loss", "auto")[0] == "minimize"
    with pytest.warns(UserWarning, match="direction minimize"):
        tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, metric="loss", verbose=False)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="tuner.tune: direction")
        tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, metric="accuracy", verbose=False)  # maximize: nothing said
    with pytest.warns(UserWarning, match="'quality' reads as neither a loss nor a score"):
        tuner.tune(_lr, "lr-only", n_trials=1, epochs=1, metric="quality", verbose=False)
    with pytest.raises(ConfigError, match="enqueue and warm_start do not apply"):
        tuner.tune(_lr, "lr-only", sampler="grid", enqueue={"optimizer": {"name": "adam", "lr": 1e-3}},
                   verbose=False)


def test_a_tune_study_without_a_complete_trial_says_to_call_tune_again(tmp_path: Path):
    from tuner.report import no_complete_trial

    url = f"sqlite:///{tmp_path / 't.db'}"

    def broken(ctx: tuner.TrialContext) -> float:
        raise ValueError("broken")

    with pytest.raises(StudyError) as info:
        tuner.tune(broken, "lr-only", n_trials=3, epochs=1, storage=url, study_name="b",
                   max_consecutive_failures=2, verbose=False)
    said = no_complete_trial(info.value.result.study, url, "nothing to report")
    assert "ValueError: broken" in said and "call tuner.tune() again" in said and "study run" not in said


def test_a_loop_that_ignores_the_batch_size_is_told_so():
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.randn(256, 4), torch.randn(256, 1))
    fixed = DataLoader(data, batch_size=32)  # built once, outside train: every trial trains at 32

    def train(ctx: tuner.TrialContext, loader=fixed) -> float:
        model = torch.nn.Linear(4, 1)
        setup = ctx.config.setup(model, steps_per_epoch=len(loader))
        for x, y in loader:
            setup.step(lambda x=x, y=y: (model(x) - y).pow(2).mean())
        ctx.report(0, 0.5)
        return 0.5

    with pytest.warns(RuntimeWarning, match="does not seem to use ctx.config.batch_size") as caught:
        tuner.tune(train, "default", n_trials=6, epochs=1, sampler="random", known_starts=False, verbose=False)
    said = next(w for w in caught if "does not seem to use" in str(w.message))
    assert (said.filename, said.lineno) == (__file__, train.__code__.co_firstlineno)  # the user's loop, not tuner

    def honest(ctx: tuner.TrialContext) -> float:
        return train(ctx, DataLoader(data, batch_size=ctx.config.batch_size))

    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*does not seem to use")
        tuner.tune(honest, "default", n_trials=6, epochs=1, sampler="random", known_starts=False, verbose=False)


def test_a_mapping_space_study_made_under_its_older_default_name_is_resumed(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    space = {"optimizer": {"adam": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}}, "batch_size": 16}
    tuner.tune(_lr, space, n_trials=2, epochs=1, storage=url, study_name="tune-_lr-<space>", verbose=False)
    again = tuner.tune(_lr, space, n_trials=3, epochs=1, storage=url, verbose=False)
    assert again.study.study_name == "tune-_lr-<space>" and len(again.study.trials) == 3
    assert optuna.get_all_study_names(url) == ["tune-_lr-<space>"]
    fresh = tuner.tune(_lr, space, n_trials=1, epochs=1, storage=f"sqlite:///{tmp_path / 'n.db'}", verbose=False)
    assert fresh.study.study_name == "tune-_lr-custom"


def _falling_loss(ctx: tuner.TrialContext) -> float:
    """A validation loss that falls every epoch, under a plateau schedule with no patience: the rate stays."""
    model = torch.nn.Linear(2, 1)
    setup = ctx.config.setup(model, steps_per_epoch=1)
    x = torch.randn(8, 2)
    for epoch in range(ctx.config.epochs):
        setup.step(lambda: model(x).pow(2).mean())
        loss = 1.0 / (epoch + 1)
        setup.end_epoch(loss)
        ctx.report(epoch, loss)
    ctx.set_test_value(setup.lr / ctx.config.optimizer.lr)  # the rate kept, as a share of the one tuned
    return loss


def test_a_minimised_metric_sets_the_plateau_schedules_mode_in_the_callers_loop(tmp_path: Path):
    """tune(metric=a loss): config.setup in train_fn, result.best_config, confirmation runs, an export loaded
    with load_config and the exported script all watch a falling metric as improving (mode "min"); the
    default stayed "max", which cut the rate of every trial at every epoch while its loss fell."""
    space = {"optimizer": {"adam": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}},
             "schedule": {"plateau": {"patience": 0}}}
    result = tuner.tune(_falling_loss, space=space, n_trials=2, epochs=4, metric="val_loss", direction="minimize",
                        pruner="none",
                        verbose=False)
    assert all(t.user_attrs[Key.TEST_VALUE] == 1.0 for t in result.study.trials)
    best = result.best_config
    assert best.direction == "minimize"
    assert result.fit(best)[1] == 1.0
    path = tmp_path / "best.yaml"
    best.save(path, direction="minimize")
    loaded = tuner.load_config(path)
    assert loaded.direction == "minimize"
    _, scheduler = loaded.build(torch.nn.Linear(2, 1), steps_per_epoch=1)
    assert scheduler.mode == "min"
    assert tuner.load_config({"optimizer": "adam", "schedule": "plateau"}).build(
        torch.nn.Linear(2, 1), steps_per_epoch=1)[1].mode == "max"  # nothing said: a metric such as accuracy
    from tuner.export import export_text

    script = export_text(result.recommend(top_k=1, seeds=1), {}, "python", "t")
    assert 'def setup(model, steps_per_epoch, mode="min"):' in script


@pytest.mark.parametrize("name, problem", [("n" * 600, "must be at most 512 characters"),
                                           ("-x", "must not start with '-'"),
                                           ("a\u202eb", "must not contain control or invisible formatting")])
def test_tune_refuses_the_study_names_the_command_refuses(name: str, problem: str, tmp_path: Path):
    """One rule for a study name everywhere: PostgreSQL's limit of 512 (SQLite would take more), and names the
    printed commands could not give back (an option, an invisible character)."""
    with pytest.raises(ConfigError, match=re.escape(f"study_name {problem}")):
        tuner.tune(_lr, "lr-only", study_name=name, storage=f"sqlite:///{tmp_path / 't.db'}", verbose=False)
    assert not (tmp_path / "t.db").exists()


def test_export_of_a_tune_study_says_its_confirmation_flags_do_nothing(tmp_path: Path, monkeypatch):
    """The command line cannot call the user's train: --top-k and --seeds are said to do nothing, not ignored."""
    from typer.testing import CliRunner

    from tuner.cli import app

    url = f"sqlite:///{tmp_path / 't.db'}"
    tuner.tune(_lr, "lr-only", n_trials=3, epochs=1, storage=url, study_name="mine", verbose=False)
    monkeypatch.chdir(tmp_path)
    sized = CliRunner().invoke(app, ["study", "export", "mine", "--storage", url, "--top-k", "3", "--seeds", "5",
                                     "-o", "best.yaml"])
    assert sized.exit_code == 0, sized.output
    assert "warning: --top-k and --seeds size the confirmation runs, and none run here (this study was made by " \
           "tuner.tune(), whose training runs only in your code" in " ".join(sized.output.split())
    plain = CliRunner().invoke(app, ["study", "export", "mine", "--storage", url, "-o", "again.yaml"])
    assert plain.exit_code == 0 and "warning" not in plain.output, plain.output


def test_epochs_reported_backwards_fail_the_trial_saying_they_must_increase():
    """Epochs 1 then 0 were said to be "epoch 0 was reported already", though it never was."""
    def backwards(ctx: tuner.TrialContext) -> float:
        for epoch in reversed(range(ctx.config.epochs)):
            ctx.report(epoch, 0.5)
        return 0.5

    with pytest.raises(StudyError) as info:
        tuner.tune(backwards, "lr-only", n_trials=1, epochs=2, max_consecutive_failures=1, verbose=False)
    reason = info.value.result.study.trials[0].user_attrs[Key.REASON]
    assert "epoch 0 came after epoch 1: epochs must increase" in reason and "reported already" not in reason
