"""Key files on disk: one directory, one file per kid, and a marker naming the send key.

The same layout on the hub (every controller of the site) and on a controller
(its own keys only), so a technician copies files, never edits them:

    ctl1.key      the first key of controller ctl1 (kid "ctl1"), 64 hex characters
    ctl1.2.key    its second key (kid "ctl1/2"); then ctl1.3.key, ...
    ctl1.send     optional: one line, the kid this side sends with ("ctl1/2")

Every key file present is accepted (at most 4 per controller). Without a
`.send` marker a side sends with the lowest-numbered key present, so adding a
new key never changes what is sent: switching is the marker's deliberate change.
A key file that other users can read or write, or a marker they can write, is
refused with the `chmod` that fixes it: the key is the controller's whole authority.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from firmware.config.private_files import check_private
from firmware.config.tables import ConfigError
from firmware.core.errors import LocalError
from firmware.core.keyring import MAX_KEYS, Keyring, key_number, kid_for

KEY_SUFFIX = ".key"
SEND_SUFFIX = ".send"

_FILE = re.compile(r"([A-Za-z0-9_-]{1,64})(?:\.([1-9][0-9]{0,5}))?\.key")


def key_file_name(controller: str, n: int) -> str:
    """The file name of key number `n` of `controller`: `ctl1.key`, `ctl1.2.key`."""
    kid_for(controller, n)  # checks both
    return f"{controller}{KEY_SUFFIX}" if n == 1 else f"{controller}.{n}{KEY_SUFFIX}"


def send_marker(keys_dir: Path, controller: str) -> Path:
    """Where the marker naming `controller`'s send kid lives."""
    return keys_dir / f"{controller}{SEND_SUFFIX}"


def parse_key_file_name(name: str) -> tuple[str, int] | None:
    """`(controller, n)` for a key file's name, or None if it is not one."""
    match = _FILE.fullmatch(name)
    if match is None or match.group(2) == "1":
        return None
    return match.group(1), int(match.group(2) or 1)


def check_marker(path: Path, *, where: str) -> None:
    """Refuse (`ConfigError`) a send marker other users may write: not secret, but
    whoever may change it chooses the key this side sends with."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if mode & 0o022:
        raise ConfigError(
            f"{where}: {path} can be changed by other users (mode {mode:04o}): "
            f"run `chmod 600 {path}`"
        )


def read_key(path: Path, *, where: str) -> bytes:
    """Read a key file of 64 hex characters, private to its owner; raise
    `ConfigError` naming `where`."""
    check_private(path, where=where)
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{where}: {path} must hold 64 hex characters (32 bytes)")
    return key


def key_numbers(keys_dir: Path, controller: str) -> list[int]:
    """The numbers of `controller`'s key files in `keys_dir`, lowest first."""
    try:
        names = os.listdir(keys_dir)
    except OSError as exc:
        raise ConfigError(f"cannot list keys directory {keys_dir}: {exc.strerror}") from None
    found = []
    for name in names:
        parsed = parse_key_file_name(name)
        if parsed is not None and parsed[0] == controller:
            found.append(parsed[1])
    return sorted(found)


def load_keyring(keys_dir: Path, controller: str) -> Keyring:
    """`controller`'s keys from `keys_dir`: every key file accepted, the marker's
    kid (else the lowest-numbered key) sent with. `ConfigError` names the file
    and what to do when anything is missing, malformed, too many or not private."""
    where = f"keys of controller {controller!r}"
    numbers = key_numbers(keys_dir, controller)
    if not numbers:
        raise ConfigError(f"{where}: no {controller}{KEY_SUFFIX} in {keys_dir}")
    if len(numbers) > MAX_KEYS:
        names = ", ".join(key_file_name(controller, n) for n in numbers)
        raise ConfigError(f"{where}: {len(numbers)} key files ({names}), at most {MAX_KEYS}")
    accepted = {
        kid_for(controller, n): read_key(keys_dir / key_file_name(controller, n), where=where)
        for n in numbers
    }
    send = kid_for(controller, numbers[0])
    marker = send_marker(keys_dir, controller)
    if marker.exists():
        check_marker(marker, where=where)
        try:
            text = marker.read_text().strip()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"{where}: cannot read {marker}") from None
        send = text.encode()
        n = key_number(controller, send)
        if n is None or send not in accepted:
            raise ConfigError(
                f"{where}: {marker} names {text!r}, which is not one of its key files "
                f"({', '.join(k.decode() for k in accepted)})"
            )
    try:
        return Keyring(accepted, send)
    except LocalError as exc:
        raise ConfigError(f"{where}: {exc}") from None
