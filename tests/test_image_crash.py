"""SIGKILL while the decision image is written (issue 13 s2): the image left is
the old one or the new one, whole, or none at all before the first; never
part of one. A real child process (tests/image_crash_child.py) writes images
in turn and is killed at random moments."""

from __future__ import annotations

import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.image import IMAGE_FILE, TEMP_FILE, ImageRefused, load_image
from tests.image_crash_child import stores

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
KILLS = 12


def kill_child(
    children: list[subprocess.Popen[bytes]], data_dir: Path, delay: float, *, early: bool
) -> None:
    """Start the child, SIGKILL it `delay` s after it is ready (after it
    starts, if `early`), and reap it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.image_crash_child", str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    children.append(proc)
    assert proc.stdout is not None
    if not early:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(READY_TIMEOUT_S):
                pytest.fail(f"the child was not ready in {READY_TIMEOUT_S} s")
        assert proc.stdout.readline() == b"ready\n"
    time.sleep(delay)
    assert proc.poll() is None, "the child stopped by itself"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_a_sigkill_during_the_write_leaves_a_whole_image_or_none(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    rng = random.Random(13)
    pair = stores()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    found = {1: 0, 2: 0, None: 0}
    mid_write = 0  # kills that came while an image was being written
    for kill in range(KILLS):
        early = kill % 4 == 0
        if early:  # before the first image is in place: none, or a whole one
            (data_dir / IMAGE_FILE).unlink(missing_ok=True)
        kill_child(children, data_dir, rng.uniform(0.0, 0.4), early=early)
        mid_write += (data_dir / TEMP_FILE).exists()
        path = data_dir / IMAGE_FILE
        if not path.exists():
            assert early, "a kill took away the image that was in place"
            found[None] += 1
            continue
        read = []
        for tag, _store in pair:
            try:
                read.append((tag, load_image(data_dir, tag)))
            except ImageRefused as exc:
                assert "it holds" in str(exc), exc  # another tag: never damaged
        assert len(read) == 1, "the image left is neither whole image"
        tag, store = read[0]
        assert store.digest == tag.digest
        found[tag.v] += 1
    assert found[1] + found[2] > 0
    assert mid_write > KILLS // 3, "too few kills came in the middle of a write"
