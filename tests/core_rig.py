"""A controller core in virtual time for tests: one door, one member, sealed
messages from the hub, and helpers that pick replies and logged events out of
what a step returns. No broker, no clock, no disk."""

from __future__ import annotations

import itertools
from typing import Any

from firmware.core.actions import Publish
from firmware.core.controller import Controller
from firmware.core.decide import Target
from firmware.core.facility import Facility, Reader
from firmware.core.inputs import PayloadReceived
from firmware.core.model import digest_bytes, digest_part
from firmware.core.outbox import AppendEvents
from firmware.core.sync import SyncSession
from tests.builders import rec, store_of
from tests.sealing import seal

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
BASE = "alc/demo/ctl1"
T0 = 1_800_000_000.0

RECORDS = [
    ("door", "front", rec(unlock_s=7)),
    ("group", "g", rec(doors=["front"])),
    ("member", "ann", rec(groups=["g"], creds=[["tag", "00aa11bb"]])),
]


def make(
    *,
    executed: dict[str, int] | None = None,
    facility: Facility | None = None,
) -> Controller:
    """The controller of `RECORDS`, with reader `front-in` at door `front`
    (wired to no door unless `facility` says otherwise)."""
    counter = itertools.count(1)
    session = SyncSession(store_of(RECORDS), "e1", 3, now=T0, new_id=lambda: f"req-{next(counter)}")
    return Controller(
        controller_id="ctl1",
        key=KEY,
        base_topic=BASE,
        session=session,
        boot_time=T0,
        masters=frozenset({("tag", "master")}),
        facility=facility or Facility(readers=[Reader("front-in", Target.door("front"))], now=T0),
        executed=executed,
    )


def sealed(suffix: str, message: dict[str, Any], key: bytes = KEY) -> PayloadReceived:
    topic = f"{BASE}/{suffix}"
    return PayloadReceived(topic, seal(key, b"ctl1", topic, message))


def cmd(
    name: str, id: str = "c1", *, iat: float = T0, exp: float = T0 + 60, **args: Any
) -> dict[str, Any]:
    return {"t": "cmd", "id": id, "cmd": name, "args": args, "iat": int(iat), "exp": int(exp)}


def replies(actions: list[Any]) -> list[tuple[str, str]]:
    return [
        (a.message["id"], a.message["status"])
        for a in actions
        if isinstance(a, Publish) and a.suffix == "reply"
    ]


def logged(actions: list[Any], type: str) -> list[dict[str, Any]]:
    """Bodies of the events of `type` a step logged (they travel in AppendEvents)."""
    return [
        e.body for a in actions if isinstance(a, AppendEvents) for e in a.events if e.type == type
    ]


def system(actions: list[Any]) -> list[str]:
    return [body["what"] for body in logged(actions, "system")]


def asked(actions: list[Any]) -> str:
    """The `req` of the last sync request a step published: a snapshot is taken
    only in answer to it (PROTOCOL.md s3)."""
    requests = [a.message for a in actions if isinstance(a, Publish) and a.suffix == "sync"]
    assert requests, "no sync request was published"
    return str(requests[-1]["req"])


def snapshot(
    sync: str, records: list[tuple[str, str, bytes]], epoch: str = "e1", v: int = 9
) -> PayloadReceived:
    digest = digest_bytes(sum(digest_part(*r) for r in records))
    body = {
        "t": "snap",
        "sync": sync,
        "epoch": epoch,
        "v": v,
        "page": 0,
        "pages": 1,
        "recs": [list(r) for r in records],
        "digest": digest,
        "now": int(T0),
    }
    return sealed("data", body)


def run_work(c: Controller, now: float) -> list[Any]:
    out: list[Any] = []
    while c.has_work():
        out += c.work(now)
    return out
