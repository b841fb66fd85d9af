"""`alc broker check DIR`: what a broker's config allows, account by account, and
what in it falls short of PROTOCOL.md s9.

It reads the files as mosquitto would (mosquitto.conf, then the password and ACL
files it names), so a hand edit that opens a plaintext port or lets anonymous
clients in shows up as a problem, and the command exits 1.
"""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import dataclass, field
from pathlib import Path

from firmware.core.errors import LocalError
from firmware.mqtt import MAX_PACKET_BYTES
from tools.broker_setup import acl, certs, conf, passwd
from tools.broker_setup.layout import Layout

CERT_WARN_DAYS = 60


@dataclass
class Report:
    """The lines `check` prints, and the problems it found."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def problem(self, what: str) -> None:
        self.problems.append(what)

    def text(self) -> str:
        out = list(self.lines)
        if self.problems:
            out.append(f"problems ({len(self.problems)}):")
            out += [f"  - {p}" for p in self.problems]
        else:
            out.append("problems: none")
        return "\n".join(out) + "\n"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LocalError(f"{path}: is not UTF-8 text") from None


def check(layout: Layout, now: dt.datetime) -> Report:
    """The report on `layout`'s mosquitto.conf and the files it names."""
    report = Report()
    where = str(layout.conf)
    config = conf.parse(_read(layout.conf), where=where)
    report.say(f"broker {layout.conf}")
    _listeners(config, report, now)
    _limits(config, report)
    users, grants = _accounts(config, report)
    _describe_accounts(users, grants, report)
    return report


def _listeners(config: conf.Conf, report: Report, now: dt.datetime) -> None:
    if config.one("per_listener_settings") == "true":
        report.problem(
            "per_listener_settings true: each listener has its own rules; "
            "alc broker writes one set for all"
        )
    for key in ("port", "bind_address", "include_dir"):
        if config.one(key) is not None:
            what = (
                "more config in a directory check does not read"
                if key == "include_dir"
                else "a plaintext listener"
            )
            report.problem(f"{key} {config.one(key)}: {what}")
    if not config.listeners:
        report.problem("no listener: mosquitto listens in plaintext on port 1883 of loopback")
    for listener in config.listeners:
        where = f"listener {listener.port} on {listener.bind or 'every address'}"
        certfile = listener.one("certfile")
        if certfile is None or listener.one("keyfile") is None:
            report.say(f"  {where}: PLAINTEXT")
            report.problem(f"{where} has no TLS (certfile and keyfile)")
            continue
        try:
            cert = certs.summary(Path(certfile).read_bytes(), where=certfile)
        except (OSError, LocalError) as exc:
            report.say(f"  {where}: TLS, certificate unreadable")
            report.problem(f"{where}: {exc}")
            continue
        cafile = listener.one("cafile")
        try:
            trusted = cafile is not None and certs.issued_by(
                Path(certfile).read_bytes(), Path(cafile).read_bytes()
            )
        except OSError:
            trusted = False
        if not trusted:
            report.problem(f"{where}: {certfile} is not signed by cafile {cafile}")
        _private(Path(listener.one("keyfile") or certfile), report)
        names = ", ".join(cert.names) or cert.subject
        ends = cert.not_after.strftime("%Y-%m-%d")
        report.say(f"  {where}: TLS, certificate for {names}, valid until {ends}")
        left = cert.not_after - now
        if left < dt.timedelta(days=CERT_WARN_DAYS):
            report.problem(f"{where}: its certificate ends {ends}: make a new one")
        if listener.one("protocol") not in (None, "mqtt"):
            report.say(f"    protocol {listener.one('protocol')}")


def _limits(config: conf.Conf, report: Report) -> None:
    anonymous = config.one("allow_anonymous")
    if anonymous == "true":
        report.say("  anonymous clients: ALLOWED")
        report.problem("allow_anonymous true: anyone may connect")
    else:
        report.say("  anonymous clients: refused")
    if config.listeners and all(
        listener.one("use_username_as_clientid") == "true" for listener in config.listeners
    ):
        report.say("  client id: the account's name (nobody takes over another's session)")
    else:
        report.say("  client id: chosen by the client")
        report.problem(
            "use_username_as_clientid is not true in every listener block: any account may take "
            "over a controller's session with its client id"
        )
    for key in ("message_size_limit", "max_packet_size"):
        value = config.one(key)
        if value is None or not value.isdecimal() or not 0 < int(value) <= MAX_PACKET_BYTES:
            report.problem(f"{key} is {value or 'unset'}: it should be 1 to {MAX_PACKET_BYTES}")
    report.say(
        f"  largest packet: {config.one('max_packet_size') or 'unlimited'} bytes "
        f"(payload {config.one('message_size_limit') or 'unlimited'})"
    )
    messages = config.one("max_queued_messages") or "1000"  # mosquitto's default
    if messages == "0":
        report.problem("max_queued_messages 0: a session's queue is unbounded")
    queued = f"{messages} messages"
    if config.one("max_queued_bytes") not in (None, "0"):
        queued += f", {config.one('max_queued_bytes')} bytes"
    report.say(f"  queued per session: at most {queued}")
    if config.one("persistence") == "true":
        report.say(
            f"  persistence: {config.one('persistence_location') or 'the working directory'}"
        )
    else:
        report.say("  persistence: off (a restart loses sessions and queued messages)")


def _accounts(config: conf.Conf, report: Report) -> tuple[list[str], dict[str, acl.Grants]]:
    users: list[str] = []
    password_file = config.one("password_file")
    if password_file is None:
        report.problem("no password_file: no account can log in")
    else:
        _private(Path(password_file), report)
        try:
            users = passwd.usernames(_read(Path(password_file)), where=password_file)
        except LocalError as exc:
            report.problem(str(exc))
    grants: dict[str, acl.Grants] = {}
    acl_file = config.one("acl_file")
    if acl_file is None:
        report.problem("no acl_file: every account may read and write every topic")
        return users, grants
    _private(Path(acl_file), report)
    try:
        grants, everyone = acl.parse(_read(Path(acl_file)), where=acl_file)
    except LocalError as exc:
        report.problem(str(exc))
        return users, grants
    for line in everyone:
        report.problem(f"{acl_file}: {line!r} holds for clients other than one account")
    return users, grants


def _private(path: Path, report: Report) -> None:
    """A problem when other users may read `path` (a key, the hashes, the ACL)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # reading it reports the problem
    if mode & 0o077:
        report.problem(f"{path} can be read by other users (mode {mode:04o}): chmod 600 {path}")


def _describe_accounts(users: list[str], grants: dict[str, acl.Grants], report: Report) -> None:
    named = users + [u for u in grants if u not in users]
    report.say(f"accounts ({len(users)}):")
    for user in named:
        got = grants.get(user, acl.Grants())
        label = f" ({'; '.join(got.labels)})" if got.labels else ""
        report.say(f"  {user}{label}")
        if user not in users:
            report.say("    no password: cannot log in")
        if not got.reads and not got.writes:
            report.say("    reaches nothing (no ACL lines)")
        if got.reads:
            report.say(f"    subscribes to and receives: {', '.join(got.reads)}")
        if got.writes:
            report.say(f"    publishes to: {', '.join(got.writes)}")
        for topic in got.reads + got.writes:
            if "#" in topic:
                report.problem(f"{user} may reach every topic under {topic!r}")
