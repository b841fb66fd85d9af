"""The sync session: keeps the live dataset in step with the hub (PROTOCOL.md s3, s7).

A pure state machine, like h11's connection: the runtime feeds it what happened
(`connected`, `delta`, `snap_page`, `current`, `tick`, ...) with the time, and it
answers with actions for the runtime to carry out (`RequestSync`, `SaveDelta`,
`SaveSnapshot`, `SyncEvent`, `SystemEvent`, `Ignored`). It never reads a clock, a
socket or a file.

Only what the hub sends in answer to our own latest request replaces the live
data: a snapshot page counts only when its `sync` is that request's `req`, and a
`current` ends that request only when it names exactly our `(epoch, v, digest)`.
Anything else (a recorded snapshot replayed on the broker, a late answer to an
older request) is ignored and counted (`Ignored`).

Two rules hold throughout:
- the live `store` is only ever replaced whole (a finished, digest-checked snapshot)
  or changed by one whole delta, so doors always decide on one exact `(epoch, v)`;
- a full sync is assembled and built aside, a slice at a time (`work`), so the
  event loop keeps deciding while it runs.

Longer than 400 lines on purpose: one state machine, whose deltas, gap requests
and full syncs share one version, one buffer and one store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeAlias

from firmware.core.errors import RemoteError
from firmware.core.messages import Current, Delta, SnapPage
from firmware.core.model import digest_bytes
from firmware.core.store import Conflict, Op, Store, StoreBuilder

GAP_RETRY_S = 10.0
EPOCH_RETRY_S = 60.0  # an epoch-mismatch delta asks for a full sync at most this often
STALL_S = 30.0
FULL_JITTER_S = 1800.0
SLICE_RECORDS = 100
RETIRE_PER_RECORD = 20  # dict entries let go of in the time one record is built
PIECE_RECORDS = 10  # records built between two looks for a waiting member
MAX_BUFFERED_DELTAS = 10_000
MAX_SNAPSHOT_RECORDS = 5_000_000
MAX_REPORTED = 20  # conflicts/rejections reported one by one; the rest are counted

EMPTY_DIGEST = digest_bytes(0)

# Requests a `current` may answer (PROTOCOL.md s3). For `command`, `purge`, `digest`
# and `stalled` a person asked, or our copy is suspect: only a snapshot will do.
CURRENT_REASONS = frozenset({"boot", "schedule", "outage", "epoch"})


@dataclass(frozen=True, slots=True)
class RequestSync:
    """Publish a `sync` request to the hub."""

    epoch: str | None
    v: int
    full: bool
    reason: str
    req: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class SaveDelta:
    """Make one applied delta durable: its ops and the new (epoch, v, digest)."""

    epoch: str
    v: int
    ops: list[Op]
    digest: bytes


@dataclass(frozen=True, slots=True)
class SaveSnapshot:
    """Replace the durable dataset with this one (empty for a purge)."""

    epoch: str | None
    v: int
    records: list[tuple[str, str, bytes]]
    digest: bytes


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """A `sync` event for the log (PROTOCOL.md s5)."""

    what: str
    reason: str
    records: int = 0
    ms: int = 0


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """A `system` event for the log: `error` or `conflict`, with a detail."""

    what: str
    detail: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A `snap` page or `current` that answers no request of ours: nothing of it
    was used. For a rate-limited `system` event; `SyncSession.ignored` counts them."""

    detail: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    """(epoch, v, digest) or sync progress changed: the retained state is stale."""


SyncAction: TypeAlias = (
    RequestSync | SaveDelta | SaveSnapshot | SyncEvent | SystemEvent | Ignored | StateChanged
)


@dataclass(frozen=True, slots=True)
class _Asked:
    """Our latest sync request: only its answer is taken."""

    req: str
    full: bool
    reason: str
    at: float


@dataclass(slots=True)
class _FullSync:
    """One full sync from request to swap."""

    reason: str
    requested_at: float
    started_at: float
    sync: str | None = None
    epoch: str = ""
    v: int = 0
    pages: int = 0
    digest: bytes = b""
    got: dict[int, list[tuple[str, str, bytes]]] = field(default_factory=dict)
    records: int = 0
    last_page_at: float = 0.0
    builder: StoreBuilder | None = None
    feed: Iterator[tuple[str, str, bytes]] | None = None
    # The records in page order, gathered slice by slice as they are built, so
    # the step that swaps the store in has no 100,000-record list to make.
    fed: list[tuple[str, str, bytes]] = field(default_factory=list)


class SyncSession:
    """Versions, gaps, full syncs and their triggers for one controller."""

    def __init__(
        self,
        store: Store,
        epoch: str | None,
        v: int,
        *,
        now: float,
        last_full: float | None = None,
        outage_s: float = 600.0,
        full_every_s: float = 43200.0,
        jitter: Callable[[], float] = lambda: 0.0,
        new_id: Callable[[], str],
    ) -> None:
        """`jitter()` returns a fraction in [0, 1) of the 30 min full-sync jitter;
        `new_id()` returns a fresh request id. Both are injected to stay pure."""
        self.store = store
        self.epoch = epoch
        self.v = v
        self.last_full = last_full
        self.outage_s = outage_s
        self.full_every_s = full_every_s
        self._jitter = jitter
        self._new_id = new_id
        self.connected = False
        self._offline_since: float | None = None
        self._booted = False
        self._full: _FullSync | None = None
        self._buffer: list[Delta] = []
        # Dicts of stores swapped out, emptied by `work` (the last one first).
        self._retired: list[dict[Any, Any]] = []
        self._gap_to: int | None = None
        self._gap_asked_at: float | None = None
        self._asked: _Asked | None = None
        self._epoch_asked_at: float | None = None
        self.ignored = 0  # snapshot pages and `current`s that answered no request of ours
        self._next_full_at = self._schedule_after(last_full if last_full is not None else now)

    # --- what the runtime reads ---------------------------------------------------

    @property
    def digest(self) -> bytes:
        """The live dataset's digest."""
        return self.store.digest

    def progress(self) -> tuple[str, int, int]:
        """`("idle", 0, 0)` or `("full", pages got, pages)` for the state message."""
        full = self._full
        if full is None:
            return ("idle", 0, 0)
        return ("full", len(full.got), full.pages)

    @property
    def full_reason(self) -> str | None:
        """Why the running full sync was started, or None when none runs."""
        return self._full.reason if self._full is not None else None

    def schedule_now(self, now: float) -> None:
        """Bring the twice-daily full sync forward to `now`: it starts at the next
        tick, as it would when due (`alc bench sync` times one this way)."""
        self._next_full_at = now

    @property
    def waiting_for(self) -> str | None:
        """The `req` of our latest sync request while its answer is still to come:
        the only `sync` a snapshot page may carry to be taken."""
        return self._asked.req if self._asked is not None else None

    def has_work(self) -> bool:
        """True while a finished snapshot is being built aside, or a replaced
        store is being let go of (call `work`)."""
        return bool(self._retired) or (self._full is not None and self._full.feed is not None)

    def _retire(self, store: Store) -> None:
        """A store swapped out: `work` empties it a slice at a time."""
        self._retired += reversed(store.retire())  # inner dicts end up last: first

    def _let_go(self, budget: int) -> None:
        """Empty up to `budget` entries of retired stores' dicts."""
        retired = self._retired
        while budget > 0 and retired:
            table = retired[-1]
            take = min(budget, len(table))
            for _ in range(take):
                table.popitem()
            budget -= take
            if not table:
                retired.pop()

    def receiving(self) -> bool:
        """True from the first page of a full sync until it is swapped in or given
        up (a stalled one is restarted after `STALL_S`, so never for long)."""
        return self._full is not None and self._full.sync is not None

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do."""
        full = self._full
        gap_open = self._gap_to is not None and self.v < self._gap_to
        # As in `tick`: the twice-daily sync waits for a running full sync or an
        # open gap; its past due time must not make the loop spin meanwhile.
        times = [self._next_full_at] if self.connected and full is None and not gap_open else []
        if full is not None and self.connected and full.feed is None:
            since = full.last_page_at if full.sync is not None else full.requested_at
            times.append(since + STALL_S)
        if self._gap_to is not None and self._gap_asked_at is not None and self.connected:
            times.append(self._gap_asked_at + GAP_RETRY_S)
        return min(times) if times else None

    # --- what happened ------------------------------------------------------------

    def connected_to_hub(self, now: float) -> list[SyncAction]:
        """The MQTT session is up. Sends the boot request, or catches up after an
        outage: a full sync when offline longer than `outage_s`, else a delta catch-up."""
        self.connected = True
        offline_since, self._offline_since = self._offline_since, None
        booting, self._booted = not self._booted, True
        if self._full is not None and self._full.feed is None:
            # The request or some pages may have been lost with the link: ask again.
            return self._start_full(self._full.reason, now)
        if booting:
            if self.epoch is None:
                return self._start_full("boot", now)
            return [self._request(False, "boot", now)]
        if offline_since is not None and now - offline_since > self.outage_s:
            return self._start_full("outage", now)
        return [self._request(False, "outage", now)]

    def disconnected_from_hub(self, now: float) -> None:
        """The MQTT session dropped; decisions go on with the data we have."""
        if self.connected:
            self._offline_since = now
        self.connected = False

    def request_full(self, reason: str, now: float) -> list[SyncAction]:
        """A full sync asked for locally: `command`, `digest` (local copy corrupt)."""
        return self._start_full(reason, now)

    def purge(self, now: float) -> list[SyncAction]:
        """Wipe the dataset from memory and disk, then fetch it again."""
        self._retire(self.store)
        self.store = Store()
        self.epoch = None
        self.v = 0
        self._buffer.clear()
        self._gap_to = None
        return [
            SaveSnapshot(None, 0, [], EMPTY_DIGEST),
            SyncEvent("purged", "purge"),
            StateChanged(),
            *self._start_full("purge", now),
        ]

    def delta(self, delta: Delta, now: float) -> list[SyncAction]:
        """A `delta` arrived on `data` (rules 1-4 of PROTOCOL.md s3)."""
        if self._full is not None:
            if len(self._buffer) >= MAX_BUFFERED_DELTAS:
                # Past the bound the oldest go; a gap request fetches them later.
                del self._buffer[0]
            self._buffer.append(delta)
            return []
        if delta.epoch != self.epoch:
            # A replayed delta of an old epoch must not force a full sync (and an
            # SD card rewrite) each time it is sent: at most one a minute.
            asked = self._epoch_asked_at
            if asked is not None and now - asked < EPOCH_RETRY_S:
                return []
            self._epoch_asked_at = now
            return self._start_full("epoch", now)
        if delta.to_v <= self.v:
            return []
        if delta.from_v != self.v:
            # from > v: a gap. from < v < to: it overlaps our version and cannot be
            # applied on it either; both are fetched again from our v.
            self._gap_to = max(self._gap_to or 0, delta.to_v)
            return self._ask_gap(now)
        try:
            conflicts = self.store.apply(delta.ops)
        except RemoteError as exc:
            # The hub sent a record we cannot use. A snapshot carries it as a
            # rejected record (counted in the digest, granting nothing), so we
            # converge instead of stalling at this version.
            return [
                SystemEvent("error", f"delta {delta.from_v}->{delta.to_v} rejected: {exc}"),
                *self._start_full("gap", now),
            ]
        self.v = delta.to_v
        if self._gap_to is not None and self.v >= self._gap_to:
            self._gap_to = None
            self._gap_asked_at = None
        actions: list[SyncAction] = [SaveDelta(delta.epoch, self.v, delta.ops, self.digest)]
        actions += _conflict_events(conflicts)
        actions.append(StateChanged())
        return actions

    def snap_page(self, page: SnapPage, now: float) -> list[SyncAction]:
        """One page of a full sync arrived on `data`. It counts only when it answers
        our latest request (`sync` is its `req`); any other is ignored."""
        asked = self._asked
        if asked is None or page.sync != asked.req:
            return self._ignore(f"snapshot page {page.page} of sync {page.sync!r}: not asked for")
        if page.epoch == self.epoch and page.v < self.v:
            return self._ignore(f"snapshot {page.sync!r} of v{page.v} is older than ours")
        full = self._full
        if full is not None and full.sync not in (None, page.sync):
            # A complete snapshot of an earlier request is being built (we asked
            # again after a short outage meanwhile): it finishes first.
            return self._ignore(f"snapshot {page.sync!r}: another one is being built")
        if full is None:
            # A `full: false` request (boot, gap, outage) the hub answered with a
            # snapshot: it no longer had the deltas.
            full = self._full = _FullSync(asked.reason, asked.at, now)
        if full.sync is None:
            full.sync, full.epoch, full.v = page.sync, page.epoch, page.v
            full.pages, full.digest = page.pages, page.digest
        elif (page.epoch, page.v, page.pages, page.digest) != (
            full.epoch,
            full.v,
            full.pages,
            full.digest,
        ):
            return [SystemEvent("error", f"snap {page.sync}: page {page.page} disagrees")]
        if page.page in full.got or full.feed is not None:
            return []  # a duplicate of a page we have
        if full.records + len(page.recs) > MAX_SNAPSHOT_RECORDS:
            # Given up: the rest of this answer is ignored, not assembled anew.
            self._full = self._asked = None
            return [SystemEvent("error", f"snap {page.sync}: more than {MAX_SNAPSHOT_RECORDS}")]
        full.got[page.page] = page.recs
        full.records += len(page.recs)
        full.last_page_at = now
        if len(full.got) == full.pages:
            full.builder = StoreBuilder(previous=self.store)
            full.feed = (r for i in range(full.pages) for r in full.got[i])
        return [StateChanged()]

    def current(self, message: Current, now: float) -> list[SyncAction]:
        """The hub says our data is exactly its own: that ends our latest request
        without rewriting anything. Ignored unless it answers that request, the
        request's reason allows it, no snapshot for it is being built, and it
        names exactly our `(epoch, v, digest)`; an ignored one leaves the request
        open (a full sync is asked again when it stalls)."""
        asked, full = self._asked, self._full
        if asked is None or message.req != asked.req:
            return self._ignore(f"current for {message.req!r}: not asked for")
        if asked.reason not in CURRENT_REASONS or (full is not None and full.sync is not None):
            return self._ignore(f"current for {message.req!r}: a snapshot is needed")
        if (message.epoch, message.v, message.digest) != (self.epoch, self.v, self.digest):
            return self._ignore(
                f"current for {message.req!r} names {message.epoch} v{message.v}, "
                f"not our {self.epoch} v{self.v} and digest"
            )
        self._asked = None
        self._gap_to = self._gap_asked_at = None
        self.last_full = now  # the digest covers every record: as good as a full sync
        self._next_full_at = self._schedule_after(now)
        actions: list[SyncAction] = []
        if full is not None:
            self._full = None
            ms = int((now - full.started_at) * 1000)
            actions.append(SyncEvent("done", full.reason, len(self.store), ms))
        actions.append(StateChanged())
        return actions + self._replay_buffer(now)

    def work(
        self,
        now: float,
        budget: int = SLICE_RECORDS,
        *,
        yield_now: Callable[[], bool] | None = None,
    ) -> list[SyncAction]:
        """Build the next slice (up to `budget` records) of a complete snapshot;
        swap it in when done. `yield_now`, asked every `PIECE_RECORDS`, ends the
        slice early when it returns True (a member is waiting for the loop)."""
        if self._retired:
            self._let_go(budget * RETIRE_PER_RECORD)
            return []
        full = self._full
        if full is None or full.feed is None or full.builder is None:
            return []
        fed = 0
        while True:
            wanted = min(PIECE_RECORDS, budget - fed)
            piece = list(islice(full.feed, wanted))
            full.builder.feed(piece)
            full.fed += piece
            fed += len(piece)
            if len(piece) < wanted or wanted == 0:
                break  # the feed ran dry: finish below
            if fed >= budget or (yield_now is not None and yield_now()):
                return []
        built = full.builder.finish()
        self._full = None
        if self._asked is not None and self._asked.req == full.sync:
            self._asked = None  # answered: later copies of its pages are ignored
        ms = int((now - full.started_at) * 1000)
        actions: list[SyncAction] = []
        if built.store.digest != full.digest:
            actions.append(SyncEvent("failed", full.reason, full.records, ms))
            actions.append(SystemEvent("error", f"snap {full.sync}: digest mismatch"))
            actions.append(StateChanged())
            return actions
        assert full.sync is not None
        self._retire(self.store)
        self.store = built.store
        self.epoch, self.v = full.epoch, full.v
        self._gap_to = None
        self.last_full = now
        self._next_full_at = self._schedule_after(now)
        records = full.fed
        actions.append(SaveSnapshot(full.epoch, full.v, records, full.digest))
        actions.append(SyncEvent("done", full.reason, len(records), ms))
        if built.rejected:
            first = built.rejected[0]
            actions.append(
                SystemEvent(
                    "error",
                    f"{len(built.rejected)} records rejected, first {first.kind} "
                    f"{first.id!r}: {first.error}",
                )
            )
        actions += _conflict_events(built.conflicts)
        actions.append(StateChanged())
        return actions + self._replay_buffer(now)

    def tick(self, now: float) -> list[SyncAction]:
        """Timers: stalled full syncs, open gaps, the twice-daily full sync."""
        if not self.connected:
            return []
        full = self._full
        if full is not None:
            if full.feed is None:
                since = full.last_page_at if full.sync is not None else full.requested_at
                if now - since >= STALL_S:
                    return self._start_full("stalled", now, keep_reason=True)
            return []
        if self._gap_to is not None and self.v < self._gap_to:
            return self._ask_gap(now)
        if now >= self._next_full_at:
            return self._start_full("schedule", now)
        return []

    # --- helpers ------------------------------------------------------------------

    def _schedule_after(self, t: float) -> float:
        return t + self.full_every_s + self._jitter() * FULL_JITTER_S

    def _request(self, full: bool, reason: str, now: float) -> RequestSync:
        """A request with a fresh `req`: from now on only its answer is taken."""
        req = self._new_id()
        self._asked = _Asked(req, full, reason, now)
        return RequestSync(self.epoch, self.v, full, reason, req, self.digest)

    def _ignore(self, detail: str) -> list[SyncAction]:
        self.ignored += 1
        return [Ignored(detail)]

    def _replay_buffer(self, now: float) -> list[SyncAction]:
        """The deltas that arrived during a full sync, on the data it ended with."""
        buffered, self._buffer = self._buffer, []
        actions: list[SyncAction] = []
        for delta in sorted(buffered, key=lambda d: d.from_v):
            if delta.epoch == self.epoch and delta.from_v >= self.v:
                actions += self.delta(delta, now)
        return actions

    def _ask_gap(self, now: float) -> list[SyncAction]:
        if self._gap_asked_at is not None and now - self._gap_asked_at < GAP_RETRY_S:
            return []
        self._gap_asked_at = now
        return [self._request(False, "gap", now)]

    def _start_full(
        self, reason: str, now: float, *, keep_reason: bool = False
    ) -> list[SyncAction]:
        old = self._full
        started = old.started_at if old is not None else now
        kept = old.reason if keep_reason and old is not None else reason
        self._full = _FullSync(kept, now, started)
        actions: list[SyncAction] = [StateChanged()]
        if old is None:
            actions.insert(0, SyncEvent("started", kept))
        if self.connected:
            actions.insert(0, self._request(True, reason, now))
        return actions


def _conflict_events(conflicts: list[Conflict]) -> list[SyncAction]:
    events: list[SyncAction] = [
        SystemEvent(
            "conflict",
            f"{c.credkind} ...{c.value[-4:]} claimed by {c.winner!r}, taken from {c.loser!r}",
        )
        for c in conflicts[:MAX_REPORTED]
    ]
    if len(conflicts) > MAX_REPORTED:
        events.append(SystemEvent("conflict", f"{len(conflicts) - MAX_REPORTED} more conflicts"))
    return events
