"""What the end-to-end benchmarks (`alc bench sync`, `alc bench events`) share:
the bench club's names, the controller's config, the relock probe, and small
helpers for threads, waiting, CPU time and memory. A benchmark reports how long
things took; these helpers only make sure every step ends and every thread is
joined.

The relock probe (`RelockProbe`) times real relock timers: the bench's club has
one door of its own, `RELOCK_DOOR`, with `unlock_s = 1` (the shortest a door
record allows but 0) and one member who may open it at any hour
(`relock_records`). The probe presents that member's tag at the door's reader
over and over. For each unlock it takes:

- when the relay went on and off, from the relay's own (mock) pin: gpiozero's
  `MockPin` timestamps each change (monotonic) in the thread that switched the
  relay, at that moment, so how busy the bench's own threads are does not enter
  the figures;
- when the relock was due: the deadline the core set at the decision (the
  decision's `now` + `unlock_s`), asked of the loop (`Runtime.ask`, the core
  is the loop's alone) while the door is released, once an unlock.

A relock's lateness is relay off minus deadline: how long the door stood
unlocked past its time. The deadline counts from the decision, not from the
relay going on, which waits for the access event to be on disk (the probe
reports that wait too): a door is due to lock `unlock_s` after the member was
let in, however long the unlock itself took.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from firmware.config import Config, parse_config
from firmware.core.errors import LocalError
from tools.broker import Broker
from tools.gen import Club, Triple
from tools.hub.keys import key_path

SITE = "bench"
CONTROLLER = "c1"
BASE = f"alc/{SITE}/{CONTROLLER}"
READER = "door-reader"
DOOR = "main-gate"  # a door of the generated club
KNOWN_SHARE = 0.9  # presentations of a member's credential; the rest are unknown
WAIT_S = 600.0  # for any one step: generous, the bench reports how long it took
POLL_S = 0.002
JOIN_S = 60.0

RELOCK_DOOR = "relock-door"  # the bench's own door, and its access group
RELOCK_READER = "relock-reader"
RELOCK_RELAY = 18  # BCM pin of its relay, active high: released = pin high
RELOCK_UNLOCK_S = 1
MAX_RELOCK_DOORS = 8  # relays on BCM 18 to 25
RELOCK_GAP_S = 0.25  # a random pause up to this between a relock and the next tag
RELOCK_ANSWER_S = 10.0  # a member kept waiting longer than this: the bench fails
RELOCK_POLL_S = 0.01  # how often the probe looks for the relock (not its timing)
CLOCK_SLACK_S = 0.0002  # a clock reading bracketed closer than this is taken
CLOCK_TRIES = 1000


class BenchError(LocalError):
    """A step of the benchmark did not finish."""


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux), 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); the split drops the first two.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relock_door(k: int) -> str:
    """The `k`th relock door (and its access group, for k = 0); k from 0."""
    return RELOCK_DOOR if k == 0 else f"{RELOCK_DOOR}-{k + 1}"


def relock_reader(k: int) -> str:
    """The reader at `relock_door(k)`."""
    return RELOCK_READER if k == 0 else f"{RELOCK_READER}-{k + 1}"


def relock_relay(k: int) -> int:
    """The BCM pin of `relock_door(k)`'s relay."""
    return RELOCK_RELAY + k


def controller_config(tmp: Path, keys_dir: Path, broker: Broker, *, relock: int = 0) -> Config:
    """The benched controller: on the simulator, one door with a reader whose
    presentations come on the bench topic, as the simulator's do; with `relock`
    (at most `MAX_RELOCK_DOORS`), also that many relock doors and their readers,
    for `RelockProbe` (a reader reports the same tag again at once: a probe
    presents it about once a second). Its loop runs at "realtime" priority where
    allowed, as deploy/ sets it up on a Pi."""
    if not 0 <= relock <= MAX_RELOCK_DOORS:
        raise BenchError(f"relock doors: 0 to {MAX_RELOCK_DOORS}, not {relock}")
    doors: list[dict[str, Any]] = [{"id": DOOR, "relay": 17, "fail": "secure"}]
    readers: list[dict[str, Any]] = [
        {"id": READER, "kind": "rdm6300", "port": "loop://", "door": DOOR}
    ]
    for k in range(relock):
        doors.append(
            {"id": relock_door(k), "relay": relock_relay(k), "fail": "secure", "active_high": True}
        )
        readers.append(
            {
                "id": relock_reader(k),
                "kind": "rdm6300",
                "port": "loop://",
                "door": relock_door(k),
                "repeat_ms": 0,
            }
        )
    return parse_config(
        tmp / "controller.toml",
        {
            "controller": {
                "site": SITE,
                "id": CONTROLLER,
                "data_dir": str(tmp / "controller"),
                "key_file": str(key_path(keys_dir, CONTROLLER)),
                "loop_priority": "realtime",
            },
            "mqtt": {"host": broker.host, "port": broker.port},
            "hal": {"backend": "sim"},
            "doors": doors,
            "readers": readers,
        },
    )


def peak_rss_mb_of(pid: int | None) -> float:
    """Peak resident set of process `pid` so far, in MiB (Linux), 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def relock_records(club: Club, doors: int = MAX_RELOCK_DOORS) -> list[Triple]:
    """What the bench adds to the generated `club` for `RelockProbe`: `doors`
    relock doors (`relock_door`, `unlock_s` `RELOCK_UNLOCK_S`), a group
    `RELOCK_DOOR` for them with no schedule (any hour), and one member in it, the
    first past the generated ones (`relock_tag`), who holds no PIN. Doors the
    controller has no relay for are data only."""
    i = club.members
    member = {"name": "Relock Probe", "groups": [RELOCK_DOOR], "creds": [["tag", club.tag(i)]]}
    door = cbor2.dumps({"name": "Relock probe", "unlock_s": RELOCK_UNLOCK_S})
    ids = [relock_door(k) for k in range(doors)]
    return [
        *(("door", id, door) for id in ids),
        ("group", RELOCK_DOOR, cbor2.dumps({"doors": ids})),
        ("member", Club.member_id(i), cbor2.dumps(member)),
    ]


def relock_tag(club: Club) -> str:
    """The tag of `relock_records`'s member."""
    return club.tag(club.members)


@dataclass(frozen=True)
class Relock:
    """One unlock of the relock door, timed: `late_s` from the relock's deadline
    to the relay going off (the timer's lateness), `unlock_s` from the decision
    to the relay going on (the unlock waits for its event to be on disk)."""

    late_s: float
    unlock_s: float


class RelockProbe:
    """Times real relocks while it runs (see the module docstring): presents,
    waits for the relay to go on, reads the relock's deadline, waits for the
    relay to go off, pauses a random while (up to `gap_s`, so unlocks fall at
    every point of the work being measured), and again, until the `with` block
    ends. The unlock in progress then still runs to its relock and counts.

    `pin` is the relay's gpiozero `MockPin` (its `states` record); `present`
    presents the member's tag; `deadline` is the door's relock deadline as the
    core holds it (None when no unlock is running), in the time of the core's
    `clock`, read once an unlock, while the relay is on (it may raise
    `BenchError`). `relocks` holds one `Relock` per unlock. A door that does not unlock
    within `answer_s` of a presentation, or stays released past `WAIT_S`, fails
    the bench (`BenchError`, raised on leaving the block).
    """

    def __init__(
        self,
        pin: Any,
        present: Callable[[], None],
        deadline: Callable[[], float | None],
        seed: int,
        *,
        clock: Callable[[], float] = time.time,
        unlock_s: float = RELOCK_UNLOCK_S,
        gap_s: float = RELOCK_GAP_S,
        answer_s: float = RELOCK_ANSWER_S,
        door: str = RELOCK_DOOR,
    ) -> None:
        self._door = door
        self._pin = pin
        self._present = present
        self._deadline = deadline
        self._clock = clock
        self._unlock_s = unlock_s
        self._gap_s = gap_s
        self._answer_s = answer_s
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._failed: BenchError | None = None
        self.relocks: list[Relock] = []
        self._thread = threading.Thread(target=self._run, name=f"alc-bench-relock-{door}")

    def __enter__(self) -> RelockProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(JOIN_S + WAIT_S)
        if self._thread.is_alive():
            raise BenchError("the relock probe did not stop")
        if self._failed is not None:
            raise self._failed

    def late_ms(self) -> list[float]:
        """Every relock's lateness, ms, sorted."""
        return sorted(r.late_s * 1000 for r in self.relocks)

    def unlock_ms(self) -> list[float]:
        """Every unlock's wait from decision to relay, ms, sorted."""
        return sorted(r.unlock_s * 1000 for r in self.relocks)

    def _run(self) -> None:
        try:
            while True:
                self.relocks.append(self._one_unlock())
                if self._stop.wait(self._rng.uniform(0, self._gap_s)):
                    return
        except BenchError as exc:
            self._failed = exc

    def _one_unlock(self) -> Relock:
        pin = self._pin
        # Only this probe moves the relay, and it is at rest here: the record
        # starts afresh, [(0, at rest)], so it never grows past three entries.
        rest_at = _timed(pin.clear_states)
        if pin.states[0].state:
            raise BenchError(f"{self._door}: the relay is on with no unlock in progress")
        self._present()
        self._wait(lambda: len(pin.states) >= 2, self._answer_s, "unlock after a presentation")
        # Read while the door is released: the core set it before switching the relay.
        due = self._deadline()
        if due is None and len(pin.states) < 3:
            raise BenchError(f"{self._door}: released, with no relock deadline in the core")
        offset = _clock_offset(self._clock)
        self._wait(lambda: len(pin.states) >= 3, WAIT_S, "relock")
        _rest, on, off = pin.states[:3]
        if not on.state or off.state:
            raise BenchError(f"{self._door}: the relay went {on.state}, then {off.state}")
        if due is None:
            raise BenchError(f"{self._door}: relocked before its deadline could be read")
        # gpiozero's timestamps: seconds since the previous change.
        on_at = rest_at + on.timestamp
        off_at = on_at + off.timestamp
        due_at = due - offset  # in monotonic time
        return Relock(off_at - due_at, on_at - (due_at - self._unlock_s))

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        # Polled, not timed: the pin's record holds the times; this only tells
        # the probe when to go on. Stopping does not cut an unlock short.
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise BenchError(f"{self._door}: no {what} within {timeout:g} s")
            time.sleep(RELOCK_POLL_S)


def _timed(call: Callable[[], object]) -> float:
    """Call `call`; the monotonic time it ran at, to `CLOCK_SLACK_S` (tried again
    when this thread was held up around it)."""
    for _ in range(CLOCK_TRIES):
        before = time.monotonic()
        call()
        after = time.monotonic()
        if after - before <= CLOCK_SLACK_S:
            return before
    raise BenchError(f"could not time a call to within {CLOCK_SLACK_S * 1000:g} ms")


def _clock_offset(clock: Callable[[], float]) -> float:
    """`clock()` minus `time.monotonic()`, now, to `CLOCK_SLACK_S`."""
    for _ in range(CLOCK_TRIES):
        before = time.monotonic()
        reading = clock()
        after = time.monotonic()
        if after - before <= CLOCK_SLACK_S:
            return reading - (before + after) / 2
    raise BenchError(f"could not read the clock to within {CLOCK_SLACK_S * 1000:g} ms")


def in_thread(
    stack: ExitStack, run: Callable[[], object], stop: Callable[[], None], name: str
) -> Callable[[], None]:
    """Run `run` in a thread; on unwinding `stack` (or calling the function this
    returns, once), call `stop` and join it."""
    thread = threading.Thread(target=run, name=name)
    thread.start()
    done = threading.Event()

    def finish() -> None:
        if done.is_set():
            return
        done.set()
        stop()
        thread.join(JOIN_S)
        if thread.is_alive():
            raise BenchError(f"thread {name} did not stop within {JOIN_S:g} s")

    stack.callback(finish)
    return finish


def wait_for(
    predicate: Callable[[], bool], what: str, timeout: float = WAIT_S, poll: float = POLL_S
) -> float:
    """Poll every `poll` s until `predicate()` holds; the monotonic time it was
    seen to."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic()
