"""A whole club day, 06:00 to midnight, through the real controller core in virtual time.

The controller is built the way the runtime builds it: the facility from a
controller.toml (`parse_config` + `facility_from`), the dataset from the hub's
records, a sync session connected to the hub. The clock only moves when the test
moves it: `ClubDay` calls `handle(Tick(), t)` at every `next_deadline()` up to
each scripted input, and records every output switched, every event logged
(type and body), every command reply and sync request, with the local time.
Each episode then asserts the exact rows it produced.

The club: Riverside Tennis Club (Europe/London). A front door with a door
contact, an exit button (REX), a tag reader and a Wiegand keypad. Court 1 with a
warn lamp, no check-in, 4.00 per half hour; court 2 without a warn lamp (it
flashes), check-in required, 2.50 per half hour. The day is a Wednesday in June
(British Summer Time).
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cbor2

from firmware.config import parse_config
from firmware.core.actions import Action, Output, Publish
from firmware.core.controller import Controller
from firmware.core.facility import facility_from
from firmware.core.inputs import (
    Connected,
    ContactChanged,
    Input,
    PayloadReceived,
    Presented,
    RexPressed,
    Tick,
)
from firmware.core.model import digest_bytes, digest_part
from firmware.core.outbox import AppendEvents, DeleteAcked, ForgetDebits, LoggedEvent
from firmware.core.sync import SyncSession
from hal.wiring import device_specs
from tests.builders import store_of
from tests.sealing import seal

KEY = bytes(range(32))
BASE = "alc/riverside/ctl1"
TZ = ZoneInfo("Europe/London")
DAY = date(2026, 6, 10)  # a Wednesday; no clock change that day
MIDNIGHT = datetime(DAY.year, DAY.month, DAY.day, tzinfo=TZ).timestamp()

CONFIG = """
[controller]
site = "riverside"
id = "ctl1"
data_dir = "/var/lib/alc"
key_file = "/etc/alc/ctl1.key"

[hal]
backend = "gpio"

[[doors]]
id = "front"
relay = 17
fail = "secure"
contact = 27
rex = 22

[[lights]]
id = "court1"
relay = 5
warn = 6

[[lights]]
id = "court2"
relay = 13

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/serial0"
door = "front"

[[readers]]
id = "front-keys"
kind = "wiegand"
d0 = 23
d1 = 24
door = "front"

[[readers]]
id = "court1-in"
kind = "line"
port = "/dev/ttyUSB0"
light = "court1"

[[readers]]
id = "court2-keys"
kind = "keypad"
port = "/dev/ttyUSB1"
light = "court2"

[[readers]]
id = "kiosk"
kind = "line"
port = "/dev/ttyUSB2"
kiosk = true

[[masters]]
credkind = "tag"
value = "0000c0ffee"
"""

# What each reader serves, for the `access` rows.
READERS = {
    "front-in": ("door", "front"),
    "front-keys": ("door", "front"),
    "court1-in": ("light", "court1"),
    "court2-keys": ("light", "court2"),
}

ANN = "04a1b2c3d4"  # tags as an RDM6300 reads them
BOB = "04b0b0b0b0"
GUS = "04c0c0c0c0"
CAT = "33011:00119"  # a Wiegand card
MASTER = "0000c0ffee"
GUEST_PIN = "2580"  # booking PINs
EVE_PIN = "4711"


def at(clock: str) -> float:
    """Unix time of a local "HH:MM" or "HH:MM:SS" on the club's day ("24:00" is
    the midnight that ends it). Offsets from midnight are exact: no clock change."""
    h, m, *s = (int(part) for part in clock.split(":"))
    return MIDNIGHT + h * 3600 + m * 60 + (s[0] if s else 0)


def local(t: float) -> str:
    """The inverse of `at`: "HH:MM" on the minute, else "HH:MM:SS"."""
    offset = t - MIDNIGHT
    h, rest = divmod(offset, 3600)
    m, s = divmod(rest, 60)
    if s == int(s):
        return f"{int(h):02}:{int(m):02}" + (f":{int(s):02}" if s else "")
    return f"{int(h):02}:{int(m):02}:{s:06.3f}"


def member(id: str, group: str, cred: list[str], **fields: Any) -> tuple[str, str, dict[str, Any]]:
    return ("member", id, {"name": id.title(), "groups": [group], "creds": [cred], **fields})


def booking(
    id: str, light: str, start: str, end: str, **fields: Any
) -> tuple[str, str, dict[str, Any]]:
    times = {"start": int(at(start)), "end": int(at(end))}
    return ("booking", id, {"lights": [light], **times, **fields})


RECORDS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "site",
        "site",
        {
            "tz": "Europe/London",
            "name": "Riverside Tennis Club",
            "pin_before_s": 3600,  # a booking PIN opens from an hour before the start
            "pin_after_s": 900,
            "checkin_before_s": 900,  # check-in from 15 min before the start
        },
    ),
    ("schedule", "open-hours", {"windows": [[127, 6 * 60, 23 * 60]]}),
    ("schedule", "court-hours", {"windows": [[127, 7 * 60, 22 * 60]]}),
    ("door", "front", {"name": "Front door", "unlock_s": 5, "extended_s": 30, "held_s": 30}),
    (
        "light",
        "court1",
        {
            "name": "Court 1",
            "lead_s": 300,
            "lag_s": 300,
            "warn_s": 300,
            "checkin": False,
            "price": 400,
            "block_s": 1800,
            "max_s": 3600,
            "schedule": "court-hours",
        },
    ),
    (
        "light",
        "court2",
        {
            "name": "Court 2",
            "lead_s": 300,
            "lag_s": 120,
            "warn_s": 180,
            "checkin": True,
            "price": 250,
            "block_s": 1800,
            "max_s": 7200,
            "schedule": "court-hours",
        },
    ),
    (
        "group",
        "players",
        {"doors": ["front"], "lights": ["court1", "court2"], "schedule": "open-hours"},
    ),
    ("group", "staff", {"doors": ["front"], "lights": [], "schedule": None}),
    member("ann", "players", ["tag", ANN], credit=2000),
    member("bob", "players", ["tag", BOB], credit=300),
    member("cat", "staff", ["card", CAT], extended=True),  # unlocks for extended_s
    member("eve", "players", ["tag", "04e0e0e0e0"]),
    member("fred", "players", ["tag", "04f0f0f0f0"]),
    member("gus", "players", ["tag", GUS], active=False),
    # Court 1: no check-in; a member's booking and a guest booking with a PIN.
    booking("b-ann", "court1", "10:00", "11:00", member="ann"),
    booking("b-guest", "court1", "14:00", "15:00", pin=GUEST_PIN, doors=["front"]),
    # Court 2: check-in. Eve checks in with her booking PIN, Fred never comes.
    booking("b-eve", "court2", "18:00", "19:00", member="eve", pin=EVE_PIN, doors=["front"]),
    booking("b-fred", "court2", "20:00", "21:00", member="fred"),
]

# --- the rows a day produces --------------------------------------------------------------

What = tuple[str, Any]  # ("door:front", True), ("access", {...}), ("reply", (id, status))
Row = tuple[str, What]  # (local time, what)

GRANTS = ("granted", "booking", "master")


def out(name: str, on: bool) -> What:
    """An output switched: `door:front` on = unlocked."""
    return (name, on)


def access(
    reader: str,
    value: str,
    reason: str,
    *,
    credkind: str = "tag",
    member: str | None = None,
    booking: str | None = None,
) -> What:
    kind, target = READERS[reader]
    return (
        "access",
        {
            kind: target,
            "reader": reader,
            "credkind": credkind,
            "value": value[-4:],
            "member": member,
            "booking": booking,
            "granted": reason in GRANTS,
            "reason": reason,
        },
    )


def door(what: str, by: str | None = None) -> What:
    return ("door", {"door": "front", "what": what, "by": by})


def light(
    id: str,
    what: str,
    why: str,
    *,
    member: str | None = None,
    booking: str | None = None,
    until: str | None = None,
) -> What:
    body = {
        "light": id,
        "what": what,
        "why": why,
        "member": member,
        "booking": booking,
        "until": int(at(until)) if until is not None else None,
    }
    return ("light", body)


def debit(member: str, light: str, amount: int, balance: int, seconds: int = 1800) -> What:
    body = {"member": member, "light": light, "amount": amount, "seconds": seconds}
    return ("debit", {**body, "balance": balance})


def reply(id: str, status: str) -> What:
    return ("reply", (id, status))


# --- the hub and the clock ----------------------------------------------------------------


class Hub:
    """The club's server, as far as the day needs it: the dataset and its version,
    and messages sealed for the controller's topics."""

    def __init__(self, records: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        self.bodies = {(kind, id): body for kind, id, body in records}
        self.epoch = "club-2026"
        self.v = 1
        self.requests: list[dict[str, Any]] = []  # sync requests the controller sent

    def records(self) -> list[tuple[str, str, bytes]]:
        return [(kind, id, cbor2.dumps(body)) for (kind, id), body in self.bodies.items()]

    def sealed(self, suffix: str, message: dict[str, Any]) -> PayloadReceived:
        topic = f"{BASE}/{suffix}"
        return PayloadReceived(topic, seal(KEY, b"ctl1", topic, message))

    def put(self, kind: str, id: str, now: float, **changes: Any) -> PayloadReceived:
        """Change one record: a new version, sent as a delta."""
        body = {**self.bodies[(kind, id)], **changes}
        self.bodies[(kind, id)] = body
        self.v += 1
        ops = [["put", kind, id, cbor2.dumps(body)]]
        delta = {"t": "delta", "epoch": self.epoch, "from": self.v - 1, "to": self.v, "ops": ops}
        return self.sealed("data", {**delta, "now": int(now)})

    def snapshot(self, now: float) -> PayloadReceived:
        """The whole dataset in one page, answering the last full sync request."""
        records = self.records()
        snap = {
            "t": "snap",
            "sync": self.requests[-1]["req"],
            "epoch": self.epoch,
            "v": self.v,
            "page": 0,
            "pages": 1,
            "recs": [list(r) for r in records],
            "digest": digest_bytes(sum(digest_part(*r) for r in records)),
            "now": int(now),
        }
        return self.sealed("data", snap)

    def ack(self, upto: int, v: int) -> PayloadReceived:
        return self.sealed("ack", {"t": "ack", "upto": upto, "v": v})

    def command(self, id: str, cmd: str, now: float, **args: Any) -> PayloadReceived:
        body = {"t": "cmd", "id": id, "cmd": cmd, "args": args, "iat": int(now)}
        return self.sealed("cmd", {**body, "exp": int(now) + 60})


class ClubDay:
    """The controller of the club, on a clock that only the test moves."""

    def __init__(self, start: str) -> None:
        now = at(start)
        self.hub = Hub(RECORDS)
        config = parse_config(Path("controller.toml"), tomllib.loads(CONFIG))
        device_specs(config.wiring)  # the HAL takes this wiring too
        counter = itertools.count(1)
        session = SyncSession(
            store_of(self.hub.records()),
            self.hub.epoch,
            self.hub.v,
            now=now,
            last_full=at("01:00"),  # the night's full sync: the next one is due at 13:00
            jitter=lambda: 0.0,
            new_id=lambda: f"req-{next(counter)}",
        )
        self.controller = Controller(
            controller_id="ctl1",
            key=KEY,
            base_topic=BASE,
            session=session,
            boot_time=now,
            masters=config.masters,
            facility=facility_from(config.wiring, now),
        )
        self.now = now
        self.rows: list[Row] = []
        self.logged: list[LoggedEvent] = []
        self._record(now, self.controller.booted(now, intact=True))

    # --- the clock ------------------------------------------------------------------

    def run_until(self, clock: str | float) -> None:
        """Tick at every deadline up to and including `clock`."""
        end = at(clock) if isinstance(clock, str) else clock
        for _ in range(1_000_000):
            deadline = self.controller.next_deadline()
            if deadline is None or deadline > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, deadline)
            self._record(self.now, self.controller.handle(Tick(), self.now))
        raise AssertionError(f"the controller keeps asking for ticks at {local(self.now)}")

    def handle(self, clock: str, event: Input) -> list[Action]:
        """Run the clock to `clock`, then feed one input; its actions (for checks
        beyond the recorded rows)."""
        self.run_until(clock)
        actions = self.controller.handle(event, self.now)
        self._record(self.now, actions)
        return actions

    def take(self, until: str) -> list[Row]:
        """Run the clock to `until`; the rows recorded since the last `take`."""
        self.run_until(until)
        rows, self.rows = self.rows, []
        return rows

    def _record(self, now: float, actions: list[Action]) -> None:
        while self.controller.has_work():  # a finished full sync is built aside
            actions = actions + self.controller.work(now)
        when = local(now)
        for action in actions:
            if isinstance(action, AppendEvents):
                for event in action.events:
                    assert event.time == int(now)
                    self.logged.append(event)
                    self.rows.append((when, (event.type, event.body)))
            elif isinstance(action, Output):
                self.rows.append((when, out(action.name, action.on)))
            elif isinstance(action, Publish) and action.suffix == "reply":
                self.rows.append((when, reply(action.message["id"], action.message["status"])))
            elif isinstance(action, Publish) and action.suffix == "sync":
                self.hub.requests.append(action.message)
                request = (action.message["full"], action.message["reason"])
                self.rows.append((when, ("sync request", request)))

    # --- people and the hub -----------------------------------------------------------

    def present(self, clock: str, reader: str, value: str, credkind: str = "tag") -> None:
        self.handle(clock, Presented(reader, credkind, value))

    def door_contact(self, clock: str, *, open: bool) -> None:
        self.handle(clock, ContactChanged("front", open))

    def exit_button(self, clock: str) -> None:
        self.handle(clock, RexPressed("front"))

    def command(self, clock: str, id: str, cmd: str, **args: Any) -> None:
        self.handle(clock, self.hub.command(id, cmd, at(clock), **args))

    def credit(self, member: str) -> int:
        """The member's effective credit: the hub's balance minus unreflected debits."""
        record = self.controller.store.members[member]
        return self.controller.outbox.effective(member, record.credit)


# --- the day --------------------------------------------------------------------------------


def test_a_club_day_from_opening_to_midnight() -> None:
    day = ClubDay("06:00")
    day.handle("06:00", Connected())
    day.door_contact("06:00", open=False)  # the HAL's first report: the door is shut

    # 06:00 power-on: every output safe, then data; the boot sync request.
    # 06:05 the club lets the cleaner in remotely for 20 s.
    day.command("06:05", "open-1", "open_door", door="front", s=20)
    assert day.take("06:10") == [
        ("06:00", ("system", {"what": "boot", "detail": "alc 0.1.0"})),
        ("06:00", out("door:front", False)),
        ("06:00", out("light:court1", False)),
        ("06:00", out("warn:court1", False)),
        ("06:00", out("light:court2", False)),
        ("06:00", ("sync request", (False, "boot"))),
        ("06:00", door("closed")),  # the initial state: logged, relocks nothing
        ("06:05", door("unlocked", "remote")),
        ("06:05", out("door:front", True)),
        ("06:05", reply("open-1", "done")),
        ("06:05:20", door("locked", "timer")),
        ("06:05:20", out("door:front", False)),
    ]

    # A member comes in: unlock, the door opens and closes, relock on close.
    # An inactive member is refused; a staff card (extended) unlocks for 30 s.
    day.present("06:30", "front-in", ANN)
    day.door_contact("06:30:02", open=True)
    day.door_contact("06:30:04", open=False)
    day.present("06:45", "front-in", GUS)
    day.present("07:00", "front-keys", CAT, "card")
    assert day.take("07:10") == [
        ("06:30", access("front-in", ANN, "granted", member="ann")),
        ("06:30", door("unlocked", "ann")),
        ("06:30", out("door:front", True)),
        ("06:30:02", door("opened")),
        ("06:30:04", door("closed")),
        ("06:30:04", door("locked", "closed")),
        ("06:30:04", out("door:front", False)),
        ("06:45", access("front-in", GUS, "inactive", member="gus")),
        ("07:00", access("front-keys", CAT, "granted", credkind="card", member="cat")),
        ("07:00", door("unlocked", "cat")),
        ("07:00", out("door:front", True)),
        ("07:00:30", door("locked", "timer")),
        ("07:00:30", out("door:front", False)),
    ]

    # Self-activation on court 1 with credit: 4.00 per half hour, at most an hour.
    assert day.credit("ann") == 2000
    day.present("07:30", "court1-in", ANN)
    assert day.credit("ann") == 1600
    day.present("07:56", "court1-in", ANN)  # after the warning: extends, withdraws it
    assert day.credit("ann") == 1200
    day.present("08:10", "court1-in", ANN)  # a third half hour passes max_s: refused
    assert day.credit("ann") == 1200
    day.present("09:00", "court1-in", BOB)  # 3.00 of credit for a 4.00 block
    assert day.take("09:01") == [
        ("07:30", access("court1-in", ANN, "granted", member="ann")),
        ("07:30", debit("ann", "court1", 400, balance=1600)),
        ("07:30", light("court1", "on", "activation", member="ann", until="08:00")),
        ("07:30", out("light:court1", True)),
        ("07:55", light("court1", "warn", "activation", member="ann", until="08:00")),
        ("07:55", out("warn:court1", True)),
        ("07:56", access("court1-in", ANN, "granted", member="ann")),
        ("07:56", debit("ann", "court1", 400, balance=1200)),
        ("07:56", light("court1", "extended", "activation", member="ann", until="08:30")),
        ("07:56", out("warn:court1", False)),
        ("08:10", access("court1-in", ANN, "granted", member="ann")),
        ("08:25", light("court1", "warn", "activation", member="ann", until="08:30")),
        ("08:25", out("warn:court1", True)),
        ("08:30", light("court1", "off", "activation", member="ann")),
        ("08:30", out("light:court1", False)),
        ("08:30", out("warn:court1", False)),
        ("09:00", access("court1-in", BOB, "insufficient_credit", member="bob")),
    ]
    assert day.credit("bob") == 300

    # The hub stores the events and books the debits into Ann's credit as its
    # version 2: it acks them as reflected from v 2, then sends that delta. Ann's
    # effective credit is 12.00 at every step: before the ack (20.00 - 8.00
    # pending), after it (still pending: our data is at v 1), after the delta
    # (12.00, nothing pending).
    debits = [e for e in day.logged if e.type == "debit"]
    assert [e.body["balance"] for e in debits] == [1600, 1200]
    upto = day.controller.outbox.last_seq
    acked = day.handle("09:05", day.hub.ack(upto, v=day.hub.v + 1))
    assert DeleteAcked(upto, 2) in acked
    assert day.credit("ann") == 1200
    assert day.controller.outbox.pending_debits == {"ann": 800}
    delta = day.handle("09:05:01", day.hub.put("member", "ann", at("09:05:01"), credit=1200))
    assert ForgetDebits(2) in delta
    assert day.controller.store.members["ann"].credit == 1200
    assert day.credit("ann") == 1200
    assert day.controller.outbox.pending_debits == {}

    # Ann's booking lights court 1 from start - lead_s. The club switches it off
    # remotely; Ann, still on court, presents her tag: the booking lights again,
    # warns warn_s before end + lag_s and goes off.
    day.command("10:30", "light-1", "set_light", light="court1", on=False)
    day.present("10:40", "court1-in", ANN)
    assert day.take("11:10") == [
        ("09:55", light("court1", "on", "booking", member="ann", booking="b-ann", until="11:05")),
        ("09:55", out("light:court1", True)),
        ("10:30", light("court1", "off", "remote")),
        ("10:30", out("light:court1", False)),
        ("10:30", reply("light-1", "done")),
        ("10:40", access("court1-in", ANN, "booking", member="ann", booking="b-ann")),
        ("10:40", light("court1", "on", "booking", member="ann", booking="b-ann", until="11:05")),
        ("10:40", out("light:court1", True)),
        ("11:00", light("court1", "warn", "booking", member="ann", booking="b-ann", until="11:05")),
        ("11:00", out("warn:court1", True)),
        ("11:05", light("court1", "off", "booking", member="ann", booking="b-ann")),
        ("11:05", out("light:court1", False)),
        ("11:05", out("warn:court1", False)),
    ]
    assert day.credit("ann") == 1200  # her own booking's lights are free

    # Someone leaves by the exit button. Later a door is held open: the held time
    # counts from the relock, not from the opening.
    day.exit_button("12:00")
    day.door_contact("12:00:02", open=True)
    day.door_contact("12:00:04", open=False)
    day.present("12:30", "front-in", ANN)
    day.door_contact("12:30:02", open=True)
    day.door_contact("12:32", open=False)
    assert day.take("12:40") == [
        ("12:00", door("unlocked", "rex")),
        ("12:00", out("door:front", True)),
        ("12:00:02", door("opened")),
        ("12:00:04", door("closed")),
        ("12:00:04", door("locked", "closed")),
        ("12:00:04", out("door:front", False)),
        ("12:30", access("front-in", ANN, "granted", member="ann")),
        ("12:30", door("unlocked", "ann")),
        ("12:30", out("door:front", True)),
        ("12:30:02", door("opened")),
        ("12:30:05", door("locked", "timer")),
        ("12:30:05", out("door:front", False)),
        ("12:30:35", door("held")),
        ("12:32", door("closed")),
        ("12:32", door("held_end")),
    ]

    # The guest's booking PIN: too early, then inside its window (an hour before
    # the start). The scheduled full sync runs at 13:00 and changes nothing.
    # The guest's court lights up without any check-in.
    day.present("12:50", "front-keys", GUEST_PIN, "pin")
    day.run_until("13:00")
    day.handle("13:00:03", day.hub.snapshot(at("13:00:03")))
    day.present("13:40", "front-keys", GUEST_PIN, "pin")
    assert day.take("15:10") == [
        ("12:50", access("front-keys", GUEST_PIN, "outside_schedule", credkind="pin")),
        ("13:00", ("sync", {"what": "started", "reason": "schedule", "records": 0, "ms": 0})),
        ("13:00", ("sync request", (True, "schedule"))),
        (
            "13:00:03",
            ("sync", {"what": "done", "reason": "schedule", "records": len(RECORDS), "ms": 3000}),
        ),
        (
            "13:40",
            access("front-keys", GUEST_PIN, "booking", credkind="pin", booking="b-guest"),
        ),
        ("13:40", door("unlocked", "booking")),
        ("13:40", out("door:front", True)),
        ("13:40:05", door("locked", "timer")),
        ("13:40:05", out("door:front", False)),
        ("13:55", light("court1", "on", "booking", booking="b-guest", until="15:05")),
        ("13:55", out("light:court1", True)),
        ("15:00", light("court1", "warn", "booking", booking="b-guest", until="15:05")),
        ("15:00", out("warn:court1", True)),
        ("15:05", light("court1", "off", "booking", booking="b-guest")),
        ("15:05", out("light:court1", False)),
        ("15:05", out("warn:court1", False)),
    ]
    assert day.controller.session.v == 2 and day.credit("ann") == 1200

    # Lockdown from the club's app: a delta sets the door's mode to locked. A
    # member is refused; the master tag still opens; the exit button still lets
    # people out. Then back to normal.
    day.handle("16:00", day.hub.put("door", "front", at("16:00"), mode="locked"))
    day.present("16:05", "front-in", ANN)
    day.present("16:06", "front-in", MASTER)
    day.exit_button("16:07")
    day.door_contact("16:07:02", open=True)
    day.door_contact("16:07:04", open=False)
    day.handle("16:30", day.hub.put("door", "front", at("16:30"), mode="normal"))
    assert day.take("16:31") == [
        ("16:00", door("mode", "locked")),
        ("16:05", access("front-in", ANN, "door_locked", member="ann")),
        ("16:06", access("front-in", MASTER, "master")),
        ("16:06", door("unlocked", "master")),
        ("16:06", out("door:front", True)),
        ("16:06:05", door("locked", "timer")),
        ("16:06:05", out("door:front", False)),
        ("16:07", door("unlocked", "rex")),
        ("16:07", out("door:front", True)),
        ("16:07:02", door("opened")),
        ("16:07:04", door("closed")),
        ("16:07:04", door("locked", "closed")),
        ("16:07:04", out("door:front", False)),
        ("16:30", door("mode", "normal")),
    ]

    # Court 2 needs a check-in. Eve's PIN at the court at 17:15 is a valid booking
    # PIN but too early to check in (15 min before the start): nothing lights.
    # Her PIN opens the front door; at 17:50 she checks in, and the court lights
    # at start - lead_s (17:55), flashes warn_s before end + lag_s, goes off.
    # Fred never checks in: court 2 stays dark through his booking.
    day.present("17:15", "court2-keys", EVE_PIN, "pin")
    day.present("17:40", "front-keys", EVE_PIN, "pin")
    day.present("17:50", "court2-keys", EVE_PIN, "pin")
    eve = {"member": "eve", "booking": "b-eve"}
    assert day.take("21:00") == [
        ("17:15", access("court2-keys", EVE_PIN, "booking", credkind="pin", **eve)),
        ("17:40", access("front-keys", EVE_PIN, "booking", credkind="pin", **eve)),
        ("17:40", door("unlocked", "eve")),
        ("17:40", out("door:front", True)),
        ("17:40:05", door("locked", "timer")),
        ("17:40:05", out("door:front", False)),
        ("17:50", access("court2-keys", EVE_PIN, "booking", credkind="pin", **eve)),
        ("17:55", light("court2", "on", "checkin", until="19:02", **eve)),
        ("17:55", out("light:court2", True)),
        ("18:59", light("court2", "warn", "checkin", until="19:02", **eve)),
        ("18:59", out("light:court2", False)),  # the flash: off for a second
        ("18:59:01", out("light:court2", True)),
        ("19:02", light("court2", "off", "checkin", **eve)),
        ("19:02", out("light:court2", False)),
    ]

    # Evening: Ann pays for court 1 on her reflected credit (12.00 - 4.00); the
    # club lights court 2 remotely for ten minutes (it flashes before the end).
    day.present("21:00", "court1-in", ANN)
    day.command("21:35", "light-2", "set_light", light="court2", on=True, s=600)
    assert day.take("22:00") == [
        ("21:00", access("court1-in", ANN, "granted", member="ann")),
        ("21:00", debit("ann", "court1", 400, balance=800)),
        ("21:00", light("court1", "on", "activation", member="ann", until="21:30")),
        ("21:00", out("light:court1", True)),
        ("21:25", light("court1", "warn", "activation", member="ann", until="21:30")),
        ("21:25", out("warn:court1", True)),
        ("21:30", light("court1", "off", "activation", member="ann")),
        ("21:30", out("light:court1", False)),
        ("21:30", out("warn:court1", False)),
        ("21:35", light("court2", "on", "remote", until="21:45")),
        ("21:35", out("light:court2", True)),
        ("21:35", reply("light-2", "done")),
        ("21:42", light("court2", "warn", "remote", until="21:45")),
        ("21:42", out("light:court2", False)),
        ("21:42:01", out("light:court2", True)),
        ("21:45", light("court2", "off", "remote")),
        ("21:45", out("light:court2", False)),
    ]
    assert day.credit("ann") == 800

    # Night: outside the members' hours; then the door is forced and left open.
    day.present("23:30", "front-in", ANN)
    day.door_contact("23:45", open=True)
    day.door_contact("23:46", open=False)
    assert day.take("24:00") == [
        ("23:30", access("front-in", ANN, "outside_schedule", member="ann")),
        ("23:45", door("opened")),
        ("23:45", door("forced")),
        ("23:45:30", door("held")),
        ("23:46", door("closed")),
        ("23:46", door("held_end")),
    ]

    # Every event of the day numbered 1, 2, 3, ... in the order it was logged.
    assert [e.seq for e in day.logged] == list(range(1, len(day.logged) + 1))
    assert day.controller.outbox.last_seq == len(day.logged)
