"""Safe YAML loading that remembers the line of every key, so errors can point at ``file:line``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import ConfigError

__all__ = ["LineDict", "load_yaml_file", "load_yaml_text", "line_of"]


class LineDict(dict):
    """A dict that knows the 1-based line of each of its keys (``lines``) and of itself (``line``)."""

    line: int = 0
    lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader (no Python tags, no code) that records lines and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        self.flatten_mapping(node)
        mapping = LineDict()
        mapping.line = node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {mapping.lines[key]})", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
            mapping.lines[key] = key_node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
# YAML 1.1 (PyYAML) reads ``1e-05`` -- no dot -- as a string, but JSON (``json.dumps(1e-5)``) and YAML 1.2
# write floats that way; without this, a config saved as JSON would not load back.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        if "could not determine a constructor" in str(exc):
            problem = f"{problem.strip()}: tags that construct Python objects are not allowed"
        if "'\\t'" in problem:
            problem = f"{problem.strip()} (a tab: YAML indents with spaces only)"
        raise ConfigError(f"{where}: invalid YAML: {problem.strip()}") from None


def load_yaml_file(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return load_yaml_text(text, str(path))


def line_of(mapping: Any, key: Any = None) -> int | None:
    """The line of ``key`` in ``mapping`` (or of the mapping itself), when it came from YAML."""
    if not isinstance(mapping, LineDict):
        return None
    if key is None:
        return mapping.line
    return mapping.lines.get(key, mapping.line)
