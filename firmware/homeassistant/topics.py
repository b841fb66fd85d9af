"""Where the Home Assistant adapter publishes and listens (docs/homeassistant.md).

- discovery: `{prefix}/<component>/<node_id>/<object_id>/config`, the node id
  `alc_<site>_<controller>`;
- availability: `{root}/{site}/{controller}/ha/availability` (`online`, and
  `offline` as the connection's will);
- states: `.../ha/<object_id>/state`; commands: `.../ha/<object_id>/set`.

The `ha` level keeps all of it apart from PROTOCOL.md's topics: the controller's
own link subscribes to exact topics (`data`, `cmd`, `ack`, an edge's), never to
a wildcard, so nothing here reaches it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def object_id(kind: str, id: str) -> str:
    """The object id of `kind` (`door`, `contact`, `light`) `id`: a door's or
    light's id may hold any character, an object id only A-Z a-z 0-9 _ -; a
    changed id gets a short hash of the original, so two ids never meet."""
    safe = _UNSAFE.sub("_", id)
    if safe != id:
        safe += "_" + hashlib.sha256(id.encode()).hexdigest()[:8]
    return f"{kind}-{safe}"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one controller's Home Assistant device."""

    prefix: str  # discovery prefix (`[homeassistant] prefix`)
    root: str
    site: str
    controller: str

    @property
    def node_id(self) -> str:
        """The device's node id in discovery topics, and its identifier."""
        return f"alc_{self.site}_{self.controller}"

    @property
    def base(self) -> str:
        """Where states, commands and availability live."""
        return f"{self.root}/{self.site}/{self.controller}/ha"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def status(self) -> str:
        """Home Assistant's own `online`/`offline` (its birth and will)."""
        return f"{self.prefix}/status"

    @property
    def own_configs(self) -> str:
        """The subscription to every discovery document of this device's node,
        ours and any a removed door or light left retained."""
        return f"{self.prefix}/+/{self.node_id}/+/config"

    def is_own_config(self, topic: str) -> bool:
        """True for a discovery topic of this device's node."""
        parts = topic.split("/")  # prefix, component, node, object, "config"
        return (
            len(parts) == 5
            and parts[0] == self.prefix
            and parts[2] == self.node_id
            and parts[4] == "config"
        )

    @property
    def commands(self) -> str:
        """The subscription to every command topic of this device."""
        return f"{self.base}/+/set"

    def state(self, object: str) -> str:
        return f"{self.base}/{object}/state"

    def command(self, object: str) -> str:
        return f"{self.base}/{object}/set"

    def config(self, component: str, object: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{object}/config"

    def commanded(self, topic: str) -> str | None:
        """The object id a command topic names, or None for any other topic."""
        head, tail = f"{self.base}/", "/set"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        object = topic[len(head) : -len(tail)]
        return object if object and "/" not in object else None
