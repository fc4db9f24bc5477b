"""Partitions added to the telemetry topic while the web API runs are read without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from tests.support.webapi import make_event, publish, running_app, wait_for
from webapi.keys import CONSUMER
from webapi.settings import Settings

pytestmark = pytest.mark.kafka


async def latest_ids(client) -> set[str]:
    resp = await client.get("/telemetry/latest")
    assert resp.status == 200
    return {e["vehicle_id"] for e in (await resp.json())["items"]}


async def send(producer: AIOKafkaProducer, topic: str, partition: int, vid: str,
               seq: int = 0) -> None:
    event = make_event(vid, seq=seq)
    await producer.send_and_wait(topic, event.model_dump_json().encode(), key=vid.encode(),
                                 partition=partition)


@pytest.fixture
def settings(kafka_bootstrap: str, topic_factory, tmp_path: Path) -> Settings:
    """The web API on a telemetry topic of ONE partition, checking for more every 0.5 s."""
    return Settings(kafka_bootstrap_servers=kafka_bootstrap,
                    kafka_topic=topic_factory("telemetry", 1),
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1), api_token=None,
                    analytics_output_dir=tmp_path, map_tile_url="", metadata_refresh_s=0.5)


async def test_partitions_added_at_run_time_are_read_from_their_beginning(
        settings: Settings) -> None:
    kafka_bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    async with running_app(settings) as client:
        consumer = client.app[CONSUMER]
        await wait_for(lambda: consumer.assigned.is_set())
        await publish(kafka_bootstrap, topic, [make_event("OLD01")])
        await wait_for(lambda: latest_ids(client))
        assert await latest_ids(client) == {"OLD01"}

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({topic: NewPartitions(total_count=3)})
        finally:
            await admin.close()
        # Published to the new partitions at once, quite likely before the web API's next
        # metadata refresh: it must read them from their beginning, not from their end.
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                    metadata_max_age_ms=200)
        await producer.start()
        try:
            async def partitions_known() -> bool:
                return len(await producer.partitions_for(topic)) == 3
            await wait_for(partitions_known)
            for partition, vid in ((1, "NEW01"), (2, "NEW02")):
                await send(producer, topic, partition, vid)

            async def all_three() -> bool:
                return await latest_ids(client) == {"OLD01", "NEW01", "NEW02"}
            await wait_for(all_three)
            assert consumer.connects == 1  # no restart, no reconnect
            assert consumer.client is not None
            assert consumer.client.assignment() == {TopicPartition(topic, p) for p in range(3)}

            # the old partition kept its position: a later event there is read once
            await send(producer, topic, 0, "OLD01", seq=1)
            await wait_for(lambda: consumer.positions.get(TopicPartition(topic, 0)) == 2)
            assert consumer.store.consumed_total == 4
        finally:
            await producer.stop()
