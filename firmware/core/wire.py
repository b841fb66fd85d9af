"""The envelope every MQTT payload travels in (PROTOCOL.md section 2, version 2).

A message is a CBOR map encrypted and authenticated in a COSE_Encrypt0 (RFC 9052
section 5.2) with AES-256-GCM, the MQTT topic as external AAD:

    16([protected = bstr .cbor {1: 3, 4: kid}, {5: iv}, ciphertext = bstr])

The content key is HKDF-SHA256 of the controller's 32-byte key (no salt, info
`b"alc v2 A256GCM"`); it is derived once per key and cached. The 12-byte iv is
the caller's: the core has no source of randomness of its own (it stays
sans-I/O), so every caller passes `os.urandom(IV_BYTES)` (tests may fix it).

`unseal` checks the size cap, the envelope's shape, the protected header (alg,
kid, no critical parameters), the iv's and the ciphertext's sizes first, and only
then opens the ciphertext. Everything that keeps a message from opening raises
`AuthError` (the controller reports it as a rate-limited `system`/`auth_failed`
event) and nothing of such a message is decoded further; a message that opens but
whose plaintext breaks the limits of `loads_strict` raises `RemoteError`. Mistakes
of our own (a bad key, an iv of the wrong size, an unsendable message) raise
`LocalError`.

This module knows nothing about message types beyond the `"t"` key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from firmware.core.codec import loads_strict
from firmware.core.errors import LocalError, RemoteError

MAX_PAYLOAD = 256 * 1024
"""Largest accepted plaintext (the CBOR payload map), in bytes (PROTOCOL.md s2)."""

MAX_ENVELOPE = MAX_PAYLOAD + 1024
"""Largest accepted envelope (PROTOCOL.md s2: 256 KiB + 1 KiB); anything longer is
refused before any decoding."""

MAX_PROTECTED = 256
"""Largest accepted `protected` bstr. `{1: 3, 4: kid}` with the longest kid we
make (a 64-byte controller id, `/`, a digit) takes 72 bytes; the slack leaves room
for other peers' kids without letting one make us decode a large header."""

KEY_BYTES = 32
"""Length of a controller key (PROTOCOL.md s2: 32 random bytes)."""

IV_BYTES = 12
"""Length of the AES-GCM iv (nonce), fresh for every message."""

TAG_BYTES = 16
"""AES-GCM authentication tag, appended to the ciphertext."""

ALG_A256GCM = 3
"""COSE algorithm id of AES-GCM with a 256-bit key and a 128-bit tag (RFC 9053 s4.1)."""

HKDF_INFO = b"alc v2 A256GCM"
"""The HKDF `info` that derives a content key from a controller key."""

_LABEL_ALG = 1
_LABEL_CRIT = 2
_LABEL_KID = 4
_LABEL_IV = 5
_COSE_ENCRYPT0_TAG = 16
# Tag 16 in preferred serialisation (major type 6, value 16 in the initial byte).
# Every CBOR encoder emits it this way; a longer form is refused as not tag 16.
_COSE_ENCRYPT0_HEAD = 0xD0

KeyLookup = Callable[[bytes], bytes | None] | Mapping[bytes, bytes]
"""Where `unseal` finds the key for a kid: a mapping or a function (None: unknown)."""


class AuthError(RemoteError):
    """A message did not open: not an Encrypt0 envelope of ours, a wrong alg, an
    unknown kid, a bad size, or a tag that does not verify (wrong key or topic).

    `kid` is the key id the message claimed, when it named one.
    """

    def __init__(self, message: str, *, kid: bytes | None = None) -> None:
        super().__init__(message)
        self.kid = kid


@dataclass(frozen=True, slots=True)
class Message:
    """An opened message: the `kid` it was sealed with, its type (`"t"`) and the
    whole decoded payload map (`"t"` included)."""

    kid: bytes
    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Header:
    """The parts of an envelope that travel in clear, checked but not opened."""

    protected: bytes
    alg: int
    kid: bytes
    iv: bytes
    ciphertext: bytes


def seal(key: bytes, kid: bytes, topic: str, message: Mapping[str, Any], *, iv: bytes) -> bytes:
    """Encode `message` and seal it for publishing on `topic` under `key`/`kid`.

    `iv` must be 12 fresh random bytes (`os.urandom(IV_BYTES)`): an iv used twice
    under one key gives the key's authenticity away. Raises `LocalError` if the
    key is not 32 bytes or the iv not 12, or if the message is one a strict peer
    would refuse: no text `"t"`, a non-text top-level key, a value that encodes as
    a CBOR tag (datetime, set, big int...), nesting deeper than 16 or a payload
    over `MAX_PAYLOAD`. Refusing here matters because a message the hub rejects
    would otherwise be retried forever.
    """
    aead = _aead(_check_key(key))
    if not isinstance(kid, bytes):
        raise LocalError(f"kid must be bytes, got {type(kid).__name__}")
    if not isinstance(iv, bytes) or len(iv) != IV_BYTES:
        raise LocalError(f"iv must be {IV_BYTES} bytes")
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
    protected = cbor2.dumps({_LABEL_ALG: ALG_A256GCM, _LABEL_KID: kid})
    if len(protected) > MAX_PROTECTED:
        raise LocalError(f"kid of {len(kid)} bytes is too long")
    try:
        topic_bytes = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalError(f"topic {topic!r} is not valid UTF-8") from None
    ciphertext = aead.encrypt(iv, payload, enc_structure(protected, topic_bytes))
    out: bytes = cbor2.dumps(
        cbor2.CBORTag(_COSE_ENCRYPT0_TAG, [protected, {_LABEL_IV: iv}, ciphertext])
    )
    return out


def unseal(keys: KeyLookup, topic: str, data: bytes | bytearray | memoryview) -> Message:
    """Open and decode a message received on `topic`.

    `keys` maps a kid to its 32-byte key (a mapping, or a function returning None
    for an unknown kid). Raises `AuthError` for anything that keeps the message
    from opening (see the module's docstring), `RemoteError` for an opened
    payload that is not a strict CBOR map with a text `"t"`, and `LocalError`
    only if `keys` hands back something that is not a 32-byte key.
    """
    try:
        topic_bytes = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthError(f"topic {topic!r} is not valid UTF-8") from None
    head = parse(data)
    found = keys.get(head.kid) if isinstance(keys, Mapping) else keys(head.kid)
    if found is None:
        raise AuthError(f"unknown kid {head.kid!r}", kid=head.kid)
    aead = _aead(_check_key(found))
    try:
        plaintext = aead.decrypt(
            head.iv, head.ciphertext, enc_structure(head.protected, topic_bytes)
        )
    except InvalidTag:
        raise AuthError(
            f"message does not open with kid {head.kid!r} on this topic", kid=head.kid
        ) from None
    # Opened: only now is the payload worth decoding.
    body = loads_strict(plaintext, what="payload")
    if not isinstance(body, dict):
        raise RemoteError(f"payload is a {type(body).__name__}, not a map")
    if not all(type(k) is str for k in body):
        raise RemoteError("payload map has a key that is not text")
    kind = body.get("t")
    if type(kind) is not str:
        raise RemoteError('payload has no text "t" naming its type')
    return Message(kid=head.kid, type=kind, body=body)


def parse(data: bytes | bytearray | memoryview) -> Header:
    """Check an envelope's structure and clear parts, without opening it.

    Raises `AuthError` for anything `unseal` would refuse before opening: over
    the size cap, not CBOR tag 16 around an array of 3, a protected header that
    is not `{1: 3, 4: kid}` (critical parameters refused), an unprotected header
    other than `{5: iv}` with a 12-byte iv, or a ciphertext shorter than the tag
    or longer than the largest payload with its tag.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AuthError(f"envelope must be bytes, got {type(data).__name__}")
    # The cap comes before any decoding, so a huge message costs us nothing.
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > MAX_ENVELOPE:
        raise AuthError(f"envelope of {size} bytes is over {MAX_ENVELOPE}")
    raw = bytes(data)
    if not raw or raw[0] != _COSE_ENCRYPT0_HEAD:
        raise AuthError("not a COSE_Encrypt0 message (CBOR tag 16)")
    try:
        # Past the one tag we expect, the rest is plain CBOR: loads_strict refuses
        # any further tag, so cbor2's own tag decoders never run on what a peer sent.
        parts = loads_strict(raw[1:], what="COSE_Encrypt0")
        if not isinstance(parts, list) or len(parts) != 3:
            raise RemoteError("COSE_Encrypt0 must be an array of 3 items")
        protected, unprotected, ciphertext = parts
        if type(protected) is not bytes or type(ciphertext) is not bytes:
            raise RemoteError("COSE_Encrypt0 protected and ciphertext must be byte strings")
        if len(protected) > MAX_PROTECTED:
            raise RemoteError(f"protected header of {len(protected)} bytes is over {MAX_PROTECTED}")
        if not TAG_BYTES <= len(ciphertext) <= MAX_PAYLOAD + TAG_BYTES:
            raise RemoteError(f"ciphertext of {len(ciphertext)} bytes is out of bounds")
        iv = _iv(unprotected)
        # Only the protected header and the ciphertext are authenticated: the
        # unprotected header's and the length heads' encoding is not. Taken in
        # any but the preferred (shortest) serialisation, one message seen on
        # the broker could be published again as other bytes that still open
        # (the fuzzing soak found it: `{5: iv}` with 5 written in two bytes).
        if cbor2.dumps([protected, unprotected, ciphertext]) != raw[1:]:
            raise RemoteError("COSE_Encrypt0 is not in preferred (shortest) serialisation")
        header = loads_strict(protected, what="protected header") if protected else {}
        if not isinstance(header, dict):
            raise RemoteError("protected header is not a map")
        if _label(header, _LABEL_CRIT) is not None:
            # RFC 9052 s3.1: we understand no extension, so a critical one is fatal.
            raise RemoteError("protected header lists critical parameters we do not know")
    except AuthError:
        raise
    except RemoteError as exc:
        raise AuthError(str(exc)) from None
    kid = _label(header, _LABEL_KID)
    alg = _label(header, _LABEL_ALG)
    if type(kid) is not bytes:
        raise AuthError(f"protected header has no bstr kid (label 4), got {type(kid).__name__}")
    if type(alg) is not int or alg != ALG_A256GCM:
        raise AuthError(f"alg {alg!r} is not A256GCM (3)", kid=kid)
    return Header(protected=protected, alg=alg, kid=kid, iv=iv, ciphertext=ciphertext)


def enc_structure(protected: bytes, external_aad: bytes) -> bytes:
    """The AAD: RFC 9052 s5.3's Enc_structure for COSE_Encrypt0, CBOR-encoded."""
    # cbor2 encodes with shortest-form lengths, the deterministic encoding
    # RFC 9052 s9 asks for.
    out: bytes = cbor2.dumps(["Encrypt0", protected, external_aad])
    return out


def content_key(key: bytes) -> bytes:
    """The AES-256-GCM key derived from a controller key (PROTOCOL.md s2)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=HKDF_INFO)
    return hkdf.derive(_check_key(key))


@functools.lru_cache(maxsize=256)
def _aead(key: bytes) -> AESGCM:
    """The cipher for a controller key, its content key derived once: a hub with
    many controllers, each with up to 4 keys, fits; lru_cache is thread-safe."""
    return AESGCM(content_key(key))


def _iv(unprotected: object) -> bytes:
    """The iv of an unprotected header that must be exactly `{5: iv}`."""
    if not isinstance(unprotected, dict) or len(unprotected) != 1:
        raise RemoteError("unprotected header must be the map {5: iv}")
    iv = _label(unprotected, _LABEL_IV)
    if type(iv) is not bytes:
        raise RemoteError("unprotected header must be the map {5: iv}")
    if len(iv) != IV_BYTES:
        raise RemoteError(f"iv of {len(iv)} bytes, not {IV_BYTES}")
    return iv


def _label(header: Mapping[Any, Any], label: int) -> Any:
    """The value of integer `label`, or None. Matches the int key only: in a
    Python dict `True` and `1.0` would also find key 1, and those are different
    CBOR labels."""
    for key, value in header.items():
        if type(key) is int and key == label:
            return value
    return None


def _check_key(key: object) -> bytes:
    """`key` itself if it is a 32-byte key; a wrong key is our configuration's fault."""
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise LocalError(f"a key must be {KEY_BYTES} bytes, got {size}")
    return key
