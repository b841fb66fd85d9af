"""The event outbox and the debit ledger, as pure bookkeeping (PROTOCOL.md s5).

The outbox numbers every event (`seq` starts at 1, never reused, survives restarts
and purges), decides when a batch goes to the hub, and follows the hub's acks. The
rows themselves live in SQLite (`firmware.outbox_store`); the runtime carries out
the actions this module returns (`AppendEvents`, `SendEvents`, `DeleteAcked`, ...)
and reports back what the disk holds (`stats`).

The debit ledger keeps every credit debit this controller made until the hub's data
reflects it: an acked debit stops counting once our data version reaches the ack's
`v`. `pending` is what `decide` subtracts from a member's `credit`, so a balance is
right at every step: before the ack, after it, across a full sync or a purge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

BATCH_EVENTS = 500  # per `events` message (the runtime splits further by bytes)
MAX_AGE_S = 0.5  # an event waits at most this long for company before it is sent
WINDOW_EVENTS = 5000  # sent but not yet acknowledged, at most
ACK_TIMEOUT_S = 30.0  # no ack this long after a send: send again from the last ack
# An ack that moves nothing while events are in flight says the hub is there but
# has not got them (the hub acks a controller's `state` for that reason, e.g.
# after a broker restart lost a batch): send again at once. At most this often,
# so a hub that keeps acking the same seq costs one resend per interval, not a
# loop at network speed; an ack racing a batch still on its way costs one
# duplicate, which the hub ignores.
NUDGE_EVERY_S = 2.0
OUTBOX_BOUND = 1_000_000


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One event with its seq and time, to be made durable before it is reported."""

    seq: int
    time: int
    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DebitEntry:
    """A debit in the ledger: `acked_v` is None until the hub acknowledged it."""

    seq: int
    member: str
    amount: int
    acked_v: int | None = None


@dataclass(frozen=True, slots=True)
class AppendEvents:
    """Write these events (and the debits among them) durably, in one transaction."""

    events: list[LoggedEvent]
    debits: list[DebitEntry]


@dataclass(frozen=True, slots=True)
class SendEvents:
    """Read the events with `after < seq <= upto` from disk and publish them."""

    after: int
    upto: int


@dataclass(frozen=True, slots=True)
class DeleteAcked:
    """The hub holds every event up to `upto`: delete them, mark debits with `v`."""

    upto: int
    v: int


@dataclass(frozen=True, slots=True)
class ForgetDebits:
    """Acked debits with `acked_v <= v` are now in the member credit: drop them."""

    v: int


@dataclass(frozen=True, slots=True)
class FoldEvents:
    """The outbox is over its bound: fold the `count` oldest access events."""

    count: int


@dataclass(frozen=True, slots=True)
class DropEvents:
    """Purge with `events: true` gave up uploading: delete every event up to `upto`."""

    upto: int


OutboxAction = AppendEvents | SendEvents | DeleteAcked | ForgetDebits | FoldEvents | DropEvents


@dataclass(slots=True)
class Outbox:
    """Seq numbers, upload pacing, acks and the debit ledger of one controller.

    Built at boot from what the disk holds: `last_seq`, the number of events still
    in the outbox (`count`), the time of the oldest (`oldest`), the seq before the
    first one (`acked_upto`), and the unreflected debits.
    """

    last_seq: int = 0
    count: int = 0
    oldest: int | None = None
    acked_upto: int = 0
    bound: int = OUTBOX_BOUND
    debits: dict[int, DebitEntry] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    sent_upto: int = 0
    _sent_at: float | None = None
    _last_send: float = -1e18
    _fold_asked: bool = False
    _nudged_at: float = -1e18
    credit_changes: int = 0  # moves whenever `pending` does
    # Seq ranges (inclusive) that hold no event here: numbers a boot skipped, or
    # lost with a damaged file. Uploads step over them, so that a gap of
    # billions of seqs (a boot numbering from the clock) costs no batch.
    skipped: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sent_upto = self.acked_upto
        self.pending = {}
        for entry in self.debits.values():
            self.pending[entry.member] = self.pending.get(entry.member, 0) + entry.amount

    @classmethod
    def restore(
        cls,
        *,
        last_seq: int,
        count: int,
        oldest: int | None,
        first_seq: int | None,
        debits: Iterable[DebitEntry],
        bound: int = OUTBOX_BOUND,
        skipped: Iterable[tuple[int, int]] = (),
    ) -> Outbox:
        """The outbox as the disk left it at boot; `skipped`: seq ranges that
        hold no event (see the field)."""
        acked = (first_seq - 1) if first_seq is not None else last_seq
        return cls(
            last_seq=last_seq,
            count=count,
            oldest=oldest,
            acked_upto=acked,
            bound=bound,
            debits={d.seq: d for d in debits},
            skipped=sorted(skipped),
        )

    def _past_gap(self, seq: int) -> int:
        """`seq`, moved to the end of any skipped range that follows it at once."""
        moved = True
        while moved:
            moved = False
            for first, last in self.skipped:
                if first <= seq + 1 <= last:
                    seq, moved = last, True
        return seq

    # --- logging --------------------------------------------------------------------

    def log(self, type: str, body: dict[str, Any], now: float) -> LoggedEvent:
        """Number a new event."""
        self.last_seq += 1
        self.count += 1
        if self.oldest is None:
            self.oldest = int(now)
        return LoggedEvent(self.last_seq, int(now), type, body)

    def debit(self, event: LoggedEvent, member: str, amount: int) -> DebitEntry:
        """Enter a logged `debit` event in the ledger."""
        entry = DebitEntry(event.seq, member, amount)
        self.debits[event.seq] = entry
        self.pending[member] = self.pending.get(member, 0) + amount
        self.credit_changes += 1
        return entry

    def stats(self, count: int, oldest: int | None) -> list[OutboxAction]:
        """What the disk holds after a delete, fold or drop."""
        self.count, self.oldest = count, oldest
        if count <= self.bound:
            self._fold_asked = False
            return []
        if self._fold_asked:
            return []
        self._fold_asked = True
        # Fold a tenth of the bound at once, so a full outbox folds rarely.
        return [FoldEvents(count - self.bound + max(1, self.bound // 10))]

    # --- upload -----------------------------------------------------------------------

    def connected(self) -> None:
        """A new MQTT session: anything not acknowledged is sent again."""
        self.sent_upto = self.acked_upto
        self._sent_at = None
        self._last_send = -1e18

    def due(self, now: float, *, connected: bool, hurry: bool = False) -> list[OutboxAction]:
        """The next batch to send, if one is due. `hurry` sends without waiting for
        a batch to fill (a purge that uploads first)."""
        if not connected:
            return []
        if self._sent_at is not None and now - self._sent_at >= ACK_TIMEOUT_S:
            self.sent_upto = self.acked_upto  # the hub never answered: send again
            self._sent_at = None
        unsent = self.last_seq - self._past_gap(self.sent_upto)
        if unsent <= 0 or self._in_flight() >= WINDOW_EVENTS:
            return []
        full = unsent >= BATCH_EVENTS
        if not full and now - self._last_send < MAX_AGE_S and not hurry:
            return []
        after = self._past_gap(self.sent_upto)
        self.sent_upto = min(self.last_seq, self._past_gap(after + BATCH_EVENTS))
        if not full:
            # Paces the small batches only: the rest of a backlog goes right
            # after its last full batch, not MAX_AGE_S later.
            self._last_send = now
        if self._sent_at is None:
            self._sent_at = now
        return [SendEvents(after, self.sent_upto)]

    def next_deadline(self, *, connected: bool) -> float | None:
        """When `due` may next have something to send. A full batch within the
        window is due at once (one per loop step, so a backlog is sent in pieces
        that let presentations in between, while earlier ones await their acks)."""
        unsent = self.last_seq - self._past_gap(self.sent_upto)
        if not connected or unsent <= 0 or self._in_flight() >= WINDOW_EVENTS:
            return self._sent_at + ACK_TIMEOUT_S if self._sent_at is not None else None
        if unsent >= BATCH_EVENTS:
            return self._last_send  # any past time: now
        return self._last_send + MAX_AGE_S

    def _in_flight(self) -> int:
        """Seqs sent and not yet acknowledged, a skipped range right after the
        acknowledged ones not counted."""
        return self.sent_upto - self._past_gap(self.acked_upto)

    def acked(self, upto: int, v: int, now: float | None = None) -> list[OutboxAction]:
        """The hub acknowledged every event up to `upto`, reflected from `v`, at
        `now`: with more events in flight, their ack timeout counts from here (a
        hub working through a long backlog is not a silent one)."""
        upto = min(upto, self.last_seq)  # an ack for seqs we never sent is bogus
        if upto <= self.acked_upto:
            in_flight = self.sent_upto > self.acked_upto
            if in_flight and now is not None and now - self._nudged_at >= NUDGE_EVERY_S:
                # The hub is there and lacks what we sent: it was lost on the way.
                self._nudged_at = now
                self.sent_upto = self.acked_upto
                self._sent_at = None
            return []
        self.acked_upto = upto
        self.sent_upto = max(self.sent_upto, upto)
        if self.sent_upto <= upto:
            self._sent_at = None
        elif now is not None:
            self._sent_at = now
        for seq, entry in list(self.debits.items()):
            if seq <= upto and entry.acked_v is None:
                self.debits[seq] = DebitEntry(seq, entry.member, entry.amount, v)
        return [DeleteAcked(upto, v)]

    # --- credit -----------------------------------------------------------------------

    def data_version(self, v: int) -> list[OutboxAction]:
        """Our data reached version `v`: acked debits with `acked_v <= v` are now
        part of the member credit, so they stop counting."""
        reflected = [e for e in self.debits.values() if e.acked_v is not None and e.acked_v <= v]
        if not reflected:
            return []
        self.credit_changes += 1
        for entry in reflected:
            del self.debits[entry.seq]
            left = self.pending.get(entry.member, 0) - entry.amount
            if left:
                self.pending[entry.member] = left
            else:
                self.pending.pop(entry.member, None)
        return [ForgetDebits(v)]

    def effective(self, member: str, credit: int) -> int:
        """A member's effective balance: the hub's credit minus unreflected debits."""
        return credit - self.pending.get(member, 0)

    @property
    def pending_debits(self) -> Mapping[str, int]:
        """member -> cents debited here and not yet in the hub's credit."""
        return self.pending
