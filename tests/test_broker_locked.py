"""The locked-down broker, for real (issue 11 s2, s3): mosquitto runs exactly the
config `alc broker init` wrote, with the accounts `alc broker add` made
(tests/locked_broker.py), and the controller, the hub and `alc ctl` work through
it over TLS while nobody else gets in or across.

A test that shows something did NOT arrive sends a marker after it down the
same path and looks once the marker is there (tests/waiting.py): mosquitto
handles one client's packets in order, and a publish it has acknowledged has
been handled before anything published after that acknowledgement.
"""

from __future__ import annotations

import io
import logging
import signal
import ssl
import stat
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest

from firmware.mqtt import BrokerSettings
from tests.harness import CLUB, Rig, member_toml, write_atomically
from tests.locked_broker import HUB, Locked, Probe, make_locked
from tests.waiting import wait_for
from tools import ctl
from tools.broker import free_port
from tools.broker_setup.main import main as broker_main

NOT_AUTHORISED = 0x87  # MQTT 5 reason code: CONNACK and PUBACK
PACKET_TOO_LARGE = 0x95  # MQTT 5 reason code: the broker's DISCONNECT
UNSPECIFIED = 0x80  # what paho says when the connection is simply gone
C1 = "alc/demo/c1"
C2 = "alc/demo/c2"


@contextmanager
def probe(locked: Locked, who: str | None, **settings: object) -> Iterator[Probe]:
    """A connected `Probe` for account `who`, closed after the block."""
    p = Probe(locked.settings(who, **settings))  # type: ignore[arg-type]
    try:
        assert p.connect() == 0, f"{who} was refused"
        yield p
    finally:
        p.close()


@pytest.mark.parametrize("protocol", [5, 3])
def test_a_controller_the_hub_and_alc_ctl_work_end_to_end_over_tls(
    locked: Locked, tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: int
) -> None:
    caplog.set_level(logging.INFO)
    rig = Rig(
        locked.broker,
        tmp_path,
        mqtt=locked.controller_mqtt("c1", protocol=protocol),
        hub_settings=locked.settings("hub", protocol=protocol),
    )
    try:
        write_atomically(rig.data_file, CLUB)
        rig.start_hub()
        rig.run_controller()
        # state and sync up, the snapshot down: the full sync went over TLS.
        rig.wait_converged("the first full sync over TLS")
        # A saved edit reaches the controller as a delta.
        write_atomically(rig.data_file, CLUB + member_toml("m3", "00000000c3"))
        rig.wait_converged("the delta over TLS")
        db = rig.db
        assert db is not None
        # The boot's events went up and their acknowledgement came back down.
        last = rig.core(lambda c: c.outbox.last_seq)
        wait_for(lambda: db.acked("c1") >= last > 0, "the hub to acknowledge the events")
        # A command from `alc ctl`, with a hub-side account of its own (one session
        # per account: with the hub's, it would push the hub off the broker).
        out = io.StringIO()
        argv = [
            "status",
            "--site",
            "demo",
            "--controller",
            "c1",
            "--keys",
            str(rig.keys_dir),
            "--host",
            "localhost",
            "--port",
            str(locked.port),
            "--tls",
            "--ca-file",
            str(locked.layout.ca_cert),
            "--username",
            "ctl",
            "--password-file",
            str(locked.password_file("ctl")),
            "--protocol",
            str(protocol),
        ]
        with redirect_stdout(out):
            assert ctl.main(argv) == 0, out.getvalue()
        assert "done" in out.getvalue()
        # The hub is still connected: its session was not taken by alc ctl's.
        assert rig.hub_loop is not None and rig.hub_loop.link.connected
    finally:
        rig.close()
    assert not [r for r in caplog.records if "refused the connection" in r.getMessage()]


def test_another_controllers_account_reaches_nothing_of_the_first(locked: Locked) -> None:
    with (
        probe(locked, "c1") as c1,
        probe(locked, "c2") as c2,
        probe(locked, "hub") as hub,
    ):
        for leaf in ("data", "cmd", "ack"):
            c1.subscribe(f"{C1}/{leaf}")
        c2.subscribe(f"{C2}/cmd")
        for leaf in ("state", "events", "sync", "reply"):
            hub.subscribe(f"alc/demo/+/{leaf}")
        # The second controller tries to speak for the first, and as the hub to it.
        for topic in (f"{C1}/cmd", f"{C1}/data", f"{C1}/ack", f"{C1}/state", f"{C1}/events"):
            assert c2.publish(topic, b"forged", retain=topic.endswith("state")) == NOT_AUTHORISED
        # ... and listens everywhere it can name.
        for topic in ("#", "alc/#", f"{C1}/#", f"{C1}/state", f"{C1}/cmd", "alc/demo/+/events"):
            c2.subscribe(topic)
        # The first controller and the hub talk as usual.
        assert c1.publish(f"{C1}/state", b"c1 state", retain=True) == 0
        assert c1.publish(f"{C1}/events", b"c1 events") == 0
        assert hub.publish(f"{C1}/cmd", b"hub cmd") == 0
        assert hub.publish(f"{C1}/data", b"hub data") == 0
        # Markers, published after all of that.
        assert hub.publish(f"{C2}/cmd", b"marker for c2") == 0
        assert c1.publish(f"{C1}/reply", b"marker for the hub") == 0

        assert c2.wait_message(f"{C2}/cmd", b"marker for c2") == [(f"{C2}/cmd", b"marker for c2")]
        assert c1.wait_message(f"{C1}/data", b"hub data") == [
            (f"{C1}/cmd", b"hub cmd"),
            (f"{C1}/data", b"hub data"),
        ]
        assert hub.wait_message(f"{C1}/reply", b"marker for the hub") == [
            (f"{C1}/state", b"c1 state"),
            (f"{C1}/events", b"c1 events"),
            (f"{C1}/reply", b"marker for the hub"),
        ]
    # The retained state is the first controller's, not the forgery.
    with probe(locked, "hub") as late:
        late.subscribe(f"{C1}/state")
        assert late.wait_message(f"{C1}/state", b"c1 state") == [(f"{C1}/state", b"c1 state")]


def test_a_second_login_with_another_accounts_client_id_takes_no_session(
    locked: Locked,
) -> None:
    """use_username_as_clientid: the id a client asks for is ignored."""
    with probe(locked, "c1") as c1, probe(locked, "hub") as hub:
        c1.subscribe(f"{C1}/cmd")
        intruder = Probe(locked.settings("c2"), client_id=locked.username("c1"))
        try:
            assert intruder.connect() == 0
            assert hub.publish(f"{C1}/cmd", b"still yours") == 0
            assert c1.wait_message(f"{C1}/cmd", b"still yours")
            assert intruder.messages() == []
        finally:
            intruder.close()
        assert c1.disconnects == []


@pytest.mark.parametrize(
    ("who", "password", "tls"),
    [
        (None, None, True),  # anonymous
        ("c1", "not-the-password", True),
        ("c1", "", True),
        ("nobody", "whatever", True),
        ("c1", None, False),  # the right account in plaintext
    ],
    ids=["anonymous", "wrong-password", "empty-password", "unknown-account", "plaintext"],
)
def test_clients_without_a_valid_account_over_tls_are_refused(
    locked: Locked, who: str | None, password: str | None, tls: bool
) -> None:
    settings = locked.settings(None)
    if who is not None:
        settings = replace(
            settings,
            username=locked.username(who),
            password=password if password is not None else locked.password(who),
            tls=tls,
        )
    p = Probe(settings)
    try:
        code = p.connect()
    finally:
        p.close()
    # Plaintext gets no CONNACK at all (-1: the broker hung up during TLS).
    assert code == (-1 if not tls else NOT_AUTHORISED)


def test_the_broker_certificate_is_verified_with_its_name(locked: Locked) -> None:
    # The certificate is for "localhost": reached as 127.0.0.1, it is refused.
    p = Probe(locked.settings("c1", host="127.0.0.1"))
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match=r"127\.0\.0\.1"):
            p.connect()
    finally:
        p.close()


def test_a_certificate_from_another_ca_is_refused(locked: Locked, tmp_path: Path) -> None:
    other = make_locked(tmp_path / "other", free_port())  # a CA nobody here trusts
    p = Probe(locked.settings("c1", ca_file=other.ca_cert))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            p.connect()
    finally:
        p.close()


def test_a_1_mb_publish_is_refused_by_the_broker(locked: Locked) -> None:
    with probe(locked, "c1") as c1:
        c1.subscribe(f"{C1}/cmd")
        big = Probe(locked.settings("hub"))
        try:
            assert big.connect() == 0
            # QoS 0: paho would send a QoS 1 message again after every reconnect.
            big.client.publish(f"{C1}/cmd", b"x" * 1_000_000, qos=0)
            # The broker hangs up: with "packet too large" (149) when it could
            # say so before our 1 MB was through, else with the socket alone.
            _kind, reason = big.next_of(("disconnect",))
            assert reason in (PACKET_TOO_LARGE, UNSPECIFIED)
        finally:
            big.close()
        with probe(locked, "hub") as hub:
            assert hub.publish(f"{C1}/cmd", b"marker") == 0
        assert c1.wait_message(f"{C1}/cmd", b"marker") == [(f"{C1}/cmd", b"marker")]


def test_an_account_added_to_a_running_broker_works_after_a_reload(locked: Locked) -> None:
    assert broker_main(["add", str(locked.layout.dir), "--site", "demo", "--controller", "c3"]) == 0
    password = locked.layout.account_password("demo.c3").read_text().strip()
    late = replace(locked.settings("c1"), username="demo.c3", password=password)

    def accepted() -> bool:
        p = Probe(late)
        try:
            return p.connect() == 0
        finally:
            p.close()

    assert not accepted()  # mosquitto has not read it yet
    process = locked.broker.process
    assert process is not None
    process.send_signal(signal.SIGHUP)
    wait_for(accepted, "the broker to read the new account")


def test_bench_topics_reach_only_a_bench_account(locked: Locked) -> None:
    dir = str(locked.layout.dir)
    assert broker_main(["add", dir, "--site", "demo", "--controller", "b1", "--bench"]) == 0
    assert broker_main(["add", dir, "--site", "demo", "--hub", "sim", "--bench"]) == 0
    process = locked.broker.process
    assert process is not None
    process.send_signal(signal.SIGHUP)

    def account(user: str) -> BrokerSettings:
        password = locked.layout.account_password(user).read_text().strip()
        return replace(locked.settings("c1"), username=user, password=password)

    def accepted() -> bool:
        p = Probe(account("sim"))
        try:
            return p.connect() == 0
        finally:
            p.close()

    wait_for(accepted, "the broker to read the bench accounts")
    with probe(locked, "c1") as c1:
        bench, sim = Probe(account("demo.b1")), Probe(account("sim"))
        try:
            assert bench.connect() == 0 and sim.connect() == 0
            bench.subscribe("alc/demo/b1/bench/in")
            sim.subscribe("alc/demo/+/bench/out")
            c1.subscribe(f"{C1}/bench/in")
            c1.subscribe(f"{C1}/cmd")
            assert sim.publish("alc/demo/b1/bench/in", b"press") == 0
            assert sim.publish(f"{C1}/bench/in", b"press") == 0  # granted to sim...
            assert sim.publish(f"{C1}/cmd", b"marker") == 0
            # ... but c1's account has no bench: only the marker reaches it.
            assert c1.wait_message(f"{C1}/cmd", b"marker") == [(f"{C1}/cmd", b"marker")]
            assert bench.wait_message("alc/demo/b1/bench/in", b"press")
            assert bench.publish("alc/demo/b1/bench/out", b"door on") == 0
            assert sim.wait_message("alc/demo/b1/bench/out", b"door on")
            # c1 may not publish a bench output.
            assert c1.publish(f"{C1}/bench/out", b"forged") == NOT_AUTHORISED
        finally:
            bench.close()
            sim.close()


def test_a_new_password_locks_the_old_one_out_after_a_reload(locked: Locked) -> None:
    old = locked.password("c1")
    others = {who: locked.password(who) for who in ("c2", HUB)}

    def accepted(password: str) -> bool:
        p = Probe(locked.settings("c1", password=password))
        try:
            return p.connect() == 0
        finally:
            p.close()

    assert broker_main(["passwd", str(locked.layout.dir), "--account", "demo.c1"]) == 0
    new = locked.password("c1")
    assert new != old and stat.S_IMODE(locked.password_file("c1").stat().st_mode) == 0o600
    assert accepted(old)  # until mosquitto reads the file again
    process = locked.broker.process
    assert process is not None
    process.send_signal(signal.SIGHUP)
    wait_for(lambda: accepted(new), "the broker to read the new password")
    assert not accepted(old)
    for who, password in others.items():  # nobody else's password changed
        assert locked.password(who) == password
        p = Probe(locked.settings(who))
        try:
            assert p.connect() == 0, f"{who} was refused"
        finally:
            p.close()


def test_a_new_password_for_no_such_account_changes_nothing(
    locked: Locked, capsys: pytest.CaptureFixture[str]
) -> None:
    before = locked.layout.passwd.read_bytes()
    assert broker_main(["passwd", str(locked.layout.dir), "--account", "demo.c9"]) == 2
    assert "no account 'demo.c9'" in capsys.readouterr().err
    assert locked.layout.passwd.read_bytes() == before
    assert not locked.layout.account_password("demo.c9").exists()
