"""The kiosk's HTTP server: the page, its live stream, and its requests.

An adapter like the MQTT link: it never touches the controller core. A page's
stream opening or closing, and every request, become events submitted to the
runtime's queue (`ScreenJoined`, `ScreenLeft`, `KioskRequest`); the core's
`KioskSend` and `KioskAnswer` come back through `push` and `answer`. A request
thread waits for its answer (at most `ANSWER_WAIT_S`), never for anything else.

Endpoints (all JSON errors, `{"error": text}`):

    GET  /                     the page (index.html), /kiosk.css, /kiosk.js
    GET  /events?screen=ID     server-sent events: board, session, notice, reload, ping
    POST /api/<what>           {"screen": ID, ...}: pin, sign_out, check_in, quote,
                               activate, refreshed, touch
    GET  /metrics              with `[metrics]`: the Prometheus text (`serve_metrics`)

Two listeners, either or both: `listen`, plain HTTP on loopback, for the
controller's own screen (its streams are `local`: the only screens a tag at the
kiosk's reader signs in on), and `lan`, HTTPS for screens elsewhere on the LAN.
With a token configured every request must carry it, as `?token=` (then the page
gets it as a cookie) or as that cookie. Bounded: connections per listener
and, on the LAN listener, per client address before TLS or the token
(`firmware.kiosk.listener`, which also holds the TLS handshake and the
deadline of a request's head), streams (`MAX_STREAMS`, one kept for the own
screen), each stream's queue (`STREAM_QUEUE`; a screen that falls that far behind
is cut off and reconnects to a fresh board), request bodies (`MAX_BODY`) and
requests waiting for the core (`MAX_WAITING`). `stop()` ends every stream and
joins every thread.

Longer than 400 lines on purpose: one HTTP server and its request handler,
which check every request's shape before anything reaches the core; the
screens' content is the core's (`firmware.core.kiosk*`), the sockets' bounds
are `firmware.kiosk.listener`'s.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import logging
import queue
import re
import select
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from firmware.config import KioskLan, kiosk_address
from firmware.core.errors import LocalError
from firmware.core.inputs import Input, KioskRequest, ScreenJoined, ScreenLeft
from firmware.kiosk.listener import MAX_PER_CLIENT, SOCKET_TIMEOUT_S, Listener
from firmware.kiosk.tls import server_context

log = logging.getLogger("alc.kiosk")

MAX_STREAMS = 8
STREAM_QUEUE = 64
MAX_BODY = 4096
MAX_WAITING = 32
ANSWER_WAIT_S = 5.0
HEARTBEAT_S = 10.0  # a ping this often: a dead screen is noticed, and notices a dead link
GONE_CHECK_S = 1.0  # how often a quiet stream checks that its screen is still there
RETRY_MS = 2000
COOKIE = "alc_kiosk"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/kiosk.css": ("kiosk.css", "text/css; charset=utf-8"),
    "/kiosk.js": ("kiosk.js", "text/javascript; charset=utf-8"),
}
_SCREEN = re.compile(r"[A-Za-z0-9_-]{8,64}")
# Each request's fields and their types; anything else is refused.
_FIELDS: dict[str, dict[str, type]] = {
    "pin": {"pin": str},
    "sign_out": {},
    "touch": {},
    "check_in": {"booking": str},
    "quote": {"light": str, "blocks": int},
    "activate": {"light": str, "blocks": int, "total": int},
    "refreshed": {"refresh": str},
}
_STATUS = {
    "ok": HTTPStatus.OK,
    "refused": HTTPStatus.FORBIDDEN,
    "bad": HTTPStatus.BAD_REQUEST,
    "busy": HTTPStatus.SERVICE_UNAVAILABLE,
}


@runtime_checkable
class MetricsPage(Protocol):
    """What `/metrics` serves (`firmware.metrics.edge.MetricsEdge`)."""

    content_type: str

    def render_metrics(self) -> bytes:
        """The page; `TimeoutError` when it cannot be made now (503)."""
        ...


@dataclass(eq=False)
class _Stream:
    """One open event stream of one screen."""

    screen: str
    local: bool = False  # came in on the loopback listener: the controller's own screen
    messages: queue.Queue[bytes | None] = field(default_factory=lambda: queue.Queue(STREAM_QUEUE))
    current: bool = True  # False once a newer stream of the same screen took over

    def close(self) -> None:
        # Room for the sentinel is made if the queue is full: closing must not block.
        while True:
            try:
                self.messages.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.messages.get_nowait()


@dataclass(eq=False)
class _Waiting:
    """A request thread waiting for the core's answer."""

    done: threading.Event = field(default_factory=threading.Event)
    status: str = "busy"
    body: dict[str, Any] = field(default_factory=dict)


class _HTTPServer(Listener):
    """A listener of this kiosk: its handler reaches the kiosk through it."""

    def __init__(
        self,
        address: tuple[str, int],
        kiosk: KioskServer,
        *,
        local: bool,
        tls: ssl.SSLContext | None = None,
        per_client: int | None = None,
    ) -> None:
        self.kiosk = kiosk
        super().__init__(address, _Handler, local=local, tls=tls, per_client=per_client)


class KioskServer:
    """The kiosk web server of one controller; see the module docstring."""

    def __init__(
        self,
        listen: str | None,
        token: str | None,
        submit: Callable[[Input], object],
        *,
        lan: KioskLan | None = None,
    ) -> None:
        """Bind `listen` (loopback host:port, plain HTTP) and `lan` (HTTPS) now,
        so a port in use or an unusable certificate is a clear error at start;
        serve from `start()`. Raises `LocalError`."""
        if lan is not None and token is None:
            # The config refuses this too; a LAN screen without a token would
            # be anyone on the network.
            raise LocalError("kiosk: lan_listen needs a token")
        self.token = token
        self.submit = submit
        self._listeners: list[_HTTPServer] = []
        try:
            if listen is not None:
                self._listeners.append(self._bind(listen, local=True))
            if lan is not None:
                tls = server_context(lan.cert_file, lan.key_file)
                self._listeners.append(
                    self._bind(lan.listen, local=False, tls=tls, per_client=MAX_PER_CLIENT)
                )
        except BaseException:
            for listener in self._listeners:
                listener.server_close()
            raise
        if not self._listeners:
            raise LocalError("kiosk: neither listen nor lan_listen is set")
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._generation = 0  # of `_streams`, see `open_screens`
        self._waiting: dict[int, _Waiting] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._threads: dict[_HTTPServer, threading.Thread] = {}
        self._metrics: MetricsPage | None = None
        self._metrics_lan = False

    def _bind(
        self,
        listen: str,
        *,
        local: bool,
        tls: ssl.SSLContext | None = None,
        per_client: int | None = None,
    ) -> _HTTPServer:
        try:
            host, port = kiosk_address(listen)
            return _HTTPServer((host, port), self, local=local, tls=tls, per_client=per_client)
        except (ValueError, OSError) as exc:
            raise LocalError(f"kiosk: cannot listen on {listen}: {exc}") from None

    @property
    def own(self) -> _HTTPServer | None:
        """The loopback listener (the controller's own screen), if any."""
        return next((s for s in self._listeners if s.local), None)

    @property
    def lan(self) -> _HTTPServer | None:
        """The HTTPS listener for LAN screens, if any."""
        return next((s for s in self._listeners if not s.local), None)

    @property
    def address(self) -> str:
        """The page's address: the own screen's when there is one, else the
        LAN screens' (with the token when there is one)."""
        return _address(self._listeners[0], self.token)

    @property
    def lan_address(self) -> str | None:
        """The LAN screens' page address (https, with the token), if any."""
        lan = self.lan
        return _address(lan, self.token) if lan is not None else None

    def start(self) -> None:
        """Serve each listener in a thread until `stop()`; after a thread died,
        serve its listener again."""
        for listener in self._listeners:
            thread = self._threads.get(listener)
            if thread is not None and thread.is_alive():
                continue
            name = "alc-kiosk" if listener.local else "alc-kiosk-lan"
            thread = threading.Thread(
                target=listener.serve_forever, kwargs={"poll_interval": 0.5}, name=name
            )
            self._threads[listener] = thread
            thread.start()
            log.info("kiosk screens: %s", _address(listener, None))

    def alive(self) -> bool:
        """False once a serving thread has died (not before `start`, not after `stop`)."""
        if self._stopping.is_set():
            return True
        return all(thread.is_alive() for thread in self._threads.values())

    def stop(self) -> None:
        """End every stream and request, close the sockets, join every thread."""
        self._stopping.set()
        for listener, thread in self._threads.items():
            if thread.is_alive():
                listener.shutdown()
            thread.join()
        with self._lock:
            streams = list(self._streams.values())
            waiting = list(self._waiting.values())
        for stream in streams:
            stream.close()
        for w in waiting:
            w.done.set()
        for listener in self._listeners:
            listener.hang_up_heads()  # a stalled head or handshake would hold the join
            listener.server_close()

    def serve_metrics(self, page: MetricsPage, *, lan: bool = False) -> None:
        """Serve `page` at `GET /metrics` on the loopback listener, and with `lan`
        on the LAN listener too (behind the token, as every request there).
        Before `start()`."""
        self._metrics, self._metrics_lan = page, lan

    def metrics_page(self, local: bool) -> MetricsPage | None:
        """The `/metrics` page served on a listener (`local`: the loopback one)."""
        return self._metrics if local or self._metrics_lan else None

    # --- from the loop ------------------------------------------------------------

    def push(self, screen: str | None, kind: str, data: Any) -> None:
        """Send one event to `screen`'s stream (None: every stream). Never blocks:
        a screen whose queue is full is cut off (it reconnects to a fresh board)."""
        message = _sse(kind, data)
        with self._lock:
            streams = [s for s in self._streams.values() if screen is None or s.screen == screen]
        for stream in streams:
            try:
                stream.messages.put_nowait(message)
            except queue.Full:
                log.warning("kiosk screen %s is not keeping up: cut off", stream.screen)
                stream.close()

    def answer(self, request: int, status: str, body: dict[str, Any]) -> None:
        """The core's answer to a request; wakes its thread."""
        with self._lock:
            waiting = self._waiting.get(request)
        if waiting is not None:
            waiting.status, waiting.body = status, body
            waiting.done.set()

    @property
    def screens(self) -> int:
        """How many screens have a stream open."""
        with self._lock:
            return len(self._streams)

    def open_screens(self) -> tuple[int, frozenset[str]]:
        """The screens with a stream open, and the generation of that list (it
        grows with every change, so the loop can tell an old list from a new one
        when two joins overtake each other on their way)."""
        with self._lock:
            return self._generation, frozenset(self._streams)

    # --- from request threads -----------------------------------------------------

    def ask(self, screen: str, what: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Submit a request to the core and wait for its answer."""
        waiting = _Waiting()
        with self._lock:
            if len(self._waiting) >= MAX_WAITING:
                return "busy", {"error": "The controller is busy. Try again."}
            request = next(self._ids)
            self._waiting[request] = waiting
        try:
            self.submit(KioskRequest(request, screen, what, args))
            if not waiting.done.wait(ANSWER_WAIT_S) or self._stopping.is_set():
                return "busy", {"error": "The controller did not answer. Try again."}
            return waiting.status, waiting.body
        finally:
            with self._lock:
                del self._waiting[request]

    def open_stream(self, screen: str, local: bool) -> _Stream | None:
        """A new stream for `screen`, replacing an older one of the same screen
        (a reloaded page); None when `MAX_STREAMS` are open, or all but one and
        the screen is not `local` (the last is kept for the controller's own)."""
        with self._lock:
            old = self._streams.get(screen)
            if old is None:
                lan = sum(not s.local for s in self._streams.values())
                if len(self._streams) >= MAX_STREAMS or (not local and lan >= MAX_STREAMS - 1):
                    return None
            stream = _Stream(screen, local)
            self._streams[screen] = stream
            self._generation += 1
        if old is not None:
            old.current = False
            old.close()
        return stream

    def close_stream(self, stream: _Stream) -> bool:
        """Forget a stream; True when the screen has no stream any more."""
        with self._lock:
            if self._streams.get(stream.screen) is stream:
                del self._streams[stream.screen]
                self._generation += 1
                return True
        return False

    def stopping(self) -> bool:
        return self._stopping.is_set()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = SOCKET_TIMEOUT_S
    server_version = "alc-kiosk"
    sys_version = ""
    _cookie: str | None = None

    def handle_one_request(self) -> None:
        self.server.head_started(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.head_done(self.connection)

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        finally:
            self.server.head_done(self.connection)  # the head is in (or refused)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP (the base class's errors) as JSON too, then hang up."""
        self.close_connection = True
        status = HTTPStatus(code)
        self._json(status, {"error": message or status.phrase})

    # --- dispatch -----------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._metrics(url.query)
            return
        if not self._authorised(url.query):
            return
        if url.path in STATIC:
            self._static(*STATIC[url.path])
        elif url.path == "/events":
            screen = parse_qs(url.query).get("screen", [""])[0]
            if not _SCREEN.fullmatch(screen):
                self._json(
                    HTTPStatus.BAD_REQUEST,
                    {"error": "events needs ?screen=<8 to 64 of A-Z a-z 0-9 _ ->"},
                )
                return
            self._stream(screen)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._metrics_only_get()
            return
        if not self._authorised(url.query):
            return
        what = url.path.removeprefix("/api/")
        if not url.path.startswith("/api/") or what not in _FIELDS:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such request: {url.path}"})
            return
        body = self._body()
        if body is None:
            return
        screen = body.pop("screen", None)
        if not isinstance(screen, str) or not _SCREEN.fullmatch(screen):
            self._json(
                HTTPStatus.BAD_REQUEST, {"error": "'screen' must be 8 to 64 of A-Z a-z 0-9 _ -"}
            )
            return
        fields = _FIELDS[what]
        for key, value in body.items():
            kind = fields.get(key)
            if kind is None:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"{what}: unknown field {key!r}"})
                return
            if type(value) is not kind or (isinstance(value, str) and len(value) > 64):
                name = "text (at most 64 characters)" if kind is str else "an integer"
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"{what}: {key!r} must be {name}"})
                return
        status, answer = self.server.kiosk.ask(screen, what, body)
        self._json(
            _STATUS.get(status, HTTPStatus.INTERNAL_SERVER_ERROR), {"status": status, **answer}
        )

    def do_PUT(self) -> None:
        if urlsplit(self.path).path == "/metrics":
            self._metrics_only_get()
            return
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET and POST"})

    do_DELETE = do_PATCH = do_PUT

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path == "/metrics":
            self._metrics_only_get(head=True)
            return
        # What the base class answers for a method without a handler.
        self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")

    # --- /metrics -----------------------------------------------------------------

    def _metrics(self, query: str) -> None:
        page = self.server.kiosk.metrics_page(self.server.local)
        if not self._metrics_authorised(query):
            return
        if page is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such page: /metrics"})
            return
        if set(parse_qs(query, keep_blank_values=True)) - {"token"}:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "/metrics takes no query"})
            return
        try:
            data = page.render_metrics()
        except TimeoutError as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"metrics: {exc}"})
            return
        except Exception:
            # Our bug: this scrape fails, the server and the next scrape do not.
            log.exception("kiosk: /metrics failed")
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "metrics failed"})
            return
        self.send_response(HTTPStatus.OK)
        self._common_headers(page.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _metrics_authorised(self, query: str) -> bool:
        """A scraper presents the token as `Authorization: Bearer` (Prometheus's
        `authorization` setting); the page's ways (`?token=`, the cookie) do too."""
        token = self.server.kiosk.token
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if token is None or scheme.lower() != "bearer":
            return self._authorised(query)
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
        self._json(HTTPStatus.UNAUTHORIZED, {"error": "wrong token"})
        return False

    def _metrics_only_get(self, *, head: bool = False) -> None:
        data = json.dumps({"error": "/metrics: only GET"}).encode()
        self.close_connection = True  # a body the client did not read may follow
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self._common_headers("application/json")
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:  # a HEAD's answer has no body
            self.wfile.write(data)

    # --- pieces -------------------------------------------------------------------

    def _authorised(self, query: str) -> bool:
        token = self.server.kiosk.token
        if token is None:
            # Loopback without a token: only pages that asked for this very
            # address, so a web page elsewhere cannot reach in by DNS rebinding.
            port, host = self.server.port, self.server.host
            listening = f"[{host}]" if ":" in host else host
            names = ("127.0.0.1", "localhost", "[::1]", listening)
            allowed = {f"{name}:{port}".lower() for name in names}
            if self.headers.get("Host", "").lower() in allowed:
                return True
            self._json(HTTPStatus.FORBIDDEN, {"error": "ask for this kiosk by its address"})
            return False
        given = parse_qs(query).get("token", [None])[0]
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            self._cookie = token  # remembered by the browser from here on
            return True
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        morsel = cookie.get(COOKIE)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), token.encode()):
            return True
        self._json(HTTPStatus.UNAUTHORIZED, {"error": "this kiosk needs its token (?token=...)"})
        return False

    def _body(self) -> dict[str, Any] | None:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdecimal():
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return None
        length = int(length_text)
        if length > MAX_BODY:
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"}
            )
            return None
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send application/json"})
            return None
        try:
            raw = self.rfile.read(length)
            body = json.loads(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            return None
        if not isinstance(body, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
            return None
        return body

    def _static(self, name: str, content_type: str) -> None:
        data = resources.files("firmware.kiosk").joinpath("static", name).read_bytes()
        self.send_response(HTTPStatus.OK)
        self._common_headers(content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self._common_headers("application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _common_headers(self, content_type: str) -> None:
        self.send_header("Content-Type", content_type)
        # Always the latest page and data: "Refresh kiosk screens" relies on it.
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self._cookie is not None:
            # Secure over TLS: the browser never sends the token in clear.
            secure = "; Secure" if self.server.tls is not None else ""
            self.send_header(
                "Set-Cookie",
                f"{COOKIE}={self._cookie}; Path=/; HttpOnly; SameSite=Strict{secure}",
            )

    def _stream(self, screen: str) -> None:
        kiosk = self.server.kiosk
        stream = kiosk.open_stream(screen, self.server.local)
        if stream is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "too many kiosk screens"})
            return
        try:
            self.send_response(HTTPStatus.OK)
            self._common_headers("text/event-stream")
            self.end_headers()
            self.wfile.write(f"retry: {RETRY_MS}\n\n".encode())
            self.wfile.flush()
            generation, open = kiosk.open_screens()
            kiosk.submit(ScreenJoined(screen, stream.local, open, generation))
            quiet = 0.0
            while not kiosk.stopping():
                try:
                    message = stream.messages.get(timeout=GONE_CHECK_S)
                except queue.Empty:
                    if self._hung_up():
                        break
                    quiet += GONE_CHECK_S
                    if quiet < HEARTBEAT_S:
                        continue
                    message = _sse("ping", {})
                if message is None:
                    break
                quiet = 0.0
                self.wfile.write(message)
                self.wfile.flush()
        except OSError:
            pass  # the screen went away; it reconnects by itself
        finally:
            if kiosk.close_stream(stream) and stream.current:
                kiosk.submit(ScreenLeft(screen))
        self.close_connection = True

    def _hung_up(self) -> bool:
        """True when the screen closed its end: after its request a screen sends
        nothing, so anything readable is the end of the connection."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable)


def _sse(kind: str, data: Any) -> bytes:
    # json.dumps escapes newlines, so one `data:` line always holds the whole message.
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _address(listener: _HTTPServer, token: str | None) -> str:
    scheme = "https" if listener.tls is not None else "http"
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    query = f"?token={token}" if token else ""
    return f"{scheme}://{host}:{listener.port}/{query}"
