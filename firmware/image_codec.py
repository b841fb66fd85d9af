"""The decision image's encoding: a built `Store` to a byte stream and back.

A boot that rebuilds the live store from SQLite decodes, validates, hashes and
indexes every record again (tens of seconds for a million credentials). The
image is the store as it stands in memory, indexes included, so a boot only
reads it back: `pickle` (protocol 5), loaded by the C unpickler.

Two things make it fast and safe enough to read at every boot:

- The records are frozen slotted dataclasses, whose own constructor sets every
  field through `object.__setattr__` (about 2 us a member) and whose default
  pickling goes through `dataclasses.fields` for every object (slower still).
  Each record class gets a *twin* here: a plain class with the same slots whose
  generated `__init__` stores the fields and then turns the object into the
  real class (`__class__` assignment, allowed between classes of one layout).
  A record is written as `(twin, field values)` and read back by one call.
- The stream is read by an unpickler that resolves only the classes listed in
  `_ALLOWED` (the twins, the store, a time zone, a date): an image is never a
  way to run code, whatever its bytes say.

`FORMAT` names the encoding together with the shape of every record class of
`firmware.core.model` and of the store (their field and attribute names): when
a class changes, the format changes, and an image of another format is refused
(`firmware.image`), never read with the wrong fields.

The stream is written a few hundred entries per `pickle.dump`, each piece with
a pickler of its own (see `_Writer`): between two pieces the caller's `pause`
runs, so the writer can give the interpreter lock to the loop and give up when
the store changes. What the store shares stays shared when read back: a record
in a table and in an index is one object, and so are the values the build
shares between records and an index's keys and its records' strings.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import pickle
import sys
import zoneinfo
from collections.abc import Callable, Iterable
from itertools import islice
from operator import attrgetter, itemgetter
from typing import Any, BinaryIO

import cbor2

from firmware.core import model
from firmware.core.store import Store

REVISION = 6
"""The encoding's own version: bump it when `dump` and `load` change."""

PIECE = 256
"""Entries of a table per `pickle.dump`: about a millisecond of C holding the
interpreter lock on the development machine, the longest the loop waits."""

_PROTOCOL = 5


class ImageFormatError(Exception):
    """The stream is not an image this code can read (damaged, or another format)."""


def _record_classes() -> list[type[Any]]:
    """Every dataclass of `firmware.core.model`, in name order."""
    found = [
        value
        for value in vars(model).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == model.__name__
    ]
    return sorted(found, key=lambda cls: cls.__qualname__)


def _twin(cls: type[Any]) -> type[Any] | None:
    """A plain class with `cls`'s slots whose instances become `cls` instances as
    they are made, or None when `cls` has another layout (no slots, or fields
    `__init__` does not take): its records are then pickled the default way."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    if getattr(cls, "__slots__", None) != names or not all(f.init for f in dataclasses.fields(cls)):
        return None
    # Generated as dataclasses generate `__init__`: a plain attribute store per
    # field is several times faster than a loop over the names.
    body = "".join(f"    self.{name} = {name}\n" for name in names)
    source = f"def __init__(self, {', '.join(names)}):\n{body}    self.__class__ = cls\n"
    namespace: dict[str, Any] = {}
    exec(source, {"cls": cls}, namespace)  # our own field names only
    name = f"_{cls.__name__}Twin"
    twin = type(name, (), {"__slots__": names, "__init__": namespace["__init__"]})
    twin.__module__ = __name__
    twin.__qualname__ = name
    return twin


_CLASSES = _record_classes()
_TWINS: dict[type[Any], tuple[type[Any], Callable[[Any], Any]]] = {}
for _cls in _CLASSES:
    _made = _twin(_cls)
    if _made is not None:
        # The pickler names a class by its module and qualified name: the twins
        # must be found there.
        setattr(sys.modules[__name__], _made.__name__, _made)
        _names = tuple(f.name for f in dataclasses.fields(_cls))
        # attrgetter of one name gives the value, not a 1-tuple.
        _get = attrgetter(*_names) if len(_names) > 1 else (lambda o, n=_names[0]: (getattr(o, n),))
        _TWINS[_cls] = (_made, _get)


_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES}
_FIELDS.update({twin: _FIELDS[cls] for cls, (twin, _) in _TWINS.items()})
_FIELD_NAMES = frozenset(name for names in _FIELDS.values() for name in names)


def _shape() -> str:
    """What the format depends on, as text: the encoding's revision, the
    pickle protocol, and the fields of every record class and of the store."""
    parts = [f"revision {REVISION}", f"protocol {_PROTOCOL}"]
    for cls in _CLASSES:
        fields = ",".join(f"{f.name}:{f.type}" for f in dataclasses.fields(cls))
        twin = "twin" if cls in _TWINS else "plain"
        parts.append(f"{cls.__qualname__}({fields}) {twin}")
    parts.append(f"Store({','.join(vars(Store()))})")
    return "\n".join(parts)


FORMAT = hashlib.sha256(_shape().encode()).hexdigest()[:16]
"""The image format: changes whenever the encoding or a record class does."""


_ALLOWED: dict[tuple[str, str], Any] = {
    (cls.__module__, cls.__qualname__): cls for cls in (*_CLASSES, Store, datetime.date)
}
_ALLOWED.update({(twin.__module__, twin.__qualname__): twin for twin, _ in _TWINS.values()})
_ALLOWED[("zoneinfo", "ZoneInfo")] = zoneinfo.ZoneInfo
_ALLOWED[(cbor2.frozendict.__module__, cbor2.frozendict.__qualname__)] = cbor2.frozendict


class _Numbers:
    """`id(object) -> number`, in 64 dicts: one dict of half a million entries
    doubles in one stretch of C of tens of milliseconds holding the interpreter
    lock (the loop would wait); a 64th of it, well under one."""

    def __init__(self) -> None:
        self._shards: list[dict[int, int]] = [{} for _ in range(64)]

    def get(self, key: int) -> int | None:
        # Objects are 16-byte aligned: the bits above pick the shard.
        return self._shards[(key >> 4) & 63].get(key)

    def __contains__(self, key: int) -> bool:
        return key in self._shards[(key >> 4) & 63]

    def __setitem__(self, key: int, number: int) -> None:
        self._shards[(key >> 4) & 63][key] = number


class _Pickler(pickle.Pickler):
    """Records as `(twin, fields)`; a record already written, as its number."""

    def __init__(self, out: Any, numbers: _Numbers) -> None:
        super().__init__(out, protocol=_PROTOCOL)
        self._numbers = numbers

    def persistent_id(self, obj: Any) -> int | None:
        return self._numbers.get(id(obj))

    def reducer_override(self, obj: Any) -> Any:
        found = _TWINS.get(type(obj))
        if found is None:
            if type(obj) is zoneinfo.ZoneInfo:
                # Its own reduction goes through `getattr`, which the reader
                # never allows (it reaches anything); the key names it as well.
                return zoneinfo.ZoneInfo, (obj.key,)
            return NotImplemented
        twin, values = found
        return twin, values(obj)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module_name: str, global_name: str) -> Any:
        found = _ALLOWED.get((module_name, global_name))
        if found is None:
            raise ImageFormatError(f"the image names {module_name}.{global_name}")
        return found


# --- writing -------------------------------------------------------------------------

# What each piece of the stream is: a marker, then its content.
_VALUE, _FLAT, _TREE, _SAME, _RECORDS = "value", "flat", "tree", "same", "records"
_SHAREABLE = (str, int, tuple, frozenset)
_SHARED_REFS = 6  # references (the record's, getrefcount's own, ...) past which a value is shared
# Pieces of a table: new records with their keys (`_NEW`), or entries whose
# keys are fields of the records they name (`_KEYED`).
_NEW, _KEYED = "new", "keyed"


class _Writer:
    """Writes one store. Every piece has a pickler of its own: one memo for the
    whole store would grow to millions of entries, each doubling of it a stretch
    of C of a tenth of a second holding the interpreter lock, and hundreds of
    megabytes. Records are shared between pieces by number instead: a record is
    written once, in full, numbered in the order written, and every later
    mention of it (an index) is its number (`persistent_id`)."""

    def __init__(self, out: BinaryIO, pause: Callable[[], None]) -> None:
        self._out = out
        self._pause = pause
        self._numbers = _Numbers()  # id(record or shared value) -> its number
        # Holds every numbered record, so that no id is reused while writing.
        self._records: list[Any] = []
        self._tables: dict[int, int] = {}  # id(table) -> its number

    def dump(self, value: Any) -> None:
        """One piece."""
        _Pickler(self._out, self._numbers).dump(value)

    def records_in(self, values: Iterable[Any]) -> None:
        """Write the records among `values` not written yet, ahead of the piece
        that holds them (which then names them by number)."""
        fresh = [v for v in values if type(v) in _TWINS and id(v) not in self._numbers]
        if fresh:
            self.shared_in(fresh)
            self.dump((_RECORDS, fresh))
            self._number(fresh)

    def shared_in(self, records: Iterable[Any]) -> None:
        """Write the values the store shares between records (a name many
        members bear, a group list, a credit, a credential kind), not written
        yet, ahead of the records: numbered, they are one object again when
        read, as the build made them (each piece's own memo would make one per
        piece: 90 MB more for a million credentials). Shared means referenced
        more than a few times; there are a few thousand such values."""
        numbers = self._numbers
        fresh: dict[int, Any] = {}

        def consider(value: Any) -> None:
            kind = type(value)
            if (
                kind in _SHAREABLE
                and sys.getrefcount(value) > _SHARED_REFS
                and id(value) not in numbers
                and not (kind is int and -5 <= value <= 256)  # Python's own
            ):
                fresh.setdefault(id(value), value)

        for record in records:
            for value in _TWINS[type(record)][1](record):
                if type(value) is tuple:
                    for item in value:  # before the tuple: it names them
                        consider(item)
                consider(value)
        if fresh:
            shared = list(fresh.values())
            self.dump((_RECORDS, shared))
            self._number(shared)

    def _number(self, records: Iterable[Any]) -> None:
        for record in records:
            self._numbers[id(record)] = len(self._records)
            self._records.append(record)

    def _keyed(self, piece: dict[Any, Any]) -> tuple[Any, ...] | None:
        """An index's piece as record numbers grouped by where each key sits in
        its record (credential values in a member's `creds`): read back, a key
        is the record's own string, not a copy (a million credentials would
        take 60 MB more). Entries whose key is not in their record (a conflict
        kept the loser's string) go as they are. None when the piece is no
        index of numbered records."""
        groups: dict[tuple[str, int], list[int]] = {}
        others: dict[Any, Any] = {}  # a key of another record (a credential conflict's)
        numbers = self._numbers
        for key, record in piece.items():
            number = numbers.get(id(record))
            if number is None or type(key) is not str:
                return None
            place = _place(key, record)
            if place is None:
                others[key] = record
            else:
                groups.setdefault(place, []).append(number)
        if len(others) == len(piece):
            return None
        keyed = [(name, sub, numbers) for (name, sub), numbers in groups.items()]
        return (_KEYED, keyed, others)

    def value(self, value: Any) -> None:
        layout = _layout(value)
        if layout == _VALUE:
            self.records_in((value,))
            self.dump((_VALUE, value))
            return
        number = self._tables.get(id(value))
        if number is not None:
            # One dict in two places (the store's `_tables` names its tables):
            # one dict again when read.
            self.dump((_SAME, number))
            return
        self._tables[id(value)] = len(self._tables)
        if layout == _TREE:
            self.dump((_TREE, len(value)))
            for key, inner in list(value.items()):
                self.dump(key)
                self.value(inner)
            return
        pieces = -(-len(value) // PIECE)
        self.dump((_FLAT, len(value), pieces))
        items = iter(value.items())
        for _ in range(pieces):
            self._pause()
            # A dict, not a list of pairs: no tuple per entry to make.
            piece = dict(islice(items, PIECE))
            values = piece.values()
            numbers = self._numbers
            if piece and all(type(v) in _TWINS and id(v) not in numbers for v in values):
                # A table of records (members by id): written with them, their
                # keys are their own id strings again when read.
                self.shared_in(values)
                self.dump((_NEW, piece))
                self._number(values)
                continue
            self.records_in(values)
            self.dump(self._keyed(piece) or piece)
        if next(items, None) is not None:
            raise RuntimeError("a table grew while it was written")


def _place(key: str, record: Any) -> tuple[str, int] | None:
    """Where `key` itself (this very object) sits in `record`: a field's name,
    and its index in that field's tuple (-1: the field itself); None if nowhere."""
    for name in _FIELDS[type(record)]:
        value = getattr(record, name)
        if value is key:
            return name, -1
        if type(value) is tuple:
            for index, item in enumerate(value):
                if item is key:
                    return name, index
    return None


def _layout(value: Any) -> str:
    """How a value is written: whole (`_VALUE`), or as a table, numbered so that
    a dict named twice is one dict again when read: entry by entry (`_TREE`, a
    dict of dicts: an index) or a piece at a time (`_FLAT`)."""
    if type(value) is not dict:
        return _VALUE
    if value and type(next(iter(value.values()))) is dict:
        return _TREE
    return _FLAT


def dump(store: Store, out: BinaryIO, pause: Callable[[], None]) -> None:
    """Write `store` to `out`, calling `pause()` between pieces (see the module
    docstring); whatever `pause` raises ends the dump. Iterating a table that
    changes meanwhile raises `RuntimeError` (the caller makes sure it did not
    change, and throws the stream away if it did)."""
    writer = _Writer(out, pause)
    attrs = vars(store)
    writer.dump(list(attrs))
    for value in list(attrs.values()):
        writer.value(value)


# --- reading -------------------------------------------------------------------------


class _Reader:
    """Reads what `_Writer` wrote, a piece at a time."""

    def __init__(self, stream: io.BytesIO) -> None:
        self._stream = stream
        self._records: list[Any] = []
        self._tables: list[dict[Any, Any]] = []

    def piece(self) -> Any:
        unpickler = _Unpickler(self._stream)
        # A C method: numbers become records without a Python call each.
        unpickler.persistent_load = self._records.__getitem__  # type: ignore[method-assign]
        return unpickler.load()

    def marked(self) -> tuple[Any, ...]:
        """The next marker, the records written ahead of it kept."""
        while True:
            head = self.piece()
            if not isinstance(head, tuple) or not head:
                raise ImageFormatError("a piece's marker is missing")
            if head[0] != _RECORDS:
                return head
            if len(head) != 2 or not isinstance(head[1], list):
                raise ImageFormatError("a piece of records is damaged")
            self._records.extend(head[1])

    def _flat_piece(self, table: dict[Any, Any]) -> None:
        """One piece of a table into `table`, with the records written ahead of it."""
        piece = self.piece()
        while type(piece) is tuple and len(piece) == 2 and piece[0] == _RECORDS:
            self._records.extend(piece[1])
            piece = self.piece()
        if type(piece) is dict:
            table.update(piece)
        elif type(piece) is tuple and len(piece) == 2 and piece[0] == _NEW:
            table.update(piece[1])
            self._records.extend(piece[1].values())
        elif type(piece) is tuple and len(piece) == 3 and piece[0] == _KEYED:
            table.update(piece[2])
            get = self._records.__getitem__
            for name, sub, numbers in piece[1]:
                if name not in _FIELD_NAMES:
                    raise ImageFormatError(f"a key is in no field {name!r}")
                records = list(map(get, numbers))
                keys = map(attrgetter(name), records)
                if sub >= 0:
                    keys = map(itemgetter(sub), keys)
                # All in C: no Python call per entry.
                table.update(zip(keys, records, strict=True))
        else:
            raise ImageFormatError("a piece of a table is damaged")

    def value(self) -> Any:
        head = self.marked()
        kind = head[0]
        if kind == _VALUE and len(head) == 2:
            return head[1]
        if kind == _SAME and len(head) == 2:
            return self._tables[head[1]]
        table: dict[Any, Any] = {}
        self._tables.append(table)
        if kind == _TREE and len(head) == 2:
            for _ in range(head[1]):
                key = self.piece()
                table[key] = self.value()
        elif kind == _FLAT and len(head) == 3:
            for _ in range(head[2]):
                self._flat_piece(table)
        else:
            raise ImageFormatError(f"unknown piece marker {head!r}")
        if len(table) != head[1]:
            raise ImageFormatError("a table holds another number of entries than it says")
        return table


def load(data: bytes, start: int = 0, end: int | None = None) -> Store:
    """The store written by `dump` to `data[start:end]`. Raises
    `ImageFormatError` for anything that is not such a stream (checks of its
    tags and checksum are the caller's)."""
    # On `bytes` itself, not a slice: BytesIO shares a bytes object's buffer,
    # where a slice would be a copy (tens of MB at boot).
    stream = io.BytesIO(data)
    stream.seek(start)
    reader = _Reader(stream)
    try:
        names = reader.piece()
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ImageFormatError("the image does not start with the store's attributes")
        attrs = {name: reader.value() for name in names}
    except ImageFormatError:
        raise
    except Exception as exc:  # damaged bytes raise about anything
        raise ImageFormatError(f"the image cannot be read: {type(exc).__name__}: {exc}") from None
    if stream.tell() != (len(data) if end is None else end):
        raise ImageFormatError("the image goes on past the store")
    if sorted(attrs) != sorted(vars(Store())):
        raise ImageFormatError("the image's store has other attributes than this one")
    store = Store.__new__(Store)
    store.__dict__.update(attrs)
    return store
