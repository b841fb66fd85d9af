"""`alc ctl osdp-keyset`: give an OSDP reader a new secure channel key and keep
it in the reader's `scbk_file`.

    alc ctl osdp-keyset --config controller.toml --reader front-in [--install]

Run it on the controller, with alc stopped (`sudo systemctl stop alc`): the port
is alc's while it runs (both open it exclusively). It reads the reader's
`[[readers]]` table (port, baud, address, scbk_file), makes a fresh random key,
writes it to `<scbk_file>.new` (mode 0600) before the reader gets it, sends it
with OSDP's KEYSET over the secure channel set up with the current key, waits
until the channel is up again on the new key, and only then moves the new file
over `scbk_file`. `--install` keys a reader still on the default key, in its
install mode (a new reader, or one reset to its factory key): no `scbk_file`
is needed yet.

If it stops after the reader took the key but before it could confirm it, the
`.new` file stays, and the message says so: the reader has one key or the other.
Exit 0: keyed; 1: the reader was not keyed; 2: nothing was tried (bad options,
config or key file).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tomllib
from pathlib import Path
from typing import Any

from firmware.config import ConfigError
from firmware.config.wiring import read_scbk, tables_of
from firmware.core.errors import LocalError
from firmware.core.wiring import DEFAULT_BAUD, SCBK_LEN

KEYSET_WAIT_S = 20.0


def add_parser(sub: Any) -> None:
    """Add `osdp-keyset` to `alc ctl`'s subcommands."""
    p = sub.add_parser("osdp-keyset", help="give an OSDP reader a new secure channel key")
    p.add_argument("--config", type=Path, required=True, help="the controller's controller.toml")
    p.add_argument("--reader", required=True, help="the OSDP reader's id in [[readers]]")
    p.add_argument(
        "--install",
        action="store_true",
        help="the reader is on the default key, in its install mode",
    )
    p.add_argument(
        "--timeout", type=float, default=KEYSET_WAIT_S, help="seconds to wait for the reader"
    )


class Reader:
    """What the tool needs of a reader's table."""

    def __init__(self, port: str, baud: int, address: int, scbk_file: Path) -> None:
        self.port, self.baud, self.address, self.scbk_file = port, baud, address, scbk_file


def reader_table(config: Path, reader_id: str) -> Reader:
    """The OSDP reader `reader_id` of `config`; its key file need not exist."""
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{config}: cannot read it: {exc}") from None
    for t in tables_of(config, data)["readers"]:
        if t.table["id"] != reader_id:
            continue
        if t.table.get("kind") != "osdp":
            raise t.error("kind", f"reader {reader_id!r} is not an OSDP reader")
        path = t.path_value("scbk_file")
        assert path is not None
        return Reader(
            t.text("port"),
            t.number("baud", DEFAULT_BAUD, 50, 4_000_000),
            t.number("address", 0, 0, 126),
            path,
        )
    raise ConfigError(f"{config}: no [[readers]] table has id {reader_id!r}")


def new_key_file(path: Path) -> tuple[Path, bytes]:
    """A fresh random key, written to `<path>.new`, mode 0600 from its creation."""
    pending = path.with_name(path.name + ".new")
    key = secrets.token_bytes(SCBK_LEN)
    try:
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise LocalError(
            f"{pending} is left from an earlier keyset that did not finish: the reader may "
            f"have that key. Try `mv {pending} {path}` and start alc; if the reader is "
            f"refused, delete {pending} and run this again"
        ) from None
    except OSError as exc:
        raise LocalError(f"cannot create {pending}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return pending, key


def keep(pending: Path, path: Path) -> None:
    """Move the confirmed key over the old one, durably."""
    os.replace(pending, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(ns: argparse.Namespace) -> int:
    """`alc ctl osdp-keyset`."""
    try:
        reader = reader_table(ns.config, ns.reader)
        where = f"{ns.config}: reader {ns.reader} scbk_file"
        current = None if ns.install else read_scbk(reader.scbk_file, where=where)
        from hal.osdp_channel import SerialChannel
        from hal.osdp_keyset import KeysetFailed, set_key
    except ModuleNotFoundError as exc:
        print(f"alc ctl: {exc.name} is not installed: `.venv/bin/pip install -e '.[osdp]'`")
        return 2
    except (LocalError, ConfigError) as exc:
        print(f"alc ctl: {exc}", file=sys.stderr)
        return 2
    channel = SerialChannel(reader.port, reader.baud)
    try:
        channel.read(0)  # opens the port now, to say so if it cannot
        if channel.problem is not None:
            print(f"alc ctl: {channel.problem} (is alc still running?)", file=sys.stderr)
            return 2
        try:
            pending, key = new_key_file(reader.scbk_file)
        except LocalError as exc:
            print(f"alc ctl: {exc}", file=sys.stderr)
            return 2
        try:
            set_key(channel, reader.address, current=current, new=key, timeout=ns.timeout)
        except KeysetFailed as exc:
            if exc.sent:
                print(
                    f"alc ctl: {ns.reader}: {exc}. The reader may have the new key, kept in "
                    f'{pending} (docs/hardware.md, "Keying OSDP readers")',
                    file=sys.stderr,
                )
            else:
                pending.unlink()
                print(f"alc ctl: {ns.reader}: {exc}; its key is unchanged", file=sys.stderr)
            return 1
        keep(pending, reader.scbk_file)
    finally:
        channel.close()
    print(f"{ns.reader}: keyed; the new key is in {reader.scbk_file}. Start alc again.")
    if ns.install:
        print("Set install = false in its [[readers]] table if it is set.")
    return 0
