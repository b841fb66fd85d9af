"""`alc sim`: the controller without a Raspberry Pi.

    alc sim --config controller.toml            bench mode: the real controller on
                                                mock pins and loop:// readers
    alc sim send --config controller.toml JSON  seal one bench input and publish it
    alc sim watch --config controller.toml      print every bench output as it comes
    alc sim run scenario.toml [--quiet]         a scenario in virtual time

Bench mode runs exactly what `alc controller` runs, on a config whose `[hal]
backend` is "sim", with the bench plugged into its runtime (`sim.bench.BenchEdge`):
anyone with the key drives it through `{base}/bench/in` and watches
`{base}/bench/out` (docs/simulator.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from firmware.config import Config, load_config
from firmware.core.errors import LocalError
from firmware.serve import serve

if TYPE_CHECKING:
    from firmware.runtime.edge import EdgeFactory

SEND_WAIT_S = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alc sim`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        from sim.virtual import main as run_main  # the scenario runner needs no broker

        return run_main(args[1:])
    if args and args[0] == "send":
        return send_main(args[1:])
    if args and args[0] == "watch":
        return watch_main(args[1:])
    return bench_main(args)


def sim_config(path: str) -> Config:
    """Load controller.toml and refuse any backend but the simulator's."""
    config = load_config(path)
    if config.backend != "sim":
        raise LocalError(
            f'{config.path}: [hal] backend is "{config.backend}"; alc sim runs only a '
            'config with backend = "sim" (alc controller runs the others)'
        )
    return config


def bench_main(argv: Sequence[str]) -> int:
    """`alc sim --config controller.toml`: run the controller on the simulator."""
    parser = argparse.ArgumentParser(
        prog="alc sim",
        description="Run the controller on the simulator (bench mode). "
        "`alc sim send` drives it, `alc sim run scenario.toml` plays a scenario.",
    )
    parser.add_argument("--config", required=True, help="controller.toml with backend = 'sim'")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    ns = parser.parse_args(argv)

    def started(config: Config) -> None:
        base = config.base_topic
        print(f"bench inputs on {base}/bench/in, outputs on {base}/bench/out", flush=True)
        print(
            f"  alc sim send --config {ns.config} "
            '\'{"t": "present", "reader": "<reader>", "credkind": "tag", "value": "<tag>"}\'',
            flush=True,
        )

    def bench(_config: Config) -> tuple[EdgeFactory, ...]:
        from sim.bench import BenchEdge  # gpiozero's mock pins: once the config is good

        return (BenchEdge,)

    load = partial(sim_config, ns.config)
    return serve("alc sim", load, verbose=ns.verbose, edges=bench, started=started)


def watch_main(argv: Sequence[str]) -> int:
    """`alc sim watch`: print the simulator's bench outputs, verified, until Ctrl-C
    (or `--count` of them)."""
    parser = argparse.ArgumentParser(
        prog="alc sim watch", description="Print every bench output (PROTOCOL.md s8) as it comes."
    )
    parser.add_argument("--config", required=True, help="the simulator's controller.toml")
    parser.add_argument("--count", type=int, help="stop after this many outputs")
    ns = parser.parse_args(argv)
    try:
        config = sim_config(ns.config)
        keys = config.keyring().accepted
    except LocalError as exc:
        print(f"alc sim watch: {exc}", file=sys.stderr)
        return 2
    import queue

    from firmware.core import wire
    from firmware.core.errors import RemoteError
    from firmware.mqtt import BrokerSettings, Link, LinkEvent, Received

    topic = f"{config.base_topic}/bench/out"
    inbox: queue.Queue[LinkEvent] = queue.Queue(1000)
    link = Link(
        f"alc-sim-watch-{config.controller.id}",
        BrokerSettings.of(config.mqtt),
        inbox.put,
        subscriptions=[topic],
        persistent=False,
    )
    link.start()
    seen = 0
    try:
        if not link.wait_connected(SEND_WAIT_S):
            where = f"{config.mqtt.host}:{config.mqtt.port}"
            print(f"alc sim watch: cannot reach the broker at {where}", file=sys.stderr)
            return 2
        print(f"watching {topic} (Ctrl-C stops)", flush=True)
        while ns.count is None or seen < ns.count:
            event = inbox.get()
            if not isinstance(event, Received):
                continue
            try:
                body = wire.unseal(keys, topic, event.payload).body
            except RemoteError as exc:
                print(f"unverified message dropped: {exc}", flush=True)
                continue
            seen += 1
            state = "ON" if body.get("on") else "off"
            when = body.get("time")
            clock = time.strftime("%H:%M:%S", time.localtime(when)) if type(when) is int else "?"
            print(f"{clock}  {body.get('name')} {state}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
    return 0


def send_main(argv: Sequence[str]) -> int:
    """`alc sim send`: seal one bench input with the controller's key and publish it."""
    parser = argparse.ArgumentParser(
        prog="alc sim send",
        description="Publish one bench input (PROTOCOL.md s8), sealed with the controller's "
        "key, as mosquitto_pub would if it could encrypt.",
    )
    parser.add_argument("--config", required=True, help="the simulator's controller.toml")
    parser.add_argument("message", help='JSON, e.g. \'{"t": "rex", "door": "front"}\'')
    ns = parser.parse_args(argv)
    try:
        config = sim_config(ns.config)
        ring = config.keyring()
        message = json.loads(ns.message)
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise LocalError('the message must be a JSON object with a text "t"')
    except json.JSONDecodeError as exc:
        print(f"alc sim send: the message is not JSON: {exc}", file=sys.stderr)
        return 2
    except LocalError as exc:
        print(f"alc sim send: {exc}", file=sys.stderr)
        return 2
    from firmware.core import wire
    from firmware.mqtt import BrokerSettings, Link

    topic = f"{config.base_topic}/bench/in"
    try:
        iv = os.urandom(wire.IV_BYTES)
        payload = wire.seal(ring.send_key, ring.send_kid, topic, message, iv=iv)
    except LocalError as exc:
        print(f"alc sim send: {exc}", file=sys.stderr)
        return 2
    mqtt = config.mqtt
    link = Link(
        f"alc-sim-send-{config.controller.id}",
        BrokerSettings.of(config.mqtt),
        lambda _e: None,
        persistent=False,
    )
    link.start()
    try:
        if not link.wait_connected(SEND_WAIT_S):
            where = f"{mqtt.host}:{mqtt.port}"
            print(f"alc sim send: cannot reach the broker at {where}", file=sys.stderr)
            return 2
        link.publish(topic, payload)
    finally:
        link.stop()  # waits for the publish to go out (see firmware.mqtt.Link.stop)
    print(f"sent to {topic}: {json.dumps(message)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
