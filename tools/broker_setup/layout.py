"""The files of a broker directory, and how `alc broker` writes them.

Files mosquitto reads (its config, certificate, key, password and ACL files)
take the owner and group of DIR when `alc broker` runs as root: make DIR owned
by the user mosquitto runs as, and mosquitto can read what `sudo alc broker ...`
writes. The CA's key and the accounts' passwords stay with whoever ran the
command: mosquitto never needs them.

Every file is replaced by a rename, so mosquitto reloading (SIGHUP) in the middle
of an `add` reads the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from firmware.core.errors import LocalError

PRIVATE = 0o600
PUBLIC = 0o644


class LayoutError(LocalError):
    """DIR is not (or already is) a broker directory, or a file cannot be written."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one broker directory (absolute: mosquitto.conf names them)."""

    dir: Path

    @classmethod
    def at(cls, dir: Path) -> Layout:
        """The layout of `dir`, made absolute."""
        return cls(dir.expanduser().resolve())

    @property
    def conf(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def passwd(self) -> Path:
        return self.dir / "passwd"

    @property
    def acl(self) -> Path:
        return self.dir / "acl"

    @property
    def accounts(self) -> Path:
        """One `<account>.password` per account, to copy where it is used."""
        return self.dir / "accounts"

    def account_password(self, username: str) -> Path:
        return self.accounts / f"{username}.password"

    def made_files(self) -> list[Path]:
        """Every file `init` makes."""
        return [
            self.conf,
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.passwd,
            self.acl,
        ]

    def require_made(self) -> None:
        """`LayoutError` unless `init` has made this directory."""
        missing = [p.name for p in self.made_files() if not p.exists()]
        if missing:
            raise LayoutError(
                f"{self.dir}: not a broker directory (no {', '.join(missing)}): "
                "run `alc broker init` first"
            )


def write_file(path: Path, data: bytes, mode: int, *, owner_of: Path | None = None) -> None:
    """Write `data` to `path` with `mode` (never wider, whatever the umask), by a
    rename over any file there; with `owner_of`, give it that path's owner and
    group (only root may)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it: say it exactly
            if owner_of is not None and os.geteuid() == 0:
                info = os.stat(owner_of)
                os.fchown(fd, info.st_uid, info.st_gid)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LayoutError(f"cannot write {path}: {exc.strerror or exc}") from None


def make_dir(path: Path, mode: int) -> None:
    """Make `path` (and its parents) if missing; `LayoutError` if it cannot be."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise LayoutError(f"cannot make {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise LayoutError(f"{path} is not a directory")


def mode_of(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)
