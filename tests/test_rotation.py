"""Key rotation end to end (PROTOCOL.md s2): a running controller and the reference
hub, through a real mosquitto, go from key `c1` to key `c1/2` in the four steps of
docs/operations.md, each side's keys directory changed by `alc ctl rotate`, with
traffic both ways at every step and not one message refused on either side."""

from __future__ import annotations

import io
import logging
import queue
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.core.errors import RemoteError
from firmware.core.wire import parse
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from tests.broker import Broker
from tests.harness import BASE, CONTROLLER, SITE, Rig, club, logged_events, write_atomically
from tests.waiting import WAIT_S, wait_for
from tools import ctl
from tools.hub.keys import read_keyring

TO_CONTROLLER = ("data", "cmd", "ack")
FROM_CONTROLLER = ("state", "sync", "events", "reply")


class Sniffer:
    """Every non-retained message on the controller's topics, as (leaf, kid):
    the kid is in clear in the envelope, so which key each side uses shows."""

    def __init__(self, broker: Broker) -> None:
        self.seen: queue.Queue[LinkEvent] = queue.Queue()
        self.link = Link(
            "test-sniffer",
            BrokerSettings(broker.host, broker.port),
            self.seen.put,
            subscriptions=[f"{BASE}/#"],
            persistent=False,
        )
        self.link.start()
        assert self.link.wait_connected(WAIT_S)

    def drain(self) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        while True:
            try:
                event = self.seen.get_nowait()
            except queue.Empty:
                return out
            if isinstance(event, Received) and not event.retained:
                leaf = event.topic[len(BASE) + 1 :]
                try:
                    out.append((leaf, parse(event.payload).kid))
                except RemoteError:
                    out.append((leaf, b"?"))

    def close(self) -> None:
        self.link.stop()


@pytest.fixture
def rig(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Rig]:
    caplog.set_level(logging.INFO)
    rig = Rig(broker, tmp_path)
    # The controller reads its own keys directory, as on a Pi: a copy of its key.
    ctl_keys = tmp_path / "ctl-keys"
    ctl_keys.mkdir(mode=0o700)
    shutil.copy2(rig.keys_dir / f"{CONTROLLER}.key", ctl_keys)
    text = rig.config_path.read_text()
    key_line = f'key_file = "{rig.keys_dir / (CONTROLLER + ".key")}"\n'
    assert key_line in text
    rig.config_path.write_text(text.replace(key_line, f'keys_dir = "{ctl_keys}"\n'))
    try:
        yield rig
    finally:
        rig.close()


def rotate(step: str, keys: Path, *checked: str) -> int:
    return ctl.main(["rotate", step, "--controller", CONTROLLER, "--keys", str(keys), *checked])


def restart(rig: Rig) -> None:
    """What a technician does after changing the controller's keys directory."""
    rig.stop_controller()
    rig.run_controller()

    def online() -> bool:
        # The hub heard the new session's `state`: the broker retains it for `alc ctl`.
        assert rig.hub is not None
        view = rig.hub.controllers.get(CONTROLLER)
        return view is not None and view.state is not None and view.state.get("online") is True

    wait_for(lambda: rig.runtime is not None and rig.runtime.link.connected, "the link")
    wait_for(online, "the controller online again")


def traffic(rig: Rig, n: int, capsys: Any) -> None:
    """Messages both ways: a change set to the controller (delta, its state back),
    the events uploaded and acknowledged, and `alc ctl status` (cmd, reply)."""
    members = "".join(
        f'\n[[member]]\nid = "r{i}"\ngroups = ["adults"]\ncreds = [["tag", "{i:010d}"]]\n'
        for i in range(n)
    )
    write_atomically(rig.data_file, club(extra=members))
    rig.wait_converged(f"change set {n} to arrive")
    target = ctl.Target(
        BrokerSettings(rig.broker.host, rig.broker.port),
        "alc",
        SITE,
        CONTROLLER,
        read_keyring(rig.keys_dir, CONTROLLER),
    )
    out = io.StringIO()
    assert ctl.send_command(target, "status", {}, out=out) == 0, out.getvalue()
    assert "ignoring" not in capsys.readouterr().err

    def uploaded() -> bool:
        assert rig.db is not None
        stored = rig.db.events(CONTROLLER)
        acked = rig.core(lambda c: c.outbox.acked_upto >= c.outbox.last_seq)
        return bool(stored) and acked

    wait_for(uploaded, "every event uploaded and acknowledged")


def kids(sniffer: Sniffer, leaves: tuple[str, ...]) -> set[bytes]:
    return {kid for leaf, kid in sniffer.drain() if leaf in leaves}


def test_a_rotation_refuses_no_message_at_any_step(
    rig: Rig, broker: Broker, caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    hub_keys, ctl_keys = rig.keys_dir, rig.tmp / "ctl-keys"
    old, new = CONTROLLER.encode(), f"{CONTROLLER}/2".encode()
    write_atomically(rig.data_file, club())
    rig.start_hub()
    rig.run_controller()
    rig.wait_converged()
    sniffer = Sniffer(broker)
    try:
        traffic(rig, 1, capsys)
        assert kids(sniffer, TO_CONTROLLER + FROM_CONTROLLER) == {old}

        # 1. The new key, accepted on both sides; neither sends with it yet.
        assert rotate("add", hub_keys) == 0
        shutil.copy2(hub_keys / f"{CONTROLLER}.2.key", ctl_keys)
        restart(rig)
        rig.wait_converged()
        traffic(rig, 2, capsys)
        assert kids(sniffer, TO_CONTROLLER + FROM_CONTROLLER) == {old}

        # 2. The hub sends with it (it rereads its keys directory on its own).
        assert rotate("switch", hub_keys) == 0
        traffic(rig, 3, capsys)
        traffic(rig, 4, capsys)
        seen = sniffer.drain()
        to_controller = [kid for leaf, kid in seen if leaf in TO_CONTROLLER]
        assert to_controller[-1] == new  # the hub switched within the step
        assert {kid for leaf, kid in seen if leaf in FROM_CONTROLLER} == {old}

        # 3. The controller sends with it (a restart reads its keys directory).
        # Retiring on the hub now would refuse the controller's messages: the
        # checked retire reads its retained state and refuses, deleting nothing.
        on_broker = ("--site", SITE, "--port", str(broker.port))
        assert rotate("retire", hub_keys, *on_broker) == 2
        assert "still sends with c1" in capsys.readouterr().err
        assert len(read_keyring(hub_keys, CONTROLLER).accepted) == 2
        assert rotate("switch", ctl_keys) == 0
        restart(rig)
        # The old session said `offline` with the old key as it stopped; the new
        # one sends everything with the new key from its first message on.
        assert kids(sniffer, FROM_CONTROLLER) <= {old, new}
        rig.wait_converged()
        traffic(rig, 5, capsys)
        assert kids(sniffer, FROM_CONTROLLER) == {new}

        # 4. The old key retired on both sides.
        assert rotate("retire", hub_keys, *on_broker) == 0
        assert rotate("retire", ctl_keys) == 0
        assert sorted(p.name for p in ctl_keys.glob("*.key")) == [f"{CONTROLLER}.2.key"]
        restart(rig)
        rig.wait_converged()
        traffic(rig, 6, capsys)
        assert kids(sniffer, TO_CONTROLLER + FROM_CONTROLLER) == {new}
    finally:
        sniffer.close()

    # Not one message refused, on either side, at any step.
    refused = [body for type_, body in logged_events(caplog) if body.get("what") == "auth_failed"]
    assert refused == []
    dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert dropped == []
    # And the old key really is gone: a message sealed with it is refused now.
    assert b"c1" not in read_keyring(hub_keys, CONTROLLER).accepted
