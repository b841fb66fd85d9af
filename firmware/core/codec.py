"""Strict CBOR decoding: one item, bounded depth, no tags, no indefinite lengths.

Every malformed input raises `RemoteError` and nothing else. Used for record bodies
here and for whole wire payloads by `firmware.wire`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from firmware.core.errors import RemoteError

MAX_DEPTH = 16


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
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteError(f"{what}: expected bytes, got {type(data).__name__}")
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            fp,
            semantic_decoders=_EVERY_TAG,
            tag_hook=_refuse_tag,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        ).decode()
    except RecursionError:
        raise RemoteError(f"{what}: nested too deeply") from None
    except Exception as exc:
        # cbor2 wraps hook exceptions in CBORDecodeError; look through it.
        if isinstance(exc, _TagRefused) or isinstance(exc.__cause__, _TagRefused):
            raise RemoteError(f"{what}: CBOR tags are not allowed") from None
        raise RemoteError(f"{what}: malformed CBOR ({exc})") from None
    if fp.tell() != len(data):
        raise RemoteError(f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return value
