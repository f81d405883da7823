"""Live metrics: what lands in InfluxDB (schema), and the sinks that write it."""
