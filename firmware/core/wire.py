"""The envelope every MQTT payload travels in (PROTOCOL.md section 2).

A message is a CBOR map sealed in a COSE_Mac0 (RFC 9052 section 6.2) with
HMAC-SHA256 and the MQTT topic as external AAD:

    17([protected = bstr .cbor {1: 5, 4: kid}, {}, payload = bstr .cbor {"t": ...}, tag])

`unseal` checks the size cap first, then the envelope's shape, the protected
header, and the tag over the bytes exactly as received; only a message that
authenticates gets its payload decoded, under the limits of `loads_strict`. Every
bad input raises `RemoteError`; the ones a sender with the wrong key, kid, alg or
topic produces raise its subclass `AuthError`, which the controller reports as a
`system`/`auth_failed` event. Mistakes of our own (a bad key, an unsendable
message) raise `LocalError`.

This module knows nothing about message types beyond the `"t"` key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from firmware.core.codec import loads_strict
from firmware.core.errors import LocalError, RemoteError

MAX_PAYLOAD = 256 * 1024
"""Largest accepted `payload` bstr, in bytes (PROTOCOL.md s2)."""

MAX_PROTECTED = 256
"""Largest accepted `protected` bstr. `{1: 5, 4: kid}` with a 64-byte controller id
as kid takes 70 bytes; the slack leaves room for longer kids without letting a
peer make us decode a large header before authenticating it."""

# Tag 17 (1) + array head (1) + protected bstr head (<= 3) + {} (1) + payload bstr
# head (5 for 256 KiB) + tag bstr head (2) + tag (32) = 45 bytes at most.
_OVERHEAD = 64

MAX_ENVELOPE = MAX_PAYLOAD + MAX_PROTECTED + _OVERHEAD
"""Largest accepted envelope; anything longer is refused before any decoding."""

KEY_BYTES = 32
"""Length of a controller key (PROTOCOL.md s2: 32 random bytes)."""

TAG_BYTES = 32
"""HMAC-SHA256 tag length; alg 5 uses the full, untruncated tag."""

ALG_HMAC_256 = 5
"""COSE algorithm id of HMAC-SHA256 with a 256-bit tag (RFC 9053 s3.1)."""

_LABEL_ALG = 1
_LABEL_CRIT = 2
_LABEL_KID = 4
_COSE_MAC0_TAG = 17
# Tag 17 in preferred serialisation (major type 6, value 17 in the initial byte).
# Every CBOR encoder emits it this way; a longer form is refused as not tag 17.
_COSE_MAC0_HEAD = 0xD1

KeyLookup = Callable[[bytes], bytes | None] | Mapping[bytes, bytes]
"""Where `unseal` finds the key for a kid: a mapping or a function (None: unknown)."""


class AuthError(RemoteError):
    """A message did not authenticate: wrong tag, unknown kid or wrong alg.

    `kid` is the key id the message claimed, when it named one.
    """

    def __init__(self, message: str, *, kid: bytes | None = None) -> None:
        super().__init__(message)
        self.kid = kid


@dataclass(frozen=True, slots=True)
class Message:
    """An authenticated message: the `kid` it was sealed with, its type (`"t"`)
    and the whole decoded payload map (`"t"` included)."""

    kid: bytes
    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Envelope:
    protected: bytes
    header: dict[Any, Any]
    payload: bytes
    tag: bytes


def seal(key: bytes, kid: bytes, topic: str, message: Mapping[str, Any]) -> bytes:
    """Encode `message` and seal it for publishing on `topic` under `key`/`kid`.

    Deterministic: the same arguments always give the same bytes (map order is
    kept as given). Raises `LocalError` if the key is not 32 bytes, or if the
    message is one a strict peer would refuse: no text `"t"`, a non-text top-level
    key, a value that encodes as a CBOR tag (datetime, set, big int...), nesting
    deeper than 16 or a payload over `MAX_PAYLOAD`. Refusing here matters because a
    message the hub rejects would otherwise be retried forever.
    """
    _check_key(key)
    if not isinstance(kid, bytes):
        raise LocalError(f"kid must be bytes, got {type(kid).__name__}")
    if not isinstance(message.get("t"), str):
        raise LocalError('message needs a text "t" naming its type')
    if not all(isinstance(k, str) for k in message):
        raise LocalError("message keys must all be text")
    try:
        payload = cbor2.dumps(dict(message))
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise LocalError(f"message {message['t']!r} cannot be encoded: {exc}") from None
    if len(payload) > MAX_PAYLOAD:
        raise LocalError(f"message {message['t']!r} is {len(payload)} bytes, over {MAX_PAYLOAD}")
    try:
        # The same check a receiver makes: catches tags, depth, duplicate keys.
        loads_strict(payload, what="payload")
    except RemoteError as exc:
        raise LocalError(f"message {message['t']!r} would be refused: {exc}") from None
    protected = cbor2.dumps({_LABEL_ALG: ALG_HMAC_256, _LABEL_KID: kid})
    if len(protected) > MAX_PROTECTED:
        raise LocalError(f"kid of {len(kid)} bytes is too long")
    try:
        aad = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalError(f"topic {topic!r} is not valid UTF-8") from None
    tag = _mac(key, protected, aad, payload)
    out: bytes = cbor2.dumps(cbor2.CBORTag(_COSE_MAC0_TAG, [protected, {}, payload, tag]))
    return out


def unseal(keys: KeyLookup, topic: str, data: bytes | bytearray | memoryview) -> Message:
    """Authenticate and decode a message received on `topic`.

    `keys` maps a kid to its 32-byte key (a mapping, or a function returning None
    for an unknown kid). Raises `AuthError` for a wrong tag (wrong key, or a
    message copied from another topic), an unknown kid or an alg other than
    HMAC-SHA256, `RemoteError` for anything else malformed or oversize, and
    `LocalError` only if `keys` hands back something that is not a 32-byte key.
    """
    try:
        aad = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise RemoteError(f"topic {topic!r} is not valid UTF-8") from None
    env = _parse(data)
    alg = _label(env.header, _LABEL_ALG)
    if type(alg) is not int or alg != ALG_HMAC_256:
        raise AuthError(f"alg {alg!r} is not HMAC-SHA256 (5)", kid=_kid_or_none(env.header))
    kid = _label(env.header, _LABEL_KID)
    if type(kid) is not bytes:
        raise RemoteError(f"protected header has no bstr kid (label 4), got {type(kid).__name__}")
    found = keys.get(kid) if isinstance(keys, Mapping) else keys(kid)
    if found is None:
        raise AuthError(f"unknown kid {kid!r}", kid=kid)
    key = _check_key(found)
    if len(env.tag) != TAG_BYTES:
        raise AuthError(f"tag is {len(env.tag)} bytes, not {TAG_BYTES}", kid=kid)
    if not hmac.compare_digest(_mac(key, env.protected, aad, env.payload), env.tag):
        raise AuthError(f"tag does not verify for kid {kid!r} on this topic", kid=kid)
    # Authenticated: only now is the payload worth decoding.
    body = loads_strict(env.payload, what="payload")
    if not isinstance(body, dict):
        raise RemoteError(f"payload is a {type(body).__name__}, not a map")
    if not all(type(k) is str for k in body):
        raise RemoteError("payload map has a key that is not text")
    kind = body.get("t")
    if type(kind) is not str:
        raise RemoteError('payload has no text "t" naming its type')
    return Message(kid=kid, type=kind, body=body)


def peek(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode an envelope WITHOUT checking its tag, for `alc decode`.

    Returns `verified: False` with the header fields, the tag in hex and the
    decoded payload. Same size and CBOR limits as `unseal`; raises `RemoteError`
    if the envelope or payload is malformed. Never act on its result.
    """
    env = _parse(data)
    return {
        "verified": False,
        "alg": _label(env.header, _LABEL_ALG),
        "kid": _label(env.header, _LABEL_KID),
        "protected": env.header,
        "tag": env.tag.hex(),
        "payload": loads_strict(env.payload, what="payload"),
    }


def _parse(data: bytes | bytearray | memoryview) -> _Envelope:
    """Split an envelope into its parts without touching the payload bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteError(f"envelope must be bytes, got {type(data).__name__}")
    # The cap comes before any decoding, so a huge message costs us nothing.
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > MAX_ENVELOPE:
        raise RemoteError(f"envelope of {size} bytes is over {MAX_ENVELOPE}")
    raw = bytes(data)
    if not raw or raw[0] != _COSE_MAC0_HEAD:
        raise RemoteError("not a COSE_Mac0 message (CBOR tag 17)")
    # Past the one tag we expect, the rest is plain CBOR: loads_strict refuses any
    # further tag, so cbor2's own tag decoders never run on what a peer sent.
    parts = loads_strict(raw[1:], what="COSE_Mac0")
    if not isinstance(parts, list) or len(parts) != 4:
        raise RemoteError("COSE_Mac0 must be an array of 4 items")
    protected, unprotected, payload, tag = parts
    if type(protected) is not bytes or type(payload) is not bytes or type(tag) is not bytes:
        raise RemoteError("COSE_Mac0 protected, payload and tag must be byte strings")
    if not isinstance(unprotected, dict) or unprotected:
        # Nothing belongs there: kid travels authenticated in the protected header.
        raise RemoteError("COSE_Mac0 unprotected header must be the empty map")
    if len(payload) > MAX_PAYLOAD:
        raise RemoteError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    if len(protected) > MAX_PROTECTED:
        raise RemoteError(f"protected header of {len(protected)} bytes is over {MAX_PROTECTED}")
    # RFC 9052 s3: an empty protected bucket is sent as a zero-length bstr.
    header = loads_strict(protected, what="protected header") if protected else {}
    if not isinstance(header, dict):
        raise RemoteError("protected header is not a map")
    if _label(header, _LABEL_CRIT) is not None:
        # RFC 9052 s3.1: we understand no extension, so a critical one is fatal.
        raise RemoteError("protected header lists critical parameters we do not know")
    return _Envelope(protected=protected, header=header, payload=payload, tag=tag)


def _label(header: Mapping[Any, Any], label: int) -> Any:
    """The value of integer `label`, or None. Matches the int key only: in a
    Python dict `True` and `1.0` would also find key 1, and those are different
    CBOR labels."""
    for key, value in header.items():
        if type(key) is int and key == label:
            return value
    return None


def _kid_or_none(header: Mapping[Any, Any]) -> bytes | None:
    kid = _label(header, _LABEL_KID)
    return kid if type(kid) is bytes else None


def _mac(key: bytes, protected: bytes, aad: bytes, payload: bytes) -> bytes:
    """HMAC-SHA256 over the RFC 9052 s6.3 MAC_structure for COSE_Mac0."""
    # cbor2 encodes with shortest-form lengths, the deterministic encoding
    # RFC 9052 s9 requires for the MAC_structure.
    mac_structure = cbor2.dumps(["MAC0", protected, aad, payload])
    return hmac.new(key, mac_structure, hashlib.sha256).digest()


def _check_key(key: object) -> bytes:
    """`key` itself if it is a 32-byte key; a wrong key is our configuration's fault."""
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise LocalError(f"a key must be {KEY_BYTES} bytes, got {size}")
    return key
