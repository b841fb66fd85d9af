"""A hub model plays against the sync session over a lossy, reordering, duplicating
network (PROTOCOL.md s3, s4, s6, s7), on which someone also replays anything the
hub ever sent.

The hub keeps every dataset it ever had, by (epoch, v), and computes digests with
its own code. Whenever the session holds an (epoch, v), its live digest must be the
hub's digest of that exact version, and what the session asked the runtime to save
must be the same dataset. The session never goes back to an older epoch, or to an
older version of its epoch, whatever is replayed (a purge alone starts over).
Once the network stops losing messages, the session must reach the hub's latest
(epoch, v, digest) within a bounded number of rounds.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from firmware.core.messages import parse_current, parse_delta, parse_snap
from firmware.core.store import Delete, Put, Store
from firmware.core.sync import (
    RequestSync,
    SaveDelta,
    SaveSnapshot,
    SyncAction,
    SyncEvent,
    SyncSession,
    SystemEvent,
)
from tests.builders import rec

Key = tuple[str, str]
Dataset = dict[Key, bytes]
Change = tuple[str, int, int | None]  # kind, id index, body variant (None: delete)

IDS = ("a", "b")
KINDS = ("member", "group", "door", "light", "schedule", "booking", "site", "widget")
BAD = 7  # the body variant the controller must reject (kept, counted, grants nothing)
KEEP_DELTAS = 6  # the hub answers "deltas from v" only this far back
MAX_ROUNDS = 8  # convergence: deliver everything, then one timer step, at most this often
CURRENT_REASONS = ("boot", "schedule", "outage", "epoch")


def body(kind: str, i: int) -> bytes:
    """A record body: variants 0..6 are valid, variant BAD is not (for known kinds)."""
    bad = i == BAD
    if kind == "member":
        if bad:
            return rec(active="yes")
        return rec(name=f"m{i}", groups=list(IDS[: i % 3]), creds=[["tag", f"t{i % 3}"]])
    if kind == "group":
        return rec(doors="front") if bad else rec(doors=["a"], lights=list(IDS[: i % 4]))
    if kind == "door":
        if bad:
            return rec(mode="bogus")
        return rec(name=f"d{i}", unlock_s=i + 1, mode=("normal", "locked", "unlocked")[i % 3])
    if kind == "light":
        return rec(block_s=0) if bad else rec(name=f"l{i}", price=10 * i)
    if kind == "schedule":
        return rec(windows=[[0, 0, 0]]) if bad else rec(windows=[[127, 60 * i, 60 * i + 90]])
    if kind == "booking":
        if bad:
            return rec(start=5, end=5)
        return rec(start=1000 * i, end=1000 * i + 500, lights=["a"], pin=f"{1000 + i}")
    if kind == "site":
        return rec(tz="Not/AZone") if bad else rec(tz="Europe/Berlin", name=f"club {i}")
    return b"\xff" if bad else rec(x=i)  # unknown kind: any bytes, stored as they are


def hub_digest(data: Dataset) -> bytes:
    """PROTOCOL.md s3, independently of firmware.core.model."""
    total = 0
    for (kind, id), body_bytes in data.items():
        h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + body_bytes)
        total += int.from_bytes(h.digest()[:16], "big")
    return (total % 2**128).to_bytes(16, "big")


def wire_ops(old: Dataset, new: Dataset) -> list[list[Any]]:
    """The net change from `old` to `new` as delta ops."""
    ops: list[list[Any]] = [["del", k, i] for (k, i) in sorted(old.keys() - new.keys())]
    ops += [["put", k, i, b] for (k, i), b in sorted(new.items()) if old.get((k, i)) != b]
    return ops


def key_of(kind: str, index: int) -> Key:
    return (kind, "site" if kind == "site" else IDS[index])


# How the hub answers "deltas from v": one net delta (True) or one per commit.
COALESCE = st.sampled_from([True, True, False])
PAGE_SIZE = st.integers(1, 8)

changes = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, len(IDS) - 1),
        # Few variants and many deletes, so later change sets often undo earlier ones;
        # a rejected body now and then (each one makes the controller resync in full).
        st.integers(0, 39).map(lambda n: BAD if n == 39 else None if n % 4 == 3 else n % 4),
    ),
    min_size=1,
    max_size=4,
)


class Hub:
    """The hub side: every version of every epoch, and the ops of each commit."""

    def __init__(self) -> None:
        self.epoch = "e0"
        self.v = 0
        self.history: dict[str, dict[int, Dataset]] = {"e0": {0: {}}}
        self.ops: dict[str, dict[int, list[list[Any]]]] = {"e0": {}}  # ops of (v-1 -> v)
        self._epochs = itertools.count(1)

    @property
    def data(self) -> Dataset:
        return self.history[self.epoch][self.v]

    def commit(self, change_set: list[Change]) -> dict[str, Any]:
        """One committed change set; returns the delta the hub pushes for it."""
        data = dict(self.data)
        ops: list[list[Any]] = []
        for kind, index, variant in change_set:
            key = key_of(kind, index)
            if variant is None:
                data.pop(key, None)
                ops.append(["del", *key])
            else:
                data[key] = body(kind, variant)
                ops.append(["put", *key, data[key]])
        return self._commit(data, ops)

    def revert(self, back: int) -> dict[str, Any]:
        """A change set that restores the dataset of `back` versions ago (an undo)."""
        versions = self.history[self.epoch]
        old = versions[max(min(versions), self.v - back)]
        return self._commit(dict(old), wire_ops(self.data, old))

    def _commit(self, data: Dataset, ops: list[list[Any]]) -> dict[str, Any]:
        self.v += 1
        self.history[self.epoch][self.v] = data
        self.ops[self.epoch][self.v] = ops
        return self.delta(self.v - 1, self.v, ops)

    def reset(self, back: int) -> None:
        """History reset / restore from a backup: a new epoch that starts at an
        earlier dataset, under the version number the backup had."""
        start = min(self.history[self.epoch])
        v = max(start, self.v - back)
        data = self.history[self.epoch][v]
        self.epoch = f"e{next(self._epochs)}"
        self.v = v
        self.history[self.epoch] = {v: dict(data)}
        self.ops[self.epoch] = {}

    def delta(self, from_v: int, to_v: int, ops: list[list[Any]]) -> dict[str, Any]:
        return {"t": "delta", "epoch": self.epoch, "from": from_v, "to": to_v, "ops": ops}

    def snapshot(self, page_size: int, sync: str) -> list[dict[str, Any]]:
        records = [[k, i, b] for (k, i), b in sorted(self.data.items())]
        chunks = [records[n : n + page_size] for n in range(0, len(records), page_size)]
        chunks = chunks or [[]]
        return [
            {
                "t": "snap",
                "sync": sync,
                "epoch": self.epoch,
                "v": self.v,
                "page": n,
                "pages": len(chunks),
                "recs": chunk,
                "digest": hub_digest(self.data),
            }
            for n, chunk in enumerate(chunks)
        ]

    def answer(self, req: RequestSync, page_size: int, coalesce: bool) -> list[dict[str, Any]]:
        """s3 `sync`: `current` when nothing differs and the reason allows it; deltas
        from `v` when it still has them and `full` is false; else a full snapshot
        carrying the request id as its sync id. A request delivered twice gets two
        answers with that id, of different versions if the hub moved between them."""
        same = (req.epoch, req.v, req.digest) == (self.epoch, self.v, hub_digest(self.data))
        if same and req.reason in CURRENT_REASONS:
            digest = hub_digest(self.data)
            return [
                {"t": "current", "req": req.req, "epoch": self.epoch, "v": self.v}
                | {"digest": digest}
            ]
        have = req.epoch == self.epoch and self.v - KEEP_DELTAS <= req.v <= self.v
        have = have and req.v >= min(self.history[self.epoch])
        if req.full or not have:
            return self.snapshot(page_size, sync=req.req)
        if req.v == self.v:
            return []
        if coalesce:
            return [self.delta(req.v, self.v, wire_ops(self.history[self.epoch][req.v], self.data))]
        return [self.delta(v - 1, v, self.ops[self.epoch][v]) for v in range(req.v + 1, self.v + 1)]


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hub = Hub()
        self.now = 1_000_000.0
        # Messages in flight: ("data", body) to the controller, ("sync", req) to the hub.
        self.network: list[tuple[str, Any]] = []
        self.lossy = True
        self.busy = False
        self.session: SyncSession
        self.saved: tuple[str | None, int, Dataset] = (None, 0, {})
        # Every message the hub ever sent on `data`, for the replays.
        self.recorded: list[dict[str, Any]] = []
        # The furthest (epoch number, v) the session held since its last purge.
        self.high: tuple[int, int] = (-1, 0)

    # --- set-up -------------------------------------------------------------------

    @initialize(
        history=st.lists(changes, max_size=4), behind=st.integers(0, 5), empty=st.integers(0, 3)
    )
    def boot(self, history: list[list[Change]], behind: int, empty: int) -> None:
        for change_set in history:
            self.hub.commit(change_set)  # before the controller ever connected
        ids = itertools.count(1)
        if empty == 0:  # a quarter of the runs boot without data
            epoch, v, data = None, 0, {}
        else:
            epoch, v = "e0", max(0, self.hub.v - behind)
            data = self.hub.history["e0"][v]
        built = Store.build((k, i, b) for (k, i), b in data.items())
        self.session = SyncSession(
            built.store,
            epoch,
            v,
            now=self.now,
            jitter=lambda: 0.5,
            new_id=lambda: f"req-{next(ids)}",
        )
        self.saved = (epoch, v, dict(data))
        self.handle(self.session.connected_to_hub(self.now))

    # --- plumbing -----------------------------------------------------------------

    def handle(self, actions: list[SyncAction]) -> None:
        """Carry out the session's actions as the runtime would, and check them."""
        for action in actions:
            if isinstance(action, RequestSync):
                # The runtime cannot publish while offline: such a request is lost
                # (a buffered delta replayed by `work` can open a gap at any time).
                if self.session.connected:
                    self.network.append(("sync", action))
            elif isinstance(action, SaveDelta):
                epoch, v, data = self.saved
                assert epoch == action.epoch
                assert action.v > v
                data = dict(data)
                for op in action.ops:
                    if isinstance(op, Put):
                        data[(op.kind, op.id)] = op.rec
                    else:
                        assert isinstance(op, Delete)
                        data.pop((op.kind, op.id), None)
                assert hub_digest(data) == action.digest
                self.saved = (epoch, action.v, data)
            elif isinstance(action, SaveSnapshot):
                if action.epoch is None:
                    self.high = (-1, 0)  # a purge: the one way back
                data = {(k, i): b for k, i, b in action.records}
                assert len(data) == len(action.records), "a key saved twice"
                assert hub_digest(data) == action.digest
                self.saved = (action.epoch, action.v, data)
            elif isinstance(action, SyncEvent):
                # The hub never sends a wrong digest, so a failure means pages of
                # different syncs or versions got mixed.
                assert action.what != "failed", action
            elif isinstance(action, SystemEvent):
                assert action.what in ("error", "conflict"), action
                if action.what == "error":
                    # Only BAD bodies, and pages of two answers to one request
                    # delivered twice (one of them is then used whole).
                    assert "rejected" in action.detail or "disagrees" in action.detail, action

    def deliver_at(self, index: int, page_size: int, coalesce: bool) -> None:
        where, message = self.network.pop(index)
        if where == "sync":
            for body_map in self.hub.answer(message, page_size, coalesce):
                self.send(body_map)
        elif where == "cmd":
            self.handle(self.session.request_full("command", self.now))
        elif message["t"] == "delta":
            self.handle(self.session.delta(parse_delta(message), self.now))
        elif message["t"] == "current":
            self.handle(self.session.current(parse_current(message), self.now))
        else:
            self.handle(self.session.snap_page(parse_snap(message), self.now))
        if not self.busy:
            self.work_to_the_end()  # the event loop builds between messages

    def send(self, message: dict[str, Any]) -> None:
        """The hub publishes on `data`; a recorder on the broker keeps a copy."""
        self.network.append(("data", message))
        self.recorded.append(message)

    def push_if_state_differs(self) -> None:
        """s4, s6: the hub compares the retained state with its own and, when they
        disagree, sends the `sync` command (never a snapshot nobody asked for)."""
        s = self.session
        if (s.epoch, s.v, s.digest) != (self.hub.epoch, self.hub.v, hub_digest(self.hub.data)):
            self.network.append(("cmd", None))

    def advance(self, dt: float) -> None:
        self.now += dt
        self.handle(self.session.tick(self.now))

    # --- the hub ------------------------------------------------------------------

    @rule(commits=st.lists(st.one_of(changes, st.integers(1, 2)), min_size=1, max_size=4))
    def hub_commits(self, commits: list[list[Change] | int]) -> None:
        """A few change sets, each random or an undo of the last 1 or 2 versions."""
        for commit in commits:
            if isinstance(commit, int):
                self.send(self.hub.revert(commit))
            else:
                self.send(self.hub.commit(commit))

    @rule(back=st.integers(0, 3))
    def hub_resets_epoch(self, back: int) -> None:
        self.hub.reset(back)

    @precondition(lambda self: self.session.connected)
    @rule(roll=st.integers(0, 3))
    def hub_checks_state(self, roll: int) -> None:
        if roll == 0:  # rarely: most runs must get by on deltas and requests
            self.push_if_state_differs()

    @precondition(lambda self: self.recorded)
    @rule(pick=st.integers(0, 1000), count=st.integers(1, 8))
    def replay(self, pick: int, count: int) -> None:
        """Someone with broker access republishes what the hub once sent: old
        deltas, old epochs, whole answered snapshots, old `current`s."""
        start = pick % len(self.recorded)
        self.network += [("data", m) for m in self.recorded[start : start + count]]

    # --- the network --------------------------------------------------------------

    @precondition(lambda self: self.network and self.session.connected)
    @rule(
        picks=st.lists(st.integers(0, 3), min_size=1, max_size=12),
        page_size=PAGE_SIZE,
        coalesce=COALESCE,
    )
    def deliver_some(self, picks: list[int], page_size: int, coalesce: bool) -> None:
        """Deliver a few messages, mostly in order (pick 0 is the oldest in flight),
        a second apart."""
        for pick in picks:
            if not self.network:
                return
            self.deliver_at(pick % len(self.network), page_size, coalesce)
            self.advance(1.0)

    @precondition(lambda self: self.network and self.session.connected)
    @rule(pick=st.integers(0, 1000), page_size=PAGE_SIZE, coalesce=COALESCE)
    def deliver_out_of_order(self, pick: int, page_size: int, coalesce: bool) -> None:
        self.deliver_at(pick % len(self.network), page_size, coalesce)

    @precondition(lambda self: self.network)
    @rule(pick=st.integers(0, 1000), roll=st.integers(0, 2))
    def duplicate(self, pick: int, roll: int) -> None:
        if roll == 0:  # a third as often as the other rules
            self.network.append(self.network[pick % len(self.network)])

    @precondition(lambda self: self.network and self.lossy)
    @rule(pick=st.integers(0, 1000), roll=st.integers(0, 2))
    def lose(self, pick: int, roll: int) -> None:
        if roll == 0:
            self.network.pop(pick % len(self.network))

    @precondition(lambda self: self.session.connected)
    @rule()
    def disconnect(self) -> None:
        self.session.disconnected_from_hub(self.now)

    @precondition(lambda self: not self.session.connected)
    @rule(dt=st.sampled_from([0.0, 5.0, 0.0, 5.0, 700.0]))
    def connect(self, dt: float) -> None:
        self.now += dt
        self.handle(self.session.connected_to_hub(self.now))

    # --- the controller -----------------------------------------------------------

    @rule(dt=st.sampled_from([0.5, 3.0, 10.0, 31.0, 0.5, 3.0, 10.0, 31.0, 44_200.0]))
    def time_passes(self, dt: float) -> None:
        self.advance(dt)

    @rule(busy=st.booleans())
    def runtime_busy(self, busy: bool) -> None:
        """While busy, a finished snapshot waits for `work` slices (rules below)
        and messages keep arriving; otherwise it is built as soon as it is complete."""
        self.busy = busy

    @precondition(lambda self: self.session.has_work())
    @rule(budget=st.integers(1, 3))
    def work_slice(self, budget: int) -> None:
        self.handle(self.session.work(self.now, budget))

    @precondition(lambda self: self.session.has_work())
    @rule()
    def work_until_done(self) -> None:
        self.work_to_the_end()

    def work_to_the_end(self) -> None:
        for _ in range(10_000):
            if not self.session.has_work():
                return
            self.handle(self.session.work(self.now))
        raise AssertionError("work never finished")

    @rule(what=st.sampled_from(["command", "digest", "purge"]), roll=st.integers(0, 7))
    def full_sync_asked_locally(self, what: str, roll: int) -> None:
        if roll != 0:  # rarely, or full syncs would hide the delta rules
            return
        if what == "purge":
            self.handle(self.session.purge(self.now))
            assert (self.session.epoch, self.session.v) == (None, 0)
        else:
            self.handle(self.session.request_full(what, self.now))

    @rule()
    def converge(self) -> None:
        """Stop losing messages, deliver everything, answer every request, let the
        timers run: the session must reach the hub's latest version."""
        self.lossy = False
        if not self.session.connected:
            self.now += 1.0
            self.handle(self.session.connected_to_hub(self.now))
        for _round in range(MAX_ROUNDS):
            for _ in range(100_000):
                if self.session.has_work():
                    self.handle(self.session.work(self.now))
                elif self.network:
                    self.deliver_at(0, 3, True)
                else:
                    break
                self.check()
            else:
                raise AssertionError("the network never drained")
            s = self.session
            latest = (self.hub.epoch, self.hub.v, hub_digest(self.hub.data))
            if (s.epoch, s.v, s.digest) == latest and s.progress() == ("idle", 0, 0):
                self.lossy = True
                return
            # Timers: a stalled full sync or an open gap asks again.
            self.advance(31.0)
            if not self.network and s.progress()[0] == "idle":
                # Nothing asked: the session does not know it is behind (its last
                # delta was lost). The hub sees that in the state message. It
                # leaves a running full sync alone: retrying that is the
                # controller's job (stalled after 30 s).
                self.push_if_state_differs()
        raise AssertionError(
            f"no convergence: session {(s.epoch, s.v, s.progress())}, "
            f"hub {(self.hub.epoch, self.hub.v)}"
        )

    # --- invariants ---------------------------------------------------------------

    @invariant()
    def live_digest_is_the_hubs_digest_of_that_version(self) -> None:
        s = self.session
        if s.epoch is None:
            assert s.digest == bytes(16)
            return
        versions = self.hub.history.get(s.epoch, {})
        assert s.v in versions, f"({s.epoch}, {s.v}) never existed at the hub"
        assert s.digest == hub_digest(versions[s.v]), f"wrong data under ({s.epoch}, {s.v})"
        assert s.store.recomputed_digest() == s.digest

    @invariant()
    def never_back_to_older_data(self) -> None:
        s = self.session
        if s.epoch is None:
            return
        at = (int(s.epoch[1:]), s.v)
        same_epoch = at[0] == self.high[0]
        assert at[0] > self.high[0] or (same_epoch and at[1] >= self.high[1]), (
            f"went back from {self.high} to {at}"
        )
        self.high = at

    @invariant()
    def saved_dataset_is_the_live_one(self) -> None:
        s = self.session
        epoch, v, data = self.saved
        assert (epoch, v) == (s.epoch, s.v)
        assert hub_digest(data) == s.digest

    def check(self) -> None:
        self.live_digest_is_the_hubs_digest_of_that_version()
        self.never_back_to_older_data()
        self.saved_dataset_is_the_live_one()

    def teardown(self) -> None:
        # Every run ends converged, unless a step already failed (don't mask it).
        if hasattr(self, "session") and sys.exc_info()[1] is None:
            self.converge()


SyncMachine.TestCase.settings = settings(stateful_step_count=50)
TestSyncMachine = SyncMachine.TestCase
