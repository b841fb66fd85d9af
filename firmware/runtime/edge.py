"""Adapters at the edge: what the caller plugs into a runtime, never the other way.

The runtime knows nothing of the simulator (an import contract in
pyproject.toml holds it to that). A caller that wants more on the wire than the
hub's topics (the simulator's `bench/in` and `bench/out`, PROTOCOL.md s8) passes
an `EdgeFactory` to `Runtime(..., edges=[...])`. The app calls it once with an
`EdgeContext`; the edge it returns claims topic suffixes under the controller's
base topic, hears every output the loop switches, and is stopped with the rest.

An edge reaches the core only through `submit`, with the same typed inputs a
reader or a door contact would give: so whatever an edge gets wrong, the core
refuses it as it refuses any bad input, and the loop never sees an exception.

An edge that only watches (Home Assistant, metrics) claims no topics: it hears
the loop's notes (`firmware.runtime.notes`) in `observed`, and reads the core
with `ask` from a thread of its own. Whatever an edge does with a note happens
off the loop: `observed` and `output_switched` only queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from firmware.config import Config
from firmware.core import wire
from firmware.core.controller import Controller
from firmware.core.inputs import Input
from firmware.core.keyring import Keyring
from firmware.runtime.notes import Note
from hal.backend import Backend

R = TypeVar("R")


def _not_asked(fn: Callable[[Controller], Any], timeout: float = 5.0) -> Any:
    raise RuntimeError("this edge context has no loop to ask")


def _never_up() -> bool:
    return False


class Ask(Protocol):
    """`Runtime.ask`: run `fn(controller)` on the loop between two steps and
    return its result; `TimeoutError` when the loop does not answer in time."""

    def __call__(self, fn: Callable[[Controller], R], timeout: float = ...) -> R: ...


@dataclass(frozen=True)
class EdgeContext:
    """What an edge may use. Every callable is safe from any thread."""

    config: Config
    # The HAL backend, or None when the simulator runs without wiring.
    hardware: Backend | None
    # Hand an input to the loop, as the HAL does (a `Presented` goes ahead of
    # hub messages). Counted and dropped if the loop is that far behind.
    submit: Callable[[Input], object]
    # Seal `message` for `<base>/<suffix>` with the controller's key and publish it.
    publish: Callable[[str, Mapping[str, Any]], None]
    clock: Callable[[], float] = field(default=time.time)
    # The controller's keys, read once by the runtime (not from the files per message).
    key: bytes | Keyring = b""
    # Read the core (never from the loop's own thread: `observed` only queues).
    ask: Ask = _not_asked
    # True while the controller's link to the broker is up.
    link_up: Callable[[], bool] = _never_up

    def unseal(self, suffix: str, payload: bytes) -> wire.Message:
        """Verify and decode a payload received on `<base>/<suffix>` with the
        controller's key. Raises `RemoteError` (its `AuthError` included) for
        anything that does not open or is malformed."""
        if isinstance(self.key, Keyring):
            ring = self.key
        else:
            ring = Keyring.single(self.config.controller.id, self.key or self.config.key())
        return wire.unseal(ring.accepted, f"{self.config.base_topic}/{suffix}", payload)


class Edge(Protocol):
    """An adapter the runtime drives. None of its methods may raise."""

    # Topic suffixes under the base topic that this edge takes. The link
    # subscribes to them and hands their (non-retained) payloads to `received`.
    topics: tuple[str, ...]

    def received(self, suffix: str, payload: bytes) -> None:
        """A payload arrived on one of `topics` (paho's network thread)."""

    def output_switched(self, name: str, on: bool) -> None:
        """The loop switched an output (the loop's thread), wired or not."""

    def observed(self, note: Note) -> None:
        """Something happened on the loop (the loop's thread; see `notes`)."""

    def start(self) -> None:
        """The loop is about to run: start any thread or connection of the edge's
        own here, never in its factory, so the edge's thread never reads the core
        before the loop owns it, and a start that fails part way is undone by
        `stop` with the rest. Called once, before `stop`."""

    def stop(self) -> None:
        """The runtime is stopping; nothing is called after this. Also called
        when `start` was not (a start that failed part way): stop what did."""


@dataclass(frozen=True)
class EdgeThread:
    """A thread an edge runs, for the runtime's supervisor: `alive` says whether
    it runs, `restart` starts it again (`firmware.runtime.supervisor`)."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]


@runtime_checkable
class ThreadedEdge(Protocol):
    """An edge with threads of its own (the Home Assistant adapter's): the
    supervisor watches them as it watches the runtime's, once `start` ran."""

    def threads(self) -> Sequence[EdgeThread]:
        """The edge's threads."""


EdgeFactory = Callable[[EdgeContext], Edge]
