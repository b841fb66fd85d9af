"""A throwaway mosquitto 2.x on a free loopback port: for tests, benchmarks and demos.

    with Broker.temporary() as broker:
        ...  # connect to broker.host, broker.port

mosquitto 2 accepts no remote clients without an explicit `listener`, and as root
it drops to the `mosquitto` user unless told `user root` (it then could not write
its own working directory). Each broker gets its own config, log and persistence
file in `workdir`, so several can run side by side. `stop()` waits for the process,
so nothing outlives its owner.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from firmware.core.errors import LocalError

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
FALLBACK_BINARY = "/usr/sbin/mosquitto"  # Debian puts it outside a user's PATH


class BrokerError(LocalError):
    """mosquitto is missing, or did not start listening."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    """The mosquitto executable, or `BrokerError` saying how to install it."""
    found = shutil.which("mosquitto") or (
        FALLBACK_BINARY if os.access(FALLBACK_BINARY, os.X_OK) else None
    )
    if found is None:
        raise BrokerError(
            "mosquitto is not installed: run `make setup` (it installs it with apt-get)"
        )
    return found


def wait_listening(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on (host, port), False after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


@dataclass
class Broker:
    """One mosquitto process listening on 127.0.0.1:`port`, its files in `workdir`.

    `restart()` keeps the port (and, with `persistence`, the broker's sessions and
    queued messages), so clients reconnect to the same address. With `conf_file`
    it runs that config exactly as it is (one `alc broker init` wrote, listening
    on 127.0.0.1:`port`), and `config()`, `persistence` and `max_queued_messages`
    are not used.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    persistence: bool = True
    max_queued_messages: int = 100_000
    conf_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The address clients connect to."""
        return "127.0.0.1"

    @property
    def log_file(self) -> Path:
        """Where mosquitto writes its errors."""
        return self.workdir / "mosquitto.log"

    @classmethod
    @contextmanager
    def temporary(
        cls, *, persistence: bool = True, max_queued_messages: int = 100_000
    ) -> Iterator[Broker]:
        """A started broker in a fresh temporary directory; stopped and removed on exit."""
        with tempfile.TemporaryDirectory(prefix="alc-broker-") as tmp:
            broker = cls(
                Path(tmp), persistence=persistence, max_queued_messages=max_queued_messages
            )
            broker.start()
            try:
                yield broker
            finally:
                broker.stop()

    def config(self) -> str:
        """The mosquitto.conf text this broker runs with."""
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # The default (1000) would drop QoS 1 messages for a controller that
            # is busy or offline while the hub sends a large snapshot.
            f"max_queued_messages {self.max_queued_messages}",
            "log_dest stderr",
            "log_type error",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        if os.geteuid() == 0:
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start mosquitto and wait until it accepts connections; `BrokerError` if it
        exits or does not listen within `timeout` seconds."""
        if self.process is not None and self.process.poll() is None:
            raise BrokerError(f"the broker on port {self.port} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.conf_file
        if conf is None:
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(self.config())
        with open(self.log_file, "ab") as log:
            # The child holds its own copy of the descriptor.
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise BrokerError(f"mosquitto exited: {self.log_file.read_text().strip()}")
            if wait_listening(self.host, self.port, 0.2):
                return
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout:g} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` and wait for the process (killing it after 10 s). Harmless
        when it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop with `sig` (SIGKILL: a crash) and start again on the same port."""
        self.stop(sig)
        self.start()
