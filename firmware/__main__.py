"""`alc controller --config controller.toml`: run one controller until stopped."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from firmware.config import load_config
from firmware.core.errors import LocalError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the controller in the foreground; SIGTERM or Ctrl-C stops it cleanly."""
    parser = argparse.ArgumentParser(prog="alc controller", description=__doc__)
    parser.add_argument("--config", required=True, help="path of controller.toml")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = load_config(args.config)
        # Imported late: a config error should not wait for paho and sqlite to load.
        from firmware.runtime import Runtime

        runtime = Runtime(config)
    except LocalError as exc:
        print(f"alc controller: {exc}", file=sys.stderr)
        return 2

    def stop(_signum: int, _frame: FrameType | None) -> None:
        runtime.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runtime.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
