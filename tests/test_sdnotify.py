"""`firmware.sdnotify` against a real datagram socket standing in for systemd's."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.sdnotify import Notifier


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket, as systemd's notify socket, and its path."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5.0)
    return False


def test_every_message_arrives_as_one_datagram(systemd: tuple[socket.socket, str]) -> None:
    sock, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.watchdog()
    notifier.status("syncing\n40% done")
    notifier.stopping()
    assert [received(sock) for _ in range(5)] == [
        "READY=1",
        "WATCHDOG=1",
        "WATCHDOG=1",
        "STATUS=syncing 40% done",  # one line: systemd reads a datagram as lines
        "STOPPING=1",
    ]
    notifier.close()
    notifier.watchdog()  # closed: not sent, no error
    assert nothing_waiting(sock)


def test_abstract_namespace_socket() -> None:
    name = f"alc-test-{secrets.token_hex(8)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        assert received(sock) == "READY=1"
        notifier.close()
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    for environ in ({}, {"NOTIFY_SOCKET": ""}):
        notifier = Notifier(environ)
        assert not notifier.enabled
        notifier.ready()
        notifier.watchdog()
        notifier.status("x")
        notifier.stopping()
        notifier.close()
    assert caplog.records == []


def test_a_failed_send_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="alc.sdnotify"):
        notifier.ready()
        notifier.watchdog()
        notifier.watchdog()
    assert len(caplog.records) == 1
    assert "cannot notify systemd" in caplog.records[0].getMessage()
    notifier.close()


def test_a_listener_that_does_not_read_never_blocks_the_sender(
    systemd: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    # The kernel queues a few hundred datagrams for a socket; past that a
    # blocking send would wait for systemd. Ours drops, and says so once.
    sock, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path})
    with caplog.at_level(logging.WARNING, logger="alc.sdnotify"):
        for _ in range(20_000):
            notifier.watchdog()
    assert len(caplog.records) == 1
    assert received(sock) == "WATCHDOG=1"  # what was queued is still there
    notifier.close()


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert Notifier({}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval() == 10.0
    both = {"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": me}
    assert Notifier(both).watchdog_interval() == 2.5
    # Meant for another process (a parent that exec'd us without passing it on).
    other = {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval() is None
    for bad in ({"WATCHDOG_USEC": "ten"}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "-5"}):
        assert Notifier(bad).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"}).watchdog_interval() is None


def test_the_environment_is_the_default(
    systemd: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier()
    notifier.ready()
    assert received(sock) == "READY=1"
    assert notifier.watchdog_interval() == 10.0
    notifier.close()
