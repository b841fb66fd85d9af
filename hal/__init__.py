"""Hardware abstraction: relays, door contacts, exit buttons and credential readers.

The HAL turns hardware into plain events (`hal.events`) for a callback the runtime
gives it, and sets outputs when told to. It never decides anything: whether a
door opens is the core's business.

- `hal.events`: what the HAL reports;
- `hal.output`, `hal.input`, `hal.reader`: the small interfaces and their shared
  policy (pulse, debounce, frame timeout, repeat suppression, PIN entry), on
  `hal.device` (clock, lock, timers) and `hal.ticker` (the one timer thread);
- `hal.wiegand`, `hal.rdm6300`, `hal.lines`, `hal.keypad`: pure decoders and
  PIN entry, producing `hal.frames` items;
- `hal.wiring`: the `[[doors]]`, `[[lights]]`, `[[readers]]` tables checked;
- `hal.backend`: what every backend is; `hal.registry`: backends by name, imported
  lazily so a missing gpiozero or pyserial only fails the backend that needs it;
- `hal.gpio` (gpiozero pins, pyserial ports) and `hal.sim` (mock pins, loopback ports).

docs/hardware.md is the wiring page for technicians.
"""
