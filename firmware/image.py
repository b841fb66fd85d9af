"""The decision image file, `alc.image`, next to the dataset file.

The image is the live store as built in memory (`firmware.image_codec`), so a
boot reads it back in a second or two instead of rebuilding the store from every
record in SQLite. It is only ever a shortcut to what the SQLite file holds:

- it is tagged with the `(epoch, v, digest)` of the dataset it holds, and the
  `FORMAT` of its encoding; a boot uses it only when the tags are those of the
  dataset file and the format is this code's (`load_image`), else the store is
  rebuilt from SQLite as without an image;
- a checksum (SHA-256) over everything before it ends the file: a truncated,
  damaged or half-written image is refused the same way, never decides;
- it is written to `alc.image.tmp`, flushed to the card, renamed over the old
  one and the directory flushed (`write_image`), so a power cut or a SIGKILL
  at any moment leaves the old image or the new one, never part of one.

Deleting it is always safe: the next boot rebuilds from SQLite (slower), and the
controller writes a new one after its next full sync or quiet spell of deltas
(`firmware.runtime.imaging`).

Layout: `MAGIC`, a 4-byte length and that many bytes of JSON (format, epoch, v,
digest), the store's stream, then the SHA-256 of all of that (32 bytes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from firmware.collector import collector_paused
from firmware.core.model import RejectedRecord
from firmware.core.store import Built, Store
from firmware.image_codec import FORMAT, ImageFormatError, dump, load
from firmware.storage import DB_FILE, Loaded, Storage, load_store

log = logging.getLogger("alc.storage")

IMAGE_FILE = "alc.image"
"""The image's name inside the data directory, beside `alc.sqlite3`."""
TEMP_FILE = "alc.image.tmp"
MAGIC = b"ALCIMAGE"
_CHECKSUM = 32  # SHA-256
_ROOM_EVERY = 4 * 1024 * 1024  # bytes written between two looks at the card's free room


@dataclass(frozen=True, slots=True)
class Tag:
    """The dataset an image holds: the `(epoch, v, digest)` of `StoredState`."""

    epoch: str
    v: int
    digest: bytes


class ImageRefused(Exception):
    """The image cannot stand for the dataset file: why, in words."""


# --- writing ---------------------------------------------------------------------------


class _Sink:
    """The temp file, hashed as it is written, watching the card's free room."""

    def __init__(self, out: BinaryIO, room: Callable[[], None]) -> None:
        self._out = out
        self._room = room
        self.hash = hashlib.sha256()
        self._since_look = 0

    def write(self, data: Any) -> int:
        self.hash.update(data)
        written = self._out.write(data)
        self._since_look += len(data)
        if self._since_look >= _ROOM_EVERY:
            self._since_look = 0
            self._room()
        return written


def write_image(
    data_dir: Path,
    tag: Tag,
    store: Store,
    *,
    pause: Callable[[], None] = lambda: None,
    still_current: Callable[[], bool] = lambda: True,
    room_kept: int = 0,
) -> bool:
    """Write `store`, which holds the dataset `tag`, as the image of `data_dir`.

    `pause` runs between pieces of the store (it may raise to give up);
    `still_current()` is asked once the new image is on the card, before it
    replaces the old one: False throws it away (the store changed while it was
    written). The write stops with `OSError` when fewer than `room_kept` bytes
    would be left free on the card (events need them more). Returns True when
    the new image is in place; on False or any exception the old image (or
    none) is left, and the temp file removed.
    """
    temp = data_dir / TEMP_FILE

    def room() -> None:
        fs = os.statvfs(data_dir)
        if fs.f_bavail * fs.f_frsize < room_kept:
            raise OSError(f"{data_dir}: less than {room_kept // 1024} KiB left for events")

    header = json.dumps(
        {"format": FORMAT, "epoch": tag.epoch, "v": tag.v, "digest": tag.digest.hex()}
    ).encode()
    try:
        with open(temp, "wb") as out:
            sink = _Sink(out, room)
            room()
            sink.write(MAGIC + len(header).to_bytes(4, "big") + header)
            dump(store, sink, pause)  # type: ignore[arg-type]  # a writable file enough
            out.write(sink.hash.digest())
            out.flush()
            os.fsync(out.fileno())
        if not still_current():
            _remove(temp)
            return False
        os.replace(temp, data_dir / IMAGE_FILE)
    except BaseException:
        _remove(temp)
        raise
    _sync_dir(data_dir)
    return True


def remove_image(data_dir: Path) -> None:
    """Remove the image (the dataset file was purged); a missing one is fine."""
    _remove(data_dir / IMAGE_FILE)
    _remove(data_dir / TEMP_FILE)
    _sync_dir(data_dir)


def _remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


def _sync_dir(data_dir: Path) -> None:
    """The rename (or removal) is on the card once the directory is flushed."""
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------


def read_tag(data: bytes) -> tuple[str, Tag, int]:
    """The format and tag of an image's bytes, and where its stream starts.
    Raises `ImageRefused` when they cannot be read."""
    if data[: len(MAGIC)] != MAGIC:
        raise ImageRefused("not an alc image")
    start = len(MAGIC) + 4
    size = int.from_bytes(data[len(MAGIC) : start], "big")
    try:
        header = json.loads(data[start : start + size])
        tag = Tag(str(header["epoch"]), int(header["v"]), bytes.fromhex(header["digest"]))
        form = str(header["format"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageRefused(f"its header cannot be read: {exc}") from None
    return form, tag, start + size


def load_image(data_dir: Path, expected: Tag) -> Store:
    """The store held by `data_dir`'s image, if it holds the dataset `expected`
    in this code's format, whole. Raises `ImageRefused` (or `OSError` when the
    file cannot be read) otherwise."""
    with open(data_dir / IMAGE_FILE, "rb") as file:
        data = file.read()
    form, tag, start = read_tag(data)
    if form != FORMAT:
        raise ImageRefused(f"it is of format {form}, this alc reads {FORMAT}")
    if tag != expected:
        raise ImageRefused(
            f"it holds ({tag.epoch!r}, {tag.v}, {tag.digest.hex()}), the dataset file "
            f"({expected.epoch!r}, {expected.v}, {expected.digest.hex()})"
        )
    end = len(data) - _CHECKSUM
    if end < start:
        raise ImageRefused("it is cut short")
    body = memoryview(data)
    # The checksum runs beside the decoding (hashlib lets go of the interpreter
    # lock): the decoded store is only used once the checksum says it is whole.
    checked: list[bool] = []
    checker = threading.Thread(
        target=lambda: checked.append(hashlib.sha256(body[:end]).digest() == data[end:]),
        name="alc-image-check",
    )
    checker.start()
    try:
        store = load(data, start, end)
    except ImageFormatError as exc:
        raise ImageRefused(str(exc)) from None
    finally:
        checker.join()
    if not checked[0]:
        raise ImageRefused("its checksum does not match: it is damaged or cut short")
    if store.digest != tag.digest:
        raise ImageRefused("its records do not add up to its digest")
    return store


# --- the boot --------------------------------------------------------------------------


def load_dataset(storage: Storage) -> Loaded:
    """The live store for the boot: read back from the image when it holds the
    dataset the file holds, else rebuilt from the file (`load_store`). A missing,
    old, damaged or foreign image is only logged: the rebuild is what a boot
    without an image does."""
    state = storage.state()
    if state.epoch is None:
        return load_store(storage)
    data_dir = storage.path.parent
    started = time.monotonic()
    try:
        with collector_paused():
            store = load_image(data_dir, Tag(state.epoch, state.v, state.digest))
    except FileNotFoundError:
        log.info("no decision image in %s: rebuilding the store from %s", data_dir, DB_FILE)
    except (ImageRefused, OSError) as exc:
        log.warning("decision image refused (%s): rebuilding the store from %s", exc, DB_FILE)
    else:
        log.info("store read from the decision image in %.2f s", time.monotonic() - started)
        rejected = [r for r in store.others.values() if isinstance(r, RejectedRecord)]
        return Loaded(Built(store, rejected, []), state, from_image=True)
    return load_store(storage)
