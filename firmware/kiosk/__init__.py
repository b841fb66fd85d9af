"""The kiosk screens' web server (`server.py`) and page (`static/`): an adapter
around the core's `firmware.core.kiosk`."""
