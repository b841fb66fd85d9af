"""The kiosk server over plain HTTP (urllib), against a real controller: the page
and its files, the live stream, the token, and every kind of bad request, each
refused with a clear JSON error while nothing changes."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from firmware.core.errors import LocalError
from firmware.kiosk import listener as kiosk_listener
from firmware.kiosk import server as kiosk_server
from tests.broker import Broker, free_port
from tests.harness import wait_for
from tests.kiosk_club import ADA_CREDIT, ADA_PIN, get, kiosk_rig, post

SCREEN = "screen-test-0001"


class Stream:
    """A kiosk screen's event stream read by hand: (event, data) pairs."""

    def __init__(self, base: str, screen: str = SCREEN, token: str | None = None) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=20)
        query = f"/events?screen={screen}" + (f"&token={token}" if token else "")
        self.conn.request("GET", query)
        self.response = self.conn.getresponse()

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


def test_the_page_its_files_and_a_stream_with_the_board(broker: Broker, tmp_path: Path) -> None:
    with kiosk_rig(broker, tmp_path) as (_rig, base):
        status, page = get(base + "/")
        assert status == 200 and "<title>" in page and "/kiosk.js" in page
        for name in ("/kiosk.css", "/kiosk.js"):
            assert get(base + name)[0] == 200
        stream = Stream(base)
        try:
            board = stream.next("board")
            assert board["club"] == "Riverside Tennis Club"
            assert [(li["id"], li["state"]) for li in board["lights"]] == [
                ("court1", "off"),
                ("court2", "off"),
                ("court3", "on"),  # b2 is playing on court 3
            ]
            assert [d["state"] for d in board["doors"]] == ["locked", "locked"]
            assert [b["id"] for b in board["bookings"]] == ["b2", "b1", "b3"]
            assert stream.next("session") is None
            # Nothing personal on the public board: no member ids or names.
            text = json.dumps(board)
            assert "m1" not in text and "Ada" not in text and "Bo" not in text
            # Sign in by PIN: the answer and the stream both carry the view.
            status, answer = post(base + "/api/pin", {"screen": SCREEN, "pin": ADA_PIN})
            assert status == 200, answer
            assert answer["session"]["first_name"] == "Ada"
            assert answer["session"]["credit"] == ADA_CREDIT
            assert stream.next("session")["first_name"] == "Ada"
            assert post(base + "/api/sign_out", {"screen": SCREEN})[0] == 200
            assert stream.next("session") is None
        finally:
            stream.close()


BAD_REQUESTS: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("/api/pin", b"{not json", {}, 400, "not JSON"),
    ("/api/pin", [1, 2], {}, 400, "JSON object"),
    ("/api/pin", {"pin": "1"}, {}, 400, "'screen'"),
    ("/api/pin", {"screen": "short", "pin": "1"}, {}, 400, "'screen'"),
    ("/api/pin", {"screen": SCREEN, "pin": 4711}, {}, 400, "'pin' must be text"),
    ("/api/pin", {"screen": SCREEN, "pin": "x" * 65}, {}, 400, "at most 64"),
    ("/api/pin", {"screen": SCREEN, "pin": "12ab"}, {}, 400, "digits"),
    ("/api/pin", {"screen": SCREEN, "who": "me"}, {}, 400, "unknown field 'who'"),
    ("/api/quote", {"screen": SCREEN, "light": "court1", "blocks": "2"}, {}, 400, "integer"),
    # JSON's true and 2.0 are not the integer 2 (Python's bool is an int: not here).
    ("/api/quote", {"screen": SCREEN, "light": "court1", "blocks": True}, {}, 400, "integer"),
    ("/api/quote", {"screen": SCREEN, "light": "court1", "blocks": 2.0}, {}, 400, "integer"),
    ("/api/activate", b'{"screen": "%s", "total": NaN}' % SCREEN.encode(), {}, 400, "integer"),
    ("/api/pin", b"[" * 2000 + b"]" * 2000, {}, 400, "not JSON"),  # nested too deep
    ("/api/pin", {"screen": SCREEN, "pin": "1" * 33}, {}, 400, "1 to 32 digits"),
    ("/api/launch", {"screen": SCREEN}, {}, 404, "no such request"),
    ("/api/pin", {"screen": SCREEN}, {"Content-Type": "text/plain"}, 415, "application/json"),
    ("/api/pin", b"x" * 5000, {}, 413, "over 4096"),
    ("/api/quote", {"screen": SCREEN, "light": "court1", "blocks": 1}, {}, 403, "Not signed"),
]


def test_bad_requests_get_clear_errors_and_change_nothing(broker: Broker, tmp_path: Path) -> None:
    with kiosk_rig(broker, tmp_path) as (rig, base):
        stream = Stream(base)
        try:
            stream.next("board")
            assert stream.next("session") is None
            for path, body, headers, code, error in BAD_REQUESTS:
                status, answer = post(base + path, body, headers=headers)
                assert status == code, (path, body, answer)
                assert error in answer["error"], (path, body, answer)
            assert get(base + "/nowhere")[0] == 404
            # Another name for this address (DNS rebinding) gets nothing.
            status, answer = get(base + "/", headers={"Host": "evil.example:80"})
            assert status == 403 and "address" in answer["error"]
            assert get(base + "/events?screen=a")[0] == 400
            # A screen without a stream may not ask anything.
            status, answer = post(base + "/api/pin", {"screen": "other-screen-1", "pin": "1"})
            assert status == 400 and "not connected" in answer["error"]
            # Garbage on the socket: a JSON error, and the server carries on.
            port = int(base.rsplit(":", 1)[1])
            for garbage in (b"\x00\xffGARBAGE\r\n\r\n", b"GET / HTTP/7.0\r\n\r\n"):
                with socket.create_connection(("127.0.0.1", port)) as raw:
                    raw.sendall(garbage)
                    assert b'{"error": ' in _read_all(raw)
            signed_in, debits = rig.core(
                lambda c: (c.kiosk.signed_in(SCREEN), dict(c.outbox.pending_debits))
            )
            assert signed_in is None and debits == {}
            # Still serving, and the stream still open.
            assert post(base + "/api/pin", {"screen": SCREEN, "pin": ADA_PIN})[0] == 200
            assert stream.next("session")["first_name"] == "Ada"
        finally:
            stream.close()


def test_with_a_token_every_request_needs_it(broker: Broker, tmp_path: Path) -> None:
    token = "k" * 24
    with kiosk_rig(broker, tmp_path, token=token) as (_rig, base):
        status, answer = get(base + "/")
        assert status == 401 and "token" in answer["error"]
        assert get(base + "/?token=" + "x" * 24)[0] == 401
        assert get(base + "/kiosk.js", headers={"Cookie": "alc_kiosk=wrong"})[0] == 401
        assert post(base + "/api/touch", {"screen": SCREEN})[0] == 401
        status, page = get(base + "/?token=" + token)
        assert status == 200 and "<title>" in page
        assert get(base + "/kiosk.js", headers={"Cookie": f"alc_kiosk={token}"})[0] == 200
        stream = Stream(base, token=token)
        try:
            assert stream.response.status == 200
            assert "alc_kiosk=" in (stream.response.headers["Set-Cookie"] or "")
            assert stream.next("board")["club"] == "Riverside Tennis Club"
        finally:
            stream.close()


def test_streams_are_bounded_and_a_dropped_screen_is_forgotten(
    broker: Broker, tmp_path: Path
) -> None:
    with kiosk_rig(broker, tmp_path) as (rig, base):
        assert rig.runtime is not None and rig.runtime.kiosk is not None
        server = rig.runtime.kiosk
        streams = [Stream(base, f"screen-bound-{i:04}") for i in range(kiosk_server.MAX_STREAMS)]
        try:
            for s in streams:
                s.next("board")
            status, answer = get(base + "/events?screen=screen-one-too-many")
            assert status == 503 and "too many" in answer["error"]
            wait_for(lambda: rig.core(lambda c: len(c.kiosk.screens)) == len(streams), "screens")
        finally:
            for s in streams:
                s.close()
        # Closed streams are noticed (within a second or so) and forgotten.
        wait_for(lambda: server.screens == 0, "the server to drop closed streams")
        wait_for(lambda: rig.core(lambda c: c.kiosk.screens) == (), "the core to forget them")


def test_refresh_with_no_screen_says_so(broker: Broker, tmp_path: Path) -> None:
    with kiosk_rig(broker, tmp_path) as (rig, _base):
        id = rig.observer.command("refresh_kiosks")["id"]
        replies = rig.observer.wait_final(id)
        assert [(r["status"], r["detail"]) for r in replies] == [
            ("done", "no kiosk screens connected")
        ]


def test_a_port_in_use_is_a_clear_error(broker: Broker, tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        refused = pytest.raises(LocalError, match=rf"kiosk: cannot listen on 127.0.0.1:{port}")
        with refused, kiosk_rig(broker, tmp_path, port=port):
            pass  # never reached; kiosk_rig checks that nothing was left running


def test_a_request_head_trickling_in_is_cut_off(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending its headers a byte at a time (each within the socket
    timeout) would hold a connection slot for ever; the head has a deadline."""
    monkeypatch.setattr(kiosk_listener, "HEAD_DEADLINE_S", 1.0)
    with kiosk_rig(broker, tmp_path) as (_rig, base):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.settimeout(0.25)
            raw.sendall(b"GET / HTTP/1.1\r\n")
            cut_off = False
            for _ in range(200):  # up to ~50 s of trickling: far past the deadline
                try:
                    raw.sendall(b"X-Slow: 1\r\n")
                    cut_off = raw.recv(1) == b""
                except TimeoutError:
                    continue
                except OSError:
                    cut_off = True
                if cut_off:
                    break
            assert cut_off, "the server kept a trickling request open"
        assert get(base + "/")[0] == 200  # and it still serves


def _read_all(raw: socket.socket) -> bytes:
    raw.settimeout(20)
    data = b""
    while chunk := raw.recv(4096):
        data += chunk
    return data
