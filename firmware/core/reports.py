"""What the controller tells the hub about itself: the retained `state` message
(PROTOCOL.md s4) and rate-limited `system` events.

`Reports` keeps what those need beyond the data and the outbox: when the state
was last sent and whether a newer one is due, how far our clock is off the hub's,
and how many reports of each kind were held back. Pure, like the rest of the core.
"""

from __future__ import annotations

from typing import Any

from firmware.core.actions import Action, LogEvent, Publish
from firmware.core.hush import Hush, more
from firmware.core.outbox import Outbox
from firmware.core.sync import SyncSession

FW_VERSION = "0.1.0"
STATE_EVERY_S = 1.0
CLOCK_SKEW_S = 300
REPORT_EVERY_S = 60.0  # rate limit of auth_failed / error / overload events per kind
READER_OFFLINE_S = 10.0  # a reader offline this long shows in the state


class Reports:
    """The `state` message and the rate-limited `system` events of one controller."""

    def __init__(self, session: SyncSession, outbox: Outbox, boot_time: float) -> None:
        self._session = session
        self._outbox = outbox
        self._boot_time = boot_time
        self._due = False
        self._sent_at = -1e18
        self._clock_skew: float | None = None
        self._hush = Hush(REPORT_EVERY_S)
        self.disk_ok = True  # until the runtime says otherwise
        self.dropped = 0  # inputs the runtime dropped, in all
        # Every payload that did not open under our keys, reported or held back
        # by the rate limit: the metrics read it (docs/operations.md "Metrics").
        self.auth_failures = 0
        self._dropped_told = 0  # of those, the ones a report already counted
        self._readers_down: dict[str, float] = {}  # reader -> offline since
        self._now = boot_time  # of the latest `due`: the state's idea of now

    # --- the state message --------------------------------------------------------

    def state(self, online: bool = True) -> dict[str, Any]:
        """The `state` message of PROTOCOL.md s4."""
        session, outbox = self._session, self._outbox
        phase, got, of = session.progress()
        return {
            "t": "state",
            "online": online,
            "epoch": session.epoch,
            "v": session.v,
            "digest": session.digest,
            "boot": int(self._boot_time),
            "last_full": int(session.last_full) if session.last_full else None,
            "sync": {"state": phase, "got": got, "of": of},
            "outbox": outbox.count,
            "outbox_oldest": outbox.oldest,
            "clock_ok": self.clock_ok,
            "fw": FW_VERSION,
            "disk_ok": self.disk_ok,
            "dropped": self.dropped,
            "readers_offline": self.readers_offline(self._now),
        }

    @property
    def clock_ok(self) -> bool:
        """False while our clock is far off the hub's."""
        return self._clock_skew is None or abs(self._clock_skew) < CLOCK_SKEW_S

    def changed(self) -> None:
        """Something the state shows changed: send it (coalesced, see `due`)."""
        self._due = True

    def connected(self) -> None:
        """A new broker session: the retained state goes out at once."""
        self._due = True
        self._sent_at = -1e18

    def due(self, now: float) -> list[Action]:
        """The retained state, when one is due: at most one a second, the latest."""
        for since in self._readers_down.values():
            if self._now < since + READER_OFFLINE_S <= now:
                self._due = True  # an outage just became long enough to show
        self._now = now
        if not self._due or not self._session.connected:
            return []
        if now - self._sent_at < STATE_EVERY_S:
            return []
        self._due = False
        self._sent_at = now
        return [Publish("state", self.state(), retain=True)]

    def next_deadline(self) -> float | None:
        """When `due` next has a state to send, or a reader's outage reaches
        `READER_OFFLINE_S` (the state then names it)."""
        times = [since + READER_OFFLINE_S for since in self._readers_down.values()]
        times = [t for t in times if t > self._now]
        if self._due and self._session.connected:
            times.append(self._sent_at + STATE_EVERY_S)
        return min(times) if times else None

    # --- the hub's clock ------------------------------------------------------------

    def hub_time(self, hub_now: int | None, now: float) -> list[Action]:
        """Compare our clock with the hub's; a `system`/`clock` event when it goes
        wrong (schedules and bookings depend on it) and when it is right again."""
        if hub_now is None:
            return []
        was_ok = self.clock_ok
        self._clock_skew = now - hub_now
        if self.clock_ok == was_ok:
            return []
        self._due = True
        ok = self.clock_ok
        detail = f"clock is {self._clock_skew:+.0f} s off the hub's" if not ok else "clock agrees"
        return [LogEvent("system", {"what": "clock", "detail": detail})]

    # --- the controller's own health ------------------------------------------------

    def disk(self, ok: bool, detail: str) -> list[Action]:
        """The card takes our writes again, or stopped taking them: `disk_ok` in
        the state, and a `system`/`storage` event when it changes."""
        if ok == self.disk_ok:
            return []
        self.disk_ok = ok
        self._due = True
        return [LogEvent("system", {"what": "storage", "detail": detail})]

    def inputs_dropped(self, count: int, now: float) -> list[Action]:
        """The runtime dropped `count` inputs from outside (its queue was full):
        counted in the state, and a rate-limited `system`/`overload` event."""
        if count <= 0:
            return []
        self.dropped += count
        self._due = True
        if self._hush.allow("overload", now) is None:
            return []  # told within the minute: the next report has the count
        since, self._dropped_told = self.dropped - self._dropped_told, self.dropped
        detail = f"{since} inputs dropped since the last report: the queue was full"
        return [LogEvent("system", {"what": "overload", "detail": detail})]

    # --- readers with a link (OSDP) -------------------------------------------------

    def reader_link(self, reader: str, online: bool, detail: str, now: float) -> list[Action]:
        """A reader went offline (or was refused), or came back: a `system`
        `what: reader` event (at most one a minute per reader and way, the rest
        counted: a loose cable must not flood the outbox), and the state names
        it while it has been offline `READER_OFFLINE_S`."""
        if online:
            if self._readers_down.pop(reader, None) is None:
                return []
            self._due = True
        else:
            self._readers_down.setdefault(reader, now)
        key = f"link:{reader}:{'up' if online else 'down'}"
        return self.report("reader", f"reader {reader}: {detail}", now, key=key)

    def readers_offline(self, now: float) -> list[str]:
        """The readers offline for `READER_OFFLINE_S` or more at `now`, sorted."""
        down = self._readers_down.items()
        return sorted(r for r, since in down if now - since >= READER_OFFLINE_S)

    # --- rate-limited system events ------------------------------------------------

    def report(self, what: str, detail: str, now: float, *, key: str = "") -> list[Action]:
        """A `system` event, at most one per kind (`key`, default `what`) a minute;
        the rest are counted."""
        key = key or what
        if what == "auth_failed":
            self.auth_failures += 1
        held = self._hush.allow(key, now)
        if held is None:
            return []
        return [LogEvent("system", {"what": what, "detail": detail + more(held)})]
