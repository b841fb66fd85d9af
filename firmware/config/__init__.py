"""controller.toml -> a validated `Config`, or one clear line naming file, key and problem.

The local config holds identity, broker and wiring; the data (members, doors'
timings, prices) comes from the hub. Unknown keys are errors: a typo in a pin
number's key must not silently leave a door unwired.

- `firmware.config.tables`: `ConfigError` and the typed reader of one table;
- `firmware.config.wiring`: `[[doors]]`, `[[lights]]`, `[[readers]]` -> the typed
  `firmware.core.wiring.Wiring`, read here once for the core and the HAL.
"""

from __future__ import annotations

import ipaddress
import ssl
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# ConfigError is what `load_config` raises: part of this package's surface.
from firmware.config.homeassistant import HomeAssistantSection, parse_homeassistant
from firmware.config.keys import load_keyring
from firmware.config.keys import read_key as read_key
from firmware.config.private_files import check_private, read_private_line
from firmware.config.tables import ConfigError as ConfigError
from firmware.config.tables import Table
from firmware.config.wiring import bench_only_wiring, parse_wiring
from firmware.core.keyring import Keyring
from firmware.core.limits import CREDKINDS
from firmware.core.pins import BUDGET_ACTIONS, DEFAULT_BUDGET, MAX_BUDGET, PinRules
from firmware.core.wiring import Wiring

LOOP_PRIORITIES = ("normal", "high", "realtime")


@dataclass(frozen=True, slots=True)
class ControllerSection:
    """`[controller]`: who this controller is and where it keeps its data."""

    site: str
    id: str
    data_dir: Path
    # Exactly one of the two: `key_file`, a single key (kid = the controller id);
    # `keys_dir`, the key files by kid and the send marker (firmware.config.keys).
    key_file: Path | None
    outage_s: int = 600
    full_sync_every_s: int = 43200
    outbox_max: int = 1_000_000
    # The loop's kernel scheduling: "normal", "high" (nice -10) or "realtime"
    # (SCHED_FIFO); the last two need CAP_SYS_NICE (see docs/operations.md).
    loop_priority: str = "high"
    keys_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class MqttSection:
    """`[mqtt]`: the broker, and how the link to it is protected (PROTOCOL.md s9)."""

    host: str = "127.0.0.1"
    port: int = 1883
    root: str = "alc"
    username: str | None = None
    password_file: Path | None = None
    # Read from `password_file` at load; kept out of reprs and so out of logs.
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: int = 5  # MQTT 5; 3 means MQTT 3.1.1, for a broker without 5
    # Runs to a broker on another machine without TLS or an account; logged
    # loudly at every start (firmware.mqtt.Link.start).
    insecure: bool = False
    keepalive_s: int = 30


@dataclass(frozen=True, slots=True)
class Config:
    """The whole local config of one controller."""

    path: Path
    controller: ControllerSection
    mqtt: MqttSection
    backend: str
    masters: frozenset[tuple[str, str]]
    wiring: Wiring
    kiosk_listen: str | None
    kiosk_token: str | None = None
    kiosk_lan: KioskLan | None = None  # HTTPS for screens elsewhere on the LAN
    # Why the wiring tables are not complete, on a simulator (`backend = "sim"`),
    # which then runs on bench inputs alone; None when they are (always on a Pi).
    unwired: str | None = None
    pins: PinRules = field(default_factory=PinRules)
    metrics: MetricsSection | None = None  # `[metrics]`: None when the section is absent
    homeassistant: HomeAssistantSection | None = None  # [homeassistant]: off when absent

    @property
    def base_topic(self) -> str:
        """`{root}/{site}/{controller}`."""
        return f"{self.mqtt.root}/{self.controller.site}/{self.controller.id}"

    def keyring(self) -> Keyring:
        """The keys this controller accepts and the one it sends with, read from
        `keys_dir` or `key_file`; `ConfigError` names the file and the fix."""
        c = self.controller
        if c.keys_dir is not None:
            try:
                return load_keyring(c.keys_dir, c.id)
            except ConfigError as exc:
                raise ConfigError(f"{self.path}: controller.keys_dir: {exc}") from None
        assert c.key_file is not None  # the parser demands one of the two
        key = read_key(c.key_file, where=f"{self.path}: controller.key_file")
        return Keyring.single(c.id, key)

    def key(self) -> bytes:
        """The 32-byte key this controller sends with."""
        return self.keyring().send_key


def _controller(path: Path, raw: Any) -> ControllerSection:
    s = Table(path, "controller", raw)
    section = ControllerSection(
        site=s.segment("site"),
        id=s.segment("id"),
        data_dir=s.path_value("data_dir") or Path("."),
        key_file=s.path_value("key_file", None),
        keys_dir=s.path_value("keys_dir", None),
        outage_s=s.get("outage_s", int, 600, low=1),
        full_sync_every_s=s.get("full_sync_every_s", int, 43200, low=60),
        outbox_max=s.get("outbox_max", int, 1_000_000, low=100),
        loop_priority=s.get("loop_priority", str, "high"),
    )
    if (section.key_file is None) == (section.keys_dir is None):
        raise s.error("keys_dir", "name either keys_dir (the key files by kid) or key_file")
    if section.loop_priority not in LOOP_PRIORITIES:
        choices = ", ".join(repr(p) for p in LOOP_PRIORITIES)
        raise s.error("loop_priority", f"must be one of {choices}, got {section.loop_priority!r}")
    s.done()
    return section


MQTT_PROTOCOLS = (3, 5)


def _mqtt(path: Path, raw: Any) -> MqttSection:
    s = Table(path, "mqtt", raw)
    if s.has("password"):
        raise s.error(
            "password",
            "is no longer read: put the password alone in a file only this user can "
            "read (chmod 600) and name it in password_file",
        )
    tls = s.flag("tls", False)
    section = MqttSection(
        host=s.text("host", "127.0.0.1"),
        port=s.number("port", 8883 if tls else 1883, 1, 65535),
        root=s.segment("root") if "root" in s.table else "alc",
        username=s.text("username", None),
        password_file=s.path_value("password_file", None),
        tls=tls,
        ca_file=s.path_value("ca_file", None),
        cert_file=s.path_value("cert_file", None),
        key_file=s.path_value("key_file", None),
        protocol=s.number("protocol", 5, 3, 5),
        insecure=s.flag("insecure", False),
        keepalive_s=s.get("keepalive_s", int, 30, low=5),
    )
    s.done()
    if section.protocol not in MQTT_PROTOCOLS:
        raise s.error("protocol", f"must be 5 (MQTT 5) or 3 (MQTT 3.1.1), got {section.protocol}")
    for key in ("ca_file", "cert_file", "key_file"):
        if s.has(key) and not tls:
            raise s.error(key, "has no effect without tls = true")
    s.needs("key_file", "cert_file")
    s.needs("password_file", "username")
    if section.username is not None and section.password_file is None:
        raise s.error("username", "needs password_file: the file holding the account's password")
    _check_tls_files(s, section)
    if not is_loopback(section.host) and not section.insecure:
        missing = "tls" if not tls else "username" if section.username is None else None
        if missing is not None:
            raise s.error(
                missing,
                f"is required for a broker on another machine (host = {section.host!r}): "
                "TLS and an account of its own (alc broker add), or insecure = true",
            )
    if section.password_file is None:
        return section
    password = read_private_line(section.password_file, where=f"{path}: mqtt.password_file")
    return replace(section, password=password)


def _check_tls_files(s: Table, section: MqttSection) -> None:
    """The CA and client certificate files load, so a bad one stops the start here
    with its key named, not in paho's thread later; a client key is private."""
    if section.key_file is not None:
        check_private(section.key_file, where=f"{s.path}: mqtt.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if section.ca_file is not None:
            context.load_verify_locations(cafile=section.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise s.error("ca_file", f"cannot load {section.ca_file}: {_reason(exc)}") from None
    try:
        if section.cert_file is not None:
            context.load_cert_chain(section.cert_file, section.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise s.error("cert_file", f"cannot load {section.cert_file}: {_reason(exc)}") from None


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(exc.strerror or exc)


def _masters(path: Path, raw: Any) -> frozenset[tuple[str, str]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: masters: must be an array of tables ([[masters]])")
    masters = set()
    for i, entry in enumerate(raw):
        s = Table(path, f"masters[{i}]", entry)
        kind = s.get("credkind", str)
        if kind not in CREDKINDS:
            raise s.error("credkind", f"must be one of {', '.join(CREDKINDS)}")
        value = s.get("value", str)
        if not value:
            raise s.error("value", "must not be empty")
        s.done()
        masters.add((kind, value))
    return frozenset(masters)


KIOSK_TOKEN_MIN = 16


def kiosk_address(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); raises ValueError."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdecimal():
        raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ValueError(f"port must be 1 to 65535, got {port}")
    return host.removeprefix("[").removesuffix("]"), port


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class KioskLan:
    """`[kiosk]` `lan_listen` with its certificate: the HTTPS listener for
    screens elsewhere on the LAN (a certificate from `alc broker init`'s CA,
    or any other the screens trust)."""

    listen: str
    cert_file: Path
    key_file: Path


def _kiosk(path: Path, raw: Any) -> tuple[str | None, str | None, KioskLan | None]:
    """`[kiosk]`: `listen` (loopback host:port, plain HTTP: the controller's own
    screen), `lan_listen` (host:port, HTTPS with `cert_file` and `key_file`: screens
    elsewhere on the LAN) and `token`, which every screen must present, required
    with `lan_listen`. Neither listen key: no kiosk server."""
    s = Table(path, "kiosk", raw)
    listen = s.get("listen", str, None)
    lan_listen = s.get("lan_listen", str, None)
    token = s.get("token", str, None)
    cert_file = s.path_value("cert_file", None)
    key_file = s.path_value("key_file", None)
    s.done()
    if token is not None and (len(token) < KIOSK_TOKEN_MIN or not token.isprintable()):
        raise s.error("token", f"must be at least {KIOSK_TOKEN_MIN} printable characters")
    if token is not None and not all(c.isalnum() or c in "-_.~" for c in token):
        raise s.error("token", "may hold only letters, digits and - _ . ~ (it goes in a URL)")
    for key, value in (("listen", listen), ("lan_listen", lan_listen)):
        if value is None:
            continue
        try:
            host, _port = kiosk_address(value)
        except ValueError as exc:
            raise s.error(key, f"{exc}, got {value!r}") from None
        if key == "listen" and not is_loopback(host):
            # Plain HTTP on the LAN would show the token, PINs and members'
            # panels to anyone on the network.
            raise s.error(
                "listen",
                f"must be a loopback address (the controller's own screen), got {value!r}: "
                "screens on the LAN connect over HTTPS, set lan_listen, cert_file, key_file "
                "and token",
            )
    if lan_listen is None:
        for key, value in (("cert_file", cert_file), ("key_file", key_file)):
            if value is not None:
                raise s.error(key, "is used only with lan_listen (HTTPS for LAN screens)")
        return listen, token, None
    if cert_file is None or key_file is None or token is None:
        key = "cert_file" if cert_file is None else "key_file" if key_file is None else "token"
        raise s.error(
            key,
            f"is required with lan_listen ({lan_listen}): screens on the LAN connect "
            "over HTTPS and present the token (set e.g. token = a random 32 characters)",
        )
    return listen, token, KioskLan(lan_listen, cert_file, key_file)


@dataclass(frozen=True, slots=True)
class MetricsSection:
    """`[metrics]`: `/metrics` on the kiosk's HTTP server (docs/operations.md "Metrics")."""

    lan: bool = False  # also on the LAN HTTPS listener, behind the kiosk token


def _metrics(path: Path, raw: Any, listen: str | None, lan: KioskLan | None) -> MetricsSection:
    """`[metrics]`: served on the kiosk's loopback listener, and with `lan = true`
    on its LAN listener too; there is no server of their own, so one of the
    two must be configured."""
    s = Table(path, "metrics", raw)
    on_lan = s.flag("lan", False)
    s.done()
    if on_lan and lan is None:
        raise s.error("lan", "needs [kiosk] lan_listen: the LAN listener it is served on")
    if listen is None and not on_lan:
        raise s.error(
            None,
            "are served by the kiosk's HTTP server: set [kiosk] listen (loopback), "
            "or lan = true with [kiosk] lan_listen",
        )
    return MetricsSection(on_lan)


def _pins(path: Path, raw: Any) -> PinRules:
    """`[pins]`: the site budget of refused PINs an hour and what reaching it
    does (docs/operations.md "PIN lockouts")."""
    s = Table(path, "pins", raw)
    budget = s.get("budget_per_hour", int, DEFAULT_BUDGET, low=1)
    if budget > MAX_BUDGET:
        raise s.error("budget_per_hour", f"must be at most {MAX_BUDGET}, got {budget}")
    action = s.get("budget_action", str, "alert")
    if action not in BUDGET_ACTIONS:
        choices = ", ".join(repr(a) for a in BUDGET_ACTIONS)
        raise s.error("budget_action", f"must be one of {choices}, got {action!r}")
    s.done()
    return PinRules(budget, "lock" if action == "lock" else "alert")


def parse_config(path: Path, data: dict[str, Any]) -> Config:
    """Validate an already-parsed TOML document."""
    known = {"controller", "mqtt", "hal", "doors", "lights", "readers", "masters", "kiosk", "pins"}
    known.add("metrics")
    known.add("homeassistant")
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: {key}: is not a known section")
    hal = Table(path, "hal", data.get("hal", {}))
    backend = hal.get("backend", str, "gpio")
    hal.done()
    listen, token, lan = _kiosk(path, data.get("kiosk", {}))
    controller = _controller(path, data.get("controller"))
    mqtt = _mqtt(path, data.get("mqtt", {}))
    masters = _masters(path, data.get("masters", []))
    try:
        wiring, unwired = parse_wiring(path, data), None
    except ConfigError as exc:
        if backend != "sim":
            raise
        wiring, unwired = bench_only_wiring(path, data), str(exc)
    return Config(
        path=path,
        controller=controller,
        mqtt=mqtt,
        backend=backend,
        masters=masters,
        wiring=wiring,
        kiosk_listen=listen,
        kiosk_token=token,
        kiosk_lan=lan,
        unwired=unwired,
        pins=_pins(path, data.get("pins", {})),
        metrics=_metrics(path, data["metrics"], listen, lan) if "metrics" in data else None,
        homeassistant=(
            parse_homeassistant(path, data["homeassistant"], mqtt_username=mqtt.username)
            if "homeassistant" in data
            else None
        ),
    )


def load_config(path: Path | str) -> Config:
    """Read and validate controller.toml; any problem is one `ConfigError` line."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: is not valid TOML: {exc}") from None
    return parse_config(path, data)
