"""Broker command-line options shared by `alc hub` and `alc ctl`."""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.core.errors import LocalError
from firmware.mqtt import BrokerSettings


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    """`--host --port --root --username --password-file --tls --ca-file`."""
    group = parser.add_argument_group("broker")
    group.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    group.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    group.add_argument("--root", default="alc", help="topic root (default alc)")
    group.add_argument("--username", help="broker user name")
    group.add_argument(
        "--password-file", type=Path, help="file holding the broker password (first line)"
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--ca-file", help="CA certificate file for TLS")


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    """The `BrokerSettings` the options name; `LocalError` if the password is unreadable."""
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise LocalError(f"cannot read a password from {args.password_file}: {exc}") from None
    return BrokerSettings(
        host=args.host,
        port=args.port,
        username=args.username,
        password=password,
        tls=args.tls,
        ca_file=args.ca_file,
    )
