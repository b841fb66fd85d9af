"""mosquitto.conf for a locked-down broker (PROTOCOL.md s9), and reading one back.

The settings are global (`per_listener_settings false`) and there is one
listener, with TLS: no plaintext port at all, not even on loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from firmware.core.errors import LocalError
from firmware.mqtt import MAX_PACKET_BYTES
from tools.broker_setup.layout import Layout

DEFAULT_PORT = 8883
# Per session. A controller away for a while misses deltas and commands; past
# these it is dropped from its queue and the controller's full sync on return
# (an outage over `outage_s`) or the hub's resync command heals it. The hub's
# queue holds what controllers upload while it is down; they upload again
# until it acknowledges, so nothing is lost there either.
MAX_QUEUED_MESSAGES = 10_000
MAX_QUEUED_BYTES = 32 * 1024 * 1024
# A session nobody has used for this long is forgotten (a controller taken out
# of service); controllers ask for a week (firmware.mqtt.SESSION_EXPIRY_S).
SESSION_FORGOTTEN = "14d"

# Settings that belong to the listener above them (mosquitto.conf(5)).
LISTENER_KEYS = frozenset(
    {
        "protocol",
        "cafile",
        "capath",
        "certfile",
        "keyfile",
        "require_certificate",
        "tls_version",
        "ciphers",
        "ciphers_tls1.3",
        "socket_domain",
        "bind_interface",
        "mount_point",
        "max_connections",
        "use_identity_as_username",
        "use_subject_as_username",
        "psk_hint",
        "http_dir",
        "crlfile",
        "dhparamfile",
        "ecdh_curve",
        "use_username_as_clientid",
        "max_qos",
        "max_topic_alias",
    }
)


class ConfError(LocalError):
    """A mosquitto.conf `alc broker` cannot write or read."""


@dataclass(frozen=True, slots=True)
class Options:
    """What `alc broker init` asks: the port, the address to listen on (None: every
    address) and the user mosquitto switches to when started as root (None:
    mosquitto's own default, `mosquitto`)."""

    port: int = DEFAULT_PORT
    bind: str | None = None
    user: str | None = None

    def checked(self) -> Options:
        """These options, or `ConfError` saying which is wrong."""
        if not 0 < self.port <= 65535:
            raise ConfError(f"--port must be 1 to 65535, got {self.port}")
        if self.bind is not None:
            try:
                ipaddress.ip_address(self.bind)
            except ValueError:
                raise ConfError(f"--bind must be an IP address, got {self.bind!r}") from None
        if self.user is not None and (
            not self.user or not self.user.isprintable() or " " in self.user
        ):
            raise ConfError(f"--user must be a user name, got {self.user!r}")
        return self


def render(layout: Layout, options: Options) -> str:
    """The text of DIR/mosquitto.conf."""
    d = layout
    listen = f"listener {options.port}" + (f" {options.bind}" if options.bind else "")
    lines = [
        "# mosquitto.conf for alc, written by `alc broker init` (docs/operations.md,",
        '# "A locked-down broker"; PROTOCOL.md s9). `alc broker check` says what it',
        "# allows, account by account.",
        "",
        "# Every setting below holds for the one listener, the TLS one.",
        "per_listener_settings false",
        "",
        "# Accounts only: their passwords in the password file, what each may read",
        "# and write in the ACL file (`alc broker add` writes both).",
        "allow_anonymous false",
        f"password_file {d.passwd}",
        f"acl_file {d.acl}",
        "",
        "# Nothing larger than 300 KiB: the largest sealed message is about 257 KiB.",
        f"message_size_limit {MAX_PACKET_BYTES}",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "# Each session's queue is bounded: a client away for long costs the broker",
        "# this much at most.",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        f"persistent_client_expiration {SESSION_FORGOTTEN}",
        "",
        "# Sessions and queued messages survive a restart.",
        "persistence true",
        f"persistence_location {d.dir}/",
        "",
        "# To the journal under systemd: refused clients show as notices.",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
    ]
    if options.user is not None:
        lines += [
            "",
            "# The user mosquitto switches to when started as root.",
            f"user {options.user}",
        ]
    lines += [
        "",
        "# MQTT over TLS, and no other listener: there is no plaintext port.",
        listen,
        "protocol mqtt",
        f"cafile {d.ca_cert}",
        f"certfile {d.server_cert}",
        f"keyfile {d.server_key}",
        "require_certificate false",
        "# A session belongs to its account: nobody takes a controller's session over",
        "# by connecting with its client id. (A listener's setting: it must be here.)",
        "use_username_as_clientid true",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Listener:
    """One `listener` block: its port, address and settings."""

    port: str
    bind: str | None
    settings: dict[str, list[str]] = field(default_factory=dict)

    def one(self, key: str) -> str | None:
        values = self.settings.get(key)
        return values[-1] if values else None


@dataclass
class Conf:
    """A mosquitto.conf read back: global settings and listeners."""

    settings: dict[str, list[str]] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)

    def one(self, key: str) -> str | None:
        """The last value of global `key` (mosquitto takes the last), or None."""
        values = self.settings.get(key)
        return values[-1] if values else None


def parse(text: str, *, where: str) -> Conf:
    """Read `key value` lines; listener settings go to the listener above them."""
    conf = Conf()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "listener":
            port, _, bind = value.partition(" ")
            if not port:
                raise ConfError(f"{where}:{number}: listener without a port")
            conf.listeners.append(Listener(port, bind.strip() or None))
        elif key in LISTENER_KEYS and conf.listeners:
            conf.listeners[-1].settings.setdefault(key, []).append(value)
        else:
            conf.settings.setdefault(key, []).append(value)
    return conf
