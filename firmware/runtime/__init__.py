"""The runtime: the threads, queues and I/O around the pure core.

One module per job (docs/architecture.md draws them):
- `app`: assembly (config -> typed wiring -> HAL -> storage -> core) and `Runtime`;
- `loop`: the one event loop and its action dispatch;
- `inbox`: the loop's queue, three lanes, bounded where outsiders feed it;
- `disk`: the two writer threads (events first, the dataset second);
- `decoder`: hub data opened off the loop;
- `link`: the MQTT side (what is subscribed, sealed and published);
- `edge`: adapters at the edge (the simulator's bench) that the caller adds;
- `priorities`: members first (thread priorities, stepping aside);
- `watchdog`, `supervisor`: liveness for systemd, thread deaths.
"""

from firmware.runtime.app import Runtime

__all__ = ["Runtime"]
