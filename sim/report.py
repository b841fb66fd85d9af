"""A simulated run as a person reads it: one line per thing that happened, in the
club's local time, and a summary at the end."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from firmware.core.outbox import LoggedEvent
from sim.invariants import RULES, Violation


def money(cents: Any) -> str:
    """Cents as the club writes money: 12.50."""
    value = int(cents)
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"


def describe(event: LoggedEvent) -> str:
    """One logged event in words."""
    body = event.body
    if event.type == "access":
        where = body.get("door") or body.get("light") or "kiosk"
        who = body.get("member") or body.get("booking") or f"...{body.get('value')}"
        verdict = (
            "let in"
            if body.get("door") and body.get("granted")
            else ("granted" if body.get("granted") else "refused")
        )
        return f"{who} {verdict} at {body.get('reader')} ({where}): {body.get('reason')}"
    if event.type == "door":
        by = f" by {body['by']}" if body.get("by") else ""
        return f"door {body.get('door')} {body.get('what')}{by}"
    if event.type == "light":
        parts = [str(body.get("why"))]
        if body.get("booking"):
            parts.append(f"booking {body['booking']}")
        if body.get("member"):
            parts.append(str(body["member"]))
        until = body.get("until")
        text = f"light {body.get('light')} {body.get('what')} ({', '.join(parts)})"
        return text if until is None else f"{text} until {until}"
    if event.type == "debit":
        return (
            f"{body.get('member')} paid {money(body.get('amount'))} for {body.get('light')}, "
            f"credit left {money(body.get('balance'))}"
        )
    if event.type == "sync":
        records = f", {body.get('records')} records" if body.get("what") == "done" else ""
        return f"sync {body.get('what')} ({body.get('reason')}){records}"
    if event.type == "system":
        return f"system {body.get('what')}: {body.get('detail')}"
    return f"{event.type} {body}"


class Report:
    """Prints the timeline as it happens (unless `quiet`) and counts for the summary."""

    def __init__(self, out: TextIO, tz: ZoneInfo, *, quiet: bool = False) -> None:
        self.out = out
        self.tz = tz
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def when(self, now: float) -> str:
        local = datetime.fromtimestamp(now, self.tz)
        return local.strftime("%a %H:%M:%S")

    def line(self, now: float, who: str, what: str) -> None:
        if not self.quiet:
            print(f"{self.when(now)}  {who:<10} {what}", file=self.out)

    def event(self, event: LoggedEvent) -> None:
        self.counts[f"event:{event.type}"] += 1
        if event.type == "access":
            self.reasons[str(event.body.get("reason"))] += 1
        if event.type == "light" and event.body.get("until") is not None:
            until = self.when(float(event.body["until"]))
            body = {**event.body, "until": until}
            event = LoggedEvent(event.seq, event.time, event.type, body)
        self.line(event.time, "event", f"#{event.seq} {describe(event)}")

    def output(self, now: float, name: str, on: bool) -> None:
        self.counts["outputs"] += 1
        self.line(now, "output", f"{name} {'ON' if on else 'off'}")

    def violation(self, violation: Violation) -> None:
        # Always printed, even when quiet: this is what the run is for.
        print(
            f"{self.when(violation.time)}  {'!! BROKEN':<10} {violation.rule}: {violation.detail}",
            file=self.out,
        )

    def summary(
        self, name: str, days: float, violations: list[Violation], extra: dict[str, Any]
    ) -> None:
        c = self.counts
        print(f"\n== {name}: {days:.1f} days of club life", file=self.out)
        access = sum(self.reasons.values())
        refused = {
            r: n for r, n in self.reasons.items() if r not in ("granted", "booking", "master")
        }
        print(
            f"   presentations {access}: {access - sum(refused.values())} granted, "
            f"{sum(refused.values())} refused"
            + (
                f" ({', '.join(f'{r} {n}' for r, n in sorted(refused.items()))})" if refused else ""
            ),
            file=self.out,
        )
        print(
            f"   events logged {sum(v for k, v in c.items() if k.startswith('event:'))}, "
            f"stored by the hub {extra.get('stored', 0)}; outputs switched {c['outputs']}",
            file=self.out,
        )
        for key, value in extra.items():
            if key != "stored":
                print(f"   {key} {value}", file=self.out)
        broken = Counter(v.rule for v in violations)
        for rule in RULES:
            state = "held" if not broken[rule] else f"BROKEN {broken[rule]} time(s)"
            print(f"   invariant {rule:<7} {state}", file=self.out)
        for rule, n in broken.items():
            if rule not in RULES:
                print(f"   {rule}: {n} failed", file=self.out)
        print("PASS" if not violations else f"FAIL: {len(violations)} problem(s)", file=self.out)
