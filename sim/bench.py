"""Bench inputs (PROTOCOL.md s8): the simulator's edge on a runtime, and the hands
of a person at the door on the simulated hardware.

`BenchEdge` is what the simulator plugs into the runtime (`Runtime(config,
edges=[BenchEdge])`, firmware/runtime/edge.py); the runtime itself knows nothing
of the bench. It takes every `bench/in` message, opens and parses it, and does
what it says in one of three ways:

- driven: the message names a wired reader, contact or exit button. `BenchHands`
  does it on the simulator's mock pins and loopback ports: a tag becomes an
  RDM6300 frame on the reader's `loop://` port, a card a Wiegand frame on its
  D0/D1 pins, a PIN key presses, a door contact a pin level. What the hardware
  reads then comes back to the controller through the HAL, exactly as on a Pi
  (debounce, frame checks, repeat suppression, PIN entry), so the bench tests
  the real code paths;
- submitted: it names a reader or door of the configuration that has no pins (a
  simulator without hardware wiring). The edge hands the loop the typed input a
  HAL would (`Presented`, `ContactChanged`, `RexPressed`), keys typed as a keypad
  does, and the core decides on it as on any reader's;
- refused: it does not verify, is not a well-formed bench input, names a reader
  or door the configuration does not have, a contact or exit button its door
  does not have, or something its reader could never send (a PIN at an RDM6300
  tag reader, a tag that is not 10 hex digits, keys on a reader without keys).
  One log line per kind a minute (`alc.bench`), counted in `refused`; nothing
  reaches the core or the hardware.

Every output the loop switches goes out on `bench/out`, with the time.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware.core.errors import LocalError, RemoteError
from firmware.core.hush import Hush, more
from firmware.core.inputs import ContactChanged, Presented, RexPressed
from firmware.core.limits import CREDKINDS, MAX_VALUE_LEN
from firmware.core.wire import AuthError
from firmware.core.wiring import DoorSpec, ReaderSpec
from hal import wiegand

if TYPE_CHECKING:
    from firmware.runtime.edge import EdgeContext
    from firmware.runtime.notes import Note
    from hal.sim import SimBackend

log = logging.getLogger("alc.bench")

IN, OUT = "bench/in", "bench/out"
REPORT_EVERY_S = 60.0  # one log line per kind of refusal a minute, like the core's reports
MAX_KEYS = 64
KEYS = frozenset("0123456789*#")
_DIGITS = re.compile(r"[0-9]+")
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{10}")
_CARD = re.compile(r"[0-9]+(:[0-9]+)?")


class Refused(Exception):
    """The input names nothing there is, or its reader cannot produce it; the
    message says why. `kind` groups its log lines (default: the input's type)."""

    def __init__(self, detail: str, *, kind: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Present:
    """A credential held to a reader."""

    reader: str
    credkind: str
    value: str


@dataclass(frozen=True, slots=True)
class Contact:
    """A door opened or shut."""

    door: str
    open: bool


@dataclass(frozen=True, slots=True)
class Rex:
    """A door's exit button pressed."""

    door: str


@dataclass(frozen=True, slots=True)
class Keys:
    """Keys typed on a keypad: digits, `*` clears, `#` enters."""

    reader: str
    keys: str


BenchInput = Present | Contact | Rex | Keys


def parse_input(type: str, body: dict[str, Any]) -> BenchInput:
    """A bench message body -> one input; `RemoteError` naming the problem."""
    if type == "present":
        reader, credkind, value = body.get("reader"), body.get("credkind"), body.get("value")
        if not isinstance(reader, str) or not reader:
            raise RemoteError("present needs a text 'reader'")
        if credkind not in CREDKINDS:
            raise RemoteError(f"present: 'credkind' must be one of {', '.join(CREDKINDS)}")
        if not isinstance(value, str) or not 0 < len(value) <= MAX_VALUE_LEN:
            raise RemoteError(f"present: 'value' must be 1 to {MAX_VALUE_LEN} characters")
        return Present(reader, str(credkind), value)
    if type == "contact":
        door, open = body.get("door"), body.get("open")
        if not isinstance(door, str) or not door or not isinstance(open, bool):
            raise RemoteError("contact needs a text 'door' and a true/false 'open'")
        return Contact(door, open)
    if type == "rex":
        door = body.get("door")
        if not isinstance(door, str) or not door:
            raise RemoteError("rex needs a text 'door'")
        return Rex(door)
    if type == "keys":
        reader, keys = body.get("reader"), body.get("keys")
        if not isinstance(reader, str) or not reader:
            raise RemoteError("keys needs a text 'reader'")
        if not isinstance(keys, str) or not 0 < len(keys) <= MAX_KEYS or set(keys) - KEYS:
            raise RemoteError(f"keys: 'keys' must be 1 to {MAX_KEYS} of 0-9, * and #")
        return Keys(reader, keys)
    raise RemoteError(f"unknown bench input {type!r}")


class BenchEdge:
    """The simulator's edge on a runtime: `bench/in` in, `bench/out` out (see the
    module docstring). Built by the runtime, once, from its `EdgeContext`."""

    topics: tuple[str, ...] = (IN,)

    def __init__(self, context: EdgeContext) -> None:
        config = context.config
        if config.backend != "sim":
            # On a real installation a reader is the only way to present a credential.
            raise LocalError(
                f'{config.path}: bench inputs are for the simulator (backend "sim"), '
                f'not backend "{config.backend}"'
            )
        self._context = context
        self.hands: BenchHands | None = None
        if context.hardware is not None:
            # gpiozero's mock pins: importable whenever the simulator has hardware
            # (without gpiozero it runs unwired, on bench inputs alone).
            from hal.sim import SimBackend

            if isinstance(context.hardware, SimBackend):
                self.hands = BenchHands(context.hardware)
        self._readers = {spec.id: spec for spec in config.wiring.readers}
        self._doors = {spec.id: spec for spec in config.wiring.doors}
        self._hush = Hush(REPORT_EVERY_S)
        self._stopped = threading.Event()
        self.refused = 0  # refusals since start, logged or not

    def received(self, suffix: str, payload: bytes) -> None:
        """One `bench/in` payload (paho's thread): driven, submitted or refused.
        Never raises, whatever the bytes."""
        if self._stopped.is_set():
            return  # the runtime is stopping; its link may still hand one over
        try:
            message = self._context.unseal(suffix, payload)
        except AuthError as exc:
            self._refuse("auth_failed", f"{suffix}: {exc}")
            return
        except (RemoteError, LocalError) as exc:
            # LocalError: the key file could not be read; the next message may open.
            self._refuse("error", f"{suffix}: {exc}")
            return
        try:
            entry = parse_input(message.type, message.body)
        except RemoteError as exc:
            self._refuse("error", f"{suffix} {message.type}: {exc}")
            return
        try:
            if isinstance(entry, Present | Keys):
                self._at_reader(entry)
            else:
                self._at_door(entry)
        except Refused as exc:
            self._refuse(exc.kind or type(entry).__name__.lower(), str(exc))

    def output_switched(self, name: str, on: bool) -> None:
        """The loop switched an output: `bench/out` says so, with the time."""
        message = {"t": "output", "name": name, "on": on, "time": int(self._context.clock())}
        self._context.publish(OUT, message)

    def observed(self, note: Note) -> None:
        """The bench reports outputs only (`output_switched`)."""

    def start(self) -> None:
        """Nothing to start: the bench answers on paho's thread."""

    def stop(self) -> None:
        """Nothing more is driven or submitted. The hardware is the runtime's to
        close; the edge holds no thread of its own."""
        self._stopped.set()

    def _at_reader(self, entry: Present | Keys) -> None:
        spec = self._readers.get(entry.reader)
        if spec is None:
            raise Refused(f"no reader {entry.reader!r} in the configuration")
        if self._drove(entry):
            return
        if isinstance(entry, Present):
            check_present(spec, entry.credkind, entry.value)
            self._context.submit(Presented(spec.id, entry.credkind, entry.value))
            return
        if spec.kind not in (None, "keypad", "wiegand", "osdp"):
            raise Refused(f"reader {spec.id} ({spec.kind}) has no keys")
        for pin in typed_pins(entry.keys):
            self._context.submit(Presented(spec.id, "pin", pin))

    def _at_door(self, entry: Contact | Rex) -> None:
        spec = self._doors.get(entry.door)
        if spec is None:
            raise Refused(f"no door {entry.door!r} in the configuration")
        if not has_input(spec, entry):
            what = "contact" if isinstance(entry, Contact) else "exit button"
            raise Refused(f"door {spec.id} has no {what}")
        if self._drove(entry):
            return
        if isinstance(entry, Contact):
            self._context.submit(ContactChanged(spec.id, entry.open))
        else:
            self._context.submit(RexPressed(spec.id))

    def _drove(self, entry: BenchInput) -> bool:
        """Done on the simulated hardware when it has pins for it (`Refused` if
        its reader cannot); False when the input is the core's to take."""
        hands = self.hands
        if hands is None or not hands.wired(entry):
            return False
        try:
            hands.drive(entry)
        except (OSError, RuntimeError, ValueError) as exc:
            # A port that never opened or a device that failed: the bench's
            # problem, reported like a refusal, never the loop's.
            raise Refused(f"{entry}: {exc}", kind="hardware") from None
        return True

    def _refuse(self, kind: str, detail: str) -> None:
        self.refused += 1
        held = self._hush.allow(kind, self._context.clock())
        if held is None:
            return
        log.error("bench input refused, nothing changed: %s%s", detail, more(held))


def has_input(door: DoorSpec, entry: Contact | Rex) -> bool:
    """True when the configuration gives `door` the contact or exit button that
    `entry` works."""
    return (door.contact if isinstance(entry, Contact) else door.rex) is not None


def typed_pins(keys: str) -> list[str]:
    """The PINs `keys` enter, as a keypad takes them: digits add up, `*` clears,
    `#` enters what is typed (nothing when nothing is). Digits after the last `#`
    are dropped: a bench message is one person at the keypad, start to end."""
    pins: list[str] = []
    typed = ""
    for key in keys:
        if key == "*":
            typed = ""
        elif key == "#":
            if typed:
                pins.append(typed)
            typed = ""
        else:
            typed += key
    return pins


def check_present(spec: ReaderSpec, credkind: str, value: str) -> None:
    """`Refused` unless reader `spec` could read this credential. A reader of no
    known kind (a simulator without hardware wiring) reads every credential kind;
    a PIN is digits 0-9 on every reader."""
    kind = spec.kind
    if kind is not None:
        reads = {"rdm6300": ("tag",), "line": (spec.credkind,), "keypad": ("pin",)}
        allowed = reads.get(kind, ("card", "pin"))
        if credkind not in allowed:
            raise Refused(
                f"reader {spec.id} ({kind}) reads {' and '.join(allowed)}s, not {credkind}s"
            )
    # Checked in full before anything reaches the hardware: an input the reader
    # could never send must not end up as a reader fault or as keys half typed
    # (Python's int() and isdecimal() also take non-ASCII digits).
    if kind == "rdm6300":
        if not _HEX_TAG.fullmatch(value):
            raise Refused(f"reader {spec.id}: an RDM6300 tag is 10 hex digits")
    elif kind == "wiegand" and credkind == "card":
        try:
            if not _CARD.fullmatch(value):
                raise ValueError(value)
            wiegand.encode_card(value)
        except ValueError:
            raise Refused(
                f"reader {spec.id}: a Wiegand card is 'facility:card' or plain digits"
            ) from None
    elif kind in ("line", "osdp") and not (value.isascii() and value.isprintable()):
        raise Refused(f"reader {spec.id}: a {credkind} value here is printable ASCII text")
    if credkind == "pin" and not _DIGITS.fullmatch(value):
        raise Refused(f"reader {spec.id}: a PIN is digits 0-9")


class BenchHands:
    """Turns parsed bench inputs into pin levels and port bytes on a `SimBackend`."""

    def __init__(self, sim: SimBackend) -> None:
        self.sim = sim
        self._specs = {spec.id: spec for spec in sim.wiring.readers}

    def wired(self, entry: BenchInput) -> bool:
        """True when the input names a reader, contact or exit button with pins."""
        if isinstance(entry, Present | Keys):
            return entry.reader in self.sim.readers
        if isinstance(entry, Contact):
            return f"contact:{entry.door}" in self.sim.inputs
        return f"rex:{entry.door}" in self.sim.inputs

    def drive(self, entry: BenchInput) -> None:
        """Do it on the hardware; `Refused` if this reader cannot."""
        if isinstance(entry, Contact):
            self.sim.set_contact(entry.door, entry.open)
        elif isinstance(entry, Rex):
            self.sim.press_rex(entry.door)
        elif isinstance(entry, Present):
            spec = self._specs[entry.reader]
            check_present(spec, entry.credkind, entry.value)
            self.sim.present(spec.id, entry.credkind, entry.value)
        else:
            self._keys_at(self._specs[entry.reader], entry.keys)

    def _keys_at(self, spec: ReaderSpec, keys: str) -> None:
        if spec.kind == "keypad":
            self.sim.write(spec.id, keys.encode())
        elif spec.kind == "wiegand":
            for key in keys:  # one burst (one frame) per key, as a Wiegand keypad sends
                self.sim.pulses(spec.id, wiegand.encode_key(key))
        elif spec.kind == "osdp":
            self.sim.press_keys(spec.id, keys)
        else:
            raise Refused(f"reader {spec.id} ({spec.kind}) has no keys")
