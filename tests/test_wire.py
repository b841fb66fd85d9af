"""The COSE_Mac0 envelope (PROTOCOL.md s2): round trips, every refusal, fuzzing,
and interop with a COSE_Mac0 written by hand from RFC 9052."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
from typing import Any

import cbor2
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from firmware.core import wire
from firmware.core.codec import loads_strict
from firmware.core.errors import LocalError, RemoteError
from firmware.core.wire import MAX_ENVELOPE, MAX_PAYLOAD, AuthError, Message, peek, seal, unseal

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
KID = b"ctl-1"
KEYS = {KID: KEY}
TOPIC = "alc/club/ctl-1/data"


# --- CBOR written by hand (RFC 8949 s3), independent of cbor2's encoder ---------


def head(major: int, n: int) -> bytes:
    """Shortest-form initial byte(s) for major type `major` with argument `n`."""
    if n < 24:
        return bytes([major << 5 | n])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | extra]) + n.to_bytes(size, "big")
    raise ValueError(n)


def bstr(b: bytes) -> bytes:
    return head(2, len(b)) + b


def tstr(s: str) -> bytes:
    raw = s.encode()
    return head(3, len(raw)) + raw


def protected_for(kid: bytes, alg: int = 5) -> bytes:
    """`{1: alg, 4: kid}` by hand (alg small and non-negative here)."""
    return b"\xa2" + b"\x01" + head(0, alg) + b"\x04" + bstr(kid)


def mac_structure(protected: bytes, aad: bytes, payload: bytes) -> bytes:
    """RFC 9052 s6.3: MAC_structure = ["MAC0", protected, external_aad, payload]."""
    return b"\x84" + tstr("MAC0") + bstr(protected) + bstr(aad) + bstr(payload)


def hand_seal(
    payload: bytes,
    *,
    key: bytes = KEY,
    protected: bytes | None = None,
    topic: str = TOPIC,
    unprotected: bytes = b"\xa0",
) -> bytes:
    """A COSE_Mac0 built byte by byte: 17([protected, {}, payload, tag])."""
    if protected is None:
        protected = protected_for(KID)
    tag = hmac.new(key, mac_structure(protected, topic.encode(), payload), hashlib.sha256)
    return b"\xd1\x84" + bstr(protected) + unprotected + bstr(payload) + bstr(tag.digest())


def hand_verify(key: bytes, topic: str, data: bytes) -> bytes:
    """A verifier written from RFC 9052 alone; returns the payload bytes."""
    item = cbor2.loads(data)
    assert isinstance(item, cbor2.CBORTag) and item.tag == 17
    protected, unprotected, payload, tag = item.value
    assert cbor2.loads(protected)[1] == 5
    assert unprotected == {}
    expected = hmac.new(key, mac_structure(protected, topic.encode(), payload), hashlib.sha256)
    assert hmac.compare_digest(expected.digest(), tag)
    assert isinstance(payload, bytes)
    return payload


def nested(levels: int, inner: Any = 0) -> Any:
    """`levels` arrays around `inner`."""
    value = inner
    for _ in range(levels):
        value = [value]
    return value


def container_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((container_depth(v) for kv in value.items() for v in kv), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((container_depth(v) for v in value), default=0)
    return 0


# --- round trip ------------------------------------------------------------------


def test_round_trip() -> None:
    msg = {"t": "delta", "epoch": "e1", "from": 3, "to": 4, "ops": [["del", "door", "d1"]]}
    got = unseal(KEYS, TOPIC, seal(KEY, KID, TOPIC, msg))
    assert got == Message(kid=KID, type="delta", body=msg)


def test_seal_is_deterministic() -> None:
    msg = {"t": "state", "online": True}
    assert seal(KEY, KID, TOPIC, msg) == seal(KEY, KID, TOPIC, dict(msg))


def test_keys_may_be_a_function() -> None:
    data = seal(KEY, KID, TOPIC, {"t": "x"})
    assert unseal(lambda kid: KEY if kid == KID else None, TOPIC, data).type == "x"
    with pytest.raises(AuthError) as err:
        unseal(lambda kid: None, TOPIC, data)
    assert err.value.kid == KID


def test_accepts_bytearray_and_memoryview() -> None:
    data = seal(KEY, KID, TOPIC, {"t": "x"})
    assert unseal(KEYS, TOPIC, bytearray(data)).type == "x"
    assert unseal(KEYS, TOPIC, memoryview(data)).type == "x"


# --- authentication failures: AuthError -----------------------------------------


def test_wrong_key_fails_auth() -> None:
    data = seal(OTHER_KEY, KID, TOPIC, {"t": "x"})
    with pytest.raises(AuthError):
        unseal(KEYS, TOPIC, data)


def test_message_copied_to_another_topic_fails_auth() -> None:
    data = seal(KEY, KID, TOPIC, {"t": "cmd"})
    with pytest.raises(AuthError):
        unseal(KEYS, "alc/club/ctl-2/data", data)
    with pytest.raises(AuthError):
        unseal(KEYS, "alc/club/ctl-1/cmd", data)


def test_unknown_kid_fails_auth() -> None:
    data = seal(KEY, b"ctl-9", TOPIC, {"t": "x"})
    with pytest.raises(AuthError) as err:
        unseal(KEYS, TOPIC, data)
    assert err.value.kid == b"ctl-9"


@pytest.mark.parametrize("alg", [4, 6, 7, 0, 26])
def test_wrong_alg_fails_auth_even_with_a_good_tag(alg: int) -> None:
    # 4 is HMAC-256/64 and 6, 7 the larger HMACs: a correct HMAC-SHA256 tag must
    # not make us accept a message that claims another algorithm.
    data = hand_seal(b"\xa1\x61t\x61x", protected=protected_for(KID, alg))
    with pytest.raises(AuthError):
        unseal(KEYS, TOPIC, data)


@pytest.mark.parametrize(
    "header",
    [
        {1: -5, 4: KID},  # a negative alg
        {1: "HS256", 4: KID},  # a text alg
        {1: 5.0, 4: KID},  # equal to 5 in Python, a different CBOR value
        {True: 5, 4: KID},  # key true is not label 1
        {4: KID},  # no alg at all
    ],
)
def test_alg_must_be_exactly_the_integer_5(header: dict[Any, Any]) -> None:
    data = hand_seal(b"\xa1\x61t\x61x", protected=cbor2.dumps(header))
    with pytest.raises(AuthError):
        unseal(KEYS, TOPIC, data)


def test_empty_protected_bucket_has_no_alg() -> None:
    with pytest.raises(AuthError):
        unseal(KEYS, TOPIC, hand_seal(b"\xa1\x61t\x61x", protected=b""))


def test_short_or_long_tag_fails_auth() -> None:
    data = seal(KEY, KID, TOPIC, {"t": "x"})
    assert data.endswith(b"\x58\x20" + data[-32:])
    for tag in (data[-32:-16], data[-32:] + b"\x00", b""):
        with pytest.raises(AuthError):
            unseal(KEYS, TOPIC, data[:-34] + bstr(tag))


def test_tag_is_checked_before_the_payload_is_decoded() -> None:
    # Garbage payload under a wrong tag: the auth failure must win, which shows
    # the payload bytes were never handed to the decoder.
    data = hand_seal(b"\xff\xff not cbor", key=OTHER_KEY)
    with pytest.raises(AuthError):
        unseal(KEYS, TOPIC, data)


# --- malformed envelopes: RemoteError, not AuthError -----------------------------


def assert_malformed(data: bytes) -> RemoteError:
    with pytest.raises(RemoteError) as err:
        unseal(KEYS, TOPIC, data)
    assert not isinstance(err.value, AuthError), err.value
    return err.value


@pytest.mark.parametrize(
    "data",
    [
        b"",
        cbor2.dumps([protected_for(KID), {}, b"\xa1\x61t\x61x", bytes(32)]),  # untagged
        b"\xd2" + hand_seal(b"\xa1\x61t\x61x")[1:],  # tag 18, COSE_Sign1
        b"\xd0" + hand_seal(b"\xa1\x61t\x61x")[1:],  # tag 16, COSE_Encrypt0
        b"\xd8\x11" + hand_seal(b"\xa1\x61t\x61x")[1:],  # tag 17, not shortest form
        b"\xd1\xd1" + hand_seal(b"\xa1\x61t\x61x")[1:],  # tag 17 twice
        cbor2.dumps({"t": "x"}),
    ],
)
def test_not_tag_17_is_refused(data: bytes) -> None:
    assert_malformed(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\xd1\x83" + bstr(protected_for(KID)) + b"\xa0" + bstr(b"\xa1\x61t\x61x"),
        b"\xd1\x85" + hand_seal(b"\xa1\x61t\x61x")[2:] + b"\x40",
        b"\xd1\x9f" + hand_seal(b"\xa1\x61t\x61x")[2:] + b"\xff",  # indefinite array
        hand_seal(b"\xa1\x61t\x61x") + b"\x00",  # trailing byte
        hand_seal(b"\xa1\x61t\x61x")[:-1],  # truncated
        hand_seal(b"\xa1\x61t\x61x", unprotected=b"\xa1\x04" + bstr(KID)),
        hand_seal(b"\xa1\x61t\x61x", unprotected=b"\x40"),
        hand_seal(b"\xa1\x61t\x61x", protected=b"\x80"),  # protected is not a map
        hand_seal(b"\xa1\x61t\x61x", protected=b"\xa2\x01\x05\x04"),  # truncated map
        hand_seal(b"\xa1\x61t\x61x", protected=cbor2.dumps({1: 5})),  # no kid
        hand_seal(b"\xa1\x61t\x61x", protected=cbor2.dumps({1: 5, 4: "ctl-1"})),  # text kid
        hand_seal(b"\xa1\x61t\x61x", protected=cbor2.dumps({1: 5, 4: KID, 2: [99]})),  # crit
        hand_seal(b"\xa1\x61t\x61x", protected=b"\xa2\x01\x05\x04\xc2" + bstr(KID)),  # tag
    ],
)
def test_malformed_envelope_is_refused(data: bytes) -> None:
    assert_malformed(data)


def test_unknown_non_critical_protected_labels_are_ignored() -> None:
    # RFC 9052 s3: labels we do not know are ignored unless listed in crit (2).
    data = hand_seal(b"\xa1\x61t\x61x", protected=cbor2.dumps({1: 5, 4: KID, 3: 60}))
    assert unseal(KEYS, TOPIC, data).type == "x"


def test_not_bytes_is_refused() -> None:
    with pytest.raises(RemoteError):
        unseal(KEYS, TOPIC, "text")  # type: ignore[arg-type]


def test_topic_with_lone_surrogate_is_remote_error() -> None:
    with pytest.raises(RemoteError):
        unseal(KEYS, "alc/\udcff", seal(KEY, KID, TOPIC, {"t": "x"}))


# --- size cap --------------------------------------------------------------------


def payload_of_size(size: int) -> bytes:
    """A `{"t": "x", "pad": h'00..'}` payload of exactly `size` bytes."""
    fixed = len(b"\xa2" + tstr("t") + tstr("x") + tstr("pad"))
    pad = size - fixed - len(head(2, size))
    payload = b"\xa2" + tstr("t") + tstr("x") + tstr("pad") + bstr(bytes(pad))
    assert len(payload) == size
    return payload


def test_payload_of_exactly_the_cap_is_accepted() -> None:
    got = unseal(KEYS, TOPIC, hand_seal(payload_of_size(MAX_PAYLOAD)))
    assert len(got.body["pad"]) > MAX_PAYLOAD - 32


def test_payload_one_byte_over_the_cap_is_refused_though_authentic() -> None:
    data = hand_seal(payload_of_size(MAX_PAYLOAD + 1))
    assert len(data) <= MAX_ENVELOPE  # so it is the payload check that refuses it
    assert_malformed(data)


def test_oversize_envelope_is_refused_before_any_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_decode(*_args: object, **_kwargs: object) -> Any:
        raise AssertionError("decoded an oversize envelope")

    monkeypatch.setattr(wire, "loads_strict", must_not_decode)
    assert_malformed(hand_seal(payload_of_size(MAX_ENVELOPE)))
    assert_malformed(b"\xd1" + bytes(MAX_ENVELOPE))


def test_oversize_protected_header_is_refused() -> None:
    assert_malformed(hand_seal(b"\xa1\x61t\x61x", protected=protected_for(b"k" * 300)))


# --- payload limits (PROTOCOL.md s2): authentic but malformed -> RemoteError ------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xa2\x61t\x61x\x61d\xc1\x00",  # tag 1 (epoch time) in a value
        b"\xa2\x61t\x61x\x61d\xc2\x41\x01",  # tag 2 (bignum)
        b"\xa2\x61t\x61x\x61d\xd1\x80",  # tag 17 nested inside
        b"\xa2\x61t\x61x\x61d\xd8\x1c\x00",  # tag 28 (shareable value)
        b"\xd9\xd9\xf7\xa1\x61t\x61x",  # self-described CBOR tag around the map
        b"\xbf\x61t\x61x\xff",  # indefinite-length map
        b"\xa2\x61t\x61x\x61d\x9f\xff",  # indefinite-length array inside
        b"\xa2\x61t\x61x\x61d\x7f\x61a\xff",  # indefinite-length text inside
        b"\xa2\x61t\x61x\x61t\x61y",  # duplicate key "t"
        b"\xa3\x61t\x61x\x01\x00\xf9\x3c\x00\x00",  # 1 and 1.0: duplicates to Python
        b"\xa1\x61t\x61x\x00",  # trailing bytes
        b"\xa1\x61t\x61",  # truncated
        b"\xa1\x61t\x62\xff\xfe",  # invalid UTF-8
        b"",  # empty payload
        b"\x80",  # not a map
        b"\xa1\x61u\x61x",  # no "t"
        b"\xa1\x61t\x01",  # "t" not text
        b"\xa2\x61t\x61x\x01\x02",  # a top-level key that is not text
    ],
)
def test_authentic_but_malformed_payload_is_refused(payload: bytes) -> None:
    assert_malformed(hand_seal(payload))


def test_depth_16_is_accepted_and_17_refused() -> None:
    # Depth counts containers on the deepest path, the payload map itself included:
    # {"t": "x", "d": [[...0...]]} with 15 arrays is 16 deep.
    ok = cbor2.dumps({"t": "x", "d": nested(15)})
    assert unseal(KEYS, TOPIC, hand_seal(ok)).body["d"] == nested(15)
    assert_malformed(hand_seal(cbor2.dumps({"t": "x", "d": nested(16)})))


def test_depth_counts_an_empty_innermost_container() -> None:
    # cbor2's own max_depth counts enclosing containers of an item and would let a
    # 17th, empty, container through; codec.loads_strict closes that gap.
    ok = cbor2.dumps({"t": "x", "d": nested(14, [])})
    assert unseal(KEYS, TOPIC, hand_seal(ok)).body["d"] == nested(14, [])
    assert_malformed(hand_seal(cbor2.dumps({"t": "x", "d": nested(15, [])})))
    assert_malformed(hand_seal(cbor2.dumps({"t": "x", "d": nested(15, {})})))


def test_depth_counts_map_keys() -> None:
    # {"t": "x", "d": {[[...0...]]: 0}}: two maps plus the arrays in the key.
    deep_key = b"\xa2\x61t\x61x\x61d\xa1" + bytes([0x81]) * 14 + b"\x00\x00"
    assert unseal(KEYS, TOPIC, hand_seal(deep_key)).type == "x"
    too_deep = b"\xa2\x61t\x61x\x61d\xa1" + bytes([0x81]) * 15 + b"\x00\x00"
    assert_malformed(hand_seal(too_deep))
    # A map used as a key decodes to cbor2's frozendict; its values count too.
    map_key = b"\xa2\x61t\x61x\x61d\xa1\xa1\x00" + bytes([0x81]) * 12 + b"\x80\x00"
    assert unseal(KEYS, TOPIC, hand_seal(map_key)).type == "x"
    map_key_too_deep = b"\xa2\x61t\x61x\x61d\xa1\xa1\x00" + bytes([0x81]) * 13 + b"\x80\x00"
    assert_malformed(hand_seal(map_key_too_deep))


@pytest.mark.parametrize(
    ("value", "depth_ok"),
    [
        (0, True),
        ([], True),
        (nested(16), True),
        (nested(15, []), True),
        (nested(15, {}), True),
        (nested(17), False),
        (nested(16, []), False),
        (nested(16, {"a": 1}), False),
    ],
)
def test_loads_strict_depth_rule(value: Any, depth_ok: bool) -> None:
    assert (container_depth(value) <= 16) == depth_ok
    data = cbor2.dumps(value)
    if depth_ok:
        assert loads_strict(data) == value
    else:
        with pytest.raises(RemoteError):
            loads_strict(data)


# --- seal refuses what a peer would refuse: LocalError -----------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"x": 1},  # no "t"
        {"t": 1},
        {"t": "x", 2: "non-text key"},
        {"t": "x", "when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},  # tag 1
        {"t": "x", "n": 2**64},  # bignum tag
        {"t": "x", "s": {1, 2}},  # set tag
        {"t": "x", "d": nested(16)},  # 17 deep
        {"t": "x", "o": object()},
        {"t": "x", "pad": bytes(MAX_PAYLOAD)},
    ],
)
def test_seal_refuses_unsendable_messages(message: dict[Any, Any]) -> None:
    with pytest.raises(LocalError):
        seal(KEY, KID, TOPIC, message)


def test_bad_keys_are_local_errors() -> None:
    with pytest.raises(LocalError):
        seal(KEY[:16], KID, TOPIC, {"t": "x"})
    with pytest.raises(LocalError):
        seal(KEY, "ctl-1", TOPIC, {"t": "x"})  # type: ignore[arg-type]
    data = seal(KEY, KID, TOPIC, {"t": "x"})
    with pytest.raises(LocalError):
        unseal({KID: KEY[:31]}, TOPIC, data)


# --- peek -------------------------------------------------------------------------


def test_peek_decodes_without_a_key() -> None:
    data = seal(KEY, KID, TOPIC, {"t": "ack", "upto": 7, "v": 3})
    got = peek(data)
    assert got["verified"] is False
    assert (got["alg"], got["kid"]) == (5, KID)
    assert got["payload"] == {"t": "ack", "upto": 7, "v": 3}
    assert bytes.fromhex(got["tag"]) == data[-32:]
    with pytest.raises(RemoteError):
        peek(data[:-1])


# --- interop with RFC 9052, both directions ---------------------------------------


def test_hand_verifier_matches_the_cose_wg_example() -> None:
    # cose-wg/Examples mac0-tests/HMac-01.json (HMAC-SHA256, no external AAD):
    # checks that this file's MAC_structure and envelope are RFC 9052's.
    key = bytes.fromhex("849B57219DAE48DE646D07DBB533566E976686457C1491BE3A76DCEA6C427188")
    to_mac = bytes.fromhex("84644D41433043A101054054546869732069732074686520636F6E74656E742E")
    message = bytes.fromhex(
        "D18443A10105A054546869732069732074686520636F6E74656E742E5820"
        "A1A848D3471F9D61EE49018D244C824772F223AD4F935293F1789FC3A08D8C58"
    )
    assert mac_structure(b"\xa1\x01\x05", b"", b"This is the content.") == to_mac
    assert hand_verify(key, "", message) == b"This is the content."
    # Built by hand, the same bytes come out.
    assert hand_seal(b"This is the content.", key=key, protected=b"\xa1\x01\x05", topic="") == (
        message
    )
    # We insist on an authenticated kid, which this example does not carry.
    assert_malformed_with(key, message)


def assert_malformed_with(key: bytes, data: bytes) -> None:
    with pytest.raises(RemoteError) as err:
        unseal({b"our-secret": key}, "", data)
    assert not isinstance(err.value, AuthError)


def test_unseal_accepts_a_hand_built_mac0() -> None:
    payload = b"\xa2" + tstr("t") + tstr("ack") + tstr("upto") + head(0, 1000)
    data = hand_seal(payload, key=KEY, protected=protected_for(KID), topic=TOPIC)
    assert unseal(KEYS, TOPIC, data) == Message(KID, "ack", {"t": "ack", "upto": 1000})


def test_seal_output_verifies_by_hand_and_is_byte_for_byte_the_rfc_structure() -> None:
    data = seal(KEY, KID, TOPIC, {"t": "ack", "upto": 1000})
    payload = hand_verify(KEY, TOPIC, data)
    assert payload == b"\xa2" + tstr("t") + tstr("ack") + tstr("upto") + head(0, 1000)
    assert data == hand_seal(payload, key=KEY, protected=protected_for(KID), topic=TOPIC)
    with pytest.raises(AssertionError):
        hand_verify(KEY, "alc/club/ctl-1/cmd", data)


# --- hypothesis -------------------------------------------------------------------

INTS = st.integers(min_value=-(2**64), max_value=2**64 - 1)  # CBOR major types 0 and 1
SCALARS = (
    st.none()
    | st.booleans()
    | INTS
    | st.floats(allow_nan=False)  # NaN != NaN would spoil the equality check
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
KEYS_ST = st.text(max_size=10) | INTS | st.binary(max_size=10) | st.booleans()
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS_ST, inner, max_size=5),
    max_leaves=30,
)
MESSAGES = st.builds(
    lambda t, rest: {**rest, "t": t},
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=10), VALUES, max_size=6),
)


@given(MESSAGES)
def test_random_messages_round_trip(message: dict[str, Any]) -> None:
    assume(container_depth(message) <= 16)
    data = seal(KEY, KID, TOPIC, message)
    assert unseal(KEYS, TOPIC, data) == Message(KID, message["t"], message)
    assert hand_verify(KEY, TOPIC, data) == cbor2.dumps(message)


@given(VALUES)
def test_any_authentic_cbor_payload_is_a_message_or_remote_error(value: Any) -> None:
    data = hand_seal(cbor2.dumps(value))
    try:
        got = unseal(KEYS, TOPIC, data)
    except AuthError:
        raise AssertionError("an authentic message failed authentication") from None
    except RemoteError:
        assert (
            not isinstance(value, dict)
            or not isinstance(value.get("t"), str)
            or not all(isinstance(k, str) for k in value)
            or container_depth(value) > 16
        )
    else:
        assert got.body == value


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_remote_error(data: bytes) -> None:
    for candidate in (data, b"\xd1" + data, b"\xd1\x84" + data):
        with contextlib.suppress(RemoteError):
            unseal(KEYS, TOPIC, candidate)


ANY_CBOR = st.recursive(
    SCALARS | st.builds(cbor2.CBORTag, st.integers(0, 2**64 - 1), SCALARS),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(KEYS_ST, inner, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 17, 24, 28, 29, 55799]), inner)
    ),
    max_leaves=12,
)


@given(ANY_CBOR, ANY_CBOR, ANY_CBOR, ANY_CBOR)
def test_random_cbor_in_the_envelope_raises_only_remote_error(
    protected: Any, unprotected: Any, payload: Any, tag: Any
) -> None:
    candidates = [
        cbor2.dumps(cbor2.CBORTag(17, [protected, unprotected, payload, tag])),
        cbor2.dumps(cbor2.CBORTag(17, [cbor2.dumps(protected), {}, payload, tag])),
        hand_seal(cbor2.dumps(payload), protected=cbor2.dumps(protected)),
        cbor2.dumps(protected),
    ]
    for candidate in candidates:
        with contextlib.suppress(RemoteError):
            unseal(KEYS, TOPIC, candidate)


SMALL = {"t": "events", "batch": [[1, 1700000000, "door", {"door": "d1", "what": "opened"}]]}


def check_mutation(data: bytes, pos: int, new: int) -> RemoteError:
    mutated = bytearray(data)
    mutated[pos] = new
    with pytest.raises(RemoteError) as err:
        unseal(KEYS, TOPIC, bytes(mutated))
    return err.value


@given(MESSAGES, st.data())
def test_any_single_byte_mutation_is_refused(message: dict[str, Any], data: st.DataObject) -> None:
    assume(container_depth(message) <= 16)
    sealed = seal(KEY, KID, TOPIC, message)
    pos = data.draw(st.integers(0, len(sealed) - 1))
    new = sealed[pos] ^ data.draw(st.integers(1, 255))
    check_mutation(sealed, pos, new)


def test_every_single_byte_mutation_of_a_small_message_is_refused() -> None:
    # Exhaustive: every position, every other byte value. A change inside the
    # payload or tag leaves the structure intact, so it must fail authentication.
    sealed = seal(KEY, KID, TOPIC, SMALL)
    payload = cbor2.dumps(SMALL)
    payload_at = sealed.index(payload)
    authenticated_only = range(payload_at, len(sealed))  # payload bytes, tag head, tag
    tag_head = range(len(sealed) - 34, len(sealed) - 32)
    for pos in range(len(sealed)):
        for new in range(256):
            if new == sealed[pos]:
                continue
            err = check_mutation(sealed, pos, new)
            if pos in authenticated_only and pos not in tag_head:
                assert isinstance(err, AuthError), (pos, new, err)
