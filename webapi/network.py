"""GET /network: the road network the producer drives, read from its compacted topic.

The producer publishes the network once at start (``producer/network.py``: key = network
id, value = gzip of a GeoJSON FeatureCollection). :class:`NetworkReader` reads the topic from
its beginning and then follows it, keeping only the newest valid network (one document,
however many were published). A record is inflated at most to
``common.roadnet.MAX_NETWORK_INFLATED_BYTES`` and checked feature by feature
(``common.roadnet.check_network``); an invalid one is counted, logged without echoing it, and
the previous network stays. The answer is served gzipped as stored when the client
accepts gzip, else inflated once and cached; the ETag is the network id, so a client that
sends it back in ``If-None-Match`` gets 304 and no body.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from dataclasses import dataclass

from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from common.kafka import await_partitions, backoff, make_consumer, resume
from common.logs import RateLimitedLog
from common.roadnet import (
    MAX_NETWORK_ID_LEN,
    MAX_NETWORK_INFLATED_BYTES,
    NetworkError,
    load_network_json,
    valid_network_id,
)
from webapi.lifecycle import cancel_and_wait, finish_first
from webapi.params import ApiError
from webapi.settings import Settings

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 16 * 1024 * 1024 + 65_536
"""Fetch size of the network topic (its ``max.message.bytes``); a record that could hold a
network is far smaller (``MAX_VALUE_BYTES``)."""
MAX_VALUE_BYTES = MAX_NETWORK_INFLATED_BYTES + 65_536
"""Largest record value read: the JSON, or its gzip (never much bigger than what it holds)."""
MEDIA_TYPE = "application/geo+json"


@dataclass(frozen=True, slots=True)
class Network:
    network_id: str
    gz: bytes  # the GeoJSON, gzipped

    @property
    def etag(self) -> str:
        return f'"{self.network_id}"'


def _valid_id(key: bytes | None) -> str | None:
    if key is None or not 1 <= len(key) <= MAX_NETWORK_ID_LEN:
        return None
    text = key.decode("ascii", "replace")
    return text if valid_network_id(text) else None


def _inflate(value: bytes) -> bytes:
    """One gzip member, inflated at most to the cap: memory is bounded by the cap, however
    much the record would inflate to."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        raw = inflater.decompress(value, MAX_NETWORK_INFLATED_BYTES + 1)
    except zlib.error:
        raise NetworkError("not a valid gzip stream") from None
    if len(raw) > MAX_NETWORK_INFLATED_BYTES:
        raise NetworkError(f"inflates to more than {MAX_NETWORK_INFLATED_BYTES:,} bytes")
    if not inflater.eof:
        raise NetworkError("truncated gzip stream")
    if inflater.unused_data:  # a second member would be served, and inflated, unchecked
        raise NetworkError("data after the gzip stream")
    return raw


def check_record(key: bytes | None, value: bytes | None) -> Network:
    """A record of the network topic -> a Network; NetworkError (naming the rule broken,
    never echoing the input) if it is not one the maps can draw."""
    network_id = _valid_id(key)
    if network_id is None:
        raise NetworkError("key is not a network id (1 to 64 letters, digits, '.', '_', '-')")
    if not value or len(value) > MAX_VALUE_BYTES:
        raise NetworkError(f"value is empty or more than {MAX_VALUE_BYTES:,} bytes")
    if value[:2] == b"\x1f\x8b":
        raw, gz = _inflate(value), value
    else:
        raw, gz = value, b""
    doc = load_network_json(raw)
    if doc.get("network_id", network_id) != network_id:
        raise NetworkError("network_id differs from the record's key")
    return Network(network_id, gz or gzip.compress(value, compresslevel=6, mtime=0))


def parse(key: bytes | None, value: bytes | None) -> Network | None:
    """A record of the network topic -> a Network, or None if it is not a valid one."""
    try:
        return check_record(key, value)
    except NetworkError:
        return None


class NetworkReader:
    """Background task: the newest valid network on ``KAFKA_NETWORK_TOPIC``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.kafka_network_topic
        self.current: Network | None = None
        self.invalid = 0
        self.task: asyncio.Task[None] | None = None
        self._inflated: tuple[str, bytes] | None = None
        self._log = RateLimitedLog(log)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="webapi-network-reader")

    async def close(self) -> None:
        await cancel_and_wait(self.task)

    def inflated(self, net: Network) -> bytes:
        """The plain JSON of ``net`` (cached for the current network only)."""
        if self._inflated is None or self._inflated[0] != net.network_id:
            self._inflated = (net.network_id, gzip.decompress(net.gz))
        return self._inflated[1]

    def take(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            self.withdraw(key)
            return
        try:
            net = check_record(key, value)
        except NetworkError as exc:
            self.refuse(exc)
            return
        self.current = net

    def withdraw(self, key: bytes | None) -> None:
        """A tombstone: that network is withdrawn."""
        if self.current is not None and key is not None and \
                key.decode("ascii", "replace") == self.current.network_id:
            self.current = None

    def refuse(self, exc: NetworkError) -> None:
        """An invalid record: counted, logged (rate-limited); the current network stays."""
        self.invalid += 1
        self._log.warning("invalid", "skipped an invalid road network record on %s: %s (%d so "
                          "far; the previous network, if any, is kept)", self.topic, exc,
                          self.invalid)

    async def take_async(self, key: bytes | None, value: bytes | None) -> None:
        """``take``, with the inflating and checking (up to about a second for a network at
        the cap) in a worker thread so that the web API keeps answering meanwhile."""
        if value is None:
            self.withdraw(key)
            return
        try:
            net = await asyncio.to_thread(check_record, key, value)
        except NetworkError as exc:
            self.refuse(exc)
            return
        self.current = net

    async def run(self) -> None:
        attempt = 0
        position: dict[TopicPartition, int] = {}
        while True:
            consumer = make_consumer(self.settings, client_id="fleetstream-webapi-network",
                                     group_id=None, enable_auto_commit=False,
                                     auto_offset_reset="earliest", fetch_max_wait_ms=500,
                                     max_partition_fetch_bytes=MAX_RECORD_BYTES,
                                     fetch_max_bytes=4 * MAX_RECORD_BYTES)
            try:
                await finish_first(consumer.start())
                tps = await await_partitions(self.settings, self.topic, poll_s=2.0,
                                             client_id="fleetstream-webapi-network-admin")
                await resume(consumer, tps, position)
                attempt = 0
                while True:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=50)
                    for tp, records in batch.items():
                        for rec in records:
                            await self.take_async(rec.key, rec.value)
                        if records:
                            position[tp] = records[-1].offset + 1
            except KafkaError as exc:
                self._log.warning("kafka", "network reader: %s; retrying", exc)
            finally:
                await finish_first(consumer.stop())
            attempt += 1
            await asyncio.sleep(backoff(attempt))


def _matches(header: str, etag: str) -> bool:
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def accepts_gzip(header: str) -> bool:
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def network_response(request: web.Request, reader: NetworkReader) -> web.Response:
    net = reader.current
    if net is None:
        raise ApiError(404, f"no road network has been published yet on topic "
                            f"{reader.topic!r}; the producer (python -m producer) publishes "
                            "the network it drives when it starts")
    headers = {"ETag": net.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("If-None-Match", ""), net.etag):
        return web.Response(status=304, headers=headers)
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        body = net.gz
    else:
        body = reader.inflated(net)
    return web.Response(body=body, headers={**headers, "Content-Type": MEDIA_TYPE})
