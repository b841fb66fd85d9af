"""scenario.toml -> a `Scenario`: a club, a controller's wiring, and a timeline.

The file (docs/simulator.md has a full example):

    [scenario]
    name = "A week at the club"
    start = "2026-06-08 06:00"     # local time at the club (its site `tz`)
    end = "Sun 23:00"              # optional; default: the last step
    data = "club.toml"             # a hub data file (relative to this file), or
                                   # inline [data.site], [[data.member]], ... tables
    seed = 1                       # the full-sync jitter and request ids

    [controller]                   # optional: id, site, outage_s, full_sync_every_s
    [[doors]] [[lights]] [[readers]] [[masters]]   # wiring, as in controller.toml

    [[step]]
    at = "Mon 07:30"               # "Mon".."Sun" (the first such day from `start`)
    present = "front-in"           # or "YYYY-MM-DD HH:MM[:SS]"
    value = "0a1b2c3d4e"           # credkind = "tag" by default
    expect = "granted"             # optional: the decision's reason

Steps, one action each: `present` (reader, `credkind`, `value`, `expect`),
`contact` (door, `open`), `rex` (door), `put` (kind, `id`, `body`) and `del`
(kind, `id`): an edit in the club's data, `command` (`sync`, `purge`,
`open_door`, `set_light`, `status`, `refresh_kiosks`; `args`), `link` ("down" or
"up": an outage), `jump` (a time: the controller's clock jumps forward there
with no tick in between), `say` (a line for the timeline), and `tamper`, a
test-only hook that breaks the rules on purpose so the checker can be seen to
fail: "output" (`name`, `on`: switch an output with no reason) or "hub_forgets"
(the hub loses the last event it stored).

In the club data and in `put` bodies, the time fields `start` and `end`
(bookings) and `from` and `until` (members) may be written as scenario times
("Tue 18:00"); they become Unix seconds. Every problem is one `ScenarioError`
naming the file, the step and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.config import Config, ConfigError, parse_config
from firmware.core.errors import LocalError
from firmware.core.limits import CREDKINDS
from firmware.core.model import KNOWN_KINDS
from hal.wiring import device_specs
from tools.hub.datafile import DataFileError, Dataset, parse_document

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
ACTIONS = ("present", "contact", "rex", "put", "del", "command", "link", "jump", "say", "tamper")
COMMANDS = ("sync", "purge", "open_door", "set_light", "status", "refresh_kiosks")
TAMPERS = ("output", "hub_forgets")
TIME_FIELDS = {"booking": ("start", "end"), "member": ("from", "until")}
MAX_STEPS = 100_000
_STEP_KEYS: dict[str, set[str]] = {
    "present": {"credkind", "value", "expect"},
    "contact": {"open"},
    "rex": set(),
    "put": {"id", "body"},
    "del": {"id"},
    "command": {"args"},
    "link": set(),
    "jump": set(),
    "say": set(),
    "tamper": {"name", "on"},
}
_TOP = {"scenario", "controller", "doors", "lights", "readers", "masters", "data", "step"}
_SCENARIO_KEYS = {"name", "start", "end", "data", "seed", "tz"}
_CONTROLLER_KEYS = {"site", "id", "outage_s", "full_sync_every_s", "outbox_max"}


class ScenarioError(LocalError):
    """The scenario file is unreadable or wrong; the message names where."""


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline entry: `action` with its `target` (a reader, door, kind, ...)
    and the step's other keys in `args`."""

    index: int  # 1-based, as a person counts the [[step]] tables
    at: float
    action: str
    target: Any
    args: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return f"step {self.index} ({self.action})"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario, ready to run."""

    path: Path
    name: str
    tz: ZoneInfo
    start: float
    end: float
    seed: int
    records: Dataset
    controller: dict[str, Any]
    wiring: dict[str, Any]
    steps: tuple[Step, ...]

    def config(self, data_dir: Path) -> Config:
        """The controller.toml this scenario's controller runs with."""
        doc = {
            "controller": {
                "site": "sim",
                "id": "ctl1",
                **self.controller,
                "data_dir": str(data_dir),
                "key_file": str(data_dir / "ctl.key"),
            },
            "hal": {"backend": "sim"},
            **self.wiring,
        }
        return parse_config(self.path, doc)


class _Clock:
    """Scenario times -> Unix seconds, in the club's zone."""

    def __init__(self, tz: ZoneInfo, start_day: date | None) -> None:
        self.tz = tz
        self.start_day = start_day

    def parse(self, text: Any, where: str) -> float:
        if not isinstance(text, str):
            raise ScenarioError(f'{where}: must be a time like "Tue 18:00", got {text!r}')
        day_text, _, clock = text.strip().partition(" ")
        try:
            parts = [int(p) for p in clock.split(":")]
            if len(parts) not in (2, 3) or not (0 <= parts[0] < 24 and 0 <= parts[1] < 60):
                raise ValueError
            if len(parts) == 3 and not 0 <= parts[2] < 60:
                raise ValueError
        except ValueError:
            raise ScenarioError(f"{where}: {text!r}: the time must be HH:MM or HH:MM:SS") from None
        if day_text in DAYS:
            if self.start_day is None:
                raise ScenarioError(f"{where}: {text!r}: a weekday needs [scenario] start first")
            ahead = (DAYS.index(day_text) - self.start_day.weekday()) % 7
            day = self.start_day + timedelta(days=ahead)
        else:
            try:
                day = date.fromisoformat(day_text)
            except ValueError:
                raise ScenarioError(
                    f"{where}: {text!r}: the day must be Mon..Sun or YYYY-MM-DD"
                ) from None
        hour, minute, second = (*parts, 0)[:3]
        local = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=self.tz)
        return local.timestamp()


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario file."""
    path = Path(path)
    doc = _read_toml(path)
    for key in doc:
        if key not in _TOP:
            raise ScenarioError(
                f"{path}: {key}: is not a known section ({', '.join(sorted(_TOP))})"
            )
    head = doc.get("scenario")
    if not isinstance(head, dict):
        raise ScenarioError(f"{path}: needs a [scenario] table with at least `start`")
    _known(head, _SCENARIO_KEYS, f"{path}: scenario")
    raw_data = _data_document(path, head, doc)
    tz = _zone(path, head, raw_data)
    start_clock = _Clock(tz, None)
    start = start_clock.parse(head.get("start"), f"{path}: scenario.start")
    clock = _Clock(tz, datetime.fromtimestamp(start, tz).date())
    records = _records(path, raw_data, clock)
    controller = doc.get("controller", {})
    if not isinstance(controller, dict):
        raise ScenarioError(f"{path}: controller: must be a table")
    _known(controller, _CONTROLLER_KEYS, f"{path}: controller")
    wiring: dict[str, Any] = {
        k: doc[k] for k in ("doors", "lights", "readers", "masters") if k in doc
    }
    steps = _steps(path, doc.get("step", []), clock, start)
    _check_names(path, steps, wiring)
    end = steps[-1].at if steps else start
    if "end" in head:
        end = clock.parse(head["end"], f"{path}: scenario.end")
        if steps and end < steps[-1].at:
            raise ScenarioError(f"{path}: scenario.end: is before the last step")
    seed = head.get("seed", 1)
    if type(seed) is not int:
        raise ScenarioError(f"{path}: scenario.seed: must be an integer")
    name = head.get("name", path.stem)
    if not isinstance(name, str):
        raise ScenarioError(f"{path}: scenario.name: must be text")
    scenario = Scenario(path, name, tz, start, end, seed, records, controller, wiring, steps)
    try:
        config = scenario.config(path.parent)  # the pins and ports a Pi would need, checked alike
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None
    if config.unwired is not None:  # a scenario's wiring must be complete
        raise ScenarioError(config.unwired)
    wired = device_specs(config.wiring)
    outputs = sorted(o.name for o in wired.outputs)
    for step in steps:
        # A misspelt output would force nothing, and the run would "pass" a tamper.
        if step.action == "tamper" and step.target == "output" and step.args["name"] not in outputs:
            raise ScenarioError(
                f"{path}: step {step.index}.name: no output {step.args['name']!r} in the "
                f"wiring ({', '.join(outputs) or 'none'})"
            )
    return scenario


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: is not valid TOML: {exc}") from None


def _known(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ScenarioError(f"{where}.{key}: unknown key ({', '.join(sorted(allowed))})")


def _data_document(path: Path, head: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The club's data as a parsed TOML document, from `data = "file"` or inline."""
    source = head.get("data")
    inline = doc.get("data")
    if source is not None and inline is not None:
        raise ScenarioError(f"{path}: scenario.data names a file and [data] tables exist: pick one")
    if isinstance(source, str):
        return _read_toml(path.parent / source)
    if source is not None:
        raise ScenarioError(f"{path}: scenario.data: must be the path of a hub data file")
    if not isinstance(inline, dict):
        raise ScenarioError(f"{path}: needs the club's data: scenario.data or [data] tables")
    return inline


def _zone(path: Path, head: dict[str, Any], data: dict[str, Any]) -> ZoneInfo:
    site = data.get("site")
    name = head.get("tz") or (site.get("tz") if isinstance(site, dict) else None) or "UTC"
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ScenarioError(f"{path}: time zone {name!r} is unknown") from None


def _with_times(kind: str, body: dict[str, Any], clock: _Clock, where: str) -> dict[str, Any]:
    out = dict(body)
    for name in TIME_FIELDS.get(kind, ()):
        if isinstance(out.get(name), str):
            out[name] = int(clock.parse(out[name], f"{where}.{name}"))
    return out


def _records(path: Path, data: dict[str, Any], clock: _Clock) -> Dataset:
    doc: dict[str, Any] = {}
    for kind, value in data.items():
        if isinstance(value, list):
            doc[kind] = [
                _with_times(kind, t, clock, f"{path}: data.{kind}[{i}]")
                if isinstance(t, dict)
                else t
                for i, t in enumerate(value)
            ]
        else:
            doc[kind] = value
    try:
        return parse_document(doc, where=f"{path}: data")
    except DataFileError as exc:
        raise ScenarioError(str(exc)) from None


def _steps(path: Path, raw: Any, clock: _Clock, start: float) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ScenarioError(f"{path}: step: must be an array of tables ([[step]])")
    if len(raw) > MAX_STEPS:
        raise ScenarioError(f"{path}: more than {MAX_STEPS} steps")
    steps: list[Step] = []
    last = start
    for i, table in enumerate(raw, 1):
        where = f"{path}: step {i}"
        actions = [a for a in ACTIONS if a in table]
        if len(actions) != 1:
            raise ScenarioError(f"{where}: needs exactly one of {', '.join(ACTIONS)}")
        action = actions[0]
        _known(table, {"at", action, *_STEP_KEYS[action]}, where)
        at = clock.parse(table.get("at"), f"{where}.at")
        if at < last:
            raise ScenarioError(f"{where}.at: {table['at']!r} is before the step before it")
        last = at
        target = table[action]
        args = {k: v for k, v in table.items() if k not in ("at", action)}
        _check_step(action, target, args, where, clock)
        if action == "put":
            body = _with_times(target, args["body"], clock, f"{where}.body")
            try:
                args["rec"] = parse_document({target: [{"id": args["id"], **body}]}, where=where)[
                    (target, args["id"])
                ]
            except DataFileError as exc:
                raise ScenarioError(str(exc)) from None
        if action == "jump":
            target = clock.parse(target, f"{where}.jump")
            if target <= at:
                raise ScenarioError(f"{where}.jump: must be later than the step's `at`")
            last = target
        steps.append(Step(i, at, action, target, args))
    return tuple(steps)


def _check_names(path: Path, steps: tuple[Step, ...], wiring: dict[str, Any]) -> None:
    """Inputs come from the hardware, which reports only what is wired: a door's
    contact or exit button needs its pin, a presentation a configured reader."""

    def ids(table: str) -> dict[str, dict[str, Any]]:
        entries = wiring.get(table, [])
        return {e["id"]: e for e in entries if isinstance(e, dict) and "id" in e}

    doors, readers = ids("doors"), ids("readers")
    for step in steps:
        where = f"{path}: step {step.index}.{step.action}"
        if step.action == "present" and step.target not in readers:
            raise ScenarioError(f"{where}: no reader {step.target!r} in the wiring")
        if step.action in ("contact", "rex"):
            door = doors.get(step.target)
            if door is None:
                raise ScenarioError(f"{where}: no door {step.target!r} in the wiring")
            if step.action not in door:
                raise ScenarioError(f"{where}: door {step.target!r} has no `{step.action}` pin")


def _check_step(action: str, target: Any, args: dict[str, Any], where: str, clock: _Clock) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ScenarioError(f"{where}.{key}: {what}")

    if action in ("present", "contact", "rex", "put", "del"):
        need(isinstance(target, str) and bool(target), action, "must be a non-empty name")
    if action in ("put", "del"):
        # The hub's data file takes kinds it does not know (for newer controllers);
        # in a scenario an unknown kind is a typo that would silently change nothing.
        need(target in KNOWN_KINDS, action, f"must be one of {', '.join(sorted(KNOWN_KINDS))}")
    if action == "present":
        credkind = args.setdefault("credkind", "tag")
        need(credkind in CREDKINDS, "credkind", f"must be one of {', '.join(CREDKINDS)}")
        need(isinstance(args.get("value"), str) and bool(args["value"]), "value", "must be text")
        need(isinstance(args.get("expect", ""), str), "expect", "must be a reason code")
    elif action == "contact":
        need(isinstance(args.get("open"), bool), "open", "must be true or false")
    elif action in ("put", "del"):
        need(isinstance(args.get("id"), str) and bool(args["id"]), "id", "must be text")
        if action == "put":
            need(isinstance(args.get("body"), dict), "body", "must be a table of fields")
    elif action == "command":
        need(target in COMMANDS, "command", f"must be one of {', '.join(COMMANDS)}")
        need(isinstance(args.setdefault("args", {}), dict), "args", "must be a table")
    elif action == "link":
        need(target in ("down", "up"), "link", 'must be "down" or "up"')
    elif action == "say":
        need(isinstance(target, str), "say", "must be text")
    elif action == "tamper":
        need(target in TAMPERS, "tamper", f"must be one of {', '.join(TAMPERS)}")
        if target == "output":
            need(isinstance(args.get("name"), str), "name", "must name an output")
            need(isinstance(args.get("on"), bool), "on", "must be true or false")
