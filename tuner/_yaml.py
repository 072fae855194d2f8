"""Safe YAML loading that remembers the line of every key, so errors can point at ``file:line``.

Hostile documents are refused quickly: no Python tags (``SafeLoader``), no duplicate keys, at most
``MAX_DEPTH`` levels of nesting, and at most ``MAX_NODES`` values once aliases are expanded (an alias bomb
is a few hundred bytes that expand to billions of values).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from tuner._files import MAX_INPUT_BYTES as MAX_BYTES
from tuner._files import read_text
from tuner.errors import ConfigError

__all__ = ["LineDict", "load_yaml_file", "load_yaml_text", "line_of", "MAX_DEPTH", "MAX_NODES"]

MAX_DEPTH = 50
MAX_NODES = 100_000


class _Refused(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.mark = mark


class LineDict(dict):
    """A dict that knows the 1-based line of each of its keys (``lines``) and of itself (``line``)."""

    line: int = 0
    lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader (no Python tags, no code) that records lines, refuses duplicate keys, and bounds depth and
    expanded size before anything is constructed."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"is nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        # The mapping's own keys; those a merge (``<<: *base``) brings in may be set again by them, as YAML
        # means: only a key written twice in the mapping itself is a duplicate.
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self.flatten_mapping(node)
        mapping = LineDict()
        mapping.line = node.start_mark.line + 1
        written: set[Hashable] = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a plain value, not a {type(key).__name__}", key_node.start_mark)
            if key in written and id(key_node) in own:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {mapping.lines[key]})", key_node.start_mark
                )
            if id(key_node) in own:
                written.add(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
            mapping.lines[key] = key_node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
# YAML 1.1 (PyYAML) reads ``1e-05`` (no dot) and ``1.0e10`` (no exponent sign) as strings, but JSON
# (``json.dumps(1e-5)``), YAML 1.2 and people write floats that way; without this, a config saved as JSON would
# not load back and ``lr: {high: 1.0e1}`` would be a string.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _check_expanded_size(root: Any) -> None:
    """Counts the values the document holds with every alias expanded, without expanding anything: a node's
    size is computed once and reused wherever an alias points at it."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()  # nodes whose children are being counted: meeting one again is a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        if not children_done:
            if id(node) in entered:  # ``a: &x [*x]``: a value that contains itself
                raise _Refused("holds a recursive alias (a value that contains itself)", node.start_mark)
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 0) for c in children)
        if total > MAX_NODES:
            raise _Refused(f"holds over {MAX_NODES:,} values once its aliases are expanded (an alias bomb?)",
                           node.start_mark)
        sizes[id(node)] = total


# PyYAML's words for a line out of place (an indentation mistake, or an unquoted ': ' in a value).
_LAYOUT_PROBLEMS = ("mapping values are not allowed here", "expected <block end>", "did not find expected key",
                    "could not find expected ':'")


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{source}: the document is {len(text):,} characters; at most {MAX_BYTES:,} are read.")
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except _Refused as exc:
        where = f"{source}:{exc.mark.line + 1}" if exc.mark is not None else source
        raise ConfigError(f"{where}: refused: the YAML {exc}.") from None
    except RecursionError:
        raise ConfigError(f"{source}: refused: the YAML is nested too deeply.") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of 5,000 digits
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        if "could not determine a constructor" in str(exc):
            problem = f"{problem.strip()}: tags that construct Python objects are not allowed"
        if "expected a single document" in str(getattr(exc, "context", "")):
            problem = "a second document starts here ('---'): a file holds one document; remove the '---' line"
        if "'\\t'" in problem:
            problem = f"{problem.strip()} (a tab: YAML indents with spaces only)"
        elif any(words in problem for words in _LAYOUT_PROBLEMS):
            problem = (f"{problem.strip()} (check the indentation of this line and the one above: the keys of one "
                       f"mapping start in the same column, a nested key further right; a value holding ': ' needs "
                       f"quotes)")
        raise ConfigError(f"{where}: invalid YAML: {problem.strip()}") from None


def load_yaml_file(path: str | Path, what: str = "file") -> Any:
    """Parses a YAML (or JSON) file: a regular UTF-8 file of at most 1 MiB, see ``tuner._files.read_text``."""
    return load_yaml_text(read_text(path, what=what, limit=MAX_BYTES), str(path))


def line_of(mapping: Any, key: Any = None) -> int | None:
    """The line of ``key`` in ``mapping`` (or of the mapping itself), when it came from YAML."""
    if not isinstance(mapping, LineDict):
        return None
    if key is None:
        return mapping.line
    return mapping.lines.get(key, mapping.line)
