"""The 3-broker cluster for cluster-mode tests and the cluster benchmark, and what they read
from it: end offsets, whole topics (read_committed), per-car sequences."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.kafka import make_admin, make_consumer
from tools.cluster import KafkaCluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three combined KRaft nodes on free loopback ports (RF 3, min.insync.replicas 2)."""
    cluster = KafkaCluster.on_free_ports(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> end offset (the high watermark: what is replicated to the ISR)."""
    from aiokafka import TopicPartition

    consumer = make_consumer(bootstrap, client_id="test-offsets", group_id=None,
                             request_timeout_ms=10_000)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_committed(bootstrap: str, topic: str, *, idle_s: float = 5.0,
                         timeout_s: float = 600.0) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now, read with
    isolation_level=read_committed."""
    ends = await end_offsets(bootstrap, topic)
    consumer = make_consumer(bootstrap, topic, client_id="test-read-all", group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             isolation_level="read_committed", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    out: list[Any] = []
    done: dict[int, int] = defaultdict(int)
    try:
        idle = 0.0
        async with asyncio.timeout(timeout_s):
            while idle < idle_s and any(done[p] < end for p, end in ends.items()):
                batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
                got = 0
                for tp, recs in batch.items():
                    out.extend(recs)
                    got += len(recs)
                    if recs:
                        done[tp.partition] = recs[-1].offset + 1
                idle = 0.0 if got else idle + 0.5
    finally:
        await consumer.stop()
    return out


def sequences(records: list[Any]) -> dict[str, list[int]]:
    """vehicle id -> its seqs in topic order (keys must match the event's vehicle id)."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        doc = orjson.loads(rec.value)
        assert rec.key.decode() == doc["vehicle_id"]
        seqs[doc["vehicle_id"]].append(doc["seq"])
    return seqs


async def broker_count(bootstrap: str) -> int:
    admin = make_admin(bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return len((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
        return json.load(resp)


def service(module: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m module`` from the project root with ``env`` on top of ours."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,  # noqa: S603
                                env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
