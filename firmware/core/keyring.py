"""A controller's keys by kid (PROTOCOL.md s2): the few it accepts, the one it sends with.

A kid is the controller id as UTF-8 for its first key and `{controller}/{n}`
(n = 2, 3, ...) for later ones. Each side holds at most `MAX_KEYS` keys for one
controller, so a rotation can run with the old and the new key both accepted.
Pure: the files these keys come from are `firmware.config.keys`'s business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from firmware.core.errors import LocalError
from firmware.core.wire import KEY_BYTES

MAX_KEYS = 4
"""At most this many keys per controller on each side (PROTOCOL.md s2)."""

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NUMBER = re.compile(r"[1-9][0-9]{0,5}")


def kid_for(controller: str, n: int) -> bytes:
    """The kid of key number `n` of `controller`: the id for 1, `{controller}/{n}` after."""
    if not _SEGMENT.fullmatch(controller):
        raise LocalError(f"controller {controller!r} must be 1 to 64 of A-Z a-z 0-9 _ -")
    if type(n) is not int or not 1 <= n <= 999_999:
        raise LocalError(f"key number {n!r} must be 1 to 999999")
    return (controller if n == 1 else f"{controller}/{n}").encode()


def key_number(controller: str, kid: bytes) -> int | None:
    """Which key of `controller` `kid` names (1, 2, ...), or None if it names none."""
    text = kid.decode("utf-8", errors="replace")
    if text == controller:
        return 1
    prefix, _, n = text.rpartition("/")
    if prefix != controller or not _NUMBER.fullmatch(n) or n == "1":
        return None
    return int(n)


@dataclass(frozen=True, slots=True)
class Keyring:
    """The keys of one controller: `accepted` by kid, and `send_kid`, the one
    messages are sealed with (always among the accepted). Immutable: safe to
    share between threads."""

    accepted: Mapping[bytes, bytes]
    send_kid: bytes
    _send_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        accepted = dict(self.accepted)
        if not 1 <= len(accepted) <= MAX_KEYS:
            raise LocalError(f"a controller holds 1 to {MAX_KEYS} keys, got {len(accepted)}")
        for kid, key in accepted.items():
            if not isinstance(kid, bytes) or not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise LocalError(f"key {kid!r} must be {KEY_BYTES} bytes")
        if self.send_kid not in accepted:
            raise LocalError(f"the send key {self.send_kid!r} is not among the accepted keys")
        # A read-only copy: nobody holding the ring can change what it accepts.
        object.__setattr__(self, "accepted", MappingProxyType(accepted))
        object.__setattr__(self, "_send_key", accepted[self.send_kid])

    @classmethod
    def single(cls, controller: str, key: bytes) -> Keyring:
        """One key, the controller's first (kid = the controller id)."""
        kid = kid_for(controller, 1)
        return cls({kid: key}, kid)

    @property
    def send_key(self) -> bytes:
        """The key messages are sealed with."""
        return self._send_key
