"""mosquitto's password file: one `username:hash` line per account.

The hash is made by `mosquitto_passwd`, which Debian's mosquitto package ships
beside the broker (its PBKDF2-SHA512 `$7$` format), so the file is always in the
form the installed mosquitto reads. The password goes to it on its standard
input, never on a command line another user could see in `ps`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from firmware.core.errors import LocalError

FALLBACK_BINARY = "/usr/bin/mosquitto_passwd"
RUN_TIMEOUT_S = 30.0


class PasswdError(LocalError):
    """mosquitto_passwd is missing or failed, or the password file is not one."""


def _binary() -> str:
    found = shutil.which("mosquitto_passwd") or (
        FALLBACK_BINARY if os.access(FALLBACK_BINARY, os.X_OK) else None
    )
    if found is None:
        raise PasswdError(
            "mosquitto_passwd is not installed: install mosquitto "
            "(`sudo apt-get install mosquitto`, or `make setup`)"
        )
    return found


def hashed_line(username: str, password: str) -> str:
    """The password file line of `username` with `password`, from mosquitto_passwd
    run on a private scratch file."""
    if ":" in username or "\n" in password or not password:
        raise PasswdError(f"cannot hash a password for {username!r}")
    with tempfile.TemporaryDirectory(prefix="alc-passwd-") as tmp:
        scratch = Path(tmp) / "passwd"
        try:
            done = subprocess.run(
                [_binary(), "-c", str(scratch), username],
                input=f"{password}\n{password}\n",
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PasswdError(f"mosquitto_passwd did not run: {exc}") from None
        lines = scratch.read_text().splitlines() if scratch.exists() else []
    if done.returncode != 0 or len(lines) != 1 or not lines[0].startswith(f"{username}:"):
        said = (done.stderr or done.stdout).strip().replace("\n", " ")
        raise PasswdError(f"mosquitto_passwd failed for {username!r}: {said}")
    return lines[0]


def usernames(text: str, *, where: str) -> list[str]:
    """The accounts of a password file, in order."""
    names = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, _hash = line.partition(":")
        if not sep or not name:
            raise PasswdError(f"{where}:{number}: not a `username:hash` line")
        names.append(name)
    return names
