"""Limits shared by the core, the HAL and the tools: one place, no imports.

A leaf module (the standard library only), so the HAL can check what a reader
read against the same bounds the hub's records are checked against, without
pulling in the record model.
"""

from __future__ import annotations

CREDKINDS = ("tag", "card", "pin")
"""The credential kinds of PROTOCOL.md s3: a 125 kHz tag, a card, a PIN."""

MAX_VALUE_LEN = 128
"""Longest credential value, in characters."""

MAX_ID_LEN = 128
"""Longest record kind or id, in characters (PROTOCOL.md s3)."""

MAX_UNLOCK_S = 86400
"""Longest `unlock_s` (and `extended_s`, `held_s`) a door record may carry."""
