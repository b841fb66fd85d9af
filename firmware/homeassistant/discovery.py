"""The discovery documents: one Home Assistant device per controller, and its
entities (docs/homeassistant.md has the table). Plain JSON-able dicts, built
once from the wiring; nothing here reads the core or touches the network.

Home Assistant's `lock` and `light` platforms require a command topic, so the
entities always name one; only with `[homeassistant] commands = true` does the
controller listen there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware.core.reports import FW_VERSION
from firmware.core.wiring import Wiring
from firmware.homeassistant.topics import Topics, object_id

ONLINE, OFFLINE = "online", "offline"
LOCKED, UNLOCKED = "LOCKED", "UNLOCKED"
ON, OFF = "ON", "OFF"
UNLOCK = "UNLOCK"  # the one lock command taken; a door relocks by itself

# The sensors read from the core (`Board`), by object id.
OUTBOX, VERSION, LAST_FULL, DECISIONS, ACCESS = (
    "outbox",
    "data_version",
    "last_full_sync",
    "decisions_today",
    "access",
)
ACCESS_TYPES = ("granted", "denied")


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity: its discovery topic and document, and what it follows."""

    component: str  # lock, binary_sensor, light, sensor, event
    object: str
    config_topic: str
    config: dict[str, Any]
    # What the entity shows: ("door", id), ("contact", id), ("light", id), or
    # ("sensor", object id) for the core's figures and the access event.
    follows: tuple[str, str]


def device(topics: Topics, controller: str, site: str) -> dict[str, Any]:
    """The device block every entity carries."""
    return {
        "identifiers": [topics.node_id],
        "name": f"alc {site} {controller}",
        "manufacturer": "alc",
        "model": "access and light controller",
        "sw_version": FW_VERSION,
    }


def entities(topics: Topics, wiring: Wiring) -> list[Entity]:
    """Every entity of the controller wired as `wiring`, in a fixed order."""
    dev = device(topics, topics.controller, topics.site)
    common = {
        "device": dev,
        "origin": {"name": "alc", "sw_version": FW_VERSION},
        "availability": [
            {
                "topic": topics.availability,
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
            }
        ],
    }
    out: list[Entity] = []

    def add(component: str, object: str, follows: tuple[str, str], **fields: Any) -> None:
        doc = {
            **fields,
            **common,
            "unique_id": f"{topics.node_id}_{object}",
            "state_topic": topics.state(object),
        }
        out.append(Entity(component, object, topics.config(component, object), doc, follows))

    for door in wiring.doors:
        lock = object_id("door", door.id)
        add(
            "lock",
            lock,
            ("door", door.id),
            name=f"{door.id}",
            command_topic=topics.command(lock),
            payload_unlock=UNLOCK,
            payload_lock="LOCK",
            state_locked=LOCKED,
            state_unlocked=UNLOCKED,
        )
        if door.contact is not None:  # a door without a contact reports no state
            contact = object_id("contact", door.id)
            add(
                "binary_sensor",
                contact,
                ("contact", door.id),
                name=f"{door.id} door",
                device_class="door",
                payload_on=ON,
                payload_off=OFF,
            )
    for light in wiring.lights:
        circuit = object_id("light", light.id)
        add(
            "light",
            circuit,
            ("light", light.id),
            name=f"{light.id}",
            command_topic=topics.command(circuit),
            payload_on=ON,
            payload_off=OFF,
        )
    diagnostic = {"entity_category": "diagnostic"}
    add(
        "sensor",
        OUTBOX,
        ("sensor", OUTBOX),
        name="Outbox",
        unit_of_measurement="events",
        state_class="measurement",
        icon="mdi:tray-full",
        **diagnostic,
    )
    add(
        "sensor",
        VERSION,
        ("sensor", VERSION),
        name="Data version",
        icon="mdi:database",
        **diagnostic,
    )
    add(
        "sensor",
        LAST_FULL,
        ("sensor", LAST_FULL),
        name="Last full sync",
        device_class="timestamp",
        **diagnostic,
    )
    add(
        "sensor",
        DECISIONS,
        ("sensor", DECISIONS),
        name="Decisions today",
        unit_of_measurement="decisions",
        state_class="total_increasing",
        icon="mdi:card-account-details",
    )
    add("event", ACCESS, ("sensor", ACCESS), name="Access", event_types=list(ACCESS_TYPES))
    return out
