"""Built-in and user objectives: loading, data splits, models, and CSV data checks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tuner.errors import ConfigError, DataError
from tuner.objectives import Objective, cache_dir, list_objectives, load_objective, tabular_csv
from tuner.study import StudySpec, create_or_join, prepare
from tuner.train import Trainer

BUILTIN = ("mnist1d-mlp", "mnist1d-cnn", "digits-mlp", "tabular")


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def classification_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 100
    a, b = rng.normal(size=n), rng.normal(size=n)
    return _csv(tmp_path / "cls.csv", pd.DataFrame({"a": a, "b": b, "label": (a + b > 0).astype(int)}))


@pytest.fixture
def regression_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    n = 100
    a, b = rng.normal(size=n), rng.normal(size=n)
    return _csv(tmp_path / "reg.csv", pd.DataFrame({"a": a, "b": b, "price": 3 * a - b + 10.0}))


# -- built-in objectives --------------------------------------------------------------------------------

def test_builtin_objectives_are_listed():
    listed = list_objectives()
    assert set(BUILTIN) <= set(listed)
    for name, path in listed.items():
        assert path.is_file() and path.suffix == ".py", name


def _load_builtin(name: str, tmp_path: Path) -> Objective:
    if name != "tabular":
        return load_objective(name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    frame = pd.DataFrame(x, columns=["f1", "f2", "f3"]).assign(label=(x[:, 0] > 0).astype(int))
    return load_objective("tabular", data=str(_csv(tmp_path / "t.csv", frame)), target="label")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_objective_loads_and_its_model_has_dropout(name: str, tmp_path: Path):
    objective = _load_builtin(name, tmp_path)
    assert isinstance(objective, Objective)
    assert objective.metric == "accuracy" and objective.direction == "maximize"
    data = objective.load_data()
    assert data.n_classes is not None and data.n_classes >= 2
    assert len(data.x_train) > len(data.x_val) > 0
    assert data.x_test is not None and len(data.x_test) > 0
    model = objective.build_model(data)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts, f"{name}: the tuned dropout rate would have nothing to act on"
    model.eval()
    with torch.no_grad():
        out = model(data.x_val[:7])
    assert out.shape == (7, data.n_classes)
    assert torch.isfinite(out).all()


def test_mnist1d_splits_and_cache():
    objective = load_objective("mnist1d-mlp")
    data = objective.load_data()
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (3200, 800, 1000)
    assert data.input_shape == (40,)
    assert data.n_classes == 10
    for y in (data.y_train, data.y_val, data.y_test):
        assert y.dtype == torch.int64
        assert set(y.unique().tolist()) == set(range(10))
    assert data.x_train.dtype == torch.float32
    # generated once into the session's private cache, and shared by the CNN objective
    assert (cache_dir() / "mnist1d-seed42.npz").is_file()
    assert not str(cache_dir()).startswith(str(Path.home() / ".cache"))
    cnn_data = load_objective("mnist1d-cnn").load_data()
    assert torch.equal(cnn_data.x_test, data.x_test)
    assert torch.equal(cnn_data.y_train, data.y_train)


def test_mnist1d_cnn_matches_the_paper_architecture():
    objective = load_objective("mnist1d-cnn")
    model = objective.build_model(objective.load_data())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in convs] == [25, 25, 25]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3]
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linear] == [(125, 10)]


# -- loading by reference ----------------------------------------------------------------------------

def test_load_by_path_with_and_without_attribute(objective_file: Path):
    by_attr = load_objective(f"{objective_file}:objective")
    assert by_attr.name == "synthetic"
    assert load_objective(str(objective_file)) is by_attr  # ':objective' is the default attribute


def test_load_by_path_missing_attribute_lists_public_names(objective_file: Path):
    with pytest.raises(ConfigError) as info:
        load_objective(f"{objective_file}:objectiv")
    message = str(info.value)
    assert "objectiv" in message and "build_model" in message and "Did you mean 'objective'?" in message


def test_load_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_objective("no/such/file.py:objective")


def test_load_by_module_and_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objective_file: Path):
    module = tmp_path / "tuner_test_user_objectives.py"
    module.write_text(textwrap.dedent(
        f"""
        import importlib.util

        spec = importlib.util.spec_from_file_location("_synthetic", {str(objective_file)!r})
        _mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_mod)

        ready = _mod.objective
        from tuner.objectives import Objective

        def make(hidden=8) -> Objective:
            return Objective(f"made-{{hidden}}", load_data=_mod.load_data, build_model=_mod.build_model)

        def unannotated(hidden=8):
            raise SystemExit("called")
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_objective("tuner_test_user_objectives:ready").name == "synthetic"
    made = load_objective("tuner_test_user_objectives:make", hidden=4)
    assert made.name == "made-4"
    assert made.options == {"hidden": 4}
    with pytest.raises(ConfigError, match="takes no option 'depth'"):
        load_objective("tuner_test_user_objectives:make", depth=2)
    with pytest.raises(ConfigError, match="takes no options"):
        load_objective("tuner_test_user_objectives:ready", hidden=2)
    with pytest.raises(ConfigError, match="Cannot import objective module"):
        load_objective("tuner_no_such_module_xyz:objective")
    # Only an Objective, or a function that declares it builds one, is used; nothing else is called.
    with pytest.raises(ConfigError, match="annotated `-> Objective`.*not annotated.*It was not called"):
        load_objective("tuner_test_user_objectives:unannotated")


def test_unknown_objective_lists_valid_names_and_the_closest():
    with pytest.raises(ConfigError) as info:
        load_objective("mnist1d-cn")
    message = str(info.value)
    assert message.startswith("Unknown objective 'mnist1d-cn'. Valid: ")
    for name in BUILTIN:
        assert name in message
    assert "Did you mean 'mnist1d-cnn'?" in message


def test_tabular_needs_its_options():
    with pytest.raises(ConfigError, match="needs option 'data'"):
        load_objective("tabular")


# -- tabular CSV ---------------------------------------------------------------------------------------

def test_tabular_integer_target_is_classification(classification_csv: Path):
    data = tabular_csv(classification_csv, "label")
    assert data.n_classes == 2
    assert data.y_train.dtype == torch.int64
    assert data.input_shape == (2,)
    # 20% test, then 20% of the rest for validation
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (64, 16, 20)
    # standardised with the training split's statistics
    assert torch.allclose(data.x_train.mean(0), torch.zeros(2), atol=1e-5)
    objective = load_objective("tabular", data=str(classification_csv), target="label")
    assert objective.metric == "accuracy"


def test_tabular_float_target_is_regression(regression_csv: Path):
    data = tabular_csv(regression_csv, "price")
    assert data.n_classes is None
    assert data.y_train.dtype == torch.float32
    assert abs(float(data.y_train.mean())) < 1e-4  # targets standardised too
    objective = load_objective("tabular", data=str(regression_csv), target="price")
    assert objective.metric == "r2" and objective.direction == "maximize"
    model = objective.build_model(data)
    assert model(data.x_val).shape == (len(data.x_val), 1)


def test_tabular_many_integer_values_are_regression_and_task_overrides(tmp_path: Path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(size=80), "y": np.arange(80) % 40})
    path = _csv(tmp_path / "ints.csv", frame)
    assert tabular_csv(path, "y").n_classes is None  # 40 distinct integers
    assert tabular_csv(path, "y", task="classification").n_classes == 40
    with pytest.raises(DataError, match="Unknown task"):
        tabular_csv(path, "y", task="ranking")


def test_tabular_text_target_and_text_features(tmp_path: Path):
    rng = np.random.default_rng(3)
    n = 60
    frame = pd.DataFrame({
        "a": rng.normal(size=n),
        "color": rng.choice(["red", "green", "blue"], n),
        "kind": rng.choice(["cat", "dog"], n),
    })
    data = tabular_csv(_csv(tmp_path / "text.csv", frame), "kind")
    assert data.n_classes == 2
    # 'a' plus one column per colour
    assert data.input_shape == (4,)
    assert torch.isfinite(data.x_train).all()


def test_tabular_missing_target_names_file_and_columns(classification_csv: Path):
    with pytest.raises(DataError) as info:
        tabular_csv(classification_csv, "lable")
    message = str(info.value)
    assert str(classification_csv) in message
    assert "Valid: a, b, label." in message
    assert "Did you mean 'label'?" in message


def test_tabular_reads_semicolon_tab_and_spaced_csv_files_as_their_comma_twin(classification_csv: Path,
                                                                             tmp_path: Path):
    """A spreadsheet's ";"-separated CSV with decimal commas was one column named "a;b;label" ("unknown target
    column 'label'. Valid: a;b;label"); "a, b, label" named its target " label"."""
    frame = pd.read_csv(classification_csv)
    expected = tabular_csv(classification_csv, "label")
    semicolon = tmp_path / "semicolon.csv"
    semicolon.write_text("a;b;label\n" + "".join(f"{a:.6f};{b:.6f};{y}\n".replace(".", ",")
                                                 for a, b, y in frame.itertuples(index=False)))
    tab = tmp_path / "tab.tsv"
    tab.write_text(frame.to_csv(sep="\t", index=False))
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("a, b, label \n" + "".join(f"{a}, {b}, {y}\n" for a, b, y in frame.itertuples(index=False)))
    windows = tmp_path / "windows.csv"  # a spreadsheet's cp1252 file, with an umlaut in a column name
    windows.write_bytes(semicolon.read_text().replace("label", "Größe").encode("cp1252"))
    assert tabular_csv(windows, "Größe").n_classes == 2
    for path in (semicolon, tab, spaced):
        data = tabular_csv(path, "label")
        assert data.n_classes == 2 and data.input_shape == (2,), path
        assert torch.allclose(data.x_train, expected.x_train, atol=1e-4), path
        assert torch.equal(data.y_test, expected.y_test), path


def test_tabular_binary_and_undecodable_files_are_named_as_such(tmp_path: Path):
    """A picture given as --data was read as a CSV with one column ("Valid: \u2030PNG")."""
    picture = tmp_path / "img.csv"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    with pytest.raises(DataError, match=r"img\.csv: not a CSV file: it holds binary data \(NUL bytes\), not text\."):
        tabular_csv(picture, "label")
    garbled = tmp_path / "garbled.csv"
    garbled.write_bytes(b"a;label\n1;\x81\x8d\n")
    with pytest.raises(DataError, match=r"garbled\.csv: cannot read as CSV: the text is neither UTF-8 nor "
                                        r"Windows-1252\. Save it as UTF-8\."):
        tabular_csv(garbled, "label")


def test_tabular_empty_csv(tmp_path: Path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty") as info:
        tabular_csv(path, "label")
    assert str(path) in str(info.value)


def test_tabular_header_only_csv(tmp_path: Path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,label\n")
    with pytest.raises(DataError, match="header but no rows"):
        tabular_csv(path, "label")


def test_tabular_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="no such CSV file"):
        tabular_csv(tmp_path / "absent.csv", "label")


def test_tabular_nan_in_features(classification_csv: Path, tmp_path: Path):
    frame = pd.read_csv(classification_csv)
    frame.loc[[3, 7], "b"] = np.nan
    path = _csv(tmp_path / "nan.csv", frame)
    with pytest.raises(DataError, match=r"missing values in feature columns: b \(2\)"):
        tabular_csv(path, "label")
    with pytest.raises(DataError):
        load_objective("tabular", data=str(path), target="label")


def test_tabular_infinite_values_and_a_constant_target_are_refused_naming_the_column(regression_csv: Path,
                                                                                      tmp_path: Path):
    """An inf in a feature failed as scikit-learn's "Input X contains infinity"; one in a regression target
    spread through the scaling to every row ("282 non-finite values"); a constant target ran a study scored
    at r2 -1.6e11."""
    frame = pd.read_csv(regression_csv)
    features = frame.copy()
    features.loc[3, "a"], features.loc[4, "b"], features.loc[5, "b"] = np.inf, -np.inf, np.inf
    with pytest.raises(DataError, match=r"inf\.csv: infinite values in feature columns: a \(1\), b \(2\)\."):
        tabular_csv(_csv(tmp_path / "inf.csv", features), "price")
    target = frame.copy()
    target.loc[0, "price"] = np.inf
    with pytest.raises(DataError, match=r"the target column 'price' has 1 infinite value\(s\)"):
        tabular_csv(_csv(tmp_path / "inf_target.csv", target), "price")
    target["price"] = 3.5
    with pytest.raises(DataError, match=r"const\.csv: the target column 'price' has a single value \(3\.5\); "
                                        r"nothing to learn"):
        tabular_csv(_csv(tmp_path / "const.csv", target), "price")


def test_tabular_nan_in_target(classification_csv: Path, tmp_path: Path):
    frame = pd.read_csv(classification_csv)
    frame["label"] = frame["label"].astype(float)
    frame.loc[0, "label"] = np.nan
    with pytest.raises(DataError, match="target column 'label' has 1 missing values"):
        tabular_csv(_csv(tmp_path / "nan_target.csv", frame), "label")


def test_tabular_single_class_and_too_few_rows(tmp_path: Path):
    one_class = _csv(tmp_path / "one.csv", pd.DataFrame({"a": np.arange(20.0), "label": ["x"] * 20}))
    with pytest.raises(DataError, match="single class"):
        tabular_csv(one_class, "label")
    tiny = _csv(tmp_path / "tiny.csv", pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": [0, 1, 0]}))
    with pytest.raises(DataError, match="too few"):
        tabular_csv(tiny, "label")


def test_tabular_target_only_csv(tmp_path: Path):
    path = _csv(tmp_path / "target_only.csv", pd.DataFrame({"label": [0, 1] * 10}))
    with pytest.raises(DataError, match="no feature columns"):
        tabular_csv(path, "label")


# -- batch size against the data ----------------------------------------------------------------------

def test_batch_sizes_larger_than_data_are_left_out_and_none_left_fails_before_a_study_exists(
    tmp_path: Path, objective_ref: str, assert_nothing_written
):
    space = tmp_path / "big_batches.yaml"
    space.write_text("optimizer: adam\nbatch_size: {choices: [32, 512]}\n")
    db = tmp_path / "s.db"
    spec = StudySpec(objective=objective_ref, space=str(space), n_trials=2, epochs=1,
                     storage=f"sqlite:///{db}", device="cpu")
    prepared = prepare(spec)
    assert prepared.space.batch_size.fixed and prepared.space.batch_size.value == 32
    assert prepared.space_notes[0].startswith("batch sizes 512 left out: larger than the 128 training samples")
    space.write_text("optimizer: adam\nbatch_size: {choices: [256, 512]}\n")
    with pytest.raises(ConfigError) as info:
        create_or_join(prepare(spec))
    message = str(info.value)
    assert "(256, 512)" in message and "128 training samples" in message and str(space) in message
    assert not db.exists()
    assert_nothing_written(db)


def test_trainer_refuses_a_batch_larger_than_the_data(objective_ref: str):
    from tuner import TrainConfig

    trainer = Trainer(load_objective(objective_ref), device="cpu")
    trainer.check_batch_size(128)
    with pytest.raises(DataError, match="batch_size 129 is larger than the 128 training samples"):
        trainer.fit(TrainConfig(batch_size=129, epochs=1))


def test_mnist1d_validation_split_is_the_reference_protocol():
    """The first 20% of a seed-0 torch permutation of the 4000 training samples, as the plain-Optuna reference
    holds out, so that validation accuracies compare directly."""
    import torch
    from mnist1d.data import get_dataset_args, make_dataset

    from tuner.objectives import mnist1d

    raw = make_dataset(get_dataset_args())
    x = torch.tensor(raw["x"], dtype=torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    data = mnist1d()
    assert torch.equal(data.x_val, x[perm[:800]])
    assert torch.equal(data.x_train, x[perm[800:]])
    assert torch.equal(data.y_val, torch.tensor(raw["y"])[perm[:800]])


def test_a_dataset_with_non_finite_values_is_refused_before_any_trial():
    """NaN or inf in a split made every trial diverge, each recorded as a learning rate too high: the data is
    refused when the objective loads it, naming the split."""
    import torch

    from tuner.objectives import Dataset

    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match=r"The train split's inputs hold 1 non-finite value\(s\) \(NaN or inf\)"):
        Dataset(bad, y, x, y, n_classes=2)
    target = torch.randn(20)
    target[0] = float("inf")
    with pytest.raises(DataError, match=r"The validation split's targets hold 1 non-finite"):
        Dataset(x, torch.randn(20), x, target)
    Dataset(x, y, x, y, n_classes=2)  # finite: taken


def test_a_dataset_whose_splits_do_not_fit_together_is_refused_naming_the_split():
    """Each of these ran a study: validation inputs of another width failed every trial, (N, 1) labels scored
    every trial near 0.1 (broadcast to N x N in the accuracy), NumPy arrays failed on "has no attribute 'to'"
    and a test split without targets on len(None)."""
    from tuner.objectives import Dataset

    x, y = torch.randn(20, 8), torch.randint(0, 3, (20,))
    with pytest.raises(DataError, match=r"The validation split's inputs are shaped \(10,\) per sample, the train "
                                        r"split's \(8,\)"):
        Dataset(x, y, torch.randn(20, 10), y, n_classes=3)
    with pytest.raises(DataError, match=r"The validation split's class labels are shaped \(20, 1\): give one label "
                                        r"per sample, a 1-D tensor of 20"):
        Dataset(x, y, x, y[:, None], n_classes=3)
    with pytest.raises(DataError, match=r"The train split's inputs are ndarray, not a torch.Tensor: .*from_arrays"):
        Dataset(x.numpy(), y, x, y, n_classes=3)
    with pytest.raises(DataError, match=r"The test split's targets are NoneType, not a torch.Tensor"):
        Dataset(x, y, x, y, x_test=x, n_classes=3)
    Dataset(x, torch.randn(20, 1), x, torch.randn(20, 1))  # regression targets in a column: taken


def test_a_model_with_fewer_outputs_than_classes_is_refused_before_the_study(tmp_path: Path):
    """Seven outputs for ten classes: the study was created and every trial failed with 'Target 7 is out of
    bounds'."""
    from tuner.objectives import Dataset

    x, y = torch.randn(40, 8), torch.arange(40) % 10
    data = Dataset(x, y, x, y, n_classes=10)
    seven = Objective("seven", load_data=lambda: data, build_model=lambda d: nn.Linear(8, 7), metric="accuracy")
    with pytest.raises(ConfigError, match=r"gives 7 outputs per sample, but its data has 10 classes \(labels 0 to "
                                          r"9\): give the last layer 10 outputs"):
        Trainer(seven, device="cpu").check_model()


def test_the_tabular_task_is_a_study_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """30 integer-coded classes read as regression (auto: at most 20 distinct whole numbers are classes), and
    the objective's task could not be set from the command line, a spec or run_study()."""
    import json

    from typer.testing import CliRunner

    from tuner.cli import app

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["y"] = (np.abs(x[:, 0]) * 10).astype(int) % 30
    _csv(tmp_path / "many.csv", frame)
    url = f"sqlite:///{tmp_path / 't.db'}"
    base = ["study", "create", "--objective", "tabular", "--data", "many.csv", "--target", "y", "--n-trials", "1",
            "--epochs", "1", "--storage", url, "--device", "cpu", "--format", "json"]
    auto = CliRunner().invoke(app, [*base, "--name", "auto", "--no-run"])
    assert auto.exit_code == 0 and json.loads(auto.stdout)["metric"] == "r2", auto.output
    classes = CliRunner().invoke(app, [*base, "--name", "classes", "--task", "classification", "--no-run"])
    assert classes.exit_code == 0 and json.loads(classes.stdout)["metric"] == "accuracy", classes.output
    wrong = CliRunner().invoke(app, [*base, "--name", "x", "--task", "clasification"])
    assert wrong.exit_code == 1 and "--task: Input should be 'auto', 'classification' or 'regression'" in \
        wrong.output
    other = CliRunner().invoke(app, ["study", "create", "--objective", "digits-mlp", "--task", "regression",
                                     "--storage", url, "--name", "d"])
    assert other.exit_code == 1 and "Objective 'digits-mlp' takes no options; got task (--task)" in other.output
    no_target = CliRunner().invoke(app, ["study", "create", "--objective", "tabular", "--data", "many.csv",
                                         "--storage", url, "--name", "n"])  # the columns to choose from
    assert no_target.exit_code == 1 and "needs option 'target'" in no_target.output
    assert "many.csv: " + ", ".join(frame.columns) in " ".join(no_target.output.split()), no_target.output
    shown = CliRunner().invoke(app, ["objectives", "show", "tabular", "--data", "many.csv", "--target", "y",
                                     "--task", "classification", "--format", "json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["task"] == "classification", shown.output
