"""The LR range test: the sweep, the suggested range, calibrated spaces and the commands that use them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from typer.testing import CliRunner

from tuner.cli import app
from tuner.errors import ConfigError
from tuner.lrfind import LRCurve, _analyse, calibrate_space, lr_find
from tuner.spaces import load_space
from tuner.study import StudySpec, create_or_join, prepare
from tuner.study._record import StudyKey


def _synthetic_curve(lrs: np.ndarray, fall_at: float, blow_at: float, noise: float = 0.0) -> list[float]:
    """A loss of 2.3 that falls to 1.0 around ``fall_at`` and shoots up past ``blow_at``."""
    x = np.log10(lrs)
    fall = 1.3 / (1 + np.exp(-(x - math.log10(fall_at)) * 4))
    blow = np.where(x > math.log10(blow_at), 10 ** (2 * (x - math.log10(blow_at))) - 1, 0.0) * 3
    rng = np.random.default_rng(0)
    return list(2.3 - fall + blow + noise * rng.standard_normal(len(lrs)))


def test_the_range_runs_from_the_fall_to_where_the_loss_climbs_back() -> None:
    lrs = np.geomspace(1e-7, 10, 160)
    curve = LRCurve("adam", list(lrs), _synthetic_curve(lrs, fall_at=1e-3, blow_at=0.1, noise=0.02))
    _analyse(curve, reached_end=True)
    assert curve.found, curve.note
    # The loss starts to fall about a decade below the sigmoid's middle and is back above 2.3 at about 0.12
    # (a little earlier in the smoothed curve, which sees the steep rise coming).
    assert 5e-5 < curve.low < 1e-3
    assert 0.06 <= curve.high < 0.2
    assert curve.low < curve.steepest < curve.minimum <= curve.high
    assert 10 <= curve.high / curve.low <= 1000


def test_a_loss_that_never_falls_gives_no_range_and_says_why() -> None:
    lrs = np.geomspace(1e-7, 10, 160)
    curve = LRCurve("sgd", list(lrs), list(2.3 + 0.01 * np.random.default_rng(1).standard_normal(160)))
    _analyse(curve, reached_end=True)
    assert not curve.found
    assert "did not fall" in curve.note and "no range" in curve.line()


def test_a_loss_still_falling_at_the_end_of_the_sweep_is_noted() -> None:
    lrs = np.geomspace(1e-7, 1e-3, 80)
    curve = LRCurve("adam", list(lrs), _synthetic_curve(lrs, fall_at=3e-4, blow_at=1.0))
    _analyse(curve, reached_end=True)
    assert curve.found and lrs[-1] / 10 ** 0.5 <= curve.high <= lrs[-1]  # within half a decade of the end
    assert "it was still falling there, so the top may be higher (--end-lr)" in curve.note


def test_a_loss_that_falls_then_stays_flat_gives_a_range_around_its_fall_whatever_the_sweeps_end() -> None:
    """A tiny data set the model fits at any rate above 0.01: the loss fell near 0.003 and never climbed back,
    and the range was the sweep's last three decades (0.01 .. 10, or 1 .. 1000 with --end-lr 1000), without
    the steepest fall; a study calibrated with it trained Adam at 0.6."""
    ranges = []
    for end in (10.0, 1000.0):
        lrs = np.geomspace(1e-7, end, int(20 * math.log10(end / 1e-7)))
        x = np.log10(lrs)
        loss = 0.7 / (1 + np.exp((x - math.log10(3e-3)) * 6)) + 0.002 * np.random.default_rng(0).standard_normal(
            len(lrs))
        curve = LRCurve("adamw", list(lrs), list(loss))
        _analyse(curve, reached_end=True)
        assert curve.found and curve.low <= curve.steepest <= curve.high, curve.line()
        assert curve.high < 0.1 and curve.high / curve.low <= 1000 * 1.001
        assert "the range's top is where its fall was done" in curve.note and "--end-lr" not in curve.note
        ranges.append((curve.low, curve.steepest))
    assert ranges[0][1] == pytest.approx(ranges[1][1], rel=0.2)  # the same fall, whatever the end
    assert ranges[0][0] == pytest.approx(ranges[1][0], rel=0.5)


def test_a_range_reaching_below_the_sweeps_start_says_those_rates_were_not_tried() -> None:
    """`lr-find --start-lr 1e-3 --end-lr 3e-3`: a range spans a decade at least, so its bottom lies below 1e-3,
    where the sweep never went; the line says so (and where it did start, it says nothing)."""
    lrs = np.geomspace(1e-3, 3e-3, 80)
    curve = LRCurve("adam", list(lrs), _synthetic_curve(lrs, fall_at=1.2e-3, blow_at=2.4e-3))
    _analyse(curve, reached_end=True)
    assert curve.found and curve.low < lrs[0]
    assert f"the range's bottom, {curve.low:.2g}, lies below the sweep's start, 0.001" in curve.note
    assert "--start-lr" in " ".join(curve.lines())  # the note under the range, as the command prints it
    wide = np.geomspace(1e-7, 10, 160)
    full = LRCurve("adam", list(wide), _synthetic_curve(wide, fall_at=1e-3, blow_at=0.1, noise=0.02))
    _analyse(full, reached_end=True)
    assert full.note is None or "below the sweep's start" not in full.note


@pytest.mark.parametrize("optimizer", ["adadelta", "prodigy"])
def test_a_multiplier_range_is_widened_to_its_default_and_says_so(optimizer: str) -> None:
    """Adadelta's and Prodigy's lr multiplies a step size they work out themselves; a sweep whose range leaves
    out their default multiplier, 1, is widened to include it (a sweep of an ordinary rate is not)."""
    lrs = np.geomspace(1e-7, 10, 160)
    losses = _synthetic_curve(lrs, fall_at=1e-2, blow_at=0.3, noise=0.02)
    curve = LRCurve(optimizer, list(lrs), losses)
    _analyse(curve, reached_end=True)
    assert curve.found and curve.low < 0.1 and curve.high == 1.0
    assert "widened to its default, 1" in curve.note and "multiplies" in curve.note
    first, note = curve.lines()
    assert first == curve.line() and note == f"  note: {curve.note}"
    adam = LRCurve("adam", list(lrs), losses)
    _analyse(adam, reached_end=True)
    assert adam.high < 1.0 and adam.note == "" and adam.lines() == [adam.line()]


def test_a_real_sweep_suggests_a_higher_range_for_sgd_than_for_adam(objective_ref: str, space_file: Path) -> None:
    result = lr_find(objective_ref, space=str(space_file), device="cpu", repeats=1)
    assert list(result.curves) == ["adam", "sgd"]  # every optimizer of the space, in its order
    assert result.batch_size == 16  # the space's middle batch size (of 16, 32: the lower)
    for curve in result.curves.values():
        assert curve.found, curve.line()
        assert all(b > a for a, b in zip(curve.lrs, curve.lrs[1:], strict=False))
        assert min(curve.smoothed) < 0.9 * curve.smoothed[0]  # the model trained during the sweep
        assert curve.seconds > 0 and curve.stop
    # Plain SGD needs a far larger step than Adam on the same model: the two ranges are not the same.
    assert result.curves["sgd"].high > 3 * result.curves["adam"].high


def test_repeats_are_seeded_and_the_median_counts(objective_ref: str, space_file: Path) -> None:
    one = lr_find(objective_ref, ["adam"], space=str(space_file), device="cpu", repeats=1, seed=3)
    again = lr_find(objective_ref, ["adam"], space=str(space_file), device="cpu", repeats=1, seed=3)
    other = lr_find(objective_ref, ["adam"], space=str(space_file), device="cpu", repeats=1, seed=4)
    assert one.curves["adam"].losses == again.curves["adam"].losses
    assert one.curves["adam"].losses != other.curves["adam"].losses
    three = lr_find(objective_ref, ["adam"], space=str(space_file), device="cpu", repeats=3, seed=3)
    n = len(three.curves["adam"].losses)
    assert n <= len(one.curves["adam"].losses)


def test_bad_arguments_are_refused_with_the_valid_choices(objective_ref: str) -> None:
    with pytest.raises(ConfigError, match="adamw"):
        lr_find(objective_ref, ["adamm"], device="cpu")
    with pytest.raises(ConfigError, match="start_lr < end_lr"):
        lr_find(objective_ref, ["adam"], start_lr=1.0, end_lr=0.1, device="cpu")
    with pytest.raises(ConfigError, match="at least 20 steps"):
        lr_find(objective_ref, ["adam"], steps=5, device="cpu")
    with pytest.raises(ConfigError, match="repeats"):
        lr_find(objective_ref, ["adam"], repeats=0, device="cpu")


def test_a_calibrated_space_holds_the_suggested_ranges_and_keeps_the_rest(objective_ref: str,
                                                                         space_file: Path) -> None:
    result = lr_find(objective_ref, space=str(space_file), device="cpu", repeats=1)
    result.curves["sgd"].low = result.curves["sgd"].high = None  # as if the sgd sweep had found nothing
    raw = calibrate_space(str(space_file), result)
    space = load_space(raw)
    adam = space.optimizer["adam"]["lr"].distribution
    assert adam.log and adam.low == pytest.approx(result.curves["adam"].low, rel=0.05)
    assert adam.high == pytest.approx(result.curves["adam"].high, rel=0.05)
    sgd = space.optimizer["sgd"]["lr"].distribution
    assert (sgd.low, sgd.high) == (1e-2, 0.3)  # no suggestion: the space's own range stays
    assert raw["batch_size"] == {"choices": [16, 32]}
    assert "LR range test" in raw["description"]
    own = load_space(str(space_file)).raw.get("description")
    assert not own or own not in raw["description"]  # the ranges it named are replaced, not left beside the new


def test_a_rate_the_space_fixed_or_chose_from_a_list_is_said_to_become_a_range() -> None:
    """`spaces calibrate` of a space with `adam: {lr: 0.001}` and `nesterov: {lr: {choices: [0.01, 0.1]}}`
    wrote both as log ranges without a word; the calibrated space's description and the command say so."""
    from tuner.lrfind import LRFindResult, replaced_rates

    space = load_space({"optimizer": {"adam": {"lr": 0.001}, "nesterov": {"lr": {"choices": [0.01, 0.1]}},
                                      "adamw": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}}})
    result = LRFindResult("synthetic", batch_size=32, device="cpu", curves={
        name: LRCurve(name, [], [], low=low, high=high)
        for name, low, high in (("adam", 1e-4, 1e-2), ("nesterov", 1e-2, 0.5), ("adamw", 2e-4, 2e-2))})
    assert replaced_rates(space, result) == [
        "adam: the space fixed lr at 0.001; the calibrated space searches a range instead",
        "nesterov: the space chose lr from [0.01, 0.1]; the calibrated space searches a range instead"]
    raw = calibrate_space(space, result)
    assert raw["optimizer"]["adam"]["lr"] == {"low": 1e-4, "high": 1e-2, "log": True}
    # Optimizer names as a space writes them (adamw, not Adamw)
    assert " adam: the space fixed lr at 0.001; " in raw["description"]
    assert " nesterov: the space chose lr from [0.01, 0.1]; " in raw["description"]
    assert "adamw:" not in raw["description"] and "Adam" not in raw["description"]


@pytest.fixture
def cli(tmp_cwd: Path):
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_lr_find_command_prints_ranges_and_writes_a_plot(cli, objective_ref: str, space_file: Path,
                                                         tmp_cwd: Path) -> None:
    result = cli("lr-find", "--objective", objective_ref, "--space", space_file, "--optimizer", "adam",
                 "--repeats", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "adam: lr " in result.output and "sgd" not in result.output.split("plot:")[0]
    png = tmp_cwd / "lr-find-synthetic.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(cli("lr-find", "--objective", objective_ref, "--space", space_file, "--repeats", "1",
                          "--device", "cpu", "--plot", "p.png", "--format", "json").stdout)
    assert set(data["curves"]) == {"adam", "sgd"} and data["plot"] == "p.png"
    assert data["curves"]["adam"]["low"] < data["curves"]["adam"]["high"]
    # The file's extension chooses the format, as matplotlib's savefig does; written whole, nothing left beside.
    svg = cli("lr-find", "--objective", objective_ref, "--space", space_file, "--optimizer", "adam", "--repeats",
              "1", "--device", "cpu", "--plot", "p.svg")
    assert svg.exit_code == 0, svg.output
    assert b"<svg" in (tmp_cwd / "p.svg").read_bytes()[:1000]
    assert sorted(p.name for p in tmp_cwd.iterdir()) == ["lr-find-synthetic.png", "p.png", "p.svg"]


def test_lr_find_command_refuses_an_unknown_optimizer_in_one_line(cli, objective_ref: str) -> None:
    result = cli("lr-find", "--objective", objective_ref, "--optimizer", "adamm", "--device", "cpu")
    assert result.exit_code == 1
    assert "error:" in result.output and "adamw" in result.output and "Traceback" not in result.output


def test_spaces_calibrate_writes_a_space_that_loads(cli, objective_ref: str, space_file: Path,
                                                    tmp_cwd: Path) -> None:
    result = cli("spaces", "calibrate", space_file, "--objective", objective_ref, "-o", "cal.yaml",
                 "--repeats", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    text = (tmp_cwd / "cal.yaml").read_text()
    assert text.startswith("# lr ranges from `tuner lr-find` on synthetic")
    space = load_space(tmp_cwd / "cal.yaml")
    assert yaml.safe_load(text)["optimizer"]["adam"]["lr"]["log"] is True
    assert space.optimizer["adam"]["lr"].distribution.high < space.optimizer["sgd"]["lr"].distribution.high
    assert "tuner study create" in result.output and "cal.yaml" in result.output
    # Its own input as the output: refused before any sweep, the user's file (and its comments) kept.
    mine = tmp_cwd / "mine.yaml"
    mine.write_text("# my space\n" + space_file.read_text())
    before = mine.read_text()
    again = cli("spaces", "calibrate", "mine.yaml", "--objective", objective_ref, "-o", str(mine), "--repeats", "1")
    assert again.exit_code == 1 and mine.read_text() == before
    assert f"-o {mine}: that is the space being calibrated; write to another file (it would replace mine.yaml, " \
           f"comments and all)." in " ".join(again.output.split())


def test_calibrating_an_optimizer_the_space_lacks_is_refused_before_any_sweep(cli, objective_ref: str,
                                                                             tmp_cwd: Path) -> None:
    result = cli("spaces", "calibrate", "lr-only", "--objective", objective_ref, "--optimizer", "sgd", "-o",
                 "cal.yaml", "--repeats", "1", "--device", "cpu")
    assert result.exit_code == 1
    assert "--optimizer sgd: not an optimizer of the space 'lr-only' (it holds adam)" in " ".join(result.output.split())
    assert not (tmp_cwd / "cal.yaml").exists()


def test_a_study_with_calibrate_searches_the_calibrated_ranges(objective_ref: str, space_file: Path,
                                                                storage_url: str) -> None:
    spec = StudySpec(name="cal", objective=objective_ref, space=str(space_file), calibrate=True, n_trials=3,
                     epochs=2, storage=storage_url, device="cpu", sampler="random")
    prepared = prepare(spec)
    assert prepared.calibration is not None
    adam = prepared.calibration.curves["adam"]
    study = create_or_join(prepared)
    stored = load_space(study.user_attrs[StudyKey.SPACE])
    assert stored.optimizer["adam"]["lr"].distribution.low == pytest.approx(adam.low, rel=0.05)
    assert study.user_attrs[StudyKey.CALIBRATION]["ranges"]["adam"]["high"] == adam.high
    # Joining the study again runs no second test: it keeps the space it was calibrated with.
    again = prepare(spec)
    assert again.calibration is None and again.space.fingerprint() == prepared.space.fingerprint()
    create_or_join(again)
    # Without calibrate, the same name is another study.
    with pytest.raises(Exception, match="calibrate"):
        create_or_join(prepare(spec.with_overrides(calibrate=False)))
    assert len(optuna.load_study(study_name="cal", storage=storage_url).trials) == 0


def test_calibrate_in_a_spec_file_is_checked(tmp_path: Path) -> None:
    from tuner.study import load_spec

    path = tmp_path / "s.yaml"
    path.write_text("objective: digits-mlp\ncalibrate: please\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:2: key 'calibrate'"):
        load_spec(path)
    path.write_text("objective: digits-mlp\ncalibrate: true\n")
    assert load_spec(path).calibrate is True


def test_study_create_calibrate_prints_the_ranges_and_show_repeats_them(cli, objective_ref: str,
                                                                         space_file: Path, storage_url: str) -> None:
    result = cli("study", "create", "--objective", objective_ref, "--space", space_file, "--calibrate",
                 "--n-trials", "2", "--epochs", "2", "--storage", storage_url, "--device", "cpu", "--name", "c")
    assert result.exit_code == 0, result.output
    assert "lr ranges calibrated by an LR range test" in result.output and "adam: lr" in result.output
    shown = cli("study", "show", "c", "--storage", storage_url)
    assert re.search(r"lr ranges from an LR range test at batch size 16 \(\d+\.\d s, before the first trial\): "
                     r"adam ", shown.output), shown.output  # what the test cost, too
    stored = cli("study", "show", "c", "--storage", storage_url, "--format", "json")
    calibration = json.loads(stored.stdout)["calibration"]
    assert calibration["seconds"] > 0 and calibration["repeats"] == 3 and calibration["device"] == "cpu"


def test_the_commands_it_prints_work_as_written_with_spaces_in_names(cli, objective_file: Path,
                                                                     space_file: Path, tmp_cwd: Path) -> None:
    import shlex
    import shutil

    odd = tmp_cwd / "my models"
    odd.mkdir()
    objective = f"{shutil.copy(objective_file, odd / 'obj.py')}:objective"
    space = str(shutil.copy(space_file, odd / "tiny space.yaml"))
    found = cli("lr-find", "--objective", objective, "--space", space, "--repeats", "1", "--device", "cpu")
    line = next(x for x in found.output.splitlines() if x.startswith("a space with these ranges: "))
    args = shlex.split(line.removeprefix("a space with these ranges: "))
    assert args[:3] == ["tuner", "spaces", "calibrate"] and args[3] == space and args[5] == objective
    made = cli("spaces", "calibrate", space, "--objective", objective, "-o", str(odd / "out.yaml"), "--repeats",
               "1", "--device", "cpu")
    line = next(x for x in made.output.splitlines() if x.startswith("use it: "))
    args = shlex.split(line.removeprefix("use it: "))
    assert args == ["tuner", "study", "create", "--objective", objective, "--space", str(odd / "out.yaml")]


def test_the_printed_calibrate_command_runs_the_same_sweep(cli, objective_ref: str, space_file: Path,
                                                           tmp_cwd: Path) -> None:
    import shlex

    # nesterov is not in the space: swept, said so, and left out of the command (calibrate would refuse it)
    found = cli("lr-find", "--objective", objective_ref, "--space", str(space_file), "--optimizer", "adam",
                "--optimizer", "nesterov", "--batch-size", "8", "--repeats", "1", "--end-lr", "1", "--device", "cpu")
    assert found.exit_code == 0, found.output
    assert "not in the space" in found.output and "nesterov" in found.output
    line = next(x for x in found.output.splitlines() if x.startswith("a space with these ranges: "))
    args = shlex.split(line.removeprefix("a space with these ranges: "))
    for flag, value in (("--batch-size", "8"), ("--repeats", "1"), ("--end-lr", "1"), ("--optimizer", "adam")):
        assert args[args.index(flag) + 1] == value, args
    assert "nesterov" not in args
    made = cli(*args[1:], "--device", "cpu")
    assert made.exit_code == 0, made.output
    assert "batch size 8" in made.output and "lr 1e-07 .. 1" in made.output


def test_lr_find_refuses_its_default_plot_file_before_sweeping_and_takes_one_optimizer_name(
        cli, objective_ref: str, tmp_cwd: Path) -> None:
    from tuner.lrfind import lr_find

    (tmp_cwd / "lr-find-synthetic.png").mkdir()  # the default plot file, named after the objective
    refused = cli("lr-find", "--objective", objective_ref, "--repeats", "1", "--device", "cpu")
    assert refused.exit_code == 1 and "is a folder" in refused.output and "LR range test on" not in refused.output
    misspelt = cli("spaces", "calibrate", "default", "--objective", objective_ref, "--optimizer", "adamz")
    assert misspelt.exit_code == 1 and "Unknown optimizer 'adamz'" in misspelt.output, misspelt.output
    assert "sweeps it all the same" not in misspelt.output
    assert list(lr_find(objective_ref, "adam", repeats=1, device="cpu").curves) == ["adam"]


def test_a_batch_size_larger_than_the_training_set_is_said(cli, objective_ref: str, tmp_cwd: Path) -> None:
    found = cli("lr-find", "--objective", objective_ref, "--optimizer", "adam", "--batch-size", "100000",
                "--repeats", "1", "--device", "cpu")
    assert found.exit_code == 0, found.output
    assert "(not 100000: the training set has " in found.output


def test_lr_find_and_calibrate_take_the_tabular_task_and_print_it_in_their_commands(cli, tmp_cwd: Path) -> None:
    """30 integer-coded classes read as regression; a study could say otherwise (task:), lr-find could not."""
    import shlex

    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["y"] = (np.abs(x[:, 0]) * 10).astype(int) % 30
    frame.to_csv(tmp_cwd / "many.csv", index=False)
    found = cli("lr-find", "--objective", "tabular", "--data", "many.csv", "--target", "y", "--task",
                "classification", "--optimizer", "adam", "--repeats", "1", "--device", "cpu")
    assert found.exit_code == 0, found.output
    line = next(x for x in found.output.splitlines() if x.startswith("a space with these ranges: "))
    args = shlex.split(line.removeprefix("a space with these ranges: "))
    assert args[args.index("--task") + 1] == "classification", args
    made = cli(*args[1:], "--device", "cpu")
    assert made.exit_code == 0, made.output
    use = next(x for x in made.output.splitlines() if x.startswith("use it: "))
    assert "--task classification" in use, use


def test_a_batch_that_runs_out_of_memory_is_swept_smaller_and_said(tmp_path: Path) -> None:
    """The space's middle batch size ran out of memory, and the test (and with it a study's calibrate: true)
    failed with the bare error, though smaller batch sizes train."""
    from conftest import SLOW_OBJECTIVE

    from tuner.errors import ConfigError as Refused
    from tuner.spaces import SearchSpace

    path = tmp_path / "objectives.py"
    path.write_text(SLOW_OBJECTIVE)  # its "oom" objective fails training batches over 16 rows as CUDA would
    space = SearchSpace.from_dict({"optimizer": {"adam": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}},
                                   "batch_size": {"choices": [8, 16, 32, 64, 128]}})  # the middle: 32
    result = lr_find(f"{path}:oom", space=space, repeats=1, steps=40, device="cpu")
    assert result.batch_size == 16 and result.curves["adam"].found
    assert result.notes and result.notes[0].startswith("batch size 32 ran out of memory on cpu: the test ran at 16")
    assert result.summary()["notes"] == result.notes
    with pytest.raises(Refused, match="ran out of memory on cpu at batch size 32: give it a smaller --batch-size"):
        lr_find(f"{path}:oom", space=space, batch_size=32, repeats=1, steps=40, device="cpu")


def test_an_interrupted_calibration_says_no_study_was_created(objective_ref: str, space_file: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during `study create --calibrate`'s LR range test printed "interrupted" alone: the study does not
    exist yet, so `study run` (the usual way on) has nothing to resume."""
    from conftest import study_names_in

    import tuner.lrfind

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner.lrfind, "lr_find", interrupted)
    db = tmp_path / "c.db"
    done = CliRunner().invoke(app, ["study", "create", "--objective", objective_ref, "--space", str(space_file),
                                    "--calibrate", "--n-trials", "2", "--epochs", "1", "--storage", f"sqlite:///{db}",
                                    "--name", "c"])
    said = " ".join(done.output.split())
    assert done.exit_code == 130, said
    assert "interrupted; no study was created (it was being prepared, its LR range test running): the same " \
           "command starts again" in said and "study run" not in said
    assert study_names_in(db) == []
