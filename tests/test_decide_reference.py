"""`decide` against a deliberately plain reference, on random small clubs.

The reference below is written from the decision rules (PROTOCOL.md s3 and s5 and
the decision order) as loops over the plain dicts the records were made from. It
shares no code with `firmware.core`: it applies the field defaults itself and works
out the site's local time with datetime/zoneinfo directly.

The random clubs are small on purpose, so ids, credentials and PINs collide:
references to records that do not exist, two members claiming one credential,
several bookings sharing a PIN, times sitting exactly on window boundaries.
The schedule rules alone get their own property, checked at every window edge
(both readings of a repeated wall-clock hour) around DST changes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.core.decide import Target, decide
from firmware.core.schedules import is_open
from firmware.core.store import Store
from tests.builders import rec, store_of

T = TypeVar("T")

Outcome = tuple[bool, str, str | None, str | None, int]
Club = dict[str, dict[str, dict[str, Any]]]  # kind -> id -> body, in record order

# --- the reference -------------------------------------------------------------------


def windows_open(schedule: dict[str, Any], zone: ZoneInfo, now: float) -> bool:
    """A schedule body's windows, read on the site's wall clock."""
    local = datetime.fromtimestamp(now, zone)
    wall_minute = local.hour * 60 + local.minute
    # A window belongs to the local date it starts on: today's, or yesterday's
    # running past midnight. Measure the wall clock from that date's midnight.
    for days_back in (0, 1):
        start_date = local.date() - timedelta(days=days_back)
        if start_date.isoformat() in schedule.get("except", []):
            continue
        minute = wall_minute + 1440 * days_back
        for days, start_min, end_min in schedule.get("windows", []):
            runs_that_day = days & (1 << start_date.weekday())
            if runs_that_day and start_min <= minute < end_min:
                return True
    return False


def reference(
    club: Club,
    target_kind: str,
    target_id: str,
    credkind: str,
    value: str,
    now: float,
    masters: Sequence[tuple[str, str]],
    pending: Mapping[str, int],
) -> set[Outcome]:
    """Every outcome the rules allow (more than one only when several bookings
    grant the same presentation and any of them may be named)."""
    site = club["site"].get("site", {})
    zone = ZoneInfo(site.get("tz", "UTC"))
    pin_before = site.get("pin_before_s", 1800)
    pin_after = site.get("pin_after_s", 900)
    members = club["member"]
    groups = club["group"]
    schedules = club["schedule"]
    doors = club["door"]
    lights = club["light"]
    bookings = club["booking"]
    at_door = target_kind == "door"

    def schedule_open(schedule_id: str | None) -> bool:
        if schedule_id is None:
            return True
        if schedule_id not in schedules:
            return False
        return windows_open(schedules[schedule_id], zone, now)

    def booking_window(booking: dict[str, Any]) -> bool:
        return booking["start"] - pin_before <= now < booking["end"] + pin_after

    def group_refusal(holder: str) -> str | None:
        listed = False
        for group_id in members[holder].get("groups", []):
            if group_id not in groups:
                continue
            group = groups[group_id]
            if target_id not in group.get("doors" if at_door else "lights", []):
                continue
            listed = True
            if schedule_open(group.get("schedule")):
                return None
        return "outside_schedule" if listed else "no_access"

    # Local master credentials come first, whatever the data says.
    if (credkind, value) in masters:
        if not at_door:
            return {(True, "master", None, None, 0)}
        if target_id in doors:
            return {(True, "master", None, None, doors[target_id].get("unlock_s", 5))}
        return {(True, "master", None, None, 5)}

    # Who holds this credential: the last member record claiming it wins.
    holder = None
    for member_id, member in members.items():
        if [credkind, value] in member.get("creds", []):
            holder = member_id

    if at_door:
        if target_id not in doors:
            return {(False, "no_access", holder, None, 0)}
        door = doors[target_id]
        mode = door.get("mode", "normal")
        if mode == "locked":
            return {(False, "door_locked", holder, None, 0)}
        unlock_s = door.get("unlock_s", 5)
        if mode == "unlocked":
            return {(True, "granted", holder, None, unlock_s)}
    else:
        if target_id not in lights:
            return {(False, "no_access", holder, None, 0)}
        unlock_s = 0

    # Booking PINs, before the member's own credential.
    pin_here = []
    pin_anywhere = False
    if credkind == "pin":
        for booking_id, booking in bookings.items():
            if booking.get("pin") != value:
                continue
            pin_anywhere = True
            if target_id in booking.get("doors" if at_door else "lights", []):
                pin_here.append(booking_id)
    open_here = {
        (True, "booking", bookings[b].get("member"), b, unlock_s)
        for b in pin_here
        if booking_window(bookings[b])
    }
    if open_here:
        return open_here

    if holder is None:
        if pin_here:
            return {(False, "outside_schedule", None, None, 0)}
        if pin_anywhere:
            return {(False, "no_access", None, None, 0)}
        return {(False, "unknown_credential", None, None, 0)}

    member = members[holder]
    if not member.get("active", True):
        return {(False, "inactive", holder, None, 0)}
    if member.get("from") is not None and now < member["from"]:
        return {(False, "not_yet_valid", holder, None, 0)}
    if member.get("until") is not None and now >= member["until"]:
        return {(False, "expired", holder, None, 0)}

    if at_door:
        refusal = group_refusal(holder)
        if refusal is not None:
            return {(False, refusal, holder, None, 0)}
        if member.get("extended", False):
            return {(True, "granted", holder, None, door.get("extended_s", 30))}
        return {(True, "granted", holder, None, unlock_s)}

    own_bookings = {
        (True, "booking", holder, booking_id, 0)
        for booking_id, booking in bookings.items()
        if booking.get("member") == holder
        and target_id in booking.get("lights", [])
        and booking_window(booking)
    }
    if own_bookings:
        return own_bookings
    refusal = group_refusal(holder)
    if refusal is not None:
        return {(False, refusal, holder, None, 0)}
    light = lights[target_id]
    if not schedule_open(light.get("schedule")):
        return {(False, "outside_schedule", holder, None, 0)}
    if member.get("credit", 0) - pending.get(holder, 0) < light.get("price", 0):
        return {(False, "insufficient_credit", holder, None, 0)}
    return {(True, "granted", holder, None, 0)}


# --- random clubs ----------------------------------------------------------------------

# Pools of ids: records are made for some of them, so references to the others miss.
DOOR_IDS = ["d0", "d1", "d2", "d3"]
LIGHT_IDS = ["l0", "l1", "l2"]
GROUP_IDS = ["g0", "g1", "g2", "g3"]
SCHEDULE_IDS = ["s0", "s1", "s2"]
MEMBER_IDS = ["m0", "m1", "m2", "m3", "m4", "m5"]
BOOKING_IDS = ["b0", "b1", "b2", "b3"]
VALUES = {
    "tag": ["t0", "t1", "t2", "t3"],
    "card": ["t0", "c1"],
    "pin": ["1010", "1111", "1212", "1313"],
}
ZONES = ["UTC", "Europe/London", "Pacific/Auckland", "America/New_York"]
# Days around DST changes (and one ordinary day), at a whole UTC hour: every zone
# here is a whole number of hours from UTC, so half-hour steps hit window edges.
BASES = [
    datetime(2024, 3, 31, 1, tzinfo=UTC),  # London spring forward
    datetime(2024, 10, 27, 1, tzinfo=UTC),  # London fall back
    datetime(2024, 4, 6, 14, tzinfo=UTC),  # Auckland fall back
    datetime(2024, 9, 28, 14, tzinfo=UTC),  # Auckland spring forward
    datetime(2024, 3, 10, 7, tzinfo=UTC),  # New York spring forward
    datetime(2024, 11, 3, 6, tzinfo=UTC),  # New York fall back
    datetime(2024, 6, 12, 12, tzinfo=UTC),
]
HALF_HOUR = 1800
SPAN = 96  # half hours either side of the base: two days


class Pick:
    """Random choices, from hypothesis (`draw`) or from a seeded `random.Random`."""

    def __init__(
        self, draw: Callable[[st.SearchStrategy[Any]], Any] | None, rng: random.Random | None = None
    ):
        self.draw = draw
        self.rng = rng

    def one(self, options: Sequence[T]) -> T:
        if self.draw is not None:
            return self.draw(st.sampled_from(options))
        assert self.rng is not None
        return self.rng.choice(options)

    def integer(self, low: int, high: int) -> int:
        if self.draw is not None:
            return self.draw(st.integers(low, high))
        assert self.rng is not None
        return self.rng.randint(low, high)

    def maybe(self, chance: float = 0.5) -> bool:
        if self.draw is not None:
            return self.integer(0, 99) < chance * 100
        assert self.rng is not None
        return self.rng.random() < chance

    def some(self, pool: Sequence[T], chance: float = 0.4) -> list[T]:
        return [x for x in pool if self.maybe(chance)]


@dataclass
class Scenario:
    club: Club
    records: list[tuple[str, str, bytes]]
    base: int
    interesting: list[int] = field(default_factory=list)


def make_schedule(pick: Pick, base: int, max_windows: int = 3) -> dict[str, Any]:
    """Windows mostly on half hours, some past midnight; closed days near `base`."""
    windows = []
    for _ in range(pick.integer(0, max_windows)):
        start = pick.integer(0, 47) * 30 if pick.maybe(0.8) else pick.integer(0, 1439)
        length = pick.integer(1, 48) * 30 if pick.maybe(0.8) else pick.integer(1, 1440)
        windows.append([pick.integer(1, 127), start, start + length])
    schedule: dict[str, Any] = {"windows": windows}
    if pick.maybe(0.4):
        base_day = datetime.fromtimestamp(base, UTC).date()
        schedule["except"] = [
            (base_day + timedelta(days=pick.integer(-3, 3))).isoformat()
            for _ in range(pick.integer(1, 2))
        ]
    return schedule


def make_club(pick: Pick) -> Scenario:
    base = int(pick.one(BASES).timestamp())
    interesting: list[int] = []

    def time_near() -> int:
        return base + pick.integer(-SPAN, SPAN) * HALF_HOUR

    def ref(pool: Sequence[str]) -> str | None:
        return pick.one([None, *pool, "missing"])

    bodies: list[tuple[str, str, dict[str, Any]]] = []
    site: dict[str, Any] = {}
    if pick.maybe(0.8):
        if pick.maybe(0.9):
            site["tz"] = pick.one(ZONES)
        if pick.maybe():
            site["pin_before_s"] = pick.one([0, 600, 1800, 3600])
        if pick.maybe():
            site["pin_after_s"] = pick.one([0, 300, 900, 3600])
        bodies.append(("site", "site", site))
    for sid in pick.some(SCHEDULE_IDS, 0.7):
        bodies.append(("schedule", sid, make_schedule(pick, base)))
    for did in pick.some(DOOR_IDS[:3], 0.8):
        door: dict[str, Any] = {}
        if pick.maybe():
            door["unlock_s"] = pick.integer(1, 9)
        if pick.maybe():
            door["extended_s"] = pick.integer(10, 60)
        if pick.maybe(0.3):
            door["mode"] = pick.one(["normal", "locked", "unlocked"])
        if pick.maybe(0.1):
            door["open_schedule"] = ref(SCHEDULE_IDS)
        bodies.append(("door", did, door))
    for lid in pick.some(LIGHT_IDS[:2], 0.8):
        light: dict[str, Any] = {}
        if pick.maybe():
            light["price"] = pick.one([0, 50, 100, 200])
        if pick.maybe():
            light["schedule"] = ref(SCHEDULE_IDS)
        bodies.append(("light", lid, light))
    for gid in pick.some(GROUP_IDS[:3], 0.8):
        group: dict[str, Any] = {"doors": pick.some(DOOR_IDS), "lights": pick.some(LIGHT_IDS)}
        if pick.maybe(0.7):
            group["schedule"] = ref(SCHEDULE_IDS)
        bodies.append(("group", gid, group))
    for mid in pick.some(MEMBER_IDS[:5], 0.8):
        member: dict[str, Any] = {
            "groups": pick.some(GROUP_IDS),
            "creds": [[kind, pick.one(VALUES[kind])] for kind in pick.some(list(VALUES) * 2, 0.3)],
        }
        if pick.maybe(0.3):
            member["active"] = pick.maybe(0.7)
        if pick.maybe(0.3):
            member["from"] = time_near() + pick.one([0, 0, 1, -1])
            interesting.append(member["from"])
        elif pick.maybe(0.1):
            member["from"] = None  # null: open
        if pick.maybe(0.3):
            member["until"] = time_near() + pick.one([0, 0, 1, -1])
            interesting.append(member["until"])
        elif pick.maybe(0.1):
            member["until"] = None
        if pick.maybe(0.6):
            member["credit"] = pick.one([-100, 0, 50, 100, 199, 200, 500])
        if pick.maybe(0.3):
            member["extended"] = pick.maybe()
        bodies.append(("member", mid, member))
    for bid in pick.some(BOOKING_IDS[:3], 0.7):
        start = time_near()
        end = start + pick.integer(1, 6) * HALF_HOUR
        # Where its PIN window opens and closes (the generator knows the defaults).
        interesting.append(start - site.get("pin_before_s", 1800))
        interesting.append(end + site.get("pin_after_s", 900))
        booking: dict[str, Any] = {
            "lights": pick.some(LIGHT_IDS),
            "doors": pick.some(DOOR_IDS),
            "start": start,
            "end": end,
        }
        if pick.maybe(0.7):
            booking["member"] = ref(MEMBER_IDS)
        if pick.maybe(0.7):
            booking["pin"] = pick.one(VALUES["pin"])
        bodies.append(("booking", bid, booking))

    # Record order matters only among members (a later claim on a credential wins);
    # shuffle it all so nothing else may depend on it either.
    order = list(range(len(bodies)))
    for i in range(len(order) - 1, 0, -1):
        j = pick.integer(0, i)
        order[i], order[j] = order[j], order[i]
    club: Club = {
        k: {} for k in ("site", "schedule", "door", "light", "group", "member", "booking")
    }
    records = []
    for i in order:
        kind, rid, body = bodies[i]
        club[kind][rid] = body
        records.append((kind, rid, rec(**body)))
    return Scenario(club, records, base, interesting)


@dataclass(frozen=True)
class Presentation:
    target_kind: str
    target_id: str
    credkind: str
    value: str
    now: float
    masters: tuple[tuple[str, str], ...]
    pending: dict[str, int]


def make_presentation(pick: Pick, scenario: Scenario) -> Presentation:
    target_kind = pick.one(["door", "light"])
    target_id = pick.one(DOOR_IDS if target_kind == "door" else LIGHT_IDS)
    credkind = pick.one(list(VALUES))
    value = pick.one([*VALUES[credkind], "99"])
    now: float
    if scenario.interesting and pick.maybe(0.3):
        # Right on (or a second either side of) a member's or booking's boundary.
        now = pick.one(scenario.interesting) + pick.one([0, 0, -1, 1])
    else:
        # On a half hour (where windows start and end), a second or a minute off, or
        # anywhere in between.
        now = scenario.base + pick.integer(-SPAN, SPAN) * HALF_HOUR
        now += pick.one([0, 0, -1, 1, 59, 60, 899, 900, 0.5, pick.integer(0, 1799)])
    masters: tuple[tuple[str, str], ...] = (("card", "master"),)
    if pick.maybe(0.1):
        masters += ((credkind, value),)
    pending = {m: pick.one([1, 50, 100, 300]) for m in pick.some(MEMBER_IDS, 0.2)}
    return Presentation(target_kind, target_id, credkind, value, now, masters, pending)


def check(store: Store, scenario: Scenario, p: Presentation) -> Outcome:
    target = Target.door(p.target_id) if p.target_kind == "door" else Target.light(p.target_id)
    got = decide(
        store, target, p.credkind, p.value, p.now, masters=p.masters, pending_debits=p.pending
    )
    outcome: Outcome = (got.granted, got.reason, got.member, got.booking, got.unlock_s)
    allowed = reference(
        scenario.club, p.target_kind, p.target_id, p.credkind, p.value, p.now, p.masters, p.pending
    )
    assert outcome in allowed, (
        f"decide gave {outcome}, the rules allow {sorted(allowed, key=repr)}\n"
        f"presentation: {p}\nlocal time: {local_time(scenario, p.now)}\n"
        f"club: {scenario.club}"
    )
    return outcome


def local_time(scenario: Scenario, now: float) -> str:
    zone = ZoneInfo(scenario.club["site"].get("site", {}).get("tz", "UTC"))
    return datetime.fromtimestamp(now, zone).strftime("%a %Y-%m-%d %H:%M:%S %Z")


PRESENTATIONS_PER_CLUB = 40
# Drawing through hypothesis costs far more than deciding; each club gets a few
# presentations hypothesis can shrink, and many more from a seed it draws.
DRAWN_PER_CLUB = 8
SEEDED_PER_CLUB = 120


@st.composite
def scenarios(
    draw: Callable[[st.SearchStrategy[Any]], Any],
) -> tuple[Scenario, list[Presentation], int]:
    pick = Pick(draw)
    scenario = make_club(pick)
    drawn = [make_presentation(pick, scenario) for _ in range(DRAWN_PER_CLUB)]
    return scenario, drawn, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=800)
@given(scenarios())
def test_decide_matches_reference(case: tuple[Scenario, list[Presentation], int]) -> None:
    scenario, drawn, seed = case
    store = store_of(scenario.records)
    for p in drawn:
        check(store, scenario, p)
    seeded = Pick(None, random.Random(seed))
    for _ in range(SEEDED_PER_CLUB):
        check(store, scenario, make_presentation(seeded, scenario))


def window_edges(schedule: dict[str, Any], zone: ZoneInfo, base: int) -> list[float]:
    """Every instant a window of `schedule` starts or ends on the local days around
    `base` (both readings of a repeated wall-clock time), and a second either side."""
    edges: list[float] = []
    first = datetime.fromtimestamp(base, zone).date() - timedelta(days=3)
    for day in range(7):
        midnight = datetime.combine(first + timedelta(days=day), datetime.min.time())
        for _days, start_min, end_min in schedule["windows"]:
            for minute in (start_min, end_min):
                wall = midnight + timedelta(minutes=minute)
                for fold in (0, 1):
                    t = wall.replace(tzinfo=zone, fold=fold).timestamp()
                    edges += [t - 1, t, t + 1]
    return edges


@st.composite
def schedule_cases(
    draw: Callable[[st.SearchStrategy[Any]], Any],
) -> tuple[str, int, dict[str, Any], int]:
    pick = Pick(draw)
    base = int(pick.one(BASES).timestamp())
    return pick.one(ZONES), base, make_schedule(pick, base, 4), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=1000)
@given(schedule_cases())
def test_is_open_matches_reference(case: tuple[str, int, dict[str, Any], int]) -> None:
    """The schedule rules alone, at every window edge around a DST change."""
    tz, base, body, seed = case
    zone = ZoneInfo(tz)
    schedule = store_of([("schedule", "s", rec(**body))]).schedules["s"]
    rng = random.Random(seed)
    instants = window_edges(body, zone, base)
    instants += [base + rng.randint(-3 * 86400, 3 * 86400) for _ in range(100)]
    for now in instants:
        expected = windows_open(body, zone, now)
        assert is_open(schedule, zone, now) == expected, (
            f"{tz} {datetime.fromtimestamp(now, zone).isoformat()}: expected open={expected}"
        )


def test_random_clubs_reach_every_reason() -> None:
    """The same comparison on seeded clubs, which also shows the random clubs reach
    every reason code (so the property above is not vacuous)."""
    rng = random.Random(20240612)
    seen: Counter[str] = Counter()
    for _ in range(300):
        pick = Pick(None, rng)
        scenario = make_club(pick)
        store = store_of(scenario.records)
        for _ in range(PRESENTATIONS_PER_CLUB):
            seen[check(store, scenario, make_presentation(pick, scenario))[1]] += 1
    assert set(seen) == {
        "granted",
        "booking",
        "master",
        "unknown_credential",
        "inactive",
        "not_yet_valid",
        "expired",
        "no_access",
        "outside_schedule",
        "door_locked",
        "insufficient_credit",
    }, seen


def test_reference_schedule_rules_on_fixed_instants() -> None:
    """Spot-check the reference itself, so a wrong reference cannot agree with a
    wrong `decide` unnoticed: a Saturday 23:00 .. 01:30 window in London across the
    fall-back night (Sun 27 Oct 2024), seen through a light's own schedule."""
    club: Club = {
        "site": {"site": {"tz": "Europe/London"}},
        "schedule": {"s": {"windows": [[32, 23 * 60, 25 * 60 + 30]]}},  # 32: Saturday
        "door": {},
        "light": {"l": {"schedule": "s"}},
        "group": {"g": {"lights": ["l"]}},
        "member": {"m": {"groups": ["g"], "creds": [["tag", "x"]]}},
        "booking": {},
    }

    def at(utc: str) -> set[Outcome]:
        now = datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp()
        return reference(club, "light", "l", "tag", "x", now, (), {})

    yes = {(True, "granted", "m", None, 0)}
    no = {(False, "outside_schedule", "m", None, 0)}
    assert at("2024-10-26 21:59:59") == no  # Sat 22:59:59 BST
    assert at("2024-10-26 22:00:00") == yes  # Sat 23:00 BST
    assert at("2024-10-27 00:29:59") == yes  # Sun 01:29:59 BST
    assert at("2024-10-27 00:30:00") == no  # Sun 01:30 BST
    assert at("2024-10-27 01:00:00") == yes  # Sun 01:00 GMT, the second time round
    assert at("2024-10-27 01:30:00") == no  # Sun 01:30 GMT
    club["schedule"]["s"]["except"] = ["2024-10-26"]
    assert at("2024-10-27 01:00:00") == no
