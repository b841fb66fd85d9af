"""Checking a controller's event seqs at the hub: every seq from 1 to the last is
either stored or named in a `dropped` range of a stored `system` event (a boot
numbers on from the clock, past any seq a run from memory can have given out;
a damaged file or a purge drops ranges too)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class StoredEvent(Protocol):
    seq: int
    type: str
    body: Any


def undeclared_gaps(stored: Iterable[StoredEvent]) -> list[tuple[int, int]]:
    """Seq ranges (inclusive) neither stored nor declared dropped; [] when complete.
    Works on seqs of any size: ranges, never one entry per seq."""
    events = sorted(stored, key=lambda e: e.seq)
    declared = sorted(
        (int(first), int(last))
        for e in events
        if e.type == "system" and isinstance(e.body, dict)
        for first, last in e.body.get("dropped", ())
    )
    gaps: list[tuple[int, int]] = []
    expected = 1
    for e in events:
        if e.seq > expected:
            gaps.append((expected, e.seq - 1))
        expected = max(expected, e.seq + 1)
    undeclared = []
    for first, last in gaps:
        for d_first, d_last in declared:
            if d_first <= first <= d_last:
                first = d_last + 1
            if first > last:
                break
        if first <= last:
            undeclared.append((first, last))
    return undeclared
