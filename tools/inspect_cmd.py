"""`alc inspect --config controller.toml`: what the controller has on disk.

Prints the stored `(epoch, v, digest)`, whether the stored records still hash to
that digest (a "no" means the local copy is damaged: the controller asks for a
full sync with reason `digest`), record counts by kind and the last full sync;
then the event outbox: how many events wait for the hub's acknowledgement, the
oldest one's time, the last seq given out, and the credit debits the hub's data
does not reflect yet.
Read-only, and safe to run beside a running controller (SQLite WAL readers do not
block the writer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firmware.config import load_config
from firmware.core.errors import LocalError
from firmware.outbox_store import OutboxStore
from firmware.storage import DB_FILE, Storage


def inspect(db_path: Path) -> dict[str, Any]:
    """The facts `alc inspect` prints, as a plain map."""
    storage = Storage.open(db_path)
    try:
        state = storage.state()
        outbox = OutboxStore(storage)
        stats = outbox.stats()
        debits = outbox.debits()
        return {
            "file": str(db_path),
            "epoch": state.epoch,
            "v": state.v,
            "digest": state.digest.hex(),
            "digest_ok": storage.verify(),
            "records": storage.counts(),
            "last_full": state.last_full,
            "commands_remembered": len(storage.commands(time.time())),
            "outbox": stats.count,
            "outbox_oldest": stats.oldest,
            "outbox_first_seq": stats.first_seq,
            "last_seq": stats.last_seq,
            "debits_pending": len(debits),
            "debits_cents": sum(d.amount for d in debits),
        }
    finally:
        storage.close()


def _when(t: float | None) -> str:
    if t is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc inspect`."""
    parser = argparse.ArgumentParser(prog="alc inspect", description=__doc__)
    parser.add_argument("--config", required=True, help="path of controller.toml")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        facts = inspect(config.controller.data_dir / DB_FILE)
    except LocalError as exc:
        print(f"alc inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(facts))
        return 0
    counts = facts["records"]
    print(f"file        {facts['file']}")
    print(f"epoch       {facts['epoch'] if facts['epoch'] is not None else '(no data)'}")
    print(f"version     {facts['v']}")
    print(f"digest      {facts['digest']}")
    ok = "yes" if facts["digest_ok"] else "NO: the local copy is damaged; a full sync replaces it"
    print(f"records ok  {ok}")
    print(f"last full   {_when(facts['last_full'])}")
    print(f"records     {sum(counts.values())}")
    for kind, n in sorted(counts.items()):
        print(f"  {kind:<10}{n:>10}")
    print(f"outbox      {facts['outbox']} events waiting for the hub's ack")
    if facts["outbox"]:
        print(f"  oldest    {_when(facts['outbox_oldest'])} (seq {facts['outbox_first_seq']})")
    print(f"last seq    {facts['last_seq']}")
    print(
        f"debits      {facts['debits_pending']} not yet in the hub's credit"
        f" ({facts['debits_cents']} cents)"
    )
    return 0 if facts["digest_ok"] else 1
