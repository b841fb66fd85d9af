"""The simulator's bench edge (`sim.bench.BenchEdge`): what it does with each
`bench/in` message, before any of it reaches the core.

First the edge alone, built from a real config as the runtime builds it, its
inputs collected instead of queued: what it submits for a configuration
without pins, what it refuses and how it logs that, and that no bytes make it
raise. Then end to end on an unwired simulator (a real mosquitto, the hub, the
real `Runtime`): bench inputs decided and logged by the core, bad ones refused
by the edge with nothing logged.
"""

from __future__ import annotations

import logging
import secrets
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.config import Config, parse_config
from firmware.core.errors import LocalError
from firmware.core.inputs import ContactChanged, Input, Presented, RexPressed
from firmware.runtime.edge import EdgeContext
from hal.events import ContactSensed, CredentialRead, HalEvent
from hal.sim import SimBackend
from sim.bench import IN, OUT, REPORT_EVERY_S, BenchEdge
from tests.broker import Broker
from tests.harness import BASE, CONTROLLER, Rig, club, logged_events
from tests.sealing import seal
from tests.waiting import wait_for

# Doors and readers without pins: a simulator on bench inputs alone. The front
# door has a contact but no exit button, the back door neither.
UNWIRED = """
[[doors]]
id = "front"
contact = 27

[[doors]]
id = "back"

[[readers]]
id = "front-in"
door = "front"

[[readers]]
id = "front-pad"
door = "front"
"""

WIRED = """
[[doors]]
id = "front"
relay = 17
fail = "secure"
contact = 27
rex = 22

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/ttyAMA0"
door = "front"

[[readers]]
id = "front-keys"
kind = "wiegand"
d0 = 23
d1 = 24
door = "front"

[[readers]]
id = "front-pad"
kind = "keypad"
port = "/dev/ttyUSB1"
door = "front"

[[lights]]
id = "court1"
relay = 5

[[readers]]
id = "court1-in"
kind = "line"
port = "/dev/ttyUSB2"
light = "court1"
"""

ADA_TAG, ADA_PIN = "00000000a1", "4711"  # member m1 of the harness club


def config_of(tmp: Path, wiring: str, *, backend: str = "sim") -> Config:
    """A controller.toml with `wiring`, and its key file, in `tmp`."""
    key = tmp / f"{CONTROLLER}.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    text = (
        f'[controller]\nsite = "demo"\nid = "{CONTROLLER}"\n'
        f'data_dir = "{tmp / "data"}"\nkey_file = "{key}"\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 1\n'
        f'[hal]\nbackend = "{backend}"\n' + wiring
    )
    return parse_config(tmp / "controller.toml", tomllib.loads(text))


class Edge:
    """A `BenchEdge` as the runtime builds it, with what it hands on collected."""

    def __init__(self, config: Config, hardware: SimBackend | None = None) -> None:
        self.key = config.key()
        self.submitted: list[Input] = []
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.now = 1_000_000.0
        context = EdgeContext(
            config,
            hardware,
            self.submitted.append,
            lambda suffix, message: self.published.append((suffix, dict(message))),
            lambda: self.now,
        )
        self.edge = BenchEdge(context)

    def send(self, body: dict[str, Any], *, key: bytes | None = None) -> None:
        self.edge.received(IN, seal(key or self.key, CONTROLLER.encode(), f"{BASE}/{IN}", body))


@pytest.fixture
def unwired(tmp_path: Path) -> Edge:
    config = config_of(tmp_path, UNWIRED)
    assert config.unwired is not None
    return Edge(config)


def present(reader: str, credkind: str, value: Any) -> dict[str, Any]:
    return {"t": "present", "reader": reader, "credkind": credkind, "value": value}


def test_the_bench_is_for_the_simulator_only(tmp_path: Path) -> None:
    config = config_of(tmp_path, "", backend="gpio")
    with pytest.raises(LocalError, match="bench inputs are for the simulator"):
        Edge(config)


def test_inputs_without_pins_go_to_the_core_as_a_hal_would_give_them(unwired: Edge) -> None:
    unwired.send(present("front-in", "tag", ADA_TAG))
    unwired.send(present("front-pad", "pin", ADA_PIN))
    # As a keypad does: digits add up, `*` clears, `#` enters a PIN, an empty
    # one is nothing, and digits after the last `#` were never entered.
    unwired.send({"t": "keys", "reader": "front-pad", "keys": "99*4711##12#*#5"})
    unwired.send({"t": "contact", "door": "front", "open": True})
    assert unwired.submitted == [
        Presented("front-in", "tag", ADA_TAG),
        Presented("front-pad", "pin", ADA_PIN),
        Presented("front-pad", "pin", "4711"),
        Presented("front-pad", "pin", "12"),
        ContactChanged("front", True),
    ]
    assert unwired.edge.refused == 0


def test_the_edge_reports_every_output_on_bench_out(unwired: Edge) -> None:
    unwired.edge.output_switched("door:front", True)
    unwired.now += 4.6
    unwired.edge.output_switched("door:front", False)
    assert unwired.published == [
        (OUT, {"t": "output", "name": "door:front", "on": True, "time": 1_000_000}),
        (OUT, {"t": "output", "name": "door:front", "on": False, "time": 1_000_004}),
    ]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (present("front-in", "face", "x"), "'credkind' must be one of"),
        (present("front-in", "tag", 7), "'value' must be"),
        ({"t": "present", "reader": "front-in"}, "present: 'credkind'"),
        (present("nowhere", "tag", ADA_TAG), "no reader 'nowhere' in the configuration"),
        (present("front-pad", "pin", "12a4"), "a PIN is digits 0-9"),
        ({"t": "keys", "reader": "front-pad", "keys": "12a4#"}, "'keys' must be 1 to 64"),
        ({"t": "keys", "reader": "nowhere", "keys": "4711#"}, "no reader 'nowhere'"),
        ({"t": "rex", "door": "front"}, "door front has no exit button"),
        ({"t": "contact", "door": "back", "open": True}, "door back has no contact"),
        ({"t": "contact", "door": "side", "open": True}, "no door 'side' in the configuration"),
        ({"t": "contact", "door": "front", "open": 1}, "a true/false 'open'"),
        ({"t": "dance", "door": "front"}, "unknown bench input 'dance'"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_what_names_nothing_there_is_or_is_malformed_is_refused_and_logged(
    unwired: Edge, caplog: pytest.LogCaptureFixture, body: dict[str, Any], why: str
) -> None:
    caplog.set_level(logging.ERROR, logger="alc.bench")
    unwired.send(body)
    assert unwired.submitted == []
    assert unwired.edge.refused == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "alc.bench"]
    assert line.startswith("bench input refused, nothing changed: ") and why in line, line


def test_a_message_that_does_not_verify_is_refused(
    unwired: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="alc.bench")
    good = present("front-in", "tag", ADA_TAG)
    unwired.send(good, key=bytes(32))
    other_topic = seal(unwired.key, CONTROLLER.encode(), f"{BASE}/cmd", good)
    unwired.edge.received(IN, other_topic)
    unwired.edge.received(IN, b"\xa1at")  # CBOR, but no envelope
    assert unwired.submitted == []
    assert unwired.edge.refused == 3


def test_refusals_are_logged_once_a_minute_per_kind(
    unwired: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="alc.bench")
    unknown = present("nowhere", "tag", ADA_TAG)
    for _ in range(3):
        unwired.send(unknown)
    unwired.send({"t": "rex", "door": "front"})  # another kind: its own line
    unwired.now += REPORT_EVERY_S
    unwired.send(unknown)
    lines = [r.getMessage() for r in caplog.records if r.name == "alc.bench"]
    assert len(lines) == 3, lines
    assert "no reader 'nowhere'" in lines[0] and "more" not in lines[0]
    assert "no exit button" in lines[1]
    assert lines[2].endswith("(and 2 more since the last report)")
    assert unwired.edge.refused == 5


def test_nothing_is_taken_once_the_edge_stopped(unwired: Edge) -> None:
    unwired.edge.stop()
    unwired.send(present("front-in", "tag", ADA_TAG))
    assert unwired.submitted == [] and unwired.edge.refused == 0


# Bytes, some shaped like the start of a COSE_Mac0 envelope (tag 17, an array of 4).
payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda tail: b"\xd1\x84" + tail),
)


@pytest.fixture(scope="module")
def unwired_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """One config for every hypothesis example (each builds its own edge)."""
    return config_of(tmp_path_factory.mktemp("edge"), UNWIRED)


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_random_bytes_on_bench_in_never_raise(unwired_config: Config, payload: bytes) -> None:
    edge = Edge(unwired_config)
    edge.edge.received(IN, payload)
    assert edge.submitted == [] and edge.edge.refused == 1


# Any value `seal` takes (CBOR without tags: no integers past 64 bits).
any_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["present", "keys", "contact", "rex"]),
    st.dictionaries(
        st.sampled_from(["reader", "credkind", "value", "keys", "door", "open"]), any_value
    ),
)
def test_any_sealed_bench_body_is_taken_or_refused_never_raised(
    unwired_config: Config, type: str, fields: dict[str, Any]
) -> None:
    edge = Edge(unwired_config)
    edge.send({**fields, "t": type})
    # Either refused, or handed on as typed inputs (keys may enter no PIN at all).
    assert edge.edge.refused in (0, 1)
    assert all(isinstance(i, Presented | ContactChanged | RexPressed) for i in edge.submitted)
    if edge.edge.refused:
        assert edge.submitted == []


def test_inputs_a_wired_reader_could_never_send_are_refused_before_the_hardware(
    tmp_path: Path,
) -> None:
    """Review finding: non-ASCII digits (which Python's int() and isdecimal()
    accept) used to reach the simulated hardware: half a PIN typed on the
    Wiegand keypad before a KeyError escaped, or reader faults on the RDM6300,
    keypad and line readers. Each is now one refusal, nothing driven, and the
    next good input reads exactly as sent."""
    config = config_of(tmp_path, WIRED)
    assert config.unwired is None
    seen: list[HalEvent] = []
    sim = SimBackend(config.wiring, seen.append)
    sim.start()
    try:
        edge = Edge(config, sim)
        bad = [
            present("front-keys", "pin", "12\u0663"),  # Arabic-Indic 3
            present("front-keys", "card", "\u0661\u0662"),
            present("front-in", "tag", "0000 0000a1"),
            present("front-in", "pin", "1234"),  # a tag reader reads tags
            present("front-pad", "pin", "\u0661\u0662"),
            present("court1-in", "tag", "\u00e9t\u00e9"),
            {"t": "keys", "reader": "court1-in", "keys": "4711#"},  # a line reader has no keys
        ]
        for body in bad:
            edge.send(body)
        assert edge.edge.refused == len(bad)
        edge.send(present("front-keys", "pin", ADA_PIN))
        wait_for(lambda: any(isinstance(e, CredentialRead) for e in seen), "the good PIN")
        reads = [e for e in seen if not isinstance(e, ContactSensed)]
        assert reads == [CredentialRead("front-keys", "pin", ADA_PIN)], reads
        assert edge.submitted == []  # wired: it came back through the HAL, not the edge
    finally:
        sim.close()


# --- end to end: an unwired simulator -----------------------------------------------------


@pytest.fixture
def rig(broker: Broker, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(broker, tmp_path, extra=UNWIRED)
    try:
        r.data_file.write_text(club())
        r.start_hub()
        r.run_controller()
        r.wait_converged()
        yield r
    finally:
        r.close()


def bench_in(rig: Rig, body: dict[str, Any]) -> None:
    rig.observer.publish_raw(f"{BASE}/{IN}", rig.observer.sealed(IN, body))


def test_a_bench_input_at_a_reader_without_pins_is_decided_and_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alc.events")
    assert rig.runtime is not None and rig.runtime.hardware is None
    bench_in(rig, present("front-in", "tag", ADA_TAG))
    bench_in(rig, {"t": "keys", "reader": "front-pad", "keys": "99*4711#"})
    bench_in(rig, {"t": "contact", "door": "front", "open": True})
    rig.settle()  # the same publisher: the inputs went to the loop before the command
    events = logged_events(caplog)
    access = [
        (b["reader"], b["credkind"], b["member"], b["reason"]) for t, b in events if t == "access"
    ]
    assert access == [
        ("front-in", "tag", "m1", "granted"),
        ("front-pad", "pin", "m1", "granted"),
    ]
    assert "opened" in [b["what"] for t, b in events if t == "door"]
    assert rig.bench is not None and rig.bench.refused == 0


def test_bad_bench_inputs_are_refused_before_the_core_and_log_nothing(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alc.events")
    caplog.set_level(logging.ERROR, logger="alc.bench")
    rig.settle()  # what the boot and the sync logged is in before the first bad input
    before = len(logged_events(caplog))
    bad = [
        present("front-in", "face", "x"),
        present("nowhere", "tag", ADA_TAG),
        {"t": "keys", "reader": "nowhere", "keys": "4711#"},
        {"t": "rex", "door": "front"},
        {"t": "contact", "door": "back", "open": True},
    ]
    for body in bad:
        bench_in(rig, body)
    rig.observer.publish_raw(f"{BASE}/{IN}", secrets.token_bytes(40))
    rig.observer.publish_raw(f"{BASE}/{IN}", cbor2.dumps({"t": "present"}))
    rig.settle()
    assert rig.bench is not None and rig.bench.refused == len(bad) + 2
    assert logged_events(caplog)[before:] == []  # no access, door or system event
    assert "bench input refused, nothing changed" in caplog.text
