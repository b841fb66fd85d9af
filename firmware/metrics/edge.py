"""The metrics edge: the loop's notes counted, and the page a scrape gets.

`observed` runs on the loop's thread, between a member's decision and the next:
it only bumps a counter or a histogram (prometheus_client's, each behind its own
lock: about half a microsecond a note on the development VM, docs/operations.md
"Metrics"), so the notes are counted at once rather than queued. Everything
slower (reading the core, formatting the page) happens in `render_metrics`, on the
scraping thread.

The registry is this edge's own, never prometheus_client's global one: each
runtime in a process (the test suite builds many) counts for itself.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from firmware.core import decide
from firmware.metrics.state import StateCollector
from firmware.runtime.edge import EdgeContext
from firmware.runtime.notes import Decided, Logged, Note, TimerRan

log = logging.getLogger("alc.metrics")

# Seconds: a decision takes about a millisecond, the target for a timer is 20 ms
# late at most (docs/architecture.md), and anything near a second is trouble.
BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# The decision reasons of PROTOCOL.md s5. A label value is a series for as long
# as the process lives: anything else (a later core's new code) counts as
# "other", so a label never grows without bound.
REASONS = frozenset(
    {
        decide.GRANTED,
        decide.BOOKING,
        decide.MASTER,
        decide.UNKNOWN_CREDENTIAL,
        decide.INACTIVE,
        decide.NOT_YET_VALID,
        decide.EXPIRED,
        decide.NO_ACCESS,
        decide.OUTSIDE_SCHEDULE,
        decide.DOOR_LOCKED,
        decide.INSUFFICIENT_CREDIT,
        decide.PIN_LOCKOUT,
    }
)
# One scrape reads the core at a time; another waits this long, then is told busy.
SCRAPE_WAIT_S = 5.0


class ScrapeBusy(TimeoutError):
    """Another scrape held the page for longer than `SCRAPE_WAIT_S`."""


class MetricsEdge:
    """Counts the loop's notes; `render_metrics` is the `/metrics` page."""

    topics: tuple[str, ...] = ()
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, context: EdgeContext) -> None:
        """Build the registry; `context.ask` and `context.link_up` are read at each scrape."""
        self.registry = CollectorRegistry(auto_describe=False)
        self._decisions = Counter(
            "alc_decisions",
            "access decisions by outcome, reason and where (door, light, kiosk)",
            ("granted", "reason", "target"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "alc_decision_latency_seconds",
            "from a credential's input queued to the member's decision made",
            buckets=BUCKETS_S,
            registry=self.registry,
        )
        self._lateness = Histogram(
            "alc_timer_lateness_seconds",
            "how late the core's timers ran (relocks, lights off) after their deadline",
            buckets=BUCKETS_S,
            registry=self.registry,
        )
        self._failures = Counter(
            "alc_metrics_note_failures",
            "notes the metrics edge could not count (a bug of ours; see the log)",
            registry=self.registry,
        )
        self.registry.register(StateCollector(context.ask, context.link_up, context.clock))
        # Children by label values: `labels()` looks them up under a lock each time.
        self._children: dict[tuple[str, str, str], Counter] = {}
        self._failed = 0  # notes not counted (the loop's thread only)
        self._scrape = threading.Lock()

    # --- the loop's thread: cheap, and never raises -------------------------------

    def observed(self, note: Note) -> None:
        """Count one note (see the module docstring for its cost)."""
        try:
            if isinstance(note, Decided):
                self._latency.observe(note.latency_s)
            elif isinstance(note, TimerRan):
                self._lateness.observe(note.late_s)
            elif isinstance(note, Logged):
                for event in note.events:
                    if event.type == "access":
                        self._decided(event.body)
        except Exception:
            # Never the loop's problem: counted, and told once in the log.
            self._failed += 1
            if self._failed == 1:
                log.exception("metrics: a note could not be counted")
            self._failures.inc()

    def _decided(self, body: dict[str, Any]) -> None:
        reason = body.get("reason")
        key = (
            "true" if body.get("granted") else "false",
            reason if isinstance(reason, str) and reason in REASONS else "other",
            "door" if "door" in body else "light" if "light" in body else "kiosk",
        )
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._decisions.labels(*key)
        child.inc()

    def output_switched(self, name: str, on: bool) -> None:
        """Outputs are not counted: the `door` and `light` events say more."""

    def received(self, suffix: str, payload: bytes) -> None:
        """No topics are claimed: never called."""

    def start(self) -> None:
        """Nothing to start: the page is served by the kiosk's threads."""

    def stop(self) -> None:
        """Nothing to stop: the page is served by the kiosk's threads."""

    # --- the scraping thread --------------------------------------------------------

    def render_metrics(self) -> bytes:
        """The page in the Prometheus text format (`CONTENT_TYPE_LATEST`). Asks the
        core (at most `state.ASK_TIMEOUT_S`); one scrape at a time, so a burst of
        scrapes never queues a question per connection on the loop. Raises
        `ScrapeBusy` when another scrape held it for `SCRAPE_WAIT_S`."""
        if not self._scrape.acquire(timeout=SCRAPE_WAIT_S):
            raise ScrapeBusy("another scrape is being answered")
        try:
            return generate_latest(self.registry)
        finally:
            self._scrape.release()
