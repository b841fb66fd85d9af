"""`alc`: one console script, one subcommand per job.

Subcommand modules are imported only when chosen, so `alc gen` never pays for
paho-mqtt and a missing optional library fails only the command that needs it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "controller": ("tools.controller", "run a controller (--config controller.toml)"),
    "sim": ("sim.main", "the controller on the simulator: bench mode, send, run a scenario"),
    "demo": ("tools.demo", "a small club on the simulator, end to end, in about a minute"),
    "gen": ("tools.gen", "write a reproducible synthetic club dataset"),
    "bench": ("tools.bench", "measure decision speed, build time and memory"),
    "hub": ("tools.hub.main", "run the reference central server of one site"),
    "ctl": ("tools.ctl", "send a command to a controller: sync, purge, status, ..."),
    "inspect": ("tools.inspect_cmd", "show a controller's stored data and whether it is intact"),
    "decode": ("tools.decode", "turn a captured payload into readable JSON"),
    "broker": ("tools.broker_setup.main", "set up a locked-down mosquitto: init, add, check"),
    "hw": ("tools.hw_test", "check the wiring: switch each relay, show inputs and reads"),
}


def usage() -> str:
    lines = ["usage: alc <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help}" for name, (_, help) in COMMANDS.items()]
    lines.append("\n`alc <command> --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `alc` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"alc: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
