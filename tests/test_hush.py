"""`firmware.core.hush`: one report per kind a while, the rest counted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware.core.hush import Hush, more


def test_one_report_per_kind_a_while_and_the_next_counts_what_was_held() -> None:
    hush = Hush(60.0)
    assert hush.allow("a", 1000.0) == 0
    assert hush.allow("a", 1030.0) is None
    assert hush.allow("b", 1030.0) == 0  # kinds are apart
    assert hush.allow("a", 1059.9) is None
    assert hush.allow("a", 1060.0) == 2
    assert hush.allow("a", 1061.0) is None
    assert more(0) == "" and more(2) == " (and 2 more since the last report)"


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=200))
def test_every_report_is_either_allowed_or_counted_in_the_next(times: list[float]) -> None:
    hush = Hush(10.0)
    allowed, held_total, last = 0, 0, None
    for now in sorted(times):
        held = hush.allow("k", now)
        if held is None:
            assert last is not None and now - last < 10.0
        else:
            assert last is None or now - last >= 10.0
            allowed, held_total, last = allowed + 1, held_total + held, now
    pending = hush.allow("k", 1e9)  # much later: whatever is still held
    assert pending is not None
    assert allowed + held_total + pending == len(times)
