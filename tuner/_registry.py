"""A name -> entry mapping with errors that list the valid names and the closest one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from tuner.errors import ConfigError, unknown_name_message

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(unknown_name_message(self.kind, name, self._entries))
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
