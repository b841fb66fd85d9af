"""The durable dataset (firmware/storage.py): round trips, atomic saves, the digest
check, executed command ids, boot, and clear errors for a bad file."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.core.decide import Target, decide
from firmware.core.errors import LocalError
from firmware.core.store import Delete, Op, Put, Store
from firmware.storage import DB_FILE, EMPTY_DIGEST, SCHEMA_VERSION, Storage, load_store
from tests.builders import rec


def expected_digest(records: dict[tuple[str, str], bytes]) -> bytes:
    """PROTOCOL.md s3's digest, written independently of the firmware."""
    total = 0
    for (kind, id), body in records.items():
        h = hashlib.sha256(kind.encode() + b"\x00" + id.encode() + b"\x00" + body).digest()
        total += int.from_bytes(h[:16], "big")
    return (total % (1 << 128)).to_bytes(16, "big")


CLUB = [
    ("site", "site", rec(tz="Europe/Berlin")),
    ("door", "front", rec(name="Front door")),
    ("group", "adults", rec(doors=["front"])),
    ("member", "m1", rec(name="Ann", groups=["adults"], creds=[["tag", "0001"]])),
    ("member", "m2", rec(name="Bob", groups=["adults"], creds=[["pin", "4321"]])),
    ("note", "n1", b"\xa0"),  # unknown kind: stored and hashed, never used
]
NOW = 1_700_000_000.0


def stored(storage: Storage) -> dict[tuple[str, str], bytes]:
    return {(kind, id): body for kind, id, body in storage.records()}


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A connection behind Storage's back, to damage or inspect the file."""
    return closing(sqlite3.connect(path, isolation_level=None))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / DB_FILE


@pytest.fixture
def storage(path: Path) -> Iterator[Storage]:
    s = Storage.open(path)
    try:
        yield s
    finally:
        s.close()


def save_club(storage: Storage, epoch: str = "e1", v: int = 10) -> Store:
    store = Store.build(CLUB).store
    storage.save_snapshot(epoch, v, CLUB, store.digest, NOW)
    return store


# --- a fresh file -----------------------------------------------------------------------


def test_a_new_file_is_empty_with_the_current_schema_in_wal_and_full_sync(path: Path) -> None:
    with Storage.open(path) as s:
        assert s.state() == (None, 0, EMPTY_DIGEST, None)
        assert list(s.records()) == []
        assert s.counts() == {}
        assert s.verify()
        assert s.commands(NOW) == {}
        conn = s._conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_state_is_a_plain_tuple_too(storage: Storage) -> None:
    epoch, v, digest, last_full = storage.state()
    assert (epoch, v, digest, last_full) == (None, 0, bytes(16), None)
    assert storage.state().digest == bytes(16)


# --- round trips ------------------------------------------------------------------------


def test_snapshot_round_trip_across_reopen(path: Path) -> None:
    with Storage.open(path) as s:
        store = save_club(s)
    with Storage.open(path) as s:
        assert s.state() == ("e1", 10, store.digest, NOW)
        assert stored(s) == {(k, i): r for k, i, r in CLUB}
        assert s.counts() == {"site": 1, "door": 1, "group": 1, "member": 2, "note": 1}
        assert s.state().digest == expected_digest(stored(s))
        assert s.verify()


def test_delta_then_reopen(path: Path) -> None:
    with Storage.open(path) as s:
        store = save_club(s)
        ops: list[Op] = [
            Put("member", "m3", rec(name="Cy", groups=["adults"], creds=[["tag", "0003"]])),
            Put("member", "m1", rec(name="Ann B", groups=["adults"], creds=[["tag", "0001"]])),
            Delete("member", "m2"),
            Put("door", "back", rec()),
            Delete("door", "back"),  # put then delete in one delta: a delete
            Delete("member", "nobody"),  # deleting an absent record changes nothing
        ]
        store.apply(ops)
        s.save_delta("e1", 11, ops, store.digest)
    with Storage.open(path) as s:
        assert s.state() == ("e1", 11, store.digest, NOW)
        assert set(stored(s)) == {
            ("site", "site"),
            ("door", "front"),
            ("group", "adults"),
            ("member", "m1"),
            ("member", "m3"),
            ("note", "n1"),
        }
        assert stored(s)[("member", "m1")] == ops[1].rec  # type: ignore[union-attr]
        assert s.verify()


def test_a_delete_then_put_in_one_delta_is_a_put(storage: Storage) -> None:
    store = save_club(storage)
    ops: list[Op] = [Delete("member", "m1"), Put("member", "m1", rec(name="again"))]
    store.apply(ops)
    storage.save_delta("e1", 11, ops, store.digest)
    assert stored(storage)[("member", "m1")] == rec(name="again")
    assert storage.verify()


def test_snapshot_replaces_everything(storage: Storage) -> None:
    save_club(storage)
    fresh = [("member", "z9", rec(name="Zed")), ("door", "side", rec())]
    digest = Store.build(fresh).store.digest
    storage.save_snapshot("e2", 3, fresh, digest, NOW + 60)
    assert storage.state() == ("e2", 3, digest, NOW + 60)
    assert stored(storage) == {(k, i): r for k, i, r in fresh}
    assert storage.verify()


def test_a_purge_empties_the_dataset_but_keeps_executed_commands(storage: Storage) -> None:
    save_club(storage)
    storage.remember_command("cmd-purge", int(NOW) + 300)
    storage.save_snapshot(None, 0, [], EMPTY_DIGEST, NOW)
    assert storage.state() == (None, 0, EMPTY_DIGEST, NOW)
    assert list(storage.records()) == []
    assert storage.command_seen("cmd-purge")


def test_snapshot_takes_any_iterable_and_keeps_the_last_of_duplicates(storage: Storage) -> None:
    doubled = [*CLUB, ("member", "m1", rec(name="Ann, later"))]
    digest = Store.build(doubled).store.digest
    storage.save_snapshot("e1", 1, doubled, digest, None)
    assert stored(storage)[("member", "m1")] == rec(name="Ann, later")
    assert storage.verify()
    storage.save_snapshot("e1", 2, iter(CLUB), Store.build(CLUB).store.digest, None)
    assert stored(storage) == {(k, i): r for k, i, r in CLUB}
    assert storage.verify()


def test_records_stream_in_batches_and_can_be_abandoned(storage: Storage) -> None:
    many = [("member", f"m{i:05d}", rec(name=str(i))) for i in range(2500)]
    store = Store.build(many).store
    storage.save_snapshot("e1", 1, many, store.digest, None)
    rows = storage.records()
    assert not isinstance(rows, list)
    assert sorted(rows) == sorted(many)
    abandoned = storage.records()
    next(abandoned)
    abandoned.close()  # type: ignore[attr-defined]
    ops: list[Op] = [Delete("member", "m00000")]
    store.apply(ops)
    storage.save_delta("e1", 2, ops, store.digest)  # no read transaction left behind
    assert storage.counts() == {"member": 2499}


def test_reading_sees_one_version_while_another_connection_writes(path: Path) -> None:
    with Storage.open(path) as s, Storage.open(path) as other:
        store = save_club(s)
        with s.reading() as (state, rows):
            ops: list[Op] = [Delete("member", "m1")]
            store.apply(ops)
            other.save_delta("e1", 11, ops, store.digest)
            assert state.v == 10
            assert ("member", "m1", CLUB[3][2]) in list(rows)
        assert s.state().v == 11


# --- the digest check -------------------------------------------------------------------


def test_verify_detects_a_record_changed_behind_its_back(path: Path) -> None:
    with Storage.open(path) as s:
        save_club(s)
        assert s.verify()
        with raw(path) as conn:
            conn.execute(
                "UPDATE records SET rec = ? WHERE kind = 'member' AND id = 'm1'",
                (rec(name="Ann", groups=["adults"], creds=[["tag", "9999"]]),),
            )
        assert not s.verify()
        loaded = load_store(s)
        assert not loaded.intact
        assert loaded.store.credentials["tag"]["9999"].id == "m1"  # still decides


@pytest.mark.parametrize(
    "damage",
    [
        "DELETE FROM records WHERE id = 'm2'",
        "INSERT INTO records VALUES ('member', 'intruder', x'a0')",
        "UPDATE records SET rec = 'text, not a blob' WHERE id = 'm1'",
        "UPDATE meta SET digest = zeroblob(16)",
    ],
)
def test_verify_detects_other_damage(path: Path, damage: str) -> None:
    with Storage.open(path) as s:
        save_club(s)
        with raw(path) as conn:
            conn.execute(damage)
        assert not s.verify()


def test_save_delta_refuses_a_delta_onto_the_wrong_base(storage: Storage) -> None:
    store = save_club(storage)
    before = (storage.state(), stored(storage))
    ops: list[Op] = [Delete("member", "m1")]
    store.apply(ops)
    with pytest.raises(LocalError, match="does not follow"):
        storage.save_delta("e2", 11, ops, store.digest)  # another epoch
    with pytest.raises(LocalError, match="does not follow"):
        storage.save_delta("e1", 10, ops, store.digest)  # not newer
    with pytest.raises(LocalError, match="disagree"):
        storage.save_delta("e1", 11, [Delete("member", "m2")], store.digest)  # wrong digest
    with pytest.raises(LocalError, match="16 bytes"):
        storage.save_delta("e1", 11, ops, b"short")
    assert (storage.state(), stored(storage)) == before
    storage.save_delta("e1", 11, ops, store.digest)
    assert storage.verify()


# --- atomicity --------------------------------------------------------------------------


def test_an_exception_mid_snapshot_leaves_the_previous_dataset(path: Path) -> None:
    def failing() -> Iterator[tuple[str, str, bytes]]:
        yield from CLUB[:3]
        raise RuntimeError("the feed broke")

    with Storage.open(path) as s:
        store = save_club(s)
        with pytest.raises(RuntimeError, match="the feed broke"):
            s.save_snapshot("e2", 1, failing(), EMPTY_DIGEST, None)
        assert s.state() == ("e1", 10, store.digest, NOW)
        assert stored(s) == {(k, i): r for k, i, r in CLUB}
        # No transaction was left open: another connection can write at once.
        with Storage.open(path) as other:
            other.remember_command("c1", 1)
    with Storage.open(path) as s:
        assert s.state() == ("e1", 10, store.digest, NOW)
        assert s.verify()


def test_a_failure_at_the_last_step_of_a_delta_leaves_the_previous_state(path: Path) -> None:
    with Storage.open(path) as s:
        store = save_club(s)
        with raw(path) as conn:
            conn.execute(
                "CREATE TRIGGER boom BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        ops: list[Op] = [Put("member", "m9", rec(name="New")), Delete("member", "m1")]
        store.apply(ops)
        with pytest.raises(LocalError, match="save delta failed: boom"):
            s.save_delta("e1", 11, ops, store.digest)
        assert s.state().v == 10
        assert stored(s) == {(k, i): r for k, i, r in CLUB}
        with pytest.raises(LocalError, match="save snapshot failed: boom"):
            s.save_snapshot("e1", 12, [], EMPTY_DIGEST, None)
        assert stored(s) == {(k, i): r for k, i, r in CLUB}
        with raw(path) as conn:
            conn.execute("DROP TRIGGER boom")
        s.save_delta("e1", 11, ops, store.digest)
        assert s.verify()


# --- executed commands ------------------------------------------------------------------


def test_commands_are_remembered_across_reopen_and_forgotten_after_exp(path: Path) -> None:
    with Storage.open(path) as s:
        s.remember_command("a", 1000)
        s.remember_command("b", 2000)
        s.remember_command("a", 500)  # a redelivery never shortens the memory
    with Storage.open(path) as s:
        assert s.command_seen("a") and s.command_seen("b")
        assert not s.command_seen("c")
        assert s.commands(1000) == {"a": 1000, "b": 2000}
        assert s.commands(1001) == {"b": 2000}
        assert s.forget_expired(1000) == 0  # still valid at exp itself
        assert s.forget_expired(1001) == 1
        assert not s.command_seen("a")
    with Storage.open(path) as s:
        assert not s.command_seen("a")
        assert s.command_seen("b")


# --- boot -------------------------------------------------------------------------------


def test_boot_builds_a_store_that_decides_with_no_network(path: Path) -> None:
    with Storage.open(path) as s:
        store = save_club(s)
        ops: list[Op] = [
            Put("member", "m3", rec(name="Cy", groups=["adults"], creds=[["card", "77"]])),
            Delete("member", "m2"),
        ]
        store.apply(ops)
        s.save_delta("e1", 11, ops, store.digest)
    with Storage.open(path) as s:  # power-on
        loaded = load_store(s)
    assert loaded.intact
    assert loaded.state == ("e1", 11, store.digest, NOW)
    assert not loaded.built.rejected and not loaded.built.conflicts
    booted = loaded.store
    assert booted.digest == store.digest
    front = Target.door("front")
    assert decide(booted, front, "tag", "0001", NOW).granted
    assert decide(booted, front, "card", "77", NOW).granted
    assert not decide(booted, front, "pin", "4321", NOW).granted  # m2 was deleted
    assert booted.site.tz == "Europe/Berlin"


def test_boot_of_an_empty_file_gives_an_empty_store(storage: Storage) -> None:
    loaded = load_store(storage)
    assert loaded.intact
    assert len(loaded.store) == 0
    assert loaded.state.epoch is None


def test_boot_keeps_a_bad_record_as_rejected(storage: Storage) -> None:
    bad = [*CLUB, ("member", "broken", b"\xff")]
    digest = Store.build(bad).store.digest
    storage.save_snapshot("e1", 1, bad, digest, None)
    loaded = load_store(storage)
    assert loaded.intact
    assert [r.id for r in loaded.built.rejected] == ["broken"]


# --- a bad file -------------------------------------------------------------------------


def test_a_missing_directory_is_a_clear_local_error(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="does not exist"):
        Storage.open(tmp_path / "nowhere" / DB_FILE)


def test_a_file_that_is_not_a_database_is_a_local_error(path: Path) -> None:
    path.write_bytes(b"this is not SQLite, just some text " * 200)
    with pytest.raises(LocalError, match=rf"storage {path}: open failed: .*not a database"):
        Storage.open(path)


def test_a_database_of_something_else_is_refused(path: Path) -> None:
    with raw(path) as conn:
        conn.execute("CREATE TABLE records (x)")
    with pytest.raises(LocalError, match="not an alc database"):
        Storage.open(path)


def test_a_newer_schema_is_refused_clearly(path: Path) -> None:
    Storage.open(path).close()
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LocalError, match="written by a newer alc"):
        Storage.open(path)


def test_a_damaged_file_raises_local_error_never_sqlite_errors(path: Path) -> None:
    many = [("member", f"m{i:05d}", rec(name="x" * 50, n=i)) for i in range(3000)]
    with Storage.open(path) as s:
        s.save_snapshot("e1", 1, many, Store.build(many).store.digest, None)
    # Closing the last connection checkpoints the WAL into the file; now wreck
    # every page but the first (the header and the schema).
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[4096:] = b"\x5a" * (len(data) - 4096)
    path.write_bytes(bytes(data))
    with Storage.open(path) as s:
        for call in (s.state, s.counts, s.verify, lambda: list(s.records())):
            with pytest.raises(LocalError, match="malformed"):
                call()
        with pytest.raises(LocalError, match="malformed"):
            load_store(s)
        with pytest.raises(LocalError, match="malformed"):
            s.remember_command("x", 1)


def test_use_after_close_is_a_local_error(path: Path) -> None:
    s = Storage.open(path)
    s.close()
    s.close()
    with pytest.raises(LocalError, match="used after close"):
        s.state()
    with pytest.raises(LocalError, match="used after close"):
        s.save_snapshot(None, 0, [], EMPTY_DIGEST, None)


def test_writes_from_another_thread_work(storage: Storage) -> None:
    # The runtime opens the file in its main thread and writes from a storage thread.
    store = save_club(storage)
    ops: list[Op] = [Delete("member", "m1")]
    store.apply(ops)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            storage.save_delta("e1", 11, ops, store.digest)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert not failures
    assert storage.state().v == 11


# --- properties -------------------------------------------------------------------------

KEYS = st.tuples(st.sampled_from(["member", "group", "door", "note"]), st.sampled_from("abcdef"))
OPS = st.lists(
    st.one_of(
        st.builds(lambda k, n: Put(k[0], k[1], rec(n=n)), KEYS, st.integers(0, 3)),
        st.builds(lambda k: Delete(k[0], k[1]), KEYS),
    ),
    max_size=6,
)


@settings(max_examples=40)
@given(st.lists(OPS, max_size=6), st.integers(1, 6))
def test_any_delta_sequence_reopens_as_the_live_store(deltas: list[list[Op]], at: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DB_FILE
        store = Store()
        model: dict[tuple[str, str], bytes] = {}
        with Storage.open(path) as s:
            s.save_snapshot("e", 0, [], EMPTY_DIGEST, None)
            for v, ops in enumerate(deltas, start=1):
                store.apply(ops)
                for op in ops:
                    if isinstance(op, Put):
                        model[(op.kind, op.id)] = op.rec
                    else:
                        model.pop((op.kind, op.id), None)
                if v == at:  # now and then the same version arrives as a full sync
                    snapshot = [(k, i, r) for (k, i), r in model.items()]
                    s.save_snapshot("e", v, snapshot, store.digest, None)
                else:
                    s.save_delta("e", v, ops, store.digest)
        with Storage.open(path) as s:
            assert s.verify()
            assert stored(s) == model
            assert s.state().digest == store.digest == expected_digest(model)
            assert load_store(s).store.digest == store.digest


def test_a_scan_abandoned_past_close_goes_quietly(path: Path) -> None:
    s = Storage.open(path)
    save_club(s)
    rows = s.records()
    next(rows)
    s.close()
    del rows  # its cleanup must not raise (an unraisable error fails the run)
