"""Typed reads from one TOML table of controller.toml, every error one line naming
the file and the dotted key (`doors[0].relay`). Unknown keys are errors: a typo in
a pin's key must not silently leave a door unwired."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from firmware.core.errors import LocalError
from firmware.core.wiring import BCM_PINS

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ConfigError(LocalError):
    """controller.toml (or a file it names) is missing, unreadable or wrong."""


class Table:
    """One table of controller.toml, read key by key. `default=...` (the
    default) means the key is required."""

    def __init__(self, path: Path, name: str, table: Any, *, used: Iterable[str] = ()) -> None:
        self.path = path
        self.name = name
        if not isinstance(table, Mapping):
            raise self.error(None, "must be a table")
        self.table: Mapping[str, Any] = table
        self.used: set[str] = set(used)

    def error(self, key: str | None, problem: str) -> ConfigError:
        """The error for `key` of this table (None: the table itself)."""
        where = f"{self.name}.{key}" if key else self.name
        return ConfigError(f"{self.path}: {where}: {problem}")

    def has(self, key: str) -> bool:
        """Whether the key is given."""
        return key in self.table

    def _raw(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.error(key, "is required")
            return default
        return self.table[key]

    def get(self, key: str, kind: type, default: Any = ..., *, low: int | None = None) -> Any:
        """A value of type `kind` (an int at least `low`)."""
        value = self._raw(key, default)
        if key not in self.table:
            return value
        if kind is int and (type(value) is not int or (low is not None and value < low)):
            bound = f" >= {low}" if low is not None else ""
            raise self.error(key, f"must be an integer{bound}, got {value!r}")
        if kind is not int and not isinstance(value, kind):
            raise self.error(key, f"must be {kind.__name__}, got {value!r}")
        return value

    def segment(self, key: str) -> str:
        """A topic segment: 1 to 64 of A-Z a-z 0-9 _ -."""
        value: str = self.get(key, str)
        if not _SEGMENT.fullmatch(value):
            raise self.error(key, "must be 1 to 64 of A-Z a-z 0-9 _ -")
        return value

    def path_value(self, key: str, default: Any = ...) -> Path | None:
        """A file or directory; relative to controller.toml's directory."""
        value = self.get(key, str, default)
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else self.path.parent / p

    def text(self, key: str, default: Any = ...) -> Any:
        """A non-empty string."""
        value = self._raw(key, default)
        if value is not default and (not isinstance(value, str) or not value):
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def flag(self, key: str, default: Any = ...) -> bool:
        """true or false."""
        value = self._raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def number(self, key: str, default: Any, low: int, high: int) -> int:
        """An integer from `low` to `high`."""
        value = self._raw(key, default)
        if type(value) is not int or not low <= value <= high:
            raise self.error(key, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def pin(self, key: str, default: Any = ...) -> int | None:
        """A BCM GPIO number (None when absent and `default` is None)."""
        value = self._raw(key, default)
        if value is None and default is None:
            return None
        if type(value) is not int or value not in BCM_PINS:
            raise self.error(key, f"must be a BCM GPIO number from 0 to 27, got {value!r}")
        return value

    def choice(self, key: str, choices: Iterable[str], default: Any = ...) -> str:
        """One of `choices`."""
        value = self._raw(key, default)
        options = tuple(choices)
        if value not in options:
            listed = ", ".join(f'"{c}"' for c in options)
            raise self.error(key, f"must be one of {listed}, got {value!r}")
        return str(value)

    def needs(self, key: str, other: str) -> None:
        """`key` means nothing without `other`."""
        if self.has(key) and not self.has(other):
            raise self.error(key, f"has no effect without {other}")

    def done(self, not_here: Iterable[str] = (), why: str = "") -> None:
        """Every key was read; a key in `not_here` is known elsewhere but not
        used here (`why` says where)."""
        misplaced = set(not_here)
        for key in sorted(self.table):
            if key in self.used:
                continue
            if key in misplaced:
                raise self.error(key, f"is not used {why}")
            raise self.error(key, "is not a known setting")
