"""Controller keys: one file per controller, `<controller>.key`, 64 hex characters.

The hub serves every controller that has a key file in its keys directory; `alc
ctl keygen` creates them. The file name is the controller id, which is also the
COSE `kid` (PROTOCOL.md s2) and a topic segment.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

from firmware.config import ConfigError, read_key
from firmware.core.errors import LocalError
from firmware.core.wire import KEY_BYTES

log = logging.getLogger(__name__)

SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a site or controller id may be (PROTOCOL.md s1)."""

SUFFIX = ".key"


def check_segment(value: str, what: str) -> str:
    """`value` if it is a valid topic segment, else `LocalError` naming `what`."""
    if not SEGMENT.fullmatch(value):
        raise LocalError(f"{what} {value!r} must be 1 to 64 of A-Z a-z 0-9 _ -")
    return value


def key_path(keys_dir: Path, controller: str) -> Path:
    """Where the key of `controller` lives."""
    return keys_dir / f"{check_segment(controller, 'controller')}{SUFFIX}"


def read_controller_key(keys_dir: Path, controller: str) -> bytes:
    """The 32-byte key of `controller`; `ConfigError` if missing or malformed."""
    path = key_path(keys_dir, controller)
    return read_key(path, where=f"key of controller {controller!r}")


def load_keys(keys_dir: Path) -> dict[str, bytes]:
    """Every readable `<controller>.key` in `keys_dir`, by controller id.

    A malformed file is logged and skipped: one bad key must not take the other
    controllers of the site offline.
    """
    keys: dict[str, bytes] = {}
    try:
        paths = sorted(keys_dir.glob(f"*{SUFFIX}"))
    except OSError as exc:
        log.error("cannot list keys directory %s: %s", keys_dir, exc)
        return keys
    for path in paths:
        controller = path.name[: -len(SUFFIX)]
        if not SEGMENT.fullmatch(controller):
            log.error("ignoring %s: %r is not a valid controller id", path, controller)
            continue
        try:
            keys[controller] = read_key(path, where=f"key of controller {controller!r}")
        except ConfigError as exc:
            log.error("ignoring %s", exc)
    return keys


def write_new_key(keys_dir: Path, controller: str) -> Path:
    """Create `keys_dir/<controller>.key` holding a fresh random key, mode 0600.

    Refuses (`LocalError`) to overwrite an existing file: replacing a key cuts the
    controller off until it gets the new one, so it must be a deliberate delete.
    """
    path = key_path(keys_dir, controller)
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
