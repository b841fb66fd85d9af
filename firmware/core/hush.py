"""One report per kind a while, the rest counted.

Whatever can repeat without end (a refused input, a failed step, a loose reader
cable, a stream of bad commands) is reported at most once per kind every
`every_s`: the next report says how many were held back meanwhile, so a flood
neither fills the log or the outbox nor goes unseen. Pure: the caller gives the
time.
"""

from __future__ import annotations


class Hush:
    """At most one report per kind every `every_s` seconds."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        # kind -> (when it was last reported, how many held back since). Kinds
        # are a fixed set in each caller (places in the code, what was refused).
        self._kinds: dict[str, tuple[float, int]] = {}

    def allow(self, kind: str, now: float) -> int | None:
        """Report `kind` now? None: not yet (this one is held back and counted).
        Otherwise how many were held back since its last report, for this one
        to mention."""
        last, held = self._kinds.get(kind, (-1e18, 0))
        if now - last < self.every_s:
            self._kinds[kind] = (last, held + 1)
            return None
        self._kinds[kind] = (now, 0)
        return held


def more(held: int, since: str = "since the last report") -> str:
    """The words a report adds for `held` reports held back before it."""
    return f" (and {held} more {since})" if held else ""
