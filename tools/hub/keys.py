"""Controller keys in a keys directory: files by kid and a send marker per controller.

The layout is `firmware.config.keys`'s, the same on the hub and on a controller:
`ctl1.key` (kid `ctl1`), `ctl1.2.key` (kid `ctl1/2`), ..., at most 4 per
controller, and an optional `ctl1.send` naming the kid to send with. The hub
serves every controller that has a key file in its keys directory; `alc ctl
keygen` creates the first key and `alc ctl rotate` runs a rotation (this module
does the file work of both, for either side's directory).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

from firmware.config import ConfigError
from firmware.config.keys import (
    KEY_SUFFIX,
    key_file_name,
    key_numbers,
    load_keyring,
    parse_key_file_name,
    send_marker,
)
from firmware.core.errors import LocalError
from firmware.core.keyring import MAX_KEYS, Keyring, kid_for
from firmware.core.wire import KEY_BYTES

log = logging.getLogger(__name__)

SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a site or controller id may be (PROTOCOL.md s1)."""

SUFFIX = KEY_SUFFIX


def check_segment(value: str, what: str) -> str:
    """`value` if it is a valid topic segment, else `LocalError` naming `what`."""
    if not SEGMENT.fullmatch(value):
        raise LocalError(f"{what} {value!r} must be 1 to 64 of A-Z a-z 0-9 _ -")
    return value


def key_path(keys_dir: Path, controller: str, n: int = 1) -> Path:
    """Where key number `n` (default: the first) of `controller` lives."""
    return keys_dir / key_file_name(check_segment(controller, "controller"), n)


def read_keyring(keys_dir: Path, controller: str) -> Keyring:
    """The keys of `controller`; `ConfigError` if missing, malformed or not private."""
    return load_keyring(keys_dir, check_segment(controller, "controller"))


def read_controller_key(keys_dir: Path, controller: str) -> bytes:
    """The 32-byte key this side sends to `controller` with."""
    return read_keyring(keys_dir, controller).send_key


def load_keys(keys_dir: Path) -> dict[str, Keyring]:
    """The keys of every controller with a key file in `keys_dir`, by controller id.

    A controller whose files are wrong (malformed, open to other users, a marker
    naming no key) is logged and skipped: one bad key must not take the other
    controllers of the site offline.
    """
    try:
        names = sorted(os.listdir(keys_dir))
    except OSError as exc:
        log.error("cannot list keys directory %s: %s", keys_dir, exc)
        return {}
    controllers = {p[0] for name in names if (p := parse_key_file_name(name)) is not None}
    rings: dict[str, Keyring] = {}
    for controller in sorted(controllers):
        try:
            rings[controller] = load_keyring(keys_dir, controller)
        except ConfigError as exc:
            log.error("ignoring controller %s: %s", controller, exc)
    return rings


def write_new_key(keys_dir: Path, controller: str, n: int = 1) -> Path:
    """Create key number `n` (default: the first) of `controller`, fresh and random,
    mode 0600.

    Refuses (`LocalError`) to overwrite an existing file: replacing a key cuts the
    controller off until it gets the new one, so it must be a deliberate delete.
    """
    path = key_path(keys_dir, controller, n)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = secrets.token_bytes(KEY_BYTES).hex() + "\n"
    try:
        # O_EXCL: atomic "create only if absent", and the mode is set at creation
        # so the key is never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise LocalError(f"{path} already exists; delete it first to replace the key") from None
    except OSError as exc:
        raise LocalError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def add_key(keys_dir: Path, controller: str) -> Path:
    """Rotation step 1: a new key, numbered after the highest present, accepted at
    once but not sent with (the send marker, or the lowest key, stays as it is)."""
    numbers = _numbers(keys_dir, controller)
    if len(numbers) >= MAX_KEYS:
        raise LocalError(
            f"controller {controller} already has {len(numbers)} keys in {keys_dir}, "
            f"at most {MAX_KEYS}: retire the old ones first"
        )
    current = read_keyring(keys_dir, controller).send_kid
    # Pin what is sent now, so the new file cannot change it whatever its number.
    _write_marker(keys_dir, controller, current.decode())
    return write_new_key(keys_dir, controller, numbers[-1] + 1)


def switch_key(keys_dir: Path, controller: str) -> bytes:
    """Rotation steps 2 and 3: send with the newest key; returns its kid."""
    numbers = _numbers(keys_dir, controller)
    kid = kid_for(controller, numbers[-1])
    read_keyring(keys_dir, controller)  # every file is sound before we point at one
    _write_marker(keys_dir, controller, kid.decode())
    return kid


def retire_keys(keys_dir: Path, controller: str) -> list[Path]:
    """Rotation step 4: delete every key file of `controller` but the one sent with."""
    ring = read_keyring(keys_dir, controller)
    gone = []
    for n in _numbers(keys_dir, controller):
        if kid_for(controller, n) != ring.send_kid:
            path = key_path(keys_dir, controller, n)
            path.unlink()
            gone.append(path)
    return gone


def _numbers(keys_dir: Path, controller: str) -> list[int]:
    numbers = key_numbers(keys_dir, check_segment(controller, "controller"))
    if not numbers:
        raise LocalError(f"no key of controller {controller} in {keys_dir}: run alc ctl keygen")
    return numbers


def _write_marker(keys_dir: Path, controller: str, kid: str) -> None:
    """Write the send marker in one step (a rename): a reader sees the old or the
    new one, and the directory's mtime, which the hub watches, changes."""
    marker = send_marker(keys_dir, controller)
    tmp = marker.with_name(f".{marker.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(kid + "\n")
    os.replace(tmp, marker)
