"""When the decision image is written: on the storage thread, never on the loop.

`ImageKeeper` decides when `firmware.image.write_image` runs, and runs it on the
storage thread (`StorageWriter`) between dataset jobs:

- `SETTLE_S` after a full sync's records are saved (the store was just rebuilt
  whole: the image is what spares the next boot that rebuild);
- after deltas, once no delta came for `QUIET_S` (a busy hub's burst costs one
  image, not one per delta); a boot that had to rebuild from SQLite writes one
  after the same quiet spell;
- never while the data is in memory (the card refuses writes), and a purge
  removes the image.

The store is read while the loop goes on deciding with it. The loop is the only
thread that changes it, always by a whole delta that moves `v`, or by a swap:
so the keeper asks the loop (`Runtime.ask`) for the live `(store, epoch, v,
digest)` before it starts and again once the new image is on the card, and
keeps the image only when nothing moved in between (`still_current`). It also
gives up as soon as another dataset job is queued (a delta that was applied
meanwhile), and steps aside for members between pieces, so neither the loop nor
a delta's save waits for an image; it is tried again after the next quiet spell.
The image is written only for the dataset the file holds at that moment (the
file and the live store at one `(epoch, v, digest)`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware.core.store import Store
from firmware.image import Tag, remove_image, write_image
from firmware.runtime.priorities import MembersFirst
from firmware.storage import Storage

log = logging.getLogger("alc.storage")

QUIET_S = 30.0
"""How long deltas must have stopped before the image is written again."""
SETTLE_S = 5.0
"""How long after a full sync's save its image is written: a few seconds, so a
run of full syncs (sync commands one after the other) costs one image, and the
image's seconds of pickling never share the interpreter with the next sync."""
RETRY_S = 600.0
"""After a write the card refused, the wait before the next try."""


@dataclass(frozen=True, slots=True, eq=False)
class Live:
    """The live store and the dataset it holds, as read on the loop."""

    store: Store
    epoch: str | None
    v: int
    digest: bytes

    def same(self, other: Live | None) -> bool:
        """The same store object at the same version: nothing was applied between."""
        return (
            other is not None
            and other.store is self.store
            and (other.epoch, other.v, other.digest) == (self.epoch, self.v, self.digest)
        )


class _GaveWay(Exception):
    """Another dataset job is queued: the image gives way to it."""


class ImageKeeper:
    """Keeps `alc.image` in step with the dataset file (module docstring). Every
    method but `saved` runs on the storage thread."""

    def __init__(
        self,
        storage: Storage,
        live: Callable[[], Live | None],
        members: MembersFirst,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`live()` reads the live dataset on the loop (None when the loop does
        not answer, stopping); `members` is the inbox's, to step aside for."""
        self._storage = storage
        self._live = live
        self._members = members
        self._clock = clock
        self._due: float | None = None
        self.written = 0
        """Images written since start (tests and tools)."""

    def saved(self, *, full: bool) -> None:
        """The dataset file changed: a full sync's records (an image is due in
        `SETTLE_S`) or deltas (due once they have stopped for `QUIET_S`)."""
        self._due = self._clock() + (SETTLE_S if full else QUIET_S)

    def booted(self, *, from_image: bool, empty: bool) -> None:
        """After the boot: one that rebuilt the store from SQLite writes an image
        after a quiet spell."""
        if not from_image and not empty:
            self._due = self._clock() + QUIET_S

    def due_in(self) -> float | None:
        """Seconds until an image is due (0 when overdue), None when none is."""
        due = self._due
        return None if due is None else max(due - self._clock(), 0.0)

    def run(self, busy: Callable[[], bool]) -> None:
        """Write the image now (the storage thread, its queue empty). `busy()`
        says another job was queued meanwhile: the image then gives way."""
        self._due = None
        try:
            self._write(busy)
        except (_GaveWay, RuntimeError):
            # A delta came (the store changed under the writer): after the quiet.
            self._due = self._clock() + QUIET_S
        except OSError as exc:
            log.warning("the decision image could not be written: %s", exc)
            self._due = self._clock() + RETRY_S

    def _write(self, busy: Callable[[], bool]) -> None:
        storage = self._storage
        if storage.in_memory:
            return  # the card refuses writes; back on it, the next save is due
        data_dir = storage.path.parent
        before = self._live()
        if before is None:
            raise _GaveWay  # the loop did not answer (busy, or stopping): later
        if before.epoch is None:
            remove_image(data_dir)  # purged: nothing for a boot to read
            return
        state = storage.state()
        if (state.epoch, state.v, state.digest) != (before.epoch, before.v, before.digest):
            # The file is not at the live version (a save failed: the file is
            # stale until a full sync rewrites it). No image names a dataset
            # the file does not hold.
            return
        members = self._members

        def pause() -> None:
            members.step_aside()
            if busy():
                raise _GaveWay

        started = time.monotonic()
        done = write_image(
            data_dir,
            Tag(before.epoch, before.v, before.digest),
            before.store,
            pause=pause,
            still_current=lambda: before.same(self._live()),
            room_kept=Storage.room_kept,
        )
        if not done:
            raise _GaveWay
        self.written += 1
        log.info(
            "decision image written: (%s, %d) in %.1f s",
            before.epoch,
            before.v,
            time.monotonic() - started,
        )
