"""The decision image (issue 13 s2): the store read back is the store written;
an image of another dataset, another format, damaged or cut short is refused
and the boot rebuilds from SQLite; when the keeper writes it and when it gives
way (firmware/image_codec.py, firmware/image.py, firmware/runtime/imaging.py)."""

from __future__ import annotations

import dataclasses
import io
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import cbor2
import pytest

from firmware import image, image_codec
from firmware.core.decide import Target, decide
from firmware.core.model import Member, RejectedRecord
from firmware.core.store import Put, Store
from firmware.data_files import open_data
from firmware.image import IMAGE_FILE, TEMP_FILE, ImageRefused, Tag, load_image, write_image
from firmware.runtime.imaging import SETTLE_S, ImageKeeper, Live
from firmware.storage import DB_FILE, Storage
from tools.gen import Club, generate

EPOCH = "e1"


def club_records(members: int = 300) -> list[tuple[str, str, bytes]]:
    """A generated club, plus a rejected member (a PIN too short), an unknown
    kind and two members claiming one tag (a conflict)."""
    recs = list(generate(members, 3))
    recs.append(("member", "short", cbor2.dumps({"creds": [["pin", "12"]]})))
    recs.append(("widget", "w1", cbor2.dumps({"any": [1, 2.5, b"x", None]})))
    recs.append(("member", "twin-a", cbor2.dumps({"creds": [["tag", "feedfeed01"]]})))
    recs.append(("member", "twin-b", cbor2.dumps({"creds": [["tag", "feedfeed01"]]})))
    return recs


def built(recs: list[tuple[str, str, bytes]] | None = None) -> Store:
    return Store.build(recs if recs is not None else club_records()).store


def round_trip(store: Store) -> Store:
    out = io.BytesIO()
    image_codec.dump(store, out, lambda: None)
    return image_codec.load(out.getvalue())


def own_keys(store: Store) -> int:
    """Credentials whose key is a string of the member they name."""
    return sum(
        any(c is value for c in member.creds)
        for index in store.credentials.values()
        for value, member in index.items()
    )


def assert_same_store(a: Store, b: Store) -> None:
    """Every table and index equal, and the indexes pointing at the very
    records of the tables (a delta's removal goes by identity)."""
    assert vars(a).keys() == vars(b).keys()
    for name, value in vars(a).items():
        assert vars(b)[name] == value, name
    assert b.digest == a.digest
    for kind, index in b.credentials.items():
        for value, member in index.items():
            assert b.members[member.id] is member, (kind, value)
    # A credential's key is its member's own string, not a copy (memory), as in
    # the store written (where a conflict keeps the first claimant's string).
    assert own_keys(b) == own_keys(a)
    for id, member in b.members.items():
        assert id is member.id
    for door, groups in b.door_groups.items():
        for gid, group in groups.items():
            assert b.groups[gid] is group, door
    for pin, bookings in b.bookings_by_pin.items():
        for bid, booking in bookings.items():
            assert b.bookings[bid] is booking, pin
    # One dict in two places, as in memory.
    for kind, table in b._tables.items():
        assert vars(b)[f"{kind}s"] is table, kind


def test_the_store_read_back_is_the_store_written() -> None:
    store = built()
    assert any(isinstance(r, RejectedRecord) for r in store.others.values())
    back = round_trip(store)
    assert_same_store(store, back)
    assert type(next(iter(back.members.values()))) is Member
    assert back.credentials["tag"]["feedfeed01"].id == "twin-b"


def test_a_store_read_back_decides_and_takes_deltas_as_the_original() -> None:
    club = Club(300, 3)
    store = built()
    back = round_trip(store)
    door = Target.door(min(store.doors))
    now = club.at(2, 600)
    for member in list(store.members.values())[:50]:
        kind, value = member.creds[0], member.creds[1]
        assert decide(back, door, kind, value, now) == decide(store, door, kind, value, now)
    # A member's tag changes: the old tag must go from the index (by identity).
    member = next(m for m in store.members.values() if m.creds and m.creds[0] == "tag")
    body = cbor2.dumps({"creds": [["tag", "0123456789"]], "groups": list(member.groups)})
    for s in (store, back):
        s.apply([Put("member", member.id, body)])
        assert member.creds[1] not in s.credentials["tag"]
    assert_same_store(store, back)


def test_an_empty_store_round_trips() -> None:
    assert_same_store(Store(), round_trip(Store()))


def test_the_format_follows_the_record_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = image_codec._shape()

    @dataclasses.dataclass(frozen=True, slots=True)
    class Member2:
        id: str
        name: str
        nickname: str

    Member2.__qualname__ = "Member"
    classes = [Member2 if c is Member else c for c in image_codec._CLASSES]
    monkeypatch.setattr(image_codec, "_CLASSES", classes)
    assert image_codec._shape() != shape


def test_the_reader_resolves_only_the_store_s_classes() -> None:
    evil = pickle.dumps(["site"], protocol=5) + pickle.dumps(("value", print), protocol=5)
    with pytest.raises(image_codec.ImageFormatError, match=r"builtins\.print"):
        image_codec.load(evil)


# --- the file ------------------------------------------------------------------------


def seeded(tmp_path: Path, *, with_image: bool = True) -> tuple[Path, Store, Tag]:
    """A data directory as a full sync at (EPOCH, 1) leaves it."""
    recs = club_records()
    store = built(recs)
    data = tmp_path / "data"
    data.mkdir()
    with Storage.open(data / DB_FILE) as storage:
        storage.save_snapshot(EPOCH, 1, recs, store.digest, time.time())
    tag = Tag(EPOCH, 1, store.digest)
    if with_image:
        assert write_image(data, tag, store)
    return data, store, tag


def test_an_image_of_the_file_s_dataset_is_read_back(tmp_path: Path) -> None:
    data, store, tag = seeded(tmp_path)
    assert not (data / TEMP_FILE).exists()
    assert_same_store(store, load_image(data, tag))


@pytest.mark.parametrize(
    "other",
    [Tag("e2", 1, b"\0" * 16), Tag(EPOCH, 2, b"\0" * 16), Tag(EPOCH, 1, b"\1" * 16)],
    ids=["epoch", "v", "digest"],
)
def test_an_image_of_another_dataset_is_refused(tmp_path: Path, other: Tag) -> None:
    data, _store, tag = seeded(tmp_path)
    expected = Tag(other.epoch, other.v, other.digest if other.digest != b"\0" * 16 else tag.digest)
    with pytest.raises(ImageRefused, match="it holds"):
        load_image(data, expected)


def test_an_image_of_another_format_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store, tag = seeded(tmp_path, with_image=False)
    monkeypatch.setattr(image, "FORMAT", "0123456789abcdef")
    assert write_image(data, tag, store)
    monkeypatch.undo()
    with pytest.raises(ImageRefused, match="format 0123456789abcdef"):
        load_image(data, tag)


def damage(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.3, 0.6, 0.999])
def test_a_damaged_image_is_refused(tmp_path: Path, where: float) -> None:
    data, _store, tag = seeded(tmp_path)
    damage(data / IMAGE_FILE, where)
    with pytest.raises(ImageRefused):
        load_image(data, tag)


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1])
def test_a_truncated_image_is_refused(tmp_path: Path, keep: float) -> None:
    data, _store, tag = seeded(tmp_path)
    path = data / IMAGE_FILE
    content = path.read_bytes()
    size = int(len(content) * keep) if isinstance(keep, float) else keep
    path.write_bytes(content[:size])
    with pytest.raises(ImageRefused):
        load_image(data, tag)


def test_the_boot_reads_the_image_when_it_is_the_file_s(tmp_path: Path) -> None:
    data, store, _tag = seeded(tmp_path)
    files, boot = open_data(data, time.time())
    try:
        assert boot.loaded.from_image
        assert boot.loaded.intact
        assert_same_store(store, boot.loaded.store)
    finally:
        files.close()


@pytest.mark.parametrize("spoil", ["delta", "damage", "garbage", "directory"])
def test_the_boot_rebuilds_from_sqlite_when_the_image_cannot_stand_for_it(
    tmp_path: Path, spoil: str
) -> None:
    data, store, _tag = seeded(tmp_path)
    path = data / IMAGE_FILE
    expected = store
    if spoil == "delta":
        # The file moved on past the image: the image is old.
        put = Put("member", "late", cbor2.dumps({"creds": [["tag", "aaaaaaaaaa"]]}))
        expected = built([*club_records(), ("member", "late", put.rec)])
        with Storage.open(data / DB_FILE) as storage:
            storage.save_delta(EPOCH, 2, [put], expected.digest)
    elif spoil == "damage":
        damage(path, 0.5)
    elif spoil == "garbage":
        path.write_bytes(b"not an image at all")
    else:
        path.unlink()
        path.mkdir()
    files, boot = open_data(data, time.time())
    try:
        assert not boot.loaded.from_image
        assert not boot.problems  # a refused image is no trouble of the card's
        assert boot.loaded.intact
        assert_same_store(expected, boot.loaded.store)
    finally:
        files.close()


def test_a_store_that_changes_meanwhile_leaves_the_old_image(tmp_path: Path) -> None:
    data, store, _tag = seeded(tmp_path)
    before = (data / IMAGE_FILE).read_bytes()
    assert not write_image(data, Tag(EPOCH, 9, store.digest), store, still_current=lambda: False)
    assert (data / IMAGE_FILE).read_bytes() == before
    assert not (data / TEMP_FILE).exists()

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_image(data, Tag(EPOCH, 9, store.digest), store, pause=interrupted)
    assert (data / IMAGE_FILE).read_bytes() == before
    assert not (data / TEMP_FILE).exists()


def test_a_nearly_full_card_keeps_its_room_for_events(tmp_path: Path) -> None:
    data, store, tag = seeded(tmp_path, with_image=False)
    with pytest.raises(OSError, match="left for events"):
        write_image(data, tag, store, room_kept=1 << 62)
    assert not (data / IMAGE_FILE).exists()
    assert not (data / TEMP_FILE).exists()


# --- the keeper --------------------------------------------------------------------


class Members:
    def step_aside(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keeper_on(
    data: Path, lives: Sequence[Live | None]
) -> tuple[ImageKeeper, Storage, Clock, list[Live | None]]:
    storage = Storage.open(data / DB_FILE)
    clock = Clock()
    asked: list[Live | None] = []

    def live() -> Live | None:
        found = lives[min(len(asked), len(lives) - 1)]
        asked.append(found)
        return found

    keeper = ImageKeeper(storage, live, Members(), clock=clock)  # type: ignore[arg-type]
    return keeper, storage, clock, asked


def test_the_keeper_writes_after_a_full_sync_and_after_quiet_deltas(tmp_path: Path) -> None:
    data, store, tag = seeded(tmp_path, with_image=False)
    keeper, storage, clock, _ = keeper_on(data, [Live(store, EPOCH, 1, store.digest)])
    try:
        assert keeper.due_in() is None
        keeper.saved(full=False)
        assert keeper.due_in() == pytest.approx(30.0)
        clock.now += 10
        keeper.saved(full=False)  # another delta: the quiet starts again
        assert keeper.due_in() == pytest.approx(30.0)
        keeper.saved(full=True)
        assert keeper.due_in() == pytest.approx(SETTLE_S)  # a run of syncs: one image
        clock.now += SETTLE_S
        assert keeper.due_in() == 0.0
        keeper.run(lambda: False)
        assert keeper.written == 1
        assert keeper.due_in() is None
        assert_same_store(store, load_image(data, tag))
    finally:
        storage.close()


def test_the_keeper_gives_way_to_a_delta(tmp_path: Path) -> None:
    data, store, _tag = seeded(tmp_path, with_image=False)
    live = Live(store, EPOCH, 1, store.digest)
    moved = Live(store, EPOCH, 2, store.digest)
    for lives, busy in (([live, moved], False), ([live], True)):
        keeper, storage, _clock, _asked = keeper_on(data, lives)
        try:
            keeper.saved(full=True)
            keeper.run(lambda b=busy: b)  # type: ignore[misc]
            assert keeper.written == 0
            assert not (data / IMAGE_FILE).exists()
            assert keeper.due_in() == pytest.approx(30.0)
        finally:
            storage.close()


def test_the_keeper_writes_no_image_of_a_dataset_the_file_does_not_hold(tmp_path: Path) -> None:
    data, store, _tag = seeded(tmp_path, with_image=False)
    keeper, storage, _clock, _ = keeper_on(data, [Live(store, EPOCH, 5, store.digest)])
    try:
        keeper.saved(full=True)
        keeper.run(lambda: False)
        assert not (data / IMAGE_FILE).exists()
    finally:
        storage.close()


def test_a_purge_removes_the_image(tmp_path: Path) -> None:
    data, _store, _tag = seeded(tmp_path)
    keeper, storage, _clock, _ = keeper_on(data, [Live(Store(), None, 0, bytes(16))])
    try:
        keeper.saved(full=True)
        keeper.run(lambda: False)
        assert not (data / IMAGE_FILE).exists()
    finally:
        storage.close()


def test_a_boot_that_rebuilt_writes_an_image_after_the_quiet(tmp_path: Path) -> None:
    data, store, _tag = seeded(tmp_path, with_image=False)
    keeper, storage, _clock, _ = keeper_on(data, [Live(store, EPOCH, 1, store.digest)])
    try:
        keeper.booted(from_image=True, empty=False)
        assert keeper.due_in() is None
        keeper.booted(from_image=False, empty=True)
        assert keeper.due_in() is None
        keeper.booted(from_image=False, empty=False)
        assert keeper.due_in() == pytest.approx(30.0)
    finally:
        storage.close()


def test_no_image_is_written_while_the_data_is_in_memory(tmp_path: Path) -> None:
    data, store, _tag = seeded(tmp_path, with_image=False)
    memory = Storage.open_memory("image-test", data / DB_FILE)
    try:
        keeper = ImageKeeper(
            memory,
            lambda: Live(store, EPOCH, 1, store.digest),
            Members(),  # type: ignore[arg-type]
        )
        keeper.saved(full=True)
        keeper.run(lambda: False)
        assert keeper.written == 0
        assert not (data / IMAGE_FILE).exists()
    finally:
        memory.close()
