"""The registry imports a backend only when chosen; a missing library fails only
the backend (or reader kind) that needs it, with a line saying how to install it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.config import Config, ConfigError, parse_config
from hal.backend import Backend
from hal.errors import BackendUnavailable, HardwareError
from hal.gpio import GpioBackend
from hal.registry import BACKENDS, backend_class, create_backend
from hal.sim import SimBackend
from hal.wiring import ReaderSpec, Wiring
from tests.hal.conftest import Events

PATH = Path("/etc/alc/controller.toml")


def config(backend: str, extra: str = "") -> Config:
    text = f"""
[controller]
site = "demo"
id = "ctl1"
data_dir = "."
key_file = "k"

[hal]
backend = "{backend}"

[[doors]]
id = "front"
relay = 17
fail = "secure"
{extra}
"""
    return parse_config(PATH, tomllib.loads(text))


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


def test_unknown_backend_names_the_key() -> None:
    with pytest.raises(
        ConfigError, match=rf'^{PATH}: hal.backend: unknown backend .pigpio.; one of "gpio", "sim"'
    ):
        create_backend(config("pigpio"), Events())


@pytest.mark.parametrize("name", ["gpio", "sim"])
def test_missing_gpiozero_fails_only_that_backend_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero now fails
    for module in ("hal.gpio", "hal.sim"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(BackendUnavailable) as caught:
        create_backend(config(name), Events())
    message = str(caught.value)
    assert message.startswith(f"{PATH}: hal.backend: backend '{name}' needs")
    assert "'gpiozero'" in message and "pip install" in message and "[gpio]" in message
    assert isinstance(caught.value, ConfigError)  # the runtime's one-line config error


def test_a_wiring_mistake_is_reported_before_the_backend_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    monkeypatch.delitem(sys.modules, "hal.gpio", raising=False)
    with pytest.raises(ConfigError, match=r"doors\[1\]\.relay: is required"):
        create_backend(config("gpio", '[[doors]]\nid = "back"\nfail = "safe"\n'), Events())


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
    monkeypatch.setitem(BACKENDS, "odd", "hal.wiring:Wiring")
    with pytest.raises(TypeError):
        backend_class("odd")


def test_no_pin_driver_says_what_to_do(events: Events) -> None:
    from gpiozero import BadPinFactory

    class NoDriver(MockFactory):  # type: ignore[misc]
        def pin(self, name: object, **kwargs: object) -> object:
            raise BadPinFactory("Unable to load any default pin factory!")

    with pytest.raises(HardwareError, match=r"door:front \(GPIO 17\): no GPIO driver.*\"sim\""):
        create_backend(config("gpio"), events, pin_factory=NoDriver())


def test_backends_are_context_managers(factory: MockFactory, events: Events) -> None:
    with create_backend(config("gpio"), events, pin_factory=factory) as backend:
        assert isinstance(backend, Backend)
        backend.start()
    assert backend.outputs["door:front"].closed
