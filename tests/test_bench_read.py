"""`read_records` reads `alc gen` files a chunk at a time: items cut at a chunk's
end are read whole, a cut at the file's end is still an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import gen
from tools.gen import generate, read_records, write_records


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096])
def test_items_across_chunks_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    path = tmp_path / "club.cbor"
    write_records(generate(30), path)
    monkeypatch.setattr(gen, "CHUNK", chunk)
    assert list(read_records(path)) == list(generate(30))


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_cut_file_is_an_error_at_any_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    path = tmp_path / "club.cbor"
    write_records(generate(5), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])
    monkeypatch.setattr(gen, "CHUNK", chunk)
    with pytest.raises(ValueError, match="record"):
        list(read_records(path))
