"""The messages a controller takes, and how each of their fields can be wrong: the
`field` kind of the fuzzing campaign (`tests/fuzz.py`).

`templates(club, now, new_id)` gives one valid message of every kind: delta, snap
and current pages on `data`, an `ack`, every command on `cmd`, every bench input
at every wired reader and door on `bench/in`. Each names its fields with the kind
of value they hold (`"from:int"`); `wrong_values` gives, for a kind, values its
parser must refuse: wrong in type, out of range, or naming nothing that exists.
Optional fields (`"now?:opt_int"`) are never just left out, since leaving one out
is valid; required ones may also go missing.

So a message with one field replaced by a wrong value is refused, whatever the
field: nothing of it may change the controller's data or outbox. Deltas and
pages name versions far ahead and a sync never asked for, so that even a value
wrongly taken for valid would change nothing there.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from firmware.core.limits import MAX_VALUE_LEN

COMMANDS = ("status", "sync", "purge", "refresh_kiosks", "open_door", "set_light")
MAX_TEXT = 128  # longest id or name in a hub message (firmware/core/messages.py)
GAP = 1000  # versions ahead of the controller's: parsed, never applied

# Keys no keypad has. Once a known bug (the core's own bench path typed their
# digits and logged an access); the simulator's bench edge refuses them now.
KEYPAD_JUNK = ("12a4#", "\u0661\u0662#", "12 3#")


@dataclass(frozen=True, slots=True)
class Club:
    """The controller under fuzzing: its topics and key, its data version, and
    what is wired (wrong values name real things of the wrong sort too)."""

    base: str
    key: bytes
    kid: bytes
    epoch: str
    v: int
    doors: tuple[str, ...]  # wired with a contact and an exit button
    lights: tuple[str, ...]
    readers: dict[str, str]  # reader id -> kind (rdm6300, wiegand, keypad, line)
    bare_doors: tuple[str, ...] = ()  # wired with neither contact nor exit button


@dataclass(frozen=True, slots=True)
class Template:
    """A valid message on `leaf` and its fields: `spec` lists `path:kind` (a
    dotted path into the body; `?` after it: optional)."""

    leaf: str
    body: dict[str, Any]
    spec: str
    reader_kind: str | None = None  # a bench input at a wired reader of this kind

    def fields(self) -> dict[tuple[str, ...], tuple[str, bool]]:
        """path -> (kind, required)."""
        out = {}
        for item in self.spec.split():
            path, kind = item.split(":")
            optional = path.endswith("?")
            out[tuple(path.rstrip("?").split("."))] = (kind, not optional)
        return out

    @property
    def name(self) -> str:
        """What it is, for a report: `cmd open_door`, `bench/in keys at front-pad`."""
        name = f"{self.leaf} {self.body['t']}"
        if self.body["t"] == "cmd":
            name += f" {self.body['cmd']}"
        if "reader" in self.body:
            name += f" at {self.body['reader']}"
        return name


def templates(club: Club, now: int, new_id: Callable[[], str]) -> list[Template]:
    """One valid message of every kind the controller takes, valid at `now`;
    `new_id()` gives each command an id never used before."""
    member = cbor2.dumps({"name": "Fuzz", "groups": ["g1"], "creds": [["tag", "00000fuzz0"]]})
    site = cbor2.dumps({"tz": "UTC"})
    ahead, epoch, digest = club.v + GAP, club.epoch, bytes(16)
    delta = {
        "t": "delta",
        "epoch": epoch,
        "from": ahead,
        "to": ahead + 1,
        "ops": [["put", "member", "fz1", member], ["del", "member", "m1"]],
        "now": now,
    }
    snap = {
        "t": "snap",
        "sync": "never-asked",
        "epoch": epoch,
        "v": ahead,
        "page": 0,
        "pages": 2,
        "recs": [["member", "fz1", member], ["site", "site", site]],
        "digest": digest,
        "now": now,
    }
    current = {"t": "current", "req": "never-asked", "epoch": epoch, "v": club.v}
    current |= {"digest": digest, "now": now}
    out = [
        Template("data", delta, "t:type epoch:text from:int to:earlier ops:ops now?:opt_int"),
        Template(
            "data",
            snap,
            "t:type sync:text epoch:text v:int page:later pages:int recs:recs digest:digest"
            " now?:opt_int",
        ),
        Template("data", current, "t:type req:text epoch:text v:int digest:digest now?:opt_int"),
        Template("ack", {"t": "ack", "upto": 0, "v": 0}, "t:type upto:int v:int"),
    ]
    door, light = club.doors[0], club.lights[0]
    # `events` left out is a valid purge of data only, and `s` left out a valid
    # open_door: those may be wrong, never missing.
    args = {
        "status": ({}, ""),
        "sync": ({}, ""),
        "refresh_kiosks": ({}, ""),
        "purge": ({"events": True}, "args.events?:bool"),
        "open_door": ({"door": door, "s": 3}, "args.door:door args.s?:seconds"),
        "set_light": (
            {"light": light, "on": True, "s": 60},
            "args.light:light args.on:bool args.s?:seconds",
        ),
    }
    for name in COMMANDS:
        arg_body, arg_spec = args[name]
        body = {"t": "cmd", "id": new_id(), "cmd": name, "args": arg_body}
        body |= {"iat": now, "exp": now + 300}
        spec = f"t:type id:text cmd:text args?:map iat:iat exp:exp {arg_spec}"
        out.append(Template("cmd", body, spec))
    good = {
        "rdm6300": ("tag", "0a1b2c3d4e"),
        "wiegand": ("card", "33011:00119"),
        "keypad": ("pin", "4711"),
        "line": ("tag", "00000000a1"),
    }
    for reader, kind in sorted(club.readers.items()):
        credkind, value = good[kind]
        present = {"t": "present", "reader": reader, "credkind": credkind, "value": value}
        spec = "t:type reader:reader credkind:credkind value:value"
        out.append(Template("bench/in", present, spec, kind))
        if kind in ("keypad", "wiegand"):
            keys = {"t": "keys", "reader": reader, "keys": "4711#"}
            out.append(Template("bench/in", keys, "t:type reader:reader keys:keys", kind))
    contact = {"t": "contact", "door": door, "open": True}
    out.append(Template("bench/in", contact, "t:type door:input_door open:bool"))
    out.append(Template("bench/in", {"t": "rex", "door": door}, "t:type door:input_door"))
    return out


# Values no parser takes where its field wants something else.
_NOT_TEXT: tuple[Any, ...] = (0, -1, 1.5, True, None, b"x", [], {}, ["a"], {"a": 1})
_NOT_INT: tuple[Any, ...] = ("7", 7.0, 7.5, True, False, b"\x07", [], {}, [7])
_NOT_BOOL: tuple[Any, ...] = (0, 1, "true", "false", None, [], {}, b"\x01", 1.0)
_BAD_INT: tuple[Any, ...] = (*_NOT_INT, -1, -(2**40), 2**63, 2**64 + 7, None)
_BAD_TEXT: tuple[Any, ...] = (*_NOT_TEXT, "", "x" * (MAX_TEXT + 1))
_NO_NAME: tuple[Any, ...] = (*_BAD_TEXT, "nowhere", "front\x00", "FRONT", "COURT1")
_READS = {"rdm6300": ("tag",), "wiegand": ("card", "pin"), "keypad": ("pin",), "line": ("tag",)}
# Values a reader of each kind could never send (the bench refuses them).
_UNREADABLE = {
    "rdm6300": ["0a1b2c3d4", "0a1b2c3d4e5", "0a1b2c3d4g", "\u0661" * 10, "0a1b 2c3d4"],
    "wiegand": ["33011:", ":1", "a:b", "\u0661\u0662", "1:2:3", "99999999999:1"],
    "keypad": ["47a1", "\u0661\u0662\u0663\u0664", "12 34", "*1234", "#"],
    "line": ["\x00abc", "caf\u00e9", "tab\there", "\x7f"],
}


def wrong_values(
    kind: str, template: Template, club: Club, now: int, rng: random.Random
) -> list[Any]:
    """Values for a field of `kind` in `template` that its parser must refuse.
    `now`: the time the template is valid at (the controller reads its clock
    later, so times are wrong by far more than the bounds)."""
    if kind == "type":
        return ["cmd" if template.leaf != "cmd" else "ack", "", "fuzz", "DELTA", 0, None, b"t"]
    if kind == "text":
        return list(_BAD_TEXT)
    if kind == "int":
        return list(_BAD_INT)
    if kind == "opt_int":  # null is a valid "no time"
        return [*_NOT_INT, 2**63, -(2**63)]
    if kind == "earlier":  # a delta's `to` not past its `from`
        start = template.body["from"]
        return [start, start - 1, 0, *_BAD_INT]
    if kind == "later":  # a page not before `pages`
        pages = template.body["pages"]
        return [pages, pages + 1, 2**62, *_BAD_INT]
    if kind == "bool":
        return list(_NOT_BOOL)
    if kind == "map":  # null is a valid empty map
        return [[], ["door", "front"], "door=front", 0, True, b"", {1: 2}]
    if kind == "digest":
        return [b"", bytes(15), bytes(17), "00" * 16, 0, None, [0] * 16]
    if kind == "ops":
        rec = template.body["ops"][0][3]
        put = ["put", "member", "fz1", rec]
        return [
            *({}, "put", 0, None, put, [[]], [None], [put, "junk"]),
            *([put[:3]], [[*put[:3], "not bytes"]], [["put", 7, "fz1", rec]]),
            *([["put", "member", None, rec]], [["put", "", "fz1", rec]]),
            *([["put", "member", "x" * (MAX_TEXT + 1), rec]], [["upsert", *put[1:]]]),
            *([["del", "member"]], [["del", "member", "m1", b"extra"]], [["PUT", *put[1:]]]),
        ]
    if kind == "recs":
        rec = template.body["recs"][0][2]
        return [
            *({}, 0, None, "recs", [None], [["member", "fz1"]], [["member", "fz1", "text"]]),
            *([[0, "fz1", rec]], [["member", None, rec]], [["member", "fz1", rec, b"extra"]]),
            [["member", "fz1", rec], 7],
        ]
    if kind == "iat":  # issued well over 300 s ahead, or not a time
        return [now + 3600 + rng.randrange(10**6), 2**62, *_NOT_INT, 2**63, None]
    if kind == "exp":  # long expired, or not a time
        return [now - 3600 - rng.randrange(10**6), -(2**62), *_NOT_INT, 2**63, None]
    if kind == "door":
        return [*_NO_NAME, *club.lights, *club.readers]
    if kind == "input_door":  # a contact or exit button: also a door without one
        return [*_NO_NAME, *club.lights, *club.readers, *club.bare_doors]
    if kind == "light":
        return [*_NO_NAME, *club.doors, *club.readers]
    if kind == "reader":
        return [*_NO_NAME, *club.doors, *club.lights]
    if kind == "seconds":  # left out or null: the default, valid
        return [0, -1, -0.5, 86401, 10**9, math.nan, math.inf, -math.inf, "3", True, [], {}]
    reader_kind = template.reader_kind or "line"
    if kind == "credkind":  # also the kinds this reader cannot read (a PIN at a tag reader)
        cannot = [k for k in ("tag", "card", "pin") if k not in _READS[reader_kind]]
        return ["", "TAG", "key", "finger", "pin ", 0, None, [], b"tag", *cannot]
    if kind == "value":
        return ["", "1" * (MAX_VALUE_LEN + 1), *_NOT_TEXT[:8], *_UNREADABLE[reader_kind]]
    if kind == "keys":
        return ["", "1" * 65, "abc", 1234, None, ["1", "#"], *KEYPAD_JUNK]
    raise ValueError(f"no wrong values for a field of kind {kind!r}")
