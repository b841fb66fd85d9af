"""Home Assistant on the locked-down broker (`alc broker init` and `add`): the
controller's adapter logs in with its own account (`--homeassistant-publisher`),
Home Assistant with one of its own (`--homeassistant`), and each reaches only
what docs/homeassistant.md says, over TLS, on the ACL file `alc broker add` wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config
from tests.harness import CLUB, Rig, write_atomically
from tests.homeassistant_watcher import Watcher
from tests.locked_broker import Locked, Probe, running_locked
from tests.test_broker_locked import NOT_AUTHORISED
from tests.waiting import wait_for

PUBLISHER, HA = "demo.c1.ha", "ha"
HA_BASE = "alc/demo/c1/ha"


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Locked]:
    """tests/locked_broker.py's broker, plus the two Home Assistant accounts."""
    with running_locked(
        tmp_path, ["--homeassistant-publisher", "c1"], ["--homeassistant", HA]
    ) as running:
        yield running


def connected(locked: Locked, who: str) -> Probe:
    p = Probe(locked.settings(who), client_id=f"probe-{who}")
    assert p.connect() == 0, f"{who} was refused"
    return p


def test_each_home_assistant_account_reaches_only_its_topics(
    locked: Locked, tmp_path: Path
) -> None:
    section = (
        "\n[homeassistant]\ncommands = true\n"
        f'username = "{PUBLISHER}"\npassword_file = "{locked.password_file(PUBLISHER)}"\n'
    )
    rig = Rig(
        locked.broker,
        tmp_path,
        mqtt=locked.controller_mqtt("c1"),
        hub_settings=locked.settings("hub"),
        extra='[[doors]]\nid = "front"\n' + section,
    )
    watcher = Watcher(locked.settings(HA))
    try:
        write_atomically(rig.data_file, CLUB)
        rig.start_hub()
        rig.run_controller()
        # Home Assistant's account finds the device, follows it and commands it,
        # and the controller's own session stays up beside its adapter's.
        wait_for(lambda: watcher.entity("lock", "door-front"), "the lock")
        lock = watcher.entity("lock", "door-front")
        assert lock is not None and not watcher.errors
        wait_for(lambda: watcher.available(lock) is True, "the device online")
        wait_for(lambda: watcher.state(lock) == "LOCKED", "the lock's state")
        watcher.command(f"{HA_BASE}/door-front/set", b"UNLOCK")
        wait_for(lambda: watcher.state(lock) == "UNLOCKED", "the door unlocked by HA")
        rig.wait_converged()

        ha, publisher = connected(locked, HA), connected(locked, PUBLISHER)
        try:
            # Home Assistant may not speak for the hub or the controller, nor
            # publish discovery or states.
            for topic in (
                "alc/demo/c1/cmd",
                "alc/demo/c1/data",
                f"{HA_BASE}/door-front/state",
                f"{HA_BASE}/availability",
                "homeassistant/lock/alc_demo_c1/door-front/config",
            ):
                assert ha.publish(topic, b"forged") == NOT_AUTHORISED, topic
            # The adapter's account may not reach the protocol's topics, nor
            # another controller's node or state topics.
            for topic in (
                "alc/demo/c1/state",
                "alc/demo/c1/events",
                "homeassistant/lock/alc_demo_c2/door-front/config",
                "alc/demo/c2/ha/door-front/state",
                "homeassistant/status",
            ):
                assert publisher.publish(topic, b"forged") == NOT_AUTHORISED, topic
            # What Home Assistant reads: discovery and the ha topics, never the
            # controller's protocol topics (a marker after them shows none came).
            ha.subscribe("#")
            assert publisher.publish(f"{HA_BASE}/marker/state", b"marker") == 0
            got = ha.wait_message(f"{HA_BASE}/marker/state", b"marker")
            topics = {t for t, _p in got}
            assert topics and all(
                t.startswith(("homeassistant/", f"{HA_BASE}/")) for t in topics
            ), topics
            assert any(t.startswith("homeassistant/lock/alc_demo_c1/") for t in topics)
        finally:
            ha.close()
            publisher.close()
    finally:
        watcher.close()
        rig.close()


def test_the_adapter_must_not_log_in_with_the_controllers_account(
    locked: Locked, tmp_path: Path
) -> None:
    rig = Rig(
        locked.broker,
        tmp_path,
        mqtt=locked.controller_mqtt("c1"),
        extra="\n[homeassistant]\n",
    )
    with pytest.raises(ConfigError, match=r"homeassistant.username: must name an account"):
        load_config(rig.config_path)
