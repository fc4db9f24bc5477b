"""A trip's route and violation segments, read back from the telemetry topic.

The route is the vehicle's telemetry between the trip's start and its end (now, while it is
in progress), read with WS /replay's reader (:class:`webapi.replay.Replay`: offsets_for_times,
every record validated, event-time order) from the one partition the vehicle's key maps to
(the producer partitions by key with Kafka's default murmur2 partitioner). Violation
segments are the runs of consecutive speeding / over-redline points of the full route; the
route itself is then downsampled evenly to at most WEBAPI_TRIP_ROUTE_POINTS points (first
and last kept).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from common.kafka import make_consumer
from webapi.lifecycle import finish_first
from webapi.params import ApiError
from webapi.replay import Replay, ReplayRequest
from webapi.settings import Settings

READ_TIMEOUT_S = 20.0
SEGMENT_POINTS = 500
"""Most points of one violation segment (downsampled evenly beyond)."""
FLAGS = (("speeding", "speeding"), ("over_redline", "rpm_over_redline"))


def downsample(items: list[Any], cap: int) -> list[Any]:
    """At most ``cap`` items picked evenly, the first and the last always among them."""
    n = len(items)
    if n <= cap:
        return items
    if cap <= 1:
        return items[-1:]
    return [items[round(i * (n - 1) / (cap - 1))] for i in range(cap)]


def violation_segments(route: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of consecutive flagged points, per kind, ordered by start."""
    out: list[dict[str, Any]] = []
    for kind, flag in FLAGS:
        run: list[dict[str, Any]] = []
        for point in [*route, None]:
            if point is not None and point.get(flag):
                run.append(point)
                continue
            if run:
                out.append({"kind": kind, "started_at": run[0]["timestamp"],
                            "ended_at": run[-1]["timestamp"],
                            "points": downsample([[p["lon"], p["lat"]] for p in run],
                                                 SEGMENT_POINTS),
                            "max_speed_kmh": max(p["speed_kmh"] for p in run)})
                run = []
    out.sort(key=lambda s: (s["started_at"], s["kind"]))
    return out


def route_point(raw: bytes) -> dict[str, Any]:
    ev = orjson.loads(raw)
    loc = ev["location"]
    return {"timestamp": ev["timestamp"], "lat": loc["lat"], "lon": loc["lon"],
            "speed_kmh": ev["speed_kmh"], "speeding": ev["speeding"],
            "rpm_over_redline": ev["rpm_over_redline"], "seq": ev.get("seq")}


async def read_route(settings: Settings, vehicle_id: str, since: float,
                     until: float | None) -> list[dict[str, Any]]:
    """The vehicle's telemetry points in [since, until or now], oldest first (full): from
    its key's partition, or, if that has none (a writer that partitions otherwise), from
    every partition."""
    points = await _read(settings, vehicle_id, since, until, by_key=True)
    if not points:
        points = await _read(settings, vehicle_id, since, until, by_key=False)
    return points


async def _read(settings: Settings, vehicle_id: str, since: float, until: float | None, *,
                by_key: bool) -> list[dict[str, Any]]:
    end = time.time() if until is None else until
    end = min(max(end, since), since + settings.replay_max_range_s)
    req = ReplayRequest(since, end, None, frozenset({vehicle_id}), False)
    consumer = make_consumer(settings, client_id="fleetstream-webapi-trip-route",
                             group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_partition_fetch_bytes=1 << 20,
                             fetch_max_wait_ms=100)
    replay = Replay(settings, req, consumer)
    points: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            try:
                await replay.setup()
            except ApiError as exc:
                if exc.status in (404, 410):  # nothing recorded / beyond retention
                    return []
                raise
            partitions = sorted(f.tp.partition for f in replay.feeds)
            if by_key and partitions:
                mine = DefaultPartitioner()(vehicle_id.encode(), partitions, partitions)
                replay.feeds = [f for f in replay.feeds if f.tp.partition == mine]
            async for _ts, raw in replay.events():
                points.append(route_point(raw))
    except TimeoutError:
        raise ApiError(503, f"reading the route from Kafka took longer than "
                            f"{READ_TIMEOUT_S:g} s; try again") from None
    except KafkaError as exc:
        raise ApiError(503, f"Kafka: {exc}") from None
    finally:
        await finish_first(consumer.stop())
    return points
