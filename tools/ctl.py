"""`alc ctl`: send a sealed command to one controller and show its replies.

    alc ctl keygen --controller C --keys DIR
    alc ctl rotate add|switch|retire --controller C --keys DIR [--site S broker options]
    alc ctl sync|purge|status|refresh-kiosks --site S --controller C --keys DIR
    alc ctl open-door --door D [--seconds N] ...
    alc ctl set-light --light L (--on|--off) [--seconds N] ...
    alc ctl osdp-keyset --config controller.toml --reader R [--install]
    common: [--host H --port P --root R ...] [--ttl 60] [--timeout N]; purge: [--events]

First it reads the controller's retained `state`: when there is none, or it says
`online: false`, it prints "controller C is offline" and sends nothing (exit 2),
so a command never sits queued to run at some later, surprising time. Otherwise it
publishes one `cmd` (PROTOCOL.md s6) valid for `--ttl` seconds (the controller
rejects it after `exp`, never runs it late) and prints the replies until `done`
(exit 0) or `failed`, `rejected` or `--timeout` (exit 1). Sync and purge show a
progress bar. Exit 2 means nothing was sent.

`keygen` and `rotate` only work on a keys directory (the hub's, or a
controller's own: the layout is the same, docs/operations.md "Rotating a
controller's key"); they send nothing. `osdp-keyset` talks to an OSDP reader on
the controller's own RS-485 port, with alc stopped (tools/osdp_keyset.py).
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from firmware.config import ConfigError
from firmware.core.errors import LocalError, RemoteError
from firmware.core.keyring import Keyring
from firmware.core.wire import IV_BYTES, seal, unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from tools import osdp_keyset
from tools.hub.keys import check_segment, read_keyring, write_new_key
from tools.hub.options import add_broker_options, broker_settings
from tools.rotate import Broker, rotate, sending_kid

TTL_S = 60
STATE_WAIT_S = 2.0
CONNECT_WAIT_S = 5.0
FINAL = ("done", "failed", "rejected")

# CLI name -> (wire name, default reply timeout in seconds). A sync may take 120 s
# before the controller gives up; a purge may first spend 30 s uploading events.
COMMANDS: dict[str, tuple[str, float]] = {
    "sync": ("sync", 180.0),
    "purge": ("purge", 210.0),
    "status": ("status", 30.0),
    "refresh-kiosks": ("refresh_kiosks", 30.0),
    "open-door": ("open_door", 30.0),
    "set-light": ("set_light", 30.0),
}
_WITH_PROGRESS = ("sync", "purge")


def build_command(
    cmd: str,
    args: Mapping[str, Any] | None = None,
    *,
    now: float,
    ttl: int = TTL_S,
    id: str | None = None,
) -> dict[str, Any]:
    """A `cmd` message body: fresh id, issued `now`, expiring `ttl` seconds later."""
    iat = int(now)
    return {
        "t": "cmd",
        "id": id or uuid.uuid4().hex,
        "cmd": cmd,
        "args": dict(args or {}),
        "iat": iat,
        "exp": iat + ttl,
    }


def progress_bar(got: int, of: int, width: int = 30) -> str:
    """`[#########.....]  60%  6/10`."""
    share = min(max(got / of, 0.0), 1.0) if of > 0 else 0.0
    filled = round(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {share:4.0%}  {got}/{of}"


@dataclass(frozen=True, slots=True)
class Target:
    """The controller a command goes to, and how to reach it."""

    settings: BrokerSettings
    root: str
    site: str
    controller: str
    # The controller's keys on this side, or one key (its first, kid = its id).
    keys: Keyring | bytes

    @property
    def ring(self) -> Keyring:
        """The keys replies open with and the one the command is sealed with."""
        if isinstance(self.keys, Keyring):
            return self.keys
        return Keyring.single(self.controller, self.keys)

    def topic(self, leaf: str) -> str:
        """`{root}/{site}/{controller}/{leaf}`."""
        return f"{self.root}/{self.site}/{self.controller}/{leaf}"


class _Session:
    """A short-lived MQTT client that listens to one controller's state and replies."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.ring = target.ring
        self.events: queue.Queue[LinkEvent] = queue.Queue()
        # `state` first: the broker handles our SUBSCRIBEs in order, so once the
        # retained state arrives the `reply` subscription is in place too, before
        # any command can go out.
        self.link = Link(
            f"alc-ctl-{uuid.uuid4().hex[:12]}",
            target.settings,
            self.events.put,
            subscriptions=[target.topic("state"), target.topic("reply")],
            persistent=False,
        )

    def next_message(self, deadline: float) -> tuple[str, dict[str, Any]] | None:
        """The next verified message before `deadline` (monotonic), as (leaf, body)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if not isinstance(event, Received):
                continue
            leaf = event.topic.rsplit("/", 1)[-1]
            try:
                message = unseal(self.ring.accepted, event.topic, event.payload)
            except RemoteError as exc:
                print(
                    f"ignoring a message on {event.topic} that does not verify: {exc}",
                    file=sys.stderr,
                )
                continue
            if message.type == leaf:
                return leaf, message.body


def send_command(
    target: Target,
    cmd: str,
    args: Mapping[str, Any],
    *,
    ttl: int = TTL_S,
    timeout: float = 30.0,
    state_wait: float = STATE_WAIT_S,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Send `cmd` to the controller if it is online, print its replies to `out`
    (default stdout); return the exit code."""
    out = out or sys.stdout
    session = _Session(target)
    session.link.start()
    try:
        if not session.link.wait_connected(CONNECT_WAIT_S):
            s = target.settings
            print(f"cannot reach the broker at {s.host}:{s.port}; nothing sent", file=out)
            return 2
        if not _online(session, state_wait):
            print(f"controller {target.controller} is offline", file=out)
            return 2
        command = build_command(cmd, args, now=clock(), ttl=ttl)
        topic = target.topic("cmd")
        keys, iv = session.ring, os.urandom(IV_BYTES)
        session.link.publish(topic, seal(keys.send_key, keys.send_kid, topic, command, iv=iv))
        print(f"sent {cmd} to {target.site}/{target.controller} (id {command['id']})", file=out)
        return _follow(session, command["id"], cmd in _WITH_PROGRESS, timeout, out)
    finally:
        session.link.stop()


def _online(session: _Session, wait: float) -> bool:
    """True once a verified state says online; False if none comes or it says offline."""
    deadline = time.monotonic() + wait
    while (got := session.next_message(deadline)) is not None:
        leaf, body = got
        if leaf == "state":
            return body.get("online") is True
    return False


def _follow(session: _Session, id: str, bar: bool, timeout: float, out: TextIO) -> int:
    """Print the replies to command `id` until a final one or `timeout`."""
    deadline = time.monotonic() + timeout
    tty = out.isatty()
    drawn = False
    while (got := session.next_message(deadline)) is not None:
        leaf, body = got
        if leaf == "state":
            if body.get("online") is False:
                print(f"controller {session.target.controller} went offline", file=out)
            continue
        if body.get("id") != id:
            continue  # a reply to someone else's command
        status = body.get("status")
        if status == "progress" and bar:
            if _int(body.get("of")) <= 0:
                continue  # no page count yet: nothing to draw
            line = progress_bar(_int(body.get("got")), body["of"])
            if tty:
                print(f"\r{line}", end="", file=out, flush=True)
                drawn = True
            else:
                print(line, file=out)
            continue
        if drawn:
            print(file=out)
            drawn = False
        print(_describe(body), file=out, flush=True)
        if status in FINAL:
            return 0 if status == "done" else 1
    if drawn:
        print(file=out)
    print(f"no final reply within {timeout:g} s", file=out)
    return 1


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _describe(reply: Mapping[str, Any]) -> str:
    """A reply as text: status, detail (a map one key per line), elapsed time."""
    status = str(reply.get("status"))
    detail = reply.get("detail")
    ms = reply.get("ms")
    took = f" ({ms} ms)" if type(ms) is int else ""
    if isinstance(detail, dict):
        lines = [f"{status}{took}"]
        lines += [f"  {k}: {_show(v)}" for k, v in detail.items()]
        return "\n".join(lines)
    if detail in (None, ""):
        return f"{status}{took}"
    return f"{status}: {_show(detail)}{took}"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def parser() -> argparse.ArgumentParser:
    """The `alc ctl` argument parser."""
    p = argparse.ArgumentParser(prog="alc ctl", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True, metavar="command")
    keygen = sub.add_parser("keygen", help="create a controller's key file")
    keygen.add_argument("--controller", required=True, help="controller id")
    keygen.add_argument("--keys", type=Path, required=True, help="directory of key files")
    rot = sub.add_parser("rotate", help="a step of a key rotation, in a keys directory")
    rot.add_argument(
        "step",
        choices=("add", "switch", "retire"),
        help="add a new key (accepted, not sent with); switch to sending with the newest; "
        "retire every key but the one sent with",
    )
    rot.add_argument("--controller", required=True, help="controller id")
    rot.add_argument("--keys", type=Path, required=True, help="directory of key files")
    rot.add_argument(
        "--site",
        help="retire on the hub: first check on the broker that the controller "
        "already sends with the key kept",
    )
    add_broker_options(rot)
    osdp_keyset.add_parser(sub)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--site", required=True, help="site id")
    common.add_argument("--controller", required=True, help="controller id")
    common.add_argument("--keys", type=Path, required=True, help="directory of key files")
    common.add_argument(
        "--ttl", type=int, default=TTL_S, help=f"seconds the command stays valid (default {TTL_S})"
    )
    common.add_argument("--timeout", type=float, help="seconds to wait for the final reply")
    add_broker_options(common)
    helps = {
        "sync": "full sync now",
        "purge": "wipe the controller's data, then full sync",
        "status": "show the controller's state",
        "refresh-kiosks": "reload every kiosk screen",
        "open-door": "unlock a door for a moment",
        "set-light": "switch a light circuit on or off",
    }
    for name, help in helps.items():
        c = sub.add_parser(name, parents=[common], help=help)
        if name == "purge":
            c.add_argument("--events", action="store_true", help="also drop unuploaded events")
        if name == "open-door":
            c.add_argument("--door", required=True, help="door id")
            c.add_argument("--seconds", type=int, help="unlock time (default: the door's unlock_s)")
        if name == "set-light":
            c.add_argument("--light", required=True, help="light id")
            onoff = c.add_mutually_exclusive_group(required=True)
            onoff.add_argument("--on", dest="on", action="store_true", help="switch on")
            onoff.add_argument("--off", dest="on", action="store_false", help="switch off")
            c.add_argument("--seconds", type=int, help="how long to stay on")
    return p


def command_args(ns: argparse.Namespace) -> dict[str, Any]:
    """The `args` map of the command the parsed options name."""
    if ns.action == "purge":
        return {"events": True} if ns.events else {}
    if ns.action == "open-door":
        return {"door": ns.door} | ({"s": ns.seconds} if ns.seconds is not None else {})
    if ns.action == "set-light":
        return {"light": ns.light, "on": ns.on} | (
            {"s": ns.seconds} if ns.seconds is not None else {}
        )
    return {}


def main(argv: Sequence[str]) -> int:
    """`alc ctl`."""
    ns = parser().parse_args(list(argv))
    if ns.action == "osdp-keyset":
        return osdp_keyset.run(ns)
    try:
        if ns.action == "rotate":
            controller = check_segment(ns.controller, "controller")
            check = None
            if ns.site is not None and ns.step == "retire":
                broker = Broker(broker_settings(ns), ns.root, check_segment(ns.site, "site"))
                check = partial(sending_kid, broker, controller, ns.keys)
            print(rotate(ns.step, ns.keys, controller, check=check))
            return 0
        if ns.action not in ("keygen", "rotate") and ns.ttl < 1:
            raise LocalError("--ttl must be at least 1 second")
        if ns.action == "keygen":
            path = write_new_key(ns.keys, ns.controller)
            print(f"wrote {path} (copy it to controller {ns.controller}'s keys_dir, mode 0600)")
            return 0
        target = Target(
            settings=broker_settings(ns),
            root=check_segment(ns.root, "root"),
            site=check_segment(ns.site, "site"),
            controller=check_segment(ns.controller, "controller"),
            keys=read_keyring(ns.keys, ns.controller),
        )
    except (LocalError, ConfigError) as exc:
        print(f"alc ctl: {exc}", file=sys.stderr)
        return 2
    wire_name, default_timeout = COMMANDS[ns.action]
    return send_command(
        target,
        wire_name,
        command_args(ns),
        ttl=ns.ttl,
        timeout=ns.timeout if ns.timeout is not None else default_timeout,
    )
