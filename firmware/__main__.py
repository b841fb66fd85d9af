"""`alc controller --config controller.toml`: run one controller until stopped."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from firmware.config import load_config
from firmware.serve import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Run the controller in the foreground; SIGTERM or Ctrl-C stops it cleanly."""
    parser = argparse.ArgumentParser(prog="alc controller", description=__doc__)
    parser.add_argument("--config", required=True, help="path of controller.toml")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    return serve("alc controller", lambda: load_config(args.config), verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
