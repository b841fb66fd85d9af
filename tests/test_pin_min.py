"""The site's shortest PIN (`pin_min`, docs/protocol.md s3 readings): PINs shorter
than it are bad records, in a snapshot, in a delta, whichever order the site
record comes in, and when the minimum itself changes."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.core.decide import UNKNOWN_CREDENTIAL, Target, decide
from firmware.core.errors import RemoteError
from firmware.core.messages import Delta, SnapPage
from firmware.core.model import (
    DEFAULT_PIN_MIN,
    DEFAULT_SITE,
    Booking,
    Member,
    RejectedRecord,
    Site,
    parse_record,
)
from firmware.core.store import Delete, Put, Store, StoreBuilder
from firmware.core.sync import RequestSync, SaveDelta, SyncEvent, SyncSession, SystemEvent
from tests.builders import rec
from tools.gen import Club
from tools.hub.datafile import DataFileError, parse_datafile

Rec = tuple[str, str, bytes]
T0 = 1_800_000_000.0

SITE6: Rec = ("site", "site", rec(tz="UTC", pin_min=6))
SITE3: Rec = ("site", "site", rec(tz="UTC", pin_min=3))
GROUP: Rec = ("group", "g", rec(doors=["front"]))
DOOR: Rec = ("door", "front", rec())
ANN: Rec = ("member", "ann", rec(groups=["g"], creds=[["tag", "t-ann"], ["pin", "1234"]]))
BOB: Rec = ("member", "bob", rec(groups=["g"], creds=[["pin", "123456"]]))
CAL: Rec = ("member", "cal", rec(groups=["g"], creds=[["tag", "t-cal"], ["pin", "987"]]))
GAME: Rec = ("booking", "b1", rec(doors=["front"], start=0, end=60, pin="4242"))


def digest(records: Iterable[Rec]) -> bytes:
    """PROTOCOL.md s3, written independently of firmware.core.model."""
    total = 0
    for kind, id, body in records:
        h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + body).digest()
        total += int.from_bytes(h[:16], "big")
    return (total % 2**128).to_bytes(16, "big")


def rejected_ids(store: Store) -> set[str]:
    return {r.id for r in store.others.values() if isinstance(r, RejectedRecord)}


def opens(store: Store, credkind: str, value: str) -> bool:
    return decide(store, Target.door("front"), credkind, value, T0).granted


# --- the field --------------------------------------------------------------------------


def test_the_site_record_carries_pin_min_default_4() -> None:
    site = parse_record("site", "site", rec(tz="UTC"))
    assert isinstance(site, Site)
    assert site.pin_min == DEFAULT_PIN_MIN == DEFAULT_SITE.pin_min == 4
    site = parse_record("site", "site", rec(pin_min=6))
    assert isinstance(site, Site) and site.pin_min == 6


@pytest.mark.parametrize("value", [0, -1, 33, "6", True, 4.0])
def test_a_bad_pin_min_is_a_bad_site_record(value: object) -> None:
    with pytest.raises(RemoteError, match="field 'pin_min'") as err:
        parse_record("site", "site", rec(pin_min=value))
    assert (err.value.kind, err.value.field) == ("site", "pin_min")


# --- a snapshot ---------------------------------------------------------------------------


def test_a_short_pin_makes_a_bad_record_that_grants_nothing() -> None:
    built = Store.build(
        [DOOR, GROUP, ANN, BOB, CAL, ("booking", "b2", rec(pin="999", start=0, end=1))]
    )
    store = built.store
    assert sorted(r.id for r in built.rejected) == ["b2", "cal"]
    cal = next(r for r in built.rejected if r.id == "cal")
    assert cal.error == (
        "member 'cal': field 'creds' has a pin of 3 digits, shorter than the site's pin_min 4"
    )
    # Rejected whole, like any bad record: the tag does not open either.
    assert not opens(store, "tag", "t-cal") and not opens(store, "pin", "987")
    assert decide(store, Target.door("front"), "pin", "987", T0).reason == UNKNOWN_CREDENTIAL
    assert opens(store, "pin", "1234") and opens(store, "tag", "t-ann")
    assert "999" not in store.bookings_by_pin
    # Still counted in the digest, so it matches the hub's.
    records = [DOOR, GROUP, ANN, BOB, CAL, ("booking", "b2", rec(pin="999", start=0, end=1))]
    assert store.digest == store.recomputed_digest() == digest(records)


@pytest.mark.parametrize("position", range(6))
def test_the_site_may_come_anywhere_in_a_snapshot(position: int) -> None:
    others = [DOOR, GROUP, ANN, BOB, GAME]
    for site, bad in ((SITE6, {"ann", "b1"}), (SITE3, set())):
        records = [*others[:position], site, *others[position:]]
        built = Store.build([*records, CAL])
        assert {r.id for r in built.rejected} == bad | ({"cal"} if site is SITE6 else set())
        assert rejected_ids(built.store) == {r.id for r in built.rejected}
        assert opens(built.store, "pin", "123456")
        assert opens(built.store, "pin", "987") == (site is SITE3)
        assert built.store.digest == digest([*records, CAL])


@given(st.permutations([SITE6, DOOR, GROUP, ANN, BOB, CAL, GAME]))
def test_any_order_builds_the_same_store(records: list[Rec]) -> None:
    built = Store.build(records)
    assert sorted(r.id for r in built.rejected) == ["ann", "b1", "cal"]
    assert set(built.store.members) == {"bob"}
    assert set(built.store.credentials["pin"]) == {"123456"}
    assert built.store.bookings_by_pin == {}


def test_a_lower_minimum_takes_back_records_a_full_sync_reuses() -> None:
    live = Store.build([DOOR, GROUP, CAL]).store
    assert rejected_ids(live) == {"cal"}
    builder = StoreBuilder(previous=live)
    builder.feed([DOOR, GROUP, CAL, SITE3])  # cal's bytes unchanged: reused, judged again
    built = builder.finish()
    assert built.rejected == []
    assert isinstance(built.store.members["cal"], Member)
    assert opens(built.store, "pin", "987")


# --- a delta ------------------------------------------------------------------------------


def test_a_delta_with_a_short_pin_is_refused_whole() -> None:
    store = Store.build([DOOR, GROUP, ANN]).store
    before = store.digest
    with pytest.raises(RemoteError, match="pin of 3 digits") as err:
        store.apply([Put(*BOB), Put(*CAL)])
    assert (err.value.kind, err.value.id, err.value.field) == ("member", "cal", "creds")
    assert store.digest == before and "bob" not in store.members
    with pytest.raises(RemoteError, match="booking 'b9': field 'pin' has 2 digits"):
        store.apply([Put("booking", "b9", rec(pin="12", start=0, end=1))])


def test_a_delta_is_judged_by_the_minimum_it_leaves() -> None:
    store = Store.build([DOOR, GROUP]).store
    store.apply([Put(*SITE3), Put(*CAL)])  # the site in the same delta allows 3 digits
    assert opens(store, "pin", "987")
    with pytest.raises(RemoteError, match="pin_min' changes from 3 to 4"):
        store.apply([Delete("site", "site")])  # back to the default 4: cal would go
    with pytest.raises(RemoteError, match="shorter than the site's pin_min 6"):
        store.apply([Put(*BOB), Put(*SITE6), Put("member", "dan", rec(creds=[["pin", "12345"]]))])
    assert store.site.pin_min == 3 and "bob" not in store.members


def test_a_delta_changing_the_minimum_applies_when_no_record_changes_validity() -> None:
    store = Store.build([DOOR, GROUP, BOB]).store
    store.apply([Put(*SITE6)])
    assert store.site.pin_min == 6 and opens(store, "pin", "123456")
    store.apply([Delete("site", "site")])
    assert store.site.pin_min == 4 and opens(store, "pin", "123456")


def test_a_minimum_raised_in_a_delta_asks_for_a_full_sync_that_reports_the_rejected() -> None:
    ids = (f"req-{n}" for n in itertools.count(1))
    base = [DOOR, GROUP, ANN, BOB]
    s = SyncSession(Store.build(base).store, "e1", 5, now=0.0, new_id=lambda: next(ids))
    s.connected_to_hub(0.0)
    actions = s.delta(Delta("e1", 5, 6, [Put(*SITE6)], None), 1.0)
    assert [a.what for a in actions if isinstance(a, SystemEvent)] == ["error"]
    assert not any(isinstance(a, SaveDelta) for a in actions)
    assert opens(s.store, "pin", "1234")  # unchanged until the full sync
    request = next(a for a in actions if isinstance(a, RequestSync))
    assert request.full
    target = [*base, SITE6]
    page = SnapPage(request.req, "e1", 6, 0, 1, target, digest(target), None)
    done = s.snap_page(page, 2.0)
    while s.has_work():
        done += s.work(2.0, 500)
    assert any(isinstance(a, SyncEvent) and a.what == "done" for a in done)
    errors = [a.detail for a in done if isinstance(a, SystemEvent)]
    assert errors == [
        "1 records rejected, first member 'ann': member 'ann': field 'creds' has a pin "
        "of 4 digits, shorter than the site's pin_min 6"
    ]
    assert not opens(s.store, "pin", "1234") and not opens(s.store, "tag", "t-ann")
    assert opens(s.store, "pin", "123456")
    assert s.digest == digest(target)


def test_rejected_records_hold_what_they_were() -> None:
    store = Store.build([CAL, ("booking", "b2", rec(pin="999", start=0, end=1))]).store
    cal, b2 = store.get("member", "cal"), store.get("booking", "b2")
    assert isinstance(cal, RejectedRecord) and isinstance(cal.held, Member)
    assert isinstance(b2, RejectedRecord) and isinstance(b2.held, Booking)
    # A record bad for other reasons holds nothing.
    bad = Store.build([("member", "eve", rec(active="yes"))]).store.get("member", "eve")
    assert isinstance(bad, RejectedRecord) and bad.held is None


# --- the reference hub and `alc gen` --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[member]]\nid = "m1"\ncreds = [["tag", "01"], ["pin", "123"]]\n',
            "site.toml: member 'm1': field 'creds' has a pin of 3 digits, shorter than "
            "the site's pin_min 4",
        ),
        (
            '[[booking]]\nid = "b1"\nstart = 0\nend = 60\npin = "12"\n',
            "site.toml: booking 'b1': field 'pin' has 2 digits, shorter than the site's pin_min 4",
        ),
        (
            '[[member]]\nid = "m1"\ncreds = [["pin", "12345"]]\n[site]\npin_min = 6\n',
            "site.toml: member 'm1': field 'creds' has a pin of 5 digits, shorter than "
            "the site's pin_min 6",
        ),
        ("[site]\npin_min = 0\n", "site.toml: site 'site': field 'pin_min' must be between 1"),
    ],
)
def test_the_hub_refuses_a_data_file_with_a_short_pin(text: str, expected: str) -> None:
    with pytest.raises(DataFileError) as info:
        parse_datafile(text, where="site.toml")
    assert str(info.value).startswith(expected)


def test_the_hub_takes_short_pins_where_the_site_allows_them() -> None:
    text = '[[member]]\nid = "m1"\ncreds = [["pin", "123"]]\n[site]\npin_min = 3\n'
    records = parse_datafile(text, where="site.toml")
    built = Store.build((kind, id, body) for (kind, id), body in records.items())
    assert built.rejected == []
    assert built.store.credentials["pin"]["123"].id == "m1"


def test_alc_gen_makes_pins_every_controller_takes() -> None:
    club = Club(300, seed=7, bookings=50)
    built = Store.build(club.records())
    assert built.rejected == []
    assert built.store.site.pin_min == DEFAULT_PIN_MIN
    assert min(len(v) for v in built.store.credentials["pin"]) >= DEFAULT_PIN_MIN
    assert all(len(pin) >= DEFAULT_PIN_MIN for pin in built.store.bookings_by_pin)
