"""What goes on the wire for a change: delta ops, the pages of a snapshot, and
`current` when nothing changed.

Pure functions over `(kind, id) -> rec` mappings; no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import cbor2

from firmware.core.model import digest_bytes, digest_part
from firmware.core.wire import MAX_PAYLOAD

Key = tuple[str, str]
WireOp = list[Any]
"""`["put", kind, id, rec]` or `["del", kind, id]`, as in a `delta` (PROTOCOL.md s3)."""

PAGE_BUDGET = MAX_PAYLOAD - 2048
"""Bytes of records per snapshot page. The rest of a `snap` message (epoch and sync
id of at most 128 characters, digest, counters) takes well under 1 KiB."""

# Upper bound of the CBOR overhead of one `[kind, id, rec]` entry: an array head
# and three string heads of at most 9 bytes each.
_ENTRY_OVERHEAD = 1 + 3 * 9


def diff(old: Mapping[Key, bytes], new: Mapping[Key, bytes]) -> list[WireOp]:
    """The ops that turn `old` into `new`: deletes first, then puts.

    Puts of members that give up a credential come before all other puts, so a tag
    moving from one member to another in one edit never looks, half-applied, like
    two members holding it (the controller would report a `conflict`).
    """
    dels: list[WireOp] = [["del", k, i] for (k, i) in sorted(old.keys() - new.keys())]
    releasing: list[WireOp] = []
    puts: list[WireOp] = []
    for (kind, id), rec in sorted(new.items()):
        before = old.get((kind, id))
        if before == rec:
            continue
        op: WireOp = ["put", kind, id, rec]
        if kind == "member" and before is not None and _creds(before) - _creds(rec):
            releasing.append(op)
        else:
            puts.append(op)
    return dels + releasing + puts


def _creds(rec: bytes) -> set[tuple[str, str]]:
    """The (credkind, value) pairs of a member body this hub wrote and validated."""
    body = cbor2.loads(rec)
    raw = body.get("creds") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        return set()
    return {(c[0], c[1]) for c in raw if isinstance(c, list) and len(c) == 2}


def apply_ops(records: dict[Key, bytes], ops: Sequence[WireOp]) -> int:
    """Apply `ops` to `records` in place; return the change of the digest sum."""
    change = 0
    for op in ops:
        key = (op[1], op[2])
        old = records.pop(key, None)
        if old is not None:
            change -= digest_part(op[1], op[2], old)
        if op[0] == "put":
            records[key] = op[3]
            change += digest_part(op[1], op[2], op[3])
    return change


def digest_of(records: Mapping[Key, bytes]) -> bytes:
    """The dataset digest of PROTOCOL.md s3, computed from scratch."""
    return digest_bytes(sum(digest_part(k, i, rec) for (k, i), rec in records.items()))


def delta_message(
    epoch: str, from_v: int, to_v: int, ops: list[WireOp], now: int
) -> dict[str, Any]:
    """A `delta` message body."""
    return {"t": "delta", "epoch": epoch, "from": from_v, "to": to_v, "ops": ops, "now": now}


def current_message(req: str, epoch: str, v: int, digest: bytes, now: int) -> dict[str, Any]:
    """A `current` message body: the answer to sync request `req` when the
    controller already holds exactly `(epoch, v)` with `digest`."""
    return {"t": "current", "req": req, "epoch": epoch, "v": v, "digest": digest, "now": now}


def fits(message: dict[str, Any]) -> bool:
    """True if `message` encodes within the payload cap."""
    return len(cbor2.dumps(message)) <= MAX_PAYLOAD


def paginate(
    records: Mapping[Key, bytes], page_size: int, budget: int = PAGE_BUDGET
) -> list[list[list[Any]]]:
    """Split a dataset into snapshot pages of `[kind, id, rec]` entries, each page at
    most `page_size` records and `budget` bytes. An empty dataset is one empty page:
    the controller still needs one page to learn `(epoch, v, digest)`."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    pages: list[list[list[Any]]] = []
    page: list[list[Any]] = []
    size = 0
    for (kind, id), rec in sorted(records.items()):
        entry_size = len(kind.encode()) + len(id.encode()) + len(rec) + _ENTRY_OVERHEAD
        if page and (len(page) >= page_size or size + entry_size > budget):
            pages.append(page)
            page, size = [], 0
        page.append([kind, id, rec])
        size += entry_size
    pages.append(page)
    return pages


def snap_messages(
    pages: list[list[list[Any]]], *, sync: str, epoch: str, v: int, digest: bytes, now: int
) -> Iterator[dict[str, Any]]:
    """The `snap` message bodies of one full sync."""
    for i, recs in enumerate(pages):
        yield {
            "t": "snap",
            "sync": sync,
            "epoch": epoch,
            "v": v,
            "page": i,
            "pages": len(pages),
            "recs": recs,
            "digest": digest,
            "now": now,
        }
