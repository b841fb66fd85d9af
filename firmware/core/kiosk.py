"""The kiosk screens: who is connected, who is signed in where, and "Refresh kiosk
screens" (docs/kiosk.md has the rules for a club).

Pure, like the rest of the core: screens, requests and time come in as events
with `now`; what the screens should show goes out as `KioskSend` (a server-sent
event for one screen or all), answers to requests as `KioskAnswer`. What the
screens show is rendered in `kiosk_views`; what a member does there is
`kiosk_member`.

- **Board** (every screen, nothing personal): rendered again only when what it
  shows may have changed (the data, a door or light, a booking starting or
  ending), pushed only when it did, at most every `BOARD_EVERY_S`.
- **Session** (one screen): a member signed in by PIN on the screen's keypad or
  by tag at the kiosk's reader. Their panel is rendered again when the data, a
  door or light or their credit changed, and at the moments it changes by time
  alone; pushed only when it did. It ends on sign-out, after `IDLE_S` without a
  request from that screen, when the screen's stream ends, or when the member's
  record goes or stops being valid.
- **Refresh**: every connected screen gets a `reload`; each confirms once it is
  back with a fresh board; the command is `done` when all have, or after
  `REFRESH_WAIT_S` with the count that did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from firmware.core.actions import Action, KioskSend
from firmware.core.commands import reply
from firmware.core.facility import KIOSK_KEYPAD
from firmware.core.inputs import KioskRequest
from firmware.core.kiosk_member import (
    BAD,
    OK,
    REFUSED,
    Session,
    activate,
    answer,
    check_in,
    sign_in,
)
from firmware.core.kiosk_views import (
    IDLE_S,
    Club,
    SignedIn,
    board_of,
    member_view,
    member_view_changes,
)
from firmware.core.pins import Place

REFRESH_WAIT_S = 10.0  # how long a refresh waits for screens to confirm
BOARD_EVERY_S = 0.25  # boards are coalesced to at most four a second
MAX_SCREENS = 16
MAX_REFRESHES = 8


@dataclass(slots=True)
class _Refresh:
    id: str
    started: float
    waiting: set[str]
    confirmed: set[str] = field(default_factory=set)


class Kiosk:
    """Connected screens, their sessions, running refreshes, the last board sent."""

    def __init__(self) -> None:
        self._screens: dict[str, float] = {}
        self._local: set[str] = set()  # screens on the controller itself
        self._generation = 0  # of the newest list of open screens heard
        self._sessions: dict[str, Session] = {}
        self._refreshes: list[_Refresh] = []
        self._board: dict[str, Any] | None = None  # the board last sent to every screen
        self._board_at = -math.inf
        self._board_due: float | None = None  # a newer board waits for its slot
        # What the board was last rendered from, and when it changes by time alone.
        self._board_from: tuple[object, ...] = ()
        self._board_changes: float | None = None

    @property
    def screens(self) -> tuple[str, ...]:
        """The connected screens."""
        return tuple(self._screens)

    def signed_in(self, screen: str) -> str | None:
        """The member signed in on `screen`, if any."""
        session = self._sessions.get(screen)
        return session.who.member if session is not None else None

    def who(self, screen: str) -> SignedIn | None:
        """Who is signed in on `screen`, with which credential, if anyone."""
        session = self._sessions.get(screen)
        return session.who if session is not None else None

    # --- screens ------------------------------------------------------------------

    def joined(
        self,
        screen: str,
        club: Club,
        now: float,
        *,
        local: bool = False,
        open: frozenset[str] | None = None,
        generation: int = 0,
    ) -> list[Action]:
        """A screen's stream opened: it gets the board and a signed-out session
        (a page that loads shows nobody, also after a reload). `local`: it runs
        on the controller itself, beside the kiosk's reader. `open`: every
        screen the server has a stream for (as of its list's `generation`); any
        other one left unheard."""
        if open is not None and generation > self._generation:
            self._generation = generation
            for gone in [s for s in self._screens if s not in open and s != screen]:
                self.left(gone)
        if screen not in self._screens and len(self._screens) >= MAX_SCREENS:
            return []
        self._screens[screen] = now
        if local:
            self._local.add(screen)
        else:
            self._local.discard(screen)
        self._sessions.pop(screen, None)
        board, _ = board_of(club.store, club.facility, now)
        return [KioskSend(screen, "board", board), KioskSend(screen, "session", None)]

    def left(self, screen: str) -> list[Action]:
        """A screen's stream ended: its session ends with it."""
        self._screens.pop(screen, None)
        self._local.discard(screen)
        self._sessions.pop(screen, None)
        return []

    # --- requests -----------------------------------------------------------------

    def request(self, req: KioskRequest, club: Club, now: float) -> list[Action]:
        """One request from a screen; always exactly one `KioskAnswer`."""
        expired = self._expire(now)  # a session idle too long is over, ticked or not
        return expired + self._request(req, club, now)

    def _request(self, req: KioskRequest, club: Club, now: float) -> list[Action]:
        if req.screen not in self._screens:
            return [answer(req, BAD, "This screen is not connected: reload the page.")]
        if req.what == "pin":
            return self._pin(req, club, now)
        if req.what == "refreshed":
            return self._refreshed(req, now)
        session = self._sessions.get(req.screen)
        if session is None:
            return [answer(req, REFUSED, "Not signed in.", signed_in=False)]
        session.last = now
        if req.what == "touch":
            return [answer(req, OK)]
        if req.what == "sign_out":
            del self._sessions[req.screen]
            return [KioskSend(req.screen, "session", None), answer(req, OK)]
        if req.what == "check_in":
            return check_in(req, session, club, now)
        if req.what in ("quote", "activate"):
            return activate(req, session, club, now)
        return [answer(req, BAD, f"unknown request {req.what!r}")]

    def presented(
        self, reader: str, credkind: str, value: str, club: Club, now: float
    ) -> list[Action]:
        """A tag, card or PIN at the kiosk's own reader: sign the member in on
        the screen the reader stands at, the controller's own (a local one).
        Never on a screen elsewhere on the LAN, even the only one connected:
        the reader cannot tell where that screen stands, so the member's name
        and credit could show, and be spent, where they are not standing."""
        screens = [s for s in self._screens if s in self._local]
        if not screens and self._screens:
            note = {"error": "Sign in with your PIN on the screen."}
            return [KioskSend(None, "notice", note)]
        place = Place.reader(reader)
        actions, error = self._sign_in(screens, place, reader, credkind, value, club, now)
        if error:
            # Nobody typed anything on a screen, so say it there.
            actions.append(KioskSend(None, "notice", {"error": error}))
        return actions

    def _pin(self, req: KioskRequest, club: Club, now: float) -> list[Action]:
        pin = req.args.get("pin")
        if not isinstance(pin, str) or not (pin.isascii() and pin.isdecimal()) or len(pin) > 32:
            return [answer(req, BAD, "A PIN is 1 to 32 digits.")]
        place = Place.screen(req.screen)  # each screen counts its own refused PINs
        actions, error = self._sign_in([req.screen], place, KIOSK_KEYPAD, "pin", pin, club, now)
        if error:
            return [*actions, answer(req, REFUSED, error)]
        view = self._sessions[req.screen].view
        return [*actions, answer(req, OK, session=view)]

    def _sign_in(
        self,
        screens: list[str],
        place: Place,
        reader: str,
        credkind: str,
        value: str,
        club: Club,
        now: float,
    ) -> tuple[list[Action], str]:
        actions, who, error = sign_in(club, place, reader, credkind, value, now)
        if who is None:
            return actions, error
        for screen in screens:
            session = Session(who, now)
            self._sessions[screen] = session
            self._render(session, club, now)
            actions.append(KioskSend(screen, "session", session.view))
        return actions, ""

    # --- refresh ------------------------------------------------------------------

    def refresh(self, command: str, now: float) -> list[Action]:
        """The `refresh_kiosks` command: reload every connected screen."""
        screens = set(self._screens)
        if not screens:
            return [reply(command, "done", "no kiosk screens connected", got=0, of=0)]
        if len(self._refreshes) >= MAX_REFRESHES:
            return [reply(command, "failed", "too many refreshes running")]
        self._refreshes.append(_Refresh(command, now, screens))
        return [
            reply(command, "accepted", got=0, of=len(screens)),
            KioskSend(None, "reload", {"refresh": command}),
        ]

    def _refreshed(self, req: KioskRequest, now: float) -> list[Action]:
        id = req.args.get("refresh")
        if not isinstance(id, str):
            return [answer(req, BAD, "refreshed needs the refresh id")]
        out: list[Action] = []
        joined = self._screens[req.screen]
        for r in list(self._refreshes):
            # A page loaded after a refresh began is fresh for that refresh too,
            # whichever reload it confirms (two refreshes close together).
            if req.screen in r.waiting and (r.id == id or joined >= r.started):
                r.waiting.discard(req.screen)
                r.confirmed.add(req.screen)
                if not r.waiting:
                    out += self._finish_refresh(r, now)
        return [*out, answer(req, OK)]

    def _finish_refresh(self, r: _Refresh, now: float) -> list[Action]:
        self._refreshes.remove(r)
        got, of = len(r.confirmed), len(r.confirmed) + len(r.waiting)
        if got == of:
            detail = f"{got} screen{'s' if got != 1 else ''} reloaded and confirmed"
        else:
            detail = f"{got} of {of} screens reloaded and confirmed; {of - got} did not answer"
        ms = int((now - r.started) * 1000)
        return [reply(r.id, "done", detail, got=got, of=of, ms=ms)]

    # --- time and updates ---------------------------------------------------------

    def tick(self, club: Club, now: float) -> list[Action]:
        """Idle sessions end; refreshes that waited long enough finish."""
        out = self._expire(now)
        for r in [r for r in self._refreshes if now - r.started >= REFRESH_WAIT_S]:
            out += self._finish_refresh(r, now)
        return out

    def _expire(self, now: float) -> list[Action]:
        out: list[Action] = []
        for screen, session in list(self._sessions.items()):
            if now - session.last >= IDLE_S:
                del self._sessions[screen]
                out.append(KioskSend(screen, "session", None))
        return out

    def updates(self, club: Club, now: float) -> list[Action]:
        """After every step: the board and each member's panel, rendered again
        only when what they show may have changed, and pushed only when it did
        (the board coalesced to one per `BOARD_EVERY_S`)."""
        if not self._screens:
            self._board_due = None
            return []
        out: list[Action] = []
        inputs = self._inputs(club)
        if (
            inputs != self._board_from
            or (self._board_changes is not None and now >= self._board_changes)
            or (self._board_due is not None and now >= self._board_due)
        ):
            out += self._board_update(club, inputs, now)
        for screen, session in list(self._sessions.items()):
            if session.rendered_from == (*inputs, club.credit_changes) and (
                now < session.changes_at
            ):
                continue
            shown = session.view
            if self._render(session, club, now) is None:
                del self._sessions[screen]
                out.append(KioskSend(screen, "session", None))
            elif session.view != shown:
                out.append(KioskSend(screen, "session", session.view))
        return out

    def _board_update(self, club: Club, inputs: tuple[object, ...], now: float) -> list[Action]:
        board, changes = board_of(club.store, club.facility, now)
        self._board_from, self._board_changes = inputs, changes
        if board == self._board:
            self._board_due = None  # changed and changed back: nothing to send
            return []
        if now - self._board_at >= BOARD_EVERY_S:
            self._board, self._board_at, self._board_due = board, now, None
            return [KioskSend(None, "board", board)]
        self._board_due = self._board_at + BOARD_EVERY_S
        return []

    @staticmethod
    def _inputs(club: Club) -> tuple[object, ...]:
        """What the board is rendered from, besides time: the live data (a full
        sync swaps it for another), and the doors and lights."""
        store = club.store
        return (id(store), store.digest, club.facility.changes)

    def _render(self, session: Session, club: Club, now: float) -> dict[str, Any] | None:
        """Render a member's panel afresh; None when they may no longer be signed in."""
        session.view = member_view(session.who, club, now)
        session.rendered_from = (*self._inputs(club), club.credit_changes)
        session.changes_at = member_view_changes(session.who, club, now)
        return session.view

    def next_deadline(self) -> float | None:
        """When `tick` or `updates` next has something to do."""
        times = [s.last + IDLE_S for s in self._sessions.values()]
        times += [s.changes_at for s in self._sessions.values()]
        times += [r.started + REFRESH_WAIT_S for r in self._refreshes]
        if self._screens and self._board_due is not None:
            times.append(self._board_due)
        if self._screens and self._board_changes is not None:
            times.append(self._board_changes)
        return min(times) if times else None
