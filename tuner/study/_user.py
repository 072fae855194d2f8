"""The user's own ``train_fn`` (``tuner.tune``) in worker processes: a reference that another process can
import, and the worker's run on the trial engine."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError

__all__ = ["function_ref", "load_function", "run_user_worker"]


def function_ref(fn: Callable[..., Any]) -> dict[str, str]:
    """Where another process finds ``fn``: its module (or, for the script being run, its file) and its
    qualified name. A lambda, a nested function or an object without a module is refused, naming the fix."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(f"workers need train_fn to be importable: a function defined at the top level of a "
                          f"module or script (got {qualname or type(fn).__name__!r}); or use workers=1.")
    if module in ("__main__", "__mp_main__"):
        main = sys.modules.get(module)
        path = getattr(main, "__file__", None)
        if not path:
            raise ConfigError("workers need train_fn to be importable: define it in a .py file (an interactive "
                              "session or notebook cannot be imported by another process); or use workers=1.")
        ref = {"path": str(Path(path).resolve()), "qualname": qualname}
        _refuse_guarded(path, qualname.split(".")[0])
    else:
        ref = {"module": module, "qualname": qualname}
    if load_function(ref) is not fn:
        raise ConfigError(f"workers need train_fn to be importable: {module}.{qualname} is not this function.")
    return ref


def _refuse_guarded(path: str, name: str) -> None:
    """A script's function defined only under ``if __name__ == "__main__":`` is not there when a worker imports
    the script (that block does not run): refused, naming the fix."""
    import ast

    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return

    def defines(nodes: list[ast.stmt]) -> bool:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
                return True
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    return True
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                    return True
        return False

    if defines(tree.body):
        return
    for node in tree.body:
        if (isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
                and defines(list(ast.walk(node)))):  # type: ignore[arg-type]
            raise ConfigError(f"workers need train_fn to be importable: {name} is defined under "
                              f"`if __name__ == \"__main__\":` in {path} (line {node.lineno}), which the workers do "
                              f"not run when they import the script; define it above that block, or use workers=1.")


def load_function(ref: dict[str, str]) -> Callable[..., Any]:
    if "module" in ref:
        target: Any = importlib.import_module(ref["module"])
    else:
        path = ref["path"]
        # multiprocessing has imported the parent's script as __mp_main__ in a spawned worker: use it, so
        # its top level does not run twice.
        target = next((m for m in (sys.modules.get("__main__"), sys.modules.get("__mp_main__"))
                       if m is not None and getattr(m, "__file__", None)
                       and os.path.realpath(m.__file__) == os.path.realpath(path)), None)
        if target is None:
            spec = importlib.util.spec_from_file_location("__tuner_train_fn__", path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"{path}: cannot import the file that defines train_fn.")
            target = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(target)
    for part in ref["qualname"].split("."):
        target = getattr(target, part)
    return target


def run_user_worker(index: int, name: str, url: str, job: dict[str, Any], threads: int | None) -> tuple[int, str]:
    """One ``tune(workers=N)`` process: the user's function on the trial engine, with a sampler seed of its
    own, until the budget or the supervisor's ``deadline`` (its start-up counts, as for ``run_study``); returns
    how many trials it ran and what stopped it (budget, timeout)."""
    import optuna
    import torch

    from tuner.spaces import SearchSpace
    from tuner.study._engine import RunPlan, UserExecutor, run_trials
    from tuner.study._record import StudyKey
    from tuner.study._samplers import build_pruner, build_sampler
    from tuner.study._storage import open_storage

    if threads:
        torch.set_num_threads(threads)
    train_fn = load_function(job["ref"])
    storage = open_storage(url)
    existing = optuna.load_study(study_name=name, storage=storage)
    n_existing = len(existing.get_trials(deepcopy=False))
    seed = (job.get("sampler_seed", job["seed"]) * 1_000_003 + 7919 * (index + 1) + n_existing) % 2**31
    objectives = job.get("objectives") or ["value"]
    context = {"seed": seed, "epochs": job["epochs"], "multi": len(objectives) > 1}
    study = optuna.load_study(study_name=name, storage=storage, sampler=build_sampler(job["sampler"], context),
                              pruner=build_pruner(job["pruner"], {"seed": job["seed"], "epochs": job["epochs"]}))
    space = SearchSpace.from_dict(study.user_attrs[StudyKey.SPACE], name=job["space_name"],
                                  source=f"study {name!r}")
    deadline = job.get("deadline")
    timeout = job["timeout"] if deadline is None else max(0.0, deadline - time.time())
    plan = RunPlan(name=name, storage_url=url, space=space, epochs=job["epochs"], seed=job["seed"],
                   n_trials=job["n_trials"], timeout=timeout, pruner_name=job["pruner_name"],
                   sampler_name=job["sampler_name"], max_consecutive_failures=job["max_consecutive_failures"],
                   objectives=objectives, started=job.get("started"))
    run = run_trials(study, plan, UserExecutor(train_fn))
    return len(run.outcomes), run.stopped_by
