"""scikit-learn's 8x8 handwritten digits (1797 images) with a two-layer MLP."""

from functools import lru_cache

from torch import nn

from tuner.objectives import Dataset, Objective, from_arrays, split_arrays, standardize


@lru_cache(maxsize=1)
def load_data() -> Dataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x_rest, y_rest, x_test, y_test = split_arrays(x, y, 0.2, stratify=True)
    x_train, y_train, x_val, y_val = split_arrays(x_rest, y_rest, 0.2, stratify=True)
    x_train, x_val, x_test = standardize(x_train, x_val, x_test)
    return from_arrays(x_train, y_train, x_val, y_val, x_test, y_test, n_classes=10)


def build_model(data: Dataset) -> nn.Module:
    return nn.Sequential(
        nn.Linear(data.n_features, 128), nn.ReLU(), nn.Dropout(0.0),
        nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.0),
        nn.Linear(64, data.n_classes),
    )


objective = Objective(
    "digits-mlp", load_data=load_data, build_model=build_model, metric="accuracy",
    description="scikit-learn digits (8x8 images, 10 classes), 64 -> 128 -> 64 -> 10 MLP",
)
