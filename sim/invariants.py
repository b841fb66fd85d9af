"""The rules a simulated run must never break, checked after every controller step.

1. `door`: no door unlocks without a reason. Every `door:<id>` output switched on
   comes with an `unlocked` event in the same step, and that event's `by` is
   backed by what happened in the step: a granted `access` event at that door
   (member, `master`, `booking`, `granted`), the door's exit button (`rex`:
   people must always get out), an `open_door` command (`remote`), or the door's
   data (`mode` unlocked, an `open_schedule`).
2. `light`: no light is on without a booking, activation, check-in or remote
   command. A `light` event `on` must be backed by the booking in the
   controller's data within its lit period (`booking`), a check-in presented for
   that booking (`checkin`), a granted presentation at that light in the same
   step (`activation`), or a `set_light` command (`remote`); a `light:<id>` or
   `warn:<id>` output may be on only while its circuit is lit (between `on` and
   `off` events).
3. `events`: every event reaches the hub exactly once. The hub never stores a
   seq twice, never stores one the controller did not log, stores what was
   logged byte for byte, and at the end holds every logged seq except the ones
   a `system` event declared dropped.
4. `credit`: no balance goes negative through self-activation: no `debit` event
   reports a negative balance, and a member debited in a step keeps an
   effective credit (the hub's credit minus pending debits) of at least 0.
5. `digest`: after every `sync` `done`, once the messages in flight have been
   delivered, the controller's `(epoch, v, digest)` is the hub's, and its
   records hash to that digest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from firmware.core.actions import Output
from firmware.core.controller import Controller
from firmware.core.outbox import LoggedEvent

RULES = ("door", "light", "events", "credit", "digest")
GRANTS = ("granted", "booking", "master")
DEFAULT_LEAD_S = DEFAULT_LAG_S = 300


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule, when, and why."""

    time: float
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class Cause:
    """What a controller step was about, as far as the rules care."""

    rex: str | None = None  # the door whose exit button was pressed
    command: dict[str, Any] | None = None  # the `cmd` message delivered


class Checker:
    """Feeds on every step of a run; collects `violations`."""

    def __init__(self, on_violation: Callable[[Violation], None] | None = None) -> None:
        self.violations: list[Violation] = []
        self._on_violation = on_violation
        self._lit: set[str] = set()
        self._on: set[str] = set()  # `light:`/`warn:` outputs switched on and not yet off
        self._stuck: set[str] = set()  # of those, the ones already reported
        self._checked_in: set[str] = set()  # bookings presented (check-in) so far
        self.logged: dict[int, LoggedEvent] = {}
        self.dropped: list[tuple[int, int]] = []
        self._stored: set[int] = set()
        self._digest_due = False

    def fail(self, now: float, rule: str, detail: str) -> None:
        violation = Violation(now, rule, detail)
        self.violations.append(violation)
        if self._on_violation is not None:
            self._on_violation(violation)

    # --- one controller step ------------------------------------------------------

    def step(
        self,
        now: float,
        cause: Cause,
        events: list[LoggedEvent],
        outputs: list[Output],
        controller: Controller,
    ) -> None:
        """Check one step: the events it logged and the outputs it switched."""
        for event in events:
            last = max(self.logged, default=0)
            if event.seq != last + 1:
                self.fail(now, "events", f"seq {event.seq} logged after {last}")
            self.logged[event.seq] = event
            if event.type == "system":
                self.dropped += [(int(a), int(b)) for a, b in event.body.get("dropped") or ()]
        access = [e.body for e in events if e.type == "access"]
        for body in access:
            if body.get("granted") and body.get("booking"):
                self._checked_in.add(str(body["booking"]))
        self._doors(now, cause, events, outputs, access, controller)
        self._lights(now, cause, events, outputs, access, controller)
        self._credit(now, events, controller)
        if any(e.type == "sync" and e.body.get("what") == "done" for e in events):
            self._digest_due = True

    def _doors(
        self,
        now: float,
        cause: Cause,
        events: list[LoggedEvent],
        outputs: list[Output],
        access: list[dict[str, Any]],
        controller: Controller,
    ) -> None:
        unlocked = {
            str(e.body["door"]): e.body.get("by")
            for e in events
            if e.type == "door" and e.body.get("what") == "unlocked"
        }
        for output in outputs:
            kind, _, door = output.name.partition(":")
            if kind == "door" and output.on and door not in unlocked:
                self.fail(now, "door", f"{output.name} switched on with no `unlocked` event")
        for door, by in unlocked.items():
            record = controller.store.doors.get(door)
            command = cause.command or {}
            args = command.get("args") or {}
            if by == "rex":
                ok = cause.rex == door
            elif by == "remote":
                ok = command.get("cmd") == "open_door" and args.get("door") == door
            elif by == "mode":
                ok = record is not None and record.mode == "unlocked"
            elif by == "schedule":
                ok = record is not None and record.open_schedule is not None
            else:
                ok = any(
                    a.get("door") == door
                    and a.get("granted")
                    and by in (a.get("member"), a.get("reason"))
                    for a in access
                )
            if not ok:
                self.fail(now, "door", f"door {door} unlocked by {by!r} with no reason for it")

    def _lights(
        self,
        now: float,
        cause: Cause,
        events: list[LoggedEvent],
        outputs: list[Output],
        access: list[dict[str, Any]],
        controller: Controller,
    ) -> None:
        store = controller.store
        for event in events:
            if event.type != "light":
                continue
            light, what, why = (
                str(event.body["light"]),
                event.body.get("what"),
                event.body.get("why"),
            )
            if what == "off":
                self._lit.discard(light)
                continue
            self._lit.add(light)
            if what != "on":
                continue
            booking_id = event.body.get("booking")
            booking = store.bookings.get(str(booking_id)) if booking_id else None
            command = cause.command or {}
            args = command.get("args") or {}
            if why == "booking" and booking is not None:
                record = store.lights.get(light)
                lead = record.lead_s if record is not None else DEFAULT_LEAD_S
                lag = record.lag_s if record is not None else DEFAULT_LAG_S
                ok = light in booking.lights and booking.start - lead <= now < booking.end + lag
            elif why == "checkin":
                ok = booking is not None and booking.id in self._checked_in
            elif why == "activation":
                ok = any(a.get("light") == light and a.get("granted") for a in access)
            elif why == "remote":
                ok = command.get("cmd") == "set_light" and args.get("light") == light
            else:
                ok = False
            if not ok:
                self.fail(now, "light", f"light {light} on for {why!r} with no reason for it")
        for output in outputs:
            kind, _, light = output.name.partition(":")
            if kind not in ("light", "warn"):
                continue
            if not output.on:
                self._on.discard(output.name)
                self._stuck.discard(output.name)
                continue
            self._on.add(output.name)
            if light not in self._lit:
                self.fail(now, "light", f"{output.name} switched on while the circuit is not lit")
                self._stuck.add(output.name)
        # A state, not only a switch: an output left on after its circuit went
        # off (its `off` event without the output following) is a light on
        # without a reason just the same. Reported once until it goes off.
        for name in sorted(self._on - self._stuck):
            if name.partition(":")[2] not in self._lit:
                self.fail(now, "light", f"{name} still on after its circuit went off")
                self._stuck.add(name)

    def _credit(self, now: float, events: list[LoggedEvent], controller: Controller) -> None:
        for event in events:
            if event.type != "debit":
                continue
            member = str(event.body["member"])
            if int(event.body["balance"]) < 0:
                self.fail(now, "credit", f"{member} debited to {event.body['balance']}")
            record = controller.store.members.get(member)
            credit = record.credit if record is not None else 0
            effective = controller.outbox.effective(member, credit)
            if effective < 0:
                self.fail(now, "credit", f"{member}'s effective credit is {effective}")

    # --- the hub side ---------------------------------------------------------------

    def stored(self, now: float, events: Iterable[Any]) -> None:
        """The hub stored these events as new (its `on_events`)."""
        for event in events:
            seq = int(event.seq)
            if seq in self._stored:
                self.fail(now, "events", f"the hub stored seq {seq} twice")
            self._stored.add(seq)
            logged = self.logged.get(seq)
            if logged is None:
                self.fail(now, "events", f"the hub stored seq {seq}, which was never logged")
            elif (logged.time, logged.type, logged.body) != (event.time, event.type, event.body):
                self.fail(now, "events", f"the hub stored seq {seq} differently from the log")

    def settled(self, now: float, controller: Controller, hub: tuple[str, int, bytes]) -> None:
        """Nothing is in flight: check the digest if a sync finished since."""
        if not self._digest_due:
            return
        self._digest_due = False
        session = controller.session
        mine = (session.epoch, session.v, session.digest)
        if mine != hub:
            self.fail(
                now,
                "digest",
                f"after sync: controller at v{mine[1]} {mine[2].hex()[:12]}, hub "
                f"at v{hub[1]} {hub[2].hex()[:12]}",
            )
        elif controller.store.recomputed_digest() != session.digest:
            self.fail(now, "digest", "the controller's records do not hash to its digest")

    def final(self, now: float, hub_seqs: Iterable[int]) -> None:
        """At the end, with the link up and the outbox drained: every logged event
        is stored at the hub, except declared drops."""
        held = set(hub_seqs)
        dropped = {s for a, b in self.dropped for s in range(a, b + 1)}
        missing = sorted(set(self.logged) - held - dropped)
        if missing:
            shown = ", ".join(str(s) for s in missing[:10]) + (" ..." if len(missing) > 10 else "")
            self.fail(now, "events", f"{len(missing)} event(s) never reached the hub: seq {shown}")
        extra = sorted(held - set(self.logged))
        if extra:
            self.fail(now, "events", f"the hub holds seqs never logged: {extra[:10]}")
