"""Small helpers to build hub records in tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cbor2

from firmware.core.store import Store


def rec(**fields: Any) -> bytes:
    """A record body as the hub sends it: the CBOR encoding of a map.

    Python keywords can't be field names, so `from_` and `except_` stand for
    `from` and `except`.
    """
    body = {k.rstrip("_"): v for k, v in fields.items()}
    return cbor2.dumps(body)


def store_of(records: Iterable[tuple[str, str, bytes]]) -> Store:
    """Build a store and insist nothing was rejected."""
    built = Store.build(records)
    assert not built.rejected, built.rejected
    return built.store
