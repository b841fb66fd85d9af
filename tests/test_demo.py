"""`alc demo --once`: the narrated demo runs to its end and tells the story.

About 40 s of wall-clock time (bookings and warnings run on the real clock); it
runs in `make test` all the same, since `make demo` is the newcomer's first
command and this is the same code."""

from __future__ import annotations

import re
import threading

import pytest

from tools import demo


def test_the_demo_plays_its_story_and_stops_everything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    threads = set(threading.enumerate())
    assert demo.main(["--once"]) == 0
    out = capsys.readouterr().out
    for line in (
        "anna granted",
        "ben turned away (inactive",
        "carla turned away (insufficient_credit",
        "...4321 turned away (unknown_credential",
        "anna paid 4.00 for court2",
        "the edit arrived as a delta",
        "dan granted",
        "ctl        done: 10 records",
        "carla granted (booking",
        "what=warn why=booking",
        "warn:court1    ON",
        "what=held",
        "events the hub has not acknowledged",
        "0 events dropped",
        "Refresh kiosk screens",
        "everything stopped",
    ):
        assert line in out, line
    # Issue 7's "Done means": the demo prints the kiosk address.
    assert re.search(r"kiosk screen: open http://127\.0\.0\.1:\d+/ in a browser", out), out
    if demo.CHROMIUM.exists():  # the demo's headless wall screen
        assert "done: 1 screen reloaded and confirmed" in out
    # The events logged while the hub was away reached it once it was back.
    purged = out.index("what=purged")
    assert out.rfind("door=front what=locked by=closed", 0, purged) > out.index("hub goes away")
    leftover = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert leftover == []
