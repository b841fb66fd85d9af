"""A child process that writes decision images until it is killed
(tests/test_image_crash.py).

Run as `python -m tests.image_crash_child DATA_DIR`. It builds two stores of a
generated club, `STORES[0]` and `STORES[1]` (the second with one member more),
then writes their images in turn, slowly (a pause between pieces), forever.
It prints `ready` once the first image is in place.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cbor2

from firmware.core.store import Store
from firmware.image import Tag, write_image
from tools.gen import generate

EPOCH = "crash"
MEMBERS = 2000
MAX_RUN_S = 60.0  # a child the parent forgot about still ends on its own


def stores() -> list[tuple[Tag, Store]]:
    """The two datasets the child writes, and the tag of each."""
    records = list(generate(MEMBERS, 5))
    extra = ("member", "extra", cbor2.dumps({"creds": [["tag", "abcdefabcd"]]}))
    out = []
    for v, recs in ((1, records), (2, [*records, extra])):
        store = Store.build(recs).store
        out.append((Tag(EPOCH, v, store.digest), store))
    return out


def main(data_dir: Path) -> None:
    pair = stores()
    started = time.monotonic()
    for n in range(1_000_000):
        tag, store = pair[n % 2]
        write_image(data_dir, tag, store, pause=lambda: time.sleep(0.0005))
        if n == 0:
            print("ready", flush=True)
        if time.monotonic() - started > MAX_RUN_S:
            return


if __name__ == "__main__":
    main(Path(sys.argv[1]))
