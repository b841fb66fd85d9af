"""OSDP readers: one reader (a "PD") at its address on an OSDP bus
(hal/osdp_bus.py: libosdp's control panel and its threads), over its secure
channel, with the reader's LED and buzzer showing each access decision.

libosdp is imported at the top: the backends import this module only when an
OSDP reader is configured, and turn a missing libosdp into an install hint.

The secure channel is required. The control panel runs with libosdp's
ENFORCE_SECURE flag, so a reader that cannot set it up with our key goes
offline rather than online without it; its reads are ignored until it is up.
With `install = true` the flag is left off, so a reader still on the default
key (SCBK-D, in its install mode) is let in once and given our key at once
(libosdp sends the KEYSET itself); a reader online without a secure channel is
refused all the same. The link's changes go to the sink as `ReaderLink`:
offline or refused (with why), and back.

libosdp waits 5 minutes before it calls an offline reader again; the reader
restarts its link sooner, after 5 s, doubling up to a minute while the reader
stays away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import osdp

from firmware.core.wiring import ReaderSpec
from hal import osdp_data
from hal.device import Clock, log
from hal.errors import HardwareError
from hal.events import MAX_DETAIL_LEN, ReaderLink, ReaderTrouble, Sink
from hal.keypad import DEFAULT_TIMEOUT_S
from hal.osdp_bus import BusReader, Channel, OsdpBus
from hal.reader import DEFAULT_REPEAT_S, Reader

START_GRACE_S = 10.0  # a reader not secure this long after a (re)start is reported
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0
LED_S = 1.5  # how long the LED shows a decision
BEEP_S = 0.1  # the grant's short beep

# libosdp's notification kinds (`EventNotification`): command outcome, secure
# channel up/down, reader online/offline.
_NOTIFY_SC = osdp.EventNotification.SecureChannelStatus
_NOTIFY_PD = osdp.EventNotification.PeripheralDeviceStatus


class OsdpReader(Reader):
    """One OSDP reader at `address` on `bus` (whose control panel has its key)."""

    kind = "osdp"
    indicates = True

    def __init__(
        self,
        reader_id: str,
        sink: Sink,
        bus: OsdpBus,
        *,
        address: int,
        install: bool = False,
        repeat_s: float = DEFAULT_REPEAT_S,
        pin_timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            reader_id, sink, repeat_s=repeat_s, pin_timeout_s=pin_timeout_s, clock=clock
        )
        self.address = address
        self.install = install
        self.bus = bus
        # The link, as the bus thread sees it (only that thread changes these).
        self._sc = False  # secure channel up on our key
        self._online = False
        self._offline = False  # libosdp said offline (it waits 5 min to retry)
        self._restarting = False
        self._waiting_since = 0.0  # since when the secure channel is awaited
        self._received_at_start = 0
        self._retry_s = RETRY_FIRST_S
        self._retry_at: float | None = None
        self._told: str | None = None  # what the sink was last told was wrong
        self._tamper = False
        self._power_failed = False
        self.secure = threading.Event()
        """Set while the secure channel is up on our key and reads are taken
        (tests and the simulator wait on it)."""
        bus.attach(address, self)

    # --- the public surface -----------------------------------------------------

    def start(self) -> None:
        """Start taking reads (and the bus, if this is its first reader)."""
        super().start()
        if self._closed:
            return
        if self.install:
            # Said at every start, in the log and to the hub: a reader swapped for
            # one on the default key would be let in and keyed too.
            detail = (
                "OSDP install mode: a reader on the default key is let in and given "
                "this controller's key; set install = false once it has it"
            )
            log.warning("%s: %s", self.reader_id, detail)
            self._deliver(self._sink, ReaderTrouble(self.reader_id, detail))
        self._waiting_since = self._clock()
        self.bus.start()

    def indicate(self, granted: bool) -> None:
        """Queue green and a short beep (granted) or red (denied) for the reader;
        never waits. Nothing is shown while the secure channel is down."""
        if self.secure.is_set():
            self.bus.show(self.address, granted)

    def close(self) -> None:
        """Stop reporting; the bus stops with its last reader. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.secure.clear()
        self.bus.release(self.address)

    # --- on the bus thread ---------------------------------------------------------

    def on_show(self, granted: bool) -> None:
        """Send the LED (and buzzer) commands for a decision."""
        self._show(granted)

    def on_tick(self) -> None:
        """The link's timers (from this reader's `start` to its `close`)."""
        if self._started and not self._closed:
            self._watch()

    def on_event(self, event: Mapping[str, Any]) -> None:
        """One event from libosdp for this reader."""
        if not self._closed:
            self._event(event)

    def _event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == osdp.Event.Notification:
            self._notified(event)
        elif kind in (osdp.Event.CardRead, osdp.Event.KeyPress):
            if not self.secure.is_set():
                log.warning("%s: read ignored: no secure channel", self.reader_id)
            elif kind == osdp.Event.CardRead:
                self._handle(osdp_data.card(event))
            else:
                for item in osdp_data.keys(event):
                    self._handle(item)
        elif kind == osdp.Event.Status and event.get("type") == osdp.StatusReportType.Local:
            self._status(event)

    def _notified(self, event: Mapping[str, Any]) -> None:
        if self._restarting:
            return  # our own restart took it down
        kind, up = event.get("type"), event.get("arg0") == 1
        if kind == _NOTIFY_SC:
            # arg1 is 1 while the channel runs on the default key (install mode):
            # libosdp then gives the reader our key and sets the channel up again.
            self._sc = up and event.get("arg1") == 0
            if up and not self._sc:
                log.warning("%s: secure channel on the default key: keying it", self.reader_id)
            if not self._sc:
                self._lost()
                return  # what follows (offline, or online without it) says more
        elif kind == _NOTIFY_PD:
            self._online, self._offline = up, not up
        else:
            return
        if self._online and self._sc:
            self._up()
        elif self._online:
            # Only with install = true: libosdp went online without the channel.
            self._lost()
            self._down("refused: online without a secure channel")
        elif self._offline:
            self._lost()
            self._down(self._why_offline())

    def _up(self) -> None:
        if self.secure.is_set():
            return
        log.info("%s: OSDP reader online, secure channel up", self.reader_id)
        self.secure.set()
        self._retry_s, self._retry_at = RETRY_FIRST_S, None
        if self._told is not None:
            self._told = None
            self._deliver(self._sink, ReaderLink(self.reader_id, True, "back online"))

    def _lost(self) -> None:
        if self.secure.is_set():
            self.secure.clear()
            self._waiting_since = self._clock()  # the grace runs again

    def _why_offline(self) -> str:
        channel = self.bus.channel
        if channel.problem is not None:
            return f"offline: {channel.problem}"
        if len(self.bus.addresses) > 1:
            # Others answer on a shared bus: the bytes say nothing about this one.
            return "offline or refused: no answer, or its secure channel failed (wrong key?)"
        if channel.received > self._received_at_start:
            return "refused: it answers but its secure channel failed (wrong key?)"
        return "offline: no answer (unplugged, or wrong port, address or baud)"

    def _down(self, why: str) -> None:
        if self._retry_at is None:
            self._retry_at = self._clock() + self._retry_s
            self._retry_s = min(2 * self._retry_s, RETRY_MAX_S)
        if why != self._told:
            self._told = why
            log.warning("%s: %s", self.reader_id, why)
            self._deliver(self._sink, ReaderLink(self.reader_id, False, why[:MAX_DETAIL_LEN]))

    def _watch(self) -> None:
        """The link's timers: report a reader that has not come up, and restart
        the link (libosdp alone would wait 5 minutes) when it is due."""
        now = self._clock()
        if self._restarting:
            if not self.bus.enabled(self.address):
                self.bus.enable(self.address)
                self._restarting = False
                self._waiting_since, self._received_at_start = now, self.bus.channel.received
            return
        if self.secure.is_set():
            return
        if self._told is None and now - self._waiting_since >= START_GRACE_S:
            self._down(self._why_offline())
        if self._retry_at is not None and now >= self._retry_at:
            log.info("%s: calling the OSDP reader again", self.reader_id)
            self._retry_at = None
            self._online = self._offline = self._sc = False
            self._restarting = self.bus.disable(self.address)

    def _status(self, event: Mapping[str, Any]) -> None:
        status = osdp_data.local_status(event)
        if status is None:
            return
        tampered, power_failed = status
        if tampered != self._tamper:
            self._tamper = tampered
            detail = "tamper: the reader was opened or removed" if tampered else "tamper cleared"
            self._deliver(self._sink, ReaderTrouble(self.reader_id, detail))
        if power_failed != self._power_failed:
            self._power_failed = power_failed
            detail = "the reader reports a power failure" if power_failed else "reader power back"
            self._deliver(self._sink, ReaderTrouble(self.reader_id, detail))

    def _show(self, granted: bool) -> None:
        color = osdp.CommandLEDColor.Green if granted else osdp.CommandLEDColor.Red
        steps = round(LED_S * 10)  # OSDP times are in units of 100 ms
        led = {
            "command": osdp.Command.LED,
            "reader": 0,
            "led_number": 0,
            "temporary": True,
            "control_code": 2,  # set the temporary state, start its timer now
            "on_count": steps,
            "off_count": 0,  # steady, no flashing
            "on_color": color,
            "off_color": osdp.CommandLEDColor.Black,
            "timer_count": steps,
        }
        commands = [led]
        if granted:
            beep = {
                "command": osdp.Command.Buzzer,
                "reader": 0,
                "control_code": 2,  # the default tone
                "on_count": round(BEEP_S * 10),
                "off_count": 0,
                "rep_count": 1,
            }
            commands.append(beep)
        for command in commands:
            if not self.bus.submit(self.address, command):
                log.warning("%s: the reader did not take the LED/buzzer command", self.reader_id)


def osdp_reader(spec: ReaderSpec, sink: Sink, bus: OsdpBus, *, clock: Clock) -> OsdpReader:
    """The `OsdpReader` of an osdp reader spec, on its bus (`osdp_bus`)."""
    return OsdpReader(
        spec.id,
        sink,
        bus,
        address=spec.address,
        install=spec.install,
        repeat_s=spec.repeat_s,
        pin_timeout_s=spec.pin_timeout_s,
        clock=clock,
    )


def osdp_bus(name: str, specs: list[ReaderSpec], channel: Channel) -> OsdpBus:
    """The bus of the osdp reader specs `specs`, all on `channel` (their keys
    read by `firmware.config`)."""
    readers = []
    for spec in specs:
        if spec.scbk is None:
            raise HardwareError(f"reader {spec.id}: an OSDP reader needs its scbk_file")
        readers.append(BusReader(spec.id, spec.address, spec.scbk, spec.install))
    return OsdpBus(name, channel, readers)
