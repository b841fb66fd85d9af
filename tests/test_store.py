"""The live store (PROTOCOL.md s3): atomic deltas, building aside, the incremental
digest, credential conflicts and the indexes a decision reads."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.core.errors import RemoteError
from firmware.core.model import (
    DEFAULT_SITE,
    KNOWN_KINDS,
    Booking,
    Group,
    Member,
    OtherRecord,
    RejectedRecord,
    Site,
)
from firmware.core.store import Conflict, Delete, Op, Put, Store, parse_ops
from tests.builders import rec, store_of

# --- helpers ---------------------------------------------------------------------------


def digest_of(records: Iterable[tuple[str, str, bytes]]) -> bytes:
    """PROTOCOL.md s3 digest, written independently of the code under test."""
    total = 0
    for kind, id, body in records:
        h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + body).digest()
        total += int.from_bytes(h[:16], "big")
    return (total % 2**128).to_bytes(16, "big")


def put(kind: str, id: str, **fields: Any) -> Put:
    return Put(kind, id, rec(**fields))


INDEXES = (
    "credentials",
    "door_groups",
    "light_groups",
    "bookings_by_pin",
    "bookings_by_member",
    "bookings_by_light",
    "bookings_by_door",
)
TABLES = ("members", "groups", "schedules", "doors", "lights", "bookings", "others")


def snapshot(store: Store) -> dict[str, Any]:
    """Everything a reader of the store can see, copied so later changes show."""
    snap: dict[str, Any] = {
        "digest": store.digest,
        "recomputed": store.recomputed_digest(),
        "counts": store.counts(),
        "len": len(store),
        "site": store.site,
    }
    for name in TABLES:
        snap[name] = dict(getattr(store, name))
    for name in INDEXES:
        snap[name] = {key: dict(bucket) for key, bucket in getattr(store, name).items()}
    return snap


def creds_of(store: Store) -> dict[tuple[str, str], str]:
    """The credential index as (credkind, value) -> member id."""
    return {
        (credkind, value): member.id
        for credkind, index in store.credentials.items()
        for value, member in index.items()
    }


def ids(index: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    return {key: set(bucket) for key, bucket in index.items()}


def expected_indexes(store: Store) -> dict[str, dict[str, set[str]]]:
    """Group and booking indexes derived afresh from the live records."""
    out: dict[str, dict[str, set[str]]] = {name: {} for name in INDEXES[1:]}

    def add(name: str, key: str, id: str) -> None:
        out[name].setdefault(key, set()).add(id)

    for group in store.groups.values():
        for door in group.doors:
            add("door_groups", door, group.id)
        for light in group.lights:
            add("light_groups", light, group.id)
    for booking in store.bookings.values():
        if booking.pin is not None:
            add("bookings_by_pin", booking.pin, booking.id)
        if booking.member is not None:
            add("bookings_by_member", booking.member, booking.id)
        for light in booking.lights:
            add("bookings_by_light", light, booking.id)
        for door in booking.doors:
            add("bookings_by_door", door, booking.id)
    return out


def assert_indexes_follow_records(store: Store) -> None:
    assert {name: ids(getattr(store, name)) for name in INDEXES[1:]} == expected_indexes(store)
    # Each index holds the live record object, not a stale one.
    for name in INDEXES[1:]:
        table = store.groups if name.endswith("groups") else store.bookings
        for bucket in getattr(store, name).values():
            for id, record in bucket.items():
                assert table[id] is record
    for (credkind, value), member_id in creds_of(store).items():
        member = store.members[member_id]
        assert store.credentials[credkind][value] is member
        assert (credkind, value) in member.credentials()


# --- basics ----------------------------------------------------------------------------


def test_empty_store() -> None:
    store = Store()
    assert store.digest == bytes(16)
    assert store.recomputed_digest() == bytes(16)
    assert store.counts() == {}
    assert len(store) == 0
    assert store.site is DEFAULT_SITE
    assert store.get("member", "m1") is None


BODIES: dict[str, bytes] = {
    "site": rec(tz="Europe/Berlin"),
    "member": rec(name="Ada", creds=[["tag", "t1"]]),
    "group": rec(doors=["front"]),
    "schedule": rec(windows=[[31, 480, 1200]]),
    "door": rec(name="Front"),
    "light": rec(name="Court 1"),
    "booking": rec(start=0, end=3600, pin="1234"),
    "widget": rec(anything=[1, 2]),
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_put_stores_a_record_of_each_kind(kind: str) -> None:
    id = "site" if kind == "site" else "x1"
    store = Store()
    assert store.apply([Put(kind, id, BODIES[kind])]) == []
    record = store.get(kind, id)
    assert record is not None
    assert (record.kind, record.id) == (kind, id)
    assert store.counts() == {kind: 1}
    assert len(store) == 1
    assert store.digest == digest_of([(kind, id, BODIES[kind])])
    assert store.recomputed_digest() == store.digest


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_facility_changes_count_every_kind_but_members(kind: str) -> None:
    # Door modes, light periods and schedules follow the data only when it moves
    # (Facility.data_changed); a stream of member deltas must not move it.
    id = "site" if kind == "site" else "x1"
    store = Store()
    store.apply([Put(kind, id, BODIES[kind])])
    store.apply([Delete(kind, id)])
    assert store.facility_changes == (0 if kind == "member" else 2)


def test_put_site_sets_the_site_and_delete_restores_default() -> None:
    store = Store()
    store.apply([put("site", "site", tz="Europe/Berlin")])
    assert store.site.tz == "Europe/Berlin"
    store.apply([Delete("site", "site")])
    assert store.site is DEFAULT_SITE
    assert store.counts() == {}
    assert store.digest == bytes(16)


def test_digest_follows_puts_replacements_and_deletes() -> None:
    store = Store()
    store.apply([put("member", "m1", name="Ada"), put("door", "d1")])
    assert store.digest == digest_of([("member", "m1", rec(name="Ada")), ("door", "d1", rec())])
    store.apply([put("member", "m1", name="Ada L.")])
    assert store.digest == digest_of([("member", "m1", rec(name="Ada L.")), ("door", "d1", rec())])
    store.apply([Delete("door", "d1")])
    assert store.digest == digest_of([("member", "m1", rec(name="Ada L."))])
    store.apply([Delete("member", "m1")])
    assert store.digest == bytes(16)


def test_same_kind_and_id_share_a_record_but_kinds_do_not() -> None:
    store = Store()
    store.apply([put("door", "x"), put("light", "x"), put("widget", "x")])
    assert store.counts() == {"door": 1, "light": 1, "widget": 1}
    store.apply([Delete("light", "x")])
    assert store.counts() == {"door": 1, "widget": 1}


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([put("door", "d1"), Delete("door", "d1")], None),
        ([Delete("door", "d1"), put("door", "d1", name="B")], "B"),
        ([put("door", "d1", name="A"), put("door", "d1", name="B")], "B"),
        ([put("door", "d1", name="A"), Delete("door", "d1"), put("door", "d1", name="C")], "C"),
    ],
)
def test_ops_of_one_delta_apply_in_order(ops: list[Op], expected: str | None) -> None:
    store = Store()
    store.apply(ops)
    door = store.get("door", "d1")
    assert (door.name if door is not None else None) == expected  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "op", [Delete("member", "nobody"), Delete("widget", "w9"), Delete("site", "site")]
)
def test_deleting_an_absent_record_changes_nothing(op: Delete) -> None:
    store = store_of([("member", "m1", rec(creds=[["tag", "t1"]])), ("door", "d1", rec())])
    before = snapshot(store)
    assert store.apply([op]) == []
    assert snapshot(store) == before


# --- unknown kinds ---------------------------------------------------------------------


def test_unknown_kind_is_stored_counted_and_ignored() -> None:
    body = rec(creds=[["tag", "t1"]], doors=["front"], pin="1234", start=0, end=9)
    store = Store()
    store.apply([Put("widget", "m1", body)])
    part = int.from_bytes(digest_of([("widget", "m1", body)]), "big")
    assert store.get("widget", "m1") == OtherRecord("widget", "m1", body, part)
    assert store.counts() == {"widget": 1}
    assert store.digest == digest_of([("widget", "m1", body)])
    assert store.members == {}
    assert creds_of(store) == {}
    assert store.door_groups == {}
    assert store.bookings_by_pin == {}
    store.apply([Delete("widget", "m1")])
    assert store.get("widget", "m1") is None
    assert store.digest == bytes(16)


# --- atomic deltas ---------------------------------------------------------------------


def live_store() -> Store:
    """A store with something in every table and index."""
    return store_of(
        [
            ("site", "site", rec(tz="Europe/Berlin")),
            (
                "member",
                "m1",
                rec(name="Ada", groups=["g1"], creds=[["tag", "t1"], ["pin", "1111"]]),
            ),
            ("member", "m2", rec(name="Bob", creds=[["card", "c2"]])),
            ("group", "g1", rec(doors=["front"], lights=["court1"], schedule="s1")),
            ("schedule", "s1", rec(windows=[[127, 0, 1440]])),
            ("door", "front", rec(name="Front")),
            ("light", "court1", rec(name="Court 1")),
            (
                "booking",
                "b1",
                rec(lights=["court1"], doors=["front"], start=0, end=3600, member="m1", pin="7777"),
            ),
            ("widget", "w1", rec(x=1)),
        ]
    )


# Valid ops that, applied, would touch every table and index of `live_store()`.
VALID_OPS: list[Op] = [
    put("member", "m1", name="Ada", creds=[["tag", "t9"]]),
    put("member", "m3", creds=[["card", "c2"]]),  # would take m2's card: a conflict
    Delete("member", "m2"),
    Delete("group", "g1"),
    put("group", "g2", doors=["back"], lights=["court2"]),
    put("schedule", "s1", windows=[[1, 0, 60]]),
    Delete("door", "front"),
    put("door", "back"),
    put("light", "court2"),
    put("booking", "b1", lights=["court2"], start=0, end=60, member="m3", pin="8888"),
    put("booking", "b2", doors=["back"], start=0, end=60, pin="7777"),
    Delete("widget", "w1"),
    put("gadget", "g1", y=2),
    put("site", "site", tz="UTC"),
    Delete("site", "site"),
]

BAD_OPS: list[tuple[Op, str, str, str | None]] = [
    (put("member", "m4", active=1), "member", "m4", "active"),
    (put("member", "m1", creds=[["rfid", "x"]]), "member", "m1", "creds"),
    (put("booking", "b3", start=10), "booking", "b3", "end"),
    (put("door", "front", mode="open"), "door", "front", "mode"),
    (put("site", "site", tz="Nowhere/Special"), "site", "site", "tz"),
    (put("site", "main"), "site", "main", None),
    (Put("group", "g1", b"\xa1\x61"), "group", "g1", None),
    (Put("light", "court1", rec() + b"\x00"), "light", "court1", None),
    (Put("schedule", "s1", cbor2.dumps(cbor2.CBORTag(1, 0))), "schedule", "s1", None),
    (Put("door", "d9", cbor2.dumps([1, 2])), "door", "d9", None),
    (Put("member", "m1", bytearray(rec())), "member", "m1", None),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("position", [0, 5, len(VALID_OPS)])
@pytest.mark.parametrize(("bad", "kind", "id", "field"), BAD_OPS, ids=repr)
def test_delta_with_one_bad_record_changes_nothing(
    bad: Op, kind: str, id: str, field: str | None, position: int
) -> None:
    store = live_store()
    before = snapshot(store)
    ops = [*VALID_OPS[:position], bad, *VALID_OPS[position:]]
    with pytest.raises(RemoteError) as info:
        store.apply(ops)
    assert (info.value.kind, info.value.id, info.value.field) == (kind, id, field)
    assert snapshot(store) == before


@pytest.mark.parametrize(
    "bad", [Put("", "x", rec()), Put("member", "", rec()), Put("member", "a\x00b", rec())]
)
def test_delta_with_a_bad_key_changes_nothing(bad: Op) -> None:
    store = live_store()
    before = snapshot(store)
    with pytest.raises(RemoteError):
        store.apply([*VALID_OPS, bad])
    assert snapshot(store) == before


def test_valid_ops_do_change_the_live_store() -> None:
    # Guards the atomicity tests above: without the bad op, VALID_OPS change every
    # table and index, so an unchanged snapshot there really means "nothing applied".
    store = live_store()
    before = snapshot(store)
    store.apply(VALID_OPS)
    after = snapshot(store)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(before)


# --- building aside --------------------------------------------------------------------


def test_build_leaves_the_live_store_untouched() -> None:
    live = live_store()
    before = snapshot(live)
    built = Store.build(
        [
            ("member", "m1", rec(name="Other", creds=[["tag", "t1"]])),
            ("member", "m9", rec(creds=[["pin", "1111"]])),
            ("group", "g7", rec(doors=["front"])),
            ("booking", "b1", rec(start=0, end=1, pin="7777")),
        ]
    )
    assert built.store is not live
    assert snapshot(live) == before
    assert built.rejected == []
    assert built.conflicts == []
    assert built.store.counts() == {"member": 2, "group": 1, "booking": 1}
    assert built.store.site is DEFAULT_SITE


def test_build_matches_the_same_records_applied() -> None:
    records = [
        ("site", "site", rec(tz="Europe/Berlin")),
        ("member", "m1", rec(creds=[["tag", "t1"]], groups=["g1"])),
        ("group", "g1", rec(doors=["front"])),
        ("booking", "b1", rec(start=0, end=60, pin="1001")),
        ("widget", "w", rec()),
    ]
    applied = Store()
    applied.apply([Put(*r) for r in records])
    built = Store.build(reversed(records)).store
    assert snapshot(built) == snapshot(applied)
    assert built.digest == digest_of(records)


def test_build_keeps_a_later_duplicate() -> None:
    built = Store.build([("door", "d1", rec(name="A")), ("door", "d1", rec(name="B"))])
    door = built.store.get("door", "d1")
    assert door is not None and door.name == "B"  # type: ignore[union-attr]
    assert built.store.digest == digest_of([("door", "d1", rec(name="B"))])


BAD_FULL_RECORDS = [
    ("member", "m2", rec(active=1, creds=[["tag", "t2"]])),
    ("group", "g2", b"\xff"),
    ("booking", "b2", rec(start=5, end=5, pin="9999")),
    ("site", "main", rec()),
]


def test_build_keeps_rejected_records_in_the_digest_only() -> None:
    good = [("member", "m1", rec(creds=[["tag", "t1"]]))]
    built = Store.build([*good, *BAD_FULL_RECORDS])
    store = built.store
    assert [(r.kind, r.id) for r in built.rejected] == [(k, i) for k, i, _ in BAD_FULL_RECORDS]
    assert "active" in built.rejected[0].error
    assert store.digest == digest_of([*good, *BAD_FULL_RECORDS])
    assert store.recomputed_digest() == store.digest
    assert store.counts() == {"member": 2, "group": 1, "booking": 1, "site": 1}
    for kind, id, _ in BAD_FULL_RECORDS:
        assert isinstance(store.get(kind, id), RejectedRecord)
    # A rejected record grants nothing.
    assert set(store.members) == {"m1"}
    assert creds_of(store) == {("tag", "t1"): "m1"}
    assert store.groups == {}
    assert store.bookings_by_pin == {}
    assert store.site is DEFAULT_SITE


def test_valid_put_replaces_a_rejected_record() -> None:
    store = Store.build(BAD_FULL_RECORDS).store
    store.apply([put("member", "m2", creds=[["tag", "t2"]]), put("group", "g2", doors=["d"])])
    assert isinstance(store.get("member", "m2"), Member)
    assert creds_of(store) == {("tag", "t2"): "m2"}
    assert set(store.door_groups) == {"d"}
    assert store.counts() == {"member": 1, "group": 1, "booking": 1, "site": 1}
    assert store.digest == digest_of(
        [
            ("member", "m2", rec(creds=[["tag", "t2"]])),
            ("group", "g2", rec(doors=["d"])),
            *BAD_FULL_RECORDS[2:],
        ]
    )


def test_delete_removes_a_rejected_record() -> None:
    store = Store.build(BAD_FULL_RECORDS).store
    store.apply([Delete(kind, id) for kind, id, _ in BAD_FULL_RECORDS])
    assert store.counts() == {}
    assert store.digest == bytes(16)
    assert store.others == {}


def test_rejected_site_with_another_id_does_not_drop_the_real_site() -> None:
    records = [("site", "site", rec(tz="Europe/Berlin")), ("site", "main", rec())]
    for order in (records, records[::-1]):
        built = Store.build(order)
        store = built.store
        assert [(r.kind, r.id) for r in built.rejected] == [("site", "main")]
        assert store.site.tz == "Europe/Berlin"
        assert store.counts() == {"site": 2}
        assert store.digest == digest_of(records)
        assert store.recomputed_digest() == store.digest
        assert isinstance(store.get("site", "site"), Site)
        assert isinstance(store.get("site", "main"), RejectedRecord)


def test_deleting_another_site_id_keeps_the_site() -> None:
    store = store_of([("site", "site", rec(tz="Europe/Berlin"))])
    before = snapshot(store)
    store.apply([Delete("site", "main")])
    assert snapshot(store) == before
    assert store.get("site", "main") is None


def test_deleting_a_rejected_site_with_another_id_keeps_the_site() -> None:
    records = [("site", "main", rec()), ("site", "site", rec(tz="Europe/Berlin"))]
    store = Store.build(records).store
    store.apply([Delete("site", "main")])
    assert store.site.tz == "Europe/Berlin"
    assert store.counts() == {"site": 1}
    assert store.digest == digest_of(records[1:])


# --- credentials -----------------------------------------------------------------------


def test_member_credentials_are_indexed() -> None:
    store = Store()
    store.apply([put("member", "m1", creds=[["tag", "t1"], ["card", "c1"], ["pin", "1234"]])])
    m1 = store.members["m1"]
    assert store.credentials == {"tag": {"t1": m1}, "card": {"c1": m1}, "pin": {"1234": m1}}


def test_credkinds_are_separate_namespaces() -> None:
    store = Store()
    conflicts = store.apply(
        [put("member", "m1", creds=[["tag", "1234"]]), put("member", "m2", creds=[["pin", "1234"]])]
    )
    assert conflicts == []
    assert creds_of(store) == {("tag", "1234"): "m1", ("pin", "1234"): "m2"}


def test_later_put_wins_a_credential_and_reports_a_conflict() -> None:
    store = Store()
    store.apply([put("member", "m1", creds=[["tag", "t1"], ["pin", "1111"]])])
    conflicts = store.apply([put("member", "m2", creds=[["pin", "2222"], ["tag", "t1"]])])
    assert conflicts == [Conflict("tag", "t1", loser="m1", winner="m2")]
    assert creds_of(store) == {("tag", "t1"): "m2", ("pin", "1111"): "m1", ("pin", "2222"): "m2"}
    assert store.credentials["tag"]["t1"] is store.members["m2"]


def test_conflict_within_one_delta() -> None:
    store = Store()
    conflicts = store.apply(
        [put("member", "m1", creds=[["card", "c"]]), put("member", "m2", creds=[["card", "c"]])]
    )
    assert conflicts == [Conflict("card", "c", "m1", "m2")]
    assert creds_of(store) == {("card", "c"): "m2"}


def test_conflict_while_building() -> None:
    built = Store.build(
        [
            ("member", "m1", rec(creds=[["tag", "t1"]])),
            ("member", "m2", rec(creds=[["tag", "t1"]])),
        ]
    )
    assert built.conflicts == [Conflict("tag", "t1", "m1", "m2")]
    assert creds_of(built.store) == {("tag", "t1"): "m2"}


def test_put_again_wins_the_credential_back() -> None:
    store = Store()
    store.apply([put("member", "m1", creds=[["tag", "t1"]])])
    store.apply([put("member", "m2", creds=[["tag", "t1"]])])
    conflicts = store.apply([put("member", "m1", name="Ada", creds=[["tag", "t1"]])])
    assert conflicts == [Conflict("tag", "t1", "m2", "m1")]
    assert creds_of(store) == {("tag", "t1"): "m1"}


@pytest.mark.parametrize(
    "creds",
    [
        [["tag", "t1"]],
        [["tag", "t1"], ["tag", "t1"]],
        [["pin", "5555"], ["tag", "t1"], ["pin", "5555"]],
    ],
)
def test_a_member_never_conflicts_with_itself(creds: list[list[str]]) -> None:
    store = Store()
    assert store.apply([put("member", "m1", creds=creds)]) == []
    assert store.apply([put("member", "m1", name="again", creds=creds)]) == []
    assert set(creds_of(store).values()) == {"m1"}


def test_deleting_a_member_removes_its_credentials() -> None:
    store = Store()
    store.apply(
        [
            put("member", "m1", creds=[["tag", "t1"], ["pin", "1111"]]),
            put("member", "m2", creds=[["tag", "t2"]]),
        ]
    )
    store.apply([Delete("member", "m1")])
    assert creds_of(store) == {("tag", "t2"): "m2"}
    assert store.credentials["pin"] == {}


def test_replacing_a_member_replaces_its_credentials() -> None:
    store = Store()
    store.apply([put("member", "m1", creds=[["tag", "t1"], ["pin", "1111"]])])
    store.apply([put("member", "m1", creds=[["tag", "t2"], ["pin", "1111"]])])
    assert creds_of(store) == {("tag", "t2"): "m1", ("pin", "1111"): "m1"}
    assert store.credentials["pin"]["1111"] is store.members["m1"]


def test_deleting_the_loser_keeps_the_winners_credential() -> None:
    store = Store()
    store.apply([put("member", "m1", creds=[["tag", "t1"]])])
    store.apply([put("member", "m2", creds=[["tag", "t1"]])])
    store.apply([Delete("member", "m1")])
    assert creds_of(store) == {("tag", "t1"): "m2"}


def test_replacing_the_loser_without_the_credential_keeps_the_winners() -> None:
    store = Store()
    store.apply([put("member", "m1", creds=[["tag", "t1"]])])
    store.apply([put("member", "m2", creds=[["tag", "t1"]])])
    assert store.apply([put("member", "m1", creds=[["tag", "t5"]])]) == []
    assert creds_of(store) == {("tag", "t1"): "m2", ("tag", "t5"): "m1"}


# --- groups and bookings ---------------------------------------------------------------


def test_groups_are_indexed_by_door_and_light() -> None:
    store = Store()
    store.apply(
        [
            put("group", "g1", doors=["front", "back"], lights=["c1"]),
            put("group", "g2", doors=["front"]),
        ]
    )
    assert ids(store.door_groups) == {"front": {"g1", "g2"}, "back": {"g1"}}
    assert ids(store.light_groups) == {"c1": {"g1"}}
    assert store.door_groups["front"]["g1"] is store.groups["g1"]


def test_deleting_a_group_removes_it_from_door_and_light_indexes() -> None:
    store = Store()
    store.apply(
        [
            put("group", "g1", doors=["front", "back"], lights=["c1"]),
            put("group", "g2", doors=["front"]),
        ]
    )
    store.apply([Delete("group", "g1")])
    assert ids(store.door_groups) == {"front": {"g2"}}
    assert store.light_groups == {}


def test_replacing_a_group_moves_it_between_indexes() -> None:
    store = Store()
    store.apply([put("group", "g1", doors=["front"], lights=["c1"])])
    store.apply([put("group", "g1", doors=["back"], lights=["c2"], schedule="s")])
    assert ids(store.door_groups) == {"back": {"g1"}}
    assert ids(store.light_groups) == {"c2": {"g1"}}
    group = store.door_groups["back"]["g1"]
    assert isinstance(group, Group)
    assert group.schedule == "s"


B1 = {
    "lights": ["c1", "c2"],
    "doors": ["front"],
    "start": 0,
    "end": 60,
    "member": "m1",
    "pin": "7777",
}


def test_bookings_are_indexed_by_pin_member_light_and_door() -> None:
    store = Store()
    store.apply([put("booking", "b1", **B1)])
    b1 = store.bookings["b1"]
    assert store.bookings_by_pin == {"7777": {"b1": b1}}
    assert store.bookings_by_member == {"m1": {"b1": b1}}
    assert store.bookings_by_light == {"c1": {"b1": b1}, "c2": {"b1": b1}}
    assert store.bookings_by_door == {"front": {"b1": b1}}


def test_replacing_a_booking_updates_its_indexes() -> None:
    store = Store()
    store.apply([put("booking", "b1", **B1)])
    store.apply([put("booking", "b1", lights=["c2"], start=0, end=60, pin="8888")])
    b1 = store.bookings["b1"]
    assert isinstance(b1, Booking)
    assert store.bookings_by_pin == {"8888": {"b1": b1}}
    assert store.bookings_by_member == {}
    assert store.bookings_by_light == {"c2": {"b1": b1}}
    assert store.bookings_by_door == {}


def test_deleting_a_booking_removes_it_from_every_index() -> None:
    store = Store()
    store.apply([put("booking", "b1", **B1), put("booking", "b2", **B1)])
    assert ids(store.bookings_by_pin) == {"7777": {"b1", "b2"}}
    store.apply([Delete("booking", "b1")])
    assert ids(store.bookings_by_pin) == {"7777": {"b2"}}
    assert ids(store.bookings_by_member) == {"m1": {"b2"}}
    assert ids(store.bookings_by_light) == {"c1": {"b2"}, "c2": {"b2"}}
    assert ids(store.bookings_by_door) == {"front": {"b2"}}
    store.apply([Delete("booking", "b2")])
    for name in ("bookings_by_pin", "bookings_by_member", "bookings_by_light", "bookings_by_door"):
        assert getattr(store, name) == {}


# --- parse_ops -------------------------------------------------------------------------


def test_parse_ops_reads_puts_and_deletes() -> None:
    raw = [["put", "member", "m1", b"\xa0"], ["del", "door", "d1"], ["put", "widget", "w", b""]]
    assert parse_ops(raw) == [
        Put("member", "m1", b"\xa0"),
        Delete("door", "d1"),
        Put("widget", "w", b""),
    ]
    assert parse_ops([]) == []


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {"put": []},
        b"ops",
        "put",
        [None],
        [[]],
        [["put"]],
        [("put", "member", "m1", b"")],
        [["upd", "member", "m1", b""]],
        [["PUT", "member", "m1", b""]],
        [["put", "member", "m1"]],
        [["put", "member", "m1", b"", b""]],
        [["put", "member", "m1", "\xa0"]],
        [["put", "member", "m1", None]],
        [["put", "member", "m1", [160]]],
        [["put", 1, "m1", b""]],
        [["put", "", "m1", b""]],
        [["put", "member", "", b""]],
        [["put", "member", "m\x001", b""]],
        [["put", "member", "m" * 129, b""]],
        [["put", "member", 7, b""]],
        [["del", "member"]],
        [["del", "member", "m1", b""]],
        [["del", None, "m1"]],
        [["del", "member", ["m1"]]],
        [["del", "member", "m1"], "del"],
    ],
    ids=repr,
)
def test_parse_ops_rejects_malformed_op_lists(raw: Any) -> None:
    with pytest.raises(RemoteError):
        parse_ops(raw)


# --- properties ------------------------------------------------------------------------


UNKNOWN_KINDS = ("widget", "x.future")
KINDS = (*sorted(KNOWN_KINDS), *UNKNOWN_KINDS)
IDS = ("a", "b", "c", "site")
REFS = st.lists(st.sampled_from(["a", "b", "front", "c1"]), max_size=3)
REF = st.none() | st.sampled_from(["a", "b", "s1"])
CREDS = [["tag", "t1"], ["tag", "t2"], ["card", "t1"], ["pin", "1234"], ["pin", "0000"]]
SECONDS = st.integers(min_value=0, max_value=86400)
TIMES = st.integers(min_value=-(10**10), max_value=10**10)


@st.composite
def windows(draw: st.DrawFn) -> list[int]:
    start = draw(st.integers(min_value=0, max_value=1439))
    end = draw(st.integers(min_value=start + 1, max_value=start + 1440))
    return [draw(st.integers(min_value=1, max_value=127)), start, end]


@st.composite
def booking_bodies(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(TIMES)
    body = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "lights": REFS,
                "doors": REFS,
                "member": REF,
                "pin": st.none() | st.sampled_from(["1234", "0000", "9999"]),
            },
        )
    )
    return {**body, "start": start, "end": start + draw(st.integers(1, 10**6))}


BODY_STRATEGIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "site": st.fixed_dictionaries(
        {},
        optional={
            "tz": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
            "name": st.text(max_size=4),
            "pin_before_s": SECONDS,
            "pin_after_s": SECONDS,
            "checkin_before_s": SECONDS,
        },
    ),
    "member": st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=4),
            "active": st.booleans(),
            "from": st.none() | TIMES,
            "until": st.none() | TIMES,
            "groups": REFS,
            "creds": st.lists(st.sampled_from(CREDS), max_size=3),
            "credit": st.integers(min_value=-(10**6), max_value=10**6),
            "extended": st.booleans(),
        },
    ),
    "group": st.fixed_dictionaries({}, optional={"doors": REFS, "lights": REFS, "schedule": REF}),
    "schedule": st.fixed_dictionaries(
        {},
        optional={
            "windows": st.lists(windows(), max_size=3),
            "except": st.lists(st.dates().map(lambda d: d.isoformat()), max_size=2),
        },
    ),
    "door": st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=4),
            "unlock_s": SECONDS,
            "extended_s": SECONDS,
            "held_s": SECONDS,
            "mode": st.sampled_from(["normal", "locked", "unlocked"]),
            "open_schedule": REF,
        },
    ),
    "light": st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=4),
            "lead_s": SECONDS,
            "lag_s": SECONDS,
            "warn_s": SECONDS,
            "checkin": st.booleans(),
            "price": st.integers(min_value=0, max_value=10**4),
            "block_s": st.integers(min_value=1, max_value=86400),
            "max_s": st.integers(min_value=1, max_value=7 * 86400),
            "schedule": REF,
        },
    ),
    "booking": booking_bodies(),
}
# CBOR ints are 64-bit; larger ones would be bignum tags, which are refused.
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ANY_MAP = st.dictionaries(
    st.text(max_size=4), INT64 | st.text(max_size=4) | st.lists(st.booleans()), max_size=3
)
EXTRA = st.dictionaries(st.sampled_from(["note", "v2_field"]), INT64, max_size=1)


@st.composite
def puts(draw: st.DrawFn) -> Put:
    kind = draw(st.sampled_from(KINDS))
    id = "site" if kind == "site" else draw(st.sampled_from(IDS))
    body = draw(BODY_STRATEGIES.get(kind, ANY_MAP))
    return Put(kind, id, cbor2.dumps({**draw(EXTRA), **body}))


# Deletes of any (kind, id) in the pools, including ("site", "a"): never stored.
deletes = st.builds(Delete, st.sampled_from(KINDS), st.sampled_from(IDS))
valid_ops: st.SearchStrategy[Op] = st.one_of(puts(), puts(), deletes)
deltas = st.lists(st.lists(valid_ops, max_size=6), max_size=6)

BAD_PUTS = st.sampled_from([op for op, *_ in BAD_OPS]) | st.builds(
    Put,
    st.sampled_from(sorted(KNOWN_KINDS)),
    st.sampled_from(["a", "site"]),
    st.sampled_from([b"", b"\xa1", b"\x80", b"\xa0\xa0", cbor2.dumps(cbor2.CBORTag(2, b"\x01"))]),
)


class Model:
    """A plain dict of the dataset, plus the credential index as the protocol's
    'later put wins' rule gives it: a put claims every credential of the member;
    deleting or replacing a member releases only the credentials it still holds."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], bytes] = {}
        self.creds: dict[tuple[str, str], str] = {}

    @staticmethod
    def member_creds(body: bytes) -> list[tuple[str, str]]:
        return [(k, v) for k, v in cbor2.loads(body).get("creds", [])]

    def remove(self, kind: str, id: str) -> None:
        body = self.records.pop((kind, id), None)
        if body is not None and kind == "member":
            for cred in self.member_creds(body):
                if self.creds.get(cred) == id:
                    del self.creds[cred]

    def apply(self, ops: Sequence[Op]) -> list[Conflict]:
        conflicts: list[Conflict] = []
        for op in ops:
            self.remove(op.kind, op.id)
            if isinstance(op, Put):
                self.records[(op.kind, op.id)] = op.rec
                if op.kind == "member":
                    for credkind, value in self.member_creds(op.rec):
                        holder = self.creds.get((credkind, value))
                        if holder is not None and holder != op.id:
                            conflicts.append(Conflict(credkind, value, holder, op.id))
                        self.creds[(credkind, value)] = op.id
        return conflicts

    def digest(self) -> bytes:
        return digest_of((kind, id, body) for (kind, id), body in self.records.items())


def assert_matches(store: Store, model: Model) -> None:
    assert store.digest == model.digest()
    assert store.recomputed_digest() == store.digest
    assert store.counts() == dict(Counter(kind for kind, _ in model.records))
    for kind in KINDS:
        for id in IDS:
            record = store.get(kind, id)
            body = model.records.get((kind, id))
            if body is None:
                assert record is None, (kind, id)
            else:
                assert record is not None, (kind, id)
                assert (record.kind, record.id) == (kind, id)
                assert record.part == int.from_bytes(digest_of([(kind, id, body)]), "big")
                assert isinstance(record, OtherRecord) == (kind in UNKNOWN_KINDS)


def run(deltas: list[list[Op]]) -> tuple[Store, Model]:
    store, model = Store(), Model()
    for ops in deltas:
        assert store.apply(ops) == model.apply(ops)
        assert_matches(store, model)
    return store, model


@given(deltas=deltas, data=st.data())
def test_digest_after_any_deltas_matches_the_protocol_and_a_rebuild(
    deltas: list[list[Op]], data: st.DataObject
) -> None:
    store, model = run(deltas)
    shuffled = data.draw(st.permutations([(*key, body) for key, body in model.records.items()]))
    built = Store.build(shuffled)
    assert built.rejected == []
    assert built.store.digest == store.digest == model.digest()
    rebuilt, live = snapshot(built.store), snapshot(store)
    for name in ("digest", "recomputed", "counts", "len", "site", *TABLES, *INDEXES[1:]):
        assert rebuilt[name] == live[name], name


@given(deltas=deltas)
def test_indexes_after_any_deltas_follow_the_records(deltas: list[list[Op]]) -> None:
    store, model = run(deltas)
    assert_indexes_follow_records(store)
    assert creds_of(store) == model.creds


@given(deltas=deltas, valid=st.lists(valid_ops, max_size=8), bad=BAD_PUTS, data=st.data())
def test_a_failed_delta_after_any_deltas_changes_nothing(
    deltas: list[list[Op]], valid: list[Op], bad: Op, data: st.DataObject
) -> None:
    store, model = run(deltas)
    before = snapshot(store)
    position = data.draw(st.integers(min_value=0, max_value=len(valid)))
    with pytest.raises(RemoteError):
        store.apply([*valid[:position], bad, *valid[position:]])
    assert snapshot(store) == before
    # The store is still good for the next delta.
    assert store.apply(valid) == model.apply(valid)
    assert_matches(store, model)
    assert creds_of(store) == model.creds
