"""WS /replay: a recorded time range of the whole fleet, from Kafka, in event-time order.

``/replay?since=&until=&speed=&vehicle_id=&batch=`` (since, until: ISO 8601, required;
since < until; at most WEBAPI_REPLAY_MAX_RANGE_S apart; speed: 1..100 times real time,
default 1, or ``max``: as fast as the client reads).

Each replay has a Kafka consumer of its own (no group, no commits). For every partition it
seeks with ``offsets_for_times`` to ``since`` less a slack (Kafka's record time is the send
time, a little after the event's own), reads up to the topic's end as of the start (or until
its events are a minute past ``until``), keeps the valid events of ``[since, until]`` (and of
the vehicles asked for) and merges the partitions by event time: an event is sent once every
partition still being read has reached its time (a watermark), so at most one fetch (2,000
records) per partition is buffered, however long the range. Every record is validated as
the live consumer does (malformed ones are skipped and counted), which bounds the speed of
``speed=max``: about 25,000 to 30,000 events/s here, against 160,000 records/s for a bare
consumer reading the same topic.

Pacing: the first event is sent at once; each later one when ``(its time - the first's) /
speed`` has passed, so the whole fleet moves in sync. Frames: ``{"type":"event","data":
{event}}``, or with ``batch=1`` ``{"type":"batch","items":[...]}`` holding the events of
each 100 ms of event time; then ``{"type":"end","count":N,"skipped":M}`` (M: malformed
records passed over) and the server closes the socket. A failure mid-way sends
``{"type":"error","error":"..."}`` instead of the end frame.

A range that starts before the oldest event the topic still keeps (retention has deleted
older ones: some partition's log starts after offset 0) is refused before the handshake
with 410 and ``earliest_available``, the event time of the oldest valid event kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import WSMsgType, web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from common.kafka import make_consumer, topic_partitions
from webapi.decode import Limits, Malformed, decode
from webapi.keys import CORS, REPLAYS, SETTINGS, WEBSOCKETS
from webapi.lifecycle import cancel_and_wait, finish_first
from webapi.params import (
    ApiError,
    bad_param,
    bool_param,
    one_value,
    time_param,
    vehicles_param,
)
from webapi.settings import Settings

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 1.0, 100.0
SLACK_S = 60.0
"""How far Kafka's record time may be after the event time (send lag) or before it."""
FETCH_RECORDS = 2000
BATCH_S = 0.1
SETUP_TIMEOUT_S = 15.0


def speed_param(raw: str | None) -> float | None:
    """``speed``: a number 1..100 (times real time), or ``max`` (None: no pacing)."""
    if raw is None:
        return 1.0
    if raw.strip().lower() == "max":
        return None
    try:
        value = float(raw) if raw.isascii() and len(raw) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not MIN_SPEED <= value <= MAX_SPEED:
        raise bad_param("speed", f"must be a number from {MIN_SPEED:g} to {MAX_SPEED:g} or "
                                 f"'max', got {raw[:40]!r}")
    return value


@dataclass(frozen=True)
class ReplayRequest:
    since: float
    until: float
    speed: float | None
    vehicles: frozenset[str] | None
    batch: bool


def parse_request(request: web.Request, settings: Settings) -> ReplayRequest:
    q = request.query
    since, until = time_param(q, "since"), time_param(q, "until")
    if since is None:
        raise bad_param("since", "required: the start of the range, ISO 8601")
    if until is None:
        raise bad_param("until", "required: the end of the range, ISO 8601")
    if not since < until:
        raise bad_param("until", "must be after since")
    if until - since > settings.replay_max_range_s:
        raise bad_param("until", f"the range is longer than {settings.replay_max_range_s:g} s "
                                 "(WEBAPI_REPLAY_MAX_RANGE_S)")
    return ReplayRequest(since, until, speed_param(one_value(q, "speed")), vehicles_param(q),
                         bool_param(q, "batch"))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass
class Feed:
    tp: TopicPartition
    end: int
    done: bool = False
    high: float = -math.inf  # newest event time read from this partition


@dataclass
class Replay:
    """One replay's consumer and position; :meth:`events` yields (ts, raw) in order."""

    settings: Settings
    req: ReplayRequest
    consumer: AIOKafkaConsumer
    feeds: list[Feed] = field(default_factory=list)
    skipped: int = 0

    async def setup(self) -> None:
        """Find the partitions and offsets; raise ApiError (410) for a range beyond
        retention."""
        c, topic = self.consumer, self.settings.kafka_topic
        await c.start()
        tps = await topic_partitions(self.settings, topic,
                                     client_id="fleetstream-webapi-replay-admin")
        if not tps:
            raise ApiError(404, f"nothing recorded: topic {topic!r} does not exist")
        c.assign(tps)
        begin, end = await c.beginning_offsets(tps), await c.end_offsets(tps)
        if any(begin[tp] > 0 for tp in tps):  # retention has deleted something
            earliest = await self._earliest(tps, begin, end)
            if earliest is None or self.req.since < earliest:
                shown = iso(earliest) if earliest is not None else None
                what = (f"the oldest event still kept is from {shown}" if shown
                        else "no event is kept any more")
                raise ApiError(410, f"since: the range starts before what the topic still "
                                    f"holds (its retention deleted older events); {what}",
                               parameter="since", earliest_available=shown)
        # Kafka's record time is the send time: a little after the event time when live,
        # much later for an imported recording, at most max_event_future_s before it
        back = max(SLACK_S, self.settings.max_event_future_s)
        start = await c.offsets_for_times(
            {tp: max(0, int((self.req.since - back) * 1000)) for tp in tps})
        for tp in tps:
            found = start.get(tp)
            offset = end[tp] if found is None else found.offset
            c.seek(tp, offset)
            self.feeds.append(Feed(tp, end[tp], done=offset >= end[tp]))

    async def _earliest(self, tps: list[TopicPartition], begin: dict[TopicPartition, int],
                        end: dict[TopicPartition, int]) -> float | None:
        """The event time of the oldest valid event the topic still holds (None: none)."""
        limits = Limits(self.settings.max_message_bytes, math.inf, math.inf)
        oldest: float | None = None
        for tp in tps:
            offset = begin[tp]
            while offset < end[tp]:  # the first valid record of the partition
                self.consumer.seek(tp, offset)
                batch = await self.consumer.getmany(tp, timeout_ms=1000, max_records=100)
                records = batch.get(tp, [])
                for rec in records:
                    try:
                        ts = decode(rec.value, rec.key, limits, 0.0).ts
                    except Malformed:
                        continue
                    oldest = ts if oldest is None else min(oldest, ts)
                    offset = end[tp]
                    break
                else:
                    if records:
                        offset = records[-1].offset + 1
        return oldest

    async def _fill(self, feed: Feed, heap: list[tuple[float, int, bytes]], seq: int) -> int:
        req, limits = self.req, Limits(self.settings.max_message_bytes, math.inf, math.inf)
        stop = req.until + SLACK_S
        batch = await self.consumer.getmany(feed.tp, timeout_ms=1000,
                                            max_records=FETCH_RECORDS)
        records = batch.get(feed.tp, [])
        for rec in records:
            if rec.offset >= feed.end:
                feed.done = True
                break
            try:
                entry = decode(rec.value, rec.key, limits, 0.0)
            except Malformed:
                self.skipped += 1
                continue
            if entry.ts > stop:  # this partition has moved well past the range
                feed.done = True
                break
            feed.high = max(feed.high, entry.ts)
            if req.since <= entry.ts <= req.until and (
                    req.vehicles is None or entry.vehicle_id in req.vehicles):
                seq += 1
                heapq.heappush(heap, (entry.ts, seq, entry.raw))
        if not feed.done and await self.consumer.position(feed.tp) >= feed.end:
            feed.done = True
        return seq

    async def events(self) -> AsyncIterator[tuple[float, bytes]]:
        heap: list[tuple[float, int, bytes]] = []
        seq = 0
        while True:
            top = heap[0][0] if heap else math.inf
            blocking = [f for f in self.feeds if not f.done and f.high < top]
            if blocking:
                for feed in blocking:
                    seq = await self._fill(feed, heap, seq)
                continue
            if not heap:
                return
            ts, _, raw = heapq.heappop(heap)
            yield ts, raw


@contextlib.contextmanager
def range_read_slot(app: web.Application) -> Iterator[None]:
    """One of the WEBAPI_REPLAY_MAX_CLIENTS Kafka range reads (a WS /replay, a trip's route)
    that may run at once, each with a consumer of its own; beyond them, a 503."""
    settings, active = app[SETTINGS], app[REPLAYS]
    if len(active) >= settings.replay_max_clients:
        raise ApiError(503, f"too many replays and trip routes at once (WEBAPI_REPLAY_MAX_"
                            f"CLIENTS={settings.replay_max_clients}); try again when one ends")
    token = object()
    active.add(token)
    try:
        yield
    finally:
        active.discard(token)


async def replay_handler(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    settings = app[SETTINGS]
    app[CORS].check_origin(request)
    req = parse_request(request, settings)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "this is a WebSocket endpoint: send Upgrade: websocket")
    with range_read_slot(app):
        consumer = make_consumer(settings, client_id="fleetstream-webapi-replay",
                                 group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", max_partition_fetch_bytes=1 << 20,
                                 fetch_max_wait_ms=100)
        replay = Replay(settings, req, consumer)
        ws = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=4096)
        sender: asyncio.Task[None] | None = None
        try:
            try:
                async with asyncio.timeout(SETUP_TIMEOUT_S):
                    await replay.setup()
            except TimeoutError:
                raise ApiError(503, "Kafka did not answer in time; try again") from None
            except KafkaError as exc:
                raise ApiError(503, f"Kafka: {exc}") from None
            await ws.prepare(request)
            app[WEBSOCKETS].add(ws)  # closed on shutdown like the live ones
            sender = asyncio.create_task(_stream(ws, replay))
            async for _msg in ws:  # nothing to say; this notices the client's close
                pass
        finally:
            app[WEBSOCKETS].discard(ws)
            try:
                await cancel_and_wait(sender)
            finally:
                await finish_first(consumer.stop())
    return ws


async def _stream(ws: web.WebSocketResponse, replay: Replay) -> None:
    req, text = replay.req, WSMsgType.TEXT
    count = 0
    first: float | None = None
    start = 0.0
    pending: list[bytes] = []
    bucket = 0

    async def wait_until(ts: float) -> None:
        if req.speed is None or first is None:
            return
        due = start + (ts - first) / req.speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def flush() -> None:
        if pending:
            await ws.send_frame(b'{"type":"batch","items":[' + b",".join(pending) + b"]}", text)
            pending.clear()

    try:
        async for ts, raw in replay.events():
            if first is None:
                first, start = ts, time.monotonic()
            if req.batch:
                b = int((ts - first) / BATCH_S)
                if b != bucket:
                    await flush()
                    bucket = b
                    await wait_until(first + b * BATCH_S)
                pending.append(raw)
            else:
                await wait_until(ts)
                await ws.send_frame(b'{"type":"event","data":' + raw + b"}", text)
            count += 1
        await flush()
        await ws.send_frame(orjson.dumps({"type": "end", "count": count,
                                          "skipped": replay.skipped}), text)
    except (ConnectionError, RuntimeError):
        return  # the client went away
    except KafkaError as exc:
        log.warning("replay failed: %s", exc)
        try:
            await ws.send_frame(orjson.dumps({"type": "error", "error": f"Kafka: {exc}"}), text)
        except (ConnectionError, RuntimeError):
            return
    await ws.close()
