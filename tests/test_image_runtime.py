"""The decision image end to end (issue 13 s2): a controller writes it after its
full sync and after a quiet spell of deltas, boots from it the next time, and
decides as before. Real mosquitto, the reference hub, real files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from firmware.core.controller import Controller
from firmware.core.decide import Target
from firmware.image import IMAGE_FILE, ImageRefused, Tag, load_image
from firmware.runtime import imaging
from firmware.storage import DB_FILE, Storage
from tests.harness import CLUB, Rig, member_toml, wait_for, write_atomically

FRONT = Target.door("front")


def grants(rig: Rig, tag: str) -> str:
    def reason(controller: Controller) -> str:
        decision = controller.decide(FRONT, "tag", tag, time.time())
        return decision.reason if not decision.granted else f"granted:{decision.member}"

    return rig.core(reason)


def image_of_file(data: Path) -> bool:
    """The image holds what the dataset file holds."""
    with Storage.open(data / DB_FILE) as storage:
        state = storage.state()
    if state.epoch is None:
        return False
    try:
        load_image(data, Tag(state.epoch, state.v, state.digest))
    except (ImageRefused, OSError):
        return False
    return True


def test_the_controller_boots_from_the_image_its_full_sync_left(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imaging, "QUIET_S", 0.5)
    data = tmp_path / "data"
    write_atomically(rig.data_file, CLUB)
    rig.start_hub()
    rig.run_controller()
    rig.wait_converged()
    assert rig.runtime is not None and not rig.runtime.booted_from_image
    wait_for(lambda: image_of_file(data), "the image of the full sync")
    assert grants(rig, "00000000a1") == "granted:m1"

    # A delta: the image follows once deltas have been quiet for QUIET_S.
    write_atomically(rig.data_file, CLUB + member_toml("m3", "00000000c3"))
    wait_for(lambda: grants(rig, "00000000c3") == "granted:m3", "m3 to open")
    rig.wait_converged()
    wait_for(lambda: image_of_file(data), "the image of the delta")

    expected = rig.triple()
    rig.stop_controller()
    rig.run_controller()
    assert rig.runtime is not None and rig.runtime.booted_from_image
    assert rig.triple() == expected
    assert grants(rig, "00000000c3") == "granted:m3"
    assert grants(rig, "00000000a1") == "granted:m1"
    rig.wait_converged()


def test_an_old_image_is_refused_and_the_store_rebuilt(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imaging, "QUIET_S", 3600.0)  # deltas leave the image behind
    data = tmp_path / "data"
    write_atomically(rig.data_file, CLUB)
    rig.start_hub()
    rig.run_controller()
    rig.wait_converged()
    wait_for(lambda: image_of_file(data), "the image of the full sync")
    old = (data / IMAGE_FILE).read_bytes()

    write_atomically(rig.data_file, CLUB + member_toml("m3", "00000000c3"))
    wait_for(lambda: grants(rig, "00000000c3") == "granted:m3", "m3 to open")
    rig.wait_converged()
    rig.stop_controller()
    assert (data / IMAGE_FILE).read_bytes() == old
    assert not image_of_file(data)

    rig.stop_hub()  # the boot alone must have m3: from SQLite, not the old image
    rig.run_controller()
    assert rig.runtime is not None and not rig.runtime.booted_from_image
    assert grants(rig, "00000000c3") == "granted:m3"
