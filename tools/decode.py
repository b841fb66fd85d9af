"""`alc decode`: turn a captured payload into readable JSON, for troubleshooting.

    alc decode FILE|HEX [--key-file K | --keys DIR] [--topic T]

Payloads are encrypted (PROTOCOL.md s2), so without a key only the envelope's
clear parts show (`"opened": false`: the kid, the iv, the ciphertext's size).
With the controller's key file, or a keys directory (the key the capture's kid
names is taken from it), and the topic it was captured on, the message is opened
exactly as the controller opens it. Byte strings print as hex.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from firmware.config import read_key
from firmware.core.errors import LocalError, RemoteError
from firmware.core.wire import KeyLookup, parse, unseal
from tools.hub.keys import load_keys


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


def decode(
    data: bytes, key: bytes | Mapping[bytes, bytes] | None = None, topic: str | None = None
) -> dict[str, Any]:
    """A captured envelope as a map: opened when `key` (one key, or keys by kid)
    and `topic` are given, else only its clear parts."""
    head = parse(data)
    if key is None or topic is None:
        return {
            "opened": False,
            "kid": head.kid.decode(errors="replace"),
            "alg": head.alg,
            "iv": head.iv.hex(),
            "ciphertext_bytes": len(head.ciphertext),
        }
    # One key given: whatever kid the capture names, try that key.
    keys: KeyLookup = key if isinstance(key, Mapping) else (lambda _kid: key)
    message = unseal(keys, topic, data)
    kid = message.kid.decode(errors="replace")
    return {"opened": True, "kid": kid, "payload": _plain(message.body)}


def _keys(args: argparse.Namespace) -> bytes | dict[bytes, bytes] | None:
    if args.key_file is not None:
        return read_key(args.key_file, where="--key-file")
    if args.keys is not None:
        return {
            kid: k for ring in load_keys(args.keys).values() for kid, k in ring.accepted.items()
        }
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc decode`."""
    parser = argparse.ArgumentParser(prog="alc decode", description=__doc__)
    parser.add_argument("capture", help="a file holding the payload (raw or hex), or hex")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key-file", type=Path, help="the controller's key file (64 hex)")
    keys.add_argument("--keys", type=Path, help="a keys directory (the hub's or a controller's)")
    parser.add_argument("--topic", help="the MQTT topic the payload was captured on")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(decode(read_capture(args.capture), _keys(args), args.topic), indent=2))
    except (LocalError, RemoteError) as exc:
        print(f"alc decode: {exc}", file=sys.stderr)
        return 1
    return 0
