"""The spike agent: runs beside each Gatling injector and forwards its live metrics to InfluxDB.

Gatling's Graphite writer sends plaintext metrics to the agent's TCP listener on 127.0.0.1; the
agent groups them into spike's schema points (`graphite`), adds the injector's health
(`health`), writes batches to a `Sink` and keeps them in an on-disk spool while the sink is
unavailable (`spool`). `agent.Agent` ties these together; `agent.run_agent` is the CLI entry.
"""
