"""Reading cars back from the telemetry topic: each car's last published event.

A producer instance that takes over a shard (a telemetry partition, see producer/shards.py)
reads that partition backwards from its end, in chunks that double, until it has the last
event of every car it wants, or reaches the partition's beginning (a car never published
is a fresh one). ``last_seen`` turns those events into the arrays
:func:`producer.fleet.restore_fleet` continues the cars from.

The previous owner flushes (every record acknowledged) before it gives a shard up, so the
tail read here is complete; after a crash it is whatever the broker acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from common.contract import MAX_CLOCK_SKEW_S, TelemetryEvent
from common.kafka import Target, make_consumer
from producer.fleet import LastSeen
from producer.vehicle import DTC_CODES, VEHICLE_TYPES

log = logging.getLogger(__name__)
FIRST_CHUNK = 1_000  # records read back first per partition (doubling, up to MAX_CHUNK)
MAX_CHUNK = 256_000
MAX_FUTURE = timedelta(seconds=MAX_CLOCK_SKEW_S)
"""An event stamped further ahead of this clock is not a car's last state (a stray year-9999
record would keep a parked car silent for ages)."""


async def read_last_events(target: Target, topic: str, wanted: Mapping[int, set[bytes]], *,
                           first_chunk: int = FIRST_CHUNK) -> dict[bytes, bytes]:
    """Key -> value of the last record of each key of ``wanted`` (partition -> keys) found
    in ``topic``; keys never published are missing from the answer."""
    found: dict[bytes, bytes] = {}
    todo = {p: set(keys) for p, keys in wanted.items() if keys}
    if not todo:
        return found
    consumer = make_consumer(target, client_id="fleetstream-restore", group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(todo)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:
            keys = todo[tp.partition]
            end, begin = ends[tp], starts[tp]
            chunk = max(first_chunk, 4 * len(keys))
            read = 0
            while keys and end > begin:
                lo = max(begin, end - chunk)
                last = await _read_range(consumer, tp, lo, end, keys)
                read += end - lo
                found.update(last)
                keys -= last.keys()
                end, chunk = lo, min(chunk * 2, MAX_CHUNK)
            log.info("restore: read back %d records of %s: %d cars found, %d fresh", read, tp,
                     len(wanted[tp.partition]) - len(keys), len(keys))
    finally:
        await consumer.stop()
    return found


async def _read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, lo: int, hi: int,
                      keys: set[bytes]) -> dict[bytes, bytes]:
    """The last usable record of each key of ``keys`` among offsets [lo, hi) of ``tp``:
    the last one of each, checked; for the rare key whose last record is not usable, the
    range is read again checking each of its records."""
    last = await _scan(consumer, tp, lo, hi, keys, check=False)
    bad = {k for k, v in last.items() if not usable(v)}
    if bad:
        for k in bad:
            del last[k]
        last.update(await _scan(consumer, tp, lo, hi, bad, check=True))
    return last


async def _scan(consumer: AIOKafkaConsumer, tp: TopicPartition, lo: int, hi: int,
                keys: set[bytes], *, check: bool) -> dict[bytes, bytes]:
    consumer.seek(tp, lo)
    last: dict[bytes, bytes] = {}
    pos = lo
    while pos < hi:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
        for rec in batch.get(tp, []):
            if (rec.offset < hi and rec.key in keys and rec.value is not None
                    and (not check or usable(rec.value))):
                last[rec.key] = rec.value
        pos = await consumer.position(tp)
    return last


def usable(value: bytes) -> bool:
    """A telemetry event a car can be continued from (anything else on the topic, e.g. a
    malformed record under a car's key or an event stamped more than MAX_FUTURE past now, is
    passed over: the read goes on further back)."""
    try:
        event = TelemetryEvent.model_validate_json(value)
    except ValidationError:
        return False
    return event.timestamp <= datetime.now(UTC) + MAX_FUTURE


_FAULT_INDEX = {code: i for i, code in enumerate(DTC_CODES)}
_CLASS_INDEX = {name: i for i, name in enumerate(VEHICLE_TYPES)}


def last_seen(values: list[bytes], now: datetime, heartbeat_s: float) -> LastSeen:
    """The state of each car as its last event (JSON ``values``) tells it at time ``now``."""
    docs = [orjson.loads(v) for v in values]

    def col(name: str, default: object, dtype: type) -> np.ndarray:
        return np.array([d.get(name, default) for d in docs], dtype=dtype)

    ages = np.array([(now - datetime.fromisoformat(d["timestamp"])).total_seconds()
                     for d in docs], dtype=float)
    faults = [d.get("fault_codes") or [] for d in docs]
    return LastSeen(
        lat=np.array([d["location"]["lat"] for d in docs], dtype=float),
        lon=np.array([d["location"]["lon"] for d in docs], dtype=float),
        heading=col("heading_deg", 0.0, float), speed_kmh=col("speed_kmh", 0.0, float),
        gear=col("gear", 0, np.int8), rpm=col("engine_rpm", 0, np.int32),
        fuel=col("fuel_level_pct", 100.0, float), odo=col("odometer_km", 0.0, float),
        fault=np.array([_FAULT_INDEX.get(f[0], -1) if f else -1 for f in faults],
                       dtype=np.int16),
        vclass=np.array([_CLASS_INDEX.get(d.get("vehicle_type", "car"), 0) for d in docs],
                        dtype=np.int8),
        parked=np.array([not d.get("ignition", True) for d in docs], dtype=bool),
        next_seq=col("seq", 0, np.int64) + 1, report_in=heartbeat_s - ages)
