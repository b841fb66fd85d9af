"""A small threaded TCP proxy for fault tests: a client connects to the proxy's
port, the proxy connects on to the target (mosquitto) and forwards bytes both ways.

Modes, switched at any moment from the test thread:

- `pass`: forward everything;
- `blackhole`: a partition. Connections stay open and new ones are accepted, but
  nothing is forwarded in either direction and nothing is read: the bytes wait in
  the kernel's buffers, as unacknowledged segments would, and flow on (intact)
  when the mode is set back. A peer that gives up meanwhile (keepalive) is seen
  only then.
- `reset`: every connection is reset now (RST, no FIN) and new ones are reset as
  soon as they are accepted, until the mode is set back;
- `delay`: each chunk waits `delay_ms` before it is forwarded.

`stop()` resets every connection, closes every socket and joins every thread.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from tests.broker import Broker

PASS, BLACKHOLE, RESET, DELAY = "pass", "blackhole", "reset", "delay"
MODES = (PASS, BLACKHOLE, RESET, DELAY)
POLL_S = 0.1  # how often an idle thread looks at the mode and the stop flag
SEND_TIMEOUT_S = 5.0  # a peer that reads nothing this long loses its connection
CHUNK = 65536
JOIN_S = 10.0


def _reset(sock: socket.socket) -> None:
    """Make the socket's next close send RST, and wake any thread blocked on it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Pair:
    """One proxied connection: the client's socket and ours to the target. Its two
    pump threads share it; the last one to leave closes both sockets."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._users = 2

    def kill(self) -> None:
        """Reset both sides (from any thread); the pumps see it and leave."""
        self.closed.set()
        _reset(self.client)
        _reset(self.upstream)

    def leave(self) -> bool:
        """A pump is done with the pair; True for the last one, which closed it."""
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.closed.set()
            self.client.close()
            self.upstream.close()
        return last


class Proxy:
    """Listens on 127.0.0.1:`port`, forwards to (`target_host`, `target_port`)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._mode = PASS
        self._delay_s = 0.0
        self._stopping = False
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self.accepted = 0  # connections accepted so far (for test output)
        self._accept_thread = threading.Thread(target=self._accept, name="proxy-accept")
        self._accept_thread.start()

    # --- modes ----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str, delay_ms: float = 0.0) -> None:
        """Switch to `mode` (one of `MODES`); `delay_ms` for `delay`."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        with self._cond:
            self._mode = mode
            self._delay_s = delay_ms / 1000 if mode == DELAY else 0.0
            doomed = list(self._pairs) if mode == RESET else []
            self._cond.notify_all()
        for pair in doomed:
            pair.kill()

    def passing(self) -> None:
        self.set_mode(PASS)

    def blackhole(self) -> None:
        self.set_mode(BLACKHOLE)

    def reset(self) -> None:
        self.set_mode(RESET)

    def delay(self, ms: float) -> None:
        self.set_mode(DELAY, ms)

    # --- lifetime -------------------------------------------------------------------

    def stop(self) -> None:
        """Reset every connection, close every socket, join every thread."""
        with self._cond:
            self._stopping = True
            pairs = list(self._pairs)
            self._cond.notify_all()
        for pair in pairs:
            pair.kill()
        self._accept_thread.join(JOIN_S)
        self._listener.close()
        for thread in self._threads:
            thread.join(JOIN_S)
        alive = [t.name for t in [self._accept_thread, *self._threads] if t.is_alive()]
        assert alive == [], f"proxy threads did not stop: {alive}"

    # --- threads --------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping:
            ready, _, _ = select.select([self._listener], [], [], POLL_S)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            self.accepted += 1
            with self._cond:
                refuse = self._mode == RESET or self._stopping
            if refuse:
                _reset(client)
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:  # the target is down: so is the connection
                _reset(client)
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(SEND_TIMEOUT_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._cond:
                if self._stopping or self._mode == RESET:
                    pair.kill()
                    pair.leave()
                    pair.leave()
                    continue
                self._pairs.add(pair)
            n = self.accepted
            for src, dst, name in ((client, upstream, "up"), (upstream, client, "down")):
                thread = threading.Thread(
                    target=self._pump, args=(pair, src, dst), name=f"proxy-{n}-{name}"
                )
                self._threads.append(thread)
                thread.start()
            # Forget the threads that are done, so a long run does not pile them up.
            self._threads = [t for t in self._threads if t.is_alive()]

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            if self._forward(pair, src, dst):
                # The peer closed its side: pass the FIN on, after the data.
                dst.shutdown(socket.SHUT_WR)
            else:
                pair.kill()
        except (OSError, ValueError):
            pair.kill()  # reset, closed by `kill`, or the peer's timeout
        finally:
            if pair.leave():
                with self._cond:
                    self._pairs.discard(pair)

    def _forward(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> bool:
        """Copy `src` to `dst` as the mode allows: True at the end of `src`, False
        when the pair was killed or the proxy stops."""
        while True:
            with self._cond:
                # A blackhole reads nothing: the bytes wait where they are.
                while self._mode == BLACKHOLE and not (pair.closed.is_set() or self._stopping):
                    self._cond.wait(POLL_S)
                if pair.closed.is_set() or self._stopping:
                    return False
                delay_s = self._delay_s
            ready, _, _ = select.select([src], [], [], POLL_S)
            if not ready or self._mode == BLACKHOLE:
                continue
            data = src.recv(CHUNK)
            if not data:
                return True
            if delay_s and pair.closed.wait(delay_s):
                return False
            dst.sendall(data)


@pytest.fixture
def proxy(broker: Broker) -> Iterator[Proxy]:
    """A proxy in front of the test's broker (the same port across its restarts)."""
    p = Proxy(broker.host, broker.port)
    try:
        yield p
    finally:
        p.stop()
