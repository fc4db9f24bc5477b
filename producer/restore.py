"""Reading cars back from the telemetry topic: each car's last published event.

A producer instance that takes over a shard (a telemetry partition, see producer/shards.py)
reads that partition backwards from its end, in chunks that double, until it has the last
event of every car it wants, or reaches the partition's beginning (a car never published
is a fresh one). Each record is read as every reader of the topic reads it
(:func:`common.contract.read_event`), and a car is continued only from a valid event;
``last_seen`` turns those events into the arrays :func:`producer.fleet.restore_fleet`
continues the cars from.

The previous owner flushes (every record acknowledged) before it gives a shard up, so the
tail read here is complete; after a crash it is whatever the broker acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from common.contract import MAX_CLOCK_SKEW_S, TelemetryEvent, read_event
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
                           first_chunk: int = FIRST_CHUNK) -> dict[bytes, TelemetryEvent]:
    """Key -> the last usable event (:func:`usable`) of each key of ``wanted`` (partition ->
    keys) found in ``topic``; keys never published are missing from the answer."""
    found: dict[bytes, TelemetryEvent] = {}
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
                      keys: set[bytes]) -> dict[bytes, TelemetryEvent]:
    """The last usable event of each key of ``keys`` among offsets [lo, hi) of ``tp``: the
    last record of each, read; for the rare key whose last record is not usable, the range
    is read again checking each of its records."""
    last = await _scan(consumer, tp, lo, hi, keys, check=False)
    if bad := {k for k, v in last.items() if usable(v) is None}:
        last = {k: v for k, v in last.items() if k not in bad}
        last.update(await _scan(consumer, tp, lo, hi, bad, check=True))
    events = {k: usable(v) for k, v in last.items()}
    return {k: e for k, e in events.items() if e is not None}


async def _scan(consumer: AIOKafkaConsumer, tp: TopicPartition, lo: int, hi: int,
                keys: set[bytes], *, check: bool) -> dict[bytes, bytes]:
    consumer.seek(tp, lo)
    last: dict[bytes, bytes] = {}
    pos = lo
    while pos < hi:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
        for rec in batch.get(tp, []):
            if (rec.offset < hi and rec.key in keys and rec.value is not None
                    and (not check or usable(rec.value) is not None)):
                last[rec.key] = rec.value
        pos = await consumer.position(tp)
    return last


def usable(value: bytes) -> TelemetryEvent | None:
    """The telemetry event a car can be continued from, or None: anything else on the topic
    (a malformed record under a car's key, a value the contract refuses, an event stamped
    more than MAX_FUTURE past now) is passed over, and the read goes on further back."""
    try:
        event = read_event(value)
    except ValidationError:
        return None
    return event if event.timestamp <= datetime.now(UTC) + MAX_FUTURE else None


_FAULT_INDEX = {code: i for i, code in enumerate(DTC_CODES)}
_CLASS_INDEX = {name: i for i, name in enumerate(VEHICLE_TYPES)}


def last_seen(events: list[TelemetryEvent], now: datetime, heartbeat_s: float) -> LastSeen:
    """The state of each car as its last event tells it at time ``now``."""
    ages = [(now - e.timestamp).total_seconds() for e in events]
    return LastSeen(
        lat=np.array([e.location.lat for e in events], dtype=float),
        lon=np.array([e.location.lon for e in events], dtype=float),
        heading=np.array([e.heading_deg for e in events], dtype=float),
        speed_kmh=np.array([e.speed_kmh for e in events], dtype=float),
        gear=np.array([e.gear for e in events], dtype=np.int8),
        rpm=np.array([e.engine_rpm for e in events], dtype=np.int32),
        fuel=np.array([e.fuel_level_pct for e in events], dtype=float),
        odo=np.array([e.odometer_km for e in events], dtype=float),
        fault=np.array([_FAULT_INDEX.get(e.fault_codes[0], -1) if e.fault_codes else -1
                        for e in events], dtype=np.int16),
        vclass=np.array([_CLASS_INDEX.get(e.vehicle_type, 0) for e in events], dtype=np.int8),
        parked=np.array([not e.ignition for e in events], dtype=bool),
        next_seq=np.array([e.seq for e in events], dtype=np.int64) + 1,
        report_in=heartbeat_s - np.array(ages, dtype=float))
