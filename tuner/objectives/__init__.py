"""Objectives: the data, model, loss and metric a study tunes on."""

from tuner.objectives._base import Dataset, Metric, Objective, get_metric, list_metrics
from tuner.objectives._data import cache_dir, from_arrays, mnist1d, split_arrays, standardize, tabular_csv
from tuner.objectives._loader import list_objectives, load_objective

__all__ = [
    "Dataset",
    "Metric",
    "Objective",
    "cache_dir",
    "from_arrays",
    "get_metric",
    "list_metrics",
    "list_objectives",
    "load_objective",
    "mnist1d",
    "split_arrays",
    "standardize",
    "tabular_csv",
]
