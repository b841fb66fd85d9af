"""The reference hub: data file, change log, sync answers, state pushes, events.

Most tests drive `Hub` directly (no broker); the last one runs the whole hub
loop against a real mosquitto with a test client acting as a controller.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest

from firmware.core.messages import parse_delta, parse_snap
from firmware.core.wire import MAX_PAYLOAD, unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from tests.broker import Broker
from tests.sealing import seal
from tools.hub.changes import diff, paginate
from tools.hub.datafile import DataFileError, parse_datafile
from tools.hub.db import HubDB
from tools.hub.keys import read_controller_key, write_new_key
from tools.hub.loop import HubLoop
from tools.hub.server import Hub

SITE = "demo"
KEY1 = bytes(range(32))
KEY2 = bytes(range(1, 33))
NOW = 1_800_000_000.0

SITE_TOML = """
[site]
tz = "Europe/London"
name = "Demo club"

[[door]]
id = "front"
unlock_s = 4

[[schedule]]
id = "daytime"
windows = [[31, 420, 1320]]
except = ["2026-12-25"]

[[group]]
id = "adults"
doors = ["front"]
schedule = "daytime"

[[member]]
id = "m1"
name = "Ada"
groups = ["adults"]
creds = [["tag", "0a1b2c3d4e"], ["pin", "4711"]]

[[member]]
id = "m2"
name = "Bo"
creds = [["tag", "ffff000011"]]

[[gadget]]
id = "g1"
colour = "blue"
"""


def independent_digest(records: dict[tuple[str, str], bytes]) -> bytes:
    """PROTOCOL.md s3, written out again here rather than taken from the code."""
    total = 0
    for (kind, id), rec in records.items():
        h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + rec).digest()
        total += int.from_bytes(h[:16], "big")
    return (total % 2**128).to_bytes(16, "big")


def topic(controller: str, leaf: str) -> str:
    return f"alc/{SITE}/{controller}/{leaf}"


def opened(out: list[tuple[str, bytes]], key: bytes = KEY1) -> list[tuple[str, dict[str, Any]]]:
    """Verify every outgoing message as a controller would: (topic, body)."""
    result = []
    for t, payload in out:
        controller = t.split("/")[2]
        k = key if controller == "c1" else KEY2
        result.append((t, unseal({controller.encode(): k}, t, payload).body))
    return result


def send(hub: Hub, controller: str, leaf: str, body: dict[str, Any], now: float = NOW) -> list[Any]:
    key = KEY1 if controller == "c1" else KEY2
    t = topic(controller, leaf)
    return opened(hub.handle(t, seal(key, controller.encode(), t, body), now))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDB]:
    d = HubDB(tmp_path / "hub.sqlite3")
    yield d
    d.close()


@pytest.fixture
def hub(db: HubDB) -> Hub:
    return Hub(db, site=SITE, keys={"c1": KEY1, "c2": KEY2}, page_size=3)


def records() -> dict[tuple[str, str], bytes]:
    return parse_datafile(SITE_TOML)


def edited(**changes: dict[str, Any] | None) -> dict[tuple[str, str], bytes]:
    """The demo records with member bodies replaced (None deletes)."""
    recs = records()
    for id, body in changes.items():
        if body is None:
            del recs[("member", id)]
        else:
            recs[("member", id)] = cbor2.dumps(body)
    return recs


# --- data file --------------------------------------------------------------------------


def test_data_file_becomes_records_with_exact_bodies() -> None:
    recs = records()
    assert set(recs) == {
        ("site", "site"),
        ("door", "front"),
        ("schedule", "daytime"),
        ("group", "adults"),
        ("member", "m1"),
        ("member", "m2"),
        ("gadget", "g1"),
    }
    assert cbor2.loads(recs[("member", "m1")]) == {
        "name": "Ada",
        "groups": ["adults"],
        "creds": [["tag", "0a1b2c3d4e"], ["pin", "4711"]],
    }
    assert cbor2.loads(recs[("site", "site")]) == {"tz": "Europe/London", "name": "Demo club"}
    assert cbor2.loads(recs[("gadget", "g1")]) == {"colour": "blue"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[door]]\nid = "front"\nmode = "ajar"\n', "door 'front': field 'mode'"),
        ('[[member]]\nid = "m1"\ncreds = [["iris", "x"]]\n', "member 'm1': field 'creds'"),
        ('[[booking]]\nid = "b1"\nstart = 2026-06-01T10:00:00Z\nend = 1\n', "field 'start'"),
        ('[[schedule]]\nid = "s"\nexcept = [2026-12-25]\n', "field 'except'"),
        ('[site]\ntz = "Mars/Olympus"\n', "field 'tz'"),
        ('[[member]]\nname = "no id"\n', "member[0]: needs a text 'id'"),
        ('[[door]]\nid = "a"\n[[door]]\nid = "a"\n', "door 'a': id is used twice"),
        ("version = 3\n", "version: must be an array of tables"),
        ("[[site]]\n", "site: must be one [site] table"),
        ("[[door]\n", "is not valid TOML"),
        (
            '[[member]]\nid = "a"\ncreds = [["tag", "01"]]\n'
            '[[member]]\nid = "b"\ncreds = [["tag", "01"]]\n',
            "member 'b': field 'creds': tag '01' also belongs to member 'a'",
        ),
    ],
)
def test_a_bad_record_is_refused_with_one_clear_line(text: str, expected: str) -> None:
    with pytest.raises(DataFileError) as info:
        parse_datafile(text, where="site.toml")
    message = str(info.value)
    assert message.startswith("site.toml: ")
    assert expected in message
    assert "\n" not in message


# --- edits -> deltas ----------------------------------------------------------------------


def test_first_load_and_each_edit_give_exactly_one_delta_per_controller(hub: Hub) -> None:
    first = opened(hub.update(records(), NOW))
    assert [t for t, _ in first] == [topic("c1", "data"), topic("c2", "data")]
    body = first[0][1]
    assert (body["t"], body["epoch"], body["from"], body["to"]) == ("delta", hub.epoch, 0, 1)
    assert {(op[1], op[2]) for op in body["ops"]} == set(records())
    assert hub.v == 1
    assert hub.digest == independent_digest(records())

    assert hub.update(records(), NOW + 1) == []  # saved without a change: nothing

    new_m1 = {"name": "Ada L.", "creds": [["tag", "0a1b2c3d4e"]]}
    second = opened(hub.update(edited(m1=new_m1, m2=None), NOW + 2))
    assert len(second) == 2
    for _, delta in second:
        assert (delta["from"], delta["to"], delta["now"]) == (1, 2, int(NOW + 2))
        assert delta["ops"] == [
            ["del", "member", "m2"],
            ["put", "member", "m1", cbor2.dumps(new_m1)],
        ]
        parse_delta(delta)  # what the controller's parser accepts
    assert hub.digest == independent_digest(edited(m1=new_m1, m2=None))


def test_a_tag_moving_between_members_is_released_before_it_is_claimed() -> None:
    old = {
        ("member", "a"): cbor2.dumps({"creds": [["tag", "01"]]}),
        ("member", "b"): cbor2.dumps({"creds": []}),
    }
    new = {
        ("member", "a"): cbor2.dumps({"creds": []}),
        ("member", "b"): cbor2.dumps({"creds": [["tag", "01"]]}),
    }
    assert [op[2] for op in diff(old, new)] == ["a", "b"]
    assert [op[2] for op in diff(new, old)] == ["b", "a"]


# --- sync requests ------------------------------------------------------------------------


def assemble(pages: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], bytes]:
    """Check the pages make one complete snapshot and return its records."""
    parsed = [parse_snap(body) for _, body in pages]
    assert len({p.sync for p in parsed}) == 1
    assert sorted(p.page for p in parsed) == list(range(parsed[0].pages))
    recs: dict[tuple[str, str], bytes] = {}
    for p in parsed:
        for kind, id, rec in p.recs:
            recs[(kind, id)] = rec
    assert parsed[0].digest == independent_digest(recs)
    return recs


def sync_request(**fields: Any) -> dict[str, Any]:
    """A controller's `sync` request (PROTOCOL.md s3): a delta request of an empty
    controller unless `fields` say otherwise."""
    base = {"t": "sync", "epoch": None, "v": 0, "digest": bytes(16), "full": False}
    return base | {"reason": "boot", "req": "req-1"} | fields


def test_sync_gets_deltas_when_the_log_covers_it(hub: Hub) -> None:
    hub.update(records(), NOW)
    hub.update(edited(m2=None), NOW)
    hub.update(edited(m2=None, m1=None), NOW)
    req = sync_request(epoch=hub.epoch, v=1, reason="gap")
    out = send(hub, "c1", "sync", req)
    assert [(b["t"], b["from"], b["to"]) for _, b in out] == [("delta", 1, 2), ("delta", 2, 3)]
    assert all(t == topic("c1", "data") for t, _ in out)
    caught_up = req | {"v": 3, "digest": hub.digest}
    assert send(hub, "c1", "sync", caught_up) == []


@pytest.mark.parametrize(
    "change",
    [
        {"full": True, "reason": "command"},
        {"epoch": "another", "reason": "epoch"},
        {"epoch": None, "v": 0, "full": True, "reason": "boot"},
        {"v": 0},  # v0 -> v1 was too long ago for the log (keep_versions=2)
        {"v": 3},  # the hub's version, but not its digest: the copy differs
    ],
)
def test_sync_gets_a_paged_snapshot_otherwise(tmp_path: Path, change: dict[str, Any]) -> None:
    db = HubDB(tmp_path / "hub.sqlite3", keep_versions=2)
    try:
        hub = Hub(db, site=SITE, keys={"c1": KEY1}, page_size=3)
        hub.update(records(), NOW)
        hub.update(edited(m2=None), NOW)
        hub.update(records(), NOW)
        req = sync_request(epoch=hub.epoch, v=2, reason="gap") | change
        out = send(hub, "c1", "sync", req)
        assert {b["t"] for _, b in out} == {"snap"}
        assert [len(b["recs"]) for _, b in out] == [3, 3, 1]  # 7 records, page size 3
        assert all(b["sync"] == "req-1" and b["v"] == 3 for _, b in out)
        assert all(b["epoch"] == hub.epoch for _, b in out)
        assert assemble(out) == records()
    finally:
        db.close()


def test_snapshot_of_an_empty_dataset_is_one_empty_page(hub: Hub) -> None:
    out = send(hub, "c1", "sync", sync_request(full=True, reason="command"))
    assert len(out) == 1
    assert out[0][1]["recs"] == [] and out[0][1]["digest"] == bytes(16)


def test_snapshot_pages_stay_under_the_payload_cap(db: HubDB) -> None:
    big = {("blob", f"b{i:03}"): cbor2.dumps({"data": bytes(20_000 + i)}) for i in range(40)}
    hub = Hub(db, site=SITE, keys={"c1": KEY1}, page_size=1000)
    hub.update(big, NOW)
    out = hub.snapshot("c1", NOW, "req-1")
    assert len(out) > 1
    assert all(len(payload) <= MAX_PAYLOAD for _, payload in out)
    assert assemble(opened(out)) == big
    # Pages are cut by bytes here, not by count: each page holds what fits.
    pages = paginate(big, 1000)
    assert len(pages) == len(out)
    assert all(len(p) < 1000 for p in pages)


def test_a_change_too_big_for_one_delta_is_fetched_through_the_sync_command(hub: Hub) -> None:
    send(hub, "c1", "state", {"t": "state", "online": True, "epoch": None, "v": 0})
    big = {("blob", f"b{i:03}"): cbor2.dumps({"data": bytes(10_000)}) for i in range(40)}
    out = opened(hub.update(big, NOW + 100))
    # c1 is online: it is told to resync; c2 never said it is online: it will ask.
    assert [(t, b["t"], b["cmd"]) for t, b in out] == [(topic("c1", "cmd"), "cmd", "sync")]
    assert out[0][1]["iat"] == int(NOW + 100) < out[0][1]["exp"]
    # c1 runs the command: it asks for the snapshot, which carries its request id.
    asked = sync_request(epoch=hub.epoch, v=0, full=True, reason="command", req="c1-x")
    answer = send(hub, "c1", "sync", asked)
    assert {b["sync"] for _, b in answer} == {"c1-x"} and assemble(answer) == big
    req = sync_request(epoch=hub.epoch, v=0, reason="gap")
    assert {b["t"] for _, b in send(hub, "c2", "sync", req)} == {"snap"}


@pytest.mark.parametrize("reason", ["boot", "schedule", "outage", "epoch"])
def test_sync_of_a_controller_that_has_it_all_gets_current(hub: Hub, reason: str) -> None:
    hub.update(records(), NOW)
    full = reason != "boot"
    req = sync_request(epoch=hub.epoch, v=hub.v, digest=hub.digest, full=full, reason=reason)
    out = send(hub, "c1", "sync", req, NOW + 5)
    assert out == [
        (
            topic("c1", "data"),
            {
                "t": "current",
                "req": "req-1",
                "epoch": hub.epoch,
                "v": hub.v,
                "digest": hub.digest,
                "now": int(NOW + 5),
            },
        )
    ]


@pytest.mark.parametrize("reason", ["command", "purge", "digest", "stalled"])
def test_sync_asked_by_a_person_or_for_a_suspect_copy_gets_the_snapshot(
    hub: Hub, reason: str
) -> None:
    hub.update(records(), NOW)
    req = sync_request(epoch=hub.epoch, v=hub.v, digest=hub.digest, full=True, reason=reason)
    out = send(hub, "c1", "sync", req)
    assert {b["t"] for _, b in out} == {"snap"} and assemble(out) == records()


@pytest.mark.parametrize(
    "change",
    [
        {"v": 0},  # behind: the deltas
        {"digest": bytes(16)},  # same version, another digest: the snapshot
        {"epoch": "old"},  # another epoch: the snapshot
    ],
)
def test_current_only_when_epoch_v_and_digest_all_agree(hub: Hub, change: dict[str, Any]) -> None:
    hub.update(records(), NOW)
    req = sync_request(epoch=hub.epoch, v=hub.v, digest=hub.digest, full=True, reason="schedule")
    out = send(hub, "c1", "sync", req | change)
    assert out and "current" not in {b["t"] for _, b in out}


@pytest.mark.parametrize(
    "change",
    [
        {"req": None},
        {"req": ""},
        {"req": "r" * 129},
        {"digest": None},
        {"digest": b"short"},
        {"reason": None},
        {"v": -1},
        {"full": 1},
        {"epoch": 5},
    ],
)
def test_a_malformed_sync_request_is_dropped(hub: Hub, change: dict[str, Any]) -> None:
    hub.update(records(), NOW)
    before = (hub.epoch, hub.v, hub.digest)
    assert send(hub, "c1", "sync", sync_request(full=True, reason="command") | change) == []
    assert (hub.epoch, hub.v, hub.digest) == before


# --- state --------------------------------------------------------------------------------


def state(hub: Hub, **fields: Any) -> dict[str, Any]:
    base = {"t": "state", "online": True, "epoch": hub.epoch, "v": hub.v, "digest": hub.digest}
    return base | {"sync": {"state": "idle", "got": 0, "of": 0}} | fields


def test_state_that_agrees_gets_nothing(hub: Hub) -> None:
    hub.update(records(), NOW)
    assert send(hub, "c1", "state", state(hub), NOW + 60) == []


def commands(out: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """The commands among the messages a hub publishes: (controller, cmd)."""
    return [(t.split("/")[2], b["cmd"]) for t, b in opened(out) if b["t"] == "cmd"]


def test_state_with_a_wrong_digest_gets_the_sync_command_at_most_every_30_s(hub: Hub) -> None:
    hub.update(records(), NOW)
    wrong = state(hub, digest=bytes(16))
    # A delta may still be on its way: nothing for the first 10 s.
    assert send(hub, "c1", "state", wrong, NOW + 60) == []
    assert hub.tick(NOW + 69) == []
    out = hub.tick(NOW + 70)
    assert commands(out) == [("c1", "sync")]
    assert {t for t, _ in out} == {topic("c1", "cmd")}  # never a snapshot unasked
    assert send(hub, "c1", "state", wrong, NOW + 75) == []  # no spam
    assert hub.tick(NOW + 90) == []
    assert commands(hub.tick(NOW + 100)) == [("c1", "sync")]  # still wrong 30 s later


def test_state_with_events_waiting_gets_an_ack_of_what_the_hub_has(hub: Hub) -> None:
    hub.update(records(), NOW)
    batch = [[seq, 1_700_000_000, "access", {"door": "front"}] for seq in (1, 2)]
    send(hub, "c1", "events", {"t": "events", "batch": batch}, NOW + 1)
    out = send(hub, "c1", "state", state(hub, outbox=3), NOW + 60)
    assert out == [(topic("c1", "ack"), {"t": "ack", "upto": 2, "v": hub.v})]
    assert send(hub, "c1", "state", state(hub, outbox=0), NOW + 61) == []
    assert send(hub, "c1", "state", state(hub, outbox=3, online=False), NOW + 62) == []


def test_state_of_another_epoch_gets_the_sync_command(hub: Hub) -> None:
    hub.update(records(), NOW)
    assert send(hub, "c2", "state", state(hub, epoch="old", v=9), NOW + 60) == []
    assert commands(hub.tick(NOW + 70)) == [("c2", "sync")]


def test_state_behind_gets_the_missing_deltas(hub: Hub) -> None:
    hub.update(records(), NOW)
    hub.update(edited(m2=None), NOW)
    assert send(hub, "c1", "state", state(hub, v=1, digest=b"x" * 16), NOW + 60) == []
    out = opened(hub.tick(NOW + 70))
    assert [(b["t"], b["from"], b["to"]) for _, b in out] == [("delta", 1, 2)]


def test_state_behind_further_than_the_log_gets_the_sync_command(tmp_path: Path) -> None:
    db = HubDB(tmp_path / "hub.sqlite3", keep_versions=1)
    try:
        hub = Hub(db, site=SITE, keys={"c1": KEY1})
        hub.update(records(), NOW)
        hub.update(edited(m2=None), NOW)
        hub.update(records(), NOW)
        assert send(hub, "c1", "state", state(hub, v=1, digest=b"x" * 16), NOW + 60) == []
        assert commands(hub.tick(NOW + 70)) == [("c1", "sync")]
    finally:
        db.close()


def test_a_delta_on_its_way_is_given_time_to_arrive(hub: Hub) -> None:
    hub.update(records(), NOW)
    send(hub, "c1", "state", state(hub), NOW)
    # The hub moves on; c1's state still names the version before.
    hub.update(edited(m2=None), NOW + 100)
    assert hub.tick(NOW + 105) == []
    # It applied the delta: its state agrees, and nothing is ever sent.
    send(hub, "c1", "state", state(hub), NOW + 106)
    assert hub.tick(NOW + 200) == []


def test_a_controller_catching_up_is_left_to_its_deltas(hub: Hub) -> None:
    hub.update(records(), NOW)
    for n in range(1, 6):
        hub.update(edited(m2={"name": f"Bo {n}"}), NOW)
    # A slow controller: each state names a newer version, 8 s after the one before.
    for n in range(1, 6):
        behind = state(hub, v=n, digest=bytes([n]) * 16)
        assert send(hub, "c1", "state", behind, NOW + 100 + 8 * n) == []
        assert hub.tick(NOW + 100 + 8 * n + 7) == []
    # Stuck at the last one: the missing delta is sent again.
    out = opened(hub.tick(NOW + 100 + 8 * 5 + 10))
    assert [(b["t"], b["from"], b["to"]) for _, b in out] == [("delta", 5, 6)]


@pytest.mark.parametrize(
    "fields",
    [
        {"online": False},
        {"sync": {"state": "full", "got": 1, "of": 3}},
        {"v": 99},  # ahead of the hub: logged, nothing to send that it would take
    ],
)
def test_state_that_must_not_be_pushed_to(hub: Hub, fields: dict[str, Any]) -> None:
    hub.update(records(), NOW)
    assert (
        send(hub, "c1", "state", state(hub, epoch=hub.epoch, digest=bytes(16)) | fields, NOW + 60)
        == []
    )
    assert hub.tick(NOW + 120) == []


# --- events -------------------------------------------------------------------------------


def events(*seqs: int) -> dict[str, Any]:
    batch = [[s, 1_700_000_000 + s, "access", {"door": "front", "granted": True}] for s in seqs]
    return {"t": "events", "batch": batch}


def test_events_are_stored_once_and_acked_up_to_the_first_gap(db: HubDB) -> None:
    seen: list[int] = []
    hub = Hub(
        db, site=SITE, keys={"c1": KEY1}, on_events=lambda c, es: seen.extend(e.seq for e in es)
    )
    hub.update(records(), NOW)

    def ack(*seqs: int) -> tuple[int, int]:
        ((t, body),) = send(hub, "c1", "events", events(*seqs))
        assert t == topic("c1", "ack") and body["t"] == "ack"
        return body["upto"], body["v"]

    assert ack(1, 2) == (2, 1)
    assert ack(1, 2) == (2, 1)  # at least once: duplicates change nothing
    assert ack(4, 5) == (2, 1)  # 3 is missing
    assert ack(3) == (5, 1)
    assert ack() == (5, 1)
    assert seen == [1, 2, 4, 5, 3]
    stored = db.events("c1")
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    assert stored[0].body == {"door": "front", "granted": True}
    assert stored[0].time == 1_700_000_001


def test_malformed_events_are_dropped_not_acked(hub: Hub) -> None:
    body = {"t": "events", "batch": [[1, 5, "access", {}], [0, 5, "x", {}], "junk", [2, 5, 7, {}]]}
    ((_, ack),) = send(hub, "c1", "events", body)
    assert ack["upto"] == 1


# --- authentication -----------------------------------------------------------------------


def test_messages_that_do_not_verify_are_dropped(hub: Hub) -> None:
    sync = sync_request(full=True)
    c1 = topic("c1", "sync")
    # c2's key and kid on c1's topic: a controller may not speak for another.
    assert hub.handle(c1, seal(KEY2, b"c2", c1, sync), NOW) == []
    # c1's own message, copied to c2's topic.
    assert hub.handle(topic("c2", "sync"), seal(KEY1, b"c1", c1, sync), NOW) == []
    assert hub.handle(c1, b"\xd1garbage", NOW) == []
    # A controller without a key file, another site, a retained sync.
    assert hub.handle(topic("c9", "sync"), seal(KEY1, b"c9", topic("c9", "sync"), sync), NOW) == []
    other = "alc/other/c1/sync"
    assert hub.handle(other, seal(KEY1, b"c1", other, sync), NOW) == []
    assert hub.handle(c1, seal(KEY1, b"c1", c1, sync), NOW, retained=True) == []
    assert len(hub.handle(c1, seal(KEY1, b"c1", c1, sync), NOW)) == 1


# --- the database -------------------------------------------------------------------------


def test_the_database_survives_a_restart_and_new_epoch_resets_history(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    db = HubDB(path)
    Hub(db, site=SITE, keys={}).update(records(), NOW)
    epoch, digest = db.epoch, db.digest
    db.close()
    db = HubDB(path)
    try:
        assert (db.epoch, db.v, db.digest) == (epoch, 1, digest)
        assert dict(db.records) == records()
        assert db.changes_since(0) is not None
        db.new_epoch()
        assert db.epoch != epoch and db.v == 0 and db.digest == digest
        assert db.changes_since(0) == []
    finally:
        db.close()


def test_file_watch_keeps_the_last_good_version(
    tmp_path: Path, db: HubDB, caplog: pytest.LogCaptureFixture
) -> None:
    keys, data = tmp_path / "keys", tmp_path / "site.toml"
    hub = Hub(db, site=SITE, keys={})
    # The link is never started: check_files alone needs no broker.
    loop = HubLoop(hub, data_file=data, keys_dir=keys, settings=BrokerSettings(port=1))
    loop.check_files()
    assert "cannot read" in caplog.text and hub.v == 0 and hub.controllers == {}
    data.write_text(SITE_TOML)
    write_new_key(keys, "c1")
    loop.check_files()
    assert hub.v == 1 and list(hub.controllers) == ["c1"]
    caplog.clear()
    data.write_text(SITE_TOML + '[[door]]\nid = "side"\nmode = "ajar"\n')
    loop.check_files()
    assert "door 'side': field 'mode'" in caplog.text and "still serving v1" in caplog.text
    assert hub.v == 1 and dict(db.records) == records()
    loop.check_files()  # unchanged since: not reloaded, not logged again
    assert caplog.text.count("door 'side'") == 1


# --- against a real broker ----------------------------------------------------------------


class TestController:
    """A bare controller stand-in: a `Link` that collects what the hub sends it."""

    __test__ = False

    def __init__(self, broker: Broker, controller: str, key: bytes) -> None:
        self.controller = controller
        self.key = key
        self.inbox: queue.Queue[LinkEvent] = queue.Queue()
        self.link = Link(
            f"test-{controller}",
            BrokerSettings(broker.host, broker.port),
            self.inbox.put,
            subscriptions=[topic(controller, "data"), topic(controller, "ack")],
            persistent=False,
        )
        self.link.start()
        assert self.link.wait_connected(10)

    def publish(self, leaf: str, body: dict[str, Any]) -> None:
        t = topic(self.controller, leaf)
        self.link.publish(t, seal(self.key, self.controller.encode(), t, body))

    def receive(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            if isinstance(event, Received):
                assert not event.retained
                return unseal({self.controller.encode(): self.key}, event.topic, event.payload).body
        return None


@contextmanager
def hub_and_controller(
    broker: Broker, tmp_path: Path, data_text: str, *, page_size: int = 1000
) -> Iterator[tuple[Path, TestController]]:
    """The hub loop (in a thread) on `data_text`, and a stand-in controller `c1`;
    both stopped, and the thread joined, on the way out."""
    keys = tmp_path / "keys"
    write_new_key(keys, "c1")
    key = read_controller_key(keys, "c1")
    data = tmp_path / "site.toml"
    data.write_text(data_text)
    db = HubDB(tmp_path / "hub.sqlite3")
    hub = Hub(db, site=SITE, keys={}, page_size=page_size)
    loop = HubLoop(
        hub,
        data_file=data,
        keys_dir=keys,
        settings=BrokerSettings(broker.host, broker.port),
        client_id="test-hub",
    )
    thread = threading.Thread(target=loop.run, name="hub")
    thread.start()
    controller = None
    try:
        assert loop.wait_connected(10)
        controller = TestController(broker, "c1", key)
        yield data, controller
    finally:
        if controller is not None:
            controller.link.stop()
        loop.stop()
        thread.join(30)
        db.close()
    assert not thread.is_alive()


def test_hub_against_mosquitto(broker: Broker, tmp_path: Path) -> None:
    with hub_and_controller(broker, tmp_path, SITE_TOML, page_size=2) as (data, controller):
        # Boot with no data: a full sync, asked again if the hub had not yet
        # subscribed when the first request went out.
        pages: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not pages or len(pages) < pages[0]["pages"]):
            if not pages:
                sync = {"t": "sync", "epoch": None, "v": 0, "full": True, "reason": "boot"}
                controller.publish("sync", sync | {"req": "boot-1", "digest": bytes(16)})
            body = controller.receive(3)
            if body is not None and body["t"] == "snap" and body["sync"] == "boot-1":
                pages[body["page"]] = body
        assert pages and len(pages) == pages[0]["pages"] == 4  # 7 records, 2 per page
        snap = assemble([("", p) for p in pages.values()])
        assert snap == records()
        epoch, v = pages[0]["epoch"], pages[0]["v"]

        # An edit of the file: one delta within a couple of seconds.
        text = SITE_TOML.replace('name = "Bo"', 'name = "Bo B."')
        tmp = data.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, data)
        delta = controller.receive(30)
        assert delta is not None and delta["t"] == "delta"
        assert (delta["epoch"], delta["from"], delta["to"]) == (epoch, v, v + 1)
        assert delta["ops"] == [["put", "member", "m2", parse_datafile(text)[("member", "m2")]]]

        # Events are acknowledged.
        controller.publish("events", events(1, 2))
        ack = controller.receive(30)
        assert ack is not None and (ack["t"], ack["upto"], ack["v"]) == ("ack", 2, v + 1)
