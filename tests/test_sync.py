"""The sync session (PROTOCOL.md s3, s7), one rule or trigger per test: boot, delta
rules 1-4, gaps, snapshot assembly and the atomic swap, buffered deltas, stalls,
the twice-daily schedule, reconnects, purge and local full-sync requests."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pytest

from firmware.core.errors import RemoteError
from firmware.core.messages import Current, Delta, SnapPage, parse_current, parse_delta, parse_snap
from firmware.core.store import Delete, Op, Put
from firmware.core.sync import (
    Ignored,
    RequestSync,
    SaveDelta,
    SaveSnapshot,
    StateChanged,
    SyncAction,
    SyncEvent,
    SyncSession,
    SystemEvent,
)
from tests.builders import rec, store_of

T = TypeVar("T")
Rec = tuple[str, str, bytes]

ZERO = bytes(16)

ANN: Rec = ("member", "ann", rec(name="Ann", groups=["g"], creds=[["tag", "0001"]]))
BOB: Rec = ("member", "bob", rec(name="Bob", creds=[["pin", "4321"]]))
GROUP: Rec = ("group", "g", rec(doors=["front"], lights=["c1"]))
DOOR: Rec = ("door", "front", rec(name="Front", unlock_s=7))
LIGHT: Rec = ("light", "c1", rec(name="Court 1", price=50))
SITE: Rec = ("site", "site", rec(tz="Europe/Berlin", name="Club"))
WIDGET: Rec = ("widget", "w1", rec(anything=1))  # unknown kind: stored and hashed
BASE: list[Rec] = [SITE, ANN, GROUP, DOOR, LIGHT]


def expected_digest(records: Iterable[Rec]) -> bytes:
    """PROTOCOL.md s3 digest, written independently of firmware.core.model."""
    total = 0
    for kind, id, body in records:
        h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + body).digest()
        total += int.from_bytes(h[:16], "big")
    return (total % 2**128).to_bytes(16, "big")


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"req-{next(counter)}"


def make(
    epoch: str | None = None,
    v: int = 0,
    records: Sequence[Rec] = (),
    *,
    now: float = 0.0,
    **kwargs: Any,
) -> SyncSession:
    return SyncSession(store_of(records), epoch, v, now=now, new_id=ids(), **kwargs)


def connected(epoch: str | None = "e1", v: int = 5, records: Sequence[Rec] = BASE) -> SyncSession:
    """A session that booted with data and is connected, the boot request answered."""
    s = make(epoch, v, records)
    s.connected_to_hub(0.0)
    return s


def put(record: Rec) -> Put:
    return Put(*record)


def delta(epoch: str, from_v: int, to_v: int, *ops: Op) -> Delta:
    return Delta(epoch, from_v, to_v, list(ops), None)


def pages_of(
    sync: str,
    epoch: str,
    v: int,
    records: Sequence[Rec],
    per_page: int,
    digest: bytes | None = None,
) -> list[SnapPage]:
    chunks = [list(records[i : i + per_page]) for i in range(0, len(records), per_page)] or [[]]
    d = expected_digest(records) if digest is None else digest
    return [SnapPage(sync, epoch, v, i, len(chunks), c, d, None) for i, c in enumerate(chunks)]


def of(actions: Iterable[SyncAction], cls: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, cls)]


def finish(s: SyncSession, now: float, budget: int = 500) -> list[SyncAction]:
    out: list[SyncAction] = []
    for _ in range(10_000):
        if not s.has_work():
            return out
        out += s.work(now, budget)
    raise AssertionError("work never finished")


def deliver_all(s: SyncSession, pages: Iterable[SnapPage], now: float) -> list[SyncAction]:
    out: list[SyncAction] = []
    for p in pages:
        out += s.snap_page(p, now)
    return out


def full_request(actions: Sequence[SyncAction]) -> RequestSync:
    reqs = of(actions, RequestSync)
    assert len(reqs) == 1, actions
    assert reqs[0].full
    return reqs[0]


# --- boot (s7) -----------------------------------------------------------------------


def test_boot_without_data_asks_for_a_full_sync_only_once_connected() -> None:
    s = make()
    assert s.tick(1.0) == []
    assert s.next_deadline() is None
    actions = s.connected_to_hub(2.0)
    req = full_request(actions)
    assert (req.epoch, req.v, req.full, req.reason) == (None, 0, True, "boot")
    assert SyncEvent("started", "boot") in actions
    assert s.full_reason == "boot"
    assert s.progress() == ("full", 0, 0)


def test_boot_with_data_asks_for_deltas_from_the_stored_version() -> None:
    s = make("e1", 5, BASE)
    assert s.tick(1.0) == []
    actions = s.connected_to_hub(2.0)
    assert len(actions) == 1
    req = actions[0]
    assert isinstance(req, RequestSync)
    assert (req.epoch, req.v, req.full, req.reason) == ("e1", 5, False, "boot")
    assert s.full_reason is None
    assert s.progress() == ("idle", 0, 0)


def test_boot_request_is_sent_once_later_connects_are_reconnects() -> None:
    s = make("e1", 5, BASE)
    s.connected_to_hub(0.0)
    s.disconnected_from_hub(10.0)
    reqs = of(s.connected_to_hub(20.0), RequestSync)
    assert [(r.full, r.reason) for r in reqs] == [(False, "outage")]


def test_every_request_carries_a_fresh_id() -> None:
    s = connected()
    a = full_request(s.request_full("command", 1.0))
    b = full_request(s.tick(40.0))  # stalled
    assert a.req != b.req


# --- delta rules 1-4 (s3) ------------------------------------------------------------


def test_rule1_other_epoch_asks_full_sync_once_and_leaves_data() -> None:
    s = connected()
    store, digest = s.store, s.digest
    actions = s.delta(delta("e2", 0, 1, put(BOB)), 1.0)
    req = full_request(actions)
    assert (req.epoch, req.v, req.reason) == ("e1", 5, "epoch")
    assert s.full_reason == "epoch"
    # Every further delta of the new epoch must not ask again.
    for i in range(1, 6):
        assert of(s.delta(delta("e2", i, i + 1, put(BOB)), 1.0 + i), RequestSync) == []
    assert s.store is store and s.digest == digest and (s.epoch, s.v) == ("e1", 5)


@pytest.mark.parametrize(("from_v", "to_v"), [(4, 5), (2, 3), (0, 5)])
def test_rule2_duplicate_is_ignored(from_v: int, to_v: int) -> None:
    s = connected()
    digest = s.digest
    assert s.delta(delta("e1", from_v, to_v, put(BOB), Delete("member", "ann")), 1.0) == []
    assert (s.v, s.digest) == (5, digest)
    assert s.store.get("member", "bob") is None


def test_rule3_apply_saves_the_delta_with_the_new_digest() -> None:
    s = connected()
    ops: list[Op] = [put(BOB), Delete("member", "ann"), put(WIDGET)]
    actions = s.delta(delta("e1", 5, 7, *ops), 1.0)
    after = [SITE, GROUP, DOOR, LIGHT, BOB, WIDGET]
    assert s.v == 7
    assert s.digest == expected_digest(after)
    assert SaveDelta("e1", 7, ops, expected_digest(after)) in actions
    assert StateChanged() in actions
    assert of(actions, RequestSync) == []
    assert s.store.get("member", "ann") is None
    assert s.store.get("member", "bob") is not None


def test_rule4_gap_is_asked_at_most_once_per_10s_and_again_on_tick() -> None:
    s = connected()
    digest = s.digest
    actions = s.delta(delta("e1", 7, 8, put(BOB)), 100.0)
    assert len(actions) == 1
    req = actions[0]
    assert isinstance(req, RequestSync)
    assert (req.epoch, req.v, req.full, req.reason) == ("e1", 5, False, "gap")
    assert (s.v, s.digest) == (5, digest)  # ignored
    # More gapped deltas within 10 s: no new request.
    assert s.delta(delta("e1", 8, 9, put(BOB)), 105.0) == []
    assert s.tick(109.9) == []
    assert s.next_deadline() == 110.0
    again = of(s.tick(110.0), RequestSync)
    assert [(r.v, r.full, r.reason) for r in again] == [(5, False, "gap")]
    assert s.tick(115.0) == []
    assert of(s.tick(120.0), RequestSync) != []
    # The hub's answer closes the gap: no more asking.
    s.delta(delta("e1", 5, 6), 121.0)
    s.delta(delta("e1", 6, 7), 121.0)
    s.delta(delta("e1", 7, 8, put(BOB)), 121.0)
    s.delta(delta("e1", 8, 9, put(BOB)), 121.0)
    assert s.v == 9
    assert s.tick(131.0) == []
    assert s.tick(200.0) == []
    deadline = s.next_deadline()
    assert deadline is not None and deadline > 200.0  # only the twice-daily sync is left
    # A new gap later is asked at once.
    assert of(s.delta(delta("e1", 11, 12), 300.0), RequestSync) != []


def test_gap_stays_open_until_caught_up_to_its_end() -> None:
    s = connected()
    s.delta(delta("e1", 8, 9), 0.0)  # gap up to 9
    s.delta(delta("e1", 5, 6), 1.0)  # partly filled: still open
    assert s.v == 6
    assert [r.reason for r in of(s.tick(10.0), RequestSync)] == ["gap"]


def test_overlapping_delta_is_not_applied_on_a_version_it_does_not_start_from() -> None:
    # (e1, 5) -> 6 puts Bob; the hub's net delta 4 -> 7 may leave Bob out (say he
    # was added at 6 and removed at 7). Applied at 6 it would keep Bob under v=7.
    s = connected()
    s.delta(delta("e1", 5, 6, put(BOB)), 0.0)
    before = s.digest
    actions = s.delta(delta("e1", 4, 7, put(WIDGET)), 1.0)
    assert of(actions, SaveDelta) == []
    assert (s.v, s.digest) == (6, before)
    assert [(r.v, r.full, r.reason) for r in of(actions, RequestSync)] == [(6, False, "gap")]


@pytest.mark.parametrize(
    "bad",
    [
        ("door", "back", rec(mode="bogus")),
        ("member", "eve", b"\xff"),
        ("site", "other", rec()),
    ],
    ids=["bad-field", "bad-cbor", "bad-site-id"],
)
def test_bad_record_in_delta_changes_nothing_and_asks_full_sync(bad: Rec) -> None:
    s = connected()
    store, digest = s.store, s.digest
    actions = s.delta(delta("e1", 5, 6, put(BOB), put(bad)), 1.0)
    assert [a.what for a in of(actions, SystemEvent)] == ["error"]
    assert full_request(actions).reason
    assert of(actions, SaveDelta) == []
    assert s.store is store and s.digest == digest == s.store.recomputed_digest()
    assert s.store.get("member", "bob") is None  # all ops or none
    assert (s.epoch, s.v) == ("e1", 5)


# --- snapshots (s3) ------------------------------------------------------------------


def test_pages_in_any_order_with_duplicates_swap_once_after_work() -> None:
    s = make("e1", 5, [ANN])
    # A delta request the hub answers with a snapshot (it lacks the deltas).
    (boot,) = of(s.connected_to_hub(0.0), RequestSync)
    live, live_digest = s.store, s.digest
    target = [*BASE, BOB, WIDGET]
    pages = pages_of(boot.req, "e1", 9, target, per_page=2)
    assert len(pages) == 4
    order = [pages[2], pages[0], pages[2], pages[3], pages[0]]
    actions = deliver_all(s, order, 10.0)
    assert of(actions, SaveSnapshot) == []
    assert s.progress() == ("full", 3, 4)
    assert not s.has_work()
    assert s.store is live and s.digest == live_digest and s.v == 5
    s.snap_page(pages[1], 11.0)  # the last one
    assert s.has_work()
    assert s.store is live and s.digest == live_digest and s.v == 5
    # Built a slice at a time; the live store stays until the last slice.
    done: list[SyncAction] = []
    for _ in range(len(target) + 1):
        assert s.store is live and (s.epoch, s.v, s.digest) == ("e1", 5, live_digest)
        done = s.work(12.0, budget=1)
        if done:
            break
    assert s.store is not live
    # The store swapped out is let go of a slice at a time, then work is over.
    assert s.has_work()
    while s.has_work():
        assert s.work(12.5) == []
    assert len(live) == 0
    assert (s.epoch, s.v, s.digest) == ("e1", 9, expected_digest(target))
    assert s.store.recomputed_digest() == s.digest
    snaps = of(done, SaveSnapshot)
    assert len(snaps) == 1
    assert (snaps[0].epoch, snaps[0].v, snaps[0].digest) == ("e1", 9, expected_digest(target))
    assert sorted(snaps[0].records) == sorted(target)
    assert SyncEvent("done", "boot", len(target), 2000) in done
    assert s.progress() == ("idle", 0, 0)
    assert s.last_full == 12.0


def test_messages_while_a_snapshot_is_built_wait_for_the_swap() -> None:
    s = connected()
    req = full_request(s.request_full("command", 0.0)).req
    pages = pages_of(req, "e1", 9, BASE, 5)
    deliver_all(s, pages, 1.0)
    assert s.has_work()
    assert s.work(2.0, budget=2) == []
    # A late duplicate page and another sync's page change nothing now...
    assert deliver_all(s, [pages[0]], 3.0) == []
    assert of(deliver_all(s, pages_of("s2", "e1", 12, [BOB], 1), 3.0), Ignored) != []
    # ...and a delta waits for the swap.
    assert s.delta(delta("e1", 9, 10, put(BOB)), 3.0) == []
    assert (s.v, s.store.get("member", "bob")) == (5, None)
    actions = finish(s, 4.0)
    assert [type(a) for a in actions if isinstance(a, SaveSnapshot | SaveDelta)] == [
        SaveSnapshot,
        SaveDelta,
    ]
    assert (s.v, s.digest) == (10, expected_digest([*BASE, BOB]))


def test_single_empty_page_snapshot_swaps_to_an_empty_dataset() -> None:
    s = connected()
    req = full_request(s.request_full("command", 0.0)).req
    deliver_all(s, pages_of(req, "e1", 9, [], 10), 1.0)
    done = finish(s, 2.0)
    assert (s.v, s.digest, len(s.store)) == (9, ZERO, 0)
    assert SaveSnapshot("e1", 9, [], ZERO) in done


def test_digest_mismatch_fails_and_keeps_live_data() -> None:
    s = connected()
    live, digest = s.store, s.digest
    req = full_request(s.request_full("command", 0.0)).req
    wrong = expected_digest([BOB])
    pages = pages_of(req, "e1", 9, [*BASE, BOB, WIDGET], 3, digest=wrong)
    deliver_all(s, pages, 1.0)
    actions = finish(s, 2.0)
    failed = of(actions, SyncEvent)
    assert [e.what for e in failed] == ["failed"]
    assert failed[0].reason == "command"
    assert "error" in [e.what for e in of(actions, SystemEvent)]
    assert of(actions, SaveSnapshot) == []
    assert s.store is live and (s.epoch, s.v, s.digest) == ("e1", 5, digest)
    assert s.progress() == ("idle", 0, 0)
    # The failed answer is over: its pages sent again are not taken.
    assert of(deliver_all(s, pages, 3.0), Ignored) != []
    assert not s.has_work() and s.store is live


def test_a_newer_request_abandons_the_older_incomplete_one() -> None:
    s = connected()
    first = full_request(s.request_full("command", 0.0)).req
    old = pages_of(first, "e1", 6, [*BASE, BOB], 2)
    s.snap_page(old[0], 1.0)
    s.snap_page(old[1], 1.0)
    assert s.progress() == ("full", 2, len(old))
    second = full_request(s.request_full("command", 2.0)).req
    assert s.progress() == ("full", 0, 0)
    new = pages_of(second, "e1", 8, [*BASE, WIDGET], 2)
    s.snap_page(new[0], 2.0)
    assert s.progress() == ("full", 1, len(new))
    # The older request's rest is too late now, even though it would complete it.
    ignored = deliver_all(s, old, 3.0)
    assert len(of(ignored, Ignored)) == len(old) and s.ignored == len(old)
    assert s.progress() == ("full", 1, len(new))
    deliver_all(s, new[1:], 4.0)
    finish(s, 5.0)
    assert (s.v, s.digest) == (8, expected_digest([*BASE, WIDGET]))


def test_pages_of_an_applied_sync_are_ignored() -> None:
    s = connected()
    req = full_request(s.request_full("command", 0.0)).req
    pages = pages_of(req, "e1", 5, BASE, 2)
    deliver_all(s, pages, 1.0)
    finish(s, 2.0)
    assert s.progress() == ("idle", 0, 0)
    # Same (epoch, v) as live: the request is answered, so its pages are unasked now.
    again = deliver_all(s, pages, 3.0)
    assert again == [
        Ignored(f"snapshot page {p.page} of sync {req!r}: not asked for") for p in pages
    ]
    assert s.progress() == ("idle", 0, 0) and not s.has_work()


def test_pages_of_a_snapshot_older_than_live_are_ignored() -> None:
    s = connected()
    live, digest = s.store, s.digest
    req = full_request(s.request_full("command", 0.0)).req
    assert of(deliver_all(s, pages_of(req, "e1", 4, [BOB], 1), 1.0), Ignored) != []
    assert s.progress() == ("full", 0, 0) and not s.has_work()
    assert s.store is live and (s.v, s.digest) == (5, digest)


def test_snapshot_of_another_epoch_replaces_live_data() -> None:
    s = connected()
    req = full_request(s.delta(delta("e2", 0, 1), 0.5)).req
    deliver_all(s, pages_of(req, "e2", 2, [BOB], 1), 1.0)
    finish(s, 2.0)
    assert (s.epoch, s.v, s.digest) == ("e2", 2, expected_digest([BOB]))


# --- only answers to our own latest request (s3, v2) -----------------------------------


@pytest.mark.parametrize("epoch", ["e1", "e0", "e2"])
def test_a_snapshot_nobody_asked_for_changes_nothing(epoch: str) -> None:
    s = connected()
    live, digest = s.store, s.digest
    for v in (3, 5, 9):
        pages = pages_of(f"recorded-{v}", epoch, v, [BOB], 1)
        actions = deliver_all(s, pages, 1.0)
        assert [type(a) for a in actions] == [Ignored]
    assert s.ignored == 3
    assert s.progress() == ("idle", 0, 0) and not s.has_work()
    assert s.store is live and (s.epoch, s.v, s.digest) == ("e1", 5, digest)


def test_a_recorded_answer_to_an_earlier_request_is_not_taken() -> None:
    # The hub answered our request once; someone recorded the pages and plays
    # them back after we asked again (and after the hub moved on).
    s = connected()
    first = full_request(s.request_full("command", 0.0)).req
    recorded = pages_of(first, "e1", 6, [*BASE, BOB], 2)
    deliver_all(s, recorded, 1.0)
    finish(s, 2.0)
    assert (s.v, s.store.get("member", "bob") is not None) == (6, True)
    s.delta(delta("e1", 6, 7, Delete("member", "bob")), 3.0)
    full_request(s.request_full("schedule", 4.0))
    assert of(deliver_all(s, recorded, 5.0), Ignored) != []
    assert not s.has_work()
    assert (s.v, s.store.get("member", "bob")) == (7, None)


def test_every_request_names_our_digest() -> None:
    s = make("e1", 5, BASE)
    boot = of(s.connected_to_hub(0.0), RequestSync)[0]
    assert boot.digest == expected_digest(BASE)
    s.delta(delta("e1", 5, 6, put(BOB)), 1.0)
    gap = of(s.delta(delta("e1", 8, 9), 2.0), RequestSync)[0]
    assert gap.digest == expected_digest([*BASE, BOB])
    assert full_request(s.purge(3.0)).digest == ZERO


def test_deltas_during_a_full_sync_are_buffered_and_applied_after_the_swap() -> None:
    s = connected()
    req = full_request(s.request_full("command", 0.0)).req
    live, digest = s.store, s.digest
    # Out of order, an old one, one of another epoch, one the snapshot already has.
    incoming = [
        delta("e1", 10, 11, put(WIDGET)),
        delta("e1", 9, 10, Delete("member", "ann")),
        delta("e1", 3, 4, put(BOB)),
        delta("e0", 9, 10, put(BOB)),
        delta("e1", 8, 9),
    ]
    for d in incoming:
        assert s.delta(d, 1.0) == []
    assert s.store is live and (s.v, s.digest) == (5, digest)
    deliver_all(s, pages_of(req, "e1", 9, BASE, 2), 2.0)
    actions = finish(s, 3.0)
    kinds = [type(a) for a in actions if isinstance(a, SaveSnapshot | SaveDelta)]
    assert kinds == [SaveSnapshot, SaveDelta, SaveDelta]
    after = [SITE, GROUP, DOOR, LIGHT, WIDGET]
    assert (s.epoch, s.v, s.digest) == ("e1", 11, expected_digest(after))
    assert of(actions, SaveDelta)[-1].digest == expected_digest(after)
    assert s.store.get("member", "bob") is None
    assert of(actions, RequestSync) == []


def test_stalled_full_sync_without_pages_is_asked_again_after_30s() -> None:
    s = connected()
    s.request_full("command", 100.0)
    assert s.next_deadline() == 130.0
    assert s.tick(129.9) == []
    req = full_request(s.tick(130.0))
    assert (req.full, req.reason) == (True, "stalled")
    assert s.full_reason == "command"  # still reported as the command's sync
    assert s.tick(159.0) == []
    assert full_request(s.tick(160.0)).reason == "stalled"


def test_stalled_full_sync_after_some_pages_is_asked_again() -> None:
    s = connected()
    req = full_request(s.request_full("command", 0.0)).req
    pages = pages_of(req, "e1", 9, BASE, 2)
    s.snap_page(pages[0], 20.0)
    s.snap_page(pages[1], 40.0)
    assert s.tick(69.0) == []
    again = full_request(s.tick(70.0))
    assert again.reason == "stalled"
    # Only the answer to the new request counts; the old pages are gone.
    assert s.progress() == ("full", 0, 0)
    assert of(deliver_all(s, pages[2:], 70.5), Ignored) != []
    deliver_all(s, pages_of(again.req, "e1", 9, BASE, 2), 71.0)
    done = finish(s, 72.0)
    assert SyncEvent("done", "command", len(BASE), 72000) in done
    assert s.v == 9


def test_no_stall_request_while_disconnected() -> None:
    s = connected()
    s.request_full("command", 0.0)
    s.disconnected_from_hub(1.0)
    assert s.tick(100.0) == []
    assert s.next_deadline() is None
    # Back online: the sync is asked for again.
    assert full_request(s.connected_to_hub(101.0)).reason == "command"


# --- `current` (s3, v2) ----------------------------------------------------------------


def current_for(s: SyncSession, req: str, **change: Any) -> Current:
    fields: dict[str, Any] = {"epoch": s.epoch, "v": s.v, "digest": s.digest} | change
    return Current(req, fields["epoch"], fields["v"], fields["digest"], None)


def test_current_ends_a_full_sync_without_rewriting_anything() -> None:
    s = make("e1", 5, BASE, now=0.0, jitter=lambda: 0.0)
    s.connected_to_hub(0.0)
    live, digest = s.store, s.digest
    req = full_request(s.tick(43200.0))
    assert (req.reason, req.digest) == ("schedule", digest)
    actions = s.current(current_for(s, req.req), 43201.0)
    assert actions == [SyncEvent("done", "schedule", len(BASE), 1000), StateChanged()]
    assert s.store is live and (s.epoch, s.v, s.digest) == ("e1", 5, digest)
    assert s.progress() == ("idle", 0, 0) and not s.has_work()
    # It counts as the twice-daily sync: the next one is 12 h from here.
    assert s.last_full == 43201.0
    assert s.next_deadline() == 43201.0 + 43200
    # A second copy of it answers nothing now.
    assert of(s.current(current_for(s, req.req), 43202.0), Ignored) != []


@pytest.mark.parametrize("reason", ["boot", "outage", "epoch", "schedule"])
def test_current_answers_the_reasons_that_allow_it(reason: str) -> None:
    s = make("e1", 5, BASE)
    req = of(s.connected_to_hub(0.0), RequestSync)[0]
    if reason == "outage":
        s.disconnected_from_hub(1.0)
        req = of(s.connected_to_hub(2000.0), RequestSync)[0]
    elif reason == "epoch":
        req = full_request(s.delta(delta("e0", 1, 2), 1.0))
    elif reason == "schedule":
        req = full_request(s.tick(50_000.0))
    assert req.reason == reason
    done = s.current(current_for(s, req.req), 3000.0)
    assert StateChanged() in done and of(done, Ignored) == []
    assert of(done, SaveSnapshot | SaveDelta) == []
    assert s.last_full == 3000.0


@pytest.mark.parametrize("reason", ["command", "digest", "stalled", "purge", "gap"])
def test_current_does_not_answer_a_request_that_needs_the_snapshot(reason: str) -> None:
    s = connected()
    if reason == "stalled":
        s.request_full("command", 0.0)
        req = full_request(s.tick(30.0))
    elif reason == "purge":
        req = full_request(s.purge(0.0))
    elif reason == "gap":
        req = of(s.delta(delta("e1", 8, 9), 0.0), RequestSync)[0]
    else:
        req = full_request(s.request_full(reason, 0.0))
    assert req.reason == reason
    before = (s.progress(), s.epoch, s.v, s.digest)
    assert of(s.current(current_for(s, req.req), 31.0), Ignored) != []
    assert (s.progress(), s.epoch, s.v, s.digest) == before
    # The request stays open: its snapshot is still taken.
    deliver_all(s, pages_of(req.req, "e1", 9, [BOB], 1), 32.0)
    assert of(finish(s, 33.0), SaveSnapshot) != []
    assert (s.v, s.digest) == (9, expected_digest([BOB]))


@pytest.mark.parametrize(
    "change",
    [{"epoch": "e0"}, {"v": 4}, {"v": 6}, {"digest": bytes(range(16))}],
    ids=["epoch", "older", "newer", "digest"],
)
def test_a_current_that_does_not_match_our_data_is_ignored(change: dict[str, Any]) -> None:
    s = make("e1", 5, BASE, jitter=lambda: 0.0)
    s.connected_to_hub(0.0)
    req = full_request(s.tick(43200.0))
    actions = s.current(current_for(s, req.req, **change), 43201.0)
    assert [type(a) for a in actions] == [Ignored] and s.ignored == 1
    # Nothing ended: the sync still runs, and stalls into a fresh request.
    assert s.progress() == ("full", 0, 0) and s.last_full is None
    assert full_request(s.tick(43230.0)).reason == "stalled"


def test_a_current_for_another_request_is_ignored() -> None:
    s = make("e1", 5, BASE)
    old = of(s.connected_to_hub(0.0), RequestSync)[0]
    s.disconnected_from_hub(1.0)
    new = of(s.connected_to_hub(2000.0), RequestSync)[0]
    assert (new.full, new.reason) == (True, "outage")
    assert of(s.current(current_for(s, old.req), 2001.0), Ignored) != []
    assert of(s.current(current_for(s, "made-up"), 2001.0), Ignored) != []
    assert s.progress() == ("full", 0, 0) and s.ignored == 2
    assert s.current(current_for(s, new.req), 2002.0)[-1] == StateChanged()
    assert s.progress() == ("idle", 0, 0)


def test_deltas_that_waited_for_a_current_are_applied_after_it() -> None:
    s = make("e1", 5, BASE, jitter=lambda: 0.0)
    s.connected_to_hub(0.0)
    req = full_request(s.tick(43200.0))
    assert s.delta(delta("e1", 5, 6, put(BOB)), 43200.5) == []
    actions = s.current(current_for(s, req.req), 43201.0)
    assert [a.v for a in of(actions, SaveDelta)] == [6]
    assert (s.v, s.digest) == (6, expected_digest([*BASE, BOB]))


def test_a_current_closes_a_delta_request_and_its_gap() -> None:
    s = connected()
    s.disconnected_from_hub(1.0)
    req = of(s.connected_to_hub(2.0), RequestSync)[0]
    assert (req.full, req.reason) == (False, "outage")
    assert s.current(current_for(s, req.req), 3.0) == [StateChanged()]
    assert s.last_full == 3.0


# --- epoch-mismatch deltas (s3 rule 1, v2) ---------------------------------------------


def test_replayed_old_epoch_deltas_ask_at_most_once_a_minute() -> None:
    s = connected()
    store = s.store
    old = [delta("e0", i, i + 1, put(BOB)) for i in range(5)]
    asked: list[float] = []
    now = 10.0
    while now < 10.0 + 300:
        for d in old:
            actions = s.delta(d, now)
            requests = of(actions, RequestSync)
            asked += [now for r in requests if r.reason == "epoch"]
            for r in requests:
                # The hub answers `current`: we are on its epoch already.
                s.current(current_for(s, r.req), now)
        now += 7.0
    assert len(asked) == 5  # 300 s of replays every 7 s: one request a minute
    assert all(b - a >= 60.0 for a, b in itertools.pairwise(asked))
    assert s.store is store and (s.epoch, s.v) == ("e1", 5)


def test_a_real_epoch_change_is_asked_at_once_after_a_quiet_minute() -> None:
    s = connected()
    first = full_request(s.delta(delta("e0", 1, 2), 0.0))
    s.current(current_for(s, first.req), 1.0)
    assert s.delta(delta("e2", 0, 1, put(BOB)), 30.0) == []  # within the minute
    req = full_request(s.delta(delta("e2", 1, 2, put(BOB)), 61.0))
    deliver_all(s, pages_of(req.req, "e2", 2, [BOB], 1), 62.0)
    finish(s, 63.0)
    assert (s.epoch, s.v, s.digest) == ("e2", 2, expected_digest([BOB]))


# --- triggers (s7) -------------------------------------------------------------------


def test_twice_daily_full_sync_with_injected_jitter() -> None:
    fractions = iter([0.5, 0.25, 0.75])
    s = make("e1", 5, BASE, now=1000.0, jitter=lambda: next(fractions))
    s.connected_to_hub(1000.0)
    due = 1000.0 + 43200 + 0.5 * 1800
    assert s.next_deadline() == due
    assert s.tick(due - 1) == []
    req = full_request(s.tick(due))
    assert (req.full, req.reason) == (True, "schedule")
    deliver_all(s, pages_of(req.req, "e1", 6, BASE, 3), due + 5)
    finish(s, due + 10)
    nxt = due + 10 + 43200 + 0.25 * 1800
    assert s.next_deadline() == nxt
    assert s.tick(nxt - 1) == []
    assert full_request(s.tick(nxt)).reason == "schedule"


def test_schedule_counts_from_the_last_full_sync() -> None:
    s = make("e1", 5, BASE, now=50_000.0, last_full=10_000.0, jitter=lambda: 0.0)
    s.connected_to_hub(50_000.0)
    assert s.next_deadline() == 10_000.0 + 43200
    assert s.tick(53_199.0) == []
    assert full_request(s.tick(53_200.0)).reason == "schedule"


def test_jitter_is_capped_at_30_minutes() -> None:
    s = make("e1", 5, BASE, now=0.0, jitter=lambda: 0.999)
    s.connected_to_hub(0.0)
    deadline = s.next_deadline()
    assert deadline is not None and 43200 < deadline < 43200 + 1800


@pytest.mark.parametrize(
    ("offline", "full"), [(10.0, False), (600.0, False), (600.5, True), (5000.0, True)]
)
def test_reconnect_after_outage(offline: float, full: bool) -> None:
    s = connected()
    s.disconnected_from_hub(100.0)
    actions = s.connected_to_hub(100.0 + offline)
    reqs = of(actions, RequestSync)
    assert [(r.full, r.reason) for r in reqs] == [(full, "outage")]
    assert (s.full_reason == "outage") is full


def test_outage_threshold_is_configurable() -> None:
    s = make("e1", 5, BASE, outage_s=60.0)
    s.connected_to_hub(0.0)
    s.disconnected_from_hub(0.0)
    assert full_request(s.connected_to_hub(61.0)).reason == "outage"


def test_purge_wipes_data_and_asks_a_full_sync() -> None:
    s = connected()
    s.delta(delta("e1", 7, 8), 0.0)  # an open gap, which the purge forgets
    actions = s.purge(1.0)
    assert actions[0] == SaveSnapshot(None, 0, [], ZERO)
    assert SyncEvent("purged", "purge") in actions
    req = full_request(actions)
    assert (req.epoch, req.v, req.full, req.reason) == (None, 0, True, "purge")
    assert (s.epoch, s.v, s.digest, len(s.store)) == (None, 0, ZERO, 0)
    assert s.full_reason == "purge"
    deliver_all(s, pages_of(req.req, "e1", 8, [BOB], 1), 2.0)
    done = finish(s, 3.0)
    assert SyncEvent("done", "purge", 1, 2000) in done
    assert (s.epoch, s.v, s.digest) == ("e1", 8, expected_digest([BOB]))


@pytest.mark.parametrize("reason", ["command", "digest"])
def test_request_full(reason: str) -> None:
    s = connected()
    actions = s.request_full(reason, 1.0)
    req = full_request(actions)
    assert (req.epoch, req.v, req.reason) == ("e1", 5, reason)
    assert SyncEvent("started", reason) in actions
    assert s.full_reason == reason
    deliver_all(s, pages_of(req.req, "e1", 5, [BOB], 1), 2.0)
    done = finish(s, 3.0)
    assert [e.what for e in of(done, SyncEvent)] == ["done"]
    assert of(done, SyncEvent)[0].reason == reason


def test_request_full_while_offline_is_sent_on_connect() -> None:
    s = make("e1", 5, BASE)
    s.connected_to_hub(0.0)
    s.disconnected_from_hub(1.0)
    assert of(s.request_full("command", 2.0), RequestSync) == []
    assert full_request(s.connected_to_hub(3.0)).reason == "command"


# --- from the wire -------------------------------------------------------------------


def test_wire_bodies_parse_into_what_the_session_applies() -> None:
    s = connected()
    d = parse_delta(
        {
            "t": "delta",
            "epoch": "e1",
            "from": 5,
            "to": 6,
            "ops": [["put", *BOB], ["del", "member", "ann"]],
            "now": 1,
        }
    )
    s.delta(d, 1.0)
    records = [SITE, GROUP, DOOR, LIGHT, BOB]
    assert (s.v, s.digest) == (6, expected_digest(records))
    req = full_request(s.request_full("command", 2.0)).req
    body = {
        "t": "snap",
        "sync": req,
        "epoch": "e1",
        "v": 7,
        "page": 0,
        "pages": 1,
        "recs": [list(r) for r in [*records, WIDGET]],
        "digest": expected_digest([*records, WIDGET]),
        "now": 2,
    }
    s.snap_page(parse_snap(body), 3.0)
    finish(s, 4.0)
    assert (s.v, s.digest) == (7, expected_digest([*records, WIDGET]))


def test_a_current_from_the_wire_ends_the_request() -> None:
    s = make("e1", 5, BASE)
    boot = of(s.connected_to_hub(0.0), RequestSync)[0]
    body = {"t": "current", "req": boot.req, "epoch": "e1", "v": 5, "digest": s.digest, "now": 1}
    assert s.current(parse_current(body), 1.0) == [StateChanged()]


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"req": ""}, "'req'"),
        ({"req": 7}, "'req'"),
        ({"epoch": None}, "'epoch'"),
        ({"v": -1}, "'v'"),
        ({"v": True}, "'v'"),
        ({"digest": b"short"}, "'digest'"),
        ({"digest": "00" * 16}, "'digest'"),
        ({"now": "noon"}, "'now'"),
    ],
)
def test_a_malformed_current_is_refused_naming_the_field(
    change: dict[str, Any], names: str
) -> None:
    body = {"t": "current", "req": "r", "epoch": "e1", "v": 5, "digest": ZERO, "now": 1}
    with pytest.raises(RemoteError, match=names):
        parse_current(body | change)


def test_a_snapshot_over_the_record_limit_is_given_up_and_its_rest_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("firmware.core.sync.MAX_SNAPSHOT_RECORDS", 3)
    s = connected()
    live, digest = s.store, s.digest
    req = full_request(s.request_full("command", 0.0)).req
    pages = pages_of(req, "e1", 9, [*BASE, BOB], 2)
    assert s.snap_page(pages[0], 1.0) == [StateChanged()]
    errors = of(s.snap_page(pages[1], 1.0), SystemEvent)
    assert [e.what for e in errors] == ["error"] and "more than 3" in errors[0].detail
    assert of(s.snap_page(pages[2], 1.0), Ignored) != []
    assert s.progress() == ("idle", 0, 0) and not s.has_work()
    assert s.store is live and (s.v, s.digest) == (5, digest)


def test_an_answer_to_a_later_request_waits_for_the_snapshot_being_built() -> None:
    s = connected()
    first = full_request(s.request_full("command", 0.0)).req
    deliver_all(s, pages_of(first, "e1", 9, BASE, 2), 1.0)
    assert s.has_work()
    s.disconnected_from_hub(2.0)
    (again,) = of(s.connected_to_hub(3.0), RequestSync)  # a short outage: deltas from v5
    assert (again.full, again.reason) == (False, "outage")
    # The hub answers it with a snapshot: the one being built is not disturbed.
    late = deliver_all(s, pages_of(again.req, "e1", 10, [*BASE, BOB], 2), 4.0)
    assert [type(a) for a in late] == [Ignored] * 3
    done = finish(s, 5.0)
    assert SyncEvent("done", "command", len(BASE), 5000) in done
    assert (s.v, s.digest) == (9, expected_digest(BASE))
