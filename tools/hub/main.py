"""`alc hub`: run the reference central server of one site.

    alc hub --data site.toml --site demo --keys keys/ [--db site.hub.sqlite3]
            [--page-size 1000] [--new-epoch] [--print-events]
            [--host H --port P --root alc --username U --password-file F --tls --ca-file F]

Serves every controller that has a `<controller>.key` in `--keys`, watches the
data file and publishes one delta per saved edit, answers sync requests (with
`current` when nothing differs), sends the `sync` command to controllers whose
state keeps disagreeing, stores and acknowledges events.
Runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from firmware.core.errors import LocalError
from tools.hub.db import Event, HubDB
from tools.hub.keys import check_segment
from tools.hub.loop import HubLoop
from tools.hub.options import add_broker_options, broker_settings
from tools.hub.server import Hub

log = logging.getLogger("alc.hub")


def parser() -> argparse.ArgumentParser:
    """The `alc hub` argument parser."""
    p = argparse.ArgumentParser(prog="alc hub", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the data file (TOML)")
    p.add_argument("--site", required=True, help="site id (topic segment)")
    p.add_argument("--keys", type=Path, required=True, help="directory of <controller>.key files")
    p.add_argument("--db", type=Path, help="hub database (default: <data>.hub.sqlite3 beside it)")
    p.add_argument(
        "--page-size", type=int, default=1000, help="records per snapshot page (default 1000)"
    )
    p.add_argument(
        "--new-epoch", action="store_true", help="reset history: every controller resyncs"
    )
    p.add_argument("--print-events", action="store_true", help="print events as they arrive")
    p.add_argument("--client-id", help="MQTT client id (default alc-hub-<site>)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    add_broker_options(p)
    return p


def format_event(controller: str, event: Event) -> str:
    """One line per event, for `--print-events`."""
    when = (
        datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if event.time is not None
        else "?"
    )
    body = json.dumps(event.body, default=_plain, ensure_ascii=False, sort_keys=True)
    return f"{when} {controller} #{event.seq} {event.type} {body}"


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else repr(value)


def main(argv: Sequence[str]) -> int:
    """`alc hub`."""
    args = parser().parse_args(list(argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        check_segment(args.site, "site")
        check_segment(args.root, "root")
        if args.page_size < 1:
            raise LocalError("--page-size must be at least 1")
        settings = broker_settings(args)
        db_path = args.db or args.data.with_name(args.data.stem + ".hub.sqlite3")
        db = HubDB(db_path)
    except (LocalError, OSError) as exc:
        print(f"alc hub: {exc}", file=sys.stderr)
        return 2
    try:
        if args.new_epoch:
            log.info("new epoch %s: every controller will take a full snapshot", db.new_epoch())

        def print_events(controller: str, events: list[Event]) -> None:
            for event in events:
                print(format_event(controller, event), flush=True)

        hub = Hub(
            db,
            site=args.site,
            root=args.root,
            keys={},
            page_size=args.page_size,
            on_events=print_events if args.print_events else None,
        )
        loop = HubLoop(
            hub,
            data_file=args.data,
            keys_dir=args.keys,
            settings=settings,
            client_id=args.client_id,
        )

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            loop.stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        log.info(
            "hub of site %s: epoch %s v%d, database %s, broker %s:%d",
            args.site,
            db.epoch,
            db.v,
            db_path,
            settings.host,
            settings.port,
        )
        loop.run()
    finally:
        db.close()
    return 0
