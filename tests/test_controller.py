"""The controller core in virtual time: commands, state reports, rejected input,
bench presentations and the daily storage check. No broker, no clock, no disk."""

from __future__ import annotations

import itertools
from typing import Any

import cbor2

from firmware.core.controller import (
    CheckStorage,
    Connected,
    Controller,
    EventsRemoved,
    PayloadReceived,
    Publish,
    RememberCommand,
    StorageChecked,
    Tick,
)
from firmware.core.decide import Target
from firmware.core.model import digest_bytes, digest_part
from firmware.core.outbox import AppendEvents, DeleteAcked, DropEvents, SendEvents
from firmware.core.sync import SyncSession
from firmware.core.wire import seal
from tests.builders import rec, store_of

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
BASE = "alc/demo/ctl1"
T0 = 1_800_000_000.0

RECORDS = [
    ("door", "front", rec(unlock_s=7)),
    ("group", "g", rec(doors=["front"])),
    ("member", "ann", rec(groups=["g"], creds=[["tag", "00aa11bb"]])),
]


def make(*, bench: bool = False, executed: dict[str, int] | None = None) -> Controller:
    counter = itertools.count(1)
    session = SyncSession(store_of(RECORDS), "e1", 3, now=T0, new_id=lambda: f"req-{next(counter)}")
    return Controller(
        controller_id="ctl1",
        key=KEY,
        base_topic=BASE,
        session=session,
        boot_time=T0,
        masters=frozenset({("tag", "master")}),
        readers={"front-in": Target.door("front")},
        executed=executed,
        bench=bench,
    )


def sealed(suffix: str, message: dict[str, Any], key: bytes = KEY) -> PayloadReceived:
    topic = f"{BASE}/{suffix}"
    return PayloadReceived(topic, seal(key, b"ctl1", topic, message))


def cmd(
    name: str, id: str = "c1", *, iat: float = T0, exp: float = T0 + 60, **args: Any
) -> dict[str, Any]:
    return {"t": "cmd", "id": id, "cmd": name, "args": args, "iat": int(iat), "exp": int(exp)}


def replies(actions: list[Any]) -> list[tuple[str, str]]:
    return [
        (a.message["id"], a.message["status"])
        for a in actions
        if isinstance(a, Publish) and a.suffix == "reply"
    ]


def logged(actions: list[Any], type: str) -> list[dict[str, Any]]:
    """Bodies of the events of `type` a step logged (they travel in AppendEvents)."""
    return [
        e.body for a in actions if isinstance(a, AppendEvents) for e in a.events if e.type == type
    ]


def system(actions: list[Any]) -> list[str]:
    return [body["what"] for body in logged(actions, "system")]


def snapshot(
    sync: str, records: list[tuple[str, str, bytes]], epoch: str = "e1", v: int = 9
) -> PayloadReceived:
    digest = digest_bytes(sum(digest_part(*r) for r in records))
    body = {
        "t": "snap",
        "sync": sync,
        "epoch": epoch,
        "v": v,
        "page": 0,
        "pages": 1,
        "recs": [list(r) for r in records],
        "digest": digest,
        "now": int(T0),
    }
    return sealed("data", body)


def run_work(c: Controller, now: float) -> list[Any]:
    out: list[Any] = []
    while c.has_work():
        out += c.work(now)
    return out


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


def test_status_command_replies_done_with_the_state_and_is_remembered() -> None:
    c = make()
    c.handle(Connected(), T0)
    out = c.handle(sealed("cmd", cmd("status")), T0)
    assert RememberCommand("c1", int(T0 + 60)) in out
    done = [a.message for a in out if isinstance(a, Publish) and a.suffix == "reply"]
    assert done[0]["status"] == "done" and done[0]["detail"]["v"] == 3


def test_refused_commands_reply_rejected_and_are_logged() -> None:
    c = make(executed={"old": int(T0 + 1000)})
    c.handle(Connected(), T0)
    cases = [
        (cmd("status", "late", exp=T0 - 1), "expired"),
        (cmd("status", "early", iat=T0 + 61 + 301, exp=T0 + 999), "future"),
        (cmd("status", "old", exp=T0 + 999), "already executed"),
        (cmd("dance", "odd", exp=T0 + 999), "unknown command"),
    ]
    for message, why in cases:
        out = c.handle(sealed("cmd", message), T0 + 61 * cases.index((message, why)))
        assert replies(out) == [(message["id"], "rejected")]
        reply = next(a.message for a in out if isinstance(a, Publish) and a.suffix == "reply")
        assert why in reply["detail"]
        assert system(out) == ["error"]
        if why != "unknown command":  # a refused command is never marked as run
            assert not [a for a in out if isinstance(a, RememberCommand)]


def test_the_same_command_twice_runs_once() -> None:
    c = make()
    c.handle(Connected(), T0)
    assert replies(c.handle(sealed("cmd", cmd("status")), T0)) == [("c1", "done")]
    assert replies(c.handle(sealed("cmd", cmd("status")), T0 + 1)) == [("c1", "rejected")]


def test_commands_on_what_is_not_here_fail_with_a_clear_detail() -> None:
    c = make()
    c.handle(Connected(), T0)
    out = c.handle(sealed("cmd", cmd("open_door", door="front")), T0)
    reply = next(a.message for a in out if isinstance(a, Publish) and a.suffix == "reply")
    assert reply["status"] == "failed" and "no door 'front'" in reply["detail"]
    out = c.handle(sealed("cmd", cmd("refresh_kiosks", "k1")), T0)
    reply = next(a.message for a in out if isinstance(a, Publish) and a.suffix == "reply")
    assert reply["status"] == "done" and reply["detail"] == "no kiosk screens connected"


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


def test_two_sync_commands_both_get_progress_and_done() -> None:
    c = make()
    c.handle(Connected(), T0)
    assert replies(c.handle(sealed("cmd", cmd("sync", "s1")), T0)) == [("s1", "accepted")]
    assert replies(c.handle(sealed("cmd", cmd("sync", "s2")), T0 + 1)) == [("s2", "accepted")]
    records = [*RECORDS, ("member", "bob", rec(creds=[["tag", "bbbb"]]))]
    out = c.handle(snapshot("snap-1", records), T0 + 2)
    assert replies(out) == [("s1", "progress"), ("s2", "progress")]
    out = run_work(c, T0 + 2)
    assert replies(out) == [("s1", "done"), ("s2", "done")]
    assert c.session.v == 9 and "bob" in c.store.members


def test_a_sync_command_that_cannot_finish_fails_after_120_s() -> None:
    c = make()
    c.handle(Connected(), T0)
    c.handle(sealed("cmd", cmd("sync", "s1", exp=T0 + 600)), T0)
    assert replies(c.handle(Tick(), T0 + 119)) == []
    assert replies(c.handle(Tick(), T0 + 120)) == [("s1", "failed")]


def test_purge_wipes_then_resyncs() -> None:
    c = make()
    c.handle(Connected(), T0)
    out = c.handle(sealed("cmd", cmd("purge")), T0)
    assert c.store.members == {} and c.session.epoch is None
    sync = [a.message for a in out if isinstance(a, Publish) and a.suffix == "sync"]
    assert sync[-1]["full"] is True and sync[-1]["reason"] == "purge"
    c.handle(snapshot("p", RECORDS, v=4), T0 + 1)
    assert replies(run_work(c, T0 + 1)) == [("c1", "done")]
    assert "ann" in c.store.members


def test_bench_present_decides_only_on_the_simulator() -> None:
    present = {"t": "present", "reader": "front-in", "credkind": "tag", "value": "00aa11bb"}
    assert c_access(make(bench=False), present) == []
    access = c_access(make(bench=True), present)
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
    bad = {"t": "present", "reader": "front-in", "credkind": "face", "value": "x"}
    c = make(bench=True)
    assert system(c.handle(sealed("bench/in", bad), T0)) == ["error"]


def c_access(c: Controller, present: dict[str, Any]) -> list[dict[str, Any]]:
    out = c.handle(sealed("bench/in", present), T0)
    return logged(out, "access")


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
    c = make(bench=True)
    c.handle(Connected(), T0)
    for suffix in ("data", "cmd", "ack", "bench/in", "state", "nonsense"):
        for payload in (b"", b"\xff", cbor2.dumps({"t": "x"}), bytes(300_000)):
            c.handle(PayloadReceived(f"{BASE}/{suffix}", payload), T0)
        c.handle(sealed(suffix, {"t": "delta", "epoch": 5}), T0)
    assert c.session.v == 3 and c.session.digest == store_of(RECORDS).digest


def test_events_are_uploaded_and_leave_on_ack() -> None:
    c = make(bench=True)
    c.handle(Connected(), T0)
    present = {"t": "present", "reader": "front-in", "credkind": "tag", "value": "00aa11bb"}
    out = c.handle(sealed("bench/in", present), T0 + 1)
    sends = [a for a in out if isinstance(a, SendEvents)]
    assert sends and sends[0].upto == c.outbox.last_seq
    assert c.state()["outbox"] == c.outbox.last_seq
    out = c.handle(sealed("ack", {"t": "ack", "upto": c.outbox.last_seq, "v": 3}), T0 + 2)
    assert DeleteAcked(c.outbox.last_seq, 3) in out


def test_purge_with_events_uploads_first_then_drops_what_is_left() -> None:
    c = make(bench=True)
    c.handle(Connected(), T0)
    present = {"t": "present", "reader": "front-in", "credkind": "tag", "value": "00aa11bb"}
    c.handle(sealed("bench/in", present), T0)
    upto = c.outbox.last_seq
    out = c.handle(sealed("cmd", cmd("purge", "p1", exp=T0 + 600, events=True)), T0 + 1)
    assert replies(out) == [("p1", "accepted")]
    assert "ann" in c.store.members  # not wiped yet: uploading first
    assert c.outbox.sent_upto == upto  # on their way; the hub has not acked them
    assert not [a for a in c.handle(Tick(), T0 + 30) if isinstance(a, DropEvents)]
    out = c.handle(Tick(), T0 + 31)
    drops = [a for a in out if isinstance(a, DropEvents)]
    assert drops == [DropEvents(upto)]
    out = c.handle(EventsRemoved("dropped", [(1, upto)]), T0 + 31)
    body = logged(out, "system")[0]
    assert body["what"] == "error" and body["dropped"] == [[1, upto]]
    assert c.store.members == {}  # now wiped
    c.handle(snapshot("p", RECORDS, v=4), T0 + 32)
    done = [
        a.message for a in run_work(c, T0 + 32) if isinstance(a, Publish) and a.suffix == "reply"
    ]
    assert done[-1]["status"] == "done" and f"{upto} events dropped" in done[-1]["detail"]


def test_purge_with_events_goes_ahead_as_soon_as_the_hub_has_them() -> None:
    c = make(bench=True)
    c.handle(Connected(), T0)
    present = {"t": "present", "reader": "front-in", "credkind": "tag", "value": "00aa11bb"}
    c.handle(sealed("bench/in", present), T0)
    c.handle(sealed("cmd", cmd("purge", "p1", exp=T0 + 600, events=True)), T0 + 1)
    c.handle(sealed("ack", {"t": "ack", "upto": c.outbox.last_seq, "v": 3}), T0 + 2)
    assert c.store.members == {}
    c.handle(snapshot("p", RECORDS, v=4), T0 + 3)
    done = [
        a.message for a in run_work(c, T0 + 3) if isinstance(a, Publish) and a.suffix == "reply"
    ]
    assert done[-1]["status"] == "done" and "0 events dropped" in done[-1]["detail"]


def test_purge_without_events_keeps_the_outbox() -> None:
    c = make(bench=True)
    c.handle(Connected(), T0)
    present = {"t": "present", "reader": "front-in", "credkind": "tag", "value": "00aa11bb"}
    c.handle(sealed("bench/in", present), T0)
    out = c.handle(sealed("cmd", cmd("purge", "p1")), T0 + 1)
    assert c.store.members == {}
    assert not [a for a in out if isinstance(a, DropEvents)]
    assert c.outbox.acked_upto == 0 and c.outbox.last_seq > 1


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
