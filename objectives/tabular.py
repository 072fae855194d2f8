"""Any CSV file with a named target column: ``--objective tabular --data file.csv --target label``.

Classification or regression is detected from the target (pass ``task`` to force one); features are
standardised; the model is an MLP with dropout. Classification is scored by accuracy, regression by R^2.
"""

from torch import nn

from tuner.objectives import Dataset, Objective, tabular_csv


def objective(data: str, target: str, task: str = "auto", hidden: int = 64) -> Objective:
    # Read now: a missing column or an empty file is reported before any study exists.
    dataset = tabular_csv(data, target, task)

    def build_model(d: Dataset) -> nn.Module:
        return nn.Sequential(
            nn.Linear(d.n_features, hidden), nn.ReLU(), nn.Dropout(0.0),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.0),
            nn.Linear(hidden, d.n_classes or 1),
        )

    return Objective(
        f"tabular:{data}", load_data=lambda: dataset, build_model=build_model,
        metric="accuracy" if dataset.n_classes else "r2",
        description="a CSV file with a target column (classification or regression)",
    )
