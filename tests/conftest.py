"""Shared fixtures: a real Kafka broker for the session, fresh topics per test.

The broker is started lazily, the first time a test asks for it, on free ports in a
temporary folder; set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.kafka import LocalKafka, create_topic, free_port

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIR = ROOT / "test-output"

MODULE_TOPICS = ("KAFKA_EVENTS_TOPIC", "KAFKA_GEOFENCES_TOPIC", "KAFKA_ALERT_RULES_TOPIC",
                 "WEBAPI_WEBHOOKS_TOPIC", "WEBAPI_WEBHOOK_DELIVERIES_TOPIC",
                 "WEBAPI_WEBHOOK_GROUP")
"""Names every web API, events job and producer a test starts would otherwise share with
every other test of the session (they default to fixed names): a geofence one module posts
would show on another module's map, a webhook registered by one would be delivered by all."""


@pytest.fixture(autouse=True, scope="module")
def _module_topics() -> Iterator[None]:
    """Each test module gets its own fleet-event, definition and webhook topics (and webhook
    group), through the environment, so in-process apps and the subprocesses a test starts
    agree on them. A test that names its own topics still wins (settings arguments)."""
    tag = uuid.uuid4().hex[:8]
    with pytest.MonkeyPatch.context() as mp:
        for var in MODULE_TOPICS:
            if var not in os.environ:
                mp.setenv(var, f"test-{var.lower().replace('_', '-')}-{tag}")
        yield


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bootstrap.servers of a real broker: KAFKA_BOOTSTRAP_SERVERS, or one started here."""
    external = os.environ.get("FLEETSTREAM_TEST_KAFKA") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka"), port=free_port(),
                        controller_port=free_port(), heap="768m")
    broker.start()
    try:
        broker.wait_ready()
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own, for fault injection (kill, restart on the same port)."""
    broker = LocalKafka(data_dir=tmp_path / "kafka", port=free_port(),
                        controller_port=free_port(), heap="384m")
    broker.start()
    try:
        broker.wait_ready()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic_factory(kafka_bootstrap: str):
    """Create fresh uuid-named topics on the session broker: ``topic_factory(partitions=3)``."""

    def make(prefix: str = "test", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topic(kafka_bootstrap, name, partitions)
        return name

    return make


@pytest.fixture
def topic(topic_factory) -> str:
    """A fresh uuid-named telemetry topic with 3 partitions."""
    return topic_factory("telemetry", 3)


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Where tests leave artefacts worth looking at (screenshots, CSVs): ./test-output."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR
