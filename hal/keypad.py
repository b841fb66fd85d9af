"""PIN entry: keys in, a completed PIN out.

Shared by serial keypads and Wiegand keypad bursts, so the core only ever sees a
complete PIN. `#` enters, `*` clears, and a half-typed PIN is forgotten once no key
came for `timeout_s` (checked when the next key arrives, which needs no timer and
behaves the same: the stale digits never join the next member's PIN).
"""

from __future__ import annotations

from hal.frames import Credential, Fault

DEFAULT_TIMEOUT_S = 10.0
MAX_DIGITS = 12


class PinEntry:
    """The digits typed so far at one keypad. Not thread-safe: the reader locks."""

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_digits: int = MAX_DIGITS):
        self.timeout_s = timeout_s
        self.max_digits = max_digits
        self._digits: list[str] = []
        self._too_long = False
        self._last_key: float | None = None

    @property
    def typed(self) -> int:
        """How many digits are waiting for `#`."""
        return len(self._digits)

    def key(self, key: str, now: float) -> Credential | Fault | None:
        """Handle one key pressed at `now`; return a PIN on `#`, a fault for an
        overlong entry, else None."""
        if self._last_key is not None and now - self._last_key >= self.timeout_s:
            self.clear()
        self._last_key = now
        if key == "*":
            self.clear()
            return None
        if key == "#":
            digits, too_long = "".join(self._digits), self._too_long
            self.clear()
            if too_long:
                return Fault(f"PIN entry longer than {self.max_digits} digits")
            return Credential("pin", digits) if digits else None
        if not (len(key) == 1 and key.isdigit() and key.isascii()):
            raise ValueError(f"not a keypad key: {key!r}")
        if len(self._digits) < self.max_digits:
            self._digits.append(key)
        else:
            self._too_long = True  # keep memory bounded; report at `#`
        return None

    def clear(self) -> None:
        """Forget what was typed."""
        self._digits.clear()
        self._too_long = False
