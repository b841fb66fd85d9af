"""The outbox bookkeeping and the debit ledger (pure), and its SQLite side."""

from __future__ import annotations

from pathlib import Path

from firmware.core.outbox import (
    ACK_TIMEOUT_S,
    BATCH_EVENTS,
    MAX_AGE_S,
    NUDGE_EVERY_S,
    WINDOW_EVENTS,
    DebitEntry,
    DeleteAcked,
    FoldEvents,
    ForgetDebits,
    Outbox,
    SendEvents,
)
from firmware.outbox_store import OutboxStore
from firmware.storage import Storage


def logged(box: Outbox, n: int, now: float = 0.0) -> None:
    for _ in range(n):
        box.log("access", {}, now)


def test_seqs_start_at_one_and_continue_after_a_restart() -> None:
    box = Outbox()
    assert [box.log("access", {}, 5).seq for _ in range(3)] == [1, 2, 3]
    again = Outbox.restore(last_seq=3, count=1, oldest=5, first_seq=3, debits=[])
    assert again.log("door", {}, 6).seq == 4
    assert again.acked_upto == 2  # seq 3 still waits for its ack


def test_a_lone_event_waits_at_most_max_age_and_a_full_batch_goes_at_once() -> None:
    box = Outbox()
    logged(box, 1)
    assert box.due(0.0, connected=True) == [SendEvents(0, 1)]
    logged(box, 1)
    assert box.due(0.1, connected=True) == []
    assert box.next_deadline(connected=True) == MAX_AGE_S
    assert box.due(MAX_AGE_S, connected=True) == [SendEvents(1, 2)]
    logged(box, BATCH_EVENTS)
    assert box.due(MAX_AGE_S + 0.01, connected=True) == [SendEvents(2, 2 + BATCH_EVENTS)]
    assert box.due(9.0, connected=False) == []


def test_the_window_of_unacknowledged_events_is_bounded() -> None:
    box = Outbox()
    logged(box, WINDOW_EVENTS + BATCH_EVENTS)
    sent = 0
    for i in range(1000):
        for action in box.due(float(i), connected=True):
            assert isinstance(action, SendEvents)
            sent = action.upto
    assert sent == WINDOW_EVENTS
    assert box.acked(WINDOW_EVENTS, 7) == [DeleteAcked(WINDOW_EVENTS, 7)]
    assert box.due(2000.0, connected=True) == [
        SendEvents(WINDOW_EVENTS, WINDOW_EVENTS + BATCH_EVENTS)
    ]


def test_reconnect_and_a_silent_hub_both_resend_from_the_last_ack() -> None:
    box = Outbox()
    logged(box, 3)
    assert box.due(0.0, connected=True) == [SendEvents(0, 3)]
    box.acked(1, 0)
    box.connected()
    assert box.due(1.0, connected=True) == [SendEvents(1, 3)]
    assert box.due(2.0, connected=True) == []
    assert box.due(1.0 + ACK_TIMEOUT_S, connected=True) == [SendEvents(1, 3)]


def test_an_ack_that_moves_nothing_while_events_are_in_flight_resends_them_once() -> None:
    box = Outbox()
    logged(box, 5)
    assert box.due(0.0, connected=True) == [SendEvents(0, 5)]
    assert box.acked(2, 0, now=1.0) == [DeleteAcked(2, 0)]
    # The hub answers our state with an ack that moves nothing: 3..5 were lost
    # (a broker restart, say). They go again at once, not after the ack timeout.
    assert box.acked(2, 0, now=2.0) == []
    assert box.due(2.0, connected=True) == [SendEvents(2, 5)]
    # At most once per NUDGE_EVERY_S: a hub that keeps acking the same seq
    # cannot make the controller resend in a loop.
    assert box.acked(2, 0, now=3.0) == []
    assert box.due(3.0, connected=True) == []
    assert box.acked(2, 0, now=2.0 + NUDGE_EVERY_S) == []
    assert box.due(2.0 + NUDGE_EVERY_S, connected=True) == [SendEvents(2, 5)]
    # Nothing in flight: an ack that moves nothing changes nothing.
    assert box.acked(5, 0, now=40.0) == [DeleteAcked(5, 0)]
    assert box.acked(5, 0, now=99.0) == []
    assert box.due(99.0, connected=True) == []


def test_acks_are_monotonic_and_bounded_by_what_was_logged() -> None:
    box = Outbox()
    logged(box, 2)
    assert box.acked(99, 0) == [DeleteAcked(2, 0)]
    assert box.acked(1, 0) == []


def test_over_the_bound_asks_once_to_fold_a_tenth() -> None:
    box = Outbox(bound=100)
    assert box.stats(100, 1) == []
    assert box.stats(101, 1) == [FoldEvents(11)]
    assert box.stats(101, 1) == []  # already asked
    assert box.stats(90, 1) == []
    assert box.stats(150, 1) == [FoldEvents(60)]


def test_effective_credit_through_ack_before_delta() -> None:
    """The hub's ack (reflected from v=12) arrives before the delta carrying the
    member's new credit: the debit counts until our data reaches v=12."""
    box = Outbox()
    debit = box.log("debit", {}, 0)
    box.debit(debit, "ann", 400)
    assert box.effective("ann", 2000) == 1600
    box.acked(debit.seq, 12)
    assert box.data_version(11) == []
    assert box.effective("ann", 2000) == 1600  # credit 2000 is still the old one
    assert box.data_version(12) == [ForgetDebits(12)]
    assert box.effective("ann", 1600) == 1600  # the delta brought credit 1600


def test_effective_credit_across_a_purge_and_an_offline_day() -> None:
    box = Outbox()
    for i in range(10):  # a day offline: ten activations, nothing acked
        box.debit(box.log("debit", {}, i), "ann", 100)
    assert box.effective("ann", 2000) == 1000
    # A purge: our data is gone (v=0), the debits stay.
    assert box.data_version(0) == []
    assert box.effective("ann", 0) == -1000
    # Reconnect: the hub takes all ten, reflects them from v=30.
    box.acked(10, 30)
    assert box.effective("ann", 2000) == 1000  # a full sync at an older v=25
    assert box.data_version(25) == []
    assert box.effective("ann", 2000) == 1000
    box.data_version(30)
    assert box.effective("ann", 1000) == 1000
    assert box.pending_debits == {}


def test_restore_keeps_unreflected_debits() -> None:
    debits = [DebitEntry(4, "ann", 100, None), DebitEntry(6, "ann", 50, 9)]
    box = Outbox.restore(last_seq=6, count=0, oldest=None, first_seq=None, debits=debits)
    assert box.effective("ann", 1000) == 850
    box.data_version(9)
    assert box.effective("ann", 1000) == 900


def test_store_round_trip_fold_drop_and_debits(tmp_path: Path) -> None:
    with Storage.open(tmp_path / "alc.sqlite3") as storage:
        store = OutboxStore(storage)
        box = Outbox()
        events = [
            box.log(t, {"n": i}, 100 + i)
            for i, t in enumerate(["access", "access", "debit", "door", "access", "access"])
        ]
        store.append(events, [DebitEntry(3, "ann", 400)])
        stats = store.stats()
        assert (stats.count, stats.oldest, stats.first_seq, stats.last_seq) == (6, 100, 1, 6)
        assert store.batch(1, 3) == [[2, 101, "access", {"n": 1}], [3, 102, "debit", {"n": 2}]]
        assert store.fold(3) == [(1, 2), (5, 5)]
        assert [row[0] for row in store.batch(0, 9)] == [3, 4, 6]
        assert store.drop(9) == [(4, 4), (6, 6)]  # debits are never dropped
        assert [row[0] for row in store.batch(0, 9)] == [3]
        store.acknowledge(3, 17)
        assert store.stats().count == 0 and store.stats().last_seq == 6
        assert store.debits() == [DebitEntry(3, "ann", 400, 17)]
        store.forget_debits(16)
        assert store.debits() != []
        store.forget_debits(17)
        assert store.debits() == []
    with Storage.open(tmp_path / "alc.sqlite3") as storage:
        assert OutboxStore(storage).stats().last_seq == 6  # seqs survive everything


def _drain(box: Outbox, now: float) -> list[SendEvents]:
    """What the runtime sends at `now`: one `due` per loop step while one is due."""
    sent: list[SendEvents] = []
    while (deadline := box.next_deadline(connected=True)) is not None and deadline <= now:
        actions = box.due(now, connected=True)
        assert actions, "a deadline that has passed must have something to send"
        sent += [a for a in actions if isinstance(a, SendEvents)]
    return sent


def test_a_backlog_fills_the_window_at_once_and_its_tail_follows_without_waiting() -> None:
    box = Outbox()
    logged(box, 2 * WINDOW_EVENTS + 7)
    box.connected()
    sent = _drain(box, 100.0)
    assert [(s.after, s.upto) for s in sent] == [
        (n, n + BATCH_EVENTS) for n in range(0, WINDOW_EVENTS, BATCH_EVENTS)
    ]
    # The window is full: nothing is due until an ack (or the ack timeout).
    assert box.next_deadline(connected=True) == 100.0 + ACK_TIMEOUT_S
    # Each ack opens the window again; the hub's progress restarts the timeout.
    box.acked(WINDOW_EVENTS, 0, 110.0)
    sent = _drain(box, 110.0)
    assert sent[-1].upto == 2 * WINDOW_EVENTS and len(sent) == WINDOW_EVENTS // BATCH_EVENTS
    box.acked(2 * WINDOW_EVENTS - BATCH_EVENTS, 0, 120.0)
    deadline = box.next_deadline(connected=True)
    assert deadline is not None and deadline <= 120.0  # the tail of 7: due at once
    assert _drain(box, 120.0) == [SendEvents(2 * WINDOW_EVENTS, 2 * WINDOW_EVENTS + 7)]
    assert box.next_deadline(connected=True) == 120.0 + ACK_TIMEOUT_S


def test_uploads_step_over_a_skipped_range_of_any_size() -> None:
    """Events left below a boot's jump to the clock, then the boot's own: the
    upload sends both in two batches, not one batch per 500 skipped seqs."""
    floor = 1_796_000_000_000
    outbox = Outbox.restore(
        last_seq=floor - 1,
        count=20,
        oldest=0,
        first_seq=81,
        debits=[],
        skipped=[(101, floor - 1)],
    )
    for _ in range(3):
        outbox.log("access", {}, 1.0)
    outbox.connected()
    first = outbox.due(2.0, connected=True, hurry=True)
    assert first == [SendEvents(80, floor - 1)]  # the 20 below the gap, up to its end
    assert outbox.acked(100, 1, 3.0) == [DeleteAcked(100, 1)]
    second = outbox.due(4.0, connected=True, hurry=True)
    assert second == [SendEvents(floor - 1, floor + 2)]  # the boot's events, at once
