"""End-to-end smoke test of the platform: events through the real broker and back."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.kafka


async def test_events_round_trip_through_the_real_broker(kafka_bootstrap: str, topic: str) -> None:
    sent = {
        f"CAR{i:02d}": {"vehicle_id": f"CAR{i:02d}", "speed_kmh": 10.0 * i, "seq": 0}
        for i in range(8)
    }
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for key, body in sent.items():
            await producer.send(topic, key=key.encode(), value=orjson.dumps(body))
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=f"g-{uuid.uuid4().hex}")
    await consumer.start()
    got: dict[str, dict] = {}
    try:
        async with asyncio.timeout(30):
            while len(got) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for rec in records:
                        got[rec.key.decode()] = orjson.loads(rec.value)
    finally:
        await consumer.stop()
    assert got == sent


def test_second_start_reuses_storage(tmp_path) -> None:
    """A broker stopped (or killed) and started again on the same folder comes back."""
    from tools.kafka import LocalKafka, free_port

    broker = LocalKafka(data_dir=tmp_path / "k", port=free_port(), controller_port=free_port(),
                        heap="256m")
    broker.start()
    try:
        broker.wait_ready()
        broker.kill()
        broker.start()
        broker.wait_ready()
        assert (tmp_path / "k" / "logs" / "meta.properties").exists()
    finally:
        broker.stop()


def test_kafka_cli_tool_runs_from_the_same_jars(kafka_bootstrap: str, topic: str) -> None:
    from tools.kafka import TOOLS, run_class

    proc = run_class(TOOLS["topics"], ["--bootstrap-server", kafka_bootstrap, "--list"],
                     capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert topic in proc.stdout.split()
