"""The reference hub and events: dropped seq ranges move the ack over seqs that
will never come; debits lower the published member credit, and the ack's `v`
names a version that holds them (docs/protocol.md, "Reference hub").

Most tests drive `Hub` directly; the last one runs the hub loop against a real
mosquitto with a `Link` standing in for the controller.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from firmware.core.messages import parse_ack, parse_delta
from firmware.core.model import Member, parse_record
from tests.broker import Broker
from tests.test_hub import (
    KEY1,
    KEY2,
    NOW,
    SITE,
    SITE_TOML,
    hub_and_controller,
    independent_digest,
    opened,
    send,
    topic,
)
from tools.hub.datafile import parse_datafile
from tools.hub.db import Event, HubDB
from tools.hub.ledger import MAX_RANGES, problem
from tools.hub.server import Hub

CREDIT_TOML = SITE_TOML.replace('name = "Ada"\n', 'name = "Ada"\ncredit = 1000\n')


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDB]:
    d = HubDB(tmp_path / "hub.sqlite3")
    yield d
    d.close()


@pytest.fixture
def hub(db: HubDB) -> Hub:
    return Hub(db, site=SITE, keys={"c1": KEY1, "c2": KEY2}, page_size=3)


def access(seq: int) -> list[Any]:
    return [seq, 1_700_000_000 + seq, "access", {"door": "front", "granted": True}]


def system_dropped(seq: int, *ranges: tuple[int, int], what: str = "outbox_full") -> list[Any]:
    body = {"what": what, "detail": "folded", "dropped": [list(r) for r in ranges]}
    return [seq, 1_700_000_000 + seq, "system", body]


def debit(seq: int, member: str = "m1", amount: int = 150, **extra: Any) -> list[Any]:
    body = {"member": member, "light": "court1", "amount": amount, "seconds": 1800}
    body |= {"balance": 0} | extra
    return [seq, 1_700_000_000 + seq, "debit", body]


def post(hub: Hub, *batch: list[Any], controller: str = "c1") -> list[tuple[str, dict[str, Any]]]:
    """Send one `events` batch; return what the hub published, opened."""
    out: list[tuple[str, dict[str, Any]]] = send(
        hub, controller, "events", {"t": "events", "batch": list(batch)}
    )
    return out


def ack_of(out: list[tuple[str, dict[str, Any]]], controller: str = "c1") -> tuple[int, int]:
    """The one ack in `out`, which comes last: (upto, v)."""
    t, body = out[-1]
    assert t == topic(controller, "ack")
    assert [b["t"] for _, b in out].count("ack") == 1
    ack = parse_ack(body)
    return ack.upto, ack.v


def upto(hub: Hub, *batch: list[Any]) -> int:
    return ack_of(post(hub, *batch))[0]


def member(rec: bytes, id: str = "m1") -> Member:
    parsed = parse_record("member", id, rec)
    assert isinstance(parsed, Member)
    return parsed


def published_credit(hub: Hub, id: str = "m1") -> int:
    return member(hub.db.records[("member", id)], id).credit


# --- dropped ranges -----------------------------------------------------------------------


def test_a_dropped_range_fills_the_gap_it_names(hub: Hub) -> None:
    assert upto(hub, access(1), access(2)) == 2
    assert upto(hub, access(6)) == 2  # 3..5 missing
    assert upto(hub, system_dropped(7, (3, 5))) == 7
    assert [e.seq for e in hub.db.events("c1")] == [1, 2, 6, 7]
    assert hub.db.dropped_ranges("c1") == []  # passed by the ack: forgotten


def test_a_range_that_arrives_before_the_events_around_it(hub: Hub) -> None:
    assert upto(hub, system_dropped(10, (2, 9))) == 0  # seq 1 not seen yet
    assert hub.db.dropped_ranges("c1") == [(2, 9)]
    assert upto(hub, access(1)) == 10
    assert upto(hub, access(11)) == 11


def test_a_range_that_arrives_after_the_events_around_it(hub: Hub) -> None:
    assert upto(hub, access(1), access(5), access(6)) == 1
    assert upto(hub, system_dropped(7, (2, 4))) == 7


def test_overlapping_and_repeated_ranges(hub: Hub) -> None:
    assert upto(hub, access(1)) == 1
    assert upto(hub, system_dropped(20, (5, 12), (2, 8), (12, 12))) == 12
    assert upto(hub, system_dropped(21, (13, 19), (3, 4), (1, 1))) == 21
    assert upto(hub, system_dropped(20, (5, 12)), system_dropped(21, (13, 19))) == 21
    assert hub.db.dropped_ranges("c1") == []


def test_a_range_far_ahead_does_not_skip_seqs_before_it(hub: Hub) -> None:
    assert upto(hub, access(1), access(2)) == 2
    assert upto(hub, system_dropped(10, (5, 8))) == 2  # 3, 4 and 9 never seen
    assert upto(hub, access(3)) == 3
    assert upto(hub, access(4)) == 8  # 9 still missing
    assert upto(hub, access(9)) == 10


def test_ranges_are_per_controller(hub: Hub) -> None:
    assert upto(hub, system_dropped(5, (1, 4))) == 5
    assert ack_of(post(hub, access(5), controller="c2"), "c2")[0] == 0


def test_a_million_dropped_seqs_cost_one_row(hub: Hub) -> None:
    started = time.perf_counter()
    out = post(hub, system_dropped(1_000_001, (1, 999_999), (1_000_000, 1_000_000)))
    assert ack_of(out)[0] == 1_000_001
    assert upto(hub, access(1_000_002)) == 1_000_002
    assert time.perf_counter() - started < 1.0
    assert hub.db.dropped_ranges("c1") == []


def test_dropped_ranges_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    db = HubDB(path)
    assert upto(Hub(db, site=SITE, keys={"c1": KEY1}), access(1), system_dropped(9, (3, 8))) == 1
    db.close()
    db = HubDB(path)
    try:
        assert db.dropped_ranges("c1") == [(3, 8)]
        assert upto(Hub(db, site=SITE, keys={"c1": KEY1}), access(2)) == 9
    finally:
        db.close()


@pytest.mark.parametrize(
    "dropped",
    [
        [[3, 2]],  # first > last
        [[0, 1]],  # seqs start at 1
        [[2, 10]],  # reaches the event's own seq
        [[2, 11]],  # beyond it
        [[2, 3, 4]],
        [[2.0, 3]],
        [[True, 3]],
        [["2", "3"]],
        [2, 3],
        "2-3",
        {"first": 2},
    ],
)
def test_a_bad_dropped_list_is_refused_with_its_event(
    hub: Hub, dropped: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [10, 1, "system", {"what": "outbox_full", "dropped": dropped}]
    assert upto(hub, access(1), bad, access(2)) == 2
    assert [e.seq for e in hub.db.events("c1")] == [1, 2]
    assert hub.db.dropped_ranges("c1") == []
    assert "dropping a malformed event" in caplog.text


def test_the_number_of_ranges_is_bounded() -> None:
    # More ranges than one message can carry; checked on the body directly.
    at_most = {"what": "outbox_full", "dropped": [[1, 1]] * MAX_RANGES}
    assert problem("system", at_most, 2) is None
    over = {"what": "outbox_full", "dropped": [[1, 1]] * (MAX_RANGES + 1)}
    assert problem("system", over, 2) is not None


def test_a_purge_drop_counts_like_a_fold(hub: Hub) -> None:
    purge = system_dropped(4, (1, 3), what="error")
    assert upto(hub, purge) == 4
    assert hub.db.events("c1")[0].body["what"] == "error"


def test_system_events_without_ranges_are_stored_as_before(hub: Hub) -> None:
    boot = [1, 5, "system", {"what": "boot", "detail": "v1"}]
    odd = [2, 5, "system", "not even a map"]
    assert upto(hub, boot, odd) == 2


# --- debits -------------------------------------------------------------------------------


def credit_delta(out: list[tuple[str, dict[str, Any]]], controller: str = "c1") -> dict[str, Any]:
    """The one delta `controller` got in `out`, checked as the controller would."""
    (body,) = [b for t, b in out if t == topic(controller, "data")]
    parse_delta(body)
    return body


def test_a_debit_lowers_the_credit_and_the_ack_names_that_version(hub: Hub) -> None:
    hub.update(parse_datafile(CREDIT_TOML), NOW)
    before = member(hub.db.records[("member", "m1")])
    assert (hub.v, before.credit) == (1, 1000)

    out = post(hub, access(1), debit(2, amount=150))
    # Every controller hears of the new credit; the ack comes after the delta.
    assert [t for t, _ in out] == [topic("c1", "data"), topic("c2", "data"), topic("c1", "ack")]
    delta = credit_delta(out)
    assert (delta["from"], delta["to"]) == (1, 2)
    ((op, kind, id, rec),) = delta["ops"]
    assert (op, kind, id) == ("put", "member", "m1")
    after = member(rec)
    assert after.credit == 850
    assert (after.name, after.groups, after.creds) == (before.name, before.groups, before.creds)
    assert ack_of(out) == (2, 2)  # upto 2, from v2 on
    assert hub.db.records[("member", "m1")] == rec
    assert hub.digest == independent_digest(dict(hub.db.records))
    # Only the credit changed: the other fields keep their bytes and order.
    file_body = cbor2.loads(parse_datafile(CREDIT_TOML)[("member", "m1")])
    assert list(cbor2.loads(rec).items()) == list((file_body | {"credit": 850}).items())


def test_a_debit_counts_once_however_often_it_comes(hub: Hub) -> None:
    hub.update(parse_datafile(CREDIT_TOML), NOW)
    assert ack_of(post(hub, debit(1))) == (1, 2)
    again = post(hub, debit(1), debit(1))
    assert [b["t"] for _, b in again] == ["ack"]  # nothing new: no change set
    assert ack_of(again) == (1, 2)
    assert (published_credit(hub), hub.db.debited("m1")) == (850, 150)
    # One seq twice in one batch, with another debit: counted once each.
    out = post(hub, debit(2, amount=50), debit(2, amount=50), debit(3, "m2", amount=7))
    delta = credit_delta(out)
    assert [(op[2], member(op[3], op[2]).credit) for op in delta["ops"]] == [
        ("m1", 800),
        ("m2", -7),
    ]
    assert ack_of(out) == (3, 3)


def test_members_without_debits_keep_the_file_bytes(hub: Hub) -> None:
    recs = parse_datafile(CREDIT_TOML)
    hub.update(recs, NOW)
    post(hub, debit(1))
    assert hub.db.records[("member", "m2")] == recs[("member", "m2")]
    assert {k: r for k, r in hub.db.records.items() if k != ("member", "m1")} == {
        k: r for k, r in recs.items() if k != ("member", "m1")
    }


def test_debits_out_of_order_are_all_in_the_version_the_ack_names(hub: Hub) -> None:
    hub.update(parse_datafile(CREDIT_TOML), NOW)
    out = post(hub, debit(2, amount=100))
    assert ack_of(out) == (0, 2)  # stored, reflected, but seq 1 is missing
    assert member(credit_delta(out)["ops"][0][3]).credit == 900
    out = post(hub, debit(1, amount=10))
    assert ack_of(out) == (2, 3)
    assert member(credit_delta(out)["ops"][0][3]).credit == 890


def test_a_top_up_in_the_file_keeps_the_debits(hub: Hub) -> None:
    hub.update(parse_datafile(CREDIT_TOML), NOW)
    post(hub, debit(1, amount=150))
    # Another member edited: m1 is not touched, its credit stays lowered.
    renamed = CREDIT_TOML.replace('name = "Bo"', 'name = "Bo B."')
    out = hub.update(parse_datafile(renamed), NOW + 1)
    assert [op[2] for op in credit_delta(opened(out))["ops"]] == ["m2"]
    assert published_credit(hub) == 850
    # Topped up to 50.00: published = 5000 - 150.
    topped = renamed.replace("credit = 1000", "credit = 5000")
    delta = credit_delta(opened(hub.update(parse_datafile(topped), NOW + 2)))
    assert [(op[2], member(op[3]).credit) for op in delta["ops"]] == [("m1", 4850)]
    assert hub.update(parse_datafile(topped), NOW + 3) == []  # saved again: no change
    post(hub, debit(2, amount=50))
    assert published_credit(hub) == 4800
    # Back to the first file: 1000 - 200.
    hub.update(parse_datafile(CREDIT_TOML), NOW + 4)
    assert published_credit(hub) == 800


def test_a_debit_for_an_unknown_member_waits_for_it(hub: Hub) -> None:
    hub.update(parse_datafile(CREDIT_TOML), NOW)
    out = post(hub, debit(1, "m9", amount=300), debit(2, "m8", amount=5))
    assert ack_of(out) == (2, 1)  # no record to change: v stays
    assert [e.seq for e in hub.db.events("c1")] == [1, 2]
    assert hub.db.debited("m9") == 300
    with_m9 = CREDIT_TOML + '\n[[member]]\nid = "m9"\nname = "Cy"\ncredit = 1000\n'
    with_m9 += '\n[[member]]\nid = "m8"\nname = "Di"\n'
    hub.update(parse_datafile(with_m9), NOW + 1)
    assert (published_credit(hub, "m9"), published_credit(hub, "m8")) == (700, -5)
    assert published_credit(hub) == 1000  # m1 never debited


def test_a_deleted_and_restored_member_gets_its_debits_back(hub: Hub) -> None:
    recs = parse_datafile(CREDIT_TOML)
    hub.update(recs, NOW)
    post(hub, debit(1, amount=150))
    hub.update({k: r for k, r in recs.items() if k != ("member", "m1")}, NOW + 1)
    assert ack_of(post(hub, debit(2, amount=50))) == (2, 3)  # absent: nothing to change
    hub.update(recs, NOW + 2)
    assert published_credit(hub) == 800


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"member": "m1", "light": "l", "amount": 0, "seconds": 1, "balance": 0}, "'amount'"),
        ({"member": "m1", "light": "l", "amount": -5, "seconds": 1, "balance": 0}, "'amount'"),
        ({"member": "m1", "light": "l", "amount": 1.5, "seconds": 1, "balance": 0}, "'amount'"),
        ({"member": "m1", "light": "l", "amount": True, "seconds": 1, "balance": 0}, "'amount'"),
        ({"member": "m1", "light": "l", "amount": 1 << 63, "seconds": 1, "balance": 0}, "amount"),
        ({"member": "m1", "light": "l", "seconds": 1, "balance": 0}, "'amount'"),
        ({"member": 7, "light": "l", "amount": 5, "seconds": 1, "balance": 0}, "member id"),
        ({"member": "", "light": "l", "amount": 5, "seconds": 1, "balance": 0}, "member id"),
        ({"light": "l", "amount": 5, "seconds": 1, "balance": 0}, "member id"),
        ({"member": "m1", "amount": 5, "seconds": 1, "balance": 0}, "light id"),
        ({"member": "m1", "light": "l", "amount": 5, "seconds": -1, "balance": 0}, "'seconds'"),
        ({"member": "m1", "light": "l", "amount": 5, "seconds": 1}, "'balance'"),
        ({"member": "m1", "light": "l", "amount": 5, "seconds": 1, "balance": "0"}, "'balance'"),
        ("debit", "must be a map"),
    ],
)
def test_a_malformed_debit_is_skipped_and_logged(
    hub: Hub, body: Any, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    hub.update(parse_datafile(CREDIT_TOML), NOW)
    caplog.set_level(logging.WARNING)
    out = post(hub, debit(1, amount=100), [2, 5, "debit", body], debit(3, amount=1))
    assert ack_of(out) == (1, 2)  # 3 stored; 2 never is, so the ack stops there
    assert [e.seq for e in hub.db.events("c1")] == [1, 3]
    assert (hub.db.debited("m1"), published_credit(hub)) == (101, 899)
    assert "dropping a malformed event" in caplog.text and why in caplog.text


def test_a_direct_commit_of_a_member_is_published_with_its_debits(hub: Hub) -> None:
    recs = parse_datafile(CREDIT_TOML)
    hub.update(recs, NOW)
    post(hub, debit(1, amount=150))
    body = cbor2.loads(recs[("member", "m1")]) | {"credit": 2000}
    hub.commit([["put", "member", "m1", cbor2.dumps(body)]], NOW + 1)
    assert published_credit(hub) == 1850


def test_a_snapshot_carries_the_lowered_credit(hub: Hub) -> None:
    hub.update(parse_datafile(CREDIT_TOML), NOW)
    post(hub, debit(1, amount=150))
    request = {"t": "sync", "epoch": None, "v": 0, "digest": bytes(16), "full": True}
    out = send(hub, "c1", "sync", request | {"reason": "boot", "req": "r1"})
    recs = {(k, i): r for _, b in out for k, i, r in b["recs"]}
    assert member(recs[("member", "m1")]).credit == 850
    assert out[0][1]["digest"] == independent_digest(recs)


def test_debits_stored_but_not_yet_published_are_published_after_a_restart(
    tmp_path: Path,
) -> None:
    """A crash between storing a batch and committing its change set: the next
    start finds the debit in `credit` but not in the record, and publishes it
    before any ack could name a version without it."""
    path = tmp_path / "hub.sqlite3"
    db = HubDB(path)
    Hub(db, site=SITE, keys={}).update(parse_datafile(CREDIT_TOML), NOW)
    body = {"member": "m1", "light": "l", "amount": 150, "seconds": 1, "balance": 0}
    db.add_events("c1", [Event(1, 5, "debit", body)], 5)  # the Hub never got further
    db.close()
    db = HubDB(path)
    try:
        hub = Hub(db, site=SITE, keys={"c1": KEY1})
        assert member(db.records[("member", "m1")]).credit == 1000
        out = post(hub, debit(1, amount=150))  # the controller sends it again
        assert member(credit_delta(out)["ops"][0][3]).credit == 850
        assert ack_of(out) == (1, 2)
        assert hub.tick(NOW) == []  # nothing left to publish
    finally:
        db.close()


def test_tick_publishes_what_a_restart_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    db = HubDB(path)
    Hub(db, site=SITE, keys={}).update(parse_datafile(CREDIT_TOML), NOW)
    body = {"member": "m1", "light": "l", "amount": 150, "seconds": 1, "balance": 0}
    db.add_events("c1", [Event(1, 5, "debit", body)], 5)
    db.close()
    db = HubDB(path)
    try:
        hub = Hub(db, site=SITE, keys={"c1": KEY1})
        delta = credit_delta(opened(hub.tick(NOW)))
        assert (delta["to"], member(delta["ops"][0][3]).credit) == (2, 850)
        assert hub.tick(NOW + 1) == []
    finally:
        db.close()


def test_a_database_from_before_the_ledger_counts_its_stored_events(tmp_path: Path) -> None:
    """Debits and dropped ranges stored by a hub without the `credit` and
    `dropped` tables are counted once, when the tables are created."""
    path = tmp_path / "hub.sqlite3"
    db = HubDB(path)
    Hub(db, site=SITE, keys={}).update(parse_datafile(CREDIT_TOML), NOW)
    d = {"member": "m1", "light": "l", "amount": 150, "seconds": 1, "balance": 0}
    s = {"what": "outbox_full", "dropped": [[3, 4]]}
    db.close()
    conn = sqlite3.connect(path)
    rows = [(1, "debit", d), (2, "access", {}), (5, "system", s), (6, "debit", d | {"amount": 0})]
    conn.executemany(
        "INSERT INTO events VALUES ('c1', ?, 1, ?, ?, 1)",
        [(seq, type_, cbor2.dumps(body)) for seq, type_, body in rows],
    )
    conn.execute("INSERT OR REPLACE INTO acked VALUES ('c1', 2)")
    conn.execute("DROP TABLE credit")
    conn.execute("DROP TABLE dropped")
    conn.commit()
    conn.close()
    db = HubDB(path)
    try:
        assert (db.debited("m1"), db.acked("c1")) == (150, 6)  # seq 6 is a bad debit
        hub = Hub(db, site=SITE, keys={"c1": KEY1})
        hub.tick(NOW)
        assert published_credit(hub) == 850
    finally:
        db.close()


# --- against a real broker ----------------------------------------------------------------


def test_a_debit_through_mosquitto(broker: Broker, tmp_path: Path) -> None:
    with hub_and_controller(broker, tmp_path, CREDIT_TOML) as (_data, controller):
        batch = {"t": "events", "batch": [access(1), debit(2, amount=250)]}
        delta: dict[str, Any] | None = None
        ack: dict[str, Any] | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (delta is None or ack is None):
            if ack is None:
                # Again until acked: the hub may not have subscribed yet, and a
                # batch sent twice is stored (and debited) once.
                controller.publish("events", batch)
            body = controller.receive(3)
            if body is not None and body["t"] == "delta":
                parse_delta(body)
                puts = [op for op in body["ops"] if op[:3] == ["put", "member", "m1"]]
                if puts and member(puts[0][3]).credit == 750:
                    delta = body
            elif body is not None and body["t"] == "ack":
                ack = body
        assert delta is not None and ack is not None
        assert (delta["from"], delta["to"]) == (1, 2)
        assert (parse_ack(ack).upto, parse_ack(ack).v) == (2, delta["to"])
