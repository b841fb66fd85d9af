"""Hub -> controller message bodies (PROTOCOL.md s3, s5, s6) as validated values.

`firmware.core.wire` checks the envelope and hands over the decoded payload map; the
functions here check each field and raise `RemoteError` naming the one at fault.
Nothing here touches the live data: a message is fully valid before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from firmware.core.errors import RemoteError
from firmware.core.store import Op, parse_ops

MAX_PAGES = 100_000
_MAX_TEXT = 128


@dataclass(frozen=True, slots=True)
class Delta:
    """One committed change set: from version `from_v` to `to_v` of `epoch`."""

    epoch: str
    from_v: int
    to_v: int
    ops: list[Op]
    now: int | None


@dataclass(frozen=True, slots=True)
class SnapPage:
    """Page `page` of `pages` of full sync `sync`, a snapshot of (epoch, v)."""

    sync: str
    epoch: str
    v: int
    page: int
    pages: int
    recs: list[tuple[str, str, bytes]]
    digest: bytes
    now: int | None


@dataclass(frozen=True, slots=True)
class Current:
    """The hub's answer to sync request `req` when nothing differs: it holds
    exactly `(epoch, v)` with `digest` (PROTOCOL.md s3)."""

    req: str
    epoch: str
    v: int
    digest: bytes
    now: int | None


@dataclass(frozen=True, slots=True)
class Command:
    """A command from the hub (PROTOCOL.md s6)."""

    id: str
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    iat: int = 0
    exp: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    """The hub stored every event with seq <= `upto`; credit reflects them from `v`."""

    upto: int
    v: int


def _text(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise RemoteError(f"{what}: {key!r} must be text of 1 to {_MAX_TEXT} characters")
    return value


def _int(body: dict[str, Any], key: str, what: str, *, low: int = 0) -> int:
    value = body.get(key)
    if type(value) is not int or value < low or value >= 1 << 63:
        raise RemoteError(f"{what}: {key!r} must be an integer >= {low}")
    return value


def _opt_int(body: dict[str, Any], key: str, what: str) -> int | None:
    return None if body.get(key) is None else _int(body, key, what, low=-(1 << 62))


def parse_delta(body: dict[str, Any]) -> Delta:
    """Validate a `delta` message body."""
    from_v = _int(body, "from", "delta")
    to_v = _int(body, "to", "delta")
    if to_v <= from_v:
        raise RemoteError(f"delta: 'to' ({to_v}) must be greater than 'from' ({from_v})")
    return Delta(
        _text(body, "epoch", "delta"),
        from_v,
        to_v,
        parse_ops(body.get("ops")),
        _opt_int(body, "now", "delta"),
    )


def parse_snap(body: dict[str, Any]) -> SnapPage:
    """Validate one `snap` page body; record bodies are checked later, at build."""
    pages = _int(body, "pages", "snap", low=1)
    if pages > MAX_PAGES:
        raise RemoteError(f"snap: {pages} pages is more than {MAX_PAGES}")
    page = _int(body, "page", "snap")
    if page >= pages:
        raise RemoteError(f"snap: page {page} of {pages} is out of range")
    digest = body.get("digest")
    if not isinstance(digest, bytes) or len(digest) != 16:
        raise RemoteError("snap: 'digest' must be 16 bytes")
    raw = body.get("recs")
    if not isinstance(raw, list):
        raise RemoteError("snap: 'recs' must be a list")
    recs: list[tuple[str, str, bytes]] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
            or not isinstance(item[2], bytes)
        ):
            raise RemoteError("snap: every entry of 'recs' must be [kind, id, rec]")
        recs.append((item[0], item[1], item[2]))
    return SnapPage(
        _text(body, "sync", "snap"),
        _text(body, "epoch", "snap"),
        _int(body, "v", "snap"),
        page,
        pages,
        recs,
        digest,
        _opt_int(body, "now", "snap"),
    )


def parse_current(body: dict[str, Any]) -> Current:
    """Validate a `current` message body."""
    digest = body.get("digest")
    if not isinstance(digest, bytes) or len(digest) != 16:
        raise RemoteError("current: 'digest' must be 16 bytes")
    return Current(
        _text(body, "req", "current"),
        _text(body, "epoch", "current"),
        _int(body, "v", "current"),
        digest,
        _opt_int(body, "now", "current"),
    )


def parse_command(body: dict[str, Any]) -> Command:
    """Validate a `cmd` message body (not whether it may run: see the runtime)."""
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise RemoteError("cmd: 'args' must be a map with text keys")
    return Command(
        _text(body, "id", "cmd"),
        _text(body, "cmd", "cmd"),
        args,
        _int(body, "iat", "cmd", low=-(1 << 62)),
        _int(body, "exp", "cmd", low=-(1 << 62)),
    )


def parse_ack(body: dict[str, Any]) -> Ack:
    """Validate an `ack` message body."""
    return Ack(_int(body, "upto", "ack"), _int(body, "v", "ack"))
