"""Where the built-in search spaces, objectives and study specs live.

A wheel carries them in ``tuner/_builtin/<folder>``; an editable install or a checkout reads the repository's
top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def builtin_dir(folder: str) -> Path:
    shipped = _PACKAGE / "_builtin" / folder
    if shipped.is_dir():
        return shipped
    return _PACKAGE.parent / folder


def builtin_names(folder: str, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{name: path}`` of the files in a built-in folder; names use '-' where file names use '_'."""
    directory = builtin_dir(folder)
    if not directory.is_dir():
        return {}
    return {
        p.stem.replace("_", "-"): p
        for p in sorted(directory.iterdir())
        if p.suffix in suffixes and not p.name.startswith(("_", "."))
    }


def builtin_hint(path: str | Path, folder: str, suffixes: tuple[str, ...], kind: str) -> str:
    """For a file that is not there whose name is a built-in one's (``studies/mnist1d-mlp.yaml`` given outside
    the repository, where the built-in files are not beside the working directory): the built-in name, which
    works from any folder; "" otherwise."""
    name = Path(str(path)).stem.replace("_", "-")
    if Path(str(path)).suffix not in suffixes or name not in builtin_names(folder, suffixes):
        return ""
    return f"; the built-in {kind} of that name is {name!r} (give the name alone, from any folder)"


def space_source(ref: str) -> tuple[Path, str]:
    """The YAML file of a search space given as a built-in name or a path, and the space's name. A name or
    file that is not there is a ConfigError; checked without building anything (no PyTorch)."""
    from tuner.errors import ConfigError, unknown_name_message

    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or "/" in ref or path.exists():
        if not path.exists():
            raise ConfigError(f"{path}: no such search-space file"
                              + builtin_hint(path, "search_spaces", (".yaml", ".yml"), "search space"))
        return path, path.stem
    builtin = builtin_names("search_spaces", (".yaml", ".yml"))
    if ref not in builtin:
        raise ConfigError(unknown_name_message("search space", ref, builtin) + " Or give a path to a YAML file.")
    return builtin[ref], ref


def unknown_objective(ref: str, *, bare_only: bool = True) -> str:
    """The message for an objective named alone (no file, no module: only a built-in one can be meant) that is
    not a built-in one; "" for a built-in name, and, with ``bare_only``, for any file or module reference."""
    from tuner.errors import unknown_name_message

    bare = ":" not in ref and "/" not in ref and "\\" not in ref and not ref.endswith(".py")
    builtin = builtin_names("objectives", (".py",))
    if ref in builtin or (bare_only and not bare):
        return ""
    return f"{unknown_name_message('objective', ref, builtin)} Or give path/to/file.py:attr or module:attr."


DEFAULT_ATTR = "objective"  # the attribute of an objective file or module named without one


def split_objective_ref(ref: str) -> tuple[str, str]:
    """``path/file.py:attr`` or ``module:attr`` as (file or module, attribute); a bare name or a path without an
    attribute gets ``objective``."""
    head, sep, attr = ref.rpartition(":")
    if not sep or not head or "/" in attr or "\\" in attr:  # a bare name, or a Windows drive letter
        return ref, DEFAULT_ATTR
    return head, attr


def builtin_objective_options(name: str) -> tuple[list[str], list[str]] | None:
    """A built-in objective's options, read from its file without running it: those it needs and those it
    may take (both empty for an ``Objective`` built at import); None where the file cannot tell."""
    import ast

    path = builtin_names("objectives", (".py",)).get(name)
    if path is None:
        return None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name == DEFAULT_ATTR:
            if node.args.kwarg is not None or node.args.posonlyargs:  # options the file cannot list
                return None
            positional = node.args.args
            with_default = len(node.args.defaults)
            needed = [a.arg for a in positional[:len(positional) - with_default]]
            needed += [a.arg for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is None]
            optional = [a.arg for a in positional[len(positional) - with_default:]]
            optional += [a.arg for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
                         if d is not None]
            return needed, optional
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and DEFAULT_ATTR in {
                t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)}:
            return [], []
    return None


def missing_objective_file(ref: str) -> str:
    """The message for an objective file (``path/file.py[:attr]``) that is not there; "" for any other reference."""
    target, _ = split_objective_ref(ref)
    if (target.endswith(".py") or "/" in target) and not Path(target).is_file():
        return (f"Objective file {str(Path(target))!r} does not exist"
                + builtin_hint(target, "objectives", (".py",), "objective") + ".")
    return ""


def space_descriptions() -> dict[str, str]:
    """``{name: description}`` of the built-in search spaces, read from their YAML (nothing is built, so
    listing them imports neither torch nor Optuna)."""
    import yaml

    out = {}
    for name, path in builtin_names("search_spaces", (".yaml", ".yml")).items():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[name] = str((data or {}).get("description") or "").strip() if isinstance(data, dict) else ""
    return out


def objective_descriptions() -> dict[str, str]:
    """``{name: description}`` of the built-in objectives: the ``description=`` given to ``Objective(...)`` in
    the file, else the first line of its docstring; read from the source, not imported."""
    import ast

    out = {}
    for name, path in builtin_names("objectives", (".py",)).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = None
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Objective":
                for kw in node.keywords:
                    if kw.arg == "description" and isinstance(kw.value, ast.Constant):
                        found = str(kw.value.value)
        doc = (ast.get_docstring(tree) or "").strip().splitlines()
        out[name] = found if found is not None else (doc[0] if doc else "")
    return out
