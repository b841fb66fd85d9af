"""Files that hold a secret (a broker password, a private key): refused when other
users could read them, with the `chmod` that fixes it.

Checked at start, before anything is opened: a password another local account can
read is a password the whole machine knows, and the controller should say so
rather than run with it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from firmware.config.tables import ConfigError

# Group or world: read, write or execute. Write and execute are refused too: a
# secret someone else can rewrite is not ours either.
_SHARED = stat.S_IRWXG | stat.S_IRWXO


def check_private(path: Path, *, where: str) -> None:
    """`ConfigError` naming `where` unless `path` is a regular file that only its
    owner may read."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where}: {path} is not a regular file")
    if info.st_mode & _SHARED:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(
            f"{where}: {path} can be read by other users (mode {mode:04o}): run `chmod 600 {path}`"
        )


def read_private_line(path: Path, *, where: str) -> str:
    """The first line of a private file (`check_private`), without its line end;
    `ConfigError` naming `where` when it is empty or cannot be read."""
    check_private(path, where=where)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"{where}: {path} is empty (its first line is the secret)")
    return lines[0]
