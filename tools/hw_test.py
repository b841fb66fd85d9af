"""`alc hw test --config controller.toml`: the wiring check of a new install.

It builds the configured HAL backend from the controller's own config, so it
sees exactly the pins, polarities and readers the controller would. Then:

1. each relay in turn is energised for `--relay-s` (1 s) and released, its name
   and pin printed, so the technician hears it click and sees which it was;
2. every door contact and exit button change and every reader read is printed
   as it happens, until Ctrl-C or `--seconds`.

Whatever ends it (Ctrl-C, an error, the end of `--seconds`), the backend is
closed, and closing returns every output to its safe state: no relay is left on.

It refuses to run while the `alc-controller` service is active: both would drive
the same relays. A controller started by hand is not seen by that check; with
lgpio its pins are still refused ("GPIO busy"), but a serial reader's port can
be opened twice, and then the two programs split its bytes between them.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, assert_never

from firmware.config import Config, load_config
from firmware.core.errors import LocalError
from hal.events import (
    ContactSensed,
    CredentialRead,
    ExitPressed,
    HalEvent,
    OutputCut,
    ReaderLink,
    ReaderTrouble,
)
from hal.registry import create_backend
from hal.wiring import OutputSpec

SERVICE = "alc-controller.service"
WAIT_STEP_S = 0.2  # how often a wait looks at `stop` besides the events


def describe(event: HalEvent) -> str:
    """One line a technician reads while walking the doors."""
    if isinstance(event, ContactSensed):
        return f"contact:{event.door_id}  {'open' if event.open else 'closed'}"
    if isinstance(event, ExitPressed):
        return f"rex:{event.door_id}  pressed"
    if isinstance(event, CredentialRead):
        return f"reader {event.reader_id}  {event.credkind} {event.value}"
    if isinstance(event, ReaderTrouble):
        return f"reader {event.reader_id}  trouble: {event.detail}"
    if isinstance(event, ReaderLink):
        link = "online" if event.online else "offline"
        return f"reader {event.reader_id}  {link}: {event.detail}"
    if isinstance(event, OutputCut):
        return f"{event.name}  cut at its max_open_s"
    assert_never(event)  # mypy: a new kind of event needs its line here


def relay_label(spec: OutputSpec) -> str:
    """`door:front (GPIO 17)`, and what the energised relay means for a door
    (a fail-safe door's maglock is locked by it)."""
    label = f"{spec.name} (GPIO {spec.pin})"
    if spec.name.startswith("door:"):
        label += ", door locked while on" if spec.inverted else ", door released while on"
    return label


def service_active(name: str = SERVICE) -> bool:
    """Whether systemd runs the controller's service now. False without systemd
    (a bench, a container): there is no service to collide with then."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    done = subprocess.run(
        [systemctl, "is-active", "--quiet", name], check=False, capture_output=True
    )
    return done.returncode == 0


@contextmanager
def lgpio_workdir() -> Iterator[None]:
    """A private working directory for lgpio (the Pi's pin driver) while the
    block runs, unless LG_WD names one already.

    lgpio makes a FIFO in its working directory as it loads, and fails to load
    where it cannot, such as a technician's home under `sudo -u alc`. It changes
    into LG_WD when that is set, so the FIFO goes there and away with it.
    """
    if "LG_WD" in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="alc-hw-") as workdir:
        os.environ["LG_WD"] = workdir
        try:
            yield
        finally:
            del os.environ["LG_WD"]


class HwTest:
    """The backend of one config, its events in a queue, and the two phases.

    `options` go to the backend (tests pass gpiozero's `MockFactory` as
    `pin_factory`). Every output is in its safe state once this is built.
    """

    def __init__(self, config: Config, say: Callable[[str], None], **options: Any) -> None:
        self.say = say
        self.events: queue.Queue[HalEvent | None] = queue.Queue()
        self.backend = create_backend(
            config.backend,
            config.wiring,
            self.events.put,
            where=f"{config.path}: hal.backend",
            **options,
        )
        self._stopped = threading.Event()

    def stop(self) -> None:
        """End the run from another thread: the relay on now goes off at once."""
        self._stopped.set()
        self.events.put(None)  # wakes the wait at once

    def run(self, *, relay_s: float, seconds: float | None) -> None:
        """Switch every relay once, then print what the inputs and readers
        report for `seconds` (None: until `stop()` or Ctrl-C)."""
        backend = self.backend
        specs = backend.specs
        counts = [(specs.outputs, "relay"), (specs.inputs, "input"), (specs.readers, "reader")]
        what = ", ".join(f"{len(s)} {word}{'' if len(s) == 1 else 's'}" for s, word in counts)
        self.say(f"alc hw test: backend {backend.name}: {what}")
        backend.start()  # door contacts report their state now
        for spec in specs.outputs:
            if self._stopped.is_set():
                return
            self._switch(spec, relay_s)
        if self._stopped.is_set():
            return
        until = "Ctrl-C" if seconds is None else f"Ctrl-C or {seconds:g} s"
        self.say(f"watching the inputs and readers until {until}: open doors, press, present")
        self._wait(None if seconds is None else time.monotonic() + seconds)

    def close(self) -> None:
        """Every output back to its safe state, pins and ports released."""
        self.backend.close()

    def _switch(self, spec: OutputSpec, relay_s: float) -> None:
        # The safe state is the relay at rest for every output (a fail-safe
        # door is "inverted": released while the relay rests), so energising
        # means leaving the safe state, whatever the output stands for.
        try:  # from the first line on: whatever is printed, "off" follows
            self.say(f"{relay_label(spec)}: relay on for {relay_s:g} s")
            self.backend.set_output(spec.name, not spec.safe)
            self._wait(time.monotonic() + relay_s)
        finally:  # Ctrl-C included: the relay goes off before anything else
            self.backend.set_output(spec.name, spec.safe)
            self.say(f"{spec.name}: relay off")

    def _wait(self, deadline: float | None) -> None:
        """Print events as they come until `deadline` (None: for ever) or `stop()`."""
        while not self._stopped.is_set():
            step = WAIT_STEP_S
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return
            try:
                event = self.events.get(timeout=step)
            except queue.Empty:
                continue
            if event is not None:
                self.say(describe(event))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc hw`."""
    parser = argparse.ArgumentParser(prog="alc hw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    test = sub.add_parser("test", help="switch each relay, then show inputs and reads")
    test.add_argument("--config", required=True, help="path of controller.toml")
    test.add_argument(
        "--relay-s", type=float, default=1.0, help="how long each relay stays on (1 s)"
    )
    test.add_argument(
        "--seconds", type=float, default=None, help="stop watching after this (default: Ctrl-C)"
    )
    args = parser.parse_args(argv)
    if not args.relay_s > 0 or (args.seconds is not None and args.seconds < 0):
        parser.error("--relay-s must be positive and --seconds not negative")
    try:
        config = load_config(args.config)
    except LocalError as exc:
        print(f"alc hw test: {exc}", file=sys.stderr)
        return 2
    if config.unwired is not None:
        print(f"alc hw test: no hardware wiring to test: {config.unwired}", file=sys.stderr)
        return 2
    if service_active():
        print(
            f"alc hw test: {SERVICE} is running and holds the pins; "
            "stop it first: sudo systemctl stop alc-controller",
            file=sys.stderr,
        )
        return 2
    with lgpio_workdir():
        try:
            hw = HwTest(config, lambda line: print(line, flush=True))
        except LocalError as exc:
            print(f"alc hw test: {exc}", file=sys.stderr)
            return 2
        try:
            hw.run(relay_s=args.relay_s, seconds=args.seconds)
        except KeyboardInterrupt:
            print("stopped", flush=True)
            return 130
        finally:
            hw.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
