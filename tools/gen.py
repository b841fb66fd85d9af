"""`alc gen`: a reproducible synthetic club, for benchmarks, demos and tests.

    alc gen --members N [--seed S] [--start YYYY-MM-DD] --out FILE

The club has a site record (time zone Europe/London), 20 schedules, 10 doors,
12 court lights, 20 access groups, N members and 5,000 court bookings with PINs
over the six weeks from `--start`. Every member holds one `tag` (10 lowercase hex
digits, a 40-bit reader UID) and one `pin` (digits); no two credentials are the
same, and no member PIN equals a booking PIN. About 2% of members are inactive,
2% expired and 1% not yet valid. The same members, seed and start always give
the same bytes: all randomness comes from one `random.Random(seed)`.

File format: a CBOR sequence (RFC 8742), no header and no framing: one CBOR array
`[kind, id, rec]` per record, back to back, where `kind` and `id` are text and
`rec` is a byte string holding the CBOR encoding of the record body, exactly the
`[kind, id, rec]` triple of a `snap` page (PROTOCOL.md s3). Records come in the
order site, schedules, doors, lights, groups, members, bookings, so the file can
be read with `read_records` one record at a time, never whole.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cbor2

Triple = tuple[str, str, bytes]

TZ = "Europe/London"
DEFAULT_START = date(2026, 6, 1)  # a Monday; fixed so that a seed names one file
BOOKINGS = 5000
BOOKING_HOURS = range(7, 22)  # court bookings start on the hour, 07:00 to 21:00
TAG_SPACE = 1 << 40  # 10 hex digits


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Freya Willow "
    "Florence Emily Ella Poppy Evie Elsie Charlotte Aisha Fatima Zara Priya Anjali "
    "Chloe Hannah Lucy Megan Niamh Siobhan Catrin Eilidh Agnieszka Maria Ana Chen Mei "
    "Noah Oliver George Arthur Leo Muhammad Harry Oscar Archie Henry Theo Freddie "
    "Jack Charlie Thomas James William Alfie Joshua Samuel Daniel Ethan Rhys Dylan "
    "Callum Ciaran Euan Omar Ali Hamza Arjun Rohan Tomasz Piotr Luca Mateo Kwame "
    "Tunde Chidi Kofi Wei Jun Hiroshi Sean Patrick David Peter Margaret Susan Helen"
)
LAST_NAMES = _words(
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Wright Robinson "
    "Thompson Evans Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris "
    "Edwards Turner Martin Cooper Hill Ward Hughes Moore Clark King Harrison Lewis "
    "Baker Lee Allen Morris Khan Scott Watson Davis Parker James Bennett Young "
    "Phillips Richardson Mitchell Bailey Carter Cook Singh Shaw Bell Collins Morgan "
    "Kelly Begum Miller Cox Hussain Marshall Simpson Price Anderson Adams Wilkinson "
    "Ali Ahmed Foster Ellis Murphy Chapman Mason Gray Richards Webb Griffiths Hunt "
    "Palmer Campbell Holmes Mills Rogers Barnes Knight Matthews Barker Nowak Kowalski "
    "Okafor Mensah Nguyen Wang Zhang Rossi Murray O'Brien MacDonald Fraser Llewellyn"
)

# id -> windows [[days, start_min, end_min], ...]; days: Mon=1 .. Sun=64.
WEEKDAYS, WEEKEND, DAILY = 31, 96, 127
SCHEDULES: dict[str, list[list[int]]] = {
    "daily-0600-2300": [[DAILY, 360, 1380]],
    "weekday-daytime": [[WEEKDAYS, 480, 1080]],
    "weekday-evening": [[WEEKDAYS, 1020, 1380]],
    "weekend": [[WEEKEND, 420, 1320]],
    "juniors": [[WEEKDAYS, 900, 1170], [32, 480, 780]],
    "seniors-morning": [[DAILY, 420, 720]],
    "staff": [[DAILY, 300, 1440]],
    "night-training": [[2 | 8, 1200, 1530]],  # Tue and Thu, 20:00 to 01:30
    "coaches": [[DAILY, 360, 1410]],
    "floodlights": [[DAILY, 960, 1320]],
    "summer-camp": [[WEEKDAYS, 540, 960]],
    "bar-hours": [[WEEKDAYS, 1080, 1410], [WEEKEND, 720, 1410]],
    "gym-hours": [[WEEKDAYS, 360, 1320], [WEEKEND, 480, 1200]],
    "cleaning": [[DAILY, 300, 420]],
    "league-nights": [[2 | 4, 1080, 1380]],
    "maintenance": [[1, 420, 960]],
    "social": [[WEEKEND, 600, 1080]],
    "off-peak": [[WEEKDAYS, 600, 960]],
    "peak": [[WEEKDAYS, 1020, 1320], [WEEKEND, 540, 1260]],
    "main-gate-open": [[WEEKDAYS, 480, 1260], [WEEKEND, 540, 1200]],
}
# schedules closed on a few days (dates relative to the start)
CLOSED_DAYS = {"main-gate-open": (24, 25), "summer-camp": (14, 15, 16), "bar-hours": (25,)}

NORTH_COURTS = [f"court-{n:02d}" for n in range(1, 7)]
SOUTH_COURTS = [f"court-{n:02d}" for n in range(7, 13)]
ALL_COURTS = NORTH_COURTS + SOUTH_COURTS
# id -> (name, extra fields)
DOORS: dict[str, tuple[str, dict[str, Any]]] = {
    "main-gate": ("Main gate", {"open_schedule": "main-gate-open", "unlock_s": 6}),
    "clubhouse": ("Clubhouse", {}),
    "changing-men": ("Men's changing room", {}),
    "changing-women": ("Women's changing room", {}),
    "gym": ("Gym", {"held_s": 60}),
    "bar": ("Bar", {}),
    "boiler-room": ("Boiler room", {"mode": "locked"}),
    "court-gate-north": ("North courts gate", {"extended_s": 20}),
    "court-gate-south": ("South courts gate", {"extended_s": 20}),
    "office": ("Office", {"unlock_s": 3}),
}
COMMON_DOORS = ["main-gate", "clubhouse", "changing-men", "changing-women"]
COURT_GATES = ["court-gate-north", "court-gate-south"]
# id -> (doors, lights, schedule, weight when members pick groups)
GROUPS: dict[str, tuple[list[str], list[str], str | None, int]] = {
    "adult-full": ([*COMMON_DOORS, *COURT_GATES, "gym"], ALL_COURTS, "daily-0600-2300", 30),
    "adult-offpeak": ([*COMMON_DOORS, *COURT_GATES], ALL_COURTS, "off-peak", 12),
    "juniors": ([*COMMON_DOORS, "court-gate-north"], NORTH_COURTS, "juniors", 14),
    "seniors": ([*COMMON_DOORS, *COURT_GATES], ALL_COURTS, "seniors-morning", 8),
    "weekend": ([*COMMON_DOORS, *COURT_GATES], ALL_COURTS, "weekend", 8),
    "gym-only": (["main-gate", "gym", "changing-men", "changing-women"], [], "gym-hours", 6),
    "social": (["main-gate", "clubhouse", "bar"], [], "social", 5),
    "coaches": ([*COMMON_DOORS, *COURT_GATES, "gym", "bar"], ALL_COURTS, "coaches", 2),
    "staff": (list(DOORS), ALL_COURTS, "staff", 1),
    "night-squad": ([*COMMON_DOORS, "court-gate-south"], SOUTH_COURTS, "night-training", 2),
    "league": ([*COMMON_DOORS, *COURT_GATES], ALL_COURTS, "league-nights", 4),
    "cleaners": ([*COMMON_DOORS, "gym", "bar", "office"], [], "cleaning", 1),
    "maintenance": (["main-gate", "boiler-room", *COURT_GATES], ALL_COURTS, "maintenance", 1),
    "bar-staff": (["main-gate", "clubhouse", "bar"], [], "bar-hours", 1),
    "committee": (["main-gate", "clubhouse", "office"], [], None, 1),
    "summer-camp": ([*COMMON_DOORS, "court-gate-north"], NORTH_COURTS, "summer-camp", 3),
    "peak": ([*COMMON_DOORS, *COURT_GATES], ALL_COURTS, "peak", 6),
    "north-courts": (["main-gate", "court-gate-north"], NORTH_COURTS, "daily-0600-2300", 4),
    "south-courts": (["main-gate", "court-gate-south"], SOUTH_COURTS, "daily-0600-2300", 4),
    "evening": ([*COMMON_DOORS, *COURT_GATES], ALL_COURTS, "weekday-evening", 6),
}


class Shuffle:
    """A keyed bijection of `range(size)` onto itself: a 4-round Feistel network on
    the smallest even bit width that holds `size`, walked until it lands in range.
    Gives unique, random-looking values for indexes without remembering any."""

    __slots__ = ("half", "keys", "mask", "size")

    def __init__(self, size: int, rng: random.Random) -> None:
        bits = max(2, (size - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        self.size = size
        self.keys = tuple(rng.getrandbits(64) for _ in range(4))

    def __call__(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise ValueError(f"index {index} outside 0..{self.size - 1}")
        half, mask = self.half, self.mask
        x = index
        while True:
            left, right = x >> half, x & mask
            for key in self.keys:
                left, right = right, left ^ ((((right ^ key) * 0x9E3779B97F4A7C15) >> 29) & mask)
            x = (left << half) | right
            if x < self.size:
                return x


class Club:
    """The synthetic club behind `generate`, with the credential helpers a benchmark
    needs to make more members and sure-to-be-unknown credentials.

    Indexes name credentials: member `i` holds `tag(i)` and `member_pin(i)` for any
    `i >= 0` (also past `members`, for members added later); booking `j` has
    `booking_pin(j)`; `unknown_tag(k)` and `unknown_pin(k)` are never handed out.
    """

    def __init__(
        self, members: int, seed: int = 1, *, start: date = DEFAULT_START, bookings: int = BOOKINGS
    ) -> None:
        if members < 0 or bookings < 0:
            raise ValueError("members and bookings must not be negative")
        self.members = members
        self.bookings = bookings
        self.start = start
        self.zone = ZoneInfo(TZ)
        self.rng = random.Random(seed)
        # PINs fill at most 1% of their space, so a guessed PIN rarely hits a member.
        self.pin_digits = 6
        while 10**self.pin_digits < 100 * (members + bookings + 1):
            self.pin_digits += 1
        self._tags = Shuffle(TAG_SPACE, self.rng)
        self._pins = Shuffle(10**self.pin_digits, self.rng)
        self._group_ids = list(GROUPS)
        self._group_weights = [g[3] for g in GROUPS.values()]

    # --- credentials and ids -------------------------------------------------------

    def tag(self, i: int) -> str:
        return f"{self._tags(i):010x}"

    def member_pin(self, i: int) -> str:
        return f"{self._pins(self.bookings + i):0{self.pin_digits}d}"

    def booking_pin(self, j: int) -> str:
        return f"{self._pins(j):0{self.pin_digits}d}"

    def unknown_tag(self, k: int) -> str:
        return f"{self._tags(TAG_SPACE - 1 - k):010x}"

    def unknown_pin(self, k: int) -> str:
        return f"{self._pins(10**self.pin_digits - 1 - k):0{self.pin_digits}d}"

    @staticmethod
    def member_id(i: int) -> str:
        return f"m{i:07d}"

    @staticmethod
    def booking_id(j: int) -> str:
        return f"b{j:05d}"

    def at(self, day: int, minute: int) -> int:
        """Unix time of `minute` past local midnight, `day` days after the start."""
        d = self.start + timedelta(days=day)
        local = datetime.combine(d, time(minute // 60, minute % 60), tzinfo=self.zone)
        return int(local.timestamp())

    # --- record bodies -------------------------------------------------------------

    def member_body(self, i: int, rng: random.Random, *, tag: str | None = None) -> dict[str, Any]:
        """Member `i`'s body, its other fields drawn from `rng` (a name, 1 to 3
        groups, credit, validity); `tag` replaces its usual tag (a new card)."""
        body: dict[str, Any] = {"name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"}
        status = rng.random()
        if status < 0.02:
            body["active"] = False
        elif status < 0.04:
            body["until"] = self.at(-rng.randrange(1, 365), 0)
        elif status < 0.05:
            body["from"] = self.at(rng.randrange(8, 60), 0)
        elif status < 0.35:
            body["until"] = self.at(rng.randrange(30, 365), 0)
        how_many = 1 if rng.random() < 0.75 else rng.choice((2, 2, 2, 3))
        picked = set(rng.choices(self._group_ids, self._group_weights, k=how_many))
        body["groups"] = [g for g in self._group_ids if g in picked]
        body["creds"] = [["tag", tag or self.tag(i)], ["pin", self.member_pin(i)]]
        body["credit"] = 0 if rng.random() < 0.25 else rng.randrange(1, 200) * 50
        if rng.random() < 0.01:
            body["extended"] = True
        return body

    def records(self) -> Iterator[Triple]:
        """Every record of the club, in file order."""
        rng = self.rng
        start = self.start
        yield "site", "site", _enc({"tz": TZ, "name": "Riverside Tennis & Padel Club"})
        for sid, windows in SCHEDULES.items():
            body: dict[str, Any] = {"windows": windows}
            if sid in CLOSED_DAYS:
                body["except"] = [(start + timedelta(days=d)).isoformat() for d in CLOSED_DAYS[sid]]
            yield "schedule", sid, _enc(body)
        for did, (name, fields) in DOORS.items():
            yield "door", did, _enc({"name": name, **fields})
        for n, lid in enumerate(ALL_COURTS, 1):
            light: dict[str, Any] = {"name": f"Court {n}", "price": (0, 200, 300, 400)[n % 4]}
            if n > 8:
                light["checkin"] = True
            if n > 2:
                light["schedule"] = "floodlights"
            yield "light", lid, _enc(light)
        for gid, (doors, lights, schedule, _weight) in GROUPS.items():
            group: dict[str, Any] = {"doors": doors, "lights": lights}
            if schedule is not None:
                group["schedule"] = schedule
            yield "group", gid, _enc(group)
        for i in range(self.members):
            yield "member", self.member_id(i), _enc(self.member_body(i, rng))
        yield from self._bookings(rng)

    def _bookings(self, rng: random.Random) -> Iterator[Triple]:
        # One-hour court slots, two thirds of them booked, no court double-booked.
        per_day = len(ALL_COURTS) * len(BOOKING_HOURS)
        days = max(7, math.ceil(self.bookings * 1.5 / per_day))
        slots = sorted(rng.sample(range(days * per_day), self.bookings))
        for j, slot in enumerate(slots):
            day, rest = divmod(slot, per_day)
            hour = BOOKING_HOURS[rest // len(ALL_COURTS)]
            court = ALL_COURTS[rest % len(ALL_COURTS)]
            gate = "court-gate-north" if court in NORTH_COURTS else "court-gate-south"
            begin = self.at(day, hour * 60)
            body: dict[str, Any] = {
                "lights": [court],
                "doors": ["main-gate", gate],
                "start": begin,
                "end": begin + 3600,
            }
            if self.members and rng.random() < 0.75:
                body["member"] = self.member_id(rng.randrange(self.members))
            body["pin"] = self.booking_pin(j)
            yield "booking", self.booking_id(j), _enc(body)


def _enc(body: dict[str, Any]) -> bytes:
    return cbor2.dumps(body)


def generate(members: int, seed: int = 1, *, start: date = DEFAULT_START) -> Iterator[Triple]:
    """Stream the records `(kind, id, rec)` of a synthetic club with `members`
    members; the same arguments always give the same records."""
    return Club(members, seed, start=start).records()


def write_records(records: Iterator[Triple], path: str | os.PathLike[str]) -> int:
    """Write records to `path` in the file format above; returns how many.

    Written to a temporary name first, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as f:
        for kind, id, rec in records:
            f.write(cbor2.dumps([kind, id, rec]))
            count += 1
    os.replace(tmp, path)
    return count


CHUNK = 1 << 20  # read_records reads the file this much at a time


def read_records(path: str | os.PathLike[str]) -> Iterator[Triple]:
    """Stream `(kind, id, rec)` back from a file written by `alc gen`.

    Raises `ValueError` on a truncated file or an item that is not a record."""
    # A megabyte at a time, decoded from memory: a decoder reading the file
    # itself asks it for every header and string (a Python call each), which
    # cost the bench's build a tenth of its time. An item cut at a chunk's end
    # is decoded again with the next chunk behind it.
    with open(path, "rb") as f:
        n = 0
        rest = b""
        while True:
            chunk = f.read(CHUNK)
            data = rest + chunk if rest else chunk
            if not data:
                return
            fp = io.BytesIO(data)
            decoder = cbor2.CBORDecoder(fp)
            done = 0
            while done < len(data):
                try:
                    item = decoder.decode()
                except cbor2.CBORDecodeEOF as exc:
                    if chunk:  # cut at the chunk's end: read on
                        break
                    raise ValueError(f"{path}: record {n}: {exc}") from None
                except cbor2.CBORDecodeError as exc:
                    raise ValueError(f"{path}: record {n}: {exc}") from None
                done = fp.tell()
                if (
                    type(item) is not list
                    or len(item) != 3
                    or type(item[0]) is not str
                    or type(item[1]) is not str
                    or type(item[2]) is not bytes
                ):
                    raise ValueError(f"{path}: record {n} is not [kind, id, rec]")
                yield item[0], item[1], item[2]
                n += 1
            rest = data[done:]


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def main(argv: Sequence[str]) -> int:
    """`alc gen`: write a synthetic club to a file."""
    parser = argparse.ArgumentParser(prog="alc gen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=_count, required=True, help="number of members")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--start",
        type=date.fromisoformat,
        default=DEFAULT_START,
        help=f"first day of bookings, YYYY-MM-DD (default {DEFAULT_START})",
    )
    parser.add_argument("--out", required=True, help="file to write (a CBOR sequence)")
    args = parser.parse_args(list(argv))
    count = write_records(generate(args.members, args.seed, start=args.start), args.out)
    print(f"wrote {count:,} records ({args.members:,} members) to {args.out}")
    return 0
