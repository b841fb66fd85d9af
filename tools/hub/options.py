"""Broker command-line options shared by `alc hub` and `alc ctl`."""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.config.private_files import read_private_line
from firmware.mqtt import BrokerSettings


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    """`--host --port --root --username --password-file --tls --ca-file --protocol`."""
    group = parser.add_argument_group("broker")
    group.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    group.add_argument("--port", type=int, help="broker port (default 8883 with --tls, else 1883)")
    group.add_argument("--root", default="alc", help="topic root (default alc)")
    group.add_argument("--username", help="broker user name")
    group.add_argument(
        "--password-file", type=Path, help="file holding the broker password (first line)"
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--ca-file", help="CA certificate file for TLS (alc broker init's ca.crt)")
    group.add_argument(
        "--protocol",
        type=int,
        choices=(5, 3),
        default=5,
        help="MQTT 5 (the default) or 3 (MQTT 3.1.1)",
    )


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    """The `BrokerSettings` the options name; `LocalError` if the password file is
    unreadable, empty, or readable by other users."""
    password = None
    if args.password_file is not None:
        password = read_private_line(args.password_file, where="--password-file")
    return BrokerSettings(
        host=args.host,
        port=args.port if args.port is not None else 8883 if args.tls else 1883,
        username=args.username,
        password=password,
        tls=args.tls,
        ca_file=args.ca_file,
        protocol=args.protocol,
    )
