"""site.toml -> the hub's dataset: `(kind, id) -> rec`, every record validated.

The file holds one `[site]` table (the `site` record, id "site") and arrays of
tables named by record kind:

    [site]
    tz = "Europe/London"

    [[member]]
    id = "m1"
    name = "Ada"
    groups = ["adults"]
    creds = [["tag", "0a1b2c3d4e"], ["pin", "4711"]]

    [[schedule]]
    id = "daytime"
    windows = [[31, 420, 1320]]
    except = ["2026-12-25"]

Field names are exactly those of PROTOCOL.md s3. Any other array-of-tables name
is a record kind the controllers do not know; it is passed through untouched.
A record's body (`rec`) is the CBOR encoding of its table without `id`. Times are
integers (Unix seconds): a TOML date or time value is refused, so a date can
never silently become a CBOR tag that every controller would reject.

A member or booking PIN shorter than the site's `pin_min` (4 without one) is
refused as well: every controller would reject that record.

Any problem raises `DataFileError`: one line naming the file, the record and the
field. The hub then keeps serving the last good version.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import cbor2

from firmware.core.codec import loads_strict
from firmware.core.errors import LocalError, RemoteError
from firmware.core.model import (
    DEFAULT_PIN_MIN,
    Booking,
    Member,
    Site,
    check_key,
    parse_record,
    pin_too_short,
)
from firmware.core.wire import MAX_PAYLOAD

Key = tuple[str, str]
Dataset = dict[Key, bytes]
"""A whole dataset: `(kind, id) -> rec`, the exact body bytes that go on the wire."""

MAX_RECORD = MAX_PAYLOAD - 4096
"""Largest record body: every record must fit in one snapshot page or delta with
room for the message around it, or no controller could ever receive it."""


class DataFileError(LocalError):
    """The data file is unreadable or holds an invalid record."""


def load_datafile(path: Path) -> Dataset:
    """Read and validate the data file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: is not UTF-8 text") from None
    return parse_datafile(text, where=str(path))


def parse_datafile(text: str, *, where: str = "data file") -> Dataset:
    """Parse and validate TOML text; `where` names the file in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"{where}: is not valid TOML: {exc}") from None
    return parse_document(doc, where=where)


def parse_document(doc: dict[str, Any], *, where: str = "data file") -> Dataset:
    """Validate an already-parsed TOML document and encode its records."""
    records: Dataset = {}
    members: list[Member] = []
    with_pins: list[Member | Booking] = []
    pin_min = DEFAULT_PIN_MIN
    for kind, value in doc.items():
        if kind == "site":
            if not isinstance(value, dict):
                raise DataFileError(f"{where}: site: must be one [site] table")
            tables: list[Any] = [value]
        elif isinstance(value, list) and all(isinstance(t, dict) for t in value):
            tables = value
        else:
            raise DataFileError(f"{where}: {kind}: must be an array of tables ([[{kind}]])")
        for i, table in enumerate(tables):
            key, rec, record = _record(kind, i, table, where)
            if key in records:
                raise DataFileError(f"{where}: {kind} {key[1]!r}: id is used twice")
            records[key] = rec
            if isinstance(record, Member):
                members.append(record)
            if isinstance(record, Member | Booking):
                with_pins.append(record)
            elif isinstance(record, Site):
                pin_min = record.pin_min
    for record in with_pins:
        short = pin_too_short(record, pin_min)
        if short is not None:
            raise DataFileError(f"{where}: {short}")
    _check_credentials(members, where)
    return records


def _record(kind: str, index: int, table: dict[str, Any], where: str) -> tuple[Key, bytes, Any]:
    """One table -> (key, rec, parsed record)."""
    id = table.get("id", "site" if kind == "site" else None)
    if not isinstance(id, str):
        raise DataFileError(f"{where}: {kind}[{index}]: needs a text 'id'")
    try:
        check_key(kind, id)
    except RemoteError as exc:
        raise DataFileError(f"{where}: {exc}") from None
    body = {name: value for name, value in table.items() if name != "id"}
    for name, value in body.items():
        if _has_datetime(value):
            raise DataFileError(
                f"{where}: {kind} {id!r}: field {name!r} is a TOML date or time; write "
                'times as integer Unix seconds and dates as quoted "YYYY-MM-DD" text'
            )
    rec: bytes = cbor2.dumps(body)
    if len(rec) > MAX_RECORD:
        raise DataFileError(f"{where}: {kind} {id!r}: is {len(rec)} bytes, over {MAX_RECORD}")
    try:
        # Unknown kinds are not decoded by parse_record; the wire limits (depth,
        # no tags) still apply to them.
        loads_strict(rec, what=f"{kind} {id!r}")
        record = parse_record(kind, id, rec)
    except RemoteError as exc:
        raise DataFileError(f"{where}: {exc}") from None
    return (kind, id), rec, record


def _has_datetime(value: Any) -> bool:
    if isinstance(value, dt.date | dt.time):  # datetime is a subclass of date
        return True
    if isinstance(value, list):
        return any(_has_datetime(v) for v in value)
    if isinstance(value, dict):
        return any(_has_datetime(v) for v in value.values())
    return False


def _check_credentials(members: list[Member], where: str) -> None:
    """A credential belongs to at most one member (PROTOCOL.md s3). On the wire the
    later put wins; in a snapshot there is no "later", so which member a shared tag
    opens for would depend on page order. Refuse the file instead."""
    holders: dict[tuple[str, str], str] = {}
    for member in members:
        for cred in member.credentials():
            other = holders.setdefault(cred, member.id)
            if other != member.id:
                raise DataFileError(
                    f"{where}: member {member.id!r}: field 'creds': {cred[0]} {cred[1]!r} "
                    f"also belongs to member {other!r}"
                )
