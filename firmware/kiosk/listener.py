"""One listening socket of the kiosk's web server, and the bounds it keeps
before any request is read: how many connections it holds (in all, and per
client address), the TLS handshake of the LAN listener, and the deadline of a
request's head.

A connection over a cap is hung up on at accept: no thread is started, nothing
is read, no TLS is spoken. The handshake runs on the connection's own thread,
never on the accepting one (which a client that never says hello would stall),
and counts toward the head's deadline, so a client trickling bytes holds one
slot for `HEAD_DEADLINE_S` at most.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from http.server import ThreadingHTTPServer
from socketserver import BaseRequestHandler
from typing import Any

log = logging.getLogger("alc.kiosk")

MAX_CONNECTIONS = 32  # per listener: a LAN flood never shuts out the own screen
# Per client address on the LAN listener, counted at accept, before the TLS
# handshake or the token: one device cannot take every slot. A browser opens
# at most 6 connections to one host.
MAX_PER_CLIENT = 8
SOCKET_TIMEOUT_S = 5.0  # a client that stalls mid-request or mid-stream is dropped
# A request's line and headers (after the TLS handshake, on the LAN listener)
# must be in within this, however slowly they trickle (a byte every few seconds
# would never trip the socket timeout and could hold every connection slot,
# shutting the real screens out).
HEAD_DEADLINE_S = 10.0
REFUSED_LOG_S = 60.0  # refusals are told in the log at most once a minute


class Listener(ThreadingHTTPServer):
    """One listener: plain HTTP on loopback (`local`), or TLS for the LAN."""

    # Threads are joined at `server_close`, so none outlives the server.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseRequestHandler],
        *,
        local: bool,
        tls: ssl.SSLContext | None = None,
        per_client: int | None = None,
    ) -> None:
        """Bind `address` now (raises OSError); `per_client`: the most
        connections one client address may hold (None: no such cap)."""
        self.host = address[0]
        self.local = local
        self.tls = tls
        self.per_client = per_client
        # Connections held, in all and by client address (at most
        # MAX_CONNECTIONS addresses, so the map is bounded too).
        self._open = 0
        self._clients: dict[str, int] = {}
        self._clients_lock = threading.Lock()
        self.refused = 0  # connections turned away at accept (over a cap)
        self._refused_told = 0  # of them, how many the log has been told of
        self._refused_log_at = float("-inf")
        # Connections whose request head (or TLS handshake) is still coming
        # in, and since when.
        self._heads: dict[socket.socket, float] = {}
        self._heads_lock = threading.Lock()
        # Set by the stop's hang-up of every head: a connection admitted just
        # before it, whose thread had not yet said its head began, is hung up
        # as it says so (else its handshake would hold the stop's join).
        self._hung_up_all = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the one given for 0)."""
        return int(self.server_address[1])

    def connections(self, client: str) -> int:
        """How many connections `client` (an address) holds on this listener."""
        with self._clients_lock:
            return self._clients.get(client, 0)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._admit(client_address[0]):
            # Refused cheaply: no thread, no handshake, nothing read.
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._leave(client_address[0])
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.tls is not None:
                request = self._handshake(self.tls, request)
            if request is not None:
                super().process_request_thread(request, client_address)
        finally:
            self._leave(client_address[0])

    def _admit(self, client: str) -> bool:
        with self._clients_lock:
            held = self._clients.get(client, 0)
            over_client = self.per_client is not None and held >= self.per_client
            if over_client or self._open >= MAX_CONNECTIONS:
                self.refused += 1
                self._tell_refused(client)
                return False
            self._open += 1
            self._clients[client] = held + 1
            return True

    def _tell_refused(self, client: str) -> None:
        # Called under the clients' lock. A flood must be visible to whoever
        # reads the log, without writing a line per refused connection.
        now = time.monotonic()
        if now - self._refused_log_at < REFUSED_LOG_S:
            return
        log.warning(
            "kiosk: %d connection(s) refused over the caps (%d per address, %d in all), "
            "the latest from %s",
            self.refused - self._refused_told,
            self.per_client or MAX_CONNECTIONS,
            MAX_CONNECTIONS,
            client,
        )
        self._refused_told, self._refused_log_at = self.refused, now

    def _leave(self, client: str) -> None:
        with self._clients_lock:
            self._open -= 1
            held = self._clients.pop(client, 1) - 1
            if held > 0:
                self._clients[client] = held

    def _handshake(self, tls: ssl.SSLContext, request: socket.socket) -> ssl.SSLSocket | None:
        """TLS on this connection's own thread, within the head's deadline."""
        try:
            connection = tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except OSError:
            self.shutdown_request(request)
            return None
        self.head_started(connection)
        try:
            connection.settimeout(SOCKET_TIMEOUT_S)
            connection.do_handshake()
        except OSError as exc:  # ssl.SSLError and timeouts included
            log.debug("kiosk: TLS handshake failed: %s", exc)
            self.head_done(connection)
            self.shutdown_request(connection)
            return None
        return connection

    def head_started(self, connection: socket.socket) -> None:
        """A request's head begins to come in on `connection`."""
        # A head that follows the TLS handshake keeps the handshake's start.
        with self._heads_lock:
            if not self._hung_up_all:
                self._heads.setdefault(connection, time.monotonic())
                return
        _hang_up(connection)  # the server is stopping

    def head_done(self, connection: socket.socket) -> None:
        """The head is in (or was refused): no deadline any more."""
        with self._heads_lock:
            self._heads.pop(connection, None)

    def service_actions(self) -> None:
        """Between polls of `serve_forever` (every half second): hang up on
        requests whose head is late (`HEAD_DEADLINE_S`)."""
        self.hang_up_heads(time.monotonic() - HEAD_DEADLINE_S)

    def hang_up_heads(self, started_before: float = float("inf")) -> None:
        """Hang up on connections whose head began before `started_before`
        (all of them by default, at stop)."""
        with self._heads_lock:
            if started_before == float("inf"):
                self._hung_up_all = True
            late = [c for c, since in self._heads.items() if since < started_before]
            for connection in late:
                del self._heads[connection]
        for connection in late:
            _hang_up(connection)


def _hang_up(connection: socket.socket) -> None:
    """End a connection whose request head has not come in. The socket's own
    shutdown, under TLS too: the handler's thread still uses the TLS object,
    which `SSLSocket.shutdown` would drop."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(connection, socket.SHUT_RDWR)
