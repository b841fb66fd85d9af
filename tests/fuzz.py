"""Generated bad input for the fuzzing campaign (issue 12 s3 and s7): every way a
message on the controller's topics can be wrong.

`Fuzzer(club, seed, now=t).messages(n)` yields `Fuzzed` messages, each for one of the
topics the controller takes (`data`, `cmd`, `ack` and, on the simulator,
`bench/in`). What `how` says they are:

- `bytes`: random bytes;
- `cbor`: random CBOR items, some shaped like an envelope (tag 16, three parts);
- `flip`: a valid sealed message with one byte changed, inserted or deleted, or
  cut short: the envelope no longer opens;
- `envelope`: a valid sealed message taken apart and put back together wrong
  (another tag, alg, kid, a critical header, a short iv or tag...);
- `payload`: sealed with the controller's own key, so it opens, around a
  payload that is not a valid message: not a map, no text `"t"`, tags, duplicate
  keys, indefinite lengths, nesting past 16, trailing bytes, cut short, over
  the size cap;
- `field`: a valid message of every kind the controller takes (delta, snap and
  current pages, ack, every command, every bench input), sealed with its key, with
  one field wrong in type or range, or missing (`tests/fuzz_fields.py`);
- `topic`: a valid message sealed for another topic, or with another key or kid.

Every one of them is input a correct controller refuses without changing its
dataset or outbox: it may only report it, as a rate-limited `system` event. The
generator keeps that promise by never making a valid message (a payload with a
byte changed and sealed again might be one, so it is never made), and
`tests/test_fuzz.py` checks the promise on the core itself.

The module is pure: no I/O, no clock (`now`, the time messages are made valid
at, is an attribute the caller moves on), so the same seed gives the same
messages.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from firmware.core.errors import LocalError
from firmware.core.wire import MAX_PAYLOAD
from tests.fuzz_fields import Club, Template, templates, wrong_values
from tests.sealing import seal

LEAVES = ("data", "cmd", "ack", "bench/in")
HOW = ("bytes", "cbor", "flip", "envelope", "payload", "field", "topic")
# How often each kind comes, in parts of the whole: most of the work goes to the
# kinds that get past the envelope and into the parsers.
WEIGHTS = (8, 8, 14, 12, 16, 36, 6)


@dataclass(frozen=True, slots=True)
class Fuzzed:
    """One generated message: its topic leaf, its bytes, and what it is (`how`,
    one of `HOW`; `what`, the detail, for a failure report)."""

    leaf: str
    payload: bytes
    how: str
    what: str


# --- sealing -----------------------------------------------------------------------------


def encrypt(key: bytes, protected: bytes, topic: str, iv: bytes, payload: bytes) -> bytes:
    """AES-256-GCM of `payload` as PROTOCOL.md s2 says, straight from RFC 9052
    s5.3 and `cryptography` (not through `firmware.core.wire`)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"alc v2 A256GCM")
    aad = cbor2.dumps(["Encrypt0", protected, topic.encode()])
    ciphertext: bytes = AESGCM(hkdf.derive(key)).encrypt(iv, payload, aad)
    return ciphertext


def hand_seal(key: bytes, kid: bytes, topic: str, payload: bytes, iv: bytes) -> bytes:
    """A COSE_Encrypt0 (RFC 9052 s5.2) around any payload bytes, malformed ones
    too: `firmware.core.wire.seal` rightly refuses to seal what a peer would
    refuse, and the campaign needs exactly that to open and reach the decoders.
    The test suite checks it seals a valid message to the very bytes `seal` does."""
    protected = cbor2.dumps({1: 3, 4: kid})
    ciphertext = encrypt(key, protected, topic, iv, payload)
    return cbor2.dumps(cbor2.CBORTag(16, [protected, {5: iv}, ciphertext]))


MISSING = object()
"""A field's value that means: leave the field out."""


def with_field(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `body` with `path` set to `value` (left out for `MISSING`)."""
    out = dict(body)
    if len(path) > 1:
        out[path[0]] = with_field(body[path[0]], path[1:], value)
    elif value is MISSING:
        out.pop(path[0], None)
    else:
        out[path[0]] = value
    return out


# --- random CBOR ---------------------------------------------------------------------------


def random_item(rng: random.Random, depth: int = 0) -> Any:
    """A random CBOR-encodable item, nested at most a few levels."""
    roll = rng.random()
    if depth >= 4 or roll < 0.55:
        return _random_scalar(rng)
    if roll < 0.78:
        return [random_item(rng, depth + 1) for _ in range(rng.randrange(6))]
    keys: list[Any] = [
        rng.choice(["t", "id", "cmd", "args", "from", "to", "door"]) for _ in range(3)
    ]
    keys += [_random_scalar(rng) for _ in range(rng.randrange(3))]
    out: dict[Any, Any] = {}
    for key in keys:
        try:
            out[key] = random_item(rng, depth + 1)
        except TypeError:  # an unhashable key (nan is fine, lists are not made here)
            continue
    return out


def _random_scalar(rng: random.Random) -> Any:
    pick = rng.randrange(12)
    if pick == 0:
        return rng.randrange(-(2**70), 2**70)  # big ones become tags 2 and 3
    if pick == 1:
        return rng.randrange(-30, 30)
    if pick == 2:
        return rng.choice([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, 1e300])
    if pick == 3:
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(12)))
    if pick == 4:
        return rng.randbytes(rng.randrange(20))
    if pick == 5:
        return rng.choice([True, False, None, cbor2.undefined])
    if pick == 6:
        return rng.choice(["delta", "snap", "cmd", "ack", "present", "keys", "rex", "contact"])
    if pick == 7:
        return cbor2.CBORTag(rng.choice([0, 1, 2, 16, 17, 24, 55799, 2**32]), rng.randrange(99))
    if pick == 8:
        return datetime(2000 + rng.randrange(100), 1, 1, tzinfo=UTC)
    if pick == 9:
        return cbor2.CBORSimpleValue(rng.choice([0, 19, 32, 255]))
    if pick == 10:
        return rng.randrange(2**64)
    return ""


# --- the generator -------------------------------------------------------------------------


class Fuzzer:
    """Bad messages for one controller (`club`), reproducible from `seed`."""

    def __init__(self, club: Club, seed: int, *, now: int) -> None:
        self.club = club
        self.rng = random.Random(seed)
        self._ids = 0
        self._seed = seed
        self._now = now
        self._templates = templates(club, now, self.command_id)
        self._makers: tuple[Callable[[], Fuzzed], ...] = (
            self.random_bytes,
            self.random_cbor,
            self.flipped,
            self.bad_envelope,
            self.bad_payload,
            self.wrong_field,
            self.wrong_topic,
        )

    def messages(self, count: int) -> Iterator[Fuzzed]:
        """`count` messages, of every kind (`HOW`) in the proportions of `WEIGHTS`."""
        for _ in range(count):
            (make,) = self.rng.choices(self._makers, WEIGHTS)
            yield make()

    @property
    def now(self) -> int:
        """The time messages are made valid at (commands expire 300 s after it)."""
        return self._now

    @now.setter
    def now(self, now: int) -> None:
        if now != self._now:
            self._now = now
            self._templates = templates(self.club, now, self.command_id)

    def template(self) -> Template:
        """One of the valid messages, a command with an id of its own."""
        template = self.rng.choice(self._templates)
        if template.leaf == "cmd":
            body = template.body | {"id": self.command_id()}
            template = Template(template.leaf, body, template.spec, template.reader_kind)
        return template

    def command_id(self) -> str:
        """A command id never used before (an id seen twice is refused for that)."""
        self._ids += 1
        return f"fuzz-{self._seed}-{self._ids}"

    def topic(self, leaf: str) -> str:
        return f"{self.club.base}/{leaf}"

    def sealed(self, leaf: str, body: dict[str, Any]) -> bytes:
        """`body` sealed for `leaf` with the controller's key; by hand when `seal`
        refuses it (a value that needs a CBOR tag, say), which a peer may do."""
        iv = self.iv()
        try:
            return seal(self.club.key, self.club.kid, self.topic(leaf), body, iv=iv)
        except LocalError:
            payload = cbor2.dumps(body)
            return hand_seal(self.club.key, self.club.kid, self.topic(leaf), payload, iv)

    def iv(self) -> bytes:
        """A fresh iv from the seed's stream: the same seed seals the same bytes."""
        return self.rng.randbytes(12)

    def valid(self) -> tuple[Template, bytes]:
        """A valid message (never sent as it is) and its sealed bytes."""
        template = self.template()
        return template, self.sealed(template.leaf, template.body)

    # --- the kinds ---------------------------------------------------------------------

    def random_bytes(self) -> Fuzzed:
        size = self.rng.choice([0, 1, 2, 8, 40, 200, 1500])
        data = self.rng.randbytes(self.rng.randrange(size + 1))
        if data and self.rng.random() < 0.3:
            data = b"\xd0" + data[1:]  # starts like an envelope
        return Fuzzed(self.rng.choice(LEAVES), data, "bytes", f"{len(data)} random bytes")

    def random_cbor(self) -> Fuzzed:
        while True:
            item = random_item(self.rng)
            if self.rng.random() < 0.4:
                parts = [random_item(self.rng) for _ in range(self.rng.choice([2, 3, 3, 4]))]
                item = cbor2.CBORTag(self.rng.choice([16, 16, 17, 18]), parts)
            try:
                data = cbor2.dumps(item)
            except (cbor2.CBOREncodeError, TypeError, ValueError):
                continue  # a key cbor2 cannot write: draw again
            return Fuzzed(self.rng.choice(LEAVES), data, "cbor", "random CBOR")

    def flipped(self) -> Fuzzed:
        template, data = self.valid()
        raw = bytearray(data)
        at = self.rng.randrange(len(raw))
        way = self.rng.randrange(5)
        if way == 0:
            raw[at] ^= 1 << self.rng.randrange(8)
            what = f"bit flipped at {at}"
        elif way == 1:
            raw[at] = self.rng.randrange(256) if raw[at] else 1
            if bytes(raw) == data:
                raw[at] ^= 0xFF
            what = f"byte changed at {at}"
        elif way == 2:
            raw.insert(at, self.rng.randrange(256))
            what = f"byte inserted at {at}"
        elif way == 3:
            del raw[at]
            what = f"byte deleted at {at}"
        else:
            del raw[at:]
            what = f"cut to {at} bytes"
        return Fuzzed(template.leaf, bytes(raw), "flip", f"{template.name}: {what}")

    def bad_envelope(self) -> Fuzzed:
        template, data = self.valid()
        club, topic = self.club, self.topic(template.leaf)
        protected, unprotected, ciphertext = cbor2.loads(data).value
        iv = unprotected[5]
        plain = cbor2.dumps(template.body)
        envelope: Any = [protected, unprotected, ciphertext]

        def protected_as(header: Any) -> list[Any]:
            # Encrypted for real under that header: only the header is wrong.
            prot = cbor2.dumps(header)
            return [prot, {5: iv}, encrypt(club.key, prot, topic, iv, plain)]

        def e0(parts: Any) -> Any:
            return cbor2.CBORTag(16, parts)

        choices: list[tuple[str, Callable[[], Any]]] = [
            ("tag 17", lambda: cbor2.CBORTag(17, envelope)),
            ("tag 96", lambda: cbor2.CBORTag(96, envelope)),
            ("no tag", lambda: envelope),
            ("2 parts", lambda: e0(envelope[:2])),
            ("4 parts", lambda: e0([*envelope, b""])),
            ("alg 1", lambda: e0(protected_as({1: 1, 4: club.kid}))),
            ("alg HMAC", lambda: e0(protected_as({1: 5, 4: club.kid}))),
            ("alg text", lambda: e0(protected_as({1: "A256GCM", 4: club.kid}))),
            ("no alg", lambda: e0(protected_as({4: club.kid}))),
            ("no kid", lambda: e0(protected_as({1: 3}))),
            ("text kid", lambda: e0(protected_as({1: 3, 4: club.kid.decode()}))),
            ("unknown kid", lambda: e0(protected_as({1: 3, 4: b"other"}))),
            ("crit", lambda: e0(protected_as({1: 3, 4: club.kid, 2: [99]}))),
            ("header list", lambda: e0(protected_as([1, 3, 4, club.kid]))),
            ("empty protected", lambda: e0([b"", {5: iv}, ciphertext])),
            ("bad protected", lambda: e0([b"\xa1\x01", {5: iv}, ciphertext])),
            ("huge protected", lambda: e0(protected_as({1: 3, 4: bytes(300)}))),
            ("kid unprotected", lambda: e0([protected, {5: iv, 4: club.kid}, ciphertext])),
            ("unprotected empty", lambda: e0([protected, {}, ciphertext])),
            ("unprotected list", lambda: e0([protected, [5, iv], ciphertext])),
            ("short iv", lambda: e0([protected, {5: iv[:8]}, ciphertext])),
            ("long iv", lambda: e0([protected, {5: iv + b"\0"}, ciphertext])),
            ("text iv", lambda: e0([protected, {5: iv.hex()}, ciphertext])),
            ("other iv", lambda: e0([protected, {5: bytes(12)}, ciphertext])),
            ("ciphertext text", lambda: e0([protected, {5: iv}, "ciphertext"])),
            ("ciphertext null", lambda: e0([protected, {5: iv}, None])),
            ("tag cut", lambda: e0([protected, {5: iv}, ciphertext[:-1]])),
            ("no tag bytes", lambda: e0([protected, {5: iv}, ciphertext[:-16]])),
            ("empty ciphertext", lambda: e0([protected, {5: iv}, b""])),
            ("long ciphertext", lambda: e0([protected, {5: iv}, ciphertext + b"\0"])),
            ("plaintext", lambda: e0([protected, {5: iv}, plain])),
            ("tag in tag", lambda: cbor2.CBORTag(55799, e0(envelope))),
            ("map", lambda: e0(dict(enumerate(envelope)))),
        ]
        what, build = self.rng.choice(choices)
        out = cbor2.dumps(build())
        if self.rng.random() < 0.1:
            out += b"\x00"
            what += ", trailing byte"
        if what == "no tag" and self.rng.random() < 0.5:
            out = b"\xd8\x10" + out  # tag 16 in a long form
            what = "tag 16 in a long head"
        return Fuzzed(template.leaf, out, "envelope", f"{template.name}: {what}")

    def bad_payload(self) -> Fuzzed:
        template, _ = self.valid()
        body = cbor2.dumps(template.body)
        deep: Any = template.body
        for _ in range(17):
            deep = [deep]
        indefinite = b"\xbf" + cbor2.dumps("t")[0:] + cbor2.dumps(template.body["t"]) + b"\xff"
        duplicate_t = b"\xa2" + cbor2.dumps("t") + cbor2.dumps(template.body["t"])
        duplicate_t += cbor2.dumps("t") + cbor2.dumps("fuzz")
        choices: list[tuple[str, Callable[[], bytes]]] = [
            ("a list", lambda: cbor2.dumps(list(template.body.items()))),
            ("a number", lambda: cbor2.dumps(7)),
            ("a text", lambda: cbor2.dumps(template.body["t"])),
            ("no t", lambda: cbor2.dumps({k: v for k, v in template.body.items() if k != "t"})),
            ("int key", lambda: cbor2.dumps({**template.body, 1: 2})),
            ("bytes key", lambda: cbor2.dumps({**template.body, b"t": "x"})),
            ("datetime", lambda: cbor2.dumps({**template.body, "at": datetime.now(UTC)})),
            ("bignum", lambda: cbor2.dumps({**template.body, "n": 2**70})),
            ("tag 24", lambda: cbor2.dumps({**template.body, "x": cbor2.CBORTag(24, b"\xa0")})),
            ("depth 17", lambda: cbor2.dumps({**template.body, "deep": deep})),
            ("indefinite map", lambda: indefinite),
            ("indefinite bytes", lambda: cbor2.dumps({"t": "x"})[:-2] + b"\x5f\x41a\xff"),
            ("duplicate t", lambda: duplicate_t),
            ("trailing byte", lambda: body + b"\x00"),
            ("cut short", lambda: body[: self.rng.randrange(len(body))]),
            ("bad utf-8", lambda: b"\xa1\x61t\x62\xff\xfe"),
            ("empty", lambda: b""),
            ("over the cap", lambda: cbor2.dumps({"t": "x", "pad": bytes(MAX_PAYLOAD)})),
        ]
        what, build = self.rng.choice(choices)
        if what == "over the cap" and self.rng.random() < 0.9:
            what, build = choices[0]  # big messages are slow to move: a few suffice
        payload = build()
        sealed = hand_seal(
            self.club.key, self.club.kid, self.topic(template.leaf), payload, self.iv()
        )
        return Fuzzed(template.leaf, sealed, "payload", f"{template.name}: {what}")

    def wrong_field(self) -> Fuzzed:
        template = self.template()
        fields = template.fields()
        path = self.rng.choice(sorted(fields))
        kind, required = fields[path]
        wrong: list[Any] = wrong_values(kind, template, self.club, self.now, self.rng)
        value = self.rng.choice([*wrong, MISSING] if required else wrong)
        body = with_field(template.body, path, value)
        shown = "missing" if value is MISSING else repr(value)[:60]
        what = f"{template.name}: {'.'.join(path)} = {shown}"
        return Fuzzed(template.leaf, self.sealed(template.leaf, body), "field", what)

    def wrong_topic(self) -> Fuzzed:
        template = self.template()
        club = self.club
        way = self.rng.randrange(4)
        if way == 0:
            leaf = self.rng.choice([x for x in LEAVES if x != template.leaf])
            data = self.sealed(template.leaf, template.body)
            what = f"sealed for {template.leaf}, sent on {leaf}"
        elif way == 1:
            leaf = template.leaf
            data = seal(bytes(32), club.kid, self.topic(leaf), template.body, iv=self.iv())
            what = "sealed with another key"
        elif way == 2:
            leaf = template.leaf
            data = seal(club.key, club.kid + b"/2", self.topic(leaf), template.body, iv=self.iv())
            what = "sealed with an unknown kid"
        else:
            leaf = template.leaf
            other = club.base.rsplit("/", 1)[0] + "/other"
            data = seal(club.key, club.kid, f"{other}/{leaf}", template.body, iv=self.iv())
            what = "sealed for another controller"
        return Fuzzed(leaf, data, "topic", f"{template.name}: {what}")
