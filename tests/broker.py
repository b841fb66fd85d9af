"""The `broker` fixture: a throwaway mosquitto (`tools.broker.Broker`) per test,
and `NoBroker`, a port where a broker should be that hangs up on every client.

The broker is stopped (and waited for) when the fixture ends, so no test leaks a
process. `Broker` and `free_port` are re-exported for the tests that import them
from here.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tools.broker import Broker, BrokerError, free_port

__all__ = ["Broker", "NoBroker", "broker", "free_port"]

POLL_S = 0.05  # how often the listener looks at its stop flag
JOIN_S = 10.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto, stopped after the test."""
    b = Broker(tmp_path / "broker")
    try:
        b.start()
    except BrokerError as exc:
        pytest.fail(str(exc))
    try:
        yield b
    finally:
        b.stop()


class NoBroker:
    """Listens where a stopped broker was and resets every connection at once.

    A client sees no broker, as with nothing listening; the test sees each try
    (`attempts`), so it can wait until a client has failed and retried instead of
    sleeping and hoping it has. Resets (not FIN) leave no TIME_WAIT on the port,
    so the real broker can listen there again as soon as this is closed.
    """

    def __init__(self, host: str, port: int) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(16)
        self._lock = threading.Lock()
        self._attempts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hang_up, name="no-broker")
        self._thread.start()

    @property
    def attempts(self) -> int:
        """Connections taken (and reset) so far."""
        with self._lock:
            return self._attempts

    def close(self) -> None:
        """Stop listening; join the thread."""
        self._stop.set()
        self._thread.join(JOIN_S)
        self._listener.close()
        assert not self._thread.is_alive(), "the no-broker listener did not stop"

    def __enter__(self) -> NoBroker:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def _hang_up(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], POLL_S)
            if not ready:
                continue
            client, _ = self._listener.accept()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            with self._lock:
                self._attempts += 1
