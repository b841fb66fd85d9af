"""Backends by name, imported only when chosen (as python-can's interfaces are).

`[hal] backend = "gpio"` in controller.toml picks `hal.gpio:GpioBackend`; the
runtime builds it from the typed wiring `firmware.config` checked. A
backend's module imports its libraries at the top, so a machine without gpiozero
can still run the code that does not need it, and choosing the backend fails with
one line saying what to install.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from firmware.core.wiring import Wiring
from hal.backend import Backend
from hal.device import Clock
from hal.errors import BackendUnavailable, missing_package
from hal.events import Sink

BACKENDS: dict[str, str] = {
    "gpio": "hal.gpio:GpioBackend",
    "sim": "hal.sim:SimBackend",
}

# Third-party modules a backend may need, so an ImportError of one of them is
# reported as "install it", and any other ImportError stays a bug.
_LIBRARIES = frozenset({"gpiozero", "serial"})


def backend_class(name: str, *, where: str = "hal.backend") -> type[Backend]:
    """The class registered as `name`, imported now. `where` prefixes messages."""
    target = BACKENDS.get(name)
    if target is None:
        known = ", ".join(f'"{n}"' for n in BACKENDS)
        raise BackendUnavailable(f"{where}: unknown backend {name!r}; one of {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in _LIBRARIES:
            raise
        raise missing_package(where, name, top) from None
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{target} is not a hal Backend")
    return cls


def create_backend(
    name: str,
    wiring: Wiring,
    sink: Sink,
    *,
    where: str = "hal.backend",
    clock: Clock = time.monotonic,
    **options: Any,
) -> Backend:
    """Import backend `name` and build it for `wiring` (checked by `firmware.config`).

    Every output is in its safe state when this returns; nothing is reported to
    `sink` until `start()`. `where` prefixes messages (the config file's name);
    `options` go to the backend (e.g. `pin_factory`).
    """
    cls = backend_class(name, where=where)
    return cls(wiring, sink, clock=clock, **options)
