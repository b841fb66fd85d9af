"""The simulator: the controller without a Raspberry Pi (docs/simulator.md).

- `bench`     the bench edge: bench inputs (PROTOCOL.md s8) on the sim HAL's pins and
              ports, or to the core as typed inputs; `bench/out`
- `main`      `alc sim`: bench mode, `send`, `watch`, `run`
- `scenario`  scenario.toml -> a club, its wiring and a timeline
- `virtual`   the controller core and the reference hub on a virtual clock
- `invariants` the rules checked after every step
- `report`    the timeline and the summary, as a person reads them
"""
