"""Real failing disks for tests: a small tmpfs that fills up, one remounted
read-only, an ext4 image whose writes hang (`fsfreeze`). They need root and a
kernel that lets this process mount; without them a test skips, saying why.

Every mount is undone when its `with` block ends, frozen file systems are thawed
first, so a failing test never leaves a hung or mounted disk behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def _skip_unless(ok: bool, what: str, result: subprocess.CompletedProcess[str] | None) -> None:
    if not ok:
        detail = result.stderr.strip() if result is not None else ""
        pytest.skip(f"{what} is not possible here ({detail or 'needs root'})")


@contextmanager
def tmpfs(mountpoint: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` at `mountpoint` (made if missing)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = None
    if os.geteuid() == 0 and shutil.which("mount"):
        result = _run(
            "mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)
        )
    _skip_unless(result is not None and result.returncode == 0, "mounting a tmpfs", result)
    try:
        yield mountpoint
    finally:
        _unmount(mountpoint)


def _unmount(mountpoint: Path) -> None:
    # A connection left open by a failing test keeps the mount busy: lazily
    # detached, it goes once the last file on it is closed.
    if _run("umount", str(mountpoint)).returncode != 0:
        _run("umount", "-l", str(mountpoint))


def remount(mountpoint: Path, *, read_only: bool) -> None:
    """Remount a file system read-only, or writable again, under open files."""
    result = _run("mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(mountpoint))
    assert result.returncode == 0, result.stderr


@contextmanager
def full(directory: Path) -> Iterator[Path]:
    """Fill the file system holding `directory` to the last byte; the filler is
    removed when the block ends (or earlier, by the test, to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # Big writes first, then whatever room is left a byte at a time.
        for size in (1 << 20, 4096, 1):
            chunk = bytes(size)
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    try:
        yield filler
    finally:
        with suppress(FileNotFoundError):
            filler.unlink()


@contextmanager
def ext4(image: Path, mountpoint: Path, size_mb: int = 32) -> Iterator[Path]:
    """An ext4 file system in a loop-mounted image, as a card is mounted: one that
    can be frozen (`frozen`) and that turns read-only on an error (`fail`)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = None
    tools = ("mkfs.ext4", "e2fsck", "fsfreeze")
    ok = os.geteuid() == 0 and all(shutil.which(tool) for tool in tools)
    if ok:
        with image.open("wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        result = _run("mkfs.ext4", "-q", "-F", str(image))
        if result.returncode == 0:
            result = _mount_image(image, mountpoint)
        ok = result.returncode == 0
    _skip_unless(ok, "mounting an ext4 image on a loop device", result)
    try:
        yield mountpoint
    finally:
        _run("fsfreeze", "-u", str(mountpoint))  # harmless when not frozen
        _unmount(mountpoint)
        with suppress(FileNotFoundError):
            image.unlink()


@contextmanager
def frozen(mountpoint: Path) -> Iterator[None]:
    """Freeze a file system: every write to it (and every flush) hangs, as on a
    hung SD card, until the block ends and it is thawed."""
    result = _run("fsfreeze", "-f", str(mountpoint))
    _skip_unless(result.returncode == 0, "freezing a file system", result)
    try:
        yield
    finally:
        _run("fsfreeze", "-u", str(mountpoint))


def _mount_image(image: Path, mountpoint: Path) -> subprocess.CompletedProcess[str]:
    return _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mountpoint))


def fail(mountpoint: Path) -> None:
    """Report an error on a mounted ext4 file system, as the kernel does when a
    card returns a bad block: mounted `errors=remount-ro`, it turns read-only at
    once, under every open file, and stays so until it is checked and mounted
    again (`reboot`)."""
    device = _run("findmnt", "-no", "SOURCE", str(mountpoint)).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    _skip_unless(trigger.exists(), "reporting an ext4 error (no trigger_fs_error)", None)
    trigger.write_text("alc test: a failing card\n")


def reboot(image: Path, mountpoint: Path) -> None:
    """What a restart does for a card that turned read-only: unmount, check
    (`e2fsck -y`), mount again. Every file on it must be closed first."""
    assert _run("umount", str(mountpoint)).returncode == 0
    _run("e2fsck", "-fy", str(image))  # exit 1: errors corrected, as expected
    result = _mount_image(image, mountpoint)
    assert result.returncode == 0, result.stderr
