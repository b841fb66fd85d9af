"""The core's side of Home Assistant's commands: `LocalCommand` opens a door
logged `by: homeassistant` and switches a light; what names nothing of ours is
reported once a minute and changes nothing."""

from __future__ import annotations

from firmware.core.actions import Output
from firmware.core.decide import Target
from firmware.core.doors import DoorWiring
from firmware.core.facility import Facility, Reader
from firmware.core.inputs import LocalCommand, Tick
from firmware.core.lights import CircuitWiring
from tests.core_rig import T0, logged, make, system


def wired() -> Facility:
    return Facility(
        doors=[DoorWiring("front", "secure", has_contact=True, has_rex=False)],
        lights=[CircuitWiring("court1", warn_output=False)],
        readers=[Reader("front-in", Target.door("front"))],
        now=T0,
    )


def outputs(actions: list[object]) -> list[tuple[str, bool]]:
    return [(a.name, a.on) for a in actions if isinstance(a, Output)]


def test_open_door_unlocks_for_the_doors_unlock_s_logged_by_homeassistant() -> None:
    c = make(facility=wired())
    out = c.handle(LocalCommand("homeassistant", "open_door", "front"), T0)
    assert ("door:front", True) in outputs(out)
    assert {"door": "front", "what": "unlocked", "by": "homeassistant"} in logged(out, "door")
    # The door record's unlock_s (7 s) relocks it, as for the hub's open_door.
    later = c.handle(LocalCommand("homeassistant", "open_door", "nowhere"), T0 + 7.5)
    assert ("door:front", False) in outputs(later)


def test_set_light_switches_on_for_s_and_off() -> None:
    c = make(facility=wired())
    on = c.handle(LocalCommand("homeassistant", "set_light", "court1", on=True, s=600), T0)
    assert ("light:court1", True) in outputs(on)
    assert logged(on, "light")[0]["what"] == "on"
    off = c.handle(LocalCommand("homeassistant", "set_light", "court1", on=False), T0 + 1)
    assert ("light:court1", False) in outputs(off)


def test_what_names_nothing_of_ours_is_reported_once_a_minute_and_changes_nothing() -> None:
    c = make(facility=wired())
    c.handle(Tick(), T0)  # the first step switches every output to its state
    bad = [
        LocalCommand("homeassistant", "open_door", "back"),
        LocalCommand("homeassistant", "set_light", "court9", on=True, s=60),
        LocalCommand("homeassistant", "dance", "front"),
        LocalCommand("homeassistant", "set_light", "court1", on=True, s=None),
    ]
    first = c.handle(bad[0], T0)
    assert system(first) == ["error"] and not outputs(first)
    assert "homeassistant open_door refused" in logged(first, "system")[0]["detail"]
    for command in bad[1:]:
        out = c.handle(command, T0 + 1)
        assert not outputs(out) and system(out) == []  # counted, not logged again
    again = c.handle(bad[0], T0 + 61)
    assert "(and 3 more since the last report)" in logged(again, "system")[0]["detail"]
