"""`Hub`: the hub side of PROTOCOL.md as plain functions of (message, now).

Every method takes what happened and returns the messages to publish as
`(topic, payload)` pairs; the caller (`tools.hub.loop`) owns the MQTT link, the
clock and the thread. That keeps every rule here testable without a broker.

What the hub does:
- `update`: a new version of the data file -> one change set, v + 1 (`commit`,
  which also takes ops directly), and one `delta` to every controller (or, for
  a change too large for one message, the `sync` command to every controller
  known to be online);
- `sync` requests -> `current` when the controller already holds exactly our
  `(epoch, v, digest)` and its reason allows it (`boot`, `schedule`, `outage`,
  `epoch`); else the deltas from its version when the change log still has them
  and it did not ask for a full sync; else a paged snapshot carrying its `req`.
  A snapshot only ever answers a request: the hub never pushes one (PROTOCOL.md s3);
- `state` -> when the controller's `(epoch, v, digest)` has disagreed with the
  hub's for `settle_s` (longer than a delta takes to arrive), the missing deltas
  when it is merely behind, else the `sync` command, so that it asks for the
  snapshot itself; at most one push per controller per `push_every_s`
  (re-checked by `tick` while the disagreement lasts);
- `events` -> stored idempotently by `(controller, seq)`, answered with an `ack`;
  a batch with new `debit`s first commits one change set that lowers those
  members' `credit` (`HubDB.apply_debits`), and the ack's `v` is a version that
  holds every stored debit (docs/protocol.md, "Reference hub");
- `reply` -> logged (`alc ctl` shows replies to the user itself).

Anything that fails verification (`firmware.core.wire.unseal` with the topic as AAD and
only the keys of the controller the topic names) is dropped and logged, at most one
line per controller, topic and kind of problem every `LOG_EVERY_S`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware.core.errors import LocalError, RemoteError
from firmware.core.keyring import Keyring
from firmware.core.wire import IV_BYTES, seal, unseal
from tools.ctl import build_command
from tools.hub.changes import (
    WireOp,
    current_message,
    delta_message,
    diff,
    fits,
    paginate,
    snap_messages,
)
from tools.hub.datafile import Dataset
from tools.hub.db import Event, HubDB
from tools.hub.ledger import problem

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes]
"""A message to publish: (topic, sealed payload), QoS 1, never retained."""

PUSH_EVERY_S = 30.0
SETTLE_S = 10.0  # longer than a delta takes to reach a controller and show in its state
COMMAND_TTL_S = 120  # a `sync` command's life: a controller runs it late never
# Reasons a `current` may answer; for command, purge, digest and stalled a person
# asked, or the controller's copy is suspect: they always get the snapshot.
CURRENT_REASONS = frozenset({"boot", "schedule", "outage", "epoch"})
LOG_EVERY_S = 10.0
MAX_TEXT = 128
MAX_BATCH = 10_000
_INCOMING = ("state", "sync", "events", "reply")


@dataclass(slots=True)
class ControllerView:
    """What the hub knows of one controller."""

    state: dict[str, Any] | None = None
    last_push: float = float("-inf")
    last_seen: float | None = None
    # When the (epoch, v, digest) its state reports last changed.
    since: float = float("-inf")


@dataclass(slots=True)
class _Throttle:
    """At most one log line per key per `every` seconds; counts what it swallowed."""

    every: float = LOG_EVERY_S
    last: dict[tuple[str, ...], float] = field(default_factory=dict)
    suppressed: dict[tuple[str, ...], int] = field(default_factory=dict)

    def allow(self, key: tuple[str, ...], now: float) -> int | None:
        """None to stay quiet, else how many lines were swallowed since the last."""
        last = self.last.get(key)
        if last is not None and now - last < self.every:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return None
        self.last[key] = now
        return self.suppressed.pop(key, 0)


def subscriptions(root: str, site: str) -> list[str]:
    """The topics a hub of `site` subscribes to."""
    return [f"{root}/{site}/+/{leaf}" for leaf in _INCOMING]


class Hub:
    """The reference hub of one site: dataset, change log, events, controllers."""

    def __init__(
        self,
        db: HubDB,
        *,
        site: str,
        keys: Mapping[str, bytes | Keyring],
        root: str = "alc",
        page_size: int = 1000,
        push_every_s: float = PUSH_EVERY_S,
        settle_s: float = SETTLE_S,
        on_events: Callable[[str, list[Event]], None] | None = None,
    ) -> None:
        if page_size < 1:
            raise LocalError("page size must be at least 1")
        self.db = db
        self.site = site
        self.root = root
        self.page_size = page_size
        self.push_every_s = push_every_s
        self.settle_s = settle_s
        # When our own (epoch, v, digest) last moved: a delta is then on its way.
        self._changed_at = float("-inf")
        self.on_events = on_events
        self.controllers: dict[str, ControllerView] = {}
        self._keys: dict[str, Keyring] = {}
        self._throttle = _Throttle()
        self.set_keys(keys)

    # --- the dataset ------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """Current epoch."""
        return self.db.epoch

    @property
    def v(self) -> int:
        """Current version."""
        return self.db.v

    @property
    def digest(self) -> bytes:
        """Current dataset digest."""
        return self.db.digest

    def set_keys(self, keys: Mapping[str, bytes | Keyring]) -> None:
        """Serve exactly the controllers in `keys` (controller id -> its keys, or
        one 32-byte key: its first)."""
        self._keys = {
            c: k if isinstance(k, Keyring) else Keyring.single(c, k) for c, k in keys.items()
        }
        for controller in self._keys:
            self.controllers.setdefault(controller, ControllerView())
        for controller in list(self.controllers):
            if controller not in self._keys:
                del self.controllers[controller]

    def update(self, records: Dataset, now: float) -> list[Outgoing]:
        """Make `records` the dataset: commit the difference as one change set and
        send it. Nothing happens when nothing changed. Debited members go out
        with their credit lowered by their debits (`HubDB.apply_debits`)."""
        ops = diff(self.db.records, self.db.apply_debits(records))
        out = self._commit_as_is([ops], now) if ops else []
        self.db.settled()
        return out

    def commit(self, ops: list[WireOp], now: float) -> list[Outgoing]:
        """Commit `ops` (at least one) as one change set, v + 1, and send it: one
        `delta` to every controller, or, for a change too large for one message,
        a snapshot to every controller known to be online."""
        return self.commit_many([ops], now)

    def commit_many(self, change_sets: list[list[WireOp]], now: float) -> list[Outgoing]:
        """Commit several change sets in one database transaction (one flush to disk
        for a burst of changes), each its own version, and send them as `commit`
        would, in version order. Member puts carry the data file's body: debited
        members go out with their credit lowered (`HubDB.apply_debits_ops`)."""
        published = [self.db.apply_debits_ops(ops) for ops in change_sets]
        out = self._commit_as_is(published, now)
        self.db.settled(op[2] for ops in published for op in ops if op[1] == "member")
        return out

    def _commit_as_is(self, change_sets: list[list[WireOp]], now: float) -> list[Outgoing]:
        """`commit_many` of change sets that go out exactly as given."""
        from_v = self.db.v
        messages = [
            delta_message(self.epoch, from_v + n, from_v + n + 1, ops, int(now))
            for n, ops in enumerate(change_sets)
        ]
        replayable = [fits(m) for m in messages]
        self.db.commit_many(list(zip(change_sets, replayable, strict=True)), now=int(now))
        self._changed_at = now
        log.info("v%d -> v%d: %d change(s)", from_v, self.v, sum(len(ops) for ops in change_sets))
        out: list[Outgoing] = []
        for controller, view in self.controllers.items():
            for message, fit in zip(messages, replayable, strict=True):
                if fit:
                    out.append(self._seal(controller, "data", message))
                    view.last_push = now
                elif self._online(view):
                    # Too big for one delta: controllers that are listening are
                    # told to fetch the whole dataset (which holds every later
                    # change set too); the others will ask when they come back.
                    out += self.resync(controller, now)
                    break
        return out

    def new_epoch(self) -> str:
        """Reset history (a new epoch): every controller will take a snapshot."""
        return self.db.new_epoch()

    # --- incoming messages -----------------------------------------------------------

    def handle(
        self, topic: str, payload: bytes, now: float, *, retained: bool = False
    ) -> list[Outgoing]:
        """One message from the broker -> the messages to publish in answer."""
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != self.root or parts[1] != self.site:
            self._drop(topic, "?", "unexpected topic", now)
            return []
        controller, leaf = parts[2], parts[3]
        ring = self._keys.get(controller)
        if ring is None:
            self._drop(topic, controller, "no key for this controller", now)
            return []
        if leaf not in _INCOMING:
            self._drop(topic, controller, "not a topic a controller publishes on", now)
            return []
        if retained and leaf != "state":
            # Only `state` is retained by design; anything else retained is stale.
            return []
        try:
            # Only this controller's key: a message sealed with another
            # controller's key must not pass for this one's.
            message = unseal(ring.accepted, topic, payload)
            if message.type != leaf:
                raise RemoteError(f"a {message.type!r} message does not belong on {leaf!r}")
            view = self.controllers.setdefault(controller, ControllerView())
            view.last_seen = now
            if leaf == "state":
                return self._on_state(controller, view, message.body, now)
            if leaf == "sync":
                return self._on_sync(controller, view, message.body, now)
            if leaf == "events":
                return self._on_events(controller, message.body, now)
            self._on_reply(controller, message.body)
            return []
        except RemoteError as exc:
            self._drop(topic, controller, f"{type(exc).__name__}: {exc}", now)
            return []

    def tick(self, now: float) -> list[Outgoing]:
        """Re-check every controller whose last state disagrees with the hub (and
        publish debits a crash or a failed commit left out of the credit)."""
        out = self._reflect_debits(now)
        for controller, view in self.controllers.items():
            out += self._reconcile(controller, view, now)
        return out

    # --- state, sync -----------------------------------------------------------------

    def _on_state(
        self, controller: str, view: ControllerView, body: dict[str, Any], now: float
    ) -> list[Outgoing]:
        was_online = self._online(view)
        if view.state is None or _names(view.state) != _names(body):
            view.since = now
        view.state = body
        online = self._online(view)
        if online != was_online:
            log.info("controller %s is %s", controller, "online" if online else "offline")
        out = self._reconcile(controller, view, now)
        waiting = body.get("outbox")
        if online and type(waiting) is int and waiting > 0:
            # It holds events not acknowledged yet. Say how far we have them: if
            # a batch was lost (a broker restart before we had subscribed again),
            # an ack that moves nothing makes it send again at once rather than
            # after its 30 s ack timeout (docs/protocol.md, "Reference hub").
            ack = {"t": "ack", "upto": self.db.acked(controller), "v": self.v}
            out.append(self._seal(controller, "ack", ack))
        return out

    def _reconcile(self, controller: str, view: ControllerView, now: float) -> list[Outgoing]:
        """Deltas or the `sync` command when the controller's last state has
        disagreed with the hub for longer than a delta takes to arrive."""
        st = view.state
        if st is None or not self._online(view):
            return []
        sync = st.get("sync")
        if isinstance(sync, dict) and sync.get("state") == "full":
            return []  # a full sync is under way; its own stall timer covers failure
        epoch, v, digest = _names(st)
        if (epoch, v, digest) == (self.epoch, self.v, self.digest):
            return []
        if epoch == self.epoch and type(v) is int and v > self.v:
            # It holds a version we never had: our database went back in time.
            if self._throttle.allow(("ahead", controller), now) is not None:
                log.warning(
                    "controller %s has v%d of epoch %s, ahead of this hub (v%d): restored "
                    "from a backup? Run `alc hub --new-epoch` to resync it",
                    controller,
                    v,
                    epoch,
                    self.v,
                )
            return []
        # Our last change, or its own, may still be on its way: a delta settles it.
        settled = now - max(view.since, self._changed_at) >= self.settle_s
        if not settled or now - view.last_push < self.push_every_s:
            return []
        if epoch == self.epoch and type(v) is int and v < self.v:
            deltas = self._deltas(controller, v, now)
            if deltas is not None:
                log.info("controller %s is at v%d: sending %d delta(s)", controller, v, len(deltas))
                return deltas
        log.info(
            "controller %s disagrees (epoch %s v%s): asking it to resync", controller, epoch, v
        )
        return self.resync(controller, now)

    def resync(self, controller: str, now: float) -> list[Outgoing]:
        """The `sync` command for `controller` (PROTOCOL.md s6): it then asks for
        the full snapshot itself, and only an answer to its own request counts."""
        command = build_command("sync", now=now, ttl=COMMAND_TTL_S)
        self.controllers[controller].last_push = now
        return [self._seal(controller, "cmd", command)]

    def _on_sync(
        self, controller: str, view: ControllerView, body: dict[str, Any], now: float
    ) -> list[Outgoing]:
        epoch, v, full = body.get("epoch"), body.get("v"), body.get("full")
        req, digest, reason = body.get("req"), body.get("digest"), body.get("reason")
        if epoch is not None and not isinstance(epoch, str):
            raise RemoteError("sync: 'epoch' must be text or null")
        if type(v) is not int or v < 0:
            raise RemoteError("sync: 'v' must be an integer >= 0")
        if type(full) is not bool:
            raise RemoteError("sync: 'full' must be true or false")
        if not isinstance(req, str) or not 0 < len(req) <= MAX_TEXT:
            raise RemoteError(f"sync: 'req' must be text of 1 to {MAX_TEXT} characters")
        if not isinstance(digest, bytes) or len(digest) != 16:
            raise RemoteError("sync: 'digest' must be 16 bytes")
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_TEXT:
            raise RemoteError(f"sync: 'reason' must be text of 1 to {MAX_TEXT} characters")
        log.info(
            "controller %s asks to sync from %s v%d (full %s, %s)",
            controller,
            epoch,
            v,
            full,
            reason,
        )
        if reason in CURRENT_REASONS and (epoch, v, digest) == (self.epoch, self.v, self.digest):
            # Nothing differs: one small message instead of a rewrite of its card.
            current = current_message(req, self.epoch, self.v, self.digest, int(now))
            return [self._seal(controller, "data", current)]
        if not full and epoch == self.epoch and (v < self.v or digest == self.digest):
            deltas = self._deltas(controller, v, now)
            if deltas is not None:
                return deltas
        return self._snapshot(controller, req, now)

    def _deltas(self, controller: str, v: int, now: float) -> list[Outgoing] | None:
        changes = self.db.changes_since(v)
        if changes is None:
            return None
        out = [
            self._seal(
                controller, "data", delta_message(self.epoch, c.from_v, c.to_v, c.ops, int(now))
            )
            for c in changes
        ]
        self.controllers[controller].last_push = now
        return out

    def snapshot(self, controller: str, now: float, sync_id: str) -> list[Outgoing]:
        """Every page of a full snapshot for `controller`, in answer to its sync
        request `sync_id` (its `req`): a controller takes no other."""
        return self._snapshot(controller, sync_id, now)

    def _snapshot(self, controller: str, sync_id: str, now: float) -> list[Outgoing]:
        pages = paginate(self.db.records, self.page_size)
        messages = snap_messages(
            pages,
            sync=sync_id,
            epoch=self.epoch,
            v=self.v,
            digest=self.digest,
            now=int(now),
        )
        out = [self._seal(controller, "data", m) for m in messages]
        self.controllers[controller].last_push = now
        return out

    # --- events, replies -------------------------------------------------------------

    def _on_events(self, controller: str, body: dict[str, Any], now: float) -> list[Outgoing]:
        batch = body.get("batch")
        if not isinstance(batch, list) or len(batch) > MAX_BATCH:
            raise RemoteError(f"events: 'batch' must be a list of at most {MAX_BATCH} entries")
        events: list[Event] = []
        for entry in batch:
            event = _event(entry)
            if event is None:
                why: str | None = "not [seq, time, type, body]"
            else:
                why = problem(event.type, event.body, event.seq)
            if event is None or why is not None:
                # Not stored, so not acknowledged: the ack stops before it.
                if self._throttle.allow(("event", controller), now) is not None:
                    log.warning(
                        "controller %s: dropping a malformed event %.200r: %s",
                        controller,
                        entry,
                        why,
                    )
                continue
            events.append(event)
        new = self.db.add_events(controller, events, int(now))
        if new and self.on_events is not None:
            self.on_events(controller, new)
        # Every stored debit is in the published credit before the ack says so.
        out = self._reflect_debits(now)
        ack = {"t": "ack", "upto": self.db.acked(controller), "v": self.v}
        return [*out, self._seal(controller, "ack", ack)]

    def _reflect_debits(self, now: float) -> list[Outgoing]:
        """One change set putting the members whose published credit does not yet
        hold all their debits (usually those of the batch just stored)."""
        ops = self.db.credit_ops()
        if not ops:
            return []
        log.info("credit of %d member(s) lowered by new debits", len(ops))
        out = self._commit_as_is([ops], now)
        self.db.settled(op[2] for op in ops)
        return out

    def _on_reply(self, controller: str, body: dict[str, Any]) -> None:
        detail = body.get("detail")
        # A `status` reply carries the whole state map; the log only needs the gist.
        text = detail if isinstance(detail, str) else ""
        log.info(
            "controller %s: command %s %s %s", controller, body.get("id"), body.get("status"), text
        )

    # --- helpers ---------------------------------------------------------------------

    def _online(self, view: ControllerView) -> bool:
        return view.state is not None and view.state.get("online") is True

    def _seal(self, controller: str, leaf: str, message: dict[str, Any]) -> Outgoing:
        topic = f"{self.root}/{self.site}/{controller}/{leaf}"
        ring = self._keys[controller]
        return topic, seal(ring.send_key, ring.send_kid, topic, message, iv=os.urandom(IV_BYTES))

    def _drop(self, topic: str, controller: str, why: str, now: float) -> None:
        kind = why.split(":", 1)[0]
        swallowed = self._throttle.allow(("drop", controller, topic.rsplit("/", 1)[-1], kind), now)
        if swallowed is not None:
            more = f" ({swallowed} more dropped since)" if swallowed else ""
            log.warning("dropped a message on %s: %s%s", topic, why, more)


def _names(state: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """The `(epoch, v, digest)` a `state` message names (None where absent)."""
    return state.get("epoch"), state.get("v"), state.get("digest")


def _event(entry: Any) -> Event | None:
    """`[seq, time, type, body]` -> `Event`, or None if it is not one."""
    if not isinstance(entry, list) or len(entry) != 4:
        return None
    seq, time, type_, body = entry
    if type(seq) is not int or not 1 <= seq < 1 << 63:
        return None
    if time is not None and (type(time) is not int or abs(time) >= 1 << 62):
        return None
    if not isinstance(type_, str) or not 0 < len(type_) <= MAX_TEXT:
        return None
    return Event(seq, time, type_, body)
