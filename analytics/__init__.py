"""FleetStream analytics: two PySpark Structured Streaming jobs over the telemetry topic.

* ``python -m analytics`` (analytics.job): Kafka -> parse (schema derived from
  common.contract.TelemetryEvent) -> event-time windows per vehicle and per road type ->
  parquet under ANALYTICS_OUTPUT_DIR. ``analytics.reader`` reads that output with pyarrow alone.
* ``python -m analytics.events`` (analytics.events_job): Kafka -> parse -> per-vehicle state
  (analytics.events_state: trips, geofences, alerts) -> ``fleetstream.events``
  (common.fleet_events), geofences and rules followed from compacted topics
  (analytics.events_config).

Nothing here starts Spark at import time.
"""
