"""`[homeassistant]`: Home Assistant MQTT discovery (docs/homeassistant.md).

Off unless the section is there. The adapter publishes on a connection of its
own, with a will of its own, so it logs in with an account of its own when the
broker has accounts: mosquitto as `alc broker init` writes it takes the account's
name as the client id, and a second login with the controller's account would
push the controller off the broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from firmware.config.private_files import read_private_line
from firmware.config.tables import Table

DEFAULT_PREFIX = "homeassistant"


@dataclass(frozen=True, slots=True)
class HomeAssistantSection:
    """`[homeassistant]`: where discovery goes and what Home Assistant may do."""

    prefix: str = DEFAULT_PREFIX
    # Home Assistant may unlock doors and switch lights (the `set` topics).
    commands: bool = False
    # Access decisions carry the member's name (else only granted/denied and the reason).
    names: bool = False
    # The adapter's own account (`alc broker add --homeassistant-publisher C`);
    # None: the `[mqtt]` settings' (a broker without accounts).
    username: str | None = None
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)


def parse_homeassistant(path: Path, raw: Any, *, mqtt_username: str | None) -> HomeAssistantSection:
    """The section, checked; `ConfigError` names the key. `mqtt_username`: the
    controller's own account, which this connection must not share."""
    s = Table(path, "homeassistant", raw)
    section = HomeAssistantSection(
        prefix=s.segment("prefix") if s.has("prefix") else DEFAULT_PREFIX,
        commands=s.flag("commands", False),
        names=s.flag("names", False),
        username=s.text("username", None),
        password_file=s.path_value("password_file", None),
    )
    s.done()
    s.needs("password_file", "username")
    if section.username is not None and section.password_file is None:
        raise s.error("username", "needs password_file: the file holding the account's password")
    if mqtt_username is not None and section.username in (None, mqtt_username):
        raise s.error(
            "username",
            "must name an account of its own when [mqtt] has one: a second login with "
            f"{mqtt_username!r} would push the controller off the broker (alc broker add DIR "
            "--site SITE --homeassistant-publisher ID makes it)",
        )
    if section.password_file is None:
        return section
    where = f"{path}: homeassistant.password_file"
    return replace(section, password=read_private_line(section.password_file, where=where))
