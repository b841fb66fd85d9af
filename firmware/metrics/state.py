"""What a scrape reads from the core and the link, at the moment of the scrape.

The core is read with `EdgeContext.ask` from the scraping thread, never from the
loop's: one small tuple of numbers, the `state` report's and the auth failures.
A loop that does not answer within `ASK_TIMEOUT_S` costs the scrape those
numbers, not its answer: `alc_loop_answered` says 0 and the rest is served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from firmware.core.controller import Controller
from firmware.runtime.edge import Ask

log = logging.getLogger("alc.metrics")

# Short: a scrape must not hang on a busy loop, and Prometheus's own timeout
# (10 s by default) must never be what ends it.
ASK_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class CoreFacts:
    """The core's numbers one scrape shows (`Reports.state` and a counter)."""

    outbox: int
    outbox_oldest: float | None
    v: int
    last_full: float | None
    disk_ok: bool
    clock_ok: bool
    dropped: int
    auth_failures: int


def read_facts(controller: Controller) -> CoreFacts:
    """On the loop: the numbers, copied out (nothing of the core leaves the loop)."""
    state = controller.state()
    return CoreFacts(
        outbox=int(state["outbox"]),
        outbox_oldest=state["outbox_oldest"],
        v=int(state["v"]),
        last_full=state["last_full"],
        disk_ok=bool(state["disk_ok"]),
        clock_ok=bool(state["clock_ok"]),
        dropped=int(state["dropped"]),
        auth_failures=controller.reports.auth_failures,
    )


def _gauge(name: str, help: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help, value=value)


class StateCollector(Collector):
    """A prometheus_client collector: asks the core at each scrape."""

    def __init__(self, ask: Ask, link_up: Callable[[], bool], clock: Callable[[], float]) -> None:
        self._ask = ask
        self._link_up = link_up
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The families of one scrape (prometheus_client calls it under its registry)."""
        yield _gauge("alc_link_up", "1 while the link to the broker is up", self._link_up())
        try:
            facts = self._ask(read_facts, timeout=ASK_TIMEOUT_S)
        except TimeoutError:
            facts = None
        except Exception:
            # Our bug, not the scrape's: served without the core's numbers.
            log.exception("metrics: reading the core failed")
            facts = None
        yield _gauge(
            "alc_loop_answered",
            "1 when the loop answered this scrape (0: the core's numbers are missing)",
            facts is not None,
        )
        if facts is not None:
            yield from self._facts(facts)

    def _facts(self, f: CoreFacts) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self._clock()
        oldest_age = max(0.0, now - f.outbox_oldest) if f.outbox_oldest is not None else 0.0
        yield _gauge("alc_outbox_events", "events logged and not yet acknowledged", f.outbox)
        yield _gauge(
            "alc_outbox_oldest_age_seconds",
            "age of the oldest event in the outbox (0 when empty)",
            oldest_age,
        )
        yield _gauge("alc_data_version", "the data version v held (PROTOCOL.md s3)", f.v)
        yield _gauge(
            "alc_last_full_sync_timestamp_seconds",
            "when the last full sync finished, Unix time (0: never)",
            f.last_full or 0,
        )
        yield _gauge("alc_disk_ok", "1 while the card takes the controller's writes", f.disk_ok)
        yield _gauge("alc_clock_ok", "1 unless the clock is far off the hub's", f.clock_ok)
        yield CounterMetricFamily(
            "alc_auth_failures",
            "payloads that did not open under the controller's keys, since start",
            value=f.auth_failures,
        )
        yield CounterMetricFamily(
            "alc_inputs_dropped",
            "inputs dropped because the loop's queue was full, since start",
            value=f.dropped,
        )
