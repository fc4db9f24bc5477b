"""The telemetry consumer: Kafka -> validation -> store -> WebSocket hub.

No consumer group: every web API instance reads every partition of the topic, so each one
has the whole fleet. On start it backfills: for each partition it seeks back to the first
offset newer than ``backfill_seconds`` ago, but no more than ``backfill_max_per_partition``
events, so a restarted web API shows history at once. Partitions added to the topic while it
runs are picked up without a restart: the client refreshes the topic's metadata every
WEBAPI_METADATA_REFRESH_S and a new partition is read from its beginning. After a lost
connection it resumes where it was, so nothing is replayed twice. A client that takes nothing
for WEBAPI_STALL_S while the topic has records past its positions is replaced the same way,
and so is one that fails with an unexpected error: the consumer itself never ends before
shutdown.

A fetch is validated and published in turns of CHUNK records per partition with the event
loop between turns, so per-event WebSocket clients get the first events of a burst while the
rest is still being validated (see :meth:`TelemetryConsumer._take_fetched`).

A record the Kafka client cannot decode (a batch compressed with a codec it lacks, a
corrupt batch) is counted as malformed (``undecodable``) and skipped, one offset at a time,
never treated as a connection error: that used to restart the consumer and replay history
over and over. Records are fetched partition by partition so such an error names its
partition and loses no record of the others.

Each event is stored with its time of receipt (this server's clock), which decides when a
silent vehicle leaves the live view. A backfilled record that Kafka timestamped longer
than WEBAPI_VEHICLE_TIMEOUT_S ago counts as received then, so a web API restarted after a
run does not bring back the cars of that run as live.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CorruptRecordException, KafkaError, UnsupportedCodecError
from aiokafka.structs import ConsumerRecord

from common.kafka import add_new_partitions, await_partitions, backoff, make_consumer
from common.logs import RateLimitedLog
from webapi.decode import Entry, Limits, Malformed, decode
from webapi.hub import Hub
from webapi.lifecycle import cancel_and_wait, finish_first
from webapi.metrics import Metrics
from webapi.settings import Settings
from webapi.store import TelemetryStore

log = logging.getLogger(__name__)

MAX_RECORDS = 5000
CHUNK = 16
"""Records taken from each partition in turn before the event loop gets a turn (see
:meth:`TelemetryConsumer._take_fetched`)."""


class Stalled(Exception):  # noqa: N818 - a state of the consumer, named as the log says it
    """The client receives nothing although the topic has records it has not read."""


async def position(client: AIOKafkaConsumer, tp: TopicPartition, wait_s: float) -> int:
    """The client's position in ``tp``. aiokafka waits for a position being reset (after an
    out-of-range offset) as long as that takes, which needs the partition's leader: at most
    ``wait_s`` here (WEBAPI_STALL_S), then :class:`Stalled`."""
    try:
        return await asyncio.wait_for(client.position(tp), wait_s)
    except TimeoutError:
        raise Stalled(f"no position in partition {tp.partition} within {wait_s:g} s") from None


def undecodable(exc: BaseException) -> bool:
    """Whether an error from ``getmany`` means a record batch could not be decoded (codec
    missing, decompression failed, corrupt batch) rather than a broken connection."""
    if isinstance(exc, UnsupportedCodecError | CorruptRecordException):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, KafkaError)


class TelemetryConsumer:
    def __init__(self, settings: Settings, store: TelemetryStore, hub: Hub,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.client: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self.malformed: dict[str, int] = {}
        self.assigned = asyncio.Event()
        self.stopped = False
        self._evicted_seen = 0
        self._log = RateLimitedLog(log)
        self.limits = Limits(max_bytes=settings.max_message_bytes,
                             max_age_s=settings.max_event_age_s,
                             max_future_s=settings.max_event_future_s)
        self.positions: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self.connects = 0  # consumer clients started (1 unless the connection was lost)
        self.stall_s = settings.stall_s

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="webapi-telemetry-consumer")

    async def close(self) -> None:
        await cancel_and_wait(self.task)

    async def run(self) -> None:
        attempt = 0
        try:
            while True:
                client = make_consumer(
                    self.settings, client_id="fleetstream-webapi", group_id=None,
                    enable_auto_commit=False, auto_offset_reset="latest",
                    fetch_max_wait_ms=100, max_partition_fetch_bytes=4 << 20,
                    metadata_max_age_ms=int(self.settings.metadata_refresh_s * 1000),
                )
                self.client = client
                self.connects += 1
                try:
                    await finish_first(client.start())
                    await self._assign(client)
                    attempt = 0
                    await self._loop(client)
                except (KafkaError, Stalled) as exc:
                    self._log.warning("kafka", "telemetry consumer: %s; retrying", exc)
                except Exception:  # never a dead consumer behind an API that says ok
                    log.exception("telemetry consumer failed; starting a new client")
                finally:
                    await finish_first(client.stop())
                attempt += 1
                await asyncio.sleep(backoff(attempt))
        finally:
            self.stopped = True

    async def _assign(self, client: AIOKafkaConsumer) -> None:
        topic = self.settings.kafka_topic
        tps = await await_partitions(
            self.settings, topic, poll_s=1.0, client_id="fleetstream-webapi-admin",
            waiting=lambda: self._log.warning("no-topic", "waiting for topic %r to exist", topic))
        client.assign(tps)
        await finish_first(self._seek_backfill(client, tps))
        for tp in tps:  # after a reconnect: resume, do not replay (nor skip what came since)
            if tp in self.positions:
                client.seek(tp, self.positions[tp])
            else:
                self.positions[tp] = await self._position(client, tp)
        self.assigned.set()

    async def _seek_backfill(self, client: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        s = self.settings
        end = await client.end_offsets(tps)
        if s.backfill_seconds <= 0 or s.backfill_max_per_partition <= 0:
            for tp in tps:
                client.seek(tp, end[tp])
            return
        begin = await client.beginning_offsets(tps)
        since_ms = int((time.time() - s.backfill_seconds) * 1000)
        by_time = await client.offsets_for_times({tp: since_ms for tp in tps})
        for tp in tps:
            found = by_time.get(tp)
            offset = end[tp] if found is None else found.offset
            offset = max(offset, end[tp] - s.backfill_max_per_partition, begin[tp])
            client.seek(tp, offset)

    async def _loop(self, client: AIOKafkaConsumer) -> None:
        tps = sorted(client.assignment())
        store = self.store
        probe_ms = 0
        refresh_s = self.settings.metadata_refresh_s
        check_at = time.monotonic() + refresh_s
        taken_at = time.monotonic()  # when a record was last taken (or the loop started)
        while True:
            if time.monotonic() >= check_at:
                check_at = time.monotonic() + refresh_s
                # partitions added to the topic join, read from their beginning
                tps = await add_new_partitions(client, self.settings.kafka_topic, tps,
                                               self.positions, self._position)
            fetched: list[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = []
            for tp in tps:
                try:
                    batch = await client.getmany(tp, timeout_ms=probe_ms, max_records=MAX_RECORDS)
                except Exception as exc:
                    if not undecodable(exc):
                        raise
                    await self._skip_undecodable(client, tp, exc)
                    continue
                if batch.get(tp):
                    fetched.append((tp, batch[tp]))
            got = await self._take_fetched(fetched)
            self.hub.release()
            probe_ms = 0
            if not got:  # wait for data; one record at most, so an error here loses nothing
                try:
                    batch = await client.getmany(timeout_ms=500, max_records=1)
                except Exception as exc:
                    if not undecodable(exc):
                        raise
                    # Some partition's batch is undecodable, but the error does not say which:
                    # the next pass waits on each partition alone, so its refetch fails there.
                    batch, probe_ms = {}, 200
                for tp, records in batch.items():  # released with the rest of its burst
                    self._take(tp, records)
                    got += len(records)
            now = time.monotonic()
            if got:
                taken_at = now
            elif now - taken_at >= self.stall_s:
                taken_at = now  # asked again one window later
                await self._check_progress(client, tps)
            self.metrics.vehicles.set(len(store.latest))
            if store.evicted_total > self._evicted_seen:
                self.metrics.evicted.inc(store.evicted_total - self._evicted_seen)
                self._evicted_seen = store.evicted_total

    async def _position(self, client: AIOKafkaConsumer, tp: TopicPartition) -> int:
        return await position(client, tp, self.stall_s)

    async def _check_progress(self, client: AIOKafkaConsumer,
                              tps: list[TopicPartition]) -> None:
        """Nothing taken for WEBAPI_STALL_S: raise :class:`Stalled` if the topic's end offsets
        are past the client's positions (or it cannot say within as long), so that :meth:`run`
        replaces the client, which resumes from ``positions``. Once, after a broker of a
        cluster was killed and restarted, a web API received nothing for minutes while the
        producers wrote on; a new client (new connections, fresh metadata) reads on. An idle
        topic (the simulation stopped) passes."""
        try:
            end = await asyncio.wait_for(client.end_offsets(tps), self.stall_s)
            here = {tp: await self._position(client, tp) for tp in tps}
        except TimeoutError:
            raise Stalled(f"no end offsets or positions within {self.stall_s:g} s") from None
        unread = {tp.partition: end[tp] - here[tp] for tp in tps if end[tp] > here[tp]}
        if unread:
            raise Stalled(f"nothing received for {self.stall_s:g} s while the topic has records "
                          f"past this consumer's positions (unread per partition: {unread})")

    async def _take_fetched(
            self, fetched: list[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]) -> int:
        """Take what one pass fetched: CHUNK records of each partition in turn, and between
        two turns the event loop runs, so WebSocket senders ship each chunk as soon as it is
        validated. Validating costs about 10 us per event: partition after partition, the
        first events of the last partition of a tick of 1,000 cars would wait for all the
        others (tens of ms on a busy machine); taken in turns, a burst spread over the
        partitions goes out roughly in the order it was produced. A partition's own events
        keep their order. Batch clients get the pass in one frame (see Hub.publish's
        ``hold``). Returns the records taken."""
        for start in range(0, max((len(r) for _, r in fetched), default=0), CHUNK):
            if start:
                await asyncio.sleep(0)
            for tp, records in fetched:
                self._take(tp, records[start:start + CHUNK])
        return sum(len(records) for _, records in fetched)

    def _take(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if not records:
            return
        limits, store, now = self.limits, self.store, time.time()
        old = now - store.timeout_s
        entries: list[Entry] = []
        for rec in records:
            try:
                entry = decode(rec.value, rec.key, limits, now)
            except Malformed as bad:
                self._malformed(bad, rec.partition, rec.offset)
                continue
            kafka_ts = rec.timestamp / 1000.0 if rec.timestamp and rec.timestamp > 0 else now
            store.add(entry, seen=now if kafka_ts >= old else kafka_ts)
            entries.append(entry)
        self.positions[tp] = records[-1].offset + 1
        if entries:
            self.metrics.consumed.inc(len(entries))
            self.hub.publish(entries, hold=True)  # batch groups: released after each pass

    async def _skip_undecodable(self, client: AIOKafkaConsumer, tp: TopicPartition,
                                exc: Exception) -> None:
        """Count the record at the partition's position as undecodable and seek past it.

        The client does not say where the bad batch ends, so a batch of n records costs n
        fetches; each is counted, as each record is lost to us.
        """
        offset = await self._position(client, tp)
        client.seek(tp, offset + 1)
        self.positions[tp] = offset + 1
        detail = f"{type(exc).__name__}: {exc}"
        self._malformed(Malformed("undecodable", detail), tp.partition, offset)

    def _malformed(self, bad: Malformed, partition: int, offset: int) -> None:
        self.malformed[bad.kind] = self.malformed.get(bad.kind, 0) + 1
        self.metrics.malformed.labels(bad.kind).inc()
        self._log.warning(bad.kind, "skipped malformed message (%s) at partition %d offset %d: %s",
                          bad.kind, partition, offset, bad.detail[:200])
