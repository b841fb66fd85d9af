"""Events validate on construction: the core never sees an empty id or a value
that could not be a credential."""

from __future__ import annotations

import dataclasses

import pytest

from hal.events import ContactSensed, CredentialRead, ExitPressed, ReaderTrouble


@pytest.mark.parametrize(
    "build",
    [
        lambda: CredentialRead("", "tag", "x"),
        lambda: CredentialRead("r", "badge", "x"),
        lambda: CredentialRead("r", "tag", ""),
        lambda: CredentialRead("r", "tag", "x" * 129),
        lambda: CredentialRead("r", "tag", "a\nb"),
        lambda: ContactSensed("", True),
        lambda: ExitPressed(""),
        lambda: ReaderTrouble("r", ""),
        lambda: ReaderTrouble("r", "x" * 201),
    ],
)
def test_invalid_events_are_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_events_are_frozen_values() -> None:
    read = CredentialRead("front-in", "tag", "0a1b2c3d4e")
    assert read == CredentialRead("front-in", "tag", "0a1b2c3d4e")
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.value = "x"  # type: ignore[misc]
    assert not hasattr(read, "__dict__")  # slotted
