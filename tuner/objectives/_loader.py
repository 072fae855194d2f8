"""Finds an objective by built-in name, ``path/to/file.py:attr`` or ``package.module:attr``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from tuner._builtin import builtin_names, missing_objective_file, split_objective_ref, unknown_objective
from tuner._files import read_text
from tuner.errors import ConfigError, TunerError, unknown_name_message
from tuner.objectives._base import Objective

__all__ = ["load_objective", "list_objectives"]

OBJECTIVE_MODULE_PREFIX = "tuner_objective_"  # the module of an objective file loaded by its path


def list_objectives() -> dict[str, Path]:
    """The built-in objectives, by name (``mnist1d-cnn`` is ``objectives/mnist1d_cnn.py``)."""
    return builtin_names("objectives", (".py",))


def _frames(tb: Any) -> Any:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _import_file(path: Path) -> Any:
    module_name = f"{OBJECTIVE_MODULE_PREFIX}{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        # Compiled from the source every time: no __pycache__ is written beside the user's file, and an edit
        # made within the second of the last run (same size, same mtime) is never hidden by a cached .pyc.
        source = read_text(path, what="objective file", limit=16 << 20)
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the user's own objective
    except ConfigError as exc:
        del sys.modules[module_name]
        lines = [tb.tb_lineno for tb in _frames(exc.__traceback__) if tb.tb_frame.f_code.co_filename == str(path)]
        if not lines:
            raise
        raise ConfigError(f"{path}:{lines[-1]}: {exc}") from exc
    except Exception as exc:
        del sys.modules[module_name]
        if isinstance(exc, SyntaxError) and exc.lineno:
            where = f"{path}:{exc.lineno}"
        else:  # the file's own line that raised (an import, a 1/0), not the library's deeper down
            lines = [tb.tb_lineno for tb in _frames(exc.__traceback__) if tb.tb_frame.f_code.co_filename == str(path)]
            where = f"{path}:{lines[-1]}" if lines else str(path)
        raise ConfigError(f"{where}: importing the objective file failed: {type(exc).__name__}: {exc}") from exc
    return module


def load_objective(ref: str, **options: Any) -> Objective:
    """Loads and instantiates an objective.

    ``ref`` is a built-in name (``tuner objectives list``), ``path/file.py[:attr]`` or ``module:attr``.
    The attribute is an ``Objective`` or a callable returning one; ``options`` (e.g. ``data`` and
    ``target`` for ``tabular``) are passed to the callable.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError("The objective must be a built-in name, path/to/file.py:attr or module:attr.")
    target, attr = split_objective_ref(ref)
    builtin = list_objectives()
    if target in builtin:
        module = _import_file(builtin[target])
    elif target.endswith(".py") or "/" in target:
        message = missing_objective_file(ref)
        if message:
            raise ConfigError(message)
        module = _import_file(Path(target))
    elif ":" in ref:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` would: a module next to the user is found
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"Cannot import objective module {target!r}: {exc}") from None
        except Exception as exc:
            raise ConfigError(f"Importing objective module {target!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        raise ConfigError(unknown_objective(ref, bare_only=False))
    if not hasattr(module, attr):
        public = [n for n, v in vars(module).items() if not n.startswith("_")
                  and (isinstance(v, Objective) or (callable(v) and not isinstance(v, type)
                                                     and getattr(v, "__module__", None) == module.__name__))]
        if not public:  # nothing there to name: say what the file needs
            raise ConfigError(f"{ref}: the module has no {attr!r}: define `{attr} = Objective(...)` in it (or a "
                              f"function that returns one), or name another with file.py:NAME.")
        raise ConfigError(f"{ref}: " + unknown_name_message("attribute", attr, public))
    return _instantiate(getattr(module, attr), ref, options)


def _returns_objective(fn: Any) -> bool:
    """Whether a function is annotated to return an ``Objective`` (read without evaluating anything)."""
    annotation = getattr(fn, "__annotations__", {}).get("return")
    if annotation is None:
        return False
    if isinstance(annotation, str):
        return annotation.strip("'\" ").split(".")[-1] == "Objective"
    return isinstance(annotation, type) and issubclass(annotation, Objective)


def _describe(obj: Any) -> str:
    if inspect.isbuiltin(obj) or type(obj).__name__ in ("builtin_function_or_method", "method-wrapper"):
        return "a built-in function"
    if inspect.isclass(obj):
        return f"the class {obj.__name__}"
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return "a function not annotated to return an Objective"
    return type(obj).__name__


def _instantiate(obj: Any, ref: str, options: dict[str, Any]) -> Objective:
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(obj, Objective):
        if options:
            raise ConfigError(f"Objective {ref!r} takes no options; got {', '.join(sorted(options))}.")
        return obj
    # Nothing is called unless it declares that it builds an Objective: a reference such as os:abort,
    # os:fork, builtins:breakpoint or pdb:set_trace is refused, not run. (Naming a module imports it, and its
    # top-level code runs, as `python -c "import module"` would.)
    if not (inspect.isfunction(obj) and _returns_objective(obj)):
        raise ConfigError(f"{ref}: expected an Objective, or a function annotated `-> Objective` that builds "
                          f"one; got {_describe(obj)}. It was not called.")
    params = inspect.signature(obj).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not accepts_any]
    if unknown:
        raise ConfigError(f"Objective {ref!r} takes no option {unknown[0]!r}. "
                          f"Valid options: {', '.join(params) or 'none'}.")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in options]
    if missing:
        flags = " ".join(f"--{m} ..." for m in missing)
        raise ConfigError(f"Objective {ref!r} needs option {missing[0]!r} (e.g. {flags}).")
    try:
        result = obj(**options)
    except TunerError:
        raise
    except Exception as exc:
        raise ConfigError(f"Objective {ref!r} failed to build: {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Objective):
        raise ConfigError(f"{ref}: the function returned {type(result).__name__}, not an Objective.")
    result.options = options or None
    return result
