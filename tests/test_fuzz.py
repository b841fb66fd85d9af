"""The fuzzing campaign (issue 12 s3 and s7): generated bad messages of every kind
through a real mosquitto into a running controller. Nothing ends its loop, and
nothing of its data or outbox changes: it only reports what it refused, as
rate-limited `system` events.

`make test` sends 10,000 messages and a bounded hypothesis run; `make soak`
(`-m slow`) 1,000,000 and more hypothesis examples, and prints the counts. A
failure names the seed (set `ALC_FUZZ_SEED` to run the same messages again) and
the messages of the batches after which something changed.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.core.actions import Output
from firmware.core.inputs import PayloadReceived
from firmware.core.outbox import AppendEvents
from tests.broker import Broker
from tests.fuzz import HOW, MISSING, Fuzzer, hand_seal, with_field
from tests.fuzz_fields import KEYPAD_JUNK, Template, templates, wrong_values
from tests.fuzz_rig import Counts, FuzzRig, run_campaign
from tests.harness import BASE
from tests.sealing import seal

MAX_RSS_GROWTH_KIB = 64 * 1024  # the controller, the fuzzer and paho's buffers together


@pytest.fixture
def fuzz_rig(broker: Broker, tmp_path: Path) -> Iterator[FuzzRig]:
    rig = FuzzRig(broker, tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def campaign_seed() -> int:
    return int(os.environ.get("ALC_FUZZ_SEED") or secrets.randbelow(2**32))


def check(counts: Counts, seed: int) -> None:
    """The campaign's promise: no crash, no change; every kind of message sent."""
    report = counts.report()
    named = "\n  ".join(counts.changed_by)
    assert (counts.crashes, counts.dataset_changes, counts.outbox_changes) == (0, 0, 0), (
        f"seed {seed}\n{report}\nsent in the batches around each change:\n  {named}"
    )
    assert set(counts.by_how) == set(HOW), report
    growth = counts.rss_end_kib - counts.rss_start_kib
    assert growth < MAX_RSS_GROWTH_KIB, f"memory grew {growth} KiB\n{report}"


def test_ten_thousand_fuzzed_messages_change_nothing(fuzz_rig: FuzzRig) -> None:
    seed = campaign_seed()
    counts = run_campaign(fuzz_rig, 10_000, seed=seed)
    print(f"fuzzing, seed {seed}:\n{counts.report()}")
    check(counts, seed)


@pytest.mark.slow
def test_a_million_fuzzed_messages_change_nothing(
    fuzz_rig: FuzzRig, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = campaign_seed()
    counts = run_campaign(fuzz_rig, 1_000_000, seed=seed, batch=500)
    with capsys.disabled():
        print(f"\nfuzzing soak, seed {seed}:\n{counts.report()}")
    check(counts, seed)
    # The soak's promise (issue 12 s7): no loop step over 100 ms all along. Only
    # here, on a machine kept for the soak: `make test`'s run prints the count.
    assert counts.loop_stalls == 0, counts.report()


# --- hypothesis: every field of every message kind, any value ---------------------------


def cbor_values() -> st.SearchStrategy[Any]:
    """Any value a CBOR payload can carry (big ints and dates need tags)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=140),
        st.binary(max_size=40),
        st.datetimes(timezones=st.just(UTC)),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=8,
    )


def test_no_malformed_field_of_any_message_ends_the_loop(fuzz_rig: FuzzRig) -> None:
    """Issue 12 s3: every bench input, command and data message, each field made
    wrong (a value its parser must refuse, any value at all, or left out), sent
    through the broker; after each, the loop answers a marker."""
    club = fuzz_rig.club
    fuzzer = Fuzzer(club, 0, now=int(time.time()))
    kinds = templates(club, fuzzer.now, fuzzer.command_id)

    @settings(suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(st.data())
    def one_field(data: st.DataObject) -> None:
        template: Template = data.draw(st.sampled_from(kinds), label="message")
        fields = template.fields()
        path = data.draw(st.sampled_from(sorted(fields)), label="field")
        kind, _required = fields[path]
        wrong = wrong_values(kind, template, club, int(time.time()), random.Random(0))
        value = data.draw(
            st.one_of(st.sampled_from(wrong), cbor_values(), st.just(MISSING)), label="value"
        )
        body = with_field(template.body, path, value)
        if template.leaf == "cmd":
            body = with_field(body, ("id",), fuzzer.command_id()) if path != ("id",) else body
        fuzz_rig.publish(template.leaf, fuzzer.sealed(template.leaf, body))
        fuzz_rig.marker()  # fails at once if the loop died

    one_field()
    fuzz_rig.drain()
    assert fuzz_rig.alive()


def test_a_bench_input_for_a_door_without_that_input_changes_nothing(fuzz_rig: FuzzRig) -> None:
    """Once a known bug (it ended the loop): now refused by the bench edge,
    counted and logged there; the core never sees it."""
    club = fuzz_rig.club
    before, refused = fuzz_rig.snapshot(), fuzz_rig.bench_refused()
    for body in ({"t": "rex", "door": "back"}, {"t": "contact", "door": "back", "open": True}):
        fuzz_rig.publish("bench/in", seal(club.key, club.kid, f"{BASE}/bench/in", body))
    fuzz_rig.drain()
    after = fuzz_rig.snapshot()
    logged = [after.events[seq] for seq in after.events if seq not in before.events]
    assert [event for event in logged if event != ("system", "clock")] == []  # the drain's
    assert fuzz_rig.bench_refused() == refused + 2


def test_keys_no_keypad_has_are_refused_and_log_nothing(fuzz_rig: FuzzRig) -> None:
    """Once a known bug (the core's own bench path typed their digits as a PIN
    and logged an access): now refused by the bench edge."""
    club = fuzz_rig.club
    before, refused = fuzz_rig.snapshot(), fuzz_rig.bench_refused()
    for reader in ("front-pad", "front-keys"):
        for keys in KEYPAD_JUNK:
            body = {"t": "keys", "reader": reader, "keys": keys}
            fuzz_rig.publish("bench/in", seal(club.key, club.kid, f"{BASE}/bench/in", body))
    fuzz_rig.drain()
    after = fuzz_rig.snapshot()
    logged = [after.events[seq] for seq in after.events if seq not in before.events]
    assert [event for event in logged if event[0] != "system"] == []
    assert fuzz_rig.bench_refused() == refused + 2 * len(KEYPAD_JUNK)


# --- the generator itself ------------------------------------------------------------------


def test_hand_sealing_seals_as_the_controller_does(fuzz_rig: FuzzRig) -> None:
    club = fuzz_rig.club
    body = {"t": "cmd", "id": "x", "cmd": "status", "args": {}, "iat": 1, "exp": 2}
    topic = f"{BASE}/cmd"
    iv = bytes(range(12))
    assert hand_seal(club.key, club.kid, topic, cbor2.dumps(body), iv) == seal(
        club.key, club.kid, topic, body, iv=iv
    )


def test_the_core_refuses_every_generated_hub_message(broker: Broker, tmp_path: Path) -> None:
    """The generator's promise, checked on the core alone (fast, and naming the
    message): no hub message it makes logs anything but a `system` event or
    switches an output. Bench inputs go through the simulated hardware first, so
    they are checked by the campaign above, not here."""
    rig = FuzzRig(broker, tmp_path, run=False)
    try:
        club = rig.club
        fuzzer = Fuzzer(club, campaign_seed(), now=int(time.time()))
        core = rig.runtime.controller  # booted, its loop never run: this thread's alone
        wrong = []
        for message in fuzzer.messages(3000):
            if message.leaf == "bench/in":
                continue
            event = PayloadReceived(f"{BASE}/{message.leaf}", message.payload, False)
            for action in core.handle(event, time.time()):
                logged = action.events if isinstance(action, AppendEvents) else []
                if isinstance(action, Output) or any(e.type != "system" for e in logged):
                    wrong.append(f"{message.how}: {message.what}: {action}")
        assert wrong == []
        assert (core.session.epoch, core.session.v) == (club.epoch, club.v)
    finally:
        rig.close()
