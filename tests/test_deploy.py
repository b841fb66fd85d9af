"""deploy/: the systemd unit asks for what docs/operations.md ("The watchdog")
promises, and agrees with the example controller.toml on the data directory."""

from __future__ import annotations

import tomllib
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def unit_settings(path: Path) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> every value given, in order (systemd allows repeats)."""
    settings: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def test_the_controller_unit_is_a_watched_notify_service() -> None:
    unit = unit_settings(DEPLOY / "alc-controller.service")

    def one(section: str, key: str) -> str:
        values = unit.get((section, key), [])
        assert len(values) == 1, f"[{section}] {key}: {values}"
        return values[0]

    assert one("Service", "Type") == "notify"
    assert one("Service", "NotifyAccess") == "main"
    assert one("Service", "WatchdogSec") == "10"
    assert one("Service", "Restart") == "always"
    assert one("Unit", "StartLimitIntervalSec") == "0"  # a [Unit] setting: never give up
    assert one("Service", "UMask") == "0077"
    assert one("Service", "StateDirectoryMode") == "0700"
    # The loop's priority is still the only privilege.
    assert one("Service", "AmbientCapabilities") == "CAP_SYS_NICE"
    assert one("Service", "CapabilityBoundingSet") == "CAP_SYS_NICE"
    # The data directory systemd makes is the one the example config uses.
    example = tomllib.loads((DEPLOY / "controller.example.toml").read_text())
    state_dir = Path("/var/lib") / one("Service", "StateDirectory")
    assert Path(example["controller"]["data_dir"]) == state_dir
