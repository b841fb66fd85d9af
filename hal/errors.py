"""Why a backend could not be built. Both are local problems (config or machine)."""

from __future__ import annotations

from firmware.core.errors import LocalError


class BackendUnavailable(LocalError):
    """The configured backend is unknown, or needs a package that is not installed."""


class HardwareError(LocalError):
    """A pin or port could not be set up (wrong machine, pin in use, no driver)."""


def missing_package(where: str, backend: str, module: str) -> BackendUnavailable:
    """The message for a backend whose library is missing: what, and how to install it."""
    packages = {"gpiozero": "gpiozero>=2.0", "serial": "pyserial>=3.5", "osdp": "libosdp>=3.2"}
    wanted = packages.get(module, module)
    extra = "osdp" if module == "osdp" else "gpio"
    return BackendUnavailable(
        f"{where}: backend {backend!r} needs the Python package {wanted.split('>')[0]!r}, "
        f"which is not installed. Install the hardware extra: `make setup`, or "
        f"`.venv/bin/pip install -e '.[{extra}]'` (or just `.venv/bin/pip install '{wanted}'`)"
    )
