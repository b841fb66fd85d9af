"""What the hub reads in events besides storing them (PROTOCOL.md s5).

- `debit` events lower a member's published `credit`: the hub adds up the amounts
  per member and publishes `credit` = the data file's credit - that sum;
- a `system` event with `dropped: [[first, last], ...]` names seqs the controller
  removed without uploading (`outbox_full` folds, a purge with `events: true`):
  they will never come, so the hub's contiguous ack moves past them.

Pure functions, no I/O. `problem` is the one check; the other readers trust an
event it passed.
"""

from __future__ import annotations

from typing import Any

import cbor2

from firmware.core.errors import RemoteError
from firmware.core.model import check_key

Range = tuple[int, int]

CREDIT_LOW = -(1 << 62)
"""The lowest `credit` a controller accepts (firmware.core.model): a published
credit is never below it, whatever was debited."""
MAX_AMOUNT = 1 << 62
"""The highest debit amount: a light's `price` is at most this (firmware.core.model)."""
MAX_DEBITED = 1 << 62
"""A member's debit sum stops growing here (SQLite integers are 64-bit); the
credit it gives is already at `CREDIT_LOW`."""
MAX_RANGES = 100_000
"""Ranges per `dropped` list: more than one message can carry."""
_INT_LIMIT = 1 << 63


def _is_int(value: object) -> bool:
    return type(value) is int


def problem(type_: str, body: Any, seq: int) -> str | None:
    """Why the hub cannot use this event (None: it can). Checks the bodies the hub
    acts on: `debit`, and `dropped` in a `system` event."""
    if type_ == "debit":
        return _debit_problem(body)
    if type_ == "system" and isinstance(body, dict) and "dropped" in body:
        return _dropped_problem(body["dropped"], seq)
    return None


def _debit_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "a debit body must be a map"
    try:
        check_key("member", body.get("member"))
        check_key("light", body.get("light"))
    except RemoteError as exc:
        return str(exc)
    amount = body.get("amount")
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        return f"'amount' must be an integer of 1 to {MAX_AMOUNT} cents, got {amount!r}"
    seconds = body.get("seconds")
    if type(seconds) is not int or not 0 <= seconds < _INT_LIMIT:
        return f"'seconds' must be an integer >= 0, got {seconds!r}"
    balance = body.get("balance")
    if type(balance) is not int or not -_INT_LIMIT <= balance < _INT_LIMIT:
        return f"'balance' must be an integer, got {balance!r}"
    return None


def _dropped_problem(dropped: Any, seq: int) -> str | None:
    if not isinstance(dropped, list) or len(dropped) > MAX_RANGES:
        return f"'dropped' must be a list of at most {MAX_RANGES} [first, last] ranges"
    for entry in dropped:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not all(_is_int(n) for n in entry)
            or not 1 <= entry[0] <= entry[1] < seq
        ):
            # Dropped events existed before the event that names them: a range
            # reaching this event's own seq or beyond cannot be right.
            return f"'dropped': {entry!r} is not [first, last] with 1 <= first <= last < {seq}"
    return None


def debit(body: Any) -> tuple[str, int]:
    """`(member, amount)` of a `debit` body that passed `problem`."""
    return str(body["member"]), int(body["amount"])


def dropped(type_: str, body: Any) -> list[Range]:
    """The `(first, last)` seq ranges an event that passed `problem` declares gone."""
    if type_ != "system" or not isinstance(body, dict):
        return []
    return [(int(first), int(last)) for first, last in body.get("dropped") or ()]


def credit_of(rec: bytes) -> int | None:
    """A member body's `credit` (0 when absent); None if it has no usable one."""
    body = _member_body(rec)
    return None if body is None else int(body.get("credit", 0))


def with_credit(rec: bytes, credit: int) -> bytes | None:
    """A member body with `credit` replaced (or added at the end); every other field
    and its encoding as it was. None if `rec` is not a map with a usable credit."""
    body = _member_body(rec)
    if body is None:
        return None
    body["credit"] = max(CREDIT_LOW, credit)
    out: bytes = cbor2.dumps(body)
    return out


def _member_body(rec: bytes) -> dict[Any, Any] | None:
    try:
        body = cbor2.loads(rec)
    except Exception:
        return None
    if not isinstance(body, dict) or not _is_int(body.get("credit", 0)):
        return None
    return body
