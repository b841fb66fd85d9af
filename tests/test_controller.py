"""The controller core in virtual time: dispatch, state reports, rejected input,
presentations, the upload and the daily storage check. No broker, no clock,
no disk. The hub's commands are in test_commands.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2

from firmware.core.actions import CheckStorage, Output, Publish
from firmware.core.doors import DoorWiring
from firmware.core.facility import Facility
from firmware.core.inputs import (
    Connected,
    ContactChanged,
    DiskStatus,
    InputsDropped,
    PayloadReceived,
    Presented,
    RexPressed,
    StorageChecked,
    Tick,
)
from firmware.core.outbox import DeleteAcked, SendEvents
from firmware.core.sync import SaveDelta, SaveSnapshot
from tests.builders import rec, store_of
from tests.core_rig import (
    BASE,
    KEY,
    OTHER_KEY,
    RECORDS,
    T0,
    cmd,
    logged,
    make,
    replies,
    run_work,
    sealed,
    snapshot,
    system,
)
from tests.sealing import seal


def test_connect_publishes_retained_state_and_a_boot_request() -> None:
    c = make()
    actions = c.handle(Connected(), T0)
    sync = [a.message for a in actions if isinstance(a, Publish) and a.suffix == "sync"]
    assert sync and sync[0]["reason"] == "boot" and sync[0]["full"] is False
    states = [a for a in actions if isinstance(a, Publish) and a.suffix == "state"]
    assert len(states) == 1 and states[0].retain
    state = states[0].message
    assert (state["epoch"], state["v"], state["digest"]) == ("e1", 3, c.session.digest)
    assert state["online"] is True and state["sync"] == {"state": "idle", "got": 0, "of": 0}


def test_state_is_coalesced_to_one_a_second_and_the_latest_is_sent() -> None:
    c = make()
    c.handle(Connected(), T0)
    for i, v in enumerate(range(3, 8)):
        d = {
            "t": "delta",
            "epoch": "e1",
            "from": v,
            "to": v + 1,
            "ops": [["put", "member", f"m{v}", rec(name=str(v))]],
            "now": int(T0),
        }
        out = c.handle(sealed("data", d), T0 + 0.1 * (i + 1))
        assert not [a for a in out if isinstance(a, Publish) and a.suffix == "state"]
    assert c.next_deadline() == T0 + 1.0
    out = c.handle(Tick(), T0 + 1.0)
    states = [a.message for a in out if isinstance(a, Publish) and a.suffix == "state"]
    assert len(states) == 1 and states[0]["v"] == 8


def test_retained_and_badly_sealed_messages_are_dropped_and_reported_once_a_minute() -> None:
    c = make()
    c.handle(Connected(), T0)
    message = sealed("cmd", cmd("status"))
    out = c.handle(PayloadReceived(message.topic, message.payload, retained=True), T0)
    assert replies(out) == [] and system(out) == ["error"]

    wrong_key = sealed("cmd", cmd("status", "x"), key=OTHER_KEY)
    other_topic = PayloadReceived(
        f"{BASE}/cmd", seal(KEY, b"ctl1", "alc/demo/ctl2/cmd", cmd("status", "y"))
    )
    assert system(c.handle(wrong_key, T0)) == ["auth_failed"]
    assert system(c.handle(other_topic, T0 + 1)) == []  # within the minute: counted
    out = c.handle(wrong_key, T0 + 61)
    assert system(out) == ["auth_failed"]
    detail = logged(out, "system")[0]["detail"]
    assert "1 more" in detail
    assert c.session.v == 3


def test_the_core_takes_no_bench_input() -> None:
    """Bench inputs are the simulator's edge's (sim/bench.py): the core neither
    decides on one nor reports it, even sealed with its key."""
    present = {"t": "present", "reader": "front-in", "credkind": "tag", "value": "00aa11bb"}
    c = make()
    out = c.handle(sealed("bench/in", present), T0)
    assert logged(out, "access") == [] and system(out) == []
    # The same credential at the reader is decided.
    access = logged(c.handle(Presented("front-in", "tag", "00aa11bb"), T0), "access")
    assert access == [
        {
            "door": "front",
            "reader": "front-in",
            "credkind": "tag",
            "value": "11bb",
            "member": "ann",
            "booking": None,
            "granted": True,
            "reason": "granted",
        }
    ]


def test_daily_storage_check_and_a_damaged_copy_triggers_a_digest_sync() -> None:
    c = make()
    c.handle(Connected(), T0)
    assert not [a for a in c.handle(Tick(), T0 + 3600) if isinstance(a, CheckStorage)]
    assert [a for a in c.handle(Tick(), T0 + 86400) if isinstance(a, CheckStorage)]
    intact = c.handle(StorageChecked(True), T0 + 86401)
    assert not [a for a in intact if isinstance(a, Publish) and a.suffix == "sync"]
    out = c.handle(StorageChecked(False), T0 + 86402)
    sync = [a.message for a in out if isinstance(a, Publish) and a.suffix == "sync"]
    assert sync and sync[0]["reason"] == "digest" and sync[0]["full"] is True


def test_garbage_on_every_topic_never_raises() -> None:
    c = make()
    c.handle(Connected(), T0)
    for suffix in ("data", "cmd", "ack", "bench/in", "state", "nonsense"):
        for payload in (b"", b"\xff", cbor2.dumps({"t": "x"}), bytes(300_000)):
            c.handle(PayloadReceived(f"{BASE}/{suffix}", payload), T0)
        c.handle(sealed(suffix, {"t": "delta", "epoch": 5}), T0)
    assert c.session.v == 3 and c.session.digest == store_of(RECORDS).digest


def test_events_are_uploaded_and_leave_on_ack() -> None:
    c = make()
    c.handle(Connected(), T0)
    out = c.handle(Presented("front-in", "tag", "00aa11bb"), T0 + 1)
    sends = [a for a in out if isinstance(a, SendEvents)]
    assert sends and sends[0].upto == c.outbox.last_seq
    assert c.state()["outbox"] == c.outbox.last_seq
    out = c.handle(sealed("ack", {"t": "ack", "upto": c.outbox.last_seq, "v": 3}), T0 + 2)
    assert DeleteAcked(c.outbox.last_seq, 3) in out


def test_a_due_full_sync_waits_without_keeping_the_loop_busy() -> None:
    """The twice-daily full sync is due at T0 + 12 h. While it runs (or while a
    gap stays open) that past due time must not be the next deadline: the
    runtime would tick without sleeping until the snapshot came."""
    c = make()
    c.handle(Connected(), T0)
    due = T0 + 43200
    out = c.handle(Tick(), due)
    sync = [a.message for a in out if isinstance(a, Publish) and a.suffix == "sync"]
    assert [(m["full"], m["reason"]) for m in sync] == [(True, "schedule")]
    assert c.next_deadline() == due + 30  # the stall check, no sooner

    c = make()
    c.handle(Connected(), T0)
    gap = {"t": "delta", "epoch": "e1", "from": 5, "to": 6, "ops": [], "now": int(T0)}
    c.handle(sealed("data", gap), due - 5)
    c.handle(Tick(), due)
    assert c.next_deadline() == due + 5  # the gap's retry, not the overdue full sync


def test_a_clock_far_off_the_hubs_is_reported_once_and_again_when_right() -> None:
    c = make()
    c.handle(Connected(), T0)

    def delta(v: int, hub_now: float) -> PayloadReceived:
        ops = [["put", "member", f"m{v}", rec(name=str(v))]]
        body = {"t": "delta", "epoch": "e1", "from": v, "to": v + 1, "ops": ops}
        return sealed("data", {**body, "now": int(hub_now)})

    assert system(c.handle(delta(3, T0 - 10), T0)) == []
    out = c.handle(delta(4, T0 - 3600), T0 + 1)
    assert logged(out, "system") == [{"what": "clock", "detail": "clock is +3601 s off the hub's"}]
    assert c.state()["clock_ok"] is False
    assert system(c.handle(delta(5, T0 - 3600), T0 + 2)) == []
    out = c.handle(delta(6, T0 + 3), T0 + 3)
    assert logged(out, "system") == [{"what": "clock", "detail": "clock agrees"}]


def test_the_card_failing_and_recovering_shows_in_state_and_one_event_each_way() -> None:
    c = make()
    c.handle(Connected(), T0)
    assert c.state()["disk_ok"] is True  # until told otherwise
    out = c.handle(DiskStatus(False, "data directory read-only"), T0 + 5)
    assert logged(out, "system") == [{"what": "storage", "detail": "data directory read-only"}]
    states = [a.message for a in out if isinstance(a, Publish) and a.suffix == "state"]
    assert [s["disk_ok"] for s in states] == [False]
    assert system(c.handle(DiskStatus(False, "still read-only"), T0 + 6)) == []
    out = c.handle(DiskStatus(True, "writes reach the card again"), T0 + 7)
    assert system(out) == ["storage"] and c.state()["disk_ok"] is True


def test_dropped_inputs_are_counted_in_state_and_reported_once_a_minute() -> None:
    c = make()
    c.handle(Connected(), T0)
    assert c.state()["dropped"] == 0
    out = c.handle(InputsDropped(3), T0 + 1)
    assert logged(out, "system") == [
        {"what": "overload", "detail": "3 inputs dropped since the last report: the queue was full"}
    ]
    assert system(c.handle(InputsDropped(2), T0 + 30)) == []  # within the minute
    assert c.state()["dropped"] == 5
    out = c.handle(InputsDropped(1), T0 + 61)
    assert [b["detail"] for b in logged(out, "system")] == [
        "3 inputs dropped since the last report: the queue was full"
    ]
    assert c.state()["dropped"] == 6


def test_exit_buttons_and_contacts_that_are_not_there_are_refused_and_reported() -> None:
    """Issue 12: a `rex` for a door without an exit button ended the loop."""
    door = DoorWiring("front", "secure", has_contact=False, has_rex=False)
    c = make(facility=Facility(doors=[door], now=T0))
    for i, event in enumerate(
        [RexPressed("front"), ContactChanged("front", True), RexPressed("back")]
    ):
        out = c.handle(event, T0 + 61 * i)  # a minute apart: each is reported
        assert [b["detail"] for b in logged(out, "system")] == [
            [
                "door 'front' has no exit button wired",
                "door 'front' has no contact wired",
                "exit button of unknown door 'back'",
            ][i]
        ]
        assert not [a for a in out if isinstance(a, Output)]


# --- sync v2 on the wire (PROTOCOL.md s3) ----------------------------------------------


def test_every_sync_request_carries_a_fresh_req_and_our_digest() -> None:
    c = make()
    boot = asked_message(c.handle(Connected(), T0))
    assert boot["digest"] == c.session.digest and len(boot["digest"]) == 16
    command = asked_message(c.handle(sealed("cmd", cmd("sync")), T0 + 1))
    assert command["full"] is True and command["reason"] == "command"
    assert boot["req"] != command["req"]


def test_a_snapshot_nobody_asked_for_is_ignored_with_one_event_a_minute() -> None:
    c = make()
    c.handle(Connected(), T0)
    digest = c.session.digest
    fake = [("member", "eve", rec(creds=[["tag", "ee"]]))]
    out = c.handle(snapshot("recorded", fake, epoch="e0", v=99), T0 + 1)
    assert system(out) == ["error"]
    assert "not asked for" in logged(out, "system")[0]["detail"]
    for n in range(2, 30):  # a replay, page after page, within the minute
        assert system(c.handle(snapshot(f"recorded-{n}", fake, v=50 + n), T0 + n)) == []
    out = c.handle(snapshot("recorded", fake), T0 + 61)
    detail = logged(out, "system")[0]["detail"]
    assert "30 ignored since boot" in detail and "28 more" in detail
    assert not c.has_work() and "eve" not in c.store.members
    assert (c.session.epoch, c.session.v, c.session.digest) == ("e1", 3, digest)
    assert c.state()["sync"] == {"state": "idle", "got": 0, "of": 0}


def test_a_current_from_the_hub_ends_a_sync_command_never() -> None:
    c = make()
    c.handle(Connected(), T0)
    out = c.handle(sealed("cmd", cmd("sync", "s1")), T0 + 1)
    req = asked_message(out)["req"]
    current = {"t": "current", "req": req, "epoch": "e1", "v": 3, "digest": c.session.digest}
    out = c.handle(sealed("data", current | {"now": int(T0)}), T0 + 2)
    assert replies(out) == [] and system(out) == ["error"]
    assert c.state()["sync"]["state"] == "full"
    # The snapshot it asked for still finishes the command.
    c.handle(snapshot(req, RECORDS, v=3), T0 + 3)
    assert replies(run_work(c, T0 + 3)) == [("s1", "done")]


def test_a_current_for_the_boot_request_rewrites_nothing() -> None:
    c = make()
    boot = asked_message(c.handle(Connected(), T0))
    current = {"t": "current", "req": boot["req"], "epoch": "e1", "v": 3}
    out = c.handle(sealed("data", current | {"digest": c.session.digest, "now": int(T0)}), T0 + 1)
    assert [a for a in out if isinstance(a, SaveSnapshot | SaveDelta)] == []
    assert system(out) == [] and logged(out, "sync") == []
    assert c.state()["last_full"] == int(T0 + 1)


def asked_message(actions: Sequence[object]) -> dict[str, Any]:
    (request,) = [a.message for a in actions if isinstance(a, Publish) and a.suffix == "sync"]
    return request
