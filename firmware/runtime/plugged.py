"""The edges a controller's own config turns on (`firmware.runtime.edge`).

The simulator's bench is plugged in by its caller; adapters that a club turns
on in `controller.toml` are listed here, each imported only when its section
asks for it, so an installation that does not use one never loads it.
"""

from __future__ import annotations

from firmware.config import Config
from firmware.runtime.edge import EdgeFactory


def configured_edges(config: Config) -> list[EdgeFactory]:
    """The factories of the adapters `config` turns on, in a fixed order."""
    factories: list[EdgeFactory] = []
    if config.metrics is not None:
        from firmware.metrics.edge import MetricsEdge  # prometheus_client only when asked

        factories.append(MetricsEdge)
    if config.homeassistant is not None:
        from firmware.homeassistant.edge import HomeAssistantEdge

        factories.append(HomeAssistantEdge)
    return factories
