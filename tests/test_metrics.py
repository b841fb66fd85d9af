"""`/metrics` (docs/operations.md "Metrics"): a real controller on the simulator
(tests/loop_rig.py) with its kiosk server on a free loopback port, scraped over
HTTP with urllib and read back with prometheus_client's own parser."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from firmware.config import Config, KioskLan, MetricsSection
from firmware.core.inputs import PayloadReceived, Presented
from firmware.runtime import Runtime
from tests.broker import free_port
from tests.kiosk_tls import make_kiosk_cert
from tests.loop_rig import ANN, BASE, CAT, DOOR, READER, Outputs, make_config, running
from tests.waiting import wait_for

UNKNOWN = "0e0e0e0e0e"
TOKEN = "metrics-token-0123456789"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def with_metrics(config: Config, *, token: str | None = None) -> Config:
    """`config` with the kiosk on a free loopback port and `[metrics]` on."""
    listen = f"127.0.0.1:{free_port()}"
    return dataclasses.replace(
        config, kiosk_listen=listen, kiosk_token=token, metrics=MetricsSection()
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return with_metrics(make_config(tmp_path, time.time()))


def url(runtime: Runtime, path: str = "/metrics") -> str:
    assert runtime.kiosk is not None and runtime.kiosk.own is not None
    return f"http://127.0.0.1:{runtime.kiosk.own.port}{path}"


def request(
    runtime: Runtime, method: str = "GET", path: str = "/metrics", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request: status, headers (lower-case names) and body, errors included."""
    req = urllib.request.Request(url(runtime, path), method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _lower(exc.headers), exc.read()


def _lower(headers: Message) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def scrape(runtime: Runtime, **headers: str) -> Samples:
    """GET /metrics, parsed: every sample by name and labels."""
    status, got, body = request(runtime, **headers)
    assert status == 200, body
    assert got["content-type"] == CONTENT_TYPE_LATEST
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_a_scrape_shows_decisions_latency_timers_and_the_cores_numbers(config: Config) -> None:
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])
    with running(runtime):
        runtime.submit(Presented(READER, "tag", ANN))
        runtime.submit(Presented(READER, "tag", UNKNOWN))
        wait_for(lambda: outputs.count(DOOR, False) >= 2, "the relock after ann's grant")
        # The relock's note follows its switch on the loop: asked after it, seen.
        runtime.ask(lambda _: None)
        samples = scrape(runtime)
        v, outbox = runtime.ask(lambda c: (c.session.v, c.outbox.count))

        decisions = "alc_decisions_total"
        assert value(samples, decisions, granted="true", reason="granted", target="door") == 1
        assert (
            value(samples, decisions, granted="false", reason="unknown_credential", target="door")
            == 1
        )
        assert sum(n for (name, _), n in samples.items() if name == decisions) == 2
        latency = value(samples, "alc_decision_latency_seconds_count")
        assert latency is not None and latency >= 2
        assert value(samples, "alc_decision_latency_seconds_bucket", le="+Inf") == latency
        lateness = value(samples, "alc_timer_lateness_seconds_count")
        assert lateness is not None and lateness >= 1
        assert value(samples, "alc_data_version") == v
        assert value(samples, "alc_outbox_events") == outbox > 0  # no broker: nothing acked
        oldest = value(samples, "alc_outbox_oldest_age_seconds")
        assert oldest is not None and oldest >= 0
        last_full = value(samples, "alc_last_full_sync_timestamp_seconds")
        assert last_full is not None and last_full > 0  # the rig's stored full sync
        assert value(samples, "alc_disk_ok") == 1
        assert value(samples, "alc_link_up") == 0  # the rig has no broker
        assert value(samples, "alc_loop_answered") == 1
        assert value(samples, "alc_auth_failures_total") == 0
        assert value(samples, "alc_metrics_note_failures_total") == 0

        # Payloads that do not open count, every one, past the report's rate limit.
        for _ in range(3):
            runtime.submit(PayloadReceived(f"{BASE}/cmd", b"\xa1garbage"))
        wait_for(
            lambda: value(scrape(runtime), "alc_auth_failures_total") == 3,
            "three auth failures counted",
        )


def test_bad_requests_get_clear_errors_and_the_next_scrape_is_served(config: Config) -> None:
    runtime = Runtime(config)
    with running(runtime):
        for method in ("POST", "PUT", "DELETE"):
            status, headers, body = request(runtime, method)
            assert (status, headers["allow"]) == (405, "GET"), method
            assert b"only GET" in body
        status, headers, body = request(runtime, "HEAD")
        assert (status, headers["allow"], body) == (405, "GET", b"")
        status, _, body = request(runtime, path="/metrics?format=json")
        assert (status, body) == (400, b'{"error": "/metrics takes no query"}')
        # A page elsewhere reaching in by DNS rebinding: the kiosk's Host check.
        assert request(runtime, Host="metrics.example.com")[0] == 403
        # A malformed request line, straight on the socket: refused, connection closed.
        assert runtime.kiosk is not None and runtime.kiosk.own is not None
        address = ("127.0.0.1", runtime.kiosk.own.port)
        with socket.create_connection(address, timeout=20) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1 junk\r\nHost: 127.0.0.1\r\n\r\n")
            assert b"Bad request" in sock.makefile("rb").read()
        assert value(scrape(runtime), "alc_loop_answered") == 1
        assert runtime.kiosk.alive()


def test_with_a_kiosk_token_a_scrape_presents_it_as_a_bearer(tmp_path: Path) -> None:
    config = with_metrics(make_config(tmp_path, time.time()), token=TOKEN)
    runtime = Runtime(config)
    with running(runtime):
        assert request(runtime)[0] == 401
        assert request(runtime, Authorization="Bearer not-the-token-at-all")[0] == 401
        assert value(scrape(runtime, Authorization=f"Bearer {TOKEN}"), "alc_disk_ok") == 1
        # The page's own way works too; any other query is still refused.
        assert request(runtime, path=f"/metrics?token={TOKEN}")[0] == 200
        assert request(runtime, path=f"/metrics?token={TOKEN}&x=1")[0] == 400


def test_without_metrics_the_kiosk_has_no_such_page(tmp_path: Path) -> None:
    config = dataclasses.replace(with_metrics(make_config(tmp_path, time.time())), metrics=None)
    runtime = Runtime(config)
    with running(runtime):
        assert request(runtime)[0] == 404
        assert request(runtime, path="/")[0] == 200


@contextmanager
def loop_held(runtime: Runtime, outputs: Outputs) -> Iterator[None]:
    """The loop held on its own thread (in the edge told of a switch) for the block."""
    held, release = threading.Event(), threading.Event()

    def hold(name: str, on: bool) -> None:
        if on and not release.is_set():
            held.set()
            release.wait(30)

    outputs.on_switch = hold
    runtime.submit(Presented(READER, "tag", CAT))
    try:
        wait_for(held.is_set, "the loop held")
        yield
    finally:
        release.set()


def test_a_loop_that_does_not_answer_costs_the_scrape_the_cores_numbers_only(
    config: Config,
) -> None:
    outputs = Outputs()
    runtime = Runtime(config, edges=[outputs])
    with running(runtime):
        with loop_held(runtime, outputs):
            samples = scrape(runtime)
        assert value(samples, "alc_loop_answered") == 0
        assert value(samples, "alc_link_up") == 0
        assert value(samples, "alc_decision_latency_seconds_count") is not None
        assert value(samples, "alc_data_version") is None
        assert value(scrape(runtime), "alc_loop_answered") == 1


@pytest.mark.parametrize("lan", [True, False])
def test_lan_scrapes_go_over_https_with_the_token_and_only_when_asked(
    tmp_path: Path, lan: bool
) -> None:
    cert = make_kiosk_cert(tmp_path / "tls")
    port = free_port()
    config = dataclasses.replace(
        with_metrics(make_config(tmp_path, time.time()), token=TOKEN),
        kiosk_lan=KioskLan(f"127.0.0.1:{port}", cert.cert_file, cert.key_file),
        metrics=MetricsSection(lan=lan),
    )

    def lan_get(**headers: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=cert.client())
        try:
            conn.request("GET", "/metrics", headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    runtime = Runtime(config)
    with running(runtime):
        assert lan_get()[0] == 401
        status, body = lan_get(Authorization=f"Bearer {TOKEN}")
        if lan:
            assert status == 200 and b"\nalc_disk_ok 1.0\n" in body
        else:
            assert (status, body) == (404, b'{"error": "no such page: /metrics"}')
        # The loopback listener serves them either way.
        assert value(scrape(runtime, Authorization=f"Bearer {TOKEN}"), "alc_disk_ok") == 1
