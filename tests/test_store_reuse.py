"""A full sync reuses the live store's unchanged records instead of decoding them again."""

from __future__ import annotations

from firmware.core.store import StoreBuilder
from tests.builders import rec, store_of


def test_unchanged_records_are_shared_and_changed_ones_are_new() -> None:
    records = [
        ("member", "m1", rec(creds=[["tag", "aa"]], credit=5)),
        ("member", "m2", rec(creds=[["tag", "bb"]])),
        ("door", "front", rec(unlock_s=7)),
        ("member", "bad", rec(credit="lots")),
    ]
    live = store_of(records[:3])
    changed = [*records[:1], ("member", "m2", rec(creds=[["tag", "cc"]])), *records[2:]]
    builder = StoreBuilder(previous=live)
    builder.feed(changed)
    built = builder.finish()
    fresh = StoreBuilder()
    fresh.feed(changed)
    expected = fresh.finish()
    assert built.store.digest == expected.store.digest
    assert built.store.members["m1"] is live.members["m1"]
    assert built.store.doors["front"] is live.doors["front"]
    assert built.store.members["m2"] is not live.members["m2"]
    assert built.store.credentials["tag"]["cc"].id == "m2"
    assert "bb" not in built.store.credentials["tag"]
    assert [r.id for r in built.rejected] == ["bad"]
    # The live store is untouched by the build.
    assert live.credentials["tag"]["bb"].id == "m2"


def test_a_rejected_record_stays_rejected_when_reused() -> None:
    bad = ("member", "bad", rec(credit="lots"))
    first = StoreBuilder()
    first.feed([bad])
    live = first.finish().store
    builder = StoreBuilder(previous=live)
    builder.feed([bad])
    built = builder.finish()
    assert [r.id for r in built.rejected] == ["bad"]
    assert built.store.digest == live.digest
    assert "bad" not in built.store.members
