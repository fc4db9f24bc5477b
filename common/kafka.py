"""The one Kafka edge: clients from settings, topics, retry, compacted topics.

    producer = make_producer(settings, "fleetstream-status", acks=1)
    await ensure_topics(settings, [TopicSpec("fleetstream.control"), TopicSpec.compacted("x")])
    tps = await await_partitions(settings, "x")          # waits until the topic exists
    await retry(producer.start, "status producer", stop_event)
    state = await read_compacted(settings, "x")          # key -> latest value, tombstones gone

Error policy, once for every service and tool: a topic that exists already is fine; any
other failure to create one raises :class:`KafkaEdgeError` naming the topic, the Kafka error
and the bootstrap servers. Connection attempts are retried by :func:`retry` with exponential
back-off and jitter, logging one line per attempt in one format.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from common.lifecycle import finish_first

log = logging.getLogger("fleetstream.kafka")
T = TypeVar("T")


class KafkaEdgeError(RuntimeError):
    """Kafka could not be reached or refused what was asked; the message says what and where."""


class Stopped(Exception):
    """:func:`retry` gave up because its stop event was set."""


class KafkaSettings(Protocol):
    """What the edge reads from a service's Settings (security fields are optional)."""

    @property
    def kafka_bootstrap_servers(self) -> str: ...


Target = KafkaSettings | str
"""A service's settings, or bootstrap servers as a string."""

_SECURITY = {  # optional Settings field -> aiokafka client option
    "kafka_security_protocol": "security_protocol",
    "kafka_sasl_mechanism": "sasl_mechanism",
    "kafka_sasl_username": "sasl_plain_username",
    "kafka_sasl_password": "sasl_plain_password",
}


def client_options(target: Target, client_id: str) -> dict[str, Any]:
    """aiokafka options common to every client: bootstrap servers, client id and, when the
    settings carry them (``kafka_security_protocol``, ``kafka_sasl_*``, ``kafka_ssl_cafile``),
    the security options."""
    if isinstance(target, str):
        return {"bootstrap_servers": target, "client_id": client_id}
    options: dict[str, Any] = {"bootstrap_servers": target.kafka_bootstrap_servers,
                               "client_id": client_id}
    for name, option in _SECURITY.items():
        value = getattr(target, name, None)
        if value:
            options[option] = value
    cafile = getattr(target, "kafka_ssl_cafile", None)
    if cafile or "SSL" in str(options.get("security_protocol", "")):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(cafile=str(cafile) if cafile else None)
    return options


def bootstrap_of(target: Target) -> str:
    return target if isinstance(target, str) else target.kafka_bootstrap_servers


def make_producer(target: Target, client_id: str, **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(target, client_id), **options)


def make_consumer(target: Target, *topics: str, client_id: str,
                  **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **client_options(target, client_id), **options)


def make_admin(target: Target, client_id: str = "fleetstream-admin",
               **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(target, client_id), **options)


def check_reachable(bootstrap_servers: str, timeout_s: float = 5.0) -> None:
    """Return once one bootstrap server accepts a TCP connection; otherwise raise
    KafkaEdgeError listing what each one answered. Cheap: no Kafka protocol."""
    errors = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{server.strip()}: {exc}")
    raise KafkaEdgeError(f"no Kafka broker reachable at {bootstrap_servers}: "
                         f"{'; '.join(errors)}")


# ---- topics ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopicSpec:
    """A topic as the project wants it (created so if missing; an existing one is kept)."""

    name: str
    partitions: int = 1
    replication: int | None = None  # None: the cluster's default.replication.factor
    config: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def compacted(cls, name: str, partitions: int = 1, **config: str) -> TopicSpec:
        """A log-compacted topic: the latest value per key is kept, a null value deletes it.
        ``config`` adds topic settings, e.g. ``**{"min.compaction.lag.ms": "0"}``."""
        return cls(name, partitions, config={"cleanup.policy": "compact", **config})

    @property
    def is_compacted(self) -> bool:
        return "compact" in self.config.get("cleanup.policy", "")


async def ensure_topics(target: Target | AIOKafkaAdminClient, specs: Iterable[TopicSpec], *,
                        timeout_s: float = 30.0) -> list[str]:
    """Create the topics of ``specs`` that do not exist; wait until every one of them has a
    leader for each partition. Returns the names created. A started admin client is used as
    is; settings or bootstrap servers get a client of their own, closed afterwards."""
    specs = list(specs)
    if isinstance(target, AIOKafkaAdminClient):
        return await _ensure(target, specs, "the cluster", timeout_s)
    bootstrap = bootstrap_of(target)
    admin = make_admin(target, request_timeout_ms=int(timeout_s * 1000))
    try:
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
        except Exception as exc:
            raise KafkaEdgeError(f"creating topics {[s.name for s in specs]}: cannot reach "
                                 f"Kafka at {bootstrap}: {exc!r}") from exc
        return await _ensure(admin, specs, bootstrap, timeout_s)
    finally:
        await admin.close()


async def _ensure(admin: AIOKafkaAdminClient, specs: list[TopicSpec], where: str,
                  timeout_s: float) -> list[str]:
    names = [s.name for s in specs]
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        missing = [s for s in specs if s.name not in existing]
        created = []
        if missing:
            default_rf = (await asyncio.wait_for(_default_replication(admin), timeout_s)
                          if any(s.replication is None for s in missing) else 1)
            try:
                resp = await asyncio.wait_for(admin.create_topics(
                    [NewTopic(s.name, s.partitions, s.replication or default_rf,
                              topic_configs=dict(s.config))
                     for s in missing]), timeout_s)
                errors = list(getattr(resp, "topic_errors", None) or [])
            except TopicAlreadyExistsError:  # another process won the race: fine
                errors = []
            for topic_error in errors:
                name, code = topic_error[0], topic_error[1]
                message = topic_error[2] if len(topic_error) > 2 else None
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:
                    raise KafkaEdgeError(f"creating topic {name!r} at {where} failed: "
                                         f"{for_code(code).__name__} ({code})"
                                         + (f": {message}" if message else ""))
        await _wait_for_leaders(admin, names, timeout_s)
    except KafkaEdgeError:
        raise
    except Exception as exc:
        raise KafkaEdgeError(f"creating topics {names} at {where}: {exc!r}") from exc
    for spec in missing:
        if spec.name in created:
            log.info("created topic %s (%d partitions%s)", spec.name, spec.partitions,
                     ", compacted" if spec.is_compacted else "")
    return created


async def _default_replication(admin: AIOKafkaAdminClient) -> int:
    """The cluster's ``default.replication.factor`` (what auto-created topics get): 1 on the
    local broker, 3 on the local cluster (tools.cluster) or a production one. The
    CreateTopics version aiokafka speaks cannot ask the broker for its default (-1)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    cluster = await admin.describe_cluster()  # the brokers alive now
    broker = str(cluster["brokers"][0]["node_id"])
    resource = ConfigResource(ConfigResourceType.BROKER, broker,
                              {"default.replication.factor": None})
    for response in await admin.describe_configs([resource]):
        for res in response.resources:
            for entry in res[4]:
                if entry[0] == "default.replication.factor" and entry[1]:
                    return max(1, min(int(entry[1]), len(cluster["brokers"])))
    return 1


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str],
                            timeout_s: float) -> None:
    """Until every partition of ``names`` has a leader, so the first produce does not race."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = await admin.describe_topics(names)
        ready = {t["topic"] for t in topics if t["error_code"] == 0 and t["partitions"]
                 and all(p["leader"] >= 0 for p in t["partitions"])}
        if ready >= set(names):
            return
        if time.monotonic() > deadline:
            raise KafkaEdgeError(f"topics {sorted(set(names) - ready)} have no leader after "
                                 f"{timeout_s:.0f}s")
        await asyncio.sleep(0.1)


async def topic_partitions(target: Target | AIOKafkaAdminClient, topic: str, *,
                           timeout_s: float = 30.0,
                           client_id: str = "fleetstream-admin") -> list[TopicPartition]:
    """The partitions of ``topic``, from metadata only (never creates it); [] when it does
    not exist. A started admin client is used as is, else one is made and closed."""
    if isinstance(target, AIOKafkaAdminClient):
        # Listed first: describing a missing topic is a metadata request that allows
        # auto-creation, so a broker with auto.create.topics.enable would make it.
        if topic not in await asyncio.wait_for(target.list_topics(), timeout_s):
            return []
        described = await asyncio.wait_for(target.describe_topics([topic]), timeout_s)
        return [TopicPartition(topic, p) for p in sorted(
            p["partition"] for d in described if d.get("error_code") == 0
            for p in d.get("partitions", []))]
    admin = make_admin(target, client_id, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        return await topic_partitions(admin, topic, timeout_s=timeout_s)
    finally:
        await admin.close()


async def await_partitions(target: Target, topic: str, *, poll_s: float = 1.0,
                           client_id: str = "fleetstream-admin",
                           waiting: Callable[[], object] | None = None) -> list[TopicPartition]:
    """The partitions of ``topic`` once it exists (metadata only: never creates it), asking
    every ``poll_s`` and calling ``waiting()`` each time it does not exist yet. The admin
    client's start, metadata calls and close are shielded from cancellation (aiokafka leaks a
    half-open connection otherwise); Kafka errors propagate to the caller's reconnect loop."""
    admin = make_admin(target, client_id)
    try:
        await finish_first(admin.start())
        while True:
            tps = await finish_first(topic_partitions(admin, topic))
            if tps:
                return tps
            if waiting is not None:
                waiting()
            await asyncio.sleep(poll_s)
    finally:
        await finish_first(admin.close())


# ---- retry ----------------------------------------------------------------------------------

def backoff(attempt: int, *, first_delay_s: float = 0.5, max_delay_s: float = 5.0,
            jitter: float = 0.2, rng: random.Random | None = None) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, ...): ``first_delay_s`` doubling per
    attempt up to ``max_delay_s``, times a random factor in ``1 +- jitter`` (so services
    restarted together do not reconnect in step)."""
    base = min(first_delay_s * 2 ** min(attempt - 1, 62), max_delay_s)
    return base * (rng or _JITTER).uniform(1 - jitter, 1 + jitter)


_JITTER = random.Random()  # jitter, not secrets


async def retry(coro_factory: Callable[[], Awaitable[T]], what: str,
                stop_event: asyncio.Event | None, *, first_delay_s: float = 0.5,
                max_delay_s: float = 5.0, jitter: float = 0.2,
                retry_on: tuple[type[Exception], ...] = (Exception,),
                rng: random.Random | None = None) -> T:
    """Await ``coro_factory()`` until it succeeds and return its result, waiting
    :func:`backoff` between attempts. Raises :class:`Stopped` once ``stop_event`` is set
    (a wait in progress ends at once); with ``stop_event=None`` it tries until it succeeds or
    is cancelled. Cancellation passes through."""
    attempt = 0
    while stop_event is None or not stop_event.is_set():
        attempt += 1
        try:
            return await coro_factory()
        except retry_on as exc:
            wait = backoff(attempt, first_delay_s=first_delay_s, max_delay_s=max_delay_s,
                           jitter=jitter, rng=rng)
            log.warning("%s: Kafka not reachable (attempt %d: %s); retrying in %.1fs",
                        what, attempt, exc, wait)
            if stop_event is None:
                await asyncio.sleep(wait)
                continue
            try:
                await asyncio.wait_for(stop_event.wait(), wait)
            except TimeoutError:
                pass
    raise Stopped(what)


# ---- compacted topics -----------------------------------------------------------------------

async def resume(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
                 position: Mapping[TopicPartition, int]) -> None:
    """Assign ``partitions`` and go on where ``position`` says (the offsets read so far, from
    a client that failed), from the beginning where it says nothing: a reader of a compacted
    topic reconnecting without reading it all again."""
    tps = list(partitions)
    consumer.assign(tps)
    for tp in tps:
        if tp in position:
            consumer.seek(tp, position[tp])
        else:
            await consumer.seek_to_beginning(tp)


async def add_new_partitions(
        consumer: AIOKafkaConsumer, topic: str, tps: list[TopicPartition],
        positions: dict[TopicPartition, int],
        position: Callable[[AIOKafkaConsumer, TopicPartition], Awaitable[int]] | None = None,
) -> list[TopicPartition]:
    """Partitions of ``topic`` that the consumer's metadata (refreshed every
    ``metadata_max_age_ms``) knows and ``tps`` lacks join the assignment, read from their
    beginning (their first records may have been written before this refresh), and are noted
    in ``positions``; the partitions already assigned keep their positions (read with
    ``position(consumer, tp)``, e.g. a bounded wait; default ``consumer.position``). Returns
    the new assignment (``tps`` itself when nothing changed)."""
    known = consumer.partitions_for_topic(topic) or set()
    new = [TopicPartition(topic, p) for p in sorted(known) if TopicPartition(topic, p)
           not in tps]
    if not new:
        return tps
    kept = {tp: await (position(consumer, tp) if position else consumer.position(tp))
            for tp in tps}
    everything = sorted([*tps, *new])
    consumer.assign(everything)
    for tp, offset in kept.items():
        consumer.seek(tp, offset)
    begin = await consumer.beginning_offsets(new)
    for tp in new:
        consumer.seek(tp, begin[tp])
        positions[tp] = begin[tp]
    log.info("topic %s: now reading partitions %s", topic, [tp.partition for tp in everything])
    return everything


def apply_compacted(state: dict[bytes, bytes], records: Iterable[Any]) -> None:
    """Fold records of a compacted topic into ``state`` (key -> latest value): a tombstone
    (null value) deletes its key; a record without a key is skipped."""
    for rec in records:
        if rec.key is None:
            continue
        if rec.value is None:
            state.pop(rec.key, None)
        else:
            state[rec.key] = rec.value


async def read_compacted(target: Target, topic: str, *, timeout_s: float = 30.0,
                         client_id: str = "fleetstream-compacted-reader") -> dict[bytes, bytes]:
    """The topic read from its beginning to its end as of now: key -> latest value, keys
    whose latest record is a tombstone (null value) left out (a compacted topic refuses
    records without a key; elsewhere they are skipped). No consumer group, no commits: any
    number of readers may do this at once."""
    consumer = make_consumer(target, client_id=client_id, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    state: dict[bytes, bytes] = {}
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        tps = await topic_partitions(target, topic, timeout_s=timeout_s)
        if not tps:
            raise KafkaEdgeError(f"topic {topic!r} not found at {bootstrap_of(target)}")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(timeout_s):
            while True:  # a topic created a moment ago may not serve offsets yet
                try:
                    ends = await consumer.end_offsets(tps)
                    break
                except KafkaError as exc:
                    log.debug("end offsets of %s: %r; asking again", topic, exc)
                    await asyncio.sleep(0.1)
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=200)
                for records in batches.values():
                    apply_compacted(state, records)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
    except TimeoutError as exc:
        raise KafkaEdgeError(f"reading compacted topic {topic!r} at {bootstrap_of(target)}: "
                             f"not at its end after {timeout_s:.0f}s") from exc
    finally:
        await consumer.stop()
    return state
