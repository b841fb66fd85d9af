"""Who may read and write which topics: mosquitto's ACL file (PROTOCOL.md s9).

mosquitto's `read` lets an account subscribe to and receive a topic, `write`
lets it publish there; anything not granted is refused. A controller's account
reaches only its own topics, the hub's the hub side of every controller of its
site (`+` for the controller). Bench topics (the simulator's, PROTOCOL.md s8)
are granted only with `--bench`: a controller then also receives `bench/in` and
publishes `bench/out`, a hub-side account (the one `alc sim send` uses) the
other way round.

Each account is one block, written once by `alc broker add`:

    # controller ctl1 of site demo
    user demo.ctl1
    topic read alc/demo/ctl1/data
    ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from firmware.core.errors import LocalError

# PROTOCOL.md s1's topic table, by direction.
TO_CONTROLLER = ("data", "cmd", "ack")
FROM_CONTROLLER = ("state", "sync", "events", "reply")

SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")


class AclError(LocalError):
    """An ACL file `alc broker` cannot read, or an account name it cannot make."""


@dataclass(frozen=True, slots=True)
class Account:
    """One broker account and what it may do."""

    username: str
    label: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]

    def block(self) -> str:
        """Its lines in the ACL file."""
        lines = [f"# {self.label}", f"user {self.username}"]
        lines += [f"topic read {t}" for t in self.reads]
        lines += [f"topic write {t}" for t in self.writes]
        return "\n".join(lines) + "\n"


def check_segment(value: str, what: str) -> str:
    """`value` if it is a topic segment (PROTOCOL.md s1), else `AclError`."""
    if not SEGMENT.fullmatch(value):
        raise AclError(f"{what} {value!r} must be 1 to 64 of A-Z a-z 0-9 _ -")
    return value


def controller_account(root: str, site: str, controller: str, *, bench: bool = False) -> Account:
    """The account of controller `controller` of `site`: `site.controller`. The dot
    cannot occur in a segment, so no two controllers, and no hub, share a name."""
    base = f"{root}/{site}/{controller}"
    return Account(
        username=f"{site}.{controller}",
        label=f"controller {controller} of site {site}" + (", bench" if bench else ""),
        reads=tuple(f"{base}/{leaf}" for leaf in TO_CONTROLLER + (("bench/in",) if bench else ())),
        writes=tuple(
            f"{base}/{leaf}" for leaf in FROM_CONTROLLER + (("bench/out",) if bench else ())
        ),
    )


def hub_account(root: str, site: str, name: str, *, bench: bool = False) -> Account:
    """A hub-side account of `site` called `name`: the hub, or `alc ctl`'s (each
    program needs its own: the broker gives one session per account)."""
    base = f"{root}/{site}/+"
    return Account(
        username=name,
        label=f"hub side of site {site}" + (", bench" if bench else ""),
        reads=tuple(
            f"{base}/{leaf}" for leaf in FROM_CONTROLLER + (("bench/out",) if bench else ())
        ),
        writes=tuple(f"{base}/{leaf}" for leaf in TO_CONTROLLER + (("bench/in",) if bench else ())),
    )


class MakeAccount(Protocol):
    """How one kind of account is made from root, site and name."""

    def __call__(self, root: str, site: str, name: str, /, *, bench: bool = False) -> Account: ...


# `alc broker add` --kind -> how to make the account (room for more kinds).
KINDS: dict[str, MakeAccount] = {
    "controller": controller_account,
    "hub": hub_account,
}


def header() -> str:
    """The start of a new ACL file."""
    return (
        "# mosquitto ACL file, written by `alc broker add` (PROTOCOL.md s9).\n"
        "# Nothing before the first `user` line: anonymous clients get nothing.\n"
    )


@dataclass
class Grants:
    """What one account of an ACL file may do."""

    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def parse(text: str, *, where: str) -> tuple[dict[str, Grants], list[str]]:
    """An ACL file -> (username -> grants, lines granted to every client). The
    second list holds `pattern` lines and topics before any `user` line; `alc
    broker` never writes them, so `check` reports them."""
    accounts: dict[str, Grants] = {}
    everyone: list[str] = []
    current: Grants | None = None
    label: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            label = line[1:].strip()
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "user" and rest:
            current = accounts.setdefault(rest, Grants())
            if label:
                current.labels.append(label)
        elif word == "topic" and rest:
            access, _, topic = rest.partition(" ")
            if access not in ("read", "write", "readwrite", "deny"):
                access, topic = "readwrite", rest  # `topic T` grants both
            topic = topic.strip()
            if current is None:
                everyone.append(line)
            elif access in ("read", "readwrite"):
                current.reads.append(topic)
            if current is not None and access in ("write", "readwrite"):
                current.writes.append(topic)
        elif word == "pattern":
            everyone.append(line)
        else:
            raise AclError(f"{where}:{number}: not an ACL line: {raw!r}")
        label = None
    return accounts, everyone
