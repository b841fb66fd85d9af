"""`alc controller --config controller.toml`: run one controller until stopped.

`alc` runs it through `tools.controller`, which adds the simulator's bench when
the config's backend is "sim"; here, the controller alone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from firmware.config import Config, load_config
from firmware.serve import no_edges, serve

if TYPE_CHECKING:
    from firmware.runtime.edge import EdgeFactory


def main(
    argv: Sequence[str] | None = None,
    *,
    edges: Callable[[Config], Sequence[EdgeFactory]] = no_edges,
) -> int:
    """Run the controller in the foreground; SIGTERM or Ctrl-C stops it cleanly.
    `edges`: what to plug into its runtime, from its config (`serve`)."""
    parser = argparse.ArgumentParser(
        prog="alc controller", description="Run one controller until stopped."
    )
    parser.add_argument("--config", required=True, help="path of controller.toml")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    return serve(
        "alc controller", lambda: load_config(args.config), verbose=args.verbose, edges=edges
    )


if __name__ == "__main__":
    sys.exit(main())
