"""The live dataset: records, the indexes a decision needs, and the digest.

A `Store` changes only through `apply` (one delta, all ops or none) and is built
whole by `Store.build` from a full record set, aside from the live one; the owner
swaps its reference in one step. The digest is kept incrementally (PROTOCOL.md s3).

A member or booking with a PIN shorter than the site record's `pin_min` is a bad
record (`pin_too_short`): it is kept as a `RejectedRecord` holding the parsed
record, and grants nothing. Records are parsed one by one, but this check needs
the site: the store applies it whenever a record goes in, and checks every PIN
again when the site's minimum changes (a snapshot may bring the site after the
members). A delta is refused whole when it brings such a record, or when it
changes `pin_min` in a way that changes which stored records are valid: the full
sync that follows builds the store again, reporting every rejected record.

Longer than 400 lines on purpose: the records, every index and the digest change
together in `_put` and `_remove`; cut in two, each half would reach into the
other's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from firmware.core.codec import StrictReader
from firmware.core.errors import RemoteError
from firmware.core.model import (
    DEFAULT_PIN_MIN,
    DEFAULT_SITE,
    DIGEST_MOD,
    Booking,
    Door,
    Group,
    Light,
    Member,
    OtherRecord,
    Record,
    RejectedRecord,
    Schedule,
    Site,
    check_key,
    digest_bytes,
    digest_part,
    parse_record,
    pin_too_short,
    reject,
)


@dataclass(frozen=True, slots=True)
class Put:
    """Create or replace record (kind, id) with the body bytes `rec`.

    `parsed`: the record as `parse_record` made it, or the `RemoteError` it
    raised; None when not parsed yet. `parse_ops` parses as it reads a delta,
    on whichever thread reads it, so that applying the delta on the loop is only
    indexing (a 1,000-op delta's decoding and hashing would otherwise hold up
    every timer for tens of milliseconds)."""

    kind: str
    id: str
    rec: bytes
    parsed: Record | RemoteError | None = field(default=None, compare=False, repr=False)

    def record(self) -> Record:
        """The parsed record; raises its `RemoteError` when it is bad."""
        parsed = self.parsed
        if parsed is None:
            return parse_record(self.kind, self.id, self.rec)
        if isinstance(parsed, RemoteError):
            raise parsed.with_traceback(None)
        return parsed


def parsed_put(kind: str, id: str, rec: bytes, reader: StrictReader | None = None) -> Put:
    """A `Put` with its record parsed now (see `Put.parsed`); `reader` as in
    `parse_record`."""
    parsed: Record | RemoteError
    try:
        parsed = parse_record(kind, id, rec, reader)
    except RemoteError as exc:
        parsed = exc
    return Put(kind, id, rec, parsed)


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove record (kind, id); removing an absent record changes nothing."""

    kind: str
    id: str


Op: TypeAlias = Put | Delete


@dataclass(frozen=True, slots=True)
class Conflict:
    """A credential claimed by two members: `winner` (the later put) now holds it."""

    credkind: str
    value: str
    loser: str
    winner: str


def parse_ops(raw: Any) -> list[Op]:
    """Turn a delta's wire `ops` list into `Put`/`Delete` ops, or raise `RemoteError`
    for a malformed op. Each put's record is parsed here (`Put.parsed`); a bad
    record raises only when the delta is applied, as it would unparsed."""
    if not isinstance(raw, list):
        raise RemoteError("delta ops must be a list")
    ops: list[Op] = []
    reader = StrictReader()
    for i, op in enumerate(raw):
        if isinstance(op, list) and len(op) == 4 and op[0] == "put":
            kind, id = check_key(op[1], op[2])
            if not isinstance(op[3], bytes):
                raise RemoteError(f"op {i}: put {kind} {id!r}: rec is not a byte string")
            ops.append(parsed_put(kind, id, op[3], reader))
        elif isinstance(op, list) and len(op) == 3 and op[0] == "del":
            ops.append(Delete(*check_key(op[1], op[2])))
        else:
            raise RemoteError(f"op {i} is neither ['put', kind, id, rec] nor ['del', kind, id]")
    return ops


def _add(index: dict[str, dict[str, Any]], key: str, id: str, value: Any) -> None:
    index.setdefault(key, {})[id] = value


def _discard(index: dict[str, dict[str, Any]], key: str, id: str, _value: Any = None) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(id, None)
        if not bucket:
            del index[key]


@dataclass(frozen=True, slots=True)
class Built:
    """What `Store.build` made, and what it had to reject along the way."""

    store: Store
    rejected: list[RejectedRecord]
    conflicts: list[Conflict]


class StoreBuilder:
    """Builds a new `Store` a slice at a time, so the one event loop can go on
    deciding between slices of a large full sync. Whether the garbage collector
    runs meanwhile is the caller's choice (`firmware.collector`)."""

    def __init__(self, previous: Store | None = None) -> None:
        """With `previous` (the live store), a record whose bytes are unchanged is
        reused rather than decoded again: a twice-daily full sync then costs one
        hash per record and little memory beyond the live data."""
        self._store = Store()
        self._previous = previous
        self._conflicts: list[Conflict] = []
        self._reader = StrictReader()

    @property
    def records(self) -> int:
        """Records fed so far."""
        return len(self._store)

    @property
    def digest(self) -> bytes:
        """Digest of the records fed so far."""
        return self._store.digest

    def feed(self, records: Iterable[tuple[str, str, bytes]]) -> None:
        """Parse and index more records; bad ones become `RejectedRecord`s."""
        store = self._store
        previous = self._previous
        reader = self._reader
        conflicts = self._conflicts
        members = store.members
        others = store.others
        for kind, id, rec in records:
            record: Record | RejectedRecord | None = None
            if previous is not None and isinstance(kind, str) and isinstance(id, str):
                old = previous.get(kind, id)
                # Records are frozen, so two stores may share one; equal parts
                # mean equal bytes (SHA-256 over kind, id and rec).
                if old is not None and old.part == digest_part(kind, id, rec):
                    record = old
            if record is None:
                try:
                    record = parse_record(kind, id, rec, reader)
                except RemoteError as exc:
                    record = reject(kind, id, rec, exc)
            # Most records of a sync are members met for the first time whose PINs
            # the site allows: for them `_put` has nothing to remove or recheck.
            if not (
                type(record) is Member
                and id not in members
                and (not others or ("member", id) not in others)
                and store._add_member(record, conflicts)
            ):
                store._put(record, conflicts)

    def finish(self) -> Built:
        """The finished store; the builder must not be fed after this."""
        store = self._store
        # Collected at the end: a site record fed late may reject or take back
        # records for their PIN's length (see the module docstring).
        rejected = [r for r in store.others.values() if isinstance(r, RejectedRecord)]
        store._sum %= DIGEST_MOD  # `_add_member` leaves it unreduced
        return Built(store, rejected, self._conflicts)


class Store:
    """One complete dataset in memory, indexed for `decide`.

    Read the public dicts freely; change them only through `apply` and `build`.
    """

    def __init__(self) -> None:
        self.site: Site = DEFAULT_SITE
        self.members: dict[str, Member] = {}
        self.groups: dict[str, Group] = {}
        self.schedules: dict[str, Schedule] = {}
        self.doors: dict[str, Door] = {}
        self.lights: dict[str, Light] = {}
        self.bookings: dict[str, Booking] = {}
        self.others: dict[tuple[str, str], OtherRecord | RejectedRecord] = {}
        # credkind -> value -> member
        self.credentials: dict[str, dict[str, Member]] = {"tag": {}, "card": {}, "pin": {}}
        # door/light id -> {group id: group}
        self.door_groups: dict[str, dict[str, Group]] = {}
        self.light_groups: dict[str, dict[str, Group]] = {}
        # pin / member / light / door -> {booking id: booking}
        self.bookings_by_pin: dict[str, dict[str, Booking]] = {}
        self.bookings_by_member: dict[str, dict[str, Booking]] = {}
        self.bookings_by_light: dict[str, dict[str, Booking]] = {}
        self.bookings_by_door: dict[str, dict[str, Booking]] = {}
        self._sum = 0
        self._site_part = 0
        self.facility_changes = 0
        """Puts and removals of records of every kind but `member`: what door
        modes, light periods and schedules depend on. `Facility.data_changed`
        does nothing while it stays the same (a stream of member deltas)."""
        self._tables: dict[str, dict[str, Any]] = {
            "member": self.members,
            "group": self.groups,
            "schedule": self.schedules,
            "door": self.doors,
            "light": self.lights,
            "booking": self.bookings,
        }

    def retire(self) -> list[dict[Any, Any]]:
        """Every dict of this store, the large inner ones first, for the caller
        to empty a slice at a time once the store is no longer used (see
        `SyncSession`): emptied at once, 100,000 members are one long stretch
        of C holding the interpreter lock."""
        inner: list[dict[Any, Any]] = [
            *self.credentials.values(),
            *self.door_groups.values(),
            *self.light_groups.values(),
            *self.bookings_by_pin.values(),
            *self.bookings_by_member.values(),
            *self.bookings_by_light.values(),
            *self.bookings_by_door.values(),
        ]
        outer: list[dict[Any, Any]] = [
            self.credentials,
            self.door_groups,
            self.light_groups,
            self.bookings_by_pin,
            self.bookings_by_member,
            self.bookings_by_light,
            self.bookings_by_door,
            *self._tables.values(),
            self.others,
        ]
        return [*inner, *outer]

    # --- reading ------------------------------------------------------------------

    @property
    def digest(self) -> bytes:
        """The dataset digest, 16 big-endian bytes."""
        return digest_bytes(self._sum)

    def __len__(self) -> int:
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        """Number of records by kind (rejected records under their own kind)."""
        counts = {
            "site": 1 if self._site_part else 0,
            "member": len(self.members),
            "group": len(self.groups),
            "schedule": len(self.schedules),
            "door": len(self.doors),
            "light": len(self.lights),
            "booking": len(self.bookings),
        }
        for kind, _id in self.others:
            counts[kind] = counts.get(kind, 0) + 1
        return {k: n for k, n in counts.items() if n}

    def get(self, kind: str, id: str) -> Record | RejectedRecord | None:
        """The record stored under (kind, id), if any."""
        if kind == "site" and id == "site":
            return self.site if self._site_part else self.others.get((kind, id))
        table = self._table(kind)
        if table is not None and id in table:
            record: Record = table[id]
            return record
        return self.others.get((kind, id))

    def recomputed_digest(self) -> bytes:
        """The digest summed afresh from every record's part (a self-check)."""
        total = self._site_part
        for table in self._tables.values():
            for record in table.values():
                total += record.part
        total += sum(r.part for r in self.others.values())
        return digest_bytes(total)

    # --- changing -----------------------------------------------------------------

    @classmethod
    def build(cls, records: Iterable[tuple[str, str, bytes]]) -> Built:
        """Build a new store from a full record set, without touching any other.

        A record that fails validation is kept as a `RejectedRecord` (it counts in
        the digest, grants nothing) and listed in the result, as are conflicts.
        """
        builder = StoreBuilder()
        builder.feed(records)
        return builder.finish()

    def apply(self, ops: Sequence[Op]) -> list[Conflict]:
        """Apply one delta atomically: every record is parsed and checked first, so
        a bad one raises `RemoteError` before anything changes. Returns credential
        conflicts."""
        parsed: list[Record | Delete] = [op.record() if isinstance(op, Put) else op for op in ops]
        self._check_pins(parsed)
        conflicts: list[Conflict] = []
        for item in parsed:
            if isinstance(item, Delete):
                pin_min = self.site.pin_min
                self._remove(item.kind, item.id)
                if self.site.pin_min != pin_min:
                    self._recheck_pins(conflicts)
            else:
                self._put(item, conflicts)
        return conflicts

    def _check_pins(self, parsed: Sequence[Record | Delete]) -> None:
        """Raise `RemoteError` if the delta `parsed` brings a PIN shorter than the
        site's minimum after it, or changes that minimum so that a stored record
        would become bad or good: the full sync asked for then checks them all."""
        pin_min = self.site.pin_min
        for item in parsed:
            if isinstance(item, Site):
                pin_min = item.pin_min
            elif isinstance(item, Delete) and (item.kind, item.id) == ("site", "site"):
                pin_min = DEFAULT_PIN_MIN
        for item in parsed:
            if isinstance(item, Member | Booking):
                short = pin_too_short(item, pin_min)
                if short is not None:
                    raise short
        if pin_min != self.site.pin_min and self._pins_to_recheck(pin_min):
            raise RemoteError(
                f"site 'site': field 'pin_min' changes from {self.site.pin_min} to "
                f"{pin_min}, which changes which records are valid; a full sync checks "
                "them all",
                kind="site",
                id="site",
                field="pin_min",
            )

    def _pins_to_recheck(self, pin_min: int) -> list[Member | Booking | RejectedRecord]:
        """The records whose validity differs at a site minimum of `pin_min`: those
        with a shorter PIN, and rejected ones whose PINs would now do."""
        found: dict[tuple[str, str], Member | Booking | RejectedRecord] = {}
        for value, member in self.credentials["pin"].items():
            if len(value) < pin_min:
                found[("member", member.id)] = member
        for pin, bookings in self.bookings_by_pin.items():
            if len(pin) < pin_min:
                for booking in bookings.values():
                    found[("booking", booking.id)] = booking
        for key, other in self.others.items():
            if (
                isinstance(other, RejectedRecord)
                and other.held is not None
                and pin_too_short(other.held, pin_min) is None
            ):
                found[key] = other
        return list(found.values())

    def _recheck_pins(self, conflicts: list[Conflict]) -> None:
        """The site's `pin_min` changed: reject or take back what it concerns."""
        for record in self._pins_to_recheck(self.site.pin_min):
            self._put(record, conflicts)

    def _table(self, kind: str) -> dict[str, Any] | None:
        return self._tables.get(kind)

    def _put(self, record: Record | RejectedRecord, conflicts: list[Conflict]) -> None:
        if isinstance(record, RejectedRecord) and record.held is not None:
            record = record.held  # judged again against the site as it is now
        if isinstance(record, Member | Booking):
            short = pin_too_short(record, self.site.pin_min)
            if short is not None:
                record = RejectedRecord(record.kind, record.id, str(short), record.part, record)
        kind = record.kind
        pin_min = self.site.pin_min
        if kind != "member":
            self.facility_changes += 1
        self._remove(kind, record.id)
        self._sum = (self._sum + record.part) % DIGEST_MOD
        if isinstance(record, OtherRecord | RejectedRecord):
            self.others[(kind, record.id)] = record
        elif isinstance(record, Site):
            self.site = record
            self._site_part = record.part
            if record.pin_min != pin_min:
                self._recheck_pins(conflicts)
        elif isinstance(record, Member):
            self.members[record.id] = record
            self._index_member(record, conflicts)
        elif isinstance(record, Group):
            self.groups[record.id] = record
            for door in record.doors:
                _add(self.door_groups, door, record.id, record)
            for light in record.lights:
                _add(self.light_groups, light, record.id, record)
        elif isinstance(record, Booking):
            self.bookings[record.id] = record
            self._index_booking(record, add=True)
        else:
            table = self._table(kind)
            assert table is not None
            table[record.id] = record

    def _remove(self, kind: str, id: str) -> None:
        old: Record | RejectedRecord | None
        # Only ("site", "site") is the live site; any other site id can only be a
        # RejectedRecord in `others`, and must not take the real site with it.
        if kind == "site" and id == "site":
            old = self.site if self._site_part else None
            if old is not None:
                self.site = DEFAULT_SITE
                self._site_part = 0
        else:
            table = self._table(kind)
            old = table.pop(id, None) if table is not None else None
        if old is None:
            old = self.others.pop((kind, id), None)
            if old is None:
                return
        if kind != "member":
            self.facility_changes += 1
        self._sum = (self._sum - old.part) % DIGEST_MOD
        if isinstance(old, Member):
            creds = old.creds
            for i in range(0, len(creds), 2):
                index = self.credentials[creds[i]]
                if index.get(creds[i + 1]) is old:
                    del index[creds[i + 1]]
        elif isinstance(old, Group):
            for door in old.doors:
                _discard(self.door_groups, door, id)
            for light in old.lights:
                _discard(self.light_groups, light, id)
        elif isinstance(old, Booking):
            self._index_booking(old, add=False)

    def _add_member(self, member: Member, conflicts: list[Conflict]) -> bool:
        """`_put` of a member whose id is in no table, if its PINs are long
        enough; False (nothing done) if not. The digest sum is left unreduced
        (reduced when read)."""
        creds = member.creds
        pin_min = self.site.pin_min
        for i in range(0, len(creds), 2):
            if creds[i] == "pin" and len(creds[i + 1]) < pin_min:
                return False
        self._sum += member.part
        self.members[member.id] = member
        credentials = self.credentials
        for i in range(0, len(creds), 2):
            value = creds[i + 1]
            holder = credentials[creds[i]].setdefault(value, member)
            if holder is not member:  # held by another: `_index_member` says who wins
                self._index_member(member, conflicts)
                break
        return True

    def _index_member(self, member: Member, conflicts: list[Conflict]) -> None:
        creds = member.creds
        credentials = self.credentials
        for i in range(0, len(creds), 2):
            index = credentials[creds[i]]
            value = creds[i + 1]
            holder = index.setdefault(value, member)  # one lookup when it is free
            if holder is not member:
                if holder.id != member.id:
                    conflicts.append(Conflict(creds[i], value, holder.id, member.id))
                index[value] = member

    def _index_booking(self, booking: Booking, *, add: bool) -> None:
        change = _add if add else _discard
        bid = booking.id
        if booking.pin is not None:
            change(self.bookings_by_pin, booking.pin, bid, booking)
        if booking.member is not None:
            change(self.bookings_by_member, booking.member, bid, booking)
        for light in booking.lights:
            change(self.bookings_by_light, light, bid, booking)
        for door in booking.doors:
            change(self.bookings_by_door, door, bid, booking)
