"""`alc decode`: turn a captured payload into readable JSON, for troubleshooting.

    alc decode FILE|HEX [--key-file K --topic T]

Without a key the envelope is opened unverified (`"verified": false`: never act on
it). With the controller's key file and the topic it was captured on, the MAC is
checked exactly as the controller checks it. Byte strings print as hex.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firmware.config import read_key
from firmware.core.errors import LocalError, RemoteError
from firmware.core.wire import peek, unseal


def _plain(value: Any) -> Any:
    """A JSON-friendly copy: bytes as hex, non-text map keys as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def read_capture(source: str) -> bytes:
    """A capture from a file (raw bytes, or hex text) or a hex string."""
    path = Path(source)
    if path.exists():
        data = path.read_bytes()
        try:
            return bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return data
    try:
        return bytes.fromhex(source)
    except ValueError:
        raise LocalError(f"{source!r} is neither a file nor hex") from None


def decode(data: bytes, key: bytes | None = None, topic: str | None = None) -> dict[str, Any]:
    """Open a captured envelope; verified when `key` and `topic` are given."""
    if key is None or topic is None:
        return _plain(peek(data))  # type: ignore[no-any-return]
    # Whatever kid the capture names, check it against the one key we were given.
    message = unseal(lambda _kid: key, topic, data)
    kid = message.kid.decode(errors="replace")
    return {"verified": True, "kid": kid, "payload": _plain(message.body)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc decode`."""
    parser = argparse.ArgumentParser(prog="alc decode", description=__doc__)
    parser.add_argument("capture", help="a file holding the payload (raw or hex), or hex")
    parser.add_argument("--key-file", type=Path, help="the controller's key file (64 hex)")
    parser.add_argument("--topic", help="the MQTT topic the payload was captured on")
    args = parser.parse_args(argv)
    try:
        key = read_key(args.key_file, where="--key-file") if args.key_file else None
        print(json.dumps(decode(read_capture(args.capture), key, args.topic), indent=2))
    except (LocalError, RemoteError) as exc:
        print(f"alc decode: {exc}", file=sys.stderr)
        return 1
    return 0
