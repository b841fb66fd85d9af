"""A small club with kiosk screens, for the kiosk's end-to-end tests: a real
controller `Runtime` (tests/harness.py `Rig`) serving its kiosk page, the real
hub, a real mosquitto. Bookings are placed around the moment the test starts."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.broker import Broker, free_port
from tests.harness import Rig, write_atomically

ADA_PIN = "4711"
ADA_TAG = "00000000a1"
ADA_CREDIT = 2000  # 20.00
COURT1_PRICE = 400  # per 30 min


def club_data(now: float) -> str:
    """Riverside Tennis Club: a front door, two courts (court 2 needs check-in),
    Ada with a booking on court 2 starting soon, and two later bookings."""
    start = int(now // 60 * 60) + 600
    return f"""
[site]
tz = "Europe/London"
name = "Riverside Tennis Club"
checkin_before_s = 1800

[[door]]
id = "front"
name = "Front door"

[[door]]
id = "gate"
name = "Car park gate"

[[light]]
id = "court1"
name = "Court 1"
price = {COURT1_PRICE}
block_s = 1800
max_s = 7200
warn_s = 120

[[light]]
id = "court2"
name = "Court 2"
checkin = true
lead_s = 900
price = 250

[[light]]
id = "court3"
name = "Court 3"
price = 250

[[group]]
id = "adults"
doors = ["front", "gate"]
lights = ["court1", "court2", "court3"]

[[member]]
id = "m1"
name = "Ada Lovelace"
groups = ["adults"]
creds = [["tag", "{ADA_TAG}"], ["pin", "{ADA_PIN}"]]
credit = {ADA_CREDIT}

[[member]]
id = "m2"
name = "Bo Diddley"
groups = ["adults"]
creds = [["tag", "00000000b2"]]
credit = 0

[[booking]]
id = "b1"
lights = ["court2"]
member = "m1"
start = {start}
end = {start + 3600}

[[booking]]
id = "b2"
lights = ["court3"]
member = "m2"
start = {start - 1200}
end = {start + 2400}

[[booking]]
id = "b3"
lights = ["court1"]
start = {start + 5400}
end = {start + 9000}
"""


def wiring(port: int, token: str | None = None, lan: str = "") -> str:
    """controller.toml for the club: pins on the simulator, a kiosk reader, the
    kiosk (`lan`: more lines of its section, e.g. `lan_listen`)."""
    kiosk = f'\n[kiosk]\nlisten = "127.0.0.1:{port}"\n'
    if token is not None:
        kiosk += f'token = "{token}"\n'
    kiosk += lan
    return (
        """
[[doors]]
id = "front"
relay = 17
contact = 27
fail = "secure"

[[doors]]
id = "gate"
relay = 18
fail = "secure"

[[lights]]
id = "court1"
relay = 5
warn = 6

[[lights]]
id = "court2"
relay = 12

[[lights]]
id = "court3"
relay = 13

[[readers]]
id = "kiosk"
kind = "line"
port = "/dev/ttyUSB2"
kiosk = true
"""
        + kiosk
    )


@contextmanager
def kiosk_rig(
    broker: Broker,
    tmp: Path,
    *,
    token: str | None = None,
    port: int | None = None,
    lan: str = "",
    config: str = "",
    data: str = "",
) -> Iterator[tuple[Rig, str]]:
    """A running club with its kiosk server; yields the rig and the page's base URL.
    `lan`: more lines of `[kiosk]`; `config` and `data`: more controller.toml and
    more records."""
    port = port or free_port()
    rig = Rig(broker, tmp, extra=wiring(port, token, lan) + config)
    try:
        write_atomically(rig.data_file, club_data(time.time()) + data)
        rig.start_hub()
        rig.run_controller()
        rig.wait_converged()
        rig.settle()
        yield rig, f"http://127.0.0.1:{port}"
    finally:
        rig.close()


def post(url: str, body: Any, *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST JSON (or raw bytes); (status, decoded JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    return _open(request)


def get(url: str, *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET; (status, JSON answer or the text)."""
    return _open(urllib.request.Request(url, headers=headers or {}))


def _open(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status, raw, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers["Content-Type"]
    if kind == "application/json":
        return status, json.loads(raw)
    return status, raw.decode()
