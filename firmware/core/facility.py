"""The facility: the readers, doors and light circuits wired to this controller.

Ties a presentation at a reader to `decide`, the PIN lockouts (`pins.py`), the
door and light state machines and the debit ledger. Everything here returns the
controller's own plain actions: `Output` for the HAL and `LogEvent`s for the
outbox. Pure, like the rest of the core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from firmware.core.actions import FacilityAction, LogEvent
from firmware.core.circuit import CircuitWiring
from firmware.core.decide import PIN_LOCKOUT, Decision, Target
from firmware.core.doors import Doors, DoorWiring, open_schedule_check
from firmware.core.errors import RemoteError
from firmware.core.lights import Lights
from firmware.core.pins import PinAlert, PinLocks, PinRules, Place
from firmware.core.store import Store
from firmware.core.wiring import Wiring

Decider = Callable[[Target, str, str, float], Decision]

KIOSK_KEYPAD = "kiosk-screen"
"""The reader id of the kiosk screens' on-screen keypads in the access log (each
screen is a place of its own for the PIN lockouts)."""


@dataclass(frozen=True, slots=True)
class Reader:
    """What a reader serves: a door, a light, or a kiosk (check-in only)."""

    id: str
    target: Target | None  # None: a kiosk


class Facility:
    """Doors, lights and readers of one controller."""

    def __init__(
        self,
        *,
        doors: Iterable[DoorWiring] = (),
        lights: Iterable[CircuitWiring] = (),
        readers: Iterable[Reader] = (),
        now: float,
        pins: PinRules | None = None,
    ) -> None:
        """`pins`: the site's PIN budget (controller.toml `[pins]`; default 30 an
        hour, alert only)."""
        self.readers = {r.id: r for r in readers}
        self.doors = Doors(doors, now)
        self.lights = Lights(lights, now)
        # Every reader, and every kiosk screen, is a place of its own.
        self.pins = PinLocks(self.readers, pins)
        # The store and its `facility_changes` when doors and lights last
        # followed the data (the store held, not its id: an id can come again).
        self._seen: tuple[Store, int] | None = None
        # Moves with every input that may change what a door or light shows.
        self.changes = 0

    # --- inputs ---------------------------------------------------------------------

    def power_on(self) -> list[FacilityAction]:
        """Every output to its safe state, before data or network."""
        return self.doors.power_on() + self.lights.power_on()

    def presented(
        self,
        reader_id: str,
        credkind: str,
        value: str,
        now: float,
        decide: Decider,
        credit: Callable[[str], int],
    ) -> list[FacilityAction]:
        """A credential at a reader: decide, log `access`, then open or light.

        `credit(member)` is the member's effective balance (credit minus
        unreflected debits)."""
        reader = self.readers.get(reader_id)
        if reader is None:
            raise RemoteError(f"presentation at unknown reader {reader_id!r}")
        self.changes += 1
        target = reader.target
        if target is None:
            raise RemoteError(f"kiosk reader {reader_id!r} signs members in on the kiosk screens")
        alerts: list[PinAlert] = []
        place = Place.reader(reader_id)
        if credkind == "pin" and self.pins.closed_for(place, now) > 0:
            decision = Decision(False, PIN_LOCKOUT)  # not even looked up
        else:
            decision = decide(target, credkind, value, now)
            if credkind == "pin":
                # Every PIN that does not open counts, whatever the reason
                # (unknown, expired, out of hours...): else guessing finds real
                # PINs for free. The door stays shut either way.
                if decision.granted:
                    self.pins.granted(place, now)
                else:
                    alerts = self.pins.refused(place, now)
        done = self._act(reader_id, target, credkind, value, decision, now, credit)
        return done + pin_alerts(alerts)

    def kiosk_use(
        self,
        reader_id: str,
        light: str,
        credkind: str,
        value: str,
        now: float,
        decide: Decider,
        credit: Callable[[str], int],
        *,
        reasons: tuple[str, ...],
        blocks: int = 1,
    ) -> tuple[Decision, list[FacilityAction]]:
        """A member signed in at a kiosk uses light `light` (check-in or paid
        activation of `blocks` blocks) with the credential they signed in with:
        decided, logged and carried out as at a court reader, but only when the
        decision's reason is one of `reasons` (a check-in must never turn into a
        paid activation); otherwise nothing happens. No PIN lockout here: the PIN
        was checked at sign-in."""
        self.changes += 1
        target = Target.light(light)
        decision = decide(target, credkind, value, now)
        if decision.granted and decision.reason not in reasons:
            return decision, []
        done = self._act(reader_id, target, credkind, value, decision, now, credit, blocks=blocks)
        return decision, done

    def _act(
        self,
        reader_id: str,
        target: Target,
        credkind: str,
        value: str,
        decision: Decision,
        now: float,
        credit: Callable[[str], int],
        *,
        blocks: int = 1,
    ) -> list[FacilityAction]:
        actions: list[FacilityAction] = [
            LogEvent(
                "access",
                {
                    target.kind: target.id,
                    "reader": reader_id,
                    "credkind": credkind,
                    "value": value[-4:],
                    "member": decision.member,
                    "booking": decision.booking,
                    "granted": decision.granted,
                    "reason": decision.reason,
                },
            )
        ]
        if not decision.granted:
            return actions
        if target.kind == "door":
            if target.id in self.doors:
                actions += self.doors.granted(target.id, decision, now)
            return actions
        balance = credit(decision.member) if decision.member is not None else 0
        lit = self.lights.presented(target.id, decision, now, balance, blocks=blocks)
        return actions + lit

    def contact(self, door: str, open: bool, now: float) -> list[FacilityAction]:
        """A door contact changed. `RemoteError` for a door or contact not wired."""
        if door not in self.doors:
            raise RemoteError(f"contact of unknown door {door!r}")
        self.changes += 1
        return self.doors.contact(door, open, now)

    def rex(self, door: str, now: float) -> list[FacilityAction]:
        """The exit button of a door was pressed. `RemoteError` for a door or exit
        button not wired."""
        if door not in self.doors:
            raise RemoteError(f"exit button of unknown door {door!r}")
        self.changes += 1
        return self.doors.rex(door, now)

    def open_door(
        self, door: str, s: float | None, now: float, by: str = "remote"
    ) -> list[FacilityAction]:
        """The `open_door` command (raises `RemoteError` for an unknown door),
        logged with `by`."""
        if door not in self.doors:
            raise RemoteError(f"no door {door!r} on this controller")
        self.changes += 1
        return self.doors.open_door(door, s, now, by)

    def set_light(self, light: str, on: bool, s: float | None, now: float) -> list[FacilityAction]:
        """The `set_light` command (raises `RemoteError` for an unknown light)."""
        self.changes += 1
        return self.lights.set_light(light, on, s, now)

    def data_changed(self, store: Store, now: float) -> list[FacilityAction]:
        """The live data changed (a delta, a full sync, a purge): door modes and
        booking periods follow at once. Cheap when nothing they depend on changed
        (`Store.facility_changes`: a delta of members only)."""
        seen = self._seen
        if seen is not None and seen[0] is store and seen[1] == store.facility_changes:
            return []  # members only: no door mode or light period depends on them
        self._seen = (store, store.facility_changes)
        check = open_schedule_check(store)
        actions: list[FacilityAction] = []
        for door in self.doors.ids:
            actions += self.doors.data_changed(door, store.doors.get(door), check(door, now), now)
        self.changes += 1
        return actions + self.lights.refresh(store, now)

    def tick(self, store: Store, now: float) -> list[FacilityAction]:
        """Timers: relocks, held alarms, open schedules, light periods, warnings,
        the end of the PIN budget's hour."""
        doors = self.doors.tick(now, open_schedule_check(store))
        actions = doors + self.lights.tick(now)
        if actions:
            self.changes += 1
        # PIN alerts change nothing a screen shows: `changes` stays.
        return actions + pin_alerts(self.pins.tick(now))

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do."""
        times = [
            self.doors.next_deadline(),
            self.lights.next_deadline(),
            self.pins.next_deadline(),
        ]
        due = [t for t in times if t is not None]
        return min(due) if due else None


def pin_alerts(alerts: list[PinAlert]) -> list[FacilityAction]:
    """PIN lockout and budget alerts as `system` events."""
    return [LogEvent("system", {"what": a.what, "detail": a.detail}) for a in alerts]


def facility_from(wiring: Wiring, now: float, pins: PinRules | None = None) -> Facility:
    """The facility wired to this controller (`firmware.config` read it from
    controller.toml): here only what the logic needs, not the pins."""
    doors = [
        DoorWiring(d.id, d.fail, has_contact=d.contact is not None, has_rex=d.rex is not None)
        for d in wiring.doors
    ]
    lights = [CircuitWiring(c.id, warn_output=c.warn is not None) for c in wiring.lights]
    readers = []
    for r in wiring.readers:
        if r.door is not None:
            readers.append(Reader(r.id, Target.door(r.door)))
        elif r.light is not None:
            readers.append(Reader(r.id, Target.light(r.light)))
        else:
            readers.append(Reader(r.id, None))
    return Facility(doors=doors, lights=lights, readers=readers, now=now, pins=pins)
