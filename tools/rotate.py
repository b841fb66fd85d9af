"""`alc ctl rotate`: one step of a controller key rotation, in one keys directory.

A rotation runs the same steps on both sides' keys directories (the hub's and
the controller's own), in this order, and no message is refused at any step
(PROTOCOL.md s2):

1. `add` on the hub: a new key file, accepted at once, not sent with. Copy it
   to the controller's keys directory and restart the controller: now both
   sides accept both keys.
2. `switch` on the hub: the hub sends with the new key (it rereads its keys
   directory on its own within seconds).
3. `switch` on the controller, then restart it: it sends with the new key.
4. `retire` on both (restart the controller): only the new key is left. On the
   hub, given the broker (`--site` and the broker options), it first reads the
   controller's retained `state` and refuses while the controller still sends
   with another key: retiring that key would refuse its messages.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware.config.keys import key_file_name
from firmware.core.errors import LocalError, RemoteError
from firmware.core.keyring import key_number
from firmware.core.wire import parse, unseal
from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received
from tools.hub.keys import add_key, read_keyring, retire_keys, switch_key

STEPS = ("add", "switch", "retire")
STATE_WAIT_S = 3.0
CONNECT_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Broker:
    """Where to read a controller's retained `state` from."""

    settings: BrokerSettings
    root: str
    site: str


def sending_kid(broker: Broker, controller: str, keys_dir: Path) -> bytes:
    """The kid of the controller's retained `state`: the key its current session
    sends with (its will is sealed with that key too). `LocalError` when the
    broker cannot be reached or holds no state of it."""
    ring = read_keyring(keys_dir, controller)
    topic = f"{broker.root}/{broker.site}/{controller}/state"
    events: queue.Queue[LinkEvent] = queue.Queue(100)
    link = Link(
        f"alc-rotate-{uuid.uuid4().hex[:12]}",
        broker.settings,
        events.put,
        subscriptions=[topic],
        persistent=False,
    )
    link.start()
    try:
        if not link.wait_connected(CONNECT_WAIT_S):
            s = broker.settings
            raise LocalError(f"cannot reach the broker at {s.host}:{s.port}; nothing retired")
        deadline = time.monotonic() + STATE_WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = events.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(event, Received):
                try:
                    return unseal(ring.accepted, event.topic, event.payload).kid
                except RemoteError:
                    # Sealed with a key this side no longer holds: still its kid.
                    try:
                        return parse(event.payload).kid
                    except RemoteError:
                        continue
    finally:
        link.stop()
    raise LocalError(f"no state of controller {controller} on the broker; nothing retired")


def rotate(
    step: str, keys_dir: Path, controller: str, *, check: Callable[[], bytes] | None = None
) -> str:
    """Carry out `step` for `controller` in `keys_dir`; what was done and what next.

    `check` (retire only): the kid the controller sends with now; the step is
    refused (`LocalError`, nothing deleted) unless it is the one kept."""
    if step == "add":
        path = add_key(keys_dir, controller)
        ring = read_keyring(keys_dir, controller)
        return (
            f"wrote {path}: accepted here, still sending with {ring.send_kid.decode()}.\n"
            f"Next: copy {path.name} (mode 0600) into the other side's keys directory "
            "and restart the controller; then run `alc ctl rotate switch` on the hub."
        )
    if step == "switch":
        kid = switch_key(keys_dir, controller)
        n = key_number(controller, kid) or 1
        return (
            f"sending with {kid.decode()} ({key_file_name(controller, n)}) from this "
            "keys directory (a controller: restart it now).\n"
            "Next: the hub first, then the controller; once both send with it, "
            "`alc ctl rotate retire` on both."
        )
    if step == "retire":
        if check is not None:
            keep = read_keyring(keys_dir, controller).send_kid
            kid = check()
            if kid != keep:
                raise LocalError(
                    f"controller {controller} still sends with {kid.decode(errors='replace')}: "
                    f"switch it to {keep.decode()} first (step 3); nothing retired"
                )
        gone = retire_keys(keys_dir, controller)
        left = read_keyring(keys_dir, controller).send_kid.decode()
        names = ", ".join(p.name for p in gone) or "nothing"
        return f"deleted {names}; {controller} now has only {left} here (a controller: restart it)."
    raise LocalError(f"unknown rotation step {step!r}: one of {', '.join(STEPS)}")
