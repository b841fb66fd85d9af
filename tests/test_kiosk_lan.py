"""Kiosk screens on the LAN (issue 11 section 4), with real sockets against a
real controller, hub and mosquitto: LAN screens over HTTPS with a certificate
from a CA they trust, connections capped per client address before TLS or the
token, a stream slot kept for the controller's own screen, and a tag at the
kiosk's reader signing in only on the controller's own (loopback) screen."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from firmware.config import ConfigError, KioskLan, parse_config
from firmware.core.errors import LocalError
from firmware.kiosk import listener as kiosk_listener
from firmware.kiosk import server as kiosk_server
from firmware.kiosk.server import KioskServer
from tests.broker import Broker, free_port
from tests.harness import BASE, Rig
from tests.kiosk_club import ADA_PIN, ADA_TAG, kiosk_rig
from tests.kiosk_tls import KioskCert, lan_config, make_kiosk_cert
from tests.waiting import WAIT_S, wait_for
from tools.broker_setup.layout import Layout
from tools.broker_setup.main import main as broker

TOKEN = "lan-screens-token-0123456789"
LAN_SCREEN = "screen-lan-0001"
OWN_SCREEN = "screen-own-0001"
BO_TAG = "00000000b2"
OTHER = "127.0.0.2"  # a second client address (all of 127/8 is this machine)


class Https:
    """A LAN screen's HTTPS client: trusts only the test CA, checks the host name."""

    def __init__(self, port: int, cert: KioskCert, source: str = "127.0.0.1") -> None:
        self.port, self.cert, self.source = port, cert, source

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1",
            self.port,
            timeout=20,
            context=self.cert.client(),
            source_address=(self.source, 0),
        )

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, http.client.HTTPMessage]:
        """(status, JSON answer or text, headers)."""
        conn = self.connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json", **(headers or {})} if data else headers
            conn.request(method, path, body=data, headers=sent or {})
            response = conn.getresponse()
            raw = response.read()
            if response.headers["Content-Type"] == "application/json":
                return response.status, json.loads(raw), response.headers
            return response.status, raw.decode(), response.headers
        finally:
            conn.close()


class Stream:
    """A screen's event stream read by hand over any connection: (event, data)."""

    def __init__(self, conn: http.client.HTTPConnection, path: str) -> None:
        self.conn = conn
        conn.request("GET", path)
        self.response = conn.getresponse()

    def next(self, kind: str) -> Any:
        """The data of the next event named `kind` (others are skipped)."""
        event = None
        while True:
            line = self.response.readline().decode()
            if line == "":
                raise AssertionError("the stream ended")
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: ") and event == kind:
                return json.loads(line[6:])

    def close(self) -> None:
        self.response.close()
        self.conn.close()


@contextmanager
def lan_rig(broker: Broker, tmp: Path) -> Iterator[tuple[Rig, str, Https, KioskServer]]:
    """The club with both listeners: yields the rig, the own screen's base URL
    (plain HTTP on loopback), a LAN client and the kiosk server."""
    cert = make_kiosk_cert(tmp / "tls")
    lan_port = free_port()
    with kiosk_rig(broker, tmp, token=TOKEN, lan=lan_config(cert, lan_port)) as (rig, own):
        assert rig.runtime is not None and rig.runtime.kiosk is not None
        yield rig, own, Https(lan_port, cert), rig.runtime.kiosk


def present_tag(rig: Rig, value: str) -> None:
    """A tag at the kiosk's reader (the simulator's bench input)."""
    body = {"t": "present", "reader": "kiosk", "credkind": "tag", "value": value}
    rig.observer.publish_raw(f"{BASE}/bench/in", rig.observer.sealed("bench/in", body))


def test_lan_screens_connect_over_https_and_present_the_token(
    broker: Broker, tmp_path: Path
) -> None:
    with lan_rig(broker, tmp_path) as (_rig, own, lan, kiosk):
        assert kiosk.lan_address == f"https://127.0.0.1:{lan.port}/?token={TOKEN}"
        status, answer, _ = lan.request("GET", "/")
        assert status == 401 and "token" in answer["error"]
        status, page, headers = lan.request("GET", f"/?token={TOKEN}")
        assert status == 200 and "<title>" in page
        # The token goes back as a cookie the browser sends only over TLS.
        cookie = headers["Set-Cookie"]
        assert f"alc_kiosk={TOKEN}" in cookie and "Secure" in cookie and "HttpOnly" in cookie
        assert lan.request("GET", "/kiosk.js", headers={"Cookie": f"alc_kiosk={TOKEN}"})[0] == 200
        # Plain HTTP to the LAN port gets no page: the handshake fails and the
        # connection is closed, and the server carries on.
        with socket.create_connection(("127.0.0.1", lan.port), timeout=20) as raw:
            raw.sendall(f"GET /?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert b"<title>" not in _read_all(raw)
        # A client that does not trust the club's CA refuses the server.
        with pytest.raises(ssl.SSLCertVerificationError):
            socket_ = socket.create_connection(("127.0.0.1", lan.port), timeout=20)
            with ssl.create_default_context().wrap_socket(socket_, server_hostname="127.0.0.1"):
                pass
        # The stream and a request over TLS.
        stream = Stream(lan.connection(), f"/events?screen={LAN_SCREEN}&token={TOKEN}")
        try:
            assert stream.next("board")["club"] == "Riverside Tennis Club"
            assert stream.next("session") is None
            status, answer, _ = lan.request(
                "POST", f"/api/pin?token={TOKEN}", {"screen": LAN_SCREEN, "pin": ADA_PIN}
            )
            assert status == 200 and answer["session"]["first_name"] == "Ada"
            assert stream.next("session")["first_name"] == "Ada"
        finally:
            stream.close()
        # The own screen stays plain HTTP on loopback (with the token as well).
        conn = http.client.HTTPConnection("127.0.0.1", int(own.rsplit(":", 1)[1]), timeout=20)
        try:
            conn.request("GET", f"/?token={TOKEN}")
            response = conn.getresponse()
            assert response.status == 200 and "Secure" not in response.headers["Set-Cookie"]
            response.read()
        finally:
            conn.close()


def test_a_tag_at_the_kiosk_reader_signs_in_only_on_the_own_screen(
    broker: Broker, tmp_path: Path
) -> None:
    with lan_rig(broker, tmp_path) as (rig, own, lan, _kiosk):

        def screens() -> int:
            return int(rig.core(lambda c: len(c.kiosk.screens)))

        lan_stream = Stream(lan.connection(), f"/events?screen={LAN_SCREEN}&token={TOKEN}")
        own_stream: Stream | None = None
        try:
            lan_stream.next("board")
            assert lan_stream.next("session") is None
            wait_for(lambda: screens() == 1, "the LAN screen to join")
            # The only screen connected is on the LAN: nobody is signed in there.
            # (Bo's tag here, Ada's below: the reader drops a tag read again
            # within a second, which the test must not depend on.)
            present_tag(rig, BO_TAG)
            note = lan_stream.next("notice")
            assert note == {"error": "Sign in with your PIN on the screen."}
            assert rig.core(lambda c: c.kiosk.signed_in(LAN_SCREEN)) is None
            # The controller's own screen joins: the tag signs in there only.
            own_port = int(own.rsplit(":", 1)[1])
            own_stream = Stream(
                http.client.HTTPConnection("127.0.0.1", own_port, timeout=20),
                f"/events?screen={OWN_SCREEN}&token={TOKEN}",
            )
            own_stream.next("board")
            assert own_stream.next("session") is None
            wait_for(lambda: screens() == 2, "the own screen to join")
            present_tag(rig, ADA_TAG)
            assert own_stream.next("session")["first_name"] == "Ada"
            who = rig.core(lambda c: (c.kiosk.signed_in(OWN_SCREEN), c.kiosk.signed_in(LAN_SCREEN)))
            assert who == ("m1", None)
            # Asked by the LAN screen itself, its session is still nobody's.
            status, answer, _ = lan.request(
                "POST", f"/api/touch?token={TOKEN}", {"screen": LAN_SCREEN}
            )
            assert status == 403 and "Not signed in" in answer["error"]
        finally:
            lan_stream.close()
            if own_stream is not None:
                own_stream.close()


def test_connections_are_capped_per_client_address_before_tls(
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Held connections say nothing; they must not time out while the test
    # looks, so the deadlines are out of the way (the cap is what is tested).
    monkeypatch.setattr(kiosk_listener, "SOCKET_TIMEOUT_S", 120.0)
    monkeypatch.setattr(kiosk_listener, "HEAD_DEADLINE_S", 120.0)
    cap = kiosk_listener.MAX_PER_CLIENT
    with lan_rig(broker, tmp_path) as (_rig, own, lan, kiosk):
        listener = kiosk.lan
        assert listener is not None
        held: list[socket.socket] = []
        try:
            for _ in range(cap):
                held.append(socket.create_connection(("127.0.0.1", lan.port), timeout=20))
                wait_for(lambda: listener.connections("127.0.0.1") == len(held), "admitted")
            refused_before = listener.refused
            # Over the cap: closed at once, before any TLS, many times over.
            with caplog.at_level(logging.WARNING, logger="alc.kiosk"):
                for _ in range(20):
                    with socket.create_connection(("127.0.0.1", lan.port), timeout=20) as extra:
                        assert _read_all(extra) == b""
            assert listener.refused == refused_before + 20
            # The log is told, not once per connection.
            told = [r.getMessage() for r in caplog.records if "refused over the caps" in r.msg]
            assert 1 <= len(told) < 20 and "the latest from 127.0.0.1" in told[0]
            assert listener.connections("127.0.0.1") == cap
            # Another address is served, and so is the own screen.
            other = Https(lan.port, lan.cert, source=OTHER)
            assert other.request("GET", f"/?token={TOKEN}")[0] == 200
            own_port = int(own.rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.1", own_port, timeout=20)
            conn.request("GET", f"/?token={TOKEN}")
            assert conn.getresponse().status == 200
            conn.close()
        finally:
            for s in held:
                s.close()
        # The held connections end (their handshakes fail): the address is
        # served again.
        wait_for(lambda: listener.connections("127.0.0.1") == 0, "the held connections to end")
        assert lan.request("GET", f"/?token={TOKEN}")[0] == 200


def test_lan_screens_leave_a_stream_for_the_own_screen(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kiosk_server, "MAX_STREAMS", 3)
    with lan_rig(broker, tmp_path) as (_rig, own, lan, _kiosk):
        streams = [
            Stream(lan.connection(), f"/events?screen=screen-lan-{i:04}&token={TOKEN}")
            for i in range(2)
        ]
        try:
            for stream in streams:
                stream.next("board")
            status, answer, _ = lan.request("GET", f"/events?screen=screen-lan-9999&token={TOKEN}")
            assert status == 503 and "too many" in answer["error"]
            own_port = int(own.rsplit(":", 1)[1])
            own_stream = Stream(
                http.client.HTTPConnection("127.0.0.1", own_port, timeout=20),
                f"/events?screen={OWN_SCREEN}&token={TOKEN}",
            )
            try:
                assert own_stream.next("board")["club"] == "Riverside Tennis Club"
            finally:
                own_stream.close()
        finally:
            for stream in streams:
                stream.close()


# --- config and start-up ---------------------------------------------------------------

BASE_CONFIG = {"controller": {"site": "s", "id": "c", "data_dir": "d", "key_file": "k"}}


def kiosk_config(path: Path, **kiosk: str) -> Any:
    return parse_config(path, {**BASE_CONFIG, "kiosk": kiosk})


def test_config_lan_screens_need_https_and_a_token(tmp_path: Path) -> None:
    path = tmp_path / "controller.toml"
    lan = {"lan_listen": "0.0.0.0:8443", "cert_file": "kiosk.crt", "key_file": "kiosk.key"}
    with pytest.raises(ConfigError, match=r"kiosk\.listen: must be a loopback address.*lan_listen"):
        kiosk_config(path, listen="0.0.0.0:8080", token="t" * 16)
    with pytest.raises(ConfigError, match=r"kiosk\.token: is required with lan_listen"):
        kiosk_config(path, **lan)
    for missing in ("cert_file", "key_file"):
        partial = {k: v for k, v in lan.items() if k != missing}
        with pytest.raises(ConfigError, match=rf"kiosk\.{missing}: is required with lan_listen"):
            kiosk_config(path, **partial, token="t" * 16)
    with pytest.raises(ConfigError, match=r"kiosk\.cert_file: is used only with lan_listen"):
        kiosk_config(path, listen="127.0.0.1:8080", cert_file="kiosk.crt")
    with pytest.raises(ConfigError, match=r"kiosk\.lan_listen: must be host:port"):
        kiosk_config(path, **{**lan, "lan_listen": "8443"}, token="t" * 16)
    with pytest.raises(ConfigError, match=r"kiosk\.token: must be at least 16"):
        kiosk_config(path, **lan, token="short")
    config = kiosk_config(path, listen="127.0.0.1:8080", **lan, token="t" * 16)
    assert config.kiosk_listen == "127.0.0.1:8080" and config.kiosk_token == "t" * 16
    assert config.kiosk_lan == KioskLan(
        "0.0.0.0:8443", tmp_path / "kiosk.crt", tmp_path / "kiosk.key"
    )
    only_lan = kiosk_config(path, **lan, token="t" * 16)
    assert only_lan.kiosk_listen is None and only_lan.kiosk_lan is not None
    loopback = kiosk_config(path, listen="127.0.0.1:8080")
    assert loopback.kiosk_token is None and loopback.kiosk_lan is None


def test_a_key_others_can_read_or_a_bad_certificate_stops_the_start(tmp_path: Path) -> None:
    cert = make_kiosk_cert(tmp_path / "tls")
    other = make_kiosk_cert(tmp_path / "other")
    own_port = free_port()

    def start(cert_file: Path, key_file: Path) -> None:
        lan = KioskLan(f"127.0.0.1:{free_port()}", cert_file, key_file)
        KioskServer(f"127.0.0.1:{own_port}", TOKEN, lambda _e: None, lan=lan).stop()

    os.chmod(cert.key_file, 0o640)
    with pytest.raises(
        LocalError, match=rf"key_file: .* other users; run: chmod 600 {cert.key_file}"
    ):
        start(cert.cert_file, cert.key_file)
    os.chmod(cert.key_file, 0o600)
    with pytest.raises(LocalError, match=r"kiosk: cert_file/key_file: cannot use"):
        start(cert.cert_file, other.key_file)  # a key that is not the certificate's
    with pytest.raises(LocalError, match=r"kiosk: cert_file/key_file: cannot use"):
        start(cert.ca_file.with_name("missing.crt"), cert.key_file)
    with pytest.raises(LocalError, match=r"kiosk: key_file: cannot read"):
        start(cert.cert_file, cert.key_file.with_name("missing.key"))
    lan = KioskLan(f"127.0.0.1:{free_port()}", cert.cert_file, cert.key_file)
    with pytest.raises(LocalError, match=r"kiosk: lan_listen needs a token"):
        KioskServer(f"127.0.0.1:{own_port}", None, lambda _e: None, lan=lan)
    # Nothing stayed bound: the own screen's port is free again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", own_port))
    start(cert.cert_file, cert.key_file)  # and the right pair starts


def test_a_certificate_from_alc_broker_cert_serves_lan_screens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The club's CA (`alc broker init`) issues the kiosk's certificate
    (`alc broker cert`); a LAN screen that trusts only that CA is served."""
    broker_dir, out = tmp_path / "broker", tmp_path / "kiosk"
    assert broker(["init", str(broker_dir), "--host", "broker.club.lan"]) == 0
    names = ["--host", "localhost", "--also", "127.0.0.1"]
    assert broker(["cert", str(broker_dir), *names, "--out", str(out)]) == 0
    capsys.readouterr()
    cert = KioskCert(Layout.at(broker_dir).ca_cert, out / "localhost.crt", out / "localhost.key")
    port = free_port()
    kiosk = KioskServer(
        None,
        TOKEN,
        lambda _e: None,
        lan=KioskLan(f"127.0.0.1:{port}", cert.cert_file, cert.key_file),
    )
    kiosk.start()
    try:
        assert kiosk.address == f"https://127.0.0.1:{port}/?token={TOKEN}"
        status, page, _ = Https(port, cert).request("GET", f"/?token={TOKEN}")
        assert status == 200 and "<title>" in page
    finally:
        kiosk.stop()


def lan_kiosk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[KioskServer, int]:
    """A kiosk with only its LAN listener, not started, on a free port; handshakes
    and heads never time out by themselves, so only `stop()` can end one."""
    monkeypatch.setattr(kiosk_listener, "SOCKET_TIMEOUT_S", 3600.0)
    monkeypatch.setattr(kiosk_listener, "HEAD_DEADLINE_S", 3600.0)
    cert = make_kiosk_cert(tmp_path / "tls")
    port = free_port()
    lan = KioskLan(f"127.0.0.1:{port}", cert.cert_file, cert.key_file)
    return KioskServer(None, TOKEN, lambda _e: None, lan=lan), port


def stop_beside_a_silent_client(
    kiosk: KioskServer, port: int, ready: Callable[[], bool], what: str
) -> None:
    """Connect and say nothing; once `ready`, `stop()` must return and hang up
    on the client, which then holds no connection."""
    listener = kiosk.lan
    assert listener is not None
    with socket.create_connection(("127.0.0.1", port), timeout=20) as silent:
        wait_for(ready, what)
        stopper = threading.Thread(target=kiosk.stop, name="test-kiosk-stop")
        stopper.start()
        wait_for(lambda: not stopper.is_alive(), "stop() to return")
        stopper.join()
        assert _read_all(silent) == b""  # hung up on
    assert listener.connections("127.0.0.1") == 0


def test_stop_hangs_up_on_a_client_that_never_says_hello(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A silent client holds its handshake's thread; `stop()` ends it at once
    rather than waiting out the socket timeout."""
    kiosk, port = lan_kiosk(tmp_path, monkeypatch)
    kiosk.start()
    listener = kiosk.lan
    assert listener is not None

    def admitted() -> bool:
        return listener.connections("127.0.0.1") == 1

    stop_beside_a_silent_client(kiosk, port, admitted, "the silent client admitted")


def test_stop_hangs_up_on_a_client_admitted_just_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection admitted whose thread had not yet said its handshake began
    when `stop()` hung up on every head: it is hung up as it says so, and the
    stop does not wait out the socket timeout for it."""
    kiosk, port = lan_kiosk(tmp_path, monkeypatch)
    listener = kiosk.lan
    assert listener is not None
    hung_up_all, started = threading.Event(), threading.Event()
    hang_up_heads, head_started = listener.hang_up_heads, listener.head_started

    def late_head(connection: socket.socket) -> None:
        started.set()
        hung_up_all.wait(WAIT_S)  # the stop's hang-up of every head comes first
        head_started(connection)

    def hang_up(started_before: float = float("inf")) -> None:
        hang_up_heads(started_before)
        if started_before == float("inf"):
            hung_up_all.set()

    monkeypatch.setattr(listener, "head_started", late_head)
    monkeypatch.setattr(listener, "hang_up_heads", hang_up)
    kiosk.start()
    stop_beside_a_silent_client(
        kiosk, port, started.is_set, "the connection's thread at its handshake"
    )


def _read_all(raw: socket.socket) -> bytes:
    raw.settimeout(20)
    data = b""
    try:
        while chunk := raw.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass  # refused with a reset: nothing was said either way
    return data
