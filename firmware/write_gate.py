"""One process, two writers, one SQLite file: events go first.

SQLite lets one transaction write at a time and makes the others wait in a busy
handler that sleeps (1 ms growing to 100 ms) and retries: a writer can miss every
gap between another's short transactions and wait hundreds of milliseconds. The
gate queues this process's writers in Python instead, and lets an urgent writer
(the event outbox: a member waits for it at the door) in ahead of any routine one
(the dataset: a full sync being saved in chunks) at the next transaction boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class WriteGate:
    """Mutual exclusion for write transactions, with priority for urgent ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextmanager
    def enter(self, *, urgent: bool) -> Iterator[None]:
        """Hold the gate for one write transaction."""
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
                try:
                    self._cond.wait_for(lambda: not self._busy)
                finally:
                    self._urgent_waiting -= 1
            else:
                self._cond.wait_for(lambda: not self._busy and not self._urgent_waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
