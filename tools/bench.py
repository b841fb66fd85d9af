"""`alc bench`: measure the controller's core on a synthetic club (`alc gen`).

    alc bench decide --members N [--seed S] [--presentations P] [--json]

`decide` generates the club to a temporary file (so its bytes are never all in
memory), then measures, in one process:

- `build_s`: `Store.build` streaming the record set from that file;
- `delta_ms`: `Store.apply` of one 1,000-op delta (600 updated members, 200 new,
  200 deleted); the median of 5 such deltas;
- `p50_us`, `p99_us`: `decide` latency over P random presentations (90% known
  credentials: member tags and PINs, a few booking PINs; doors and lights; times
  over the week from the club's start), `time.perf_counter_ns` around each call;
- `rss_mb`: the process's peak resident set (VmHWM, counted from just before the
  build: floor.py's own peak does not count), dataset loaded;
- `per_record_us`: the build's wall time per record, against `floor_us`, what any
  Python controller must spend per record on this machine (`../shared/floor.py`,
  run in this process before the build and again after the decisions; the mean
  of the two is the floor, see tools/floor_ref.py); `store_us` is floor.py's
  SQLite insert per record. Every time figure is printed with its ratio to the
  floor (per record: to `floor_us`; the build: to records x `floor_us`; a delta:
  to its ops x `floor_us`). Without floor.py the bench says so and prints
  absolute figures only (`floor_us` and `store_us` are null in `--json`);
- `boot_s`: a fresh process with the club on disk, from its start to its first
  decision, the store read back from the decision image (`boot_ratio`: to
  records x `floor_us`); `boot_rebuild_s`: the same with no image, the store
  rebuilt from SQLite (tools/bench_boot.py).

After the build the bench calls `gc.freeze()`, as the controller does at boot: the
dataset lives for hours, and the first full collection over a freshly built store
costs ~0.2 s of CPU (it would land in the first delta or decision).

The targets hold for 500,000 members on a 2-core machine, the memory one also for
1,000,000 (2,000,000 credentials; `make bench` runs both). This is a benchmark, not
a test: it prints what it measured and exits 0 whether the targets are met or not.
`alc bench sync` (tools/bench_sync.py) measures the sync path end to end through
mosquitto. More benchmarks register in `BENCHES`.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import math
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cbor2

from firmware.collector import collector_paused
from firmware.core.decide import Target, decide
from firmware.core.store import Delete, Op, Put, Store
from tools.bench_boot import boot_seconds
from tools.floor_ref import DEFAULT_RECORDS, Floor, mean_floor, measure_floor
from tools.gen import Club, read_records, write_records

N = TypeVar("N", int, float)

DELTA_OPS = 1000
DELTAS = 5
PER_RECORD_TARGET = 2.5  # x floor_us (issue 13)
# Peak RSS ceilings: 500,000 members (1,000,008 credentials), and from 1,000,000
# members (2,000,008 credentials).
RSS_TARGET_MB = 350
RSS_TARGET_MILLION_MB = 600


@dataclass(frozen=True)
class Figure:
    """One measured figure, its unit and its target (None: no target). The target
    is a ceiling, or a floor when `at_least`."""

    key: str
    label: str
    value: float
    unit: str
    target: float | None
    at_least: bool = False
    # How many records' floor this figure is worth (its ratio is value / that);
    # None: no ratio (memory, a count).
    floor_records: float | None = None

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when there is none."""
        if self.target is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def peak_rss_mb() -> float:
    """Peak resident set of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start this process's peak resident set over from its current one (Linux:
    `/proc/self/clear_refs`), so that what ran before (floor.py's own records)
    does not count in `peak_rss_since_reset_mb`; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset_mb() -> float:
    """Peak resident set since `reset_peak_rss` (VmHWM), in MiB; `peak_rss_mb`
    where /proc cannot tell."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return peak_rss_mb()


def percentile(sorted_values: Sequence[N], fraction: float) -> N:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def make_delta(club: Club, store: Store, rng: random.Random, new_from: int) -> list[Op]:
    """A 1,000-op member delta: 60% updates (a tenth with a new tag), 20% new
    members (indexes from `new_from`), 20% deletes, no member touched twice."""
    touched = rng.sample(range(club.members), min(club.members, DELTA_OPS * 4 // 5))
    n_update = len(touched) * 3 // 4
    ops: list[Op] = []
    for n, i in enumerate(touched[:n_update]):
        # A replacement card: tag indexes from 2**39 on are never any member's own.
        tag = club.tag((1 << 39) + new_from + n) if rng.random() < 0.1 else None
        body = club.member_body(i, rng, tag=tag)
        ops.append(Put("member", club.member_id(i), cbor2.dumps(body)))
    for i in range(new_from, new_from + DELTA_OPS - len(touched)):
        ops.append(Put("member", club.member_id(i), cbor2.dumps(club.member_body(i, rng))))
    ops += [Delete("member", club.member_id(i)) for i in touched[n_update:]]
    rng.shuffle(ops)
    return ops


def apply_deltas(club: Club, store: Store, rng: random.Random) -> tuple[list[float], list[float]]:
    """Apply `DELTAS` member deltas of `DELTA_OPS` ops; the ms each `apply` took,
    wall clock and CPU."""
    wall: list[float] = []
    cpu: list[float] = []
    for n in range(DELTAS):
        ops = make_delta(club, store, rng, club.members + n * DELTA_OPS)
        t0, c0 = time.perf_counter(), time.process_time()
        store.apply(ops)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


@dataclass
class Presentations:
    """What was presented, where and when, as parallel sequences that only point
    at strings and targets that already exist, so that the harness adds little
    to the peak memory measured."""

    targets: list[Target]
    kinds: list[str]
    values: list[str]
    times: array.array[float]


def make_presentations(club: Club, store: Store, rng: random.Random, n: int) -> Presentations:
    """`n` presentations: 90% known credentials (member tags 60%, member PINs 28%,
    booking PINs 2% near their booking), 10% unknown tags and PINs; half at
    doors, half at lights; times spread over the week from the club's start."""
    doors = {d: Target.door(d) for d in sorted(store.doors)}
    lights = {lid: Target.light(lid) for lid in sorted(store.lights)}
    door_list, light_list = list(doors.values()), list(lights.values())
    bookings = sorted(store.bookings.values(), key=lambda b: b.id)
    p = Presentations([], [], [], array.array("d"))
    for k in range(n):
        at_door = rng.random() < 0.5
        target = rng.choice(door_list if at_door else light_list)
        # Mostly in the club's busy hours (07:00 to 22:00), some at any hour.
        minute = rng.randrange(420, 1320) if rng.random() < 0.85 else rng.randrange(1440)
        now = club.at(rng.randrange(7), 0) + minute * 60 + rng.random() * 60
        pick = rng.random()
        if pick < 0.02 and bookings:
            booking = rng.choice(bookings)
            place = booking.doors if at_door else booking.lights
            known = doors if at_door else lights
            if place and place[0] in known:
                target = known[rng.choice(place)] if at_door else known[place[0]]
            now = booking.start - 1200 + rng.random() * (booking.end - booking.start + 1800)
            kind, value = "pin", booking.pin or ""
        elif pick < 0.90 and store.members:
            member = None
            while member is None:
                member = store.members.get(club.member_id(rng.randrange(club.members)))
            creds = member.creds
            slot = 0 if pick < 0.62 else 2
            kind, value = creds[slot], creds[slot + 1]
        elif rng.random() < 0.6:
            kind, value = "tag", club.unknown_tag(k)
        else:
            kind, value = "pin", club.unknown_pin(k)
        p.targets.append(target)
        p.kinds.append(kind)
        p.values.append(value)
        p.times.append(now)
    return p


def time_decisions(store: Store, p: Presentations) -> tuple[array.array[int], Counter[str]]:
    """Latency of each decision in ns (in presentation order), and the count of
    each outcome."""
    latencies = array.array("q", bytes(8 * len(p.values)))
    reasons: Counter[str] = Counter()
    clock = time.perf_counter_ns
    for k, (target, kind, value, now) in enumerate(
        zip(p.targets, p.kinds, p.values, p.times, strict=True)
    ):
        t0 = clock()
        decision = decide(store, target, kind, value, now)
        t1 = clock()
        latencies[k] = t1 - t0
        reasons[decision.reason] += 1
    return latencies, reasons


def bench_decide(argv: Sequence[str]) -> int:
    """`alc bench decide`: decision latency, build time, delta time, peak memory."""
    parser = argparse.ArgumentParser(
        prog="alc bench decide", description="decision latency, build and delta time, memory"
    )
    parser.add_argument("--members", type=positive, default=500_000, help="default 500000")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--presentations", type=positive, default=100_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(list(argv))
    members: int = args.members

    club = Club(members, args.seed)  # for deltas and presentations; its twin writes
    with tempfile.TemporaryDirectory(prefix="alc-bench-") as tmp:
        path = Path(tmp) / "club.cbor"
        t0 = time.perf_counter()
        records = write_records(Club(members, args.seed).records(), path)
        gen_s = time.perf_counter() - t0
        file_mb = path.stat().st_size / 1e6
        floor_records = min(DEFAULT_RECORDS, records)
        floor_before = measure_floor(floor_records)
        # floor.py's records (~290 MB at its peak) are freed by now: the peak
        # counts from here, so that they never pass for the store's.
        if not reset_peak_rss():
            print(
                "(peak RSS includes floor.py's own: /proc/self/clear_refs refused)", file=sys.stderr
            )
        rss_before_mb = peak_rss_since_reset_mb()

        t0, c0 = time.perf_counter(), time.process_time()
        with collector_paused():  # as the controller builds at boot
            built = Store.build(read_records(path))
        build_s = time.perf_counter() - t0
        build_cpu_s = time.process_time() - c0
        rss_built_mb = peak_rss_since_reset_mb()
        boots = boot_seconds(path)  # in child processes: no memory of this one's
    store = built.store
    rng = random.Random(args.seed)
    # Everything built so far lives as long as the store: keep the cyclic GC from
    # walking millions of records in every full collection (unfrozen when done, as
    # this may run inside a test process).
    gc.freeze()
    try:
        delta_times, delta_cpu = apply_deltas(club, store, rng)
        presentations = make_presentations(club, store, rng, args.presentations)
        latencies, reasons = time_decisions(store, presentations)
        rss_mb = peak_rss_since_reset_mb()  # before floor.py runs again on top of the store
    finally:
        gc.unfreeze()
    floor_after = measure_floor(floor_records) if floor_before is not None else None
    floor = mean_floor(floor_before, floor_after) if floor_before and floor_after else None
    delta_ms = sorted(delta_times)[len(delta_times) // 2]
    del presentations
    ordered = sorted(latencies)
    p50_us = percentile(ordered, 0.50) / 1000
    p99_us = percentile(ordered, 0.99) / 1000
    per_record_us = build_s / records * 1e6

    rss_target = RSS_TARGET_MILLION_MB if members >= 1_000_000 else RSS_TARGET_MB
    figures = [
        Figure("p50_us", "decision latency p50", p50_us, "us", None, floor_records=1),
        Figure("p99_us", "decision latency p99", p99_us, "us", 20, floor_records=1),
        Figure("build_s", "build live store", build_s, "s", 10, floor_records=records),
        Figure(
            "per_record_us",
            "build, per record",
            per_record_us,
            "us",
            round(PER_RECORD_TARGET * floor.floor_us, 2) if floor else None,
            floor_records=1,
        ),
        Figure(
            "delta_ms",
            f"apply {DELTA_OPS:,}-op delta",
            delta_ms,
            "ms",
            20,
            floor_records=DELTA_OPS,
        ),
        Figure("rss_mb", "peak RSS", rss_mb, "MB", rss_target),
        Figure(
            "boot_s",
            "boot to first decision",
            boots.from_image.seconds,
            "s",
            5,
            floor_records=records,
        ),
        Figure(
            "boot_rebuild_s",
            "the same, no image",
            boots.rebuilt.seconds,
            "s",
            None,
            floor_records=records,
        ),
    ]
    if args.json:
        out: dict[str, float | None] = {f.key: round(f.value, 3) for f in figures}
        out["floor_us"] = floor.floor_us if floor else None
        out["store_us"] = floor.store_us if floor else None
        out["boot_ratio"] = (
            round(boots.from_image.seconds / (records * floor.floor_us / 1e6), 3) if floor else None
        )
        print(json.dumps(out))
        return 0
    credentials = sum(len(index) for index in store.credentials.values())
    granted = sum(n for reason, n in reasons.items() if reason in ("granted", "booking"))
    print(
        f"alc bench decide: {members:,} members, {credentials:,} credentials, "
        f"{records:,} records ({file_mb:.0f} MB), seed {args.seed}"
    )
    print(
        f"generated in {gen_s:.1f} s; built in {build_s:.2f} s ({build_cpu_s:.2f} s CPU), "
        f"{len(built.rejected)} rejected, {len(built.conflicts)} conflicts"
    )
    print(f"peak RSS before build {rss_before_mb:.0f} MB, after build {rss_built_mb:.0f} MB")
    print(
        f"deltas: {', '.join(f'{t:.1f}' for t in delta_times)} ms "
        f"({', '.join(f'{t:.1f}' for t in delta_cpu)} ms CPU); "
        f"{len(latencies):,} presentations, {granted / len(latencies):.0%} granted"
    )
    print(
        "outcomes: " + ", ".join(f"{r} {n / len(latencies):.0%}" for r, n in reasons.most_common())
    )
    print(describe_floor(floor_before, floor_after))
    print()
    print(format_table(figures, floor))
    if members not in (500_000, 1_000_000):
        print("(the targets are for --members 500000, the memory one also for 1000000)")
    return 0


def describe_floor(before: Floor | None, after: Floor | None) -> str:
    """The floor lines of a benchmark's text output, or why there is none."""
    if before is None or after is None:
        return "floor.py not found (../shared/floor.py beside the checkout): absolute figures only"
    both = mean_floor(before, after)
    return (
        f"{both.describe()}\n"
        f"  before the build {before.floor_us:.2f} us, after the decisions {after.floor_us:.2f} us"
    )


_SCALE = {"us": 1.0, "ms": 1e3, "s": 1e6}  # a time figure's unit, in microseconds


def format_table(figures: Sequence[Figure], floor: Floor | None = None) -> str:
    """The figures as a plain-text table: measured, target, ok or MISSED; with a
    `floor`, each time figure's ratio to it beside the measured value."""
    rows = [("figure", "measured", "x floor", "target", "")]
    for f in figures:
        digits = 0 if f.unit in ("MB", "/s") else 2 if f.unit in ("s", "ms") else 1
        measured = f"{f.value:,.{digits}f} {f.unit}"
        ratio = ""
        if floor is not None and f.floor_records and f.unit in _SCALE:
            ratio = f"{floor.ratio(f.value * _SCALE[f.unit] / f.floor_records):.2f} x"
        if f.target is None:
            rows.append((f.label, measured, ratio, "", ""))
        else:
            verdict = "ok" if f.met else "MISSED"
            bound = ">=" if f.at_least else "<="
            rows.append((f.label, measured, ratio, f"{bound} {f.target:,g} {f.unit}", verdict))
    columns = [0, 1, 2, 3, 4] if floor is not None else [0, 1, 3, 4]
    widths = {c: max(len(row[c]) for row in rows) for c in columns}
    right = (1, 2)  # numbers align right
    lines = [
        "  ".join(
            f"{r[c]:>{widths[c]}}" if c in right else f"{r[c]:<{widths[c]}}" for c in columns
        ).rstrip()
        for r in rows
    ]
    return "\n".join(lines)


# name -> (function taking the remaining arguments, one-line help)
def bench_sync(argv: Sequence[str]) -> int:
    """`alc bench sync` (tools.bench_sync), imported only when chosen: it needs
    paho-mqtt and mosquitto, which `decide` does not."""
    from tools.bench_sync import bench_sync as run

    return run(argv)


def bench_events(argv: Sequence[str]) -> int:
    """`alc bench events` (tools.bench_events), imported only when chosen."""
    from tools.bench_events import bench_events as run

    return run(argv)


BENCHES: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "decide": (bench_decide, "decision latency, store build and delta time, peak memory"),
    "sync": (bench_sync, "full sync, deltas and decision latency through mosquitto"),
    "events": (bench_events, "durable event logging, and the upload after an outage"),
}


def usage() -> str:
    lines = ["usage: alc bench <benchmark> [options]", "", "benchmarks:"]
    lines += [f"  {name:<10} {help}" for name, (_, help) in BENCHES.items()]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """`alc bench <benchmark> ...`"""
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in BENCHES:
        print(f"alc bench: unknown benchmark {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return BENCHES[args[0]][0](args[1:])
