"""`alc hub`: the reference central server (PROTOCOL.md, hub side).

Modules, one job each:

- `datafile`  site.toml -> validated records (`load_datafile`)
- `changes`   what goes in a delta and in the pages of a snapshot
- `db`        SQLite: the dataset, its versioned change log, stored events,
              dropped seq ranges, per-member debit sums
- `ledger`    what events mean for the hub: debits, dropped seq ranges
- `keys`      one key file per controller (`<controller>.key`)
- `server`    `Hub`: every MQTT message in, the messages to publish out
- `loop`      the one thread that owns a `Hub`: MQTT link, file watch, timers
- `main`      `alc hub` command line
"""
