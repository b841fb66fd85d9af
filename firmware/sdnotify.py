"""The systemd notify protocol (sd_notify(3)): tell systemd that the controller is
ready, that it is still alive (watchdog pings), what it is doing, and that it stops.

systemd hands a service with `Type=notify` the path of a Unix datagram socket in
`NOTIFY_SOCKET`; a path starting with `@` names a socket in the abstract namespace
(the `@` stands for a NUL byte). Every message is one datagram of `KEY=VALUE`
lines. With `WatchdogSec=` set, systemd also passes `WATCHDOG_USEC` (the interval)
and `WATCHDOG_PID` (the process it expects pings from).

Without `NOTIFY_SOCKET` (run by hand, or not by systemd) every method does
nothing. A send that fails (no listener, a full socket, a bad path) is logged
once and otherwise ignored: telling systemd is never worth stopping or slowing a
door for. The socket never blocks: when systemd does not read, the message is
dropped, and missed watchdog pings then make systemd act, as they should.

docs/operations.md, "The watchdog", says what the messages mean to systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger("alc.sdnotify")


class Notifier:
    """Sends sd_notify messages to the socket named in `environ` (default: this
    process's environment, read once, here). Thread-safe; never raises from a send."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False  # a failure was logged: the next ones are not
        self._closed = False

    @property
    def enabled(self) -> bool:
        """True when systemd gave a socket to notify."""
        return self._address is not None

    def ready(self) -> None:
        """Start-up is over: for `Type=notify`, systemd counts the service as started
        from now (and starts what waits for it)."""
        self._send("READY=1")

    def watchdog(self) -> None:
        """A watchdog ping: the service is alive. Send it only when it is true."""
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """A one-line status, shown by `systemctl status`."""
        self._send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        """The service is shutting down on purpose."""
        self._send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """The watchdog interval systemd enforces, in seconds, or None when there is
        none for this process (no `WatchdogSec=`, or `WATCHDOG_PID` names another
        process). A service pings at least twice per interval."""
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 1_000_000 if usec > 0 else None

    def close(self) -> None:
        """Close the socket; later messages are not sent. Idempotent."""
        with self._lock:
            self._closed = True
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        with self._lock:
            if self._closed:
                return
            try:
                if self._socket is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.setblocking(False)
                    self._socket = sock
                self._socket.sendto(message.encode(), self._address)
            except OSError as exc:
                if not self._failed:
                    self._failed = True
                    log.warning(
                        "cannot notify systemd at %r (%s); further failures are not logged",
                        self._address,
                        exc,
                    )


def _address(path: str) -> str | None:
    """`NOTIFY_SOCKET` -> a socket address, None when unset or empty.

    The abstract namespace is Linux's; Python takes its names as str with a
    leading NUL. systemd also allows `vsock:` addresses (for virtual machines);
    a controller never runs there, and sending to one simply fails, logged once."""
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    return path
