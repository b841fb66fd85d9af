"""Bench inputs (PROTOCOL.md s8) as a person's hands on the simulated hardware.

`BenchHands.take` opens a sealed `bench/in` message and does what it says on the
simulator's mock pins and loopback ports: a tag becomes an RDM6300 frame on the
reader's `loop://` port, a card a Wiegand frame on its D0/D1 pins, a PIN key
presses, a door contact a pin level. What the hardware reads then comes back to
the controller through the HAL, exactly as on a Pi (debounce, frame checks,
repeat suppression, PIN entry), so the bench tests the real code paths.

Three outcomes:
- driven: the message named a wired reader, contact or exit button;
- for the core (`take` returns False): the message does not verify, is not a
  well-formed bench input, or names a reader or door that has no wiring. The
  core's own bench handling then acts on it (an unwired name) or reports it,
  rate-limited, as it reports any bad message;
- refused: a wired reader cannot produce what was asked (a PIN at an RDM6300
  tag reader, a tag that is not 10 hex digits...). One log line, rate-limited,
  and nothing happens.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.core import wire
from firmware.core.errors import RemoteError
from firmware.core.limits import CREDKINDS, MAX_VALUE_LEN
from firmware.core.wiring import ReaderSpec
from hal import wiegand
from hal.sim import SimBackend

log = logging.getLogger("alc.bench")

REPORT_EVERY_S = 60.0  # one log line per kind of refusal a minute, like the core's reports
MAX_KEYS = 64
KEYS = frozenset("0123456789*#")
_DIGITS = re.compile(r"[0-9]+")
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{10}")
_CARD = re.compile(r"[0-9]+(:[0-9]+)?")


class Refused(Exception):
    """A wired reader cannot produce this input; the message says why."""


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


class BenchHands:
    """Turns verified bench inputs into pin levels and port bytes on a `SimBackend`."""

    def __init__(
        self,
        sim: SimBackend,
        key: bytes,
        kid: bytes,
        topic: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sim = sim
        self._keys = {kid: key}
        self.topic = topic
        self._clock = clock
        self._specs = {spec.id: spec for spec in sim.wiring.readers}
        self._reported: dict[str, tuple[float, int]] = {}
        self.refused = 0  # refusals since start, logged or not

    def take(self, payload: bytes) -> bool:
        """Act on one `bench/in` payload; False when it is the core's to handle
        (see the module docstring). Never raises."""
        try:
            message = wire.unseal(self._keys, self.topic, payload)
            entry = parse_input(message.type, message.body)
        except RemoteError:
            return False  # the core unseals it again and reports what is wrong
        if not self.wired(entry):
            return False
        try:
            self.drive(entry)
        except Refused as exc:
            self._refuse(type(entry).__name__.lower(), str(exc))
        except (OSError, RuntimeError, ValueError) as exc:
            # A port that never opened or a device that failed: the bench's
            # problem, reported the same way, never the loop's.
            self._refuse("hardware", f"{entry}: {exc}")
        return True

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
            self._present(self._specs[entry.reader], entry)
        else:
            self._keys_at(self._specs[entry.reader], entry.keys)

    def _present(self, spec: ReaderSpec, entry: Present) -> None:
        kind, credkind, value = spec.kind, entry.credkind, entry.value
        assert kind is not None  # the simulator's hardware has every reader's kind
        reads = {"rdm6300": ("tag",), "line": (spec.credkind,), "keypad": ("pin",)}
        allowed = reads.get(kind, ("card", "pin"))
        if credkind not in allowed:
            raise Refused(
                f"reader {spec.id} ({kind}) reads {' and '.join(allowed)}s, not {credkind}s"
            )
        # Checked in full before anything reaches the hardware: an input the
        # reader could never send must not end up as a reader fault or as keys
        # half typed (Python's int() and isdecimal() also take non-ASCII digits).
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
        elif kind == "line" and not (value.isascii() and value.isprintable()):
            raise Refused(f"reader {spec.id}: a scanned value is printable ASCII text")
        if credkind == "pin" and not _DIGITS.fullmatch(value):
            raise Refused(f"reader {spec.id}: a PIN is digits 0-9")
        self.sim.present(spec.id, credkind, value)

    def _keys_at(self, spec: ReaderSpec, keys: str) -> None:
        if spec.kind == "keypad":
            self.sim.write(spec.id, keys.encode())
        elif spec.kind == "wiegand":
            for key in keys:  # one burst (one frame) per key, as a Wiegand keypad sends
                self.sim.pulses(spec.id, wiegand.encode_key(key))
        else:
            raise Refused(f"reader {spec.id} ({spec.kind}) has no keys")

    def _refuse(self, kind: str, detail: str) -> None:
        self.refused += 1
        now = self._clock()
        last, suppressed = self._reported.get(kind, (-1e18, 0))
        if now - last < REPORT_EVERY_S:
            self._reported[kind] = (last, suppressed + 1)
            return
        self._reported[kind] = (now, 0)
        more = f" (and {suppressed} more since the last report)" if suppressed else ""
        log.error("bench input refused, nothing changed: %s%s", detail, more)
