"""Giving an OSDP reader a new secure channel base key (SCBK), with libosdp's
control panel: the KEYSET command, sent over the secure channel, which libosdp
then sets up again with the new key to prove the reader took it.

`set_key` works on any channel (`hal.osdp_channel`); `alc ctl osdp-keyset`
(tools/osdp_keyset.py) runs it on the reader's port and keeps the key files.
A reader still on the default key (its install mode) is keyed with `current`
None: libosdp sets up the channel on the default key and sends the new one
itself.
"""

from __future__ import annotations

import time
from typing import Any

import osdp

from firmware.core.errors import LocalError
from firmware.core.wiring import SCBK_LEN
from hal.osdp_bus import Channel

KEYSET_WAIT_S = 20.0
_SC = osdp.EventNotification.SecureChannelStatus
_PD = osdp.EventNotification.PeripheralDeviceStatus


class KeysetFailed(LocalError):
    """The reader was not reached, refused our key, or did not take the new one.
    `sent`: the new key went out, so the reader may have it."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


def set_key(
    channel: Channel,
    address: int,
    *,
    current: bytes | None,
    new: bytes,
    timeout: float = KEYSET_WAIT_S,
    log_level: int = osdp.LogLevel.Critical,
) -> None:
    """Key the reader at `address` on `channel` with `new`; it now has `current`
    (None: the default key, in its install mode). Returns once the secure
    channel is up on `new`; `KeysetFailed` otherwise. The channel stays open."""
    if len(new) != SCBK_LEN or (current is not None and len(current) != SCBK_LEN):
        raise KeysetFailed(f"a key is {SCBK_LEN} bytes")
    install = current is None
    flags = [osdp.LibFlag.EnableNotification]
    if not install:
        flags.append(osdp.LibFlag.EnforceSecure)
    # In install mode the panel's own key is the new one: libosdp falls back to
    # the default key and sends ours with KEYSET by itself.
    key = new if install else current
    info = osdp.PDInfo(address, channel, scbk=key, name="keyset", flags=flags)
    cp = osdp.ControlPanel([info], log_level=log_level)
    cp.start()
    try:
        _key(cp, address, install=install, new=new, deadline=time.monotonic() + timeout)
    finally:
        cp.teardown()


def _key(cp: Any, address: int, *, install: bool, new: bytes, deadline: float) -> None:
    sent = install  # in install mode libosdp sends it
    dropped = False  # the channel went down after the KEYSET: the new key comes next
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            step = "set up again on the new key" if sent else "set up"
            raise KeysetFailed(f"the secure channel was not {step} in time", sent=sent)
        event = cp.get_event(address, timeout=min(left, 0.5))
        if event is None or event.get("event") != osdp.Event.Notification:
            continue
        kind, up, default_key = event.get("type"), event.get("arg0") == 1, event.get("arg1") == 1
        if kind == _PD:
            if not up:
                why = "not answering, or refused our key"
                raise KeysetFailed(f"the reader went offline ({why})", sent=sent)
            if install:  # the channel comes up before the reader is online
                raise KeysetFailed("online without a secure channel: not in install mode?")
            if not sent:  # commands go only to a reader that is online
                command = {"command": osdp.Command.Keyset, "type": 1, "data": new}
                if not cp.submit_command(address, command):
                    raise KeysetFailed("libosdp did not take the KEYSET command")
                sent = True
        elif kind == _SC:
            if not up:
                dropped = dropped or sent  # the reader took it: libosdp starts over
            elif not default_key and (install or dropped):
                return  # up on the new key
