"""Importances, confirmation runs and the recommendation, narrowed spaces, report files, trials CSV and
exports: on in-memory studies with known values and on a real study of the synthetic objective."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from typer.testing import CliRunner

import tuner
from tuner.cli import app
from tuner.config import TrainConfig
from tuner.errors import StudyError
from tuner.report import (
    Candidate,
    confirm,
    importances,
    narrow_space,
    recommend,
    recommendation,
    trials_frame,
)
from tuner.spaces import SearchSpace
from tuner.study._record import StudyKey

# Two optimizers with parameters of their own: momentum.momentum exists only in trials of the momentum optimizer.
COND_SPACE = textwrap.dedent(
    """\
    optimizer:
      adam:
        lr: {low: 1.0e-3, high: 3.0e-2, log: true}
        one_minus_beta1: {low: 0.02, high: 0.5, log: true}
      momentum:
        lr: {low: 1.0e-2, high: 0.3, log: true}
        momentum: {low: 0.0, high: 0.95}
    batch_size: {choices: [16, 32]}
    regularization:
      dropout: {low: 0.0, high: 0.3}
    """
)

DISTS = {
    "optimizer": CategoricalDistribution(["adam", "momentum"]),
    "adam.lr": FloatDistribution(1e-3, 3e-2, log=True),
    "adam.one_minus_beta1": FloatDistribution(0.02, 0.5, log=True),
    "momentum.lr": FloatDistribution(1e-2, 0.3, log=True),
    "momentum.momentum": FloatDistribution(0.0, 0.95),
    "batch_size": CategoricalDistribution([16, 32]),
}


def _config(params: dict) -> dict:
    opt = params["optimizer"]
    return TrainConfig.from_dict({"optimizer": {"name": opt, "lr": params[f"{opt}.lr"]},
                                  "batch_size": params["batch_size"], "epochs": 3}).to_dict()


def known_study(n: int = 60, seed: int = 0) -> optuna.Study:
    """Momentum-SGD trials' value is driven by momentum alone; Adam trials sit in the middle."""
    rng = torch.Generator().manual_seed(seed)
    study = optuna.create_study(direction="maximize")
    for i in range(n):
        u = torch.rand(4, generator=rng).tolist()
        opt = "momentum" if i % 2 else "adam"
        params = {"optimizer": opt, "batch_size": [16, 32][i % 3 == 0]}
        if opt == "momentum":
            params.update({"momentum.lr": 1e-2 * 30 ** u[0], "momentum.momentum": 0.95 * u[1]})
            value = 0.5 + 0.45 * params["momentum.momentum"] / 0.95
        else:
            params.update({"adam.lr": 1e-3 * 30 ** u[0], "adam.one_minus_beta1": 0.02 * 25 ** u[1]})
            value = 0.7 + 0.01 * u[2]
        dists = {k: DISTS[k] for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                                  user_attrs={"config": _config(params), "test_value": value}))
    return study


@pytest.mark.parametrize("evaluator", ["ped-anova", "fanova"])
def test_importances_sum_to_one_and_include_conditional_parameters(evaluator: str):
    imps = {i.name: i for i in importances(known_study(), evaluator)}
    assert math.isclose(sum(i.importance for i in imps.values()), 1.0, rel_tol=1e-9)
    assert "momentum.momentum" in imps and imps["momentum.momentum"].conditional
    assert imps["momentum.momentum"].present == pytest.approx(0.5)
    assert imps["lr"].merged_from == ["adam.lr", "momentum.lr"] and not imps["lr"].conditional
    # momentum drives the value: it outranks the learning rate and the batch size
    assert imps["momentum.momentum"].importance > imps["lr"].importance
    assert imps["momentum.momentum"].importance > imps["batch_size"].importance


def test_importances_need_enough_trials():
    with pytest.raises(StudyError, match="complete trials"):
        importances(known_study(n=3))


def test_importances_reject_an_unknown_evaluator():
    with pytest.raises(tuner.ConfigError, match="ped-anova, fanova"):
        importances(known_study(), "shap")


def _noisy_fit(means: dict[float, list[float]], calls: list):
    """fit(config): the validation value of each re-run, looked up by the config's learning rate."""
    def fit(config: TrainConfig):
        calls.append(config)
        values = means[round(config.optimizer.lr, 6)]
        return values[sum(1 for c in calls if c.optimizer.lr == config.optimizer.lr) - 1], 0.5
    return fit


def _three_trial_study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for lr, value in ((0.01, 0.95), (0.02, 0.93), (0.03, 0.91), (0.04, 0.5)):
        cfg = TrainConfig.from_dict({"optimizer": {"name": "adam", "lr": lr}, "epochs": 2}).to_dict()
        study.add_trial(optuna.trial.create_trial(
            params={"adam.lr": lr}, distributions={"adam.lr": FloatDistribution(1e-3, 0.1, log=True)},
            value=value, user_attrs={"config": cfg}))
    return study


def test_recommendation_is_the_best_mean_over_confirmation_seeds_and_is_stored():
    study = _three_trial_study()
    # The best single trial (lr 0.01) was lucky: its re-runs average 0.80; lr 0.02 averages 0.92.
    means = {0.01: [0.85, 0.75, 0.80], 0.02: [0.93, 0.91, 0.92], 0.03: [0.90, 0.90, 0.90]}
    calls: list = []
    conf = confirm(study, _noisy_fit(means, calls), top_k=3, seeds=3)
    assert conf.recommended == 1
    assert conf.best.mean == pytest.approx(0.92) and conf.best.std == pytest.approx(0.01)
    assert len(calls) == 9 and len({c.seed for c in calls}) == 3
    assert study.user_attrs[StudyKey.CONFIRMATION]["recommended"] == 1
    # Reused: no re-training on the second call.
    rec = recommendation(study, _noisy_fit(means, calls), top_k=3, seeds=3)
    assert len(calls) == 9
    assert rec.trial == 1 and rec.value == pytest.approx(0.92) and rec.test_value == pytest.approx(0.5)
    assert rec.config.optimizer.lr == pytest.approx(0.02)
    # Another number of seeds trains only the runs not stored: the seeds are the same from one call to the next
    # (two are the first two of three), so two train nothing and four one more run per trial.
    fewer = confirm(study, _noisy_fit(means, calls), top_k=3, seeds=2)
    assert len(calls) == 9 and fewer.n_seeds == 2 and [len(c.values) for c in fewer.candidates] == [2, 2, 2]
    more = confirm(study, _noisy_fit({k: [*v, v[-1]] for k, v in means.items()}, calls), top_k=3, seeds=4)
    assert len(calls) == 12 and [len(c.values) for c in more.candidates] == [4, 4, 4]
    # reuse=False trains them all again.
    confirm(study, _noisy_fit({k: v * 3 for k, v in means.items()}, calls), top_k=3, seeds=3, reuse=False)
    assert len(calls) == 21


def test_failed_confirmation_runs_never_win():
    cands = [Candidate(0, 0.9, {}, values=[math.nan, 0.99], errors=["seed 1: RuntimeError: boom"]),
             Candidate(1, 0.8, {}, values=[0.7, 0.7])]
    assert recommend(cands, "maximize").trial == 1
    assert recommend([Candidate(0, 1.0, {}, values=[0.2]), Candidate(1, 1.0, {}, values=[0.1])],
                     "minimize").trial == 1
    with pytest.raises(StudyError, match="Every confirmation run failed or diverged.*boom"):
        recommend([Candidate(0, 0.9, {}, values=[math.nan, math.nan], errors=["seed 1: RuntimeError: boom"])],
                  "maximize")


def test_where_every_top_trial_failed_on_some_seed_the_one_that_trained_on_most_is_recommended():
    """Each top config failed on one of three seeds (a rate that diverges now and then): six of nine runs
    trained, and the confirmation refused to recommend anything, on every later report and export too."""
    cands = [Candidate(0, 0.95, {}, values=[math.nan, 0.90, 0.88], errors=["seed 500000: diverged"]),
             Candidate(1, 0.94, {}, values=[0.93, math.nan, 0.91], errors=["seed 507919: diverged"]),
             Candidate(2, 0.93, {}, values=[math.nan, math.nan, 0.99], errors=["seed 500000: diverged"])]
    assert recommend(cands, "maximize").trial == 1  # 2 of 3 trained, the best mean of those that did
    study = _three_trial_study()
    failing = {0: 0, 1: 1, 2: 2}  # trial number -> which of its confirmation runs fails

    def fit(config):
        trial = {0.01: 0, 0.02: 1, 0.03: 2}[config.optimizer.lr]
        run = fits.setdefault(trial, [])
        run.append(1)
        if len(run) - 1 == failing[trial]:
            raise FloatingPointError("diverged")
        return 0.9 - trial / 100, None

    fits: dict[int, list[int]] = {}
    rec = recommendation(study, fit, top_k=3, seeds=3)
    assert rec.trial == 0 and rec.value == pytest.approx(0.9)  # each trained on 2 of 3: the best mean of those
    assert "every one failed or diverged on some seed, and this one trained on 2 of 3" in rec.source


def test_confirm_records_a_crashing_rerun_and_recommends_another():
    study = _three_trial_study()

    def fit(config):
        if config.optimizer.lr == 0.01:
            raise RuntimeError("CUDA out of memory")
        return 0.9, None

    conf = confirm(study, fit, top_k=2, seeds=2)
    assert conf.recommended == 1
    assert "CUDA out of memory" in conf.candidates[0].errors[0]
    assert json.dumps(study.user_attrs[StudyKey.CONFIRMATION])  # stored as plain JSON (no NaN)


def test_narrowed_space_loads_and_widens_at_an_edge():
    study = known_study()
    narrowed, notes = narrow_space(study, yaml.safe_load(COND_SPACE))
    space = SearchSpace.from_dict(narrowed)
    # The best SGD trials have momentum near 0.95, the top of its range: widened, within (0, 1).
    assert any("momentum.momentum" in n and "high end" in n for n in notes), notes
    momentum = space.optimizer["momentum"]["momentum"].distribution
    assert momentum.high > 0.95 and momentum.high < 1.0
    assert "adam" not in space.optimizer  # every top trial is SGD
    assert any("dropped adam" in n for n in notes)


def test_a_narrowed_space_leaves_out_the_worse_half_and_says_its_whole_new_range():
    """Five complete trials, two of them at chance with huge rates: a space drawn from all five kept the rates
    that failed. And an end widened at the best trial says where the other end went."""
    raw = {"optimizer": {"adam": {"lr": {"low": 1e-4, "high": 10.0, "log": True}}},
           "batch_size": {"choices": [32, 64, 128]}}
    dists = {"adam.lr": FloatDistribution(1e-4, 10.0, log=True),
             "batch_size": optuna.distributions.CategoricalDistribution([32, 64, 128])}
    study = optuna.create_study(direction="maximize")
    for value, lr, batch in [(0.95, 1.1e-4, 64), (0.94, 3e-4, 64), (0.93, 5e-4, 128), (0.10, 5.0, 32),
                             (0.10, 8.0, 32)]:
        study.add_trial(optuna.trial.create_trial(value=value, params={"adam.lr": lr, "batch_size": batch},
                                                  distributions=dists))
    narrowed, notes = narrow_space(study, raw)
    assert notes[0] == "drawn from the best 3 of the 5 complete trials"
    assert narrowed["optimizer"]["adam"]["lr"]["high"] < 1e-2
    assert narrowed["batch_size"] == {"choices": [64, 128]}
    edge = next(n for n in notes if n.startswith("adam.lr"))
    low, high = narrowed["optimizer"]["adam"]["lr"]["low"], narrowed["optimizer"]["adam"]["lr"]["high"]
    assert edge == (f"adam.lr: the best value 0.00011 sits at the low end of [0.0001, 10]; widened down past it: "
                    f"[0.0001, 10] -> [{low:.3g}, {high:.3g}]")


def test_a_narrowed_space_of_accuracy_against_cost_keeps_the_cheap_end_of_the_front():
    """Drawn from the best by accuracy alone, it kept the slow optimizer and dropped the one of the front's
    cheap end: a follow-up study could no longer find what the first one traded accuracy for."""
    raw = {"optimizer": {"adamw": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}},
                         "nesterov": {"lr": {"low": 1e-3, "high": 1.0, "log": True}}}}
    dists = {"optimizer": optuna.distributions.CategoricalDistribution(["adamw", "nesterov"]),
             "adamw.lr": FloatDistribution(1e-4, 1e-1, log=True), "nesterov.lr": FloatDistribution(1e-3, 1.0, log=True)}
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values, optimizer, lr in [((0.95, 9.0), "adamw", 1e-3), ((0.94, 8.0), "adamw", 2e-3),
                                  ((0.93, 7.0), "adamw", 3e-3), ((0.92, 6.5), "adamw", 4e-3),
                                  ((0.90, 1.0), "nesterov", 0.1), ((0.50, 9.5), "adamw", 5e-2)]:
        study.add_trial(optuna.trial.create_trial(values=list(values), params={"optimizer": optimizer,
                                                                               f"{optimizer}.lr": lr},
                                                  distributions={k: dists[k] for k in ("optimizer",
                                                                                       f"{optimizer}.lr")}))
    narrowed, notes = narrow_space(study, raw)
    assert set(narrowed["optimizer"]) == {"adamw", "nesterov"}
    assert notes[0] == "drawn from the 5 trial(s) of the Pareto front, of the 6 complete trials"


def test_a_narrowed_space_of_accuracy_against_cost_tops_up_the_front_only_from_the_better_half():
    """Two trials on the front, three off it: the front was topped up to three by accuracy, which reached the
    worst trial of five, an optimizer that trained to 0.34 then kept its place in the space."""
    raw = {"optimizer": {"adamw": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}},
                         "adam": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}}}
    dists = {"optimizer": optuna.distributions.CategoricalDistribution(["adamw", "adam"]),
             "adamw.lr": FloatDistribution(1e-4, 1e-1, log=True), "adam.lr": FloatDistribution(1e-4, 1e-1, log=True)}
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values, optimizer, lr in [((0.95, 2.0), "adamw", 1e-3), ((0.90, 1.0), "adamw", 2e-3),
                                  ((0.93, 3.0), "adamw", 3e-3), ((0.92, 4.0), "adamw", 4e-3),
                                  ((0.34, 5.0), "adam", 1e-2)]:
        study.add_trial(optuna.trial.create_trial(values=list(values), params={"optimizer": optimizer,
                                                                               f"{optimizer}.lr": lr},
                                                  distributions={k: dists[k] for k in ("optimizer",
                                                                                       f"{optimizer}.lr")}))
    narrowed, notes = narrow_space(study, raw)
    assert notes[0] == ("drawn from the 2 trial(s) of the Pareto front and the next 1 by the first objective, of "
                        "the 5 complete trials")
    assert set(narrowed["optimizer"]) == {"adamw"}


def test_narrowed_space_keeps_integer_ranges_integer_when_it_narrows_or_widens():
    """An int range (a step schedule's step_size) narrows and widens like a float one, and stays an int range."""
    from optuna.distributions import IntDistribution

    raw = {"optimizer": {"adam": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
           "schedule": {"step": {"step_size": {"type": "int", "low": 1, "high": 40}}}}
    dists = {"adam.lr": FloatDistribution(1e-4, 1e-2, log=True), "step.step_size": IntDistribution(1, 40)}
    study = optuna.create_study(direction="maximize")
    for i, (lr, size) in enumerate([(1e-3, 40), (2e-3, 38), (3e-3, 36), (1e-3, 39), (2e-3, 37), (5e-3, 3)]):
        study.add_trial(optuna.trial.create_trial(value=1.0 - i / 10, params={"adam.lr": lr, "step.step_size": size},
                                                  distributions=dists))
    narrowed, notes = narrow_space(study, raw)
    step_size = narrowed["schedule"]["step"]["step_size"]
    assert step_size["type"] == "int" and step_size["high"] > 40, (step_size, notes)
    assert any("step.step_size" in n and "high end" in n for n in notes), notes
    assert SearchSpace.from_dict(narrowed).schedule["step"]["step_size"].distribution.high == step_size["high"]
    # Narrowed (the best trial inside the range): still an int range.
    study2 = optuna.create_study(direction="maximize")
    for i, size in enumerate([20, 22, 18, 21, 19, 2]):
        study2.add_trial(optuna.trial.create_trial(value=1.0 - i / 10, params={"adam.lr": 1e-3, "step.step_size": size},
                                                   distributions=dists))
    narrowed, _ = narrow_space(study2, raw)
    step_size = narrowed["schedule"]["step"]["step_size"]
    assert step_size["type"] == "int" and 1 <= step_size["low"] < 18 and 22 < step_size["high"] < 40, step_size


# -- on a real study ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_study(tmp_path_factory, objective_ref: str):
    """12 trials of the synthetic objective over a space with conditional parameters."""
    root = tmp_path_factory.mktemp("report-study")
    space = root / "cond.yaml"
    space.write_text(COND_SPACE)
    url = f"sqlite:///{root / 'r.db'}"
    result = CliRunner().invoke(app, ["study", "create", "--objective", objective_ref, "--space", str(space),
                                      "--n-trials", "12", "--epochs", "4", "--storage", url, "--name", "r",
                                      "--sampler", "random", "--pruner", "none", "--device", "cpu",
                                      "--threads", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    return url, root


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src") or "")
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))


def test_report_writes_self_contained_html_markdown_and_plots(real_study, tmp_path: Path):
    url, _ = real_study
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["study", "report", "r", "--storage", url, "-o", str(out), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    for name in ("report.html", "report.md", "recommended.yaml", "narrowed-space.yaml", "history.png",
                 "importance.png", "parallel.png", "slices.png", "lr_batch.png", "curves.png", "optimizers.png",
                 "schedule.png"):
        assert (out / name).stat().st_size > 200, name
    parser = _Images()
    parser.feed((out / "report.html").read_text())
    assert len(parser.srcs) == 8 and not parser.links
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    md = (out / "report.md").read_text()
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / ref).is_file()
    assert "Confirmation runs (2 new seeds per config)" in md and "momentum.momentum" in md
    assert "Best config per optimizer" in md
    # The narrowed space is a valid space for a follow-up study.
    tuner_space = SearchSpace.from_dict(yaml.safe_load((out / "narrowed-space.yaml").read_text()))
    assert tuner_space.optimizer
    rec = tuner.load_config(out / "recommended.yaml")
    meta = yaml.safe_load((out / "recommended.yaml").read_text())["metadata"]
    assert meta["study"] == "r" and meta["metric"] == "accuracy" and 0 <= meta["value"] <= 1
    assert rec.epochs == 4


def test_export_reuses_the_stored_confirmation_and_round_trips(real_study, tmp_path: Path):
    url, _ = real_study
    runner = CliRunner()
    assert runner.invoke(app, ["study", "report", "r", "--storage", url, "-o", str(tmp_path / "rep"),
                               "--seeds", "2"]).exit_code == 0
    study = optuna.load_study(study_name="r", storage=url)
    stored = study.user_attrs[StudyKey.CONFIRMATION]
    result = runner.invoke(app, ["study", "export", "r", "--storage", url, "--seeds", "2", "-o",
                                 str(tmp_path / "best.yaml")])
    assert result.exit_code == 0, result.output
    assert "confirmation:" not in result.output  # nothing re-trained
    assert optuna.load_study(study_name="r", storage=url).user_attrs[StudyKey.CONFIRMATION] == stored
    config = tuner.load_config(tmp_path / "best.yaml")
    trial = next(t for t in study.trials if t.number == stored["recommended"])
    # The trial's values, and the direction of its metric (the plateau schedule's mode) from the export
    assert config == TrainConfig.from_dict(trial.user_attrs["config"]) and config.direction == "maximize"
    # Same optimizer param groups and schedule as the trial's config.
    original = TrainConfig.from_dict(trial.user_attrs["config"])
    groups = []
    for cfg in (config, original):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
        opt, sched = cfg.build(model, steps_per_epoch=5)
        lrs = []
        for _ in range(20):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        groups.append(([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
                       [[p.shape for p in g["params"]] for g in opt.param_groups], type(opt), lrs))
    assert groups[0] == groups[1]
    # JSON, and a chosen trial.
    result = runner.invoke(app, ["study", "export", "r", "--storage", url, "--format", "json", "--trial", "0"])
    data = json.loads(result.stdout)
    assert data["metadata"]["trial"] == 0
    assert TrainConfig.from_dict(data) == TrainConfig.from_dict(study.trials[0].user_attrs["config"])


def test_export_python_runs_without_tuner(real_study, tmp_path: Path):
    url, _ = real_study
    target = tmp_path / "best.py"
    result = CliRunner().invoke(app, ["study", "export", "r", "--storage", url, "--format", "python", "--no-confirm",
                                      "-o", str(target)])
    assert result.exit_code == 0, result.output
    source = target.read_text()
    assert "import tuner" not in source and "from tuner" not in source
    run = subprocess.run([sys.executable, str(target)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}, timeout=120)
    assert run.returncode == 0, run.stderr


def test_export_errors_name_the_problem(real_study, tmp_path: Path):
    url, _ = real_study
    result = CliRunner().invoke(app, ["study", "export", "r", "--storage", url, "--trial", "999"])
    assert result.exit_code == 1 and "no trial 999" in result.output
    result = CliRunner().invoke(app, ["study", "export", "nope", "--storage", url])
    assert result.exit_code == 1 and "Unknown study 'nope'. Valid: r" in result.output


def test_trials_csv_has_flattened_params_and_attributes(real_study, tmp_path: Path):
    url, _ = real_study
    csv = tmp_path / "t.csv"
    result = CliRunner().invoke(app, ["study", "trials", "r", "--storage", url, "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(csv)
    assert len(frame) == 12
    for col in ("number", "state", "value", "test_value", "params.optimizer", "params.momentum.momentum",
                "config.optimizer.name", "config.optimizer.lr", "config.batch_size", "epochs_run", "seconds"):
        assert col in frame.columns, col
    sgd = frame[frame["params.optimizer"] == "momentum"]
    assert sgd["params.adam.one_minus_beta1"].isna().all()
    study = optuna.load_study(study_name="r", storage=url)
    assert trials_frame(study)["value"].tolist()[:3] == pytest.approx([t.value for t in study.trials[:3]],
                                                                    nan_ok=True)


def test_the_schedule_plot_counts_the_objectives_own_batches_without_retraining(real_study):
    """Without confirmation runs (--no-confirm) the objective is not loaded: its batches per epoch come from
    the training set's size stored with the study; a study of the user's own loop says it assumes them."""
    import math

    from tuner.report import batches_per_epoch

    url, _ = real_study
    study = optuna.load_study(study_name="r", storage=url)
    rows = study.user_attrs["tuner:objective_fingerprint"]["train_shape"][0]
    assert batches_per_epoch(study, None, 32) == (math.ceil(rows / 32), False)
    other = optuna.create_study()
    assert batches_per_epoch(other, None, 32) == (100, True)


def test_an_importance_resting_on_few_trials_is_said_to():
    from tuner.report import thin_importance_notes
    from tuner.report._analysis import Importance

    imps = [Importance("nesterov.one_minus_momentum", 0.355, 2 / 6, []), Importance("lr", 0.3, 1.0, ["adam.lr"]),
            Importance("adam.weight_decay", 0.2, 4 / 6, []), Importance("rare", 0.1, 1 / 6, [])]
    assert thin_importance_notes(imps, 6) == [
        "importance of nesterov.one_minus_momentum (0.355) rests on the 2 complete trials that have it: too few to "
        "tell how much it matters"]  # the fourth is not among the top three; lr and a 4-trial share are kept


def test_a_stop_short_of_the_budget_is_said_until_a_trial_runs_again():
    from tuner.study._record import StudyKey, stopped_early

    study = optuna.create_study()
    for _ in range(3):
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study.set_user_attr(StudyKey.STOPPED, {"trial": 2, "why": "3 consecutive failed trials; the last failed with: x"})
    assert stopped_early(study) == "3 consecutive failed trials; the last failed with: x"
    study.enqueue_trial({})  # a queued config is not a run
    assert stopped_early(study) is not None
    study.tell(study.ask(), 1.0)
    assert stopped_early(study) is None


def test_a_stop_in_a_pack_is_said_though_later_numbered_members_failed_after_it():
    """A pack's members are asked together: the one whose failure stopped the study is not the highest number."""
    from tuner.study._engine import RunPlan, RunSummary, TrialOutcome, record_outcome
    from tuner.study._record import StopKind, StopReason, stopped_early

    study = optuna.create_study()
    members = [study.ask() for _ in range(3)]
    plan = RunPlan(name="s", storage_url=None, space=None, epochs=1, seed=0, n_trials=3, max_consecutive_failures=1)
    outcome = TrialOutcome(members[0].number, "FAIL", None, None, StopReason(StopKind.ERROR, "error: boom"), 0.1, None)
    study.tell(members[0], state=optuna.trial.TrialState.FAIL)
    with pytest.raises(StudyError, match="stopped after 1 consecutive failed trials"):
        record_outcome(study, plan, RunSummary(), outcome, 0, None)
    for member in members[1:]:  # the rest of the pack, failed as the run stops
        study.tell(member, state=optuna.trial.TrialState.FAIL)
    assert stopped_early(study) == "1 consecutive failed trials; the last failed with: error: boom"


def test_interrupted_trials_are_no_failures_in_a_row():
    """Ctrl-C during a pack of trials failed each member as interrupted, and five in a row made `study show` say
    the study had stopped early after consecutive failed trials ("goes on once that is fixed")."""
    from tuner.study._engine import RunPlan, RunSummary, TrialOutcome, record_outcome
    from tuner.study._record import StopKind, StopReason, stopped_early

    study = optuna.create_study()
    plan = RunPlan(name="s", storage_url=None, space=None, epochs=1, seed=0, n_trials=5, max_consecutive_failures=2)
    consecutive = 0
    for _ in range(5):
        trial = study.ask()
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        outcome = TrialOutcome(trial.number, "FAIL", None, None, StopReason(StopKind.INTERRUPTED, "interrupted"),
                               0.1, None)
        consecutive = record_outcome(study, plan, RunSummary(), outcome, consecutive, None)
    assert consecutive == 0 and stopped_early(study) is None


def test_a_narrowed_stepped_range_stays_on_its_grid_and_its_ends_are_shown_exactly():
    """A stepped range narrowed to ends off its grid (refused now that a step must divide its range), and the
    note showed beta2's [0.99, 0.9999] as [0.99, 1], a value beta2 cannot take."""
    raw = {"optimizer": {"adam": {"lr": 1e-3, "beta2": {"low": 0.99, "high": 0.9999}}},
           "regularization": {"dropout": {"low": 0.0, "high": 0.5, "step": 0.05}}}
    dists = {"adam.beta2": FloatDistribution(0.99, 0.9999), "dropout": FloatDistribution(0.0, 0.5, step=0.05)}
    study = optuna.create_study(direction="maximize")
    for i, (beta2, dropout) in enumerate([(0.991, 0.2), (0.992, 0.25), (0.993, 0.15), (0.9985, 0.45),
                                          (0.999, 0.5), (0.9991, 0.45)]):
        study.add_trial(optuna.trial.create_trial(value=1.0 - i / 10, params={"adam.beta2": beta2, "dropout": dropout},
                                                  distributions=dists))
    narrowed, notes = narrow_space(study, raw)
    space = SearchSpace.from_dict(narrowed)  # loads: the step divides the new range
    dropout = space.regularization["dropout"].distribution
    assert dropout.step == 0.05 and (dropout.low, dropout.high) != (0.0, 0.5), notes
    assert all(abs(v / 0.05 - round(v / 0.05)) < 1e-9 for v in (dropout.low, dropout.high))
    assert any(n.startswith("adam.beta2: [0.99, 0.9999] -> [") for n in notes), notes


def test_the_per_optimizer_plot_rings_a_recommended_trial_that_is_not_its_optimizers_star(tmp_path) -> None:
    """The star marks each optimizer's best single trial; a confirmation may recommend another trial, which the
    plot did not show."""
    import optuna

    from tuner.report import _plots

    study = optuna.create_study(direction="maximize")
    for value in (0.9, 0.8, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={},
                                                  user_attrs={"config": {"optimizer": {"name": "adamw"}}}))
    from conftest import legends_of

    assert legends_of(lambda: _plots.optimizer_comparison(study, "accuracy", tmp_path / "a.png", recommended=1)) \
        == ["recommended (trial 1)"]
    # the star itself: no ring
    assert legends_of(lambda: _plots.optimizer_comparison(study, "accuracy", tmp_path / "b.png", recommended=0)) == []
