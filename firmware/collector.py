"""When Python's cyclic garbage collector runs: the process's policy, not the core's.

The collector is process-wide, so switching it is the runtime's business; the core
only builds stores. Bulk work creates millions of small objects that hold no
cycles (records, index entries, decoded pages). A collection in the middle of it
rescans them all: a bulk load takes more than twice as long, and during a full
sync each collection holds the interpreter lock for tens of ms while a member
waits at the door. So:

- `collector_paused()`: off around one bulk step (a boot load, a bench build);
- `BulkCollector`: off for as long as a full sync is arriving and being built,
  then what it made (the new dataset, which lives for hours) is frozen out of the
  collector's reach and the collector goes back on. The records hold no cycles,
  so a dataset swapped out is still freed, by reference counting.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for the `with` block, then back as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class BulkCollector:
    """Follows a bulk phase that spans many loop steps (a full sync)."""

    def __init__(self) -> None:
        self._bulk = False

    def follow(self, bulk: bool) -> None:
        """Called every loop step with whether bulk work is under way."""
        if bulk and not self._bulk:
            gc.disable()
        elif self._bulk and not bulk:
            gc.freeze()
            gc.enable()
        self._bulk = bulk

    def release(self) -> None:
        """The collector back on, whatever phase we stopped in (shutdown)."""
        self._bulk = False
        gc.enable()
