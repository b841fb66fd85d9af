"""Home Assistant MQTT discovery (docs/homeassistant.md): off unless controller.toml
has a `[homeassistant]` section, which `firmware.runtime.plugged` turns into
this package's edge.

- `topics`: where everything goes;
- `discovery`: the device and its entities' documents;
- `board`: what the entities show, and what is not sent yet;
- `commands`: Home Assistant's unlock and light commands, checked;
- `mailbox`: the bounded hand-over from the loop and paho to the adapter's thread;
- `edge`: the adapter, its thread and its MQTT connection.
"""
