"""`alc controller --config controller.toml`: run one controller until stopped.

The controller of `firmware.__main__`; on a config whose `[hal] backend` is
"sim" it also takes the simulator's bench topics (`sim.bench.BenchEdge`), as
`alc sim` does. The firmware never imports the simulator, so the bench is
plugged in here, from the tools.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from firmware import __main__ as firmware_main
from firmware.config import Config

if TYPE_CHECKING:
    from firmware.runtime.edge import EdgeFactory


def bench_on_the_simulator(config: Config) -> Sequence[EdgeFactory]:
    """The bench edge for a simulator's config; nothing for real hardware."""
    if config.backend != "sim":
        return ()
    from sim.bench import BenchEdge  # gpiozero's mock pins: only on the simulator

    return (BenchEdge,)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc controller`."""
    return firmware_main.main(argv, edges=bench_on_the_simulator)


if __name__ == "__main__":
    sys.exit(main())
