"""The metrics edge on its own (`firmware.metrics`), without a loop: what it
makes of odd notes, what a scrape shows when the core cannot be read, and the
`[metrics]` section of controller.toml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware.config import ConfigError, MetricsSection, parse_config
from firmware.core.controller import Controller
from firmware.core.outbox import LoggedEvent
from firmware.metrics.edge import MetricsEdge
from firmware.runtime.edge import EdgeContext
from firmware.runtime.notes import Decided, Logged, TimerRan

BASE = {"controller": {"site": "s", "id": "c", "data_dir": "d", "key_file": "k"}}
OWN = {"listen": "127.0.0.1:8080"}


def edge_with(ask: Callable[..., Any]) -> MetricsEdge:
    config = parse_config(Path("controller.toml"), {**BASE, "kiosk": OWN, "metrics": {}})
    context = EdgeContext(config, None, lambda _e: None, lambda _s, _m: None, ask=ask)
    return MetricsEdge(context)


def samples(edge: MetricsEdge) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    page = edge.render_metrics().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def access(**body: Any) -> LoggedEvent:
    return LoggedEvent(1, 0, "access", body)


def never_answers(fn: Callable[[Controller], Any], timeout: float = 5.0) -> Any:
    raise TimeoutError("the loop did not answer")


def test_odd_notes_never_raise_and_labels_stay_bounded() -> None:
    edge = edge_with(never_answers)
    edge.observed(Logged((access(door="front", granted=True, reason="granted"),)))
    edge.observed(Logged((access(light="court1", granted=False, reason="a new code"),)))
    edge.observed(Logged((access(reason=["not", "text"]),)))  # a kiosk sign-in, no fields
    edge.observed(Logged((LoggedEvent(2, 0, "door", {"what": "unlocked"}),)))
    edge.observed(Decided("not a number"))  # type: ignore[arg-type]
    edge.observed(TimerRan(0.003))
    got = samples(edge)
    decisions = {labels: n for (name, labels), n in got.items() if name == "alc_decisions_total"}
    assert decisions == {
        frozenset({("granted", "true"), ("reason", "granted"), ("target", "door")}): 1,
        frozenset({("granted", "false"), ("reason", "other"), ("target", "light")}): 1,
        frozenset({("granted", "false"), ("reason", "other"), ("target", "kiosk")}): 1,
    }
    assert got[("alc_metrics_note_failures_total", frozenset())] == 1
    assert got[("alc_decision_latency_seconds_count", frozenset())] == 0
    assert got[("alc_timer_lateness_seconds_bucket", frozenset({("le", "0.005")}))] == 1
    assert got[("alc_timer_lateness_seconds_bucket", frozenset({("le", "0.002")}))] == 0


def test_a_core_read_that_fails_is_served_without_the_cores_numbers() -> None:
    def broken(fn: Callable[[Controller], Any], timeout: float = 5.0) -> Any:
        raise RuntimeError("a bug of ours")

    for ask in (never_answers, broken):
        got = samples(edge_with(ask))
        assert got[("alc_loop_answered", frozenset())] == 0
        assert ("alc_outbox_events", frozenset()) not in got
        assert got[("alc_link_up", frozenset())] == 0


LAN = {
    "lan_listen": "0.0.0.0:8443",
    "cert_file": "kiosk.crt",
    "key_file": "kiosk.key",
    "token": "t" * 16,
}


def config(tmp_path: Path, kiosk: dict[str, str], **metrics: object) -> Any:
    document: dict[str, Any] = {**BASE, "kiosk": kiosk, "metrics": metrics}
    return parse_config(tmp_path / "controller.toml", document)


def test_the_metrics_section(tmp_path: Path) -> None:
    own = OWN
    assert parse_config(tmp_path / "c.toml", {**BASE, "kiosk": own}).metrics is None
    assert config(tmp_path, own).metrics == MetricsSection(lan=False)
    assert config(tmp_path, LAN, lan=True).metrics == MetricsSection(lan=True)
    assert config(tmp_path, {**own, **LAN}).metrics == MetricsSection(lan=False)
    with pytest.raises(ConfigError, match=r"metrics: are served by the kiosk's HTTP server"):
        config(tmp_path, {})
    with pytest.raises(ConfigError, match=r"metrics: are served by the kiosk's HTTP server"):
        config(tmp_path, LAN)  # a LAN listener, but lan not asked for
    with pytest.raises(ConfigError, match=r"metrics\.lan: needs \[kiosk\] lan_listen"):
        config(tmp_path, own, lan=True)
    with pytest.raises(ConfigError, match=r"metrics\.lan: must be true or false"):
        config(tmp_path, own, lan="yes")
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        config(tmp_path, own, port=9100)
