"""Who may read and write which topics: mosquitto's ACL file (PROTOCOL.md s9).

mosquitto's `read` lets an account subscribe to and receive a topic, `write`
lets it publish there; anything not granted is refused. A controller's account
reaches only its own topics, the hub's the hub side of every controller of its
site (`+` for the controller). Bench topics (the simulator's, PROTOCOL.md s8)
are granted only with `--bench`: a controller then also receives `bench/in` and
publishes `bench/out`, a hub-side account (the one `alc sim send` uses) the
other way round.

Home Assistant (docs/homeassistant.md) has two kinds of its own, with the
discovery prefix (`--prefix`, default `homeassistant`): the controller's
adapter publishes with an account of its own (`site.controller.ha`: a second
login with the controller's would push the controller off the broker), limited
to its node's discovery documents and its own `ha` topics; Home Assistant's
account reads discovery, states and availability and writes only the command
topics and its status.

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


DEFAULT_PREFIX = "homeassistant"


def controller_account(
    root: str, site: str, controller: str, *, bench: bool = False, prefix: str = DEFAULT_PREFIX
) -> Account:
    """The account of controller `controller` of `site`: `site.controller`. The dot
    cannot occur in a segment, so no two controllers, and no hub, share a name.
    `prefix` is not used (see `homeassistant_publisher_account`)."""
    base = f"{root}/{site}/{controller}"
    return Account(
        username=f"{site}.{controller}",
        label=f"controller {controller} of site {site}" + (", bench" if bench else ""),
        reads=tuple(f"{base}/{leaf}" for leaf in TO_CONTROLLER + (("bench/in",) if bench else ())),
        writes=tuple(
            f"{base}/{leaf}" for leaf in FROM_CONTROLLER + (("bench/out",) if bench else ())
        ),
    )


def hub_account(
    root: str, site: str, name: str, *, bench: bool = False, prefix: str = DEFAULT_PREFIX
) -> Account:
    """A hub-side account of `site` called `name`: the hub, or `alc ctl`'s (each
    program needs its own: the broker gives one session per account). `bench`
    and `prefix` as for every kind (`MakeAccount`); `prefix` is not used."""
    base = f"{root}/{site}/+"
    return Account(
        username=name,
        label=f"hub side of site {site}" + (", bench" if bench else ""),
        reads=tuple(
            f"{base}/{leaf}" for leaf in FROM_CONTROLLER + (("bench/out",) if bench else ())
        ),
        writes=tuple(f"{base}/{leaf}" for leaf in TO_CONTROLLER + (("bench/in",) if bench else ())),
    )


def homeassistant_publisher_account(
    root: str, site: str, controller: str, *, bench: bool = False, prefix: str = DEFAULT_PREFIX
) -> Account:
    """The Home Assistant adapter of controller `controller`: `site.controller.ha`
    (two dots: no controller or hub has it). It publishes its node's discovery
    documents (the node id `alc_<site>_<controller>` of `firmware.homeassistant`),
    its availability and states; it reads Home Assistant's status, its node's
    documents (to remove those of entities it no longer has) and its own
    command topics. `bench` is not used."""
    base = f"{root}/{site}/{controller}/ha"
    return Account(
        username=f"{site}.{controller}.ha",
        label=f"Home Assistant adapter of controller {controller} of site {site}",
        reads=(f"{prefix}/status", f"{prefix}/+/alc_{site}_{controller}/+/config", f"{base}/+/set"),
        writes=(
            f"{prefix}/+/alc_{site}_{controller}/+/config",
            f"{base}/availability",
            f"{base}/+/state",
        ),
    )


def homeassistant_account(
    root: str, site: str, name: str, *, bench: bool = False, prefix: str = DEFAULT_PREFIX
) -> Account:
    """Home Assistant's own account `name` for `site`: it reads every discovery
    document under `prefix` (a topic cannot name the site there: node ids are
    one level), and the availability and states of the site's controllers; it
    writes their command topics and its own status, nothing else. `bench` is
    not used."""
    base = f"{root}/{site}/+/ha"
    return Account(
        username=name,
        label=f"Home Assistant for site {site}",
        reads=(f"{prefix}/+/+/+/config", f"{base}/availability", f"{base}/+/state"),
        writes=(f"{prefix}/status", f"{base}/+/set"),
    )


class MakeAccount(Protocol):
    """How one kind of account is made from root, site and name."""

    def __call__(
        self, root: str, site: str, name: str, /, *, bench: bool = False, prefix: str = ...
    ) -> Account: ...


# `alc broker add` --kind -> how to make the account (room for more kinds).
KINDS: dict[str, MakeAccount] = {
    "controller": controller_account,
    "hub": hub_account,
    "homeassistant-publisher": homeassistant_publisher_account,
    "homeassistant": homeassistant_account,
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
