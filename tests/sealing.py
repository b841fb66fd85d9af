"""`seal` as the tests use it: `firmware.core.wire.seal` with a fresh random iv,
as every real sender passes one (the core has no randomness of its own)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from firmware.core import wire


def seal(
    key: bytes, kid: bytes, topic: str, message: Mapping[str, Any], *, iv: bytes | None = None
) -> bytes:
    """`message` sealed for `topic` under `key`/`kid`, with `iv` or a random one."""
    return wire.seal(key, kid, topic, message, iv=os.urandom(wire.IV_BYTES) if iv is None else iv)


def opened(key: bytes, kid: bytes, topic: str, payload: bytes) -> dict[str, Any]:
    """The message a payload carries, opened with the one key given (tests only:
    they look into what they captured on the broker)."""
    return wire.unseal({kid: key}, topic, payload).body
