"""`alc gen` and `alc bench`: reproducible data, sound records, the bench's output shape.

No test here looks at a time: the benchmark's figures depend on the machine.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import cbor2
import pytest

from firmware.core.store import Store
from tools import cli
from tools.gen import BOOKINGS, generate, read_records

MEMBERS = 300


def _gen(tmp_path: Path, name: str, *args: str) -> bytes:
    out = tmp_path / name
    assert cli.main(["gen", "--members", str(MEMBERS), *args, "--out", str(out)]) == 0
    return out.read_bytes()


def test_same_seed_same_bytes_other_seed_other_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _gen(tmp_path, "a.cbor", "--seed", "7")
    again = _gen(tmp_path, "b.cbor", "--seed", "7")
    other = _gen(tmp_path, "c.cbor", "--seed", "8")
    assert first == again
    assert first != other
    assert "records" in capsys.readouterr().out


def test_file_holds_the_generated_records(tmp_path: Path) -> None:
    _gen(tmp_path, "club.cbor")
    assert list(read_records(tmp_path / "club.cbor")) == list(generate(MEMBERS))


def test_file_is_a_cbor_sequence_of_triples(tmp_path: Path) -> None:
    decoder = cbor2.CBORDecoder(io.BytesIO(_gen(tmp_path, "club.cbor")))
    kind, id, rec = decoder.decode()
    assert (kind, id) == ("site", "site")
    assert cbor2.loads(rec)["tz"] == "Europe/London"
    assert decoder.decode()[0] == "schedule"


def test_counts_by_kind() -> None:
    counts = Counter(kind for kind, _id, _rec in generate(MEMBERS))
    assert counts == {
        "site": 1,
        "schedule": 20,
        "door": 10,
        "light": 12,
        "group": 20,
        "member": MEMBERS,
        "booking": BOOKINGS,
    }


def test_records_parse_with_no_rejections_or_conflicts() -> None:
    built = Store.build(generate(MEMBERS, seed=3))
    assert built.rejected == []
    assert built.conflicts == []
    store = built.store
    assert len(store.members) == MEMBERS
    assert len(store.credentials["tag"]) == MEMBERS
    assert len(store.credentials["pin"]) == MEMBERS
    assert len(store.bookings_by_pin) == BOOKINGS
    assert store.site.tz == "Europe/London"


def test_credentials_are_unique_and_well_formed() -> None:
    tags: list[str] = []
    member_pins: list[str] = []
    booking_pins: list[str] = []
    statuses: Counter[str] = Counter()
    for kind, _id, rec in generate(2000, seed=5):
        body = cbor2.loads(rec)
        if kind == "member":
            creds = dict(body["creds"])
            assert set(creds) == {"tag", "pin"}
            tags.append(creds["tag"])
            member_pins.append(creds["pin"])
            statuses.update(k for k in ("active", "until", "from") if k in body)
        elif kind == "booking":
            booking_pins.append(body["pin"])
            assert body["lights"] and body["doors"] and body["start"] < body["end"]
    assert all(len(t) == 10 and t == t.lower() and int(t, 16) >= 0 for t in tags)
    assert all(p.isdecimal() for p in member_pins + booking_pins)
    assert len(set(tags)) == len(tags)
    assert len(set(member_pins + booking_pins)) == len(member_pins) + len(booking_pins)
    assert statuses["active"] > 0 and statuses["until"] > 0 and statuses["from"] > 0


def test_truncated_file_is_an_error(tmp_path: Path) -> None:
    raw = _gen(tmp_path, "club.cbor")
    (tmp_path / "cut.cbor").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="record"):
        list(read_records(tmp_path / "cut.cbor"))


def test_bench_decide_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "decide", "--members", "2000", "--presentations", "2000", "--json"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    for key in ("p50_us", "p99_us", "build_s", "delta_ms", "rss_mb"):
        assert isinstance(figures[key], int | float), key
        assert figures[key] >= 0, key


def test_bench_decide_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "decide", "--members", "500", "--presentations", "500"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for label in ("decision latency p99", "build live store", "delta", "peak RSS"):
        assert label in out


def test_bench_unknown_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "nonsense"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
