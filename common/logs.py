"""Logging shared by the services' entry points."""

from __future__ import annotations

import logging


class _KafkaConnectRetries(logging.Filter):
    """aiokafka logs an ERROR for every failed connection attempt; while a broker starts (as
    under `make run`) that is a screenful per second. The services log their own retry
    warning ("Kafka not reachable yet ... retrying"), so these lines add nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('Unable connect to "')  # bootstrap attempts


def quiet_kafka_connect_retries() -> None:
    logging.getLogger("aiokafka").addFilter(_KafkaConnectRetries())
