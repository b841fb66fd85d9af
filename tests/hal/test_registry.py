"""The registry imports a backend only when chosen; a missing library fails only
the backend (or reader kind) that needs it, with a line saying how to install it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.config import ConfigError, parse_config
from firmware.core.wiring import DoorSpec, ReaderSpec, Wiring
from hal.backend import Backend
from hal.errors import BackendUnavailable, HardwareError
from hal.gpio import GpioBackend
from hal.registry import BACKENDS, backend_class, create_backend
from hal.sim import SimBackend
from hal.wiring import NotWired
from tests.hal.conftest import Events

PATH = Path("/etc/alc/controller.toml")
WHERE = f"{PATH}: hal.backend"
FRONT = Wiring(doors=(DoorSpec("front", relay=17),))


def test_names_map_to_backend_classes() -> None:
    assert backend_class("gpio") is GpioBackend
    assert backend_class("sim") is SimBackend
    assert set(BACKENDS) == {"gpio", "sim"}


def test_importing_the_registry_imports_no_hardware_library() -> None:
    code = (
        "import sys, hal.registry, hal.wiring, hal.reader\n"
        "loaded = {'gpiozero', 'serial'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_the_hal_does_not_import_the_application() -> None:
    code = (
        "import sys, hal.registry, hal.gpio, hal.sim, hal.serialport\n"
        "app = [m for m in sys.modules if m.startswith('firmware') and m not in\n"
        "       {'firmware', 'firmware.core', 'firmware.core.errors', 'firmware.core.limits',\n"
        "        'firmware.core.wiring'}]\n"
        "assert not app, app\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_unknown_backend_names_the_key() -> None:
    with pytest.raises(
        BackendUnavailable, match=rf'^{WHERE}: unknown backend .pigpio.; one of "gpio", "sim"'
    ):
        create_backend("pigpio", FRONT, Events(), where=WHERE)


@pytest.mark.parametrize("name", ["gpio", "sim"])
def test_missing_gpiozero_fails_only_that_backend_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero now fails
    for module in ("hal.gpio", "hal.sim"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(BackendUnavailable) as caught:
        create_backend(name, FRONT, Events(), where=WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: backend '{name}' needs")
    assert "'gpiozero'" in message and "pip install" in message and "[gpio]" in message


def test_a_wiring_mistake_is_the_configs_and_needs_no_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    monkeypatch.delitem(sys.modules, "hal.gpio", raising=False)
    text = (
        '[controller]\nsite = "demo"\nid = "ctl1"\ndata_dir = "."\nkey_file = "k"\n'
        '[[doors]]\nid = "back"\nfail = "safe"\n'
    )
    with pytest.raises(ConfigError, match=r"doors\[0\]\.relay: is required"):
        parse_config(PATH, tomllib.loads(text))


def test_a_wiring_without_pins_is_refused_before_any_pin_is_taken(
    factory: MockFactory, events: Events
) -> None:
    unwired = Wiring(doors=(DoorSpec("front", relay=17), DoorSpec("back")))
    with pytest.raises(NotWired, match="door 'back' has no relay pin"):
        create_backend("gpio", unwired, events, pin_factory=factory)
    with create_backend("gpio", FRONT, events, pin_factory=factory):
        pass  # GPIO 17 is free: nothing was left claimed


def test_missing_pyserial_fails_only_serial_readers(
    monkeypatch: pytest.MonkeyPatch, factory: MockFactory
) -> None:
    monkeypatch.setitem(sys.modules, "serial", None)
    monkeypatch.delitem(sys.modules, "hal.serialport", raising=False)
    wiegand = ReaderSpec("w", "wiegand", d0=23, d1=24, gap_s=0.025)
    with GpioBackend(Wiring(readers=(wiegand,)), Events(), pin_factory=factory) as backend:
        assert list(backend.readers) == ["w"]
    factory.reset()
    serial = ReaderSpec("r", "rdm6300", port="loop://")
    with pytest.raises(
        BackendUnavailable, match=r"reader 'r' \(rdm6300\).*'pyserial'.*pip install"
    ):
        GpioBackend(Wiring(readers=(serial,)), Events(), pin_factory=factory)


def test_other_import_errors_are_not_dressed_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "broken", "hal.no_such_module:Backend")
    with pytest.raises(ModuleNotFoundError):
        backend_class("broken")
    monkeypatch.setitem(BACKENDS, "odd", "hal.wiring:OutputSpec")
    with pytest.raises(TypeError):
        backend_class("odd")


def test_no_pin_driver_says_what_to_do(events: Events) -> None:
    from gpiozero import BadPinFactory

    class NoDriver(MockFactory):  # type: ignore[misc]
        def pin(self, name: object, **kwargs: object) -> object:
            raise BadPinFactory("Unable to load any default pin factory!")

    with pytest.raises(HardwareError, match=r"door:front \(GPIO 17\): no GPIO driver.*\"sim\""):
        create_backend("gpio", FRONT, events, pin_factory=NoDriver())


def test_backends_are_context_managers(factory: MockFactory, events: Events) -> None:
    with create_backend("gpio", FRONT, events, pin_factory=factory) as backend:
        assert isinstance(backend, Backend)
        backend.start()
    assert backend.outputs["door:front"].closed
