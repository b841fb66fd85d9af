"""The Home Assistant adapter's pure parts: the `[homeassistant]` section, the
documents, what the entities show (and when "today" ends), Home Assistant's
commands, the bounded mailbox, and the ACL lines `alc broker add` writes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.config import ConfigError, load_config
from firmware.config.homeassistant import HomeAssistantSection
from firmware.core.inputs import LocalCommand
from firmware.core.outbox import LoggedEvent
from firmware.core.wiring import DoorSpec, LightSpec, Wiring
from firmware.homeassistant.board import Board, Figures
from firmware.homeassistant.commands import Ignored, Offered, command_of
from firmware.homeassistant.discovery import entities
from firmware.homeassistant.mailbox import Command, Mailbox
from firmware.homeassistant.topics import Topics, object_id
from tools.broker_setup import acl

MINIMAL = """
[controller]
site = "demo"
id = "ctl1"
data_dir = "data"
key_file = "ctl1.key"
"""
TOPICS = Topics("homeassistant", "alc", "demo", "ctl1")
WIRING = Wiring(
    doors=(DoorSpec("front", relay=17, contact=27), DoorSpec("back door", relay=18)),
    lights=(LightSpec("court1", relay=5),),
)
BERLIN = ZoneInfo("Europe/Berlin")


def load(tmp_path: Path, text: str) -> HomeAssistantSection | None:
    path = tmp_path / "controller.toml"
    path.write_text(MINIMAL + text)
    return load_config(path).homeassistant


def test_the_section_is_off_unless_present_and_has_safe_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") is None
    section = load(tmp_path, "[homeassistant]\n")
    assert section is not None
    assert (section.prefix, section.commands, section.names) == ("homeassistant", False, False)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('prefix = "home/assistant"', "homeassistant.prefix: must be 1 to 64"),
        ("commands = 1", "homeassistant.commands: must be true or false"),
        ("colour = true", "homeassistant.colour: is not a known setting"),
        ('username = "x"', "homeassistant.username: needs password_file"),
        ('password_file = "p"', "homeassistant.password_file: has no effect without username"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_the_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        load(tmp_path, f"[homeassistant]\n{text}\n")


def test_the_adapters_password_is_read_and_kept_out_of_reprs(tmp_path: Path) -> None:
    secret = tmp_path / "ha.password"
    secret.write_text("s3cret-pass\n")
    secret.chmod(0o600)
    section = load(
        tmp_path, f'[homeassistant]\nusername = "demo.ctl1.ha"\npassword_file = "{secret}"\n'
    )
    assert section is not None and section.password == "s3cret-pass"
    assert "s3cret" not in repr(section)


def test_object_ids_are_safe_and_distinct() -> None:
    assert object_id("door", "front") == "door-front"
    odd = [
        object_id("door", "back door"),
        object_id("door", "back/door"),
        object_id("door", "back_door"),
    ]
    assert len(set(odd)) == 3 and all(o.replace("-", "").replace("_", "").isalnum() for o in odd)


def test_own_discovery_topics_are_known_by_node() -> None:
    assert TOPICS.is_own_config("homeassistant/lock/alc_demo_ctl1/door-gone/config")
    for other in (
        "homeassistant/lock/alc_demo_ctl2/door-gone/config",
        "homeassistant/lock/door-gone/config",
        "homeassistant/lock/alc_demo_ctl1/door-gone/state",
        "ha/lock/alc_demo_ctl1/door-gone/config",
        "homeassistant/lock/alc_demo_ctl1/a/b/config",
    ):
        assert not TOPICS.is_own_config(other), other


def test_the_documents_name_one_device_and_a_contact_only_where_wired() -> None:
    found = entities(TOPICS, WIRING)
    kinds = sorted((e.component, e.object) for e in found)
    assert ("binary_sensor", "contact-front") in kinds
    assert not [k for k in kinds if k[0] == "binary_sensor" and "back" in k[1]]
    assert [k for k in kinds if k[0] == "lock"] == sorted(
        ("lock", object_id("door", d)) for d in ("front", "back door")
    )
    for e in found:
        assert e.config_topic == f"homeassistant/{e.component}/alc_demo_ctl1/{e.object}/config"
        assert e.config["device"]["identifiers"] == ["alc_demo_ctl1"]
        assert e.config["state_topic"] == f"alc/demo/ctl1/ha/{e.object}/state"
        if e.component in ("lock", "light"):
            assert e.config["command_topic"] == f"alc/demo/ctl1/ha/{e.object}/set"


def access(t: float, granted: bool = True) -> LoggedEvent:
    body = {
        "door": "front",
        "reader": "front-in",
        "credkind": "pin",
        "value": "4711",
        "member": "m1",
        "booking": None,
        "granted": granted,
        "reason": "granted" if granted else "no_access",
    }
    return LoggedEvent(1, int(t), "access", body)


def test_the_board_sends_changes_once_and_everything_again_on_resend() -> None:
    board = Board(entities(TOPICS, WIRING))
    board.output("door:front", True)
    board.output("warn:court1", True)  # not an entity: nothing
    board.logged(LoggedEvent(1, 0, "light", {"light": "court1", "what": "on"}))
    board.logged(LoggedEvent(2, 0, "light", {"light": "court1", "what": "warn"}))
    changes = dict(board.changes())
    assert changes == {"decisions_today": "0", "door-front": "UNLOCKED", "light-court1": "ON"}
    for object, value in changes.items():
        board.sent(object, value)
    assert board.changes() == []
    board.output("door:front", True)  # the same again: nothing new
    assert board.changes() == []
    board.output("door:front", False)
    assert board.changes() == [("door-front", "LOCKED")]
    board.resend()
    assert len(board.changes()) == 3


def test_a_decision_never_carries_the_credential_and_names_only_when_given() -> None:
    board = Board(entities(TOPICS, WIRING))
    decision = board.logged(access(0, granted=False))
    assert decision is not None
    payload = decision.payload(None)
    assert payload == {
        "event_type": "denied",
        "reason": "no_access",
        "door": "front",
        "reader": "front-in",
    }
    assert decision.payload("Ada")["name"] == "Ada"


def test_decisions_today_count_in_the_sites_day_and_reset_at_its_midnight() -> None:
    board = Board(entities(TOPICS, WIRING))
    evening = dt.datetime(2026, 12, 5, 23, 30, tzinfo=BERLIN).timestamp()
    board.figures(Figures(0, 1, None, BERLIN), evening)
    board.logged(access(evening))
    board.logged(access(evening + 60))
    assert board.state("decisions_today") == "2"
    # 00:10 in Berlin (still the 5th in UTC): a new day for the club.
    after = evening + 40 * 60
    board.figures(Figures(0, 1, None, BERLIN), after)
    assert board.state("decisions_today") == "0"
    board.logged(access(after))
    assert board.state("decisions_today") == "1"


def test_figures_show_as_home_assistant_expects() -> None:
    board = Board(entities(TOPICS, WIRING))
    board.figures(Figures(12, 34, 1_800_000_000.0, BERLIN), 1_800_000_100.0)
    assert board.state("outbox") == "12" and board.state("data_version") == "34"
    assert board.state("last_full_sync") == "2027-01-15T08:00:00+00:00"


OFFERED = Offered(doors={"door-front": "front"}, lights={"light-court1": "court1"})


def message(object: str, payload: bytes, retained: bool = False) -> Command:
    return Command(f"alc/demo/ctl1/ha/{object}/set", payload, retained)


def test_only_unlock_and_light_on_off_become_commands() -> None:
    assert command_of(message("door-front", b"UNLOCK"), TOPICS, OFFERED) == LocalCommand(
        "homeassistant", "open_door", "front"
    )
    on = command_of(message("light-court1", b"ON"), TOPICS, OFFERED)
    assert isinstance(on, LocalCommand) and (on.what, on.target, on.on) == (
        "set_light",
        "court1",
        True,
    )
    assert on.s is not None and on.s > 0
    off = command_of(message("light-court1", b"OFF"), TOPICS, OFFERED)
    assert isinstance(off, LocalCommand) and not off.on
    ignored = [
        (message("door-front", b"LOCK"), "payload"),
        (message("door-front", b"unlock"), "payload"),
        (message("door-front", b"UNLOCK", retained=True), "retained"),
        (message("door-front", b"U" * 10_000), "payload"),
        (message("light-court1", b"\xff"), "payload"),
        (message("door-back", b"UNLOCK"), "object"),
        (Command("alc/demo/ctl1/ha/x/y/set", b"ON", False), "topic"),
        (Command("alc/demo/ctl1/cmd", b"ON", False), "topic"),
    ]
    for command, kind in ignored:
        got = command_of(command, TOPICS, OFFERED)
        assert isinstance(got, Ignored) and got.kind == kind, command


@given(
    st.one_of(
        st.text(max_size=80),
        st.sampled_from(["door-front", "light-court1", "door-back", "", "+", "#"]).map(
            lambda o: f"alc/demo/ctl1/ha/{o}/set"
        ),
    ),
    st.binary(max_size=64) | st.sampled_from([b"UNLOCK", b"ON", b"OFF", b"LOCK"]),
    st.booleans(),
)
def test_any_message_is_one_of_the_three_commands_or_ignored(
    topic: str, payload: bytes, retained: bool
) -> None:
    got = command_of(Command(topic, payload, retained), TOPICS, OFFERED)
    if isinstance(got, Ignored):
        return
    assert not retained and len(payload) <= 6
    assert (got.what, got.target, payload) in {
        ("open_door", "front", b"UNLOCK"),
        ("set_light", "court1", b"ON"),
        ("set_light", "court1", b"OFF"),
    }
    assert got.by == "homeassistant"


def test_the_mailbox_is_bounded_and_counts_what_it_dropped() -> None:
    box = Mailbox(events_max=3, commands_max=2)
    box.events(tuple(access(i) for i in range(5)))
    for i in range(3):
        box.command(Command(f"t{i}", b"", False))
    for on in (True, False, True):
        box.output("door:front", on)
    box.resend()
    box.resend()
    for i in range(300):
        box.config(f"c{i % 290}")
    batch = box.take(0)
    assert batch.configs == [f"c{i}" for i in range(256)]  # each once, at most 256
    assert [e.time for e in batch.events] == [2, 3, 4]
    assert [c.topic for c in batch.commands] == ["t1", "t2"]
    assert batch.outputs == {"door:front": True} and batch.resend and batch.dropped == 3
    empty = box.take(0)
    assert not (empty.events or empty.commands or empty.outputs or empty.resend or empty.dropped)
    box.close()
    assert box.take(60).closed  # at once: a closed mailbox never waits


def test_the_acl_lines_of_both_home_assistant_accounts() -> None:
    publisher = acl.KINDS["homeassistant-publisher"]("alc", "demo", "ctl1", prefix="ha")
    assert publisher.block().splitlines() == [
        "# Home Assistant adapter of controller ctl1 of site demo",
        "user demo.ctl1.ha",
        "topic read ha/status",
        "topic read ha/+/alc_demo_ctl1/+/config",
        "topic read alc/demo/ctl1/ha/+/set",
        "topic write ha/+/alc_demo_ctl1/+/config",
        "topic write alc/demo/ctl1/ha/availability",
        "topic write alc/demo/ctl1/ha/+/state",
    ]
    home = acl.KINDS["homeassistant"]("alc", "demo", "hass")
    assert home.block().splitlines() == [
        "# Home Assistant for site demo",
        "user hass",
        "topic read homeassistant/+/+/+/config",
        "topic read alc/demo/+/ha/availability",
        "topic read alc/demo/+/ha/+/state",
        "topic write homeassistant/status",
        "topic write alc/demo/+/ha/+/set",
    ]
