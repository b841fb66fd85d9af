"""The fast paths of a store build agree with the definitions they stand in for.

`_usual_member` reads members of the usual shape inline and hands anything else
to `_member`; `StrictReader` reuses one decoder across items. Both must give the
record, or the error, that the plain path gives, for any input.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.core.codec import UNUSUAL, StrictReader, loads_strict
from firmware.core.errors import RemoteError
from firmware.core.model import Member, _Body, _member, _member_of, _usual_member, parse_record

# Field values of every type a member field may meet, valid or not.
ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=1 << 63),
    st.text(max_size=6),
    st.sampled_from(["tag", "card", "pin", "1234", "12", "abc", "x" * 200, "a\x00b", ""]),
    st.binary(max_size=3),
)
PAIRS = st.lists(st.one_of(ATOMS, st.lists(ATOMS, max_size=3)), max_size=3)
CREDS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["tag", "card", "pin", "key"]), st.text(max_size=4)).map(list),
        st.tuples(st.just("pin"), st.from_regex(r"[0-9]{1,8}", fullmatch=True)).map(list),
        PAIRS,
        ATOMS,
    ),
    max_size=3,
)
VALUES = {
    "name": st.one_of(ATOMS, st.text(min_size=1020, max_size=1030)),
    "active": ATOMS,
    "from": ATOMS,
    "until": ATOMS,
    "groups": st.one_of(
        st.lists(st.one_of(ATOMS, st.sampled_from(["g1", "g2"])), max_size=3), ATOMS
    ),
    "creds": st.one_of(CREDS, ATOMS),
    "credit": st.one_of(ATOMS, st.sampled_from([1 << 62, -(1 << 62), (1 << 62) + 1])),
    "extended": ATOMS,
    "other": ATOMS,
}
BODIES = st.one_of(
    st.fixed_dictionaries({}, optional=VALUES),
    ATOMS,
    st.dictionaries(st.integers(0, 3), ATOMS, max_size=2),
)


def plain(body: Any) -> Any:
    try:
        return _member(_Body("member", "m1", body), 7)
    except RemoteError as exc:
        return str(exc)


@settings(max_examples=2000)
@given(BODIES)
def test_usual_member_is_member_or_declines(body: Any) -> None:
    fast = _usual_member("m1", body, 7)
    if fast is not None:
        assert fast == plain(body)


@given(st.fixed_dictionaries({}, optional=VALUES))
def test_parse_record_same_with_or_without_a_reader(body: dict[str, Any]) -> None:
    data = cbor2.dumps(body)
    reader = StrictReader()

    def parsed(reader: StrictReader | None) -> Any:
        try:
            return parse_record("member", "m1", data, reader)
        except RemoteError as exc:
            return (str(exc), exc.kind, exc.id, exc.field)

    assert parsed(reader) == parsed(None) == parsed(reader)


def test_usual_members_take_the_fast_path() -> None:
    body = {"name": "Ada", "groups": ["g1", "g2"], "creds": [["tag", "ab"], ["pin", "1234"]]}
    for _ in range(2):  # the second time the group list is a shared one
        member = _usual_member("m1", body, 7)
        assert member is not None
        assert member == plain(body)


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps({"a": 1}) + b"\x00",  # trailing bytes
        b"\xc1\x01",  # a tag
        b"\x9f\xff",  # indefinite length
        b"\xa2\x61a\x01\x61a\x02",  # duplicate key
        b"\x81" * 16 + b"\x80",  # 17 containers
        b"\x81" * 16 + b"\x01",  # 16 containers: valid, but past the fast path
        b"\x82\x01",  # truncated
    ],
)
def test_reader_declines_what_it_cannot_vouch_for_and_stays_sound(data: bytes) -> None:
    reader = StrictReader()
    assert reader.quick(cbor2.dumps([1])) == [1]
    assert reader.quick(data) is UNUSUAL
    try:
        expected: Any = loads_strict(data)
    except RemoteError as exc:
        expected = str(exc)
    try:
        got: Any = reader.loads(data)
    except RemoteError as exc:
        got = str(exc)
    assert got == expected
    for value in ({"name": "x"}, [1, [2]], "s", 5):
        assert reader.quick(cbor2.dumps(value)) == value


def test_members_built_fast_are_members_in_every_way() -> None:
    args = ("m1", "Ada", True, None, 5, ("g1",), ("tag", "a1"), 100, False)
    fast = _member_of(*args, 7)
    plain_member = Member(*args, None, 7)
    assert type(fast) is Member
    assert fast == plain_member and hash(fast) == hash(plain_member)
    assert repr(fast) == repr(plain_member)
    assert sys.getsizeof(fast) == sys.getsizeof(plain_member)
    assert not hasattr(fast, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "Eve"  # type: ignore[misc]
