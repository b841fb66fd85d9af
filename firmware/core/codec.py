"""Strict CBOR decoding: one item, bounded depth, no tags, no indefinite lengths.

Every malformed input raises `RemoteError` and nothing else. Used for record bodies
here and for whole wire payloads by `firmware.core.wire`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from firmware.core.errors import RemoteError

# PROTOCOL.md s2 "CBOR nesting depth <= 16", read as: at most 16 containers
# (arrays or maps, map keys included) on any path from the top item inward. A bare
# scalar has depth 0, `[]` depth 1, `{"a": [1]}` depth 2.
MAX_DEPTH = 16

# What cbor2 hands back for maps and arrays (frozendict and tuple inside map keys;
# frozendict is no dict subclass, so it is named on its own).
_MAPS = (dict, cbor2.frozendict)
_CONTAINERS = (*_MAPS, list, tuple)


class _TagRefused(Exception):
    """Internal marker: the input carried a CBOR tag."""


def _refuse_tag(*_args: object) -> NoReturn:
    raise _TagRefused


class _EveryTag(Mapping[int, Any]):
    """A semantic-decoder table that claims every tag number, so cbor2's built-in
    tag decoders (datetimes, bignums, shared values...) never run on our input."""

    def __getitem__(self, tag: int) -> Any:
        return _refuse_tag

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_EVERY_TAG = _EveryTag()


def loads_strict(data: bytes, *, what: str = "CBOR") -> Any:
    """Decode exactly one CBOR item from `data` under the limits of PROTOCOL.md s2.

    Raises `RemoteError` for trailing bytes, tags, indefinite lengths, duplicate
    map keys, nesting deeper than 16, bad UTF-8 or truncation.
    """
    return StrictReader().loads(data, what=what)


# What `StrictReader.quick` returns when it cannot vouch for its input.
UNUSUAL: Any = object()


class StrictReader:
    """`loads_strict` for many items in a row: one cbor2 decoder serves them all,
    which saves building one per item (a third of a small record's decode).

    Not thread-safe: each thread that decodes (a store build, a delta) keeps its own.
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder: Any = None

    def loads(self, data: bytes, *, what: str = "CBOR") -> Any:
        """Exactly `loads_strict(data, what=what)`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise RemoteError(f"{what}: expected bytes, got {type(data).__name__}")
        value = self.quick(data)
        if value is UNUSUAL:
            return _loads_exact(data, what)
        return value

    def quick(self, data: bytes) -> Any:
        """The one item `data` holds, or `UNUSUAL` for anything this fast path
        cannot vouch for (bad input, trailing bytes, a valid 16-deep value): the
        caller then takes `loads_strict`, which decides and words the error."""
        # With max_depth=15 cbor2 accepts values of at most 16 nested containers
        # (an empty 16th slips through, a 17th cannot), so no walk is needed.
        fp = io.BytesIO(data)
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = _decoder(fp, MAX_DEPTH - 1)
        else:
            decoder.fp = fp  # a new file: nothing of the last one stays buffered
        try:
            value = decoder.decode()
        except Exception:
            # A decoder that failed half-way is not trusted with the next item.
            self._decoder = None
            return UNUSUAL
        if fp.tell() != len(data):
            return UNUSUAL
        return value


def _decoder(fp: io.BytesIO, max_depth: int) -> Any:
    return cbor2.CBORDecoder(
        fp,
        semantic_decoders=_EVERY_TAG,
        tag_hook=_refuse_tag,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )


def _loads_exact(data: bytes | bytearray | memoryview, what: str) -> Any:
    fp = io.BytesIO(data)
    try:
        value = _decoder(fp, MAX_DEPTH).decode()
    except RecursionError:
        raise RemoteError(f"{what}: nested too deeply") from None
    except Exception as exc:
        # cbor2 wraps hook exceptions in CBORDecodeError; look through it.
        if isinstance(exc, _TagRefused) or isinstance(exc.__cause__, _TagRefused):
            raise RemoteError(f"{what}: CBOR tags are not allowed") from None
        raise RemoteError(f"{what}: malformed CBOR ({exc})") from None
    if fp.tell() != len(data):
        raise RemoteError(f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    if _container_depth_exceeds(value, MAX_DEPTH):
        raise RemoteError(f"{what}: nested too deeply")
    return value


def _container_depth_exceeds(value: Any, limit: int) -> bool:
    """True if more than `limit` containers nest on some path through `value`.

    cbor2's `max_depth` bounds how many containers enclose an *item*, so with
    `max_depth=16` it still lets a 17th container through when that one is empty
    (`[[...[]...]]`). This walk closes the gap. cbor2 has already bounded the depth,
    so the stack stays small; the cost is one pass over the decoded value.
    """
    if not isinstance(value, _CONTAINERS):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = (*node.keys(), *node.values()) if isinstance(node, _MAPS) else node
        for child in children:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False
