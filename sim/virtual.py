"""`alc sim run scenario.toml`: the controller core and the reference hub on a
virtual clock.

The controller is the real core (`firmware.core.controller.Controller`), built
the way the runtime builds it: the facility from the scenario's wiring, the data
and the event outbox in a real SQLite file (`firmware.storage`,
`firmware.outbox_store`). The hub is the reference hub (`tools.hub.server.Hub`
on its own SQLite file). Every message between them is sealed with the
controller's key and opened by the receiver, exactly as over MQTT; an outage
drops messages both ways and hands the hub the controller's will.

The clock moves only between steps: the runner feeds the core a `Tick` at each
`next_deadline()` up to the next timeline step (never once a second), so a week
plays in seconds. After every controller step `sim.invariants.Checker` looks at
what it logged and switched; the run exits 1 if any rule broke, or if a
step's `expect` did not come true.

Longer than 400 lines on purpose: `VirtualClub` is one scenario runner whose
parts (the virtual clock, the scenario's steps, the hub's side) share its state
step by step; the scenario file's format is `sim.scenario`, the checks `sim.invariants`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from firmware.collector import collector_paused
from firmware.core import wire
from firmware.core.actions import Action, CheckStorage, Output, Publish, RememberCommand
from firmware.core.controller import Controller
from firmware.core.errors import LocalError, RemoteError
from firmware.core.facility import facility_from
from firmware.core.inputs import (
    Connected,
    ContactChanged,
    Disconnected,
    EventsRemoved,
    Input,
    OutboxCounted,
    PayloadReceived,
    Presented,
    RexPressed,
    StorageChecked,
    Tick,
)
from firmware.core.outbox import (
    AppendEvents,
    DeleteAcked,
    DropEvents,
    FoldEvents,
    ForgetDebits,
    LoggedEvent,
    Outbox,
    SendEvents,
)
from firmware.core.sync import SaveDelta, SaveSnapshot, SyncSession
from firmware.outbox_store import OutboxStore
from firmware.storage import Storage, load_store
from sim.invariants import Cause, Checker
from sim.report import Report
from sim.scenario import Scenario, ScenarioError, Step, load_scenario
from tools.ctl import build_command
from tools.hub.db import Event as HubEvent
from tools.hub.db import HubDB
from tools.hub.server import Hub

MAX_TICKS_AT_ONCE = 10_000  # ticks at one instant: the core would be spinning
MAX_INBOX = 100_000  # messages in flight to the controller
DRAIN_S = 600.0  # after the last step, the link up for this long to upload the rest
COMMAND_TTL_S = 300


class RunError(LocalError):
    """The run could not go on (the core kept asking for ticks, a flood of messages)."""


class VirtualClub:
    """One controller and its hub on a virtual clock; see the module docstring."""

    def __init__(self, scenario: Scenario, workdir: Path, report: Report) -> None:
        self.scenario = scenario
        self.report = report
        self.now = scenario.start
        self.config = scenario.config(workdir)
        rng = random.Random(scenario.seed)
        self.key = rng.randbytes(32)
        # The ivs from a stream of their own: sealing does not shift the
        # scenario's other random draws, and a seed still replays exactly.
        self._ivs = random.Random(b"ivs" + self.key)
        self.cid = self.config.controller.id
        self.kid = self.cid.encode()
        self.base = self.config.base_topic
        self.checker = Checker(report.violation)
        self.online = False
        self.lost = 0  # messages dropped by outages
        self.inbox: deque[Input] = deque()
        self._forget_next = False
        self.hub_db = HubDB(workdir / "hub.sqlite3")
        self.hub = Hub(
            self.hub_db,
            site=self.config.controller.site,
            root=self.config.mqtt.root,
            keys={self.cid: self.key},
            on_events=self._stored,
        )
        self.hub.update(dict(scenario.records), self.now)  # v1; nobody listens yet
        db = workdir / "alc.sqlite3"
        self.storage = Storage.open(db)
        self.outbox = OutboxStore(Storage.open(db))
        self.controller = self._boot(rng)
        self.stats: dict[str, int] = {
            "deltas": 0,
            "snapshot pages": 0,
            "current": 0,
            "commands": 0,
        }

    def _boot(self, rng: random.Random) -> Controller:
        loaded = load_store(self.storage)
        epoch, v, _digest, last_full = loaded.state
        counter = itertools.count(1)
        session = SyncSession(
            loaded.built.store,
            epoch,
            v,
            now=self.now,
            last_full=last_full,
            outage_s=self.config.controller.outage_s,
            full_every_s=self.config.controller.full_sync_every_s,
            jitter=rng.random,
            new_id=lambda: f"sim-{next(counter)}",
        )
        stats = self.outbox.stats()
        return Controller(
            controller_id=self.cid,
            key=self.key,
            base_topic=self.base,
            session=session,
            boot_time=self.now,
            masters=self.config.masters,
            facility=facility_from(self.config.wiring, self.now, self.config.pins),
            executed=self.storage.commands(self.now),
            outbox=Outbox.restore(
                last_seq=stats.last_seq,
                count=stats.count,
                oldest=stats.oldest,
                first_seq=stats.first_seq,
                debits=self.outbox.debits(),
                bound=self.config.controller.outbox_max,
            ),
        )

    def close(self) -> None:
        self.storage.close()
        self.outbox.storage.close()
        self.hub_db.close()

    # --- the run ------------------------------------------------------------------------

    def run(self) -> int:
        """Play the scenario; 0 when every rule held, 1 otherwise."""
        self.report.line(self.now, "sim", f"{self.scenario.name}: the controller boots")
        self._carry_out(Cause(), self.controller.booted(self.now, intact=True))
        self._pump()
        self._link("up")
        for step in self.scenario.steps:
            self._advance(step.at)
            self._step(step)
        self._advance(self.scenario.end)
        if not self.online:
            self.report.line(self.now, "sim", "the run ends offline: link up to upload the rest")
            self._link("up")
        self._advance(self.now + DRAIN_S)
        self.checker.final(self.now, (e.seq for e in self.hub_db.events(self.cid)))
        days = (self.now - self.scenario.start) / 86400
        extra = {
            "stored": len(self.hub_db.events(self.cid)),
            "data version": f"hub v{self.hub.v}, controller v{self.controller.session.v}",
            **self.stats,
            "messages lost to outages": self.lost,
        }
        self.report.summary(self.scenario.name, days, self.checker.violations, extra)
        return 1 if self.checker.violations else 0

    def _advance(self, until: float) -> None:
        """Tick at every deadline up to `until`, then stand at `until`."""
        ticks_here = 0
        while True:
            deadline = self.controller.next_deadline()
            if deadline is None or deadline > until:
                break
            if deadline <= self.now:
                ticks_here += 1
                if ticks_here > MAX_TICKS_AT_ONCE:
                    raise RunError(f"the controller keeps asking for ticks at {self._when()}")
            else:
                ticks_here = 0
                self.now = deadline
            self._feed(Tick())
        self.now = max(self.now, until)

    def _when(self) -> str:
        return self.report.when(self.now)

    # --- timeline steps -------------------------------------------------------------------

    def _step(self, step: Step) -> None:
        action, target, args = step.action, step.target, step.args
        line = self.report.line
        if action == "say":
            line(self.now, "say", str(target))
        elif action == "present":
            value, credkind = str(args["value"]), str(args["credkind"])
            line(self.now, "member", f"presents {credkind} {value} at {target}")
            logged = self._feed(Presented(str(target), credkind, value))
            expect = args.get("expect")
            if expect:
                reasons = [e.body.get("reason") for e in logged if e.type == "access"]
                if reasons != [expect]:
                    got = ", ".join(str(r) for r in reasons) or "no decision"
                    self.checker.fail(
                        self.now, "expect", f"{step.where()}: wanted {expect}, got {got}"
                    )
        elif action == "contact":
            open = bool(args["open"])
            line(self.now, "door", f"{target} {'opened' if open else 'shut'}")
            self._feed(ContactChanged(str(target), open))
        elif action == "rex":
            line(self.now, "door", f"exit button of {target} pressed")
            self._feed(RexPressed(str(target)), Cause(rex=str(target)))
        elif action in ("put", "del"):
            kind, id = str(target), str(args["id"])
            op: list[Any] = ["put", kind, id, args["rec"]] if action == "put" else ["del", kind, id]
            line(self.now, "club", f"{'edits' if action == 'put' else 'deletes'} {kind} {id}")
            self._deliver(self.hub.commit([op], self.now))
            self._pump()
        elif action == "command":
            self.stats["commands"] += 1
            body = build_command(str(target), args["args"], now=self.now, ttl=COMMAND_TTL_S)
            line(self.now, "club", f"command {target} {args['args'] or ''} (id {body['id'][:8]})")
            self._deliver([(f"{self.base}/cmd", self._seal("cmd", body))])
            self._pump()
        elif action == "link":
            self._link(str(target))
        elif action == "jump":
            line(self.now, "clock", f"jumps to {self.report.when(float(target))}")
            self.now = float(target)
            self._feed(Tick())
        elif action == "tamper":
            self._tamper(target, args)

    def _tamper(self, what: str, args: dict[str, Any]) -> None:
        """Test-only: break a rule on purpose, so the checker is seen to fail."""
        if what == "output":
            output = Output(str(args["name"]), bool(args["on"]))
            self.report.line(self.now, "tamper", f"forces {output.name} {output.on}")
            self.report.output(self.now, output.name, output.on)
            self.checker.step(self.now, Cause(), [], [output], self.controller)
        else:
            self.report.line(self.now, "tamper", "the hub will lose the next event it gets")
            self._forget_next = True

    def _link(self, state: str) -> None:
        if state == "down" and self.online:
            self.report.line(self.now, "link", "down: the club's internet is out")
            self.online = False
            # The broker hands the hub the controller's will.
            will = self._seal("state", {"t": "state", "online": False})
            self.hub.handle(f"{self.base}/state", will, self.now)
            self._feed(Disconnected())
        elif state == "up" and not self.online:
            self.report.line(self.now, "link", "up")
            self.online = True
            self._feed(Connected())

    # --- the controller ---------------------------------------------------------------------

    def _feed(self, event: Input, cause: Cause | None = None) -> list[LoggedEvent]:
        """Hand the core one input and everything that follows from it; what the
        input's own step logged."""
        self._queue(event)
        return self._pump(cause)

    def _pump(self, cause: Cause | None = None) -> list[LoggedEvent]:
        """Run the core on every queued input (hub answers, acks, outbox counts
        included) until nothing is in flight. Returns what the first step logged."""
        first: list[LoggedEvent] | None = None
        while self.inbox:
            current = self.inbox.popleft()
            actions = self.controller.handle(current, self.now)
            with collector_paused():  # a full sync is built aside, as at boot
                while self.controller.has_work():
                    actions += self.controller.work(self.now)
            logged = self._carry_out(cause or self._cause(current), actions)
            cause = None
            if first is None:
                first = logged
            if self.online:
                self._deliver(self.hub.tick(self.now))
        hub = (self.hub.epoch, self.hub.v, self.hub.digest)
        self.checker.settled(self.now, self.controller, hub)
        return first or []

    def _cause(self, event: Input) -> Cause:
        if isinstance(event, PayloadReceived) and event.topic.endswith("/cmd"):
            try:
                message = wire.unseal({self.kid: self.key}, event.topic, event.payload)
            except RemoteError:
                return Cause()
            return Cause(command=message.body)
        return Cause()

    def _carry_out(self, cause: Cause, actions: list[Action]) -> list[LoggedEvent]:
        """Do what the runtime would, in order: events durable first."""
        logged = [e for a in actions if isinstance(a, AppendEvents) for e in a.events]
        debits = [d for a in actions if isinstance(a, AppendEvents) for d in a.debits]
        commands = [(a.id, a.exp) for a in actions if isinstance(a, RememberCommand)]
        if logged or commands:
            self.outbox.append(logged, debits, commands=commands)
        outputs = [a for a in actions if isinstance(a, Output)]
        for e in logged:
            self.report.event(e)
        self.checker.step(self.now, cause, logged, outputs, self.controller)
        for action in actions:
            if isinstance(action, Publish):
                self._publish(action)
            elif isinstance(action, Output):
                self.report.output(self.now, action.name, action.on)
            elif isinstance(action, SaveDelta):
                self.storage.save_deltas([(action.epoch, action.v, action.ops, action.digest)])
            elif isinstance(action, SaveSnapshot):
                last_full = self.controller.session.last_full
                self.storage.save_snapshot(
                    action.epoch, action.v, action.records, action.digest, last_full
                )
            elif isinstance(action, CheckStorage):
                self.storage.forget_expired(self.now)
                self._queue(StorageChecked(self.storage.verify()))
            elif isinstance(action, SendEvents):
                rows = self.outbox.batch(action.after, action.upto)
                self._to_hub("events", {"t": "events", "batch": rows})
            elif isinstance(action, DeleteAcked):
                self.outbox.acknowledge(action.upto, action.v)
                self._counted()
            elif isinstance(action, ForgetDebits):
                self.outbox.forget_debits(action.v)
            elif isinstance(action, FoldEvents):
                self._queue(EventsRemoved("folded", self.outbox.fold(action.count)))
                self._counted()
            elif isinstance(action, DropEvents):
                self._queue(EventsRemoved("dropped", self.outbox.drop(action.upto)))
                self._counted()
        return logged

    def _counted(self) -> None:
        stats = self.outbox.stats()
        self._queue(OutboxCounted(stats.count, stats.oldest))

    def _queue(self, event: Input) -> None:
        if len(self.inbox) >= MAX_INBOX:
            raise RunError(f"more than {MAX_INBOX} messages in flight at {self._when()}")
        self.inbox.append(event)

    # --- messages ---------------------------------------------------------------------------

    def _seal(self, suffix: str, message: dict[str, Any]) -> bytes:
        iv = self._ivs.randbytes(wire.IV_BYTES)
        return wire.seal(self.key, self.kid, f"{self.base}/{suffix}", message, iv=iv)

    def _publish(self, action: Publish) -> None:
        message = action.message
        if action.suffix == "reply":
            got = f" {message['got']}/{message['of']}" if "of" in message else ""
            detail = message.get("detail")
            text = detail if isinstance(detail, str) else "(state map)"
            self.report.line(
                self.now, "reply", f"{str(message['id'])[:8]} {message['status']}{got} {text}"
            )
        elif action.suffix == "sync":
            full = "full" if message.get("full") else "deltas"
            self.report.line(self.now, "sync", f"asks the hub ({full}, {message.get('reason')})")
        self._to_hub(action.suffix, message)

    def _to_hub(self, suffix: str, message: dict[str, Any]) -> None:
        if not self.online:
            self.lost += 1
            return
        if suffix == "events" and self._forget_next and message["batch"]:
            # The tampered hub stores all but the last event, yet acks them all.
            self._forget_next = False
            batch = message["batch"]
            message = {"t": "events", "batch": batch[:-1]}
            out = self.hub.handle(f"{self.base}/events", self._seal("events", message), self.now)
            forged = {"t": "ack", "upto": batch[-1][0], "v": self.hub.v}
            self._deliver([*out[:-1], (f"{self.base}/ack", self._seal("ack", forged))])
            return
        self._deliver(
            self.hub.handle(f"{self.base}/{suffix}", self._seal(suffix, message), self.now)
        )

    def _deliver(self, messages: list[tuple[str, bytes]]) -> None:
        """Hub -> controller: queued for the core, or lost while the link is down."""
        for topic, payload in messages:
            if not self.online:
                self.lost += 1
                continue
            if topic.endswith("/data"):
                # Our own hub's message: counted by type, never acted on here.
                message = wire.unseal({self.kid: self.key}, topic, payload)
                # `current` (PROTOCOL.md s3) ends a sync with nothing to change: not a delta.
                kind = {"snap": "snapshot pages", "current": "current"}.get(message.type, "deltas")
                self.stats[kind] += 1
            self._queue(PayloadReceived(topic, payload))

    def _stored(self, controller: str, events: list[HubEvent]) -> None:
        seqs = [e.seq for e in events]
        self.report.line(
            self.now, "hub", f"stored {len(seqs)} event(s), #{min(seqs)}..#{max(seqs)}"
        )
        self.checker.stored(self.now, events)


def run_scenario(path: Path | str, out: TextIO, *, quiet: bool = False) -> int:
    """Load and play a scenario; the exit code (0 pass, 1 broken, 2 bad file)."""
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(f"alc sim run: {exc}", file=sys.stderr)
        return 2
    # The run's files are throwaway: keep them in memory where the system offers it.
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="alc-sim-", dir=base) as tmp:
        report = Report(out, scenario.tz, quiet=quiet)
        club = VirtualClub(scenario, Path(tmp), report)
        try:
            return club.run()
        except RunError as exc:
            print(f"alc sim run: {exc}", file=sys.stderr)
            return 2
        finally:
            club.close()


def main(argv: Sequence[str]) -> int:
    """`alc sim run scenario.toml`."""
    parser = argparse.ArgumentParser(
        prog="alc sim run",
        description="Play a scenario in virtual time and check the controller's invariants.",
    )
    parser.add_argument("scenario", type=Path, help="the scenario file (TOML)")
    parser.add_argument("--quiet", "-q", action="store_true", help="only problems and summary")
    ns = parser.parse_args(list(argv))
    return run_scenario(ns.scenario, sys.stdout, quiet=ns.quiet)
