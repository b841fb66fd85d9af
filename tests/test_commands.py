"""The hub's commands in the controller core (PROTOCOL.md s6): checks, replies,
sync and purge waiting for their full sync, and the purge state machine."""

from __future__ import annotations

from firmware.core.actions import Publish, RememberCommand
from firmware.core.commands import PURGE_TRANSITIONS, PurgeInput, PurgeState
from firmware.core.inputs import Connected, EventsRemoved, Presented, Tick
from firmware.core.outbox import DropEvents
from tests.builders import rec
from tests.core_rig import (
    RECORDS,
    T0,
    asked,
    cmd,
    logged,
    make,
    replies,
    run_work,
    sealed,
    snapshot,
    system,
)

ANN_AT_FRONT = Presented("front-in", "tag", "00aa11bb")


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


def test_two_sync_commands_both_get_progress_and_done() -> None:
    c = make()
    c.handle(Connected(), T0)
    assert replies(c.handle(sealed("cmd", cmd("sync", "s1")), T0)) == [("s1", "accepted")]
    out = c.handle(sealed("cmd", cmd("sync", "s2")), T0 + 1)
    assert replies(out) == [("s2", "accepted")]
    records = [*RECORDS, ("member", "bob", rec(creds=[["tag", "bbbb"]]))]
    out = c.handle(snapshot(asked(out), records), T0 + 2)
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
    c.handle(snapshot(asked(out), RECORDS, v=4), T0 + 1)
    assert replies(run_work(c, T0 + 1)) == [("c1", "done")]
    assert "ann" in c.store.members


def test_purge_with_events_uploads_first_then_drops_what_is_left() -> None:
    c = make()
    c.handle(Connected(), T0)
    c.handle(ANN_AT_FRONT, T0)
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
    c.handle(snapshot(asked(out), RECORDS, v=4), T0 + 32)
    done = [
        a.message for a in run_work(c, T0 + 32) if isinstance(a, Publish) and a.suffix == "reply"
    ]
    assert done[-1]["status"] == "done" and f"{upto} events dropped" in done[-1]["detail"]


def test_purge_with_events_goes_ahead_as_soon_as_the_hub_has_them() -> None:
    c = make()
    c.handle(Connected(), T0)
    c.handle(ANN_AT_FRONT, T0)
    c.handle(sealed("cmd", cmd("purge", "p1", exp=T0 + 600, events=True)), T0 + 1)
    out = c.handle(sealed("ack", {"t": "ack", "upto": c.outbox.last_seq, "v": 3}), T0 + 2)
    assert c.store.members == {}
    c.handle(snapshot(asked(out), RECORDS, v=4), T0 + 3)
    done = [
        a.message for a in run_work(c, T0 + 3) if isinstance(a, Publish) and a.suffix == "reply"
    ]
    assert done[-1]["status"] == "done" and "0 events dropped" in done[-1]["detail"]


def test_purge_without_events_keeps_the_outbox() -> None:
    c = make()
    c.handle(Connected(), T0)
    c.handle(ANN_AT_FRONT, T0)
    out = c.handle(sealed("cmd", cmd("purge", "p1")), T0 + 1)
    assert c.store.members == {}
    assert not [a for a in out if isinstance(a, DropEvents)]
    assert c.outbox.acked_upto == 0 and c.outbox.last_seq > 1


def test_the_purge_table_says_what_every_input_does_in_every_state() -> None:
    assert set(PURGE_TRANSITIONS) == {(s, i) for s in PurgeState for i in PurgeInput}


def test_a_second_purge_while_one_uploads_joins_it_and_both_are_answered() -> None:
    c = make()
    c.handle(Connected(), T0)
    c.handle(ANN_AT_FRONT, T0)
    upto = c.outbox.last_seq
    out = c.handle(sealed("cmd", cmd("purge", "p1", exp=T0 + 600, events=True)), T0 + 1)
    assert replies(out) == [("p1", "accepted")]
    out = c.handle(sealed("cmd", cmd("purge", "p2", exp=T0 + 600, events=True)), T0 + 5)
    assert replies(out) == [("p2", "accepted")]
    assert c.commands.purge.state is PurgeState.UPLOADING
    # The first purge's 30 s count for both.
    assert [a for a in c.handle(Tick(), T0 + 31) if isinstance(a, DropEvents)] == [DropEvents(upto)]
    out = c.handle(EventsRemoved("dropped", [(1, upto)]), T0 + 31)
    assert c.store.members == {} and c.commands.purge.state is PurgeState.IDLE
    c.handle(snapshot(asked(out), RECORDS, v=4), T0 + 32)
    assert replies(run_work(c, T0 + 32)) == [("p1", "done"), ("p2", "done")]


def test_an_ack_while_the_rest_is_being_dropped_purges_once() -> None:
    c = make()
    c.handle(Connected(), T0)
    c.handle(ANN_AT_FRONT, T0)
    upto = c.outbox.last_seq
    c.handle(sealed("cmd", cmd("purge", "p1", exp=T0 + 600, events=True)), T0 + 1)
    assert [a for a in c.handle(Tick(), T0 + 31) if isinstance(a, DropEvents)]
    assert c.commands.purge.state is PurgeState.DROPPING
    out = c.handle(sealed("ack", {"t": "ack", "upto": upto, "v": 3}), T0 + 32)
    assert c.store.members == {} and c.commands.purge.state is PurgeState.IDLE
    c.handle(snapshot(asked(out), RECORDS, v=4), T0 + 33)
    run_work(c, T0 + 33)
    assert "ann" in c.store.members
    # The drop asked for ends with nothing left to drop: no second purge.
    c.handle(EventsRemoved("dropped", []), T0 + 34)
    assert "ann" in c.store.members
