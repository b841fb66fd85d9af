"""`alc sim run`: scenarios in virtual time, the invariant checker, scenario errors.

The shipped examples must pass. Scenarios that break a rule on purpose (through
the test-only `tamper` steps, or a wrong `expect`) must fail with exit code 1
and name the rule, so the checker is seen to be able to fail. Bad scenario files
exit 2 with one line naming the file, the step and the key.
"""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import main as sim_main
from sim.invariants import Cause, Checker
from sim.virtual import run_scenario
from tests.builders import store_of

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

HEAD = """
[scenario]
name = "test"
start = "2026-06-08 08:00"

[[doors]]
id = "front"
relay = 17
fail = "secure"
contact = 27

[[lights]]
id = "court1"
relay = 5

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/serial0"
door = "front"

[data.site]
tz = "UTC"

[[data.door]]
id = "front"

[[data.light]]
id = "court1"

[[data.group]]
id = "all"
doors = ["front"]

[[data.member]]
id = "ann"
groups = ["all"]
creds = [["tag", "0a0a0a0a0a"]]
"""


def run(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = run_scenario(path, out)
    return code, out.getvalue()


def scenario(tmp_path: Path, steps: str, head: str = HEAD) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(head + steps)
    return path


def test_the_week_example_passes_its_invariants() -> None:
    code, out = run(EXAMPLES / "week.toml")
    assert code == 0, out
    assert out.rstrip().endswith("PASS")
    for rule in ("door", "light", "events", "credit", "digest"):
        assert re.search(rf"invariant {rule}\s+held", out)
    # The week's story is in the timeline: refusals with reasons, a booking's
    # lights with their warning, the outage's catch-up, Synchronise and Purge.
    for line in (
        "refused at front-keys (front): inactive",
        "refused at court1-in (court1): insufficient_credit",
        "light court1 warn (booking, booking b1, m1)",
        "output     warn:court1 ON",
        "sync done (outage)",
        "sync purged (purge)",
        "done 13 records, 0 events dropped",
        "door front forced",
        "clock      jumps to Fri 09:00:00",
    ):
        assert line in out, line
    logged = re.search(r"events logged (\d+), stored by the hub (\d+)", out)
    assert logged is not None and logged.group(1) == logged.group(2)


def test_the_small_example_passes() -> None:
    code, out = run(EXAMPLES / "morning.toml")
    assert code == 0, out
    assert "jon refused at main-in (main): expired" in out
    assert "stored 5 event(s), #10..#14" in out  # the outage's events, once, afterwards


def test_alc_sim_run_is_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main.main(["run", "--quiet", str(EXAMPLES / "morning.toml")]) == 0
    out = capsys.readouterr().out
    assert "presents" not in out and out.rstrip().endswith("PASS")


def test_an_output_switched_without_reason_breaks_the_door_rule(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """
[[step]]
at = "Mon 09:00"
tamper = "output"
name = "door:front"
on = true
""",
    )
    code, out = run(path)
    assert code == 1
    assert "!! BROKEN  door: door:front switched on with no `unlocked` event" in out
    assert re.search(r"invariant door\s+BROKEN 1 time", out)
    assert out.rstrip().endswith("FAIL: 1 problem(s)")


def test_a_light_on_without_reason_breaks_the_light_rule(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """
[[step]]
at = "Mon 09:00"
tamper = "output"
name = "light:court1"
on = true
""",
    )
    code, out = run(path)
    assert code == 1
    assert "light: light:court1 switched on while the circuit is not lit" in out


def test_a_hub_that_loses_an_event_breaks_exactly_once(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """
[[step]]
at = "Mon 09:00"
tamper = "hub_forgets"

[[step]]
at = "Mon 09:01"
present = "front-in"
value = "0a0a0a0a0a"
""",
    )
    code, out = run(path)
    assert code == 1
    assert re.search(r"events: 1 event\(s\) never reached the hub: seq \d+", out)


def test_a_wrong_expectation_fails_the_run(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """
[[step]]
at = "Mon 09:00"
present = "front-in"
value = "0b0b0b0b0b"
expect = "granted"
""",
    )
    code, out = run(path)
    assert code == 1
    assert "expect: step 1 (present): wanted granted, got unknown_credential" in out


def test_an_outage_keeps_every_event_and_uploads_it_once(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """
[[step]]
at = "Mon 09:00"
link = "down"

[[step]]
at = "Mon 09:10"
present = "front-in"
value = "0a0a0a0a0a"
expect = "granted"

[[step]]
at = "Mon 09:20"
put = "member"
id = "bo"
body = { groups = ["all"], creds = [["tag", "0c0c0c0c0c"]] }

[[step]]
at = "Mon 09:25"
present = "front-in"
value = "0c0c0c0c0c"
expect = "unknown_credential"

[[step]]
at = "Mon 09:26"
link = "up"                     # 26 min > outage_s: a full sync brings Bo

[[step]]
at = "Mon 09:30"
present = "front-in"
value = "0c0c0c0c0c"
expect = "granted"
""",
    )
    code, out = run(path)
    assert code == 0, out
    assert "messages lost to outages 1" in out  # the delta that added Bo


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ('[[step]]\nat = "Mon 09:00"\npresnt = "front-in"\n', "step 1: needs exactly one of"),
        (
            '[[step]]\nat = "Mon 9h"\nrex = "front"\n',
            "step 1.at: 'Mon 9h': the time must be HH:MM or HH:MM:SS",
        ),
        (
            '[[step]]\nat = "Tue 09:00"\nrex = "front"\n'
            '[[step]]\nat = "Mon 09:00"\nrex = "front"\n',
            "step 2.at: 'Mon 09:00' is before the step before it",
        ),
        ('[[step]]\nat = "Mon 09:00"\ncommand = "reboot"\n', "step 1.command: must be one of"),
        (
            '[[step]]\nat = "Mon 09:00"\ncontact = "front"\nopen = "yes"\n',
            "step 1.open: must be true or false",
        ),
        (
            '[[step]]\nat = "Mon 09:00"\nput = "member"\nid = "x"\nbody = { creds = 5 }\n',
            "step 1: member 'x'",
        ),
        ('[[step]]\nat = "Mon 09:00"\nrex = "front"\nwhen = 1\n', "step 1.when: unknown key"),
        (
            '[[step]]\nat = "Mon 09:00"\ncontact = "back"\nopen = true\n',
            "step 1.contact: no door 'back' in the wiring",
        ),
        (
            '[[step]]\nat = "Mon 09:00"\nrex = "front"\n',
            "step 1.rex: door 'front' has no `rex` pin",
        ),
        (
            '[[step]]\nat = "Mon 09:00"\npresent = "court-9"\nvalue = "1"\n',
            "step 1.present: no reader 'court-9' in the wiring",
        ),
        # Typos that used to run and "pass" while doing nothing:
        (
            '[[step]]\nat = "Mon 09:00"\nput = "memebr"\nid = "x"\nbody = {}\n',
            "step 1.put: must be one of booking, door",
        ),
        ('[[step]]\nat = "Mon 09:00"\ndel = "bookings"\nid = "x"\n', "step 1.del: must be one"),
        (
            '[[step]]\nat = "Mon 09:00"\ntamper = "output"\nname = "door:back"\non = true\n',
            "step 1.name: no output 'door:back' in the wiring (door:front",
        ),
    ],
)
def test_bad_scenarios_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: str, message: str
) -> None:
    path = scenario(tmp_path, steps)
    assert run_scenario(path, io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err, err


def test_bad_wiring_is_named_like_controller_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = scenario(tmp_path, "", head=HEAD.replace("relay = 17", "relay = 99"))
    assert run_scenario(path, io.StringIO()) == 2
    assert "doors[0].relay" in capsys.readouterr().err


def test_the_checker_fails_on_a_negative_debit() -> None:
    """The credit rule, which no scenario can break through the real core."""
    from firmware.core.controller import Controller
    from firmware.core.facility import Facility
    from firmware.core.outbox import LoggedEvent
    from firmware.core.sync import SyncSession

    session = SyncSession(store_of([]), None, 0, now=0.0, new_id=lambda: "x")
    controller = Controller(
        controller_id="c",
        key=bytes(32),
        base_topic="alc/s/c",
        session=session,
        boot_time=0.0,
        facility=Facility(now=0.0),
    )
    checker = Checker()
    body = {"member": "ann", "light": "court1", "amount": 400, "seconds": 1800, "balance": -100}
    checker.step(10.0, Cause(), [LoggedEvent(1, 10, "debit", body)], [], controller)
    assert [(v.rule, v.detail) for v in checker.violations] == [("credit", "ann debited to -100")]


def test_the_checker_fails_on_a_light_left_on_after_its_off_event() -> None:
    """Review finding: the light rule looked only at outputs switching on, so an
    output left on after its circuit's `off` event (a light burning with no
    reason) went unnoticed. It is a state rule now, reported once."""
    from firmware.core.actions import Output
    from firmware.core.controller import Controller
    from firmware.core.facility import Facility
    from firmware.core.outbox import LoggedEvent
    from firmware.core.sync import SyncSession

    session = SyncSession(store_of([]), None, 0, now=0.0, new_id=lambda: "x")
    controller = Controller(
        controller_id="c",
        key=bytes(32),
        base_topic="alc/s/c",
        session=session,
        boot_time=0.0,
        facility=Facility(now=0.0),
    )
    checker = Checker()
    command = {"cmd": "set_light", "args": {"light": "court1", "on": True}}
    on = {"light": "court1", "what": "on", "why": "remote", "booking": None}
    checker.step(
        10.0,
        Cause(command=command),
        [LoggedEvent(1, 10, "light", on)],
        [Output("light:court1", True)],
        controller,
    )
    assert checker.violations == []
    off = {**on, "what": "off"}
    checker.step(20.0, Cause(), [LoggedEvent(2, 20, "light", off)], [], controller)
    checker.step(30.0, Cause(), [], [], controller)  # still on: not reported again
    assert [(v.time, v.rule, v.detail) for v in checker.violations] == [
        (20.0, "light", "light:court1 still on after its circuit went off")
    ]
    checker.step(40.0, Cause(), [], [Output("light:court1", False)], controller)
    assert len(checker.violations) == 1


def test_a_debit_the_hub_booked_before_its_ack_counts_once(tmp_path: Path) -> None:
    """The reference hub publishes the delta that lowers the credit, then the ack.
    After both, the member's effective credit is the hub's credit, not that minus
    the same debit a second time (found by examples/week.toml)."""
    head = HEAD.replace(
        '[[data.light]]\nid = "court1"\n',
        '[[data.light]]\nid = "court1"\nprice = 400\nmax_s = 7200\n',
    ).replace(
        'creds = [["tag", "0a0a0a0a0a"]]',
        'creds = [["tag", "0a0a0a0a0a"]]\ncredit = 800\n\n'
        '[[data.group]]\nid = "players"\nlights = ["court1"]',
    )
    head = head.replace('groups = ["all"]', 'groups = ["all", "players"]')
    head += (
        '\n[[readers]]\nid = "court1-in"\nkind = "line"\nport = "/dev/ttyUSB0"\nlight = "court1"\n'
    )
    path = scenario(
        tmp_path,
        """
[[step]]
at = "Mon 09:00"
present = "court1-in"
value = "0a0a0a0a0a"
expect = "granted"

[[step]]
at = "Mon 09:20"
present = "court1-in"
value = "0a0a0a0a0a"            # 8.00 - 4.00 = 4.00 left: one more half hour
expect = "granted"

[[step]]
at = "Mon 09:40"
present = "court1-in"
value = "0a0a0a0a0a"
expect = "insufficient_credit"
""",
        head=head,
    )
    code, out = run(path)
    assert code == 0, out
    assert "credit left 0.00" in out


# --- random days: the invariants hold whatever the members, the club and the link do ---

RANDOM_CLUB = """
[scenario]
name = "random"
start = "2026-06-08 07:00"
seed = 3

[[doors]]
id = "front"
relay = 17
fail = "secure"
contact = 27
rex = 22

[[lights]]
id = "court1"
relay = 5
warn = 6

[[readers]]
id = "front-in"
kind = "rdm6300"
port = "/dev/serial0"
door = "front"

[[readers]]
id = "court1-in"
kind = "line"
port = "/dev/ttyUSB0"
light = "court1"

[[masters]]
credkind = "tag"
value = "00c0ffee00"

[data.site]
tz = "Europe/London"

[[data.door]]
id = "front"
unlock_s = 5

[[data.light]]
id = "court1"
price = 300
block_s = 1800
max_s = 3600
lead_s = 300
lag_s = 120
warn_s = 180

[[data.group]]
id = "players"
doors = ["front"]
lights = ["court1"]

[[data.member]]
id = "ann"
groups = ["players"]
creds = [["tag", "0a0a0a0a0a"]]
credit = 700

[[data.member]]
id = "bo"
groups = ["players"]
creds = [["tag", "0b0b0b0b0b"]]
"""

TAGS = ["0a0a0a0a0a", "0b0b0b0b0b", "0c0c0c0c0c", "00c0ffee00"]
KINDS = ["present", "present", "contact", "rex", "link", "credit", "booking", "cancel", "command"]
KINDS += ["jump"]
ANN = 'groups = ["players"], creds = [["tag", "0a0a0a0a0a"]]'


def _clock(minutes: int) -> str:
    """A scenario time `minutes` after Mon 07:00."""
    day, rest = divmod(7 * 60 + minutes, 24 * 60)
    return f"2026-06-{8 + day:02d} {rest // 60:02d}:{rest % 60:02d}"


@st.composite
def club_days(draw: st.DrawFn) -> str:
    """A random timeline of inputs at the club, as [[step]] tables."""
    steps: list[str] = []
    minute = 0
    for i in range(draw(st.integers(1, 25))):
        minute += draw(st.integers(0, 240))
        at = f'at = "{_clock(minute)}"'
        kind = draw(st.sampled_from(KINDS))
        if kind == "present":
            reader = draw(st.sampled_from(["front-in", "court1-in"]))
            step = f'present = "{reader}"\nvalue = "{draw(st.sampled_from(TAGS))}"'
        elif kind == "contact":
            step = f'contact = "front"\nopen = {str(draw(st.booleans())).lower()}'
        elif kind == "rex":
            step = 'rex = "front"'
        elif kind == "link":
            step = f'link = "{draw(st.sampled_from(["down", "up"]))}"'
        elif kind == "credit":
            credit = draw(st.integers(0, 2000))
            step = f'put = "member"\nid = "ann"\nbody = {{ {ANN}, credit = {credit} }}'
        elif kind == "booking":
            start = minute + draw(st.integers(0, 90))
            member = draw(st.sampled_from(["ann", "bo"]))
            step = (
                f'put = "booking"\nid = "b{i % 3}"\n'
                f'body = {{ lights = ["court1"], start = "{_clock(start)}", '
                f'end = "{_clock(start + 60)}", member = "{member}" }}'
            )
        elif kind == "jump":
            minute += draw(st.integers(1, 600))
            step = f'jump = "{_clock(minute)}"'
        elif kind == "cancel":
            step = f'del = "booking"\nid = "b{i % 3}"'
        else:
            name = draw(st.sampled_from(["sync", "purge", "open_door", "set_light", "status"]))
            on = str(draw(st.booleans())).lower()
            args = {
                "open_door": '{ door = "front", s = 20 }',
                "set_light": f'{{ light = "court1", on = {on}, s = 600 }}',
            }.get(name, "{}")
            step = f'command = "{name}"\nargs = {args}'
        steps.append(f"[[step]]\n{at}\n{step}\n")
    return "\n".join(steps)


@settings(max_examples=40)
@given(club_days())
def test_random_club_days_keep_every_invariant(steps: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.toml"
        path.write_text(RANDOM_CLUB + "\n" + steps)
        code, out = run(path)
    assert code == 0, out[-3000:]
