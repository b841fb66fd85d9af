"""Running one controller in the foreground: config, runtime, signals, loop.
Shared by `alc controller` (a Pi) and `alc sim` (the simulator's bench mode),
which plugs its bench in as an edge (`firmware.runtime.edge`)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from firmware.config import Config
from firmware.core.errors import LocalError

if TYPE_CHECKING:
    from firmware.runtime.edge import EdgeFactory


def no_edges(_config: Config) -> Sequence[EdgeFactory]:
    """A controller on its own: the hub's topics and its hardware, nothing else."""
    return ()


def serve(
    prog: str,
    load: Callable[[], Config],
    *,
    verbose: bool = False,
    edges: Callable[[Config], Sequence[EdgeFactory]] = no_edges,
    started: Callable[[Config], None] = lambda _config: None,
) -> int:
    """Load the config, start the controller and run its loop in this thread
    until SIGTERM or Ctrl-C. A bad config is one line on stderr and exit code 2;
    a runtime thread that died twice, exit code 1. `edges` says, from the loaded
    config, what the caller plugs into the runtime (the simulator's bench);
    `started` is told once the controller is up (the simulator prints how to
    drive it)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = load()
        # Imported late: a config error should not wait for paho and sqlite to load.
        from firmware.runtime import Runtime

        runtime = Runtime(config, edges=edges(config))
    except LocalError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    started(config)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        runtime.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # 1 when a thread died twice: systemd restarts the whole controller.
    return runtime.run()
