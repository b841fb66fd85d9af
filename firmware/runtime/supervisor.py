"""Thread deaths: restart once, then let systemd restart the whole controller.

The runtime's own threads (events, storage, decoder) catch what one piece of
work raises; a thread that dies anyway has hit a bug or a broken interpreter
state. The supervisor, asked by the loop every step, restarts a dead thread
once and logs it. A second death of the same thread means restarting it does
not help: the controller exits non-zero, and systemd starts it again whole
(with fresh state read from the card).

Watched: `alc-events`, `alc-storage`, `alc-decoder`, paho's network thread,
with a kiosk its server thread, and the threads of edges that run their own
(`ThreadedEdge`: the Home Assistant adapter and its paho thread). The HAL's
reader threads catch their port's failures themselves, report them as
`ReaderFault` and reopen the port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("alc.controller")


@dataclass
class _Watched:
    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]
    deaths: int = 0


class Supervisor:
    """Watches threads the runtime started; see the module docstring."""

    def __init__(self) -> None:
        self._watched: list[_Watched] = []
        self.failed: str | None = None
        """Why the controller must exit (a thread died twice), or None."""

    def watch(self, name: str, alive: Callable[[], bool], restart: Callable[[], None]) -> None:
        """Watch a thread: `alive` says whether it runs, `restart` starts it again."""
        self._watched.append(_Watched(name, alive, restart))

    def check(self) -> list[str]:
        """Restart what died for the first time; return the names restarted.
        Sets `failed` when a thread died a second time (not restarted)."""
        restarted = []
        for w in self._watched:
            if w.alive():
                continue
            w.deaths += 1
            if w.deaths > 1:
                self.failed = f"thread {w.name} died twice"
                log.critical("%s: exiting for systemd to restart the controller", self.failed)
                continue
            log.error("thread %s died: restarting it once", w.name)
            try:
                w.restart()
            except Exception:
                log.exception("could not restart thread %s", w.name)
                self.failed = f"thread {w.name} could not be restarted"
                continue
            restarted.append(w.name)
        return restarted
