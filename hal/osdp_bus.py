"""One OSDP bus: libosdp's control panel for every reader on one RS-485 port (or
one loopback), the two threads that run it, and the bounded queue between them.

- libosdp's own thread (`ControlPanel.start`) drives the protocol: it polls each
  reader every 20 ms or so (OSDP is a polled protocol; a reader not polled for
  8 s drops its secure channel) and hands events to `_from_libosdp`, which only
  queues them;
- `alc-hal-osdp-<name>` takes them off that queue with the LED and buzzer
  commands `show` queues, gives each to its reader (`OsdpReader` in
  hal/osdp_reader.py, which turns card reads and keys into credentials and
  keeps the link's state), and lets every reader look at its link's timers.

The bus starts with its first reader's `start` and stops (both threads, then
the channel) when its last reader closes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import osdp

from hal.device import log
from hal.errors import HardwareError

TICK_S = 0.5  # the bus thread lets the readers look at their links this often
QUEUE_MAX = 256  # events and decisions waiting for the bus thread
JOIN_S = 5.0


class Channel(Protocol):
    """What libosdp reads and writes (`hal.osdp_channel`), and what a reader looks
    at to tell an absent reader from one that refuses our key."""

    @property
    def problem(self) -> str | None: ...

    @property
    def received(self) -> int: ...

    def read(self, max_bytes: int) -> bytes: ...

    def write(self, data: bytes) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Member(Protocol):
    """A reader on the bus, as the bus thread calls it."""

    def on_event(self, event: Mapping[str, Any]) -> None:
        """One event from libosdp for this reader."""

    def on_show(self, granted: bool) -> None:
        """Show a decision (queued by `OsdpBus.show`)."""

    def on_tick(self) -> None:
        """Look at the link's timers."""


@dataclass(frozen=True, slots=True)
class BusReader:
    """What the control panel needs of one reader on the bus."""

    name: str
    address: int
    scbk: bytes = field(repr=False)
    install: bool = False


@dataclass(frozen=True, slots=True)
class _Show:
    address: int
    granted: bool


class OsdpBus:
    """The control panel of `readers` on `channel`. With `install` a reader's
    entry runs without libosdp's ENFORCE_SECURE flag, so one on the default key
    (SCBK-D, its install mode) is let in once and given its key at once."""

    def __init__(
        self,
        name: str,
        channel: Channel,
        readers: Sequence[BusReader],
        *,
        log_level: int = osdp.LogLevel.Critical,
    ) -> None:
        self.name = name
        self.channel = channel
        self.addresses = [r.address for r in readers]
        infos = []
        for r in readers:
            flags = [osdp.LibFlag.EnableNotification]
            if not r.install:
                flags.append(osdp.LibFlag.EnforceSecure)
            name_ = r.name[:15]  # libosdp's limit
            infos.append(osdp.PDInfo(r.address, channel, scbk=r.scbk, name=name_, flags=flags))
        try:
            # libosdp logs on stdout; what matters is reported by the readers instead.
            self._cp = osdp.ControlPanel(
                infos, log_level=log_level, event_handler=self._from_libosdp
            )
        except Exception as exc:
            raise HardwareError(f"OSDP bus {name}: libosdp refused the setup: {exc}") from exc
        self._members: dict[int, Member] = {}
        self._open: set[int] = set()
        self._queue: queue.Queue[tuple[int, Mapping[str, Any]] | _Show] = queue.Queue(QUEUE_MAX)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        """Events and decisions dropped because the queue was full."""

    # --- the readers' side ------------------------------------------------------

    def attach(self, address: int, member: Member) -> None:
        """Hand `address`'s events to `member` from now on."""
        if address not in self.addresses:
            raise ValueError(f"address {address} is not on OSDP bus {self.name}")
        with self._lock:
            self._members[address] = member
            self._open.add(address)

    def start(self) -> None:
        """Start libosdp's thread and the bus thread, once."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._cp.start()
            self._thread = threading.Thread(
                target=self._run, name=f"alc-hal-osdp-{self.name}", daemon=True
            )
            self._thread.start()

    def release(self, address: int) -> None:
        """`address`'s reader is done; the last one to go stops the bus."""
        with self._lock:
            self._open.discard(address)
            if self._open or self._closed:
                return
            self._closed = True
        self._stop()

    def show(self, address: int, granted: bool) -> None:
        """Queue a decision for `address`'s LED and buzzer; never waits."""
        self._put(_Show(address, granted))

    def submit(self, address: int, command: dict[str, Any]) -> bool:
        """Send `command` to `address` (the bus thread; waits at most for one
        of libosdp's refresh steps)."""
        return bool(self._cp.submit_command(address, command))

    def enabled(self, address: int) -> bool:
        """False while libosdp holds `address` disabled (a restart under way)."""
        return bool(self._cp.is_pd_enabled(address))

    def disable(self, address: int) -> bool:
        """Ask libosdp to drop `address`'s link (the first half of a restart)."""
        return bool(self._cp.disable_pd(address))

    def enable(self, address: int) -> None:
        """Start `address`'s link afresh, its stale link notifications dropped."""
        self._drop_notifications(address)
        self._cp.enable_pd(address)

    # --- libosdp's thread --------------------------------------------------------

    def _from_libosdp(self, pd: int, event: Mapping[str, Any]) -> int:
        address = self.addresses[pd]
        # libosdp's ControlPanel also keeps every event on a queue of its own for
        # `get_event`, unbounded: take this one off it again, and keep ours.
        self._cp.get_event(address, timeout=-1)
        self._put((address, event))
        return 0

    def _put(self, item: tuple[int, Mapping[str, Any]] | _Show) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            log.warning("OSDP bus %s: queue full, %d dropped", self.name, self.dropped)

    # --- the bus thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                item = None
            with self._lock:
                members = dict(self._members)
            try:
                if isinstance(item, _Show):
                    member = members.get(item.address)
                    if member is not None:
                        member.on_show(item.granted)
                elif item is not None:
                    member = members.get(item[0])
                    if member is not None:
                        member.on_event(item[1])
                for member in members.values():
                    member.on_tick()
            except Exception:
                # A bug here must not leave the door's reader dead for good.
                log.exception("OSDP bus %s: handling failed", self.name)

    def _drop_notifications(self, address: int) -> None:
        # A restart's own "offline" notifications are stale once it is over;
        # reads cannot be among them (the reader was disabled).
        kept: list[tuple[int, Mapping[str, Any]] | _Show] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            stale = (
                not isinstance(item, _Show)
                and item[0] == address
                and item[1].get("event") == osdp.Event.Notification
            )
            if not stale:
                kept.append(item)
        for item in kept:
            self._put(item)

    def _stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(JOIN_S)
            if thread.is_alive():
                log.error("OSDP bus %s: thread did not stop within %.0f s", self.name, JOIN_S)
            try:
                self._cp.teardown()
            except Exception:
                log.exception("OSDP bus %s: stopping libosdp failed", self.name)
        self.channel.close()
