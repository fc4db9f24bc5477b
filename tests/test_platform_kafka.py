"""End-to-end smoke test of the platform: events through the real broker and back."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.kafka


async def _produce(bootstrap: str, topic: str, records: dict[str, dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for key, body in records.items():
            await producer.send(topic, key=key.encode(), value=orjson.dumps(body))
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int) -> dict[str, dict]:
    """The first ``count`` distinct keys from the start of ``topic`` (30 s at most)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=f"g-{uuid.uuid4().hex}")
    await consumer.start()
    got: dict[str, dict] = {}
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for rec in records:
                        got[rec.key.decode()] = orjson.loads(rec.value)
    finally:
        await consumer.stop()
    return got


async def test_events_round_trip_through_the_real_broker(kafka_bootstrap: str, topic: str) -> None:
    sent = {
        f"CAR{i:02d}": {"vehicle_id": f"CAR{i:02d}", "speed_kmh": 10.0 * i, "seq": 0}
        for i in range(8)
    }
    await _produce(kafka_bootstrap, topic, sent)
    assert await _consume(kafka_bootstrap, topic, len(sent)) == sent


def test_second_start_reuses_storage(tmp_path) -> None:
    """A broker killed and started again on the same folder comes back with its data: the
    same cluster, and a topic and record written before the crash."""
    from tools.kafka import LocalKafka, create_topic, free_port

    broker = LocalKafka(data_dir=tmp_path / "k", port=free_port(), controller_port=free_port(),
                        heap="256m")
    meta = tmp_path / "k" / "logs" / "meta.properties"
    broker.start()
    try:
        broker.wait_ready()
        cluster = meta.read_text()
        create_topic(broker.bootstrap, "kept", 1)
        asyncio.run(_produce(broker.bootstrap, "kept", {"k1": {"v": 1}}))
        broker.kill()
        broker.start()
        broker.wait_ready()
        assert meta.read_text() == cluster  # not formatted again
        assert asyncio.run(_consume(broker.bootstrap, "kept", 1)) == {"k1": {"v": 1}}
    finally:
        broker.stop()


def test_kafka_cli_tool_runs_from_the_same_jars(kafka_bootstrap: str, topic: str) -> None:
    from tools.kafka import TOOLS, run_class

    proc = run_class(TOOLS["topics"], ["--bootstrap-server", kafka_bootstrap, "--list"],
                     capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert topic in proc.stdout.split()
