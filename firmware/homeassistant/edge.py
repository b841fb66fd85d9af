"""The Home Assistant adapter: an edge (`firmware.runtime.edge`) that watches
the controller and shows it to Home Assistant through MQTT discovery.

One thread (`alc-homeassistant`) does all the work; the loop and paho's thread
only put into its `Mailbox`. It has its own MQTT connection (its own client id,
its own account when the broker has accounts), whose will says `offline` on the
availability topic when the controller dies. On every connect, and whenever
Home Assistant says `online` on `{prefix}/status`, it publishes the discovery
documents, every entity's state (retained) and `online`, and removes any
document of its node that names an entity it no longer has. After that it publishes
a state only when it changes, and reads the core's figures (outbox, data
version, last full sync) every `POLL_S`, or a second after the events that may
have moved them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from firmware.config.homeassistant import HomeAssistantSection
from firmware.core.controller import Controller
from firmware.core.hush import Hush, more
from firmware.core.inputs import LocalCommand
from firmware.homeassistant.board import Board, Decision, Figures
from firmware.homeassistant.commands import Ignored, Offered, command_of
from firmware.homeassistant.discovery import ACCESS, OFFLINE, ONLINE, entities
from firmware.homeassistant.mailbox import Command, Mailbox
from firmware.homeassistant.topics import Topics
from firmware.mqtt import BrokerSettings, Link, LinkEvent, LinkUp, Received, Will
from firmware.runtime.edge import EdgeContext, EdgeThread
from firmware.runtime.notes import Logged, Note

log = logging.getLogger("alc.homeassistant")

POLL_S = 10.0  # the core's figures, when nothing happens
AFTER_EVENTS_S = 1.0  # ...and this long after events that may have moved them
ASK_S = 2.0  # a loop that does not answer this fast is asked again at the next poll
JOIN_S = 10.0
EVENTS_PER_S = 10  # access events published a second at most; the rest are counted
COMPLAIN_EVERY_S = 60.0  # one log line per kind of ignored command a minute
SHOWN = frozenset({"access", "door", "light"})  # the event types entities follow


def _read(controller: Controller) -> Figures:
    """On the loop: the figures the sensors show (plain values only)."""
    state = controller.state()
    return Figures(state["outbox"], state["v"], state["last_full"], controller.store.site.zone)


class HomeAssistantEdge:
    """Home Assistant MQTT discovery for one controller (docs/homeassistant.md).
    Built by the runtime from its `EdgeContext` when `[homeassistant]` is set."""

    topics: tuple[str, ...] = ()  # nothing under the controller's base topic

    def __init__(self, context: EdgeContext) -> None:
        config = context.config
        section = config.homeassistant
        if section is None:
            section = HomeAssistantSection()
        self._context = context
        self._section = section
        self._topics = Topics(
            section.prefix, config.mqtt.root, config.controller.site, config.controller.id
        )
        self._entities = entities(self._topics, config.wiring)
        self._offered = Offered(
            doors={e.object: e.follows[1] for e in self._entities if e.follows[0] == "door"},
            lights={e.object: e.follows[1] for e in self._entities if e.follows[0] == "light"},
        )
        self._board = Board(self._entities)
        self._mailbox = Mailbox()
        self._complaints = Hush(COMPLAIN_EVERY_S)
        self._budget: tuple[int, int] = (0, 0)  # (second, events published in it)
        self.dropped = 0  # events and commands lost to a full mailbox, since start
        self.ignored = 0  # command messages ignored, since start
        settings = BrokerSettings.of(config.mqtt)
        if section.username is not None:
            settings = replace(settings, username=section.username, password=section.password)
        self._configs = {e.config_topic for e in self._entities}
        subscriptions = [self._topics.status, self._topics.own_configs]
        if section.commands:
            subscriptions.append(self._topics.commands)
        self._link = Link(
            f"alc-{config.controller.site}-{config.controller.id}-ha",
            settings,
            self._from_paho,
            subscriptions=subscriptions,
            will=Will(self._topics.availability, OFFLINE.encode(), retain=True),
            persistent=False,
        )
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="alc-homeassistant", daemon=True)

    def start(self) -> None:
        """The adapter's thread, then its connection (the loop is about to run)."""
        self._thread.start()
        self._link.start()

    def threads(self) -> Sequence[EdgeThread]:
        """For the runtime's supervisor: the adapter's thread and its paho thread."""
        return (
            EdgeThread("alc-homeassistant", lambda: self._thread.is_alive(), self._restart),
            EdgeThread("paho (Home Assistant)", self._link.alive, self._link.restart),
        )

    def _restart(self) -> None:
        """The supervisor's restart of a dead adapter thread: a new one on the
        same mailbox (what was queued is still there)."""
        self._thread = self._new_thread()
        self._thread.start()

    # --- the runtime's calls: queue and return -----------------------------------------

    def received(self, suffix: str, payload: bytes) -> None:
        """No topics claimed: never called."""

    def output_switched(self, name: str, on: bool) -> None:
        """The loop's thread: the latest state of an output, for the thread."""
        self._mailbox.output(name, on)

    def observed(self, note: Note) -> None:
        """The loop's thread: the logged events an entity shows, for the thread
        (other events and notes are not shown)."""
        if isinstance(note, Logged):
            shown = tuple(e for e in note.events if e.type in SHOWN)
            if shown:
                self._mailbox.events(shown)

    def stop(self) -> None:
        """Stop the thread, say `offline` (a clean disconnect sends no will), disconnect."""
        self._mailbox.close()
        if self._thread.ident is None:
            return  # never started: no thread, no connection
        self._thread.join(JOIN_S)
        if self._thread.is_alive():
            log.error("the Home Assistant thread did not stop within %g s", JOIN_S)
        if self._link.connected:
            self._link.publish(self._topics.availability, OFFLINE.encode(), retain=True)
        self._link.stop()

    # --- paho's thread -----------------------------------------------------------------

    def _from_paho(self, event: LinkEvent) -> None:
        if isinstance(event, LinkUp):
            self._mailbox.resend()
        elif isinstance(event, Received):
            if event.topic == self._topics.status:
                if event.payload.strip() == ONLINE.encode():
                    self._mailbox.resend()  # Home Assistant (re)started
            elif self._topics.is_own_config(event.topic):
                if event.payload and event.topic not in self._configs:
                    self._mailbox.config(event.topic)
            else:
                self._mailbox.command(Command(event.topic, event.payload, event.retained))

    # --- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = 0.0
        while True:
            batch = self._mailbox.take(max(0.0, next_poll - time.monotonic()))
            if batch.closed:
                return
            try:
                if batch.dropped:
                    self.dropped += batch.dropped
                    self._complain("dropped", f"{batch.dropped} events or commands dropped")
                for name, on in batch.outputs.items():
                    self._board.output(name, on)
                decisions = [d for e in batch.events if (d := self._board.logged(e)) is not None]
                if batch.events:
                    next_poll = min(next_poll, time.monotonic() + AFTER_EVENTS_S)
                for command in batch.commands:
                    self._command(command)
                for topic in batch.configs:
                    self._remove(topic)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL_S
                    self._poll()
                self._publish(batch.resend, decisions)
            except Exception:  # a bug here must not end the thread: log and go on
                log.exception("Home Assistant adapter step failed")

    def _poll(self) -> None:
        try:
            figures = self._context.ask(_read, timeout=ASK_S)
        except TimeoutError:
            self._complain("ask", "the loop did not answer; the figures wait for the next poll")
            return
        self._board.figures(figures, self._context.clock())

    def _command(self, message: Command) -> None:
        command = command_of(message, self._topics, self._offered)
        if isinstance(command, Ignored):
            self.ignored += 1
            self._complain(f"command:{command.kind}", f"command ignored: {command.detail}")
            return
        log.info("Home Assistant: %s %s", command.what, command.target)
        self._submit(command)

    def _remove(self, topic: str) -> None:
        """A discovery document of our node that is not ours any more (a door or
        light gone from controller.toml): an empty retained payload removes the
        entity from Home Assistant and the document from the broker."""
        if topic in self._configs or not self._link.connected:
            return
        log.info("Home Assistant: removing %s (no such door or light any more)", topic)
        self._link.publish(topic, b"", retain=True)

    def _submit(self, command: LocalCommand) -> None:
        self._context.submit(command)

    def _publish(self, resend: bool, decisions: list[Decision]) -> None:
        link, topics = self._link, self._topics
        if not link.connected:
            return  # the next connect sends everything
        if resend:
            self._board.resend()
            for entity in self._entities:
                link.publish(entity.config_topic, _json(entity.config), retain=True)
        for object, value in self._board.changes():
            link.publish(topics.state(object), value.encode(), retain=True)
            self._board.sent(object, value)
        if resend:
            link.publish(topics.availability, ONLINE.encode(), retain=True)
        if decisions:
            self._decisions(decisions)

    def _decisions(self, decisions: list[Decision]) -> None:
        """The access event entity: one message per decision (not retained: an
        event is a moment, never a state to replay), `EVENTS_PER_S` at most."""
        names: dict[str, str] = {}
        members = {d.member for d in decisions if d.member is not None}
        if self._section.names and members:
            try:
                names = self._context.ask(lambda c: _names(c, members), timeout=ASK_S)
            except TimeoutError:
                self._complain("ask", "the loop did not answer; decisions shown without names")
        second = int(time.monotonic())
        start, count = self._budget
        if start != second:
            count = 0
        for decision in decisions:
            if count >= EVENTS_PER_S:
                self._complain("events", "more access decisions than Home Assistant is shown")
                continue
            count += 1
            payload = decision.payload(names.get(decision.member or ""))
            self._link.publish(self._topics.state(ACCESS), _json(payload))
        self._budget = (second, count)

    def _complain(self, kind: str, detail: str) -> None:
        held = self._complaints.allow(kind, time.monotonic())
        if held is None:
            return
        log.warning("Home Assistant: %s%s", detail, more(held))


def _names(controller: Controller, members: set[str]) -> dict[str, str]:
    """On the loop: the names of `members` (those still in the data)."""
    out = {}
    for id in members:
        member = controller.store.members.get(id)
        if member is not None:
            out[id] = member.name
    return out


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
