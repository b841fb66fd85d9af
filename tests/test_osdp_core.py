"""A reader's link in the core (firmware/core/reports.py): offline or refused is a
`system` event `what: reader` at once, and shows in the state's `readers_offline`
once it has lasted 10 s; back online is one more event and leaves the list."""

from __future__ import annotations

from typing import Any

from firmware.core.actions import Publish
from firmware.core.inputs import Connected, ReaderLinkChanged, Tick
from firmware.core.reports import READER_OFFLINE_S
from tests.core_rig import T0, logged, make


def states(actions: list[Any]) -> list[dict[str, Any]]:
    return [a.message for a in actions if isinstance(a, Publish) and a.suffix == "state"]


def test_an_offline_reader_is_reported_at_once_and_in_the_state_after_10_s() -> None:
    c = make()
    c.handle(Connected(), T0)
    out = c.handle(ReaderLinkChanged("front-in", False, "offline: no answer"), T0 + 1)
    assert logged(out, "system") == [
        {"what": "reader", "detail": "reader front-in: offline: no answer"}
    ]
    assert c.state()["readers_offline"] == []
    # The core wakes when the outage reaches 10 s, and the state names the reader.
    assert c.next_deadline() == T0 + 1 + READER_OFFLINE_S
    out = c.handle(Tick(), T0 + 1 + READER_OFFLINE_S)
    assert [s["readers_offline"] for s in states(out)] == [["front-in"]]
    out = c.handle(ReaderLinkChanged("front-in", True, "back online"), T0 + 20)
    assert logged(out, "system") == [{"what": "reader", "detail": "reader front-in: back online"}]
    assert [s["readers_offline"] for s in states(out)] == [[]]


def test_a_short_outage_never_shows_in_the_state() -> None:
    c = make()
    c.handle(Connected(), T0)
    c.handle(ReaderLinkChanged("front-in", False, "offline: no answer"), T0 + 1)
    out = c.handle(ReaderLinkChanged("front-in", True, "back online"), T0 + 5)
    assert all(s["readers_offline"] == [] for s in states(out))
    assert c.next_deadline() != T0 + 1 + READER_OFFLINE_S
    out = c.handle(Tick(), T0 + 1 + READER_OFFLINE_S)
    assert all(s["readers_offline"] == [] for s in states(out))


def test_a_flapping_reader_is_reported_once_a_minute_each_way() -> None:
    c = make()
    c.handle(Connected(), T0)
    refused = "refused: it answers but its secure channel failed (wrong key?)"
    steps = [(False, 0), (True, 2), (False, 4), (True, 6), (False, 61)]
    told = []
    for online, t in steps:
        detail = "back online" if online else refused
        out = c.handle(ReaderLinkChanged("front-in", online, detail), T0 + t)
        told += [b["detail"] for b in logged(out, "system")]
    assert told == [
        f"reader front-in: {refused}",
        "reader front-in: back online",
        f"reader front-in: {refused} (and 1 more since the last report)",
    ]


def test_back_online_for_a_reader_never_reported_says_nothing() -> None:
    c = make()
    assert logged(c.handle(ReaderLinkChanged("front-in", True, "back online"), T0), "system") == []
