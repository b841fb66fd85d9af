"""Hardware abstraction: relays, door contacts, exit buttons and credential readers.

The HAL turns hardware into plain events (`hal.events`) for a callback the runtime
gives it, and sets outputs when told to. It never decides anything: whether a
door opens is the core's business; it only refuses to leave a door released
longer than its `max_open_s` unless the core holds it open.

It imports only its own modules and the core's leaf modules (`firmware.core.errors`,
`firmware.core.limits`, `firmware.core.wiring`): never the application
(pyproject.toml's import contracts check this).

- `hal.events`: what the HAL reports;
- `hal.relay`, `hal.input`, `hal.reader`: the small interfaces and their shared
  policy (pulse, maximum on-time, debounce, frame timeout, repeat suppression,
  PIN entry), on `hal.device` (clock, lock, timers) and `hal.ticker` (the one
  timer thread);
- `hal.wiegand`, `hal.rdm6300`, `hal.lines`, `hal.keypad`: pure decoders and
  PIN entry, producing `hal.frames` items;
- `hal.wiring`: the typed wiring (`firmware.core.wiring`, checked by
  `firmware.config`) as the devices a backend builds;
- `hal.backend`: what every backend is; `hal.registry`: backends by name, imported
  lazily so a missing gpiozero or pyserial only fails the backend that needs it;
- `hal.gpio` (gpiozero pins, pyserial ports) and `hal.sim` (mock pins, loopback ports);
- OSDP readers, on libosdp: `hal.osdp_bus` (one control panel per RS-485 port),
  `hal.osdp_reader` (each reader's link, reads, LED and buzzer), `hal.osdp_data`
  (pure decoding), `hal.osdp_channel` (serial port, in-memory loopback),
  `hal.osdp_peer` (libosdp's peripheral device: the simulator's reader),
  `hal.osdp_keyset` (a new key for a reader, for `alc ctl osdp-keyset`).

docs/hardware.md is the wiring page for technicians.
"""
