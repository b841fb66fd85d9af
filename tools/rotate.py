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
4. `retire` on both (restart the controller): only the new key is left.
"""

from __future__ import annotations

from pathlib import Path

from firmware.config.keys import key_file_name
from firmware.core.errors import LocalError
from firmware.core.keyring import key_number
from tools.hub.keys import add_key, read_keyring, retire_keys, switch_key

STEPS = ("add", "switch", "retire")


def rotate(step: str, keys_dir: Path, controller: str) -> str:
    """Carry out `step` for `controller` in `keys_dir`; what was done and what next."""
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
        gone = retire_keys(keys_dir, controller)
        left = read_keyring(keys_dir, controller).send_kid.decode()
        names = ", ".join(p.name for p in gone) or "nothing"
        return f"deleted {names}; {controller} now has only {left} here (a controller: restart it)."
    raise LocalError(f"unknown rotation step {step!r}: one of {', '.join(STEPS)}")
