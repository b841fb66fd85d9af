"""Prometheus metrics of one controller (`[metrics]`, docs/operations.md "Metrics").

- `firmware.metrics.edge`: `MetricsEdge`, the edge that counts the loop's notes
  (decisions by reason, decision latency, timer lateness) into a registry of
  its own and renders the page;
- `firmware.metrics.state`: what a scrape reads from the core at that moment
  (outbox, data version, last full sync, `disk_ok`, auth failures) and the link.

The kiosk's HTTP server serves the page at `/metrics`
(`firmware.kiosk.server.KioskServer.serve_metrics`); nothing here opens a socket.
"""
