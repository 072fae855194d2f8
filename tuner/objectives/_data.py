"""Dataset helpers for objectives: MNIST-1D (generated and cached), scikit-learn's sets, CSV files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from tuner.errors import DataError
from tuner.objectives._base import Dataset

__all__ = ["cache_dir", "mnist1d", "split_arrays", "from_arrays", "tabular_csv"]

VAL_FRACTION = 0.2
SPLIT_SEED = 0


def cache_dir() -> Path:
    """``$TUNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tuner``, else ``~/.cache/tuner``."""
    if os.environ.get("TUNER_CACHE_DIR"):
        return Path(os.environ["TUNER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tuner"


def mnist1d(seed: int = 42) -> Dataset:
    """MNIST-1D as in the paper (4000 train / 1000 test, length 40), generated offline by the ``mnist1d``
    package and cached. The validation split is 20% of the 4000 training samples; the 1000 test samples
    are kept for the final test metric."""
    path = cache_dir() / f"mnist1d-seed{seed}.npz"
    arrays = None
    if path.exists():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            arrays = None  # a torn cache file is regenerated
    if arrays is None:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.seed = seed
        d = make_dataset(args)
        arrays = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    # The reference protocol: a seeded torch permutation, the first 20% held out for validation.
    x, y = arrays["x"], arrays["y"]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED)).numpy()
    n_val = int(len(x) * VAL_FRACTION)
    val, train = perm[:n_val], perm[n_val:]
    return from_arrays(x[train], y[train], x[val], y[val], arrays["x_test"], arrays["y_test"], n_classes=10)


def split_arrays(x: np.ndarray, y: np.ndarray, fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED,
                 stratify: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits off ``fraction`` of the rows (seeded); returns (x_keep, y_keep, x_out, y_out)."""
    if len(x) < 2:
        raise DataError(f"Need at least 2 rows to split off a validation set; got {len(x)}.")
    from sklearn.model_selection import train_test_split

    strat = y if stratify and _can_stratify(y, fraction) else None
    x_keep, x_out, y_keep, y_out = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=strat)
    return x_keep, y_keep, x_out, y_out


def _can_stratify(y: np.ndarray, fraction: float) -> bool:
    _, counts = np.unique(y, return_counts=True)
    return counts.min() >= 2 and len(counts) <= fraction * len(y)


def from_arrays(x_tr, y_tr, x_val, y_val, x_te=None, y_te=None, n_classes: int | None = None) -> Dataset:
    def xs(a):
        return None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float32))

    def ys(a):
        if a is None:
            return None
        if n_classes:
            labels = np.asarray(a)
            if labels.dtype.kind == "f" and not np.isfinite(labels).all():
                raise DataError(f"from_arrays: n_classes={n_classes} says the targets are class labels, but "
                                f"{int((~np.isfinite(labels)).sum())} of them are missing (NaN or inf).")
            if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
                raise DataError(f"from_arrays: n_classes={n_classes} says the targets are class labels, but they "
                                f"hold fractions (such as {labels[labels != np.round(labels)][0]:g}): give integer "
                                f"labels, or n_classes=None for regression targets.")
            return torch.as_tensor(labels.astype(np.int64))
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    return Dataset(xs(x_tr), ys(y_tr), xs(x_val), ys(y_val), xs(x_te), ys(y_te), n_classes)


def standardize(x_tr: np.ndarray, *others: np.ndarray | None) -> list[np.ndarray | None]:
    """Standardises features with statistics of the training split only."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    return [scaler.transform(x_tr)] + [None if o is None else scaler.transform(o) for o in others]


_DECIMAL_COMMA = re.compile(r"(^|;)\s*-?\d+,\d+\s*(;|$)")


def _csv_format(path: Path) -> dict[str, str]:
    """The separator (and decimal mark) of a CSV file whose header has no comma but a semicolon, tab or bar: the
    way spreadsheets save CSV in many locales ("a;b;target", with "1,5" for 1.5 where the separator is ";")."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if b"\0" in head:
        raise DataError(f"{path}: not a CSV file: it holds binary data (NUL bytes), not text.")
    lines = head.decode("utf-8", errors="replace").splitlines()[:50]
    header = lines[0] if lines else ""
    if "," in header or not any(sep in header for sep in ";\t|"):
        return {}
    sep = max(";\t|", key=header.count)
    if sep == ";" and any(_DECIMAL_COMMA.search(line) for line in lines[1:]):
        return {"sep": sep, "decimal": ","}
    return {"sep": sep}


def tabular_csv(path: str | Path, target: str, task: str = "auto") -> Dataset:
    """A CSV file with a named target column.

    Classification when the target is text, bool, or has at most 20 distinct integer values (``task``
    overrides); string feature columns are one-hot encoded and all features are standardised with the
    training split's statistics. Splits: 20% test, then 20% of the rest for validation (stratified).
    """
    import pandas as pd

    from tuner._files import check_csv_file

    path = check_csv_file(path)
    form = _csv_format(path)
    try:
        try:
            frame = pd.read_csv(path, skipinitialspace=True, **form)
        except UnicodeDecodeError:  # not UTF-8: a spreadsheet's Windows (western European) encoding
            frame = pd.read_csv(path, skipinitialspace=True, encoding="cp1252", **form)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the CSV file is empty.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: cannot read as CSV: the text is neither UTF-8 nor Windows-1252. Save it as "
                        f"UTF-8.") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot parse as CSV: {exc}") from None
    # "a, b, target" and "target ," name the columns a, b and target
    frame.columns = [str(c).strip() for c in frame.columns]
    target = target.strip()
    if target not in frame.columns:
        from tuner.errors import unknown_name_message

        raise DataError(f"{path}: " + unknown_name_message("target column", target, map(str, frame.columns)))
    if len(frame) == 0:
        raise DataError(f"{path}: the CSV file has a header but no rows.")
    y_raw = frame.pop(target)
    if frame.shape[1] == 0:
        raise DataError(f"{path}: there are no feature columns besides the target {target!r}.")
    if y_raw.isna().any():
        raise DataError(f"{path}: the target column {target!r} has {int(y_raw.isna().sum())} missing values.")
    nan_cols = [f"{c} ({int(n)})" for c, n in frame.isna().sum().items() if n]
    if nan_cols:
        raise DataError(f"{path}: missing values in feature columns: {', '.join(nan_cols)}. "
                        f"Fill or drop them before tuning.")
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    infinite = np.isinf(frame[numeric].to_numpy(dtype=float)).sum(axis=0) if numeric else []
    inf_cols = [f"{c} ({int(n)})" for c, n in zip(numeric, infinite, strict=True) if n]
    if inf_cols:
        raise DataError(f"{path}: infinite values in feature columns: {', '.join(inf_cols)}. Replace or drop "
                        f"them before tuning.")
    if task not in ("auto", "classification", "regression"):
        raise DataError(f"Unknown task {task!r}. Valid: auto, classification, regression.")
    if task == "auto":
        numeric_int = pd.api.types.is_integer_dtype(y_raw) or pd.api.types.is_bool_dtype(y_raw)
        text = not pd.api.types.is_numeric_dtype(y_raw)
        task = "classification" if text or (numeric_int and y_raw.nunique() <= 20) else "regression"
    # Text columns are object dtype in pandas 2 and "str" dtype in pandas 3: test for "not numeric or bool".
    text_cols = [c for c in frame.columns if not (pd.api.types.is_numeric_dtype(frame[c])
                                                  or pd.api.types.is_bool_dtype(frame[c]))]
    features = pd.get_dummies(frame, columns=text_cols, dtype=np.float32) if text_cols else frame
    x = features.to_numpy(dtype=np.float32)
    if task == "classification":
        classes, y = np.unique(y_raw.to_numpy(), return_inverse=True)
        n_classes = len(classes)
        if n_classes < 2:
            raise DataError(f"{path}: the target column {target!r} has a single class; nothing to learn.")
    else:
        y = y_raw.to_numpy(dtype=np.float32)
        n_classes = None
        infinite_y = int(np.isinf(y).sum())
        if infinite_y:  # the scaling below would spread it to every row
            raise DataError(f"{path}: the target column {target!r} has {infinite_y} infinite value(s); replace or "
                            f"drop them before tuning.")
        if np.ptp(y) == 0:  # every r2 would be a division by zero
            raise DataError(f"{path}: the target column {target!r} has a single value ({y[0]:g}); nothing to "
                            f"learn.")
    if len(x) < 5:
        raise DataError(f"{path}: {len(x)} rows are too few to split into train, validation and test.")
    stratify = task == "classification"
    x_rest, y_rest, x_te, y_te = split_arrays(x, y, 0.2, stratify=stratify)
    x_tr, y_tr, x_val, y_val = split_arrays(x_rest, y_rest, 0.2, stratify=stratify)
    x_tr, x_val, x_te = standardize(x_tr, x_val, x_te)
    if n_classes is None:
        mean, std = float(y_tr.mean()), float(y_tr.std()) or 1.0
        y_tr, y_val, y_te = ((v - mean) / std for v in (y_tr, y_val, y_te))
    return from_arrays(x_tr, y_tr, x_val, y_val, x_te, y_te, n_classes=n_classes)
