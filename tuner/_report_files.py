"""The names of the files a report folder holds, without the libraries that draw them: a folder is checked
(``study report -o``) before matplotlib and PyTorch load."""

from __future__ import annotations

__all__ = ["PLOTS", "REPORT_FILES", "is_report_folder"]

PLOTS: dict[str, str] = {
    "pareto": "Pareto front",
    "history": "Optimization history",
    "importance": "Hyperparameter importance",
    "parallel": "Parallel coordinates",
    "slices": "Slice plots",
    "lr_batch": "Learning rate x batch size",
    "curves": "Learning curves",
    "optimizers": "Per-optimizer comparison",
    "schedule": "Learning-rate schedule of the recommended config",
}

REPORT_FILES = ("report.html", "report.md", "recommended.yaml", "narrowed-space.yaml")


def is_report_folder(names: list[str]) -> bool:
    """A report written before reports carried their marker file: exactly the files a report writes, its
    three main files among them. A folder of the user's with a report.html and screenshots is not one."""
    known = set(REPORT_FILES) | {f"{name}.png" for name in PLOTS}
    return set(names) <= known and {"report.html", "report.md", "recommended.yaml"} <= set(names)
