"""Record parsing (PROTOCOL.md s3): defaults, every field, bad fields, unknown fields
and kinds, malformed bodies, and the per-record digest part."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.core.errors import RemoteError
from firmware.core.model import (
    KNOWN_KINDS,
    Booking,
    Door,
    Group,
    Light,
    Member,
    OtherRecord,
    Schedule,
    Site,
    Window,
    digest_bytes,
    digest_part,
    parse_record,
)
from tests.builders import rec


def expected_part(kind: str, id: str, body: bytes) -> int:
    """H(kind, id, rec) of PROTOCOL.md s3, written independently of the model."""
    h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + body).digest()
    return int.from_bytes(h[:16], "big")


def id_for(kind: str) -> str:
    return "site" if kind == "site" else f"{kind}-1"


# Bodies that every known kind accepts (booking needs start and end).
MINIMAL: dict[str, dict[str, Any]] = {
    "site": {},
    "member": {},
    "group": {},
    "schedule": {},
    "door": {},
    "light": {},
    "booking": {"start": 1000, "end": 2000},
}


def test_minimal_covers_every_known_kind() -> None:
    assert (
        set(MINIMAL)
        == KNOWN_KINDS
        == {
            "site",
            "member",
            "group",
            "schedule",
            "door",
            "light",
            "booking",
        }
    )


# --- defaults and full records -------------------------------------------------------


DEFAULTS: list[tuple[str, type, dict[str, Any]]] = [
    (
        "site",
        Site,
        {
            "tz": "UTC",
            "name": "",
            "pin_before_s": 1800,
            "pin_after_s": 900,
            "checkin_before_s": 1800,
        },
    ),
    (
        "member",
        Member,
        {
            "name": "",
            "active": True,
            "valid_from": None,
            "valid_until": None,
            "groups": (),
            "creds": (),
            "credit": 0,
            "extended": False,
        },
    ),
    ("group", Group, {"doors": frozenset(), "lights": frozenset(), "schedule": None}),
    ("schedule", Schedule, {"windows": (), "closed": frozenset()}),
    (
        "door",
        Door,
        {
            "name": "",
            "unlock_s": 5,
            "extended_s": 30,
            "held_s": 30,
            "mode": "normal",
            "open_schedule": None,
        },
    ),
    (
        "light",
        Light,
        {
            "name": "",
            "lead_s": 300,
            "lag_s": 300,
            "warn_s": 300,
            "checkin": False,
            "price": 0,
            "block_s": 1800,
            "max_s": 7200,
            "schedule": None,
        },
    ),
    (
        "booking",
        Booking,
        {"lights": (), "doors": (), "start": 1000, "end": 2000, "member": None, "pin": None},
    ),
]


@pytest.mark.parametrize(("kind", "cls", "expected"), DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_minimal_body_gets_protocol_defaults(
    kind: str, cls: type, expected: dict[str, Any]
) -> None:
    body = rec(**MINIMAL[kind])
    record = parse_record(kind, id_for(kind), body)
    assert type(record) is cls
    assert record.kind == kind
    assert record.id == id_for(kind)
    assert {name: getattr(record, name) for name in expected} == expected
    assert record.extra is None  # type: ignore[union-attr]
    assert record.part == expected_part(kind, id_for(kind), body)


def test_site_default_zone_is_utc() -> None:
    site = parse_record("site", "site", rec())
    assert isinstance(site, Site)
    assert site.zone.key == "UTC"


FULL: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "site",
        {
            "tz": "Europe/Berlin",
            "name": "TC Nord",
            "pin_before_s": 600,
            "pin_after_s": 300,
            "checkin_before_s": 0,
        },
        {
            "tz": "Europe/Berlin",
            "name": "TC Nord",
            "pin_before_s": 600,
            "pin_after_s": 300,
            "checkin_before_s": 0,
        },
    ),
    (
        "member",
        {
            "name": "Ada",
            "active": False,
            "from": 1_700_000_000,
            "until": -5,
            "groups": ["adults", "tennis"],
            "creds": [["tag", "33011:00119"], ["card", "04a1b2"], ["pin", "0042"]],
            "credit": -250,
            "extended": True,
        },
        {
            "name": "Ada",
            "active": False,
            "valid_from": 1_700_000_000,
            "valid_until": -5,
            "groups": ("adults", "tennis"),
            "creds": ("tag", "33011:00119", "card", "04a1b2", "pin", "0042"),
            "credit": -250,
            "extended": True,
        },
    ),
    (
        "group",
        {"doors": ["front", "back"], "lights": ["court1"], "schedule": "evenings"},
        {
            "doors": frozenset({"front", "back"}),
            "lights": frozenset({"court1"}),
            "schedule": "evenings",
        },
    ),
    (
        "schedule",
        {
            "windows": [[31, 480, 1320], [96, 1320, 1320 + 1440]],
            "except": ["2024-12-25", "2025-01-01"],
        },
        {
            "windows": (Window(31, 480, 1320), Window(96, 1320, 2760)),
            "closed": frozenset({date(2024, 12, 25), date(2025, 1, 1)}),
        },
    ),
    (
        "door",
        {
            "name": "Front",
            "unlock_s": 0,
            "extended_s": 86400,
            "held_s": 12,
            "mode": "locked",
            "open_schedule": "daytime",
        },
        {
            "name": "Front",
            "unlock_s": 0,
            "extended_s": 86400,
            "held_s": 12,
            "mode": "locked",
            "open_schedule": "daytime",
        },
    ),
    (
        "light",
        {
            "name": "Court 1",
            "lead_s": 0,
            "lag_s": 60,
            "warn_s": 86400,
            "checkin": True,
            "price": 150,
            "block_s": 1,
            "max_s": 7 * 86400,
            "schedule": "club-hours",
        },
        {
            "name": "Court 1",
            "lead_s": 0,
            "lag_s": 60,
            "warn_s": 86400,
            "checkin": True,
            "price": 150,
            "block_s": 1,
            "max_s": 7 * 86400,
            "schedule": "club-hours",
        },
    ),
    (
        "booking",
        {
            "lights": ["court1", "court2"],
            "doors": ["front"],
            "start": -100,
            "end": 3600,
            "member": "m1",
            "pin": "01234",
        },
        {
            "lights": ("court1", "court2"),
            "doors": ("front",),
            "start": -100,
            "end": 3600,
            "member": "m1",
            "pin": "01234",
        },
    ),
]


@pytest.mark.parametrize(("kind", "body", "expected"), FULL, ids=[f[0] for f in FULL])
def test_every_field_is_parsed(kind: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    record = parse_record(kind, id_for(kind), rec(**body))
    assert {name: getattr(record, name) for name in expected} == expected
    assert record.extra is None  # type: ignore[union-attr]


def test_site_zone_follows_tz() -> None:
    site = parse_record("site", "site", rec(tz="America/New_York"))
    assert isinstance(site, Site)
    assert site.zone.key == "America/New_York"


def test_member_credentials_are_pairs() -> None:
    member = parse_record(
        "member", "m1", rec(creds=[["tag", "a1"], ["pin", "1234"], ["card", "c"]])
    )
    assert isinstance(member, Member)
    assert member.credentials() == [("tag", "a1"), ("pin", "1234"), ("card", "c")]


@pytest.mark.parametrize(
    ("kind", "field", "attr"),
    [
        ("member", "groups", "groups"),
        ("booking", "lights", "lights"),
        ("booking", "doors", "doors"),
    ],
)
def test_id_lists_drop_duplicates_keeping_order(kind: str, field: str, attr: str) -> None:
    body = {**MINIMAL[kind], field: ["b", "a", "b", "c", "a"]}
    record = parse_record(kind, id_for(kind), rec(**body))
    assert getattr(record, attr) == ("b", "a", "c")


@pytest.mark.parametrize(
    ("kind", "field", "attr"),
    [
        ("member", "from", "valid_from"),
        ("member", "until", "valid_until"),
        ("group", "schedule", "schedule"),
        ("door", "open_schedule", "open_schedule"),
        ("light", "schedule", "schedule"),
        ("booking", "member", "member"),
        ("booking", "pin", "pin"),
    ],
)
def test_explicit_null_means_open_or_none(kind: str, field: str, attr: str) -> None:
    record = parse_record(kind, id_for(kind), rec(**{**MINIMAL[kind], field: None}))
    assert getattr(record, attr) is None
    assert record.extra is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("site", "pin_before_s", 7 * 86400),
        ("site", "pin_after_s", 0),
        ("site", "checkin_before_s", 7 * 86400),
        ("member", "credit", -(1 << 62)),
        ("member", "credit", 1 << 62),
        ("member", "from", -(1 << 62)),
        ("member", "until", 1 << 62),
        ("member", "creds", [["tag", "x" * 128]]),
        ("member", "creds", [["pin", "0"]]),
        ("member", "groups", ["g" * 128]),
        ("group", "doors", []),
        ("schedule", "windows", [[1, 0, 1]]),
        ("schedule", "windows", [[127, 1439, 1439 + 1440]]),
        ("schedule", "except", ["2024-02-29"]),
        ("door", "unlock_s", 86400),
        ("door", "mode", "unlocked"),
        ("light", "block_s", 86400),
        ("light", "max_s", 1),
        ("light", "price", 1 << 62),
        ("booking", "pin", "9" * 128),
        ("booking", "end", 1001),
    ],
)
def test_boundary_values_are_accepted(kind: str, field: str, value: Any) -> None:
    record = parse_record(kind, id_for(kind), rec(**{**MINIMAL[kind], field: value}))
    assert record.extra is None  # type: ignore[union-attr]


def test_records_are_frozen_and_slotted() -> None:
    member = parse_record("member", "m1", rec(name="Ada"))
    assert isinstance(member, Member)
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.name = "Eve"  # type: ignore[misc]
    assert not hasattr(member, "__dict__")


# --- bad fields ------------------------------------------------------------------------


BAD_FIELDS: list[tuple[str, str, Any]] = [
    # site
    ("site", "tz", 1),
    ("site", "tz", "Mars/Olympus_Mons"),
    ("site", "tz", ""),
    ("site", "tz", "../../etc/passwd"),
    ("site", "tz", "Europe/Berlin" + "x" * 60),
    ("site", "name", 5),
    ("site", "name", "n" * 1025),
    ("site", "pin_before_s", -1),
    ("site", "pin_before_s", 7 * 86400 + 1),
    ("site", "pin_after_s", 1.5),
    ("site", "checkin_before_s", "1800"),
    # member
    ("member", "name", ["Ada"]),
    ("member", "active", 1),
    ("member", "active", "yes"),
    ("member", "from", 1.0),
    ("member", "from", "2024-01-01"),
    ("member", "until", -(1 << 62) - 1),
    ("member", "groups", "adults"),
    ("member", "groups", [1]),
    ("member", "groups", [""]),
    ("member", "groups", ["g" * 129]),
    ("member", "groups", ["a\x00b"]),
    ("member", "creds", "tag:1"),
    ("member", "creds", [["tag"]]),
    ("member", "creds", [["tag", "a", "b"]]),
    ("member", "creds", [["rfid", "x"]]),
    ("member", "creds", [["tag", ""]]),
    ("member", "creds", [["tag", "x" * 129]]),
    ("member", "creds", [["pin", "12a4"]]),
    ("member", "creds", [["pin", " 1234"]]),
    ("member", "creds", [["tag", 1]]),
    ("member", "creds", [[1, "a"]]),
    ("member", "creds", [{"tag": "a"}]),
    ("member", "creds", [["tag", "ok"], "bad"]),
    ("member", "credit", 1.5),
    ("member", "credit", (1 << 62) + 1),
    ("member", "extended", 0),
    # group
    ("group", "doors", "front"),
    ("group", "doors", [1]),
    ("group", "lights", {"court1": True}),
    ("group", "lights", [None]),
    ("group", "schedule", 1),
    ("group", "schedule", ""),
    ("group", "schedule", ["s"]),
    # schedule
    ("schedule", "windows", "always"),
    ("schedule", "windows", [[1, 2]]),
    ("schedule", "windows", [[1, 0, 60, 5]]),
    ("schedule", "windows", [[0, 0, 60]]),
    ("schedule", "windows", [[128, 0, 60]]),
    ("schedule", "windows", [[1, -1, 60]]),
    ("schedule", "windows", [[1, 1440, 1500]]),
    ("schedule", "windows", [[1, 60, 60]]),
    ("schedule", "windows", [[1, 60, 30]]),
    ("schedule", "windows", [[1, 0, 1441]]),
    ("schedule", "windows", [[1, 0.0, 60]]),
    ("schedule", "windows", [{"days": 1}]),
    ("schedule", "except", "2024-12-25"),
    ("schedule", "except", ["2024-1-1"]),
    ("schedule", "except", ["2024-02-30"]),
    ("schedule", "except", [20241225]),
    ("schedule", "except", ["2024-12-25T00:00"]),
    ("schedule", "except", ["2024-W01-1"]),
    ("schedule", "except", ["20241225"]),
    # door
    ("door", "name", b"Front"),
    ("door", "unlock_s", -1),
    ("door", "unlock_s", 86401),
    ("door", "extended_s", "30"),
    ("door", "held_s", 1.0),
    ("door", "mode", "open"),
    ("door", "mode", "NORMAL"),
    ("door", "mode", 1),
    ("door", "open_schedule", 5),
    ("door", "open_schedule", ""),
    # light
    ("light", "name", 1),
    ("light", "lead_s", -1),
    ("light", "lag_s", 86401),
    ("light", "warn_s", "300"),
    ("light", "checkin", 1),
    ("light", "checkin", "false"),
    ("light", "price", -1),
    ("light", "price", 1.5),
    ("light", "block_s", 0),
    ("light", "block_s", 86401),
    ("light", "max_s", 0),
    ("light", "max_s", 7 * 86400 + 1),
    ("light", "schedule", 1),
    # booking
    ("booking", "start", 1.5),
    ("booking", "start", "1000"),
    ("booking", "end", 999),
    ("booking", "end", 1000),
    ("booking", "end", "2000"),
    ("booking", "lights", "court1"),
    ("booking", "lights", [1]),
    ("booking", "doors", [None]),
    ("booking", "member", 1),
    ("booking", "member", ""),
    ("booking", "pin", "12a"),
    ("booking", "pin", 1234),
    ("booking", "pin", ""),
    ("booking", "pin", "1" * 129),
]


@pytest.mark.parametrize(("kind", "field", "value"), BAD_FIELDS, ids=repr)
def test_bad_field_names_kind_id_and_field(kind: str, field: str, value: Any) -> None:
    id = id_for(kind)
    with pytest.raises(RemoteError) as info:
        parse_record(kind, id, rec(**{**MINIMAL[kind], field: value}))
    exc = info.value
    assert (exc.kind, exc.id, exc.field) == (kind, id, field)
    message = str(exc)
    assert kind in message
    assert id in message
    assert repr(field) in message


INT_FIELDS = [
    ("site", "pin_before_s"),
    ("site", "pin_after_s"),
    ("site", "checkin_before_s"),
    ("member", "from"),
    ("member", "until"),
    ("member", "credit"),
    ("door", "unlock_s"),
    ("door", "extended_s"),
    ("door", "held_s"),
    ("light", "lead_s"),
    ("light", "lag_s"),
    ("light", "warn_s"),
    ("light", "price"),
    ("light", "block_s"),
    ("light", "max_s"),
    ("booking", "start"),
    ("booking", "end"),
]


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(("kind", "field"), INT_FIELDS)
def test_bool_is_not_an_integer(kind: str, field: str, value: bool) -> None:
    with pytest.raises(RemoteError) as info:
        parse_record(kind, id_for(kind), rec(**{**MINIMAL[kind], field: value}))
    assert info.value.field == field
    assert "integer" in str(info.value)


@pytest.mark.parametrize("value", [0, 1])
@pytest.mark.parametrize(
    ("kind", "field"),
    [("member", "active"), ("member", "extended"), ("light", "checkin")],
)
def test_integer_is_not_a_bool(kind: str, field: str, value: int) -> None:
    with pytest.raises(RemoteError) as info:
        parse_record(kind, id_for(kind), rec(**{**MINIMAL[kind], field: value}))
    assert info.value.field == field


@pytest.mark.parametrize("missing", ["start", "end"])
def test_booking_needs_start_and_end(missing: str) -> None:
    body = {k: v for k, v in MINIMAL["booking"].items() if k != missing}
    with pytest.raises(RemoteError) as info:
        parse_record("booking", "b1", rec(**body))
    assert (info.value.kind, info.value.id, info.value.field) == ("booking", "b1", missing)


@pytest.mark.parametrize("missing", ["start", "end"])
def test_booking_null_start_or_end_is_missing(missing: str) -> None:
    with pytest.raises(RemoteError) as info:
        parse_record("booking", "b1", rec(**{**MINIMAL["booking"], missing: None}))
    assert info.value.field == missing


# --- unknown fields and kinds ----------------------------------------------------------


EXTRA = {"future": [1, {"nested": b"\x00"}], "note": "kept", "n": -3}


@pytest.mark.parametrize("kind", sorted(KNOWN_KINDS))
def test_unknown_fields_are_kept_in_extra(kind: str) -> None:
    record = parse_record(kind, id_for(kind), rec(**MINIMAL[kind], **EXTRA))
    assert record.extra == EXTRA  # type: ignore[union-attr]


def test_extra_holds_only_unknown_fields() -> None:
    member = parse_record("member", "m1", rec(name="Ada", credit=5, colour="blue"))
    assert isinstance(member, Member)
    assert member.extra == {"colour": "blue"}
    assert (member.name, member.credit) == ("Ada", 5)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("widget", rec(a=1)),
        ("Member", rec(creds=[["tag", "x"]])),  # kinds are case-sensitive
        ("future-kind", rec()),
        ("x" * 128, rec(b=[1, 2])),
    ],
)
def test_unknown_kind_becomes_other_record(kind: str, body: bytes) -> None:
    record = parse_record(kind, "w1", body)
    assert record == OtherRecord(kind, "w1", body, expected_part(kind, "w1", body))


# --- malformed bodies ------------------------------------------------------------------


NON_MAPS: list[Any] = [[], [["name", "x"]], 0, "name", b"\xa0", None, True, 1.5]


@pytest.mark.parametrize("body", NON_MAPS, ids=repr)
@pytest.mark.parametrize("kind", sorted(KNOWN_KINDS))
def test_non_map_body_is_rejected(kind: str, body: Any) -> None:
    id = id_for(kind)
    with pytest.raises(RemoteError) as info:
        parse_record(kind, id, cbor2.dumps(body))
    assert (info.value.kind, info.value.id, info.value.field) == (kind, id, None)
    assert "map" in str(info.value)


@pytest.mark.parametrize("key", [1, b"name", -1, 1.5, None])
def test_non_text_map_key_is_rejected(key: Any) -> None:
    with pytest.raises(RemoteError) as info:
        parse_record("member", "m1", cbor2.dumps({"name": "Ada", key: 1}))
    assert (info.value.kind, info.value.id) == ("member", "m1")


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


MALFORMED: list[bytes] = [
    b"",  # nothing at all
    b"\xa1",  # map header with no entries
    b"\xa1\x64name",  # key with no value
    b"\xa1\x64na",  # truncated text
    b"\xff",  # lone break
    b"\x1c",  # reserved additional info
    b"\xa1\x62\xff\xfe\x01",  # key that is not UTF-8
    b"\xbf\x64name\x63Ada\xff",  # indefinite-length map
    b"\xa1\x64name\x7f\x63Ada\xff",  # indefinite-length text
    b"\xa2\x64name\x01\x64name\x02",  # duplicate key
    cbor2.dumps({"extra": nested(40)}),  # nested too deeply
]


@pytest.mark.parametrize("body", MALFORMED, ids=repr)
@pytest.mark.parametrize("kind", ["member", "site", "booking"])
def test_malformed_cbor_is_rejected(kind: str, body: bytes) -> None:
    id = id_for(kind)
    with pytest.raises(RemoteError) as info:
        parse_record(kind, id, body)
    assert (info.value.kind, info.value.id) == (kind, id)
    assert id in str(info.value)


TAGGED: list[bytes] = [
    cbor2.dumps(cbor2.CBORTag(55799, {})),  # self-describe tag around the body
    cbor2.dumps(cbor2.CBORTag(259, {"name": "Ada"})),  # "map with any keys" tag
    cbor2.dumps({"name": cbor2.CBORTag(32, "http://x")}),  # URI tag on a field
    cbor2.dumps({"credit": 1 << 70}),  # bignum: tag 2
    cbor2.dumps({"from": cbor2.CBORTag(1, 1_700_000_000)}),  # epoch datetime
    cbor2.dumps({"other": [cbor2.CBORTag(4000, 1)]}),  # unknown tag in an unknown field
]


@pytest.mark.parametrize("body", TAGGED, ids=repr)
def test_cbor_tags_are_rejected(body: bytes) -> None:
    with pytest.raises(RemoteError) as info:
        parse_record("member", "m1", body)
    assert (info.value.kind, info.value.id) == ("member", "m1")
    assert "tag" in str(info.value)


@pytest.mark.parametrize("trailer", [b"\x00", b"\xa0", rec(name="Eve"), b"\xff"], ids=repr)
@pytest.mark.parametrize("kind", sorted(KNOWN_KINDS))
def test_trailing_bytes_are_rejected(kind: str, trailer: bytes) -> None:
    id = id_for(kind)
    with pytest.raises(RemoteError) as info:
        parse_record(kind, id, rec(**MINIMAL[kind]) + trailer)
    assert (info.value.kind, info.value.id) == (kind, id)
    assert "trailing" in str(info.value)


@pytest.mark.parametrize("body", [bytearray(rec()), memoryview(rec()), "\xa0", None, {}])
def test_rec_must_be_bytes(body: Any) -> None:
    with pytest.raises(RemoteError) as info:
        parse_record("member", "m1", body)
    assert (info.value.kind, info.value.id) == ("member", "m1")


@pytest.mark.parametrize(
    ("kind", "id"),
    [
        ("", "m1"),
        ("member", ""),
        ("mem\x00ber", "m1"),
        ("member", "m\x001"),
        ("member", "m" * 129),
        ("k" * 129, "m1"),
        (1, "m1"),
        ("member", 1),
        ("member", None),
        ("member", b"m1"),
    ],
    ids=repr,
)
def test_bad_kind_or_id_is_rejected(kind: Any, id: Any) -> None:
    with pytest.raises(RemoteError):
        parse_record(kind, id, rec())


@pytest.mark.parametrize("id", ["Site", "site2", "main"])
def test_site_must_have_id_site(id: str) -> None:
    with pytest.raises(RemoteError) as info:
        parse_record("site", id, rec())
    assert (info.value.kind, info.value.id) == ("site", id)
    assert repr(id) in str(info.value)


# --- digest parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "id", "body"),
    [
        ("member", "m1", rec(name="Ada")),
        ("site", "site", b""),
        ("widget", "w", b"\x00\x00"),
        ("door", "Tür", rec(name="Tür")),  # ids are UTF-8 on the wire
    ],
)
def test_digest_part_matches_protocol_formula(kind: str, id: str, body: bytes) -> None:
    assert digest_part(kind, id, body) == expected_part(kind, id, body)


def test_digest_part_separates_kind_id_and_rec() -> None:
    # Without the 0x00 separators these three would hash the same bytes.
    parts = {
        digest_part("ab", "c", b"d"),
        digest_part("a", "bc", b"d"),
        digest_part("a", "b", b"cd"),
    }
    assert len(parts) == 3


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, bytes(16)),
        (1, bytes(15) + b"\x01"),
        ((1 << 128) - 1, b"\xff" * 16),
        (1 << 128, bytes(16)),
        ((1 << 128) + 0x0102, bytes(14) + b"\x01\x02"),
        (-1, b"\xff" * 16),
    ],
)
def test_digest_bytes_is_16_big_endian_bytes_mod_2_128(total: int, expected: bytes) -> None:
    assert digest_bytes(total) == expected


# --- properties ------------------------------------------------------------------------


@given(kind=st.sampled_from(sorted(KNOWN_KINDS)), body=st.binary(max_size=64))
def test_arbitrary_bytes_give_a_record_or_remote_error(kind: str, body: bytes) -> None:
    try:
        record = parse_record(kind, id_for(kind), body)
    except RemoteError as exc:
        assert (exc.kind, exc.id) == (kind, id_for(kind))
    else:
        assert record.kind == kind
        assert record.part == expected_part(kind, id_for(kind), body)


FIELD_NAMES = sorted(
    {
        "tz", "name", "pin_before_s", "pin_after_s", "checkin_before_s", "active", "from",
        "until", "groups", "creds", "credit", "extended", "doors", "lights", "schedule",
        "windows", "except", "unlock_s", "extended_s", "held_s", "mode", "open_schedule",
        "lead_s", "lag_s", "warn_s", "checkin", "price", "block_s", "max_s", "start", "end",
        "member", "pin", "other",
    }
)  # fmt: skip

cbor_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63)),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=4),
    st.sampled_from(["UTC", "tag", "pin", "card", "normal", "2024-01-01", "12", "x"]),
)
cbor_values = st.recursive(
    cbor_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@given(
    kind=st.sampled_from(sorted(KNOWN_KINDS)),
    body=st.dictionaries(st.sampled_from(FIELD_NAMES), cbor_values, max_size=6),
)
def test_arbitrary_field_values_give_a_record_or_a_field_error(
    kind: str, body: dict[str, Any]
) -> None:
    id = id_for(kind)
    try:
        record = parse_record(kind, id, cbor2.dumps(body))
    except RemoteError as exc:
        assert (exc.kind, exc.id) == (kind, id)
        assert exc.field in body or (kind == "booking" and exc.field in ("start", "end"))
    else:
        assert record.kind == kind
        extra = record.extra or {}  # type: ignore[union-attr]
        assert set(extra) <= set(body)


@given(
    name=st.text(max_size=20),
    active=st.booleans(),
    valid_from=st.none() | st.integers(min_value=-(1 << 62), max_value=1 << 62),
    groups=st.lists(st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s)),
    creds=st.lists(
        st.tuples(st.sampled_from(["tag", "card"]), st.text(min_size=1, max_size=16)).map(list)
        | st.tuples(st.just("pin"), st.from_regex(r"[0-9]{1,12}", fullmatch=True)).map(list),
        max_size=4,
    ),
    credit=st.integers(min_value=-(1 << 62), max_value=1 << 62),
)
def test_valid_member_round_trips(
    name: str,
    active: bool,
    valid_from: int | None,
    groups: list[str],
    creds: list[list[str]],
    credit: int,
) -> None:
    body = rec(
        name=name, active=active, from_=valid_from, groups=groups, creds=creds, credit=credit
    )
    member = parse_record("member", "m1", body)
    assert isinstance(member, Member)
    assert (member.name, member.active, member.valid_from, member.credit) == (
        name,
        active,
        valid_from,
        credit,
    )
    assert member.groups == tuple(dict.fromkeys(groups))
    assert member.credentials() == [(k, v) for k, v in creds]
    assert member.extra is None
