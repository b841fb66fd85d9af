"""A simulated OSDP reader: libosdp's own peripheral device (`osdp.PeripheralDevice`)
on the far end of a loopback, so the simulator's and the tests' presentations go
through the real OSDP stack and its secure channel.

`OsdpPeer` runs libosdp's PD thread (started by `start`, stopped by `close`)
and keeps the last commands the control panel sent it (LED, buzzer, KEYSET),
bounded; `SimulatedOsdpReader` is the control panel and its peer together, as
the sim backend builds them.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import osdp

from firmware.core.wiring import ReaderSpec
from hal import osdp_data, wiegand
from hal.device import Clock
from hal.events import Sink
from hal.osdp_channel import Loopback, LoopbackEnd
from hal.osdp_reader import OsdpReader, osdp_bus

COMMANDS_KEPT = 64
KEYS_PER_EVENT = 32
_CAPABILITIES = [
    (osdp.Capability.CommunicationSecurity, 1, 1),
    (osdp.Capability.LEDControl, 1, 1),
    (osdp.Capability.AudibleControl, 1, 1),
    (osdp.Capability.CardDataFormat, 1, 1),
    (osdp.Capability.ReceiveBufferSize, 1, 0),
]


class OsdpPeer:
    """libosdp's peripheral device at `address`, keyed with `scbk` (None: only
    the default key, with `install` mode to take a new one)."""

    def __init__(
        self,
        channel: LoopbackEnd,
        address: int,
        scbk: bytes | None,
        *,
        install: bool = False,
        log_level: int = osdp.LogLevel.Critical,
    ) -> None:
        self.address = address
        flags = [osdp.LibFlag.InstallMode] if install else []
        info = osdp.PDInfo(address, channel, scbk=scbk, flags=flags)
        self._pd = osdp.PeripheralDevice(
            info,
            osdp.PDCapabilities(_CAPABILITIES),
            log_level=log_level,
            command_handler=self._command,
        )
        self._started = False
        self.commands: deque[dict[str, Any]] = deque(maxlen=COMMANDS_KEPT)
        """The latest commands from the control panel, oldest first."""

    def start(self) -> None:
        """Start libosdp's PD thread: the reader answers from now on."""
        if not self._started:
            self._started = True
            self._pd.start()

    def close(self) -> None:
        """Stop the PD thread. Idempotent."""
        if self._started:
            self._started = False
            self._pd.teardown()

    @property
    def secure(self) -> bool:
        """True while the control panel has a secure channel with this reader."""
        return bool(self._pd.is_sc_active())

    def card(self, bits: tuple[int, ...]) -> bool:
        """Present a card read as raw Wiegand `bits`; False if libosdp refused it."""
        event = {"event": osdp.Event.CardRead, **osdp_data.encode_card(bits)}
        return bool(self._pd.submit_event(event))

    def raw_card(self, data: bytes, length: int, fmt: int = osdp_data.FORMAT_RAW) -> bool:
        """Present any card read: `length` bits of `data` (or ASCII with `fmt` 2)."""
        event = {
            "event": osdp.Event.CardRead,
            "reader_no": 0,
            "format": fmt,
            "direction": 0,
            "length": length,
            "data": data,
        }
        return bool(self._pd.submit_event(event))

    def keys(self, text: str) -> bool:
        """Press keys (`0`-`9`, `*`, `#`), sent as keypad events of up to
        `KEYS_PER_EVENT` keys (libosdp's limit is 64 bytes an event)."""
        data = text.encode("ascii")
        for start in range(0, len(data), KEYS_PER_EVENT):
            chunk = data[start : start + KEYS_PER_EVENT]
            event = {"event": osdp.Event.KeyPress, "reader_no": 0, "data": chunk}
            if not self._pd.submit_event(event):
                return False
        return True

    def tamper(self, opened: bool) -> bool:
        """Report the tamper switch opened (or closed again)."""
        report = bytes([1 if opened else 0, 0])
        event = {
            "event": osdp.Event.Status,
            "type": osdp.StatusReportType.Local,
            "report": report,
        }
        return bool(self._pd.submit_event(event))

    def saw(self, match: dict[str, Any]) -> bool:
        """True once a kept command's items include all of `match`."""
        return any(match.items() <= command.items() for command in list(self.commands))

    def _command(self, command: dict[str, Any]) -> tuple[int, None]:
        # libosdp's PeripheralDevice also keeps every command on an unbounded
        # queue for `get_command`: take this one off it, keep ours.
        self._pd.get_command(timeout=-1)
        self.commands.append(command)
        return 0, None


class SimulatedOsdpReader(OsdpReader):
    """An `OsdpReader` whose reader is an `OsdpPeer` on a loopback (the simulator's
    `kind = "osdp"`): keyed like the config says, or on the default key in
    install mode when `install = true`. `close()` stops both."""

    def __init__(self, spec: ReaderSpec, sink: Sink, *, clock: Clock = time.monotonic) -> None:
        link = Loopback()
        super().__init__(
            spec.id,
            sink,
            osdp_bus(spec.id, [spec], link.ends[0]),
            address=spec.address,
            install=spec.install,
            repeat_s=spec.repeat_s,
            pin_timeout_s=spec.pin_timeout_s,
            clock=clock,
        )
        self.link = link
        key = None if spec.install else spec.scbk
        self.peer = OsdpPeer(link.ends[1], spec.address, key, install=spec.install)

    def start(self) -> None:
        """Start the simulated reader, then the control panel."""
        self.peer.start()
        super().start()

    def close(self) -> None:
        """Stop the control panel, then the simulated reader."""
        super().close()
        self.peer.close()

    def present(self, credkind: str, value: str, *, wait_s: float) -> None:
        """Present a credential as an OSDP reader sends it: keys and `#` for a
        PIN, a Wiegand frame for a `f:ccccc` or decimal card value, the bits of
        a hex value, or else the value in ASCII. Waits up to `wait_s` for the
        secure channel; `RuntimeError` if it is not up by then."""
        self._wait_secure(wait_s)
        if credkind == "pin":
            sent = self.peer.keys(f"{value}#")
        elif value.replace(":", "", 1).isdigit():
            sent = self.peer.card(wiegand.encode_card(value))
        elif _is_hex(value):
            sent = self.peer.raw_card(bytes.fromhex(value), 4 * len(value))
        else:
            sent = self.peer.raw_card(value.encode(), len(value), osdp_data.FORMAT_ASCII)
        if not sent:
            raise RuntimeError(f"{self.reader_id}: libosdp's reader refused the read")

    def press(self, keys: str, *, wait_s: float) -> None:
        """Press `keys` on the reader's keypad (waiting as `present` does)."""
        self._wait_secure(wait_s)
        if not self.peer.keys(keys):
            raise RuntimeError(f"{self.reader_id}: libosdp's reader refused the keys")

    def _wait_secure(self, wait_s: float) -> None:
        if not self.secure.wait(wait_s):
            raise RuntimeError(f"{self.reader_id}: the OSDP secure channel is not up")


def _is_hex(value: str) -> bool:
    return len(value) % 2 == 0 and all(c in "0123456789abcdef" for c in value)
