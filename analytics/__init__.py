"""FleetStream analytics: a PySpark Structured Streaming job over the telemetry topic.

Kafka -> parse (schema derived from common.contract.TelemetryEvent) -> event-time windows
per vehicle and per road type -> parquet under ANALYTICS_OUTPUT_DIR. ``analytics.reader``
reads that output with pyarrow alone; nothing here starts Spark at import time.
"""
