"""common.kafka, the one Kafka edge: pure parts without a broker, topics and compacted reads
against the real one."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from common.kafka import (
    KafkaEdgeError,
    Stopped,
    TopicSpec,
    await_partitions,
    backoff,
    check_reachable,
    client_options,
    ensure_topics,
    make_admin,
    make_producer,
    read_compacted,
    retry,
    topic_partitions,
)
from producer.settings import Settings as ProducerSettings
from tools.kafka import free_port


@dataclass(frozen=True)
class SecureSettings:
    kafka_bootstrap_servers: str = "b1:9093,b2:9093"
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = "fleet"
    kafka_sasl_password: str = "secret"  # noqa: S105


def test_client_options_come_from_settings() -> None:
    assert client_options("h:1", "me") == {"bootstrap_servers": "h:1", "client_id": "me"}
    s = ProducerSettings(kafka_bootstrap_servers="k1:9092,k2:9092")
    assert client_options(s, "fleetstream-status") == {
        "bootstrap_servers": "k1:9092,k2:9092", "client_id": "fleetstream-status"}
    assert client_options(SecureSettings(), "x") == {
        "bootstrap_servers": "b1:9093,b2:9093", "client_id": "x",
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "fleet", "sasl_plain_password": "secret"}


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    flat = [backoff(n, first_delay_s=0.5, max_delay_s=5.0, jitter=0.0) for n in range(1, 8)]
    assert flat == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    rng = random.Random(3)
    waits = [backoff(4, jitter=0.2, rng=rng) for _ in range(200)]
    assert all(3.2 <= w <= 4.8 for w in waits)
    assert len({round(w, 6) for w in waits}) > 100  # really random, not one fixed value
    assert backoff(10_000, max_delay_s=5.0, jitter=0.0) == 5.0


async def test_retry_returns_the_result_after_failures(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"refused #{calls}")
        return "connected"

    with caplog.at_level(logging.WARNING, logger="fleetstream.kafka"):
        got = await retry(flaky, "status producer", asyncio.Event(), first_delay_s=0.001,
                          jitter=0.0)
    assert (got, calls) == ("connected", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "status producer: Kafka not reachable (attempt 1: refused #1); retrying in 0.0s",
        "status producer: Kafka not reachable (attempt 2: refused #2); retrying in 0.0s"]


async def test_retry_stops_on_the_stop_event_even_mid_wait() -> None:
    stop = asyncio.Event()

    async def down() -> None:
        stop.set()  # e.g. SIGTERM arrives while the broker is away
        raise ConnectionError("refused")

    with pytest.raises(Stopped, match="telemetry consumer"):
        # a 60 s back-off would hang the test if the stop event did not end the wait
        await asyncio.wait_for(retry(down, "telemetry consumer", stop, first_delay_s=60), 10)
    already = asyncio.Event()
    already.set()
    with pytest.raises(Stopped):
        await retry(down, "never tried", already)


async def test_retry_without_a_stop_event_tries_until_it_succeeds() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionError("refused")
        return calls

    assert await asyncio.wait_for(retry(flaky, "x", None, first_delay_s=0.001), 10) == 4


async def test_retry_lets_other_errors_and_cancellation_through() -> None:
    async def bug() -> None:
        raise KeyError("not a connection problem")

    with pytest.raises(KeyError):
        await retry(bug, "x", asyncio.Event(), retry_on=(ConnectionError,))


def test_check_reachable_names_every_server() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaEdgeError, match=rf"no Kafka broker reachable at {dead},nohost: "
                                             rf"{dead}: .*; nohost: "):
        check_reachable(f"{dead},nohost", timeout_s=1)


# ---- the real broker --------------------------------------------------------------------------

pytest_kafka = pytest.mark.kafka


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _topic_config(bootstrap: str, name: str, key: str) -> str:
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        [resp] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {key: None})])
        return {entry[0]: entry[1] for entry in resp.resources[0][4]}[key]
    finally:
        await admin.close()


@pytest_kafka
async def test_ensure_topics_creates_missing_ones_once(kafka_bootstrap: str) -> None:
    plain, compacted = _name("plain"), _name("state")
    specs = [TopicSpec(plain, partitions=3), TopicSpec.compacted(compacted)]
    assert sorted(await ensure_topics(kafka_bootstrap, specs)) == sorted([plain, compacted])
    assert await ensure_topics(kafka_bootstrap, specs) == []  # existing: fine, nothing made
    assert await _topic_config(kafka_bootstrap, compacted, "cleanup.policy") == "compact"
    assert await _topic_config(kafka_bootstrap, plain, "cleanup.policy") == "delete"
    producer = make_producer(kafka_bootstrap, "test")
    await producer.start()
    try:
        assert len(await producer.partitions_for(plain)) == 3  # leaders elected already
    finally:
        await producer.stop()
    admin = make_admin(kafka_bootstrap)  # a started admin client of the caller's is used too
    await admin.start()
    try:
        other = _name("other")
        assert await ensure_topics(admin, [TopicSpec(other)]) == [other]
    finally:
        await admin.close()


@pytest_kafka
async def test_ensure_topics_raises_one_clear_error(kafka_bootstrap: str) -> None:
    bad = _name("bad")
    with pytest.raises(KafkaEdgeError,
                       match=rf"creating topic '{bad}' at {kafka_bootstrap} failed: "
                             r"InvalidReplicationFactorError \(38\)"):
        await ensure_topics(kafka_bootstrap, [TopicSpec(bad, replication=3)], timeout_s=10)
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaEdgeError, match=rf"cannot reach Kafka at {dead}"):
        await ensure_topics(dead, [TopicSpec("x")], timeout_s=2)


@pytest_kafka
async def test_read_compacted_gives_the_latest_value_per_key(kafka_bootstrap: str) -> None:
    name = _name("state")
    await ensure_topics(kafka_bootstrap, [TopicSpec.compacted(name, partitions=3)])
    assert await read_compacted(kafka_bootstrap, name) == {}  # empty: returns at once
    producer = make_producer(kafka_bootstrap, "test", acks="all")
    await producer.start()
    try:
        for key, value in [(b"car1", b"v1"), (b"car2", b"v2"), (b"car1", b"v3"),
                           (b"car2", None), (b"car3", b"v4"), (b"car4", None),
                           (b"car5", b"old"), (b"car5", b"new")]:
            await producer.send_and_wait(name, key=key, value=value)
    finally:
        await producer.stop()
    expected = {b"car1": b"v3", b"car3": b"v4", b"car5": b"new"}
    assert await read_compacted(kafka_bootstrap, name) == expected
    assert await read_compacted(ProducerSettings(kafka_bootstrap_servers=kafka_bootstrap),
                                name) == expected
    missing = _name("missing")
    with pytest.raises(KafkaEdgeError, match="not found"):
        await read_compacted(kafka_bootstrap, missing, timeout_s=5)
    assert await topic_partitions(kafka_bootstrap, missing) == []  # looking created nothing
    assert [tp.partition for tp in await topic_partitions(kafka_bootstrap, name)] == [0, 1, 2]


@pytest_kafka
async def test_await_partitions_waits_for_the_topic_and_never_creates_it(
        kafka_bootstrap: str) -> None:
    name = _name("later")
    polls = 0

    def waiting() -> None:
        nonlocal polls
        polls += 1

    finder = asyncio.create_task(
        await_partitions(kafka_bootstrap, name, poll_s=0.05, waiting=waiting))
    async with asyncio.timeout(30):
        while polls < 5:  # looking for a while: the broker's auto-creation never kicks in
            await asyncio.sleep(0.05)
    assert not finder.done()
    await ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=2)])  # the topic's owner
    tps = await asyncio.wait_for(finder, 30)
    assert [tp.partition for tp in tps] == [0, 1]  # the owner's topic, not an auto-created one
    assert await topic_partitions(kafka_bootstrap, name, client_id="t") == tps
