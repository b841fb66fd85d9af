"""The garbage-collector policy of the runtime (firmware/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from firmware.collector import BulkCollector, collector_paused


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    gc.unfreeze()
    if was:
        gc.enable()


def test_paused_for_the_block_then_back_as_it_was() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # it was off before: it stays off


def test_back_on_after_an_exception() -> None:
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError
    assert gc.isenabled()


def test_a_bulk_phase_keeps_it_off_and_freezes_what_it_made() -> None:
    gc.enable()
    gc.unfreeze()
    collector = BulkCollector()
    collector.follow(False)
    assert gc.isenabled()
    collector.follow(True)
    assert not gc.isenabled()
    made = [[i] for i in range(1000)]  # tracked containers, made during the phase
    collector.follow(True)
    assert not gc.isenabled()
    collector.follow(False)
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)


def test_release_turns_it_back_on_mid_phase() -> None:
    gc.enable()
    collector = BulkCollector()
    collector.follow(True)
    collector.release()
    assert gc.isenabled()
    collector.follow(False)  # the phase is over: nothing left to undo
    assert gc.isenabled()
