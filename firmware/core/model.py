"""Record bodies from the hub -> typed, validated, frozen records (PROTOCOL.md s3).

`parse_record(kind, id, rec)` decodes the exact `rec` bytes and returns one of the
record classes below. A bad field raises `RemoteError` naming kind, id and field.
Unknown fields are kept in `extra`; unknown kinds become `OtherRecord`.

Every record carries `part`, its share of the dataset digest, so the store can add
and remove it in O(1) without keeping the bytes in memory.

Longer than 400 lines on purpose: one table, every record kind of the protocol
with its fields, defaults and bounds, read side by side with PROTOCOL.md s3.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.core.codec import UNUSUAL, StrictReader, loads_strict
from firmware.core.errors import RemoteError
from firmware.core.limits import CREDKINDS, MAX_ID_LEN, MAX_UNLOCK_S, MAX_VALUE_LEN

DIGEST_MOD = 1 << 128
_sha256 = hashlib.sha256
_CREDKIND_NAMES = {kind: kind for kind in CREDKINDS}
DOOR_MODES = ("normal", "locked", "unlocked")
DEFAULT_PIN_MIN = 4  # the site record's `pin_min` when it has none
MAX_PIN_MIN = 32  # the longest PIN a kiosk screen takes
ALL_DAYS = 127  # Mon=1 .. Sun=64
_ID_RE = re.compile(rf"[^\x00]{{1,{MAX_ID_LEN}}}")
# date.fromisoformat also takes ISO week dates ("2024-W01-1"); the protocol says YYYY-MM-DD.
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

Extra: TypeAlias = Mapping[str, Any] | None


def digest_part(kind: str, id: str, rec: bytes) -> int:
    """`H(kind, id, rec)` of PROTOCOL.md s3 as an integer."""
    return int.from_bytes(
        _sha256(b"".join((kind.encode(), b"\0", id.encode(), b"\0", rec))).digest()[:16]
    )


def digest_bytes(total: int) -> bytes:
    """A digest sum as the 16 big-endian bytes that travel on the wire."""
    return (total % DIGEST_MOD).to_bytes(16, "big")


@dataclass(frozen=True, slots=True)
class Site:
    """The facility: its time zone, booking-PIN / check-in windows, and the
    shortest PIN it accepts (`pin_min`, see `pin_too_short`)."""

    kind: ClassVar[str] = "site"

    id: str
    tz: str
    zone: ZoneInfo
    name: str
    pin_before_s: int
    pin_after_s: int
    checkin_before_s: int
    pin_min: int
    extra: Extra
    part: int


DEFAULT_SITE = Site("site", "UTC", ZoneInfo("UTC"), "", 1800, 900, 1800, DEFAULT_PIN_MIN, None, 0)


@dataclass(frozen=True, slots=True)
class Member:
    """A club member. `creds` is flat: (credkind, value, credkind, value, ...),
    which halves its memory against a tuple of pairs at a million credentials."""

    kind: ClassVar[str] = "member"

    id: str
    name: str
    active: bool
    valid_from: int | None
    valid_until: int | None
    groups: tuple[str, ...]
    creds: tuple[str, ...]
    credit: int
    extended: bool
    extra: Extra
    part: int

    def credentials(self) -> list[tuple[str, str]]:
        """The member's credentials as (credkind, value) pairs."""
        c = self.creds
        return [(c[i], c[i + 1]) for i in range(0, len(c), 2)]


class _MemberDraft:
    """A `Member` being built: the same slots, not frozen, so that its __init__
    stores each field directly. The frozen dataclass's own __init__ goes through
    object.__setattr__ per field, an eleventh of a member's build at a full sync.
    `_member_of` turns the draft into a `Member` by assigning its class, which
    CPython allows between classes of the same slots (the same memory layout)."""

    __slots__ = Member.__slots__

    def __init__(
        self,
        id: str,
        name: str,
        active: bool,
        valid_from: int | None,
        valid_until: int | None,
        groups: tuple[str, ...],
        creds: tuple[str, ...],
        credit: int,
        extended: bool,
        part: int,
    ) -> None:
        self.id = id
        self.name = name
        self.active = active
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.groups = groups
        self.creds = creds
        self.credit = credit
        self.extended = extended
        self.extra = None
        self.part = part


_DRAFTED = ("id", "name", "active", "valid_from", "valid_until", "groups", "creds", "credit")
if Member.__slots__ != (*_DRAFTED, "extended", "extra", "part"):  # pragma: no cover
    raise ImportError("Member's fields changed: _MemberDraft must set every one")


def _member_of(
    id: str,
    name: str,
    active: bool,
    valid_from: int | None,
    valid_until: int | None,
    groups: tuple[str, ...],
    creds: tuple[str, ...],
    credit: int,
    extended: bool,
    part: int,
) -> Member:
    """`Member(id, name, ..., extended, None, part)`, built in a fifth of the time."""
    draft: Any = _MemberDraft(
        id, name, active, valid_from, valid_until, groups, creds, credit, extended, part
    )
    draft.__class__ = Member
    member: Member = draft
    return member


@dataclass(frozen=True, slots=True)
class Group:
    """Access group: which doors and lights its members may use, and when."""

    kind: ClassVar[str] = "group"

    id: str
    doors: frozenset[str]
    lights: frozenset[str]
    schedule: str | None
    extra: Extra
    part: int


@dataclass(frozen=True, slots=True)
class Window:
    """Open on the days in `days` (Mon=1 .. Sun=64) from `start_min` to `end_min`
    minutes after local midnight; `end_min` > 1440 runs into the next day."""

    days: int
    start_min: int
    end_min: int


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly windows in site time, minus closed dates."""

    kind: ClassVar[str] = "schedule"

    id: str
    windows: tuple[Window, ...]
    closed: frozenset[date]
    extra: Extra
    part: int


@dataclass(frozen=True, slots=True)
class Door:
    """A door's timings and mode."""

    kind: ClassVar[str] = "door"

    id: str
    name: str
    unlock_s: int
    extended_s: int
    held_s: int
    mode: str
    open_schedule: str | None
    extra: Extra
    part: int


@dataclass(frozen=True, slots=True)
class Light:
    """A court light circuit: booking lead/lag, warning, check-in, self-activation."""

    kind: ClassVar[str] = "light"

    id: str
    name: str
    lead_s: int
    lag_s: int
    warn_s: int
    checkin: bool
    price: int
    block_s: int
    max_s: int
    schedule: str | None
    extra: Extra
    part: int


@dataclass(frozen=True, slots=True)
class Booking:
    """A court booking; its `pin` opens its doors and lights around its time."""

    kind: ClassVar[str] = "booking"

    id: str
    lights: tuple[str, ...]
    doors: tuple[str, ...]
    start: int
    end: int
    member: str | None
    pin: str | None
    extra: Extra
    part: int


@dataclass(frozen=True, slots=True)
class OtherRecord:
    """A record of a kind this controller does not know: stored, hashed, ignored."""

    kind: str
    id: str
    rec: bytes
    part: int


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record whose body failed validation: counted in the digest, never used
    for a decision (so a bad member record fails closed).

    `held`: a member or booking that is valid on its own but has a PIN shorter
    than the site's `pin_min`; kept so that the store can take it back if the
    site's minimum is lowered (see `Store`)."""

    kind: str
    id: str
    error: str
    part: int
    held: Member | Booking | None = None


Record: TypeAlias = Site | Member | Group | Schedule | Door | Light | Booking | OtherRecord


# --- field readers -------------------------------------------------------------------


class _Body:
    """Reads typed fields out of one record body, tracking which ones were known."""

    __slots__ = ("body", "id", "kind", "seen")

    def __init__(self, kind: str, id: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise RemoteError(f"{kind} {id!r}: body is not a map", kind=kind, id=id)
        for key in body:
            if not isinstance(key, str):
                raise RemoteError(
                    f"{kind} {id!r}: map key {key!r} is not text", kind=kind, id=id, field=None
                )
        self.kind = kind
        self.id = id
        self.body: dict[str, Any] = body
        self.seen: set[str] = set()

    def bad(self, field: str, problem: str) -> RemoteError:
        return RemoteError(
            f"{self.kind} {self.id!r}: field {field!r} {problem}",
            kind=self.kind,
            id=self.id,
            field=field,
        )

    def get(self, field: str) -> Any:
        self.seen.add(field)
        return self.body.get(field)

    def integer(self, field: str, default: int, *, low: int = 0, high: int = 1 << 62) -> int:
        value = self.get(field)
        if value is None:
            return default
        if type(value) is not int:
            raise self.bad(field, f"must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.bad(field, f"must be between {low} and {high}, got {value}")
        return value

    def opt_time(self, field: str) -> int | None:
        if self.get(field) is None:
            return None
        return self.integer(field, 0, low=-(1 << 62))

    def boolean(self, field: str, default: bool) -> bool:
        value = self.get(field)
        if value is None:
            return default
        if type(value) is not bool:
            raise self.bad(field, f"must be true or false, got {type(value).__name__}")
        return value

    def text(self, field: str, default: str, *, max_len: int = 1024) -> str:
        value = self.get(field)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.bad(field, f"must be text, got {type(value).__name__}")
        if len(value) > max_len:
            raise self.bad(field, f"is longer than {max_len} characters")
        return value

    def ref(self, field: str) -> str | None:
        """An optional reference to another record's id."""
        value = self.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise self.bad(field, "must be a record id (1 to 128 characters) or null")
        return value

    def refs(self, field: str) -> tuple[str, ...]:
        value = self.get(field)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.bad(field, f"must be a list of ids, got {type(value).__name__}")
        for item in value:
            if not isinstance(item, str) or not _ID_RE.fullmatch(item):
                raise self.bad(field, f"has an entry that is not a record id: {item!r}")
        return tuple(dict.fromkeys(value))

    def extra(self) -> Extra:
        unknown = {k: v for k, v in self.body.items() if k not in self.seen}
        return unknown or None


# Many members share a group list; one tuple per distinct list saves memory at 1M.
_GROUP_TUPLES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared(groups: tuple[str, ...]) -> tuple[str, ...]:
    if len(_GROUP_TUPLES) > 100_000:
        _GROUP_TUPLES.clear()
    return _GROUP_TUPLES.setdefault(groups, groups)


# Credits and validity times repeat a lot across members; sharing one int object
# per value saves ~30 bytes a member (Python caches only -5..256 itself).
_INTS: dict[int, int] = {}


def _shared_int(value: int | None) -> int | None:
    if value is None:
        return None
    if len(_INTS) > 200_000:
        _INTS.clear()
    return _INTS.setdefault(value, value)


# Members' names repeat (families, common names): one str per distinct name saves
# ~64 bytes a member that shares one. Emptied when large, like _INTS: a club of
# unique names then costs a lookup a member and a bounded dict, nothing more.
_NAMES: dict[str, str] = {}


def _shared_name(name: str) -> str:
    if len(_NAMES) > 100_000:
        _NAMES.clear()
    return _NAMES.setdefault(name, name)


def _site(b: _Body, part: int) -> Site:
    tz = b.text("tz", "UTC", max_len=64)
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise b.bad("tz", f"is not a known IANA time zone: {tz!r}") from None
    return Site(
        b.id,
        tz,
        zone,
        b.text("name", ""),
        b.integer("pin_before_s", 1800, high=7 * 86400),
        b.integer("pin_after_s", 900, high=7 * 86400),
        b.integer("checkin_before_s", 1800, high=7 * 86400),
        b.integer("pin_min", DEFAULT_PIN_MIN, low=1, high=MAX_PIN_MIN),
        b.extra(),
        part,
    )


def _member(b: _Body, part: int) -> Member:
    raw = b.get("creds")
    creds: list[str] = []
    if raw is not None:
        if not isinstance(raw, list):
            raise b.bad("creds", "must be a list of [credkind, value] pairs")
        for pair in raw:
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not isinstance(pair[1], str)
            ):
                raise b.bad("creds", f"has an entry that is not a [credkind, value] pair: {pair!r}")
            kind, value = pair
            if kind not in CREDKINDS:
                raise b.bad("creds", f"has an unknown credkind {kind!r}")
            if not 0 < len(value) <= MAX_VALUE_LEN:
                raise b.bad("creds", f"has a {kind} value of bad length {len(value)}")
            if kind == "pin" and not value.isdecimal():
                raise b.bad("creds", "has a pin that is not all digits")
            # One shared str per credkind, not one decoded per member (112 bytes each).
            creds += (_CREDKIND_NAMES[kind], value)
    return Member(
        b.id,
        _shared_name(b.text("name", "")),
        b.boolean("active", True),
        _shared_int(b.opt_time("from")),
        _shared_int(b.opt_time("until")),
        _shared(b.refs("groups")),
        tuple(creds),
        _shared_int(b.integer("credit", 0, low=-(1 << 62))) or 0,
        b.boolean("extended", False),
        b.extra(),
        part,
    )


_MEMBER_FIELDS = frozenset(
    ("name", "active", "from", "until", "groups", "creds", "credit", "extended")
)
_LOW, _HIGH = -(1 << 62), 1 << 62  # the bounds of `opt_time` and `credit` in `_member`


def _usual_member(id: str, body: Any, part: int) -> Member | None:
    """The member of a body of the usual shape, read inline; or None whenever
    anything in it is unusual (a bad or unknown field, a repeated group), for
    `_member` to read it again.

    A million members go through here at a full sync. `_member` stays the
    definition: this accepts a subset of what it accepts and builds the same
    record, so every bad record still gets `_member`'s error, word for word.
    """
    if type(body) is not dict or not body.keys() <= _MEMBER_FIELDS:
        return None
    get = body.get
    name = get("name")
    if name is None:
        name = ""
    elif type(name) is not str or len(name) > 1024:
        return None
    else:
        name = _NAMES.setdefault(name, name)
    active = get("active")
    if active is None:
        active = True
    elif type(active) is not bool:
        return None
    start = get("from")
    if start is not None:
        if type(start) is not int or not _LOW <= start <= _HIGH:
            return None
        start = _INTS.setdefault(start, start)
    until = get("until")
    if until is not None:
        if type(until) is not int or not _LOW <= until <= _HIGH:
            return None
        until = _INTS.setdefault(until, until)
    credit = get("credit")
    if credit is None:
        credit = 0
    elif type(credit) is not int or not _LOW <= credit <= _HIGH:
        return None
    else:
        credit = _INTS.setdefault(credit, credit)
    extended = get("extended")
    if extended is None:
        extended = False
    elif type(extended) is not bool:
        return None
    groups: Any = get("groups")
    if groups is None:
        groups = ()
    elif type(groups) is not list:
        return None
    else:
        # Only checked, repeat-free lists are ever shared (`_shared`), so a hit
        # is a valid list; a miss is checked here once.
        groups = tuple(groups)
        try:
            shared = _GROUP_TUPLES.get(groups)
        except TypeError:  # an entry that is a list or a map, not an id
            return None
        if shared is None:
            for group in groups:
                if type(group) is not str or not _ID_RE.fullmatch(group):
                    return None
            if len(set(groups)) != len(groups):
                return None
            shared = _shared(groups)
        groups = shared
    raw = get("creds")
    creds: tuple[str, ...] = ()
    if raw is not None:
        if type(raw) is not list:
            return None
        flat: list[str] = []
        for pair in raw:
            if type(pair) is not list or len(pair) != 2:
                return None
            kind, value = pair
            if type(kind) is not str or type(value) is not str:
                return None
            credkind = _CREDKIND_NAMES.get(kind)
            if credkind is None or not 0 < len(value) <= MAX_VALUE_LEN:
                return None
            if credkind == "pin" and not value.isdecimal():
                return None
            flat += (credkind, value)
        creds = tuple(flat)
    # The shared values are emptied when they grow large, as in `_member`.
    if len(_INTS) > 200_000:
        _INTS.clear()
    if len(_NAMES) > 100_000:
        _NAMES.clear()
    draft: Any = _MemberDraft(id, name, active, start, until, groups, creds, credit, extended, part)
    draft.__class__ = Member  # as in `_member_of`, without the call
    return draft  # type: ignore[no-any-return]


def _group(b: _Body, part: int) -> Group:
    return Group(
        b.id,
        frozenset(b.refs("doors")),
        frozenset(b.refs("lights")),
        b.ref("schedule"),
        b.extra(),
        part,
    )


def _schedule(b: _Body, part: int) -> Schedule:
    raw = b.get("windows")
    windows: list[Window] = []
    if raw is not None:
        if not isinstance(raw, list):
            raise b.bad("windows", "must be a list of [days, start_min, end_min]")
        for w in raw:
            if not (isinstance(w, list) and len(w) == 3 and all(type(x) is int for x in w)):
                raise b.bad("windows", f"has an entry that is not [days, start, end]: {w!r}")
            days, start, end = w
            if not 0 < days <= ALL_DAYS:
                raise b.bad("windows", f"has days {days} outside 1..127")
            if not 0 <= start < 1440 or not start < end <= start + 1440:
                raise b.bad("windows", f"has a window {start}..{end} that is not a valid range")
            windows.append(Window(days, start, end))
    raw_except = b.get("except")
    closed: set[date] = set()
    if raw_except is not None:
        if not isinstance(raw_except, list):
            raise b.bad("except", "must be a list of YYYY-MM-DD dates")
        for d in raw_except:
            try:
                if not isinstance(d, str) or not _DATE_RE.fullmatch(d):
                    raise ValueError
                closed.add(date.fromisoformat(d))
            except ValueError:
                raise b.bad("except", f"has an entry that is not YYYY-MM-DD: {d!r}") from None
    return Schedule(b.id, tuple(windows), frozenset(closed), b.extra(), part)


def _door(b: _Body, part: int) -> Door:
    mode = b.text("mode", "normal")
    if mode not in DOOR_MODES:
        raise b.bad("mode", f"must be one of {', '.join(DOOR_MODES)}, got {mode!r}")
    return Door(
        b.id,
        b.text("name", ""),
        b.integer("unlock_s", 5, high=MAX_UNLOCK_S),
        b.integer("extended_s", 30, high=MAX_UNLOCK_S),
        b.integer("held_s", 30, high=MAX_UNLOCK_S),
        mode,
        b.ref("open_schedule"),
        b.extra(),
        part,
    )


def _light(b: _Body, part: int) -> Light:
    return Light(
        b.id,
        b.text("name", ""),
        b.integer("lead_s", 300, high=86400),
        b.integer("lag_s", 300, high=86400),
        b.integer("warn_s", 300, high=86400),
        b.boolean("checkin", False),
        b.integer("price", 0),
        b.integer("block_s", 1800, low=1, high=86400),
        b.integer("max_s", 7200, low=1, high=7 * 86400),
        b.ref("schedule"),
        b.extra(),
        part,
    )


def _booking(b: _Body, part: int) -> Booking:
    start = b.integer("start", 0, low=-(1 << 62))
    if b.body.get("start") is None:
        raise b.bad("start", "is required")
    end = b.integer("end", 0, low=-(1 << 62))
    if b.body.get("end") is None:
        raise b.bad("end", "is required")
    if end <= start:
        raise b.bad("end", "must be after start")
    pin = b.ref("pin")
    if pin is not None and not (pin.isdecimal() and len(pin) <= MAX_VALUE_LEN):
        raise b.bad("pin", "must be digits")
    return Booking(
        b.id,
        b.refs("lights"),
        b.refs("doors"),
        start,
        end,
        b.ref("member"),
        pin,
        b.extra(),
        part,
    )


_PARSERS: dict[str, Callable[[_Body, int], Record]] = {
    "site": _site,
    "member": _member,
    "group": _group,
    "schedule": _schedule,
    "door": _door,
    "light": _light,
    "booking": _booking,
}
KNOWN_KINDS = frozenset(_PARSERS)


def check_key(kind: object, id: object) -> tuple[str, str]:
    """Validate a record's (kind, id) pair as it arrives on the wire."""
    # What _ID_RE says, without the regex: checked for every record of a sync.
    if not (isinstance(kind, str) and 0 < len(kind) <= MAX_ID_LEN and "\x00" not in kind):
        raise RemoteError(f"record kind {kind!r} is not 1 to 128 characters of text")
    if not (isinstance(id, str) and 0 < len(id) <= MAX_ID_LEN and "\x00" not in id):
        raise RemoteError(f"{kind} id {id!r} is not 1 to 128 characters of text", kind=kind)
    return kind, id


def parse_record(kind: str, id: str, rec: bytes, reader: StrictReader | None = None) -> Record:
    """Decode and validate one record; raise `RemoteError` naming what is wrong.

    `reader`: the caller's own decoder, reused across the records it parses (one
    per thread); a fresh one otherwise.
    """
    check_key(kind, id)
    if not isinstance(rec, bytes):
        raise RemoteError(f"{kind} {id!r}: rec must be a byte string", kind=kind, id=id)
    # digest_part, inline (a call less, once per record of a sync)
    part = int.from_bytes(
        _sha256(b"".join((kind.encode(), b"\0", id.encode(), b"\0", rec))).digest()[:16]
    )
    parser = _PARSERS.get(kind)
    if parser is None:
        return OtherRecord(kind, id, rec, part)
    if kind == "site" and id != "site":
        raise RemoteError(f"site record must have id 'site', got {id!r}", kind=kind, id=id)
    body = (reader or StrictReader()).quick(rec)
    if body is UNUSUAL:
        try:
            body = loads_strict(rec, what=f"{kind} {id!r}")
        except RemoteError as exc:
            raise RemoteError(str(exc), kind=kind, id=id) from None
    if kind == "member":
        member = _usual_member(id, body, part)
        if member is not None:
            return member
    return parser(_Body(kind, id, body), part)


def pin_too_short(record: Member | Booking, pin_min: int) -> RemoteError | None:
    """Why `record` is a bad record at a site whose shortest PIN is `pin_min`
    (a PIN shorter than that), or None. A short PIN is a guess away: it is
    refused whole, like any record that fails validation."""
    if isinstance(record, Member):
        c = record.creds
        for i in range(0, len(c), 2):
            if c[i] == "pin" and len(c[i + 1]) < pin_min:
                return RemoteError(
                    f"member {record.id!r}: field 'creds' has a pin of {len(c[i + 1])} "
                    f"digits, shorter than the site's pin_min {pin_min}",
                    kind="member",
                    id=record.id,
                    field="creds",
                )
        return None
    if record.pin is not None and len(record.pin) < pin_min:
        return RemoteError(
            f"booking {record.id!r}: field 'pin' has {len(record.pin)} digits, shorter "
            f"than the site's pin_min {pin_min}",
            kind="booking",
            id=record.id,
            field="pin",
        )
    return None


def reject(kind: str, id: str, rec: bytes, error: RemoteError) -> RejectedRecord:
    """Stand-in for a record that failed `parse_record`, still counted in the digest."""
    return RejectedRecord(kind, id, str(error), digest_part(kind, id, rec))
